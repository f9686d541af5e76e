//! The reverse-mode tape of tapegrad.
//!
//! A [`Var`] is a tensor recorded on the tape. Every differentiable tensor op has the same name
//! on `Var`; each records a node holding exactly what its backward needs (nothing at all when no
//! input requires a gradient, or inside [`no_grad()`]). [`Var::backward`] walks the recorded graph
//! in reverse execution order and accumulates gradients into parameters, as PyTorch does.
//!
//! Dropout is a stochastic op on the tape ([`dropout`], [`Var::dropout`]): its entry stores the
//! generator seed and offset, `p` and the mask at one bit per element, so backward uses exactly
//! the mask forward drew and a step can be replayed bit for bit.
//!
//! ```
//! use tapegrad_autograd::{Var, manual_seed};
//! use tapegrad_tensor::Tensor;
//! manual_seed(0);
//! let w = Var::parameter(Tensor::<f32>::ones(&[4, 2]));
//! let x = Var::new(Tensor::<f32>::ones(&[3, 4]));
//! let loss = x.matmul(&w)?.relu().dropout(0.5)?.sum_all();
//! loss.backward()?;
//! assert_eq!(w.grad().unwrap().shape(), &[4, 2]);
//! # Ok::<(), tapegrad_autograd::Error>(())
//! ```
#![forbid(unsafe_code)]

mod checkpoint;
pub mod functional;
mod grad;
mod gradcheck;
mod hooks;
mod no_grad;
// Each op's `Backward` and its `Var` method; the free functions and `fused` are re-exported
// below, the methods are `Var`'s.
mod ops;
mod seed;
mod tape;
mod var;

pub use checkpoint::checkpoint;
pub use grad::{grad, GradOptions};
pub use gradcheck::{
    gradcheck, gradcheck_per_op, gradcheck_per_op_with, gradcheck_with, gradchecked_ops, gradgradcheck,
    gradgradcheck_with, gradgradchecked_ops, GradcheckOptions,
};
pub use hooks::HookHandle;
pub use no_grad::{detect_anomaly, is_anomaly_enabled, is_grad_enabled, no_grad};
pub use ops::drop_path::drop_path;
pub use ops::dropout::{dropout, DropoutRecord};
pub use ops::feature_dropout::{alpha_dropout, dropout2d, feature_alpha_dropout};
pub use ops::fused;
pub use ops::gaussian_dropout::gaussian_dropout;
pub use ops::shared_dropout::dropout_shared;
pub use seed::{
    default_generator_state, manual_seed, set_default_generator_state, thread_stream_seed, with_default_generator,
    DEFAULT_SEED,
};
pub use tape::TapeEntry;
pub use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};
pub use var::{Backward, Grads, Var, VarGrads};

// The checks of a dropout rate, shared with tapegrad-nn's dropout layers so that a layer and the
// op reject the same `p` with the same message; not a stable API.
#[doc(hidden)]
pub use ops::{dropout::check_p, gaussian_dropout::check_gaussian_p};
