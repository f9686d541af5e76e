//! Modules, layers, losses, optimisers, checkpoints and datasets for tapegrad.
//!
//! - [`Module`] and [`Visit`]: the layer / model trait and the recursive walk that
//!   `#[derive(Module)]` writes for a model struct (the walk and `Display`; `forward` is written
//!   by hand); `train()` / `eval()` / `mc_dropout()` reach every nested layer.
//! - [`layers`]: `Linear`, `Conv1d`, `Conv2d`, pools, `Flatten`, activations, `BatchNorm1d` /
//!   `2d`, `LayerNorm`, `GroupNorm`, `RMSNorm`, `Embedding`, `MultiheadAttention`,
//!   `TransformerEncoderLayer`, `TransformerEncoder` (with [`causal_mask`] and
//!   [`SinusoidalPositionalEncoding`]), `Sequential`, the
//!   dropout family (`Dropout`, `Dropout2d`, `AlphaDropout`, `FeatureAlphaDropout`, `GaussianDropout`, `DropPath`), `DropConnect` (dropout of a linear layer's weights) and [`mc_predict`] for Monte Carlo
//!   dropout.
//! - [`loss`], [`init`], [`optim`]: losses (fused cross-entropy), PyTorch's initialisers, and
//!   the optimisers and schedulers (re-exported as `tapegrad::optim`).
//! - [`data`]: the IDX reader, the MNIST / Fashion-MNIST loaders, numpy's `.npy` / `.npz` files
//!   ([`read_npy`], [`write_npy`], [`read_npz`], [`write_npz`], re-exported here beside
//!   [`load_tensors`] and [`save_tensors`]), seeded batches and k-fold splits.
//! - [`save`] / [`load`] / [`load_non_strict`]: checkpoints in the safetensors format, which
//!   PyTorch state dicts saved as safetensors load into as well; [`TrainingCheckpoint`] with
//!   [`state_dict`] and [`Stateful`]: a whole training run's state, to resume bit for bit.
#![forbid(unsafe_code)]

// Lets `#[derive(Module)]` name this crate by its absolute path from inside it too.
extern crate self as tapegrad_nn;

mod checkpoint;
pub mod data;
pub mod init;
pub mod layers;
pub mod loss;
pub mod module;
pub mod optim;

pub use checkpoint::{
    dropout_generator, generators_state_dict, load, load_generators_state_dict, load_non_strict, load_state_dict,
    load_tensors, save, save_tensors, set_dropout_generator, state_dict, LoadReport, Mismatch, Position, StateDict,
    Stateful, TrainingCheckpoint,
};
pub use data::{read_npy, read_npz, write_npy, write_npz, Ids, TensorDataset};
pub use layers::*;
pub use loss::{l1_penalty, l2_penalty};
pub use module::{Counter, GeneratorSlot, Mode, ModeChange, Module, PoolOrder, Visit};
pub use tapegrad_derive::Module;

pub use tapegrad_autograd::Var;

/// The traits behind the `f32` default of the constructors.
///
/// `Linear::new(..)`, `Dropout::new(p)`, `Tensor::zeros(..)` and the other constructors whose
/// arguments do not name the element type mean `f32` when the call names no type. Another element
/// type is one annotation away, `Linear::<f64>::new(..)` (or `Linear::<T>::new(..)` in generic
/// code): those calls reach the same constructor through the trait named here, which must be in
/// scope. `use tapegrad_nn::dtype::*;` brings them all (the facade's prelude includes them).
/// A type written on the binding instead, `let l: Linear<f64> = Linear::new(..)`, does not
/// work: the unannotated call has already chosen `f32`.
pub mod dtype {
    pub use crate::layers::{
        AlphaDropoutNew as _, AvgPool2dNew as _, BatchNorm1dNew as _, BatchNorm2dNew as _, Conv1dNew as _,
        Conv2dNew as _, DropConnectNew as _, DropPathNew as _, Dropout2dNew as _, DropoutNew as _, EmbeddingNew as _,
        FeatureAlphaDropoutNew as _, FlattenNew as _, GRUNew as _, GaussianDropoutNew as _, GeluNew as _,
        GroupNormNew as _, LSTMNew as _, LayerNormNew as _, LinearNew as _, MaxPool2dNew as _,
        MultiheadAttentionNew as _, RMSNormNew as _, ReLUNew as _, SequentialNew as _, SigmoidNew as _, TanhNew as _,
        TransformerEncoderLayerNew as _,
    };
    pub use tapegrad_tensor::TensorNew as _;
}
pub use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};
