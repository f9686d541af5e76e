//! Normalisation layers: `BatchNorm1d`, `BatchNorm2d` and `LayerNorm`.
//!
//! Both are composed from recorded `Var` ops (mean, sub, mul, sqrt, div), so their backward is
//! the chain rule through those ops, checked by the gradchecks in `tests/suite/layers.rs`.
//! BatchNorm keeps its running statistics as buffers (constant `Var`s, visited by
//! `visit_buffers` as `running_mean` and `running_var`, saved with the model) and counts its
//! training batches in `num_batches_tracked`, a [`Counter`] saved as PyTorch's int64 buffer.

use std::fmt;
use tapegrad_tensor::TensorNew;

use tapegrad_autograd::{no_grad, Var};
use tapegrad_tensor::{Error, Float, Result, Tensor};

use crate::module::{Counter, Mode, Module};

/// Formats a float as Python's `repr` does (`1e-05`, `0.1`, `1.0`), for the printed layers.
pub(crate) fn py_float(v: f64) -> String {
    if v != 0.0 && v.is_finite() && (v.abs() < 1e-4 || v.abs() >= 1e16) {
        let s = format!("{v:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) => {
                let (sign, digits) = match exp.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', exp),
                };
                format!("{mantissa}e{sign}{digits:0>2}")
            }
            None => s,
        }
    } else if v.is_finite() && v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// `y = (x - mean) / √(var + eps) · weight + bias` over the given dims, with the given
/// `weight` / `bias` already shaped to broadcast.
fn normalize<T: Float>(x: &Var<T>, dims: &[usize], eps: f64) -> Result<(Var<T>, Var<T>, Var<T>)> {
    let mean = x.mean(dims, true)?;
    let xc = x.sub(&mean)?;
    // The biased variance, as PyTorch normalises with.
    let var = xc.mul(&xc)?.mean(dims, true)?;
    let xhat = xc.div(&var.add_scalar(T::from_f64(eps)).sqrt())?;
    Ok((xhat, mean, var))
}

// ─── BatchNorm ──────────────────────────────────────────────────────────────────

/// The state and maths both BatchNorm layers share (visited in the layer's place).
#[derive(crate::Module)]
#[module(float = T)]
struct BatchNorm<T: Float> {
    weight: Var<T>,
    bias: Var<T>,
    #[module(buffer)]
    running_mean: Var<T>,
    #[module(buffer)]
    running_var: Var<T>,
    #[module(no_print)]
    num_batches_tracked: Counter,
    #[module(skip)]
    num_features: usize,
    #[module(skip)]
    eps: f64,
    #[module(skip)]
    momentum: f64,
    #[module(mode)]
    mode: Mode,
}

impl<T: Float> BatchNorm<T> {
    fn new(num_features: usize) -> BatchNorm<T> {
        BatchNorm {
            weight: Var::parameter(Tensor::<T>::ones(&[num_features])),
            bias: Var::parameter(Tensor::<T>::zeros(&[num_features])),
            running_mean: Var::new(Tensor::<T>::zeros(&[num_features])),
            running_var: Var::new(Tensor::<T>::ones(&[num_features])),
            num_batches_tracked: Counter::new(0),
            num_features,
            eps: 1e-5,
            momentum: 0.1,
            mode: Mode::default(),
        }
    }

    fn forward(&self, op: &'static str, x: &Var<T>) -> Result<Var<T>> {
        let shape = x.shape();
        let c = self.num_features;
        if shape[1] != c {
            return Err(Error::shape(op, &shape, format!("expected {c} channels in dim 1, got {}", shape[1])));
        }
        let dims: Vec<usize> = std::iter::once(0).chain(2..shape.len()).collect();
        let mut bshape = vec![1; shape.len()];
        bshape[1] = c;
        let weight = self.weight.reshape(&bshape)?;
        let bias = self.bias.reshape(&bshape)?;
        let xhat = if self.mode.training {
            let n: usize = dims.iter().map(|&d| shape[d]).product();
            if n < 2 {
                return Err(Error::shape(op, &shape, "expected more than 1 value per channel when training"));
            }
            let (xhat, mean, var) = normalize(x, &dims, self.eps)?;
            self.update_running_stats(op, &mean.value().reshape(&[c])?, &var.value().reshape(&[c])?, n)?;
            xhat
        } else {
            let mean = Var::new(self.running_mean.value().reshape(&bshape)?);
            let std = Var::new(self.running_var.value().add_scalar(T::from_f64(self.eps)).sqrt().reshape(&bshape)?);
            x.sub(&mean)?.div(&std)?
        };
        xhat.mul(&weight)?.add(&bias)
    }

