//! The GEMM's operands as checked views: [`MatRef`] for `A` and `B`, [`MatMut`] for `C`.
//!
//! A view is a slice, the index of element `(0, 0)`, the dims and the strides. Its constructors
//! check once that every element it can address lies inside the slice (and, for `C`, that no
//! two elements share an index), so the kernels may read and write through raw pointers
//! without checking again: the views' invariants are the kernels' bounds.

use std::marker::PhantomData;
use std::ops::Range;

/// True when every element `(i, j)` of a view lies inside a slice of `len` elements (vacuously
/// true for an empty view), computed without overflow.
fn fits(len: usize, offset: usize, [rows, cols]: [usize; 2], [row_stride, col_stride]: [usize; 2]) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    // The last element, (rows - 1, cols - 1), has the largest index.
    let last = (rows - 1)
        .checked_mul(row_stride)
        .and_then(|r| (cols - 1).checked_mul(col_stride).and_then(|c| r.checked_add(c)))
        .and_then(|rc| rc.checked_add(offset));
    matches!(last, Some(last) if last < len)
}

/// True when no two elements of a view share an index: ordering the dims longer than one by
/// stride, the inner one steps by at least 1 and the outer one past the whole inner run (a
/// row-major `C` with `row_stride >= cols`, or its transpose). A sufficient condition, which is
/// all the kernels need. An empty view has no elements to share.
fn distinct([rows, cols]: [usize; 2], [row_stride, col_stride]: [usize; 2]) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    match (rows > 1, cols > 1) {
        (false, false) => true,
        (true, false) => row_stride >= 1,
        (false, true) => col_stride >= 1,
        (true, true) => {
            let ((inner, inner_stride), outer_stride) = if row_stride <= col_stride {
                ((rows, row_stride), col_stride)
            } else {
                ((cols, col_stride), row_stride)
            };
            inner_stride >= 1 && matches!(inner.checked_mul(inner_stride), Some(run) if outer_stride >= run)
        }
    }
}

// ─── MatRef ─────────────────────────────────────────────────────────────────────

/// A read-only strided matrix: element `(i, j)` with `i < rows`, `j < cols` is
/// `data[offset + i * row_stride + j * col_stride]`.
///
/// Any strides are allowed (0 repeats a row or a column, as an expanded tensor does); the
/// constructors check that every element lies inside `data`, so a `MatRef` never addresses
/// memory outside its slice.
///
/// ```
/// use tapegrad_tensor::kernels::gemm::MatRef;
/// let data = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let a = MatRef::row_major(&data, 2, 3); // [[1, 2, 3], [4, 5, 6]]
/// assert_eq!((a.t().rows(), a.t().cols(), a.t().get(2, 1)), (3, 2, 6.0));
/// assert!(MatRef::try_new(&data, 1, [2, 3], [3, 1]).is_none()); // (1, 2) would be data[6]
/// ```
#[derive(Debug)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

// Copy whatever `T` is: a view copies the reference, never the elements.
impl<T> Clone for MatRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for MatRef<'_, T> {}

