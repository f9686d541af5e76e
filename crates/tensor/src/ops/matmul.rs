//! Matrix products with PyTorch's `matmul` semantics, on the packed GEMM of
//! the crate's private `kernels::gemm`.
//!
//! Operands are handed to the GEMM as strided views of their storage (transposed, narrowed and
//! expanded inputs included): the GEMM's packing reads them in place, nothing is copied first.

use smallvec::SmallVec;

use crate::dtype::Float;
use crate::error::{Error, Result, ShapeFmt};
use crate::kernels::gemm::{gemm, MatMut, MatRef};
use crate::layout::{broadcast_dims, numel_or_reason, Dims};
use crate::tensor::Tensor;

/// A batch whose single product is smaller than this (in flops) is spread over threads one
/// product per task instead of letting each product split itself.
pub(crate) const SMALL_PRODUCT_FLOPS: usize = 1 << 20;

// ─── matmul ─────────────────────────────────────────────────────────────────────
// z = x @ y, with the batch dims broadcast

impl<T: Float> Tensor<T> {
    /// The matrix product `self @ rhs`, as `torch.matmul`:
    ///
    /// - 1-D · 1-D: the dot product `Σ_p x[p] y[p]`, a 0-dim tensor;
    /// - 2-D · 2-D: `[m, k] @ [k, n] -> [m, n]`, `z[i, j] = Σ_p x[i, p] y[p, j]`;
    /// - 1-D · n-D: `x` is treated as `[1, k]` and the added dim is removed from the result;
    /// - n-D · 1-D: `y` is treated as `[k, 1]` and the added dim is removed;
    /// - batched: `[..., m, k] @ [..., k, n] -> [..., m, n]`, the batch dims (all but the last
    ///   two) broadcast against each other as in elementwise ops.
    ///
    /// Backward: `dx = dz @ y^T`, `dy = x^T @ dz` (each summed over broadcast batch dims).
    /// Strided operands (transposes, narrows, expands) are read in place. The result does not
    /// depend on the number of rayon threads.
    ///
    /// # Errors
    /// `matmul` names both shapes when an operand is 0-dim, when the inner dimensions differ,
    /// or when the batch dims do not broadcast.
    ///
    /// ```
    /// use tapegrad_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// let y = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2])?;
    /// assert_eq!(x.matmul(&y)?.to_vec(), vec![4.0, 5.0, 10.0, 11.0]);
    /// assert_eq!(x.matmul(&x.t()?)?.shape(), &[2, 2]);
    /// assert!(x.matmul(&x).is_err());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn matmul(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        let (ls, rs) = (self.shape(), rhs.shape());
        if ls.is_empty() || rs.is_empty() {
            return Err(Error::mismatch("matmul", ls, rs, "both operands need at least one dim"));
        }
        // Promote 1-D operands to matrices, remembering which dim to drop from the result.
        let lhs = if ls.len() == 1 { self.unsqueeze(0)? } else { self.clone() };
        let rhs_m = if rs.len() == 1 { rhs.unsqueeze(1)? } else { rhs.clone() };
        let (lnd, rnd) = (lhs.ndim(), rhs_m.ndim());
        let (m, k) = (lhs.shape()[lnd - 2], lhs.shape()[lnd - 1]);
        let (k2, n) = (rhs_m.shape()[rnd - 2], rhs_m.shape()[rnd - 1]);
        if k != k2 {
            return Err(Error::mismatch("matmul", ls, rs, format!("inner dimensions {k} and {k2} differ")));
        }
        let (lb, rb) = (&lhs.shape()[..lnd - 2], &rhs_m.shape()[..rnd - 2]);
        // Too large a batch is caught with the whole result's shape below.
        let batch = broadcast_dims(lb, rb)
            .map_err(|_| Error::mismatch("matmul", ls, rs, "the batch dims cannot be broadcast"))?;

        let mut full: Dims = batch.clone();
        full.extend_from_slice(&[m, n]);
        let numel = numel_or_reason(&full).map_err(|reason| {
            Error::mismatch("matmul", ls, rs, format!("the result's shape {}: {reason}", ShapeFmt(&full)))
        })?;
        // Every element is written by a product with `accumulate = false`.
        let mut out = crate::memory::for_overwrite(numel);
        if numel > 0 {
            let lhs = lhs.expand(&[batch.as_slice(), &[m, k]].concat())?;
            let rhs_m = rhs_m.expand(&[batch.as_slice(), &[k, n]].concat())?;
            batched_gemm(&lhs, &rhs_m, &batch, m, n, k, &mut out);
        }

