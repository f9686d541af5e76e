//! Fused ops: what a chain of small ops computes, in one recorded op and fewer passes over memory.
//!
//! - [`linear`]: `y = x Wᵀ + b` as one op ([`Tensor::linear`]: the GEMM accumulates the product
//!   into the broadcast bias); backward computes `dx = dy W`, `dW = dyᵀ x` and `db = Σ_rows dy`
//!   with `matmul` and `sum`, the GEMM reading `dyᵀ` and `W` in place.
//! - [`linear_relu_dropout`]: `y = dropout(relu(x Wᵀ + b), p)`, the hidden layer of an MLP, as one
//!   op. After the GEMM one SIMD pass over the output applies ReLU, the scale and the
//!   one-bit-per-element dropout mask ([`BitMask::relu_scale`](tapegrad_tensor::BitMask::relu_scale)); backward turns `dy` into the
//!   pre-activation gradient in one SIMD pass ([`Tensor::relu_backward_scaled`]: the gradient
//!   flows where the output is positive, kept and past the ReLU), then runs [`linear`]'s
//!   backward. The mask is drawn exactly as [`dropout`](crate::dropout) draws it (same generator
//!   words, same threshold), so the fused op and the unfused chain give the same values.
//!
//! Every pass splits its work in fixed chunks and the GEMM's result does not depend on the thread
//! count, so neither do these ops.

use tapegrad_tensor::ops::attention::{AttentionDropout, AttentionOptions};
use tapegrad_tensor::{Float, Generator, Result, Tensor};

use crate::ops::constant;
use crate::ops::dropout::{check_p, with_record, DropoutRecord};
use crate::var::{Backward, Grads, Var, VarGrads};

/// The gradients of `x Wᵀ + b` given `dz` (`[m, n]`), each computed only when `needs` asks for it
/// (inputs in the order `x, w, b`), from ops that have their own derivatives.
fn linear_backward<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    dz: &Tensor<T>,
    has_bias: bool,
    needs: &[bool],
) -> Result<Grads<T>> {
    let mut grads: Grads<T> = Grads::from([None, None]);
    if needs[0] {
        grads[0] = Some(dz.matmul(w)?);
    }
    if needs[1] {
        grads[1] = Some(dz.t()?.matmul(x)?);
    }
    if has_bias {
        grads.push(if needs[2] { Some(dz.sum(&[0], false)?) } else { None });
    }
    Ok(grads)
}

/// [`linear_backward`] on recorded values (for `backward_var`): the same formulas with `Var`
/// ops, so that the gradients can be differentiated again.
fn linear_backward_var<T: Float>(x: &Var<T>, w: &Var<T>, dz: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
    let mut grads = vec![None, None];
    if needs[0] {
        grads[0] = Some(dz.matmul(w)?);
    }
    if needs[1] {
        grads[1] = Some(dz.t()?.matmul(x)?);
    }
    if needs.len() == 3 {
        grads.push(if needs[2] { Some(dz.sum(&[0], false)?) } else { None });
    }
    Ok(grads)
}

// ─── Linear ──────────────────────  z = x Wᵀ + b
//   dx = dz W,  dW = dzᵀ x,  db = Σ_rows dz
struct Linear<T: Float> {
    x: Tensor<T>,
    w: Tensor<T>,
    has_bias: bool,
}
impl<T: Float> Backward<T> for Linear<T> {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        linear_backward(&self.x, &self.w, dz, self.has_bias, needs)
    }
    fn backward_var(&self, dz: &Var<T>, inputs: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        linear_backward_var(&inputs[0], &inputs[1], dz, needs)
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.x, &self.w]
    }
}

