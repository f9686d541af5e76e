//! AVX2 (+ FMA) register types: 8 × f32 and 4 × f64 in a 256-bit register.
//!
//! `maximum`/`minimum` need one fix-up over the bare instructions: `vmaxps a, b` returns `b`
//! whenever either input is NaN, so a NaN in `a` is blended back in, which makes NaN propagate
//! from both sides as the scalar reference does.

use std::arch::x86_64::*;

simd_entry_points!("avx2,fma");

use super::simd::{common_lanes_methods, simd_entry_points};

/// Implements [`Lanes`] for one 256-bit register type from its intrinsics.
macro_rules! impl_lanes {
    (
        $name:ident, $reg:ty, $elem:ty, $lanes:literal,
        set1: $set1:ident, setzero: $setzero:ident, loadu: $loadu:ident, storeu: $storeu:ident,
        add: $add:ident, sub: $sub:ident, mul: $mul:ident, div: $div:ident,
        max: $max:ident, min: $min:ident, sqrt: $sqrt:ident,
        xor: $xor:ident, andnot: $andnot:ident, cmp: $cmp:ident, blendv: $blendv:ident,
        fmadd: $fmadd:ident, to_int: $to_int:ident, from_int: $from_int:ident, slli: $slli:ident,
        mantissa_bits: $mbits:literal, pow2_magic: $pow2_magic:literal
    ) => {
        /// A 256-bit register of
        #[doc = concat!(stringify!($lanes), " × ", stringify!($elem), ".")]
        #[derive(Clone, Copy)]
        pub(super) struct $name($reg);

        impl Lanes for $name {
            type Elem = $elem;
            const LANES: usize = $lanes;

            common_lanes_methods!(
                $name, $elem,
                splat: $set1, load: $loadu, store: $storeu,
                add: $add, sub: $sub, mul: $mul, div: $div, sqrt: $sqrt,
                to_int: $to_int, from_int: $from_int, shift_left: $slli,
                mantissa_bits: $mbits, pow2_magic: $pow2_magic
            );

            #[inline(always)]
            unsafe fn max_nan(self, rhs: Self) -> Self {
                // SAFETY: the caller guarantees AVX2 (see `Lanes`).
                $name(unsafe { $blendv($max(self.0, rhs.0), self.0, $cmp::<_CMP_UNORD_Q>(self.0, self.0)) })
            }

            #[inline(always)]
            unsafe fn min_nan(self, rhs: Self) -> Self {
                // SAFETY: the caller guarantees AVX2 (see `Lanes`).
                $name(unsafe { $blendv($min(self.0, rhs.0), self.0, $cmp::<_CMP_UNORD_Q>(self.0, self.0)) })
            }

            #[inline(always)]
            unsafe fn neg(self) -> Self {
                // SAFETY: the caller guarantees AVX2 (see `Lanes`).
                $name(unsafe { $xor(self.0, $set1(-0.0)) })
            }

            #[inline(always)]
            unsafe fn abs(self) -> Self {
                // SAFETY: the caller guarantees AVX2 (see `Lanes`).
                $name(unsafe { $andnot($set1(-0.0), self.0) })
            }

            #[inline(always)]
            unsafe fn relu(self) -> Self {
                // `vmax(0, x)` returns its second operand, `x`, when x is NaN.
                // SAFETY: the caller guarantees AVX2 (see `Lanes`).
                $name(unsafe { $max($setzero(), self.0) })
            }

            #[inline(always)]
            unsafe fn mul_add(self, b: Self, c: Self) -> Self {
                // SAFETY: the caller guarantees AVX2 and FMA (see `Lanes`).
                $name(unsafe { $fmadd(self.0, b.0, c.0) })
            }
        }
    };
}

impl_lanes!(
    F32x8, __m256, f32, 8,
    set1: _mm256_set1_ps, setzero: _mm256_setzero_ps, loadu: _mm256_loadu_ps, storeu: _mm256_storeu_ps,
    add: _mm256_add_ps, sub: _mm256_sub_ps, mul: _mm256_mul_ps, div: _mm256_div_ps,
    max: _mm256_max_ps, min: _mm256_min_ps, sqrt: _mm256_sqrt_ps,
    xor: _mm256_xor_ps, andnot: _mm256_andnot_ps, cmp: _mm256_cmp_ps, blendv: _mm256_blendv_ps,
    fmadd: _mm256_fmadd_ps, to_int: _mm256_castps_si256, from_int: _mm256_castsi256_ps, slli: _mm256_slli_epi32,
    mantissa_bits: 23, pow2_magic: 12_583_039.0
);

impl_lanes!(
    F64x4, __m256d, f64, 4,
    set1: _mm256_set1_pd, setzero: _mm256_setzero_pd, loadu: _mm256_loadu_pd, storeu: _mm256_storeu_pd,
    add: _mm256_add_pd, sub: _mm256_sub_pd, mul: _mm256_mul_pd, div: _mm256_div_pd,
    max: _mm256_max_pd, min: _mm256_min_pd, sqrt: _mm256_sqrt_pd,
    xor: _mm256_xor_pd, andnot: _mm256_andnot_pd, cmp: _mm256_cmp_pd, blendv: _mm256_blendv_pd,
    fmadd: _mm256_fmadd_pd, to_int: _mm256_castpd_si256, from_int: _mm256_castsi256_pd, slli: _mm256_slli_epi64,
    mantissa_bits: 52, pow2_magic: 6_755_399_441_056_767.0
);