        let mut shape: Dims = batch;
        if ls.len() > 1 {
            shape.push(m);
        }
        if rs.len() > 1 {
            shape.push(n);
        }
        Ok(Tensor::from_contiguous(out, &shape))
    }

    /// This 2-D tensor as a strided GEMM operand, read in place: element `(i, j)` of the
    /// [`MatRef`] is `self[[i, j]]`, whatever the tensor's strides (transposed, narrowed,
    /// expanded). The one Tensor -> `MatRef` conversion.
    ///
    /// # Panics
    /// When the tensor is not 2-D (a caller bug: every caller checks the shapes first).
    pub(crate) fn as_mat(&self) -> MatRef<'_, T> {
        let (dims, strides) = (self.shape(), self.strides());
        assert!(dims.len() == 2, "Tensor::as_mat: a {dims:?} tensor is not 2-D");
        MatRef::new(self.storage().as_slice(), self.offset(), [dims[0], dims[1]], [strides[0], strides[1]])
    }
}

/// `out[b] = lhs[b] @ rhs[b]` for every index `b` of `batch`, with both operands already
/// expanded to `batch + [m, k]` and `batch + [k, n]`, and `out` row-major `batch + [m, n]`.
fn batched_gemm<T: Float>(
    lhs: &Tensor<T>,
    rhs: &Tensor<T>,
    batch: &[usize],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [T],
) {
    let nb = batch.len();
    let (la, ra) = (lhs.storage().as_slice(), rhs.storage().as_slice());
    let (lst, rst) = (lhs.strides(), rhs.strides());
    let (l_rs, l_cs, r_rs, r_cs) = (lst[nb], lst[nb + 1], rst[nb], rst[nb + 1]);

    // `rhs` shared by the whole batch and `lhs` rows stacked evenly: one tall product
    // `[batch * m, k] @ [k, n]` (a Linear layer on a 3-D input), which blocks and threads better.
    if rst[..nb].iter().all(|&s| s == 0) {
        if let Some(row_stride) = merged_stride(&lhs.shape()[..=nb], &lst[..=nb]) {
            let rows = out.len() / n;
            let a = MatRef::new(la, lhs.offset(), [rows, k], [row_stride, l_cs]);
            let b = MatRef::new(ra, rhs.offset(), [k, n], [r_rs, r_cs]);
            gemm(MatMut::row_major(out, rows, n), a, b, false);
            return;
        }
    }

    let one = |(index, c): (usize, &mut [T])| {
        let (lo, ro) = (batch_offset(lhs, index, batch), batch_offset(rhs, index, batch));
        let a = MatRef::new(la, lo, [m, k], [l_rs, l_cs]);
        let b = MatRef::new(ra, ro, [k, n], [r_rs, r_cs]);
        gemm(MatMut::row_major(c, m, n), a, b, false);
    };
    if m.saturating_mul(n).saturating_mul(k).saturating_mul(2) < SMALL_PRODUCT_FLOPS && out.len() > m * n {
        let work = out.len().saturating_mul(k);
        crate::parallel::for_each(out.chunks_mut(m * n).enumerate(), work, one);
    } else {
        out.chunks_mut(m * n).enumerate().for_each(one);
    }
}

/// The storage offset of batch element `index` (row-major over the leading dims `batch`) in
/// `t`, whose first `batch.len()` strides step those dims.
pub(crate) fn batch_offset<T: Float>(t: &Tensor<T>, mut index: usize, batch: &[usize]) -> usize {
    let mut offset = t.offset();
    for d in (0..batch.len()).rev() {
        offset += (index % batch[d]) * t.strides()[d];
        index /= batch[d];
    }
    offset
}

/// The single stride that walks dims `shape` in row-major order, when they are evenly spaced
/// (`strides[d] == strides[d + 1] * shape[d + 1]`, ignoring dims of size 1); `None` otherwise.
fn merged_stride(shape: &[usize], strides: &[usize]) -> Option<usize> {
    let dims: SmallVec<[(usize, usize); 6]> =
        shape.iter().zip(strides).filter(|(&d, _)| d != 1).map(|(&d, &s)| (d, s)).collect();
    let Some(&(_, inner)) = dims.last() else {
        return Some(0);
    };
    dims.windows(2).all(|w| w[0].1 == w[1].1 * w[1].0).then_some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_stride_accepts_only_evenly_spaced_dims() {
        assert_eq!(merged_stride(&[2, 3], &[12, 4]), Some(4));
        assert_eq!(merged_stride(&[2, 1, 3], &[12, 99, 4]), Some(4));
        assert_eq!(merged_stride(&[2, 3], &[0, 4]), None);
        assert_eq!(merged_stride(&[1, 1], &[5, 7]), Some(0));
        assert_eq!(merged_stride(&[3], &[7]), Some(7));
    }
}
