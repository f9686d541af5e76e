//! `Embedding`: a lookup table of learned vectors, indexed by integer ids.

use std::fmt;
use tapegrad_tensor::TensorNew;

use tapegrad_autograd::Var;
use tapegrad_tensor::{checked_numel, Error, Float, Generator, Result, Tensor};

use crate::data::Ids;
use crate::module::Module;

/// A table of `num_embeddings` vectors of width `embedding_dim`: `y[i...] = W[indices[i...]]`,
/// of shape `shape ++ [embedding_dim]` for indices of shape `shape`. Backward adds each row of
/// `dy` into the row of `dW` it was read from (repeated indices accumulate), as
/// `index_select`'s backward does.
///
/// Initialised as PyTorch does: `W ~ N(0, 1)`.
///
/// ```
/// use tapegrad_nn::{Embedding, Module, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let emb: Embedding = Embedding::new(10, 4, &mut Generator::new(0));
/// let y = emb.forward_indices(&[1, 7, 1], &[3])?;
/// assert_eq!(y.shape(), vec![3, 4]);
/// let ids = tapegrad_nn::Ids::new(vec![1, 7, 1, 0], &[2, 2])?;
/// assert_eq!(emb.forward_ids(&ids)?.shape(), vec![2, 2, 4]);
/// // Through `Module::forward`, with the ids as integral floats:
/// let ids = Var::new(Tensor::from_vec(vec![1.0, 7.0, 1.0, 0.0], &[2, 2])?);
/// assert_eq!(emb.forward(&ids)?.shape(), vec![2, 2, 4]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct Embedding<T: Float = f32> {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Var<T>,
    #[module(skip)]
    num_embeddings: usize,
    #[module(skip)]
    embedding_dim: usize,
}

impl<T: Float> Embedding<T> {
    /// A table from a given `[num_embeddings, embedding_dim]` weight.
    ///
    /// # Errors
    /// `Embedding::from_tensor` when the weight is not 2-D.
    pub fn from_tensor(weight: Tensor<T>) -> Result<Embedding<T>> {
        if weight.ndim() != 2 {
            return Err(Error::shape(
                "Embedding::from_tensor",
                weight.shape(),
                "the weight must be [num_embeddings, embedding_dim]",
            ));
        }
        let (num_embeddings, embedding_dim) = (weight.shape()[0], weight.shape()[1]);
        Ok(Embedding { weight: Var::parameter(weight), num_embeddings, embedding_dim })
    }

    /// The number of rows.
    pub fn num_embeddings(&self) -> usize {
        self.num_embeddings
    }

    /// The width of each row.
    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    /// Looks up `indices` (row-major, of shape `shape`): the result has shape
    /// `shape ++ [embedding_dim]`.
    ///
    /// # Errors
    /// `Embedding` when `shape` does not hold `indices.len()` elements (or is too large for a
    /// tensor, as is the output shape `shape ++ [embedding_dim]`: [`checked_numel`]) or an
    /// index is not below `num_embeddings`.
    pub fn forward_indices(&self, indices: &[usize], shape: &[usize]) -> Result<Var<T>> {
        if checked_numel("Embedding", shape)? != indices.len() {
            return Err(Error::shape(
                "Embedding",
                shape,
                format!("the index shape does not hold the {} indices given", indices.len()),
            ));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.num_embeddings) {
            return Err(Error::shape(
                "Embedding",
                shape,
                format!("index {bad} is out of range for {} embeddings", self.num_embeddings),
            ));
        }
        let mut out = shape.to_vec();
        out.push(self.embedding_dim);
        checked_numel("Embedding", &out)?;
        self.weight.index_select(0, indices)?.reshape(&out)
    }

    /// Looks up token ids: the result has shape `ids.shape() ++ [embedding_dim]`, as
    /// PyTorch's `embedding(ids)` on a `LongTensor`.
    ///
    /// # Errors
    /// `Embedding` when an id is not below `num_embeddings`.
    pub fn forward_ids(&self, ids: &Ids) -> Result<Var<T>> {
        self.forward_indices(ids.as_slice(), ids.shape())
    }
}

tapegrad_tensor::f32_default! {
    /// The constructors of [`Embedding`] for every element type: `Embedding::<f64>::new(..)`, or
    /// `Embedding::<T>::new(..)` in generic code. `Embedding::new(..)` without a type means `f32`.
    EmbeddingNew for Embedding {
        /// A table initialised from `N(0, 1)` with `gen`.
        ///
        /// # Panics
        /// When `[num_embeddings, embedding_dim]` is too large for a tensor, with the message of
        /// [`TensorNew::try_randn`]'s error.
        fn new(num_embeddings: usize, embedding_dim: usize, gen: &mut Generator) -> Self {
            let weight = Var::parameter(Tensor::<T>::randn(&[num_embeddings, embedding_dim], gen));
            Embedding { weight, num_embeddings, embedding_dim }
        }
    }
}

impl<T: Float> Module<T> for Embedding<T> {
    /// Looks up the ids held in `x` as floats (each must be a non-negative integer below
    /// `num_embeddings`); the result has shape `x.shape() ++ [embedding_dim]`. No gradient
    /// flows into `x`. Prefer [`Embedding::forward_indices`] when the ids are at hand.
    ///
    /// # Errors
    /// `Embedding` when a value is not a non-negative integer, or not below `num_embeddings`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        self.forward_ids(&Ids::from_floats_for("Embedding", &x.value())?)
    }
}

impl<T: Float> fmt::Display for Embedding<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Embedding({}, {})", self.num_embeddings, self.embedding_dim)
    }
}
