//! tapegrad: a PyTorch-style deep-learning library in Rust.
//!
//! - [`tensor`]: strided tensors, broadcasting ops and SIMD kernels chosen at run time.
//! - [`autograd`]: the reverse-mode tape, with dropout as a seeded, stored stochastic op.
//! - [`nn`]: modules, layers, losses and data.
//!
//! [`Error`] is the top of the error chain: tensor errors and tape errors convert into it with
//! `?`, and its message still names the op and the shapes.
//!
//! ```
//! use tapegrad::prelude::*;
//! let w = Var::parameter(Tensor::<f32>::ones(&[3, 2]));
//! let x = Var::new(Tensor::ones(&[4, 3]));
//! let loss = x.matmul(&w)?.relu().sum_all();
//! loss.backward()?;
//! assert_eq!(w.grad().unwrap().to_vec(), vec![4.0; 6]);
//! # Ok::<(), Error>(())
//! ```

// Lets `#[derive(Module)]` name this crate by its absolute path from inside it too.
extern crate self as tapegrad;

pub use tapegrad_autograd as autograd;
pub use tapegrad_nn as nn;
pub use tapegrad_nn::optim;
pub use tapegrad_tensor as tensor;

pub use tapegrad_nn::{Error, Result};

/// The names most programs need: `use tapegrad::prelude::*;`.
pub mod prelude {
    pub use tapegrad_autograd::{manual_seed, no_grad, Var};
    pub use tapegrad_nn::{Error, Module, Result};
    pub use tapegrad_tensor::{Generator, Tensor};
}

/// The README's code blocks, compiled and run as doctests so that the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
