//! The element types a tensor can hold: `f32` (tuned SIMD kernels) and `f64` (exact gradient
//! checks). The trait is sealed, so the set stays closed and every kernel table stays complete.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use crate::kernels::elementwise::ElementwiseKernels;
use crate::kernels::gemm::GemmKernels;

mod private {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: `f32` or `f64`. Sealed: it cannot be implemented outside
/// this crate.
pub trait Float:
    private::Sealed
    + ElementwiseKernels
    + GemmKernels
    + Copy
    + Default
    + Debug
    + Display
    + PartialEq
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Positive infinity.
    const INFINITY: Self;
    /// Negative infinity.
    const NEG_INFINITY: Self;
    /// Not a number.
    const NAN: Self;
    /// Machine epsilon.
    const EPSILON: Self;
    /// The type's name, `"f32"` or `"f64"`.
    const NAME: &'static str;

    /// Converts from `f64`, rounding to nearest for `f32`.
    fn from_f64(v: f64) -> Self;
    /// Converts to `f64` exactly.
    fn to_f64(self) -> f64;
    /// Converts a count or index.
    fn from_usize(n: usize) -> Self;
    /// e^self.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// self^e.
    fn powf(self, e: Self) -> Self;
    /// The error function (for exact GELU).
    fn erf(self) -> Self;
    /// The larger of two values; NaN if either is NaN (like `torch.maximum`).
    fn max_nan(self, other: Self) -> Self;
    /// The smaller of two values; NaN if either is NaN (like `torch.minimum`).
    fn min_nan(self, other: Self) -> Self;
    /// True for NaN.
    fn is_nan(self) -> bool;
    /// True for a finite value.
    fn is_finite(self) -> bool;
    /// This type's cache of large buffers (see [`crate::memory`]).
    #[doc(hidden)]
    fn buffer_cache() -> &'static crate::memory::Cache<Self>;
}

macro_rules! impl_float {
    ($t:ident, $erf:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = $t::INFINITY;
            const NEG_INFINITY: Self = $t::NEG_INFINITY;
            const NAN: Self = $t::NAN;
            const EPSILON: Self = $t::EPSILON;
            const NAME: &'static str = stringify!($t);

            fn buffer_cache() -> &'static crate::memory::Cache<$t> {
                static CACHE: crate::memory::Cache<$t> = crate::memory::Cache::new();
                &CACHE
            }

            #[inline]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn from_usize(n: usize) -> Self {
                n as $t
            }
            #[inline]
            fn exp(self) -> Self {
                $t::exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                $t::ln(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                $t::sqrt(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                $t::tanh(self)
            }
            #[inline]
            fn abs(self) -> Self {
                $t::abs(self)
            }
            #[inline]
            fn powf(self, e: Self) -> Self {
                $t::powf(self, e)
            }
            #[inline]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline]
            fn max_nan(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    $t::NAN
                } else if self >= other {
                    self
                } else {
                    other
                }
            }
            #[inline]
            fn min_nan(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    $t::NAN
                } else if self <= other {
                    self
                } else {
                    other
                }
            }
            #[inline]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            #[inline]
            fn is_finite(self) -> bool {
                $t::is_finite(self)
            }
        }
    };
}

impl_float!(f32, libm::erff);
impl_float!(f64, libm::erf);

/// Writes a type's element-type-generic constructors once and gives them `f32` as the default.
///
/// Rust does not use a type parameter's default (`Tensor<T = f32>`) to infer a call such as
/// `Tensor::ones(&[2, 3])`: alone, it is "type annotations needed". So each constructor whose
/// arguments do not name the element type is written as a method of a trait implemented for every
/// element type (what `Tensor::<f64>::ones` and generic code call), and repeated as an inherent
/// function of the `f32` type that calls it (what an unannotated call resolves to, because
/// inherent functions are looked up before trait ones). The layers of `tapegrad-nn` use the same
/// macro; the facade's prelude brings every such trait into scope.
///
/// An argument whose type names the element type gives its `f32` form after `=>`:
/// `value: T => f32`.
///
/// Not a stable API: the workspace's crates use it, users do not need it.
#[doc(hidden)]
#[macro_export]
macro_rules! f32_default {
    (@f32 $ty:ty) => { $ty };
    (@f32 $ty:ty => $f32:ty) => { $f32 };
    (
        $(#[$trait_doc:meta])*
        $trait:ident for $ty:ident {
            $(
                $(#[$doc:meta])*
                fn $fn:ident($($arg:ident: $arg_ty:ty $(=> $arg_f32:ty)?),* $(,)?) -> $ret:ty $body:block
            )*
        }
    ) => {
        $(#[$trait_doc])*
        pub trait $trait<T: $crate::Float>: Sized {
            $(
                $(#[$doc])*
                fn $fn($($arg: $arg_ty),*) -> $ret;
            )*
        }

        impl<T: $crate::Float> $trait<T> for $ty<T> {
            $(
                fn $fn($($arg: $arg_ty),*) -> $ret $body
            )*
        }

        impl $ty<f32> {
            $(
                $(#[$doc])*
                ///
                #[doc = concat!(
                    "This is the `f32` version, what a call without a type means; `",
                    stringify!($ty), "::<f64>::", stringify!($fn),
                    "` (or generic code) reaches [`", stringify!($trait), "::", stringify!($fn),
                    "`], in scope through the prelude."
                )]
                #[inline]
                pub fn $fn($($arg: $crate::f32_default!(@f32 $arg_ty $(=> $arg_f32)?)),*) -> $ret {
                    <Self as $trait<f32>>::$fn($($arg),*)
                }
            )*
        }
    };
}
