//! Elementwise and reduction kernels over contiguous slices: a scalar reference (`scalar.rs`),
//! the loop bodies shared by every SIMD path (`simd.rs`), and one register type per instruction
//! set (`avx2.rs`, `avx512.rs`, `neon.rs`).
//!
//! The tensor ops in `ops/` walk their operands run by run (`crate::strided::for_each_run_in`)
//! and hand each run to one of these kernels: a run is either a contiguous slice or one value
//! repeated along the run (a stride-0, broadcast operand), which is what [`Operand`] says.
//! Runs with any other stride take the scalar strided loops ([`binary_strided`],
//! [`unary_strided`]).
//!
//! Every SIMD path computes exactly what the scalar reference computes for binary ops, `neg`,
//! `abs`, `relu`, `sqrt` and `max` (NaN propagates everywhere, as in PyTorch); `sum` may differ in
//! the last bits because it adds in another order, and `exp` (a polynomial of its own) stays
//! within 2 ulp (f32) / 3 ulp (f64) of the exact value. Tests compare each available path with the
//! scalar one on the same inputs.

use crate::dtype::Float;
use crate::kernels::Isa;

mod rows;
mod scalar;
mod simd;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

pub use scalar::{binary_strided, unary_strided, Cascade, Strided};

// ─── op tables ─────────────────────────────────────────────────────────────────

/// A binary elementwise op, `out = lhs op rhs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `lhs + rhs`.
    Add,
    /// `lhs - rhs`.
    Sub,
    /// `lhs * rhs`.
    Mul,
    /// `lhs / rhs`.
    Div,
    /// The larger value; NaN if either is NaN (`torch.maximum`).
    Maximum,
    /// The smaller value; NaN if either is NaN (`torch.minimum`).
    Minimum,
}

/// A unary elementwise op, `out = op(x)`. The kernels vectorise `Neg`, `Abs`, `Relu`, `Sqrt`
/// and `Exp`; the other transcendental ones run the scalar formula per element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp<T> {
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// `max(x, 0)`, NaN for NaN.
    Relu,
    /// `√x`.
    Sqrt,
    /// `eˣ`.
    Exp,
    /// `ln x`.
    Log,
    /// `tanh x`.
    Tanh,
    /// `1 / (1 + e⁻ˣ)`, computed without overflow for large `|x|`.
    Sigmoid,
    /// `x · ½ · (1 + erf(x / √2))`, PyTorch's exact GELU.
    Gelu,
    /// `½x · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`, PyTorch's `approximate="tanh"` GELU.
    GeluTanh,
    /// `xᵉ` for a fixed exponent `e`.
    Powf(T),
}

/// One operand of a kernel run: a contiguous slice, or one value repeated along the whole run
/// (a broadcast, stride-0 operand).
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a, T> {
    /// A contiguous slice, as long as the output.
    Slice(&'a [T]),
    /// One value for every position.
    Splat(T),
}

impl<T> Operand<'_, T> {
    fn check_len(&self, n: usize) {
        if let Operand::Slice(s) = self {
            assert_eq!(s.len(), n, "elementwise kernel: operand of length {} for an output of {n}", s.len());
        }
    }
}

// ─── Adam ──────────────────────────────────────────────────────────────────────

/// One Adam or AdamW step's constants, for the elementwise kernels' `adam` and the public
/// `tapegrad_tensor::ops::optim::AdamStep` (this type): each element `x` of a parameter, with
/// its moments `m`, `v` and gradient `g`, becomes
///
/// ```text
/// g ← g + wd · x                      (decay = L2(wd))
/// x ← x · shrink                      (decay = Decoupled(shrink))
/// m ← m + one_minus_b1 · (g − m)
/// v ← b2 · v + (one_minus_b2 · g) · g
/// x ← x − (step_size · m) / (√v / bias2_sqrt + eps)
/// ```
///
/// each operation rounded once, in this order (no fused multiply-add), on every path: the SIMD
/// kernels give the scalar loop's bits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep<T> {
    /// `1 − β1`.
    pub one_minus_b1: T,
    /// `β2`.
    pub b2: T,
    /// `1 − β2`.
    pub one_minus_b2: T,
    /// `√(1 − β2ᵗ)`, the second moment's bias correction.
    pub bias2_sqrt: T,
    /// `ε`.
    pub eps: T,
    /// `η / (1 − β1ᵗ)`: the learning rate over the first moment's bias correction.
    pub step_size: T,
    /// The weight decay, if any.
    pub decay: AdamDecay<T>,
}

