//! Convolution and pooling layers: `Conv2d`, `MaxPool2d`, `AvgPool2d`, and `Flatten`, which
//! turns their feature maps into rows for a `Linear`.
//!
//! The layers hold the configuration and the parameters; the maths (im2col + GEMM, the pooling
//! windows and their backward rules) lives in the `Var` ops of `tapegrad_autograd`.

use std::fmt;
use std::marker::PhantomData;

use tapegrad_autograd::Var;
use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};

use crate::layers::linear::uniform_bound;
use crate::module::{Module, PoolOrder};

/// Checks a 4-D `[N, C, H, W]` input (and, if given, its channel count).
fn check_4d(op: &'static str, shape: &[usize], channels: Option<usize>) -> Result<()> {
    if shape.len() != 4 {
        return Err(Error::shape(op, shape, format!("expected a 4-D input [N, C, H, W], got {} dims", shape.len())));
    }
    if let Some(c) = channels {
        if shape[1] != c {
            return Err(Error::shape(op, shape, format!("expected {c} input channels, got {}", shape[1])));
        }
    }
    Ok(())
}

// ─── Conv2d ─────────────────────────────────────────────────────────────────────

/// A 2-D convolution (cross-correlation, as PyTorch's): for an input `x` of shape
/// `[N, C_in, H, W]`, `y[n, o] = b[o] + Σ_c W[o, c] ⋆ x[n, c]`, of shape
/// `[N, C_out, (H + 2p - k) / s + 1, (W + 2p - k) / s + 1]`.
///
/// Initialised as PyTorch does (`kaiming_uniform(a = √5)`): weight and bias uniform in
/// `±1/√fan_in` with `fan_in = C_in · k · k`. Backward: `dx` is the transposed convolution of
/// `dy`, `dW` the correlation of `x` with `dy`, `db` the sum of `dy` over `N, H, W`.
///
/// ```
/// use tapegrad_nn::{Conv2d, Module, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let conv: Conv2d = Conv2d::new(3, 4, 3, 1, 1, &mut Generator::new(0));
/// let y = conv.forward(&Var::new(Tensor::ones(&[2, 3, 8, 8])))?;
/// assert_eq!(y.shape(), vec![2, 4, 8, 8]);
/// assert_eq!(conv.to_string(), "Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))");
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct Conv2d<T: Float = f32> {
    /// `[C_out, C_in, k, k]`.
    pub weight: Var<T>,
    /// `[C_out]`, or `None` for a layer built without bias.
    pub bias: Option<Var<T>>,
    #[module(skip)]
    in_channels: usize,
    #[module(skip)]
    out_channels: usize,
    #[module(skip)]
    kernel_size: usize,
    #[module(skip)]
    stride: usize,
    #[module(skip)]
    padding: usize,
}

impl<T: Float> Conv2d<T> {
    /// A layer from given tensors: `weight` `[C_out, C_in, k, k]`, `bias` `[C_out]`.
    ///
    /// # Errors
    /// `Conv2d::from_tensors` when the weight is not a square 4-D kernel, the bias does not
    /// match, or the stride is 0.
    pub fn from_tensors(
        weight: Tensor<T>,
        bias: Option<Tensor<T>>,
        stride: usize,
        padding: usize,
    ) -> Result<Conv2d<T>> {
        const OP: &str = "Conv2d::from_tensors";
        let w = weight.shape().to_vec();
        if w.len() != 4 || w[2] != w[3] {
            return Err(Error::shape(OP, &w, "the weight must be [out_channels, in_channels, k, k]"));
        }
        if stride == 0 {
            return Err(Error::shape(OP, &w, "the stride must be at least 1"));
        }
        if let Some(b) = &bias {
            if b.shape() != [w[0]] {
                return Err(Error::mismatch(OP, &w, b.shape(), format!("the bias must be [{}]", w[0])));
            }
        }
        Ok(Conv2d {
            weight: Var::parameter(weight),
            bias: bias.map(Var::parameter),
            in_channels: w[1],
            out_channels: w[0],
            kernel_size: w[2],
            stride,
            padding,
        })
    }

    /// The number of input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// The number of output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The kernel's side.
    pub fn kernel_size(&self) -> usize {
        self.kernel_size
    }

    /// The stride (both directions).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The zero padding on each side.
    pub fn padding(&self) -> usize {
        self.padding
    }
}

