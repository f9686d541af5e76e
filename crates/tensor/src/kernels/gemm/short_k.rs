//! Products with a short `K` (at most `MAX_SHORT_K`, 16) into a row-major `C` whose `B` rows
//! are contiguous: `C = A · B` where every element of `C` is a sum of a few products. That is
//! the input gradient of a layer with few outputs (`dz · W` for a classifier's 10 logits): a
//! `128 x 10 x 1024` product writes 128 K elements for 10 multiply-adds each.
//!
//! The packed loop nest runs one microkernel call of `kc = 10` steps per `14 x 32` tile, whose
//! 14 rows of `C` lie 4 KiB apart and share a set of the L1 cache: the stores dominate. Here a
//! call takes `MB = 4` rows of `C`, copies their `MB · K` elements of `A` once, and sweeps the
//! whole row in tiles of `NV = 4` vectors (64 columns): per step of `K`, `NV` loads of `B` (the
//! short operand stays in cache) and `MB` broadcasts feed `MB · NV` fused multiply-adds into
//! `MB · NV` accumulators, stored once (the columns past the last full tile two vectors at a
//! time, the last under a mask). A row of `C` of at most two vectors takes `MB = 8` rows per
//! call, so that 8 or 16 independent accumulators hide the FMAs' latency. Each element is summed
//! over `p` in order, one FMA at a time, as the packed microkernel does, so the two paths agree
//! to the bit. (Small products, every side at most 64 such as attention's, have a kernel of
//! their own: `small.rs`.)
//!
//! The loads of `B` are most of the loads: when its rows all sit at one offset from a cache
//! line, the columns up to the first line boundary go first as one partial vector, so that
//! every load of the tiles is aligned (a vector load across two lines reads both: without this
//! the `128 x 10 x 1024` product ran at 195 GFLOP/s instead of 232 with `W` at a 16-byte offset,
//! as a weight of 40 KiB from the heap may be).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::{Depth, Direct, Fixed, MAX_SHORT_K};

/// Rows of `C` per call of `block` (its `MB`), the last few of `m` one by one.
const ROWS: usize = 4;

/// Rows of `C` per call when a row is at most two vectors (`n <= 32`): 8 rows of one or two
/// vectors keep 8 or 16 accumulators going, where 4 rows of one vector would wait on the FMAs'
/// latency.
const NARROW_ROWS: usize = 8;

/// Vectors of 16 columns per tile: `MB x NV` accumulators, `NV` loads of `B` per step.
const NV: usize = 4;

