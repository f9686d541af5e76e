//! Elementwise ops: binary ops that broadcast as NumPy and PyTorch do, ops with a scalar, unary
//! math, the `+ - * /` and unary `-` operators, and the general `map` / `zip_map` helpers.
//!
//! Every op writes a new contiguous tensor. The output is cut into fixed chunks of `CHUNK` (32768)
//! positions (processed in parallel when there are several); inside a chunk the operands are
//! walked run by run (`for_each_run_in`), and each run goes to a kernel: contiguous slices and
//! stride-0 (broadcast) values take the SIMD kernels, any other stride the scalar strided loop.
//! So `[n, m] + [m]` is `n` vectorised row adds, and `[n, m] + [n, 1]` is `n` vectorised
//! row-plus-scalar adds. Results do not depend on the number of threads.

use crate::dtype::Float;
use crate::error::Result;
use crate::kernels::active_isa;
use crate::kernels::elementwise::{binary_strided, unary_strided, BinaryOp, Operand, Strided, UnaryOp};
use crate::layout::{broadcast_shapes, checked_numel, contiguous_strides, Dims, Layout};
use crate::storage::Storage;
use crate::strided::for_each_run_in;
use crate::tensor::Tensor;

/// Elements per parallel task. Fixed (never derived from the thread count), so that reductions,
/// which combine one partial result per chunk, give the same bits on any number of threads;
/// large enough (128 KiB of f32) that scheduling costs little next to the work.
pub(crate) const CHUNK: usize = 1 << 15;

/// A new buffer of `numel` elements, filled piece by piece: `fill(start, piece)` writes positions
/// `start..start + piece.len()`. Pieces are `chunk` long (the caller fixes it from the shape,
/// never from the thread count) and run in parallel when there are several; a buffer of one
/// piece is filled on the calling thread.
pub(crate) fn fill_chunked<T: Float>(numel: usize, chunk: usize, fill: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    // `fill` writes every position, so a reused buffer needs no clearing.
    let mut out = crate::memory::for_overwrite(numel);
    let chunk = chunk.max(1);
    if numel <= chunk {
        fill(0, &mut out);
    } else {
        crate::parallel::for_each(out.chunks_mut(chunk).enumerate(), numel, |(i, piece)| fill(i * chunk, piece));
    }
    out
}

/// Outputs of at most this many elements are built on the stack by [`fill_tensor`].
const STACK: usize = 64;

/// A new contiguous tensor of `shape` (`numel` elements) filled as [`fill_chunked`] fills its
/// buffer. Up to one chunk, the buffer is a single allocation shared with its reference counts
/// ([`Storage::filled`]): the common case of small op outputs pays for one allocation, not two.
pub(crate) fn fill_tensor<T: Float>(shape: &[usize], numel: usize, fill: impl Fn(usize, &mut [T]) + Sync) -> Tensor<T> {
    if numel <= STACK {
        // Tiny outputs are filled on the stack and copied into their buffer: cheaper than
        // `make_mut`'s uniqueness check (an atomic compare-and-swap) on a fresh buffer.
        let mut buf = [T::ZERO; STACK];
        fill(0, &mut buf[..numel]);
        Tensor::from_contiguous_storage(Storage::copied(&buf[..numel]), shape)
    } else if numel <= CHUNK {
        let mut storage = Storage::filled(numel, T::ZERO);
        fill(0, storage.make_mut());
        Tensor::from_contiguous_storage(storage, shape)
    } else {
        Tensor::from_contiguous(fill_chunked(numel, CHUNK, fill), shape)
    }
}

/// The kernel operand for a run of `len` elements at `data[offset + i * stride]`, or `None` when
/// the stride needs the scalar strided loop.
pub(crate) fn run_operand<T: Float>(data: &[T], offset: usize, stride: usize, len: usize) -> Option<Operand<'_, T>> {
    if stride == 1 || len == 1 {
        Some(Operand::Slice(&data[offset..offset + len]))
    } else if stride == 0 {
        Some(Operand::Splat(data[offset]))
    } else {
        None
    }
}

