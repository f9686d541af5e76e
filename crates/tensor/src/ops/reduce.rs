//! Reductions: `sum`, `mean`, `max` (with indices, `argmax`), the softmax family and `sum_to`
//! (the inverse of broadcasting, for autograd).
//!
//! A reduction over any set of dims is planned as "for each of `k` kept positions, reduce `r`
//! elements", and walked in whichever order reads memory forwards:
//! - *inner*: when the reduced elements are contiguous in memory (`sum` over the last dim,
//!   `sum_all`), each output sums its elements with the vector kernels, in blocks of `CHUNK`
//!   whose partial sums are then added pairwise;
//! - *rows*: when the kept dims are the contiguous ones (`sum` over dim 0 of a matrix), whole rows
//!   are added into an accumulator row with the vector kernels, in fixed pieces of rows whose
//!   partial rows are then added pairwise.
//!
//! Both orders are fixed by the shape and strides alone, so the result has the same bits on any
//! number of threads; the pairwise combination keeps the rounding error growing like `log n`
//! across blocks.

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::kernels::elementwise::{BinaryOp, Cascade, ElementwiseKernels, Operand};
use crate::kernels::mask::isa::dispatch;
use crate::kernels::row_cascade::{CascadeRows, LEAF_ROWS};
use crate::kernels::{active_isa, Isa};
use crate::layout::Dims;
use crate::ops::elementwise::{fill_chunked, run_operand, same_dims, CHUNK};
use crate::strided::{for_each_run, for_each_run_in};
use crate::tensor::Tensor;
use crate::TensorNew;

/// Kept positions per column block in the *rows* order: the accumulator row (16 KiB of f32)
/// stays in L1 while rows stream past it.
const COLUMN_BLOCK: usize = 4096;

/// Fewest rows in one piece of the *rows* order, which bounds the partial rows kept for the
/// pairwise combination at 1/16 of the input.
const MIN_ROWS_PER_PIECE: usize = 16;

// ─── the reduction engine ──────────────────────────────────────────────────────

/// What a reduction computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reduction {
    Sum,
    Max,
}

impl Reduction {
    fn identity<T: Float>(self) -> T {
        match self {
            Reduction::Sum => T::ZERO,
            Reduction::Max => T::NEG_INFINITY,
        }
    }

    /// The elementwise op that folds one row into an accumulator row.
    fn row_op(self) -> BinaryOp {
        match self {
            Reduction::Sum => BinaryOp::Add,
            Reduction::Max => BinaryOp::Maximum,
        }
    }

    fn combine<T: Float>(self, a: T, b: T) -> T {
        self.row_op().apply(a, b)
    }

    /// The reduction of the run `data[offset + i * stride]`, `i < len`.
    fn run<T: Float>(self, isa: Isa, data: &[T], offset: usize, stride: usize, len: usize) -> T {
        match (self, run_operand(data, offset, stride, len)) {
            (Reduction::Sum, Some(Operand::Slice(x))) => <T as ElementwiseKernels>::sum(isa, x),
            (Reduction::Max, Some(Operand::Slice(x))) => T::max(isa, x),
            // A broadcast run repeats one value: `len · v` is its sum, rounded once.
            (Reduction::Sum, Some(Operand::Splat(v))) => v * T::from_usize(len),
            (Reduction::Max, Some(Operand::Splat(v))) => v,
            (_, None) => {
                let mut total = Cascade::new(self.row_op());
                for i in 0..len {
                    total.push(data[offset + i * stride]);
                }
                total.finish(self.identity())
            }
        }
    }

    /// Combines partial results in a balanced tree (the pairwise order).
    fn pairwise<T: Float>(self, partials: &[T]) -> T {
        match partials.len() {
            0 => self.identity(),
            1 => partials[0],
            n => self.combine(self.pairwise(&partials[..n / 2]), self.pairwise(&partials[n / 2..])),
        }
    }

    /// Combines partial rows in a balanced tree into the first one.
    fn pairwise_rows<T: Float>(self, isa: Isa, rows: &mut [Vec<T>]) {
        let n = rows.len();
        if n > 1 {
            let (left, right) = rows.split_at_mut(n / 2);
            self.pairwise_rows(isa, left);
            self.pairwise_rows(isa, right);
            T::binary_assign(isa, self.row_op(), &mut left[0], Operand::Slice(&right[0]));
        }
    }
}