impl<'a, T> MatRef<'a, T> {
    /// The `dims[0] x dims[1]` matrix at `offset` in `data` with `strides = [row, column]`, or
    /// `None` when one of its elements would lie outside `data`.
    pub fn try_new(data: &'a [T], offset: usize, dims: [usize; 2], strides: [usize; 2]) -> Option<MatRef<'a, T>> {
        fits(data.len(), offset, dims, strides).then_some(MatRef {
            data,
            offset,
            rows: dims[0],
            cols: dims[1],
            row_stride: strides[0],
            col_stride: strides[1],
        })
    }

    /// As [`MatRef::try_new`].
    ///
    /// # Panics
    /// When an element would lie outside `data`; the message names the view and the slice.
    pub fn new(data: &'a [T], offset: usize, dims: [usize; 2], strides: [usize; 2]) -> MatRef<'a, T> {
        MatRef::try_new(data, offset, dims, strides).unwrap_or_else(|| {
            panic!(
                "MatRef: {} x {} at offset {offset} with strides {strides:?} reaches past its slice of {} elements",
                dims[0],
                dims[1],
                data.len()
            )
        })
    }

    /// The row-major `rows x cols` matrix at the start of `data`.
    ///
    /// # Panics
    /// When `data` has fewer than `rows * cols` elements.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> MatRef<'a, T> {
        MatRef::new(data, 0, [rows, cols], [cols, 1])
    }

    /// The transposed view: rows become columns, no element moves.
    pub fn t(self) -> MatRef<'a, T> {
        MatRef { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// The sub-matrix of rows `rows` and columns `cols`, no element moves.
    ///
    /// # Panics
    /// When a range reaches past the matrix.
    pub fn block(self, rows: Range<usize>, cols: Range<usize>) -> MatRef<'a, T> {
        assert!(
            rows.start <= rows.end && rows.end <= self.rows && cols.start <= cols.end && cols.end <= self.cols,
            "MatRef: block [{rows:?}, {cols:?}] is outside the {} x {} matrix",
            self.rows,
            self.cols
        );
        // Inside the matrix, so (rows.start, cols.start) is an element or the block is empty.
        let offset = if rows.is_empty() || cols.is_empty() {
            self.offset
        } else {
            self.offset + rows.start * self.row_stride + cols.start * self.col_stride
        };
        MatRef { offset, rows: rows.len(), cols: cols.len(), ..self }
    }

    /// Number of rows.
    #[cfg(any(test, feature = "internals"))]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    #[cfg(any(test, feature = "internals"))]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between rows, in elements.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Distance between columns, in elements.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// The storage the matrix lives in.
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// Index of element `(0, 0)` in [`MatRef::data`].
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// When `i >= rows` or `j >= cols`.
    #[cfg(any(test, feature = "internals"))]
    pub fn get(&self, i: usize, j: usize) -> T
    where
        T: Copy,
    {
        assert!(
            i < self.rows && j < self.cols,
            "MatRef: ({i}, {j}) is outside the {} x {} matrix",
            self.rows,
            self.cols
        );
        self.data[self.offset + i * self.row_stride + j * self.col_stride]
    }

    /// Pointer to element `(0, 0)` (dangling, never to be read, for an empty matrix).
    pub(super) fn as_ptr(&self) -> *const T {
        self.data.as_ptr().wrapping_add(self.offset)
    }
}

// ─── MatMut ─────────────────────────────────────────────────────────────────────

/// A writable strided matrix, the `C` of a product: element `(i, j)` with `i < rows`,
/// `j < cols` is `data[offset + i * row_stride + j * col_stride]`.
///
/// The constructors check that every element lies inside `data` and that no two elements
/// share an index (row-major with a leading dimension `row_stride >= cols`, its transpose, or
/// a single row or column), so the kernels may write the elements from several threads.
///
/// ```
/// use tapegrad_tensor::kernels::gemm::MatMut;
/// let mut c = [0.0f32; 8];
/// let view = MatMut::new(&mut c, 1, [2, 3], [4, 1]); // 2 x 3 with a leading dimension of 4
/// assert_eq!((view.rows(), view.cols()), (2, 3));
/// assert!(MatMut::try_new(&mut c, 0, [2, 3], [2, 1]).is_none()); // rows would overlap
/// ```
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> MatMut<'a, T> {
    /// The `dims[0] x dims[1]` matrix at `offset` in `data` with `strides = [row, column]`, or
    /// `None` when one of its elements would lie outside `data` or two would share an index.
    pub fn try_new(data: &'a mut [T], offset: usize, dims: [usize; 2], strides: [usize; 2]) -> Option<MatMut<'a, T>> {
        (fits(data.len(), offset, dims, strides) && distinct(dims, strides)).then_some(MatMut {
            data,
            offset,
            rows: dims[0],
            cols: dims[1],
            row_stride: strides[0],
            col_stride: strides[1],
        })
    }

    /// As [`MatMut::try_new`].
    ///
    /// # Panics
    /// When an element would lie outside `data` or two would share an index; the message names
    /// the view and the slice.
    pub fn new(data: &'a mut [T], offset: usize, dims: [usize; 2], strides: [usize; 2]) -> MatMut<'a, T> {
        let len = data.len();
        MatMut::try_new(data, offset, dims, strides).unwrap_or_else(|| {
            let why = if distinct(dims, strides) {
                "reaches past its slice"
            } else {
                "has elements that overlap in its slice"
            };
            panic!(
                "MatMut: {} x {} at offset {offset} with strides {strides:?} {why} of {len} elements",
                dims[0], dims[1]
            )
        })
    }

    /// The row-major `rows x cols` matrix at the start of `data`.
    ///
    /// # Panics
    /// When `data` has fewer than `rows * cols` elements.
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> MatMut<'a, T> {
        MatMut::new(data, 0, [rows, cols], [cols, 1])
    }

    /// The transposed view: rows become columns, no element moves.
    #[cfg(any(test, feature = "internals"))]
    pub fn t(self) -> MatMut<'a, T> {
        MatMut { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// Number of rows.
    #[cfg(any(test, feature = "internals"))]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    #[cfg(any(test, feature = "internals"))]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between rows, in elements.
    #[cfg(any(test, feature = "internals"))]
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Distance between columns, in elements.
    #[cfg(any(test, feature = "internals"))]
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// Sets every element to `value`.
    pub fn fill(&mut self, value: T)
    where
        T: Copy,
    {
        for i in 0..self.rows {
            for j in 0..self.cols {
                self.data[self.offset + i * self.row_stride + j * self.col_stride] = value;
            }
        }
    }

    /// Pointer to element `(0, 0)` (dangling, never to be written, for an empty matrix).
    pub(super) fn as_mut_ptr(&mut self) -> *mut T {
        self.data.as_mut_ptr().wrapping_add(self.offset)
    }
}

// ─── Product ────────────────────────────────────────────────────────────────────

/// `C`'s elements as the kernels write them: `(i, j)` at `ptr + i * row_stride + j * col_stride`.
/// Only [`Product::new`] makes one, from a [`MatMut`] borrowed for `'a`; it is copied into every
/// task of a product, each task writing only its own elements.
#[derive(Debug)]
pub(super) struct Out<'a, T> {
    ptr: *mut T,
    row_stride: usize,
    col_stride: usize,
    _c: PhantomData<&'a mut [T]>,
}

// SAFETY: the driver hands each task a disjoint set of `C`'s elements, so no element is written
// by two threads, and the pointer lives no longer than the borrow of the `MatMut` it came from.
unsafe impl<T: Send> Send for Out<'_, T> {}
// SAFETY: as above; the pointer itself is only copied, never used to create shared references.
unsafe impl<T: Send> Sync for Out<'_, T> {}

impl<T> Clone for Out<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Out<'_, T> {}

impl<T> Out<'_, T> {
    /// Pointer to element `(i, j)` (only computed here: writing through it is the caller's
    /// contract).
    pub(super) fn at(self, i: usize, j: usize) -> *mut T {
        self.ptr.wrapping_add(i * self.row_stride + j * self.col_stride)
    }

