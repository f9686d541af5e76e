//! Shape, strides and offset: where each logical element of a tensor lives in its storage.
//!
//! Every view (transpose, permute, narrow, expand, unsqueeze, squeeze, a reshape that the strides
//! allow) is a pure metadata transform here; no element is touched. Strides are in elements, never
//! negative; a stride of 0 repeats one element along a dim (how `expand` broadcasts for free).

use smallvec::SmallVec;

use crate::error::{Error, Result};

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

/// The row-major (C-order) strides of a contiguous tensor of `shape`.
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

/// The number of elements of `shape`, or `None` when it overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// The shape both operands broadcast to, NumPy's rule: align the trailing dims; each pair must be
/// equal or contain a 1.
pub fn broadcast_shapes(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Dims> {
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
            return Err(Error::mismatch(
                op,
                lhs,
                rhs,
                format!("dims {l} and {r} at position {i} of the broadcast shape cannot be broadcast"),
            ));
        };
    }
    Ok(out)
}

/// Shape, strides (in elements) and the offset of the first element in the storage.
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
    /// A contiguous row-major layout starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Layout {
        Layout { shape: to_dims(shape), strides: row_major(shape), offset: 0 }
    }

    /// A layout from its parts. The caller guarantees every index stays inside the storage
    /// (checked where the storage is known: see [`Layout::max_offset`]).
    pub fn new(shape: &[usize], strides: &[usize], offset: usize) -> Layout {
        debug_assert_eq!(shape.len(), strides.len());
        Layout { shape: to_dims(shape), strides: to_dims(strides), offset }
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

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The largest storage index this layout reaches, or `None` for an empty tensor.
    pub fn max_offset(&self) -> Option<usize> {
        if self.shape.contains(&0) {
            return None;
        }
        Some(self.offset + self.shape.iter().zip(&self.strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>())
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
        if len > 0 {
            out.offset += start * self.strides[dim];
        }
        out.shape[dim] = len;
        Ok(out)
    }

    /// Broadcasts to `shape` (which may add leading dims) by giving repeated dims stride 0.
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
        Ok(Layout { shape: to_dims(shape), strides, offset: self.offset })
    }

    /// Inserts a dim of size 1 at `dim` (`dim == ndim` appends).
    pub fn unsqueeze(&self, dim: usize) -> Result<Layout> {
        if dim > self.ndim() {
            return Err(Error::dim("unsqueeze", dim, &self.shape));
        }
        let mut out = self.clone();
        let stride = if dim < self.ndim() { self.strides[dim] * self.shape[dim] } else { 1 };
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
    /// is needed. The element counts must already match.
    pub fn reshape_view(&self, shape: &[usize]) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout { shape: to_dims(shape), strides: row_major(shape), offset: self.offset });
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
                    op *= old.get(oi)?.0;
                    oi += 1;
                } else {
                    while ni < shape.len() && shape[ni] == 1 {
                        ni += 1;
                    }
                    np *= *shape.get(ni)?;
                    ni += 1;
                }
            }
            for k in o_start..oi - 1 {
                if old[k].1 != old[k + 1].1 * old[k + 1].0 {
                    return None;
                }
            }
            // Within the group, the new dims take strides from the group's innermost stride.
            let mut acc = old[oi - 1].1;
            for k in (n_start..ni).rev() {
                strides[k] = acc;
                acc *= shape[k];
            }
        }
        if oi != old.len() {
            return None;
        }
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
        let l = Layout::contiguous(&[3, 4]).transpose(0, 1).unwrap();
        assert!(!l.is_contiguous());
        assert_eq!(l.strides(), &[1, 4]);
        assert!(l.reshape_view(&[12]).is_none());
    }

    #[test]
    fn reshape_view_splits_and_merges_compatible_dims() {
        // A narrowed [4, 6] -> [4, 3] keeps rows of stride 6: splitting the row dim is fine.
        let l = Layout::contiguous(&[4, 6]).narrow(1, 0, 3).unwrap();
        let r = l.reshape_view(&[2, 2, 3]).unwrap();
        assert_eq!(r.strides(), &[12, 6, 1]);
        assert!(l.reshape_view(&[12]).is_none());
        // Permuted then merged back where the permutation keeps chunks together.
        let p = Layout::contiguous(&[2, 3, 4]).permute(&[0, 1, 2]).unwrap();
        assert_eq!(p.reshape_view(&[6, 4]).unwrap().strides(), &[4, 1]);
        let e = Layout::contiguous(&[3, 1]).expand(&[3, 4]).unwrap();
        assert_eq!(e.reshape_view(&[3, 2, 2]).unwrap().strides(), &[1, 0, 0]);
    }

    #[test]
    fn expand_and_narrow_report_bad_arguments() {
        assert!(Layout::contiguous(&[3, 2]).expand(&[3, 4]).is_err());
        assert!(Layout::contiguous(&[3, 2]).narrow(1, 1, 2).is_err());
        assert!(Layout::contiguous(&[3, 2]).narrow(2, 0, 1).is_err());
    }
}
