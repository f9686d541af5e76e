//! Indexing ops in adjoint pairs: `index_select` / `index_add` and `gather` / `scatter_add`.
//!
//! In each pair the second op is the first one's backward: `<index_select(x), y> ==
//! <x, index_add(0, y)>` and `<gather(x), y> == <x, scatter_add(0, y)>`. Every index is checked
//! before any element is read, so a bad index is an `Err`, never a panic.

use std::borrow::Cow;

use crate::dtype::Float;
use crate::error::{Error, Result, ShapeFmt};
use crate::layout::{checked_numel, contiguous_strides, Dims};
use crate::strided::for_each_run;
use crate::tensor::Tensor;

/// The elements in row-major order, borrowed when the tensor is already contiguous.
fn row_major<T: Float>(x: &Tensor<T>) -> Cow<'_, [T]> {
    match x.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(x.to_vec()),
    }
}

/// `(outer, inner)`: the products of the dims before and after `dim`.
fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize) {
    (shape[..dim].iter().product(), shape[dim + 1..].iter().product())
}

/// Checks that every entry of `index` is below `size`, the length of `dim` in `shape`.
fn check_indices(op: &'static str, shape: &[usize], dim: usize, index: &[usize]) -> Result<()> {
    let size = shape[dim];
    match index.iter().enumerate().find(|&(_, &i)| i >= size) {
        Some((j, i)) => Err(Error::arg(
            op,
            format!(
                "index {i} (entry {j} of the index) is out of range for dim {dim} of size {size} in shape {}",
                ShapeFmt(shape)
            ),
        )),
        None => Ok(()),
    }
}

/// The checks `torch.gather` and `Tensor.scatter_add` make of the index against `shape` (the
/// gathered-from or scattered-into tensor): same ndim, `index_shape[d] <= shape[d]` for
/// `d != dim`, one index per element of `index_shape`, every index inside `dim`.
fn check_gather_index(
    op: &'static str,
    shape: &[usize],
    dim: usize,
    index: &[usize],
    index_shape: &[usize],
) -> Result<()> {
    if dim >= shape.len() {
        return Err(Error::dim(op, dim, shape));
    }
    if index_shape.len() != shape.len() {
        return Err(Error::mismatch(op, shape, index_shape, "the index must have as many dims as the tensor"));
    }
    if let Some(d) = (0..shape.len()).find(|&d| d != dim && index_shape[d] > shape[d]) {
        return Err(Error::mismatch(
            op,
            shape,
            index_shape,
            format!("the index's size {} in dim {d} exceeds the tensor's {}", index_shape[d], shape[d]),
        ));
    }
    if checked_numel(op, index_shape)? != index.len() {
        return Err(Error::shape(
            op,
            index_shape,
            format!("the index shape does not match the {} indices given", index.len()),
        ));
    }
    check_indices(op, shape, dim, index)
}

impl<T: Float> Tensor<T> {
    // ─── index_select ───────────────────────────────────────────────────────────

