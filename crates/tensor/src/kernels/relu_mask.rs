//! ReLU and a dropout mask in one pass each way, for a fused hidden layer
//! (`tapegrad_autograd::fused::linear_relu_dropout`):
//!
//! - [`relu_scale_by_mask_in_place`], the forward over a GEMM's output: `x · scale` where the
//!   mask bit is set and ReLU lets `x` through (`x > 0`, or NaN, as [`crate::Tensor::relu`]
//!   keeps it), `0` elsewhere.
//! - [`scale_where_positive`], the backward: `g · scale` where the forward's output `y` is
//!   positive (kept, and past the ReLU), `0` elsewhere.
//!
//! Both replace a compare-and-branch per element, which a mask of p = 0.5 and the signs of a
//! pre-activation make unpredictable half the time. AVX-512 compares into mask registers and
//! multiplies with zero-masking; AVX2 expands each byte of the dropout mask into lane masks; the
//! scalar loops are the reference every path is tested against, bit for bit (one multiply per
//! element passed, `+0` for the others).

use crate::dtype::Float;
use crate::kernels::Isa;
#[cfg(target_arch = "x86_64")]
use crate::kernels::{cast_slice, cast_slice_mut};

/// `x[i] = x[i] · scale` where bit `i` of `mask` is set and `x[i]` is positive or NaN, else
/// `x[i] = 0`.
///
/// # Panics
/// When `mask` has fewer than `x.len().div_ceil(64)` words.
pub fn relu_scale_by_mask_in_place<T: Float>(isa: Isa, mask: &[u64], x: &mut [T], scale: T) {
    assert!(mask.len() >= x.len().div_ceil(64), "relu_scale_by_mask_in_place: mask too short");
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = isa == Isa::Avx512 && isa.is_supported();
        let avx2 = matches!(isa, Isa::Avx2 | Isa::Avx512) && Isa::Avx2.is_supported();
        if avx512 || avx2 {
            if let Some(x) = cast_slice_mut::<T, f32>(x) {
                let s = scale.to_f64() as f32;
                // SAFETY: the instruction set was checked above, the mask length asserted.
                unsafe {
                    if avx512 {
                        x86::relu_mask_f32_avx512(mask, x, s)
                    } else {
                        x86::relu_mask_f32_avx2(mask, x, s)
                    }
                }
                return;
            }
            if let Some(x) = cast_slice_mut::<T, f64>(x) {
                // SAFETY: as above.
                unsafe {
                    if avx512 {
                        x86::relu_mask_f64_avx512(mask, x, scale.to_f64())
                    } else {
                        x86::relu_mask_f64_avx2(mask, x, scale.to_f64())
                    }
                }
                return;
            }
        }
    }
    let _ = isa;
    relu_mask_scalar(mask, x, scale, 0);
}

/// `out[i] = g[i] · scale` where `y[i] > 0`, else `out[i] = 0` (NaN is not positive).
///
/// # Panics
/// When `y`, `g` and `out` differ in length.
pub fn scale_where_positive<T: Float>(isa: Isa, y: &[T], g: &[T], scale: T, out: &mut [T]) {
    assert!(y.len() == g.len() && g.len() == out.len(), "scale_where_positive: lengths differ");
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = isa == Isa::Avx512 && isa.is_supported();
        let avx2 = matches!(isa, Isa::Avx2 | Isa::Avx512) && Isa::Avx2.is_supported();
        if avx512 || avx2 {
            if let (Some(y), Some(g), Some(out)) =
                (cast_slice::<T, f32>(y), cast_slice::<T, f32>(g), cast_slice_mut::<T, f32>(out))
            {
                let s = scale.to_f64() as f32;
                // SAFETY: the instruction set was checked above, the lengths asserted.
                unsafe {
                    if avx512 {
                        x86::positive_f32_avx512(y, g, s, out)
                    } else {
                        x86::positive_f32_avx2(y, g, s, out)
                    }
                }
                return;
            }
            if let (Some(y), Some(g), Some(out)) =
                (cast_slice::<T, f64>(y), cast_slice::<T, f64>(g), cast_slice_mut::<T, f64>(out))
            {
                // SAFETY: as above.
                unsafe {
                    if avx512 {
                        x86::positive_f64_avx512(y, g, scale.to_f64(), out)
                    } else {
                        x86::positive_f64_avx2(y, g, scale.to_f64(), out)
                    }
                }
                return;
            }
        }
    }
    let _ = isa;
    positive_scalar(y, g, scale, out, 0);
}

