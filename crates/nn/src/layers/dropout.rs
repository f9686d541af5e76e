//! The dropout layers: `Dropout`, `Dropout2d`, `AlphaDropout`, and Monte Carlo prediction.
//!
//! A layer holds only `p`, its mode and optionally its own generator; the maths and the stored
//! masks live in `tapegrad_autograd` (as PyTorch splits `nn.Dropout` from `F.dropout`). In eval
//! mode a dropout layer returns its input as is: nothing is copied or recorded.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Mutex;
use tapegrad_tensor::TensorNew;

use tapegrad_autograd::{alpha_dropout, check_p, dropout, dropout2d, no_grad, with_default_generator, Var};
use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};

use crate::module::{McSampling, Mode, Module};

/// Which mask a dropout layer draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Element,
    Channel,
    Alpha,
}

/// The state every dropout layer shares (visited in the layer's place: only its mode).
#[derive(crate::Module)]
struct DropoutState {
    #[module(skip)]
    p: f64,
    #[module(mode)]
    mode: Mode,
    #[module(skip)]
    kind: Kind,
    #[module(skip)]
    gen: Option<Mutex<Generator>>,
}

impl DropoutState {
    fn new(p: f64, kind: Kind, op: &'static str) -> Result<DropoutState> {
        check_p(op, p)?;
        Ok(DropoutState { p, mode: Mode::dropout(), kind, gen: None })
    }

    fn forward<T: Float>(&self, x: &Var<T>) -> Result<Var<T>> {
        if !self.mode.dropout_active() || self.p == 0.0 {
            return Ok(x.clone());
        }
        let run = |gen: &mut Generator| match self.kind {
            Kind::Element => dropout(x, self.p, gen),
            Kind::Channel => dropout2d(x, self.p, gen),
            Kind::Alpha => alpha_dropout(x, self.p, gen),
        };
        self.with_generator(run)
    }

    /// Runs `f` on the layer's own generator, or on the thread's default one.
    fn with_generator<R>(&self, f: impl FnOnce(&mut Generator) -> R) -> R {
        match &self.gen {
            Some(gen) => f(&mut gen.lock().unwrap_or_else(|e| e.into_inner())),
            None => with_default_generator(f),
        }
    }
}

macro_rules! dropout_layer {
    ($(#[$doc:meta])* $name:ident, $new:ident, $kind:expr, $op:literal, $torch:literal) => {
        $(#[$doc])*
        #[derive(crate::Module)]
        #[module(float = T, display = false)]
        pub struct $name<T: Float = f32> {
            #[module(flatten)]
            state: DropoutState,
            #[module(skip)]
            _element: PhantomData<fn() -> T>,
        }

        tapegrad_tensor::f32_default! {
            /// The constructor of this layer for every element type (`::<f64>`, or `::<T>` in
            /// generic code); a call without a type means `f32`.
            $new for $name {
                /// A layer with drop probability `p`, drawing from the thread's default generator
                /// (seeded by `manual_seed`).
                ///
                /// # Errors
                #[doc = concat!("`", $op, "` when `p` is outside [0, 1] or NaN.")]
                fn new(p: f64) -> Result<Self> {
                    Ok($name { state: DropoutState::new(p, $kind, $op)?, _element: PhantomData })
                }
            }
        }

        impl<T: Float> $name<T> {
            /// Gives the layer its own generator, so its masks do not depend on other draws.
            pub fn with_generator(mut self, gen: Generator) -> $name<T> {
                self.state.gen = Some(Mutex::new(gen));
                self
            }

            /// The drop probability.
            pub fn p(&self) -> f64 {
                self.state.p
            }

            /// True when the layer samples: training, Monte Carlo dropout on, or inside
            /// [`mc_predict`].
            pub fn is_active(&self) -> bool {
                self.state.mode.dropout_active()
            }
        }

        impl<T: Float> Module<T> for $name<T> {
            fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
                self.state.forward(x)
            }
        }

        impl<T: Float> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(p={})", $torch, self.state.p)
            }
        }
    };
}