    /// The elements from `(i, j)` on: `(0, 0)` of the result is `(i, j)` of `self`.
    pub(super) fn starting_at(self, i: usize, j: usize) -> Self {
        Out { ptr: self.at(i, j), ..self }
    }

    /// Distance between rows, in elements.
    pub(super) fn row_stride(self) -> usize {
        self.row_stride
    }

    /// Distance between columns, in elements.
    pub(super) fn col_stride(self) -> usize {
        self.col_stride
    }
}

/// One checked product `C (+)= A · B`: `A` is `m x k`, `B` is `k x n`, and `C`'s `m x n`
/// elements are inside its slice, distinct and borrowed for `'a`. The kernels' unsafe blocks
/// rest on these facts, which every way of making a `Product` keeps.
#[derive(Debug)]
pub(super) struct Product<'a, T> {
    a: MatRef<'a, T>,
    b: MatRef<'a, T>,
    c: Out<'a, T>,
    accumulate: bool,
    /// What `C` starts as when it is neither kept nor zero (then `accumulate` is false).
    init: Option<Init<'a, T>>,
}

/// A vector `C` starts as before `A · B` is added to it, repeated across `C`: the result is the
/// same as filling `C` with it and then accumulating the product (each element `v + Σ`, in that
/// order), without a pass of its own over `C`.
#[derive(Debug)]
pub enum Init<'a, T> {
    /// Every row of `C` starts as `v` (`C(i, j) = v[j]`, `n` elements): a linear layer's bias.
    EachRow(&'a [T]),
    /// Every column of `C` starts as `v` (`C(i, j) = v[i]`, `m` elements).
    EachColumn(&'a [T]),
}

/// Copies `src` to `dst`: a tile's row, at most a few dozen elements, moved in runs of a fixed
/// length (a call of `memcpy` for each row of each tile cost about 2% of the transformer's step
/// on the AVX2 path, whose tiles are 16 columns wide: as much as the pass it replaced). Also the
/// macrokernel's copies of edge tiles through its scratch tile.
///
/// # Safety
/// `dst` must have `src.len()` writable elements.
#[inline(always)]
pub(super) unsafe fn copy_run<T: Copy>(src: &[T], dst: *mut T) {
    const RUN: usize = 8;
    let mut runs = src.chunks_exact(RUN);
    let mut at = dst;
    for run in &mut runs {
        let run: &[T; RUN] = run.try_into().expect("RUN elements");
        // SAFETY: `RUN` of the `src.len()` writable elements from `dst` (contract).
        unsafe {
            at.cast::<[T; RUN]>().write_unaligned(*run);
            at = at.add(RUN);
        }
    }
    for (j, &e) in runs.remainder().iter().enumerate() {
        // SAFETY: as above, the last few.
        unsafe { at.add(j).write(e) };
    }
}

impl<T> Clone for Init<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Init<'_, T> {}

impl<'a, T> Init<'a, T> {
    /// The same start for the transposed `C`.
    fn t(self) -> Init<'a, T> {
        match self {
            Init::EachRow(v) => Init::EachColumn(v),
            Init::EachColumn(v) => Init::EachRow(v),
        }
    }

    /// The start of the block of `C` in rows `rows` and columns `cols`.
    ///
    /// # Panics
    /// When the range along the vector reaches past it.
    pub(super) fn block(self, rows: Range<usize>, cols: Range<usize>) -> Init<'a, T> {
        match self {
            Init::EachRow(v) => Init::EachRow(&v[cols]),
            Init::EachColumn(v) => Init::EachColumn(&v[rows]),
        }
    }

    /// Writes the start of the `rows x cols` elements of `C` from `dst` (`(i, j)` at
    /// `dst + i * row_stride + j * col_stride`).
    ///
    /// # Safety
    /// Those elements must be writable and the vector must cover them (`cols` elements of an
    /// `EachRow`, `rows` of an `EachColumn`, checked with an assert).
    #[inline(always)]
    pub(super) unsafe fn write(self, rows: usize, cols: usize, dst: *mut T, row_stride: usize, col_stride: usize)
    where
        T: Copy,
    {
        match self {
            Init::EachRow(v) => {
                let v = &v[..cols];
                for i in 0..rows {
                    let row = dst.wrapping_add(i * row_stride);
                    // SAFETY: row `i` of the block, its `cols` elements writable (contract).
                    unsafe {
                        if col_stride == 1 {
                            copy_run(v, row);
                        } else {
                            v.iter().enumerate().for_each(|(j, &e)| *row.add(j * col_stride) = e);
                        }
                    }
                }
            }
            Init::EachColumn(v) => {
                for (i, &e) in v[..rows].iter().enumerate() {
                    let row = dst.wrapping_add(i * row_stride);
                    // SAFETY: as above.
                    unsafe {
                        if col_stride == 1 {
                            std::slice::from_raw_parts_mut(row, cols).fill(e);
                        } else {
                            (0..cols).for_each(|j| *row.add(j * col_stride) = e);
                        }
                    }
                }
            }
        }
    }
}

