//! The dropout layers: `Dropout` (optionally with a mask shared along chosen dims),
//! `Dropout2d`, `AlphaDropout`, `FeatureAlphaDropout`, `GaussianDropout`, `DropPath`, and Monte
//! Carlo prediction ([`mc_predict`]); and `DropConnect`, a linear layer whose weights are dropped.
//!
//! A layer holds only `p`, its mode and optionally its own generator; the maths and the stored
//! masks live in `tapegrad_autograd` (as PyTorch splits `nn.Dropout` from `F.dropout`). In eval
//! mode a dropout layer returns its input as is: nothing is copied or recorded. `set_p` changes
//! the rate in place, so a schedule needs no rebuilt model.

mod drop_connect;
mod mc;

use std::fmt;
use std::marker::PhantomData;

use tapegrad_autograd::{
    alpha_dropout, check_gaussian_p, check_p, drop_path, dropout, dropout2d, dropout_shared, feature_alpha_dropout,
    gaussian_dropout, Var,
};
use tapegrad_tensor::{Error, Float, Generator, Result};

use crate::module::{GeneratorSlot, Mode, Module, PoolOrder};

pub use drop_connect::{DropConnect, DropConnectNew};
pub use mc::mc_predict;

/// Which mask (or noise) a dropout layer draws.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Element,
    /// One mask value shared along these dims ([`dropout_shared`]).
    Shared(Vec<usize>),
    Channel,
    Alpha,
    FeatureAlpha,
    Gaussian,
    Path,
}

impl Kind {
    /// The op name a bad `p` or input is reported under.
    fn op(&self) -> &'static str {
        match self {
            Kind::Element => "dropout",
            Kind::Shared(_) => "dropout_shared",
            Kind::Channel => "dropout2d",
            Kind::Alpha => "alpha_dropout",
            Kind::FeatureAlpha => "feature_alpha_dropout",
            Kind::Gaussian => "gaussian_dropout",
            Kind::Path => "drop_path",
        }
    }

    /// Checks `p` for this kind: [0, 1], or [0, 1) for Gaussian noise (infinite variance at 1).
    fn check(&self, p: f64) -> Result<()> {
        match self {
            Kind::Gaussian => check_gaussian_p(self.op(), p),
            _ => check_p(self.op(), p),
        }
    }
}

/// The state every dropout layer shares (visited in the layer's place: its mode, and its
/// generator slot under the layer's own name).
#[derive(crate::Module)]
struct DropoutState {
    #[module(skip)]
    p: f64,
    #[module(mode)]
    mode: Mode,
    #[module(skip)]
    kind: Kind,
    #[module(flatten)]
    gen: GeneratorSlot,
}

impl DropoutState {
    fn new(p: f64, kind: Kind) -> Result<DropoutState> {
        kind.check(p)?;
        Ok(DropoutState { p, mode: Mode::dropout(), kind, gen: GeneratorSlot::new(None) })
    }

    fn set_p(&mut self, p: f64) -> Result<()> {
        self.kind.check(p)?;
        self.p = p;
        Ok(())
    }

    fn forward<T: Float>(&self, x: &Var<T>) -> Result<Var<T>> {
        if self.kind == Kind::Channel {
            check_dropout2d_input(x.value().shape())?;
        }
        if !self.mode.dropout_active() || self.p == 0.0 {
            return Ok(x.clone());
        }
        let run = |gen: &mut Generator| match &self.kind {
            Kind::Element => dropout(x, self.p, gen),
            Kind::Shared(dims) => dropout_shared(x, self.p, dims, gen),
            Kind::Channel => dropout2d(x, self.p, gen),
            Kind::Alpha => alpha_dropout(x, self.p, gen),
            Kind::FeatureAlpha => feature_alpha_dropout(x, self.p, gen),
            Kind::Gaussian => gaussian_dropout(x, self.p, gen),
            Kind::Path => drop_path(x, self.p, gen),
        };
        self.gen.with(run)
    }
}

impl DropoutState {
    /// PyTorch's repr (timm's for `DropPath`), without PyTorch's `inplace=False`.
    fn repr(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Element => write!(f, "Dropout(p={})", self.p),
            Kind::Shared(dims) => write!(f, "Dropout(p={}, shared_dims={dims:?})", self.p),
            Kind::Channel => write!(f, "Dropout2d(p={})", self.p),
            Kind::Alpha => write!(f, "AlphaDropout(p={})", self.p),
            Kind::FeatureAlpha => write!(f, "FeatureAlphaDropout(p={})", self.p),
            Kind::Gaussian => write!(f, "GaussianDropout(p={})", self.p),
            Kind::Path => write!(f, "DropPath(drop_prob={:.3})", self.p),
        }
    }
}

