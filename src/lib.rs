//! tapegrad: a PyTorch-style deep-learning library in Rust.
//!
//! - [`tensor`]: strided tensors, broadcasting ops and SIMD kernels chosen at run time.
//! - [`autograd`]: the reverse-mode tape, with dropout as a seeded, stored stochastic op.
//! - [`nn`]: modules, layers, losses and data.
//!
//! [`Error`] is the library's one error type: tensor ops, tape ops and nn return it, and its
//! message names the op and the shapes.
//!
//! A constructor whose arguments do not name the element type (`Tensor::ones`, `Linear::new`,
//! `Dropout::new`, ...) means `f32` when the call names no type; `Tensor::<f64>::ones(..)` asks
//! for `f64` (the prelude brings the traits that make this resolve: see [`nn::dtype`]).
//!
//! ```
//! use tapegrad::prelude::*;
//! let w = Var::parameter(Tensor::ones(&[3, 2]));
//! let x = Var::new(Tensor::ones(&[4, 3]));
//! let loss = x.matmul(&w)?.relu().sum_all();
//! loss.backward()?;
//! assert_eq!(w.grad().unwrap().to_vec(), vec![4.0; 6]);
//! # Ok::<(), Error>(())
//! ```

// Lets `#[derive(Module)]` name this crate by its absolute path from inside it too.
extern crate self as tapegrad;

// Modules rather than renamed crates (`pub use tapegrad_nn as nn`): the compiler's messages then
// name items by the paths users write (`tapegrad::nn::Linear`, not `tapegrad::tapegrad_nn::..`).

/// Strided tensors, broadcasting ops and SIMD kernels chosen at run time (the `tapegrad-tensor`
/// crate).
pub mod tensor {
    pub use tapegrad_tensor::*;
}

/// The reverse-mode tape, with dropout as a seeded, stored stochastic op (the
/// `tapegrad-autograd` crate).
pub mod autograd {
    pub use tapegrad_autograd::*;
}

/// Modules, layers, losses, data and checkpoints (the `tapegrad-nn` crate).
pub mod nn {
    pub use tapegrad_nn::*;
}

/// Data-parallel training whose weights do not depend on the number of processes, over MPI (the
/// `mpi` feature) or in-process ranks (the `tapegrad-distributed` crate).
pub mod distributed {
    pub use tapegrad_distributed::*;
}

/// Optimisers, learning-rate schedules and gradient clipping.
pub mod optim {
    pub use tapegrad_nn::optim::*;
}

pub use tapegrad_nn::{Error, Result};

/// The names most programs need: `use tapegrad::prelude::*;`.
pub mod prelude {
    pub use tapegrad_autograd::{manual_seed, no_grad, Var};
    // The traits that make `Linear::<f64>::new(..)` and `Tensor::<f64>::zeros(..)` resolve
    // (imported unnamed: they add no names).
    pub use tapegrad_nn::dtype::*;
    pub use tapegrad_nn::{Error, Module, Result};
    pub use tapegrad_tensor::{Float, Generator, Tensor};
}

/// The README's code blocks, compiled and run as doctests so that the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
