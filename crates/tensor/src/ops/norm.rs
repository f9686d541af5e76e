//! Layer normalisation as one op: a pass over each row for its statistics and one for the
//! output, and a backward that reads each row of `x` and `dy` once more.
//!
//! Rows are the input's trailing `normalized` elements (the product of `normalized_shape`). Each
//! row's mean and variance are accumulated in `f64` whatever `T` is, so an `f32` row of large
//! offset keeps its precision; the weight and bias gradients are summed over rows in fixed
//! blocks, then over blocks in order, so they are the same bits on any thread count.

use rayon::prelude::*;

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::elementwise::CHUNK;
use crate::parallel::min_len;
use crate::tensor::Tensor;

/// What [`Tensor::layer_norm`] returns: the output and, per row, what backward needs.
#[derive(Clone, Debug)]
pub struct LayerNormOutput<T: Float> {
    /// `(x - mean) / √(var + eps) · weight + bias`, the input's shape.
    pub y: Tensor<T>,
    /// Each row's mean, shape `[rows]`.
    pub mean: Tensor<T>,
    /// Each row's `1 / √(var + eps)` (biased variance, as PyTorch), shape `[rows]`.
    pub rstd: Tensor<T>,
}

/// The gradients [`Tensor::layer_norm_backward`] returns.
#[derive(Clone, Debug)]
pub struct LayerNormGrads<T: Float> {
    /// The input's gradient.
    pub dx: Tensor<T>,
    /// The weight's gradient (`Σ_rows dy · x̂`), when a weight was given.
    pub dweight: Option<Tensor<T>>,
    /// The bias's gradient (`Σ_rows dy`), when asked for.
    pub dbias: Option<Tensor<T>>,
}

/// Checks that `shape` ends with `normalized_shape` and that the affine parameters match it;
/// returns `(rows, n)`.
fn rows_and_width<T: Float>(
    op: &'static str,
    shape: &[usize],
    normalized_shape: &[usize],
    weight: Option<&Tensor<T>>,
    bias: Option<&Tensor<T>>,
) -> Result<(usize, usize)> {
    let k = normalized_shape.len();
    if k == 0 || shape.len() < k || shape[shape.len() - k..] != *normalized_shape {
        return Err(Error::mismatch(op, shape, normalized_shape, "the input must end with the normalized shape"));
    }
    for (what, t) in [("weight", weight), ("bias", bias)] {
        if let Some(t) = t {
            if t.shape() != normalized_shape {
                return Err(Error::mismatch(
                    op,
                    t.shape(),
                    normalized_shape,
                    format!("the {what} must have the normalized shape"),
                ));
            }
        }
    }
    let n: usize = normalized_shape.iter().product();
    let rows = shape.iter().product::<usize>().checked_div(n).unwrap_or(0);
    Ok((rows, n))
}

/// Rows per parallel piece: about one chunk of elements.
fn rows_per_piece(n: usize) -> usize {
    (CHUNK / n.max(1)).max(1)
}