/// Both operands' layouts broadcast to their common shape, and that shape's numel.
fn broadcast_layouts<T: Float>(
    op: &'static str,
    lhs: &Tensor<T>,
    rhs: &Tensor<T>,
) -> Result<(Dims, Layout, Layout, usize)> {
    let shape = broadcast_shapes(op, lhs.shape(), rhs.shape())?;
    let numel = checked_numel(op, &shape)?;
    let (l, r) = (lhs.layout().expand(&shape)?, rhs.layout().expand(&shape)?);
    Ok((shape, l, r, numel))
}

/// `a == b` for shapes, element by element (a slice `==` calls `memcmp`, dearer than the few
/// compares of a shape).
pub(crate) fn same_dims(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Both operands' elements in row-major order when they have the same shape and are both
/// contiguous: the fast path that skips broadcasting and the run walk (most ops on small tensors).
fn same_shape_slices<'a, T: Float>(lhs: &'a Tensor<T>, rhs: &'a Tensor<T>) -> Option<(&'a [T], &'a [T])> {
    if !same_dims(lhs.shape(), rhs.shape()) || lhs.numel() == 0 {
        return None;
    }
    Some((lhs.as_slice()?, rhs.as_slice()?))
}

impl<T: Float> Tensor<T> {
    // ─── engines ───────────────────────────────────────────────────────────────

    /// `self op rhs` with broadcasting, through the binary kernels.
    fn binary_op(&self, rhs: &Tensor<T>, op: BinaryOp) -> Result<Tensor<T>> {
        if let Some((ld, rd)) = same_shape_slices(self, rhs) {
            let isa = active_isa();
            return Ok(fill_tensor(self.shape(), ld.len(), |start, out: &mut [T]| {
                let range = start..start + out.len();
                T::binary(isa, op, Operand::Slice(&ld[range.clone()]), Operand::Slice(&rd[range]), out);
            }));
        }
        let (shape, l, r, numel) = broadcast_layouts(op.name(), self, rhs)?;
        let out_strides = contiguous_strides(&shape);
        let (ld, rd) = (self.storage().as_slice(), rhs.storage().as_slice());
        let isa = active_isa();
        Ok(fill_tensor(&shape, numel, |start, out: &mut [T]| {
            let range = start..start + out.len();
            let strides = [out_strides.as_slice(), l.strides(), r.strides()];
            for_each_run_in(&shape, strides, [0, l.offset(), r.offset()], range, |[o, a, b], len, [_, sa, sb]| {
                let out = &mut out[o - start..o - start + len];
                match (run_operand(ld, a, sa, len), run_operand(rd, b, sb, len)) {
                    (Some(x), Some(y)) => T::binary(isa, op, x, y, out),
                    _ => binary_strided(
                        op,
                        Strided { data: ld, offset: a, stride: sa },
                        Strided { data: rd, offset: b, stride: sb },
                        out,
                    ),
                }
            });
        }))
    }

    /// `self op c` for every element, through the binary kernels with a splat operand.
    pub(crate) fn scalar_op(&self, op: BinaryOp, c: T) -> Tensor<T> {
        let data = self.storage().as_slice();
        let isa = active_isa();
        self.fill_runs(|x, s, out| match run_operand(data, x, s, out.len()) {
            Some(x) => T::binary(isa, op, x, Operand::Splat(c), out),
            None => binary_strided(
                op,
                Strided { data, offset: x, stride: s },
                Strided { data: &[c], offset: 0, stride: 0 },
                out,
            ),
        })
    }

    /// `op(x)` for every element, through the unary kernels.
    fn unary_op(&self, op: UnaryOp<T>) -> Tensor<T> {
        let data = self.storage().as_slice();
        let isa = active_isa();
        self.fill_runs(|x, s, out| {
            if s == 1 || out.len() == 1 {
                T::unary(isa, op, &data[x..x + out.len()], out);
            } else if s == 0 {
                out.fill(op.apply(data[x]));
            } else {
                unary_strided(op, Strided { data, offset: x, stride: s }, out);
            }
        })
    }