dropout_layer!(
    /// Inverted dropout: in training, each element is zeroed with probability `p` and the rest
    /// are scaled by `1 / (1 - p)`; in eval mode the input passes through untouched (so the test
    /// pass needs no rescaling). A higher `p` regularises more.
    ///
    /// ```
    /// use tapegrad_nn::{Dropout, Module, Var};
    /// use tapegrad_tensor::Tensor;
    /// let mut drop: Dropout = Dropout::new(0.5)?;
    /// let x = Var::new(Tensor::<f32>::ones(&[8]));
    /// drop.eval();
    /// assert!(drop.forward(&x)?.same_node(&x)); // eval: the input itself
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    Dropout,
    DropoutNew, Kind::Element, "dropout", "Dropout"
);

dropout_layer!(
    /// Channel dropout for `[N, C, H, W]` feature maps: whole channels are zeroed with
    /// probability `p` and the rest scaled by `1 / (1 - p)`, as `torch.nn.Dropout2d` does.
    Dropout2d,
    Dropout2dNew, Kind::Channel, "dropout2d", "Dropout2d"
);

dropout_layer!(
    /// Alpha dropout for SELU networks: dropped units take SELU's negative saturation value and
    /// an affine correction keeps the mean and variance of the activations, as
    /// `torch.nn.AlphaDropout` does.
    AlphaDropout,
    AlphaDropoutNew, Kind::Alpha, "alpha_dropout", "AlphaDropout"
);

/// Monte Carlo dropout prediction: runs `model` on `x` `samples` times (without recording) with
/// its dropout layers sampling, and returns the elementwise mean and (population) variance of
/// the outputs over the samples.
///
/// This is the standard MC-dropout recipe: only the dropout layers sample (`mc_predict` makes
/// them sample for its duration, on this thread, whatever their mode), everything else runs
/// as in eval mode, so call `model.eval()` first: BatchNorm then normalises with its running
/// statistics and never updates them. (`model.mc_dropout(true)` is not needed, and harmless.)
/// Apply a softmax inside the model (or to its outputs before averaging) to average class
/// probabilities. The masks come from each layer's generator (or the default one), as in a
/// training forward.
///
/// # Errors
/// `mc_predict` when `samples` is 0, when the model has no dropout layer (every sample would
/// be the same), or when a layer other than dropout is in training mode (a BatchNorm would
/// normalise with batch statistics and update its running statistics); errors from `forward`.
pub fn mc_predict<T: Float, M: Module<T> + ?Sized>(
    model: &M,
    x: &Var<T>,
    samples: usize,
) -> Result<(Tensor<T>, Tensor<T>)> {
    if samples == 0 {
        return Err(Error::arg("mc_predict", "samples must be at least 1"));
    }
    let (mut dropouts, mut training) = (0usize, 0usize);
    model.visit_modes(&mut |m| {
        if m.is_dropout {
            dropouts += 1;
        } else if m.training {
            training += 1;
        }
    });
    if training > 0 {
        return Err(Error::arg(
            "mc_predict",
            format!(
                "{training} layer(s) other than dropout (such as BatchNorm) are in training mode, where they \
                 would use batch statistics and update their running statistics: call model.eval() first \
                 (mc_predict makes the dropout layers sample by itself)"
            ),
        ));
    }
    if dropouts == 0 {
        return Err(Error::arg(
            "mc_predict",
            "the model has no dropout layer to sample: every sample would be the same",
        ));
    }
    let _sampling = McSampling::start();
    // Welford's update keeps the variance accurate when the mean is large.
    let mut mean = no_grad(|| model.forward(x))?.value();
    let mut m2 = Tensor::<T>::zeros(mean.shape());
    for i in 1..samples {
        let y = no_grad(|| model.forward(x))?.value();
        let delta = y.sub(&mean)?;
        mean = mean.add(&delta.mul_scalar(T::ONE / T::from_usize(i + 1)))?;
        m2 = m2.add(&delta.mul(&y.sub(&mean)?)?)?;
    }
    Ok((mean, m2.mul_scalar(T::ONE / T::from_usize(samples))))
}

impl<T: Float> Dropout<T> {
    /// The drop probability this layer applies now (`p` when active, else 0), and `f` run with
    /// it on the generator the layer draws from: how a layer that applies the dropout inside a
    /// fused op (attention) draws the same masks this layer would.
    pub(crate) fn draw_with<R>(&self, f: impl FnOnce(f64, &mut Generator) -> R) -> R {
        let p = if self.is_active() { self.state.p } else { 0.0 };
        self.state.with_generator(|gen| f(p, gen))
    }
}
