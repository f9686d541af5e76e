//! Scaled dot-product attention as one op, and the softmax backward it needs as one pass.
//!
//! `attention(q, k, v) = dropout(softmax(q kᵀ · scale + mask)) v` over the last two dims, the
//! leading dims a batch (`[batch, heads]` in a transformer). Forward is two batched GEMMs (`kᵀ`
//! read in place) around one pass over each row of scores that scales, adds the mask and takes
//! the softmax; dropout multiplies by a stored one-bit-per-element mask. Backward is four
//! batched GEMMs around one pass per row ([`Tensor::softmax_backward`]), all of them tensor ops
//! whose own derivatives are known, so the backward can be differentiated again.

use crate::bitmask::{check_p, BitMask};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::kernels::active_isa;
use crate::kernels::elementwise::{BinaryOp, Operand};
use crate::layout::checked_numel;
use crate::ops::elementwise::{fill_chunked, CHUNK};
use crate::ops::reduce::softmax_row;
use crate::tensor::Tensor;

const OP: &str = "scaled_dot_product_attention";

/// The dropout applied to the attention weights: the mask (one bit per weight, set where kept)
/// and the drop probability `p`; kept weights are scaled by `1 / (1 - p)`.
#[derive(Clone, Copy, Debug)]
pub struct AttentionDropout<'a> {
    /// One bit per attention weight, row-major over `[.., L, S]`.
    pub mask: &'a BitMask,
    /// The drop probability the mask was drawn with.
    pub p: f64,
}

/// The optional parts of an attention: PyTorch's `attn_mask`, `scale` and dropout.
#[derive(Clone, Copy, Debug)]
pub struct AttentionOptions<'a, T: Float> {
    /// Added to the scaled scores; must broadcast to `[.., L, S]`. `-inf` forbids a position.
    pub attn_mask: Option<&'a Tensor<T>>,
    /// The scores' factor; `None` means `1 / √D`.
    pub scale: Option<f64>,
    /// The dropout of the attention weights.
    pub dropout: Option<AttentionDropout<'a>>,
}

impl<T: Float> Default for AttentionOptions<'_, T> {
    /// No mask, the default scale, no dropout.
    fn default() -> Self {
        AttentionOptions { attn_mask: None, scale: None, dropout: None }
    }
}

impl<T: Float> AttentionOptions<'_, T> {
    /// The factor the scores are multiplied by for a query of width `d`: `scale`, or `1 / √d`
    /// when it is `None` (`1` for `d = 0`), rounded once to `T`. A recorded backward that
    /// rebuilds the weights from `Var`s uses it to scale exactly as the forward did.
    ///
    /// ```
    /// use tapegrad_tensor::ops::attention::AttentionOptions;
    /// assert_eq!(AttentionOptions::<f64>::default().scale_for(4), 0.5);
    /// let given = AttentionOptions::<f64> { scale: Some(0.7), ..AttentionOptions::default() };
    /// assert_eq!(given.scale_for(4), 0.7);
    /// ```
    pub fn scale_for(&self, d: usize) -> T {
        T::from_f64(self.scale.unwrap_or(1.0 / (d.max(1) as f64).sqrt()))
    }
}

/// What [`Tensor::scaled_dot_product_attention`] returns.
#[derive(Clone, Debug)]
pub struct AttentionOutput<T: Float> {
    /// `[.., L, Dv]`: the attended values.
    pub out: Tensor<T>,
    /// `[.., L, S]`: the attention weights `softmax(q kᵀ · scale + mask)` before dropout, what
    /// [`Tensor::scaled_dot_product_attention_backward`] needs.
    pub weights: Tensor<T>,
}

/// The gradients [`Tensor::scaled_dot_product_attention_backward`] returns, each only when asked
/// for.
#[derive(Clone, Debug)]
pub struct AttentionGrads<T: Float> {
    /// The query's gradient, `[.., L, D]`.
    pub dq: Option<Tensor<T>>,
    /// The key's gradient, `[.., S, D]`.
    pub dk: Option<Tensor<T>>,
    /// The value's gradient, `[.., S, Dv]`.
    pub dv: Option<Tensor<T>>,
}

