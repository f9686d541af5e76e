//! `conv2d_max_pool2d`: a convolution and the max pooling that follows it, as one op.
//!
//! A CNN's first convolution writes an output larger than a core's L2 cache (the MNIST CNN's:
//! 64 x 16 x 28 x 28 f32, 3.2 MB), which the pool reads back; the pool's backward writes a
//! gradient of that size, which the convolution's backward reads back. Fused, each group of
//! images' convolution output (`forward_group` images, one product: `conv_group`) is pooled
//! while it is still in cache, in a per-thread scratch buffer, and the backward writes each group
//! of images' convolution-output gradient into scratch just before the convolution's backward
//! reads it (`Upstream::Pooled`). Every element is the same sum as in the unfused ops, and the
//! same pooling kernels run, so the results are the same bits. Pools other than the 2 x 2 window
//! with stride 2 and no padding run as the two ops.

use super::pool::{check_pooled_grad, is_window2, max_pool_plane_2x2, pool_geometry, Kind};
use super::{
    check_bias, conv_geometry, conv_group, conv_macs, forward_group, weight_matrix, Conv2dGrads, MaxPoolIndices,
    Scratch, Upstream,
};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::kernels::{active_isa, pool::words_per_row};
use crate::tensor::Tensor;

impl<T: Float> Tensor<T> {
    // ─── conv2d_max_pool2d ──────────────────────────────────────────────────────

