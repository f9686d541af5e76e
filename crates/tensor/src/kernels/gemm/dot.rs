//! Thin products whose operands both run contiguously along `K`: `C = A · B` with `A` row-major
//! and `B` stored as the transpose of a row-major matrix, one side of `C` at most `MAX_THIN`
//! (16) long. That is a linear layer's forward (`x · Wᵀ`) with few outputs, such as a classifier's
//! 10 logits: every element of `C` is the dot product of a row of `A` and a row of `Bᵀ`.
//!
//! The packed loop nest would waste most of each tile there (10 columns of a 32-wide tile) and
//! pack all of the long operand for a few flops per element. Here each call takes `MB` rows of
//! `A` against all `NB <= 16` rows of `Bᵀ`, keeps `MB x NB` vector accumulators running along
//! `K` (the last partial vector through masked loads, which touch nothing past the end), and
//! reduces each accumulator to its element at the end. The long operand is read where it is;
//! the driver (`gemm::thin`) only copies the few rows of the thin one, at a stride that is not a
//! multiple of 4 KiB so that they do not all fall in one set of the L1 cache.
//!
//! Each element is summed in 16 interleaved partial sums and then reduced, an order that differs
//! from the packed path's, so results match it to rounding, not to the bit; for a given shape
//! the path and the order are fixed, whatever the thread count (row blocks are split between
//! threads, never the sum).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::MAX_THIN;

/// `MB` rows of `A` against `NB` rows of `Bᵀ` (the contract of `DotFn` with `m = MB`,
/// `n = NB`).
#[target_feature(enable = "avx512f")]
unsafe fn block<const MB: usize, const NB: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    (c_rs, c_cs): (usize, usize),
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); NB]; MB];
    // One step of 16 (or, under `mask`, fewer) along K at offset `off`.
    macro_rules! step {
        ($off:expr, $mask:expr) => {{
            let (off, mask): (usize, __mmask16) = ($off, $mask);
            let mut av = [_mm512_setzero_ps(); MB];
            for (i, v) in av.iter_mut().enumerate() {
                // SAFETY: the lanes `mask` selects are elements `off..off + 16` (or fewer) of
                // row `i` of `A`, all with `p < k`: readable (contract). Masked-off lanes are
                // not accessed.
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

/// All `m` rows against `NB` rows of `Bᵀ`, `MB` rows per call and the last few one by one.
///
/// # Safety
/// The contract of `DotFn` with `n = NB`.
#[target_feature(enable = "avx512f")]
unsafe fn rows<const MB: usize, const NB: usize>(
    m: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    (c_rs, c_cs): (usize, usize),
    accumulate: bool,
) {
    let mut i = 0;
    while i < m {
        // SAFETY: rows `i..i + MB` (or `i` alone) are below `m`: inside the contract's ranges.
        unsafe {
            let (a, c) = (a.add(i * lda), c.add(i * c_rs));
            if m - i >= MB {
                block::<MB, NB>(k, a, lda, b, ldb, c, (c_rs, c_cs), accumulate);
                i += MB;
            } else {
                block::<1, NB>(k, a, lda, b, ldb, c, (c_rs, c_cs), accumulate);
                i += 1;
            }
        }
    }
}

/// The AVX-512 f32 `DotFn`: picks the rows per call so that `MB · NB` accumulators fit in
/// the 32 zmm registers with the operands (at most 24 of them).
///
/// # Safety
/// The contract of `DotFn`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dot_f32(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    cs: (usize, usize),
    accumulate: bool,
) {
    macro_rules! by_width {
        ($($nb:literal => $mb:literal),* $(,)?) => {
            match n {
                // SAFETY: `n = NB` (the contract of `rows`), the rest is the caller's contract.
                $($nb => unsafe { rows::<$mb, $nb>(m, k, a, lda, b, ldb, c, cs, accumulate) },)*
                _ => unreachable!("dot_f32 takes 1 to {MAX_THIN} columns, got {n}"),
            }
        };
    }
    by_width!(
        1 => 4, 2 => 4, 3 => 4, 4 => 4, 5 => 4, 6 => 3, 7 => 3, 8 => 3,
        9 => 2, 10 => 2, 11 => 2, 12 => 2, 13 => 1, 14 => 1, 15 => 1, 16 => 1,
    );
}
