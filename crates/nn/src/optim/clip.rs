//! Constraints on parameters and gradients: the max-norm constraint of the dropout paper and
//! PyTorch's `clip_grad_norm_`.

use tapegrad_autograd::Var;
use tapegrad_tensor::{Error, Float, Result, Tensor};

use super::check_range;

/// The max-norm constraint (Srivastava et al., 2014, the dropout paper, §5.1): rescales each
/// row of every parameter with two or more dims so that its L2 norm is at most `c`, in place.
///
/// A row is one output unit's incoming weights: index `i` of dim 0, all other dims flattened
/// (a Linear weight `[out, in]` has `out` rows of `in`; a Conv2d weight `[out, in, kh, kw]` has
/// `out` rows of `in·kh·kw`). As `torch.renorm(w, 2, 0, c)`:
///
/// ```text
/// ‖row‖ > c  ⇒  row ← row · c / (‖row‖ + 1e-7)
/// ```
///
/// Rows already within `c` are untouched. Parameters with fewer than two dims (biases, norm
/// scales) are left alone: the constraint is on incoming weight vectors. Call it after each
/// [`Optimizer::step`](super::Optimizer::step); it records nothing on the tape.
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::optim::max_norm_;
/// use tapegrad_tensor::Tensor;
/// let w = Var::parameter(Tensor::<f64>::from_vec(vec![3.0, 4.0, 0.3, 0.4], &[2, 2])?);
/// max_norm_(&[w.clone()], 1.0)?;
/// let x = w.value().to_vec(); // row 0 had norm 5: scaled to 1; row 1 (norm 0.5) is untouched
/// assert!((x[0] - 0.6).abs() < 1e-6 && (x[1] - 0.8).abs() < 1e-6);
/// assert_eq!(&x[2..], &[0.3, 0.4]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// `c` negative or not finite.
pub fn max_norm_<T: Float>(params: &[Var<T>], c: f64) -> Result<()> {
    check_range("max_norm_", "c", c, 0.0, f64::INFINITY, false)?;
    for p in params {
        let value = p.value();
        if value.ndim() < 2 || value.numel() == 0 {
            continue;
        }
        let rows = value.shape()[0];
        let cols = value.numel() / rows;
        let mut x = value.to_vec();
        let mut changed = false;
        for row in x.chunks_mut(cols) {
            let norm = row.iter().map(|&v| v.to_f64() * v.to_f64()).sum::<f64>().sqrt();
            if norm > c {
                let scale = T::from_f64(c / (norm + 1e-7));
                row.iter_mut().for_each(|v| *v *= scale);
                changed = true;
            }
        }
        if changed {
            p.set_value(Tensor::from_vec(x, value.shape())?);
        }
    }
    Ok(())
}

/// Clips the gradients of `params` so that their total L2 norm is at most `max_norm`, in place,
/// and returns the total norm before clipping, as `torch.nn.utils.clip_grad_norm_`.
///
/// ```text
/// total = √(Σ_p ‖∇p‖²)
/// ∇p ← ∇p · min(1, max_norm / (total + 1e-6))
/// ```
///
/// Parameters without a gradient are skipped. A non-finite total is returned as is (the
/// gradients are then scaled by NaN or 0, as PyTorch does with `error_if_nonfinite=False`).
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::optim::clip_grad_norm_;
/// use tapegrad_tensor::{Tensor, TensorNew};
/// let w = Var::parameter(Tensor::<f64>::zeros(&[2]));
/// w.set_grad(Some(Tensor::from_vec(vec![3.0, 4.0], &[2])?));
/// let total = clip_grad_norm_(&[w.clone()], 1.0)?;
/// assert_eq!(total, 5.0);
/// let g = w.grad().unwrap().to_vec();
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// `max_norm` negative or NaN.
pub fn clip_grad_norm_<T: Float>(params: &[Var<T>], max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::arg("clip_grad_norm_", format!("max_norm {max_norm} is negative or NaN")));
    }
    let grads: Vec<(&Var<T>, Tensor<T>)> = params.iter().filter_map(|p| p.grad().map(|g| (p, g))).collect();
    // As PyTorch: the norm of the per-tensor norms.
    let total = grads
        .iter()
        .map(|(_, g)| {
            let n = g.to_vec().iter().map(|&v| v.to_f64() * v.to_f64()).sum::<f64>().sqrt();
            n * n
        })
        .sum::<f64>()
        .sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 || coef.is_nan() {
        let coef = T::from_f64(coef);
        for (p, g) in grads {
            p.set_grad(Some(g.mul_scalar(coef)));
        }
    }
    Ok(total)
}
