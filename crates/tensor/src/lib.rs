//! Strided tensors for tapegrad.
//!
//! A [`Tensor`] is a [`Layout`] (shape, strides, offset) over reference-counted [`Storage`]:
//! views never copy, ops broadcast as NumPy and PyTorch do, and the heavy loops run in
//! [`kernels`], chosen once per process for the CPU at hand (AVX-512, AVX2+FMA, NEON or scalar).
//! Randomness comes from one seeded, counter-based [`Generator`].
//!
//! ```
//! use tapegrad_tensor::{Generator, Tensor};
//! let mut gen = Generator::new(0);
//! let x = Tensor::<f32>::randn(&[4, 3], &mut gen);
//! let w = Tensor::<f32>::randn(&[3, 2], &mut gen);
//! let y = x.matmul(&w)?.relu();
//! assert_eq!(y.shape(), &[4, 2]);
//! # Ok::<(), tapegrad_tensor::Error>(())
//! ```

pub mod buffers;
mod dtype;
mod error;
pub mod kernels;
mod layout;
pub mod ops;
mod random;
mod storage;
pub mod strided;
mod tensor;

pub use dtype::Float;
pub use error::{Error, Result};
pub use layout::{broadcast_shapes, contiguous_strides, Dims, Layout};
pub use random::{Generator, Stream};
pub use storage::Storage;
pub use tensor::Tensor;
