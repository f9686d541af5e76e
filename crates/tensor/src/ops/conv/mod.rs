//! 2-D convolution and pooling over NCHW tensors, with the backward helpers autograd calls.
//!
//! - this file: `conv2d` and `conv2d_backward`, as `im2col` + one GEMM per image (the crate's
//!   GEMM), except the weight gradient of images with short output planes (up to
//!   `GROUPED_DEPTH` positions per product): one product over a group's positions side by
//!   side (`weight_grad_group`);
//! - `im2col.rs`: the unfolding into a column matrix and its adjoint `col2im`;
//! - `crate::kernels::conv`: the input gradient of a stride-1 "same"-width convolution gathered
//!   plane by plane from the column gradient on AVX-512 (f32), with `col2im`'s bits and no
//!   zeroing pass over `dx`;
//! - `pool/`: `max_pool2d` (with [`MaxPoolIndices`]), `avg_pool2d` and their backwards;
//! - `fused.rs`: `conv2d_max_pool2d`, a convolution and the 2 x 2 max pooling that follows it
//!   a few images at a time (one product per group of images, `conv_group`), and its backward,
//!   without the full-size convolution output or its gradient.
//!
//! Images of a batch are independent, so they run in parallel on the rayon pool; every output
//! element is computed by the same sequence of operations whatever the thread count, and the
//! weight and bias gradients are summed over fixed groups of `BACKWARD_GROUP` images, the
//! groups' partial sums added in order. Scratch buffers (column matrices, gathered `dy`) come
//! from the buffer cache once per thread and loop (`Scratch`).

use crate::dtype::Float;
use crate::error::{Error, Result, ShapeFmt};
use crate::kernels::active_isa;
use crate::kernels::conv::{col2im_same, SamePlan};
use crate::kernels::elementwise::ElementwiseKernels;
use crate::kernels::fold_rows::FoldRows;
use crate::kernels::gemm::{gemm, gemm_init, Init, MatMut, MatRef};
use crate::kernels::mask::isa::dispatch;
use crate::layout::{checked_numel, numel_or_reason};
use crate::tensor::Tensor;

mod fused;
mod im2col;
mod pool;

pub use pool::MaxPoolIndices;

use im2col::{col2im, im2col, Geometry};

/// Images per task in `conv2d_backward`: each group sums its weight gradient in order, and the
/// groups' partial sums are added in order, so the result does not depend on the thread count.
const BACKWARD_GROUP: usize = 4;

/// The longest `K` of one weight-gradient product over several images' output positions
/// (`weight_grad_group`): planes of up to 256 positions are grouped.
const GROUPED_DEPTH: usize = 1024;

/// `(h + 2 pad - k) / stride + 1`, or `None` when the kernel does not fit in the padded input
/// (or the padded size overflows).
fn out_size(size: usize, k: usize, stride: usize, pad: usize) -> Option<usize> {
    let padded = pad.checked_mul(2)?.checked_add(size)?;
    Some(padded.checked_sub(k)? / stride + 1)
}

/// Checks a conv2d call and returns `(n, c_out, geometry)`.
fn conv_geometry(x: &[usize], w: &[usize], stride: usize, pad: usize) -> Result<(usize, usize, Geometry)> {
    const OP: &str = "conv2d";
    if x.len() != 4 {
        return Err(Error::shape(OP, x, "expects an input of shape [N, C_in, H, W]"));
    }
    if w.len() != 4 {
        return Err(Error::shape(OP, w, "expects a weight of shape [C_out, C_in, kh, kw]"));
    }
    if x[1] != w[1] {
        return Err(Error::mismatch(
            OP,
            x,
            w,
            format!("the input has {} channels but the weight expects {}", x[1], w[1]),
        ));
    }
    if stride == 0 {
        return Err(Error::arg(OP, "stride must be at least 1"));
    }
    if w[2] == 0 || w[3] == 0 {
        return Err(Error::shape(OP, w, "the kernel must be at least 1x1"));
    }
    let (oh, ow) = match (out_size(x[2], w[2], stride, pad), out_size(x[3], w[3], stride, pad)) {
        (Some(oh), Some(ow)) => (oh, ow),
        _ => {
            return Err(Error::mismatch(
                OP,
                x,
                w,
                format!("the {}x{} kernel is larger than the input padded by {pad}", w[2], w[3]),
            ))
        }
    };
    // Every buffer conv allocates must have a valid size: the output and one image's column
    // matrix (`c_in * kh * kw` rows, a sub-product of the weight's valid shape).
    let check = |what: &str, shape: &[usize]| {
        numel_or_reason(shape)
            .map_err(|reason| Error::mismatch(OP, x, w, format!("the {what} {}: {reason}", ShapeFmt(shape))))
    };
    check("output", &[x[0], w[0], oh, ow])?;
    check("column matrix", &[w[1] * w[2] * w[3], oh, ow])?;
    Ok((x[0], w[0], Geometry { c: x[1], h: x[2], w: x[3], kh: w[2], kw: w[3], stride, pad, oh, ow }))
}

