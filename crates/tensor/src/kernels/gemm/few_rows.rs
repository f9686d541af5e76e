//! Products with few rows of `C` (at most `MAX_FEW_ROWS`, 12) whose `B` rows are contiguous:
//! `C = A · B` with a short `M`. That is the weight gradient of a layer with few outputs
//! (`dzᵀ · h` for a classifier's 10 logits): `10 x 128 x 1024`, where packing `B` (all of `h`)
//! would cost as much as the product, since each packed element is used by a single tile.
//!
//! Here a call takes all `m` rows against 32 columns of `B` read where they are: per step of `K`,
//! two loads of `B`, `m` broadcasts of `A` and `2 m` fused multiply-adds into `2 m` accumulators,
//! stored once (the last columns under a mask). For `K` up to the packed path's `kc` each element
//! is summed over `p` in order, one FMA at a time from zero, as the packed microkernel does, so
//! the two paths agree to the bit.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::{Direct, MAX_FEW_ROWS};

/// The `M` rows of `C` in columns `0..32` of `ops` (fewer under the masks).
///
/// # Safety
/// The contract of `DirectFn` with `m = M`, for the columns the masks select.
#[target_feature(enable = "avx512f")]
unsafe fn panel<const M: usize>(k: usize, ops: Direct<f32>, masks: [__mmask16; 2]) {
    let mut acc = [[_mm512_setzero_ps(); 2]; M];
    for p in 0..k {
        // SAFETY: the lanes the masks select are `B(p, ..)` with columns below `n`: readable
        // (contract); masked-off lanes are not accessed.
        let (b0, b1) = unsafe {
            let row = ops.b.add(p * ops.ldb);
            (_mm512_maskz_loadu_ps(masks[0], row), _mm512_maskz_loadu_ps(masks[1], row.add(16)))
        };
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `A(i, p)` with `i < M`, `p < k` is readable (contract).
            let ai = _mm512_set1_ps(unsafe { *ops.a.add(i * ops.a_rs + p * ops.a_cs) });
            acc[0] = _mm512_fmadd_ps(ai, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(ai, b1, acc[1]);
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, &sum) in row.iter().enumerate() {
            // SAFETY: the lanes `masks[v]` selects are `C(i, 16 v ..)` with `i < M` and columns
            // below `n`: writable (contract); masked-off lanes are not touched.
            unsafe {
                let cp = ops.c.add(i * ops.ldc + 16 * v);
                let out = if ops.accumulate { _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], cp), sum) } else { sum };
                _mm512_mask_storeu_ps(cp, masks[v], out);
            }
        }
    }
}

/// All `n` columns, 32 per call.
///
/// # Safety
/// The contract of `DirectFn` with `m = M`.
#[target_feature(enable = "avx512f")]
unsafe fn columns<const M: usize>(n: usize, k: usize, ops: Direct<f32>) {
    let mask = |cols: usize| -> __mmask16 {
        if cols >= 16 {
            0xFFFF
        } else {
            ((1u32 << cols) - 1) as __mmask16
        }
    };
    for j in (0..n).step_by(32) {
        let left = n - j;
        // SAFETY: columns j.. below n, the rest is the caller's contract.
        unsafe { panel::<M>(k, ops.at(0, j), [mask(left), mask(left.saturating_sub(16))]) };
    }
}

/// The AVX-512 f32 `DirectFn` for few rows.
///
/// # Safety
/// The contract of `DirectFn`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn few_rows_f32(m: usize, n: usize, k: usize, ops: Direct<f32>) {
    macro_rules! by_rows {
        ($($m:literal),* $(,)?) => {
            match m {
                // SAFETY: `m = M` (the contract of `columns`), the rest is the caller's contract.
                $($m => unsafe { columns::<$m>(n, k, ops) },)*
                _ => unreachable!("few_rows_f32 takes 1 to {MAX_FEW_ROWS} rows, got {m}"),
            }
        };
    }
    by_rows!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
}
