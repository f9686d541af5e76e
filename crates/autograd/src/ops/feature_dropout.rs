//! The dropout variants: `dropout2d` (whole channels, for convolutions), `alpha_dropout` and
//! `feature_alpha_dropout` (for SELU networks). All draw and store their masks exactly as
//! [`dropout`](super::dropout) does (seeded, counter-based, one bit per mask entry) and backward
//! uses the stored mask.

use tapegrad_tensor::TensorNew;
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
    fn backward_var(&self, dy: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<crate::var::VarGrads<T>> {
        // Linear in its input: dy times the stored factor, a constant.
        super::stored_factor_var(self, dy)
    }
}

/// Channel dropout for `[N, C, ...]` inputs: each whole channel `(n, c)` is zeroed with
/// probability `p` and the kept ones scaled by `1 / (1 - p)`, like `torch.nn.functional.dropout2d`
/// (neighbouring pixels of a feature map are strongly correlated, so dropping single pixels
/// regularises little). The stored mask has one bit per channel; backward is
/// `dx = dy · m[n, c] / (1 - p)`. Dims 0 and 1 are always read as `N` and `C`: an unbatched
/// `[C, H, W]` map needs `unsqueeze(0)` first (the `Dropout2d` layer refuses a 3-dim input for
/// that reason). Channel dropout is from Tompson et al., 2015, "Efficient Object Localization
/// Using Convolutional Networks".
///
/// # Errors
/// `dropout2d` when `p` is outside [0, 1] or NaN or the input has fewer than 2 dims. `p = 0`
/// returns `x` itself; `p = 1` gives zeros and zero gradients.
///
/// ```
/// use tapegrad_autograd::{dropout2d, Var};
/// use tapegrad_tensor::{Generator, Tensor, TensorNew};
/// let x = Var::new(Tensor::<f32>::ones(&[2, 16, 3, 3]));
/// let y = dropout2d(&x, 0.5, &mut Generator::new(1))?.value().to_vec();
/// assert!(y.chunks(9).all(|plane| plane.iter().all(|&v| v == plane[0]))); // 0 or 2 per plane
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
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
    let (seed, offset) = crate::checkpoint::reserve(gen, channels as u64, p)?;
    let record = DropoutRecord::regenerate(seed, offset, p, channels)?;
    let y = record.mask().scale_groups(&value, group, record.scale())?;
    Ok(Var::from_op(y, &[x], || Dropout2d { record, group }))
}

/// SELU's negative saturation value, `-λ α`.
const SELU_NEG_SAT: f64 = -1.758_099_340_847_376_6;

/// Alpha dropout's affine correction for drop probability `p < 1`: `(a, b, a α' + b)`, the
/// scale and shift of a kept unit and the value of a dropped one.
fn alpha_affine(p: f64) -> (f64, f64, f64) {
    let q = 1.0 - p;
    let a = (q + SELU_NEG_SAT * SELU_NEG_SAT * q * p).powf(-0.5);
    let b = -a * SELU_NEG_SAT * p;
    (a, b, a * SELU_NEG_SAT + b)
}

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
    fn backward_var(&self, dy: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<crate::var::VarGrads<T>> {
        // Linear in its input: dy times the stored factor, a constant.
        super::stored_factor_var(self, dy)
    }
}

/// Alpha dropout, for self-normalising (SELU) networks: dropped units are set to SELU's negative
/// saturation `α' = -λα` instead of 0, then an affine map `a·y + b` with
/// `a = (q + α'² q (1 - q))^(-1/2)` and `b = -a α' (1 - q)` (`q = 1 - p`) restores zero mean and
/// unit variance, as `torch.nn.AlphaDropout` does (Klambauer et al., 2017, "Self-Normalizing
/// Neural Networks"). Like PyTorch, which computes `x · (a m) + b'`, a NaN or infinite input
/// gives NaN whether kept or dropped. The gradient is `dy · a · m` with the stored mask.
///
/// # Errors
/// `alpha_dropout` when `p` is outside [0, 1] or NaN. `p = 0` returns `x` itself; `p = 1` gives
/// zeros (`x · 0`, as PyTorch) and zero gradients.
///
/// ```
/// use tapegrad_autograd::{alpha_dropout, Var};
/// use tapegrad_tensor::{Generator, Tensor, TensorNew};
/// let x = Var::new(Tensor::<f64>::zeros(&[1000]));
/// let y = alpha_dropout(&x, 0.2, &mut Generator::new(1))?.value().to_vec();
/// // Two values only: kept zeros become b, dropped units a α' + b.
/// let mut values = y.clone();
/// values.sort_by(f64::total_cmp);
/// values.dedup();
/// assert_eq!(values.len(), 2);
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn alpha_dropout<T: Float>(x: &Var<T>, p: f64, gen: &mut Generator) -> Result<Var<T>> {
    check_p("alpha_dropout", p)?;
    if p == 0.0 {
        return Ok(x.clone());
    }
    let value = x.value().contiguous();
    let n = value.numel();
    let (seed, offset) = crate::checkpoint::reserve(gen, n as u64, p)?;
    let record = DropoutRecord::regenerate(seed, offset, p, n)?;
    if p == 1.0 {
        // Nothing is kept (and `a` is infinite): zeros, as PyTorch's `x * 0`.
        let y = record.mask().scale(&value, T::ZERO)?;
        return Ok(Var::from_op(y, &[x], || AlphaDropout { record, a: T::ZERO }));
    }
    let (a, b, dropped) = alpha_affine(p);
    let a = T::from_f64(a);
    // PyTorch's form, `x · (a m) + shift` with the shift `b` where kept and `a α' + b` where
    // dropped: a kept infinity stays infinite (`∞ · a + b`), a dropped NaN or infinity becomes
    // NaN (`x · 0`), as in PyTorch.
    let zeros = Tensor::<T>::zeros(value.shape());
    let shift = record.mask().affine(&zeros, T::ZERO, T::from_f64(b), T::from_f64(dropped))?;
    let y = record.mask().scale(&value, a)?.add(&shift)?;
    Ok(Var::from_op(y, &[x], || AlphaDropout { record, a }))
}

