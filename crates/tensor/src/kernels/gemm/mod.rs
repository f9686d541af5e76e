//! General matrix multiply, `C = A · B (+ C)`, over strided operands.
//!
//! (Placeholder: a plain triple loop until the blocked, packed GEMM lands.)

use crate::dtype::Float;
use crate::kernels::Isa;

/// The GEMM kernels for one element type (implemented for `f32` and `f64`).
pub trait GemmKernels: Sized {}

impl GemmKernels for f32 {}
impl GemmKernels for f64 {}

/// A read-only strided matrix: element `(i, j)` is `data[offset + i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    /// The storage the matrix lives in.
    pub data: &'a [T],
    /// Index of element (0, 0).
    pub offset: usize,
    /// Distance between rows, in elements.
    pub row_stride: usize,
    /// Distance between columns, in elements.
    pub col_stride: usize,
}

/// `C = A · B`, or `C += A · B` when `accumulate`, for `A` of `m x k`, `B` of `k x n` and `C`
/// row-major `m x n` with row stride `ldc`, on the active ISA and the current rayon pool.
///
/// # Panics
/// If an operand's strides reach outside its slice (a caller bug: tensor ops check shapes first).
pub fn gemm<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    gemm_with(crate::kernels::active_isa(), m, n, k, a, b, c, ldc, accumulate)
}

/// [`gemm`] on an explicit ISA path (which must be supported; tests use this to compare paths).
pub fn gemm_with<T: Float>(
    _isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = T::ZERO;
            for p in 0..k {
                acc += a.data[a.offset + i * a.row_stride + p * a.col_stride]
                    * b.data[b.offset + p * b.row_stride + j * b.col_stride];
            }
            let cij = &mut c[i * ldc + j];
            *cij = if accumulate { *cij + acc } else { acc };
        }
    }
}
