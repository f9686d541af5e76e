//! AVX-512F: 16 × f32 and 8 × f64 in a 512-bit register, 16 ChaCha blocks at a time. Mask bits
//! go straight into a mask register (`vmovaps` with zero-masking makes the factor), and
//! `vprold` rotates.

use std::arch::x86_64::*;

use super::isa::{Kernel, MaskIsa, MaskLanes, WordLanes};

/// AVX-512F and AVX-512VL with AVX2 and FMA; a value proves the CPU has them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// # Safety
    /// The CPU supports AVX-512F, AVX-512VL, AVX2 and FMA.
    pub(crate) unsafe fn new() -> Avx512 {
        Avx512(())
    }
}

impl MaskIsa for Avx512 {
    type F32 = F32x16;
    type F64 = F64x8;
    type Words = U32x16;

    #[inline(always)]
    unsafe fn pack64(self, words: &[u32; 64], t: u32) -> u64 {
        // SAFETY: the caller guarantees AVX-512F; the loads read words
        // 16q .. 16q + 16 < 64.
        unsafe {
            let tv = _mm512_set1_epi32(t as i32);
            let mut acc = 0u64;
            for q in 0..4 {
                let v = _mm512_loadu_si512(words.as_ptr().add(16 * q).cast());
                acc |= u64::from(_mm512_cmplt_epu32_mask(v, tv)) << (16 * q);
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
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        unsafe fn with_avx512<K: Kernel>(isa: Avx512, kernel: K) -> K::Output {
            // SAFETY: the caller guarantees the features, so `isa`'s instruction set is
            // supported.
            unsafe { kernel.call(isa) }
        }
        // SAFETY: `self` exists, so the CPU supports these features.
        unsafe { with_avx512(self, kernel) }
    }
}

/// The bits `0..n` of a lane mask (`n <= 16`).
#[inline(always)]
fn first_lanes(n: usize) -> u32 {
    (1u32 << n) - 1
}

/// Implements [`MaskLanes`] for one 512-bit register type from its intrinsics.
macro_rules! impl_lanes {
    (
        $name:ident, $reg:ty, $elem:ty, $lanes:literal, $kmask:ty,
        set1: $set1:ident, setzero: $setzero:ident, loadu: $loadu:ident, storeu: $storeu:ident,
        mul: $mul:ident, max: $max:ident, maskz_mov: $maskz_mov:ident, cmp_mask: $cmp:ident,
        blend: $blend:ident, permutex2var: $perm2:ident, even: $even:expr, odd: $odd:expr,
        low_pairs: $low_pairs:expr, high_pairs: $high_pairs:expr, add: $add:ident,
        maskz_loadu: $maskz_loadu:ident, mask_storeu: $mask_storeu:ident
    ) => {
        /// A 512-bit register of
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
                // SAFETY: the caller guarantees AVX-512F.
                $name(unsafe { $max($setzero(), self.0) })
            }

            #[inline(always)]
            unsafe fn select_bits(self, bits: u64) -> Self {
                // SAFETY: as in `relu`.
                $name(unsafe { $maskz_mov(bits as $kmask, self.0) })
            }

            #[inline(always)]
            unsafe fn where_positive(self, y: Self) -> Self {
                // SAFETY: as in `relu`.
                $name(unsafe { $maskz_mov($cmp::<_CMP_NLE_UQ>(y.0, $setzero()), self.0) })
            }

            #[inline(always)]
            unsafe fn load_pairs(p: *const $elem) -> (Self, Self) {
                // SAFETY: the caller guarantees AVX-512F and `2 · LANES` readable elements at `p`;
                // the indices pick lanes of the two loaded registers (bit 4 / bit 3: the second).
                unsafe {
                    let (a, b) = ($loadu(p), $loadu(p.add($lanes)));
                    ($name($perm2(a, $even, b)), $name($perm2(a, $odd, b)))
                }
            }

            #[inline(always)]
            unsafe fn store_pairs(even: Self, odd: Self, p: *mut $elem) {
                // SAFETY: the caller guarantees AVX-512F and
                // `2 · LANES` writable elements at `p`; the indices pick lanes of `even` and (bit
                // 4 / bit 3 set) `odd`.
                unsafe {
                    $storeu(p, $perm2(even.0, $low_pairs, odd.0));
                    $storeu(p.add($lanes), $perm2(even.0, $high_pairs, odd.0));
                }
            }

            #[inline(always)]
            unsafe fn load_first(p: *const $elem, n: usize) -> Self {
                // SAFETY: the caller guarantees AVX-512F and `n` readable elements at `p`; the
                // masked load reads lanes `0..n` only.
                $name(unsafe { $maskz_loadu(first_lanes(n) as $kmask, p) })
            }

            #[inline(always)]
            unsafe fn store_first(self, p: *mut $elem, n: usize) {
                // SAFETY: the caller guarantees AVX-512F; the caller guarantees `n`
                // writable elements at `p`; the masked store writes lanes `0..n` only.
                unsafe { $mask_storeu(p, first_lanes(n) as $kmask, self.0) }
            }

            #[inline(always)]
            unsafe fn load_pairs_first(p: *const $elem, n: usize) -> (Self, Self) {
                let m = 2 * n;
                // SAFETY: the caller guarantees AVX-512F and `2n` readable elements at `p`: the
                // first masked load reads `min(2n, LANES)` of them, the second (only when `2n >
                // LANES`, so `p + LANES` is inside the readable range) the other `2n - LANES`;
                // the indices pick lanes as in `load_pairs`.
                unsafe {
                    let a = $maskz_loadu(first_lanes(m.min($lanes)) as $kmask, p);
                    let b = if m > $lanes {
                        $maskz_loadu(first_lanes(m - $lanes) as $kmask, p.add($lanes))
                    } else {
                        $setzero()
                    };
                    ($name($perm2(a, $even, b)), $name($perm2(a, $odd, b)))
                }
            }

            #[inline(always)]
            unsafe fn store_pairs_first(even: Self, odd: Self, p: *mut $elem, n: usize) {
                let m = 2 * n;
                // SAFETY: the caller guarantees AVX-512F and `2n`
                // writable elements at `p`, which the two masked stores cover exactly (the second
                // only when `2n > LANES`).
                unsafe {
                    $mask_storeu(p, first_lanes(m.min($lanes)) as $kmask, $perm2(even.0, $low_pairs, odd.0));
                    if m > $lanes {
                        $mask_storeu(
                            p.add($lanes),
                            first_lanes(m - $lanes) as $kmask,
                            $perm2(even.0, $high_pairs, odd.0),
                        );
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
                    let wins = $cmp::<_CMP_GT_OQ>(later.0, self.0) | $cmp::<_CMP_UNORD_Q>(later.0, later.0);
                    ($name($blend(wins, self.0, later.0)), u64::from(wins))
                }
            }
        }
    };
}

impl_lanes!(
    F32x16, __m512, f32, 16, __mmask16,
    set1: _mm512_set1_ps, setzero: _mm512_setzero_ps, loadu: _mm512_loadu_ps, storeu: _mm512_storeu_ps,
    mul: _mm512_mul_ps, max: _mm512_max_ps, maskz_mov: _mm512_maskz_mov_ps, cmp_mask: _mm512_cmp_ps_mask,
    blend: _mm512_mask_blend_ps, permutex2var: _mm512_permutex2var_ps,
    even: _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
    odd: _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31),
    low_pairs: _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23),
    high_pairs: _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31),
    add: _mm512_add_ps, maskz_loadu: _mm512_maskz_loadu_ps, mask_storeu: _mm512_mask_storeu_ps
);

