//! The AVX2 version of `short_k.rs` (see there for the shape and why it beats the packed
//! path): products with `K` at most `MAX_SHORT_K` (16) into a row-major `C` whose `B` rows are
//! contiguous, such as a small convolution's forward (`16 x 784` outputs of 9 taps each) or a
//! classifier's input gradient.
//!
//! A call takes `MB = 4` rows of `C`, copies their `MB · K` elements of `A` once, and sweeps the
//! row in tiles of `NV = 2` vectors (16 columns): per step of `K`, 2 loads of `B` and 4
//! broadcasts feed 8 fused multiply-adds into 8 accumulators (with the operands, 14 of the 16
//! ymm registers), stored once; the last columns one vector at a time, the last vector under a
//! mask (`vmaskmov` touches no masked-off element). Each element is summed over `p` in order,
//! one FMA at a time from zero, as the packed microkernel does, so the two paths agree to the
//! bit.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::small::Scratch;
use super::{Depth, Direct, Fixed, Runtime, MAX_SHORT_K};

/// Rows of `C` per call of `block` (its `MB`), the last few of `m` one by one.
const ROWS: usize = 4;

/// Vectors of 8 columns per tile.
const NV: usize = 2;

/// The lane mask selecting the first `width` (at most 8) of 8 lanes, for `vmaskmov` (also the
/// dot path's, `dot_avx2.rs`).
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
pub(super) unsafe fn first_lanes(width: usize) -> __m256i {
    // SAFETY: the caller guarantees AVX2.
    unsafe { _mm256_cmpgt_epi32(_mm256_set1_epi32(width.min(8) as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)) }
}

/// `MB` rows of `C` (the contract of `DirectFn` with `m = MB`, `k = depth.get() <= CAP`).
///
/// # Safety
/// The contract of `DirectFn` with `m = MB`, `k = depth.get() <= CAP`; the CPU supports AVX2
/// and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn block<const MB: usize, const CAP: usize, D: Depth>(n: usize, depth: D, ops: Direct<f32>) {
    let k = depth.get();
    // The block's elements of A, copied once when the row of C is long (`D::COPY_A`; `CAP` is
    // 0 otherwise); each step broadcasts one of them per row.
    let mut at = [[0.0f32; CAP]; MB];
    if D::COPY_A {
        for (i, row) in at.iter_mut().enumerate() {
            for (p, v) in row[..k].iter_mut().enumerate() {
                // SAFETY: `A(i, p)` with `i < MB`, `p < k` is readable (contract).
                *v = unsafe { *ops.a.add(i * ops.a_rs + p * ops.a_cs) };
            }
        }
    }
    // `A(i, p)`, from the copy or where it is.
    let a_at = |i: usize, p: usize| -> f32 {
        if D::COPY_A {
            at[i][p]
        } else {
            // SAFETY: `A(i, p)` with `i < MB`, `p < k` is readable (contract).
            unsafe { *ops.a.add(i * ops.a_rs + p * ops.a_cs) }
        }
    };
    // Stores `acc[i]` into `C(i, j ..)`, all 8 lanes or those `mask` selects.
    let store = |j: usize, mask: Option<__m256i>, acc: [__m256; MB]| {
        for (i, &sum) in acc.iter().enumerate() {
            // SAFETY: the lanes stored are `C(i, j ..)` with `i < MB` and columns below `n`:
            // writable (contract); a masked store touches no masked-off lane.
            unsafe {
                let cp = ops.c.add(i * ops.ldc + j);
                match mask {
                    None => {
                        let out = if ops.accumulate { _mm256_add_ps(_mm256_loadu_ps(cp), sum) } else { sum };
                        _mm256_storeu_ps(cp, out);
                    }
                    Some(mask) => {
                        let out = if ops.accumulate { _mm256_add_ps(_mm256_maskload_ps(cp, mask), sum) } else { sum };
                        _mm256_maskstore_ps(cp, mask, out);
                    }
                }
            }
        }
    };
    let mut j = 0;
    // Tiles of NV full vectors: each loaded vector of B serves MB rows.
    while n - j >= 8 * NV {
        let mut acc = [[_mm256_setzero_ps(); NV]; MB];
        for p in 0..k {
            let mut bv = [_mm256_setzero_ps(); NV];
            for (q, v) in bv.iter_mut().enumerate() {
                // SAFETY: `B(p, j + 8 q ..)`, 8 columns below `n`: readable (contract).
                *v = unsafe { _mm256_loadu_ps(ops.b.add(p * ops.ldb + j + 8 * q)) };
            }
            for i in 0..MB {
                let a = _mm256_set1_ps(a_at(i, p));
                for q in 0..NV {
                    acc[i][q] = _mm256_fmadd_ps(a, bv[q], acc[i][q]);
                }
            }
        }
        for q in 0..NV {
            store(j + 8 * q, None, std::array::from_fn(|i| acc[i][q]));
        }
        j += 8 * NV;
    }
    // The rest one vector at a time, the last under a mask.
    while j < n {
        let width = (n - j).min(8);
        // SAFETY: AVX2 is enabled on this function.
        let mask = (width < 8).then(|| unsafe { first_lanes(width) });
        let mut acc = [_mm256_setzero_ps(); MB];
        for p in 0..k {
            // SAFETY: the lanes loaded are `B(p, j ..)` with columns below `n`: readable
            // (contract); a masked load touches no masked-off lane.
            let bv = unsafe {
                let bp = ops.b.add(p * ops.ldb + j);
                match mask {
                    None => _mm256_loadu_ps(bp),
                    Some(mask) => _mm256_maskload_ps(bp, mask),
                }
            };
            for i in 0..MB {
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(a_at(i, p)), bv, acc[i]);
            }
        }
        store(j, mask, acc);
        j += width;
    }
}

