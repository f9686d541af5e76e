//! Convolution and pooling (NCHW).

use tapegrad_tensor::ops::conv::{Conv2dGrads, MaxPoolIndices};
use tapegrad_tensor::{Error, Float, Result, Tensor, TensorNew};

use super::{constant, one, two, two_var};
use crate::var::{Backward, Grads, Var, VarGrads};

/// The input gradient of a convolution of an `input_shape` input with `w`, given the output's
/// gradient `dy` (a transposed convolution; the input's values do not enter it).
fn input_grad<T: Float>(
    input_shape: &[usize],
    w: &Tensor<T>,
    dy: &Tensor<T>,
    stride: usize,
    padding: usize,
) -> Result<Tensor<T>> {
    let g = Tensor::<T>::zeros(input_shape).conv2d_backward_needed(w, dy, stride, padding, [true, false, false])?;
    g.dx.ok_or_else(|| Error::arg("conv2d_backward_input", "the input gradient was not computed"))
}

/// The weight gradient of a convolution of `x` with a `weight_shape` weight, given the output's
/// gradient `dy` (the weight's values do not enter it).
fn weight_grad<T: Float>(
    x: &Tensor<T>,
    weight_shape: &[usize],
    dy: &Tensor<T>,
    stride: usize,
    padding: usize,
) -> Result<Tensor<T>> {
    let g = x.conv2d_backward_needed(&Tensor::<T>::zeros(weight_shape), dy, stride, padding, [false, true, false])?;
    g.dweight.ok_or_else(|| Error::arg("conv2d_backward_weight", "the weight gradient was not computed"))
}

/// `needs` of a convolution's backward as `[dx, dweight, dbias]` (no bias: `needs` has two).
fn conv_needs(needs: &[bool]) -> [bool; 3] {
    [0, 1, 2].map(|i| needs.get(i).copied().unwrap_or(false))
}

/// A convolution's gradients in its inputs' order: `dx`, `dweight`, and `dbias` when the op
/// had a bias (`needs` has three).
fn conv_grads<T: Float>(g: Conv2dGrads<T>, needs: &[bool]) -> Grads<T> {
    let mut grads: Grads<T> = Grads::from([g.dx, g.dweight]);
    if needs.len() == 3 {
        grads.push(g.dbias);
    }
    grads
}

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
        let g = self.x.conv2d_backward_needed(&self.w, dy, self.stride, self.padding, conv_needs(needs))?;
        Ok(conv_grads(g, needs))
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.x, &self.w]
    }
    fn backward_var(&self, dy: &Var<T>, inputs: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let (s, p) = (self.stride, self.padding);
        let mut grads = two_var(
            needs,
            || Var::conv2d_backward_input(dy, w, self.x.shape(), s, p),
            || Var::conv2d_backward_weight(x, dy, self.w.shape(), s, p),
        )?;
        if needs.len() == 3 {
            grads.push(if needs[2] { Some(dy.sum(&[0, 2, 3], false)?) } else { None });
        }
        Ok(grads)
    }
}

// ─── Conv2dBackwardInput ─────────  z = Dx(dy, w), the input gradient of a convolution
//   (linear in each of dy and w):  d dy = g ⋆ w (a conv2d),  dw = Dw(g, dy)
struct Conv2dBackwardInput<T: Float> {
    dy: Tensor<T>,
    w: Tensor<T>,
    stride: usize,
    padding: usize,
}
impl<T: Float> Backward<T> for Conv2dBackwardInput<T> {
    fn name(&self) -> &'static str {
        "conv2d_backward_input"
    }
    fn backward(&self, g: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        let (s, p) = (self.stride, self.padding);
        two(needs, || g.conv2d(&self.w, None, s, p), || weight_grad(g, self.w.shape(), &self.dy, s, p))
    }
    fn backward_var(&self, g: &Var<T>, inputs: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        let (dy, w) = (&inputs[0], &inputs[1]);
        let (s, p) = (self.stride, self.padding);
        two_var(needs, || g.conv2d(w, None, s, p), || Var::conv2d_backward_weight(g, dy, self.w.shape(), s, p))
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.dy, &self.w]
    }
}

