//! Products with a short `K` (at most `MAX_SHORT_K`, 16) into a row-major `C` whose `B` rows
//! are contiguous: `C = A · B` where every element of `C` is a sum of a few products. That is
//! the input gradient of a layer with few outputs (`dz · W` for a classifier's 10 logits): a
//! `128 x 10 x 1024` product writes 128 K elements for 10 multiply-adds each.
//!
//! The packed loop nest runs one microkernel call of `kc = 10` steps per `14 x 32` tile, whose
//! 14 rows of `C` lie 4 KiB apart and share a set of the L1 cache: the stores dominate. Here a
//! call takes `MB` rows of `C` and keeps their `MB · K` elements of `A` broadcast in registers,
//! then sweeps the whole row: for each 16 columns, `K` loads of `B` (the short operand stays in
//! cache) and `MB · K` fused multiply-adds into `MB` accumulators, stored once (the last columns
//! under a mask). Each element is summed over `p` in order, one FMA at a time, as the packed
//! microkernel does, so the two paths agree to the bit.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::{Direct, MAX_SHORT_K};

/// `MB` rows of `C` (the contract of `DirectFn` with `m = MB`, `k = K`).
#[target_feature(enable = "avx512f")]
unsafe fn block<const MB: usize, const K: usize>(n: usize, ops: Direct<f32>) {
    let mut av = [[_mm512_setzero_ps(); K]; MB];
    for (i, row) in av.iter_mut().enumerate() {
        for (p, v) in row.iter_mut().enumerate() {
            // SAFETY: `A(i, p)` with `i < MB`, `p < K` is readable (contract).
            *v = _mm512_set1_ps(unsafe { *ops.a.add(i * ops.a_rs + p * ops.a_cs) });
        }
    }
    let mut j = 0;
    while j < n {
        let mask: __mmask16 = if n - j >= 16 { 0xFFFF } else { ((1u32 << (n - j)) - 1) as __mmask16 };
        let mut acc = [_mm512_setzero_ps(); MB];
        for p in 0..K {
            // SAFETY: the lanes `mask` selects are `B(p, j ..)` with columns below `n`:
            // readable (contract); masked-off lanes are not accessed.
            let bv = unsafe { _mm512_maskz_loadu_ps(mask, ops.b.add(p * ops.ldb + j)) };
            for i in 0..MB {
                acc[i] = _mm512_fmadd_ps(av[i][p], bv, acc[i]);
            }
        }
        for (i, &sum) in acc.iter().enumerate() {
            // SAFETY: the lanes `mask` selects are `C(i, j ..)` with `i < MB` and columns below
            // `n`: writable (contract); masked-off lanes are not touched.
            unsafe {
                let cp = ops.c.add(i * ops.ldc + j);
                let out = if ops.accumulate { _mm512_add_ps(_mm512_maskz_loadu_ps(mask, cp), sum) } else { sum };
                _mm512_mask_storeu_ps(cp, mask, out);
            }
        }
        j += 16;
    }
}

/// All `m` rows, `MB` per call and the last few one by one.
///
/// # Safety
/// The contract of `DirectFn` with `k = K`.
#[target_feature(enable = "avx512f")]
unsafe fn rows<const MB: usize, const K: usize>(m: usize, n: usize, ops: Direct<f32>) {
    let mut i = 0;
    while i < m {
        // SAFETY: rows `i..i + MB` (or `i` alone) are below `m`: inside the contract's ranges.
        unsafe {
            if m - i >= MB {
                block::<MB, K>(n, ops.at(i, 0));
                i += MB;
            } else {
                block::<1, K>(n, ops.at(i, 0));
                i += 1;
            }
        }
    }
}

/// The AVX-512 f32 `DirectFn` for a short `K`: two rows per call up to `K = 12` (24 broadcast
/// registers), one above.
///
/// # Safety
/// The contract of `DirectFn`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn short_k_f32(m: usize, n: usize, k: usize, ops: Direct<f32>) {
    macro_rules! by_depth {
        ($($k:literal => $mb:literal),* $(,)?) => {
            match k {
                // SAFETY: `k = K` (the contract of `rows`), the rest is the caller's contract.
                $($k => unsafe { rows::<$mb, $k>(m, n, ops) },)*
                _ => unreachable!("short_k_f32 takes K from 1 to {MAX_SHORT_K}, got {k}"),
            }
        };
    }
    by_depth!(
        1 => 2, 2 => 2, 3 => 2, 4 => 2, 5 => 2, 6 => 2, 7 => 2, 8 => 2,
        9 => 2, 10 => 2, 11 => 2, 12 => 2, 13 => 1, 14 => 1, 15 => 1, 16 => 1,
    );
}
