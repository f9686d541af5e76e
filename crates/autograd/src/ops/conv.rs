//! Convolution and pooling (NCHW).

use tapegrad_tensor::ops::conv::MaxPoolIndices;
use tapegrad_tensor::{Float, Result, Tensor};

use super::one;
use crate::var::{Backward, Grads, Var};

// ─── Conv2d ──────────────────────  y = x ⋆ w + b   (saves x and w)
//   dx = col2im(wᵀ · dy),  dw = dy · im2col(x)ᵀ,  db = Σ dy over (n, h, w)
struct Conv2d<T: Float> {
    x: Tensor<T>,
    w: Tensor<T>,
    stride: usize,
    padding: usize,
}
impl<T: Float> Backward<T> for Conv2d<T> {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn backward(&self, dy: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        // Only what is needed: a first layer's input has no gradient to compute.
        let need = |i: usize| needs.get(i).copied().unwrap_or(false);
        let g = self.x.conv2d_backward_needed(&self.w, dy, self.stride, self.padding, [need(0), need(1), need(2)])?;
        let mut grads: Grads<T> = Grads::from([g.dx, g.dweight]);
        if needs.len() == 3 {
            grads.push(g.dbias);
        }
        Ok(grads)
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.x, &self.w]
    }
}

// ─── MaxPool2d ───────────────────  dx = dy routed to each window's maximum (saves indices)
struct MaxPool2d {
    indices: MaxPoolIndices,
}
impl<T: Float> Backward<T> for MaxPool2d {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn backward(&self, dy: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(Tensor::max_pool2d_backward(dy, &self.indices)?))
    }
    fn extra_bytes(&self) -> usize {
        self.indices.bytes()
    }
}

// ─── AvgPool2d ───────────────────  dx = dy / k² spread over each window
struct AvgPool2d {
    in_shape: Vec<usize>,
    kernel: usize,
    stride: usize,
    padding: usize,
}
impl<T: Float> Backward<T> for AvgPool2d {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }
    fn backward(&self, dy: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(Tensor::avg_pool2d_backward(dy, &self.in_shape, self.kernel, self.stride, self.padding)?))
    }
}

impl<T: Float> Var<T> {
    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`) of an `[N, C_in, H, W]` input
    /// with an `[C_out, C_in, kh, kw]` weight and optional `[C_out]` bias.
    ///
    /// # Errors
    /// `conv2d` for wrong ranks, a channel mismatch, a kernel larger than the padded input or a
    /// zero stride.
    pub fn conv2d(&self, weight: &Var<T>, bias: Option<&Var<T>>, stride: usize, padding: usize) -> Result<Var<T>> {
        let (x, w) = (self.value(), weight.value());
        let b = bias.map(Var::value);
        let y = x.conv2d(&w, b.as_ref(), stride, padding)?;
        let make = || Conv2d { x, w, stride, padding };
        Ok(match bias {
            Some(b) => Var::from_op(y, &[self, weight, b], make),
            None => Var::from_op(y, &[self, weight], make),
        })
    }

    /// Max pooling over `kernel x kernel` windows (padding counts as -inf).
    ///
    /// # Errors
    /// `max_pool2d` for a non-4-D input, a zero kernel or stride, or padding over kernel / 2.
    pub fn max_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Var<T>> {
        let x = self.value();
        let (y, indices) = x.max_pool2d_with_indices(kernel, stride, padding)?;
        Ok(Var::from_op(y, &[self], || MaxPool2d { indices }))
    }

    /// Average pooling over `kernel x kernel` windows (padding counts as zeros in the average).
    ///
    /// # Errors
    /// As [`Var::max_pool2d`].
    pub fn avg_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Var<T>> {
        let x = self.value();
        let y = x.avg_pool2d(kernel, stride, padding)?;
        Ok(Var::from_op(y, &[self], || AvgPool2d { in_shape: x.shape().to_vec(), kernel, stride, padding }))
    }
}
