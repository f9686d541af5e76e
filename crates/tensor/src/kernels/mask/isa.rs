//! The one way the mask, ReLU-mask and ChaCha kernels choose an instruction set: a
//! [`MaskIsa`] value per instruction set (a token: holding one proves the CPU supports it, so
//! its safe [`MaskIsa::run`] may enter the `#[target_feature]` entry point), its register types ([`MaskLanes`] for
//! f32 and f64, [`WordLanes`] for ChaCha's u32 words), and [`dispatch`], which turns an
//! [`Isa`] into that value and runs a [`Kernel`] under the instruction set's
//! `#[target_feature]`s.
//!
//! A kernel's loop is written once, generic over the instruction set; the scalar reference is
//! the same loop on one-lane "registers" (`f32`, `f64`, `u32` themselves). A new instruction set
//! is one file implementing these traits and one arm in [`dispatch`].

use std::any::Any;
use std::mem::MaybeUninit;

use crate::dtype::Float;
use crate::kernels::Isa;

pub(crate) use super::scalar::Scalar;

/// An instruction set for the mask kernels. A value exists only when the CPU supports it.
pub(crate) trait MaskIsa: Copy {
    /// A register of f32 lanes.
    type F32: MaskLanes<Elem = f32>;
    /// A register of f64 lanes.
    type F64: MaskLanes<Elem = f64>;
    /// A register of u32 lanes, one ChaCha block per lane.
    type Words: WordLanes;

    /// Bit `i` of the result set when `words[i] < t`.
    ///
    /// # Safety
    /// The CPU supports this instruction set (the caller runs inside [`MaskIsa::run`]).
    unsafe fn pack64(self, words: &[u32; 64], t: u32) -> u64;

    /// Runs `kernel` compiled with this instruction set's target features.
    fn run<K: Kernel>(self, kernel: K) -> K::Output;
}

/// A kernel body, generic over the instruction set it runs on. `call` must be
/// `#[inline(always)]`, and so must everything it calls, so that [`MaskIsa::run`]'s
/// `#[target_feature]` entry point compiles the whole loop for its instruction set.
pub(crate) trait Kernel {
    /// What the kernel returns.
    type Output;
    /// Runs the kernel on `isa`'s registers.
    ///
    /// # Safety
    /// The CPU supports `S`'s instruction set: only [`MaskIsa::run`] calls it, inside its
    /// `#[target_feature]` entry point.
    unsafe fn call<S: MaskIsa>(self, isa: S) -> Self::Output;
}

/// Runs `kernel` on `isa` when the CPU supports it, on the scalar reference otherwise (so no
/// call is ever unsound; tests pass each of `available_isas` explicitly).
#[inline]
pub(crate) fn dispatch<K: Kernel>(isa: Isa, kernel: K) -> K::Output {
    if isa.is_supported() {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU supports AVX-512F, AVX-512VL, AVX2 and FMA (checked above).
            Isa::Avx512 => return unsafe { super::avx512::Avx512::new() }.run(kernel),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            Isa::Avx2 => return unsafe { super::avx2::Avx2::new() }.run(kernel),
            #[cfg(target_arch = "aarch64")]
            // SAFETY: the CPU supports NEON (checked above).
            Isa::Neon => return unsafe { super::neon::Neon::new() }.run(kernel),
            _ => {}
        }
    }
    Scalar.run(kernel)
}

/// One SIMD register of `LANES` floats, `LANES` dividing 64 (so a register never straddles two
/// mask words).
///
/// # Safety
/// Every method executes the type's instructions, so every method is `unsafe` and requires
/// that the CPU supports the type's instruction set (as for `elementwise`'s `Lanes`; the
/// scalar one-lane registers `f32` and `f64` meet it everywhere). Methods taking pointers list
/// what else they require.
pub(crate) trait MaskLanes: Copy {
    /// The element type.
    type Elem: Float;
    /// Elements per register.
    const LANES: usize;

    /// Every lane set to `x`.
    ///
    /// # Safety
    /// The CPU supports this type's instruction set.
    unsafe fn splat(x: Self::Elem) -> Self;

    /// `LANES` elements from `p` (no alignment needed).
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and `p..p + LANES` is readable.
    unsafe fn load(p: *const Self::Elem) -> Self;

    /// Writes the lanes to `p..p + LANES` (no alignment needed).
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and `p..p + LANES` is writable.
    unsafe fn store(self, p: *mut Self::Elem);

    /// Lane-wise `self · rhs`.
    unsafe fn mul(self, rhs: Self) -> Self;

    /// Lane-wise `0 > x ? 0 : x`: the elementwise `relu` (NaN and `-0` pass through).
    unsafe fn relu(self) -> Self;

    /// Lane `j` of `self` where bit `j` of `bits` is set, `+0` where it is not (bits past
    /// `LANES` are ignored): the dropout factor, `scale` or `0`.
    unsafe fn select_bits(self, bits: u64) -> Self;