/// `x Wᵀ + b` for `x` `[batch, in]`, `w` `[out, in]` and `b` `[out]`, as one recorded op: what
/// `x.matmul(&w.t()?)?.add(b)?` computes, without the intermediate product or the pass that adds
/// the bias. `w` is read in place as its transpose.
///
/// # Errors
/// `linear` when the shapes do not fit together.
///
/// ```
/// use tapegrad_autograd::{fused::linear, Var};
/// use tapegrad_tensor::Tensor;
/// let x = Var::new(Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2])?);
/// let w = Var::parameter(Tensor::from_vec(vec![1.0f32, 1.0, 0.0, 1.0], &[2, 2])?);
/// let b = Var::parameter(Tensor::from_vec(vec![10.0f32, 20.0], &[2])?);
/// let y = linear(&x, &w, Some(&b))?;
/// assert_eq!(y.value().to_vec(), vec![13.0, 22.0]);
/// y.sum_all().backward()?;
/// assert_eq!(w.grad().unwrap().to_vec(), vec![1.0, 2.0, 1.0, 2.0]);
/// assert_eq!(b.grad().unwrap().to_vec(), vec![1.0, 1.0]);
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn linear<T: Float>(x: &Var<T>, w: &Var<T>, b: Option<&Var<T>>) -> Result<Var<T>> {
    let (xv, wv) = (x.value(), w.value());
    let out = xv.linear(&wv, b.map(Var::value).as_ref())?;
    let make = || Linear { x: xv, w: wv, has_bias: b.is_some() };
    Ok(match b {
        Some(b) => Var::from_op(out, &[x, w, b], make),
        None => Var::from_op(out, &[x, w], make),
    })
}

// ─── LinearReluDropout ─────────  y = dropout(relu(x Wᵀ + b), p)
//   dz = dy / (1 - p) where kept and not y <= 0 (a kept NaN passes, as PyTorch's dropout then
//   threshold_backward), else 0;  then as Linear
struct LinearReluDropout<T: Float> {
    x: Tensor<T>,
    w: Tensor<T>,
    /// The output: `y > 0` exactly where the element was kept and its pre-activation positive
    /// (`z / (1 - p) > 0` iff `z > 0`); a NaN pre-activation is NaN kept or dropped, which the
    /// record's mask tells apart. It is the next layer's input, so saving it costs no memory.
    y: Tensor<T>,
    record: DropoutRecord,
}
impl<T: Float> Backward<T> for LinearReluDropout<T> {
    fn name(&self) -> &'static str {
        "linear_relu_dropout"
    }
    fn backward(&self, dy: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        let dz = self.record.mask().relu_scale_backward(&self.y, dy, self.record.scale())?;
        linear_backward(&self.x, &self.w, &dz, true, needs)
    }
    fn backward_var(&self, dy: &Var<T>, inputs: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        // The factor `scale` where kept and not `y <= 0`, else 0 (piecewise constant); then as
        // Linear.
        let (scale, mask) = (self.record.scale::<T>(), self.record.mask());
        let factors: Vec<T> = (self.y.to_vec().into_iter().enumerate())
            .map(|(i, y)| if y <= T::ZERO || !mask.get(i) { T::ZERO } else { scale })
            .collect();
        let factors = Tensor::from_vec(factors, self.y.shape())?;
        linear_backward_var(&inputs[0], &inputs[1], &dy.mul(&Var::new(factors))?, needs)
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.x, &self.w, &self.y]
    }
    fn extra_bytes(&self) -> usize {
        self.record.mask_bytes()
    }
    fn dropout(&self) -> Option<&DropoutRecord> {
        Some(&self.record)
    }
}

/// `dropout(relu(x Wᵀ + b), p)` with the mask drawn from `gen`, as one recorded op: the hidden
/// layer of an MLP. The GEMM accumulates into the broadcast bias, then one pass applies ReLU and
/// the mask; backward masks `dy` where the output is positive (kept and past the ReLU) in one
/// pass and runs the GEMMs of [`linear`]'s backward.
///
/// The values and the mask are those of `dropout(&linear(x, w, Some(b))?.relu(), p, gen)`: the
/// generator advances by the same number of words. The tape entry carries the
/// [`DropoutRecord`], as a plain dropout's does. `p = 0` is `linear` followed by `relu`.
///
/// # Errors
/// `linear` when the shapes do not fit together; `linear_relu_dropout` when `p` is outside [0, 1] or NaN.
///
/// ```
/// use tapegrad_autograd::{fused::linear_relu_dropout, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let x = Var::new(Tensor::<f32>::ones(&[4, 3]));
/// let w = Var::parameter(Tensor::<f32>::ones(&[5, 3]));
/// let b = Var::parameter(Tensor::<f32>::zeros(&[5]));
/// let y = linear_relu_dropout(&x, &w, &b, 0.5, &mut Generator::new(0))?;
/// assert!(y.value().to_vec().iter().all(|&v| v == 0.0 || v == 6.0));
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn linear_relu_dropout<T: Float>(
    x: &Var<T>,
    w: &Var<T>,
    b: &Var<T>,
    p: f64,
    gen: &mut Generator,
) -> Result<Var<T>> {
    const OP: &str = "linear_relu_dropout";
    check_p(OP, p)?;
    if p == 0.0 {
        return Ok(linear(x, w, Some(b))?.relu());
    }
    let (xv, wv) = (x.value(), w.value());
    let out = xv.linear(&wv, Some(&b.value()))?;
    let record = DropoutRecord::draw(out.numel(), p, gen)?;
    // relu, the mask and the scale in one SIMD pass (NaN stays NaN, as in `Tensor::relu`).
    let out = record.mask().relu_scale(out, record.scale())?;
    let y = out.clone();
    Ok(Var::from_op(out, &[x, w, b], || LinearReluDropout { x: xv, w: wv, y, record }))
}

