//! The layers, one file per family. Each implements [`Module`](crate::Module) and
//! [`Visit`](crate::Visit), and prints like its PyTorch counterpart.

pub mod dropout;
pub mod linear;

pub use dropout::{mc_predict, AlphaDropout, Dropout, Dropout2d};
pub use linear::Linear;
