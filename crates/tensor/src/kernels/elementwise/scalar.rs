//! The scalar reference: portable Rust that every SIMD path is tested against, and the per-element
//! formulas the SIMD paths use for their tails and for the transcendental ops.

use super::{AdamStep, BinaryOp, Operand, SgdStep, UnaryOp};
use crate::dtype::Float;

// ─── per-element formulas ──────────────────────────────────────────────────────

impl BinaryOp {
    /// `a op b` for one pair of elements: the definition every kernel follows.
    ///
    /// `Maximum` / `Minimum` return NaN when either input is NaN, and otherwise pick `a` only when
    /// it is strictly larger (smaller), the same choice the x86 `max`/`min` instructions make, so
    /// vector bodies and scalar tails agree even on the sign of a zero.
    #[inline(always)]
    pub fn apply<T: Float>(self, a: T, b: T) -> T {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Maximum => max_nan(a, b),
            BinaryOp::Minimum => min_nan(a, b),
        }
    }

    /// The op's name as the tensor methods spell it (`"add"`, `"maximum"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
        }
    }
}

/// `a` if it is NaN or larger than `b`, else `b` (so NaN in either propagates).
#[inline(always)]
pub(super) fn max_nan<T: Float>(a: T, b: T) -> T {
    if a.is_nan() || a > b {
        a
    } else {
        b
    }
}

/// `a` if it is NaN or smaller than `b`, else `b` (so NaN in either propagates).
#[inline(always)]
pub(super) fn min_nan<T: Float>(a: T, b: T) -> T {
    if a.is_nan() || a < b {
        a
    } else {
        b
    }
}

impl<T: Float> UnaryOp<T> {
    /// `op(x)` for one element: the definition every kernel follows.
    #[inline(always)]
    pub fn apply(self, x: T) -> T {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            // `0 > x` is false for NaN, so NaN passes through as in `torch.relu`.
            UnaryOp::Relu => {
                if T::ZERO > x {
                    T::ZERO
                } else {
                    x
                }
            }
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Gelu => x * T::from_f64(0.5) * (T::ONE + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf()),
            UnaryOp::GeluTanh => {
                // √(2/π), the constant PyTorch builds from M_SQRT2 · M_2_SQRTPI / 2.
                let beta = T::from_f64(std::f64::consts::SQRT_2 * std::f64::consts::FRAC_2_SQRT_PI * 0.5);
                let inner = beta * (x + T::from_f64(0.044715) * x * x * x);
                T::from_f64(0.5) * x * (T::ONE + inner.tanh())
            }
            UnaryOp::Powf(e) => x.powf(e),
        }
    }
}

/// `1 / (1 + e⁻ˣ)`: exponentiates only non-positive numbers, so nothing overflows for large `|x|`.
#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

// ─── contiguous kernels ────────────────────────────────────────────────────────

/// `out[i] = lhs[i] op rhs[i]`; lengths already checked.
pub(super) fn binary<T: Float>(op: BinaryOp, lhs: Operand<'_, T>, rhs: Operand<'_, T>, out: &mut [T]) {
    match (lhs, rhs) {
        (Operand::Slice(a), Operand::Slice(b)) => {
            for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                *o = op.apply(a, b);
            }
        }
        (Operand::Slice(a), Operand::Splat(b)) => {
            for (o, &a) in out.iter_mut().zip(a) {
                *o = op.apply(a, b);
            }
        }
        (Operand::Splat(a), Operand::Slice(b)) => {
            for (o, &b) in out.iter_mut().zip(b) {
                *o = op.apply(a, b);
            }
        }
        (Operand::Splat(a), Operand::Splat(b)) => out.fill(op.apply(a, b)),
    }
}

/// `acc[i] = acc[i] op rhs[i]`; lengths already checked.
pub(super) fn binary_assign<T: Float>(op: BinaryOp, acc: &mut [T], rhs: Operand<'_, T>) {
    match rhs {
        Operand::Slice(b) => {
            for (a, &b) in acc.iter_mut().zip(b) {
                *a = op.apply(*a, b);
            }
        }
        Operand::Splat(b) => {
            for a in acc.iter_mut() {
                *a = op.apply(*a, b);
            }
        }
    }
}