// ─── ScaledDotProductAttention ──  y = dropout(softmax(q kᵀ · scale + mask)) v
//   dv = W'ᵀ dy,  dW = dropout(dy vᵀ),  dS = softmax_backward(W, dW) · scale,  dq = dS k,  dk = dSᵀ q
struct ScaledDotProductAttention<T: Float> {
    q: Tensor<T>,
    k: Tensor<T>,
    v: Tensor<T>,
    /// The weights before dropout (softmax's output).
    weights: Tensor<T>,
    /// The additive mask as given (the caller's tensor, shared, not copied). The first-order
    /// backward reads the saved weights and never needs it; the recorded backward rebuilds the
    /// weights from `q` and `k` as `Var`s, and the mask is part of that formula.
    attn_mask: Option<Tensor<T>>,
    /// As given: `None` is the tensor op's default, `1 / √D`.
    scale: Option<f64>,
    record: Option<DropoutRecord>,
}
impl<T: Float> ScaledDotProductAttention<T> {
    /// The options of the forward this op recorded (its mask, scale and dropout).
    fn options(&self) -> AttentionOptions<'_, T> {
        let dropout = self.record.as_ref().map(|r| AttentionDropout { mask: r.mask(), p: r.p });
        AttentionOptions { attn_mask: self.attn_mask.as_ref(), scale: self.scale, dropout }
    }
}
impl<T: Float> Backward<T> for ScaledDotProductAttention<T> {
    fn name(&self) -> &'static str {
        "scaled_dot_product_attention"
    }
    fn backward(&self, dy: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        let g = self.q.scaled_dot_product_attention_backward(
            &self.k,
            &self.v,
            &self.weights,
            dy,
            &self.options(),
            [needs[0], needs[1], needs[2]],
        )?;
        Ok(Grads::from([g.dq, g.dk, g.dv]))
    }
    fn backward_var(&self, dy: &Var<T>, inputs: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        // The tensor backward's steps in the same order, as `Var` ops (so the same numbers, bit
        // for bit, while a row of weights fits in one reduction chunk): the weights are rebuilt
        // from the recorded `q` and `k` (`matmul`, `mul_scalar`, `add` of the mask as a constant,
        // `softmax`) so that their dependence on `q` and `k` is differentiated too, and both
        // dropouts are `dropout` ops with the forward's stored record, never a new draw.
        let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
        let n = self.q.ndim();
        let last2 = |t: &Var<T>| t.transpose(n - 2, n - 1);
        let keep = |t: &Var<T>| match &self.record {
            Some(record) => with_record(t, record.clone()),
            None => Ok(t.clone()),
        };
        let scale = self.options().scale_for(self.q.shape()[n - 1]);
        let w = if q.requires_grad() || k.requires_grad() {
            let mut scores = q.matmul(&last2(k)?)?.mul_scalar(scale);
            if let Some(mask) = &self.attn_mask {
                scores = scores.add(&constant(mask.clone()))?;
            }
            scores.softmax(n - 1)?
        } else {
            // Nothing to differentiate the weights for: the saved ones, as a constant.
            constant(self.weights.clone())
        };
        let dv = if needs[2] { Some(last2(&keep(&w)?)?.matmul(dy)?) } else { None };
        let (mut dq, mut dk) = (None, None);
        if needs[0] || needs[1] {
            let dw = keep(&dy.matmul(&last2(v)?)?)?;
            // softmax_backward(W, dW) · scale = (dW - Σ dW W) W · scale, as its kernel orders it.
            let total = dw.mul(&w)?.sum(&[n - 1], true)?;
            let ds = dw.sub(&total)?.mul(&w)?.mul_scalar(scale);
            if needs[0] {
                dq = Some(ds.matmul(k)?);
            }
            if needs[1] {
                dk = Some(last2(&ds)?.matmul(q)?);
            }
        }
        Ok(vec![dq, dk, dv])
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        let mut saved = vec![&self.q, &self.k, &self.v, &self.weights];
        saved.extend(&self.attn_mask);
        saved
    }
    fn extra_bytes(&self) -> usize {
        self.record.as_ref().map_or(0, DropoutRecord::mask_bytes)
    }
    fn dropout(&self) -> Option<&DropoutRecord> {
        self.record.as_ref()
    }
}

