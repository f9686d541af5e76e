//! Thin products whose operands both run contiguously along `K`: `C = A · B` with `A` row-major
//! and `B` stored as the transpose of a row-major matrix, one side of `C` at most `MAX_THIN`
//! (16) long. That is a linear layer's forward (`x · Wᵀ`) with few outputs, such as a classifier's
//! 10 logits: every element of `C` is the dot product of a row of `A` and a row of `Bᵀ`.
//!
//! The packed loop nest would waste most of each tile there (10 columns of a 32-wide tile) and
//! pack all of the long operand for a few flops per element. Here each call takes `MB` rows of
//! `A` against all `NB <= 16` rows of `Bᵀ`, keeps `MB x NB` vector accumulators running along
//! `K` (the last partial vector through masked loads, which touch nothing past the end), and
//! reduces each accumulator to its element at the end. Longer `K` is taken in slices of
//! `SLICE`, a group of rows at a time, the vector partial sums kept between slices, so that the
//! slice of `Bᵀ` stays in the L1 cache. The long operand is read where it is; the driver
//! (`gemm::thin`) only copies the few rows of the thin one, each starting on a cache line (a
//! vector load across two lines costs two) at a stride that is not a multiple of 4 KiB (so that
//! they do not all fall in one set of the L1 cache).
//!
//! The accumulators fill 20 to 24 of the 32 zmm registers; the functions enable AVX-512VL too,
//! without which LLVM zeroes and keeps them in the 16 registers a VEX encoding can name and
//! spills the rest (measured: the `128 x 1024 x 10` product went from 40% of the FMA peak to
//! 83% with VL, the aligned copy of `Bᵀ` and the slices together).
//!
//! Each element is summed in 16 interleaved partial sums and then reduced, an order that differs
//! from the packed path's, so results match it to rounding, not to the bit; for a given shape
//! the path and the order are fixed, whatever the thread count (row blocks are split between
//! threads, never the sum).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::{Dot, MAX_THIN};

/// Depth of one slice of `K`: the `NB <= 16` rows of `Bᵀ` over one slice take at most 64 KiB
/// (40 KiB for a classifier's 10 outputs), which stay in a 48 KiB L1 cache while a group of rows
/// of `A` runs past them. Measured on the `128 x 1024 x 10` product (Zen 5, 48 KiB L1): slices
/// of 256 and 512 ran at 68% and 76% of the FMA peak against 82% for 1024, since each slice
/// costs a reload and a store of every partial sum.
const SLICE: usize = 1024;

/// Rows of `A` per group: the group's partial sums (`GROUP x NB` vectors, at most 24 KiB) are
/// kept between slices of `K`. A multiple of every `MB`.
const GROUP: usize = 24;

/// `MB` rows of `A` against `NB` rows of `Bᵀ` over `k` steps of `K` (one slice): the vector
/// partial sums start at zero (`first`) or at `partial`, and end in `partial`, or, after the
/// last slice (`last`), reduced into `C`.
///
/// # Safety
/// The contract of `DotFn` with `m = MB`, `n = NB`, over this slice of `K`.
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn block<const MB: usize, const NB: usize>(
    k: usize,
    ops: Dot<f32>,
    partial: &mut [[__m512; NB]; MB],
    first: bool,
    last: bool,
) {
    let Dot { a, lda, b, ldb, c, c_rs, c_cs, accumulate } = ops;
    let mut acc = if first { [[_mm512_setzero_ps(); NB]; MB] } else { *partial };
    // One step of 16 (or, under `mask`, fewer) along K at offset `off`.
    macro_rules! step {
        ($off:expr, $mask:expr) => {{
            let (off, mask): (usize, __mmask16) = ($off, $mask);
            let mut av = [_mm512_setzero_ps(); MB];
            for (i, v) in av.iter_mut().enumerate() {
                // SAFETY: the lanes `mask` selects are elements `off..off + 16` (or fewer) of
                // row `i` of `A`, all inside the slice: readable (contract). Masked-off lanes
                // are not accessed.
                *v = unsafe { _mm512_maskz_loadu_ps(mask, a.add(i * lda + off)) };
            }
            for j in 0..NB {
                // SAFETY: as above, for row `j` of `Bᵀ`.
                let bv = unsafe { _mm512_maskz_loadu_ps(mask, b.add(j * ldb + off)) };
                for i in 0..MB {
                    acc[i][j] = _mm512_fmadd_ps(av[i], bv, acc[i][j]);
                }
            }
        }};
    }
    let full = k / 16;
    for q in 0..full {
        step!(q * 16, 0xFFFF);
    }
    let rest = k % 16;
    if rest > 0 {
        step!(full * 16, ((1u32 << rest) - 1) as __mmask16);
    }
    if !last {
        *partial = acc;
        return;
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let sum = _mm512_reduce_add_ps(v);
            // SAFETY: `C(i, j)` with `i < MB`, `j < NB` is writable (contract).
            unsafe {
                let cp = c.add(i * c_rs + j * c_cs);
                *cp = if accumulate { *cp + sum } else { sum };
            }
        }
    }
}

/// All `m` rows against `NB` rows of `Bᵀ`: groups of `GROUP` rows, each swept slice by slice
/// along `K` in calls of `MB` rows (the group's last few rows one by one).
///
/// # Safety
/// The contract of `DotFn` with `n = NB`.
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn rows<const MB: usize, const NB: usize>(m: usize, k: usize, ops: Dot<f32>) {
    let mut partial = [[_mm512_setzero_ps(); NB]; GROUP];
    for g in (0..m).step_by(GROUP) {
        let group = GROUP.min(m - g);
        for s in (0..k).step_by(SLICE) {
            let depth = SLICE.min(k - s);
            let (first, last) = (s == 0, s + depth == k);
            let mut i = 0;
            while i < group {
                let mb = if group - i >= MB { MB } else { 1 };
                let ops = ops.at(g + i, s);
                let rows = &mut partial[i..i + mb];
                // SAFETY: rows `g + i ..` (MB of them, or one) are below `m` and the slice
                // `s..s + depth` is inside `0..k`: inside the contract's ranges; `rows` holds
                // `mb` sets of partial sums.
                unsafe {
                    if mb == MB {
                        block::<MB, NB>(depth, ops, rows.try_into().expect("MB rows"), first, last);
                    } else {
                        block::<1, NB>(depth, ops, rows.try_into().expect("one row"), first, last);
                    }
                }
                i += mb;
            }
        }
    }
}

/// The AVX-512 f32 `DotFn`: picks the rows per call so that `MB · NB` accumulators fit in
/// the 32 zmm registers with the operands (at most 24 of them).
///
/// # Safety
/// The contract of `DotFn`.
#[target_feature(enable = "avx512f,avx512vl")]
pub(super) unsafe fn dot_f32(m: usize, n: usize, k: usize, ops: Dot<f32>) {
    macro_rules! by_width {
        ($($nb:literal => $mb:literal),* $(,)?) => {
            match n {
                // SAFETY: `n = NB` (the contract of `rows`), the rest is the caller's contract.
                $($nb => unsafe { rows::<$mb, $nb>(m, k, ops) },)*
                _ => unreachable!("dot_f32 takes 1 to {MAX_THIN} columns, got {n}"),
            }
        };
    }
    by_width!(
        1 => 4, 2 => 4, 3 => 4, 4 => 4, 5 => 4, 6 => 3, 7 => 3, 8 => 3,
        9 => 2, 10 => 2, 11 => 2, 12 => 2, 13 => 1, 14 => 1, 15 => 1, 16 => 1,
    );
}
