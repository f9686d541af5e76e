//! The one error type of tapegrad: tensor ops, the tape, layers, optimisers, data and checkpoints
//! all return [`Error`]. It lives here, in the lowest crate, so that every crate builds and matches
//! the same enum; `tapegrad::Error` and `tapegrad_nn::Error` are this type. Every variant names the
//! op (or the file) that failed and carries what a user needs to see (the shapes, the value).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Formats a shape the way PyTorch prints one: `[2, 3]`.
pub(crate) struct ShapeFmt<'a>(pub &'a [usize]);

impl fmt::Display for ShapeFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// What went wrong, anywhere in tapegrad. Each variant names the op (`"matmul"`, `"backward"`,
/// `"cross_entropy"`, ...) or the file that failed.
///
/// Build the common cases with the constructors ([`Error::mismatch`], [`Error::shape`],
/// [`Error::dim`], [`Error::arg`], [`Error::io`], [`Error::format`], [`Error::checkpoint`],
/// [`Error::distributed`]) and match on the variants:
///
/// ```
/// use tapegrad_tensor::{Error, Tensor};
/// let err = Tensor::<f32>::zeros(&[2, 3]).matmul(&Tensor::zeros(&[2, 4])).unwrap_err();
/// assert!(matches!(err, Error::ShapeMismatch { op: "matmul", .. }));
/// assert_eq!(err.to_string(), "matmul: [2, 3] and [2, 4]: inner dimensions 3 and 2 differ");
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two operands whose shapes do not fit together (broadcasting, matmul, cat, ...).
    #[error("{op}: {} and {}: {reason}", ShapeFmt(lhs), ShapeFmt(rhs))]
    ShapeMismatch {
        /// The op that failed.
        op: &'static str,
        /// The first operand's shape.
        lhs: Vec<usize>,
        /// The second operand's shape.
        rhs: Vec<usize>,
        /// Why they do not fit, e.g. "inner dimensions 3 and 2 differ".
        reason: String,
    },
    /// One operand's shape is not valid for the op (a wrong `from_vec` length, an impossible
    /// reshape, a non-2-D input to a 2-D op, ...).
    #[error("{op}: shape {}: {reason}", ShapeFmt(shape))]
    InvalidShape {
        /// The op that failed.
        op: &'static str,
        /// The offending shape.
        shape: Vec<usize>,
        /// Why it is not valid.
        reason: String,
    },
    /// A dimension index at or past the tensor's number of dimensions.
    #[error("{op}: dim {dim} is out of range for shape {} ({} dims)", ShapeFmt(shape), shape.len())]
    DimOutOfRange {
        /// The op that failed.
        op: &'static str,
        /// The dim that was asked for.
        dim: usize,
        /// The shape of the tensor it was asked of.
        shape: Vec<usize>,
    },
    /// Any other argument out of its domain (an index past the end, a zero stride, a drop
    /// probability outside [0, 1], a learning rate below zero, ...).
    #[error("{op}: {reason}")]
    InvalidArgument {
        /// The op that failed.
        op: &'static str,
        /// What was wrong with the argument.
        reason: String,
    },
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
        "backward: the output has shape {} ({numel} elements); backward() needs a one-element output, \
         or pass the upstream gradient explicitly with backward_with()",
        ShapeFmt(shape)
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
    /// The operating system refused a file operation (missing file, no permission, ...).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: IoError,
    },
    /// A file was read but its contents are not what they should be: a wrong magic number, an
    /// unsupported type, a header that does not match the data, a truncated or corrupt file.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file or directory.
        path: PathBuf,
        /// What was expected and what was found.
        reason: String,
    },
    /// A checkpoint file is well formed but does not fit the model it is loaded into: tensors the
    /// model has and the file lacks, tensors the file has and the model lacks, or tensors whose
    /// shape or dtype differ. The reason lists every mismatch.
    #[error("{}: checkpoint does not fit the model: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// Every mismatch, one after another.
        reason: String,
    },
    /// A collective of data-parallel training (`tapegrad-distributed`) failed on one rank:
    /// another rank left (it failed, panicked or finished early), the wait for the others timed
    /// out, or a message did not have the length every rank agreed on.
    #[error("{op}: rank {rank} of {world}: {reason}")]
    Distributed {
        /// The collective or the step that failed (`"all_to_all"`, `"all_gather"`,
        /// `"broadcast"`, `"LocalWorld::run"`, ...).
        op: &'static str,
        /// The rank that reports the failure.
        rank: usize,
        /// The number of ranks.
        world: usize,
        /// What failed, naming the other rank when one is to blame.
        reason: String,
    },
}

