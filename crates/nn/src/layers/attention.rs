//! `MultiheadAttention`: scaled dot-product attention over several heads, with PyTorch's packed
//! parameter layout (`in_proj_weight = [W_q; W_k; W_v]`) and `batch_first = true`.

use crate::layers::DropoutNew;
use crate::layers::LinearNew;
use tapegrad_autograd::fused::{linear, scaled_dot_product_attention};
use tapegrad_autograd::Var;
use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};

use crate::layers::dropout::Dropout;
use crate::layers::linear::{uniform_bound, Linear};
use crate::module::Module;

const OP: &str = "MultiheadAttention";

/// Multi-head attention, batch first: for `query` `[N, L, E]` and `key`, `value` `[N, S, E]`,
/// with `H` heads of width `D = E / H`,
///
/// `Q = query W_qᵀ + b_q`, `K = key W_kᵀ + b_k`, `V = value W_vᵀ + b_v`, split into heads;
/// `A = dropout(softmax(Q Kᵀ / √D + mask))` per head; `y = concat_h(A V) W_oᵀ + b_o`.
///
/// Parameters as PyTorch names them: `in_proj_weight` `[3E, E]` (`W_q; W_k; W_v` stacked,
/// xavier-uniform), `in_proj_bias` `[3E]` (zeros), `out_proj.weight` `[E, E]` (Linear's
/// default) and `out_proj.bias` `[E]` (zeros). The dropout acts on the attention weights `A` in
/// training, drawn from the layer's `Dropout` as that layer would draw it and stored on the
/// tape at one bit per weight. The heads' attention is one fused op
/// ([`scaled_dot_product_attention`]: scores, scale, mask, softmax, dropout and the weighted sum,
/// with its own backward); the projections are `matmul` and `add`.
///
/// ```
/// use tapegrad_nn::{Module, MultiheadAttention, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let mut gen = Generator::new(0);
/// let mha: MultiheadAttention = MultiheadAttention::new(8, 2, 0.0, &mut gen)?;
/// let x = Var::new(Tensor::randn(&[2, 5, 8], &mut gen));
/// assert_eq!(mha.forward(&x)?.shape(), vec![2, 5, 8]); // self-attention
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
// Printed as PyTorch prints it: only `out_proj`.
#[derive(crate::Module)]
#[module(float = T)]
pub struct MultiheadAttention<T: Float = f32> {
    /// `[3E, E]`: the query, key and value projections stacked.
    #[module(no_print)]
    pub in_proj_weight: Var<T>,
    /// `[3E]`.
    #[module(no_print)]
    pub in_proj_bias: Var<T>,
    /// The output projection, `E → E`.
    pub out_proj: Linear<T>,
    #[module(no_print)]
    dropout: Dropout<T>,
    #[module(skip)]
    embed_dim: usize,
    #[module(skip)]
    num_heads: usize,
}

impl<T: Float> MultiheadAttention<T> {
    /// Gives the attention dropout its own generator (for reproducible masks, or a gradient
    /// check).
    pub fn with_generator(self, gen: Generator) -> MultiheadAttention<T> {
        MultiheadAttention { dropout: self.dropout.with_generator(gen), ..self }
    }

    /// The model width `E`.
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// The number of heads `H`.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// The attention dropout probability.
    pub fn dropout_p(&self) -> f64 {
        self.dropout.p()
    }

