//! AVX2 (+ FMA): 8 × f32 and 4 × f64 in a 256-bit register, 8 ChaCha blocks at a time. A mask
//! byte (nibble for f64) is broadcast and compared against the lane's bit to make a lane mask.

use std::arch::x86_64::*;

use super::isa::{Kernel, MaskIsa, MaskLanes, WordLanes};

/// AVX2 and FMA; a value proves the CPU has them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    pub(crate) unsafe fn new() -> Avx2 {
        Avx2(())
    }
}

impl MaskIsa for Avx2 {
    type F32 = F32x8;
    type F64 = F64x4;
    type Words = U32x8;

    #[inline(always)]
    unsafe fn pack64(self, words: &[u32; 64], t: u32) -> u64 {
        // SAFETY: the caller guarantees AVX2; the loads read words 8q .. 8q + 8 < 64.
        unsafe {
            let sign = _mm256_set1_epi32(i32::MIN);
            let tv = _mm256_xor_si256(_mm256_set1_epi32(t as i32), sign);
            let mut acc = 0u64;
            for q in 0..8 {
                let v = _mm256_loadu_si256(words.as_ptr().add(8 * q).cast());
                // Unsigned w < t as signed (t ^ 2^31) > (w ^ 2^31).
                let lt = _mm256_cmpgt_epi32(tv, _mm256_xor_si256(v, sign));
                acc |= u64::from(_mm256_movemask_ps(_mm256_castsi256_ps(lt)) as u8) << (8 * q);
            }
            acc
        }
    }

    #[inline(always)]
    fn run<K: Kernel>(self, kernel: K) -> K::Output {
        /// `kernel` compiled with the features.
        ///
        /// # Safety
        /// The CPU supports the features.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn with_avx2<K: Kernel>(isa: Avx2, kernel: K) -> K::Output {
            // SAFETY: the caller guarantees the features, so `isa`'s instruction set is
            // supported.
            unsafe { kernel.call(isa) }
        }
        // SAFETY: `self` exists, so the CPU supports AVX2 and FMA.
        unsafe { with_avx2(self, kernel) }
    }
}