    /// One training batch's update of the running statistics from its per-channel `mean` and
    /// biased variance `var` (`[C]`) over `n` values per channel: the running variance takes the
    /// unbiased one, `var · n / (n - 1)`, as PyTorch's; `num_batches_tracked` counts the batch.
    fn update_running_stats(&self, op: &'static str, mean: &Tensor<T>, var: &Tensor<T>, n: usize) -> Result<()> {
        let c = self.num_features;
        for t in [mean, var] {
            if t.shape() != [c] {
                return Err(Error::shape(op, t.shape(), format!("expected [{c}] batch statistics")));
            }
        }
        if n < 2 {
            return Err(Error::arg(op, format!("{n} values per channel: the unbiased variance needs 2 or more")));
        }
        no_grad(|| -> Result<()> {
            let m = T::from_f64(self.momentum);
            let keep = T::from_f64(1.0 - self.momentum);
            let unbiased = var.mul_scalar(T::from_f64(n as f64 / (n - 1) as f64));
            self.running_mean.set_value(self.running_mean.value().mul_scalar(keep).add(&mean.mul_scalar(m))?);
            self.running_var.set_value(self.running_var.value().mul_scalar(keep).add(&unbiased.mul_scalar(m))?);
            self.num_batches_tracked.increment();
            Ok(())
        })
    }

    fn fmt(&self, f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
        write!(
            f,
            "{name}({}, eps={}, momentum={}, affine=True, track_running_stats=True)",
            self.num_features,
            py_float(self.eps),
            py_float(self.momentum)
        )
    }
}