/// One scratch buffer of a thread in one conv loop: taken from the buffer cache
/// (`crate::memory`) at its first use and given back when the loop ends, so that a training step
/// reuses the same memory instead of allocating, zeroing and faulting in fresh buffers per image
/// or group of images.
struct Scratch<T: Float>(Vec<T>);

impl<T: Float> Scratch<T> {
    fn new() -> Scratch<T> {
        Scratch(Vec::new())
    }

    /// The first `len` elements of the buffer, of unspecified value: every caller overwrites all
    /// of them before reading any (the cache's contract, `memory::for_overwrite`).
    fn get(&mut self, len: usize) -> &mut [T] {
        if self.0.len() < len {
            crate::memory::recycle(std::mem::take(&mut self.0));
            self.0 = crate::memory::for_overwrite(len);
        }
        &mut self.0[..len]
    }
}

impl<T: Float> Drop for Scratch<T> {
    fn drop(&mut self) {
        crate::memory::recycle(std::mem::take(&mut self.0));
    }
}

/// The column matrix of image `n` as a GEMM operand (`col_rows x col_cols`): the image itself
/// for a pointwise convolution whose rows are contiguous, otherwise `buf` after `im2col`.
fn columns<'a, T: Float>(x: &'a Tensor<T>, n: usize, g: &Geometry, buf: &'a mut Scratch<T>) -> MatRef<'a, T> {
    let s = x.strides();
    let base = x.offset() + n * s[0];
    let data = x.storage().as_slice();
    if g.is_pointwise() {
        // The [C, H, W] image is a [C, H * W] matrix when h and w merge into one strided dim.
        let col_stride = if g.h <= 1 {
            Some(s[3])
        } else if g.w <= 1 {
            Some(s[2])
        } else {
            (s[2] == g.w * s[3]).then_some(s[3])
        };
        if let Some(col_stride) = col_stride {
            return MatRef::new(data, base, [g.col_rows(), g.col_cols()], [s[1], col_stride]);
        }
    }
    let buf = buf.get(g.col_rows() * g.col_cols());
    im2col(data, base, [s[1], s[2], s[3]], g, buf, g.col_cols());
    MatRef::row_major(buf, g.col_rows(), g.col_cols())
}

