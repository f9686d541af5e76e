//! The fused linear op `x Wᵀ + b`: a Linear layer's forward in one GEMM call, with no
//! intermediate product and no second pass to add the bias.
//!
//! Its backward needs no fused pass of its own: `dx = dy W` and `dW = dyᵀ x` are [`matmul`]s that
//! read `W`, `x` and the transposed `dy` in place, and `db = Σ_rows dy` is a [`sum`] over dim 0,
//! so the backward is made of ops that have their own derivatives.
//!
//! [`matmul`]: Tensor::matmul
//! [`sum`]: Tensor::sum

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::kernels::gemm::{gemm, MatMut};
use crate::layout::numel_or_reason;
use crate::ops::elementwise::CHUNK;
use crate::tensor::Tensor;

// ─── linear ─────────────────────────  y = x Wᵀ + b
//   dx = dy W,  dW = dyᵀ x,  db = Σ_rows dy

impl<T: Float> Tensor<T> {
    /// `self Wᵀ + b` for `self` `[batch, in]`, `w` `[out, in]` and `b` `[out]`: what
    /// `self.matmul(&w.t()?)?.add(b)?` computes, in one pass. The output starts as the broadcast
    /// bias and the GEMM accumulates the product into it; `w` is read in place as its transpose.
    ///
    /// Backward: `dx = dy.matmul(w)`, `dW = dy.t().matmul(x)`, `db = dy.sum(&[0], false)`.
    ///
    /// # Errors
    /// `linear` when an operand is not 2-D (the bias 1-D) or the shapes do not fit together.
    ///
    /// ```
    /// use tapegrad_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2])?;
    /// let w = Tensor::from_vec(vec![1.0f32, 1.0, 0.0, 1.0], &[2, 2])?;
    /// let b = Tensor::from_vec(vec![10.0f32, 20.0], &[2])?;
    /// assert_eq!(x.linear(&w, Some(&b))?.to_vec(), vec![13.0, 22.0]);
    /// assert_eq!(x.linear(&w, None)?.to_vec(), x.matmul(&w.t()?)?.to_vec());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn linear(&self, w: &Tensor<T>, b: Option<&Tensor<T>>) -> Result<Tensor<T>> {
        const OP: &str = "linear";
        let (x, xs, ws) = (self, self.shape(), w.shape());
        if x.ndim() != 2 || w.ndim() != 2 {
            return Err(Error::mismatch(OP, xs, ws, "the input must be [batch, in] and the weight [out, in]"));
        }
        let (m, k, n) = (xs[0], xs[1], ws[0]);
        if ws[1] != k {
            return Err(Error::mismatch(OP, xs, ws, format!("the input has {k} features, the weight {}", ws[1])));
        }
        if let Some(b) = b {
            if b.shape() != [n] {
                return Err(Error::mismatch(OP, ws, b.shape(), format!("the bias must be [{n}]")));
            }
        }
        let numel = numel_or_reason(&[m, n])
            .map_err(|reason| Error::mismatch(OP, xs, ws, format!("the result's shape [{m}, {n}]: {reason}")))?;
        let mut out = match b {
            Some(b) if numel > 0 => {
                let b = b.contiguous();
                let bias = b.as_slice().expect("a contiguous tensor has a slice");
                // Every row starts as the bias, which the product then accumulates into. In
                // pieces on the pool's threads (serial, these copies kept the second thread
                // waiting for 4% of the transformer example's step), each piece doubled by
                // copying what it holds already: a dozen large copies rather than one small copy
                // per row (1,792 of 64 elements for that example's batch, whose per-call cost
                // made these copies 5% of its step).
                crate::ops::elementwise::fill_chunked(numel, CHUNK, |start, piece| {
                    // The piece starts at column `start % n`: its first `n` elements are the bias
                    // rotated to that column, a whole period of the rows' pattern, so copying any
                    // multiple of `n` elements forward keeps the pattern.
                    let (first, phase) = (piece.len().min(n), start % n);
                    let head = first.min(n - phase);
                    piece[..head].copy_from_slice(&bias[phase..phase + head]);
                    piece[head..first].copy_from_slice(&bias[..first - head]);
                    let mut filled = first;
                    while filled < piece.len() {
                        let len = filled.min(piece.len() - filled);
                        piece.copy_within(..len, filled);
                        filled += len;
                    }
                })
            }
            // Every element is written by the product with `accumulate = false`.
            _ => crate::memory::for_overwrite(numel),
        };
        gemm(MatMut::row_major(&mut out, m, n), x.as_mat(), w.as_mat().t(), b.is_some());
        Ok(Tensor::from_contiguous(out, &[m, n]))
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    /// The bias fill, in pieces that start mid-row (130 columns) and across pieces of whole rows,
    /// gives `x · wᵀ + b` to the bit.
    #[test]
    fn the_bias_rows_are_filled_across_pieces() {
        for (m, k, n) in [(3, 5, 7), (300, 17, 130), (1000, 8, 64), (1, 3, 40_000)] {
            let x = Tensor::<f32>::arange(m * k).reshape(&[m, k]).unwrap().mul_scalar(0.01);
            let w = Tensor::<f32>::arange(n * k).reshape(&[n, k]).unwrap().mul_scalar(-0.003);
            let b = Tensor::<f32>::arange(n).mul_scalar(0.5);
            let got = x.linear(&w, Some(&b)).unwrap().to_vec();
            let product = x.matmul(&w.t().unwrap()).unwrap().to_vec();
            let bias = b.to_vec();
            let want: Vec<f32> = product.iter().enumerate().map(|(i, &v)| v + bias[i % n]).collect();
            let bits = |v: &[f32]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "[{m}, {k}] x [{n}, {k}]");
        }
    }
}
