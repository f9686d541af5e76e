//! The column sums of a piece of rows in the *rows* order of `ops/reduce.rs`, its whole cascade
//! in one kernel call: the rows are added into a leaf accumulator [`LEAF_ROWS`] at a time, and
//! each full leaf joins a binary counter of levels (`lower + carry` up the levels its count
//! carries through), combined at the end from the lowest level up (`level + acc`). These are the
//! additions `RowCascade` makes, row by row through the elementwise kernels, so the result is the
//! same to the bit; `RowCascade` stays the definition (and the path of the other reductions),
//! and the tests in `ops/reduce.rs` compare the two on every instruction set.
//!
//! Why a kernel of its own: a linear layer's bias gradient sums a `[1792, 64]` gradient over its
//! rows, and `RowCascade` paid per leaf of 8 rows a kernel dispatch, a dispatched `lower +=
//! carry` of 64 elements per level, and the bookkeeping of its `Vec` rows, for 512 additions:
//! 15 µs per call where reading the 458 KB from L2 takes a few (`docs/benchmarks.md`,
//! "Elementwise and reductions"). Here each block of up to 64 columns runs the whole cascade
//! over the piece's rows, its leaf in registers and its levels in a scratch row each: one
//! dispatch per piece. (Taking every block of one leaf before the next leaf, which reads the rows
//! in order, measured no faster, even for rows of 512.)
//!
//! No `unsafe` and no intrinsics: a [`Kernel`] that
//! [`dispatch`](crate::kernels::mask::isa::dispatch) compiles under every instruction set's
//! target features, so the compiler vectorises the element-wise additions of a block; it never
//! reorders them (no fast-math in Rust), which is what keeps the bits.

use crate::dtype::Float;
use crate::kernels::mask::isa::{Kernel, MaskIsa};

/// Rows added directly into one accumulator row (a leaf) before it joins the pairwise tree.
pub(crate) const LEAF_ROWS: usize = 8;

/// The widest block of columns, in elements: four 512-bit registers of f32, so four independent
/// chains of additions hide the adder's latency.
const WIDEST: usize = 64;

/// `out[j] = Σ` over the rows, in the cascade's order, of `x[row + j]`, for `j < out.len()`,
/// where the rows start, in order, at `offset + t * stride` for `t < rows` of each run
/// `(offset, rows, stride)` of `runs` (the runs of one piece; a leaf may span two runs). A sum
/// of no rows is `+0`. The caller guarantees that every row is inside `x` (the slicing below
/// panics otherwise).
pub(crate) struct CascadeRows<'a, T: Float> {
    pub(crate) out: &'a mut [T],
    pub(crate) x: &'a [T],
    pub(crate) runs: &'a [(usize, usize, usize)],
}

impl<T: Float> Kernel for CascadeRows<'_, T> {
    type Output = ();

    #[inline(always)]
    unsafe fn call<S: MaskIsa>(self, _isa: S) {
        let CascadeRows { out, x, runs } = self;
        let rows: usize = runs.iter().map(|&(_, rows, _)| rows).sum();
        // One level per bit of the number of full leaves, the most the counter holds at once.
        let depth = (usize::BITS - (rows / LEAF_ROWS).leading_zeros()) as usize;
        let mut levels = vec![T::ZERO; depth * WIDEST];
        let mut done = 0;
        done += blocks::<T, WIDEST>(x, runs, &mut out[done..], done, &mut levels);
        done += blocks::<T, 16>(x, runs, &mut out[done..], done, &mut levels);
        done += blocks::<T, 4>(x, runs, &mut out[done..], done, &mut levels);
        blocks::<T, 1>(x, runs, &mut out[done..], done, &mut levels);
    }
}

/// The cascade of every whole block of `W` columns of `out` (column `first` of the rows is
/// `out[0]`); returns the number of columns done.
#[inline(always)]
fn blocks<T: Float, const W: usize>(
    x: &[T],
    runs: &[(usize, usize, usize)],
    out: &mut [T],
    first: usize,
    levels: &mut [T],
) -> usize {
    let (whole, _) = out.as_chunks_mut::<W>();
    for (b, block) in whole.iter_mut().enumerate() {
        *block = cascade(x, runs, first + b * W, levels);
    }
    whole.len() * W
}

/// The cascade of the `W` columns from `col` over the rows of `runs`, with `levels` (at least
/// one row of `W` per level the counter reaches) as the counter's scratch.
#[inline(always)]
fn cascade<T: Float, const W: usize>(x: &[T], runs: &[(usize, usize, usize)], col: usize, levels: &mut [T]) -> [T; W] {
    let (levels, _) = levels.as_chunks_mut::<W>();
    let mut leaf = [T::ZERO; W];
    let mut in_leaf = 0;
    // Full leaves so far: level `i` holds a row exactly when bit `i` of `leaves` is set, and the
    // occupied levels are kept lowest last, so `levels[..leaves.count_ones()]` is a stack.
    let mut leaves = 0usize;
    for &(offset, count, stride) in runs {
        let mut t = 0;
        while t < count {
            let n = (LEAF_ROWS - in_leaf).min(count - t);
            for r in t..t + n {
                let row: &[T; W] = x[offset + r * stride + col..][..W].try_into().expect("W columns");
                for (a, &v) in leaf.iter_mut().zip(row) {
                    *a += v;
                }
            }
            t += n;
            in_leaf += n;
            if in_leaf == LEAF_ROWS {
                // The leaf carries through the levels of the counter's trailing ones.
                let mut carry = leaf;
                let mut top = leaves.count_ones() as usize;
                for _ in 0..leaves.trailing_ones() {
                    top -= 1;
                    for (c, &lower) in carry.iter_mut().zip(&levels[top]) {
                        *c = lower + *c;
                    }
                }
                levels[top] = carry;
                leaves += 1;
                leaf = [T::ZERO; W];
                in_leaf = 0;
            }
        }
    }
    // The partial leaf, if any, then every level from the lowest up.
    let mut acc = leaf;
    let mut have = in_leaf > 0;
    for level in levels[..leaves.count_ones() as usize].iter().rev() {
        if have {
            for (a, &l) in acc.iter_mut().zip(level) {
                *a = l + *a;
            }
        } else {
            acc = *level;
            have = true;
        }
    }
    acc
}
