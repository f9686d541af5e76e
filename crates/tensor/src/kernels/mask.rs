//! Bit masks for dropout: turning random words into a bit mask ([`pack_below`]) and applying a
//! mask, `y = x · scale` where the bit is set and `0` where it is not ([`scale_by_mask`]).
//!
//! A mask holds 64 elements a word, element `i` at bit `i % 64` of word `i / 64`. AVX-512 applies
//! it with mask registers (`vmulps` with zero-masking, 16 bits a register); AVX2 expands each byte
//! of the mask into lane masks; the scalar path is the reference every path is tested against
//! (all paths give identical bits: one multiply per kept element, `+0` for a dropped one).
//!
//! [`scale_by_mask_new`] and [`draw_and_scale_new`] build the output vector in one parallel pass
//! over fixed chunks, writing each element once into uninitialised memory (no zero-fill pass).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::dtype::Float;
use crate::kernels::Isa;
#[cfg(target_arch = "x86_64")]
use crate::kernels::{cast_slice, cast_slice_mut};

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
    let t = threshold as u32;
    let full = words.len() / 64;
    #[cfg(target_arch = "x86_64")]
    let done = match isa {
        Isa::Avx512 if isa.is_supported() => {
            // SAFETY: AVX-512F checked just above; `full` words of `out` and `64 · full` of `words`.
            unsafe { x86::pack_below_avx512(&words[..64 * full], t, &mut out[..full]) };
            full
        }
        Isa::Avx2 | Isa::Avx512 if Isa::Avx2.is_supported() => {
            // SAFETY: AVX2 checked just above; lengths as for AVX-512.
            unsafe { x86::pack_below_avx2(&words[..64 * full], t, &mut out[..full]) };
            full
        }
        _ => 0,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = {
        let _ = (isa, full);
        0
    };
    for (o, chunk) in out[done..].iter_mut().zip(words[64 * done..].chunks(64)) {
        let mut acc = 0u64;
        for (b, &w) in chunk.iter().enumerate() {
            acc |= u64::from(w < t) << b;
        }
        *o = acc;
    }
}

/// `out[i] = x[i] · scale` where bit `i` of `mask` is set, `0` where it is not.
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
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = isa == Isa::Avx512 && isa.is_supported();
        let avx2 = matches!(isa, Isa::Avx2 | Isa::Avx512) && Isa::Avx2.is_supported();
        if let (true, Some(x32), Some(out32)) =
            (avx512 || avx2, cast_slice::<T, f32>(x), cast_slice_mut::<_, MaybeUninit<f32>>(out))
        {
            let s = scale.to_f64() as f32;
            if avx512 {
                // SAFETY: AVX-512F checked above; lengths checked by the asserts.
                unsafe { x86::scale_f32_avx512(mask, x32, s, out32) };
            } else {
                // SAFETY: AVX2 checked above; lengths checked by the asserts.
                unsafe { x86::scale_f32_avx2(mask, x32, s, out32) };
            }
            return;
        }
        if let (true, Some(x64), Some(out64)) =
            (avx512 || avx2, cast_slice::<T, f64>(x), cast_slice_mut::<_, MaybeUninit<f64>>(out))
        {
            let s = scale.to_f64();
            if avx512 {
                // SAFETY: AVX-512F checked above; lengths checked by the asserts.
                unsafe { x86::scale_f64_avx512(mask, x64, s, out64) };
            } else {
                // SAFETY: AVX2 checked above; lengths checked by the asserts.
                unsafe { x86::scale_f64_avx2(mask, x64, s, out64) };
            }
            return;
        }
    }
    let _ = isa;
    scale_scalar(mask, x, scale, out);
}

/// The scalar reference of [`scale_by_mask`].
fn scale_scalar<T: Float>(mask: &[u64], x: &[T], scale: T, out: &mut [MaybeUninit<T>]) {
    for ((out, x), &word) in out.chunks_mut(64).zip(x.chunks(64)).zip(mask) {
        for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            o.write(if word >> j & 1 == 1 { v * scale } else { T::ZERO });
        }
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
            spare
                .par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk))
                .zip(mask.par_chunks(words))
                .for_each(|((o, x), m)| scale_by_mask_uninit(isa, m, x, scale, o));
        }
        MaskArg::Draw(mask) => {
            assert_eq!(mask.len(), n.div_ceil(64), "mask length");
            spare.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).zip(mask.par_chunks_mut(words)).enumerate().for_each(
                |(c, ((o, x), m))| {
                    draw(c, m);
                    scale_by_mask_uninit(isa, m, x, scale, o);
                },
            );
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

