//! AVX-512F register types: 16 × f32 and 8 × f64 in a 512-bit register.
//!
//! Only AVX-512F instructions are used (the float `xor` of AVX-512DQ is done on the integer
//! view), so any AVX-512 CPU runs this path. As on AVX2, `vmaxps a, b` returns `b` when either
//! input is NaN; a mask move puts a NaN `a` back.

use std::arch::x86_64::*;

use super::simd::{common_lanes_methods, simd_entry_points};

simd_entry_points!("avx512f,avx2,fma");

/// Implements [`Lanes`] for one 512-bit register type from its intrinsics.
macro_rules! impl_lanes {
    (
        $name:ident, $reg:ty, $elem:ty, $lanes:literal,
        set1: $set1:ident, setzero: $setzero:ident, loadu: $loadu:ident, storeu: $storeu:ident,
        add: $add:ident, sub: $sub:ident, mul: $mul:ident, div: $div:ident,
        max: $max:ident, min: $min:ident, sqrt: $sqrt:ident, abs: $abs:ident,
        cmp_mask: $cmp:ident, mask_mov: $mask_mov:ident, to_int: $to_int:ident, from_int: $from_int:ident,
        fmadd: $fmadd:ident, slli: $slli:ident, mantissa_bits: $mbits:literal, pow2_magic: $pow2_magic:literal
    ) => {
        /// A 512-bit register of
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
                // SAFETY: the caller guarantees AVX-512F (see `Lanes`).
                $name(unsafe { $mask_mov($max(self.0, rhs.0), $cmp::<_CMP_UNORD_Q>(self.0, self.0), self.0) })
            }

            #[inline(always)]
            unsafe fn min_nan(self, rhs: Self) -> Self {
                // SAFETY: the caller guarantees AVX-512F (see `Lanes`).
                $name(unsafe { $mask_mov($min(self.0, rhs.0), $cmp::<_CMP_UNORD_Q>(self.0, self.0), self.0) })
            }

            #[inline(always)]
            unsafe fn neg(self) -> Self {
                // SAFETY: the caller guarantees AVX-512F (see `Lanes`).
                $name(unsafe { $from_int(_mm512_xor_si512($to_int(self.0), $to_int($set1(-0.0)))) })
            }

            #[inline(always)]
            unsafe fn abs(self) -> Self {
                // SAFETY: the caller guarantees AVX-512F (see `Lanes`).
                $name(unsafe { $abs(self.0) })
            }

            #[inline(always)]
            unsafe fn relu(self) -> Self {
                // `vmax(0, x)` returns its second operand, `x`, when x is NaN.
                // SAFETY: the caller guarantees AVX-512F (see `Lanes`).
                $name(unsafe { $max($setzero(), self.0) })
            }

            #[inline(always)]
            unsafe fn mul_add(self, b: Self, c: Self) -> Self {
                // SAFETY: the caller guarantees AVX-512F (see `Lanes`).
                $name(unsafe { $fmadd(self.0, b.0, c.0) })
            }
        }
    };
}

impl_lanes!(
    F32x16, __m512, f32, 16,
    set1: _mm512_set1_ps, setzero: _mm512_setzero_ps, loadu: _mm512_loadu_ps, storeu: _mm512_storeu_ps,
    add: _mm512_add_ps, sub: _mm512_sub_ps, mul: _mm512_mul_ps, div: _mm512_div_ps,
    max: _mm512_max_ps, min: _mm512_min_ps, sqrt: _mm512_sqrt_ps, abs: _mm512_abs_ps,
    cmp_mask: _mm512_cmp_ps_mask, mask_mov: _mm512_mask_mov_ps, to_int: _mm512_castps_si512, from_int: _mm512_castsi512_ps,
    fmadd: _mm512_fmadd_ps, slli: _mm512_slli_epi32, mantissa_bits: 23, pow2_magic: 12_583_039.0
);

impl_lanes!(
    F64x8, __m512d, f64, 8,
    set1: _mm512_set1_pd, setzero: _mm512_setzero_pd, loadu: _mm512_loadu_pd, storeu: _mm512_storeu_pd,
    add: _mm512_add_pd, sub: _mm512_sub_pd, mul: _mm512_mul_pd, div: _mm512_div_pd,
    max: _mm512_max_pd, min: _mm512_min_pd, sqrt: _mm512_sqrt_pd, abs: _mm512_abs_pd,
    cmp_mask: _mm512_cmp_pd_mask, mask_mov: _mm512_mask_mov_pd, to_int: _mm512_castpd_si512, from_int: _mm512_castsi512_pd,
    fmadd: _mm512_fmadd_pd, slli: _mm512_slli_epi64, mantissa_bits: 52, pow2_magic: 6_755_399_441_056_767.0
);
