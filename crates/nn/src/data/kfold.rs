//! K-fold cross-validation splits, like scikit-learn's `KFold(n_splits=k, shuffle=True)`.

use tapegrad_tensor::{Error, Generator, Result};

use super::batches::permutation;

/// Splits `0..n` into `k` folds for cross-validation: the indices are shuffled once with
/// `Generator::new(seed)` (see [`permutation`]) and cut into `k` consecutive folds whose sizes
/// differ by at most one (the first `n % k` folds get `n / k + 1` indices). Fold `i` yields
/// `(train, validation)`: validation is fold `i`, train is every other index; both sorted.
///
/// Every index is in exactly one validation fold, and in the training set of every other fold.
/// The same `(n, k, seed)` gives the same folds on every machine.
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) (op `kfold`) unless
/// `2 <= k <= n`.
///
/// ```
/// use tapegrad_nn::data::kfold;
/// let folds = kfold(10, 3, 0)?;
/// let sizes: Vec<(usize, usize)> = folds.iter().map(|(t, v)| (t.len(), v.len())).collect();
/// assert_eq!(sizes, [(6, 4), (7, 3), (7, 3)]);
/// assert!(kfold(10, 1, 0).is_err() && kfold(3, 4, 0).is_err());
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn kfold(n: usize, k: usize, seed: u64) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    if k < 2 || k > n {
        return Err(Error::arg("kfold", format!("k = {k} folds of n = {n} samples: need 2 <= k <= n")));
    }
    let order = permutation(n, &mut Generator::new(seed));
    let (size, bigger) = (n / k, n % k);
    let mut folds = Vec::with_capacity(k);
    let mut start = 0;
    for i in 0..k {
        let end = start + size + usize::from(i < bigger);
        let mut validation = order[start..end].to_vec();
        let mut train: Vec<usize> = order[..start].iter().chain(&order[end..]).copied().collect();
        validation.sort_unstable();
        train.sort_unstable();
        folds.push((train, validation));
        start = end;
    }
    Ok(folds)
}