    /// Attention of `query` `[N, L, E]` over `key` and `value` `[N, S, E]`, returning `[N, L, E]`.
    ///
    /// - `attn_mask`: added to the scores before the softmax, of shape `[L, S]` (shared by every
    ///   batch element and head) or `[N·H, L, S]`; use `-inf` to forbid a position (a causal
    ///   mask has `-inf` above the diagonal).
    /// - `key_padding_mask`: `N·S` flags, row-major `[N, S]`; `true` marks a key to ignore.
    ///
    /// A query row whose keys are all masked gets NaN, as in PyTorch.
    ///
    /// # Errors
    /// `MultiheadAttention` naming the shapes when the inputs or masks do not fit.
    pub fn attend(
        &self,
        query: &Var<T>,
        key: &Var<T>,
        value: &Var<T>,
        attn_mask: Option<&Tensor<T>>,
        key_padding_mask: Option<&[bool]>,
    ) -> Result<Var<T>> {
        let (e, h) = (self.embed_dim, self.num_heads);
        let d = e / h;
        let (qs, ks, vs) = (query.shape(), key.shape(), value.shape());
        for s in [&qs, &ks, &vs] {
            if s.len() != 3 || s[2] != e {
                return Err(Error::shape(OP, s, format!("expected [N, L, {e}] (batch first)")));
            }
        }
        if ks != vs || ks[0] != qs[0] {
            return Err(Error::mismatch(
                OP,
                &ks,
                &vs,
                format!("key and value must have the same shape and batch size {} of the query", qs[0]),
            ));
        }
        let (n, l, s) = (qs[0], qs[1], ks[1]);

        let project = |x: &Var<T>, i: usize| -> Result<Var<T>> {
            let w = self.in_proj_weight.narrow(0, i * e, e)?;
            let b = self.in_proj_bias.narrow(0, i * e, e)?;
            // [N·len, E] rows through one fused op (GEMM and bias), then [N, len, H, D] as a
            // view, permuted to [N, H, len, D]: the attention reads the heads where they are.
            let len = x.shape()[1];
            let y = linear(&x.reshape(&[n * len, e])?, &w, Some(&b))?;
            y.reshape(&[n, len, h, d])?.permute(&[0, 2, 1, 3])
        };
        let q = project(query, 0)?;
        let k = project(key, 1)?;
        let v = project(value, 2)?;

        let mut mask = match attn_mask {
            Some(mask) => Some(match mask.shape() {
                [ml, ms] if *ml == l && *ms == s => mask.reshape(&[1, 1, l, s])?,
                [b, ml, ms] if *b == n * h && *ml == l && *ms == s => mask.reshape(&[n, h, l, s])?,
                other => {
                    return Err(Error::shape(
                        OP,
                        other,
                        format!("attn_mask must be [{l}, {s}] or [{}, {l}, {s}]", n * h),
                    ))
                }
            }),
            None => None,
        };
        if let Some(pad) = key_padding_mask {
            if pad.len() != n * s {
                return Err(Error::shape(
                    OP,
                    &[pad.len()],
                    format!("key_padding_mask must hold N·S = {} flags ([{n}, {s}])", n * s),
                ));
            }
            let additive: Vec<T> = pad.iter().map(|&m| if m { T::NEG_INFINITY } else { T::ZERO }).collect();
            let pad = Tensor::from_vec(additive, &[n, 1, 1, s])?;
            mask = Some(match mask {
                Some(mask) => mask.add(&pad)?,
                None => pad,
            });
        }
        // One op for the heads' attention: scores, scale, mask, softmax and the dropout of the
        // weights (drawn from this layer's dropout, as a `Dropout` layer would draw it).
        let scale = 1.0 / (d as f64).sqrt();
        let attended = self
            .dropout
            .draw_with(|p, gen| scaled_dot_product_attention(&q, &k, &v, mask.as_ref(), p, Some(scale), gen))?;
        let y = attended.permute(&[0, 2, 1, 3])?.reshape(&[n, l, e])?;
        self.out_proj.forward(&y)
    }
}

tapegrad_tensor::f32_default! {
    /// The constructors of [`MultiheadAttention`] for every element type: `MultiheadAttention::<f64>::new(..)`, or
    /// `MultiheadAttention::<T>::new(..)` in generic code. `MultiheadAttention::new(..)` without a type means `f32`.
    MultiheadAttentionNew for MultiheadAttention {
        /// A layer over `embed_dim` features with `num_heads` heads and attention dropout `p`,
        /// initialised from `gen` as PyTorch does.
        ///
        /// # Errors
        /// `MultiheadAttention` when `num_heads` is 0 or does not divide `embed_dim`; `dropout`
        /// when `p` is outside [0, 1].
        fn new(embed_dim: usize, num_heads: usize, p: f64, gen: &mut Generator) -> Result<Self> {
            if num_heads == 0 || !embed_dim.is_multiple_of(num_heads) {
                return Err(Error::arg(OP, format!("embed_dim {embed_dim} must be divisible by num_heads {num_heads}")));
            }
            let dropout = Dropout::<T>::new(p)?;
            let bound = (6.0 / (4 * embed_dim).max(1) as f64).sqrt();
            let in_proj_weight = Var::parameter(uniform_bound(&[3 * embed_dim, embed_dim], bound, gen));
            let in_proj_bias = Var::parameter(Tensor::<T>::zeros(&[3 * embed_dim]));
            let mut out_proj = Linear::<T>::new_no_bias(embed_dim, embed_dim, gen);
            out_proj.bias = Some(Var::parameter(Tensor::<T>::zeros(&[embed_dim])));
            Ok(MultiheadAttention { in_proj_weight, in_proj_bias, out_proj, dropout, embed_dim, num_heads })
        }
    }
}

impl<T: Float> Module<T> for MultiheadAttention<T> {
    /// Self-attention: `attend(x, x, x, None, None)` for `x` of shape `[N, L, E]`.
    ///
    /// # Errors
    /// As [`MultiheadAttention::attend`].
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        self.attend(x, x, x, None, None)
    }
}

/// The additive causal mask of a sequence of `len` positions, `[len, len]`: 0 where a query may
/// look (its own position and earlier ones, `j ≤ i`) and `-inf` above the diagonal, the
/// `attn_mask` [`MultiheadAttention::attend`] and
/// [`TransformerEncoderLayer::forward_masked`](crate::TransformerEncoderLayer::forward_masked)
/// take. PyTorch's `nn.Transformer.generate_square_subsequent_mask(len)`.
///
/// # Errors
/// `causal_mask` when `len · len` elements overflow.
///
/// ```
/// use tapegrad_nn::causal_mask;
/// let m = causal_mask::<f32>(3)?;
/// assert_eq!(m.to_vec(), vec![0.0, f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0, 0.0, f32::NEG_INFINITY, 0.0, 0.0, 0.0]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn causal_mask<T: Float>(len: usize) -> Result<Tensor<T>> {
    tapegrad_tensor::checked_numel("causal_mask", &[len, len])?;
    let data = (0..len * len).map(|k| if k % len > k / len { T::NEG_INFINITY } else { T::ZERO }).collect();
    Tensor::from_vec(data, &[len, len])
}