/// Scaled dot-product attention, PyTorch's `F.scaled_dot_product_attention`, as one recorded op:
/// for `q` `[.., L, D]`, `k` `[.., S, D]` and `v` `[.., S, Dv]` with the same leading dims,
/// `y = dropout(softmax(q kᵀ · scale + attn_mask), p) v`, `[.., L, Dv]`.
///
/// - `attn_mask` (no gradient) is added to the scaled scores and must broadcast to `[.., L, S]`;
///   `-inf` forbids a position, and a row with every position forbidden gets NaN.
/// - `scale` defaults to `1 / √D`.
/// - `p > 0` drops attention weights with a mask drawn from `gen` exactly as
///   [`dropout`](crate::dropout) draws it (the same generator words), stored on the tape at one
///   bit per weight; `p = 0` draws nothing.
///
/// The values are those of the composition `(q.matmul(kᵀ) · scale + mask).softmax()`, dropout,
/// `matmul(v)`; the op saves `q`, `k`, `v` and the weights instead of every intermediate, and
/// scales, masks and normalises each row of scores in one pass ([`Tensor::scaled_dot_product_attention`]).
///
/// Backward: `dv = W'ᵀ dy`, `dS = softmax_backward(W, dropout(dy vᵀ)) · scale`, `dq = dS k`,
/// `dk = dSᵀ q` (`W'` the weights after dropout). With `create_graph` ([`grad`](crate::grad))
/// the same steps are recorded as `Var` ops, the weights rebuilt from `q`, `k` and the mask
/// (which the op keeps, shared with the caller, for this) and both dropouts applied with the
/// stored mask, so the gradient can be differentiated again (a gradient penalty through
/// attention); its values are the first-order ones.
///
/// # Errors
/// `scaled_dot_product_attention` naming the shapes when the operands or the mask do not fit,
/// or when `p` is outside [0, 1] or NaN.
///
/// ```
/// use tapegrad_autograd::{fused::scaled_dot_product_attention, Var};
/// use tapegrad_tensor::{Generator, Tensor, TensorNew};
/// let mut gen = Generator::new(0);
/// let q = Var::parameter(Tensor::<f32>::randn(&[2, 4, 5, 8], &mut gen)); // [batch, heads, L, D]
/// let kv = Var::parameter(Tensor::<f32>::randn(&[2, 4, 6, 8], &mut gen));
/// let y = scaled_dot_product_attention(&q, &kv, &kv, None, 0.1, None, &mut gen)?;
/// assert_eq!(y.shape(), vec![2, 4, 5, 8]);
/// y.sum_all().backward()?;
/// assert_eq!(kv.grad().unwrap().shape(), &[2, 4, 6, 8]);
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn scaled_dot_product_attention<T: Float>(
    q: &Var<T>,
    k: &Var<T>,
    v: &Var<T>,
    attn_mask: Option<&Tensor<T>>,
    p: f64,
    scale: Option<f64>,
    gen: &mut Generator,
) -> Result<Var<T>> {
    const OP: &str = "scaled_dot_product_attention";
    check_p(OP, p)?;
    let (qv, kv, vv) = (q.value(), k.value(), v.value());
    // Shapes checked before anything is drawn: one draw per weight, `[.., L, S]`.
    let weights = tapegrad_tensor::checked_numel(OP, &qv.attention_weights_shape(&kv, &vv)?)?;
    let record = if p > 0.0 { Some(DropoutRecord::draw(weights, p, gen)?) } else { None };
    let dropout = record.as_ref().map(|r| AttentionDropout { mask: r.mask(), p });
    let a = qv.scaled_dot_product_attention(&kv, &vv, &AttentionOptions { attn_mask, scale, dropout })?;
    let weights = a.weights;
    let attn_mask = attn_mask.cloned();
    Ok(Var::from_op(a.out, &[q, k, v], || ScaledDotProductAttention {
        q: qv,
        k: kv,
        v: vv,
        weights,
        attn_mask,
        scale,
        record,
    }))
}
