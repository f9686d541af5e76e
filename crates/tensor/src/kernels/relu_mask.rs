//! ReLU and a dropout mask in one pass each way, for a fused hidden layer
//! (`tapegrad_autograd::fused::linear_relu_dropout`):
//!
//! - [`relu_scale_by_mask_in_place`], the forward over a GEMM's output:
//!   `relu(x) · (bit ? scale : 0)`, with `relu(x) = 0 > x ? 0 : x` as [`crate::Tensor::relu`]
//!   computes it (NaN and `-0` pass through). A dropped element is `relu(x) · 0`, as PyTorch's
//!   `dropout(relu(x))`: NaN for a NaN or `+∞` input.
//! - [`scale_where_positive`], ReLU's backward from its output: `+0` where `y <= 0`,
//!   `g · scale` elsewhere, a NaN `y` included (PyTorch's `threshold_backward`);
//! - [`scale_where_kept_and_positive`], the fused backward: `g · (bit ? scale : 0)` where the
//!   forward's output `y` is not `<= 0`, else `+0`. A positive `y` was kept; a NaN `y` (a NaN
//!   pre-activation) is NaN kept or dropped, and the mask's factor zeroes the dropped one, as
//!   PyTorch's `dropout(relu(x))` backward does.
//!
//! Both replace a compare-and-branch per element, which a mask of p = 0.5 and the signs of a
//! pre-activation make unpredictable half the time. The loops are written once over the
//! instruction sets of [`crate::kernels::mask`] (`mask/isa.rs`); the scalar register is the
//! reference every path is tested against, bit for bit.

use crate::dtype::Float;
use crate::kernels::mask::isa::{dispatch, elem_kernels, Kernel, MaskElem, MaskIsa, MaskLanes};
use crate::kernels::Isa;

/// `x[i] = relu(x[i]) · (bit i of mask ? scale : 0)`, with `relu(x) = 0 > x ? 0 : x`.
///
/// # Panics
/// When `mask` has fewer than `x.len().div_ceil(64)` words.
pub fn relu_scale_by_mask_in_place<T: Float>(isa: Isa, mask: &[u64], x: &mut [T], scale: T) {
    assert!(mask.len() >= x.len().div_ceil(64), "relu_scale_by_mask_in_place: mask too short");
    (elem_kernels::<T>().relu_scale_by_mask)(isa, mask, x, scale);
}

/// `out[i] = 0` where `y[i] <= 0`, else `out[i] = g[i] · scale`: a NaN `y` passes the gradient,
/// as PyTorch's `threshold_backward` does.
///
/// # Panics
/// When `y`, `g` and `out` differ in length.
pub fn scale_where_positive<T: Float>(isa: Isa, y: &[T], g: &[T], scale: T, out: &mut [T]) {
    assert!(y.len() == g.len() && g.len() == out.len(), "scale_where_positive: lengths differ");
    (elem_kernels::<T>().scale_where_positive)(isa, y, g, scale, out);
}

/// `out[i] = +0` where `y[i] <= 0`, else `out[i] = g[i] · (bit i of mask ? scale : 0)`.
///
/// # Panics
/// When `y`, `g` and `out` differ in length, or `mask` has fewer than `out.len().div_ceil(64)`
/// words.
pub fn scale_where_kept_and_positive<T: Float>(isa: Isa, mask: &[u64], y: &[T], g: &[T], scale: T, out: &mut [T]) {
    assert!(y.len() == g.len() && g.len() == out.len(), "scale_where_kept_and_positive: lengths differ");
    assert!(mask.len() >= out.len().div_ceil(64), "scale_where_kept_and_positive: mask too short");
    (elem_kernels::<T>().scale_where_kept_and_positive)(isa, mask, y, g, scale, out);
}

/// [`relu_scale_by_mask_in_place`] for a [`MaskElem`], the mask length checked.
pub(crate) fn relu_scale_by_mask_elem<T: MaskElem>(isa: Isa, mask: &[u64], x: &mut [T], scale: T) {
    dispatch(isa, ReluScaleByMask { mask, x, scale });
}