    /// The elements in a new row-major tensor (what [`Tensor::contiguous`] makes of a view that
    /// is not contiguous, and [`Tensor::make_mut`] of one that is not plain): copied run by run, in fixed chunks on the pool when large, into a
    /// buffer from the buffer cache. (Copied element by element into a fresh `Vec` on the
    /// calling thread, the broadcast `[64, 28, 64]` gradient a transformer's last LayerNorm
    /// backward reads took 90 µs at 1 and at 2 threads, half of it page faults.)
    pub(crate) fn gather_runs(&self) -> Tensor<T> {
        let data = self.storage().as_slice();
        self.fill_runs(|x, s, out: &mut [T]| match s {
            1 => out.copy_from_slice(&data[x..x + out.len()]),
            0 => out.fill(data[x]),
            _ => out.iter_mut().enumerate().for_each(|(i, o)| *o = data[x + i * s]),
        })
    }

    /// A new contiguous tensor of this shape, each run written by `run(offset, stride, out)`
    /// from this tensor's elements `offset + i * stride`.
    fn fill_runs(&self, run: impl Fn(usize, usize, &mut [T]) + Sync) -> Tensor<T> {
        let shape = self.shape();
        if self.is_contiguous() && self.numel() > 0 {
            // One run over the whole tensor, cut only into the fixed chunks.
            let offset = self.offset();
            return fill_tensor(shape, self.numel(), |start, out: &mut [T]| run(offset + start, 1, out));
        }
        let out_strides = contiguous_strides(shape);
        let layout = self.layout();
        fill_tensor(shape, self.numel(), |start, out: &mut [T]| {
            let range = start..start + out.len();
            let strides = [out_strides.as_slice(), layout.strides()];
            for_each_run_in(shape, strides, [0, layout.offset()], range, |[o, x], len, [_, s]| {
                run(x, s, &mut out[o - start..o - start + len]);
            });
        })
    }

    // ─── add / sub / mul / div ─────────────────────────────────────────────────