/// `x · scale` where the mask bit is set, else `0`, as a fresh vector, in parallel over chunks of
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// # Safety
    /// AVX-512F; `out.len() · 64 == words.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_below_avx512(words: &[u32], t: u32, out: &mut [u64]) {
        let tv = _mm512_set1_epi32(t as i32);
        let p = words.as_ptr();
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = 0u64;
            for q in 0..4 {
                // SAFETY: word 64 i + 16 q + 15 < words.len() = 64 · out.len().
                let v = unsafe { _mm512_loadu_si512(p.add(64 * i + 16 * q).cast()) };
                acc |= u64::from(_mm512_cmplt_epu32_mask(v, tv)) << (16 * q);
            }
            *o = acc;
        }
    }

    /// # Safety
    /// AVX2; `out.len() · 64 == words.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pack_below_avx2(words: &[u32], t: u32, out: &mut [u64]) {
        let sign = _mm256_set1_epi32(i32::MIN);
        let tv = _mm256_xor_si256(_mm256_set1_epi32(t as i32), sign);
        let p = words.as_ptr();
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = 0u64;
            for q in 0..8 {
                // SAFETY: word 64 i + 8 q + 7 < words.len() = 64 · out.len().
                let v = unsafe { _mm256_loadu_si256(p.add(64 * i + 8 * q).cast()) };
                // Unsigned w < t as signed (t ^ 2^31) > (w ^ 2^31).
                let lt = _mm256_cmpgt_epi32(tv, _mm256_xor_si256(v, sign));
                acc |= u64::from(_mm256_movemask_ps(_mm256_castsi256_ps(lt)) as u8) << (8 * q);
            }
            *o = acc;
        }
    }

    /// # Safety
    /// AVX-512F; `out.len() == x.len()`, `mask.len() ≥ x.len().div_ceil(64)`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scale_f32_avx512(mask: &[u64], x: &[f32], scale: f32, out: &mut [MaybeUninit<f32>]) {
        let s = _mm512_set1_ps(scale);
        let n = x.len();
        let (xp, op) = (x.as_ptr(), out.as_mut_ptr().cast::<f32>());
        let mut i = 0;
        while i + 16 <= n {
            let k = (mask[i / 64] >> (i % 64)) as u16;
            // SAFETY: i + 16 ≤ n, and `x`, `out` hold n elements.
            unsafe { _mm512_storeu_ps(op.add(i), _mm512_maskz_mul_ps(k, _mm512_loadu_ps(xp.add(i)), s)) };
            i += 16;
        }
        if i < n {
            let tail: u16 = (1u16 << (n - i)) - 1;
            let k = (mask[i / 64] >> (i % 64)) as u16 & tail;
            // SAFETY: the masked load and store touch only lanes below n - i, inside the slices.
            unsafe {
                let v = _mm512_maskz_loadu_ps(tail, xp.add(i));
                _mm512_mask_storeu_ps(op.add(i), tail, _mm512_maskz_mul_ps(k, v, s));
            }
        }
    }

    /// # Safety
    /// AVX-512F; `out.len() == x.len()`, `mask.len() ≥ x.len().div_ceil(64)`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scale_f64_avx512(mask: &[u64], x: &[f64], scale: f64, out: &mut [MaybeUninit<f64>]) {
        let s = _mm512_set1_pd(scale);
        let n = x.len();
        let (xp, op) = (x.as_ptr(), out.as_mut_ptr().cast::<f64>());
        let mut i = 0;
        while i + 8 <= n {
            let k = (mask[i / 64] >> (i % 64)) as u8;
            // SAFETY: i + 8 ≤ n, and `x`, `out` hold n elements.
            unsafe { _mm512_storeu_pd(op.add(i), _mm512_maskz_mul_pd(k, _mm512_loadu_pd(xp.add(i)), s)) };
            i += 8;
        }
        if i < n {
            let tail: u8 = (1u8 << (n - i)) - 1;
            let k = (mask[i / 64] >> (i % 64)) as u8 & tail;
            // SAFETY: the masked load and store touch only lanes below n - i, inside the slices.
            unsafe {
                let v = _mm512_maskz_loadu_pd(tail, xp.add(i));
                _mm512_mask_storeu_pd(op.add(i), tail, _mm512_maskz_mul_pd(k, v, s));
            }
        }
    }

    /// # Safety
    /// AVX2; `out.len() == x.len()`, `mask.len() ≥ x.len().div_ceil(64)`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scale_f32_avx2(mask: &[u64], x: &[f32], scale: f32, out: &mut [MaybeUninit<f32>]) {
        let s = _mm256_set1_ps(scale);
        let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let n = x.len();
        let (xp, op) = (x.as_ptr(), out.as_mut_ptr().cast::<f32>());
        let mut i = 0;
        while i + 8 <= n {
            let byte = (mask[i / 64] >> (i % 64)) as u8;
            let m = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(i32::from(byte)), bits), bits);
            // SAFETY: i + 8 ≤ n, and `x`, `out` hold n elements.
            unsafe {
                let y = _mm256_mul_ps(_mm256_loadu_ps(xp.add(i)), s);
                _mm256_storeu_ps(op.add(i), _mm256_and_ps(y, _mm256_castsi256_ps(m)));
            }
            i += 8;
        }
        super::scale_scalar_from(mask, x, scale, out, i);
    }

    /// # Safety
    /// AVX2; `out.len() == x.len()`, `mask.len() ≥ x.len().div_ceil(64)`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scale_f64_avx2(mask: &[u64], x: &[f64], scale: f64, out: &mut [MaybeUninit<f64>]) {
        let s = _mm256_set1_pd(scale);
        let bits = _mm256_setr_epi64x(1, 2, 4, 8);
        let n = x.len();
        let (xp, op) = (x.as_ptr(), out.as_mut_ptr().cast::<f64>());
        let mut i = 0;
        while i + 4 <= n {
            let nib = (mask[i / 64] >> (i % 64)) as i64 & 0xf;
            let m = _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_set1_epi64x(nib), bits), bits);
            // SAFETY: i + 4 ≤ n, and `x`, `out` hold n elements.
            unsafe {
                let y = _mm256_mul_pd(_mm256_loadu_pd(xp.add(i)), s);
                _mm256_storeu_pd(op.add(i), _mm256_and_pd(y, _mm256_castsi256_pd(m)));
            }
            i += 4;
        }
        super::scale_scalar_from(mask, x, scale, out, i);
    }
}