/// `Dropout2d` takes `[N, C, H, W]` only: a 3-dim input is refused rather than guessed at.
fn check_dropout2d_input(shape: &[usize]) -> Result<()> {
    match shape.len() {
        4 => Ok(()),
        3 => Err(Error::shape(
            "Dropout2d",
            shape,
            "expects [N, C, H, W]; a 3-dim input would be read as [N, C, H], not as one unbatched [C, H, W] map: \
             add a batch dim with unsqueeze(0) (or use dropout_shared for channel dropout of [N, C, L])",
        )),
        _ => Err(Error::shape("Dropout2d", shape, "expects [N, C, H, W]")),
    }
}

/// The methods of every layer whose dropout lives in a `state: DropoutState` field (the dropout
/// layers below and `DropConnect`): its own generator, `p` and `set_p`, whether it samples, and
/// the generator's save and restore. Expanded inside the layer's `impl<T: Float> $name<T>`.
macro_rules! dropout_state_methods {
    ($name:ident, $range:literal) => {
        /// Gives the layer its own generator, so its masks do not depend on other draws.
        pub fn with_generator(self, gen: tapegrad_tensor::Generator) -> $name<T> {
            self.state.gen.set(Some(gen));
            self
        }

        /// The drop probability.
        pub fn p(&self) -> f64 {
            self.state.p
        }

        /// Sets the drop probability (a schedule changes it between steps without
        /// rebuilding the model); the next forward uses it.
        ///
        /// # Errors
        #[doc = concat!("When `p` is outside ", $range, " or NaN, naming the op; `p` is then unchanged.")]
        pub fn set_p(&mut self, p: f64) -> tapegrad_tensor::Result<()> {
            self.state.set_p(p)
        }

        /// True when the layer samples: training, Monte Carlo dropout on, or inside
        /// [`mc_predict`](crate::mc_predict).
        pub fn is_active(&self) -> bool {
            self.state.mode.dropout_active()
        }

        /// A copy of the generator the layer draws from (its own, or else the thread's
        /// default one): what a training checkpoint saves so that a resumed run draws the
        /// same masks ([`crate::TrainingCheckpoint`]).
        pub fn generator(&self) -> tapegrad_tensor::Generator {
            self.state.gen.with(|gen| gen.clone())
        }

        /// Replaces the generator the layer draws from (its own, or else the thread's
        /// default one) by `gen`: restoring what [`Self::generator`] saved.
        pub fn set_generator(&self, gen: tapegrad_tensor::Generator) {
            self.state.gen.with(|g| *g = gen)
        }
    };
}
pub(crate) use dropout_state_methods;

macro_rules! dropout_layer {
    ($(#[$doc:meta])* $name:ident, $new:ident, $kind:expr, $range:literal) => {
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
                #[doc = concat!("When `p` is outside ", $range, " or NaN, naming the op.")]
                fn new(p: f64) -> Result<Self> {
                    Ok($name { state: DropoutState::new(p, $kind)?, _element: PhantomData })
                }
            }
        }

        impl<T: Float> $name<T> {
            dropout_state_methods!($name, $range);
        }

        impl<T: Float> Module<T> for $name<T> {
            fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
                self.state.forward(x)
            }

            fn pool_order(&self) -> PoolOrder {
                // One factor per channel, drawn per channel (see `PoolOrder`).
                if self.state.kind == Kind::Channel {
                    PoolOrder::Commutes
                } else {
                    PoolOrder::Other
                }
            }
        }

        impl<T: Float> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.state.repr(f)
            }
        }
    };
}

dropout_layer!(
    /// Inverted dropout: in training, each element is zeroed with probability `p` and the rest
    /// are scaled by `1 / (1 - p)`; in eval mode the input passes through untouched (so the test
    /// pass needs no rescaling). A higher `p` regularises more. Any input shape.
    /// [`with_shared_dims`](Dropout::with_shared_dims) shares one mask value along chosen dims.
    /// Srivastava et al., 2014, "Dropout: A Simple Way to Prevent Neural Networks from
    /// Overfitting"; the op is `tapegrad_autograd::dropout`.
    ///
    /// ```
    /// use tapegrad_nn::{Dropout, Module, Var};
    /// use tapegrad_tensor::Tensor;
    /// let mut drop: Dropout = Dropout::new(0.5)?;
    /// let x = Var::new(Tensor::<f32>::ones(&[8]));
    /// drop.eval();
    /// assert!(drop.forward(&x)?.same_node(&x)); // eval: the input itself
    /// drop.set_p(0.1)?; // a schedule changes the rate in place
    /// assert!(drop.set_p(1.5).is_err());
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    Dropout,
    DropoutNew, Kind::Element, "[0, 1]"
);

