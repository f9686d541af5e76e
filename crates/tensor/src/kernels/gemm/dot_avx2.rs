//! The AVX2 version of `dot.rs` (see there for the shape and why it beats the packed path):
//! thin products whose operands both run contiguously along `K`, one side of `C` at most
//! `MAX_THIN` (16) long, such as a classifier's `x · Wᵀ` or a small convolution's weight
//! gradient (`dy · colsᵀ`: 16 x 9 outputs over 784 positions).
//!
//! Each call takes `MB` rows of `A` against all `NB` rows of `Bᵀ` and keeps `MB x NB` vector
//! accumulators running along `K` (at most 12 of the 16 ymm registers, with one vector of `A`
//! per row and one of `Bᵀ`), the last partial vector through masked loads (`vmaskmov` touches no
//! masked-off element), and reduces each accumulator to its element at the end. Longer `K` is
//! taken in slices of `SLICE`, a group of rows at a time, the partial sums kept between slices,
//! so that the slice of `Bᵀ` stays in the L1 cache.
//!
//! Each element is summed in 8 interleaved partial sums and then reduced (pairwise: lanes
//! `l` and `l + 4`, then `l` and `l + 2`, then the two left), an order that differs from the
//! packed path's and from AVX-512's 16 partial sums, so results match them to rounding, not to
//! the bit; for a given shape the path and the order are fixed, whatever the thread count.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::short_k_avx2::first_lanes;
use super::{Dot, MAX_THIN};

/// Depth of one slice of `K`: the `NB <= 16` rows of `Bᵀ` over one slice take at most 32 KiB,
/// the L1 data cache of most AVX2 cores.
const SLICE: usize = 512;

/// Rows of `A` per group: the group's partial sums (`GROUP x NB` vectors, at most 24 KiB) are
/// kept between slices of `K`. A multiple of every `MB`.
const GROUP: usize = 24;

/// The sum of the 8 lanes of `v`: lanes `l + 4` onto `l`, then `l + 2`, then `l + 1`.
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn reduce(v: __m256) -> f32 {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps::<0b01>(two, two)))
    }
}

/// `MB` rows of `A` against `NB` rows of `Bᵀ` over `k` steps of `K` (one slice): the vector
/// partial sums start at zero (`first`) or at `partial`, and end in `partial`, or, after the
/// last slice (`last`), reduced into `C`.
///
/// # Safety
/// The contract of `DotFn` with `m = MB`, `n = NB`, over this slice of `K`; the CPU supports
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn block<const MB: usize, const NB: usize>(
    k: usize,
    ops: Dot<f32>,
    partial: &mut [[__m256; NB]; MB],
    first: bool,
    last: bool,
) {
    let Dot { a, lda, b, ldb, c, c_rs, c_cs, accumulate } = ops;
    let mut acc = if first { [[_mm256_setzero_ps(); NB]; MB] } else { *partial };
    // One step of 8 (or, under `mask`, fewer) along K at offset `off`.
    macro_rules! step {
        ($off:expr, $mask:expr) => {{
            let (off, mask): (usize, Option<__m256i>) = ($off, $mask);
            // SAFETY: the lanes loaded are elements `off..off + 8` (or those `mask` selects)
            // of a row of `A` or `Bᵀ`, inside the slice: readable (contract); a masked load
            // touches no masked-off lane.
            let load = |p: *const f32| unsafe {
                match mask {
                    None => _mm256_loadu_ps(p.add(off)),
                    Some(mask) => _mm256_maskload_ps(p.add(off), mask),
                }
            };
            let mut av = [_mm256_setzero_ps(); MB];
            for (i, v) in av.iter_mut().enumerate() {
                *v = load(a.wrapping_add(i * lda));
            }
            for j in 0..NB {
                let bv = load(b.wrapping_add(j * ldb));
                for i in 0..MB {
                    acc[i][j] = _mm256_fmadd_ps(av[i], bv, acc[i][j]);
                }
            }
        }};
    }
    let full = k / 8;
    for q in 0..full {
        step!(q * 8, None);
    }
    let rest = k % 8;
    if rest > 0 {
        // SAFETY: AVX2 is enabled on this function.
        step!(full * 8, Some(unsafe { first_lanes(rest) }));
    }
    if !last {
        *partial = acc;
        return;
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            // SAFETY: AVX2 is enabled on this function; `C(i, j)` with `i < MB`, `j < NB` is
            // writable (contract).
            unsafe {
                let sum = reduce(v);
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
/// The contract of `DotFn` with `n = NB`; the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows<const MB: usize, const NB: usize>(m: usize, k: usize, ops: Dot<f32>) {
    let mut partial = [[_mm256_setzero_ps(); NB]; GROUP];
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

/// The AVX2 f32 `DotFn`: picks the rows per call so that `MB · NB` accumulators fit in the 16
/// ymm registers with the operands (at most 12 of them; 13 to 16 columns, one row per call,
/// spill a few).
///
/// # Safety
/// The contract of `DotFn`; the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
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
        1 => 4, 2 => 4, 3 => 3, 4 => 2, 5 => 2, 6 => 1, 7 => 1, 8 => 1,
        9 => 1, 10 => 1, 11 => 1, 12 => 1, 13 => 1, 14 => 1, 15 => 1, 16 => 1,
    );
}
