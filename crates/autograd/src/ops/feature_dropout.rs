//! The dropout variants: `dropout2d` (whole channels, for convolutions) and `alpha_dropout`
//! (for SELU networks). Both draw and store their masks exactly as [`dropout`](super::dropout)
//! does (seeded, counter-based, one bit per mask entry) and backward uses the stored mask.

use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};

use super::dropout::{check_p, DropoutRecord};
use super::one;
use crate::var::{Backward, Grads, Var};

// ─── Dropout2d ───────────────────  y = x · m[n, c] / (1 - p);  dx = dy · m[n, c] / (1 - p)
struct Dropout2d {
    record: DropoutRecord,
    group: usize,
}
impl<T: Float> Backward<T> for Dropout2d {
    fn name(&self) -> &'static str {
        "dropout2d"
    }
    fn backward(&self, dy: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(self.record.mask().scale_groups(dy, self.group, self.record.scale())?))
    }
    fn extra_bytes(&self) -> usize {
        self.record.mask_bytes()
    }
    fn dropout(&self) -> Option<&DropoutRecord> {
        Some(&self.record)
    }
}

/// Channel dropout for `[N, C, ...]` inputs: each whole channel `(n, c)` is zeroed with
/// probability `p` and the kept ones scaled by `1 / (1 - p)`, like `torch.nn.functional.dropout2d`
/// (neighbouring pixels of a feature map are strongly correlated, so dropping single pixels
/// regularises little). The stored mask has one bit per channel.
///
/// # Errors
/// `dropout2d` when `p` is outside [0, 1] or NaN or the input has fewer than 2 dims.
pub fn dropout2d<T: Float>(x: &Var<T>, p: f64, gen: &mut Generator) -> Result<Var<T>> {
    check_p("dropout2d", p)?;
    let value = x.value().contiguous();
    if value.ndim() < 2 {
        return Err(Error::shape("dropout2d", value.shape(), "expects [N, C, ...] with at least 2 dims"));
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let channels = value.shape()[0] * value.shape()[1];
    let group = value.shape()[2..].iter().product::<usize>();
    let (seed, offset) = gen.reserve(channels as u64);
    let record = DropoutRecord::regenerate(seed, offset, p, channels)?;
    let y = record.mask().scale_groups(&value, group, record.scale())?;
    Ok(Var::from_op(y, &[x], || Dropout2d { record, group }))
}

/// SELU's negative saturation value, `-λ α`.
const SELU_NEG_SAT: f64 = -1.758_099_340_847_376_6;

// ─── AlphaDropout ────────────────  y = a (x m + α'(1 - m)) + b;  dx = dy · a · m
struct AlphaDropout<T: Float> {
    record: DropoutRecord,
    a: T,
}
impl<T: Float> Backward<T> for AlphaDropout<T> {
    fn name(&self) -> &'static str {
        "alpha_dropout"
    }
    fn backward(&self, dy: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(self.record.mask().scale(dy, self.a)?))
    }
    fn extra_bytes(&self) -> usize {
        self.record.mask_bytes()
    }
    fn dropout(&self) -> Option<&DropoutRecord> {
        Some(&self.record)
    }
}

/// Alpha dropout, for self-normalising (SELU) networks: dropped units are set to SELU's negative
/// saturation `α' = -λα` instead of 0, then an affine map `a·y + b` with
/// `a = (q + α'² q (1 - q))^(-1/2)` and `b = -a α' (1 - q)` (`q = 1 - p`) restores zero mean and
/// unit variance, as `torch.nn.AlphaDropout` does.
///
/// # Errors
/// `alpha_dropout` when `p` is outside [0, 1] or NaN. `p = 1` gives zeros.
pub fn alpha_dropout<T: Float>(x: &Var<T>, p: f64, gen: &mut Generator) -> Result<Var<T>> {
    check_p("alpha_dropout", p)?;
    if p == 0.0 {
        return Ok(x.clone());
    }
    let value = x.value().contiguous();
    let q = 1.0 - p;
    let a = (q + SELU_NEG_SAT * SELU_NEG_SAT * q * p).powf(-0.5);
    let b = -a * SELU_NEG_SAT * p;
    let n = value.numel();
    let (seed, offset) = gen.reserve(n as u64);
    let record = DropoutRecord::regenerate(seed, offset, p, n)?;
    if p == 1.0 {
        // Nothing is kept (and `a` is infinite): zeros, as PyTorch's `x * 0`.
        let y = record.mask().scale(&value, T::ZERO)?;
        return Ok(Var::from_op(y, &[x], || AlphaDropout { record, a: T::ZERO }));
    }
    let (a_t, b_t) = (T::from_f64(a), T::from_f64(b));
    let dropped = T::from_f64(a * SELU_NEG_SAT + b);
    let y = record.mask().affine(&value, a_t, b_t, dropped)?;
    Ok(Var::from_op(y, &[x], || AlphaDropout { record, a: a_t }))
}