/// `MB` rows of `C` (the contract of `DirectFn` with `m = MB`, `k = depth.get() <= CAP`).
#[target_feature(enable = "avx512f,avx512vl")]
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
    // Stores `acc[i]` (`MB` vectors) into `C(i, j ..)` under `mask`.
    let store = |j: usize, mask: __mmask16, acc: [__m512; MB]| {
        for (i, &sum) in acc.iter().enumerate() {
            // SAFETY: the lanes `mask` selects are `C(i, j ..)` with `i < MB` and columns below
            // `n`: writable (contract); masked-off lanes are not touched.
            unsafe {
                let cp = ops.c.add(i * ops.ldc + j);
                let out = if ops.accumulate { _mm512_add_ps(_mm512_maskz_loadu_ps(mask, cp), sum) } else { sum };
                _mm512_mask_storeu_ps(cp, mask, out);
            }
        }
    };
    // One vector of C, columns `j .. j + width` (`width <= 16`, the lanes past it masked off).
    let vector = |j: usize, width: usize| {
        let mask: __mmask16 = if width >= 16 { 0xFFFF } else { ((1u32 << width) - 1) as __mmask16 };
        let mut acc = [_mm512_setzero_ps(); MB];
        for p in 0..k {
            // SAFETY: the lanes `mask` selects are `B(p, j ..)` with columns below `n`:
            // readable (contract); masked-off lanes are not accessed.
            let bv = unsafe { _mm512_maskz_loadu_ps(mask, ops.b.add(p * ops.ldb + j)) };
            for i in 0..MB {
                acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a_at(i, p)), bv, acc[i]);
            }
        }
        store(j, mask, acc);
    };
    // Columns up to B's first line boundary first, so that the tiles' loads are aligned.
    let size = std::mem::size_of::<f32>();
    let lead = if (ops.ldb * size).is_multiple_of(64) { ((64 - ops.b as usize % 64) % 64 / size).min(n) } else { 0 };
    if lead > 0 {
        vector(0, lead);
    }
    let mut j = lead;
    // Tiles of NV full vectors: each loaded vector of B serves MB rows, each broadcast NV
    // vectors, so the loads stay well below the multiply-adds.
    while n - j >= 16 * NV {
        let mut acc = [[_mm512_setzero_ps(); NV]; MB];
        for p in 0..k {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (q, v) in bv.iter_mut().enumerate() {
                // SAFETY: `B(p, j + 16 q ..)`, 16 columns below `n`: readable (contract).
                *v = unsafe { _mm512_loadu_ps(ops.b.add(p * ops.ldb + j + 16 * q)) };
            }
            for i in 0..MB {
                let a = _mm512_set1_ps(a_at(i, p));
                for q in 0..NV {
                    acc[i][q] = _mm512_fmadd_ps(a, bv[q], acc[i][q]);
                }
            }
        }
        for q in 0..NV {
            store(j + 16 * q, 0xFFFF, std::array::from_fn(|i| acc[i][q]));
        }
        j += 16 * NV;
    }
    // The rest two vectors at a time (the second, or the only one, under a mask): with `MB`
    // rows that is `2 MB` independent accumulators, enough to keep both FMA pipes busy, where
    // one vector's `MB` chains of dependent FMAs could not (a row of attention's 28 scores).
    while n - j > 16 {
        let width = (n - j - 16).min(16);
        let mask: __mmask16 = if width >= 16 { 0xFFFF } else { ((1u32 << width) - 1) as __mmask16 };
        let mut acc = [[_mm512_setzero_ps(); 2]; MB];
        for p in 0..k {
            // SAFETY: `B(p, j ..)`, 16 columns below `n`, and the lanes `mask` selects of
            // `B(p, j + 16 ..)`, columns below `n`: readable (contract).
            let bv = unsafe {
                [
                    _mm512_loadu_ps(ops.b.add(p * ops.ldb + j)),
                    _mm512_maskz_loadu_ps(mask, ops.b.add(p * ops.ldb + j + 16)),
                ]
            };
            for i in 0..MB {
                let a = _mm512_set1_ps(a_at(i, p));
                acc[i][0] = _mm512_fmadd_ps(a, bv[0], acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(a, bv[1], acc[i][1]);
            }
        }
        store(j, 0xFFFF, std::array::from_fn(|i| acc[i][0]));
        store(j + 16, mask, std::array::from_fn(|i| acc[i][1]));
        j += 16 + width;
    }
    if j < n {
        vector(j, n - j);
    }
}

/// All `m` rows, `ROWS` per call and the last few one by one.
///
/// # Safety
/// The contract of `DirectFn` with `k = depth.get() <= CAP`.
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn rows<const CAP: usize, D: Depth>(m: usize, n: usize, depth: D, ops: Direct<f32>) {
    let mut i = 0;
    while i < m {
        // SAFETY: rows `i..i + NARROW_ROWS`, `i..i + ROWS` (or `i` alone) are below `m`: inside
        // the contract's ranges.
        unsafe {
            if n <= 32 && m - i >= NARROW_ROWS {
                block::<NARROW_ROWS, CAP, D>(n, depth, ops.at(i, 0));
                i += NARROW_ROWS;
            } else if m - i >= ROWS {
                block::<ROWS, CAP, D>(n, depth, ops.at(i, 0));
                i += ROWS;
            } else {
                block::<1, CAP, D>(n, depth, ops.at(i, 0));
                i += 1;
            }
        }
    }
}

/// The AVX-512 f32 `DirectFn` for a short `K`: four rows per call (16 accumulators, 4 vectors
/// of `B`) for every `K`, each depth compiled on its own.
///
/// # Safety
/// The contract of `DirectFn`.
#[target_feature(enable = "avx512f,avx512vl")]
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