/// The scalar loop from element `start` on (the SIMD paths' tails).
#[cfg(target_arch = "x86_64")]
fn scale_scalar_from<T: Float>(mask: &[u64], x: &[T], scale: T, out: &mut [MaybeUninit<T>], start: usize) {
    for i in start..x.len() {
        out[i].write(if mask[i / 64] >> (i % 64) & 1 == 1 { x[i] * scale } else { T::ZERO });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Generator;

    fn words(n: usize, seed: u64) -> Vec<u32> {
        let mut s = crate::Stream::new(seed, 0);
        (0..n).map(|_| s.next_u32()).collect()
    }

    #[test]
    fn pack_below_paths_match_scalar() {
        for n in [0usize, 1, 63, 64, 65, 1000, 4096] {
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

    fn scale_matches<T: Float>() {
        for n in [0usize, 1, 7, 15, 16, 17, 63, 64, 65, 1000, 1031] {
            let mut x = vec![T::ZERO; n];
            Generator::new(1).fill_normal(&mut x);
            if n > 3 {
                x[3] = T::NAN;
            }
            let w = words(n, 7);
            let mut mask = vec![0u64; n.div_ceil(64)];
            pack_below(Isa::Scalar, &w, 1 << 31, &mut mask);
            let scale = T::from_f64(1.0 / 0.7);
            let mut want = vec![T::ONE; n];
            // SAFETY-free reference: the scalar path through the safe wrapper.
            scale_by_mask(Isa::Scalar, &mask, &x, scale, &mut want);
            for i in 0..n {
                let kept = mask[i / 64] >> (i % 64) & 1 == 1;
                let e = if kept { x[i] * scale } else { T::ZERO };
                assert_eq!(want[i].to_f64().to_bits(), e.to_f64().to_bits());
            }
            for isa in crate::kernels::available_isas() {
                let mut got = vec![T::ONE; n];
                scale_by_mask(isa, &mask, &x, scale, &mut got);
                let bits = |v: &[T]| v.iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{isa:?} n {n}");
            }
            let fresh = scale_by_mask_new(&x, &mask, scale, 128);
            assert_eq!(
                fresh.iter().map(|v| v.to_f64().to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_f64().to_bits()).collect::<Vec<_>>()
            );
            let mut drawn = vec![0u64; n.div_ceil(64)];
            let fused = draw_and_scale_new(&x, &mut drawn, scale, 128, |c, m| {
                m.copy_from_slice(&mask[2 * c..2 * c + m.len()]);
            });
            assert_eq!(drawn, mask);
            assert_eq!(
                fused.iter().map(|v| v.to_f64().to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_f64().to_bits()).collect::<Vec<_>>()
            );
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
