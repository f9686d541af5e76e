//! Layer normalisation as one recorded op.

use tapegrad_tensor::{Float, Result, Tensor};

use crate::var::{Backward, Grads, Var, VarGrads};

// ─── LayerNorm ─────────  y = x̂ · w + b,  x̂ = (x - mean) · rstd per row
//   dx = rstd · (g - mean(g) - x̂ · mean(g · x̂)) with g = dy · w;  dw = Σ_rows dy · x̂;  db = Σ_rows dy
struct LayerNorm<T: Float> {
    x: Tensor<T>,
    normalized_shape: Vec<usize>,
    mean: Tensor<T>,
    rstd: Tensor<T>,
    weight: Option<Tensor<T>>,
    has_bias: bool,
    eps: f64,
}
impl<T: Float> Backward<T> for LayerNorm<T> {
    fn name(&self) -> &'static str {
        "layer_norm"
    }
    fn backward(&self, dy: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        let g = self.x.layer_norm_backward(
            dy,
            &self.normalized_shape,
            &self.mean,
            &self.rstd,
            self.weight.as_ref(),
            self.has_bias,
        )?;
        let mut grads = Grads::new();
        grads.push(needs[0].then_some(g.dx));
        if self.weight.is_some() {
            grads.push(if needs[1] { g.dweight } else { None });
        }
        if self.has_bias {
            grads.push(if needs[grads.len()] { g.dbias } else { None });
        }
        Ok(grads)
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        let mut saved = vec![&self.x, &self.mean, &self.rstd];
        saved.extend(&self.weight);
        saved
    }
    fn backward_var(&self, dy: &Var<T>, inputs: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        // The tensor formula with the statistics recomputed from the input `Var`, so that they
        // are differentiated too: μ, r and x̂ are functions of x.
        let x = &inputs[0];
        let ndim = x.value().ndim();
        let dims: Vec<usize> = (ndim - self.normalized_shape.len()..ndim).collect();
        let mean = x.mean(&dims, true)?;
        let centred = x.sub(&mean)?;
        let var = centred.mul(&centred)?.mean(&dims, true)?;
        let rstd = var.add_scalar(T::from_f64(self.eps)).powf(T::from_f64(-0.5));
        let x_hat = centred.mul(&rstd)?;
        let weight = self.weight.as_ref().map(|_| &inputs[1]);
        let mut grads = vec![];
        grads.push(if needs[0] {
            let g = match weight {
                Some(w) => dy.mul(w)?,
                None => dy.clone(),
            };
            let inner = g.sub(&g.mean(&dims, true)?)?.sub(&x_hat.mul(&g.mul(&x_hat)?.mean(&dims, true)?)?)?;
            Some(rstd.mul(&inner)?)
        } else {
            None
        });
        if weight.is_some() {
            grads.push(if needs[1] { Some(dy.mul(&x_hat)?.sum_to(&self.normalized_shape)?) } else { None });
        }
        if self.has_bias {
            grads.push(if needs[grads.len()] { Some(dy.sum_to(&self.normalized_shape)?) } else { None });
        }
        Ok(grads)
    }
}

impl<T: Float> Var<T> {
    /// Layer normalisation over the trailing dims `normalized_shape`, with an optional weight
    /// and bias of that shape, as one recorded op (`torch.nn.functional.layer_norm`): see
    /// [`Tensor::layer_norm`]. Backward is [`Tensor::layer_norm_backward`]; with `create_graph` it is
    /// recorded with ops that have derivatives of their own (double backward).
    ///
    /// # Errors
    /// `layer_norm` naming the shapes when the input does not end with `normalized_shape`, or
    /// the weight or bias does not have that shape.
    ///
    /// ```
    /// use tapegrad_autograd::Var;
    /// use tapegrad_tensor::Tensor;
    /// let x = Var::parameter(Tensor::from_vec(vec![1.0f64, 2.0, 4.0, 8.0], &[2, 2])?);
    /// let y = x.layer_norm(&[2], None, None, 1e-5)?;
    /// y.sum_all().backward()?;
    /// // Each normalised row sums to 0 whatever x is: the gradient of the sum is 0.
    /// assert!(x.grad().unwrap().to_vec().iter().all(|g| g.abs() < 1e-12));
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Var<T>>,
        bias: Option<&Var<T>>,
        eps: f64,
    ) -> Result<Var<T>> {
        let x = self.value();
        let (w, b) = (weight.map(Var::value), bias.map(Var::value));
        let out = x.layer_norm(normalized_shape, w.as_ref(), b.as_ref(), eps)?;
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (mean, rstd) = (out.mean, out.rstd);
        Ok(Var::from_op(out.y, &inputs, || LayerNorm {
            x,
            normalized_shape: normalized_shape.to_vec(),
            mean,
            rstd,
            weight: w,
            has_bias: b.is_some(),
            eps,
        }))
    }
}