impl_lanes!(
    F64x8, __m512d, f64, 8, __mmask8,
    set1: _mm512_set1_pd, setzero: _mm512_setzero_pd, loadu: _mm512_loadu_pd, storeu: _mm512_storeu_pd,
    mul: _mm512_mul_pd, max: _mm512_max_pd, maskz_mov: _mm512_maskz_mov_pd, cmp_mask: _mm512_cmp_pd_mask,
    blend: _mm512_mask_blend_pd, permutex2var: _mm512_permutex2var_pd,
    even: _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14),
    odd: _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15),
    low_pairs: _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11),
    high_pairs: _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15),
    add: _mm512_add_pd, maskz_loadu: _mm512_maskz_loadu_pd, mask_storeu: _mm512_mask_storeu_pd
);

/// 16 ChaCha words, one block per lane.
#[derive(Clone, Copy)]
pub(crate) struct U32x16(__m512i);

impl WordLanes for U32x16 {
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn splat(x: u32) -> Self {
        // SAFETY: the caller guarantees AVX-512F.
        U32x16(unsafe { _mm512_set1_epi32(x as i32) })
    }

    #[inline(always)]
    unsafe fn load(p: *const u32) -> Self {
        // SAFETY: the caller guarantees AVX-512F and 16 readable words at `p`.
        U32x16(unsafe { _mm512_loadu_si512(p.cast()) })
    }