// ─── Conv2dBackwardWeight ────────  z = Dw(x, dy), the weight gradient of a convolution
//   (linear in each of x and dy):  dx = Dx(dy, h),  d dy = x ⋆ h (a conv2d)
struct Conv2dBackwardWeight<T: Float> {
    x: Tensor<T>,
    dy: Tensor<T>,
    stride: usize,
    padding: usize,
}
impl<T: Float> Backward<T> for Conv2dBackwardWeight<T> {
    fn name(&self) -> &'static str {
        "conv2d_backward_weight"
    }
    fn backward(&self, h: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        let (s, p) = (self.stride, self.padding);
        two(needs, || input_grad(self.x.shape(), h, &self.dy, s, p), || self.x.conv2d(h, None, s, p))
    }
    fn backward_var(&self, h: &Var<T>, inputs: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        let (x, dy) = (&inputs[0], &inputs[1]);
        let (s, p) = (self.stride, self.padding);
        two_var(needs, || Var::conv2d_backward_input(dy, h, self.x.shape(), s, p), || x.conv2d(h, None, s, p))
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.x, &self.dy]
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
    fn backward_var(&self, dy: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        // Each plane flattened, the pooling is a `gather` at the stored argmaxes: its recorded
        // adjoint is a `scatter_add` of `dy` into zeros (overlapping windows add).
        let (input, output) = (self.indices.input_shape(), self.indices.output_shape());
        let (n, c) = (input[0], input[1]);
        let index_shape = [n, c, output[2] * output[3]];
        let zeros = Var::new(Tensor::<T>::zeros(&[n, c, input[2] * input[3]]));
        let dx = zeros.scatter_add(2, &self.indices.to_flat(), &index_shape, &dy.reshape(&index_shape)?)?;
        Ok(vec![Some(dx.reshape(input)?)])
    }
    fn extra_bytes(&self) -> usize {
        self.indices.bytes()
    }
}

