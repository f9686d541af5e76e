//! `TensorDataset`: any number of tensors (features, targets, ids) sharing their first dim, as
//! PyTorch's `TensorDataset(*tensors)`; [`Batches`](super::Batches) cuts it into seeded
//! shuffled mini-batches as it does a [`Dataset`](super::Dataset).

use tapegrad_tensor::{Error, Float, Result, Tensor};

use super::batches::Samples;
use super::Ids;

// ─── columns ───────────────────────────────────────────────────────────────────

/// One column of a [`TensorDataset`]: an array whose first dim counts the samples. Implemented
/// for `Tensor<f32>`, `Tensor<f64>`, [`Ids`] and `Vec<usize>` (class labels, one per sample).
pub trait Column: Clone {
    /// The shape; its first dim is the number of samples.
    fn column_shape(&self) -> Vec<usize>;

    /// The rows at `indices` (each below the first dim, as [`TensorDataset`] ensures), in that
    /// order, copied.
    ///
    /// # Errors
    /// What the column's own selection reports (an index out of range).
    fn select_rows(&self, indices: &[usize]) -> Result<Self>;
}

impl<T: Float> Column for Tensor<T> {
    fn column_shape(&self) -> Vec<usize> {
        self.shape().to_vec()
    }
    fn select_rows(&self, indices: &[usize]) -> Result<Self> {
        self.index_select(0, indices)
    }
}

impl Column for Ids {
    fn column_shape(&self) -> Vec<usize> {
        self.shape().to_vec()
    }
    fn select_rows(&self, indices: &[usize]) -> Result<Self> {
        self.index_select(indices)
    }
}

impl Column for Vec<usize> {
    fn column_shape(&self) -> Vec<usize> {
        vec![self.len()]
    }
    fn select_rows(&self, indices: &[usize]) -> Result<Self> {
        indices
            .iter()
            .map(|&i| {
                self.get(i).copied().ok_or_else(|| {
                    Error::arg("TensorDataset", format!("index {i} is out of range for {} labels", self.len()))
                })
            })
            .collect()
    }
}

/// The columns of a [`TensorDataset`]: a tuple of one to six [`Column`]s, `(x,)`, `(x, y)`,
/// `(ids, mask, y)`, ...; a batch is a tuple of the same types.
pub trait Columns: Clone {
    /// Every column's shape, in order.
    fn shapes(&self) -> Vec<Vec<usize>>;

    /// Every column's rows at `indices` (see [`Column::select_rows`]).
    ///
    /// # Errors
    /// As [`Column::select_rows`].
    fn select_rows(&self, indices: &[usize]) -> Result<Self>;
}

macro_rules! tuple_columns {
    ($($name:ident $i:tt),+) => {
        impl<$($name: Column),+> Columns for ($($name,)+) {
            fn shapes(&self) -> Vec<Vec<usize>> {
                vec![$(self.$i.column_shape()),+]
            }
            fn select_rows(&self, indices: &[usize]) -> Result<Self> {
                Ok(($(self.$i.select_rows(indices)?,)+))
            }
        }
    };
}

tuple_columns!(A 0);
tuple_columns!(A 0, B 1);
tuple_columns!(A 0, B 1, C 2);
tuple_columns!(A 0, B 1, C 2, D 3);
tuple_columns!(A 0, B 1, C 2, D 3, E 4);
tuple_columns!(A 0, B 1, C 2, D 3, E 4, F 5);

// ─── TensorDataset ─────────────────────────────────────────────────────────────

/// Samples held as columns that share their first dim, like PyTorch's
/// `TensorDataset(x, y)`: sample `i` is row `i` of every column. The columns are a tuple of
/// `Tensor<f32>`, `Tensor<f64>`, [`Ids`] or `Vec<usize>` labels (see [`Column`]), so features,
/// regression targets of any trailing shape, token ids and class labels batch together, each
/// keeping its type. [`Batches`](super::Batches) over it yields tuples of the same types.
///
/// A small regression, trained in a plain loop over shuffled batches:
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::data::{Batches, TensorDataset};
/// use tapegrad_nn::loss::mse_loss;
/// use tapegrad_nn::optim::{Optimizer, Sgd};
/// use tapegrad_nn::{Linear, Module};
/// use tapegrad_tensor::{Generator, Tensor};
///
/// // y = 2 x0 - x1 + 0.5, two targets per sample: [y, -y].
/// let mut gen = Generator::new(0);
/// let x = Tensor::randn(&[64, 2], &mut gen);
/// let y: Vec<f32> = x.to_vec().chunks(2).flat_map(|r| { let y = 2.0 * r[0] - r[1] + 0.5; [y, -y] }).collect();
/// let data = TensorDataset::new((x, Tensor::from_vec(y, &[64, 2])?))?;
///
/// let model = Linear::new(2, 2, &mut gen);
/// let mut opt = Sgd::new(model.parameters(), 0.1);
/// let mut last = f32::INFINITY;
/// for _epoch in 0..20 {
///     for batch in Batches::new(&data, 16, Some(&mut gen))?.drop_last(true) {
///         let (x, y) = batch?;
///         let loss = mse_loss(&model.forward(&Var::new(x))?, &Var::new(y))?;
///         opt.zero_grad();
///         loss.backward()?;
///         opt.step()?;
///         last = loss.item()?;
///     }
/// }
/// assert!(last < 1e-3, "loss {last}");
///
/// // Columns must agree on the number of samples:
/// let err = TensorDataset::new((Tensor::<f32>::zeros(&[3, 2]), Tensor::<f32>::zeros(&[4]))).unwrap_err();
/// assert!(err.to_string().contains("TensorDataset::new"), "{err}");
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct TensorDataset<C: Columns> {
    columns: C,
    len: usize,
}