    /// Lane-wise `y <= 0 ? +0 : self`: a NaN `y` passes `self`, as PyTorch's
    /// `threshold_backward` does.
    unsafe fn where_positive(self, y: Self) -> Self;

    /// The `2 · LANES` elements at `p` split into even and odd positions: lane `j` of the first
    /// register is `p[2j]`, of the second `p[2j + 1]` (the left and right columns of `LANES`
    /// side-by-side 2-wide windows).
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and `p..p + 2 · LANES` is readable.
    unsafe fn load_pairs(p: *const Self::Elem) -> (Self, Self);

    /// Writes `even` and `odd` interleaved to `p..p + 2 · LANES`: `p[2j] = even[j]`,
    /// `p[2j + 1] = odd[j]` (the inverse of [`MaskLanes::load_pairs`]).
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and `p..p + 2 · LANES` is writable.
    unsafe fn store_pairs(even: Self, odd: Self, p: *mut Self::Elem);

    /// Lane-wise `self + rhs`.
    unsafe fn add(self, rhs: Self) -> Self;

    /// One step of a max scan in PyTorch's order: lane-wise `later > self || later is NaN ?
    /// later : self` (ties keep `self`; a NaN wins, a later NaN over an earlier one), with the
    /// lanes where `later` won as bits `0..LANES`.
    unsafe fn take_later(self, later: Self) -> (Self, u64);

    /// [`MaskLanes::load`] of the first `n` lanes (`n <= LANES`) from `p..p + n`; the other
    /// lanes hold unspecified values. The default goes through a copy padded with zeros; an
    /// instruction set with masked loads overrides it (no element past `p + n` is read).
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and `p..p + n` is readable.
    #[inline(always)]
    unsafe fn load_first(p: *const Self::Elem, n: usize) -> Self {
        let mut padded = [<Self::Elem as Float>::ZERO; MAX_LANES];
        // SAFETY: the caller guarantees `n <= LANES <= MAX_LANES` readable elements at `p`, and
        // the support `load` needs; `padded` holds `MAX_LANES >= LANES` elements.
        unsafe {
            std::ptr::copy_nonoverlapping(p, padded.as_mut_ptr(), n);
            Self::load(padded.as_ptr())
        }
    }

    /// [`MaskLanes::store`] of the first `n` lanes (`n <= LANES`) to `p..p + n`; nothing past
    /// `p + n` is written.
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and `p..p + n` is writable.
    #[inline(always)]
    unsafe fn store_first(self, p: *mut Self::Elem, n: usize) {
        let mut padded = [<Self::Elem as Float>::ZERO; MAX_LANES];
        // SAFETY: `padded` holds `MAX_LANES >= LANES` elements; the caller guarantees the
        // instruction set and `n <= LANES` writable elements at `p`.
        unsafe {
            self.store(padded.as_mut_ptr());
            std::ptr::copy_nonoverlapping(padded.as_ptr(), p, n);
        }
    }

    /// [`MaskLanes::load_pairs`] of the first `n` pairs (`n <= LANES`) at `p..p + 2n`: lanes
    /// `0..n` as `load_pairs` gives them, the other lanes unspecified (read nowhere past `p +
    /// 2n`).
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and `p..p + 2n` is readable.
    #[inline(always)]
    unsafe fn load_pairs_first(p: *const Self::Elem, n: usize) -> (Self, Self) {
        let mut padded = [<Self::Elem as Float>::ZERO; 2 * MAX_LANES];
        // SAFETY: the caller guarantees `2n <= 2 · LANES` readable elements at `p` and the
        // support `load_pairs` needs; `padded` holds `2 · MAX_LANES` elements.
        unsafe {
            std::ptr::copy_nonoverlapping(p, padded.as_mut_ptr(), 2 * n);
            Self::load_pairs(padded.as_ptr())
        }
    }

    /// [`MaskLanes::store_pairs`] of the first `n` lanes (`n <= LANES`): writes `p..p + 2n` and
    /// nothing past it.
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and `p..p + 2n` is writable.
    #[inline(always)]
    unsafe fn store_pairs_first(even: Self, odd: Self, p: *mut Self::Elem, n: usize) {
        let mut padded = [<Self::Elem as Float>::ZERO; 2 * MAX_LANES];
        // SAFETY: `padded` holds `2 · MAX_LANES` elements; the caller guarantees the instruction
        // set and `2n` writable elements at `p`.
        unsafe {
            Self::store_pairs(even, odd, padded.as_mut_ptr());
            std::ptr::copy_nonoverlapping(padded.as_ptr(), p, 2 * n);
        }
    }
}

/// The most lanes any [`MaskLanes`] register has (16 f32 in AVX-512).
pub(crate) const MAX_LANES: usize = 16;

/// One SIMD register of `LANES` u32 words: word `j` of `LANES` ChaCha blocks side by side, one
/// block per lane.
///
/// # Safety
/// As for [`MaskLanes`]: every method requires that the CPU supports the type's instruction
/// set.
pub(crate) trait WordLanes: Copy {
    /// Blocks per register.
    const LANES: usize;