/// `out[i] = op(x[i])`; lengths already checked.
pub(super) fn unary<T: Float>(op: UnaryOp<T>, x: &[T], out: &mut [T]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o = op.apply(x);
    }
}

/// Accumulators in the scalar sum: independent chains, so the adds pipeline (and the order
/// resembles the SIMD paths' lane-wise partial sums).
const SUM_LANES: usize = 8;

/// Elements summed directly before a block's total goes into the pairwise [`Cascade`]: the
/// error of a long sum then grows with `SUM_BLOCK / lanes + log₂(n / SUM_BLOCK)`, not `n`.
pub(super) const SUM_BLOCK: usize = 2048;

/// `Σ x[i]`: blocks of [`SUM_BLOCK`], each with eight interleaved partial sums, combined pairwise.
pub(super) fn sum<T: Float>(x: &[T]) -> T {
    if x.len() <= SUM_BLOCK {
        // One block: what the cascade would return for it, without setting one up (a softmax
        // row, a vector tail).
        return sum_block(x);
    }
    let mut total = Cascade::new(BinaryOp::Add);
    for block in x.chunks(SUM_BLOCK) {
        total.push(sum_block(block));
    }
    total.finish(T::ZERO)
}

fn sum_block<T: Float>(x: &[T]) -> T {
    let mut acc = [T::ZERO; SUM_LANES];
    let mut blocks = x.chunks_exact(SUM_LANES);
    for block in &mut blocks {
        for (a, &v) in acc.iter_mut().zip(block) {
            *a += v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(blocks.remainder()) {
        *a += v;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// Pairwise combination of a stream of values in constant memory: a binary counter whose level
/// `i` holds the combination of `2^i` pushed values, so a sum of `n` values is a balanced tree
/// of depth `log₂ n` (rounding error `O(log n)` instead of the `O(n)` of a running total). The
/// order depends only on the number of values pushed.
#[derive(Clone, Debug)]
pub struct Cascade<T> {
    op: BinaryOp,
    levels: [T; 64],
    filled: u64,
}

impl<T: Float> Cascade<T> {
    /// An empty cascade combining with `op` (`Add` for sums; `Maximum`, `Minimum` also work).
    pub fn new(op: BinaryOp) -> Cascade<T> {
        Cascade { op, levels: [T::ZERO; 64], filled: 0 }
    }

    /// Adds one value.
    #[inline]
    pub fn push(&mut self, v: T) {
        let mut carry = v;
        let mut level = 0;
        while self.filled >> level & 1 == 1 {
            carry = self.op.apply(self.levels[level], carry);
            level += 1;
        }
        // Levels below `level` are consumed into the carry; `level` takes it.
        self.filled = (self.filled >> level | 1) << level;
        self.levels[level] = carry;
    }

    /// The combination of every pushed value, or `empty` when none was pushed.
    pub fn finish(&self, empty: T) -> T {
        (0..64)
            .filter(|&l| self.filled >> l & 1 == 1)
            .fold(None, |acc, l| Some(acc.map_or(self.levels[l], |a| self.op.apply(self.levels[l], a))))
            .unwrap_or(empty)
    }
}

/// `ElementwiseKernels::adam`: [`AdamStep::element`] over each element in turn (the slices of
/// one length, checked by the caller).
pub(super) fn adam<T: Float>(step: &AdamStep<T>, x: &mut [T], m: &mut [T], v: &mut [T], g: &[T]) {
    for (((x, m), v), &g) in x.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        step.element(x, m, v, g);
    }
}

/// `ElementwiseKernels::sgd`: [`SgdStep::element`] over each element in turn (`x` and `g` of
/// one length, and `b` too with momentum, empty without: checked by the caller).
pub(super) fn sgd<T: Float>(step: &SgdStep<T>, x: &mut [T], b: &mut [T], g: &[T]) {
    if step.momentum.is_some() {
        for ((x, b), &g) in x.iter_mut().zip(b.iter_mut()).zip(g) {
            step.element(x, b, g);
        }
    } else {
        let mut unused = T::ZERO;
        for (x, &g) in x.iter_mut().zip(g) {
            step.element(x, &mut unused, g);
        }
    }
}

/// `max x[i]`, NaN if any element is NaN, −∞ when empty.
pub(super) fn max<T: Float>(x: &[T]) -> T {
    x.iter().fold(T::NEG_INFINITY, |m, &v| max_nan(v, m))
}

/// `out[i] = e^(x[i] − shift)`, returning `Σ out[i]`.
pub(super) fn exp_sum<T: Float>(x: &[T], shift: T, out: &mut [T]) -> T {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - shift).exp();
    }
    sum(out)
}

// ─── strided runs (scalar only) ────────────────────────────────────────────────

/// A run of `len` elements at `data[offset + i * stride]` (any stride, including 0).
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a, T> {
    /// The storage the run lives in.
    pub data: &'a [T],
    /// Index of the run's first element.
    pub offset: usize,
    /// Distance between consecutive elements of the run.
    pub stride: usize,
}

impl<T: Copy> Strided<'_, T> {
    #[inline(always)]
    fn at(&self, i: usize) -> T {
        self.data[self.offset + i * self.stride]
    }
}

