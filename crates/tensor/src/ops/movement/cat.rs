//! `cat` and `stack`: one new contiguous tensor assembled from whole inputs, each copied straight
//! from its own strides into its slot of the output (non-contiguous inputs are never copied twice).

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::layout::{checked_numel, Dims, Layout};
use crate::strided::for_each_run;
use crate::tensor::Tensor;

/// Copies `src` (any strides) into the elements of `dst` that `dst_layout` selects; the two
/// shapes are equal.
fn copy_into<T: Float>(dst: &mut [T], dst_layout: &Layout, src: &Tensor<T>) {
    debug_assert_eq!(dst_layout.shape(), src.shape());
    let data = src.storage().as_slice();
    for_each_run(
        src.shape(),
        [dst_layout.strides(), src.strides()],
        [dst_layout.offset(), src.offset()],
        |[d, s], len, [ds, ss]| {
            if ds == 1 && ss == 1 {
                dst[d..d + len].copy_from_slice(&data[s..s + len]);
            } else {
                for i in 0..len {
                    dst[d + i * ds] = data[s + i * ss];
                }
            }
        },
    );
}

impl<T: Float> Tensor<T> {
    // ─── cat ────────────────────────────────────────────────────────────────────

    /// Concatenates tensors along `dim`, like `torch.cat`.
    ///
    /// Every input has the same number of dims and the same size in every dim but `dim`; the
    /// output's size along `dim` is the sum of the inputs'. Inputs may be any view (transposed,
    /// narrowed, expanded). Backward: `dy.narrow(dim, start_i, len_i)` for input `i`.
    ///
    /// # Errors
    /// `cat` for an empty list, a `dim` out of range, or two inputs whose ndim or non-`dim`
    /// sizes differ (naming the first input's shape and the offending one).
    ///
    /// ```
    /// # use tapegrad_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros(&[2, 3]);
    /// let y = Tensor::<f32>::ones(&[2, 1]);
    /// let z = Tensor::cat(&[&x, &y], 1)?;
    /// assert_eq!(z.shape(), &[2, 4]);
    /// assert_eq!(z.to_vec(), vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn cat(tensors: &[&Tensor<T>], dim: usize) -> Result<Tensor<T>> {
        let first = tensors.first().ok_or_else(|| Error::arg("cat", "expects a non-empty list of tensors"))?;
        first.layout().check_dim("cat", dim)?;
        let mut shape: Dims = first.shape().into();
        let mut total = 0usize;
        for (i, t) in tensors.iter().enumerate() {
            if t.ndim() != first.ndim() {
                return Err(Error::mismatch(
                    "cat",
                    first.shape(),
                    t.shape(),
                    format!("tensor {i} has {} dims, tensor 0 has {}", t.ndim(), first.ndim()),
                ));
            }
            if let Some(d) = (0..first.ndim()).find(|&d| d != dim && t.shape()[d] != first.shape()[d]) {
                return Err(Error::mismatch(
                    "cat",
                    first.shape(),
                    t.shape(),
                    format!("tensor {i} differs from tensor 0 in dim {d}, and only dim {dim} may differ"),
                ));
            }
            total = total
                .checked_add(t.shape()[dim])
                .ok_or_else(|| Error::shape("cat", t.shape(), "the concatenated size overflows usize"))?;
        }
        shape[dim] = total;
        let numel = checked_numel("cat", &shape)?;
        let out_layout = Layout::contiguous_valid(&shape);
        let mut out = vec![T::ZERO; numel];
        let mut start = 0;
        for t in tensors {
            let len = t.shape()[dim];
            copy_into(&mut out, &out_layout.narrow(dim, start, len)?, t);
            start += len;
        }
        Ok(Tensor::from_contiguous(out, &shape))
    }

    // ─── stack ──────────────────────────────────────────────────────────────────

    /// Stacks tensors of one shape along a new dim inserted at `dim` (`0..=ndim`), like
    /// `torch.stack`: `stack(ts, d)[.., i, ..] = ts[i]`.
    ///
    /// Output shape: the common shape with `tensors.len()` inserted at `dim`. Backward: input
    /// `i` gets `dy.narrow(dim, i, 1).squeeze(dim)`.
    ///
    /// # Errors
    /// `stack` for an empty list, `dim > ndim`, or two inputs of different shapes.
    ///
    /// ```
    /// # use tapegrad_tensor::Tensor;
    /// let x = Tensor::<f32>::arange(3);
    /// let s = Tensor::stack(&[&x, &x], 1)?;
    /// assert_eq!(s.shape(), &[3, 2]);
    /// assert_eq!(s.to_vec(), vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn stack(tensors: &[&Tensor<T>], dim: usize) -> Result<Tensor<T>> {
        let first = tensors.first().ok_or_else(|| Error::arg("stack", "expects a non-empty list of tensors"))?;
        if dim > first.ndim() {
            return Err(Error::dim("stack", dim, first.shape()));
        }
        for (i, t) in tensors.iter().enumerate() {
            if t.shape() != first.shape() {
                return Err(Error::mismatch(
                    "stack",
                    first.shape(),
                    t.shape(),
                    format!("tensor {i} and tensor 0 differ; stack needs equal shapes"),
                ));
            }
        }
        let views = tensors.iter().map(|t| t.unsqueeze(dim)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&views.iter().collect::<Vec<_>>(), dim)
    }
}