impl<T: Float> Dropout<T> {
    /// Shares one mask value along `dims` (Keras's `noise_shape` with 1 at those dims, Flux's
    /// `dims` listing the others): the mask has the input's shape with `dims` set to 1 and is
    /// broadcast, as `tapegrad_autograd::dropout_shared` draws it. For `[B, T, D]` sequences,
    /// `with_shared_dims(&[1])` drops the same features at every step (variational dropout).
    /// Empty `dims` is plain dropout. The dims are checked against the input at `forward`,
    /// which returns an `Err` (op `dropout_shared`) for one out of range or listed twice.
    ///
    /// ```
    /// use tapegrad_nn::{Dropout, Module, Var};
    /// use tapegrad_tensor::{Generator, Tensor};
    /// use tapegrad_nn::dtype::*;
    /// let drop = Dropout::<f32>::new(0.5)?.with_shared_dims(&[1]).with_generator(Generator::new(1));
    /// assert_eq!(drop.to_string(), "Dropout(p=0.5, shared_dims=[1])");
    /// let y = drop.forward(&Var::new(Tensor::<f32>::ones(&[2, 3, 4])))?.value().to_vec();
    /// assert_eq!(&y[0..4], &y[4..8]); // steps 0 and 1 share the mask
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    pub fn with_shared_dims(mut self, dims: &[usize]) -> Dropout<T> {
        self.state.kind = if dims.is_empty() { Kind::Element } else { Kind::Shared(dims.to_vec()) };
        self
    }

    /// The dims the mask is shared along (empty for plain dropout).
    pub fn shared_dims(&self) -> &[usize] {
        match &self.state.kind {
            Kind::Shared(dims) => dims,
            _ => &[],
        }
    }

    /// The drop probability this layer applies now (`p` when active, else 0), and `f` run with
    /// it on the generator the layer draws from: how a layer that applies the dropout inside a
    /// fused op (attention) draws the same masks this layer would (elementwise; shared dims do
    /// not apply there).
    pub(crate) fn draw_with<R>(&self, f: impl FnOnce(f64, &mut Generator) -> R) -> R {
        let p = if self.is_active() { self.state.p } else { 0.0 };
        self.state.gen.with(|gen| f(p, gen))
    }
}

dropout_layer!(
    /// Channel dropout for `[N, C, H, W]` feature maps: whole channels are zeroed with
    /// probability `p` and the rest scaled by `1 / (1 - p)`, as `torch.nn.Dropout2d` does
    /// (Tompson et al., 2015); the op is `tapegrad_autograd::dropout2d`.
    ///
    /// Only 4-dim input is accepted, in every mode. PyTorch reads a 3-dim input as `[N, C, L]`
    /// with a deprecation warning that it will become an unbatched `[C, H, W]`; tapegrad
    /// refuses it instead of guessing: an unbatched map needs `x.unsqueeze(0)` first, and
    /// channel dropout of `[N, C, L]` is `Dropout::with_shared_dims(&[2])`.
    ///
    /// # Errors
    /// `forward`: `Dropout2d` naming the shape when the input does not have 4 dims.
    ///
    /// ```
    /// use tapegrad_nn::{Dropout2d, Module, Var};
    /// use tapegrad_tensor::Tensor;
    /// let drop: Dropout2d = Dropout2d::new(0.5)?;
    /// assert!(drop.forward(&Var::new(Tensor::<f32>::ones(&[3, 8, 8]))).is_err()); // [C, H, W]
    /// let y = drop.forward(&Var::new(Tensor::<f32>::ones(&[1, 3, 8, 8])))?; // unsqueeze(0)d
    /// assert_eq!(y.value().shape(), &[1, 3, 8, 8]);
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    Dropout2d,
    Dropout2dNew, Kind::Channel, "[0, 1]"
);