macro_rules! batch_norm {
    ($(#[$doc:meta])* $name:ident, $new:ident, $label:literal, $ranks:expr, $expected:literal) => {
        $(#[$doc])*
        #[derive(crate::Module)]
        #[module(float = T, display = false)]
        pub struct $name<T: Float = f32>(#[module(flatten)] BatchNorm<T>);

        tapegrad_tensor::f32_default! {
            /// The constructor of this layer for every element type (`::<f64>`, or `::<T>` in
            /// generic code); a call without a type means `f32`.
            $new for $name {
                /// A layer over `num_features` channels: weight 1, bias 0, running mean 0,
                /// running variance 1, `eps = 1e-5`, `momentum = 0.1`, in training mode.
                fn new(num_features: usize) -> Self {
                    $name(BatchNorm::new(num_features))
                }
            }
        }

        impl<T: Float> $name<T> {
            /// Sets `eps`, added to the variance under the square root.
            pub fn eps(mut self, eps: f64) -> $name<T> {
                self.0.eps = eps;
                self
            }

            /// Sets the momentum of the running statistics:
            /// `running = (1 - momentum) · running + momentum · batch`.
            pub fn momentum(mut self, momentum: f64) -> $name<T> {
                self.0.momentum = momentum;
                self
            }

            /// The scale `γ`, `[C]` (a parameter, initialised to 1).
            pub fn weight(&self) -> &Var<T> {
                &self.0.weight
            }

            /// The shift `β`, `[C]` (a parameter, initialised to 0).
            pub fn bias(&self) -> &Var<T> {
                &self.0.bias
            }

            /// The running mean, `[C]` (a buffer).
            pub fn running_mean(&self) -> &Var<T> {
                &self.0.running_mean
            }

            /// The running (unbiased) variance, `[C]` (a buffer).
            pub fn running_var(&self) -> &Var<T> {
                &self.0.running_var
            }

            /// Replaces the scale and shift by the given `Var`s (of shape `[C]`), for example
            /// the inputs of a gradient check.
            ///
            /// # Errors
            #[doc = concat!("`", $label, "` when either is not of shape `[C]`.")]
            pub fn set_affine(&mut self, weight: Var<T>, bias: Var<T>) -> Result<()> {
                for v in [&weight, &bias] {
                    if v.shape() != [self.0.num_features] {
                        return Err(Error::shape($label, &v.shape(), format!("expected [{}]", self.0.num_features)));
                    }
                }
                self.0.weight = weight;
                self.0.bias = bias;
                Ok(())
            }

            /// The number of training batches seen (each training `forward` adds one), PyTorch's
            /// `num_batches_tracked`; saved and loaded with the model as an `I64` scalar.
            pub fn num_batches_tracked(&self) -> u64 {
                self.0.num_batches_tracked.get()
            }

            /// The number of channels.
            pub fn num_features(&self) -> usize {
                self.0.num_features
            }

            /// The `eps` added to the variance (`1e-5` unless set by [`eps`](Self::eps)).
            pub fn eps_value(&self) -> f64 {
                self.0.eps
            }

            /// Updates the running statistics with one training batch's per-channel `mean` and
            /// biased `var` (`[C]` each) over `n` values per channel, exactly as a training
            /// `forward` does with its own batch's: `running = (1 - momentum) · running +
            /// momentum · batch`, the variance unbiased (`var · n / (n - 1)`), and
            /// `num_batches_tracked` plus one. For statistics gathered elsewhere (a
            /// synchronised BatchNorm's, over every process's batch).
            ///
            /// # Errors
            #[doc = concat!("`", $label, "` for statistics not of shape `[C]`, or `n < 2`.")]
            pub fn update_running_stats(&self, mean: &Tensor<T>, var: &Tensor<T>, n: usize) -> Result<()> {
                self.0.update_running_stats($label, mean, var, n)
            }
        }

        impl<T: Float> Module<T> for $name<T> {
            /// Training: normalises with the batch statistics and updates the running ones once.
            /// Eval: normalises with the running statistics.
            ///
            /// # Errors
            #[doc = concat!("`", $label, "` for an input that is not ", $expected,
                ", a channel count that differs, or (training) one value per channel.")]
            fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
                let shape = x.shape();
                if !$ranks.contains(&shape.len()) {
                    return Err(Error::shape($label, &shape, concat!("expected ", $expected)));
                }
                self.0.forward($label, x)
            }
        }

        impl<T: Float> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f, $label)
            }
        }
    };
}

batch_norm!(
    /// Batch normalisation over `[N, C]` or `[N, C, L]`: per channel `c`,
    /// `y = (x - μ_c) / √(σ²_c + eps) · γ_c + β_c`, with `μ`, `σ²` the batch mean and biased
    /// variance over `N` (and `L`) in training, the running statistics in eval. Training also
    /// updates `running_mean` and `running_var` (with the unbiased batch variance) by
    /// `momentum`.
    ///
    /// ```
    /// use tapegrad_nn::{BatchNorm1d, Module, Var};
    /// use tapegrad_tensor::Tensor;
    /// let bn: BatchNorm1d = BatchNorm1d::new(2);
    /// let x = Var::new(Tensor::from_vec(vec![1.0, 2.0, 3.0, 6.0], &[2, 2])?);
    /// bn.forward(&x)?;
    /// assert_eq!(bn.running_mean().value().to_vec(), vec![0.2, 0.4]);
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    BatchNorm1d,
    BatchNorm1dNew, "BatchNorm1d", [2usize, 3], "[N, C] or [N, C, L]"
);

batch_norm!(
    /// Batch normalisation over `[N, C, H, W]` feature maps: per channel, statistics over
    /// `N, H, W`; otherwise as [`BatchNorm1d`].
    ///
    /// ```
    /// use tapegrad_nn::{BatchNorm2d, Module, Var};
    /// use tapegrad_tensor::Tensor;
    /// let mut bn = BatchNorm2d::new(3); // f32, as a call without a type means
    /// bn.eval(); // running mean 0, variance 1: nearly the identity
    /// let y = bn.forward(&Var::new(Tensor::ones(&[1, 3, 2, 2])))?;
    /// assert!((y.value().to_vec()[0] - 1.0).abs() < 1e-5);
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    BatchNorm2d,
    BatchNorm2dNew, "BatchNorm2d", [4usize], "[N, C, H, W]"
);

