//! Bit masks for dropout: turning random words into a bit mask ([`pack_below`]) and applying a
//! mask, `y = x · (bit ? scale : 0)` ([`scale_by_mask`]), as PyTorch's `x * noise`: a dropped
//! element is `x · 0` (NaN for a NaN or infinite `x`, `-0` for a negative one), a kept one
//! `x · scale`. With `p = 1` no bit is set and `scale = +∞`, and every element is `x · 0`.
//!
//! A mask holds 64 elements a word, element `i` at bit `i % 64` of word `i / 64`. The loops are
//! written once over a [`MaskIsa`](isa::MaskIsa) (`isa.rs`): the scalar reference (`scalar.rs`)
//! and one file per instruction set (`avx2.rs`, `avx512.rs`, `neon.rs`) that say how a register
//! turns mask bits into the factor `scale` or `0` (AVX-512 with its mask registers, AVX2 and
//! NEON by expanding the bits into lane masks). All paths give identical bits: the one multiply
//! `x · factor` per element. `relu_mask` and `chacha` share the instruction sets.
//!
//! [`scale_by_mask_new`] and [`draw_and_scale_new`] build the output vector in one parallel pass
//! over fixed chunks, writing each element once into uninitialised memory (no zero-fill pass).

use std::mem::MaybeUninit;

use crate::dtype::Float;
use crate::kernels::Isa;

pub(crate) mod isa;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

use isa::{dispatch, elem_kernels, Kernel, MaskElem, MaskIsa, MaskLanes};

/// Sets bit `i` of `out` when `u64::from(words[i]) < threshold`; bits past `words.len()` are 0.
/// `out` must hold `words.len().div_ceil(64)` words.
pub fn pack_below(isa: Isa, words: &[u32], threshold: u64, out: &mut [u64]) {
    assert_eq!(out.len(), words.len().div_ceil(64), "pack_below: mask length");
    if threshold > u64::from(u32::MAX) {
        for (o, chunk) in out.iter_mut().zip(words.chunks(64)) {
            *o = if chunk.len() == 64 { u64::MAX } else { (1u64 << chunk.len()) - 1 };
        }
        return;
    }
    dispatch(isa, PackBelow { words, t: threshold as u32, out });
}

/// [`pack_below`] for a threshold below 2^32.
struct PackBelow<'a> {
    words: &'a [u32],
    t: u32,
    out: &'a mut [u64],
}

impl Kernel for PackBelow<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn call<S: MaskIsa>(self, isa: S) {
        let mut groups = self.words.chunks_exact(64);
        for (o, group) in self.out.iter_mut().zip(&mut groups) {
            // SAFETY: the caller guarantees `S`'s instruction set.
            *o = unsafe { isa.pack64(group.try_into().expect("64 words"), self.t) };
        }
        let tail = groups.remainder();
        if let Some(o) = self.out.last_mut().filter(|_| !tail.is_empty()) {
            let mut group = [u32::MAX; 64];
            group[..tail.len()].copy_from_slice(tail);
            // The padding words are `u32::MAX`, never below `t`, so their bits stay 0.
            // SAFETY: as above.
            *o = unsafe { isa.pack64(&group, self.t) };
        }
    }
}

/// `out[i] = x[i] · (bit i of mask ? scale : 0)`: a dropped element is `x[i] · 0`. (The tensor
/// ops over whole tensors use the allocating [`scale_by_mask_new`]; this one scales a block in
/// place of a fused op's scratch, and serves the tests and benchmarks.)
///
/// # Panics
/// When `out` and `x` differ in length or `mask` has fewer than `x.len().div_ceil(64)` words.
pub fn scale_by_mask<T: Float>(isa: Isa, mask: &[u64], x: &[T], scale: T, out: &mut [T]) {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and every value written through the view is an
    // initialised `T`, so `out` stays initialised.
    let out = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<MaybeUninit<T>>(), out.len()) };
    scale_by_mask_uninit(isa, mask, x, scale, out);
}