/// Implements [`MaskLanes`] for one 256-bit register type from its intrinsics.
macro_rules! impl_lanes {
    (
        $name:ident, $reg:ty, $elem:ty, $lanes:literal, $int:ty,
        set1: $set1:ident, setzero: $setzero:ident, loadu: $loadu:ident, storeu: $storeu:ident,
        mul: $mul:ident, max: $max:ident, and: $and:ident, or: $or:ident, cmp: $cmp:ident,
        blendv: $blendv:ident, movemask: $movemask:ident, pairs: $pairs:ident, unpairs: $unpairs:ident, add: $add:ident,
        lane_bits: $lane_bits:expr, set1_int: $set1_int:ident, cmpeq_int: $cmpeq:ident, from_int: $from_int:ident,
        maskload: $maskload:ident, maskstore: $maskstore:ident
    ) => {
        /// A 256-bit register of
        #[doc = concat!(stringify!($lanes), " × ", stringify!($elem), ".")]
        #[derive(Clone, Copy)]
        pub(crate) struct $name($reg);

        impl MaskLanes for $name {
            type Elem = $elem;
            const LANES: usize = $lanes;

            register_methods!($name, $elem, splat: $set1, load: $loadu, store: $storeu, mul: $mul);

            #[inline(always)]
            unsafe fn relu(self) -> Self {
                // `vmax(0, x)` returns its second operand, `x`, when x is NaN or a zero.
                // SAFETY: the caller guarantees AVX2.
                $name(unsafe { $max($setzero(), self.0) })
            }

            #[inline(always)]
            unsafe fn select_bits(self, bits: u64) -> Self {
                // SAFETY: as in `relu`.
                unsafe {
                    let lane_bits = $lane_bits;
                    let m =
                        $cmpeq(_mm256_and_si256($set1_int((bits & ((1 << $lanes) - 1)) as $int), lane_bits), lane_bits);
                    $name($and(self.0, $from_int(m)))
                }
            }

            #[inline(always)]
            unsafe fn where_positive(self, y: Self) -> Self {
                // SAFETY: as in `relu`.
                $name(unsafe { $and(self.0, $cmp::<_CMP_NLE_UQ>(y.0, $setzero())) })
            }

            #[inline(always)]
            unsafe fn load_pairs(p: *const $elem) -> (Self, Self) {
                // SAFETY: the caller guarantees AVX2 and `2 · LANES` readable elements at `p`.
                unsafe {
                    let (even, odd) = $pairs($loadu(p), $loadu(p.add($lanes)));
                    ($name(even), $name(odd))
                }
            }

            #[inline(always)]
            unsafe fn store_pairs(even: Self, odd: Self, p: *mut $elem) {
                // SAFETY: the caller guarantees AVX2 and
                // `2 · LANES` writable elements at `p`.
                unsafe {
                    let (lo, hi) = $unpairs(even.0, odd.0);
                    $storeu(p, lo);
                    $storeu(p.add($lanes), hi);
                }
            }

            #[inline(always)]
            unsafe fn load_first(p: *const $elem, n: usize) -> Self {
                // SAFETY: the caller guarantees AVX2 and `n` readable elements at `p`; the masked
                // load reads lanes `0..n` only.
                $name(unsafe { $maskload(p, Self::first_lanes(n)) })
            }

            #[inline(always)]
            unsafe fn store_first(self, p: *mut $elem, n: usize) {
                // SAFETY: the caller guarantees AVX2; the caller guarantees `n`
                // writable elements at `p`; the masked store writes lanes `0..n` only.
                unsafe { $maskstore(p, Self::first_lanes(n), self.0) }
            }

            #[inline(always)]
            unsafe fn load_pairs_first(p: *const $elem, n: usize) -> (Self, Self) {
                let m = 2 * n;
                // SAFETY: the caller guarantees AVX2 and `2n` readable elements at `p`: the first
                // masked load reads `min(2n, LANES)` of them, the second (only when `2n > LANES`,
                // so `p + LANES` is inside the readable range) the other `2n - LANES`.
                unsafe {
                    let a = $maskload(p, Self::first_lanes(m.min($lanes)));
                    let b = if m > $lanes {
                        $maskload(p.add($lanes), Self::first_lanes(m - $lanes))
                    } else {
                        $setzero()
                    };
                    let (even, odd) = $pairs(a, b);
                    ($name(even), $name(odd))
                }
            }

            #[inline(always)]
            unsafe fn store_pairs_first(even: Self, odd: Self, p: *mut $elem, n: usize) {
                let m = 2 * n;
                // SAFETY: the caller guarantees AVX2 and `2n`
                // writable elements at `p`, which the two masked stores cover exactly (the second
                // only when `2n > LANES`).
                unsafe {
                    let (lo, hi) = $unpairs(even.0, odd.0);
                    $maskstore(p, Self::first_lanes(m.min($lanes)), lo);
                    if m > $lanes {
                        $maskstore(p.add($lanes), Self::first_lanes(m - $lanes), hi);
                    }
                }
            }

            #[inline(always)]
            unsafe fn add(self, rhs: Self) -> Self {
                // SAFETY: as in `relu`.
                $name(unsafe { $add(self.0, rhs.0) })
            }

            #[inline(always)]
            unsafe fn take_later(self, later: Self) -> (Self, u64) {
                // SAFETY: as in `relu`.
                unsafe {
                    let wins = $or($cmp::<_CMP_GT_OQ>(later.0, self.0), $cmp::<_CMP_UNORD_Q>(later.0, later.0));
                    ($name($blendv(self.0, later.0, wins)), $movemask(wins) as u64)
                }
            }
        }

        impl $name {
            /// A lane mask with lanes `0..n` set (`n <= LANES`), for the masked loads and stores.
            ///
            /// # Safety
            /// The CPU supports AVX2.
            #[inline(always)]
            unsafe fn first_lanes(n: usize) -> __m256i {
                let low = if n >= $lanes { (1u64 << $lanes) - 1 } else { (1u64 << n) - 1 };
                // SAFETY: the caller guarantees AVX2.
                unsafe {
                    let lane_bits = $lane_bits;
                    $cmpeq(_mm256_and_si256($set1_int(low as $int), lane_bits), lane_bits)
                }
            }
        }
    };
}

