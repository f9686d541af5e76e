//! Products with few rows of `C` (at most `MAX_FEW_ROWS`, 12) whose `B` rows are contiguous:
//! `C = A · B` with a short `M`. That is the weight gradient of a layer with few outputs
//! (`dzᵀ · h` for a classifier's 10 logits): `10 x 128 x 1024`, where packing `B` (all of `h`)
//! would cost as much as the product, since each packed element is used by a single tile.
//!
//! Here all `m` rows run against 32 columns of `B` at a time, read where they are, with the small
//! path's tiles (`small::row_block`): per step of `K`, two loads of `B`, `m` broadcasts of `A` and
//! `2 m` fused multiply-adds into `2 m` accumulators, stored once (the last columns under a
//! mask). For `K` up to the packed path's `kc` each element
//! is summed over `p` in order, one FMA at a time from zero, as the packed microkernel does, so
//! the two paths agree to the bit.

#![cfg(target_arch = "x86_64")]

use super::small::{row_block, ACols, ARows, AStrided};
use super::Direct;

/// The AVX-512 f32 `DirectFn` for few rows.
///
/// # Safety
/// The contract of `DirectFn`, with `m <= MAX_FEW_ROWS` and `B`'s rows contiguous (`b_cs == 1`).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn few_rows_f32(m: usize, n: usize, k: usize, ops: Direct<f32>) {
    debug_assert!(m <= super::MAX_FEW_ROWS && ops.b_cs == 1);
    // SAFETY: at most `MAX_FEW_ROWS < small::MR` rows, `B` row-major, and `A` read with the unit
    // stride each order assumes (or none): the caller's contract.
    unsafe {
        if ops.a_cs == 1 {
            row_block::<ARows>(m, n, k, ops);
        } else if ops.a_rs == 1 {
            row_block::<ACols>(m, n, k, ops);
        } else {
            row_block::<AStrided>(m, n, k, ops);
        }
    }
}
