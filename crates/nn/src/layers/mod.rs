//! The layers, one file per family. Each implements [`Module`](crate::Module) and
//! [`Visit`](crate::Visit), and prints like its PyTorch counterpart.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod conv1d;
pub mod dropout;
pub mod embedding;
pub mod group_norm;
pub mod linear;
pub mod norm;
pub mod positional;
pub mod recurrent;
pub mod rms_norm;
pub mod sequential;
pub mod transformer;

pub use activation::{GeluNew, ReLU, ReLUNew, Sigmoid, SigmoidNew, Tanh, TanhNew, GELU};
pub use attention::{causal_mask, MultiheadAttention, MultiheadAttentionNew};
pub use conv::{AvgPool2d, AvgPool2dNew, Conv2d, Conv2dNew, Flatten, FlattenNew, MaxPool2d, MaxPool2dNew};
pub use conv1d::{Conv1d, Conv1dNew};
pub use dropout::{
    mc_predict, AlphaDropout, AlphaDropoutNew, DropConnect, DropConnectNew, DropPath, DropPathNew, Dropout, Dropout2d,
    Dropout2dNew, DropoutNew, FeatureAlphaDropout, FeatureAlphaDropoutNew, GaussianDropout, GaussianDropoutNew,
};
pub use embedding::{Embedding, EmbeddingNew};
pub use group_norm::{GroupNorm, GroupNormNew};
pub use linear::{Linear, LinearNew};
pub use norm::{BatchNorm1d, BatchNorm1dNew, BatchNorm2d, BatchNorm2dNew, LayerNorm, LayerNormNew};
pub use positional::{sinusoidal_positional_encoding, SinusoidalPositionalEncoding};
pub use recurrent::{GRUNew, LSTMNew, RecurrentWeights, GRU, LSTM};
pub use rms_norm::{RMSNorm, RMSNormNew};
pub use sequential::{Sequential, SequentialNew};
pub use transformer::{Activation, TransformerEncoder, TransformerEncoderLayer, TransformerEncoderLayerNew};
