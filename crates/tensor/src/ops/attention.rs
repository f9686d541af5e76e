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
use crate::kernels::gemm::{gemm, MatMut, MatRef};
use crate::kernels::mask::scale_by_mask;
use crate::layout::{checked_numel, contiguous_strides, Dims, Layout};
use crate::ops::elementwise::{fill_chunked, CHUNK};
use crate::ops::matmul::{batch_offset, SMALL_PRODUCT_FLOPS};
use crate::ops::reduce::softmax_row;
use crate::storage::Storage;
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
            Some(m) => {
                let m = m
                    .expand(&shape)
                    .map_err(|_| Error::mismatch(OP, m.shape(), &shape, "the mask does not broadcast to the scores"))?;
                // Each mask row contiguous (or the mask copied so that it is).
                Some(if m.strides()[n - 1] == 1 || shape[n - 1] == 1 { m } else { m.contiguous() })
            }
            None => None,
        };
        let scale = options.scale_for(self.shape()[n - 1]);
        if let Some(blocks) = Fused::plan(self, value, &shape) {
            return Ok(blocks.forward(self, key, value, mask.as_ref(), scale, options.dropout));
        }
        let scores = self.matmul(&key.transpose(n - 2, n - 1)?)?;
        let weights = masked_softmax(&scores, mask.as_ref(), scale);
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
        if let Some(blocks) = Fused::plan(self, value, &shape) {
            let scale = options.scale_for(self.shape()[n - 1]);
            return Ok(blocks.backward(self, key, value, &weights.contiguous(), dy, scale, dropout, needs));
        }
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
/// of the scores' shape (broadcast strides allowed, each row contiguous): one pass over each row
/// through a row of scratch.
fn masked_softmax<T: Float>(scores: &Tensor<T>, mask: Option<&Tensor<T>>, scale: T) -> Tensor<T> {
    let shape = scores.shape();
    let (len, numel) = (shape[shape.len() - 1], scores.numel());
    if numel == 0 {
        return scores.clone();
    }
    let xs = scores.as_slice().expect("a matmul's result is contiguous");
    let isa = active_isa();
    let group = (CHUNK / len).max(1) * len;
    let data = fill_chunked(numel, group, |start, out: &mut [T]| {
        let mut scratch = vec![T::ZERO; len];
        let first = start / len;
        if len <= CHUNK {
            // All of the group's rows in one kernel call (the same arithmetic as the loop below).
            let mask_of = |r: usize| mask.map(|m| mask_row(m, first + r, len));
            T::softmax_rows(isa, &xs[start..start + out.len()], scale, &mask_of, &mut scratch, out);
            return;
        }
        for (i, row) in out.chunks_mut(len).enumerate() {
            let r = first + i;
            let x = &xs[r * len..(r + 1) * len];
            T::binary(isa, BinaryOp::Mul, Operand::Slice(x), Operand::Splat(scale), &mut scratch);
            if let Some(m) = mask {
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

// ─── The fused path ─────────────────────────────────────────────────────────────────────────
// Many small blocks (a transformer's heads: 256 blocks of 28 x 28 weights over 16-wide heads)
// run as one parallel loop over the blocks: each block's scores, softmax, dropout and products
// (forward), or its four products, dropouts and softmax backward (backward), back to back in
// scratch that stays in L1. Each step is the very kernel call the composed path makes for that
// block (the same `gemm` calls, `softmax_rows`, mask scaling and `softmax_backward_rows`), so the
// two paths give the same bits; what goes is the full-size intermediate tensors, their passes
// over memory, and a parallel dispatch per step.
//
// A query split into heads by `reshape` + `permute` (`[N, L, H, D]` in memory, viewed as
// `[N, H, L, D]`) gets its output, and its gradient, in the same layout, so that merging the
// heads back (`permute` + `reshape`) is a view, not a copy.

/// The plan of a fused attention: the sizes, and how many blocks one piece of the parallel loop
/// holds (the heads, when an output interleaves them; otherwise one).
#[derive(Clone, Copy, Debug)]
struct Fused {
    /// The number of blocks (the product of the leading dims).
    batch: usize,
    /// Query rows `L`, key rows `S`, the query/key width `D` and the value width `Dv`.
    l: usize,
    s: usize,
    d: usize,
    dv: usize,
    /// The leading dims' count.
    nlead: usize,
    /// The number of heads (the last leading dim), or 1 when there is no leading dim.
    heads: usize,
}

/// Where the blocks `[rows, cols]` of an output go within a piece of `group` blocks: one after
/// another, or interleaved row by row (`[rows, group, cols]` in memory).
#[derive(Clone, Copy, Debug)]
struct Blocks {
    rows: usize,
    cols: usize,
    group: usize,
    interleaved: bool,
}

impl Blocks {
    /// The elements of one piece.
    fn piece(&self) -> usize {
        self.group * self.rows * self.cols
    }

    /// The offset in its piece, and the row stride, of block `j` of a piece.
    fn block(&self, j: usize) -> (usize, usize) {
        if self.interleaved {
            (j * self.cols, self.group * self.cols)
        } else {
            (j * self.rows * self.cols, self.cols)
        }
    }

    /// A block of a piece of this layout, as a matrix to write.
    fn block_mut<'a, T>(&self, piece: &'a mut [T], j: usize) -> MatMut<'a, T> {
        let (offset, row_stride) = self.block(j);
        MatMut::new(piece, offset, [self.rows, self.cols], [row_stride, 1])
    }

    /// The tensor of `shape` (`[.., rows, cols]`, the heads its third-last dim when interleaved)
    /// over `data`, a whole number of pieces in this layout.
    fn tensor<T: Float>(&self, data: Vec<T>, shape: &[usize]) -> Tensor<T> {
        let mut strides: Dims = contiguous_strides(shape);
        if self.interleaved {
            let n = shape.len();
            strides[n - 3] = self.cols;
            strides[n - 2] = self.group * self.cols;
        }
        let layout = Layout::new(shape, &strides, 0).expect("a permutation of a contiguous layout is valid");
        Tensor::from_storage(Storage::new(data), layout).expect("the layout covers exactly the data")
    }
}

/// Whether `t` (`[.., H, rows, cols]`) has its heads interleaved row by row in memory, as a
/// projection `[.., rows, H·cols]` reshaped and permuted into heads has.
fn interleaves_heads<T: Float>(t: &Tensor<T>) -> bool {
    let (shape, strides, n) = (t.shape(), t.strides(), t.ndim());
    n >= 3 && shape[n - 3] > 1 && shape[n - 2] > 1 && strides[n - 1] == 1 && strides[n - 3] < strides[n - 2]
}

/// Block `b` (row-major over the leading dims) of `t`, `[.., rows, cols]`, as a matrix.
fn block_ref<T: Float>(t: &Tensor<T>, b: usize, nlead: usize) -> MatRef<'_, T> {
    let (shape, strides, n) = (t.shape(), t.strides(), t.ndim());
    let offset = batch_offset(t, b, &shape[..nlead]);
    MatRef::new(t.storage().as_slice(), offset, [shape[n - 2], shape[n - 1]], [strides[n - 2], strides[n - 1]])
}

/// The mask words of bits `start .. start + count` of `words`, starting at bit 0 of the first:
/// `words` itself when `start` is a multiple of 64, otherwise shifted into `buf`. (Bits past
/// `count` in the last word are whatever follows; the mask kernels read only `count`.)
fn block_bits<'w>(words: &'w [u64], start: usize, count: usize, buf: &'w mut Vec<u64>) -> &'w [u64] {
    let (first, shift, n) = (start / 64, start % 64, count.div_ceil(64));
    if shift == 0 {
        return &words[first..first + n];
    }
    buf.clear();
    buf.extend((first..first + n).map(|w| words[w] >> shift | words.get(w + 1).map_or(0, |next| next << (64 - shift))));
    buf
}

/// Each thread's scratch: three blocks of weights and a row.
struct Scratch<T> {
    a: Vec<T>,
    b: Vec<T>,
    c: Vec<T>,
    row: Vec<T>,
    words: Vec<u64>,
}

impl<T: Float> Scratch<T> {
    fn new(block: usize, row: usize) -> Scratch<T> {
        let words = Vec::with_capacity(block.div_ceil(64));
        Scratch {
            a: vec![T::ZERO; block],
            b: vec![T::ZERO; block],
            c: vec![T::ZERO; block],
            row: vec![T::ZERO; row],
            words,
        }
    }
}

impl Fused {
    /// The fused plan for query `q` and value `v` with scores of `shape` (checked), when the
    /// blocks are small enough for one thread each (the batched `matmul`'s rule for spreading
    /// a batch one product per thread) and no size is zero; `None` sends the op down the
    /// composed path.
    fn plan<T: Float>(q: &Tensor<T>, v: &Tensor<T>, shape: &[usize]) -> Option<Fused> {
        let n = shape.len();
        let (l, s, d, dv) = (shape[n - 2], shape[n - 1], q.shape()[n - 1], v.shape()[n - 1]);
        let batch: usize = shape[..n - 2].iter().product();
        let flops = l.checked_mul(s)?.checked_mul(d.checked_add(dv)?)?.checked_mul(2)?;
        if flops >= SMALL_PRODUCT_FLOPS || [batch, l, s, d, dv].contains(&0) {
            return None;
        }
        let heads = if n >= 3 { shape[n - 3] } else { 1 };
        Some(Fused { batch, l, s, d, dv, nlead: n - 2, heads })
    }

    /// The layout of an output `[.., rows, cols]` made like `input`, in pieces of `group` blocks.
    fn blocks<T: Float>(&self, input: &Tensor<T>, rows: usize, cols: usize, group: usize) -> Blocks {
        Blocks { rows, cols, group, interleaved: group > 1 && interleaves_heads(input) }
    }

    /// The work of the whole loop, in elements touched, for the parallel split.
    fn work(&self) -> usize {
        self.batch * self.l * self.s * (self.d + self.dv + 4)
    }

    /// The forward on the fused path (see `scaled_dot_product_attention`); `mask` expanded to the
    /// scores' shape with contiguous rows.
    fn forward<T: Float>(
        &self,
        q: &Tensor<T>,
        k: &Tensor<T>,
        v: &Tensor<T>,
        mask: Option<&Tensor<T>>,
        scale: T,
        dropout: Option<AttentionDropout<'_>>,
    ) -> AttentionOutput<T> {
        let Fused { batch, l, s, dv, nlead, .. } = *self;
        let ls = l * s;
        let group = if interleaves_heads(q) { self.heads } else { 1 };
        let out_blocks = self.blocks(q, l, dv, group);
        let mut out = crate::memory::for_overwrite(batch * l * dv);
        let mut weights = crate::memory::for_overwrite(batch * ls);
        let keep = dropout.map(|d| (d.mask.words(), T::from_f64(BitMask::keep_scale(d.p))));
        let isa = active_isa();
        let pieces = out.chunks_mut(out_blocks.piece()).zip(weights.chunks_mut(group * ls)).enumerate();
        crate::parallel::for_each_init(
            pieces,
            self.work(),
            || Scratch::new(ls, s),
            |sc: &mut Scratch<T>, (p, (out_piece, w_piece))| {
                for j in 0..group {
                    let b = p * group + j;
                    let scores = &mut sc.a[..];
                    gemm(MatMut::row_major(scores, l, s), block_ref(q, b, nlead), block_ref(k, b, nlead).t(), false);
                    let w = &mut w_piece[j * ls..(j + 1) * ls];
                    let mask_of = |r: usize| mask.map(|m| mask_row(m, b * l + r, s));
                    T::softmax_rows(isa, scores, scale, &mask_of, &mut sc.row, w);
                    let w: &[T] = match keep {
                        Some((words, keep_scale)) => {
                            let bits = block_bits(words, b * ls, ls, &mut sc.words);
                            scale_by_mask(isa, bits, w, keep_scale, &mut sc.b);
                            &sc.b
                        }
                        None => w,
                    };
                    gemm(out_blocks.block_mut(out_piece, j), MatRef::row_major(w, l, s), block_ref(v, b, nlead), false);
                }
            },
        );
        let mut out_shape = q.shape()[..nlead + 1].to_vec();
        out_shape.push(dv);
        let mut w_shape = out_shape.clone();
        w_shape[nlead + 1] = s;
        AttentionOutput { out: out_blocks.tensor(out, &out_shape), weights: Tensor::from_contiguous(weights, &w_shape) }
    }

    /// The backward on the fused path (see `scaled_dot_product_attention_backward`), `weights`
    /// contiguous; each gradient laid out like its input.
    #[allow(clippy::too_many_arguments)]
    fn backward<T: Float>(
        &self,
        q: &Tensor<T>,
        k: &Tensor<T>,
        v: &Tensor<T>,
        weights: &Tensor<T>,
        dy: &Tensor<T>,
        scale: T,
        dropout: Option<AttentionDropout<'_>>,
        needs: [bool; 3],
    ) -> AttentionGrads<T> {
        let Fused { batch, l, s, d, dv, nlead, .. } = *self;
        let ls = l * s;
        let inputs = [q, k, v];
        let interleaved = (0..3).any(|i| needs[i] && interleaves_heads(inputs[i]));
        let group = if interleaved { self.heads } else { 1 };
        let layouts = [self.blocks(q, l, d, group), self.blocks(k, s, d, group), self.blocks(v, s, dv, group)];
        let pieces = batch / group;
        let mut bufs: [Vec<T>; 3] = std::array::from_fn(|i| {
            if needs[i] {
                crate::memory::for_overwrite(pieces * layouts[i].piece())
            } else {
                Vec::new()
            }
        });
        let [dq_buf, dk_buf, dv_buf] = &mut bufs;
        /// The pieces of an output buffer, or `None` for each piece of one not asked for.
        fn chunks<'a, T>(buf: &'a mut [T], blocks: &Blocks, pieces: usize) -> Vec<Option<&'a mut [T]>> {
            if buf.is_empty() {
                (0..pieces).map(|_| None).collect()
            } else {
                buf.chunks_mut(blocks.piece()).map(Some).collect()
            }
        }
        let (dq_chunks, dk_chunks, dv_chunks) = (
            chunks(dq_buf, &layouts[0], pieces),
            chunks(dk_buf, &layouts[1], pieces),
            chunks(dv_buf, &layouts[2], pieces),
        );
        let keep = dropout.map(|d| (d.mask.words(), T::from_f64(BitMask::keep_scale(d.p))));
        let ws = weights.as_slice().expect("contiguous weights");
        let isa = active_isa();
        let all = dq_chunks.into_iter().zip(dk_chunks).zip(dv_chunks).enumerate();
        crate::parallel::for_each_init(
            all,
            self.work(),
            || Scratch::new(ls, 0),
            |sc: &mut Scratch<T>, (p, ((mut dq_piece, mut dk_piece), mut dv_piece))| {
                for j in 0..group {
                    let b = p * group + j;
                    let w = &ws[b * ls..(b + 1) * ls];
                    let dyb = block_ref(dy, b, nlead);
                    let bits =
                        keep.map(|(words, keep_scale)| (block_bits(words, b * ls, ls, &mut sc.words), keep_scale));
                    if let Some(piece) = dv_piece.as_deref_mut() {
                        // dv = W'ᵀ dy
                        let w: &[T] = match bits {
                            Some((bits, keep_scale)) => {
                                scale_by_mask(isa, bits, w, keep_scale, &mut sc.a);
                                &sc.a
                            }
                            None => w,
                        };
                        gemm(layouts[2].block_mut(piece, j), MatRef::row_major(w, l, s).t(), dyb, false);
                    }
                    if !(needs[0] || needs[1]) {
                        continue;
                    }
                    // dW = dropout(dy vᵀ); dS = softmax_backward(W, dW) · scale
                    gemm(MatMut::row_major(&mut sc.b, l, s), dyb, block_ref(v, b, nlead).t(), false);
                    let dw: &[T] = match bits {
                        Some((bits, keep_scale)) => {
                            scale_by_mask(isa, bits, &sc.b, keep_scale, &mut sc.a);
                            &sc.a
                        }
                        None => &sc.b,
                    };
                    T::softmax_backward_rows(isa, w, dw, s, scale, &mut sc.c);
                    let ds = MatRef::row_major(&sc.c, l, s);
                    if let Some(piece) = dq_piece.as_deref_mut() {
                        gemm(layouts[0].block_mut(piece, j), ds, block_ref(k, b, nlead), false);
                    }
                    if let Some(piece) = dk_piece.as_deref_mut() {
                        gemm(layouts[1].block_mut(piece, j), ds.t(), block_ref(q, b, nlead), false);
                    }
                }
            },
        );
        let [dq_buf, dk_buf, dv_buf] = bufs;
        let grad = |buf: Vec<T>, i: usize, need: bool| need.then(|| layouts[i].tensor(buf, inputs[i].shape()));
        AttentionGrads { dq: grad(dq_buf, 0, needs[0]), dk: grad(dk_buf, 1, needs[1]), dv: grad(dv_buf, 2, needs[2]) }
    }
}
