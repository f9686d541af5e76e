//! Strided tensors for tapegrad.
//!
//! A [`Tensor`] is a [`Layout`] (shape, strides, offset) over reference-counted [`Storage`]:
//! views never copy, ops broadcast as NumPy and PyTorch do, and the heavy loops run in SIMD
//! kernels private to this crate, chosen once per process for the CPU at hand (AVX-512,
//! AVX2+FMA, NEON or scalar: [`cpu_capability`]). Randomness comes from one seeded,
//! counter-based [`Generator`]; [`BitMask`] holds dropout's masks at one bit per element.
//! Every fallible function returns the library's one [`Error`].
//!
//! With the `ndarray` cargo feature, a tensor converts to and from [`ndarray`](https://docs.rs/ndarray)'s
//! arrays, moving the buffer instead of copying it where the layout allows:
//! `Tensor::try_from(array)` takes any owned array (a copy only for negative strides),
//! `ArrayD::try_from(tensor)` takes the tensor's buffer when nothing else shares it (a copy
//! otherwise: the storage of a tensor cloned or viewed elsewhere is shared), and
//! `tensor.as_ndarray()` borrows any tensor as an `ArrayViewD` without a copy.
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

/// The crate's README, compiled and run as a doctest so that its example stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

mod bitmask;
mod dtype;
mod error;
#[cfg(feature = "ndarray")]
mod interop;
// The kernels are this crate's own: other crates reach them only through `Tensor`'s methods. The
// `internals` feature (off by default) exposes them to this workspace's kernel benchmarks and
// tests; it is not a stable API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod kernels;
#[cfg(not(feature = "internals"))]
mod kernels;
mod layout;
pub mod memory;
pub mod ops;
pub mod parallel;
mod random;
mod storage;
// The run-by-run walk over strided operands: the machinery of this crate's ops, not an API.
mod strided;
mod tensor;

pub use bitmask::BitMask;

pub use dtype::Float;
pub use error::{Error, IoError, Result};
pub use layout::{broadcast_shapes, checked_numel, contiguous_strides, Dims, Layout, MAX_NUMEL};
pub use random::{Generator, Stream};
pub use storage::Storage;
pub use tensor::{Tensor, TensorNew};

/// The instruction-set path the kernels run on in this process: `"avx512"`, `"avx2"`, `"neon"` or
/// `"scalar"`. The best one the CPU supports, unless the environment variable `TAPEGRAD_KERNELS`
/// names another supported one; fixed on first use.
///
/// ```
/// let isa = tapegrad_tensor::cpu_capability();
/// assert!(["avx512", "avx2", "neon", "scalar"].contains(&isa));
/// ```
pub fn cpu_capability() -> &'static str {
    kernels::active_isa().name()
}