/// An operating-system error inside [`Error::Io`]: shared, so that [`Error`] stays `Clone`, and
/// compared by kind and message, so that it stays `PartialEq`.
#[derive(Debug, Clone)]
pub struct IoError(Arc<std::io::Error>);

impl IoError {
    /// The error's kind (`NotFound`, `PermissionDenied`, ...).
    pub fn kind(&self) -> std::io::ErrorKind {
        self.0.kind()
    }

    /// The error the operating system reported.
    pub fn get_ref(&self) -> &std::io::Error {
        &self.0
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for IoError {
    fn eq(&self, other: &IoError) -> bool {
        self.kind() == other.kind() && self.0.to_string() == other.0.to_string()
    }
}

/// `std::result::Result` with tapegrad's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// [`Error::ShapeMismatch`]: `op` got operands of shapes `lhs` and `rhs` that do not fit,
    /// for `reason`.
    pub fn mismatch(op: &'static str, lhs: &[usize], rhs: &[usize], reason: impl Into<String>) -> Error {
        Error::ShapeMismatch { op, lhs: lhs.to_vec(), rhs: rhs.to_vec(), reason: reason.into() }
    }

    /// [`Error::InvalidShape`]: `op` cannot take an operand of shape `shape`, for `reason`.
    pub fn shape(op: &'static str, shape: &[usize], reason: impl Into<String>) -> Error {
        Error::InvalidShape { op, shape: shape.to_vec(), reason: reason.into() }
    }

    /// [`Error::DimOutOfRange`]: `op` was asked for dim `dim` of a tensor of shape `shape`.
    pub fn dim(op: &'static str, dim: usize, shape: &[usize]) -> Error {
        Error::DimOutOfRange { op, dim, shape: shape.to_vec() }
    }

    /// [`Error::InvalidArgument`]: an argument of `op` outside its domain, for `reason`.
    pub fn arg(op: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidArgument { op, reason: reason.into() }
    }

    /// [`Error::Io`]: the operating system refused an operation on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source: IoError(Arc::new(source)) }
    }

    /// [`Error::Format`]: the file at `path` is not what it should be, for `reason`.
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Format { path: path.into(), reason: reason.into() }
    }

    /// [`Error::Checkpoint`]: the checkpoint at `path` does not fit the model, for `reason`.
    pub fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Checkpoint { path: path.into(), reason: reason.into() }
    }

    /// [`Error::Distributed`]: the collective `op` failed on rank `rank` of `world`, for `reason`.
    pub fn distributed(op: &'static str, rank: usize, world: usize, reason: impl Into<String>) -> Error {
        Error::Distributed { op, rank, world, reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_op_and_the_shapes() {
        let e = Error::mismatch("matmul", &[2, 3], &[2, 4], "inner dimensions 3 and 2 differ");
        assert_eq!(e.to_string(), "matmul: [2, 3] and [2, 4]: inner dimensions 3 and 2 differ");
        let e = Error::dim("sum", 3, &[2, 2]);
        assert_eq!(e.to_string(), "sum: dim 3 is out of range for shape [2, 2] (2 dims)");
        let e = Error::NonScalar { shape: vec![3], numel: 3 };
        assert!(e.to_string().starts_with("backward: the output has shape [3] (3 elements)"), "{e}");
        let e = Error::io("/no/such", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(e.to_string().starts_with("/no/such: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        let e = Error::distributed("all_to_all", 0, 2, "rank 1 left the world");
        assert_eq!(e.to_string(), "all_to_all: rank 0 of 2: rank 1 left the world");
    }
}
