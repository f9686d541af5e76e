//! The layers, one file per family. Each implements [`Module`](crate::Module) and
//! [`Visit`](crate::Visit), and prints like its PyTorch counterpart.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod dropout;
pub mod embedding;
pub mod linear;
pub mod norm;
pub mod sequential;
pub mod transformer;

pub use activation::{ReLU, Sigmoid, Tanh, GELU};
pub use attention::MultiheadAttention;
pub use conv::{AvgPool2d, Conv2d, Flatten, MaxPool2d};
pub use dropout::{mc_predict, AlphaDropout, Dropout, Dropout2d};
pub use embedding::Embedding;
pub use linear::Linear;
pub use norm::{BatchNorm1d, BatchNorm2d, LayerNorm};
pub use sequential::Sequential;
pub use transformer::{Activation, TransformerEncoderLayer};
