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
use crate::kernels::gemm::{gemm, gemm_init, Init, MatMut};
use crate::layout::numel_or_reason;
use crate::tensor::Tensor;

// ─── linear ─────────────────────────  y = x Wᵀ + b
//   dx = dy W,  dW = dyᵀ x,  db = Σ_rows dy

impl<T: Float> Tensor<T> {
    /// `self Wᵀ + b` for `self` `[batch, in]`, `w` `[out, in]` and `b` `[out]`: what
    /// `self.matmul(&w.t()?)?.add(b)?` computes, in one pass. Each element is the bias plus the
    /// product, added in that order: the GEMM writes the bias into each tile of the output just
    /// before it adds the tile's product (no pass of its own over the output); `w` is read in
    /// place as its transpose.
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
        // Every element is written by the product: from the bias, which each tile of `C` starts
        // as just before the product is added into it, or from zero.
        let mut out = crate::memory::for_overwrite(numel);
        let c = MatMut::row_major(&mut out, m, n);
        match b {
            Some(b) => {
                let b = b.contiguous();
                let bias = b.as_slice().expect("a contiguous tensor has a slice");
                gemm_init(c, x.as_mat(), w.as_mat().t(), Init::EachRow(bias));
            }
            None => gemm(c, x.as_mat(), w.as_mat().t(), false),
        }
        Ok(Tensor::from_contiguous(out, &[m, n]))
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    /// The bias as the start of each tile (the packed path: few and many rows, a ragged tile, one
    /// very wide row) or of the whole output (the unpacked paths, which fill it first: dot
    /// products for 10 outputs, the small-product path) gives `x · wᵀ + b` to the bit.
    #[test]
    fn the_bias_start_gives_the_product_plus_the_bias_to_the_bit() {
        for (m, k, n) in [(3, 5, 7), (300, 17, 130), (1000, 8, 64), (1, 3, 40_000), (50, 20, 10), (30, 40, 50)] {
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
