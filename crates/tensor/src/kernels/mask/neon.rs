//! NEON: 4 × f32 and 2 × f64 in a 128-bit register, 4 ChaCha blocks at a time. Mask bits are
//! broadcast and tested against the lane's bit (`cmtst`) to make a lane mask; ReLU is a compare
//! and select (`fmax(x, 0)` would turn `-0` into `+0`, unlike the reference).

use std::arch::aarch64::*;

use super::isa::{Kernel, MaskIsa, MaskLanes, WordLanes};

/// NEON; a value proves the CPU has it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Neon(());

impl Neon {
    /// # Safety
    /// The CPU supports NEON.
    pub(crate) unsafe fn new() -> Neon {
        Neon(())
    }
}

impl MaskIsa for Neon {
    type F32 = F32x4;
    type F64 = F64x2;
    type Words = U32x4;

    #[inline(always)]
    unsafe fn pack64(self, words: &[u32; 64], t: u32) -> u64 {
        // SAFETY: the caller guarantees NEON; the loads read words
        // 4q .. 4q + 4 < 64.
        unsafe {
            let tv = vdupq_n_u32(t);
            let lane_bits: [u32; 4] = [1, 2, 4, 8];
            let lane_bits = vld1q_u32(lane_bits.as_ptr());
            let mut acc = 0u64;
            // Each half of 32 words: register q's lanes get bits 4q .. 4q + 4 (distinct bits, so
            // adding the lanes across ORs them).
            for half in 0..2 {
                let mut bits = vdupq_n_u32(0);
                for q in 0..8 {
                    let v = vld1q_u32(words.as_ptr().add(32 * half + 4 * q));
                    let lt = vandq_u32(vcltq_u32(v, tv), vshlq_u32(lane_bits, vdupq_n_s32(4 * q as i32)));
                    bits = vorrq_u32(bits, lt);
                }
                acc |= u64::from(vaddvq_u32(bits)) << (32 * half);
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
        #[target_feature(enable = "neon")]
        unsafe fn with_neon<K: Kernel>(isa: Neon, kernel: K) -> K::Output {
            // SAFETY: the caller guarantees the features, so `isa`'s instruction set is
            // supported.
            unsafe { kernel.call(isa) }
        }
        // SAFETY: `self` exists, so the CPU supports NEON.
        unsafe { with_neon(self, kernel) }
    }
}

/// Implements [`MaskLanes`] for one 128-bit register type from its intrinsics.
macro_rules! impl_lanes {
    (
        $name:ident, $reg:ty, $elem:ty, $lanes:literal, $uint:ty,
        dup: $dup:ident, load: $load:ident, store: $store:ident, mul: $mul:ident,
        clt: $clt:ident, cgt: $cgt:ident, cle: $cle:ident, bsl: $bsl:ident, and: $and:ident, bic: $bic:ident,
        to_int: $to_int:ident, from_int: $from_int:ident,
        dup_int: $dup_int:ident, load_int: $load_int:ident, tst: $tst:ident, lane_bits: $lane_bits:expr,
        ld2: $ld2:ident, st2: $st2:ident, pair: $pair:ident, add: $add:ident,
        ceq: $ceq:ident, orr: $orr:ident, eor: $eor:ident, addv: $addv:ident
    ) => {
        /// A 128-bit register of
        #[doc = concat!(stringify!($lanes), " × ", stringify!($elem), ".")]
        #[derive(Clone, Copy)]
        pub(crate) struct $name($reg);

        impl MaskLanes for $name {
            type Elem = $elem;
            const LANES: usize = $lanes;

            register_methods!($name, $elem, splat: $dup, load: $load, store: $store, mul: $mul);

            #[inline(always)]
            unsafe fn relu(self) -> Self {
                // x < 0 ? 0 : x, so NaN and -0 pass through as in the reference.
                // SAFETY: the caller guarantees NEON.
                $name(unsafe {
                    let zero = $dup(0.0);
                    $bsl($clt(self.0, zero), zero, self.0)
                })
            }

            #[inline(always)]
            unsafe fn select_bits(self, bits: u64) -> Self {
                // SAFETY: as in `relu`.
                unsafe {
                    let lane_bits: [$uint; $lanes] = $lane_bits;
                    let keep = $tst($dup_int(bits as $uint), $load_int(lane_bits.as_ptr()));
                    $name($from_int($and($to_int(self.0), keep)))
                }
            }

            #[inline(always)]
            unsafe fn where_positive(self, y: Self) -> Self {
                // SAFETY: as in `relu`.
                // `self` with the lanes where `y <= 0` cleared: a NaN `y` passes `self`.
                $name(unsafe { $from_int($bic($to_int(self.0), $cle(y.0, $dup(0.0)))) })
            }

            #[inline(always)]
            unsafe fn load_pairs(p: *const $elem) -> (Self, Self) {
                // SAFETY: the caller guarantees NEON and `2 · LANES` readable elements at `p`
                // (`ld2` splits them into even and odd positions).
                let pair = unsafe { $ld2(p) };
                ($name(pair.0), $name(pair.1))
            }

            #[inline(always)]
            unsafe fn store_pairs(even: Self, odd: Self, p: *mut $elem) {
                // SAFETY: the caller guarantees NEON and
                // `2 · LANES` writable elements at `p` (`st2` interleaves the two registers).
                unsafe { $st2(p, $pair(even.0, odd.0)) }
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
                    // A NaN is the lane that is not equal to itself.
                    let nan = $eor($ceq(later.0, later.0), $dup_int(<$uint>::MAX));
                    let wins = $orr($cgt(later.0, self.0), nan);
                    let lane_bits: [$uint; $lanes] = $lane_bits;
                    let bits = $addv($and(wins, $load_int(lane_bits.as_ptr())));
                    ($name($bsl(wins, later.0, self.0)), u64::from(bits))
                }
            }
        }
    };
}

impl_lanes!(
    F32x4, float32x4_t, f32, 4, u32,
    dup: vdupq_n_f32, load: vld1q_f32, store: vst1q_f32, mul: vmulq_f32,
    clt: vcltq_f32, cgt: vcgtq_f32, cle: vcleq_f32, bsl: vbslq_f32, and: vandq_u32, bic: vbicq_u32,
    to_int: vreinterpretq_u32_f32, from_int: vreinterpretq_f32_u32,
    dup_int: vdupq_n_u32, load_int: vld1q_u32, tst: vtstq_u32, lane_bits: [1, 2, 4, 8],
    ld2: vld2q_f32, st2: vst2q_f32, pair: float32x4x2_t, add: vaddq_f32, ceq: vceqq_f32, orr: vorrq_u32, eor: veorq_u32, addv: vaddvq_u32
);

impl_lanes!(
    F64x2, float64x2_t, f64, 2, u64,
    dup: vdupq_n_f64, load: vld1q_f64, store: vst1q_f64, mul: vmulq_f64,
    clt: vcltq_f64, cgt: vcgtq_f64, cle: vcleq_f64, bsl: vbslq_f64, and: vandq_u64, bic: vbicq_u64,
    to_int: vreinterpretq_u64_f64, from_int: vreinterpretq_f64_u64,
    dup_int: vdupq_n_u64, load_int: vld1q_u64, tst: vtstq_u64, lane_bits: [1, 2],
    ld2: vld2q_f64, st2: vst2q_f64, pair: float64x2x2_t, add: vaddq_f64, ceq: vceqq_f64, orr: vorrq_u64, eor: veorq_u64, addv: vaddvq_u64
);

/// 4 ChaCha words, one block per lane.
#[derive(Clone, Copy)]
pub(crate) struct U32x4(uint32x4_t);

impl WordLanes for U32x4 {
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn splat(x: u32) -> Self {
        // SAFETY: the caller guarantees NEON.
        U32x4(unsafe { vdupq_n_u32(x) })
    }