impl<T> Clone for Product<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Product<'_, T> {}

impl<'a, T> Product<'a, T> {
    /// `c (+)= a · b`.
    ///
    /// # Panics
    /// When the shapes do not match (`a.rows() == c.rows()`, `b.cols() == c.cols()`,
    /// `a.cols() == b.rows()`): the message names the three.
    pub(super) fn new(
        c: &'a mut MatMut<'_, T>,
        a: MatRef<'a, T>,
        b: MatRef<'a, T>,
        accumulate: bool,
    ) -> Product<'a, T> {
        assert!(
            a.rows == c.rows && b.cols == c.cols && a.cols == b.rows,
            "gemm: C ({} x {}) = A ({} x {}) · B ({} x {}): the shapes do not match",
            c.rows,
            c.cols,
            a.rows,
            a.cols,
            b.rows,
            b.cols
        );
        let c = Out { ptr: c.as_mut_ptr(), row_stride: c.row_stride, col_stride: c.col_stride, _c: PhantomData };
        Product { a, b, c, accumulate, init: None }
    }

    /// The same product with `C` starting as `init` (its old contents ignored).
    ///
    /// # Panics
    /// When the vector's length is not `C`'s width (`EachRow`) or height (`EachColumn`).
    pub(super) fn with_init(self, init: Init<'a, T>) -> Product<'a, T> {
        let (len, want) = match init {
            Init::EachRow(v) => (v.len(), self.n()),
            Init::EachColumn(v) => (v.len(), self.m()),
        };
        assert_eq!(len, want, "gemm: the vector C starts as must have {want} elements");
        Product { init: Some(init), accumulate: false, ..self }
    }

    /// What `C` starts as, when it is neither kept nor zero.
    pub(super) fn init(&self) -> Option<Init<'a, T>> {
        self.init
    }

    /// The same product after writing its start into `C`, for the paths that add into `C` as
    /// they find it: accumulating, with no start of its own (the same bits as a path that
    /// writes the start tile by tile). The rows are written in blocks on the pool when `C` is
    /// large.
    pub(super) fn prefilled(self) -> Product<'a, T>
    where
        T: Copy + Send + Sync,
    {
        let Some(init) = self.init else { return self };
        let (m, n, c) = (self.m(), self.n(), self.c);
        let rows = (crate::parallel::SPLIT_MIN / n.max(1)).max(1);
        crate::parallel::for_each(0..m.div_ceil(rows), m.saturating_mul(n), |t| {
            let (i0, i1) = (t * rows, m.min((t + 1) * rows));
            // SAFETY: rows i0..i1 of `C` are elements of this checked product (inside its
            // slice, distinct), written by this piece alone; the vector matches `C`'s shape
            // (`with_init`).
            unsafe { init.block(i0..i1, 0..n).write(i1 - i0, n, c.at(i0, 0), c.row_stride, c.col_stride) }
        });
        Product { init: None, accumulate: true, ..self }
    }

    /// Rows of `C` and `A`.
    pub(super) fn m(&self) -> usize {
        self.a.rows
    }

    /// Columns of `C` and `B`.
    pub(super) fn n(&self) -> usize {
        self.b.cols
    }

    /// The length of each sum: columns of `A`, rows of `B`.
    pub(super) fn k(&self) -> usize {
        self.a.cols
    }

    /// `A`, `m x k`.
    pub(super) fn a(&self) -> MatRef<'a, T> {
        self.a
    }

    /// `B`, `k x n`.
    pub(super) fn b(&self) -> MatRef<'a, T> {
        self.b
    }

    /// `C`'s elements, `m x n`.
    pub(super) fn c(&self) -> Out<'a, T> {
        self.c
    }

    /// Whether `C` is added to rather than overwritten.
    pub(super) fn accumulate(&self) -> bool {
        self.accumulate
    }

    /// The same product with `B` read from `b`, a matrix of the same shape (a copy of `B`).
    ///
    /// # Panics
    /// When `b`'s shape differs from `B`'s.
    pub(super) fn with_b<'b>(self, b: MatRef<'b, T>) -> Product<'b, T>
    where
        'a: 'b,
    {
        assert!(b.rows == self.b.rows && b.cols == self.b.cols, "gemm: a copy of B must keep its shape");
        Product { a: self.a, b, c: self.c, accumulate: self.accumulate, init: self.init }
    }

    /// The same elements as `Cᵀ (+)= Bᵀ · Aᵀ`.
    pub(super) fn t(self) -> Product<'a, T> {
        let c = Out { row_stride: self.c.col_stride, col_stride: self.c.row_stride, ..self.c };
        Product { a: self.b.t(), b: self.a.t(), c, accumulate: self.accumulate, init: self.init.map(Init::t) }
    }

    /// The same `C` over the steps `ks` of `K` only.
    ///
    /// # Panics
    /// When `ks` reaches past `K`.
    pub(super) fn k_range(self, ks: Range<usize>) -> Product<'a, T> {
        let (m, n) = (self.m(), self.n());
        Product { a: self.a.block(0..m, ks.clone()), b: self.b.block(ks, 0..n), ..self }
    }

    /// The product for the block of `C` in rows `rows` and columns `cols` (all of `K`).
    ///
    /// # Panics
    /// When a range reaches past `C`.
    pub(super) fn block(self, rows: Range<usize>, cols: Range<usize>) -> Product<'a, T> {
        let c = self.c.starting_at(rows.start, cols.start);
        let k = self.k();
        let init = self.init.map(|init| init.block(rows.clone(), cols.clone()));
        Product { a: self.a.block(rows, 0..k), b: self.b.block(0..k, cols), c, accumulate: self.accumulate, init }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_reaching_past_the_slice_are_rejected_without_overflow() {
        let data = [0.0f32; 6];
        assert!(MatRef::try_new(&data, 0, [2, 3], [3, 1]).is_some());
        assert!(MatRef::try_new(&data, 0, [3, 3], [3, 1]).is_none());
        assert!(MatRef::try_new(&data, 1, [2, 3], [3, 1]).is_none());
        assert!(MatRef::try_new(&data, 5, [1000, 1000], [0, 0]).is_some()); // expanded
        assert!(MatRef::try_new(&data, 0, [2, 1], [usize::MAX, 1]).is_none());
        assert!(MatRef::try_new(&data, usize::MAX, [1, 1], [1, 1]).is_none());
        assert!(MatRef::try_new(&data, 0, [3, 2], [1, usize::MAX / 2 + 1]).is_none());
    }

    #[test]
    fn zero_sized_views_address_nothing() {
        let empty: [f32; 0] = [];
        for dims in [[0, 5], [5, 0], [0, 0]] {
            assert!(MatRef::try_new(&empty, 99, dims, [1, 1]).is_some(), "{dims:?}");
            assert!(MatMut::try_new(&mut [0.0f32; 0], 99, dims, [0, 0]).is_some(), "{dims:?}");
        }
        let a = MatRef::row_major(&empty, 0, 7);
        assert_eq!((a.rows(), a.cols(), a.t().rows(), a.t().cols()), (0, 7, 7, 0));
        let mut c = MatMut::row_major(&mut [0.0f32; 0], 3, 0);
        c.fill(1.0);
    }

    #[test]
    fn transposed_and_offset_views_address_the_same_elements() {
        let data: Vec<f32> = (0..20).map(|v| v as f32).collect();
        // 3 x 4 at offset 2 inside rows of 5.
        let a = MatRef::new(&data, 2, [3, 4], [5, 1]);
        let at = a.t();
        assert_eq!((at.rows(), at.cols(), at.row_stride(), at.col_stride()), (4, 3, 1, 5));
        for i in 0..3 {
            for j in 0..4 {
                assert_eq!(a.get(i, j), (2 + 5 * i + j) as f32);
                assert_eq!(at.get(j, i), a.get(i, j));
            }
        }
        let b = a.block(1..3, 2..4);
        assert_eq!((b.rows(), b.cols(), b.offset()), (2, 2, 2 + 5 + 2));
        assert_eq!(b.get(1, 1), a.get(2, 3));
        assert_eq!(a.block(3..3, 0..4).rows(), 0);
    }

    #[test]
    #[should_panic(expected = "MatRef: block [0..4, 0..1] is outside the 3 x 4 matrix")]
    fn blocks_outside_the_matrix_are_a_clear_panic() {
        let data = [0.0f32; 12];
        MatRef::row_major(&data, 3, 4).block(0..4, 0..1);
    }

    #[test]
    #[should_panic(expected = "MatRef: 2 x 3 at offset 0 with strides [3, 1] reaches past its slice of 5 elements")]
    fn out_of_bounds_views_are_a_clear_panic() {
        MatRef::row_major(&[0.0f32; 5], 2, 3);
    }

    #[test]
    fn output_views_must_not_overlap() {
        let mut c = [0.0f32; 12];
        assert!(MatMut::try_new(&mut c, 0, [3, 4], [4, 1]).is_some());
        assert!(MatMut::try_new(&mut c, 0, [2, 4], [5, 1]).is_some()); // leading dimension 5
        assert!(MatMut::try_new(&mut c, 0, [4, 3], [1, 4]).is_some()); // transposed
        assert!(MatMut::try_new(&mut c, 0, [1, 12], [0, 1]).is_some()); // one row: its stride is unused
        assert!(MatMut::try_new(&mut c, 0, [12, 1], [1, 7]).is_some());
        assert!(MatMut::try_new(&mut c, 0, [3, 4], [3, 1]).is_none()); // rows overlap
        assert!(MatMut::try_new(&mut c, 0, [3, 4], [0, 1]).is_none());
        assert!(MatMut::try_new(&mut c, 0, [2, 1], [0, 1]).is_none()); // a repeated element
        assert!(MatMut::try_new(&mut c, 0, [4, 3], [1, 3]).is_none());
        assert!(MatMut::try_new(&mut c, 0, [3, 4], [4, 1]).is_some_and(|m| m.t().row_stride() == 1));
        assert!(MatMut::try_new(&mut c, 1, [3, 4], [4, 1]).is_none()); // past the end
    }

    #[test]
    #[should_panic(expected = "MatMut: 3 x 4 at offset 0 with strides [2, 1] has elements that overlap")]
    fn overlapping_output_views_are_a_clear_panic() {
        MatMut::new(&mut [0.0f32; 12], 0, [3, 4], [2, 1]);
    }

    #[test]
    fn fill_writes_exactly_the_view() {
        let mut c = [7.0f32; 10];
        MatMut::new(&mut c, 1, [2, 3], [4, 1]).fill(0.0);
        assert_eq!(c, [7.0, 0.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 7.0, 7.0]);
    }
}
