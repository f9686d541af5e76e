//! Layer normalisation as one op: a pass over each row for its statistics and one for the
//! output; the backward is one pass over the rows too.
//!
//! Rows are the input's trailing `normalized` elements (the product of `normalized_shape`). Each
//! row's mean and variance are accumulated in `f64` whatever `T` is (eight interleaved partial
//! sums, a fixed order), so an `f32` row of large offset keeps its precision.

use rayon::prelude::*;

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::kernels::active_isa;
use crate::kernels::mask::isa::{dispatch, Kernel, MaskIsa};
use crate::layout::checked_numel;
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
    let n = checked_numel(op, normalized_shape)?;
    let rows = checked_numel(op, shape)?.checked_div(n).unwrap_or(0);
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
        let data = slice(&x);
        let (w, b) = (weight.map(Tensor::contiguous), bias.map(Tensor::contiguous));
        let (w, b) = (w.as_ref().map(slice), b.as_ref().map(slice));
        let mut y = crate::memory::for_overwrite(rows * n);
        let (mut mean, mut rstd) = (vec![T::ZERO; rows], vec![T::ZERO; rows]);
        let per = rows_per_piece(n);
        let isa = active_isa();
        if n > 0 {
            y.par_chunks_mut(per * n)
                .zip(mean.par_chunks_mut(per).zip(rstd.par_chunks_mut(per)))
                .zip(data.par_chunks(per * n))
                .with_min_len(min_len(rows * n))
                .for_each(|((y, (mean, rstd)), x)| dispatch(isa, ForwardRows { x, w, b, n, eps, y, mean, rstd }));
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
    /// One pass over the rows, in `f64` whatever `T` is: each row's two means, its `dx`, and
    /// the column sums of `dweight` and `dbias` over a fixed block of rows; the blocks' sums are
    /// then added in order, so the result does not depend on the thread count. The formula is
    /// written out in `docs/derivatives.md` with ops that have derivatives of their own (`sub`,
    /// `mul`, `mean`, `sum`), the form a recorded backward takes.
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
        let w = weight.map(Tensor::contiguous);
        let (xs, dys, ms, rs, w) = (slice(&x), slice(&dy), slice(&mean), slice(&rstd), w.as_ref().map(slice));
        let mut dx = crate::memory::for_overwrite(rows * n);
        let per = rows_per_piece(n);
        // Per block of rows: the column sums of dy · x̂ (first n) and of dy (next n).
        let mut partial = vec![0.0f64; rows.div_ceil(per) * 2 * n];
        let isa = active_isa();
        if n > 0 {
            dx.par_chunks_mut(per * n)
                .zip(partial.par_chunks_mut(2 * n))
                .zip(xs.par_chunks(per * n).zip(dys.par_chunks(per * n)))
                .zip(ms.par_chunks(per).zip(rs.par_chunks(per)))
                .with_min_len(min_len(rows * n))
                .for_each(|(((dx, partial), (x, dy)), (mean, rstd))| {
                    dispatch(isa, BackwardRows { x, dy, mean, rstd, w, n, dx, partial });
                });
        }
        // The blocks' column sums, added in block order.
        let column = |offset: usize| -> Vec<T> {
            let mut total = vec![0.0f64; n];
            for block in partial.chunks_exact(2 * n) {
                for (t, &v) in total.iter_mut().zip(&block[offset..offset + n]) {
                    *t += v;
                }
            }
            total.into_iter().map(T::from_f64).collect()
        };
        let dweight = weight.map(|_| Tensor::from_contiguous(column(0), normalized_shape));
        let dbias = bias.then(|| Tensor::from_contiguous(column(n), normalized_shape));
        Ok(LayerNormGrads { dx: Tensor::from_contiguous(dx, self.shape()), dweight, dbias })
    }
}

/// One piece of [`Tensor::layer_norm`]'s rows, as a kernel: [`dispatch`] compiles the loop
/// under the CPU's widest instruction set (four f64 lanes on AVX2, eight on AVX-512, where the
/// baseline x86_64 build has two), so the compiler vectorises it wider. The arithmetic is the
/// same on every path: Rust neither contracts nor reorders floating-point operations, so the
/// wider registers change how many lanes run at once, not what each lane computes (the eight
/// interleaved sums of [`sum8`] are eight independent lanes).
struct ForwardRows<'a, T: Float> {
    x: &'a [T],
    w: Option<&'a [T]>,
    b: Option<&'a [T]>,
    n: usize,
    eps: f64,
    y: &'a mut [T],
    mean: &'a mut [T],
    rstd: &'a mut [T],
}

impl<T: Float> Kernel for ForwardRows<'_, T> {
    type Output = ();

    #[inline(always)]
    fn call<S: MaskIsa>(self, _isa: S) {
        let ForwardRows { x, w, b, n, eps, y, mean, rstd } = self;
        let mut wide = vec![0.0f64; n];
        for (((y, x), m), r) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(mean).zip(rstd) {
            for (w, v) in wide.iter_mut().zip(x) {
                *w = v.to_f64();
            }
            let mu = sum8(&wide) / n as f64;
            for w in &mut wide {
                *w -= mu;
            }
            let var = sum8_zip(&wide, &wide) / n as f64;
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
    }
}