dropout_layer!(
    /// Alpha dropout for SELU networks: dropped units take SELU's negative saturation value and
    /// an affine correction keeps the mean and variance of the activations, as
    /// `torch.nn.AlphaDropout` does (Klambauer et al., 2017); the op is
    /// `tapegrad_autograd::alpha_dropout`. Any input shape; `p = 1` gives zeros.
    ///
    /// ```
    /// use tapegrad_nn::{AlphaDropout, Module, Var};
    /// use tapegrad_tensor::Tensor;
    /// let drop: AlphaDropout = AlphaDropout::new(0.1)?;
    /// assert_eq!(drop.to_string(), "AlphaDropout(p=0.1)");
    /// assert_eq!(drop.forward(&Var::new(Tensor::<f32>::ones(&[4])))?.value().shape(), &[4]);
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    AlphaDropout,
    AlphaDropoutNew, Kind::Alpha, "[0, 1]"
);

dropout_layer!(
    /// Alpha dropout of whole channels for `[N, C, ...]` inputs of SELU networks: each channel
    /// `(n, c)` is dropped whole to SELU's saturation value, then alpha dropout's affine
    /// correction, as `torch.nn.FeatureAlphaDropout` does (Klambauer et al., 2017); the op is
    /// `tapegrad_autograd::feature_alpha_dropout`. `p = 1` gives zeros.
    ///
    /// # Errors
    /// `forward`: `feature_alpha_dropout` when the input has fewer than 2 dims (while sampling).
    ///
    /// ```
    /// use tapegrad_nn::{FeatureAlphaDropout, Module, Var};
    /// use tapegrad_tensor::Tensor;
    /// let drop: FeatureAlphaDropout = FeatureAlphaDropout::new(0.2)?;
    /// assert_eq!(drop.to_string(), "FeatureAlphaDropout(p=0.2)");
    /// let y = drop.forward(&Var::new(Tensor::<f32>::ones(&[2, 4, 5, 5])))?;
    /// assert_eq!(y.value().shape(), &[2, 4, 5, 5]);
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    FeatureAlphaDropout,
    FeatureAlphaDropoutNew, Kind::FeatureAlpha, "[0, 1]"
);

dropout_layer!(
    /// Gaussian dropout: multiplies each element by noise `e ~ N(1, p / (1 - p))`, the mean and
    /// variance of inverted dropout's `m / (1 - p)` (Srivastava et al., 2014, section 10); the
    /// op is `tapegrad_autograd::gaussian_dropout`. Eval mode and `p = 0`: the identity. `p`
    /// must be in [0, 1): at 1 the noise variance is infinite. Any input shape.
    ///
    /// ```
    /// use tapegrad_nn::{GaussianDropout, Module, Var};
    /// use tapegrad_tensor::{Generator, Tensor};
    /// use tapegrad_nn::dtype::*;
    /// let mut drop = GaussianDropout::<f64>::new(0.5)?.with_generator(Generator::new(1));
    /// assert!(GaussianDropout::<f64>::new(1.0).is_err());
    /// let x = Var::new(Tensor::<f64>::ones(&[4]));
    /// assert!(drop.forward(&x)?.value().to_vec().iter().all(|&v| v != 1.0)); // noisy
    /// drop.eval();
    /// assert!(drop.forward(&x)?.same_node(&x));
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    GaussianDropout,
    GaussianDropoutNew, Kind::Gaussian, "[0, 1)"
);

dropout_layer!(
    /// Drop path (stochastic depth) for residual branches: each sample (row of dim 0) is zeroed
    /// whole with probability `p` and the kept ones scaled by `1 / (1 - p)`, as timm's
    /// `DropPath` (`scale_by_keep=True`) and torchvision's `StochasticDepth(p, "row")` do (Huang
    /// et al., 2016). Apply it to the branch, `x + drop_path.forward(&branch(x))?`. The op is
    /// `tapegrad_autograd::drop_path`; `p = 1` gives zeros. Prints as timm's does.
    ///
    /// # Errors
    /// `forward`: `drop_path` for a 0-dim input (while sampling).
    ///
    /// ```
    /// use tapegrad_nn::{DropPath, Module, Var};
    /// use tapegrad_tensor::{Generator, Tensor};
    /// use tapegrad_nn::dtype::*;
    /// let drop = DropPath::<f32>::new(0.1)?.with_generator(Generator::new(2));
    /// assert_eq!(drop.to_string(), "DropPath(drop_prob=0.100)");
    /// let y = drop.forward(&Var::new(Tensor::<f32>::ones(&[16, 3])))?.value().to_vec();
    /// assert!(y.chunks(3).all(|row| row.iter().all(|&v| v == row[0])));
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    DropPath,
    DropPathNew, Kind::Path, "[0, 1]"
);
