//! `DropConnect`: a linear layer whose weights, not activations, are dropped (Wan et al., 2013).

use std::fmt;

use tapegrad_autograd::{fused, Var};
use tapegrad_tensor::{Float, Generator, Result};

use super::{DropoutState, Kind};
use crate::layers::linear::{Linear, LinearNew};
use crate::module::Module;

/// A fully connected layer with DropConnect: in training each weight is dropped with
/// probability `p` and the kept ones scaled by `1 / (1 - p)`, a new mask at every forward call,
/// then `y = x (W ⊙ M / (1 - p))ᵀ + b`; in eval mode it is exactly [`Linear`], `y = x Wᵀ + b`.
/// Shapes as `Linear`: `x` `[..., in_features]`, `weight` `[out_features, in_features]`, `bias`
/// `[out_features]`; parameters are named `weight` and `bias` as `Linear`'s, so a checkpoint of
/// one loads into the other.
///
/// Wan et al., 2013 ("Regularization of Neural Networks using DropConnect") drop weights without
/// rescaling and approximate the network's average at inference by moment matching (a Gaussian
/// per unit, sampled). This layer does what AWD-LSTM's `WeightDrop` (Merity et al., 2017) and
/// PyTorch-NLP's `WeightDropLinear` do instead: inverted dropout on the weight, so its expected
/// value is `W`, and the plain weight at eval. The mask is the one
/// [`dropout`](tapegrad_autograd::dropout) draws for the weight `Var` (seeded, stored on the tape
/// at one bit per weight); backward gives `dW = (dyᵀ x) ⊙ M / (1 - p)` through that mask. The
/// bias is not dropped. Each forward draws `in_features · out_features` words from the layer's
/// own generator ([`with_generator`](Self::with_generator)), or else the thread's default one;
/// `p = 1` drops every weight and the output is the bias alone.
///
/// # Errors
/// Construction and [`set_p`](Self::set_p): `dropout` when `p` is outside [0, 1] or NaN.
/// `forward`: a shape error naming the op when `x`'s last dim is not `in_features`.
///
/// ```
/// use tapegrad_nn::{DropConnect, Module, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let mut fc = DropConnect::new(8, 4, 0.5, &mut Generator::new(0))?.with_generator(Generator::new(1));
/// let x = Var::new(Tensor::<f32>::ones(&[2, 8]));
/// let y = fc.forward(&x)?; // a new mask over the 32 weights
/// assert!(y.tape().iter().any(|e| e.dropout.as_ref().is_some_and(|d| d.numel == 32)));
/// fc.eval(); // the plain linear layer
/// assert!(fc.forward(&x)?.tape().iter().all(|e| e.dropout.is_none()));
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct DropConnect<T: Float = f32> {
    /// `[out_features, in_features]`.
    pub weight: Var<T>,
    /// `[out_features]`, or `None` for a layer built without bias.
    pub bias: Option<Var<T>>,
    #[module(flatten)]
    state: DropoutState,
    #[module(skip)]
    in_features: usize,
    #[module(skip)]
    out_features: usize,
}

impl<T: Float> DropConnect<T> {
    /// DropConnect with drop probability `p` on the weights of `linear` (which it takes over:
    /// same parameters, same names).
    ///
    /// # Errors
    /// `dropout` when `p` is outside [0, 1] or NaN.
    ///
    /// ```
    /// use tapegrad_nn::{DropConnect, Linear, Module};
    /// use tapegrad_tensor::Generator;
    /// let fc = DropConnect::from_linear(Linear::new(3, 2, &mut Generator::new(0)), 0.2)?;
    /// let names: Vec<String> = fc.named_parameters().into_iter().map(|(n, _)| n).collect();
    /// assert_eq!(names, ["weight", "bias"]);
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    pub fn from_linear(linear: Linear<T>, p: f64) -> Result<DropConnect<T>> {
        let (in_features, out_features) = (linear.in_features(), linear.out_features());
        Ok(DropConnect {
            weight: linear.weight,
            bias: linear.bias,
            state: DropoutState::new(p, Kind::Element)?,
            in_features,
            out_features,
        })
    }

    super::dropout_state_methods!(DropConnect, "[0, 1]");

    /// The input width.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// The output width.
    pub fn out_features(&self) -> usize {
        self.out_features
    }
}

tapegrad_tensor::f32_default! {
    /// The constructors of [`DropConnect`] for every element type: `DropConnect::<f64>::new(..)`,
    /// or `DropConnect::<T>::new(..)` in generic code.
    DropConnectNew for DropConnect {
        /// A layer with bias, initialised from `gen` as [`Linear::new`] (PyTorch's uniform
        /// `±1/√in_features`), with drop probability `p`.
        ///
        /// # Errors
        /// `dropout` when `p` is outside [0, 1] or NaN.
        fn new(in_features: usize, out_features: usize, p: f64, gen: &mut Generator) -> Result<Self> {
            Self::from_linear(LinearNew::new(in_features, out_features, gen), p)
        }
    }
}

impl<T: Float> Module<T> for DropConnect<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        // The dropout op on the weight Var: identity (the weight itself) unless sampling.
        let w = self.state.forward(&self.weight)?;
        let shape = x.shape();
        if shape.len() >= 2 && shape[shape.len() - 1] == self.in_features && self.in_features > 0 {
            // `[.., in]` as the rows of one matrix, through the fused linear op.
            let rows = shape[..shape.len() - 1].iter().product();
            let y = fused::linear(&x.reshape(&[rows, self.in_features])?, &w, self.bias.as_ref())?;
            let mut out_shape = shape;
            if let Some(last) = out_shape.last_mut() {
                *last = self.out_features;
            }
            return y.reshape(&out_shape);
        }
        let y = x.matmul(&w.t()?)?;
        match &self.bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }
}

impl<T: Float> fmt::Display for DropConnect<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DropConnect(in_features={}, out_features={}, bias={}, p={})",
            self.in_features,
            self.out_features,
            if self.bias.is_some() { "True" } else { "False" },
            self.state.p
        )
    }
}
