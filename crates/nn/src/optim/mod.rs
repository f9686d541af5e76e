//! Optimisers, gradient clipping, the max-norm constraint and learning-rate schedules: PyTorch's
//! `torch.optim` (re-exported by the facade as `tapegrad::optim`).
//!
//! An optimiser owns handles to the parameters it updates ([`Var`] clones share the node), reads
//! each parameter's accumulated gradient in [`Optimizer::step`] and writes the updated value
//! back with [`Var::set_value`]. Parameters without a gradient are skipped, as in PyTorch.
//!
//! Constructors and builder methods never fail, so the usual one-liner reads like PyTorch's;
//! the hyperparameters are validated by [`Optimizer::step`], which returns an `Err` naming the
//! optimiser and the offending value before touching any parameter.
//!
//! An optimiser records each parameter's shape when it takes the parameter, and its per-element
//! state (momentum buffers, Adam's moments) is laid out for that shape. A parameter's shape must
//! not change afterwards: if [`Var::set_value`] gives it another shape, the next
//! [`Optimizer::step`] returns an `Err` naming the optimiser, the parameter's index and both
//! shapes, before touching any parameter and without resetting any state. Build a new optimiser
//! after reshaping a parameter.
//!
//! ```
//! use tapegrad_autograd::Var;
//! use tapegrad_nn::optim::{Optimizer, Sgd};
//! use tapegrad_tensor::Tensor;
//! let w = Var::parameter(Tensor::<f32>::from_vec(vec![1.0, -2.0], &[2])?);
//! let mut opt = Sgd::new(vec![w.clone()], 0.25).momentum(0.9);
//! opt.zero_grad();
//! w.mul(&w)?.sum_all().backward()?; // d/dw = 2 w
//! opt.step()?; // the first momentum step is a plain step: w - 0.25 * 2 w
//! assert_eq!(w.value().to_vec(), vec![0.5, -1.0]);
//! # Ok::<(), tapegrad_nn::Error>(())
//! ```

mod adam;
mod clip;
mod lr;
mod sgd;

pub use adam::{Adam, AdamW};
pub use clip::{clip_grad_norm_, max_norm_};
pub use lr::{CosineLr, LrScheduler, StepLr};
pub use sgd::Sgd;
// The state of optimisers and schedulers, `opt.state_dict()` / `opt.load_state_dict(..)`.
pub use crate::checkpoint::{StateDict, Stateful};

use tapegrad_autograd::Var;
use tapegrad_tensor::{Error, Float, Result, Tensor};

/// What every optimiser does: update its parameters from their gradients, clear the gradients,
/// and expose the learning rate to schedulers. Object safe, so a scheduler can drive any
/// optimiser through `&mut dyn Optimizer`.
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::optim::{Adam, Optimizer};
/// use tapegrad_tensor::{Tensor, TensorNew};
/// let w = Var::parameter(Tensor::<f64>::ones(&[3]));
/// let mut opt: Box<dyn Optimizer> = Box::new(Adam::new(vec![w.clone()], 1e-3));
/// opt.set_lr(1e-2);
/// assert_eq!(opt.lr(), 1e-2);
/// opt.step()?; // no gradient yet: nothing to do
/// assert_eq!(w.value().to_vec(), vec![1.0; 3]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub trait Optimizer {
    /// Applies one update to every parameter that has a gradient.
    ///
    /// Every check comes before any update: an error leaves every parameter and every piece of
    /// state as it was.
    ///
    /// # Errors
    /// An invalid hyperparameter (naming the optimiser and the value), a parameter whose shape
    /// differs from the one it had when the optimiser took it, or a gradient whose shape differs
    /// from its parameter's (each naming the optimiser, the parameter's index and both shapes).
    fn step(&mut self) -> Result<()>;

    /// Clears every parameter's gradient (PyTorch's `zero_grad(set_to_none=True)`).
    fn zero_grad(&mut self);

    /// The current learning rate.
    fn lr(&self) -> f64;

    /// Sets the learning rate (what schedulers call); validated by the next [`Optimizer::step`].
    fn set_lr(&mut self, lr: f64);
}