/// Checks `q [.., L, D]`, `k [.., S, D]`, `v [.., S, Dv]` (the same leading dims); returns the
/// shape of the scores, `[.., L, S]`, checked to be a valid shape ([`checked_numel`]).
fn scores_shape<T: Float>(q: &Tensor<T>, k: &Tensor<T>, v: &Tensor<T>) -> Result<Vec<usize>> {
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    let n = qs.len();
    if n < 2 || ks.len() != n || vs.len() != n {
        return Err(Error::mismatch(OP, qs, ks, "query, key and value need the same number of dims, at least 2"));
    }
    if qs[..n - 2] != ks[..n - 2] || ks[..n - 2] != vs[..n - 2] {
        return Err(Error::mismatch(OP, qs, vs, "query, key and value need the same leading (batch) dims"));
    }
    if qs[n - 1] != ks[n - 1] {
        return Err(Error::mismatch(OP, qs, ks, "query and key need the same last dim"));
    }
    if ks[n - 2] != vs[n - 2] {
        return Err(Error::mismatch(OP, ks, vs, "key and value need the same number of positions"));
    }
    let mut shape = qs[..n - 1].to_vec();
    shape.push(ks[n - 2]);
    checked_numel(OP, &shape)?;
    Ok(shape)
}

/// Checks that a dropout mask has one bit per attention weight and a valid `p`.
fn check_dropout(dropout: Option<AttentionDropout<'_>>, numel: usize, shape: &[usize]) -> Result<()> {
    match dropout {
        Some(d) if d.mask.len() != numel => Err(Error::shape(
            OP,
            shape,
            format!("the dropout mask has {} bits, not one per attention weight", d.mask.len()),
        )),
        Some(d) => check_p(OP, d.p),
        None => Ok(()),
    }
}

impl AttentionDropout<'_> {
    /// `t · m / (1 - p)`: the weights (forward) or their gradient (backward) through the mask.
    fn apply<T: Float>(&self, t: &Tensor<T>) -> Result<Tensor<T>> {
        self.mask.scale(t, T::from_f64(BitMask::keep_scale(self.p)))
    }
}

impl<T: Float> Tensor<T> {
    /// The shape `[.., L, S]` of the attention weights of this query `[.., L, D]` over `key`
    /// `[.., S, D]` and `value` `[.., S, Dv]`: what a caller drawing a dropout mask for
    /// [`scaled_dot_product_attention`](Tensor::scaled_dot_product_attention) sizes it by.
    ///
    /// # Errors
    /// `scaled_dot_product_attention` naming the shapes when the operands do not fit together.
    pub fn attention_weights_shape(&self, key: &Tensor<T>, value: &Tensor<T>) -> Result<Vec<usize>> {
        scores_shape(self, key, value)
    }