/// The weight gradient of the `count` images from `first`, `Σ_n dy_n · cols(x_n)ᵀ`, into `dw`
/// (`c_out x col_rows`), `dy` holding those images' output gradients. Images whose output
/// planes are short run as one product whose `K` runs over their output positions in order, up
/// to `GROUPED_DEPTH`: `dy`'s planes gathered into `dy_buf` (`c_out x m·plane`) and the column
/// matrices side by side in `buf` (`col_rows x m·plane`). One product of depth `m · plane`
/// instead of `m` products of depth `plane` packs the operands once and keeps the microkernel's
/// accumulators over a longer `K` (conv2 of the MNIST CNN, 196 positions: about 15% less time).
/// Long planes (the gather would cost more than it saves) and pointwise convolutions (the column
/// matrix is the image itself) take one product per image.
fn weight_grad_group<T: Float>(
    x: &Tensor<T>,
    dy: &[T],
    (first, count): (usize, usize),
    (c_out, g): (usize, &Geometry),
    dw: &mut [T],
    (buf, dy_buf): (&mut Scratch<T>, &mut Scratch<T>),
) {
    let (rows, plane) = (g.col_rows(), g.col_cols());
    let per = if g.is_pointwise() { 1 } else { (GROUPED_DEPTH / plane).clamp(1, count.max(1)) };
    for (j, start) in (first..first + count).step_by(per).enumerate() {
        let m = per.min(first + count - start);
        let (a, cols) = if m == 1 {
            (MatRef::new(dy, (start - first) * c_out * plane, [c_out, plane], [plane, 1]), columns(x, start, g, buf))
        } else {
            let width = m * plane;
            let cols = grouped_columns(x, (start, m), g, buf);
            // Every element is written below: each image fills its block of columns.
            let dy_buf = dy_buf.get(c_out * width);
            for k in 0..m {
                let dy_n = &dy[(start - first + k) * c_out * plane..][..c_out * plane];
                for (dst, src) in dy_buf[k * plane..].chunks_mut(width).zip(dy_n.chunks_exact(plane)) {
                    dst[..plane].copy_from_slice(src);
                }
            }
            (MatRef::row_major(&*dy_buf, c_out, width), MatRef::row_major(&*cols, rows, width))
        };
        gemm(MatMut::row_major(dw, c_out, rows), a, cols.t(), j > 0);
    }
}

/// `buf` cut into one slice of `len` elements per group of images (the last may be shorter) when
/// `need`, else `None` for each of the `groups` (`buf` then need not hold anything).
fn group_parts<T>(buf: &mut [T], len: usize, need: bool, groups: usize) -> Vec<Option<&mut [T]>> {
    if need {
        buf.chunks_mut(len).map(Some).collect()
    } else {
        (0..groups).map(|_| None).collect()
    }
}

/// Checks that `bias`, if any, is `[c_out]` for `weight`.
fn check_bias<T: Float>(c_out: usize, weight: &Tensor<T>, bias: Option<&Tensor<T>>) -> Result<()> {
    match bias {
        Some(b) if b.shape() != [c_out] => {
            Err(Error::mismatch("conv2d", weight.shape(), b.shape(), format!("the bias must have shape [{c_out}]")))
        }
        _ => Ok(()),
    }
}

/// The contiguous weight `w` as the forward's GEMM operand, `c_out x col_rows`.
fn weight_matrix<'a, T: Float>(w: &'a Tensor<T>, c_out: usize, g: &Geometry) -> MatRef<'a, T> {
    MatRef::new(w.storage().as_slice(), w.offset(), [c_out, g.col_rows()], [g.col_rows(), 1])
}

/// The multiply-adds of a forward over `n` images: the work that decides whether to split (see
/// `crate::parallel`).
fn conv_macs(n: usize, c_out: usize, g: &Geometry) -> usize {
    (n * c_out * g.col_cols()).saturating_mul(g.col_rows())
}

/// The forward of image `i` of `x` into `y` (`c_out x oh·ow`): one GEMM of the weight `w_ref`
/// with the image's column matrix, each output plane starting as its bias.
fn conv_image<T: Float>(
    x: &Tensor<T>,
    i: usize,
    (g, w_ref, bias): (&Geometry, MatRef<'_, T>, Option<&[T]>),
    buf: &mut Scratch<T>,
    y: &mut [T],
) {
    let plane = g.col_cols();
    let c_out = y.len() / plane.max(1);
    let cols = columns(x, i, g, buf);
    product_with_bias(MatMut::row_major(y, c_out, plane), w_ref, cols, bias);
}

/// `y = w · cols`, plus `bias[o]` in every element of row `o` when there is a bias: each row of
/// the GEMM's output starts as its bias, and the product is added to it tile by tile (no pass of
/// its own over `y`).
fn product_with_bias<T: Float>(y: MatMut<'_, T>, w: MatRef<'_, T>, cols: MatRef<'_, T>, bias: Option<&[T]>) {
    match bias {
        Some(b) => gemm_init(y, w, cols, Init::EachColumn(b)),
        None => gemm(y, w, cols, false),
    }
}

/// The column matrices of images `first .. first + count` of `x` side by side in `buf`
/// (`col_rows x count·plane`, image `k` in the columns from `k · plane`), every element written.
fn grouped_columns<'b, T: Float>(
    x: &Tensor<T>,
    (first, count): (usize, usize),
    g: &Geometry,
    buf: &'b mut Scratch<T>,
) -> &'b mut [T] {
    let (rows, plane) = (g.col_rows(), g.col_cols());
    let width = count * plane;
    let s = x.strides();
    let cols = buf.get(rows * width);
    for k in 0..count {
        let base = x.offset() + (first + k) * s[0];
        im2col(x.storage().as_slice(), base, [s[1], s[2], s[3]], g, &mut cols[k * plane..], width);
    }
    cols
}

