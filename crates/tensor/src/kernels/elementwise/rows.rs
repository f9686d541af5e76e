//! Fused row kernels: softmax and its backward over many short rows in one kernel call.
//!
//! Attention's softmax rows are short (a sequence length, 28 in the transformer example), and
//! the row-by-row composition of the separate kernels (`binary`, `max`, `exp_sum`, `sum`) paid
//! one dispatch, one set-up of constants and one tail per kernel per row. Here the same
//! composition runs once per call over all rows, written once over [`RowPrims`]: the scalar
//! reference ([`Scalar`]) and each SIMD register type ([`Simd`]) supply the per-row primitives,
//! which are the very functions the separate kernels run, so the fused kernel's results are
//! bit-identical to the composition on every path (the suite's `elementwise` tests check that),
//! except for softmax rows of one to four registers on a SIMD path: those stay in registers
//! ([`RowPrims::softmax_short`]), and `Tensor::softmax` takes the same kernel.

use std::marker::PhantomData;

use super::scalar;
use super::simd::{self, Lanes};
use super::{BinaryOp, Operand};
use crate::dtype::Float;

/// The row primitives a fused row kernel composes.
///
/// # Safety
/// Every method runs the primitives' instructions and requires that the CPU supports their
/// instruction set (the scalar reference's hold everywhere). Lengths are checked (a mismatch
/// panics).
pub(super) trait RowPrims<T: Float>: Copy {
    /// `ElementwiseKernels::binary`.
    unsafe fn binary(self, op: BinaryOp, lhs: Operand<'_, T>, rhs: Operand<'_, T>, out: &mut [T]);
    /// `ElementwiseKernels::binary_assign`.
    unsafe fn binary_assign(self, op: BinaryOp, acc: &mut [T], rhs: Operand<'_, T>);
    /// `ElementwiseKernels::max`.
    unsafe fn max(self, x: &[T]) -> T;
    /// `ElementwiseKernels::sum`.
    unsafe fn sum(self, x: &[T]) -> T;
    /// `ElementwiseKernels::exp_sum`.
    unsafe fn exp_sum(self, x: &[T], shift: T, out: &mut [T]) -> T;
    /// Softmax rows of `len`, `x · scale (+ mask(row))`, into `out` in registers, when the rows
    /// are short enough for that (`simd::softmax_short_rows`); `false`, nothing written,
    /// otherwise.
    unsafe fn softmax_short<'m>(
        self,
        x: &[T],
        scale: T,
        mask: &dyn Fn(usize) -> Option<&'m [T]>,
        len: usize,
        out: &mut [T],
    ) -> bool;
}

/// The scalar reference's primitives.
#[derive(Clone, Copy)]
pub(super) struct Scalar;

impl<T: Float> RowPrims<T> for Scalar {
    unsafe fn binary(self, op: BinaryOp, lhs: Operand<'_, T>, rhs: Operand<'_, T>, out: &mut [T]) {
        scalar::binary(op, lhs, rhs, out);
    }
    unsafe fn binary_assign(self, op: BinaryOp, acc: &mut [T], rhs: Operand<'_, T>) {
        scalar::binary_assign(op, acc, rhs);
    }
    unsafe fn max(self, x: &[T]) -> T {
        scalar::max(x)
    }
    unsafe fn sum(self, x: &[T]) -> T {
        scalar::sum(x)
    }
    unsafe fn exp_sum(self, x: &[T], shift: T, out: &mut [T]) -> T {
        scalar::exp_sum(x, shift, out)
    }
    unsafe fn softmax_short<'m>(
        self,
        _: &[T],
        _: T,
        _: &dyn Fn(usize) -> Option<&'m [T]>,
        _: usize,
        _: &mut [T],
    ) -> bool {
        // The reference is the composition, for every length.
        false
    }
}

/// The primitives of register type `V` (the shared SIMD loop bodies of `simd.rs`), for a caller
/// that guarantees `V`'s instruction set.
pub(super) struct Simd<V>(PhantomData<V>);

impl<V> Clone for Simd<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V> Copy for Simd<V> {}

impl<V: Lanes> Simd<V> {
    /// The primitives of `V` (each call still requires the instruction set).
    #[inline(always)]
    pub(super) fn new() -> Simd<V> {
        Simd(PhantomData)
    }
}