    #[inline(always)]
    unsafe fn add(self, rhs: Self) -> Self {
        // SAFETY: the caller guarantees AVX-512F.
        U32x16(unsafe { _mm512_add_epi32(self.0, rhs.0) })
    }

    #[inline(always)]
    unsafe fn xor(self, rhs: Self) -> Self {
        // SAFETY: as in `add`.
        U32x16(unsafe { _mm512_xor_si512(self.0, rhs.0) })
    }

    #[inline(always)]
    unsafe fn rol<const R: i32>(self) -> Self {
        // SAFETY: as in `add`.
        U32x16(unsafe { _mm512_rol_epi32::<R>(self.0) })
    }

    #[inline(always)]
    unsafe fn store_blocks(rows: &[Self; 16], out: *mut u32) {
        // SAFETY: the caller guarantees AVX-512F; the caller guarantees 256
        // writable words at `out`, and each store writes block 4l + k < 16, words 0..16.
        unsafe {
            let x = rows.map(|r| r.0);
            // First 4×4 within each 128-bit lane: s[g][k] lane l = words 4g..4g+4 of block
            // 4l + k.
            let mut s = [[_mm512_setzero_si512(); 4]; 4];
            for g in 0..4 {
                let t0 = _mm512_unpacklo_epi32(x[4 * g], x[4 * g + 1]);
                let t1 = _mm512_unpackhi_epi32(x[4 * g], x[4 * g + 1]);
                let t2 = _mm512_unpacklo_epi32(x[4 * g + 2], x[4 * g + 3]);
                let t3 = _mm512_unpackhi_epi32(x[4 * g + 2], x[4 * g + 3]);
                s[g][0] = _mm512_unpacklo_epi64(t0, t2);
                s[g][1] = _mm512_unpackhi_epi64(t0, t2);
                s[g][2] = _mm512_unpacklo_epi64(t1, t3);
                s[g][3] = _mm512_unpackhi_epi64(t1, t3);
            }
            // Then a 4×4 transpose of 128-bit lanes: block 4l + k = lane l of s[0..4][k].
            for k in 0..4 {
                let a = _mm512_shuffle_i32x4::<0x44>(s[0][k], s[1][k]);
                let b = _mm512_shuffle_i32x4::<0x44>(s[2][k], s[3][k]);
                let c = _mm512_shuffle_i32x4::<0xEE>(s[0][k], s[1][k]);
                let d = _mm512_shuffle_i32x4::<0xEE>(s[2][k], s[3][k]);
                let blocks = [
                    _mm512_shuffle_i32x4::<0x88>(a, b),
                    _mm512_shuffle_i32x4::<0xDD>(a, b),
                    _mm512_shuffle_i32x4::<0x88>(c, d),
                    _mm512_shuffle_i32x4::<0xDD>(c, d),
                ];
                for (l, block) in blocks.into_iter().enumerate() {
                    _mm512_storeu_si512(out.add((4 * l + k) * 16).cast(), block);
                }
            }
        }
    }
}