impl<T: Float> Tensor<T> {
    /// Layer normalisation over the trailing dims `normalized_shape`, as
    /// `torch.nn.functional.layer_norm`: each row `x` (the last `prod(normalized_shape)`
    /// elements) becomes `(x - mean) / √(var + eps) · weight + bias`, with the biased variance.
    /// Returns the output with each row's mean and `1 / √(var + eps)`, which
    /// [`Tensor::layer_norm_backward`] takes.
    ///
    /// # Errors
    /// `layer_norm` naming the shapes when the input does not end with `normalized_shape` (or
    /// it is empty), or the weight or bias does not have that shape.
    ///
    /// ```
    /// use tapegrad_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let out = x.layer_norm(&[2], None, None, 0.0)?;
    /// assert_eq!(out.y.to_vec(), vec![-1.0, 1.0, -1.0, 1.0]);
    /// assert_eq!(out.mean.to_vec(), vec![1.5, 3.5]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor<T>>,
        bias: Option<&Tensor<T>>,
        eps: f64,
    ) -> Result<LayerNormOutput<T>> {
        let (rows, n) = rows_and_width("layer_norm", self.shape(), normalized_shape, weight, bias)?;
        let x = self.contiguous();
        let data = x.as_slice().expect("a contiguous tensor has a slice");
        let (w, b) = (weight.map(Tensor::contiguous), bias.map(Tensor::contiguous));
        let (w, b) = (w.as_ref().and_then(Tensor::as_slice), b.as_ref().and_then(Tensor::as_slice));
        let mut y = crate::memory::for_overwrite(rows * n);
        let (mut mean, mut rstd) = (vec![T::ZERO; rows], vec![T::ZERO; rows]);
        let per = rows_per_piece(n);
        if n > 0 {
            y.par_chunks_mut(per * n)
                .zip(mean.par_chunks_mut(per).zip(rstd.par_chunks_mut(per)))
                .zip(data.par_chunks(per * n))
                .with_min_len(min_len(rows * n))
                .for_each(|((y, (mean, rstd)), x)| {
                    for (((y, x), m), r) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(mean).zip(rstd) {
                        let mu = x.iter().map(|v| v.to_f64()).sum::<f64>() / n as f64;
                        let var = x.iter().map(|v| (v.to_f64() - mu).powi(2)).sum::<f64>() / n as f64;
                        let inv = 1.0 / (var + eps).sqrt();
                        let (mu_t, inv_t) = (T::from_f64(mu), T::from_f64(inv));
                        match (w, b) {
                            (Some(w), Some(b)) => {
                                for (((o, &v), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                                    *o = (v - mu_t) * inv_t * w + b;
                                }
                            }
                            (Some(w), None) => {
                                for ((o, &v), &w) in y.iter_mut().zip(x).zip(w) {
                                    *o = (v - mu_t) * inv_t * w;
                                }
                            }
                            (None, Some(b)) => {
                                for ((o, &v), &b) in y.iter_mut().zip(x).zip(b) {
                                    *o = (v - mu_t) * inv_t + b;
                                }
                            }
                            (None, None) => {
                                for (o, &v) in y.iter_mut().zip(x) {
                                    *o = (v - mu_t) * inv_t;
                                }
                            }
                        }
                        (*m, *r) = (mu_t, inv_t);
                    }
                });
        }
        Ok(LayerNormOutput {
            y: Tensor::from_contiguous(y, self.shape()),
            mean: Tensor::from_contiguous(mean, &[rows]),
            rstd: Tensor::from_contiguous(rstd, &[rows]),
        })
    }

    /// The gradients of [`Tensor::layer_norm`] given the upstream gradient `dy` (the input's
    /// shape) and the forward's `mean` and `rstd`; `self` is the forward's input. With
    /// `x̂ = (x - mean) · rstd` and `g = dy · weight` (or `dy`):
    /// `dx = rstd · (g - mean(g) - x̂ · mean(g · x̂))` per row, `dweight = Σ_rows dy · x̂`,
    /// `dbias = Σ_rows dy` (computed when `bias` is true).
    ///
    /// # Errors
    /// `layer_norm_backward` naming the shapes when `dy`, `mean`, `rstd` or the weight do not
    /// fit the input.
    pub fn layer_norm_backward(
        &self,
        dy: &Tensor<T>,
        normalized_shape: &[usize],
        mean: &Tensor<T>,
        rstd: &Tensor<T>,
        weight: Option<&Tensor<T>>,
        bias: bool,
    ) -> Result<LayerNormGrads<T>> {
        const OP: &str = "layer_norm_backward";
        let (rows, n) = rows_and_width(OP, self.shape(), normalized_shape, weight, None)?;
        if dy.shape() != self.shape() {
            return Err(Error::mismatch(
                OP,
                self.shape(),
                dy.shape(),
                "the upstream gradient must have the input's shape",
            ));
        }
        for t in [mean, rstd] {
            if t.shape() != [rows] {
                return Err(Error::mismatch(OP, self.shape(), t.shape(), format!("mean and rstd must be [{rows}]")));
            }
        }
        let (x, dy, mean, rstd) = (self.contiguous(), dy.contiguous(), mean.contiguous(), rstd.contiguous());
        let slice = |t: &Tensor<T>| -> Vec<T> { t.to_vec() };
        let (xs, dys) = (x.as_slice().expect("contiguous"), dy.as_slice().expect("contiguous"));
        let (mean, rstd) = (slice(&mean), slice(&rstd));
        let w = weight.map(Tensor::contiguous);
        let w = w.as_ref().and_then(Tensor::as_slice);
        let mut dx = crate::memory::for_overwrite(rows * n);
        let per = rows_per_piece(n);
        let pieces = rows.div_ceil(per);
        // Per piece: the partial dweight and dbias of its rows (`2 n` values), summed in order.
        let mut partial = vec![T::ZERO; pieces * 2 * n];
        if n > 0 && rows > 0 {
            dx.par_chunks_mut(per * n)
                .zip(partial.par_chunks_mut(2 * n))
                .enumerate()
                .with_min_len(min_len(rows * n))
                .for_each(|(p, (dx, part))| {
                    let (dw, db) = part.split_at_mut(n);
                    let first = p * per;
                    for (r, dx) in dx.chunks_exact_mut(n).enumerate() {
                        let row = first + r;
                        let (x, dy) = (&xs[row * n..(row + 1) * n], &dys[row * n..(row + 1) * n]);
                        let (mu, inv) = (mean[row], rstd[row]);
                        // Σ g and Σ g · x̂ over the row, in f64.
                        let (mut sg, mut sgx) = (0.0f64, 0.0f64);
                        for j in 0..n {
                            let xhat = (x[j] - mu) * inv;
                            let g = match w {
                                Some(w) => dy[j] * w[j],
                                None => dy[j],
                            };
                            sg += g.to_f64();
                            sgx += (g * xhat).to_f64();
                            dw[j] += dy[j] * xhat;
                            db[j] += dy[j];
                        }
                        let (a, b) = (T::from_f64(sg / n as f64), T::from_f64(sgx / n as f64));
                        for j in 0..n {
                            let xhat = (x[j] - mu) * inv;
                            let g = match w {
                                Some(w) => dy[j] * w[j],
                                None => dy[j],
                            };
                            dx[j] = inv * (g - a - xhat * b);
                        }
                    }
                });
        }
        let total = |offset: usize| -> Tensor<T> {
            let mut sum = vec![T::ZERO; n];
            for part in partial.chunks_exact(2 * n) {
                for (s, &v) in sum.iter_mut().zip(&part[offset..offset + n]) {
                    *s += v;
                }
            }
            Tensor::from_contiguous(sum, normalized_shape)
        };
        Ok(LayerNormGrads {
            dx: Tensor::from_contiguous(dx, self.shape()),
            dweight: weight.map(|_| total(0)),
            dbias: bias.then(|| total(n)),
        })
    }
}
