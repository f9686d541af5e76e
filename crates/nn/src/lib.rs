//! Modules, layers, losses, optimisers, checkpoints and datasets for tapegrad.
//!
//! What is here today is [`data`]: the IDX reader and the MNIST / Fashion-MNIST loaders. The
//! `Module` trait, the layers, the losses and the optimisers arrive with issue 4.
#![forbid(unsafe_code)]

pub mod data;
mod error;
pub mod init;
pub mod loss;
pub mod optim;

pub use error::{Error, Result};
pub use loss::{l1_penalty, l2_penalty};