/// Rows folded into a leaf accumulator [`LEAF_ROWS`] at a time; full leaves are combined
/// pairwise (a binary counter over rows, like [`Cascade`] over values), so the rounding error of
/// the *rows* order grows like `LEAF_ROWS + log₂ n`, not `n`. The definition of that order, row
/// by row; a sum over unit-stride kept columns makes the same additions in one kernel call per
/// piece ([`CascadeRows`]).
struct RowCascade<T> {
    red: Reduction,
    isa: Isa,
    len: usize,
    leaf: Vec<T>,
    rows_in_leaf: usize,
    levels: Vec<Option<Vec<T>>>,
    spare: Vec<Vec<T>>,
}

impl<T: Float> RowCascade<T> {
    fn new(red: Reduction, isa: Isa, len: usize) -> RowCascade<T> {
        RowCascade {
            red,
            isa,
            len,
            leaf: vec![red.identity(); len],
            rows_in_leaf: 0,
            levels: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// The accumulator the next row is folded into.
    fn leaf(&mut self) -> &mut [T] {
        &mut self.leaf
    }

    /// Marks one row as folded into the leaf; a full leaf goes into the tree.
    fn row_done(&mut self) {
        self.rows_in_leaf += 1;
        if self.rows_in_leaf == LEAF_ROWS {
            let fresh = self.spare.pop().map_or_else(
                || vec![self.red.identity(); self.len],
                |mut row| {
                    row.fill(self.red.identity());
                    row
                },
            );
            let full = std::mem::replace(&mut self.leaf, fresh);
            self.push(full);
            self.rows_in_leaf = 0;
        }
    }

    fn push(&mut self, mut carry: Vec<T>) {
        for level in self.levels.iter_mut() {
            match level.take() {
                None => {
                    *level = Some(carry);
                    return;
                }
                Some(mut lower) => {
                    T::binary_assign(self.isa, self.red.row_op(), &mut lower, Operand::Slice(&carry));
                    self.spare.push(std::mem::replace(&mut carry, lower));
                }
            }
        }
        self.levels.push(Some(carry));
    }

    /// The combination of every row folded in.
    fn finish(mut self) -> Vec<T> {
        let mut acc = std::mem::take(&mut self.leaf);
        let partial_leaf = self.rows_in_leaf > 0;
        let mut have = partial_leaf;
        for row in self.levels.into_iter().flatten() {
            if have {
                let mut row = row;
                T::binary_assign(self.isa, self.red.row_op(), &mut row, Operand::Slice(&acc));
                acc = row;
            } else {
                acc = row;
                have = true;
            }
        }
        if !have {
            acc.fill(self.red.identity());
        }
        acc
    }
}

/// A reduction split into kept dims (one output each) and reduced dims (folded together), both
/// as sub-layouts of the input, sharing its offset.
struct Plan {
    kept_shape: Dims,
    kept_strides: Dims,
    reduced_shape: Dims,
    reduced_strides: Dims,
    offset: usize,
    /// Number of outputs.
    k: usize,
    /// Elements folded into each output.
    r: usize,
}

/// True when the innermost dim of size > 1 has stride 1 (or there is none).
fn inner_contiguous(shape: &[usize], strides: &[usize]) -> bool {
    shape.iter().zip(strides).rev().find(|(&d, _)| d > 1).is_none_or(|(_, &s)| s == 1)
}

/// `(offset, len, stride)` of every run of a sub-layout at offset `base` over positions `range`.
fn collect_runs(
    shape: &[usize],
    strides: &[usize],
    base: usize,
    range: std::ops::Range<usize>,
) -> Vec<(usize, usize, usize)> {
    let mut runs = Vec::new();
    for_each_run_in(shape, [strides], [base], range, |[o], len, [s]| runs.push((o, len, s)));
    runs
}

/// `f(i)` for `i < n`, in order, on the rayon pool when `parallel` and the `work` (elements read
/// in all) is worth splitting (see [`crate::parallel`]).
fn map_indices<U: Send>(n: usize, parallel: bool, work: usize, f: impl Fn(usize) -> U + Sync + Send) -> Vec<U> {
    if parallel && n > 1 {
        crate::parallel::map(n, work, f)
    } else {
        (0..n).map(f).collect()
    }
}

impl Plan {
    /// Runs the plan over `data`: one value per kept position, in row-major order of the kept dims.
    fn execute<T: Float>(&self, data: &[T], red: Reduction) -> Vec<T> {
        if self.k == 0 {
            return Vec::new();
        }
        if self.r == 0 {
            return vec![red.identity(); self.k];
        }
        let by_rows = self.k > 1
            && !inner_contiguous(&self.reduced_shape, &self.reduced_strides)
            && inner_contiguous(&self.kept_shape, &self.kept_strides);
        if by_rows {
            self.execute_rows(data, red)
        } else {
            self.execute_inner(data, red)
        }
    }

    /// The *inner* order: each output reduces its own elements.
    fn execute_inner<T: Float>(&self, data: &[T], red: Reduction) -> Vec<T> {
        let isa = active_isa();
        let (r, reduced) = (self.r, (&self.reduced_shape[..], &self.reduced_strides[..]));
        // With few elements per output, every output shares one run list.
        let shared_runs = (r <= CHUNK).then(|| collect_runs(reduced.0, reduced.1, 0, 0..r));
        let reduce_one = |base: usize| -> T {
            match &shared_runs {
                Some(runs) => {
                    let mut total = Cascade::new(red.row_op());
                    for &(o, len, s) in runs {
                        total.push(red.run(isa, data, base + o, s, len));
                    }
                    total.finish(red.identity())
                }
                None => {
                    let partials = map_indices(r.div_ceil(CHUNK), true, r, |piece| {
                        let mut total = Cascade::new(red.row_op());
                        let range = piece * CHUNK..r.min((piece + 1) * CHUNK);
                        for_each_run_in(reduced.0, [reduced.1], [base], range, |[o], len, [s]| {
                            total.push(red.run(isa, data, o, s, len));
                        });
                        total.finish(red.identity())
                    });
                    red.pairwise(&partials)
                }
            }
        };
        let group = (CHUNK / r).max(1);
        fill_chunked(self.k, group, |start, out: &mut [T]| {
            let mut j = 0;
            let range = start..start + out.len();
            for_each_run_in(&self.kept_shape, [&self.kept_strides[..]], [self.offset], range, |[o], len, [s]| {
                for i in 0..len {
                    out[j] = reduce_one(o + i * s);
                    j += 1;
                }
            });
        })
    }

    /// The *rows* order: accumulator rows over blocks of kept positions, fed one reduced index at
    /// a time.
    fn execute_rows<T: Float>(&self, data: &[T], red: Reduction) -> Vec<T> {
        let isa = active_isa();
        let (k, r) = (self.k, self.r);
        let block = k.min(COLUMN_BLOCK);
        let rows_per_piece = CHUNK.div_ceil(block).max(MIN_ROWS_PER_PIECE);
        let pieces = r.div_ceil(rows_per_piece);
        let parallel = k.saturating_mul(r) > CHUNK;
        let blocks = map_indices(k.div_ceil(block), parallel, k.saturating_mul(r), |b| {
            let cols = b * block..k.min((b + 1) * block);
            let kept_runs = collect_runs(&self.kept_shape, &self.kept_strides, 0, cols.clone());
            // A sum over rows of one contiguous run (a bias gradient): a piece's whole cascade in
            // one kernel call.
            let unit_run = match (&kept_runs[..], red) {
                ([(ko, klen, 1)], Reduction::Sum) if *klen == cols.len() => Some(*ko),
                _ => None,
            };
            let mut partials = map_indices(pieces, parallel, cols.len().saturating_mul(r), |piece| {
                let rows = piece * rows_per_piece..r.min((piece + 1) * rows_per_piece);
                if let Some(ko) = unit_run {
                    let runs = collect_runs(&self.reduced_shape, &self.reduced_strides, self.offset + ko, rows);
                    let mut out = vec![T::ZERO; cols.len()];
                    dispatch(isa, CascadeRows { out: &mut out, x: data, runs: &runs });
                    return out;
                }
                let mut total = RowCascade::new(red, isa, cols.len());
                for_each_run_in(
                    &self.reduced_shape,
                    [&self.reduced_strides[..]],
                    [self.offset],
                    rows,
                    |[o], len, [s]| {
                        for t in 0..len {
                            let base = o + t * s;
                            let mut pos = 0;
                            let acc = total.leaf();
                            for &(ko, klen, ks) in &kept_runs {
                                let acc = &mut acc[pos..pos + klen];
                                match run_operand(data, base + ko, ks, klen) {
                                    Some(x) => T::binary_assign(isa, red.row_op(), acc, x),
                                    None => {
                                        for (i, a) in acc.iter_mut().enumerate() {
                                            *a = red.combine(*a, data[base + ko + i * ks]);
                                        }
                                    }
                                }
                                pos += klen;
                            }
                            total.row_done();
                        }
                    },
                );
                total.finish()
            });
            red.pairwise_rows(isa, &mut partials);
            partials.swap_remove(0)
        });
        blocks.concat()
    }
}

impl<T: Float> Tensor<T> {
    /// Which dims `dims` selects (all of them when empty, as PyTorch's `sum(dim=[])`).
    fn reduced_mask(&self, op: &'static str, dims: &[usize]) -> Result<Vec<bool>> {
        let n = self.ndim();
        if dims.is_empty() {
            return Ok(vec![true; n]);
        }
        let mut mask = vec![false; n];
        for &d in dims {
            if d >= n {
                return Err(Error::dim(op, d, self.shape()));
            }
            if mask[d] {
                return Err(Error::shape(op, self.shape(), format!("dim {d} appears more than once in dims {dims:?}")));
            }
            mask[d] = true;
        }
        Ok(mask)
    }

    fn plan(&self, mask: &[bool]) -> Plan {
        let mut plan = Plan {
            kept_shape: Dims::new(),
            kept_strides: Dims::new(),
            reduced_shape: Dims::new(),
            reduced_strides: Dims::new(),
            offset: self.offset(),
            k: 1,
            r: 1,
        };
        for ((&d, &s), &reduced) in self.shape().iter().zip(self.strides()).zip(mask) {
            if reduced {
                plan.reduced_shape.push(d);
                plan.reduced_strides.push(s);
                plan.r *= d;
            } else {
                plan.kept_shape.push(d);
                plan.kept_strides.push(s);
                plan.k *= d;
            }
        }
        plan
    }

    /// The output shape of a reduction over `mask`.
    fn reduced_shape(&self, mask: &[bool], keepdim: bool) -> Dims {
        self.shape()
            .iter()
            .zip(mask)
            .filter_map(|(&d, &reduced)| match (reduced, keepdim) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect()
    }

    fn reduce(&self, red: Reduction, mask: &[bool], keepdim: bool) -> Tensor<T> {
        let data = self.plan(mask).execute(self.storage().as_slice(), red);
        Tensor::from_contiguous(data, &self.reduced_shape(mask, keepdim))
    }

    // ─── sum / mean ────────────────────────────────────────────────────────────

    /// The sum over `dims` (all dims when `dims` is empty, as PyTorch's `sum(dim=[])`).
    ///
    /// Shapes: the reduced dims are removed, or kept with size 1 when `keepdim`. A sum over no
    /// elements is 0. Backward: `dx = dz` (unsqueezed back when `!keepdim`) expanded to `x`'s
    /// shape. The order of the additions is fixed by the shape, not the thread count.
    ///
    /// # Errors
    /// `sum` naming the shape when a dim is out of range or repeated.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::<f32>::arange(6).reshape(&[2, 3])?;
    /// assert_eq!(x.sum(&[1], false)?.to_vec(), vec![3.0, 12.0]);
    /// assert_eq!(x.sum(&[0], true)?.shape(), &[1, 3]);
    /// assert_eq!(x.sum(&[], false)?.item()?, 15.0);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn sum(&self, dims: &[usize], keepdim: bool) -> Result<Tensor<T>> {
        let mask = self.reduced_mask("sum", dims)?;
        Ok(self.reduce(Reduction::Sum, &mask, keepdim))
    }

    /// The sum of every element, as a 0-dim tensor (0 for an empty tensor).
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// assert_eq!(Tensor::<f64>::ones(&[3, 4]).sum_all().item()?, 12.0);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn sum_all(&self) -> Tensor<T> {
        self.reduce(Reduction::Sum, &vec![true; self.ndim()], false)
    }

    /// The mean over `dims` (all dims when empty): the sum divided by the number of elements
    /// summed. Over zero elements it is NaN (0 / 0), as in PyTorch. Backward: `dx = dz / n`
    /// expanded to `x`'s shape.
    ///
    /// # Errors
    /// `mean` naming the shape when a dim is out of range or repeated.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::<f32>::arange(6).reshape(&[2, 3])?;
    /// assert_eq!(x.mean(&[1], false)?.to_vec(), vec![1.0, 4.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn mean(&self, dims: &[usize], keepdim: bool) -> Result<Tensor<T>> {
        let mask = self.reduced_mask("mean", dims)?;
        let n = self.plan(&mask).r;
        Ok(self.reduce(Reduction::Sum, &mask, keepdim).scalar_op(BinaryOp::Div, T::from_usize(n)))
    }

