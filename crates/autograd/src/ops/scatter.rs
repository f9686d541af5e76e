//! The adjoints of the selections: `index_add` (of `index_select`) and `scatter_add` (of
//! `gather`), as recorded ops. Each is the other's backward, so the gradient of a selection can
//! be recorded (`create_graph`) and differentiated again to any order.

use tapegrad_tensor::{Error, Float, Result, Tensor};

use super::{two, two_var};
use crate::var::{Backward, Grads, Var, VarGrads};

// ─── IndexAdd ────────────────────  z = x with src added at `index` along dim
//   dx = dz,  dsrc = dz.index_select(dim, index)
struct IndexAdd {
    dim: usize,
    index: Vec<usize>,
}
impl<T: Float> Backward<T> for IndexAdd {
    fn name(&self) -> &'static str {
        "index_add"
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        two(needs, || Ok(dz.clone()), || dz.index_select(self.dim, &self.index))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        two_var(needs, || Ok(dz.clone()), || dz.index_select(self.dim, &self.index))
    }
    fn extra_bytes(&self) -> usize {
        self.index.len() * std::mem::size_of::<usize>()
    }
}

// ─── ScatterAdd ──────────────────  z = x with src added at `index` along dim
//   dx = dz,  dsrc = dz.gather(dim, index, index_shape)
struct ScatterAdd {
    dim: usize,
    index: Vec<usize>,
    index_shape: Vec<usize>,
}
impl<T: Float> Backward<T> for ScatterAdd {
    fn name(&self) -> &'static str {
        "scatter_add"
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        two(needs, || Ok(dz.clone()), || dz.gather(self.dim, &self.index, &self.index_shape))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        two_var(needs, || Ok(dz.clone()), || dz.gather(self.dim, &self.index, &self.index_shape))
    }
    fn extra_bytes(&self) -> usize {
        self.index.len() * std::mem::size_of::<usize>()
    }
}

impl<T: Float> Var<T> {
    /// `torch.index_add`: this value with the slices of `src` added along `dim` at the
    /// positions `index` gives (`z[.., index[j], ..] += src[.., j, ..]`; repeated indices add).
    /// `src` has this value's shape with `dim` resized to `index.len()`. The adjoint of
    /// [`Var::index_select`], and its recorded backward. Backward: `dx = dz`,
    /// `dsrc = dz.index_select(dim, index)`.
    ///
    /// # Errors
    /// `index_add` when `dim` is out of range, an index is out of range, or `src` has the wrong
    /// shape.
    ///
    /// ```
    /// use tapegrad_autograd::Var;
    /// use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::new(Tensor::<f64>::zeros(&[3]));
    /// let src = Var::parameter(Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3])?);
    /// let z = x.index_add(0, &[2, 0, 2], &src)?;
    /// assert_eq!(z.value().to_vec(), vec![2.0, 0.0, 4.0]);
    /// z.mul(&z)?.sum_all().backward()?;
    /// assert_eq!(src.grad().unwrap().to_vec(), vec![8.0, 4.0, 8.0]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn index_add(&self, dim: usize, index: &[usize], src: &Var<T>) -> Result<Var<T>> {
        let z = self.value().index_add(dim, index, &src.value())?;
        Ok(Var::from_op(z, &[self, src], || IndexAdd { dim, index: index.to_vec() }))
    }

    /// `torch.Tensor.scatter_add` with `src` of the index's shape: this value with
    /// `src[p]` added at `p` with `p[dim]` replaced by `index[p]`, for every multi-index `p` of
    /// `index_shape` (`index` row-major, constrained as in [`Var::gather`]). The adjoint of
    /// [`Var::gather`], and its recorded backward. Backward: `dx = dz`,
    /// `dsrc = dz.gather(dim, index, index_shape)`.
    ///
    /// # Errors
    /// `scatter_add` when `src`'s shape is not `index_shape`, `dim` is out of range, the index
    /// shape does not fit, or an index is out of range.
    ///
    /// ```
    /// use tapegrad_autograd::Var;
    /// use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::new(Tensor::<f64>::zeros(&[2, 3]));
    /// let src = Var::parameter(Tensor::from_vec(vec![1.0, 2.0], &[2, 1])?);
    /// let z = x.scatter_add(1, &[2, 0], &[2, 1], &src)?;
    /// assert_eq!(z.value().to_vec(), vec![0.0, 0.0, 1.0, 2.0, 0.0, 0.0]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn scatter_add(&self, dim: usize, index: &[usize], index_shape: &[usize], src: &Var<T>) -> Result<Var<T>> {
        let s = src.value();
        if s.shape() != index_shape {
            return Err(Error::mismatch("scatter_add", index_shape, s.shape(), "src must have the index's shape"));
        }
        let z = self.value().scatter_add(dim, index, index_shape, &s)?;
        Ok(Var::from_op(z, &[self, src], || ScatterAdd {
            dim,
            index: index.to_vec(),
            index_shape: index_shape.to_vec(),
        }))
    }
}