/// [`scale_by_mask`] into uninitialised memory: writes every element of `out`.
fn scale_by_mask_uninit<T: Float>(isa: Isa, mask: &[u64], x: &[T], scale: T, out: &mut [MaybeUninit<T>]) {
    assert_eq!(out.len(), x.len(), "scale_by_mask: output length");
    assert!(mask.len() >= x.len().div_ceil(64), "scale_by_mask: mask too short");
    (elem_kernels::<T>().scale_by_mask)(isa, mask, x, scale, out);
}

/// [`scale_by_mask_uninit`] for a [`MaskElem`], lengths checked.
pub(crate) fn scale_by_mask_elem<T: MaskElem>(isa: Isa, mask: &[u64], x: &[T], scale: T, out: &mut [MaybeUninit<T>]) {
    dispatch(isa, ScaleByMask { mask, x, scale, out });
}

struct ScaleByMask<'a, T> {
    mask: &'a [u64],
    x: &'a [T],
    scale: T,
    out: &'a mut [MaybeUninit<T>],
}

impl<T: MaskElem> Kernel for ScaleByMask<'_, T> {
    type Output = ();

    #[inline(always)]
    unsafe fn call<S: MaskIsa>(self, _isa: S) {
        // SAFETY: the caller guarantees `S`'s instruction set; the lengths were asserted by
        // `scale_by_mask_uninit`.
        unsafe {
            let i = scale_loop::<T::Reg<S>>(self.mask, self.x, self.scale, self.out, 0);
            scale_loop::<T>(self.mask, self.x, self.scale, self.out, i);
        }
    }
}

/// `out[i] = x[i] · scale.select_bits(bit i)` for whole registers from `start`; returns where
/// it stopped (the scalar register, one lane, finishes the tail).
///
/// # Safety
/// The CPU supports `V`'s instruction set; `out.len() == x.len()`, `mask` covers `x`, and
/// `start` is a multiple of `V::LANES`.
#[inline(always)]
unsafe fn scale_loop<V: MaskLanes>(
    mask: &[u64],
    x: &[V::Elem],
    scale: V::Elem,
    out: &mut [MaybeUninit<V::Elem>],
    start: usize,
) -> usize {
    let (n, w) = (x.len(), V::LANES);
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr().cast::<V::Elem>());
    // SAFETY: the caller guarantees the instruction set; `i + w <= n`, inside `x` and `out`.
    unsafe {
        let s = V::splat(scale);
        let mut i = start;
        while i + w <= n {
            let factor = s.select_bits(mask[i / 64] >> (i % 64));
            V::load(xp.add(i)).mul(factor).store(op.add(i));
            i += w;
        }
        i
    }
}

/// A fresh vector of `n` elements, each written exactly once by `fill`, which is called in
/// parallel on the chunks `out[c · chunk ..][..chunk]` and must write every element of its chunk
/// through [`scale_by_mask_uninit`].
fn new_by_chunks<T: Float>(
    x: &[T],
    mask: MaskArg<'_>,
    scale: T,
    chunk: usize,
    draw: &(dyn Fn(usize, &mut [u64]) + Sync),
) -> Vec<T> {
    assert!(chunk > 0 && chunk.is_multiple_of(64), "chunk must be a positive multiple of 64");
    let n = x.len();
    let isa = crate::kernels::active_isa();
    let mut out: Vec<T> = crate::memory::with_capacity(n);
    advise_huge_pages(&mut out);
    let spare = &mut out.spare_capacity_mut()[..n];
    let words = chunk / 64;
    match mask {
        MaskArg::Ref(mask) => {
            assert!(mask.len() >= n.div_ceil(64), "mask too short");
            let pieces = spare.chunks_mut(chunk).zip(x.chunks(chunk)).zip(mask.chunks(words));
            crate::parallel::for_each(pieces, n, |((o, x), m)| scale_by_mask_uninit(isa, m, x, scale, o));
        }
        MaskArg::Draw(mask) => {
            assert_eq!(mask.len(), n.div_ceil(64), "mask length");
            let pieces = spare.chunks_mut(chunk).zip(x.chunks(chunk)).zip(mask.chunks_mut(words)).enumerate();
            crate::parallel::for_each(pieces, n, |(c, ((o, x), m))| {
                draw(c, m);
                scale_by_mask_uninit(isa, m, x, scale, o);
            });
        }
    }
    // SAFETY: the chunks cover `spare[..n]` exactly, and `scale_by_mask_uninit` writes every
    // element of its output chunk (it asserts the chunk lengths match), so `out[..n]` is
    // initialised; the capacity is at least `n`.
    unsafe { out.set_len(n) };
    out
}