    /// Every lane set to `x`.
    ///
    /// # Safety
    /// The CPU supports this type's instruction set.
    unsafe fn splat(x: u32) -> Self;

    /// `LANES` words from `p`.
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and `p..p + LANES` is readable.
    unsafe fn load(p: *const u32) -> Self;

    /// Lane-wise wrapping `self + rhs`.
    unsafe fn add(self, rhs: Self) -> Self;
    /// Lane-wise `self ^ rhs`.
    unsafe fn xor(self, rhs: Self) -> Self;
    /// Lane-wise rotation left by `R` bits (`0 < R < 32`).
    unsafe fn rol<const R: i32>(self) -> Self;

    /// Writes the blocks in stream order: lane `b` of `rows[j]` to `out[16 b + j]`.
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and `out..out + 16 · LANES` is writable.
    unsafe fn store_blocks(rows: &[Self; 16], out: *mut u32);
}

/// An element type with a register on every instruction set: f32 and f64, each its own
/// one-lane scalar register.
pub(crate) trait MaskElem: Float + MaskLanes<Elem = Self> {
    /// The register of `Self` on instruction set `S`.
    type Reg<S: MaskIsa>: MaskLanes<Elem = Self>;
}

impl MaskElem for f32 {
    type Reg<S: MaskIsa> = S::F32;
}

impl MaskElem for f64 {
    type Reg<S: MaskIsa> = S::F64;
}

/// `mask::scale_by_mask` into uninitialised memory: `(isa, mask, x, scale, out)`.
type ScaleByMaskFn<T> = fn(Isa, &[u64], &[T], T, &mut [MaybeUninit<T>]);

/// The float kernels of one element type, as plain functions of [`MaskElem`] types.
pub(crate) struct ElemKernels<T: 'static> {
    /// `mask::scale_by_mask` into uninitialised memory.
    pub scale_by_mask: ScaleByMaskFn<T>,
    /// `relu_mask::relu_scale_by_mask_in_place`.
    pub relu_scale_by_mask: fn(Isa, &[u64], &mut [T], T),
    /// `relu_mask::scale_where_positive`.
    pub scale_where_positive: fn(Isa, &[T], &[T], T, &mut [T]),
    /// `relu_mask::scale_where_kept_and_positive`.
    pub scale_where_kept_and_positive: ScaleWhereKeptFn<T>,
    /// `pool::max_pool_2x2`.
    pub max_pool_2x2: MaxPool2x2Fn<T>,
    /// `pool::max_pool_2x2_backward`.
    pub max_pool_2x2_backward: MaxPool2x2BackwardFn<T>,
}

/// `relu_mask::scale_where_kept_and_positive`: `(isa, mask, y, g, scale, out)`.
type ScaleWhereKeptFn<T> = fn(Isa, &[u64], &[T], &[T], T, &mut [T]);

/// `pool::max_pool_2x2`: `(isa, x, row_stride, ow, y, codes)`.
type MaxPool2x2Fn<T> = fn(Isa, &[T], usize, usize, &mut [T], &mut [u64]);

/// `pool::max_pool_2x2_backward`: `(isa, dy, codes, ow, w, dx)`.
type MaxPool2x2BackwardFn<T> = fn(Isa, &[T], &[u64], usize, usize, &mut [T]);

impl<T: MaskElem> ElemKernels<T> {
    const OF: ElemKernels<T> = ElemKernels {
        scale_by_mask: super::scale_by_mask_elem::<T>,
        relu_scale_by_mask: crate::kernels::relu_mask::relu_scale_by_mask_elem::<T>,
        scale_where_positive: crate::kernels::relu_mask::scale_where_positive_elem::<T>,
        scale_where_kept_and_positive: crate::kernels::relu_mask::scale_where_kept_and_positive_elem::<T>,
        max_pool_2x2: crate::kernels::pool::max_pool_2x2_elem::<T>,
        max_pool_2x2_backward: crate::kernels::pool::max_pool_2x2_backward_elem::<T>,
    };
}

/// `T`'s float kernels, for callers generic over any [`Float`].
///
/// `Float` (dtype.rs) lists `ElementwiseKernels` and `GemmKernels` among its supertraits but
/// not [`MaskElem`], so a `T: Float` caller cannot name `T::Reg` directly; since `Float` is
/// sealed to f32 and f64, this picks the matching table by a safe `Any` downcast of a static
/// (never a cast of the data). Adding `MaskElem` to `Float`'s supertraits would remove it.
#[inline]
pub(crate) fn elem_kernels<T: Float>() -> &'static ElemKernels<T> {
    let f32s: &'static dyn Any = &ElemKernels::<f32>::OF;
    let f64s: &'static dyn Any = &ElemKernels::<f64>::OF;
    match (f32s.downcast_ref(), f64s.downcast_ref()) {
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) => unreachable!("`Float` is sealed to f32 and f64"),
    }
}