// ─── LayerNorm ──────────────────────────────────────────────────────────────────

/// Layer normalisation over the last dims (`normalized_shape`): for each leading index,
/// `y = (x - μ) / √(σ² + eps) · γ + β` with `μ`, `σ²` the mean and biased variance over those
/// dims, and `γ` (ones), `β` (zeros) of shape `normalized_shape` when `elementwise_affine`.
/// The same in training and eval.
///
/// ```
/// use tapegrad_nn::{LayerNorm, Module, Var};
/// use tapegrad_tensor::Tensor;
/// let ln: LayerNorm = LayerNorm::new(&[4]);
/// assert_eq!(ln.to_string(), "LayerNorm((4,), eps=1e-05, elementwise_affine=True)");
/// let y = ln.forward(&Var::new(Tensor::arange(8).reshape(&[2, 4])?))?;
/// assert!(y.value().sum_all().item()?.abs() < 1e-5);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct LayerNorm<T: Float = f32> {
    /// `γ`, of shape `normalized_shape`, or `None` without elementwise affine.
    pub weight: Option<Var<T>>,
    /// `β`, of shape `normalized_shape`, or `None` without elementwise affine.
    pub bias: Option<Var<T>>,
    #[module(skip)]
    normalized_shape: Vec<usize>,
    #[module(skip)]
    eps: f64,
}

impl<T: Float> LayerNorm<T> {
    /// Sets `eps`, added to the variance under the square root.
    pub fn eps(mut self, eps: f64) -> LayerNorm<T> {
        self.eps = eps;
        self
    }

    /// The normalised trailing shape.
    pub fn normalized_shape(&self) -> &[usize] {
        &self.normalized_shape
    }
}

tapegrad_tensor::f32_default! {
    /// The constructors of [`LayerNorm`] for every element type: `LayerNorm::<f64>::new(..)`, or
    /// `LayerNorm::<T>::new(..)` in generic code. `LayerNorm::new(..)` without a type means `f32`.
    LayerNormNew for LayerNorm {
        /// A layer normalising over the trailing dims `normalized_shape`, with weight and bias.
        fn new(normalized_shape: &[usize]) -> Self {
            LayerNorm {
                weight: Some(Var::parameter(Tensor::<T>::ones(normalized_shape))),
                bias: Some(Var::parameter(Tensor::<T>::zeros(normalized_shape))),
                normalized_shape: normalized_shape.to_vec(),
                eps: 1e-5,
            }
        }

        /// A layer without weight and bias (`elementwise_affine=False`).
        fn new_no_affine(normalized_shape: &[usize]) -> Self {
            LayerNorm { weight: None, bias: None, normalized_shape: normalized_shape.to_vec(), eps: 1e-5 }
        }
    }
}

impl<T: Float> Module<T> for LayerNorm<T> {
    /// # Errors
    /// `LayerNorm` when the input's trailing dims are not `normalized_shape`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let shape = x.shape();
        let k = self.normalized_shape.len();
        if shape.len() < k || shape[shape.len() - k..] != self.normalized_shape[..] || k == 0 {
            return Err(Error::shape(
                "LayerNorm",
                &shape,
                format!("expected trailing dims {:?}", self.normalized_shape),
            ));
        }
        // One recorded op: the statistics, the normalisation and the affine map in one pass
        // over each row.
        x.layer_norm(&self.normalized_shape, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

impl<T: Float> fmt::Display for LayerNorm<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.normalized_shape.iter().map(|d| d.to_string()).collect();
        let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        write!(
            f,
            "LayerNorm({tuple}, eps={}, elementwise_affine={})",
            py_float(self.eps),
            if self.weight.is_some() { "True" } else { "False" }
        )
    }
}
