//! Shape, strides and offset: where each logical element of a tensor lives in its storage.
//!
//! Every view (transpose, permute, narrow, expand, unsqueeze, squeeze, a reshape that the strides
//! allow) is a pure metadata transform here; no element is touched. Strides are in elements, never
//! negative; a stride of 0 repeats one element along a dim (how `expand` broadcasts for free).

use smallvec::SmallVec;

use crate::error::{Error, Result, ShapeFmt};

/// Dims or strides, inline up to six entries (no allocation for the shapes deep learning uses).
pub type Dims = SmallVec<[usize; 6]>;

/// A layout's dims or strides: inline up to four entries, so that a `Layout` (and with it a
/// `Tensor`) stays small enough to be moved without a `memcpy` call; more dims spill to the heap.
type LayoutDims = SmallVec<[usize; 4]>;

/// `s` as layout dims. Up to four entries this builds the inline buffer from fixed-size patterns,
/// which compiles to a few moves instead of a `memcpy` call of a variable length (this runs for
/// every tensor clone and op output).
fn to_dims(s: &[usize]) -> LayoutDims {
    let buf = match *s {
        [] => [0; 4],
        [a] => [a, 0, 0, 0],
        [a, b] => [a, b, 0, 0],
        [a, b, c] => [a, b, c, 0],
        [a, b, c, d] => [a, b, c, d],
        _ => return LayoutDims::from_slice(s),
    };
    SmallVec::from_buf_and_len(buf, s.len())
}

/// The most elements a tensor may have, view or not: `isize::MAX / 8` (2^60 - 1 on a 64-bit
/// target), so that the elements of any valid shape, as `f64`, fit in one allocation, and an op
/// that copies a view (an expanded one included) never asks for an impossible buffer size.
pub const MAX_NUMEL: usize = isize::MAX as usize / std::mem::size_of::<f64>();

/// The number of elements of `shape`, checked, for `op`.
///
/// A shape is valid when the product of its non-zero dims is at most [`MAX_NUMEL`]: then every
/// product of some of its dims (a row length, a plane, a batch), in any order, fits in `usize`,
/// even for an empty tensor (`[0, 1 << 40, 1 << 40]` is rejected, as its dims' product is
/// meaningless). Every [`Layout`] and every tensor has a valid shape; ops check the shapes they
/// compute (a broadcast, a product, a convolution's output) with this before allocating.
///
/// # Errors
/// [`Error::InvalidShape`] naming `op` and `shape` when the product overflows or exceeds
/// [`MAX_NUMEL`].
///
/// ```
/// use tapegrad_tensor::checked_numel;
/// assert_eq!(checked_numel("zeros", &[2, 3])?, 6);
/// assert_eq!(checked_numel("zeros", &[0, 3])?, 0);
/// let e = checked_numel("expand", &[1 << 32, 1 << 32]).unwrap_err();
/// assert_eq!(e.to_string(), "expand: shape [4294967296, 4294967296]: the number of elements overflows usize");
/// # Ok::<(), tapegrad_tensor::Error>(())
/// ```
pub fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    numel_or_reason(shape).map_err(|reason| Error::shape(op, shape, reason))
}

/// [`checked_numel`] with the reason a shape is rejected, for an op whose error names more
/// than the one shape (a broadcast, a matmul).
pub(crate) fn numel_or_reason(shape: &[usize]) -> std::result::Result<usize, String> {
    let mut product = 1usize;
    let mut empty = false;
    for &d in shape {
        if d == 0 {
            empty = true;
        } else {
            product = product.checked_mul(d).ok_or("the number of elements overflows usize")?;
        }
    }
    if product > MAX_NUMEL {
        return Err(format!(
            "{product} elements exceed the most a tensor can have ({MAX_NUMEL}, isize::MAX bytes of f64)"
        ));
    }
    Ok(if empty { 0 } else { product })
}

/// The row-major (C-order) strides of a contiguous tensor of `shape`. Strides that would
/// overflow `usize` saturate (only possible for a shape [`checked_numel`] rejects).
pub fn contiguous_strides(shape: &[usize]) -> Dims {
    let mut strides = Dims::from_slice(shape);
    fill_row_major(shape, &mut strides);
    strides
}