impl<V: Lanes> RowPrims<V::Elem> for Simd<V> {
    #[inline(always)]
    unsafe fn binary(self, op: BinaryOp, lhs: Operand<'_, V::Elem>, rhs: Operand<'_, V::Elem>, out: &mut [V::Elem]) {
        lhs.check_len(out.len());
        rhs.check_len(out.len());
        // SAFETY: the caller guarantees `V`'s instruction set; lengths checked above.
        unsafe { simd::binary::<V>(op, lhs, rhs, out) }
    }
    #[inline(always)]
    unsafe fn binary_assign(self, op: BinaryOp, acc: &mut [V::Elem], rhs: Operand<'_, V::Elem>) {
        rhs.check_len(acc.len());
        // SAFETY: as in `binary`.
        unsafe { simd::binary_assign::<V>(op, acc, rhs) }
    }
    #[inline(always)]
    unsafe fn max(self, x: &[V::Elem]) -> V::Elem {
        // SAFETY: the caller guarantees `V`'s instruction set.
        unsafe { simd::max::<V>(x) }
    }
    #[inline(always)]
    unsafe fn sum(self, x: &[V::Elem]) -> V::Elem {
        // SAFETY: the caller guarantees `V`'s instruction set.
        unsafe { simd::sum::<V>(x) }
    }
    #[inline(always)]
    unsafe fn exp_sum(self, x: &[V::Elem], shift: V::Elem, out: &mut [V::Elem]) -> V::Elem {
        assert_eq!(x.len(), out.len(), "exp_sum kernel: input of length {} for an output of {}", x.len(), out.len());
        // SAFETY: the caller guarantees `V`'s instruction set; lengths checked above.
        unsafe { simd::exp_sum::<V>(x, shift, out) }
    }
    #[inline(always)]
    unsafe fn softmax_short<'m>(
        self,
        x: &[V::Elem],
        scale: V::Elem,
        mask: &dyn Fn(usize) -> Option<&'m [V::Elem]>,
        len: usize,
        out: &mut [V::Elem],
    ) -> bool {
        if !(V::LANES..=simd::SHORT_ROW_REGS * V::LANES).contains(&len) {
            return false;
        }
        // SAFETY: the caller guarantees `V`'s instruction set; the kernel checks the lengths.
        unsafe { simd::softmax_short_rows::<V>(x, scale, mask, len, out) };
        true
    }
}

/// `ElementwiseKernels::softmax_rows`: per row of `out` (`scratch.len()` elements each),
/// `scratch = x · scale (+ mask(r))`, then `out = e^(scratch − max) / Σ`; a short row on a SIMD
/// path in registers instead ([`RowPrims::softmax_short`]).
///
/// # Safety
/// The CPU supports `p`'s instruction set.
#[inline(always)]
pub(super) unsafe fn softmax_rows<'m, T: Float, P: RowPrims<T>>(
    p: P,
    x: &[T],
    scale: T,
    mask: &dyn Fn(usize) -> Option<&'m [T]>,
    scratch: &mut [T],
    out: &mut [T],
) {
    let len = scratch.len();
    assert!(
        len > 0 && x.len() == out.len() && out.len().is_multiple_of(len),
        "softmax_rows: rows of {len} over {}",
        out.len()
    );
    // SAFETY: the caller guarantees the instruction set.
    if unsafe { p.softmax_short(x, scale, mask, len, out) } {
        return;
    }
    for (r, (x, out)) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)).enumerate() {
        // SAFETY: the caller guarantees the instruction set.
        unsafe {
            p.binary(BinaryOp::Mul, Operand::Slice(x), Operand::Splat(scale), scratch);
            if let Some(m) = mask(r) {
                p.binary_assign(BinaryOp::Add, scratch, Operand::Slice(m));
            }
            let m = p.max(scratch);
            let s = p.exp_sum(scratch, m, out);
            p.binary_assign(BinaryOp::Div, out, Operand::Splat(s));
        }
    }
}

/// `ElementwiseKernels::softmax_backward_rows`: per row of `len`,
/// `out = (dy − Σ dy · y) · y · scale` (`· scale` skipped when it is 1).
///
/// # Safety
/// The CPU supports `p`'s instruction set.
#[inline(always)]
pub(super) unsafe fn softmax_backward_rows<T: Float, P: RowPrims<T>>(
    p: P,
    y: &[T],
    dy: &[T],
    len: usize,
    scale: T,
    out: &mut [T],
) {
    assert!(
        len > 0 && y.len() == out.len() && dy.len() == out.len() && out.len().is_multiple_of(len),
        "softmax_backward_rows: rows of {len} over {}",
        out.len()
    );
    let rows = y.chunks_exact(len).zip(dy.chunks_exact(len)).zip(out.chunks_exact_mut(len));
    for ((y, dy), row) in rows {
        // SAFETY: the caller guarantees the instruction set.
        unsafe {
            p.binary(BinaryOp::Mul, Operand::Slice(dy), Operand::Slice(y), row);
            let dot = p.sum(row);
            p.binary(BinaryOp::Sub, Operand::Slice(dy), Operand::Splat(dot), row);
            p.binary_assign(BinaryOp::Mul, row, Operand::Slice(y));
            if scale != T::ONE {
                p.binary_assign(BinaryOp::Mul, row, Operand::Splat(scale));
            }
        }
    }
}