/// How an [`AdamStep`] decays the weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AdamDecay<T> {
    /// No decay.
    None,
    /// Adam's L2 penalty: `λ x` added to the gradient (`λ` given).
    L2(T),
    /// AdamW's decoupled decay: the weight multiplied by `1 − ηλ` (given) before the update.
    Decoupled(T),
}

impl<T: Float> AdamStep<T> {
    /// One element's update: the definition every path follows.
    #[inline(always)]
    pub(crate) fn element(&self, x: &mut T, m: &mut T, v: &mut T, g: T) {
        let g = match self.decay {
            AdamDecay::None => g,
            AdamDecay::L2(wd) => g + wd * *x,
            AdamDecay::Decoupled(shrink) => {
                *x *= shrink;
                g
            }
        };
        *m = *m + self.one_minus_b1 * (g - *m);
        *v = self.b2 * *v + self.one_minus_b2 * g * g;
        let denom = v.sqrt() / self.bias2_sqrt + self.eps;
        *x -= self.step_size * *m / denom;
    }
}

// ─── SGD ───────────────────────────────────────────────────────────────────────

/// One SGD step's constants, for the elementwise kernels' `sgd` and the public
/// `tapegrad_tensor::ops::optim::SgdStep` (this type): each element `x` of a parameter, with its
/// gradient `g` and (with momentum) its momentum buffer `b`, becomes
///
/// ```text
/// d ← g + wd · x                              (weight_decay = Some(wd))
/// b ← d  (first step)  or  μ · b + (1 − τ) · d    (momentum)
/// d ← d + μ · b  (Nesterov)  or  b                (momentum)
/// x ← x − lr · d
/// ```
///
/// each operation rounded once, in this order (no fused multiply-add), on every path: PyTorch's
/// `SGD` in PyTorch's order, and the scalar loop's bits on every instruction set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep<T> {
    /// The learning rate `lr`.
    pub lr: T,
    /// The L2 penalty `wd` added to the gradient, if any.
    pub weight_decay: Option<T>,
    /// The momentum, if any.
    pub momentum: Option<SgdMomentum<T>>,
}

/// The momentum of an [`SgdStep`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdMomentum<T> {
    /// `μ`.
    pub momentum: T,
    /// `1 − τ`: one minus the dampening.
    pub one_minus_dampening: T,
    /// Nesterov's form: the step is `d + μ · b` rather than `b`.
    pub nesterov: bool,
    /// The parameter's first step: the buffer starts as `d` (its contents are not read).
    pub first: bool,
}

impl<T: Float> SgdStep<T> {
    /// The length of the momentum buffer for a parameter of `n` elements: `n` with momentum,
    /// 0 without.
    pub(crate) fn buffer_len(&self, n: usize) -> usize {
        if self.momentum.is_some() {
            n
        } else {
            0
        }
    }

    /// One element's update: the definition every path follows (`b` is untouched without
    /// momentum).
    #[inline(always)]
    pub(crate) fn element(&self, x: &mut T, b: &mut T, g: T) {
        let mut d = g;
        if let Some(wd) = self.weight_decay {
            d += wd * *x;
        }
        if let Some(m) = self.momentum {
            *b = if m.first { d } else { m.momentum * *b + m.one_minus_dampening * d };
            d = if m.nesterov { d + m.momentum * *b } else { *b };
        }
        *x -= self.lr * d;
    }
}

// ─── the kernel table ──────────────────────────────────────────────────────────

/// The elementwise and reduction kernels for one element type (`f32` and `f64`), each taking the
/// instruction-set path to run on. A path the CPU does not support runs the scalar reference
/// instead (so no call is ever unsound); tests pass each of [`available_isas`] explicitly.
///
/// [`available_isas`]: crate::kernels::available_isas
pub trait ElementwiseKernels: Sized + Copy {
    /// `out[i] = lhs[i] op rhs[i]`.
    ///
    /// # Panics
    /// If a slice operand's length differs from `out.len()` (a caller bug).
    fn binary(isa: Isa, op: BinaryOp, lhs: Operand<'_, Self>, rhs: Operand<'_, Self>, out: &mut [Self]);

