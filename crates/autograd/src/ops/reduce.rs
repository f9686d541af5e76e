//! Reductions and the softmax family.

use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Float, Result, Tensor};

use super::one;
use crate::var::VarGrads;
use crate::var::{Backward, Grads, Var};

/// The dims a reduction removed, ascending (an empty list means all of them, as in `sum`).
fn reduced_dims(ndim: usize, dims: &[usize]) -> Vec<usize> {
    let mut d: Vec<usize> = if dims.is_empty() { (0..ndim).collect() } else { dims.to_vec() };
    d.sort_unstable();
    d
}

/// Broadcasts a reduced gradient back over the input's shape (a view: stride 0 where reduced).
fn unreduce<T: Float>(
    dz: &Tensor<T>,
    in_shape: &[usize],
    dims: &[usize],
    keepdim: bool,
) -> tapegrad_tensor::Result<Tensor<T>> {
    let mut g = dz.clone();
    if !keepdim {
        for &d in dims {
            g = g.unsqueeze(d)?;
        }
    }
    g.expand(in_shape)
}

/// [`unreduce`] on a recorded gradient (for `backward_var`).
fn unreduce_var<T: Float>(dz: &Var<T>, in_shape: &[usize], dims: &[usize], keepdim: bool) -> Result<Var<T>> {
    let mut g = dz.clone();
    if !keepdim {
        for &d in dims {
            g = g.unsqueeze(d)?;
        }
    }
    g.expand(in_shape)
}

// ─── SumTo ───────────────────────  z = sum_to(x, shape);  dx = dz expanded back (the twin of
// expand, each the other's backward)
struct SumTo {
    in_shape: Vec<usize>,
}
impl<T: Float> Backward<T> for SumTo {
    fn name(&self) -> &'static str {
        "sum_to"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(dz.expand(&self.in_shape)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        Ok(vec![Some(dz.expand(&self.in_shape)?)])
    }
}

// ─── Sum ─────────────────────────  z = Σ_dims x;  dx = dz broadcast back
struct Sum {
    in_shape: Vec<usize>,
    dims: Vec<usize>,
    keepdim: bool,
}
impl<T: Float> Backward<T> for Sum {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(unreduce(dz, &self.in_shape, &self.dims, self.keepdim)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        Ok(vec![Some(unreduce_var(dz, &self.in_shape, &self.dims, self.keepdim)?)])
    }
}

// ─── Mean ────────────────────────  z = Σ_dims x / n;  dx = dz / n broadcast back
struct Mean {
    in_shape: Vec<usize>,
    dims: Vec<usize>,
    keepdim: bool,
    count: usize,
}
impl<T: Float> Backward<T> for Mean {
    fn name(&self) -> &'static str {
        "mean"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        let scale = T::ONE / T::from_usize(self.count);
        Ok(one(unreduce(&dz.mul_scalar(scale), &self.in_shape, &self.dims, self.keepdim)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        let scale = T::ONE / T::from_usize(self.count);
        Ok(vec![Some(unreduce_var(&dz.mul_scalar(scale), &self.in_shape, &self.dims, self.keepdim)?)])
    }
}

// ─── Max ─────────────────────────  z = max_dim x;  dx = dz at the argmax, 0 elsewhere
struct Max {
    in_shape: Vec<usize>,
    dim: usize,
    keepdim: bool,
    indices: Vec<usize>,
}
impl<T: Float> Backward<T> for Max {
    fn name(&self) -> &'static str {
        "max"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        let mut index_shape = self.in_shape.clone();
        index_shape[self.dim] = 1;
        let dz = if self.keepdim { dz.clone() } else { dz.unsqueeze(self.dim)? };
        Ok(one(Tensor::<T>::zeros(&self.in_shape).scatter_add(self.dim, &self.indices, &index_shape, &dz)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        // The argmax selection is piecewise constant: dz broadcast back, times the constant
        // one-hot mask of the argmax positions.
        let mut index_shape = self.in_shape.clone();
        index_shape[self.dim] = 1;
        let ones = Tensor::<T>::ones(&index_shape);
        let mask = Tensor::<T>::zeros(&self.in_shape).scatter_add(self.dim, &self.indices, &index_shape, &ones)?;
        let dz = if self.keepdim { dz.clone() } else { dz.unsqueeze(self.dim)? };
        Ok(vec![Some(dz.expand(&self.in_shape)?.mul(&super::constant(mask))?)])
    }
}

// ─── Softmax ─────────────────────  y = softmax(x);  dx = y (dy - Σ dy y)   (saves y)
struct Softmax<T: Float> {
    y: Tensor<T>,
    dim: usize,
}
impl<T: Float> Backward<T> for Softmax<T> {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn backward(&self, dy: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        // One pass per row; `Tensor::softmax_backward` documents its own derivatives.
        Ok(one(self.y.softmax_backward(dy, self.dim)?))
    }
    fn backward_var(&self, dy: &Var<T>, _: &[Var<T>], y: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        // dx = y (dy - Σ dy y), with y the recorded output.
        let total = dy.mul(y)?.sum(&[self.dim], true)?;
        Ok(vec![Some(y.mul(&dy.sub(&total)?)?)])
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.y]
    }
}

// ─── LogSoftmax ──────────────────  y = log softmax(x);  dx = dy - e^y Σ dy   (saves y)
struct LogSoftmax<T: Float> {
    y: Tensor<T>,
    dim: usize,
}
impl<T: Float> Backward<T> for LogSoftmax<T> {
    fn name(&self) -> &'static str {
        "log_softmax"
    }
    fn backward(&self, dy: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        let total = dy.sum(&[self.dim], true)?;
        Ok(one(dy.sub(&self.y.exp().mul(&total)?)?))
    }
    fn backward_var(&self, dy: &Var<T>, _: &[Var<T>], y: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        let total = dy.sum(&[self.dim], true)?;
        Ok(vec![Some(dy.sub(&y.exp().mul(&total)?)?)])
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.y]
    }
}