/// `Err` unless `lo <= v` (and `v < hi` or `v <= hi` by `closed_hi`), with a message naming `op`.
pub(crate) fn check_range(op: &'static str, what: &str, v: f64, lo: f64, hi: f64, closed_hi: bool) -> Result<()> {
    let ok = v >= lo && if closed_hi { v <= hi } else { v < hi };
    if ok {
        Ok(())
    } else {
        let close = if closed_hi { ']' } else { ')' };
        let hi = if hi.is_infinite() { "inf".to_string() } else { hi.to_string() };
        Err(Error::arg(op, format!("{what} {v} is outside [{lo}, {hi}{close}")))
    }
}

/// The shape of each parameter, recorded when an optimiser takes them.
pub(crate) fn shapes<T: Float>(params: &[Var<T>]) -> Vec<Vec<usize>> {
    params.iter().map(Var::shape).collect()
}

/// Every parameter's gradient for one step (`None` for those without one), made contiguous (a
/// view of the gradient's own storage when it already is) for an in-place update loop.
///
/// Checks every parameter before the step touches any: each must still have the shape it had
/// when the optimiser took it (`taken`), and its gradient that shape too.
pub(crate) fn gradients<T: Float>(
    op: &'static str,
    params: &[Var<T>],
    taken: &[Vec<usize>],
) -> Result<Vec<Option<Tensor<T>>>> {
    let mut grads = Vec::with_capacity(params.len());
    for (i, (p, taken)) in params.iter().zip(taken).enumerate() {
        let shape = p.shape();
        if shape != *taken {
            return Err(Error::mismatch(
                op,
                taken,
                &shape,
                format!(
                    "parameter {i} had shape {taken:?} when the optimiser took it and has shape {shape:?} now; \
                     an optimiser's parameters must keep their shapes (build a new optimiser after changing one)"
                ),
            ));
        }
        let Some(g) = p.grad() else {
            grads.push(None);
            continue;
        };
        if g.shape() != shape.as_slice() {
            return Err(Error::mismatch(
                op,
                &shape,
                g.shape(),
                format!("parameter {i}: the gradient's shape differs from the parameter's"),
            ));
        }
        grads.push(Some(g.contiguous()));
    }
    Ok(grads)
}

/// Updates parameter `index`, `p`, in place with `f` (one fused pass of the tensor crate, which
/// splits the slices into pieces on the pool itself), after checking that its value, the state
/// buffers `s1` and `s2` (each its length or empty) and the gradient `g` all have one length:
/// [`gradients`] checked the shapes, but another thread may have replaced the value since. `g`
/// must be contiguous. `f` runs once, on all of `p`'s value, `s1`, `s2` and `g`, and its error is
/// returned.
pub(crate) fn update_whole<T: Float>(
    op: &'static str,
    index: usize,
    p: &Var<T>,
    s1: &mut [T],
    s2: &mut [T],
    g: &Tensor<T>,
    f: impl FnOnce(&mut [T], &mut [T], &mut [T], &[T]) -> Result<()>,
) -> Result<()> {
    let Some(g_elems) = g.as_slice() else {
        return Err(Error::shape(op, g.shape(), "the gradient must be contiguous"));
    };
    let mut result = None;
    p.update_value(|x| {
        if g_elems.len() == x.len() && [s1.len(), s2.len()].iter().all(|&n| n == 0 || n == x.len()) {
            result = Some(f(x, s1, s2, g_elems));
        }
    });
    result.unwrap_or_else(|| {
        Err(Error::mismatch(
            op,
            &p.shape(),
            g.shape(),
            format!("parameter {index} changed shape during the step; its gradient and state no longer fit"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_refuses_a_value_that_no_longer_fits_its_gradient_or_state() {
        // What a concurrent `set_value` between the checks and the update would leave.
        let p = Var::parameter(Tensor::<f32>::ones(&[3]));
        let g = Tensor::<f32>::ones(&[2]);
        let never = |x: &mut [f32], _: &mut [f32], _: &mut [f32], _: &[f32]| {
            x.fill(9.0);
            Ok(())
        };
        let e = update_whole("SGD", 4, &p, &mut [], &mut [], &g, never).unwrap_err();
        assert!(e.to_string().contains("parameter 4"), "{e}");
        let g = Tensor::<f32>::ones(&[3]);
        assert!(update_whole("Adam", 0, &p, &mut [0.0; 2], &mut [0.0; 3], &g, never).is_err());
        assert_eq!(p.value().to_vec(), [1.0; 3]);
        update_whole("Adam", 0, &p, &mut [0.0; 3], &mut [], &g, never).unwrap();
        assert_eq!(p.value().to_vec(), [9.0; 3]);
    }
}