    /// `self + rhs`, broadcasting (NumPy rules) to the common shape.
    ///
    /// Shapes: trailing dims aligned, each pair equal or one of them 1; the output has the
    /// broadcast shape. Backward: `dx = dz.sum_to(x.shape)`, `dy = dz.sum_to(y.shape)`.
    ///
    /// # Errors
    /// `add` naming both shapes when they cannot be broadcast together.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let bias = Tensor::from_vec(vec![10.0f32, 20.0], &[2])?;
    /// assert_eq!(x.add(&bias)?.to_vec(), vec![11.0, 22.0, 13.0, 24.0]);
    /// assert!(x.add(&Tensor::zeros(&[3])).is_err());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn add(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary_op(rhs, BinaryOp::Add)
    }

    /// `self + rhs` as [`Tensor::add`] gives it, written into `self`'s buffer when nothing else
    /// holds it, it is contiguous and `rhs` has its shape (contiguous too): the sum where a
    /// value's gradients meet in a backward pass, without a new buffer and its third stream of
    /// memory traffic. Otherwise exactly `self.add(rhs)`. Same values either way.
    ///
    /// # Errors
    /// `add` naming both shapes when they cannot be broadcast together.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let acc = Tensor::from_vec(vec![1.0f32, 2.0], &[2])?;
    /// let g = Tensor::from_vec(vec![0.5f32, 0.25], &[2])?;
    /// assert_eq!(acc.add_owned(&g)?.to_vec(), vec![1.5, 2.25]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn add_owned(mut self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        if same_dims(self.shape(), rhs.shape()) {
            if let Some(rd) = rhs.as_slice() {
                if let Some(acc) = self.unique_mut() {
                    let isa = active_isa();
                    let n = acc.len();
                    let pieces = acc.chunks_mut(CHUNK).zip(rd.chunks(CHUNK));
                    crate::parallel::for_each(pieces, n, |(a, b)| {
                        T::binary_assign(isa, BinaryOp::Add, a, Operand::Slice(b));
                    });
                    return Ok(self);
                }
            }
        }
        self.add(rhs)
    }

    /// `self - rhs`, broadcasting as [`Tensor::add`] does.
    ///
    /// Backward: `dx = dz.sum_to(x.shape)`, `dy = -dz.sum_to(y.shape)`.
    ///
    /// # Errors
    /// `sub` naming both shapes when they cannot be broadcast together.
    pub fn sub(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary_op(rhs, BinaryOp::Sub)
    }

    /// `self * rhs` elementwise, broadcasting as [`Tensor::add`] does.
    ///
    /// Backward: `dx = (dz * y).sum_to(x.shape)`, `dy = (dz * x).sum_to(y.shape)`.
    ///
    /// # Errors
    /// `mul` naming both shapes when they cannot be broadcast together.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3, 1])?;
    /// let y = Tensor::from_vec(vec![1.0f64, 10.0], &[2])?;
    /// assert_eq!(x.mul(&y)?.to_vec(), vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn mul(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary_op(rhs, BinaryOp::Mul)
    }

    /// `self / rhs` elementwise (IEEE: `x / 0` is ±∞ or NaN), broadcasting as [`Tensor::add`].
    ///
    /// Backward: `dx = (dz / y).sum_to(x.shape)`, `dy = (-dz * x / y²).sum_to(y.shape)`.
    ///
    /// # Errors
    /// `div` naming both shapes when they cannot be broadcast together.
    pub fn div(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary_op(rhs, BinaryOp::Div)
    }

    // ─── maximum / minimum ─────────────────────────────────────────────────────

    /// The elementwise larger value, `max(x, y)`, broadcasting; NaN wherever either input is
    /// NaN (like `torch.maximum`).
    ///
    /// Backward: the gradient goes to the larger input (`torch` splits it evenly on ties).
    ///
    /// # Errors
    /// `maximum` naming both shapes when they cannot be broadcast together.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::from_vec(vec![1.0f32, 5.0, f32::NAN], &[3])?;
    /// let y = x.maximum(&Tensor::scalar(2.0))?.to_vec();
    /// assert_eq!(&y[..2], &[2.0, 5.0]);
    /// assert!(y[2].is_nan());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn maximum(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary_op(rhs, BinaryOp::Maximum)
    }

    /// The elementwise smaller value, `min(x, y)`, broadcasting; NaN wherever either input is
    /// NaN (like `torch.minimum`).
    ///
    /// # Errors
    /// `minimum` naming both shapes when they cannot be broadcast together.
    pub fn minimum(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary_op(rhs, BinaryOp::Minimum)
    }

    // ─── ops with a scalar ─────────────────────────────────────────────────────

    /// `x + c` for every element. Backward: `dx = dz`.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// assert_eq!(Tensor::<f32>::arange(3).add_scalar(0.5).to_vec(), vec![0.5, 1.5, 2.5]);
    /// ```
    pub fn add_scalar(&self, c: T) -> Tensor<T> {
        self.scalar_op(BinaryOp::Add, c)
    }

    /// `x · c` for every element. Backward: `dx = c · dz`.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// assert_eq!(Tensor::<f32>::arange(3).mul_scalar(2.0).to_vec(), vec![0.0, 2.0, 4.0]);
    /// ```
    pub fn mul_scalar(&self, c: T) -> Tensor<T> {
        self.scalar_op(BinaryOp::Mul, c)
    }

    /// `xᵉ` for every element (`powf` of the standard library: NaN for a negative base with a
    /// non-integer exponent). Backward: `dx = e · xᵉ⁻¹ · dz`.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// assert_eq!(Tensor::<f64>::arange(4).powf(2.0).to_vec(), vec![0.0, 1.0, 4.0, 9.0]);
    /// ```
    pub fn powf(&self, e: T) -> Tensor<T> {
        self.unary_op(UnaryOp::Powf(e))
    }

    // ─── unary math ────────────────────────────────────────────────────────────

    /// `-x`. Backward: `dx = -dz`.
    pub fn neg(&self) -> Tensor<T> {
        self.unary_op(UnaryOp::Neg)
    }

    /// `|x|`. Backward: `dx = sign(x) · dz` (0 at 0, as PyTorch).
    pub fn abs(&self) -> Tensor<T> {
        self.unary_op(UnaryOp::Abs)
    }

    /// `eˣ`. Backward: `dx = z · dz` (the output is saved).
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// assert_eq!(Tensor::<f64>::zeros(&[2]).exp().to_vec(), vec![1.0, 1.0]);
    /// ```
    pub fn exp(&self) -> Tensor<T> {
        self.unary_op(UnaryOp::Exp)
    }

    /// `ln x` (−∞ at 0, NaN below). Backward: `dx = dz / x`.
    pub fn log(&self) -> Tensor<T> {
        self.unary_op(UnaryOp::Log)
    }

    /// `√x` (NaN below 0). Backward: `dx = dz / (2z)`.
    pub fn sqrt(&self) -> Tensor<T> {
        self.unary_op(UnaryOp::Sqrt)
    }

    /// `tanh x`. Backward: `dx = (1 − z²) · dz`.
    pub fn tanh(&self) -> Tensor<T> {
        self.unary_op(UnaryOp::Tanh)
    }

    /// `σ(x) = 1 / (1 + e⁻ˣ)`, evaluated so that no intermediate overflows for large `|x|`.
    /// Backward: `dx = z(1 − z) · dz`.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let y = Tensor::from_vec(vec![-1000.0f32, 0.0, 1000.0], &[3])?.sigmoid();
    /// assert_eq!(y.to_vec(), vec![0.0, 0.5, 1.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn sigmoid(&self) -> Tensor<T> {
        self.unary_op(UnaryOp::Sigmoid)
    }

    /// `max(x, 0)`; NaN stays NaN (like `torch.relu`). Backward: `dx = dz` where `x > 0`, else 0.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let y = Tensor::from_vec(vec![-1.0f32, 0.5], &[2])?.relu();
    /// assert_eq!(y.to_vec(), vec![0.0, 0.5]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn relu(&self) -> Tensor<T> {
        self.unary_op(UnaryOp::Relu)
    }

    /// PyTorch's exact GELU, `x · ½ · (1 + erf(x / √2))`.
    /// Backward: `dx = (Φ(x) + x · φ(x)) · dz`, with Φ, φ the standard normal CDF and density.
    pub fn gelu(&self) -> Tensor<T> {
        self.unary_op(UnaryOp::Gelu)
    }

    /// PyTorch's `gelu(approximate="tanh")`: `½x · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`.
    pub fn gelu_tanh(&self) -> Tensor<T> {
        self.unary_op(UnaryOp::GeluTanh)
    }

    // ─── map / zip_map ─────────────────────────────────────────────────────────

    /// `f(x)` for every element, into a new contiguous tensor of the same shape (the general
    /// helper behind backward formulas that have no kernel of their own). `f` may be called from
    /// several threads, in any order.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let y = Tensor::<f32>::arange(3).map(|v| v * v + 1.0);
    /// assert_eq!(y.to_vec(), vec![1.0, 2.0, 5.0]);
    /// ```
    pub fn map(&self, f: impl Fn(T) -> T + Sync) -> Tensor<T> {
        let data = self.storage().as_slice();
        self.fill_runs(|x, s, out| {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f(data[x + i * s]);
            }
        })
    }

    /// `f(x, y)` for every pair of elements of `self` and `rhs` broadcast together (shapes as in
    /// [`Tensor::add`]). `f` may be called from several threads, in any order.
    ///
    /// # Errors
    /// `zip_map` naming both shapes when they cannot be broadcast together.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::from_vec(vec![1.0f32, -2.0], &[2, 1])?;
    /// let y = Tensor::from_vec(vec![3.0f32, 4.0], &[2])?;
    /// let z = x.zip_map(&y, |a, b| if a > 0.0 { b } else { 0.0 })?;
    /// assert_eq!(z.to_vec(), vec![3.0, 4.0, 0.0, 0.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn zip_map(&self, rhs: &Tensor<T>, f: impl Fn(T, T) -> T + Sync) -> Result<Tensor<T>> {
        if let Some((ld, rd)) = same_shape_slices(self, rhs) {
            return Ok(fill_tensor(self.shape(), ld.len(), |start, out: &mut [T]| {
                let (a, b) = (&ld[start..start + out.len()], &rd[start..start + out.len()]);
                for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                    *o = f(x, y);
                }
            }));
        }
        let (shape, l, r, numel) = broadcast_layouts("zip_map", self, rhs)?;
        let out_strides = contiguous_strides(&shape);
        let (ld, rd) = (self.storage().as_slice(), rhs.storage().as_slice());
        Ok(fill_tensor(&shape, numel, |start, out: &mut [T]| {
            let range = start..start + out.len();
            let strides = [out_strides.as_slice(), l.strides(), r.strides()];
            for_each_run_in(&shape, strides, [0, l.offset(), r.offset()], range, |[o, a, b], len, [_, sa, sb]| {
                for (i, o) in out[o - start..o - start + len].iter_mut().enumerate() {
                    *o = f(ld[a + i * sa], rd[b + i * sb]);
                }
            });
        }))
    }

    /// The elements of a small tensor that nothing else holds, for writing in place: `Some` when
    /// this tensor is the only handle on a contiguous buffer of at most one chunk (32K elements)
    /// that it covers exactly.
    fn small_unique_mut(&mut self) -> Option<&mut [T]> {
        let n = self.numel();
        if n > CHUNK || !self.is_contiguous() || self.offset() != 0 || self.storage().len() != n {
            return None;
        }
        self.storage.get_mut()
    }

    /// `self = f(self)` elementwise, in place, when this small tensor is the only handle on its
    /// buffer; returns whether it did (otherwise `self` is untouched). The small-size fast path
    /// of backward formulas, which own the incoming gradient: no new buffer for the result.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let mut g = Tensor::from_vec(vec![1.0f32, -2.0], &[2])?;
    /// assert!(g.try_map_in_place(|v| v * 3.0));
    /// let shared = g.clone();
    /// assert!(!g.try_map_in_place(|v| v * 3.0)); // `shared` holds the buffer too
    /// assert_eq!(g.to_vec(), vec![3.0, -6.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn try_map_in_place(&mut self, f: impl Fn(T) -> T) -> bool {
        match self.small_unique_mut() {
            Some(out) => {
                out.iter_mut().for_each(|v| *v = f(*v));
                true
            }
            None => false,
        }
    }

    /// `self = f(self, rhs)` elementwise, in place, when `rhs` is contiguous with the same shape
    /// and this small tensor is the only handle on its buffer; returns whether it did (otherwise
    /// `self` is untouched). See [`Tensor::try_map_in_place`].
    pub fn try_zip_map_in_place(&mut self, rhs: &Tensor<T>, f: impl Fn(T, T) -> T) -> bool {
        if !same_dims(self.shape(), rhs.shape()) {
            return false;
        }
        let Some(r) = rhs.as_slice() else { return false };
        match self.small_unique_mut() {
            Some(out) => {
                for (o, &r) in out.iter_mut().zip(r) {
                    *o = f(*o, r);
                }
                true
            }
            None => false,
        }
    }
}