    /// Scaled dot-product attention of this query `[.., L, D]` over `key` `[.., S, D]` and `value`
    /// `[.., S, Dv]` (the same leading dims): `out = dropout(W) v` with the weights
    /// `W = softmax(q kᵀ · scale + attn_mask)` along the last dim, what PyTorch's
    /// `F.scaled_dot_product_attention` computes. The weights are returned for the backward.
    ///
    /// - `options.attn_mask` is added to the scaled scores and must broadcast to `[.., L, S]`;
    ///   `-inf` forbids a position. A row whose every position is forbidden gets NaN, as in
    ///   PyTorch.
    /// - `options.scale` defaults to `1 / √D`.
    /// - `options.dropout`, when given, multiplies the weights by its mask scaled by
    ///   `1 / (1 - p)`.
    ///
    /// The scores are scaled, masked and normalised in one pass over each row: the same numbers
    /// as `q.matmul(kᵀ) · scale + mask`, then `softmax`, bit for bit.
    ///
    /// # Errors
    /// `scaled_dot_product_attention` naming the shapes when the operands do not fit together,
    /// the mask does not broadcast to the scores or the dropout mask has the wrong length.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// use tapegrad_tensor::ops::attention::AttentionOptions;
    /// let q = Tensor::from_vec(vec![1.0f32, 0.0], &[1, 1, 2])?;
    /// let k = Tensor::from_vec(vec![1.0f32, 0.0, 1.0, 0.0], &[1, 2, 2])?;
    /// let v = Tensor::from_vec(vec![2.0f32, 4.0], &[1, 2, 1])?;
    /// let a = q.scaled_dot_product_attention(&k, &v, &AttentionOptions::default())?;
    /// assert_eq!(a.weights.to_vec(), vec![0.5, 0.5]); // equal scores, equal weights
    /// assert_eq!(a.out.to_vec(), vec![3.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn scaled_dot_product_attention(
        &self,
        key: &Tensor<T>,
        value: &Tensor<T>,
        options: &AttentionOptions<'_, T>,
    ) -> Result<AttentionOutput<T>> {
        let shape = scores_shape(self, key, value)?;
        let n = shape.len();
        let numel = checked_numel(OP, &shape)?;
        check_dropout(options.dropout, numel, &shape)?;
        let mask = match options.attn_mask {
            Some(m) => Some(
                m.expand(&shape)
                    .map_err(|_| Error::mismatch(OP, m.shape(), &shape, "the mask does not broadcast to the scores"))?,
            ),
            None => None,
        };
        let scores = self.matmul(&key.transpose(n - 2, n - 1)?)?;
        let weights = masked_softmax(&scores, mask.as_ref(), options.scale_for(self.shape()[n - 1]));
        let out = match options.dropout {
            Some(d) => d.apply(&weights)?.matmul(value)?,
            None => weights.matmul(value)?,
        };
        Ok(AttentionOutput { out, weights })
    }

    /// The gradients of [`scaled_dot_product_attention`](Tensor::scaled_dot_product_attention)
    /// for the upstream gradient `dy` `[.., L, Dv]`, from its `weights` and the same query, key,
    /// value and options (the mask is not needed again); `needs` says which of `[dq, dk, dv]` to
    /// compute.
    ///
    /// With `W' = dropout(W)`: `dv = W'ᵀ dy`; `dW = dropout(dy vᵀ)`;
    /// `dS = softmax_backward(W, dW) · scale`; `dq = dS k`; `dk = dSᵀ q`. Every step is a tensor
    /// op with a derivative of its own (the batched `matmul`, [`BitMask::scale`],
    /// [`Tensor::softmax_backward`], `mul_scalar`).
    ///
    /// # Errors
    /// `scaled_dot_product_attention` naming the shapes when the operands, the weights or `dy`
    /// do not fit together.
    pub fn scaled_dot_product_attention_backward(
        &self,
        key: &Tensor<T>,
        value: &Tensor<T>,
        weights: &Tensor<T>,
        dy: &Tensor<T>,
        options: &AttentionOptions<'_, T>,
        needs: [bool; 3],
    ) -> Result<AttentionGrads<T>> {
        let shape = scores_shape(self, key, value)?;
        let n = shape.len();
        if weights.shape() != shape.as_slice() {
            return Err(Error::mismatch(OP, weights.shape(), &shape, "the weights must have the scores' shape"));
        }
        let mut out_shape = shape[..n - 1].to_vec();
        out_shape.push(value.shape()[n - 1]);
        if dy.shape() != out_shape.as_slice() {
            return Err(Error::mismatch(OP, dy.shape(), &out_shape, "the gradient must have the output's shape"));
        }
        let dropout = options.dropout;
        check_dropout(dropout, weights.numel(), &shape)?;
        let keep = |t: &Tensor<T>| match dropout {
            Some(d) => d.apply(t),
            None => Ok(t.clone()),
        };
        let dv = if needs[2] { Some(keep(weights)?.transpose(n - 2, n - 1)?.matmul(dy)?) } else { None };
        let (mut dq, mut dk) = (None, None);
        if needs[0] || needs[1] {
            let dw = keep(&dy.matmul(&value.transpose(n - 2, n - 1)?)?)?;
            let ds = weights.softmax_backward_scaled(&dw, options.scale_for(self.shape()[n - 1]))?;
            if needs[0] {
                dq = Some(ds.matmul(key)?);
            }
            if needs[1] {
                dk = Some(ds.transpose(n - 2, n - 1)?.matmul(self)?);
            }
        }
        Ok(AttentionGrads { dq, dk, dv })
    }

    /// Softmax's backward from its output: for `self = softmax(x)` along `dim` and the upstream
    /// gradient `dy`, `dx = y · (dy − Σ_dim dy · y)`, in one pass over each row instead of four
    /// tensor ops. Its own derivatives, for a second differentiation: with respect to `dy` it is
    /// `softmax_backward(y, ·)` again; with respect to `y`, `g ↦ g · (dy − Σ dy·y) − dy · Σ g·y`.
    ///
    /// # Errors
    /// `softmax_backward` naming both shapes when they differ or `dim` is out of range.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let y = Tensor::from_vec(vec![0.25f32, 0.75], &[1, 2])?;
    /// let dy = Tensor::from_vec(vec![1.0f32, 1.0], &[1, 2])?;
    /// assert_eq!(y.softmax_backward(&dy, 1)?.to_vec(), vec![0.0, 0.0]); // a shift changes nothing
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn softmax_backward(&self, dy: &Tensor<T>, dim: usize) -> Result<Tensor<T>> {
        if dy.shape() != self.shape() {
            return Err(Error::mismatch("softmax_backward", self.shape(), dy.shape(), "y and dy must have one shape"));
        }
        self.layout().check_dim("softmax_backward", dim)?;
        let last = self.ndim() - 1;
        if dim == last {
            return self.softmax_backward_scaled(dy, T::ONE);
        }
        let y = self.transpose(dim, last)?;
        let dx = y.softmax_backward_scaled(&dy.transpose(dim, last)?, T::ONE)?;
        Ok(dx.transpose(dim, last)?.contiguous())
    }

    /// `softmax_backward` along the last dim, times `scale` (exact for 1): one pass per row.
    fn softmax_backward_scaled(&self, dy: &Tensor<T>, scale: T) -> Result<Tensor<T>> {
        let (y, dy) = (self.contiguous(), dy.contiguous());
        let len = y.shape().last().copied().unwrap_or(1);
        let numel = y.numel();
        if numel == 0 {
            return Ok(y);
        }
        let (ys, dys) = (y.as_slice().expect("contiguous"), dy.as_slice().expect("contiguous"));
        let isa = active_isa();
        let group = (CHUNK / len).max(1) * len;
        let data = fill_chunked(numel, group, |start, out: &mut [T]| {
            let rows = start..start + out.len();
            T::softmax_backward_rows(isa, &ys[rows.clone()], &dys[rows], len, scale, out);
        });
        Ok(Tensor::from_contiguous(data, y.shape()))
    }
}

