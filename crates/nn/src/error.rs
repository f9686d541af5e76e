//! The nn crate's error type: tensor errors wrapped as they are, plus file errors that name the
//! file.

use std::path::PathBuf;

/// What went wrong in `tapegrad-nn`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor op failed (a shape mismatch, a dim out of range, ...).
    #[error(transparent)]
    Tensor(#[from] tapegrad_tensor::Error),
    /// An op on the tape, or a backward pass, failed.
    #[error(transparent)]
    Autograd(#[from] tapegrad_autograd::Error),
    /// The operating system refused a file operation (missing file, no permission, ...).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
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
}

/// `std::result::Result` with the nn crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    /// Shorthand for [`Error::Format`].
    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Format { path: path.into(), reason: reason.into() }
    }
}
