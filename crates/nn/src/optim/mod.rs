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
    /// # Errors
    /// An invalid hyperparameter (naming the optimiser and the value), or a gradient whose shape
    /// differs from its parameter's.
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

/// A parameter's gradient, checked against the parameter's shape and made contiguous (a view
/// of the gradient's own storage when it already is), for an in-place update loop.
pub(crate) fn gradient<T: Float>(op: &'static str, p: &Var<T>) -> Result<Option<Tensor<T>>> {
    let Some(g) = p.grad() else { return Ok(None) };
    let shape = p.shape();
    if g.shape() != shape.as_slice() {
        return Err(Error::mismatch(op, &shape, g.shape(), "the gradient's shape differs from the parameter's"));
    }
    Ok(Some(g.contiguous()))
}

/// Elements per piece of an in-place update. Pieces run in parallel on rayon's pool; each
/// element's update reads only its own parameter, state and gradient values, so the result is
/// the same for any thread count.
const PIECE: usize = 1 << 15;

/// Runs `f` over matching pieces of a parameter `x`, two per-element state buffers `s1` and
/// `s2` (each either `x.len()` long or empty, when the optimiser keeps no such state) and the
/// gradient `g`, in parallel when `x` has more than one piece and is large enough to split (see
/// `tapegrad_tensor::parallel`).
pub(crate) fn update_in_pieces<T: Float>(
    x: &mut [T],
    s1: &mut [T],
    s2: &mut [T],
    g: &[T],
    f: impl Fn(&mut [T], &mut [T], &mut [T], &[T]) + Sync,
) {
    use rayon::prelude::*;
    debug_assert!(g.len() == x.len() && [s1.len(), s2.len()].iter().all(|&n| n == 0 || n == x.len()));
    let (x_len, pieces) = (x.len(), x.len().div_ceil(PIECE));
    if pieces <= 1 {
        return f(x, s1, s2, g);
    }
    fn split<T>(s: &mut [T], pieces: usize) -> Vec<&mut [T]> {
        if s.is_empty() {
            (0..pieces).map(|_| &mut [][..]).collect()
        } else {
            s.chunks_mut(PIECE).collect()
        }
    }
    let (s1, s2) = (split(s1, pieces), split(s2, pieces));
    let work: Vec<_> = x.chunks_mut(PIECE).zip(s1).zip(s2).zip(g.chunks(PIECE)).collect();
    let min = tapegrad_tensor::parallel::min_len(x_len);
    work.into_par_iter().with_min_len(min).for_each(|(((x, s1), s2), g)| f(x, s1, s2, g));
}
