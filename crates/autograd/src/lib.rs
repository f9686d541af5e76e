//! The reverse-mode tape of tapegrad (issue 3: not built yet). Until it lands this crate
//! re-exports the tensor types the tape will record.
#![forbid(unsafe_code)]

pub use tapegrad_tensor::{Error, Generator, Result, Tensor};
