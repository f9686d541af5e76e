//! Gaussian dropout: multiplicative normal noise instead of a Bernoulli mask.
//!
//! The noise is `1 + σ z` with `σ² = p / (1 - p)` and `z` standard normals drawn counter-style
//! from the [`Generator`] ([`Generator::fill_normal_at`]), so the same seed gives the same noise
//! on any thread count. The tape entry stores seed, offset and `p` (a [`DropoutRecord`] with
//! [`is_gaussian`](DropoutRecord::is_gaussian)) and the noise tensor that backward multiplies by.

use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};

use super::dropout::{gaussian_sigma, DropoutRecord};
use super::one;
use crate::var::{Backward, Grads, Var};

// ─── GaussianDropout ─────────────  y = x · e, e = 1 + σ z;  dx = dy · e  (saves e)
struct GaussianDropout<T: Float> {
    record: DropoutRecord,
    noise: Tensor<T>,
}
impl<T: Float> Backward<T> for GaussianDropout<T> {
    fn name(&self) -> &'static str {
        "gaussian_dropout"
    }
    fn backward(&self, dy: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(dy.mul(&self.noise)?))
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.noise]
    }
    fn dropout(&self) -> Option<&DropoutRecord> {
        Some(&self.record)
    }
    fn backward_var(&self, dy: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<crate::var::VarGrads<T>> {
        // Linear in its input: dy times the stored factor, a constant.
        super::stored_factor_var(self, dy)
    }
}

/// Checks a Gaussian dropout probability for `op`: in [0, 1), not NaN. `p = 1` would give the
/// noise an infinite variance `p / (1 - p)`.
///
/// # Errors
/// `op` when `p` is outside [0, 1) or NaN.
pub fn check_gaussian_p(op: &'static str, p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::arg(
            op,
            format!(
                "the drop probability p must be in [0, 1) (the noise variance p / (1 - p) is infinite at 1), got {p}"
            ),
        ))
    }
}

/// Gaussian dropout: `y = x · e` with `e ~ N(1, p / (1 - p))` drawn independently per element,
/// the multiplicative noise of Srivastava et al., 2014 ("Dropout: A Simple Way to Prevent
/// Neural Networks from Overfitting", section 10): it has the mean (1) and variance
/// (`p / (1 - p)`) of inverted Bernoulli dropout's `m / (1 - p)`, so the expected output equals
/// the input and nothing is rescaled at test time. Backward: `dx = dy · e` with the stored
/// noise. Any shape; the output has `x`'s shape. A NaN or infinite input stays non-finite.
///
/// The noise is `1 + σ z`, `z` the standard normals of the `(seed, offset)` this call reserves
/// from `gen` ([`Generator::fill_normal_at`]): the same seed gives the same noise on any thread
/// count, and [`DropoutRecord::gaussian_noise`] regenerates it. `p = 0` returns `x` itself.
///
/// # Errors
/// `gaussian_dropout` when `p` is outside [0, 1) or NaN (`p = 1` is refused: the variance is
/// infinite).
///
/// ```
/// use tapegrad_autograd::{gaussian_dropout, Var};
/// use tapegrad_tensor::{Generator, Tensor, TensorNew};
/// let x = Var::parameter(Tensor::<f64>::ones(&[10_000]));
/// let y = gaussian_dropout(&x, 0.5, &mut Generator::new(1))?.value().to_vec(); // e ~ N(1, 1)
/// let mean = y.iter().sum::<f64>() / 10_000.0;
/// assert!((mean - 1.0).abs() < 0.05);
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn gaussian_dropout<T: Float>(x: &Var<T>, p: f64, gen: &mut Generator) -> Result<Var<T>> {
    check_gaussian_p("gaussian_dropout", p)?;
    if p == 0.0 {
        return Ok(x.clone());
    }
    let value = x.value();
    let n = value.numel();
    let (seed, offset) = crate::checkpoint::reserve(gen, Generator::normal_words(n), p)?;
    let record = DropoutRecord::gaussian(seed, offset, p, n);
    let mut z = vec![T::ZERO; n];
    Generator::fill_normal_at(seed, offset, &mut z);
    let sigma = T::from_f64(gaussian_sigma(p));
    let noise = Tensor::from_vec(z.into_iter().map(|z| T::ONE + sigma * z).collect(), value.shape())?;
    let y = value.mul(&noise)?;
    Ok(Var::from_op(y, &[x], || GaussianDropout { record, noise }))
}