// ─── operators ─────────────────────────────────────────────────────────────────

/// Implements `std::ops::$trait` for the four combinations of owned and borrowed tensors, each
/// forwarding to the method of the same name.
macro_rules! binary_operator {
    ($trait:ident, $method:ident, $sym:literal) => {
        #[doc = concat!("`&x ", $sym, " &y`: [`Tensor::", stringify!($method), "`], broadcasting.")]
        ///
        /// # Panics
        /// When the shapes cannot be broadcast together, with the message the method returns as
        #[doc = concat!("an `Err` (`", stringify!($method), ": [2, 3] and [4]: ...`). Use the method to handle it.")]
        impl<T: Float> std::ops::$trait<&Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;

            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                match Tensor::$method(self, rhs) {
                    Ok(z) => z,
                    Err(e) => panic!("{e}"),
                }
            }
        }

        #[doc = concat!("`x ", $sym, " y`: as `&x ", $sym, " &y` (panics on incompatible shapes).")]
        impl<T: Float> std::ops::$trait<Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;

            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                std::ops::$trait::$method(&self, &rhs)
            }
        }

        #[doc = concat!("`&x ", $sym, " y`: as `&x ", $sym, " &y` (panics on incompatible shapes).")]
        impl<T: Float> std::ops::$trait<Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;

            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                std::ops::$trait::$method(self, &rhs)
            }
        }

        #[doc = concat!("`x ", $sym, " &y`: as `&x ", $sym, " &y` (panics on incompatible shapes).")]
        impl<T: Float> std::ops::$trait<&Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;

            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                std::ops::$trait::$method(&self, rhs)
            }
        }
    };
}