/// Outputs at least this large ask for transparent huge pages.
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// Asks the kernel to back the capacity of a large fresh vector with 2 MiB pages
/// (`madvise(MADV_HUGEPAGE)`, Linux only): when the allocator hands out fresh memory, a 16 MiB
/// buffer otherwise takes 4096 page faults on first touch, which cost more than the whole
/// dropout pass. Only a hint: errors are ignored.
fn advise_huge_pages<T>(v: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        const MADV_HUGEPAGE: i32 = 14;
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        let bytes = v.capacity() * std::mem::size_of::<T>();
        if bytes < HUGE_PAGE_MIN_BYTES {
            return;
        }
        let start = v.as_mut_ptr() as usize;
        let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if hi > lo {
            // SAFETY: `[lo, hi)` lies inside the vector's own allocation; `MADV_HUGEPAGE` changes
            // only how the kernel backs those pages, never their contents or validity.
            unsafe { madvise(lo as *mut std::ffi::c_void, hi - lo, MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

enum MaskArg<'a> {
    Ref(&'a [u64]),
    Draw(&'a mut [u64]),
}

/// `x · (bit ? scale : 0)` (see [`scale_by_mask`]) as a fresh vector, in parallel over chunks of
/// `chunk` elements (a positive multiple of 64). Each element is written once: no zero fill.
pub fn scale_by_mask_new<T: Float>(x: &[T], mask: &[u64], scale: T, chunk: usize) -> Vec<T> {
    new_by_chunks(x, MaskArg::Ref(mask), scale, chunk, &|_, _| {})
}

/// [`scale_by_mask_new`] that first fills the mask: for chunk `c` (elements `c · chunk ..`),
/// `draw(c, words)` writes that chunk's mask words, then the chunk is scaled by them, in the same
/// parallel pass. `mask` must hold `x.len().div_ceil(64)` words.
pub fn draw_and_scale_new<T: Float>(
    x: &[T],
    mask: &mut [u64],
    scale: T,
    chunk: usize,
    draw: impl Fn(usize, &mut [u64]) + Sync,
) -> Vec<T> {
    new_by_chunks(x, MaskArg::Draw(mask), scale, chunk, &draw)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Generator;

    fn words(n: usize, seed: u64) -> Vec<u32> {
        let mut s = crate::Stream::new(seed, 0);
        (0..n).map(|_| s.next_u32()).collect()
    }

    #[test]
    fn pack_below_paths_match_scalar() {
        let long: &[usize] = if cfg!(miri) { &[] } else { &[1000, 4096] };
        for n in LENGTHS.into_iter().chain(long.iter().copied()) {
            let w = words(n, n as u64);
            for t in [0u64, 1, 1 << 31, 3_000_000_000, u64::from(u32::MAX), 1 << 32] {
                let mut want = vec![0u64; n.div_ceil(64)];
                pack_below(Isa::Scalar, &w, t, &mut want);
                for (i, &v) in w.iter().enumerate() {
                    assert_eq!(want[i / 64] >> (i % 64) & 1 == 1, u64::from(v) < t);
                }
                for isa in crate::kernels::available_isas() {
                    let mut got = vec![!0u64; n.div_ceil(64)];
                    pack_below(isa, &w, t, &mut got);
                    assert_eq!(got, want, "{isa:?} n {n} t {t}");
                }
            }
        }
    }

    /// Lengths where tails hide: 0, 1, every register width ± 1, a word ± 1, a few thousand
    /// (two words and a tail under Miri, which interprets each element about a thousand times
    /// slower; Miri runs only the scalar path, whose tails these still reach).
    pub(crate) const LENGTHS: [usize; 16] =
        [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, if cfg!(miri) { 131 } else { 3001 }];

    /// Normal values with NaN (both signs), ±∞, ±0 and negatives planted at kept and dropped
    /// positions of [`test_mask`] (its first word keeps elements 0..16 and 48..64).
    pub(crate) fn special_values<T: Float>(n: usize, seed: u64) -> Vec<T> {
        let mut x = vec![T::ZERO; n];
        Generator::new(seed).fill_normal(&mut x);
        let specials = [T::NAN, -T::NAN, T::INFINITY, T::NEG_INFINITY, T::ZERO, -T::ZERO, -T::from_f64(2.5)];
        for (k, &v) in specials.iter().enumerate() {
            for i in [1 + k, 17 + k, 40 + k, 50 + k, 100 + k] {
                if i < n {
                    x[i] = v;
                }
            }
        }
        x
    }

    /// A mask whose first word keeps elements 0..16 and 48..64; the others scrambled.
    pub(crate) fn test_mask(n: usize) -> Vec<u64> {
        (0..n.div_ceil(64) as u64)
            .map(|w| if w == 0 { 0xFFFF_0000_0000_FFFF } else { 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(w) })
            .collect()
    }

    pub(crate) fn bits<T: Float>(v: &[T]) -> Vec<u64> {
        v.iter().map(|&x| bits_of(x)).collect()
    }

    /// The bits of `x` (as f64), for exact comparisons. Under Miri every NaN counts as one: an
    /// arithmetic result from a NaN may have any NaN's sign and payload (Rust's float
    /// semantics), and Miri picks one at random where the CPU is consistent; the SIMD paths,
    /// compared bit for bit with the scalar one on real CPUs, do not run under Miri.
    pub(crate) fn bits_of<T: Float>(x: T) -> u64 {
        if cfg!(miri) && x.is_nan() {
            f64::NAN.to_bits()
        } else {
            x.to_f64().to_bits()
        }
    }

    fn scale_matches<T: Float>() {
        for n in LENGTHS {
            let x = special_values::<T>(n, n as u64);
            let drawn = test_mask(n);
            let none = vec![0u64; n.div_ceil(64)];
            // p = 0.3 with a drawn mask; p = 1 (no bit set, scale +∞); p = 0 (every bit set).
            let all = vec![u64::MAX; n.div_ceil(64)];
            for (mask, scale) in [(&drawn, T::from_f64(1.0 / 0.7)), (&none, T::INFINITY), (&all, T::ONE)] {
                let mut want = vec![T::ONE; n];
                scale_by_mask(Isa::Scalar, mask, &x, scale, &mut want);
                for i in 0..n {
                    let kept = mask[i / 64] >> (i % 64) & 1 == 1;
                    let e = x[i] * if kept { scale } else { T::ZERO };
                    assert_eq!(bits_of(want[i]), bits_of(e), "element {i} of {n}");
                    if !kept && x[i].to_f64().is_finite() {
                        assert_eq!(want[i].to_f64(), 0.0, "dropped element {i} of {n}");
                    }
                }
                for isa in crate::kernels::available_isas() {
                    let mut got = vec![T::ONE; n];
                    scale_by_mask(isa, mask, &x, scale, &mut got);
                    assert_eq!(bits(&got), bits(&want), "{isa:?} n {n} scale {scale}");
                }
                let fresh = scale_by_mask_new(&x, mask, scale, 128);
                assert_eq!(bits(&fresh), bits(&want));
                let mut copied = vec![0u64; n.div_ceil(64)];
                let fused = draw_and_scale_new(&x, &mut copied, scale, 128, |c, m| {
                    m.copy_from_slice(&mask[2 * c..2 * c + m.len()]);
                });
                assert_eq!(&copied, mask);
                assert_eq!(bits(&fused), bits(&want));
            }
        }
    }

    #[test]
    fn dropped_elements_are_x_times_zero() {
        let x = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, -3.0, 2.0];
        for isa in crate::kernels::available_isas() {
            let mut y = [1.0f32; 6];
            scale_by_mask(isa, &[0], &x, f32::INFINITY, &mut y);
            assert!(y[..3].iter().all(|v| v.is_nan()), "{isa:?}: NaN and ±inf give NaN");
            assert_eq!(bits(&y[3..]), bits(&[-0.0f32, -0.0, 0.0]), "{isa:?}");
        }
    }

    #[test]
    fn scale_paths_match_scalar_f32() {
        scale_matches::<f32>();
    }

    #[test]
    fn scale_paths_match_scalar_f64() {
        scale_matches::<f64>();
    }
}