/// The scalar reference of [`relu_scale_by_mask_in_place`], from element `start` on (the SIMD
/// paths' tails).
fn relu_mask_scalar<T: Float>(mask: &[u64], x: &mut [T], scale: T, start: usize) {
    for (i, v) in x.iter_mut().enumerate().skip(start) {
        let kept = mask[i / 64] >> (i % 64) & 1 == 1;
        *v = if kept && (*v > T::ZERO || v.is_nan()) { *v * scale } else { T::ZERO };
    }
}

/// The scalar reference of [`scale_where_positive`], from element `start` on.
fn positive_scalar<T: Float>(y: &[T], g: &[T], scale: T, out: &mut [T], start: usize) {
    for ((o, &y), &g) in out.iter_mut().zip(y).zip(g).skip(start) {
        *o = if y > T::ZERO { g * scale } else { T::ZERO };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F; `mask.len() >= x.len().div_ceil(64)`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn relu_mask_f32_avx512(mask: &[u64], x: &mut [f32], scale: f32) {
        let (s, zero) = (_mm512_set1_ps(scale), _mm512_setzero_ps());
        let (n, p) = (x.len(), x.as_mut_ptr());
        for i in (0..n).step_by(16) {
            let lanes: __mmask16 = if n - i >= 16 { 0xFFFF } else { ((1u32 << (n - i)) - 1) as __mmask16 };
            let kept = (mask[i / 64] >> (i % 64)) as __mmask16 & lanes;
            // SAFETY: the lanes `lanes` selects are elements i .. below n of `x`; the others are
            // not accessed.
            unsafe {
                let v = _mm512_maskz_loadu_ps(lanes, p.add(i));
                // Not (v <= 0), unordered: positive or NaN.
                let pass = _mm512_mask_cmp_ps_mask::<_CMP_NLE_UQ>(kept, v, zero);
                _mm512_mask_storeu_ps(p.add(i), lanes, _mm512_maskz_mul_ps(pass, v, s));
            }
        }
    }

    /// # Safety
    /// AVX-512F; `mask.len() >= x.len().div_ceil(64)`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn relu_mask_f64_avx512(mask: &[u64], x: &mut [f64], scale: f64) {
        let (s, zero) = (_mm512_set1_pd(scale), _mm512_setzero_pd());
        let (n, p) = (x.len(), x.as_mut_ptr());
        for i in (0..n).step_by(8) {
            let lanes: __mmask8 = if n - i >= 8 { 0xFF } else { ((1u32 << (n - i)) - 1) as __mmask8 };
            let kept = (mask[i / 64] >> (i % 64)) as __mmask8 & lanes;
            // SAFETY: as in the f32 version, 8 lanes.
            unsafe {
                let v = _mm512_maskz_loadu_pd(lanes, p.add(i));
                let pass = _mm512_mask_cmp_pd_mask::<_CMP_NLE_UQ>(kept, v, zero);
                _mm512_mask_storeu_pd(p.add(i), lanes, _mm512_maskz_mul_pd(pass, v, s));
            }
        }
    }

    /// # Safety
    /// AVX2; `mask.len() >= x.len().div_ceil(64)`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn relu_mask_f32_avx2(mask: &[u64], x: &mut [f32], scale: f32) {
        let (s, zero) = (_mm256_set1_ps(scale), _mm256_setzero_ps());
        let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let (n, p) = (x.len(), x.as_mut_ptr());
        let mut i = 0;
        while i + 8 <= n {
            let byte = _mm256_set1_epi32(i32::from((mask[i / 64] >> (i % 64)) as u8));
            let kept = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(byte, bits), bits));
            // SAFETY: i + 8 <= n, inside `x`.
            unsafe {
                let v = _mm256_loadu_ps(p.add(i));
                let pass = _mm256_and_ps(kept, _mm256_cmp_ps::<_CMP_NLE_UQ>(v, zero));
                _mm256_storeu_ps(p.add(i), _mm256_and_ps(_mm256_mul_ps(v, s), pass));
            }
            i += 8;
        }
        super::relu_mask_scalar(mask, x, scale, i);
    }

    /// # Safety
    /// AVX2; `mask.len() >= x.len().div_ceil(64)`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn relu_mask_f64_avx2(mask: &[u64], x: &mut [f64], scale: f64) {
        let (s, zero) = (_mm256_set1_pd(scale), _mm256_setzero_pd());
        let bits = _mm256_setr_epi64x(1, 2, 4, 8);
        let (n, p) = (x.len(), x.as_mut_ptr());
        let mut i = 0;
        while i + 4 <= n {
            let nibble = _mm256_set1_epi64x((mask[i / 64] >> (i % 64)) as i64 & 0xF);
            let kept = _mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_and_si256(nibble, bits), bits));
            // SAFETY: i + 4 <= n, inside `x`.
            unsafe {
                let v = _mm256_loadu_pd(p.add(i));
                let pass = _mm256_and_pd(kept, _mm256_cmp_pd::<_CMP_NLE_UQ>(v, zero));
                _mm256_storeu_pd(p.add(i), _mm256_and_pd(_mm256_mul_pd(v, s), pass));
            }
            i += 4;
        }
        super::relu_mask_scalar(mask, x, scale, i);
    }

    /// # Safety
    /// AVX-512F; `y`, `g` and `out` have one length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn positive_f32_avx512(y: &[f32], g: &[f32], scale: f32, out: &mut [f32]) {
        let (s, zero) = (_mm512_set1_ps(scale), _mm512_setzero_ps());
        let n = out.len();
        let (yp, gp, op) = (y.as_ptr(), g.as_ptr(), out.as_mut_ptr());
        for i in (0..n).step_by(16) {
            let lanes: __mmask16 = if n - i >= 16 { 0xFFFF } else { ((1u32 << (n - i)) - 1) as __mmask16 };
            // SAFETY: the lanes `lanes` selects are elements i .. below n of each slice; the
            // others are not accessed.
            unsafe {
                let pos = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(lanes, _mm512_maskz_loadu_ps(lanes, yp.add(i)), zero);
                let v = _mm512_maskz_mul_ps(pos, _mm512_maskz_loadu_ps(lanes, gp.add(i)), s);
                _mm512_mask_storeu_ps(op.add(i), lanes, v);
            }
        }
    }

    /// # Safety
    /// AVX-512F; `y`, `g` and `out` have one length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn positive_f64_avx512(y: &[f64], g: &[f64], scale: f64, out: &mut [f64]) {
        let (s, zero) = (_mm512_set1_pd(scale), _mm512_setzero_pd());
        let n = out.len();
        let (yp, gp, op) = (y.as_ptr(), g.as_ptr(), out.as_mut_ptr());
        for i in (0..n).step_by(8) {
            let lanes: __mmask8 = if n - i >= 8 { 0xFF } else { ((1u32 << (n - i)) - 1) as __mmask8 };
            // SAFETY: as in the f32 version, 8 lanes.
            unsafe {
                let pos = _mm512_mask_cmp_pd_mask::<_CMP_GT_OQ>(lanes, _mm512_maskz_loadu_pd(lanes, yp.add(i)), zero);
                let v = _mm512_maskz_mul_pd(pos, _mm512_maskz_loadu_pd(lanes, gp.add(i)), s);
                _mm512_mask_storeu_pd(op.add(i), lanes, v);
            }
        }
    }

    /// # Safety
    /// AVX2; `y`, `g` and `out` have one length.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn positive_f32_avx2(y: &[f32], g: &[f32], scale: f32, out: &mut [f32]) {
        let (s, zero) = (_mm256_set1_ps(scale), _mm256_setzero_ps());
        let n = out.len();
        let (yp, gp, op) = (y.as_ptr(), g.as_ptr(), out.as_mut_ptr());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n, inside each slice.
            unsafe {
                let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(yp.add(i)), zero);
                _mm256_storeu_ps(op.add(i), _mm256_and_ps(_mm256_mul_ps(_mm256_loadu_ps(gp.add(i)), s), pos));
            }
            i += 8;
        }
        super::positive_scalar(y, g, scale, out, i);
    }

    /// # Safety
    /// AVX2; `y`, `g` and `out` have one length.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn positive_f64_avx2(y: &[f64], g: &[f64], scale: f64, out: &mut [f64]) {
        let (s, zero) = (_mm256_set1_pd(scale), _mm256_setzero_pd());
        let n = out.len();
        let (yp, gp, op) = (y.as_ptr(), g.as_ptr(), out.as_mut_ptr());
        let mut i = 0;
        while i + 4 <= n {
            // SAFETY: i + 4 <= n, inside each slice.
            unsafe {
                let pos = _mm256_cmp_pd::<_CMP_GT_OQ>(_mm256_loadu_pd(yp.add(i)), zero);
                _mm256_storeu_pd(op.add(i), _mm256_and_pd(_mm256_mul_pd(_mm256_loadu_pd(gp.add(i)), s), pos));
            }
            i += 4;
        }
        super::positive_scalar(y, g, scale, out, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::available_isas;
    use crate::Generator;

    /// Values with both signs, zeros of both signs, a NaN and an infinity.
    fn values<T: Float>(n: usize, seed: u64) -> Vec<T> {
        let mut x = vec![T::ZERO; n];
        Generator::new(seed).fill_normal(&mut x);
        for (i, special) in [(1, T::ZERO), (2, -T::ZERO), (3, T::NAN), (5, T::INFINITY), (6, -T::NAN)] {
            if i < n {
                x[i] = special;
            }
        }
        x
    }

    fn bits<T: Float>(v: &[T]) -> Vec<u64> {
        v.iter().map(|x| x.to_f64().to_bits()).collect()
    }

    fn paths_match<T: Float>() {
        let scale = T::from_f64(1.0 / 0.7);
        for n in [0usize, 1, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 130, 1031] {
            let x = values::<T>(n, n as u64);
            let g = values::<T>(n, n as u64 + 100);
            // The first word keeps the special values (elements 1..7) and drops elements
            // 16..32; the others are scrambled.
            let mask: Vec<u64> = (0..n.div_ceil(64) as u64)
                .map(|w| if w == 0 { 0xFFFF_FFFF_0000_FFFF } else { 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(w) })
                .collect();
            // The references against their definitions.
            let mut fwd = x.clone();
            relu_mask_scalar(&mask, &mut fwd, scale, 0);
            let mut bwd = vec![T::ONE; n];
            positive_scalar(&x, &g, scale, &mut bwd, 0);
            for i in 0..n {
                let kept = mask[i / 64] >> (i % 64) & 1 == 1;
                // ReLU lets through what it does not zero: positive values and NaN.
                let relu_passes = x[i].is_nan() || x[i].to_f64().max(0.0) != 0.0;
                let want = if kept && relu_passes { x[i] * scale } else { T::ZERO };
                assert_eq!(fwd[i].to_f64().to_bits(), want.to_f64().to_bits(), "forward element {i} of {n}");
                let want = if x[i] > T::ZERO { g[i] * scale } else { T::ZERO };
                assert_eq!(bwd[i].to_f64().to_bits(), want.to_f64().to_bits(), "backward element {i} of {n}");
            }
            for isa in available_isas() {
                let mut got = x.clone();
                relu_scale_by_mask_in_place(isa, &mask, &mut got, scale);
                assert_eq!(bits(&got), bits(&fwd), "{isa:?} forward, n {n}");
                let mut got = vec![T::ONE; n];
                scale_where_positive(isa, &x, &g, scale, &mut got);
                assert_eq!(bits(&got), bits(&bwd), "{isa:?} backward, n {n}");
            }
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