/// `out[i] = lhs[i] op rhs[i]` over strided runs as long as `out`.
///
/// # Panics
/// If a run reaches past its slice (a caller bug).
pub fn binary_strided<T: Float>(op: BinaryOp, lhs: Strided<'_, T>, rhs: Strided<'_, T>, out: &mut [T]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = op.apply(lhs.at(i), rhs.at(i));
    }
}

/// `out[i] = op(x[i])` over a strided run as long as `out`.
///
/// # Panics
/// If the run reaches past its slice (a caller bug).
pub fn unary_strided<T: Float>(op: UnaryOp<T>, x: Strided<'_, T>, out: &mut [T]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = op.apply(x.at(i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maximum_and_relu_propagate_nan() {
        assert!(BinaryOp::Maximum.apply(f32::NAN, 1.0).is_nan());
        assert!(BinaryOp::Maximum.apply(1.0, f64::NAN).is_nan());
        assert!(BinaryOp::Minimum.apply(f32::NAN, 1.0).is_nan());
        assert!(UnaryOp::Relu.apply(f32::NAN).is_nan());
        assert_eq!(UnaryOp::<f32>::Relu.apply(-2.0), 0.0);
        assert!(max(&[1.0f32, f32::NAN, 3.0]).is_nan());
        assert_eq!(max::<f64>(&[]), f64::NEG_INFINITY);
    }

    #[test]
    fn sigmoid_is_finite_far_out() {
        assert_eq!(UnaryOp::<f32>::Sigmoid.apply(-200.0), 0.0);
        assert_eq!(UnaryOp::<f32>::Sigmoid.apply(200.0), 1.0);
        assert!((UnaryOp::<f64>::Sigmoid.apply(0.0) - 0.5).abs() < 1e-16);
    }

    #[test]
    fn cascade_is_a_balanced_tree() {
        let mut c = Cascade::new(BinaryOp::Add);
        for v in 1..=1000 {
            c.push(v as f64);
        }
        assert_eq!(c.finish(0.0), 500_500.0);
        assert_eq!(Cascade::<f32>::new(BinaryOp::Add).finish(-1.0), -1.0);
        // 2^20 copies of 0.1: every pair is an exact doubling, so the tree is exact, where a
        // running f32 total drifts by about 1%.
        let mut c = Cascade::new(BinaryOp::Add);
        for _ in 0..1 << 20 {
            c.push(0.1f32);
        }
        assert_eq!(c.finish(0.0), 0.1f32 * (1 << 20) as f32);
    }

    #[test]
    fn sum_adds_every_element_once() {
        for n in [0usize, 1, 7, 8, 9, 39, SUM_BLOCK - 1, SUM_BLOCK, 3 * SUM_BLOCK + 5] {
            let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
            assert_eq!(sum(&x), (n * n.saturating_sub(1) / 2) as f64);
        }
    }
}
