//! `TransformerEncoderLayer`: self-attention and a feed-forward block, each with a residual
//! connection and a LayerNorm, as PyTorch's `nn.TransformerEncoderLayer` (batch first).

use crate::layers::DropoutNew;
use crate::layers::LayerNormNew;
use crate::layers::LinearNew;
use crate::layers::MultiheadAttentionNew;
use tapegrad_autograd::Var;
use tapegrad_tensor::{Float, Generator, Result, Tensor};

use crate::layers::attention::MultiheadAttention;
use crate::layers::dropout::Dropout;
use crate::layers::linear::Linear;
use crate::layers::norm::LayerNorm;
use crate::module::Module;

/// The feed-forward block's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    /// `max(x, 0)` (PyTorch's default).
    #[default]
    Relu,
    /// The exact GELU, `x Φ(x)`.
    Gelu,
}

/// One Transformer encoder layer over `[N, L, d_model]` (batch first). Post-norm (the default,
/// `norm_first = false`):
///
/// `x = norm1(x + dropout1(self_attn(x)))`, then
/// `x = norm2(x + dropout2(linear2(dropout(act(linear1(x))))))`;
///
/// pre-norm (`norm_first = true`): `x = x + dropout1(self_attn(norm1(x)))`, then
/// `x = x + dropout2(linear2(dropout(act(linear1(norm2(x))))))`.
///
/// Parameter names are PyTorch's (`self_attn.in_proj_weight`, `linear1.weight`,
/// `norm1.bias`, ...), so state dicts map one to one. The attention's dropout and the three
/// others use the same `p`.
///
/// ```
/// use tapegrad_nn::{Module, TransformerEncoderLayer, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let mut gen = Generator::new(0);
/// let mut layer: TransformerEncoderLayer = TransformerEncoderLayer::new(8, 2, 16, 0.1, &mut gen)?;
/// layer.eval();
/// let y = layer.forward(&Var::new(Tensor::randn(&[2, 3, 8], &mut gen)))?;
/// assert_eq!(y.shape(), vec![2, 3, 8]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T)]
pub struct TransformerEncoderLayer<T: Float = f32> {
    /// Self-attention over the sequence.
    pub self_attn: MultiheadAttention<T>,
    /// `d_model → dim_feedforward`.
    pub linear1: Linear<T>,
    /// Dropout after the activation.
    pub dropout: Dropout<T>,
    /// `dim_feedforward → d_model`.
    pub linear2: Linear<T>,
    /// The LayerNorm of the attention block.
    pub norm1: LayerNorm<T>,
    /// The LayerNorm of the feed-forward block.
    pub norm2: LayerNorm<T>,
    /// Dropout on the attention block's output.
    pub dropout1: Dropout<T>,
    /// Dropout on the feed-forward block's output.
    pub dropout2: Dropout<T>,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    norm_first: bool,
}

impl<T: Float> TransformerEncoderLayer<T> {
    /// Sets the feed-forward activation.
    pub fn activation(mut self, activation: Activation) -> TransformerEncoderLayer<T> {
        self.activation = activation;
        self
    }

    /// Pre-norm (`true`) or post-norm (`false`, the default).
    pub fn norm_first(mut self, norm_first: bool) -> TransformerEncoderLayer<T> {
        self.norm_first = norm_first;
        self
    }

    /// Gives each of the four dropouts its own generator, seeded `seed`, `seed + 1`, ...
    /// (reproducible masks independent of other draws; needed inside a gradient check).
    pub fn with_seed(self, seed: u64) -> TransformerEncoderLayer<T> {
        TransformerEncoderLayer {
            self_attn: self.self_attn.with_generator(Generator::new(seed)),
            dropout: self.dropout.with_generator(Generator::new(seed.wrapping_add(1))),
            dropout1: self.dropout1.with_generator(Generator::new(seed.wrapping_add(2))),
            dropout2: self.dropout2.with_generator(Generator::new(seed.wrapping_add(3))),
            ..self
        }
    }

    /// The layer with masks passed to the self-attention (see [`MultiheadAttention::attend`]).
    ///
    /// # Errors
    /// As [`MultiheadAttention::attend`].
    pub fn forward_masked(
        &self,
        x: &Var<T>,
        attn_mask: Option<&Tensor<T>>,
        key_padding_mask: Option<&[bool]>,
    ) -> Result<Var<T>> {
        let sa = |x: &Var<T>| -> Result<Var<T>> {
            self.dropout1.forward(&self.self_attn.attend(x, x, x, attn_mask, key_padding_mask)?)
        };
        let ff = |x: &Var<T>| -> Result<Var<T>> {
            let h = self.linear1.forward(x)?;
            let h = match self.activation {
                Activation::Relu => h.relu(),
                Activation::Gelu => h.gelu(),
            };
            self.dropout2.forward(&self.linear2.forward(&self.dropout.forward(&h)?)?)
        };
        if self.norm_first {
            let x = x.add(&sa(&self.norm1.forward(x)?)?)?;
            Ok(x.add(&ff(&self.norm2.forward(&x)?)?)?)
        } else {
            let x = self.norm1.forward(&x.add(&sa(x)?)?)?;
            self.norm2.forward(&x.add(&ff(&x)?)?)
        }
    }
}

