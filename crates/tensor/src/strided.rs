//! The one place where multi-dimensional indices turn into storage offsets.
//!
//! [`for_each_run`] walks N operands that share a logical shape (each with its own strides and
//! offset) in row-major order, one innermost run at a time, so that callers write a tight loop over
//! a run instead of recomputing offsets per element. Dims that are contiguous with their inner
//! neighbour in every operand are merged first, so a contiguous tensor is a single run.
//!
//! The walks take each operand's shape, strides and offset as a [`Layout`] keeps them: every
//! storage index they reach fits in `usize` (a layout's constructors check that), so the offset
//! arithmetic here cannot overflow.

use smallvec::SmallVec;

use crate::layout::{Dims, Layout};

/// Merges dims that are contiguous in every operand and drops dims of size 1. Returns the merged
/// shape and, per operand, the merged strides. An empty shape stays empty (a scalar: one element).
fn coalesce<const N: usize>(shape: &[usize], strides: [&[usize]; N]) -> (Dims, [Dims; N]) {
    let mut out_shape: Dims = SmallVec::new();
    let mut out_strides: [Dims; N] = std::array::from_fn(|_| SmallVec::new());
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        let merge = !out_shape.is_empty()
            && (0..N).all(|k| strides[k][d].checked_mul(shape[d]) == out_strides[k].last().copied());
        if merge {
            let last = out_shape.len() - 1;
            out_shape[last] *= shape[d];
            for k in 0..N {
                out_strides[k][last] = strides[k][d];
            }
        } else {
            out_shape.push(shape[d]);
            for k in 0..N {
                out_strides[k].push(strides[k][d]);
            }
        }
    }
    (out_shape, out_strides)
}

/// Calls `f(offsets, len, inner_strides)` for every innermost run of `shape`, in row-major order:
/// operand `k`'s elements in the run are at `offsets[k] + i * inner_strides[k]` for `i < len`.
/// Nothing is called for an empty shape (numel 0); a 0-dim shape is one run of length 1.
pub fn for_each_run<const N: usize>(
    shape: &[usize],
    strides: [&[usize]; N],
    offsets: [usize; N],
    mut f: impl FnMut([usize; N], usize, [usize; N]),
) {
    if shape.contains(&0) {
        return;
    }
    let (shape, strides) = coalesce(shape, strides);
    let nd = shape.len();
    if nd == 0 {
        f(offsets, 1, [0; N]);
        return;
    }
    let len = shape[nd - 1];
    let inner: [usize; N] = std::array::from_fn(|k| strides[k][nd - 1]);
    let mut index: Dims = SmallVec::from_elem(0, nd - 1);
    let mut cur = offsets;
    loop {
        f(cur, len, inner);
        // Odometer increment over the outer dims, updating offsets incrementally.
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            for k in 0..N {
                cur[k] += strides[k][d];
            }
            if index[d] < shape[d] {
                break;
            }
            for k in 0..N {
                cur[k] -= strides[k][d] * shape[d];
            }
            index[d] = 0;
        }
    }
}