tapegrad_tensor::f32_default! {
    /// The constructors of [`Conv2d`] for every element type: `Conv2d::<f64>::new(..)`, or
    /// `Conv2d::<T>::new(..)` in generic code. `Conv2d::new(..)` without a type means `f32`.
    Conv2dNew for Conv2d {
        /// A layer with bias and a square `kernel_size` kernel, initialised from `gen`.
        fn new(
            in_channels: usize,
            out_channels: usize,
            kernel_size: usize,
            stride: usize,
            padding: usize,
            gen: &mut Generator,
        ) -> Self {
            let mut layer = Self::new_no_bias(in_channels, out_channels, kernel_size, stride, padding, gen);
            let bound = 1.0 / ((in_channels * kernel_size * kernel_size).max(1) as f64).sqrt();
            layer.bias = Some(Var::parameter(uniform_bound(&[out_channels], bound, gen)));
            layer
        }

        /// A layer without bias.
        fn new_no_bias(
            in_channels: usize,
            out_channels: usize,
            kernel_size: usize,
            stride: usize,
            padding: usize,
            gen: &mut Generator,
        ) -> Self {
            let bound = 1.0 / ((in_channels * kernel_size * kernel_size).max(1) as f64).sqrt();
            let weight = Var::parameter(uniform_bound(&[out_channels, in_channels, kernel_size, kernel_size], bound, gen));
            Conv2d { weight, bias: None, in_channels, out_channels, kernel_size, stride, padding }
        }
    }
}

impl<T: Float> Module<T> for Conv2d<T> {
    /// # Errors
    /// `Conv2d` when the input is not `[N, C_in, H, W]`; `conv2d` when the kernel does not fit
    /// in the padded input.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        check_4d("Conv2d", &x.shape(), Some(self.in_channels))?;
        x.conv2d(&self.weight, self.bias.as_ref(), self.stride, self.padding)
    }

    /// The convolution and the max pooling after it as one op (`Var::conv2d_max_pool2d`): for
    /// the 2 x 2 pool, the full-size convolution output and its gradient are never written.
    fn forward_max_pool(&self, x: &Var<T>, pool: [usize; 3]) -> Option<Result<Var<T>>> {
        let fused = || {
            check_4d("Conv2d", &x.shape(), Some(self.in_channels))?;
            x.conv2d_max_pool2d(&self.weight, self.bias.as_ref(), self.stride, self.padding, pool)
        };
        Some(fused())
    }
}

impl<T: Float> fmt::Display for Conv2d<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (k, s, p) = (self.kernel_size, self.stride, self.padding);
        write!(f, "Conv2d({}, {}, kernel_size=({k}, {k}), stride=({s}, {s})", self.in_channels, self.out_channels)?;
        if p != 0 {
            write!(f, ", padding=({p}, {p})")?;
        }
        if self.bias.is_none() {
            write!(f, ", bias=False")?;
        }
        write!(f, ")")
    }
}

// ─── Pooling ────────────────────────────────────────────────────────────────────

macro_rules! pool_layer {
    ($(#[$doc:meta])* $name:ident, $new:ident, $op:ident, $label:literal, $extra:literal, $order:expr) => {
        $(#[$doc])*
        #[derive(crate::Module)]
        #[module(float = T, display = false)]
        pub struct $name<T: Float = f32> {
            #[module(skip)]
            kernel_size: usize,
            #[module(skip)]
            stride: usize,
            #[module(skip)]
            padding: usize,
            #[module(skip)]
            _element: PhantomData<fn() -> T>,
        }

        tapegrad_tensor::f32_default! {
            /// The constructors of this layer for every element type (`::<f64>`, or `::<T>` in
            /// generic code); a call without a type means `f32`.
            $new for $name {
                /// Pooling over `kernel_size x kernel_size` windows with stride `kernel_size` and
                /// no padding (PyTorch's defaults).
                fn new(kernel_size: usize) -> Self {
                    $name { kernel_size, stride: kernel_size, padding: 0, _element: PhantomData }
                }

                /// Pooling with an explicit stride and padding.
                fn with_options(kernel_size: usize, stride: usize, padding: usize) -> Self {
                    $name { kernel_size, stride, padding, _element: PhantomData }
                }
            }
        }

        impl<T: Float> Module<T> for $name<T> {
            /// # Errors
            #[doc = concat!("`", $label, "` when the input is not 4-D; `", stringify!($op),
                "` for a zero kernel or stride, or padding over half the kernel.")]
            fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
                check_4d($label, &x.shape(), None)?;
                x.$op(self.kernel_size, self.stride, self.padding)
            }

            fn pool_order(&self) -> PoolOrder {
                ($order)([self.kernel_size, self.stride, self.padding])
            }
        }

        impl<T: Float> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!($label, "(kernel_size={}, stride={}, padding={}", $extra, ")"),
                    self.kernel_size, self.stride, self.padding
                )
            }
        }
    };
}