/// [`scale_where_positive`] for a [`MaskElem`], the lengths checked.
pub(crate) fn scale_where_positive_elem<T: MaskElem>(isa: Isa, y: &[T], g: &[T], scale: T, out: &mut [T]) {
    dispatch(isa, ScaleWherePositive { mask: None, y, g, scale, out });
}

/// [`scale_where_kept_and_positive`] for a [`MaskElem`], the lengths checked.
pub(crate) fn scale_where_kept_and_positive_elem<T: MaskElem>(
    isa: Isa,
    mask: &[u64],
    y: &[T],
    g: &[T],
    scale: T,
    out: &mut [T],
) {
    dispatch(isa, ScaleWherePositive { mask: Some(mask), y, g, scale, out });
}

// ─── forward ─────────────────────  x = relu(x) · (bit ? scale : 0)
struct ReluScaleByMask<'a, T> {
    mask: &'a [u64],
    x: &'a mut [T],
    scale: T,
}

impl<T: MaskElem> Kernel for ReluScaleByMask<'_, T> {
    type Output = ();

    #[inline(always)]
    unsafe fn call<S: MaskIsa>(self, _isa: S) {
        // SAFETY: the caller guarantees `S`'s instruction set; the mask length was asserted.
        unsafe {
            let i = relu_scale_loop::<T::Reg<S>>(self.mask, self.x, self.scale, 0);
            relu_scale_loop::<T>(self.mask, self.x, self.scale, i);
        }
    }
}

/// The forward on whole registers from `start`; returns where it stopped.
///
/// # Safety
/// The CPU supports `V`'s instruction set; `mask` covers `x`; `start` is a multiple of
/// `V::LANES`.
#[inline(always)]
unsafe fn relu_scale_loop<V: MaskLanes>(mask: &[u64], x: &mut [V::Elem], scale: V::Elem, start: usize) -> usize {
    let (n, w, p) = (x.len(), V::LANES, x.as_mut_ptr());
    // SAFETY: the caller guarantees the instruction set; `i + w <= n`, inside `x`.
    unsafe {
        let s = V::splat(scale);
        let mut i = start;
        while i + w <= n {
            let factor = s.select_bits(mask[i / 64] >> (i % 64));
            V::load(p.add(i)).relu().mul(factor).store(p.add(i));
            i += w;
        }
        i
    }
}

// ─── backward ────────────────────  out = y <= 0 ? 0 : g · (mask ? (bit ? scale : 0) : scale)
struct ScaleWherePositive<'a, T> {
    /// The dropout mask of the fused op, or none (a plain ReLU).
    mask: Option<&'a [u64]>,
    y: &'a [T],
    g: &'a [T],
    scale: T,
    out: &'a mut [T],
}

impl<T: MaskElem> Kernel for ScaleWherePositive<'_, T> {
    type Output = ();

    #[inline(always)]
    unsafe fn call<S: MaskIsa>(self, _isa: S) {
        // SAFETY: the caller guarantees `S`'s instruction set; the lengths were asserted.
        unsafe {
            let i = positive_loop::<T::Reg<S>>(self.mask, self.y, self.g, self.scale, self.out, 0);
            positive_loop::<T>(self.mask, self.y, self.g, self.scale, self.out, i);
        }
    }
}

