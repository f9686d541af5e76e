//! Operators on [`Var`], so that a model reads like maths: `&a + &b`, `&a * &b`, `-&a`,
//! `&a * 2.0`, `2.0 * &a`; and the conveniences of a PyTorch user's first hour, [`Var::item`]
//! and [`Var::reshape_infer`].
//!
//! Each operator records the op of the method of the same name ([`Var::add`], [`Var::mul`],
//! [`Var::mul_scalar`], ...): nothing here has a backward of its own. The methods return
//! `Result`; the binary operators between two `Var`s panic with the message the method returns
//! as an `Err` (like `slice[i]` beside `slice.get(i)`), so use the method where shapes are not
//! known to broadcast.

use tapegrad_tensor::{Float, Result};

use crate::var::Var;

impl<T: Float> Var<T> {
    /// The single element of a one-element value (any shape with numel 1), like
    /// `tensor.item()`: what a training loop prints as the loss.
    ///
    /// # Errors
    /// `item` naming the shape when the value does not have exactly one element.
    ///
    /// ```
    /// # use tapegrad_autograd::Var;
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let loss = Var::new(Tensor::<f32>::ones(&[3])).sum_all();
    /// assert_eq!(loss.item()?, 3.0);
    /// assert!(Var::new(Tensor::<f32>::ones(&[3])).item().is_err());
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn item(&self) -> Result<T> {
        self.with_value(|x| x.item())
    }

    /// [`Var::reshape`] where one dim may be `-1`, inferred from the element count, like
    /// `x.reshape(-1, 4)` in PyTorch. Records a `reshape`. Backward: `dx` is `dy` reshaped back.
    ///
    /// # Errors
    /// `reshape` naming the source shape for more than one `-1`, another negative dim, or
    /// counts that cannot agree ([`infer_shape`](tapegrad_tensor::ops::movement::infer_shape)).
    ///
    /// ```
    /// # use tapegrad_autograd::Var;
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::new(Tensor::<f32>::zeros(&[2, 3, 4]));
    /// assert_eq!(x.reshape_infer(&[-1, 4])?.shape(), vec![6, 4]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn reshape_infer(&self, dims: &[isize]) -> Result<Var<T>> {
        let shape = self.with_value(|x| tapegrad_tensor::ops::movement::infer_shape(x.shape(), dims))?;
        self.reshape(&shape)
    }
}

/// `std::ops::$trait` between `Var`s, owned or borrowed, through the method of the same name.
macro_rules! var_operator {
    ($trait:ident, $method:ident, $sym:literal) => {
        #[doc = concat!("`&x ", $sym, " &y`: [`Var::", stringify!($method), "`], broadcasting.")]
        ///
        /// # Panics
        /// When the shapes cannot be broadcast together, with the message the method returns as
        #[doc = concat!("an `Err` (`", stringify!($method), ": [2, 3] and [4]: ...`). Use the method to handle it.")]
        ///
        /// ```
        /// # use tapegrad_autograd::Var;
        /// # use tapegrad_tensor::{Tensor, TensorNew};
        /// let (x, y) = (Var::new(Tensor::<f32>::ones(&[2, 3])), Var::new(Tensor::<f32>::ones(&[3])));
        #[doc = concat!("assert_eq!((&x ", $sym, " &y).shape(), vec![2, 3]);")]
        /// ```
        impl<T: Float> std::ops::$trait<&Var<T>> for &Var<T> {
            type Output = Var<T>;

            fn $method(self, rhs: &Var<T>) -> Var<T> {
                match Var::$method(self, rhs) {
                    Ok(z) => z,
                    Err(e) => panic!("{e}"),
                }
            }
        }

        #[doc = concat!("`x ", $sym, " y`: as `&x ", $sym, " &y` (panics on shapes that do not broadcast).")]
        impl<T: Float> std::ops::$trait<Var<T>> for Var<T> {
            type Output = Var<T>;

            fn $method(self, rhs: Var<T>) -> Var<T> {
                std::ops::$trait::$method(&self, &rhs)
            }
        }

        #[doc = concat!("`&x ", $sym, " y`: as `&x ", $sym, " &y` (panics on shapes that do not broadcast).")]
        impl<T: Float> std::ops::$trait<Var<T>> for &Var<T> {
            type Output = Var<T>;

            fn $method(self, rhs: Var<T>) -> Var<T> {
                std::ops::$trait::$method(self, &rhs)
            }
        }

        #[doc = concat!("`x ", $sym, " &y`: as `&x ", $sym, " &y` (panics on shapes that do not broadcast).")]
        impl<T: Float> std::ops::$trait<&Var<T>> for Var<T> {
            type Output = Var<T>;

            fn $method(self, rhs: &Var<T>) -> Var<T> {
                std::ops::$trait::$method(&self, rhs)
            }
        }
    };
}

