//! `max_pool2d` and `avg_pool2d` over NCHW tensors, with PyTorch's semantics
//! (`ceil_mode=False`, `dilation=1`, `count_include_pad=True`) and their backwards.
//!
//! Each `(n, c)` plane is independent, so planes run in parallel; each output element is
//! computed by the same loop whatever the thread count.

use crate::parallel::for_each;

use super::im2col::Geometry;
use super::out_size;
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::kernels::pool;
use crate::layout::{checked_numel, numel_or_reason, MAX_NUMEL};
use crate::tensor::Tensor;

mod indices;

pub(super) use indices::Kind;
pub use indices::MaxPoolIndices;

/// Checks a pooling call on an input of `shape` and returns `(planes, geometry)` where planes
/// is `N * C` (and `geometry.c` is 1: one plane at a time).
pub(super) fn pool_geometry(
    op: &'static str,
    shape: &[usize],
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Result<(usize, Geometry)> {
    if shape.len() != 4 {
        return Err(Error::shape(op, shape, "expects an input of shape [N, C, H, W]"));
    }
    if kernel == 0 || stride == 0 {
        return Err(Error::arg(op, format!("kernel ({kernel}) and stride ({stride}) must be at least 1")));
    }
    if pad > kernel / 2 {
        return Err(Error::arg(op, format!("padding {pad} must be at most half the kernel size {kernel}")));
    }
    // The window's size is a divisor (avg_pool2d) and bounds every window's end.
    if kernel.checked_mul(kernel).is_none_or(|area| area > MAX_NUMEL) {
        return Err(Error::arg(op, format!("a {kernel}x{kernel} window has more elements than a tensor can have")));
    }
    // Also the input's (`avg_pool2d_backward` takes its shape as given).
    checked_numel(op, shape)?;
    let (h, w) = (shape[2], shape[3]);
    if h == 0 || w == 0 {
        return Err(Error::shape(op, shape, "the spatial dims must not be empty"));
    }
    let (oh, ow) = match (out_size(h, kernel, stride, pad), out_size(w, kernel, stride, pad)) {
        (Some(oh), Some(ow)) => (oh, ow),
        _ => {
            return Err(Error::shape(
                op,
                shape,
                format!("the {kernel}x{kernel} window is larger than the input padded by {pad}"),
            ))
        }
    };
    let planes = shape[0] * shape[1];
    if let Err(reason) = numel_or_reason(&[planes, oh, ow]) {
        return Err(Error::shape(op, shape, format!("the output's {planes} planes of {oh}x{ow}: {reason}")));
    }
    Ok((planes, Geometry { c: 1, h, w, kh: kernel, kw: kernel, stride, pad, oh, ow }))
}

/// The input rows (or columns) window `o` covers, clipped to the input: `start..end`, never
/// empty because `pad <= kernel / 2` keeps every window partly inside.
fn window(o: usize, g: &Geometry, size: usize) -> (usize, usize) {
    let start = o * g.stride;
    (start.saturating_sub(g.pad), (start + g.kh).saturating_sub(g.pad).min(size))
}

/// Whether a max pooling of geometry `g` takes the vectorised path of `kernels::pool` (and
/// stores its indices as [`Kind::Window2x2`] codes): the 2 x 2 window with stride 2 and no
/// padding.
pub(super) fn is_window2(g: &Geometry) -> bool {
    g.kh == 2 && g.stride == 2 && g.pad == 0
}

/// Max pooling of one plane whose rows are contiguous (`sw == 1`), from `data[base..]` with rows
/// `sh` apart, over `g`'s 2 x 2 windows ([`is_window2`]): the pooled plane into `y` and the
/// windows' position codes into `codes` (`g.oh * words_per_row(g.ow)` words).
pub(super) fn max_pool_plane_2x2<T: Float>(
    isa: crate::kernels::Isa,
    (data, base, sh): (&[T], usize, usize),
    g: &Geometry,
    y: &mut [T],
    codes: &mut [u64],
) {
    pool::max_pool_2x2(isa, &data[base..base + (2 * g.oh - 1) * sh + 2 * g.ow], sh, g.ow, y, codes);
}

/// The storage index of element `(0, 0)` of plane `n * C + c`, whatever the input's strides.
fn plane_base<T: Float>(x: &Tensor<T>, plane: usize) -> usize {
    let (c, s) = (x.shape()[1], x.strides());
    x.offset() + (plane / c) * s[0] + (plane % c) * s[1]
}

impl<T: Float> Tensor<T> {
    // ─── max_pool2d ─────────────────────────────────────────────────────────────

    /// 2-D max pooling, like `torch.nn.functional.max_pool2d(x, kernel, stride, padding)`:
    /// `y[n, c, i, j] = max_{u, v < k} x[n, c, i·s + u - p, j·s + v - p]`, the padding being -inf.
    /// A NaN in a window makes its output NaN, as in PyTorch.
    ///
    /// Shapes: input `[N, C, H, W]`, output `[N, C, (H + 2p - k) / s + 1, (W + 2p - k) / s + 1]`.
    /// Backward: [`Tensor::max_pool2d_backward`] with the indices of
    /// [`Tensor::max_pool2d_with_indices`].
    ///
    /// # Errors
    /// `max_pool2d` when the input is not 4-D, `kernel` or `stride` is 0, `padding > kernel / 2`,
    /// or the window is larger than the padded input.
    ///
    /// ```
    /// # use tapegrad_tensor::Tensor;
    /// let x = Tensor::<f32>::arange(16).reshape(&[1, 1, 4, 4])?;
    /// let y = x.max_pool2d(2, 2, 0)?;
    /// assert_eq!(y.to_vec(), vec![5.0, 7.0, 13.0, 15.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn max_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Tensor<T>> {
        Ok(self.max_pool2d_with_indices(kernel, stride, padding)?.0)
    }

    /// [`Tensor::max_pool2d`] and which input element each output element took
    /// ([`MaxPoolIndices`]; [`MaxPoolIndices::to_flat`] gives the flat index `h * W + w` within
    /// its `(n, c)` plane, as PyTorch's `return_indices=True`). Ties keep the first maximum in
    /// row-major window order; a NaN is taken over anything (the last NaN of a window).
    ///
    /// The 2 x 2 window with stride 2 and no padding runs as one vectorised pass per plane
    /// (`kernels::pool`) and stores two bits per output.
    ///
    /// # Errors
    /// As [`Tensor::max_pool2d`].
    ///
    /// ```
    /// # use tapegrad_tensor::Tensor;
    /// let x = Tensor::<f32>::from_vec(vec![1.0, 4.0, 3.0, 2.0], &[1, 1, 2, 2])?;
    /// let (y, idx) = x.max_pool2d_with_indices(2, 2, 0)?;
    /// assert_eq!((y.to_vec(), idx.to_flat()), (vec![4.0], vec![1]));
    /// let dx = Tensor::max_pool2d_backward(&Tensor::from_vec(vec![10.0], &[1, 1, 1, 1])?, &idx)?;
    /// assert_eq!(dx.to_vec(), vec![0.0, 10.0, 0.0, 0.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn max_pool2d_with_indices(
        &self,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<(Tensor<T>, MaxPoolIndices)> {
        let (planes, g) = pool_geometry("max_pool2d", self.shape(), kernel, stride, padding)?;
        let plane = g.oh * g.ow;
        let s = self.shape();
        let (input, output) = ([s[0], s[1], s[2], s[3]], [s[0], s[1], g.oh, g.ow]);
        // Every output element is written below (a cached buffer, no page faults).
        let mut out = crate::memory::for_overwrite(planes * plane);
        let (sh, sw) = (self.strides()[2], self.strides()[3]);
        let data = self.storage().as_slice();
        let window2 = is_window2(&g);
        // The scan of every window, for any geometry and strides: `take(pos, i, j)` records the
        // winner of window (i, j) at plane position `pos`.
        let scan = |base: usize, y: &mut [T], take: &mut dyn FnMut(usize, usize, usize)| {
            for i in 0..g.oh {
                let (h0, h1) = window(i, &g, g.h);
                for j in 0..g.ow {
                    let (w0, w1) = window(j, &g, g.w);
                    let (mut best, mut at) = (T::NEG_INFINITY, h0 * g.w + w0);
                    for h in h0..h1 {
                        for w in w0..w1 {
                            let v = data[base + h * sh + w * sw];
                            if v > best || v.is_nan() {
                                (best, at) = (v, h * g.w + w);
                            }
                        }
                    }
                    y[i * g.ow + j] = best;
                    take(at, i, j);
                }
            }
        };
        let kind = if window2 {
            let row_words = pool::words_per_row(g.ow);
            // Every word is written: the kernel zeroes each row's words before it sets bits, and
            // the strided loop below zeroes its plane's first.
            let mut codes = crate::memory::for_overwrite::<u64>(planes * g.oh * row_words);
            let isa = crate::kernels::active_isa();
            let pieces = out.chunks_mut(plane.max(1)).zip(codes.chunks_mut((g.oh * row_words).max(1))).enumerate();
            for_each(pieces, self.numel(), |(pl, (y, codes))| {
                let base = plane_base(self, pl);
                if sw == 1 {
                    max_pool_plane_2x2(isa, (data, base, sh), &g, y, codes);
                } else {
                    codes.fill(0);
                    scan(base, y, &mut |at, i, j| {
                        let code = 2 * (at / g.w - 2 * i) + at % g.w - 2 * j;
                        pool::set_code(&mut codes[i * row_words..], j, code);
                    });
                }
            });
            Kind::Window2x2(codes)
        } else {
            let mut indices = vec![0usize; planes * plane];
            let pieces = out.chunks_mut(plane).zip(indices.chunks_mut(plane)).enumerate();
            for_each(pieces, self.numel(), |(pl, (y, idx))| {
                scan(plane_base(self, pl), y, &mut |at, i, j| idx[i * g.ow + j] = at)
            });
            Kind::Flat(indices)
        };
        Ok((Tensor::from_contiguous(out, &output), MaxPoolIndices::new(input, output, kind)))
    }

    /// The gradient of [`Tensor::max_pool2d`]: `dx[n, c, idx] += dy[n, c, i, j]` where `idx` is
    /// the input element output `(i, j)` took (from [`Tensor::max_pool2d_with_indices`], or
    /// [`MaxPoolIndices::from_flat`]); inputs chosen by several windows collect every window's
    /// gradient, the others get 0.
    ///
    /// Shapes: `dy` the pooling's output shape ([`MaxPoolIndices::output_shape`]); returns `dx`
    /// of the input's ([`MaxPoolIndices::input_shape`]).
    ///
    /// # Errors
    /// `max_pool2d_backward` when `dy` does not have the output shape the indices were made for.
    pub fn max_pool2d_backward(dy: &Tensor<T>, indices: &MaxPoolIndices) -> Result<Tensor<T>> {
        const OP: &str = "max_pool2d_backward";
        check_pooled_grad(OP, dy, indices)?;
        let input_shape = indices.input_shape();
        let (h, w) = (input_shape[2], input_shape[3]);
        let image = h * w;
        let (oh, ow) = (dy.shape()[2], dy.shape()[3]);
        let plane = oh * ow;
        let numel = input_shape.iter().product::<usize>();
        let dy = dy.contiguous();
        let dy_data = dy.as_slice().expect("a contiguous tensor has a slice");
        if image == 0 || plane == 0 {
            return Ok(Tensor::from_contiguous(crate::memory::filled(numel, T::ZERO), input_shape));
        }
        let dx = match &indices.kind {
            Kind::Window2x2(codes) => {
                // Windows do not overlap: each input element gets its window's gradient or 0,
                // written once, with no zero pass.
                let mut dx = crate::memory::for_overwrite(numel);
                let isa = crate::kernels::active_isa();
                let pieces =
                    dx.chunks_mut(image).zip(dy_data.chunks(plane).zip(codes.chunks(oh * pool::words_per_row(ow))));
                for_each(pieces, numel, |(dx, (dy, codes))| pool::max_pool_2x2_backward(isa, dy, codes, ow, w, dx));
                dx
            }
            Kind::Flat(idx) => {
                let mut dx = crate::memory::filled(numel, T::ZERO);
                let pieces = dx.chunks_mut(image).zip(dy_data.chunks(plane).zip(idx.chunks(plane)));
                for_each(pieces, numel, |(dx, (dy, idx))| {
                    for (&g, &i) in dy.iter().zip(idx) {
                        dx[i] += g;
                    }
                });
                dx
            }
        };
        Ok(Tensor::from_contiguous(dx, input_shape))
    }

    // ─── avg_pool2d ─────────────────────────────────────────────────────────────

    /// 2-D average pooling, like `torch.nn.functional.avg_pool2d(x, kernel, stride, padding)`
    /// with `count_include_pad=True`: `y[n, c, i, j] = (1 / k²) Σ_{u, v < k} x[n, c, i·s + u - p,
    /// j·s + v - p]`, the padding counting as zeros.
    ///
    /// Shapes: as [`Tensor::max_pool2d`]. Backward: [`Tensor::avg_pool2d_backward`].
    ///
    /// # Errors
    /// `avg_pool2d`, as [`Tensor::max_pool2d`].
    ///
    /// ```
    /// # use tapegrad_tensor::Tensor;
    /// let x = Tensor::<f32>::arange(16).reshape(&[1, 1, 4, 4])?;
    /// let y = x.avg_pool2d(2, 2, 0)?;
    /// assert_eq!(y.to_vec(), vec![2.5, 4.5, 10.5, 12.5]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn avg_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Tensor<T>> {
        let (planes, g) = pool_geometry("avg_pool2d", self.shape(), kernel, stride, padding)?;
        let plane = g.oh * g.ow;
        // With floor-mode output sizes every window lies inside the padded input, so the
        // count_include_pad divisor is always k².
        let scale = T::ONE / T::from_usize(kernel * kernel);
        // Every output element is written below.
        let mut out = crate::memory::for_overwrite(planes * plane);
        let (sh, sw) = (self.strides()[2], self.strides()[3]);
        let data = self.storage().as_slice();
        for_each(out.chunks_mut(plane).enumerate(), self.numel(), |(pl, y)| {
            let base = plane_base(self, pl);
            for i in 0..g.oh {
                let (h0, h1) = window(i, &g, g.h);
                for j in 0..g.ow {
                    let (w0, w1) = window(j, &g, g.w);
                    let mut sum = T::ZERO;
                    for h in h0..h1 {
                        for w in w0..w1 {
                            sum += data[base + h * sh + w * sw];
                        }
                    }
                    y[i * g.ow + j] = sum * scale;
                }
            }
        });
        Ok(Tensor::from_contiguous(out, &[self.shape()[0], self.shape()[1], g.oh, g.ow]))
    }

    /// The gradient of [`Tensor::avg_pool2d`]: every input element of a window receives
    /// `dy / k²` from that window.
    ///
    /// Shapes: `dy` the forward's output shape for `input_shape` `[N, C, H, W]`; returns `dx` of
    /// `input_shape`.
    ///
    /// # Errors
    /// `avg_pool2d` for the forward's errors; `avg_pool2d_backward` when `dy` has the wrong shape.
    pub fn avg_pool2d_backward(
        dy: &Tensor<T>,
        input_shape: &[usize],
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor<T>> {
        let (planes, g) = pool_geometry("avg_pool2d", input_shape, kernel, stride, padding)?;
        let y_shape = [input_shape[0], input_shape[1], g.oh, g.ow];
        if dy.shape() != y_shape {
            return Err(Error::mismatch(
                "avg_pool2d_backward",
                &y_shape,
                dy.shape(),
                "the upstream gradient must have the forward's output shape",
            ));
        }
        let image = g.h * g.w;
        let plane = g.oh * g.ow;
        let scale = T::ONE / T::from_usize(kernel * kernel);
        let mut dx = crate::memory::filled(planes * image, T::ZERO);
        let dy = dy.contiguous();
        let dy_data = dy.as_slice().expect("a contiguous tensor has a slice");
        if image > 0 {
            for_each(dx.chunks_mut(image).zip(dy_data.chunks(plane)), planes * image, |(dx, dy)| {
                for i in 0..g.oh {
                    let (h0, h1) = window(i, &g, g.h);
                    for j in 0..g.ow {
                        let (w0, w1) = window(j, &g, g.w);
                        let d = dy[i * g.ow + j] * scale;
                        for h in h0..h1 {
                            dx[h * g.w + w0..h * g.w + w1].iter_mut().for_each(|v| *v += d);
                        }
                    }
                }
            });
        }
        Ok(Tensor::from_contiguous(dx, input_shape))
    }
}

/// `op`'s error unless `dy` has the output shape `indices` were made for.
pub(super) fn check_pooled_grad<T: Float>(op: &'static str, dy: &Tensor<T>, indices: &MaxPoolIndices) -> Result<()> {
    if dy.shape() != indices.output_shape() {
        return Err(Error::mismatch(op, indices.output_shape(), dy.shape(), "dy must have the pooling's output shape"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_stay_inside_the_input_and_are_never_empty() {
        for h in 1..8 {
            for k in 1..5 {
                for stride in 1..4 {
                    for pad in 0..=k / 2 {
                        let Ok((_, g)) = pool_geometry("t", &[1, 1, h, h], k, stride, pad) else { continue };
                        for o in 0..g.oh {
                            let (a, b) = window(o, &g, h);
                            assert!(a < b && b <= h, "{h} {k} {stride} {pad} {o}");
                        }
                    }
                }
            }
        }
    }
}