/// The backward on whole registers from `start`; returns where it stopped.
///
/// # Safety
/// The CPU supports `V`'s instruction set; `y`, `g` and `out` have one length, which `mask`
/// (if any) covers; `start` is a multiple of `V::LANES`.
#[inline(always)]
unsafe fn positive_loop<V: MaskLanes>(
    mask: Option<&[u64]>,
    y: &[V::Elem],
    g: &[V::Elem],
    scale: V::Elem,
    out: &mut [V::Elem],
    start: usize,
) -> usize {
    let (n, w) = (out.len(), V::LANES);
    let (yp, gp, op) = (y.as_ptr(), g.as_ptr(), out.as_mut_ptr());
    // SAFETY: the caller guarantees the instruction set; `i + w <= n`, inside each slice.
    unsafe {
        let s = V::splat(scale);
        let mut i = start;
        while i + w <= n {
            let factor = match mask {
                Some(mask) => s.select_bits(mask[i / 64] >> (i % 64)),
                None => s,
            };
            V::load(gp.add(i)).mul(factor).where_positive(V::load(yp.add(i))).store(op.add(i));
            i += w;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::available_isas;
    use crate::kernels::mask::tests::{bits, bits_of, special_values, test_mask, LENGTHS};

    fn paths_match<T: Float>() {
        for n in LENGTHS {
            let x = special_values::<T>(n, n as u64);
            let g = special_values::<T>(n, n as u64 + 100);
            let drawn = test_mask(n);
            let none = vec![0u64; n.div_ceil(64)];
            // p = 0.3 with a drawn mask, and p = 1: no bit set and scale +∞.
            for (mask, scale) in [(&drawn, T::from_f64(1.0 / 0.7)), (&none, T::INFINITY)] {
                // The references against their definitions.
                let mut fwd = x.clone();
                relu_scale_by_mask_in_place(Isa::Scalar, mask, &mut fwd, scale);
                let mut bwd = vec![T::ONE; n];
                scale_where_positive(Isa::Scalar, &x, &g, scale, &mut bwd);
                let mut fused_bwd = vec![T::ONE; n];
                scale_where_kept_and_positive(Isa::Scalar, mask, &x, &g, scale, &mut fused_bwd);
                for i in 0..n {
                    let kept = mask[i / 64] >> (i % 64) & 1 == 1;
                    let relu = if T::ZERO > x[i] { T::ZERO } else { x[i] };
                    let want = relu * if kept { scale } else { T::ZERO };
                    assert_eq!(bits_of(fwd[i]), bits_of(want), "forward element {i} of {n}");
                    let want = if x[i] <= T::ZERO { T::ZERO } else { g[i] * scale };
                    assert_eq!(bits_of(bwd[i]), bits_of(want), "backward element {i} of {n}");
                    let want = if x[i] <= T::ZERO { T::ZERO } else { g[i] * if kept { scale } else { T::ZERO } };
                    assert_eq!(bits_of(fused_bwd[i]), bits_of(want), "fused backward element {i} of {n}");
                }
                for isa in available_isas() {
                    let mut got = x.clone();
                    relu_scale_by_mask_in_place(isa, mask, &mut got, scale);
                    assert_eq!(bits(&got), bits(&fwd), "{isa:?} forward, n {n}, scale {scale}");
                    let mut got = vec![T::ONE; n];
                    scale_where_positive(isa, &x, &g, scale, &mut got);
                    assert_eq!(bits(&got), bits(&bwd), "{isa:?} backward, n {n}, scale {scale}");
                    scale_where_kept_and_positive(isa, mask, &x, &g, scale, &mut got);
                    assert_eq!(bits(&got), bits(&fused_bwd), "{isa:?} fused backward, n {n}, scale {scale}");
                }
            }
        }
    }

    #[test]
    fn dropped_elements_are_relu_times_zero() {
        let x = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, -3.0, 2.0];
        for isa in available_isas() {
            let mut y = x;
            relu_scale_by_mask_in_place(isa, &[0], &mut y, f32::INFINITY);
            assert!(y[0].is_nan() && y[1].is_nan(), "{isa:?}: NaN and +inf give NaN");
            assert_eq!(bits(&y[2..]), bits(&[0.0f32, -0.0, 0.0, 0.0]), "{isa:?}");
        }
    }

    #[test]
    fn every_path_matches_the_scalar_reference_f32() {
        paths_match::<f32>();
    }

    #[test]
    fn every_path_matches_the_scalar_reference_f64() {
        paths_match::<f64>();
    }
}