    /// `acc[i] = acc[i] op rhs[i]`, in place (row accumulation in reductions, scaling in softmax).
    ///
    /// # Panics
    /// If a slice `rhs` is not as long as `acc`.
    fn binary_assign(isa: Isa, op: BinaryOp, acc: &mut [Self], rhs: Operand<'_, Self>);

    /// `out[i] = op(x[i])`.
    ///
    /// # Panics
    /// If `x` and `out` differ in length.
    fn unary(isa: Isa, op: UnaryOp<Self>, x: &[Self], out: &mut [Self]);

    /// `Σ x[i]` (0 for an empty slice), added in a blocked order with several accumulators.
    fn sum(isa: Isa, x: &[Self]) -> Self;

    /// `max x[i]`: NaN if any element is NaN, −∞ for an empty slice.
    fn max(isa: Isa, x: &[Self]) -> Self;

    /// `out[i] = e^(x[i] − shift)` and returns `Σ out[i]` (softmax's numerator and denominator in
    /// one pass).
    ///
    /// # Panics
    /// If `x` and `out` differ in length.
    fn exp_sum(isa: Isa, x: &[Self], shift: Self, out: &mut [Self]) -> Self;

    /// Softmax over each row of `out` (rows of `scratch.len()` elements): for row `r`,
    /// `scratch = x_r · scale`, plus `mask(r)` when it is `Some`, then
    /// `out_r = e^(scratch − max scratch) / Σ e^(scratch − max scratch)`. Exactly what
    /// `binary`, `binary_assign`, `max` and `exp_sum` give row by row, in one call.
    ///
    /// # Panics
    /// If `scratch` is empty, `x` and `out` differ in length, `out` is not a whole number of rows,
    /// or a mask row is not `scratch.len()` long.
    fn softmax_rows<'m>(
        isa: Isa,
        x: &[Self],
        scale: Self,
        mask: &dyn Fn(usize) -> Option<&'m [Self]>,
        scratch: &mut [Self],
        out: &mut [Self],
    );

    /// Softmax's backward over rows of `len`: `out = (dy − Σ_row dy · y) · y · scale` (the
    /// multiplication by `scale` skipped when it is 1), exactly as `binary`, `sum` and
    /// `binary_assign` give it row by row, in one call.
    ///
    /// # Panics
    /// If `len` is 0, the slices differ in length, or they are not a whole number of rows.
    fn softmax_backward_rows(isa: Isa, y: &[Self], dy: &[Self], len: usize, scale: Self, out: &mut [Self]);

    /// One [`AdamStep`] over a parameter's elements `x`, its moments `m` and `v` and its gradient
    /// `g`, in place: the scalar definition's bits on every path.
    ///
    /// # Panics
    /// If the four slices differ in length.
    fn adam(isa: Isa, step: &AdamStep<Self>, x: &mut [Self], m: &mut [Self], v: &mut [Self], g: &[Self]);

    /// One [`SgdStep`] over a parameter's elements `x`, its momentum buffer `b` (empty without
    /// momentum) and its gradient `g`, in place: the scalar definition's bits on every path.
    ///
    /// # Panics
    /// If `g` differs from `x` in length, or `b` does with momentum, or `b` is not empty without.
    fn sgd(isa: Isa, step: &SgdStep<Self>, x: &mut [Self], b: &mut [Self], g: &[Self]);
}

/// The path a kernel may actually take: `isa` when the CPU supports it, otherwise scalar.
fn usable(isa: Isa) -> Isa {
    if isa.is_supported() {
        isa
    } else {
        Isa::Scalar
    }
}