    #[inline(always)]
    unsafe fn load(p: *const u32) -> Self {
        // SAFETY: the caller guarantees NEON and 4 readable words at `p`.
        U32x4(unsafe { vld1q_u32(p) })
    }

    #[inline(always)]
    unsafe fn add(self, rhs: Self) -> Self {
        // SAFETY: the caller guarantees NEON.
        U32x4(unsafe { vaddq_u32(self.0, rhs.0) })
    }

    #[inline(always)]
    unsafe fn xor(self, rhs: Self) -> Self {
        // SAFETY: as in `add`.
        U32x4(unsafe { veorq_u32(self.0, rhs.0) })
    }

    #[inline(always)]
    unsafe fn rol<const R: i32>(self) -> Self {
        // SAFETY: as in `add`.
        U32x4(unsafe {
            let a = self.0;
            match R {
                // Swapping the 16-bit halves of each word.
                16 => vreinterpretq_u32_u16(vrev32q_u16(vreinterpretq_u16_u32(a))),
                // Shift left, then insert the bits shifted out from the right.
                12 => vsriq_n_u32::<20>(vshlq_n_u32::<12>(a), a),
                8 => vsriq_n_u32::<24>(vshlq_n_u32::<8>(a), a),
                7 => vsriq_n_u32::<25>(vshlq_n_u32::<7>(a), a),
                // Any other rotation: a negative count shifts right.
                _ => vorrq_u32(vshlq_u32(a, vdupq_n_s32(R)), vshlq_u32(a, vdupq_n_s32(R - 32))),
            }
        })
    }

    #[inline(always)]
    unsafe fn store_blocks(rows: &[Self; 16], out: *mut u32) {
        // SAFETY: the caller guarantees NEON; the caller guarantees 64 writable
        // words at `out`, and each store writes words 4g .. 4g + 4 of a block b < 4.
        unsafe {
            for g in 0..4 {
                let [a, b, c, d] = [rows[4 * g].0, rows[4 * g + 1].0, rows[4 * g + 2].0, rows[4 * g + 3].0];
                // Lanes: ab.0 = a0 b0 a2 b2, ab.1 = a1 b1 a3 b3; likewise cd.
                let ab = vtrnq_u32(a, b);
                let cd = vtrnq_u32(c, d);
                let blocks = [
                    vcombine_u32(vget_low_u32(ab.0), vget_low_u32(cd.0)),
                    vcombine_u32(vget_low_u32(ab.1), vget_low_u32(cd.1)),
                    vcombine_u32(vget_high_u32(ab.0), vget_high_u32(cd.0)),
                    vcombine_u32(vget_high_u32(ab.1), vget_high_u32(cd.1)),
                ];
                for (l, block) in blocks.into_iter().enumerate() {
                    vst1q_u32(out.add(16 * l + 4 * g), block);
                }
            }
        }
    }
}