/// One piece of [`Tensor::layer_norm_backward`]'s rows, as a kernel, for the reasons of
/// [`ForwardRows`]: `dx`, and the piece's column sums of `dy · x̂` (the first `n` of `partial`)
/// and of `dy` (the next `n`).
struct BackwardRows<'a, T: Float> {
    x: &'a [T],
    dy: &'a [T],
    mean: &'a [T],
    rstd: &'a [T],
    w: Option<&'a [T]>,
    n: usize,
    dx: &'a mut [T],
    partial: &'a mut [f64],
}

impl<T: Float> Kernel for BackwardRows<'_, T> {
    type Output = ();

    #[inline(always)]
    fn call<S: MaskIsa>(self, _isa: S) {
        let BackwardRows { x, dy, mean, rstd, w, n, dx, partial } = self;
        let (col_wx, col_b) = partial.split_at_mut(n);
        let mut xhat = vec![0.0f64; n];
        let mut g = vec![0.0f64; n];
        let rows = dx.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(dy.chunks_exact(n));
        for (((dx, x), dy), (mu, r)) in rows.zip(mean.iter().zip(rstd)) {
            let (mu, r) = (mu.to_f64(), r.to_f64());
            for (((xh, g), &x), &dy) in xhat.iter_mut().zip(g.iter_mut()).zip(x).zip(dy) {
                *xh = (x.to_f64() - mu) * r;
                *g = dy.to_f64();
            }
            for (((wx, b), &xh), &dy) in col_wx.iter_mut().zip(col_b.iter_mut()).zip(&xhat).zip(&g) {
                *wx += dy * xh;
                *b += dy;
            }
            if let Some(w) = w {
                for (g, &w) in g.iter_mut().zip(w) {
                    *g *= w.to_f64();
                }
            }
            let mean_g = sum8(&g) / n as f64;
            let mean_gx = sum8_zip(&g, &xhat) / n as f64;
            for ((dx, &g), &xh) in dx.iter_mut().zip(&g).zip(&xhat) {
                *dx = T::from_f64(r * (g - mean_g - xh * mean_gx));
            }
        }
    }
}

/// The elements of a contiguous tensor.
fn slice<T: Float>(t: &Tensor<T>) -> &[T] {
    t.as_slice().expect("a contiguous tensor has a slice")
}

/// `Σ values` in `f64`, as eight interleaved partial sums (element `i` goes to sum
/// `i % 8`) added pairwise at the end: a fixed order the compiler can keep in vector registers,
/// where one running sum would wait on each addition.
#[inline(always)]
fn sum8(values: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a += v;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// `Σ a · b` over two equally long slices, in the order of [`sum8`].
#[inline(always)]
fn sum8_zip(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    for ((s, &x), &y) in acc.iter_mut().zip(ta).zip(tb) {
        *s += x * y;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{available_isas, Isa};

    /// LayerNorm's row kernels give the scalar build's bits on every instruction set (they are
    /// only compiled wider), for widths around the vector lengths and a row with a large offset.
    #[test]
    fn the_row_kernels_agree_with_the_scalar_path_to_the_bit() {
        for n in [1usize, 3, 4, 7, 8, 9, 16, 17, 64, 100] {
            let rows = 3;
            let x: Vec<f32> =
                (0..rows * n).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.37 + if i < n { 1e4 } else { 0.0 }).collect();
            let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 5) as f32 * 0.25).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 3) as f32 - 1.0).collect();
            let dy: Vec<f32> = (0..rows * n).map(|i| ((i * 11 % 7) as f32 - 3.0) * 0.5).collect();
            let run = |isa: Isa| {
                let (mut y, mut mean, mut rstd) = (vec![0.0f32; rows * n], vec![0.0f32; rows], vec![0.0f32; rows]);
                let fwd = ForwardRows {
                    x: &x,
                    w: Some(&w),
                    b: Some(&b),
                    n,
                    eps: 1e-5,
                    y: &mut y,
                    mean: &mut mean,
                    rstd: &mut rstd,
                };
                dispatch(isa, fwd);
                let (mut dx, mut partial) = (vec![0.0f32; rows * n], vec![0.0f64; 2 * n]);
                let bwd = BackwardRows {
                    x: &x,
                    dy: &dy,
                    mean: &mean,
                    rstd: &rstd,
                    w: Some(&w),
                    n,
                    dx: &mut dx,
                    partial: &mut partial,
                };
                dispatch(isa, bwd);
                let bits32 = |v: &[f32]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
                (
                    bits32(&y),
                    bits32(&mean),
                    bits32(&rstd),
                    bits32(&dx),
                    partial.iter().map(|e| e.to_bits()).collect::<Vec<_>>(),
                )
            };
            let want = run(Isa::Scalar);
            for isa in available_isas() {
                assert_eq!(run(isa), want, "{isa:?}, rows of {n}");
            }
        }
    }
}