/// [`contiguous_strides`] as layout dims.
fn row_major(shape: &[usize]) -> LayoutDims {
    let mut strides = to_dims(shape);
    fill_row_major(shape, &mut strides);
    strides
}

/// Overwrites `strides` (as long as `shape`) with the row-major strides of `shape`.
fn fill_row_major(shape: &[usize], strides: &mut [usize]) {
    let mut acc = 1usize;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc = acc.saturating_mul(shape[i]);
    }
}

/// The largest storage index `offset + Σ (dims[i] - 1) · strides[i]` over the non-empty dims, or
/// `None` when it overflows `usize`. For a non-empty layout this is its last element's index.
fn reach(shape: &[usize], strides: &[usize], offset: usize) -> Option<usize> {
    shape.iter().zip(strides).try_fold(offset, |acc, (&d, &s)| acc.checked_add(d.saturating_sub(1).checked_mul(s)?))
}

/// The shape both operands broadcast to, NumPy's rule: align the trailing dims; each pair must be
/// equal or contain a 1.
///
/// # Errors
/// [`Error::ShapeMismatch`] naming `op` and both shapes when a pair of dims cannot be broadcast
/// or the broadcast shape is too large ([`checked_numel`]).
pub fn broadcast_shapes(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Dims> {
    let out = broadcast_dims(lhs, rhs).map_err(|(i, l, r)| {
        Error::mismatch(
            op,
            lhs,
            rhs,
            format!("dims {l} and {r} at position {i} of the broadcast shape cannot be broadcast"),
        )
    })?;
    if let Err(reason) = numel_or_reason(&out) {
        return Err(Error::mismatch(op, lhs, rhs, format!("the broadcast shape {}: {reason}", ShapeFmt(&out))));
    }
    Ok(out)
}

/// The broadcast shape of `lhs` and `rhs` without the size check of [`broadcast_shapes`], or the
/// first position that cannot be broadcast with its two dims.
pub(crate) fn broadcast_dims(lhs: &[usize], rhs: &[usize]) -> std::result::Result<Dims, (usize, usize, usize)> {
    let n = lhs.len().max(rhs.len());
    // A plain copy of the longer shape (every entry is overwritten below).
    let mut out = Dims::from_slice(if lhs.len() >= rhs.len() { lhs } else { rhs });
    for i in 0..n {
        let l = if i + lhs.len() >= n { lhs[i + lhs.len() - n] } else { 1 };
        let r = if i + rhs.len() >= n { rhs[i + rhs.len() - n] } else { 1 };
        out[i] = if l == r || r == 1 {
            l
        } else if l == 1 {
            r
        } else {
            return Err((i, l, r));
        };
    }
    Ok(out)
}

/// Shape, strides (in elements) and the offset of the first element in the storage.
///
/// Every layout keeps two invariants, checked where it is built ([`Layout::new`],
/// [`Layout::contiguous`], [`Layout::expand`]) and kept by every view: its shape is valid
/// ([`checked_numel`]: at most [`MAX_NUMEL`] elements, so no product of its dims overflows), and
/// `offset + Σ (dims[i] - 1) · strides[i]` fits in `usize`, so no index it reaches overflows.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    shape: LayoutDims,
    strides: LayoutDims,
    offset: usize,
}

impl Clone for Layout {
    /// A plain copy of the inline dims (the derived clone goes element by element through
    /// `SmallVec`'s iterator; this runs once per tensor clone, several times per op).
    fn clone(&self) -> Self {
        Layout { shape: to_dims(&self.shape), strides: to_dims(&self.strides), offset: self.offset }
    }
}