/// Implements [`ElementwiseKernels`] for one element type, given its register type on each
/// instruction set.
macro_rules! impl_elementwise {
    ($t:ty, avx2: $avx2:ty, avx512: $avx512:ty, neon: $neon:ty) => {
        impl ElementwiseKernels for $t {
            fn binary(isa: Isa, op: BinaryOp, lhs: Operand<'_, $t>, rhs: Operand<'_, $t>, out: &mut [$t]) {
                lhs.check_len(out.len());
                rhs.check_len(out.len());
                match usable(isa) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `usable` returned Avx2, so the CPU supports AVX2 and FMA; the
                    // operand lengths were checked against `out` above.
                    Isa::Avx2 => unsafe { avx2::binary::<$avx2>(op, lhs, rhs, out) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, for AVX-512F.
                    Isa::Avx512 => unsafe { avx512::binary::<$avx512>(op, lhs, rhs, out) },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: as above, for NEON.
                    Isa::Neon => unsafe { neon::binary::<$neon>(op, lhs, rhs, out) },
                    _ => scalar::binary(op, lhs, rhs, out),
                }
            }

            fn binary_assign(isa: Isa, op: BinaryOp, acc: &mut [$t], rhs: Operand<'_, $t>) {
                rhs.check_len(acc.len());
                match usable(isa) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU supports AVX2 and FMA (`usable`); lengths checked above.
                    Isa::Avx2 => unsafe { avx2::binary_assign::<$avx2>(op, acc, rhs) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, for AVX-512F.
                    Isa::Avx512 => unsafe { avx512::binary_assign::<$avx512>(op, acc, rhs) },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: as above, for NEON.
                    Isa::Neon => unsafe { neon::binary_assign::<$neon>(op, acc, rhs) },
                    _ => scalar::binary_assign(op, acc, rhs),
                }
            }

            fn unary(isa: Isa, op: UnaryOp<$t>, x: &[$t], out: &mut [$t]) {
                assert_eq!(
                    x.len(),
                    out.len(),
                    "unary kernel: input of length {} for an output of {}",
                    x.len(),
                    out.len()
                );
                match usable(isa) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU supports AVX2 and FMA (`usable`); lengths checked above.
                    Isa::Avx2 => unsafe { avx2::unary::<$avx2>(op, x, out) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, for AVX-512F.
                    Isa::Avx512 => unsafe { avx512::unary::<$avx512>(op, x, out) },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: as above, for NEON.
                    Isa::Neon => unsafe { neon::unary::<$neon>(op, x, out) },
                    _ => scalar::unary(op, x, out),
                }
            }

            fn sum(isa: Isa, x: &[$t]) -> $t {
                match usable(isa) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU supports AVX2 and FMA (`usable`).
                    Isa::Avx2 => unsafe { avx2::sum::<$avx2>(x) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU supports AVX-512F (`usable`).
                    Isa::Avx512 => unsafe { avx512::sum::<$avx512>(x) },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: the CPU supports NEON (`usable`).
                    Isa::Neon => unsafe { neon::sum::<$neon>(x) },
                    _ => scalar::sum(x),
                }
            }

            fn max(isa: Isa, x: &[$t]) -> $t {
                match usable(isa) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU supports AVX2 and FMA (`usable`).
                    Isa::Avx2 => unsafe { avx2::max::<$avx2>(x) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU supports AVX-512F (`usable`).
                    Isa::Avx512 => unsafe { avx512::max::<$avx512>(x) },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: the CPU supports NEON (`usable`).
                    Isa::Neon => unsafe { neon::max::<$neon>(x) },
                    _ => scalar::max(x),
                }
            }

            fn exp_sum(isa: Isa, x: &[$t], shift: $t, out: &mut [$t]) -> $t {
                assert_eq!(
                    x.len(),
                    out.len(),
                    "exp_sum kernel: input of length {} for an output of {}",
                    x.len(),
                    out.len()
                );
                match usable(isa) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU supports AVX2 and FMA (`usable`); lengths checked above.
                    Isa::Avx2 => unsafe { avx2::exp_sum::<$avx2>(x, shift, out) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, for AVX-512F.
                    Isa::Avx512 => unsafe { avx512::exp_sum::<$avx512>(x, shift, out) },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: as above, for NEON.
                    Isa::Neon => unsafe { neon::exp_sum::<$neon>(x, shift, out) },
                    _ => scalar::exp_sum(x, shift, out),
                }
            }

            fn softmax_rows<'m>(
                isa: Isa,
                x: &[$t],
                scale: $t,
                mask: &dyn Fn(usize) -> Option<&'m [$t]>,
                scratch: &mut [$t],
                out: &mut [$t],
            ) {
                match usable(isa) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU supports AVX2 and FMA (`usable`); the kernel checks lengths.
                    Isa::Avx2 => unsafe { avx2::softmax_rows::<$avx2>(x, scale, mask, scratch, out) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, for AVX-512F.
                    Isa::Avx512 => unsafe { avx512::softmax_rows::<$avx512>(x, scale, mask, scratch, out) },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: as above, for NEON.
                    Isa::Neon => unsafe { neon::softmax_rows::<$neon>(x, scale, mask, scratch, out) },
                    // SAFETY: the scalar primitives run on every CPU.
                    _ => unsafe { rows::softmax_rows(rows::Scalar, x, scale, mask, scratch, out) },
                }
            }

            fn adam(isa: Isa, step: &AdamStep<$t>, x: &mut [$t], m: &mut [$t], v: &mut [$t], g: &[$t]) {
                let n = x.len();
                assert!(
                    m.len() == n && v.len() == n && g.len() == n,
                    "adam kernel: slices of {n}, {}, {} and {} elements",
                    m.len(),
                    v.len(),
                    g.len()
                );
                match usable(isa) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU supports AVX2 and FMA (`usable`); lengths checked above.
                    Isa::Avx2 => unsafe { avx2::adam::<$avx2>(step, x, m, v, g) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, for AVX-512F.
                    Isa::Avx512 => unsafe { avx512::adam::<$avx512>(step, x, m, v, g) },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: as above, for NEON.
                    Isa::Neon => unsafe { neon::adam::<$neon>(step, x, m, v, g) },
                    _ => scalar::adam(step, x, m, v, g),
                }
            }

            fn sgd(isa: Isa, step: &SgdStep<$t>, x: &mut [$t], b: &mut [$t], g: &[$t]) {
                let n = x.len();
                assert!(
                    g.len() == n && b.len() == step.buffer_len(n),
                    "sgd kernel: slices of {n}, {} and {} elements, momentum {}",
                    b.len(),
                    g.len(),
                    step.momentum.is_some()
                );
                match usable(isa) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU supports AVX2 and FMA (`usable`); lengths checked above.
                    Isa::Avx2 => unsafe { avx2::sgd::<$avx2>(step, x, b, g) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, for AVX-512F.
                    Isa::Avx512 => unsafe { avx512::sgd::<$avx512>(step, x, b, g) },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: as above, for NEON.
                    Isa::Neon => unsafe { neon::sgd::<$neon>(step, x, b, g) },
                    _ => scalar::sgd(step, x, b, g),
                }
            }

            fn softmax_backward_rows(isa: Isa, y: &[$t], dy: &[$t], len: usize, scale: $t, out: &mut [$t]) {
                match usable(isa) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU supports AVX2 and FMA (`usable`); the kernel checks lengths.
                    Isa::Avx2 => unsafe { avx2::softmax_backward_rows::<$avx2>(y, dy, len, scale, out) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, for AVX-512F.
                    Isa::Avx512 => unsafe { avx512::softmax_backward_rows::<$avx512>(y, dy, len, scale, out) },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: as above, for NEON.
                    Isa::Neon => unsafe { neon::softmax_backward_rows::<$neon>(y, dy, len, scale, out) },
                    // SAFETY: the scalar primitives run on every CPU.
                    _ => unsafe { rows::softmax_backward_rows(rows::Scalar, y, dy, len, scale, out) },
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
impl_elementwise!(f32, avx2: avx2::F32x8, avx512: avx512::F32x16, neon: ());
#[cfg(target_arch = "x86_64")]
impl_elementwise!(f64, avx2: avx2::F64x4, avx512: avx512::F64x8, neon: ());
#[cfg(target_arch = "aarch64")]
impl_elementwise!(f32, avx2: (), avx512: (), neon: neon::F32x4);
#[cfg(target_arch = "aarch64")]
impl_elementwise!(f64, avx2: (), avx512: (), neon: neon::F64x2);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
impl_elementwise!(f32, avx2: (), avx512: (), neon: ());
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
impl_elementwise!(f64, avx2: (), avx512: (), neon: ());