/// Images per product in the fused convolution + pooling's forward (`fused.rs`): as many as
/// keep a group's output positions within `GROUPED_DEPTH` (at most `BACKWARD_GROUP`, so that a
/// batch still splits evenly between threads), one image for a pointwise convolution, whose
/// columns are the image itself.
fn forward_group(g: &Geometry) -> usize {
    if g.is_pointwise() {
        1
    } else {
        (GROUPED_DEPTH / g.col_cols().max(1)).clamp(1, BACKWARD_GROUP)
    }
}

/// The forward of images `first .. first + count` of `x` into `y` (`c_out x count·oh·ow`: row
/// `o` holds channel `o` of each image in turn, plane after plane): their column matrices side
/// by side, one GEMM with the weight `w_ref`, each row starting as its bias. One product of
/// `count` planes' width instead of `count` narrow ones: the weight is packed once and fewer
/// tiles are ragged (conv2 of the MNIST CNN, `32 x 196 x 144` per image, ran at 108 GFLOP/s;
/// docs/benchmarks.md, session 17). Each element is the same sum as [`conv_image`]'s.
fn conv_group<T: Float>(
    x: &Tensor<T>,
    (first, count): (usize, usize),
    (g, w_ref, bias): (&Geometry, MatRef<'_, T>, Option<&[T]>),
    buf: &mut Scratch<T>,
    y: &mut [T],
) {
    if count == 1 {
        return conv_image(x, first, (g, w_ref, bias), buf, y);
    }
    let (rows, width) = (g.col_rows(), count * g.col_cols());
    let c_out = y.len() / width.max(1);
    let cols = grouped_columns(x, (first, count), g, buf);
    product_with_bias(MatMut::row_major(y, c_out, width), w_ref, MatRef::row_major(cols, rows, width), bias);
}

/// Where a backward pass reads the convolution output's gradient `dy` from, one group of images
/// at a time ([`Upstream::group`]).
enum Upstream<'a, T> {
    /// The whole `[N, C_out, OH, OW]` gradient, contiguous.
    Full(&'a [T]),
    /// The gradient of a 2 x 2 max pooling of the convolution's output (`dy` of the pooled
    /// `[N, C_out, OH / 2, OW / 2]`, contiguous) and its position codes: each group's `dy` is
    /// the pool's backward, written into scratch.
    Pooled { dy: &'a [T], codes: &'a [u64], pooled: Geometry },
}

impl<T: Float> Upstream<'_, T> {
    /// `dy` of the `count` images from `first` (`count · c_out · plane` elements, image after
    /// image), borrowed from the full gradient or written into `buf`.
    fn group<'b>(&'b self, (first, count): (usize, usize), image: usize, buf: &'b mut Scratch<T>) -> &'b [T] {
        match self {
            Upstream::Full(dy) => &dy[first * image..(first + count) * image],
            Upstream::Pooled { dy, codes, pooled } => {
                let (plane, pooled_plane) = (pooled.h * pooled.w, pooled.oh * pooled.ow);
                let words = pooled.oh * crate::kernels::pool::words_per_row(pooled.ow);
                let planes = first * image / plane..(first + count) * image / plane;
                let out = buf.get(count * image);
                // Every element is written: the kernel writes each plane whole.
                let isa = active_isa();
                for (p, dx) in planes.zip(out.chunks_exact_mut(plane)) {
                    let (dy, codes) = (&dy[p * pooled_plane..][..pooled_plane], &codes[p * words..][..words]);
                    crate::kernels::pool::max_pool_2x2_backward(isa, dy, codes, pooled.ow, pooled.w, dx);
                }
                out
            }
        }
    }
}