// ─── Conv2dMaxPool2d ─────────────  z = max_pool(x ⋆ w + b)   (saves x, w and the indices)
//   dy routed to each window's maximum (max_pool2d's backward), then conv2d's backward
struct Conv2dMaxPool2d<T: Float> {
    conv: Conv2d<T>,
    pool: MaxPool2d,
}
impl<T: Float> Backward<T> for Conv2dMaxPool2d<T> {
    fn name(&self) -> &'static str {
        "conv2d_max_pool2d"
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        let Conv2d { x, w, stride, padding } = &self.conv;
        let g = x.conv2d_max_pool2d_backward(w, dz, &self.pool.indices, *stride, *padding, conv_needs(needs))?;
        Ok(conv_grads(g, needs))
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        self.conv.saved()
    }
    fn extra_bytes(&self) -> usize {
        <MaxPool2d as Backward<T>>::extra_bytes(&self.pool)
    }
    fn backward_var(&self, dz: &Var<T>, inputs: &[Var<T>], z: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        // The two ops' recorded backwards in turn (neither reads its output, so both get `z`).
        match self.pool.backward_var(dz, &inputs[..1], z, &[true])?.into_iter().next().flatten() {
            Some(dy) => self.conv.backward_var(&dy, inputs, z, needs),
            None => Ok(needs.iter().map(|_| None).collect()),
        }
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
    fn backward_var(&self, dy: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        // Each plane on its own, the pooling is a convolution with a constant `kernel x kernel`
        // weight of 1 / kernel² (padding counts as zeros, as in the average): its recorded
        // backward is that convolution's input gradient.
        let (k, [n, c, h, w]) = (self.kernel, [0, 1, 2, 3].map(|d| self.in_shape[d]));
        let dy_shape = dy.shape();
        let planes = dy.reshape(&[n * c, 1, dy_shape[2], dy_shape[3]])?;
        let weight = constant(Tensor::<T>::full(&[1, 1, k, k], T::ONE / T::from_usize(k * k)));
        let dx = Var::conv2d_backward_input(&planes, &weight, &[n * c, 1, h, w], self.stride, self.padding)?;
        Ok(vec![Some(dx.reshape(&self.in_shape)?)])
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

    /// The input gradient of [`Var::conv2d`] (a transposed convolution, PyTorch's
    /// `torch.nn.grad.conv2d_input`): given `dy`, the gradient of the output of a convolution
    /// of an `input_shape` input with `weight` (`stride`, `padding`), the input's gradient. The
    /// recorded backward of `conv2d`'s input. Linear in `dy` and in `weight`; backward:
    /// `d dy = g ⋆ weight` (a `conv2d`), `d weight = conv2d_backward_weight(g, dy)`.
    ///
    /// # Errors
    /// `conv2d` for an input shape and weight that do not make a convolution, and
    /// `conv2d_backward` when `dy` does not have that convolution's output shape.
    ///
    /// ```
    /// use tapegrad_autograd::Var;
    /// use tapegrad_tensor::{Tensor, TensorNew};
    /// let dy = Var::new(Tensor::<f64>::ones(&[1, 1, 2, 2]));
    /// let w = Var::parameter(Tensor::<f64>::ones(&[1, 1, 2, 2]));
    /// let dx = Var::conv2d_backward_input(&dy, &w, &[1, 1, 3, 3], 1, 0)?;
    /// assert_eq!(dx.value().to_vec(), vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn conv2d_backward_input(
        dy: &Var<T>,
        weight: &Var<T>,
        input_shape: &[usize],
        stride: usize,
        padding: usize,
    ) -> Result<Var<T>> {
        let (g, w) = (dy.value(), weight.value());
        let dx = input_grad(input_shape, &w, &g, stride, padding)?;
        Ok(Var::from_op(dx, &[dy, weight], || Conv2dBackwardInput { dy: g, w, stride, padding }))
    }

    /// The weight gradient of [`Var::conv2d`] (PyTorch's `torch.nn.grad.conv2d_weight`): given
    /// the convolution's input `input` and `dy`, the gradient of its output, the gradient of a
    /// `weight_shape` weight (`stride`, `padding`). The recorded backward of `conv2d`'s weight.
    /// Linear in `input` and in `dy`; backward: `d input = conv2d_backward_input(dy, h)`,
    /// `d dy = input ⋆ h` (a `conv2d`).
    ///
    /// # Errors
    /// `conv2d` for an input and weight shape that do not make a convolution, and
    /// `conv2d_backward` when `dy` does not have that convolution's output shape.
    ///
    /// ```
    /// use tapegrad_autograd::Var;
    /// use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::parameter(Tensor::<f64>::ones(&[1, 1, 3, 3]));
    /// let dy = Var::new(Tensor::<f64>::ones(&[1, 1, 2, 2]));
    /// let dw = Var::conv2d_backward_weight(&x, &dy, &[1, 1, 2, 2], 1, 0)?;
    /// assert_eq!(dw.value().to_vec(), vec![4.0; 4]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn conv2d_backward_weight(
        input: &Var<T>,
        dy: &Var<T>,
        weight_shape: &[usize],
        stride: usize,
        padding: usize,
    ) -> Result<Var<T>> {
        let (x, g) = (input.value(), dy.value());
        let dw = weight_grad(&x, weight_shape, &g, stride, padding)?;
        Ok(Var::from_op(dw, &[input, dy], || Conv2dBackwardWeight { x, dy: g, stride, padding }))
    }

    /// [`Var::conv2d`] followed by [`Var::max_pool2d`], recorded as one op:
    /// `max_pool(x ⋆ w + b)` with the pooling's `pool = [kernel, stride, padding]`, the same
    /// values and gradients (bit for bit) as the two calls. For the 2 x 2 window with stride 2 and
    /// no padding, the full-size convolution output and its gradient are never written
    /// ([`Tensor::conv2d_max_pool2d`]). Backward: `dy` routed to each window's maximum, then
    /// [`Var::conv2d`]'s rule; differentiable again (`create_graph`) as the two ops are.
    ///
    /// # Errors
    /// As [`Var::conv2d`], and `max_pool2d` as [`Var::max_pool2d`] for the convolution's
    /// output.
    ///
    /// ```
    /// use tapegrad_autograd::Var;
    /// use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::new(Tensor::<f64>::arange(16).reshape(&[1, 1, 4, 4])?);
    /// let w = Var::parameter(Tensor::<f64>::ones(&[1, 1, 1, 1]));
    /// let y = x.conv2d_max_pool2d(&w, None, 1, 0, [2, 2, 0])?;
    /// assert_eq!(y.value().to_vec(), vec![5.0, 7.0, 13.0, 15.0]);
    /// y.sum_all().backward()?;
    /// assert_eq!(w.grad().map(|g| g.to_vec()), Some(vec![40.0]));
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn conv2d_max_pool2d(
        &self,
        weight: &Var<T>,
        bias: Option<&Var<T>>,
        stride: usize,
        padding: usize,
        pool: [usize; 3],
    ) -> Result<Var<T>> {
        let (x, w) = (self.value(), weight.value());
        let b = bias.map(Var::value);
        let (y, indices) = x.conv2d_max_pool2d(&w, b.as_ref(), stride, padding, pool)?;
        let make = || Conv2dMaxPool2d { conv: Conv2d { x, w, stride, padding }, pool: MaxPool2d { indices } };
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