var_operator!(Add, add, "+");
var_operator!(Sub, sub, "-");
var_operator!(Mul, mul, "*");
var_operator!(Div, div, "/");

/// `-&x`: [`Var::neg`]. Never panics.
impl<T: Float> std::ops::Neg for &Var<T> {
    type Output = Var<T>;

    fn neg(self) -> Var<T> {
        Var::neg(self)
    }
}

/// `-x`: [`Var::neg`]. Never panics.
impl<T: Float> std::ops::Neg for Var<T> {
    type Output = Var<T>;

    fn neg(self) -> Var<T> {
        Var::neg(&self)
    }
}

// ─── with a scalar ─────────────────────────────────────────────────────────────
// `x + c`, `x - c`, `x * c`, `x / c` for `c: T`, and `c + x`, `c - x`, `c * x` for f32 and f64
// (the orphan rule allows a scalar on the left only for concrete types). None of them panics.
// `c / x` is left out: it would hide a reciprocal; write `x.powf(-1.0).mul_scalar(c)`.

/// `x ∘ c` for a `Var` (owned or borrowed) and a scalar `c` of its element type.
macro_rules! scalar_rhs {
    ($trait:ident, $method:ident, $sym:literal, |$x:ident, $c:ident| $body:expr) => {
        #[doc = concat!("`&x ", $sym, " c` with a scalar `c`: `", stringify!($body), "`. Never panics.")]
        impl<T: Float> std::ops::$trait<T> for &Var<T> {
            type Output = Var<T>;

            fn $method(self, $c: T) -> Var<T> {
                let $x = self;
                $body
            }
        }

        #[doc = concat!("`x ", $sym, " c`: as `&x ", $sym, " c`.")]
        impl<T: Float> std::ops::$trait<T> for Var<T> {
            type Output = Var<T>;

            fn $method(self, c: T) -> Var<T> {
                std::ops::$trait::$method(&self, c)
            }
        }
    };
}

scalar_rhs!(Add, add, "+", |x, c| x.add_scalar(c));
scalar_rhs!(Sub, sub, "-", |x, c| x.add_scalar(-c));
scalar_rhs!(Mul, mul, "*", |x, c| x.mul_scalar(c));
// x / c is x * (1 / c): one multiply per element, which may differ from a true division in the
// last bit.
scalar_rhs!(Div, div, "/", |x, c| x.mul_scalar(T::ONE / c));

/// `c ∘ x` for a scalar `c` of type `$t` and a `Var<$t>`, owned or borrowed.
macro_rules! scalar_lhs {
    ($t:ty, $trait:ident, $method:ident, $sym:literal, |$x:ident, $c:ident| $body:expr) => {
        #[doc = concat!("`c ", $sym, " &x` with a scalar `c`: `", stringify!($body), "`. Never panics.")]
        impl std::ops::$trait<&Var<$t>> for $t {
            type Output = Var<$t>;

            fn $method(self, $x: &Var<$t>) -> Var<$t> {
                let $c = self;
                $body
            }
        }

        #[doc = concat!("`c ", $sym, " x`: as `c ", $sym, " &x`.")]
        impl std::ops::$trait<Var<$t>> for $t {
            type Output = Var<$t>;

            fn $method(self, x: Var<$t>) -> Var<$t> {
                std::ops::$trait::$method(self, &x)
            }
        }
    };
}

macro_rules! scalar_lhs_for {
    ($($t:ty),*) => {$(
        scalar_lhs!($t, Add, add, "+", |x, c| x.add_scalar(c));
        scalar_lhs!($t, Mul, mul, "*", |x, c| x.mul_scalar(c));
        scalar_lhs!($t, Sub, sub, "-", |x, c| x.neg().add_scalar(c));
    )*};
}

scalar_lhs_for!(f32, f64);