pool_layer!(
    /// Max pooling over `[N, C, H, W]` feature maps: each output is the maximum of its
    /// `k x k` window (padding counts as -inf). Backward routes `dy` to the position of each
    /// window's maximum.
    ///
    /// ```
    /// use tapegrad_nn::{MaxPool2d, Module, Var};
    /// use tapegrad_tensor::Tensor;
    /// let pool: MaxPool2d = MaxPool2d::new(2);
    /// assert_eq!(pool.forward(&Var::new(Tensor::ones(&[1, 2, 4, 4])))?.shape(), vec![1, 2, 2, 2]);
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    MaxPool2d, MaxPool2dNew, max_pool2d, "MaxPool2d", ", dilation=1, ceil_mode=False", PoolOrder::MaxPool
);

pool_layer!(
    /// Average pooling over `[N, C, H, W]` feature maps: each output is the mean of its `k x k`
    /// window (padding counts as zeros). Backward spreads `dy / k²` over each window.
    ///
    /// ```
    /// use tapegrad_nn::{AvgPool2d, Module, Var};
    /// use tapegrad_tensor::Tensor;
    /// let pool: AvgPool2d = AvgPool2d::new(2);
    /// assert_eq!(pool.forward(&Var::new(Tensor::ones(&[1, 2, 4, 4])))?.shape(), vec![1, 2, 2, 2]);
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    AvgPool2d, AvgPool2dNew, avg_pool2d, "AvgPool2d", "", |_| PoolOrder::Other
);

// ─── Flatten ────────────────────────────────────────────────────────────────────

/// Flattens dims `start_dim..` into one: `[N, C, H, W]` → `[N, C·H·W]` with the default
/// `start_dim = 1`. A view when the input is contiguous; backward reshapes `dy` back.
///
/// ```
/// use tapegrad_nn::{Flatten, Module, Var};
/// use tapegrad_tensor::Tensor;
/// let flat: Flatten = Flatten::new();
/// assert_eq!(flat.forward(&Var::new(Tensor::ones(&[2, 3, 4, 4])))?.shape(), vec![2, 48]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct Flatten<T: Float = f32> {
    #[module(skip)]
    start_dim: usize,
    #[module(skip)]
    _element: PhantomData<fn() -> T>,
}

impl<T: Float> Default for Flatten<T> {
    fn default() -> Self {
        Flatten::<T>::new()
    }
}

tapegrad_tensor::f32_default! {
    /// The constructors of [`Flatten`] for every element type: `Flatten::<f64>::new(..)`, or
    /// `Flatten::<T>::new(..)` in generic code. `Flatten::new(..)` without a type means `f32`.
    FlattenNew for Flatten {
        /// Flattens every dim after the batch dim (`start_dim = 1`).
        fn new() -> Self {
            Self::from_dim(1)
        }

        /// Flattens dims `start_dim..`.
        fn from_dim(start_dim: usize) -> Self {
            Flatten { start_dim, _element: PhantomData }
        }
    }
}

impl<T: Float> Module<T> for Flatten<T> {
    /// # Errors
    /// `Flatten` when the input has `start_dim` dims or fewer.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let shape = x.shape();
        if shape.len() <= self.start_dim {
            return Err(Error::shape(
                "Flatten",
                &shape,
                format!("start_dim {} is out of range for {} dims", self.start_dim, shape.len()),
            ));
        }
        let mut out = shape[..self.start_dim].to_vec();
        out.push(shape[self.start_dim..].iter().product());
        x.reshape(&out)
    }
}

impl<T: Float> fmt::Display for Flatten<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flatten(start_dim={}, end_dim=-1)", self.start_dim)
    }
}
