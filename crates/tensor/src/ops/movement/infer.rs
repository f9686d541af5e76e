//! `reshape_infer`: a reshape whose target may leave one dim to be inferred (`-1`), like
//! `torch.reshape(x, (-1, 4))`.

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The shape `dims` describes for `numel` elements, with at most one `-1` standing for the dim
/// that makes the element counts agree.
///
/// # Errors
/// `reshape` (naming `shape`, the source shape) for more than one `-1`, a dim below `-1`, a `-1`
/// beside a zero dim (any size would fit), or counts that cannot agree.
///
/// ```
/// # use tapegrad_tensor::ops::movement::infer_shape;
/// assert_eq!(infer_shape(&[2, 6], &[-1, 4])?, vec![3, 4]);
/// assert!(infer_shape(&[2, 6], &[-1, 5]).is_err());
/// # Ok::<(), tapegrad_tensor::Error>(())
/// ```
pub fn infer_shape(shape: &[usize], dims: &[isize]) -> Result<Vec<usize>> {
    let numel: usize = shape.iter().product();
    let bad = |reason: String| Error::shape("reshape", shape, format!("cannot reshape into {dims:?}: {reason}"));
    let mut inferred = None;
    let mut known = 1usize;
    for (i, &d) in dims.iter().enumerate() {
        match d {
            -1 if inferred.is_some() => return Err(bad("more than one dim is -1".into())),
            -1 => inferred = Some(i),
            d if d < 0 => return Err(bad(format!("dim {i} is {d}; only -1 (infer) may be negative"))),
            d => known = known.checked_mul(d as usize).ok_or_else(|| bad("the element count overflows".into()))?,
        }
    }
    let mut out: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(i) = inferred {
        if known == 0 || !numel.is_multiple_of(known) {
            return Err(bad(format!("{numel} elements do not divide into the other dims' {known}")));
        }
        out[i] = numel / known;
    }
    Ok(out)
}

impl<T: Float> Tensor<T> {
    /// [`Tensor::reshape`] where one dim may be `-1`, inferred from the element count
    /// (`torch.reshape(x, (-1, 4))`). A view when the strides allow it, as `reshape`.
    ///
    /// Backward (on `Var`): the gradient reshaped back to the input's shape.
    ///
    /// # Errors
    /// `reshape` naming the source shape for more than one `-1`, another negative dim, or
    /// counts that cannot agree.
    ///
    /// ```
    /// # use tapegrad_tensor::Tensor;
    /// let x = Tensor::<f32>::arange(12).reshape_infer(&[-1, 4])?;
    /// assert_eq!(x.shape(), &[3, 4]);
    /// assert!(x.reshape_infer(&[-1, -1]).is_err());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn reshape_infer(&self, dims: &[isize]) -> Result<Tensor<T>> {
        self.reshape(&infer_shape(self.shape(), dims)?)
    }
}

#[cfg(test)]
mod tests {
    use super::infer_shape;

    #[test]
    fn infers_one_dim_and_rejects_the_rest() {
        assert_eq!(infer_shape(&[2, 3, 4], &[-1]).unwrap(), vec![24]);
        assert_eq!(infer_shape(&[2, 3, 4], &[4, -1, 2]).unwrap(), vec![4, 3, 2]);
        assert_eq!(infer_shape(&[2, 3], &[3, 2]).unwrap(), vec![3, 2]);
        assert_eq!(infer_shape(&[0, 3], &[-1, 3]).unwrap(), vec![0, 3]);
        assert_eq!(infer_shape(&[], &[-1]).unwrap(), vec![1]);
        let e = infer_shape(&[2, 3], &[-1, -1]).unwrap_err().to_string();
        assert!(e.starts_with("reshape: shape [2, 3]") && e.contains("more than one"), "{e}");
        assert!(infer_shape(&[2, 3], &[-2, 3]).unwrap_err().to_string().contains("-2"));
        assert!(infer_shape(&[2, 3], &[-1, 4]).is_err());
        assert!(infer_shape(&[0, 3], &[-1, 0]).is_err());
        assert!(infer_shape(&[2, 3], &[isize::MAX, isize::MAX, -1]).is_err());
    }
}