tapegrad_tensor::f32_default! {
    /// The constructors of [`TransformerEncoderLayer`] for every element type: `TransformerEncoderLayer::<f64>::new(..)`, or
    /// `TransformerEncoderLayer::<T>::new(..)` in generic code. `TransformerEncoderLayer::new(..)` without a type means `f32`.
    TransformerEncoderLayerNew for TransformerEncoderLayer {
        /// A post-norm ReLU layer with dropout `p` everywhere, initialised from `gen` as PyTorch
        /// does (LayerNorm eps `1e-5`).
        ///
        /// # Errors
        /// `MultiheadAttention` when `nhead` does not divide `d_model`; `dropout` when `p` is
        /// outside [0, 1].
        fn new(
            d_model: usize,
            nhead: usize,
            dim_feedforward: usize,
            p: f64,
            gen: &mut Generator,
        ) -> Result<Self> {
            Ok(TransformerEncoderLayer {
                self_attn: MultiheadAttention::<T>::new(d_model, nhead, p, gen)?,
                linear1: Linear::<T>::new(d_model, dim_feedforward, gen),
                dropout: Dropout::<T>::new(p)?,
                linear2: Linear::<T>::new(dim_feedforward, d_model, gen),
                norm1: LayerNorm::<T>::new(&[d_model]),
                norm2: LayerNorm::<T>::new(&[d_model]),
                dropout1: Dropout::<T>::new(p)?,
                dropout2: Dropout::<T>::new(p)?,
                activation: Activation::Relu,
                norm_first: false,
            })
        }
    }
}

impl<T: Float> Module<T> for TransformerEncoderLayer<T> {
    /// `x` of shape `[N, L, d_model]`; see the type's docs.
    ///
    /// # Errors
    /// `MultiheadAttention` when `x` is not `[N, L, d_model]`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        self.forward_masked(x, None, None)
    }
}

// ─── TransformerEncoder ─────────────────────────────────────────────────────────

/// A stack of [`TransformerEncoderLayer`]s applied in order, then an optional final
/// [`LayerNorm`], as PyTorch's `nn.TransformerEncoder` (batch first): `x = norm(layer_k(...
/// layer_1(x)))`, each layer given the same masks.
///
/// Parameter names are PyTorch's (`layers.0.self_attn.in_proj_weight`, `norm.weight`). PyTorch
/// builds its layers as copies of one layer, so they start from identical weights; here the
/// layers are given (build each from the generator for independent initialisations, or load a
/// state dict for PyTorch's).
///
/// ```
/// use tapegrad_nn::{causal_mask, LayerNorm, Module, TransformerEncoder, TransformerEncoderLayer, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let mut gen = Generator::new(0);
/// let layers = (0..2).map(|_| TransformerEncoderLayer::new(8, 2, 16, 0.0, &mut gen)).collect::<Result<Vec<_>, _>>()?;
/// let enc = TransformerEncoder::new(layers).with_norm(LayerNorm::new(&[8]));
/// let x = Var::new(Tensor::randn(&[2, 5, 8], &mut gen));
/// assert_eq!(enc.forward_masked(&x, Some(&causal_mask(5)?), None)?.shape(), vec![2, 5, 8]);
/// assert_eq!(enc.named_parameters()[0].0, "layers.0.self_attn.in_proj_weight");
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T)]
pub struct TransformerEncoder<T: Float = f32> {
    /// The layers, applied in order.
    pub layers: Vec<TransformerEncoderLayer<T>>,
    /// The final LayerNorm, if any.
    pub norm: Option<LayerNorm<T>>,
}

impl<T: Float> TransformerEncoder<T> {
    /// The stack of `layers`, without a final norm.
    pub fn new(layers: Vec<TransformerEncoderLayer<T>>) -> TransformerEncoder<T> {
        TransformerEncoder { layers, norm: None }
    }

    /// Adds the final LayerNorm (PyTorch's `norm=` argument; usual with pre-norm layers).
    pub fn with_norm(mut self, norm: LayerNorm<T>) -> TransformerEncoder<T> {
        self.norm = Some(norm);
        self
    }

    /// The stack with masks passed to every layer's self-attention (see
    /// [`MultiheadAttention::attend`]; [`causal_mask`](crate::causal_mask) builds the causal
    /// `attn_mask`).
    ///
    /// # Errors
    /// `MultiheadAttention` when `x` is not `[N, L, d_model]` or a mask does not fit.
    pub fn forward_masked(
        &self,
        x: &Var<T>,
        attn_mask: Option<&Tensor<T>>,
        key_padding_mask: Option<&[bool]>,
    ) -> Result<Var<T>> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward_masked(&h, attn_mask, key_padding_mask)?;
        }
        match &self.norm {
            Some(norm) => norm.forward(&h),
            None => Ok(h),
        }
    }
}

impl<T: Float> Module<T> for TransformerEncoder<T> {
    /// `x` of shape `[N, L, d_model]`, no masks; see the type's docs.
    ///
    /// # Errors
    /// As [`TransformerEncoder::forward_masked`].
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        self.forward_masked(x, None, None)
    }
}
