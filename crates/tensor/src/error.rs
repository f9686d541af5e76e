//! The tensor crate's error type: every variant names the op that failed and carries the shapes.

use std::fmt;

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

/// What went wrong in a tensor op. Each variant names the op (`"matmul"`, `"reshape"`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// Any other argument out of its domain (an index past the end, a zero stride, a probability
    /// outside [0, 1), ...).
    #[error("{op}: {reason}")]
    InvalidArgument {
        /// The op that failed.
        op: &'static str,
        /// What was wrong with the argument.
        reason: String,
    },
}

/// `std::result::Result` with the tensor crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::ShapeMismatch`].
    pub(crate) fn mismatch(op: &'static str, lhs: &[usize], rhs: &[usize], reason: impl Into<String>) -> Error {
        Error::ShapeMismatch { op, lhs: lhs.to_vec(), rhs: rhs.to_vec(), reason: reason.into() }
    }

    /// Shorthand for [`Error::InvalidShape`].
    pub(crate) fn shape(op: &'static str, shape: &[usize], reason: impl Into<String>) -> Error {
        Error::InvalidShape { op, shape: shape.to_vec(), reason: reason.into() }
    }

    /// Shorthand for [`Error::DimOutOfRange`].
    pub(crate) fn dim(op: &'static str, dim: usize, shape: &[usize]) -> Error {
        Error::DimOutOfRange { op, dim, shape: shape.to_vec() }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub(crate) fn arg(op: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidArgument { op, reason: reason.into() }
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
    }
}
