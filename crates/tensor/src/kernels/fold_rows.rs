//! Summing a few rows into an accumulator row, element by element in row order, as one kernel:
//! conv backward's groups' partial sums (`ops/conv`), added in group order.
//!
//! No `unsafe` and no intrinsics: a [`Kernel`] that [`dispatch`](crate::kernels::mask::isa::dispatch)
//! compiles under every instruction set's target features, so the compiler keeps a block of the
//! accumulator in vector registers across the rows. Each element is `((acc + r0) + r1) + ...`, the
//! additions the row-by-row loop makes, so the result is the same to the bit on every path
//! (tested below against the scalar build and the row-by-row definition).

use crate::dtype::Float;
use crate::kernels::mask::isa::{Kernel, MaskIsa};

/// Elements of the accumulator kept in registers at a time (a 512-bit register of f32).
const BLOCK: usize = 16;

/// `acc[i] = (((acc[i] + x[offset + i]) + x[offset + stride + i]) + ...)` over `rows` rows, as a
/// kernel for `dispatch`. The caller guarantees that every `offset + r * stride + i` with
/// `r < rows`, `i < acc.len()` is inside `x` (the slicing below panics otherwise).
pub(crate) struct FoldRows<'a, T: Float> {
    pub(crate) acc: &'a mut [T],
    pub(crate) x: &'a [T],
    pub(crate) offset: usize,
    pub(crate) stride: usize,
    pub(crate) rows: usize,
}

impl<T: Float> Kernel for FoldRows<'_, T> {
    type Output = ();

    #[inline(always)]
    unsafe fn call<S: MaskIsa>(self, _isa: S) {
        let FoldRows { acc, x, offset, stride, rows } = self;
        let len = acc.len();
        let mut blocks = acc.chunks_exact_mut(BLOCK);
        for (b, out) in blocks.by_ref().enumerate() {
            let mut lanes: [T; BLOCK] = out.try_into().expect("a block");
            for r in 0..rows {
                let row: &[T; BLOCK] = x[offset + r * stride + b * BLOCK..][..BLOCK].try_into().expect("a block");
                for (a, &v) in lanes.iter_mut().zip(row) {
                    *a += v;
                }
            }
            out.copy_from_slice(&lanes);
        }
        let start = len - blocks.into_remainder().len();
        for (i, a) in acc[start..].iter_mut().enumerate() {
            for r in 0..rows {
                *a += x[offset + r * stride + start + i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::mask::isa::dispatch;
    use crate::kernels::{available_isas, Isa};

    /// Every path gives the row-by-row sums' bits, for widths around the block and strides
    /// wider than the rows, with values whose sums round differently in another order.
    #[test]
    fn every_path_adds_the_rows_in_order() {
        for len in [1usize, 5, 15, 16, 17, 64, 100] {
            for rows in [0usize, 1, 3, 8] {
                let stride = len + 3;
                let x: Vec<f32> = (0..rows * stride + 2)
                    .map(|i| if i % 7 == 0 { 1e8 } else { ((i * 37 % 23) as f32 - 11.0) * 0.37 })
                    .collect();
                let start: Vec<f32> = (0..len).map(|i| if i % 2 == 0 { -0.0 } else { 1.5 }).collect();
                let mut want = start.clone();
                for r in 0..rows {
                    for (i, a) in want.iter_mut().enumerate() {
                        *a += x[2 + r * stride + i];
                    }
                }
                for isa in [Isa::Scalar].into_iter().chain(available_isas()) {
                    let mut acc = start.clone();
                    dispatch(isa, FoldRows { acc: &mut acc, x: &x, offset: 2, stride, rows });
                    let bits = |v: &[f32]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&acc), bits(&want), "{isa:?}, {rows} rows of {len}");
                }
            }
        }
    }
}
