//! NEON register types: 4 × f32 and 2 × f64 in a 128-bit register.
//!
//! NEON's `fmax`/`fmin` already return NaN when either input is NaN, so `maximum`/`minimum` need
//! no fix-up; they may differ from the scalar reference only in the sign of a zero result
//! (`fmax(-0, +0)` is `+0`), which compares equal.

use std::arch::aarch64::*;

use super::simd::{common_lanes_methods, simd_entry_points};

simd_entry_points!("neon");

/// Implements [`Lanes`] for one 128-bit register type from its intrinsics.
macro_rules! impl_lanes {
    (
        $name:ident, $reg:ty, $elem:ty, $lanes:literal,
        dup: $dup:ident, load: $load:ident, store: $store:ident,
        add: $add:ident, sub: $sub:ident, mul: $mul:ident, div: $div:ident,
        max: $max:ident, min: $min:ident, sqrt: $sqrt:ident, abs: $abs:ident, neg: $neg:ident,
        fma: $fma:ident, to_int: $to_int:ident, from_int: $from_int:ident, shl: $shl:ident,
        mantissa_bits: $mbits:literal, pow2_magic: $pow2_magic:literal
    ) => {
        /// A 128-bit register of
        #[doc = concat!(stringify!($lanes), " × ", stringify!($elem), ".")]
        #[derive(Clone, Copy)]
        pub(super) struct $name($reg);

        impl Lanes for $name {
            type Elem = $elem;
            const LANES: usize = $lanes;

            common_lanes_methods!(
                $name, $elem,
                splat: $dup, load: $load, store: $store,
                add: $add, sub: $sub, mul: $mul, div: $div, sqrt: $sqrt,
                to_int: $to_int, from_int: $from_int, shift_left: $shl,
                mantissa_bits: $mbits, pow2_magic: $pow2_magic
            );

            #[inline(always)]
            unsafe fn max_nan(self, rhs: Self) -> Self {
                // SAFETY: the caller guarantees NEON (see `Lanes`).
                $name(unsafe { $max(self.0, rhs.0) })
            }

            #[inline(always)]
            unsafe fn min_nan(self, rhs: Self) -> Self {
                // SAFETY: the caller guarantees NEON (see `Lanes`).
                $name(unsafe { $min(self.0, rhs.0) })
            }

            #[inline(always)]
            unsafe fn neg(self) -> Self {
                // SAFETY: the caller guarantees NEON (see `Lanes`).
                $name(unsafe { $neg(self.0) })
            }

            #[inline(always)]
            unsafe fn abs(self) -> Self {
                // SAFETY: the caller guarantees NEON (see `Lanes`).
                $name(unsafe { $abs(self.0) })
            }

            #[inline(always)]
            unsafe fn relu(self) -> Self {
                // `fmax` returns NaN for a NaN input, as `torch.relu` does.
                // SAFETY: the caller guarantees NEON (see `Lanes`).
                $name(unsafe { $max(self.0, $dup(0.0)) })
            }

            #[inline(always)]
            unsafe fn mul_add(self, b: Self, c: Self) -> Self {
                // `vfma(c, a, b)` is `c + a · b`.
                // SAFETY: the caller guarantees NEON (see `Lanes`).
                $name(unsafe { $fma(c.0, self.0, b.0) })
            }
        }
    };
}

impl_lanes!(
    F32x4, float32x4_t, f32, 4,
    dup: vdupq_n_f32, load: vld1q_f32, store: vst1q_f32,
    add: vaddq_f32, sub: vsubq_f32, mul: vmulq_f32, div: vdivq_f32,
    max: vmaxq_f32, min: vminq_f32, sqrt: vsqrtq_f32, abs: vabsq_f32, neg: vnegq_f32,
    fma: vfmaq_f32, to_int: vreinterpretq_u32_f32, from_int: vreinterpretq_f32_u32, shl: vshlq_n_u32,
    mantissa_bits: 23, pow2_magic: 12_583_039.0
);

impl_lanes!(
    F64x2, float64x2_t, f64, 2,
    dup: vdupq_n_f64, load: vld1q_f64, store: vst1q_f64,
    add: vaddq_f64, sub: vsubq_f64, mul: vmulq_f64, div: vdivq_f64,
    max: vmaxq_f64, min: vminq_f64, sqrt: vsqrtq_f64, abs: vabsq_f64, neg: vnegq_f64,
    fma: vfmaq_f64, to_int: vreinterpretq_u64_f64, from_int: vreinterpretq_f64_u64, shl: vshlq_n_u64,
    mantissa_bits: 52, pow2_magic: 6_755_399_441_056_767.0
);
