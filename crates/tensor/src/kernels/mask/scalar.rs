//! The scalar reference: the instruction set every other path is tested against, with `f32`,
//! `f64` and `u32` as one-lane registers, so the shared loops run on it unchanged (and finish
//! the tails of the SIMD paths).

use super::isa::{Kernel, MaskIsa, MaskLanes, WordLanes};

/// Portable Rust: always supported.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar;

impl MaskIsa for Scalar {
    type F32 = f32;
    type F64 = f64;
    type Words = u32;

    #[inline(always)]
    unsafe fn pack64(self, words: &[u32; 64], t: u32) -> u64 {
        words.iter().enumerate().fold(0, |acc, (b, &w)| acc | u64::from(w < t) << b)
    }

    #[inline(always)]
    fn run<K: Kernel>(self, kernel: K) -> K::Output {
        // SAFETY: the scalar path runs on every CPU.
        unsafe { kernel.call(self) }
    }
}

macro_rules! impl_scalar_lanes {
    ($t:ty) => {
        impl MaskLanes for $t {
            type Elem = $t;
            const LANES: usize = 1;

            #[inline(always)]
            unsafe fn splat(x: $t) -> $t {
                x
            }

            #[inline(always)]
            unsafe fn load(p: *const $t) -> $t {
                // SAFETY: the caller guarantees `p` is readable.
                unsafe { *p }
            }

            #[inline(always)]
            unsafe fn store(self, p: *mut $t) {
                // SAFETY: the caller guarantees `p` is writable.
                unsafe { *p = self }
            }

            #[inline(always)]
            unsafe fn mul(self, rhs: $t) -> $t {
                self * rhs
            }

            #[inline(always)]
            unsafe fn relu(self) -> $t {
                // `0 > x` is false for NaN and for -0, which pass through.
                if 0.0 > self {
                    0.0
                } else {
                    self
                }
            }

            #[inline(always)]
            unsafe fn select_bits(self, bits: u64) -> $t {
                if bits & 1 == 1 {
                    self
                } else {
                    0.0
                }
            }

            #[inline(always)]
            unsafe fn where_positive(self, y: $t) -> $t {
                // A NaN `y` passes `self`, as PyTorch's `threshold_backward`.
                if y <= 0.0 {
                    0.0
                } else {
                    self
                }
            }

            #[inline(always)]
            unsafe fn load_pairs(p: *const $t) -> ($t, $t) {
                // SAFETY: the caller guarantees `p..p + 2` is readable.
                unsafe { (*p, *p.add(1)) }
            }

            #[inline(always)]
            unsafe fn store_pairs(even: $t, odd: $t, p: *mut $t) {
                // SAFETY: the caller guarantees `p..p + 2` is writable.
                unsafe { (*p, *p.add(1)) = (even, odd) }
            }

            #[inline(always)]
            unsafe fn add(self, rhs: $t) -> $t {
                self + rhs
            }

            #[inline(always)]
            unsafe fn take_later(self, later: $t) -> ($t, u64) {
                if later > self || later.is_nan() {
                    (later, 1)
                } else {
                    (self, 0)
                }
            }
        }
    };
}

impl_scalar_lanes!(f32);
impl_scalar_lanes!(f64);

impl WordLanes for u32 {
    const LANES: usize = 1;

    #[inline(always)]
    unsafe fn splat(x: u32) -> u32 {
        x
    }

    #[inline(always)]
    unsafe fn load(p: *const u32) -> u32 {
        // SAFETY: the caller guarantees `p` is readable.
        unsafe { *p }
    }

    #[inline(always)]
    unsafe fn add(self, rhs: u32) -> u32 {
        self.wrapping_add(rhs)
    }

    #[inline(always)]
    unsafe fn xor(self, rhs: u32) -> u32 {
        self ^ rhs
    }

    #[inline(always)]
    unsafe fn rol<const R: i32>(self) -> u32 {
        self.rotate_left(R as u32)
    }

    #[inline(always)]
    unsafe fn store_blocks(rows: &[u32; 16], out: *mut u32) {
        // SAFETY: the caller guarantees 16 writable words at `out`.
        unsafe { out.copy_from_nonoverlapping(rows.as_ptr(), 16) }
    }
}