binary_operator!(Add, add, "+");
binary_operator!(Sub, sub, "-");
binary_operator!(Mul, mul, "*");
binary_operator!(Div, div, "/");

/// `-&x`: [`Tensor::neg`]. Never panics.
impl<T: Float> std::ops::Neg for &Tensor<T> {
    type Output = Tensor<T>;

    fn neg(self) -> Tensor<T> {
        Tensor::neg(self)
    }
}

/// `-x`: [`Tensor::neg`]. Never panics.
impl<T: Float> std::ops::Neg for Tensor<T> {
    type Output = Tensor<T>;

    fn neg(self) -> Tensor<T> {
        Tensor::neg(&self)
    }
}

// ─── more unary maths ──────────────────────────────────────────────────────────
// PyTorch's common activations and trigonometry without a SIMD kernel of their own: each is a
// `map` evaluated in f64 and rounded once to `T`, so f32 results are correctly rounded values
// of the f64 functions.

/// `f` evaluated in f64 for a `T`.
fn in_f64<T: Float>(f: impl Fn(f64) -> f64) -> impl Fn(T) -> T {
    move |x: T| T::from_f64(f(x.to_f64()))
}

impl<T: Float> Tensor<T> {
    /// `sin x`. Backward: `dx = cos x · dy`.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// assert_eq!(Tensor::<f64>::zeros(&[2]).sin().to_vec(), vec![0.0, 0.0]);
    /// ```
    pub fn sin(&self) -> Tensor<T> {
        self.map(in_f64(f64::sin))
    }