impl<T: Float> Var<T> {
    /// The sum over `dims` (all dims when empty), keeping them as size 1 when `keepdim`.
    ///
    /// # Errors
    /// `sum` for a dim out of range or repeated.
    pub fn sum(&self, dims: &[usize], keepdim: bool) -> Result<Var<T>> {
        let x = self.value();
        let z = x.sum(dims, keepdim)?;
        let dims = reduced_dims(x.ndim(), dims);
        Ok(Var::from_op(z, &[self], || Sum { in_shape: x.shape().to_vec(), dims, keepdim }))
    }

    /// `torch.Tensor.sum_to_size`: sums over the dims that broadcasting from `shape` to this
    /// value's shape added or stretched, giving a value of `shape` (what a broadcasting op's
    /// backward does to its gradient). Backward: `dx = dz` expanded back. The value itself is
    /// returned when the shapes are equal.
    ///
    /// # Errors
    /// `sum_to` naming both shapes when `shape` does not broadcast to this value's shape.
    ///
    /// ```
    /// use tapegrad_autograd::Var;
    /// use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::parameter(Tensor::<f32>::ones(&[2, 3]));
    /// assert_eq!(x.sum_to(&[1, 3])?.value().to_vec(), vec![2.0, 2.0, 2.0]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn sum_to(&self, shape: &[usize]) -> Result<Var<T>> {
        let x = self.value();
        if x.shape() == shape {
            return Ok(self.clone());
        }
        let z = x.sum_to(shape)?;
        Ok(Var::from_op(z, &[self], || SumTo { in_shape: x.shape().to_vec() }))
    }

    /// The sum of every element, as a 0-dim value.
    pub fn sum_all(&self) -> Var<T> {
        let x = self.value();
        let dims = (0..x.ndim()).collect();
        Var::from_op(x.sum_all(), &[self], || Sum { in_shape: x.shape().to_vec(), dims, keepdim: false })
    }

    /// The mean over `dims` (all dims when empty).
    ///
    /// # Errors
    /// `mean` for a dim out of range or repeated.
    pub fn mean(&self, dims: &[usize], keepdim: bool) -> Result<Var<T>> {
        let x = self.value();
        let z = x.mean(dims, keepdim)?;
        let dims = reduced_dims(x.ndim(), dims);
        let count = dims.iter().map(|&d| x.shape()[d]).product();
        Ok(Var::from_op(z, &[self], || Mean { in_shape: x.shape().to_vec(), dims, keepdim, count }))
    }

    /// The mean of every element, as a 0-dim value.
    pub fn mean_all(&self) -> Var<T> {
        let x = self.value();
        let dims = (0..x.ndim()).collect();
        let count = x.numel();
        Var::from_op(x.mean_all(), &[self], || Mean { in_shape: x.shape().to_vec(), dims, keepdim: false, count })
    }

    /// The maximum along `dim` (values; the gradient flows to the first maximal element).
    ///
    /// # Errors
    /// `max` for a dim out of range or of size 0.
    pub fn max(&self, dim: usize, keepdim: bool) -> Result<Var<T>> {
        let x = self.value();
        let (z, indices) = x.max_with_indices(dim, keepdim)?;
        Ok(Var::from_op(z, &[self], || Max { in_shape: x.shape().to_vec(), dim, keepdim, indices }))
    }

    /// Softmax along `dim` (stable: the maximum is subtracted first).
    ///
    /// # Errors
    /// `softmax` for a dim out of range.
    pub fn softmax(&self, dim: usize) -> Result<Var<T>> {
        let y = self.value().softmax(dim)?;
        let saved = y.clone();
        Ok(Var::from_op(y, &[self], || Softmax { y: saved, dim }))
    }

    /// Log-softmax along `dim` (stable).
    ///
    /// # Errors
    /// `log_softmax` for a dim out of range.
    pub fn log_softmax(&self, dim: usize) -> Result<Var<T>> {
        let y = self.value().log_softmax(dim)?;
        let saved = y.clone();
        Ok(Var::from_op(y, &[self], || LogSoftmax { y: saved, dim }))
    }
}