// ─── FeatureAlphaDropout ─────────  y = a (x m[n, c] + α'(1 - m[n, c])) + b;  dx = dy · a · m[n, c]
struct FeatureAlphaDropout<T: Float> {
    record: DropoutRecord,
    group: usize,
    a: T,
}
impl<T: Float> Backward<T> for FeatureAlphaDropout<T> {
    fn name(&self) -> &'static str {
        "feature_alpha_dropout"
    }
    fn backward(&self, dy: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(self.record.mask().scale_groups(dy, self.group, self.a)?))
    }
    fn extra_bytes(&self) -> usize {
        self.record.mask_bytes()
    }
    fn dropout(&self) -> Option<&DropoutRecord> {
        Some(&self.record)
    }
    fn backward_var(&self, dy: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<crate::var::VarGrads<T>> {
        // Linear in its input: dy times the stored factor, a constant.
        super::stored_factor_var(self, dy)
    }
}

/// Alpha dropout of whole channels, for `[N, C, ...]` inputs of SELU networks: each channel
/// `(n, c)` is dropped with probability `p` (one mask bit per channel) and
/// `y = a (x m[n, c] + α'(1 - m[n, c])) + b` with [`alpha_dropout`]'s `α'`, `a` and `b`, as
/// `torch.nn.functional.feature_alpha_dropout` computes it (`x · (a m) + b'`, so a NaN or
/// infinite input gives NaN whether kept or dropped). Backward: `dx = dy · a · m[n, c]` with
/// the stored mask. Alpha dropout is from Klambauer et al., 2017, "Self-Normalizing Neural
/// Networks".
///
/// # Errors
/// `feature_alpha_dropout` when `p` is outside [0, 1] or NaN, or the input has fewer than 2
/// dims. `p = 0` returns `x` itself; `p = 1` gives zeros (`x · 0`, as PyTorch) and zero
/// gradients.
///
/// ```
/// use tapegrad_autograd::{feature_alpha_dropout, Var};
/// use tapegrad_tensor::{Generator, Tensor, TensorNew};
/// let x = Var::new(Tensor::<f64>::zeros(&[4, 8, 3, 3]));
/// let y = feature_alpha_dropout(&x, 0.5, &mut Generator::new(1))?.value().to_vec();
/// // Each 3 x 3 plane is constant: b where kept, a α' + b where dropped.
/// assert!(y.chunks(9).all(|plane| plane.iter().all(|&v| v == plane[0])));
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn feature_alpha_dropout<T: Float>(x: &Var<T>, p: f64, gen: &mut Generator) -> Result<Var<T>> {
    const OP: &str = "feature_alpha_dropout";
    check_p(OP, p)?;
    let value = x.value().contiguous();
    if value.ndim() < 2 {
        return Err(Error::shape(OP, value.shape(), "expects [N, C, ...] with at least 2 dims"));
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let channels = value.shape()[0] * value.shape()[1];
    let group = value.shape()[2..].iter().product::<usize>();
    let (seed, offset) = crate::checkpoint::reserve(gen, channels as u64, p)?;
    let record = DropoutRecord::regenerate(seed, offset, p, channels)?;
    if p == 1.0 {
        let y = record.mask().scale_groups(&value, group, T::ZERO)?;
        return Ok(Var::from_op(y, &[x], || FeatureAlphaDropout { record, group, a: T::ZERO }));
    }
    let (a, b, dropped) = alpha_affine(p);
    let a = T::from_f64(a);
    // PyTorch's form: x · (a m) plus a per-channel shift (b where kept, a α' + b where dropped),
    // broadcast over the channel's elements.
    let shift: Vec<T> = (0..channels).map(|i| T::from_f64(if record.kept(i) { b } else { dropped })).collect();
    let mut shift_shape = value.shape().to_vec();
    shift_shape[2..].iter_mut().for_each(|d| *d = 1);
    let y = record.mask().scale_groups(&value, group, a)?.add(&Tensor::from_vec(shift, &shift_shape)?)?;
    Ok(Var::from_op(y, &[x], || FeatureAlphaDropout { record, group, a }))
}
