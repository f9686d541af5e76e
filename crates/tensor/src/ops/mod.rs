//! Tensor ops, one file per family. Each file adds methods to [`Tensor`](crate::Tensor).

pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod linear;
pub mod matmul;
pub mod movement;
pub mod norm;
pub mod optim;
pub mod reduce;
