//! Activation layers: `ReLU`, `GELU`, `Tanh`, `Sigmoid`. Each wraps the `Var` op of the same
//! name, so that activations can sit in a `Sequential` and print like PyTorch's.

use std::fmt;
use std::marker::PhantomData;

use tapegrad_autograd::Var;
use tapegrad_tensor::{Float, Result};

use crate::module::{Module, PoolOrder};

macro_rules! activation {
    ($(#[$doc:meta])* $name:ident, $new:ident, $label:literal, |$x:ident| $body:expr) => {
        activation!($(#[$doc])* $name, $new, $label, |$x| $body, PoolOrder::Other);
    };
    ($(#[$doc:meta])* $name:ident, $new:ident, $label:literal, |$x:ident| $body:expr, $order:expr) => {
        $(#[$doc])*
        #[derive(crate::Module)]
        #[module(float = T, display = false)]
        pub struct $name<T: Float = f32>(#[module(skip)] PhantomData<fn() -> T>);

        tapegrad_tensor::f32_default! {
            /// The constructor of this layer for every element type (`::<f64>`, or `::<T>` in
            /// generic code); a call without a type means `f32`.
            $new for $name {
                /// The layer (it has no parameters).
                fn new() -> Self {
                    $name(PhantomData)
                }
            }
        }

        impl<T: Float> Default for $name<T> {
            fn default() -> Self {
                <Self as $new<T>>::new()
            }
        }

        impl<T: Float> Module<T> for $name<T> {
            /// Elementwise; never fails.
            fn forward(&self, $x: &Var<T>) -> Result<Var<T>> {
                Ok($body)
            }

            fn pool_order(&self) -> PoolOrder {
                $order
            }
        }

        impl<T: Float> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "()"))
            }
        }
    };
}

activation!(
    /// `y = max(x, 0)`; backward `dx = dy · [x > 0]`.
    ///
    /// ```
    /// use tapegrad_nn::{Module, ReLU, Var};
    /// use tapegrad_tensor::Tensor;
    /// let relu: ReLU = ReLU::new();
    /// let y = relu.forward(&Var::new(Tensor::from_vec(vec![-1.0, 2.0], &[2])?))?;
    /// assert_eq!(y.value().to_vec(), vec![0.0, 2.0]);
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    ReLU,
    ReLUNew, "ReLU", |x| x.relu(), PoolOrder::Commutes
);

activation!(
    /// `y = tanh(x)`; backward `dx = dy · (1 - y²)` from the saved output.
    Tanh,
    TanhNew, "Tanh", |x| x.tanh()
);

activation!(
    /// `y = 1 / (1 + e^(-x))`; backward `dx = dy · y (1 - y)` from the saved output.
    Sigmoid,
    SigmoidNew, "Sigmoid", |x| x.sigmoid()
);

/// The Gaussian error linear unit, `y = x Φ(x)` with `Φ` the standard normal CDF (exact, with
/// `erf`, by default), or PyTorch's `approximate='tanh'` form
/// `y = x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
///
/// ```
/// use tapegrad_nn::{GELU, Module, Var};
/// use tapegrad_tensor::Tensor;
/// let gelu: GELU = GELU::new();
/// assert_eq!(gelu.to_string(), "GELU(approximate='none')");
/// let y = gelu.forward(&Var::new(Tensor::from_vec(vec![0.0], &[1])?))?;
/// assert_eq!(y.value().to_vec(), vec![0.0]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct GELU<T: Float = f32> {
    #[module(skip)]
    tanh: bool,
    #[module(skip)]
    _element: PhantomData<fn() -> T>,
}

impl<T: Float> GELU<T> {
    /// True for the tanh approximation.
    pub fn is_approximate(&self) -> bool {
        self.tanh
    }
}

tapegrad_tensor::f32_default! {
    /// The constructors of [`GELU`] for every element type: `GELU::<f64>::new(..)`, or
    /// `GELU::<T>::new(..)` in generic code. `GELU::new(..)` without a type means `f32`.
    GeluNew for GELU {
        /// The exact GELU (`approximate='none'`).
        fn new() -> Self {
            GELU { tanh: false, _element: PhantomData }
        }

        /// The tanh approximation (`approximate='tanh'`).
        fn tanh_approximate() -> Self {
            GELU { tanh: true, _element: PhantomData }
        }
    }
}

impl<T: Float> Default for GELU<T> {
    fn default() -> Self {
        GELU::<T>::new()
    }
}

impl<T: Float> Module<T> for GELU<T> {
    /// Elementwise; never fails.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        Ok(if self.tanh { x.gelu_tanh() } else { x.gelu() })
    }
}

impl<T: Float> fmt::Display for GELU<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GELU(approximate='{}')", if self.tanh { "tanh" } else { "none" })
    }
}
