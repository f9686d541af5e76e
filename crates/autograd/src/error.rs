//! The autograd crate's error type: tensor errors pass through; the tape adds its own.

use tapegrad_tensor::Float;

/// What went wrong on the tape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A tensor op failed (shapes, dims, arguments): the message names the op and the shapes.
    #[error(transparent)]
    Tensor(#[from] tapegrad_tensor::Error),
    /// `backward` reached an op whose saved tensors were already freed by an earlier backward.
    #[error(
        "backward: the graph through `{op}` was already freed by an earlier backward; \
         call backward_retain() on the first backward to keep it"
    )]
    GraphFreed {
        /// The first freed op reached.
        op: &'static str,
    },
    /// `backward` on an output that is not a single element, without an upstream gradient.
    #[error(
        "backward: the output has shape {shape:?} ({numel} elements); backward() needs a one-element output, \
         or pass the upstream gradient explicitly with backward_with()"
    )]
    NonScalar {
        /// The output's shape.
        shape: Vec<usize>,
        /// Its number of elements.
        numel: usize,
    },
    /// Anomaly detection found a NaN or infinite gradient.
    #[error("backward: anomaly detected: the gradient `{op}` computed for its input {input} contains {what}")]
    Anomaly {
        /// The op whose backward produced the value.
        op: &'static str,
        /// Which input's gradient.
        input: usize,
        /// "NaN" or "an infinite value".
        what: &'static str,
    },
    /// `gradcheck` found a gradient that differs from central finite differences.
    #[error(
        "gradcheck: the gradient of `{op}` with respect to input {input} at index {index:?} is {analytic}, \
         finite differences give {numeric}"
    )]
    GradcheckMismatch {
        /// The op that produced the checked output.
        op: String,
        /// Which input.
        input: usize,
        /// The element's multi-index.
        index: Vec<usize>,
        /// The tape's gradient.
        analytic: f64,
        /// The central finite difference.
        numeric: f64,
    },
    /// An argument out of its domain (a dropout probability outside [0, 1), ...).
    #[error("{op}: {reason}")]
    InvalidArgument {
        /// The op that failed.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn arg(op: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidArgument { op, reason: reason.into() }
    }

    pub(crate) fn anomaly<T: Float>(op: &'static str, input: usize, values: &[T]) -> Option<Error> {
        if values.iter().any(|v| v.is_nan()) {
            Some(Error::Anomaly { op, input, what: "NaN" })
        } else if values.iter().any(|v| !v.is_finite()) {
            Some(Error::Anomaly { op, input, what: "an infinite value" })
        } else {
            None
        }
    }
}

/// `std::result::Result` with the autograd [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