impl<C: Columns> TensorDataset<C> {
    /// A dataset of `columns`, a tuple whose members all have the same first dim (the number of
    /// samples).
    ///
    /// # Errors
    /// [`Error::InvalidShape`] (op `TensorDataset::new`) for a 0-dimensional column;
    /// [`Error::ShapeMismatch`] naming the first column's shape and the first that differs from
    /// it in the first dim.
    pub fn new(columns: C) -> Result<TensorDataset<C>> {
        const OP: &str = "TensorDataset::new";
        let shapes = columns.shapes();
        for (k, shape) in shapes.iter().enumerate() {
            if shape.is_empty() {
                return Err(Error::shape(OP, shape, format!("column {k} is 0-dimensional: it has no samples dim")));
            }
        }
        // `Columns` is implemented for tuples of one or more, so there is a first shape.
        let first = &shapes[0];
        if let Some((k, other)) = shapes.iter().enumerate().find(|(_, s)| s[0] != first[0]) {
            return Err(Error::mismatch(
                OP,
                first,
                other,
                format!(
                    "column {k} has {} samples where column 0 has {}: every column holds one row per sample",
                    other[0], first[0]
                ),
            ));
        }
        Ok(TensorDataset { len: first[0], columns })
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no sample.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The columns.
    pub fn columns(&self) -> &C {
        &self.columns
    }

    /// The columns, taken out.
    pub fn into_columns(self) -> C {
        self.columns
    }

    /// Sample `i`: every column's row `i`, each keeping a first dim of 1 (`[1, ...]`).
    ///
    /// # Errors
    /// As [`TensorDataset::subset`].
    pub fn get(&self, i: usize) -> Result<C> {
        Ok(self.subset(&[i])?.columns)
    }

    /// The samples at `indices`, in that order (repeats allowed), copied into a new dataset.
    /// With [`kfold()`](super::kfold())'s indices it gives a fold's training or validation set.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (op `TensorDataset::subset`) naming the first index that is
    /// not below `len()`.
    ///
    /// ```
    /// use tapegrad_nn::{data::TensorDataset, Ids};
    /// use tapegrad_tensor::{Tensor, TensorNew};
    /// let ds = TensorDataset::new((Tensor::<f64>::arange(6).reshape(&[3, 2])?, Ids::from(vec![7, 8, 9])))?;
    /// let (x, ids) = ds.subset(&[2, 0])?.into_columns();
    /// assert_eq!((x.to_vec(), ids.as_slice()), (vec![4.0, 5.0, 0.0, 1.0], &[9, 7][..]));
    /// assert!(ds.subset(&[3]).is_err());
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    pub fn subset(&self, indices: &[usize]) -> Result<TensorDataset<C>> {
        let n = self.len;
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::arg("TensorDataset::subset", format!("index {bad} is out of range for {n} samples")));
        }
        Ok(TensorDataset { columns: self.columns.select_rows(indices)?, len: indices.len() })
    }

    /// The first `mid` samples and the rest, copied (like `slice::split_at`, but fallible): a
    /// train / validation split, after a shuffle with [`subset`](TensorDataset::subset) and
    /// [`permutation`](super::permutation) if the samples are ordered.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (op `TensorDataset::split_at`) when `mid > len()`.
    pub fn split_at(&self, mid: usize) -> Result<(TensorDataset<C>, TensorDataset<C>)> {
        let n = self.len;
        if mid > n {
            return Err(Error::arg("TensorDataset::split_at", format!("split point {mid} is past the {n} samples")));
        }
        let head: Vec<usize> = (0..mid).collect();
        let tail: Vec<usize> = (mid..n).collect();
        Ok((self.subset(&head)?, self.subset(&tail)?))
    }
}

impl<C: Columns> Samples for TensorDataset<C> {
    type Batch = C;

    fn num_samples(&self) -> usize {
        self.len
    }

    fn gather(&self, indices: &[usize]) -> Result<C> {
        self.columns.select_rows(indices)
    }
}
