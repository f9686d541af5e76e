//! `GroupNorm`: normalisation over groups of channels, as PyTorch's `nn.GroupNorm`.
//!
//! It runs the fused `layer_norm` op on a view that puts each group's channels and positions in
//! one trailing dim, then applies the per-channel affine map: no backward rule of its own.

use std::fmt;

use tapegrad_autograd::Var;
use tapegrad_tensor::{Error, Float, Result, Tensor, TensorNew};

use crate::layers::norm::py_float;
use crate::module::Module;

/// Group normalisation of `x` `[N, C, *]` with `G` groups of `C / G` channels:
/// `y = (x − μ) / √(σ² + eps) · γ + β`, with `μ`, `σ²` the mean and biased variance over each
/// sample's group (its channels and all positions), and `γ` (ones), `β` (zeros) of shape `[C]`.
/// The same in training and eval (no running statistics). `G = 1` is a LayerNorm over
/// `[C, *]` with per-channel affine; `G = C` is InstanceNorm.
///
/// Backward: that of `layer_norm` on the `[N, G, C/G · ∏*]` view, then of the affine map.
///
/// ```
/// use tapegrad_nn::{GroupNorm, Module, Var};
/// use tapegrad_tensor::Tensor;
/// let gn: GroupNorm = GroupNorm::new(2, 4)?;
/// assert_eq!(gn.to_string(), "GroupNorm(2, 4, eps=1e-05, affine=True)");
/// let y = gn.forward(&Var::new(Tensor::arange(16).reshape(&[1, 4, 4])?))?;
/// assert!(y.value().narrow(1, 0, 2)?.sum_all().item()?.abs() < 1e-4); // group 0 has mean 0
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct GroupNorm<T: Float = f32> {
    /// `γ`, `[C]`, or `None` without affine.
    pub weight: Option<Var<T>>,
    /// `β`, `[C]`, or `None` without affine.
    pub bias: Option<Var<T>>,
    num_groups: usize,
    num_channels: usize,
    eps: f64,
}

impl<T: Float> GroupNorm<T> {
    /// Sets `eps`, added to the variance under the square root (`1e-5` by default).
    pub fn eps(mut self, eps: f64) -> GroupNorm<T> {
        self.eps = eps;
        self
    }

    /// The number of groups.
    pub fn num_groups(&self) -> usize {
        self.num_groups
    }

    /// The number of channels.
    pub fn num_channels(&self) -> usize {
        self.num_channels
    }
}

fn check_groups(num_groups: usize, num_channels: usize) -> Result<()> {
    if num_groups == 0 || !num_channels.is_multiple_of(num_groups) {
        return Err(Error::arg(
            "GroupNorm",
            format!("num_channels ({num_channels}) must be divisible by num_groups ({num_groups}), which must be at least 1"),
        ));
    }
    Ok(())
}

tapegrad_tensor::f32_default! {
    /// The constructors of [`GroupNorm`] for every element type: `GroupNorm::<f64>::new(..)`, or
    /// `GroupNorm::<T>::new(..)` in generic code. `GroupNorm::new(..)` without a type means `f32`.
    GroupNormNew for GroupNorm {
        /// `num_groups` groups over `num_channels` channels, with weight and bias (eps `1e-5`).
        ///
        /// # Errors
        /// `GroupNorm` when `num_groups` is 0 or does not divide `num_channels`.
        fn new(num_groups: usize, num_channels: usize) -> Result<Self> {
            check_groups(num_groups, num_channels)?;
            Ok(GroupNorm {
                weight: Some(Var::parameter(Tensor::<T>::ones(&[num_channels]))),
                bias: Some(Var::parameter(Tensor::<T>::zeros(&[num_channels]))),
                num_groups,
                num_channels,
                eps: 1e-5,
            })
        }

        /// Without weight and bias (`affine=False`).
        ///
        /// # Errors
        /// As [`GroupNormNew::new`].
        fn new_no_affine(num_groups: usize, num_channels: usize) -> Result<Self> {
            check_groups(num_groups, num_channels)?;
            Ok(GroupNorm { weight: None, bias: None, num_groups, num_channels, eps: 1e-5 })
        }
    }
}

impl<T: Float> Module<T> for GroupNorm<T> {
    /// # Errors
    /// `GroupNorm` naming the shape when the input is not `[N, C, *]` with `C = num_channels`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let shape = x.shape();
        if shape.len() < 2 || shape[1] != self.num_channels {
            return Err(Error::shape(
                "GroupNorm",
                &shape,
                format!("expected an input [N, {}, *] (at least 2 dims)", self.num_channels),
            ));
        }
        let (n, g) = (shape[0], self.num_groups);
        let group: usize = shape[1..].iter().product::<usize>() / g;
        let y = x.reshape(&[n, g, group])?.layer_norm(&[group], None, None, self.eps)?.reshape(&shape)?;
        // The affine map per channel: [C] viewed as [1, C, 1, ...].
        let mut channel = vec![1; shape.len()];
        channel[1] = self.num_channels;
        let y = match &self.weight {
            Some(w) => y.mul(&w.reshape(&channel)?)?,
            None => y,
        };
        match &self.bias {
            Some(b) => y.add(&b.reshape(&channel)?),
            None => Ok(y),
        }
    }
}

impl<T: Float> fmt::Display for GroupNorm<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let affine = if self.weight.is_some() { "True" } else { "False" };
        write!(f, "GroupNorm({}, {}, eps={}, affine={affine})", self.num_groups, self.num_channels, py_float(self.eps))
    }
}