/// The even and odd elements of `a` then `b` (8 f32 each), in order.
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn pairs_f32(a: __m256, b: __m256) -> (__m256, __m256) {
    // Per 128-bit half, [a0 a2 b0 b2 | a4 a6 b4 b6]; then 64-bit pieces 0, 2, 1, 3.
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
        (order(_mm256_shuffle_ps::<0b10_00_10_00>(a, b)), order(_mm256_shuffle_ps::<0b11_01_11_01>(a, b)))
    }
}

/// `even` and `odd` interleaved: the first 8 pairs, then the last 8 (the inverse of
/// `pairs_f32`).
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn unpairs_f32(even: __m256, odd: __m256) -> (__m256, __m256) {
    // Per 128-bit half, [e0 o0 e1 o1 | e4 o4 e5 o5] and [e2 o2 e3 o3 | e6 o6 e7 o7]; then the
    // halves regrouped.
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let (lo, hi) = (_mm256_unpacklo_ps(even, odd), _mm256_unpackhi_ps(even, odd));
        (_mm256_permute2f128_ps::<0x20>(lo, hi), _mm256_permute2f128_ps::<0x31>(lo, hi))
    }
}

/// `even` and `odd` interleaved (the inverse of `pairs_f64`).
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn unpairs_f64(even: __m256d, odd: __m256d) -> (__m256d, __m256d) {
    // [e0 o0 e2 o2] and [e1 o1 e3 o3]; then the halves regrouped.
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let (lo, hi) = (_mm256_unpacklo_pd(even, odd), _mm256_unpackhi_pd(even, odd));
        (_mm256_permute2f128_pd::<0x20>(lo, hi), _mm256_permute2f128_pd::<0x31>(lo, hi))
    }
}

/// The even and odd elements of `a` then `b` (4 f64 each), in order.
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn pairs_f64(a: __m256d, b: __m256d) -> (__m256d, __m256d) {
    // [a0 b0 a2 b2], then elements 0, 2, 1, 3.
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let order = |v: __m256d| _mm256_permute4x64_pd::<0b11_01_10_00>(v);
        (order(_mm256_unpacklo_pd(a, b)), order(_mm256_unpackhi_pd(a, b)))
    }
}

impl_lanes!(
    F32x8, __m256, f32, 8, i32,
    set1: _mm256_set1_ps, setzero: _mm256_setzero_ps, loadu: _mm256_loadu_ps, storeu: _mm256_storeu_ps,
    mul: _mm256_mul_ps, max: _mm256_max_ps, and: _mm256_and_ps, or: _mm256_or_ps, cmp: _mm256_cmp_ps,
    blendv: _mm256_blendv_ps, movemask: _mm256_movemask_ps, pairs: pairs_f32, unpairs: unpairs_f32, add: _mm256_add_ps,
    lane_bits: _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128), set1_int: _mm256_set1_epi32,
    cmpeq_int: _mm256_cmpeq_epi32, from_int: _mm256_castsi256_ps,
    maskload: _mm256_maskload_ps, maskstore: _mm256_maskstore_ps
);

