//! Elementwise and reduction kernels over contiguous slices: a scalar reference and one
//! implementation per instruction set.
//!
//! (Placeholder: the helper that owns this folder replaces this with the full table.)

/// The elementwise kernels for one element type (implemented for `f32` and `f64`).
pub trait ElementwiseKernels: Sized {}

impl ElementwiseKernels for f32 {}
impl ElementwiseKernels for f64 {}