    /// Picks entries `index[j]` of `dim`, like `torch.index_select`:
    /// `y[.., j, ..] = x[.., index[j], ..]`. Indices may repeat and appear in any order.
    ///
    /// Output shape: `self`'s with `dim` resized to `index.len()`. Backward:
    /// `zeros(x.shape).index_add(dim, index, dy)`.
    ///
    /// # Errors
    /// `index_select` when `dim` is out of range or an index is `>= shape[dim]`.
    ///
    /// ```
    /// # use tapegrad_tensor::Tensor;
    /// let x = Tensor::<f32>::arange(6).reshape(&[3, 2])?;
    /// let y = x.index_select(0, &[2, 0, 2])?;
    /// assert_eq!(y.to_vec(), vec![4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
    /// assert!(x.index_select(0, &[3]).is_err());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn index_select(&self, dim: usize, index: &[usize]) -> Result<Tensor<T>> {
        self.layout().check_dim("index_select", dim)?;
        check_indices("index_select", self.shape(), dim, index)?;
        let mut shape: Dims = self.shape().into();
        shape[dim] = index.len();
        let numel = checked_numel("index_select", &shape)?;
        let (outer, inner) = split_at_dim(self.shape(), dim);
        let size = self.shape()[dim];
        let x = row_major(self);
        let mut out = Vec::with_capacity(numel);
        for o in 0..outer {
            for &i in index {
                let start = (o * size + i) * inner;
                out.extend_from_slice(&x[start..start + inner]);
            }
        }
        Ok(Tensor::from_contiguous(out, &shape))
    }

    // ─── index_add ──────────────────────────────────────────────────────────────

    /// `self` plus `src` added at entries `index[j]` of `dim`, like `Tensor.index_add`:
    /// `y = x; y[.., index[j], ..] += src[.., j, ..]`, repeated indices accumulating (in order of
    /// `j`). The backward (adjoint) of [`Tensor::index_select`].
    ///
    /// `src` has `self`'s shape with `dim` resized to `index.len()`; the output has `self`'s shape.
    /// Backward: `dx = dy`, `dsrc = dy.index_select(dim, index)`.
    ///
    /// # Errors
    /// `index_add` when `dim` is out of range, an index is `>= shape[dim]`, or `src` has the
    /// wrong shape.
    ///
    /// ```
    /// # use tapegrad_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros(&[3]);
    /// let y = x.index_add(0, &[2, 0, 2], &Tensor::ones(&[3]))?;
    /// assert_eq!(y.to_vec(), vec![1.0, 0.0, 2.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn index_add(&self, dim: usize, index: &[usize], src: &Tensor<T>) -> Result<Tensor<T>> {
        self.layout().check_dim("index_add", dim)?;
        let mut expected: Dims = self.shape().into();
        expected[dim] = index.len();
        if src.shape() != expected.as_slice() {
            return Err(Error::mismatch(
                "index_add",
                self.shape(),
                src.shape(),
                format!("src must have shape {} for {} indices along dim {dim}", ShapeFmt(&expected), index.len()),
            ));
        }
        check_indices("index_add", self.shape(), dim, index)?;
        let (outer, inner) = split_at_dim(self.shape(), dim);
        let size = self.shape()[dim];
        let mut out = self.to_vec();
        let src = row_major(src);
        for o in 0..outer {
            for (j, &i) in index.iter().enumerate() {
                let dst = (o * size + i) * inner;
                let from = (o * index.len() + j) * inner;
                for (d, &s) in out[dst..dst + inner].iter_mut().zip(&src[from..from + inner]) {
                    *d += s;
                }
            }
        }
        Ok(Tensor::from_contiguous(out, self.shape()))
    }

    // ─── gather ─────────────────────────────────────────────────────────────────

    /// Reads along `dim` at the positions an index tensor gives, like `torch.gather`: for every
    /// multi-index `p` of `index_shape`, `y[p] = x[p with p[dim] replaced by index[p]]`.
    ///
    /// `index` is row-major of shape `index_shape`, which has `self`'s ndim and
    /// `index_shape[d] <= shape[d]` for `d != dim` (any size along `dim`); the output has shape
    /// `index_shape`. Backward: `zeros(x.shape).scatter_add(dim, index, index_shape, dy)`.
    ///
    /// # Errors
    /// `gather` when `dim` is out of range, the index shape does not fit as above or does not
    /// match `index.len()`, or an index is `>= shape[dim]`.
    ///
    /// ```
    /// # use tapegrad_tensor::Tensor;
    /// // Pick one class score per row, as cross-entropy does.
    /// let logits = Tensor::<f32>::arange(6).reshape(&[2, 3])?;
    /// let picked = logits.gather(1, &[2, 0], &[2, 1])?;
    /// assert_eq!(picked.to_vec(), vec![2.0, 3.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn gather(&self, dim: usize, index: &[usize], index_shape: &[usize]) -> Result<Tensor<T>> {
        check_gather_index("gather", self.shape(), dim, index, index_shape)?;
        // Walk index_shape over self's strides with `dim` pinned to 0, then add the index's own
        // offset along `dim`: in bounds because of the checks above.
        let mut strides: Dims = self.strides().into();
        let dim_stride = std::mem::replace(&mut strides[dim], 0);
        let data = self.storage().as_slice();
        let mut out = Vec::with_capacity(index.len());
        let mut p = 0;
        for_each_run(index_shape, [&strides], [self.offset()], |[o], len, [s]| {
            out.extend(index[p..p + len].iter().enumerate().map(|(i, &ix)| data[o + i * s + ix * dim_stride]));
            p += len;
        });
        Ok(Tensor::from_contiguous(out, index_shape))
    }

    // ─── scatter_add ────────────────────────────────────────────────────────────

    /// `self` plus `src` added along `dim` at the positions an index tensor gives, like
    /// `Tensor.scatter_add`: for every multi-index `p` of `index_shape`,
    /// `y[p with p[dim] replaced by index[p]] += src[p]`. The backward (adjoint) of
    /// [`Tensor::gather`].
    ///
    /// `index` is row-major of shape `index_shape`, with the same constraints against `self` as
    /// in `gather`; `src` has the same ndim and `index_shape[d] <= src.shape[d]` for every `d`
    /// (only its leading `index_shape` block is read, as in PyTorch). The output has `self`'s
    /// shape. Backward: `dx = dy`, `dsrc = dy.gather(dim, index, index_shape)` (zero outside the
    /// block).
    ///
    /// # Errors
    /// `scatter_add` when `dim` is out of range, the index shape does not fit `self` or `src`,
    /// or an index is `>= shape[dim]`.
    ///
    /// ```
    /// # use tapegrad_tensor::Tensor;
    /// let x = Tensor::<f32>::zeros(&[2, 3]);
    /// let y = x.scatter_add(1, &[2, 0], &[2, 1], &Tensor::ones(&[2, 1]))?;
    /// assert_eq!(y.to_vec(), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn scatter_add(
        &self,
        dim: usize,
        index: &[usize],
        index_shape: &[usize],
        src: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        check_gather_index("scatter_add", self.shape(), dim, index, index_shape)?;
        if src.ndim() != index_shape.len() || index_shape.iter().zip(src.shape()).any(|(i, s)| i > s) {
            return Err(Error::mismatch(
                "scatter_add",
                index_shape,
                src.shape(),
                "src must have the index's ndim and be at least as large as the index in every dim",
            ));
        }
        let mut out = self.to_vec();
        let mut strides = contiguous_strides(self.shape());
        let dim_stride = std::mem::replace(&mut strides[dim], 0);
        let data = src.storage().as_slice();
        let mut p = 0;
        for_each_run(index_shape, [&strides, src.strides()], [0, src.offset()], |[o, so], len, [s, ss]| {
            for (i, &ix) in index[p..p + len].iter().enumerate() {
                out[o + i * s + ix * dim_stride] += data[so + i * ss];
            }
            p += len;
        });
        Ok(Tensor::from_contiguous(out, self.shape()))
    }
}