impl_lanes!(
    F64x4, __m256d, f64, 4, i64,
    set1: _mm256_set1_pd, setzero: _mm256_setzero_pd, loadu: _mm256_loadu_pd, storeu: _mm256_storeu_pd,
    mul: _mm256_mul_pd, max: _mm256_max_pd, and: _mm256_and_pd, or: _mm256_or_pd, cmp: _mm256_cmp_pd,
    blendv: _mm256_blendv_pd, movemask: _mm256_movemask_pd, pairs: pairs_f64, unpairs: unpairs_f64, add: _mm256_add_pd,
    lane_bits: _mm256_setr_epi64x(1, 2, 4, 8), set1_int: _mm256_set1_epi64x,
    cmpeq_int: _mm256_cmpeq_epi64, from_int: _mm256_castsi256_pd,
    maskload: _mm256_maskload_pd, maskstore: _mm256_maskstore_pd
);

/// 8 ChaCha words, one block per lane.
#[derive(Clone, Copy)]
pub(crate) struct U32x8(__m256i);

impl WordLanes for U32x8 {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn splat(x: u32) -> Self {
        // SAFETY: the caller guarantees AVX2.
        U32x8(unsafe { _mm256_set1_epi32(x as i32) })
    }

    #[inline(always)]
    unsafe fn load(p: *const u32) -> Self {
        // SAFETY: the caller guarantees AVX2 and 8 readable words at `p`.
        U32x8(unsafe { _mm256_loadu_si256(p.cast()) })
    }

    #[inline(always)]
    unsafe fn add(self, rhs: Self) -> Self {
        // SAFETY: the caller guarantees AVX2.
        U32x8(unsafe { _mm256_add_epi32(self.0, rhs.0) })
    }

    #[inline(always)]
    unsafe fn xor(self, rhs: Self) -> Self {
        // SAFETY: as in `add`.
        U32x8(unsafe { _mm256_xor_si256(self.0, rhs.0) })
    }

    #[inline(always)]
    unsafe fn rol<const R: i32>(self) -> Self {
        // SAFETY: as in `add`.
        U32x8(unsafe {
            let a = self.0;
            _mm256_or_si256(_mm256_sll_epi32(a, _mm_cvtsi32_si128(R)), _mm256_srl_epi32(a, _mm_cvtsi32_si128(32 - R)))
        })
    }

    #[inline(always)]
    unsafe fn store_blocks(rows: &[Self; 16], out: *mut u32) {
        // SAFETY: the caller guarantees AVX2; the caller guarantees 128 writable
        // words at `out`, and every store below writes 8 of them (block b < 8, half 0 or 8).
        unsafe {
            let x = rows.map(|r| r.0);
            // s[g][k] lane l (of 2) = words 4g..4g+4 of block 4l + k.
            let mut s = [[_mm256_setzero_si256(); 4]; 4];
            for g in 0..4 {
                let t0 = _mm256_unpacklo_epi32(x[4 * g], x[4 * g + 1]);
                let t1 = _mm256_unpackhi_epi32(x[4 * g], x[4 * g + 1]);
                let t2 = _mm256_unpacklo_epi32(x[4 * g + 2], x[4 * g + 3]);
                let t3 = _mm256_unpackhi_epi32(x[4 * g + 2], x[4 * g + 3]);
                s[g][0] = _mm256_unpacklo_epi64(t0, t2);
                s[g][1] = _mm256_unpackhi_epi64(t0, t2);
                s[g][2] = _mm256_unpacklo_epi64(t1, t3);
                s[g][3] = _mm256_unpackhi_epi64(t1, t3);
            }
            for k in 0..4 {
                let halves = [
                    (k, _mm256_permute2x128_si256::<0x20>(s[0][k], s[1][k]), 0),
                    (k, _mm256_permute2x128_si256::<0x20>(s[2][k], s[3][k]), 8),
                    (4 + k, _mm256_permute2x128_si256::<0x31>(s[0][k], s[1][k]), 0),
                    (4 + k, _mm256_permute2x128_si256::<0x31>(s[2][k], s[3][k]), 8),
                ];
                for (b, half, at) in halves {
                    _mm256_storeu_si256(out.add(b * 16 + at).cast(), half);
                }
            }
        }
    }
}
