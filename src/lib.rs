//! tapegrad: a PyTorch-style deep-learning library in Rust.
//!
//! - [`tensor`]: strided tensors, broadcasting ops and SIMD kernels chosen at run time.
//! - [`autograd`]: the reverse-mode tape.
//! - [`nn`]: modules, layers, losses and data.
//!
//! ```
//! use tapegrad::prelude::*;
//! let x = Tensor::<f32>::ones(&[2, 3]);
//! assert_eq!(x.sum_all().item()?, 6.0);
//! # Ok::<(), Error>(())
//! ```

pub use tapegrad_autograd as autograd;
pub use tapegrad_nn as nn;
pub use tapegrad_tensor as tensor;

pub use tapegrad_tensor::{Error, Result};

/// The names most programs need: `use tapegrad::prelude::*;`.
pub mod prelude {
    pub use tapegrad_tensor::{Error, Generator, Result, Tensor};
}