/// All `m` rows, `ROWS` per call and the last few one by one.
///
/// # Safety
/// The contract of `DirectFn` with `k = depth.get() <= CAP`; the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows<const CAP: usize, D: Depth>(m: usize, n: usize, depth: D, ops: Direct<f32>) {
    let mut i = 0;
    while i < m {
        // SAFETY: rows `i..i + ROWS` (or `i` alone) are below `m`: inside the contract's ranges.
        unsafe {
            if m - i >= ROWS {
                block::<ROWS, CAP, D>(n, depth, ops.at(i, 0));
                i += ROWS;
            } else {
                block::<1, CAP, D>(n, depth, ops.at(i, 0));
                i += 1;
            }
        }
    }
}

/// The AVX2 f32 `DirectFn` for a short `K`: four rows per call (8 accumulators, 2 vectors of
/// `B`) for every `K`, each depth compiled on its own.
///
/// # Safety
/// The contract of `DirectFn`; the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn short_k_f32(m: usize, n: usize, k: usize, ops: Direct<f32>) {
    macro_rules! by_depth {
        ($($k:literal),* $(,)?) => {
            match k {
                // SAFETY: `k = K` (the contract of `rows`), the rest is the caller's contract.
                $($k => unsafe { rows::<$k, Fixed<$k>>(m, n, Fixed, ops) },)*
                _ => unreachable!("short_k_f32 takes K from 1 to {MAX_SHORT_K}, got {k}"),
            }
        };
    }
    by_depth!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
}

/// The AVX2 f32 `DirectFn` for a small product: the short-`K` loop with the depth read at run
/// time and `A` broadcast from where it is (a row of `C` of at most `MAX_SMALL` columns does not
/// repay a copy); a `B` with contiguous columns (`ops.b_cs != 1`) is copied into rows first.
///
/// # Safety
/// The contract of `DirectFn`, with `m, n, k <= MAX_SMALL`; the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn small_f32(m: usize, n: usize, k: usize, ops: Direct<f32>) {
    if ops.b_cs != 1 {
        // Uninitialised: a zeroed array cost a 16 KiB clear per call.
        let mut b_rows = Scratch::new();
        // SAFETY: `B(p, j)` with `p < k`, `j < n` is readable (contract), `k, n <= MAX_SMALL`.
        let b = unsafe { b_rows.copy_rows(ops.b, [k, n], [ops.ldb, ops.b_cs]) };
        let ops = Direct { b, ldb: n, b_cs: 1, ..ops };
        // SAFETY: the caller's contract, with `B` now the `k` rows of `n` just written.
        return unsafe { rows::<0, Runtime>(m, n, Runtime(k), ops) };
    }
    // SAFETY: the caller's contract (a `Runtime` depth reads `A` where it is: any `k` works).
    unsafe { rows::<0, Runtime>(m, n, Runtime(k), ops) }
}