impl Layout {
    /// A contiguous row-major layout of `shape` starting at offset 0.
    ///
    /// # Errors
    /// `Layout::contiguous` naming the shape when it is too large ([`checked_numel`]).
    ///
    /// ```
    /// use tapegrad_tensor::Layout;
    /// assert_eq!(Layout::contiguous(&[2, 3])?.strides(), &[3, 1]);
    /// assert!(Layout::contiguous(&[1 << 40, 1 << 40]).is_err());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn contiguous(shape: &[usize]) -> Result<Layout> {
        checked_numel("Layout::contiguous", shape)?;
        Ok(Layout::contiguous_valid(shape))
    }

    /// [`Layout::contiguous`] of a shape already known to be valid (an op output whose numel
    /// is the length of its buffer, or a shape already checked).
    pub(crate) fn contiguous_valid(shape: &[usize]) -> Layout {
        debug_assert!(checked_numel("Layout::contiguous", shape).is_ok());
        Layout { shape: to_dims(shape), strides: row_major(shape), offset: 0 }
    }

    /// A layout from its parts: element `index` is at storage index
    /// `offset + Σ index[i] · strides[i]`. Whether it fits a storage is checked where the
    /// storage is known ([`Tensor::from_storage`](crate::Tensor::from_storage)).
    ///
    /// # Errors
    /// `Layout::new` naming the shape when `strides` has another length, the shape is too large
    /// ([`checked_numel`]), or the largest index, `offset + Σ (dims[i] - 1) · strides[i]`,
    /// overflows `usize`.
    ///
    /// ```
    /// use tapegrad_tensor::Layout;
    /// let l = Layout::new(&[2, 3], &[1, 2], 4)?; // a transposed [3, 2] at offset 4
    /// assert_eq!(l.max_offset(), Some(9));
    /// assert!(Layout::new(&[2, 3], &[1], 0).is_err());
    /// assert!(Layout::new(&[3], &[usize::MAX / 2 + 1], 0).is_err()); // 2 strides past usize::MAX
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn new(shape: &[usize], strides: &[usize], offset: usize) -> Result<Layout> {
        const OP: &str = "Layout::new";
        if shape.len() != strides.len() {
            return Err(Error::shape(
                OP,
                shape,
                format!("{} strides {strides:?} for {} dims", strides.len(), shape.len()),
            ));
        }
        checked_numel(OP, shape)?;
        if reach(shape, strides, offset).is_none() {
            return Err(Error::shape(
                OP,
                shape,
                format!("strides {strides:?} from offset {offset} reach past usize::MAX"),
            ));
        }
        Ok(Layout { shape: to_dims(shape), strides: to_dims(strides), offset })
    }

    /// The dims.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The strides, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// The storage index of the element at index 0 along every dim.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The number of dims.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements (it fits: a layout's shape is valid).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The largest storage index this layout reaches, or `None` for an empty tensor.
    pub fn max_offset(&self) -> Option<usize> {
        if self.shape.contains(&0) {
            return None;
        }
        // Some by the layout's invariant; saturating keeps a bound check against any storage
        // failing rather than passing if it were ever broken.
        Some(reach(&self.shape, &self.strides, self.offset).unwrap_or(usize::MAX))
    }

    /// True when the elements are laid out row-major without gaps (dims of size 1 may have any
    /// stride), so that `storage[offset..offset + numel]` is the tensor in logical order.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for i in (0..self.shape.len()).rev() {
            if self.shape[i] == 1 {
                continue;
            }
            if self.strides[i] != expected {
                return false;
            }
            expected *= self.shape[i];
        }
        true
    }

    /// The storage index of a multi-index (which must be in range).
    pub fn index_offset(&self, index: &[usize]) -> usize {
        self.offset + index.iter().zip(&self.strides).map(|(i, s)| i * s).sum::<usize>()
    }

    /// Checks `dim < ndim`.
    pub fn check_dim(&self, op: &'static str, dim: usize) -> Result<()> {
        if dim < self.ndim() {
            Ok(())
        } else {
            Err(Error::dim(op, dim, &self.shape))
        }
    }

    /// Swaps two dims.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Layout> {
        self.check_dim("transpose", a)?;
        self.check_dim("transpose", b)?;
        let mut out = self.clone();
        out.shape.swap(a, b);
        out.strides.swap(a, b);
        Ok(out)
    }

    /// Reorders the dims: output dim `i` is input dim `dims[i]`.
    pub fn permute(&self, dims: &[usize]) -> Result<Layout> {
        let n = self.ndim();
        let mut seen: Dims = SmallVec::from_elem(0, n);
        if dims.len() != n {
            return Err(Error::shape(
                "permute",
                &self.shape,
                format!("permutation {dims:?} has {} entries for {n} dims", dims.len()),
            ));
        }
        for &d in dims {
            if d >= n || seen[d] == 1 {
                return Err(Error::shape("permute", &self.shape, format!("{dims:?} is not a permutation of 0..{n}")));
            }
            seen[d] = 1;
        }
        Ok(Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        })
    }

    /// Keeps `len` entries of `dim` starting at `start`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Layout> {
        self.check_dim("narrow", dim)?;
        let size = self.shape[dim];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::shape(
                "narrow",
                &self.shape,
                format!("start {start} + length {len} exceeds size {size} of dim {dim}"),
            ));
        }
        let mut out = self.clone();
        // An empty result keeps its offset: it reads nothing, and an empty tensor's offset may
        // already sit at the end of its storage.
        if len > 0 && !self.shape.contains(&0) {
            out.offset += start * self.strides[dim];
        }
        out.shape[dim] = len;
        Ok(out)
    }

    /// Broadcasts to `shape` (which may add leading dims) by giving repeated dims stride 0.
    ///
    /// # Errors
    /// `expand` naming both shapes when `shape` has fewer dims or a dim that is not 1 would
    /// change size, and naming `shape` when it is too large ([`checked_numel`]).
    pub fn expand(&self, shape: &[usize]) -> Result<Layout> {
        if shape.len() < self.ndim() {
            return Err(Error::mismatch("expand", &self.shape, shape, "the target has fewer dims than the tensor"));
        }
        let lead = shape.len() - self.ndim();
        let mut strides = to_dims(shape);
        strides[..lead].fill(0);
        for i in 0..self.ndim() {
            let (have, want) = (self.shape[i], shape[lead + i]);
            strides[lead + i] = if have == want {
                self.strides[i]
            } else if have == 1 {
                0
            } else {
                return Err(Error::mismatch(
                    "expand",
                    &self.shape,
                    shape,
                    format!("dim {i} of size {have} can only be expanded from size 1"),
                ));
            };
        }
        checked_numel("expand", shape)?;
        Ok(Layout { shape: to_dims(shape), strides, offset: self.offset })
    }

    /// Inserts a dim of size 1 at `dim` (`dim == ndim` appends).
    pub fn unsqueeze(&self, dim: usize) -> Result<Layout> {
        if dim > self.ndim() {
            return Err(Error::dim("unsqueeze", dim, &self.shape));
        }
        let mut out = self.clone();
        // Any stride does for a dim of size 1; this one keeps the layout contiguous when it was
        // (saturating: an empty tensor may have strides whose product with a dim overflows).
        let stride = if dim < self.ndim() { self.strides[dim].saturating_mul(self.shape[dim]) } else { 1 };
        out.shape.insert(dim, 1);
        out.strides.insert(dim, stride);
        Ok(out)
    }

    /// Removes `dim`, which must have size 1.
    pub fn squeeze(&self, dim: usize) -> Result<Layout> {
        self.check_dim("squeeze", dim)?;
        if self.shape[dim] != 1 {
            return Err(Error::shape("squeeze", &self.shape, format!("dim {dim} has size {}, not 1", self.shape[dim])));
        }
        let mut out = self.clone();
        out.shape.remove(dim);
        out.strides.remove(dim);
        Ok(out)
    }

    /// The layout of a reshape to `shape` without moving any element, when the strides allow it
    /// (each group of merged or split dims must be contiguous within itself); `None` when a copy
    /// is needed, or when `shape` does not have this layout's number of elements (or is not a
    /// valid shape), which the caller checks first to tell the two apart.
    pub fn reshape_view(&self, shape: &[usize]) -> Option<Layout> {
        if checked_numel("reshape", shape).ok()? != self.numel() {
            return None;
        }
        if self.is_contiguous() {
            let strides = row_major(shape);
            reach(shape, &strides, self.offset)?;
            return Some(Layout { shape: to_dims(shape), strides, offset: self.offset });
        }
        // Walk both shapes in groups of equal products; within a group the old dims must be
        // "chunk-contiguous" (stride[i] == stride[i+1] * shape[i+1]).
        let old: Vec<(usize, usize)> =
            self.shape.iter().zip(&self.strides).filter(|(&d, _)| d != 1).map(|(&d, &s)| (d, s)).collect();
        let mut strides: LayoutDims = SmallVec::from_elem(0, shape.len());
        let (mut oi, mut ni) = (0usize, 0usize);
        while ni < shape.len() {
            if shape[ni] == 1 {
                strides[ni] = 1;
                ni += 1;
                continue;
            }
            // Gather one group.
            let (o_start, n_start) = (oi, ni);
            let (mut op, mut np) = (old.get(oi)?.0, shape[ni]);
            oi += 1;
            ni += 1;
            while op != np {
                if op < np {
                    op = op.checked_mul(old.get(oi)?.0)?;
                    oi += 1;
                } else {
                    while ni < shape.len() && shape[ni] == 1 {
                        ni += 1;
                    }
                    np = np.checked_mul(*shape.get(ni)?)?;
                    ni += 1;
                }
            }
            for k in o_start..oi - 1 {
                if old[k + 1].1.checked_mul(old[k + 1].0) != Some(old[k].1) {
                    return None;
                }
            }
            // Within the group, the new dims take strides from the group's innermost stride.
            let mut acc = old[oi - 1].1;
            for k in (n_start..ni).rev() {
                strides[k] = acc;
                acc = acc.saturating_mul(shape[k]);
            }
        }
        if oi != old.len() {
            return None;
        }
        reach(shape, &strides, self.offset)?;
        Some(Layout { shape: to_dims(shape), strides, offset: self.offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_strides_are_row_major() {
        assert_eq!(contiguous_strides(&[2, 3, 4]).as_slice(), &[12, 4, 1]);
        assert_eq!(contiguous_strides(&[]).as_slice(), &[] as &[usize]);
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes("add", &[3, 1], &[1, 4]).unwrap().as_slice(), &[3, 4]);
        assert_eq!(broadcast_shapes("add", &[2, 3, 4], &[4]).unwrap().as_slice(), &[2, 3, 4]);
        assert_eq!(broadcast_shapes("add", &[0, 1], &[1, 5]).unwrap().as_slice(), &[0, 5]);
        let e = broadcast_shapes("add", &[2, 3], &[4]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "add: [2, 3] and [4]: dims 3 and 4 at position 1 of the broadcast shape cannot be broadcast"
        );
    }

    #[test]
    fn transposed_layout_is_not_contiguous_and_reshape_of_it_needs_a_copy() {
        let l = Layout::contiguous(&[3, 4]).unwrap().transpose(0, 1).unwrap();
        assert!(!l.is_contiguous());
        assert_eq!(l.strides(), &[1, 4]);
        assert!(l.reshape_view(&[12]).is_none());
    }

    #[test]
    fn reshape_view_splits_and_merges_compatible_dims() {
        // A narrowed [4, 6] -> [4, 3] keeps rows of stride 6: splitting the row dim is fine.
        let l = Layout::contiguous(&[4, 6]).unwrap().narrow(1, 0, 3).unwrap();
        let r = l.reshape_view(&[2, 2, 3]).unwrap();
        assert_eq!(r.strides(), &[12, 6, 1]);
        assert!(l.reshape_view(&[12]).is_none());
        // Permuted then merged back where the permutation keeps chunks together.
        let p = Layout::contiguous(&[2, 3, 4]).unwrap().permute(&[0, 1, 2]).unwrap();
        assert_eq!(p.reshape_view(&[6, 4]).unwrap().strides(), &[4, 1]);
        let e = Layout::contiguous(&[3, 1]).unwrap().expand(&[3, 4]).unwrap();
        assert_eq!(e.reshape_view(&[3, 2, 2]).unwrap().strides(), &[1, 0, 0]);
    }

    #[test]
    fn expand_and_narrow_report_bad_arguments() {
        assert!(Layout::contiguous(&[3, 2]).unwrap().expand(&[3, 4]).is_err());
        assert!(Layout::contiguous(&[3, 2]).unwrap().narrow(1, 1, 2).is_err());
        assert!(Layout::contiguous(&[3, 2]).unwrap().narrow(2, 0, 1).is_err());
    }
}
