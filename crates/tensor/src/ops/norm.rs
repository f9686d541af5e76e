//! Layer normalisation as one op: a pass over each row for its statistics and one for the
//! output; the backward is one pass over the rows too.
//!
//! Rows are the input's trailing `normalized` elements (the product of `normalized_shape`). Each
//! row's mean and variance are accumulated in `f64` whatever `T` is (eight interleaved partial
//! sums, a fixed order), so an `f32` row of large offset keeps its precision.

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::kernels::active_isa;
use crate::kernels::mask::isa::dispatch;
use crate::kernels::norm::{BackwardRows, ForwardRows};
use crate::layout::checked_numel;
use crate::ops::elementwise::CHUNK;
use crate::parallel::for_each;
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
            let pieces =
                y.chunks_mut(per * n).zip(mean.chunks_mut(per).zip(rstd.chunks_mut(per))).zip(data.chunks(per * n));
            for_each(pieces, rows * n, |((y, (mean, rstd)), x)| {
                dispatch(isa, ForwardRows { x, w, b, n, eps, y, mean, rstd })
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
            let pieces = dx
                .chunks_mut(per * n)
                .zip(partial.chunks_mut(2 * n))
                .zip(xs.chunks(per * n).zip(dys.chunks(per * n)))
                .zip(ms.chunks(per).zip(rs.chunks(per)));
            for_each(pieces, rows * n, |(((dx, partial), (x, dy)), (mean, rstd))| {
                dispatch(isa, BackwardRows { x, dy, mean, rstd, w, n, dx, partial });
            });
        }
        // The blocks' column sums, added in block order.
        let column = |offset: usize| -> Vec<T> {
            let mut total = vec![0.0f64; n];
            for block in partial.chunks_exact((2 * n).max(1)) {
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

/// The elements of a contiguous tensor.
fn slice<T: Float>(t: &Tensor<T>) -> &[T] {
    t.as_slice().expect("a contiguous tensor has a slice")
}
