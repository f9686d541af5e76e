//! Movement ops: views that only change the layout (no element is copied), and the ops that
//! assemble new tensors from pieces of others.
//!
//! - this file: the views (`reshape`, `transpose`, `t`, `permute`, `narrow`, `expand`,
//!   `unsqueeze`, `squeeze`), each a pure [`Layout`](crate::Layout) transform;
//! - `cat.rs`: `cat` and `stack`, which copy whole inputs into one output;
//! - `index.rs`: `index_select` / `index_add` and `gather` / `scatter_add`, each
//!   pair being an op and its adjoint (the backward of the other).

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::layout::checked_numel;
use crate::tensor::Tensor;

mod cat;
mod index;
mod infer;

pub use infer::infer_shape;

// ─── views ─────────────────────────────────────────────────────────────────────

impl<T: Float> Tensor<T> {
    /// The same elements in a new shape (same numel), in row-major order. A view when the
    /// strides allow it, a copy otherwise (e.g. after a transpose), like `torch.reshape`.
    ///
    /// # Errors
    /// `reshape` names both shapes when their element counts differ, and the target shape when
    /// it is too large ([`checked_numel`](crate::checked_numel)).
    ///
    /// ```
    /// # use tapegrad_tensor::Tensor;
    /// let x = Tensor::<f32>::arange(6).reshape(&[2, 3])?;
    /// assert_eq!(x.shape(), &[2, 3]);
    /// assert!(x.reshape(&[4, 2]).is_err());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor<T>> {
        if checked_numel("reshape", shape)? != self.numel() {
            return Err(Error::mismatch(
                "reshape",
                self.shape(),
                shape,
                format!("cannot reshape {} elements into this shape", self.numel()),
            ));
        }
        Ok(match self.layout().reshape_view(shape) {
            Some(layout) => self.with_layout(layout),
            None => Tensor::from_contiguous(self.to_vec(), shape),
        })
    }

    /// Swaps dims `a` and `b` (a view).
    ///
    /// # Errors
    /// `transpose` when a dim is out of range.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor<T>> {
        Ok(self.with_layout(self.layout().transpose(a, b)?))
    }

    /// The transpose of a 2-D tensor (a view); 0-D and 1-D tensors are returned as they are,
    /// like `torch.t`.
    ///
    /// # Errors
    /// `t` when the tensor has more than 2 dims.
    pub fn t(&self) -> Result<Tensor<T>> {
        match self.ndim() {
            0 | 1 => Ok(self.clone()),
            2 => self.transpose(0, 1),
            _ => Err(Error::shape("t", self.shape(), "expects a tensor with at most 2 dims; use transpose")),
        }
    }

    /// Reorders the dims: output dim `i` is input dim `dims[i]` (a view).
    ///
    /// # Errors
    /// `permute` when `dims` is not a permutation of `0..ndim`.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor<T>> {
        Ok(self.with_layout(self.layout().permute(dims)?))
    }

    /// Entries `start..start + len` of `dim` (a view).
    ///
    /// # Errors
    /// `narrow` when `dim` is out of range or the range passes the end of the dim.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor<T>> {
        Ok(self.with_layout(self.layout().narrow(dim, start, len)?))
    }

    /// Broadcasts to `shape` without copying: dims of size 1 repeat with stride 0, and new
    /// leading dims may be added.
    ///
    /// # Errors
    /// `expand` when a dim that is not 1 would change size, or when the target shape is too
    /// large ([`checked_numel`](crate::checked_numel)): a view of more than
    /// [`MAX_NUMEL`](crate::MAX_NUMEL) elements, whose count could not even be summed over.
    ///
    /// ```
    /// # use tapegrad_tensor::Tensor;
    /// let x = Tensor::<f32>::ones(&[1, 1]);
    /// assert_eq!(x.expand(&[3, 1 << 40])?.numel(), 3 << 40); // a view: nothing is allocated
    /// assert!(x.expand(&[1 << 32, 1 << 32]).is_err());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor<T>> {
        Ok(self.with_layout(self.layout().expand(shape)?))
    }

    /// Inserts a dim of size 1 before `dim` (`dim == ndim` appends), a view.
    ///
    /// # Errors
    /// `unsqueeze` when `dim > ndim`.
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor<T>> {
        Ok(self.with_layout(self.layout().unsqueeze(dim)?))
    }

    /// Removes `dim`, which must have size 1 (a view).
    ///
    /// # Errors
    /// `squeeze` when `dim` is out of range or its size is not 1.
    pub fn squeeze(&self, dim: usize) -> Result<Tensor<T>> {
        Ok(self.with_layout(self.layout().squeeze(dim)?))
    }
}
