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
//!
//! # A first model
//!
//! A model is a struct of layers with `#[derive(Module)]` (which finds its parameters, buffers
//! and dropout layers) and a `forward` written by hand, as a PyTorch `nn.Module`:
//!
//! ```
//! use tapegrad::prelude::*;
//!
//! #[derive(Module)]
//! struct Mlp {
//!     fc1: Linear,
//!     drop: Dropout,
//!     fc2: Linear,
//! }
//!
//! impl Module for Mlp {
//!     fn forward(&self, x: &Var) -> Result<Var> {
//!         self.fc2.forward(&self.drop.forward(&self.fc1.forward(x)?.relu())?)
//!     }
//! }
//!
//! let mut gen = Generator::new(0);
//! let model = Mlp { fc1: Linear::new(4, 16, &mut gen), drop: Dropout::new(0.5)?, fc2: Linear::new(16, 3, &mut gen) };
//! assert_eq!(model.parameters().len(), 4);
//! assert_eq!(model.forward(&Var::new(Tensor::randn(&[8, 4], &mut gen)))?.shape(), &[8, 3]);
//! # Ok::<(), Error>(())
//! ```
//!
//! # Training
//!
//! The loop is PyTorch's: forward, loss, `zero_grad`, `backward`, `step`. `train()` and `eval()`
//! switch dropout (and BatchNorm) between their two behaviours; dropout draws its masks from a
//! seeded generator, so a run is the same on any number of threads.
//!
//! ```
//! use tapegrad::prelude::*;
//! let mut gen = Generator::new(0);
//! let mut model = Sequential::new().add(Linear::new(4, 16, &mut gen)).add(ReLU::new()).add(Linear::new(16, 3, &mut gen));
//! let mut opt = Adam::new(model.parameters(), 1e-2);
//! let x = Var::new(Tensor::randn(&[32, 4], &mut gen));
//! let targets: Vec<usize> = (0..32).map(|i| i % 3).collect();
//! model.train();
//! let first = cross_entropy(&model.forward(&x)?, &targets)?.value().item()?;
//! for _ in 0..50 {
//!     let loss = cross_entropy(&model.forward(&x)?, &targets)?;
//!     opt.zero_grad();
//!     loss.backward()?;
//!     opt.step()?;
//! }
//! model.eval();
//! let last = no_grad(|| cross_entropy(&model.forward(&x)?, &targets))?.value().item()?;
//! assert!(last < first);
//! # Ok::<(), Error>(())
//! ```
//!
//! # Saving and loading
//!
//! [`save`](nn::save) writes a model's parameters and buffers to a safetensors file under their
//! dotted names (`"0.weight"`, `"bn.running_mean"`), and [`load`](nn::load) reads them back by
//! name, refusing a file whose names or shapes do not fit (and then changing nothing).
//! [`TrainingCheckpoint`](nn::TrainingCheckpoint) saves a whole run (optimiser, schedulers,
//! generators) to resume it bit for bit.
//!
//! ```
//! use tapegrad::prelude::*;
//! let path = std::env::temp_dir().join(format!("tapegrad-guide-{}.safetensors", std::process::id()));
//! let model = Sequential::new().add(Linear::new(4, 3, &mut Generator::new(0)));
//! save(&model, &path)?;
//! let mut copy = Sequential::new().add(Linear::new(4, 3, &mut Generator::new(1)));
//! load(&mut copy, &path)?;
//! assert_eq!(copy.named_parameters()[0].1.value().to_vec(), model.named_parameters()[0].1.value().to_vec());
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), Error>(())
//! ```
//!
//! # Loading PyTorch weights
//!
//! The names are PyTorch's, so a `state_dict` saved from PyTorch with
//! `safetensors.torch.save_file(model.state_dict(), path)` loads into the equivalent tapegrad
//! model with the same [`load`](nn::load) (f16, bf16 and f64 converted), and PyTorch's
//! `load_state_dict(load_file(path))` reads tapegrad's files back. [`load_non_strict`](nn::load_non_strict)
//! loads what fits and reports the rest, as `load_state_dict(strict=False)` does. Here a file
//! with PyTorch's names for `nn.Sequential(nn.Linear(2, 2))` and one extra tensor:
//!
//! ```
//! use tapegrad::prelude::*;
//! let path = std::env::temp_dir().join(format!("tapegrad-guide-torch-{}.safetensors", std::process::id()));
//! let tensors = vec![
//!     ("0.weight".to_string(), Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?),
//!     ("0.bias".to_string(), Tensor::from_vec(vec![0.5f32, -0.5], &[2])?),
//!     ("head.weight".to_string(), Tensor::<f32>::ones(&[1, 2])),
//! ];
//! tapegrad::nn::save_tensors(&tensors, &path)?;
//! let mut model = Sequential::new().add(Linear::new(2, 2, &mut Generator::new(0)));
//! assert!(load(&mut model, &path).is_err()); // strict: "head.weight" is unexpected
//! let report = tapegrad::nn::load_non_strict(&mut model, &path)?;
//! assert_eq!(report.unexpected, ["head.weight"]);
//! let y = model.forward(&Var::new(Tensor::from_vec(vec![1.0f32, 1.0], &[1, 2])?))?;
//! assert_eq!(y.value().to_vec(), [3.5, 6.5]);
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), Error>(())
//! ```
//!
//! `docs/checkpoints.md` lists the names per layer (MultiheadAttention's packed `in_proj`,
//! BatchNorm's `num_batches_tracked`, LSTM and GRU) and what is checked.

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

