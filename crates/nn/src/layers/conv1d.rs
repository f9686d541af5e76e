//! `Conv1d`: a 1-D convolution over `[N, C_in, L]`, as PyTorch's `nn.Conv1d`.
//!
//! It runs the 2-D convolution op on a unit-height view: the zero padding is concatenated along
//! `L` first (the 2-D op pads both spatial dims alike), the input is viewed as
//! `[N, C_in, 1, L + 2p]` and the weight `[C_out, C_in, k]` as `[C_out, C_in, 1, k]`. The tape
//! records `cat`, `unsqueeze`, `reshape`, `conv2d` and `squeeze`, whose backward rules compose to
//! the 1-D convolution's.

use std::fmt;

use tapegrad_autograd::Var;
use tapegrad_tensor::{Error, Float, Generator, Result, Tensor, TensorNew};

use crate::layers::linear::uniform_bound;
use crate::module::Module;

/// A 1-D convolution (cross-correlation): for `x` of shape `[N, C_in, L]`,
/// `y[n, o, i] = b[o] + Σ_c Σ_j W[o, c, j] · x_pad[n, c, i·s + j]`, of shape
/// `[N, C_out, (L + 2p − k) / s + 1]`, where `x_pad` is `x` with `p` zeros on each side.
///
/// Initialised as PyTorch does: weight and bias uniform in `±1/√(C_in · k)`. Backward: `dx` is
/// the transposed convolution of `dy`, `dW` the correlation of `x` with `dy`, `db` the sum of
/// `dy` over `N` and `L` (through the 2-D op).
///
/// ```
/// use tapegrad_nn::{Conv1d, Module, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let conv: Conv1d = Conv1d::new(3, 4, 5, 1, 2, &mut Generator::new(0));
/// let y = conv.forward(&Var::new(Tensor::ones(&[2, 3, 10])))?;
/// assert_eq!(y.shape(), vec![2, 4, 10]);
/// assert_eq!(conv.to_string(), "Conv1d(3, 4, kernel_size=(5,), stride=(1,), padding=(2,))");
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct Conv1d<T: Float = f32> {
    /// `[C_out, C_in, k]`, PyTorch's layout.
    pub weight: Var<T>,
    /// `[C_out]`, or `None` for a layer built without bias.
    pub bias: Option<Var<T>>,
    stride: usize,
    padding: usize,
}

impl<T: Float> Conv1d<T> {
    /// A layer from given tensors: `weight` `[C_out, C_in, k]`, `bias` `[C_out]`.
    ///
    /// # Errors
    /// `Conv1d::from_tensors` when the weight is not 3-D, the bias does not match, or the
    /// stride is 0.
    pub fn from_tensors(
        weight: Tensor<T>,
        bias: Option<Tensor<T>>,
        stride: usize,
        padding: usize,
    ) -> Result<Conv1d<T>> {
        const OP: &str = "Conv1d::from_tensors";
        let w = weight.shape().to_vec();
        if w.len() != 3 {
            return Err(Error::shape(OP, &w, "the weight must be [out_channels, in_channels, kernel_size]"));
        }
        if stride == 0 {
            return Err(Error::shape(OP, &w, "the stride must be at least 1"));
        }
        if let Some(b) = &bias {
            if b.shape() != [w[0]] {
                return Err(Error::mismatch(OP, &w, b.shape(), format!("the bias must be [{}]", w[0])));
            }
        }
        Ok(Conv1d { weight: Var::parameter(weight), bias: bias.map(Var::parameter), stride, padding })
    }

    /// `[C_out, C_in, k]`.
    fn dims(&self) -> [usize; 3] {
        let w = self.weight.shape();
        [w[0], w[1], w[2]]
    }

    /// The number of input channels.
    pub fn in_channels(&self) -> usize {
        self.dims()[1]
    }

    /// The number of output channels.
    pub fn out_channels(&self) -> usize {
        self.dims()[0]
    }

    /// The kernel's length.
    pub fn kernel_size(&self) -> usize {
        self.dims()[2]
    }

    /// The stride.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The zero padding on each side.
    pub fn padding(&self) -> usize {
        self.padding
    }
}

/// PyTorch's initialisation bound for weight and bias, `1/√fan_in` with `fan_in = C_in · k`.
fn init_bound(in_channels: usize, kernel_size: usize) -> f64 {
    1.0 / ((in_channels * kernel_size).max(1) as f64).sqrt()
}

tapegrad_tensor::f32_default! {
    /// The constructors of [`Conv1d`] for every element type: `Conv1d::<f64>::new(..)`, or
    /// `Conv1d::<T>::new(..)` in generic code. `Conv1d::new(..)` without a type means `f32`.
    Conv1dNew for Conv1d {
        /// A layer with bias, initialised from `gen` as PyTorch does. A stride of 0 is taken
        /// as 1.
        fn new(
            in_channels: usize,
            out_channels: usize,
            kernel_size: usize,
            stride: usize,
            padding: usize,
            gen: &mut Generator,
        ) -> Self {
            let mut layer = Self::new_no_bias(in_channels, out_channels, kernel_size, stride, padding, gen);
            layer.bias = Some(Var::parameter(uniform_bound(&[out_channels], init_bound(in_channels, kernel_size), gen)));
            layer
        }

        /// A layer without bias. A stride of 0 is taken as 1.
        fn new_no_bias(
            in_channels: usize,
            out_channels: usize,
            kernel_size: usize,
            stride: usize,
            padding: usize,
            gen: &mut Generator,
        ) -> Self {
            let bound = init_bound(in_channels, kernel_size);
            let weight = Var::parameter(uniform_bound(&[out_channels, in_channels, kernel_size], bound, gen));
            Conv1d { weight, bias: None, stride: stride.max(1), padding }
        }
    }
}

impl<T: Float> Module<T> for Conv1d<T> {
    /// # Errors
    /// `Conv1d` naming the shape when the input is not `[N, C_in, L]` or the kernel is longer
    /// than the padded input.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let shape = x.shape();
        let [c_out, c_in, k] = self.dims();
        let &[n, c, l] = shape.as_slice() else {
            return Err(Error::shape(
                "Conv1d",
                &shape,
                format!("expected a 3-D input [N, C_in, L], got {} dims", shape.len()),
            ));
        };
        if c != c_in {
            return Err(Error::shape("Conv1d", &shape, format!("expected {c_in} input channels, got {c}")));
        }
        let p = self.padding;
        if l + 2 * p < k {
            return Err(Error::shape(
                "Conv1d",
                &shape,
                format!("the kernel ({k}) is longer than the padded input ({})", l + 2 * p),
            ));
        }
        let x = if p == 0 {
            x.clone()
        } else {
            let zeros = Var::new(Tensor::<T>::zeros(&[n, c, p]));
            Var::cat(&[&zeros, x, &zeros], 2)?
        };
        let w = self.weight.reshape(&[c_out, c_in, 1, k])?;
        x.unsqueeze(2)?.conv2d(&w, self.bias.as_ref(), self.stride, 0)?.squeeze(2)
    }
}

impl<T: Float> fmt::Display for Conv1d<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ([c_out, c_in, k], s, p) = (self.dims(), self.stride, self.padding);
        write!(f, "Conv1d({c_in}, {c_out}, kernel_size=({k},), stride=({s},)")?;
        if p != 0 {
            write!(f, ", padding=({p},)")?;
        }
        if self.bias.is_none() {
            write!(f, ", bias=False")?;
        }
        write!(f, ")")
    }
}
