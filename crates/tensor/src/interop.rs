//! Conversions between [`Tensor`] and [`ndarray`]'s arrays (the `ndarray` cargo feature).
//!
//! Both are a buffer with a shape and strides, so a conversion moves the buffer without copying
//! it wherever the other side can hold the layout as it is:
//!
//! - [`Array`] into `Tensor` (`Tensor::try_from(array)`): no copy for any layout with
//!   non-negative strides (row-major, column-major, sliced); an array with a reversed axis (a
//!   negative stride, from `slice(s![..;-1])` or `invert_axis`) is copied into row-major order.
//! - `Tensor` into [`ArrayD`] (`ArrayD::try_from(tensor)`): no copy when the tensor is the only
//!   handle on its storage, starts at its beginning and has no two elements at one place (an
//!   expanded dim); otherwise, and always for a tensor whose storage is shared with a clone or a
//!   view (the tensor crate's storage is reference-counted and immutable, ndarray's owned array
//!   is not), the elements are copied into a row-major array.
//! - [`Tensor::as_ndarray`]: a borrowed [`ArrayViewD`] of any tensor, never a copy.
//! - [`ArrayView`] into `Tensor`: a copy (a tensor owns its storage).
//!
//! ```
//! use ndarray::{array, ArrayD};
//! use tapegrad_tensor::Tensor;
//! let a = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
//! let x = Tensor::try_from(a.reversed_axes())?; // column-major: no copy
//! assert_eq!((x.shape(), x.to_vec()), (&[3, 2][..], vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
//! assert_eq!(x.as_ndarray()?.sum(), 21.0);
//! let back = ArrayD::try_from(x.matmul(&Tensor::ones(&[2, 1]))?)?;
//! assert_eq!(back.into_raw_vec_and_offset().0, vec![5.0, 7.0, 9.0]);
//! # Ok::<(), tapegrad_tensor::Error>(())
//! ```

use ndarray::{Array, ArrayD, ArrayView, ArrayViewD, ArrayViewMut, Dimension, IxDyn, ShapeBuilder, ShapeError};

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::storage::Storage;
use crate::tensor::Tensor;

/// An `Error` for a layout that ndarray refuses, for `op`.
fn refused(op: &'static str, shape: &[usize], e: ShapeError) -> Error {
    Error::shape(op, shape, format!("ndarray refuses the layout: {e}"))
}

/// Takes the array's buffer as the tensor's storage, without a copy when its strides are
/// non-negative (any layout a tensor can describe), else copying it into row-major order.
///
/// # Errors
/// [`Error::InvalidShape`] when the array has more elements than a tensor can
/// ([`MAX_NUMEL`](crate::MAX_NUMEL), only possible for an empty array with huge dims).
impl<T: Float, D: Dimension> TryFrom<Array<T, D>> for Tensor<T> {
    type Error = Error;

    fn try_from(array: Array<T, D>) -> Result<Tensor<T>> {
        let shape = array.shape().to_vec();
        let Some(strides) = array.strides().iter().map(|&s| usize::try_from(s).ok()).collect::<Option<Vec<usize>>>()
        else {
            return Tensor::from_vec(array.iter().copied().collect(), &shape);
        };
        let (data, offset) = array.into_raw_vec_and_offset();
        // An empty array has no first element, so no offset.
        let layout = Layout::new(&shape, &strides, offset.unwrap_or(0))?;
        Tensor::from_storage(Storage::new(data), layout)
    }
}

/// Copies the viewed elements into a new tensor, in the view's memory order when it is
/// contiguous (the tensor then has the view's strides), else in row-major order.
///
/// # Errors
/// As for an owned [`Array`].
impl<T: Float, D: Dimension> TryFrom<ArrayView<'_, T, D>> for Tensor<T> {
    type Error = Error;

    fn try_from(view: ArrayView<'_, T, D>) -> Result<Tensor<T>> {
        Tensor::try_from(view.to_owned())
    }
}

/// Moves the tensor's buffer into an owned array when the tensor is the only handle on its
/// storage, starts at its beginning and has no expanded dim; otherwise (a clone or a view holds
/// the storage too) copies the elements into a row-major array.
///
/// # Errors
/// [`Error::InvalidShape`] (op `ArrayD::try_from`) if ndarray refuses the layout; it accepts
/// every layout of a tensor, so this is not expected.
impl<T: Float> TryFrom<Tensor<T>> for ArrayD<T> {
    type Error = Error;

    fn try_from(tensor: Tensor<T>) -> Result<ArrayD<T>> {
        const OP: &str = "ArrayD::try_from";
        let shape = IxDyn(tensor.shape());
        let strides = IxDyn(tensor.strides());
        let offset = tensor.offset();
        let mut storage = tensor.storage;
        // ndarray checks an owned array's layout as it checks a mutable view's (in bounds, no
        // two elements at one place): checking the view first hands the buffer over only when
        // the array will take it.
        let fits = offset == 0
            && shape.size() > 0
            && storage
                .get_mut()
                .is_some_and(|data| ArrayViewMut::from_shape(shape.clone().strides(strides.clone()), data).is_ok());
        let storage = if fits {
            match storage.try_into_vec() {
                Ok(data) => {
                    return ArrayD::from_shape_vec(shape.clone().strides(strides), data)
                        .map_err(|e| refused(OP, shape.slice(), e));
                }
                Err(storage) => storage,
            }
        } else {
            storage
        };
        Ok(view(&storage.as_slice()[offset..], &shape, &strides, OP)?.to_owned())
    }
}

/// The view of `data` (a storage from the tensor's offset on) with `shape` and `strides`, for
/// `op`. An empty tensor's strides may reach past its (empty) storage, which ndarray refuses
/// even with no element to reach: it gets row-major strides, as it has no element to place.
fn view<'a, T: Float>(data: &'a [T], shape: &IxDyn, strides: &IxDyn, op: &'static str) -> Result<ArrayViewD<'a, T>> {
    let viewed = if shape.size() == 0 {
        ArrayView::from_shape(shape.clone(), &data[..0])
    } else {
        ArrayView::from_shape(shape.clone().strides(strides.clone()), data)
    };
    viewed.map_err(|e| refused(op, shape.slice(), e))
}

impl<T: Float> Tensor<T> {
    /// A borrowed [`ArrayViewD`] of this tensor: the same elements, shape and strides, never a
    /// copy (an expanded dim keeps its stride 0). The `ndarray` feature.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] (op `as_ndarray`) if ndarray refuses the layout; it accepts every
    /// layout of a tensor, so this is not expected.
    ///
    /// ```
    /// use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::<f64>::arange(6).reshape(&[2, 3])?.t()?;
    /// let v = x.as_ndarray()?;
    /// assert_eq!((v.shape(), v[[2, 1]]), (&[3, 2][..], 5.0));
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn as_ndarray(&self) -> Result<ArrayViewD<'_, T>> {
        view(&self.storage.as_slice()[self.offset()..], &IxDyn(self.shape()), &IxDyn(self.strides()), "as_ndarray")
    }
}