/// The gradients [`Tensor::conv2d_backward_needed`] returns, each only when asked for.
#[derive(Clone, Debug)]
pub struct Conv2dGrads<T: Float> {
    /// The input's gradient, like the input.
    pub dx: Option<Tensor<T>>,
    /// The weight's gradient, like the weight.
    pub dweight: Option<Tensor<T>>,
    /// The bias's gradient, `[C_out]` (also without a bias in the forward).
    pub dbias: Option<Tensor<T>>,
}

impl<T: Float> Tensor<T> {
    // ─── conv2d ─────────────────────────────────────────────────────────────────

    /// 2-D cross-correlation, like `torch.nn.functional.conv2d(x, weight, bias, stride, padding)`:
    /// `y[n, o, i, j] = b[o] + Σ_{c, u, v} x[n, c, i·s + u - p, j·s + v - p] · w[o, c, u, v]`,
    /// with zeros outside the input.
    ///
    /// Shapes: input `[N, C_in, H, W]`, weight `[C_out, C_in, kh, kw]`, bias `[C_out]`, output
    /// `[N, C_out, (H + 2p - kh) / s + 1, (W + 2p - kw) / s + 1]`. Computed as `im2col` and one
    /// GEMM per image; images run in parallel. Backward: [`Tensor::conv2d_backward`].
    ///
    /// # Errors
    /// `conv2d` when the input or weight is not 4-D, the channel counts differ, the bias is not
    /// `[C_out]`, the stride is 0, or the kernel is empty or larger than the padded input.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::<f32>::ones(&[1, 1, 4, 4]);
    /// let w = Tensor::<f32>::ones(&[2, 1, 3, 3]);
    /// let y = x.conv2d(&w, None, 1, 1)?;
    /// assert_eq!(y.shape(), &[1, 2, 4, 4]);
    /// assert_eq!(y.get(&[0, 0, 0, 0])?, 4.0); // a corner sees 2x2 of the input
    /// assert_eq!(y.get(&[0, 1, 1, 1])?, 9.0);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn conv2d(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor<T>> {
        let (n, c_out, g) = conv_geometry(self.shape(), weight.shape(), stride, padding)?;
        check_bias(c_out, weight, bias)?;
        let bias = bias.map(Tensor::to_vec);
        let w = weight.contiguous();
        let w_ref = weight_matrix(&w, c_out, &g);
        let plane = g.col_cols();
        let mut out = crate::memory::for_overwrite(n * c_out * plane);
        if !out.is_empty() {
            crate::parallel::for_each_init(
                out.chunks_mut(c_out * plane).enumerate(),
                conv_macs(n, c_out, &g),
                Scratch::new,
                |buf, (i, y)| conv_image(self, i, (&g, w_ref, bias.as_deref()), buf, y),
            );
        }
        Ok(Tensor::from_contiguous(out, &[n, c_out, g.oh, g.ow]))
    }

    // ─── conv2d backward ────────────────────────────────────────────────────────

    /// The gradients of [`Tensor::conv2d`] (called on the input `x`) for an upstream gradient
    /// `dy`, returned as `(dx, dweight, dbias)`:
    /// - `dx = col2im(Wᵀ · dy_cols)` per image (the adjoint of the forward),
    /// - `dweight = Σ_n dy_n · cols(x_n)ᵀ`,
    /// - `dbias[o] = Σ_{n, i, j} dy[n, o, i, j]` (returned even when the forward had no bias).
    ///
    /// Shapes: `dx` like `x`, `dweight` like `weight`, `dbias` `[C_out]`; `dy` must have the
    /// forward's output shape. Also callable as `Tensor::conv2d_backward(&x, &w, &dy, s, p)`.
    ///
    /// # Errors
    /// `conv2d` for the forward's errors; `conv2d_backward` when `dy` has the wrong shape.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::<f64>::ones(&[1, 1, 3, 3]);
    /// let w = Tensor::<f64>::ones(&[1, 1, 2, 2]);
    /// let dy = Tensor::<f64>::ones(&[1, 1, 2, 2]);
    /// let (dx, dw, db) = x.conv2d_backward(&w, &dy, 1, 0)?;
    /// assert_eq!(dx.to_vec(), vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
    /// assert_eq!(dw.to_vec(), vec![4.0; 4]);
    /// assert_eq!(db.to_vec(), vec![4.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn conv2d_backward(
        &self,
        weight: &Tensor<T>,
        dy: &Tensor<T>,
        stride: usize,
        padding: usize,
    ) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
        let g = self.conv2d_backward_needed(weight, dy, stride, padding, [true; 3])?;
        match (g.dx, g.dweight, g.dbias) {
            (Some(dx), Some(dw), Some(db)) => Ok((dx, dw, db)),
            _ => unreachable!("every gradient was asked for"),
        }
    }

    /// [`Tensor::conv2d_backward`] computing only the gradients `needs` asks for, in the order
    /// `[dx, dweight, dbias]`: a first layer, whose input needs no gradient, skips the GEMM and
    /// the `col2im` of `dx` for every image.
    ///
    /// # Errors
    /// As [`Tensor::conv2d_backward`].
    pub fn conv2d_backward_needed(
        &self,
        weight: &Tensor<T>,
        dy: &Tensor<T>,
        stride: usize,
        padding: usize,
        needs: [bool; 3],
    ) -> Result<Conv2dGrads<T>> {
        let (n, c_out, g) = conv_geometry(self.shape(), weight.shape(), stride, padding)?;
        let y_shape = [n, c_out, g.oh, g.ow];
        if dy.shape() != y_shape {
            return Err(Error::mismatch(
                "conv2d_backward",
                &y_shape,
                dy.shape(),
                "the upstream gradient must have the forward's output shape",
            ));
        }
        let dy = dy.contiguous();
        let dy_data = dy.as_slice().expect("a contiguous tensor has a slice");
        self.conv_backward(weight, (n, c_out, &g), &Upstream::Full(dy_data), needs)
    }

    /// The body of [`Tensor::conv2d_backward_needed`] for a checked geometry (`n` images, `c_out`
    /// output channels), reading `dy` one group of images at a time from `upstream`.
    fn conv_backward(
        &self,
        weight: &Tensor<T>,
        (n, c_out, g): (usize, usize, &Geometry),
        upstream: &Upstream<'_, T>,
        needs: [bool; 3],
    ) -> Result<Conv2dGrads<T>> {
        let [need_dx, need_dw, need_db] = needs;
        let (rows, plane) = (g.col_rows(), g.col_cols());
        let image = g.c * g.h * g.w;
        let w = weight.contiguous();
        // Wᵀ as a GEMM operand: [rows, c_out], read through swapped strides, never copied.
        let w_t = MatRef::new(w.storage().as_slice(), w.offset(), [c_out, rows], [rows, 1]).t();

        // A "same"-width stride-1 convolution gathers each plane of dx from dcols where a
        // kernel does (`kernels::conv`: a plan only where there is one), writing every element
        // (the loop below runs whenever c_out * rows > 0); otherwise col2im scatters into zeros.
        let isa = active_isa();
        let same = (need_dx && c_out * rows > 0 && g.stride == 1 && g.w == g.ow && !g.is_pointwise())
            .then(|| SamePlan::<T>::new(isa, g.c, [g.h, g.w], [g.kh, g.kw], g.pad, g.oh))
            .flatten();
        let mut dx = match (need_dx, &same) {
            (false, _) => Vec::new(),
            (true, Some(_)) => crate::memory::for_overwrite(n * image),
            (true, None) => crate::memory::filled(n * image, T::ZERO),
        };
        let groups = n.div_ceil(BACKWARD_GROUP);
        // With no image elements, no output channel or no input channel, dx and dweight are
        // zero (or empty) already; dbias needs output channels only.
        let products = n > 0 && image > 0 && c_out * rows > 0;
        let (do_dx, do_dw, do_db) = (need_dx && products, need_dw && products, need_db && n > 0 && c_out > 0);
        // One partial weight gradient and one partial bias gradient per group of images.
        if do_dw {
            checked_numel("conv2d_backward", &[groups, c_out, rows])?;
        }
        let mut partial = if do_dw { crate::memory::filled(groups * c_out * rows, T::ZERO) } else { Vec::new() };
        let mut partial_db = if do_db { crate::memory::filled(groups * c_out, T::ZERO) } else { Vec::new() };
        // One group of images: its slice of `dx`, its partial `dweight` and `dbias`, each when
        // needed.
        type Parts<'a, T> = ((Option<&'a mut [T]>, Option<&'a mut [T]>), Option<&'a mut [T]>);
        let work = |[buf, dy_buf, dcols, up_buf]: &mut [Scratch<T>; 4],
                    (gi, ((dx_group, dw), db)): (usize, Parts<'_, T>)| {
            let first = gi * BACKWARD_GROUP;
            let count = BACKWARD_GROUP.min(n - first);
            let dy_group = upstream.group((first, count), c_out * plane, up_buf);
            if let Some(db) = db {
                // Each plane summed by the vector kernel (several accumulators, a fixed order),
                // the group's images added in order.
                for dy_n in dy_group.chunks_exact(c_out * plane) {
                    for (d, row) in db.iter_mut().zip(dy_n.chunks_exact(plane)) {
                        *d += <T as ElementwiseKernels>::sum(isa, row);
                    }
                }
            }
            if let Some(dw) = dw {
                weight_grad_group(self, dy_group, (first, count), (c_out, g), dw, (buf, dy_buf));
            }
            if let Some(dx_group) = dx_group {
                for (k, dx_i) in dx_group.chunks_exact_mut(image).enumerate() {
                    let dy_ref = MatRef::new(dy_group, k * c_out * plane, [c_out, plane], [plane, 1]);
                    if g.is_pointwise() {
                        gemm(MatMut::row_major(dx_i, rows, plane), w_t, dy_ref, false);
                    } else {
                        let dcols = dcols.get(rows * plane);
                        gemm(MatMut::row_major(dcols, rows, plane), w_t, dy_ref, false);
                        match &same {
                            Some(plan) => col2im_same(plan, dcols, dx_i),
                            None => col2im(dcols, g, dx_i),
                        }
                    }
                }
            }
        };
        if do_dx || do_dw || do_db {
            let macs = (n * c_out * plane).saturating_mul(rows.max(1));
            let dx_parts = group_parts(&mut dx, BACKWARD_GROUP * image, do_dx, groups);
            let dw_parts = group_parts(&mut partial, c_out * rows, do_dw, groups);
            let db_parts = group_parts(&mut partial_db, c_out, do_db, groups);
            let pieces = dx_parts.into_iter().zip(dw_parts).zip(db_parts).enumerate();
            crate::parallel::for_each_init(pieces, macs, || [(); 4].map(|()| Scratch::new()), work);
        }
        // The groups' partial sums, added in order (the row fold of the sums over rows).
        let sum_parts = |parts: &[T], len: usize| {
            let mut total = crate::memory::filled(len, T::ZERO);
            let rows = parts.len() / len.max(1);
            dispatch(isa, FoldRows { acc: &mut total, x: parts, offset: 0, stride: len, rows });
            total
        };
        let dweight = need_dw.then(|| Tensor::from_contiguous(sum_parts(&partial, c_out * rows), weight.shape()));
        let dbias = need_db.then(|| Tensor::from_contiguous(sum_parts(&partial_db, c_out), &[c_out]));
        crate::memory::recycle(partial);
        crate::memory::recycle(partial_db);
        Ok(Conv2dGrads { dx: need_dx.then(|| Tensor::from_contiguous(dx, self.shape())), dweight, dbias })
    }
}