/// The names a training script needs: `use tapegrad::prelude::*;` brings the tensor and the
/// tape, the `Module` trait and derive, every layer, the losses, the optimisers and schedulers,
/// the datasets and batches, and checkpoints.
///
/// Only types, traits and functions whose names say what they are: no module names (`nn`,
/// `loss`, `optim`, `data` stay paths), and nothing that clashes with a `Var` or `Tensor` method
/// or with another prelude name (the functional `dropout` stays `tapegrad::autograd::dropout`;
/// `x.dropout(p)` is the method). Imports written beside it (`use tapegrad::nn::Linear;`) take
/// precedence, so adding it to a file that already names these does not break it.
///
/// ```
/// use tapegrad::prelude::*;
/// let mut gen = Generator::new(0);
/// let model = Sequential::new().add(Linear::new(4, 8, &mut gen)).add(ReLU::new()).add(Linear::new(8, 3, &mut gen));
/// let mut opt = Sgd::new(model.parameters(), 0.1).momentum(0.9);
/// let logits = model.forward(&Var::new(Tensor::randn(&[2, 4], &mut gen)))?;
/// let loss = cross_entropy(&logits, &[0, 2])?;
/// opt.zero_grad();
/// loss.backward()?;
/// opt.step()?;
/// assert!(loss.item()?.is_finite());
/// # Ok::<(), Error>(())
/// ```
pub mod prelude {
    pub use tapegrad_autograd::{manual_seed, no_grad, Var};
    // The traits that make `Linear::<f64>::new(..)` and `Tensor::<f64>::zeros(..)` resolve
    // (imported unnamed: they add no names).
    pub use tapegrad_nn::dtype::*;
    pub use tapegrad_nn::{Error, Module, Result};
    pub use tapegrad_tensor::{Float, Generator, Tensor};

    // Layers.
    pub use tapegrad_nn::{
        causal_mask, mc_predict, sinusoidal_positional_encoding, AlphaDropout, AvgPool2d, BatchNorm1d, BatchNorm2d,
        Conv1d, Conv2d, DropPath, Dropout, Dropout2d, Embedding, FeatureAlphaDropout, Flatten, GaussianDropout,
        GroupNorm, LayerNorm, Linear, MaxPool2d, MultiheadAttention, RMSNorm, ReLU, Sequential, Sigmoid,
        SinusoidalPositionalEncoding, Tanh, TransformerEncoder, TransformerEncoderLayer, GELU, GRU, LSTM,
    };
    // Losses and penalties.
    pub use tapegrad_nn::loss::{
        binary_cross_entropy_with_logits, cross_entropy, cross_entropy_with, mse_loss, nll_loss, CrossEntropyOptions,
        Reduction,
    };
    pub use tapegrad_nn::{l1_penalty, l2_penalty};
    // Optimisers, schedulers, clipping.
    pub use tapegrad_nn::optim::{
        clip_grad_norm_, max_norm_, Adam, AdamW, CosineLr, LrScheduler, Optimizer, Sgd, StepLr,
    };
    // Data and checkpoints.
    pub use tapegrad_nn::data::{
        kfold, load_dataset, read_idx, read_npy, read_npz, write_npy, write_npz, Batches, Dataset, Ids, TensorDataset,
    };
    pub use tapegrad_nn::{load, save, TrainingCheckpoint};
}

/// The README's code blocks, compiled and run as doctests so that the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