    /// `cos x`. Backward: `dx = −sin x · dy`.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// assert_eq!(Tensor::<f64>::zeros(&[2]).cos().to_vec(), vec![1.0, 1.0]);
    /// ```
    pub fn cos(&self) -> Tensor<T> {
        self.map(in_f64(f64::cos))
    }

    /// SiLU (swish), `x · σ(x)`, like `torch.nn.functional.silu`.
    /// Backward: `dx = σ(x) (1 + x (1 − σ(x))) · dy`.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let y = Tensor::from_vec(vec![0.0f64, 1000.0, -1000.0], &[3])?.silu();
    /// assert_eq!(y.to_vec(), vec![0.0, 1000.0, 0.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn silu(&self) -> Tensor<T> {
        self.map(in_f64(|x| x * sigmoid_f64(x)))
    }

    /// Softplus, `ln(1 + eˣ)`, computed as `max(x, 0) + ln(1 + e^−|x|)` so that it neither
    /// overflows for large `x` nor loses small values for very negative ones (PyTorch's default
    /// `beta = 1`; it switches to `x` above 20, this formula is exact there too).
    /// Backward: `dx = σ(x) · dy`.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let y = Tensor::from_vec(vec![0.0f64, 1000.0], &[2])?.softplus();
    /// assert_eq!(y.to_vec(), vec![std::f64::consts::LN_2, 1000.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn softplus(&self) -> Tensor<T> {
        self.map(in_f64(|x| x.max(0.0) + (-x.abs()).exp().ln_1p()))
    }

    /// Leaky ReLU, `x` for `x > 0` and `slope · x` otherwise (`torch`'s default slope is 0.01).
    /// Backward: `dx = dy` where `x > 0`, `slope · dy` otherwise.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let y = Tensor::from_vec(vec![-2.0f32, 3.0], &[2])?.leaky_relu(0.5);
    /// assert_eq!(y.to_vec(), vec![-1.0, 3.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn leaky_relu(&self, slope: T) -> Tensor<T> {
        self.map(move |x| if x > T::ZERO { x } else { x * slope })
    }

    /// Every element limited to `[min, max]` (NaN stays NaN), like `torch.clamp`. With
    /// `min > max` every element becomes `max`, as in PyTorch.
    /// Backward: `dx = dy` where `min ≤ x ≤ max`, 0 outside.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let y = Tensor::from_vec(vec![-2.0f32, 0.5, 3.0], &[3])?.clamp(-1.0, 1.0);
    /// assert_eq!(y.to_vec(), vec![-1.0, 0.5, 1.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn clamp(&self, min: T, max: T) -> Tensor<T> {
        self.map(move |x| {
            if x.is_nan() {
                x
            } else if x > max || min > max {
                max
            } else if x < min {
                min
            } else {
                x
            }
        })
    }
}

/// `1 / (1 + e⁻ˣ)` without overflow for large `|x|`.
fn sigmoid_f64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}