    /// [`Tensor::conv2d`] followed by [`Tensor::max_pool2d_with_indices`], as one op: `pool` is
    /// the pooling's `[kernel, stride, padding]`. The result is the same bits as the two calls.
    ///
    /// With a 2 x 2 window, stride 2 and no padding (the usual CNN block), each image's
    /// convolution output is pooled at once from a per-thread scratch buffer, so the full-size
    /// convolution output is never written; other pools run as the two calls.
    /// Backward: [`Tensor::conv2d_max_pool2d_backward`].
    ///
    /// Shapes: input `[N, C_in, H, W]`, weight `[C_out, C_in, kh, kw]`, bias `[C_out]`; output
    /// the pooling of the `[N, C_out, OH, OW]` convolution output.
    ///
    /// # Errors
    /// `conv2d` as [`Tensor::conv2d`]; `max_pool2d` as [`Tensor::max_pool2d`] for the
    /// convolution's output shape.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::<f32>::arange(16).reshape(&[1, 1, 4, 4])?;
    /// let w = Tensor::<f32>::ones(&[1, 1, 1, 1]);
    /// let (y, idx) = x.conv2d_max_pool2d(&w, None, 1, 0, [2, 2, 0])?;
    /// assert_eq!(y.to_vec(), vec![5.0, 7.0, 13.0, 15.0]);
    /// assert_eq!(idx.to_flat(), vec![5, 7, 13, 15]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn conv2d_max_pool2d(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        stride: usize,
        padding: usize,
        pool: [usize; 3],
    ) -> Result<(Tensor<T>, MaxPoolIndices)> {
        let (n, c_out, g) = conv_geometry(self.shape(), weight.shape(), stride, padding)?;
        check_bias(c_out, weight, bias)?;
        let conv_shape = [n, c_out, g.oh, g.ow];
        let [kernel, pool_stride, pool_padding] = pool;
        let (_, pg) = pool_geometry("max_pool2d", &conv_shape, kernel, pool_stride, pool_padding)?;
        if !is_window2(&pg) {
            return self.conv2d(weight, bias, stride, padding)?.max_pool2d_with_indices(
                kernel,
                pool_stride,
                pool_padding,
            );
        }
        let bias = bias.map(Tensor::to_vec);
        let w = weight.contiguous();
        let w_ref = weight_matrix(&w, c_out, &g);
        let (plane, pooled) = (g.col_cols(), pg.oh * pg.ow);
        let words = pg.oh * words_per_row(pg.ow);
        // Every output element and code word is written below (the kernel writes whole planes).
        let mut out = crate::memory::for_overwrite(n * c_out * pooled);
        let mut codes = crate::memory::for_overwrite::<u64>(n * c_out * words);
        if !out.is_empty() {
            let isa = active_isa();
            // Groups of `per` images (the last may be shorter), each one product (`conv_group`).
            let per = forward_group(&g);
            let pieces = out.chunks_mut(per * c_out * pooled).zip(codes.chunks_mut(per * c_out * words)).enumerate();
            crate::parallel::for_each_init(
                pieces,
                conv_macs(n, c_out, &g),
                || (Scratch::new(), Scratch::new()),
                |(buf, y_buf), (gi, (out, codes))| {
                    let count = out.len() / (c_out * pooled);
                    let width = count * plane;
                    let y = y_buf.get(c_out * width);
                    conv_group(self, (gi * per, count), (&g, w_ref, bias.as_deref()), buf, y);
                    // Plane `o` of image `k` starts at `o · width + k · plane` of `y`.
                    let images = out.chunks_exact_mut(c_out * pooled).zip(codes.chunks_exact_mut(c_out * words));
                    for (k, (out, codes)) in images.enumerate() {
                        let planes = out.chunks_exact_mut(pooled).zip(codes.chunks_exact_mut(words));
                        for (o, (out, codes)) in planes.enumerate() {
                            max_pool_plane_2x2(isa, (&*y, o * width + k * plane, g.ow), &pg, out, codes);
                        }
                    }
                },
            );
        }
        let output = [n, c_out, pg.oh, pg.ow];
        let indices = MaxPoolIndices::new(conv_shape, output, Kind::Window2x2(codes));
        Ok((Tensor::from_contiguous(out, &output), indices))
    }

    // ─── conv2d_max_pool2d backward ─────────────────────────────────────────────

    /// The gradients of [`Tensor::conv2d_max_pool2d`] (called on the input `x`) for the pooled
    /// output's gradient `dy` and the forward's `indices`, each only when `needs` asks for it
    /// (`[dx, dweight, dbias]`): [`Tensor::max_pool2d_backward`] followed by
    /// [`Tensor::conv2d_backward_needed`], the same bits. For the 2 x 2 pool the convolution
    /// output's gradient is routed from `dy` for a few images at a time, into scratch, as the
    /// convolution's backward reads it: the full-size gradient is never written.
    ///
    /// # Errors
    /// `conv2d` for the forward's convolution errors; `conv2d_max_pool2d_backward` when
    /// `indices` were not made for this convolution's output or `dy` does not have their
    /// output shape.
    ///
    /// ```
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::<f64>::arange(16).reshape(&[1, 1, 4, 4])?;
    /// let w = Tensor::<f64>::ones(&[1, 1, 1, 1]);
    /// let (_, idx) = x.conv2d_max_pool2d(&w, None, 1, 0, [2, 2, 0])?;
    /// let dy = Tensor::<f64>::ones(&[1, 1, 2, 2]);
    /// let g = x.conv2d_max_pool2d_backward(&w, &dy, &idx, 1, 0, [false, true, true])?;
    /// assert_eq!(g.dweight.map(|t| t.to_vec()), Some(vec![5.0 + 7.0 + 13.0 + 15.0]));
    /// assert_eq!(g.dbias.map(|t| t.to_vec()), Some(vec![4.0]));
    /// assert!(g.dx.is_none());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn conv2d_max_pool2d_backward(
        &self,
        weight: &Tensor<T>,
        dy: &Tensor<T>,
        indices: &MaxPoolIndices,
        stride: usize,
        padding: usize,
        needs: [bool; 3],
    ) -> Result<Conv2dGrads<T>> {
        const OP: &str = "conv2d_max_pool2d_backward";
        let (n, c_out, g) = conv_geometry(self.shape(), weight.shape(), stride, padding)?;
        let conv_shape = [n, c_out, g.oh, g.ow];
        if indices.input_shape() != conv_shape {
            return Err(Error::mismatch(
                OP,
                &conv_shape,
                indices.input_shape(),
                "the pooling indices must be for the convolution's output shape",
            ));
        }
        check_pooled_grad(OP, dy, indices)?;
        let Kind::Window2x2(codes) = &indices.kind else {
            let dconv = Tensor::max_pool2d_backward(dy, indices)?;
            return self.conv2d_backward_needed(weight, &dconv, stride, padding, needs);
        };
        // The 2 x 2 pooling these codes were made by.
        let (_, pooled) = pool_geometry("max_pool2d", &conv_shape, 2, 2, 0)?;
        let dy = dy.contiguous();
        let dy_data = dy.as_slice().expect("a contiguous tensor has a slice");
        self.conv_backward(weight, (n, c_out, &g), &Upstream::Pooled { dy: dy_data, codes, pooled }, needs)
    }
}