/// Like [`for_each_run`], but only over the logical elements `range` (row-major positions in
/// `0..numel`): runs are cut at both ends of the range. Lets an op split one tensor into
/// fixed-size chunks of positions, so parallel work does not depend on the thread count.
pub fn for_each_run_in<const N: usize>(
    shape: &[usize],
    strides: [&[usize]; N],
    offsets: [usize; N],
    range: std::ops::Range<usize>,
    mut f: impl FnMut([usize; N], usize, [usize; N]),
) {
    if shape.contains(&0) || range.start >= range.end {
        return;
    }
    let (shape, strides) = coalesce(shape, strides);
    let nd = shape.len();
    if nd == 0 {
        if range.start == 0 {
            f(offsets, 1, [0; N]);
        }
        return;
    }
    let len = shape[nd - 1];
    let inner: [usize; N] = std::array::from_fn(|k| strides[k][nd - 1]);
    // Unravel the start position into a multi-index over the coalesced dims.
    let mut index: Dims = SmallVec::from_elem(0, nd);
    let mut rest = range.start;
    for d in (0..nd).rev() {
        index[d] = rest % shape[d];
        rest /= shape[d];
    }
    if rest > 0 {
        return; // the range starts past the end
    }
    let mut cur = offsets;
    for d in 0..nd - 1 {
        for k in 0..N {
            cur[k] += index[d] * strides[k][d];
        }
    }
    let mut pos = range.start;
    let mut col = index[nd - 1];
    loop {
        let n = (len - col).min(range.end - pos);
        f(std::array::from_fn(|k| cur[k] + col * inner[k]), n, inner);
        pos += n;
        col = 0;
        if pos >= range.end {
            return;
        }
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            for k in 0..N {
                cur[k] += strides[k][d];
            }
            if index[d] < shape[d] {
                break;
            }
            for k in 0..N {
                cur[k] -= strides[k][d] * shape[d];
            }
            index[d] = 0;
        }
    }
}

/// Copies the elements a layout selects from `data` into a new row-major `Vec`.
pub fn gather_contiguous<T: Copy>(data: &[T], layout: &Layout) -> Vec<T> {
    if layout.is_contiguous() {
        let start = layout.offset();
        return data[start..start + layout.numel()].to_vec();
    }
    let mut out = Vec::with_capacity(layout.numel());
    for_each_run(layout.shape(), [layout.strides()], [layout.offset()], |[o], len, [s]| {
        if s == 1 {
            out.extend_from_slice(&data[o..o + len]);
        } else {
            out.extend((0..len).map(|i| data[o + i * s]));
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_is_one_run() {
        let mut runs = vec![];
        for_each_run(&[2, 3, 4], [&[12, 4, 1]], [5], |o, len, s| runs.push((o[0], len, s[0])));
        assert_eq!(runs, vec![(5, 24, 1)]);
    }

    #[test]
    fn transposed_runs_visit_row_major_order() {
        let l = Layout::contiguous(&[2, 3]).unwrap().transpose(0, 1).unwrap();
        let data = [0, 1, 2, 3, 4, 5];
        assert_eq!(gather_contiguous(&data, &l), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn empty_and_scalar_shapes() {
        let mut calls = 0;
        for_each_run(&[3, 0], [&[0, 1]], [0], |_, _, _| calls += 1);
        assert_eq!(calls, 0);
        for_each_run(&[], [&[]], [7], |o, len, _| {
            assert_eq!((o[0], len), (7, 1));
            calls += 1;
        });
        assert_eq!(calls, 1);
    }

    #[test]
    fn runs_in_a_range_cover_exactly_that_range() {
        let l = Layout::contiguous(&[3, 4, 5]).unwrap().permute(&[2, 0, 1]).unwrap();
        let all = gather_contiguous(&(0..60).collect::<Vec<usize>>(), &l);
        for start in 0..=60 {
            for end in start..=61 {
                let mut got = vec![];
                for_each_run_in(l.shape(), [l.strides()], [l.offset()], start..end, |[o], len, [s]| {
                    got.extend((0..len).map(|i| o + i * s));
                });
                assert_eq!(got, all[start.min(60)..end.min(60)].to_vec(), "{start}..{end}");
            }
        }
        let mut calls = 0;
        for_each_run_in(&[], [&[]], [3], 0..1, |o, len, _| {
            assert_eq!((o[0], len), (3, 1));
            calls += 1;
        });
        for_each_run_in(&[], [&[]], [3], 1..2, |_, _, _| calls += 1);
        assert_eq!(calls, 1);
    }

    #[test]
    fn broadcast_operand_has_stride_zero() {
        let mut seen = vec![];
        for_each_run(&[2, 3], [&[3, 1], &[0, 1]], [0, 0], |o, len, s| seen.push((o, len, s)));
        assert_eq!(seen, vec![([0, 0], 3, [1, 1]), ([3, 0], 3, [1, 1])]);
    }
}
