//! `Linear`: `y = x Wᵀ + b`.

use std::fmt;
use tapegrad_tensor::TensorNew;

use tapegrad_autograd::Var;
use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};

use crate::module::Module;

/// A fully connected layer: `y = x Wᵀ + b` for `x` of shape `[..., in_features]`, `W` of shape
/// `[out_features, in_features]` and `b` of shape `[out_features]`.
///
/// Initialised as PyTorch does: `W` and `b` uniform in `±1/√in_features`. The product reads `Wᵀ`
/// as a transposed view: the GEMM's packing reads it in place, nothing is copied. A 2-D input
/// records one fused op ([`fused::linear`](tapegrad_autograd::fused::linear)): the GEMM
/// accumulates into the broadcast bias, and backward computes the three gradients directly.
///
/// ```
/// use tapegrad_nn::{Linear, Module, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let fc: Linear = Linear::new(3, 2, &mut Generator::new(0));
/// let y = fc.forward(&Var::new(Tensor::ones(&[4, 3])))?;
/// assert_eq!(y.shape(), vec![4, 2]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct Linear<T: Float = f32> {
    /// `[out_features, in_features]`.
    pub weight: Var<T>,
    /// `[out_features]`, or `None` for a layer built without bias.
    pub bias: Option<Var<T>>,
    #[module(skip)]
    in_features: usize,
    #[module(skip)]
    out_features: usize,
}

/// Uniform samples in `[-bound, bound)`: PyTorch's default for Linear and Conv layers.
pub(crate) fn uniform_bound<T: Float>(shape: &[usize], bound: f64, gen: &mut Generator) -> Tensor<T> {
    Tensor::<T>::rand(shape, gen).mul_scalar(T::from_f64(2.0 * bound)).add_scalar(T::from_f64(-bound))
}

impl<T: Float> Linear<T> {
    /// A layer from given tensors (`weight` `[out, in]`, `bias` `[out]`).
    ///
    /// # Errors
    /// `Linear::from_tensors` when the shapes do not fit together.
    pub fn from_tensors(weight: Tensor<T>, bias: Option<Tensor<T>>) -> Result<Linear<T>> {
        if weight.ndim() != 2 {
            return Err(Error::shape(
                "Linear::from_tensors",
                weight.shape(),
                "the weight must be [out_features, in_features]",
            ));
        }
        let (out_features, in_features) = (weight.shape()[0], weight.shape()[1]);
        if let Some(b) = &bias {
            if b.shape() != [out_features] {
                return Err(Error::mismatch(
                    "Linear::from_tensors",
                    weight.shape(),
                    b.shape(),
                    format!("the bias must be [{out_features}]"),
                ));
            }
        }
        Ok(Linear { weight: Var::parameter(weight), bias: bias.map(Var::parameter), in_features, out_features })
    }

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
    /// The constructors of [`Linear`] for every element type: `Linear::<f64>::new(..)`, or
    /// `Linear::<T>::new(..)` in generic code. `Linear::new(..)` without a type means `f32`.
    LinearNew for Linear {
        /// A layer with bias, initialised from `gen`.
        fn new(in_features: usize, out_features: usize, gen: &mut Generator) -> Self {
            let mut layer = Self::new_no_bias(in_features, out_features, gen);
            let bound = 1.0 / (in_features.max(1) as f64).sqrt();
            layer.bias = Some(Var::parameter(uniform_bound(&[out_features], bound, gen)));
            layer
        }

        /// A layer without bias.
        fn new_no_bias(in_features: usize, out_features: usize, gen: &mut Generator) -> Self {
            let bound = 1.0 / (in_features.max(1) as f64).sqrt();
            let weight = Var::parameter(uniform_bound(&[out_features, in_features], bound, gen));
            Linear { weight, bias: None, in_features, out_features }
        }
    }
}

impl<T: Float> Module<T> for Linear<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let shape = x.value().shape().to_vec();
        if matches!(shape.as_slice(), &[_, k] if k == self.in_features) {
            // One recorded op: the GEMM accumulates into the broadcast bias. (Other shapes take
            // the matmul path, which also names them in its error.)
            return tapegrad_autograd::fused::linear(x, &self.weight, self.bias.as_ref());
        }
        if shape.len() > 2 && shape[shape.len() - 1] == self.in_features && self.in_features > 0 {
            // `[.., in]` as the rows of one matrix (a view when `x` is contiguous): the fused op
            // on `[rows, in]`, whose weight gradient is one product over all rows, then the
            // leading dims back.
            let rows = shape[..shape.len() - 1].iter().product();
            let y = tapegrad_autograd::fused::linear(
                &x.reshape(&[rows, self.in_features])?,
                &self.weight,
                self.bias.as_ref(),
            )?;
            let mut out_shape = shape;
            *out_shape.last_mut().expect("more than two dims") = self.out_features;
            return y.reshape(&out_shape);
        }
        let y = x.matmul(&self.weight.t()?)?;
        Ok(match &self.bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }
}

impl<T: Float> fmt::Display for Linear<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Linear(in_features={}, out_features={}, bias={})",
            self.in_features,
            self.out_features,
            if self.bias.is_some() { "True" } else { "False" }
        )
    }
}
