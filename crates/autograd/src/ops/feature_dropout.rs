//! The dropout variants: `dropout2d` (whole channels, for convolutions) and `alpha_dropout`
//! (for SELU networks). Both draw and store their masks exactly as [`dropout`](super::dropout)
//! does (seeded, counter-based, one bit per mask entry) and backward uses the stored mask.

use rayon::prelude::*;
use tapegrad_tensor::{Float, Generator, Tensor};

use super::dropout::{check_p, DropoutRecord};
use super::one;
use crate::error::Result;
use crate::var::{Backward, Grads, Var};

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 16;

/// `out[i] = if bit(i / group) { x[i] * keep } else { x[i] * 0 + drop }` over a contiguous `x`,
/// chunked so the split never depends on the thread count.
fn apply_grouped<T: Float>(
    record: &DropoutRecord,
    group: usize,
    x: &[T],
    keep: T,
    drop_value: T,
    affine: Option<(T, T)>,
) -> Vec<T> {
    let words = record.mask_words();
    let mut out = vec![T::ZERO; x.len()];
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).enumerate().for_each(|(c, (out, x))| {
        for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            let bit = (c * CHUNK + j) / group;
            let kept = words[bit / 64] >> (bit % 64) & 1 == 1;
            *o = match (kept, affine) {
                (true, None) => v * keep,
                (false, None) => drop_value,
                (true, Some((a, b))) => a * v + b,
                (false, Some((_, _))) => drop_value,
            };
        }
    });
    out
}

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
        let dy = dy.contiguous();
        let keep = T::from_f64(1.0 / (1.0 - self.record.p));
        let data = dy.as_slice().map(|s| apply_grouped(&self.record, self.group, s, keep, T::ZERO, None));
        Ok(one(Tensor::from_vec(data.unwrap_or_default(), dy.shape())?))
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
/// `dropout2d` when `p` is outside [0, 1) or the input has fewer than 2 dims.
pub fn dropout2d<T: Float>(x: &Var<T>, p: f64, gen: &mut Generator) -> Result<Var<T>> {
    check_p("dropout2d", p)?;
    let value = x.value().contiguous();
    if value.ndim() < 2 {
        return Err(tapegrad_tensor::Error::InvalidShape {
            op: "dropout2d",
            shape: value.shape().to_vec(),
            reason: "expects [N, C, ...] with at least 2 dims".into(),
        }
        .into());
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let channels = value.shape()[0] * value.shape()[1];
    let group = value.shape()[2..].iter().product::<usize>();
    let (seed, offset) = gen.reserve(channels as u64);
    let record = DropoutRecord::regenerate(seed, offset, p, channels);
    let keep = T::from_f64(1.0 / (1.0 - p));
    let data = value.as_slice().map(|s| apply_grouped(&record, group.max(1), s, keep, T::ZERO, None));
    let y = Tensor::from_vec(data.unwrap_or_default(), value.shape())?;
    Ok(Var::from_op(y, &[x], || Dropout2d { record, group: group.max(1) }))
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
        let dy = dy.contiguous();
        let data = dy.as_slice().map(|s| apply_grouped(&self.record, 1, s, self.a, T::ZERO, None));
        Ok(one(Tensor::from_vec(data.unwrap_or_default(), dy.shape())?))
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
/// `alpha_dropout` when `p` is outside [0, 1).
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
    let record = DropoutRecord::regenerate(seed, offset, p, n);
    let (a_t, b_t) = (T::from_f64(a), T::from_f64(b));
    let dropped = T::from_f64(a * SELU_NEG_SAT + b);
    let data = value.as_slice().map(|s| apply_grouped(&record, 1, s, T::ONE, dropped, Some((a_t, b_t))));
    let y = Tensor::from_vec(data.unwrap_or_default(), value.shape())?;
    Ok(Var::from_op(y, &[x], || AlphaDropout { record, a: a_t }))
}