/// `softmax(scores · scale + mask)` along the last dim of the contiguous `scores`, `mask` a view
/// of the scores' shape (broadcast strides allowed): one pass over each row through a row of
/// scratch.
fn masked_softmax<T: Float>(scores: &Tensor<T>, mask: Option<&Tensor<T>>, scale: T) -> Tensor<T> {
    let shape = scores.shape();
    let (len, numel) = (shape[shape.len() - 1], scores.numel());
    if numel == 0 {
        return scores.clone();
    }
    // Each mask row is contiguous (or the mask is copied so that it is).
    let mask = mask.map(|m| if m.strides()[m.ndim() - 1] == 1 || len == 1 { m.clone() } else { m.contiguous() });
    let xs = scores.as_slice().expect("a matmul's result is contiguous");
    let isa = active_isa();
    let group = (CHUNK / len).max(1) * len;
    let data = fill_chunked(numel, group, |start, out: &mut [T]| {
        let mut scratch = vec![T::ZERO; len];
        let first = start / len;
        if len <= CHUNK {
            // All of the group's rows in one kernel call (the same arithmetic as the loop below).
            let mask_of = |r: usize| mask.as_ref().map(|m| mask_row(m, first + r, len));
            T::softmax_rows(isa, &xs[start..start + out.len()], scale, &mask_of, &mut scratch, out);
            return;
        }
        for (i, row) in out.chunks_mut(len).enumerate() {
            let r = first + i;
            let x = &xs[r * len..(r + 1) * len];
            T::binary(isa, BinaryOp::Mul, Operand::Slice(x), Operand::Splat(scale), &mut scratch);
            if let Some(m) = &mask {
                let m = mask_row(m, r, len);
                T::binary_assign(isa, BinaryOp::Add, &mut scratch, Operand::Slice(m));
            }
            softmax_row(isa, &scratch, row, false);
        }
    });
    Tensor::from_contiguous(data, shape)
}

/// Row `r` (row-major over all dims but the last) of `mask`, whose last dim has stride 1.
fn mask_row<T: Float>(mask: &Tensor<T>, mut r: usize, len: usize) -> &[T] {
    let (shape, strides) = (mask.shape(), mask.strides());
    let mut offset = mask.offset();
    for d in (0..shape.len() - 1).rev() {
        offset += (r % shape[d]) * strides[d];
        r /= shape[d];
    }
    &mask.storage().as_slice()[offset..offset + len]
}
