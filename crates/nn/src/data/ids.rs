//! `Ids`: integer ids with a shape (token ids, class indices), what PyTorch keeps in a `LongTensor`.
//! An [`Embedding`](crate::Embedding) looks them up ([`Embedding::forward_ids`](crate::Embedding::forward_ids)),
//! a model can take them as its input (`impl Module<f32, Ids>`, see [`Module`](crate::Module)),
//! and a [`TensorDataset`](super::TensorDataset) batches them beside float tensors.

use tapegrad_tensor::{checked_numel, Error, Float, Result, Tensor};

/// Non-negative integer ids of a given shape, row-major: token ids `[batch, len]`, class
/// indices `[batch]`. Tensors hold floats only; ids that index a table travel as `Ids`, so that
/// no id is ever rounded.
///
/// ```
/// use tapegrad_nn::Ids;
/// let ids = Ids::new(vec![3, 1, 4, 1, 5, 9], &[2, 3])?;
/// assert_eq!((ids.shape(), ids.as_slice()[4]), (&[2, 3][..], 5));
/// let rows = ids.index_select(&[1, 1])?; // along the first dim, as `Tensor::index_select(0, ..)`
/// assert_eq!(rows.as_slice(), &[1, 5, 9, 1, 5, 9]);
/// assert!(Ids::new(vec![1, 2, 3], &[2, 2]).is_err()); // 3 ids for 4 places
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ids {
    ids: Vec<usize>,
    shape: Vec<usize>,
}

impl Ids {
    /// The ids `ids` (row-major) as an array of shape `shape`.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] (op `Ids::new`) when `shape` does not hold `ids.len()` elements
    /// or its number of elements overflows.
    pub fn new(ids: Vec<usize>, shape: &[usize]) -> Result<Ids> {
        if checked_numel("Ids::new", shape)? != ids.len() {
            return Err(Error::shape(
                "Ids::new",
                shape,
                format!("the shape does not hold the {} ids given", ids.len()),
            ));
        }
        Ok(Ids { ids, shape: shape.to_vec() })
    }

    /// Ids held as floats (each a non-negative integer, as `Embedding`'s `Module::forward`
    /// takes them), of the tensor's shape.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] (op `Ids::from_floats`) naming the first value that is not a
    /// non-negative integer below 2^53 (NaN included).
    ///
    /// ```
    /// use tapegrad_nn::Ids;
    /// use tapegrad_tensor::Tensor;
    /// let ids = Ids::from_floats(&Tensor::from_vec(vec![2.0f32, 0.0], &[2])?)?;
    /// assert_eq!(ids.as_slice(), &[2, 0]);
    /// assert!(Ids::from_floats(&Tensor::from_vec(vec![0.5f32], &[1])?).is_err());
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    pub fn from_floats<T: Float>(x: &Tensor<T>) -> Result<Ids> {
        Ids::from_floats_for("Ids::from_floats", x)
    }

    /// [`Ids::from_floats`], its errors naming `op`.
    pub(crate) fn from_floats_for<T: Float>(op: &'static str, x: &Tensor<T>) -> Result<Ids> {
        // Past 2^53 an f64 no longer holds every integer: such an "id" may already be rounded.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        let ids = x
            .to_vec()
            .into_iter()
            .map(|v| {
                let f = v.to_f64();
                if f >= 0.0 && f.fract() == 0.0 && f < EXACT {
                    Ok(f as usize)
                } else {
                    Err(Error::shape(op, x.shape(), format!("{f} is not a non-negative integral id")))
                }
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok(Ids { ids, shape: x.shape().to_vec() })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of ids.
    pub fn numel(&self) -> usize {
        self.ids.len()
    }

    /// The ids, row-major.
    pub fn as_slice(&self) -> &[usize] {
        &self.ids
    }

    /// The ids, row-major, taken out.
    pub fn into_vec(self) -> Vec<usize> {
        self.ids
    }

    /// The largest id, `None` when there is none.
    pub fn max(&self) -> Option<usize> {
        self.ids.iter().copied().max()
    }

    /// The ids as floats, of the same shape (for a module that takes them as a `Var`).
    pub fn to_tensor<T: Float>(&self) -> Tensor<T> {
        let values = self.ids.iter().map(|&i| T::from_f64(i as f64)).collect();
        Tensor::from_vec(values, &self.shape).expect("the shape holds the ids: checked when they were made")
    }

    /// The same ids with another shape of as many elements (`-1` inference is `Tensor`'s; here
    /// the shape is given in full).
    ///
    /// # Errors
    /// [`Error::InvalidShape`] (op `Ids::reshape`) when `shape` holds another number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Ids> {
        if checked_numel("Ids::reshape", shape)? != self.ids.len() {
            return Err(Error::mismatch(
                "Ids::reshape",
                &self.shape,
                shape,
                "the new shape must hold as many ids as the old one",
            ));
        }
        Ok(Ids { ids: self.ids.clone(), shape: shape.to_vec() })
    }

    /// The entries at `indices` along the first dim, in that order (repeats allowed), as
    /// `Tensor::index_select(0, indices)`: shape `[indices.len(), rest...]`.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] (op `Ids::index_select`) for 0-dimensional ids;
    /// [`Error::InvalidArgument`] naming the first index not below the first dim.
    pub fn index_select(&self, indices: &[usize]) -> Result<Ids> {
        const OP: &str = "Ids::index_select";
        let Some((&n, rest)) = self.shape.split_first() else {
            return Err(Error::shape(OP, &self.shape, "0-dimensional ids have no first dim to select along"));
        };
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::arg(OP, format!("index {bad} is out of range for a first dim of {n}")));
        }
        let row: usize = rest.iter().product();
        let mut ids = Vec::with_capacity(indices.len() * row);
        for &i in indices {
            ids.extend_from_slice(&self.ids[i * row..(i + 1) * row]);
        }
        let mut shape = self.shape.clone();
        shape[0] = indices.len();
        Ok(Ids { ids, shape })
    }
}

impl From<Vec<usize>> for Ids {
    /// One-dimensional ids (class labels, one sequence).
    fn from(ids: Vec<usize>) -> Ids {
        let shape = vec![ids.len()];
        Ids { ids, shape }
    }
}