    /// The mean of every element, as a 0-dim tensor (NaN for an empty tensor).
    pub fn mean_all(&self) -> Tensor<T> {
        self.sum_all().scalar_op(BinaryOp::Div, T::from_usize(self.numel()))
    }

    // ─── max / argmax ──────────────────────────────────────────────────────────

    /// Checks that `dim` exists and is not empty, for the max family.
    fn check_max_dim(&self, op: &'static str, dim: usize) -> Result<()> {
        self.layout().check_dim(op, dim)?;
        if self.shape()[dim] == 0 {
            return Err(Error::shape(
                op,
                self.shape(),
                format!("dim {dim} has size 0, and a maximum over no elements is undefined"),
            ));
        }
        Ok(())
    }

    /// The largest value along `dim` (NaN if the slice holds a NaN, like `torch.max(x, dim)`).
    ///
    /// Shapes: `dim` removed, or kept with size 1 when `keepdim`. Backward: `dz` goes to the
    /// position [`Tensor::max_with_indices`] reports.
    ///
    /// # Errors
    /// `max` naming the shape when `dim` is out of range or has size 0.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 4.0], &[2, 2])?;
    /// assert_eq!(x.max(1, false)?.to_vec(), vec![5.0, 4.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn max(&self, dim: usize, keepdim: bool) -> Result<Tensor<T>> {
        self.check_max_dim("max", dim)?;
        let mask: Vec<bool> = (0..self.ndim()).map(|d| d == dim).collect();
        Ok(self.reduce(Reduction::Max, &mask, keepdim))
    }

    /// The largest value along `dim` and, for each, its index along `dim`: the first maximum,
    /// or the first NaN when there is one (as PyTorch). Indices are in row-major order of the
    /// output.
    ///
    /// # Errors
    /// `max_with_indices` naming the shape when `dim` is out of range or has size 0.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::from_vec(vec![1.0f32, 5.0, 5.0, 4.0], &[2, 2])?;
    /// let (values, indices) = x.max_with_indices(0, false)?;
    /// assert_eq!(values.to_vec(), vec![5.0, 5.0]);
    /// assert_eq!(indices, vec![1, 0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn max_with_indices(&self, dim: usize, keepdim: bool) -> Result<(Tensor<T>, Vec<usize>)> {
        self.check_max_dim("max_with_indices", dim)?;
        let mask: Vec<bool> = (0..self.ndim()).map(|d| d == dim).collect();
        let plan = self.plan(&mask);
        let (len, stride) = (self.shape()[dim], self.strides()[dim]);
        let data = self.storage().as_slice();
        let first_max = |base: usize| -> (T, usize) {
            let mut best = (data[base], 0);
            for i in 1..len {
                let v = data[base + i * stride];
                if !best.0.is_nan() && (v.is_nan() || v > best.0) {
                    best = (v, i);
                }
            }
            best
        };
        let mut bases = Vec::with_capacity(plan.k);
        for_each_run(&plan.kept_shape, [&plan.kept_strides[..]], [plan.offset], |[o], n, [s]| {
            bases.extend((0..n).map(|i| o + i * s))
        });
        let group = (CHUNK / len).max(1);
        let parallel = plan.k.saturating_mul(len) > CHUNK;
        let pairs: Vec<Vec<(T, usize)>> =
            map_indices(plan.k.div_ceil(group), parallel, plan.k.saturating_mul(len), |g| {
                bases[g * group..plan.k.min((g + 1) * group)].iter().map(|&b| first_max(b)).collect()
            });
        let (values, indices): (Vec<T>, Vec<usize>) = pairs.into_iter().flatten().unzip();
        Ok((Tensor::from_contiguous(values, &self.reduced_shape(&mask, keepdim)), indices))
    }

    /// The index along `dim` of the largest value of each slice (first maximum; first NaN if
    /// any), in row-major order of the remaining dims.
    ///
    /// # Errors
    /// `argmax` naming the shape when `dim` is out of range or has size 0.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let logits = Tensor::from_vec(vec![0.1f32, 2.0, 0.3, 4.0, 0.0, 1.0], &[2, 3])?;
    /// assert_eq!(logits.argmax(1)?, vec![1, 0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn argmax(&self, dim: usize) -> Result<Vec<usize>> {
        self.check_max_dim("argmax", dim)?;
        Ok(self.max_with_indices(dim, false)?.1)
    }

    // ─── softmax / log_softmax ─────────────────────────────────────────────────

    /// `softmax` or `log_softmax` along `dim`: rows along the last dim of a contiguous copy with
    /// `dim` moved last.
    fn softmax_impl(&self, op: &'static str, dim: usize, log: bool) -> Result<Tensor<T>> {
        self.layout().check_dim(op, dim)?;
        let last = self.ndim() - 1;
        let x = if dim == last { self.contiguous() } else { self.transpose(dim, last)?.contiguous() };
        let (len, numel) = (x.shape()[last], x.numel());
        if numel == 0 {
            return Ok(Tensor::<T>::zeros(self.shape()));
        }
        let xs = x.as_slice().expect("a contiguous tensor has a slice");
        let isa = active_isa();
        let group = (CHUNK / len).max(1) * len;
        let data = fill_chunked(numel, group, |start, out: &mut [T]| {
            if !log && len <= CHUNK {
                // The fused row kernel attention's weights come from (short rows in registers),
                // so that a softmax and an attention agree to the bit. Scaling by 1 is exact.
                let mut scratch = vec![T::ZERO; len];
                T::softmax_rows(isa, &xs[start..start + out.len()], T::ONE, &|_| None, &mut scratch, out);
                return;
            }
            for (i, row) in out.chunks_mut(len).enumerate() {
                let begin = start + i * len;
                softmax_row(isa, &xs[begin..begin + len], row, log);
            }
        });
        let y = Tensor::from_contiguous(data, x.shape());
        if dim == last {
            Ok(y)
        } else {
            Ok(y.transpose(dim, last)?.contiguous())
        }
    }

    /// `softmax(x)_i = e^(x_i − m) / Σ_j e^(x_j − m)` along `dim`, with `m` the slice's maximum
    /// so that nothing overflows. Same shape as the input; a dim of size 0 gives an empty
    /// result. Backward: `dx = z · (dz − Σ(dz · z))` along `dim`.
    ///
    /// # Errors
    /// `softmax` naming the shape when `dim` is out of range.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let p = Tensor::from_vec(vec![1000.0f32, 1000.0], &[1, 2])?.softmax(1)?;
    /// assert_eq!(p.to_vec(), vec![0.5, 0.5]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn softmax(&self, dim: usize) -> Result<Tensor<T>> {
        self.softmax_impl("softmax", dim, false)
    }

    /// `log_softmax(x)_i = (x_i − m) − ln Σ_j e^(x_j − m)` along `dim` (`m` the slice's
    /// maximum): stable for any magnitude. Same shape as the input. Backward:
    /// `dx = dz − e^z · Σ dz` along `dim`.
    ///
    /// # Errors
    /// `log_softmax` naming the shape when `dim` is out of range.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let y = Tensor::from_vec(vec![0.0f64, 0.0], &[2])?.log_softmax(0)?;
    /// assert!((y.to_vec()[0] + std::f64::consts::LN_2).abs() < 1e-15);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn log_softmax(&self, dim: usize) -> Result<Tensor<T>> {
        self.softmax_impl("log_softmax", dim, true)
    }

    // ─── sum_to ────────────────────────────────────────────────────────────────

    /// Sums the dims that broadcasting added or stretched so the result has `shape`: the inverse
    /// of `expand`, and how autograd reduces a gradient to an operand's shape.
    ///
    /// `shape` must broadcast to `self.shape()` (trailing dims aligned, each equal or 1). Leading
    /// dims are summed away; dims where `shape` has 1 are summed with keepdim.
    ///
    /// # Errors
    /// `sum_to` naming both shapes when `shape` does not broadcast to `self.shape()`.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let dz = Tensor::<f32>::ones(&[4, 2, 3]);
    /// assert_eq!(dz.sum_to(&[2, 1])?.to_vec(), vec![12.0, 12.0]);
    /// assert!(dz.sum_to(&[4]).is_err());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor<T>> {
        let fail = || {
            Error::mismatch("sum_to", self.shape(), shape, "the target shape does not broadcast to the tensor's shape")
        };
        if same_dims(shape, self.shape()) {
            return Ok(self.clone());
        }
        let n = self.ndim();
        if shape.len() > n {
            return Err(fail());
        }
        let lead = n - shape.len();
        let mut mask = vec![false; n];
        for d in 0..n {
            // Leading dims were added by broadcasting; a 1 in `shape` was stretched.
            let stretched = d >= lead && shape[d - lead] == 1 && self.shape()[d] != 1;
            if d < lead || stretched {
                mask[d] = true;
            } else if shape[d - lead] != self.shape()[d] {
                return Err(fail());
            }
        }
        if !mask.contains(&true) {
            return self.reshape(shape);
        }
        self.reduce(Reduction::Sum, &mask, true).reshape(shape)
    }
}

/// Softmax (or log-softmax) of one contiguous row into `out`. Rows longer than [`CHUNK`] are
/// exponentiated and summed in chunks whose partial sums are added pairwise.
pub(crate) fn softmax_row<T: Float>(isa: Isa, x: &[T], out: &mut [T], log: bool) {
    let m = T::max(isa, x);
    let s = if x.len() <= CHUNK {
        T::exp_sum(isa, x, m, out)
    } else {
        let partials: Vec<T> =
            x.chunks(CHUNK).zip(out.chunks_mut(CHUNK)).map(|(x, out)| T::exp_sum(isa, x, m, out)).collect();
        Reduction::Sum.pairwise(&partials)
    };
    if log {
        // `(x − m) − ln s`, in this order: `x − m` is exact near the maximum.
        T::binary(isa, BinaryOp::Sub, Operand::Slice(x), Operand::Splat(m), out);
        T::binary_assign(isa, BinaryOp::Sub, out, Operand::Splat(s.ln()));
    } else {
        T::binary_assign(isa, BinaryOp::Div, out, Operand::Splat(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::available_isas;

    #[test]
    fn rows_and_inner_orders_agree_with_a_plain_sum() {
        // [3, 50000] summed over dim 0 takes the rows order, over dim 1 the inner one.
        let x = Tensor::<f64>::arange(150_000).reshape(&[3, 50_000]).unwrap();
        let cols = x.sum(&[0], false).unwrap().to_vec();
        assert!(cols.iter().enumerate().all(|(j, &v)| v == (3 * j + 150_000) as f64));
        let rows = x.sum(&[1], false).unwrap().to_vec();
        for (i, &v) in rows.iter().enumerate() {
            let want: f64 = (0..50_000).map(|j| (i * 50_000 + j) as f64).sum();
            assert_eq!(v, want);
        }
    }

    /// `RowCascade`'s sum of the rows of `runs` (as [`CascadeRows`] reads them), row by row
    /// through the scalar path: the definition of the *rows* order.
    fn row_by_row<T: Float>(x: &[T], runs: &[(usize, usize, usize)], width: usize) -> Vec<T> {
        let mut total = RowCascade::new(Reduction::Sum, Isa::Scalar, width);
        for &(offset, rows, stride) in runs {
            for t in 0..rows {
                T::binary_assign(
                    Isa::Scalar,
                    BinaryOp::Add,
                    total.leaf(),
                    Operand::Slice(&x[offset + t * stride..][..width]),
                );
                total.row_done();
            }
        }
        total.finish()
    }

    /// Values whose sums round differently in another order, with NaN, ±∞ and -0 among them.
    fn awkward<T: Float>(n: usize) -> Vec<T> {
        (0..n)
            .map(|i| match (i % 211, i % 11) {
                (17, _) => T::NAN,
                (60, _) => T::INFINITY,
                (61, _) | (130, _) => T::NEG_INFINITY,
                (_, 0) => T::from_f64(3e7),
                (_, 1) => T::from_f64(-0.0),
                _ => T::from_f64(((i * 37 % 29) as f64 - 14.0) * 0.31),
            })
            .collect()
    }

    /// Bit for bit, except that a NaN only has to be a NaN: which operand's payload an addition
    /// of two NaNs keeps is the compiler's choice (it may swap an addition's operands).
    fn assert_same_bits<T: Float>(got: &[T], want: &[T], case: &str) {
        assert_eq!(got.len(), want.len(), "{case}");
        for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
            let same = if w.is_nan() { g.is_nan() } else { g.to_f64().to_bits() == w.to_f64().to_bits() };
            assert!(same, "{case}, column {j}: {g:?} instead of {w:?}");
        }
    }

    /// The one-call cascade against the row-by-row definition, on every path: row counts that
    /// end in a partial leaf, fill one leaf or several levels, rows spread over runs (a leaf
    /// spanning two runs), widths around the column blocks, rows wider than the columns read.
    fn cascade_matches_row_by_row<T: Float>() {
        let counts = (0..70).chain([1000, 4095, 4099]);
        for width in [1usize, 15, 16, 17, 64, 100, 130] {
            let stride = width + 3;
            for rows in counts.clone() {
                let x = awkward::<T>(rows * stride + 2 * stride + 5);
                // One run from offset 2, and three runs whose cuts fall inside leaves, the last
                // at twice the stride.
                let (a, b) = (rows / 3, rows / 2);
                let one = [(2, rows, stride)];
                let split = [(2, a, stride), (2 + a * stride, b - a, stride), (1, rows - b, 2 * stride)];
                for runs in [&one[..], &split[..]] {
                    let want = row_by_row(&x, runs, width);
                    for isa in available_isas() {
                        let mut got = vec![T::from_f64(7.0); width];
                        dispatch(isa, CascadeRows { out: &mut got, x: &x, runs });
                        assert_same_bits(
                            &got,
                            &want,
                            &format!("{} {isa:?}, {rows} rows of {width} in {} runs", T::NAME, runs.len()),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn cascade_kernel_gives_the_row_by_row_bits() {
        cascade_matches_row_by_row::<f32>();
        cascade_matches_row_by_row::<f64>();
    }

    #[test]
    fn nan_and_infinities_propagate_through_the_cascade() {
        // Column 0 has one NaN, column 1 both infinities (NaN), column 2 +∞, column 3 -0 only.
        let rows = 1003;
        let mut x = vec![0.25f32; rows * 4];
        x[517 * 4] = f32::NAN;
        x[3 * 4 + 1] = f32::INFINITY;
        x[999 * 4 + 1] = f32::NEG_INFINITY;
        x[640 * 4 + 2] = f32::INFINITY;
        for t in 0..rows {
            x[t * 4 + 3] = -0.0;
        }
        for isa in available_isas() {
            let mut got = vec![0.0f32; 4];
            dispatch(isa, CascadeRows { out: &mut got, x: &x, runs: &[(0, rows, 4)] });
            assert!(got[0].is_nan() && got[1].is_nan() && got[2] == f32::INFINITY, "{isa:?}: {got:?}");
            // Each leaf starts from +0, as RowCascade's: the sum of -0s is +0.
            assert_eq!(got[3].to_bits(), 0.0f32.to_bits(), "{isa:?}");
        }
        let dz = Tensor::from_vec(x, &[rows, 4]).unwrap();
        let db = dz.sum(&[0], false).unwrap().to_vec();
        assert!(db[0].is_nan() && db[1].is_nan() && db[2] == f32::INFINITY && db[3].to_bits() == 0);
    }

    #[test]
    fn pairwise_combines_every_partial() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(Reduction::Sum.pairwise(&v), 55.0);
        assert_eq!(Reduction::Max.pairwise(&v), 10.0);
        assert_eq!(Reduction::Sum.pairwise::<f64>(&[]), 0.0);
    }
}
