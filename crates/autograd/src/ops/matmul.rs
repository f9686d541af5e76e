//! Matrix products.

use tapegrad_tensor::{Float, Result, Tensor};

use super::{two, two_var};
use crate::var::{Backward, Grads, Var, VarGrads};

// ─── MatMul ──────────────────────  z = x @ y (ndim >= 2, batch dims broadcast)
//   dx = dz @ yᵀ summed to x's shape,  dy = xᵀ @ dz summed to y's shape
struct MatMul<T: Float> {
    x: Tensor<T>,
    y: Tensor<T>,
}
impl<T: Float> Backward<T> for MatMul<T> {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        let last2 = |t: &Tensor<T>| t.transpose(t.ndim() - 2, t.ndim() - 1);
        two(
            needs,
            || dz.matmul(&last2(&self.y)?)?.sum_to(self.x.shape()),
            || {
                let (x, y) = (&self.x, &self.y);
                let (k, n) = (y.shape()[0], dz.shape().last().copied().unwrap_or(0));
                if y.ndim() == 2 && x.ndim() > 2 && k > 0 && n > 0 {
                    // `y` shared by the whole batch: its gradient is one product over all the
                    // batch's rows, `[k, rows] · [rows, n]` (not a product per batch element
                    // summed afterwards).
                    let rows = x.numel() / k;
                    return x.reshape(&[rows, k])?.t()?.matmul(&dz.reshape(&[rows, n])?);
                }
                last2(x)?.matmul(dz)?.sum_to(y.shape())
            },
        )
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.x, &self.y]
    }
    fn backward_var(&self, dz: &Var<T>, xy: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        let last2 = |t: &Var<T>| {
            let n = t.value().ndim();
            t.transpose(n - 2, n - 1)
        };
        two_var(
            needs,
            || dz.matmul(&last2(&xy[1])?)?.sum_to(self.x.shape()),
            || last2(&xy[0])?.matmul(dz)?.sum_to(self.y.shape()),
        )
    }
}

impl<T: Float> Var<T> {
    /// The matrix product with PyTorch's `matmul` semantics: 2-D × 2-D, batched with broadcast
    /// batch dims, and 1-D operands promoted to a matrix (the added dim is removed after).
    ///
    /// # Errors
    /// `matmul` names both shapes when the inner dims or batch dims do not fit.
    pub fn matmul(&self, rhs: &Var<T>) -> Result<Var<T>> {
        let (xn, yn) = (self.value().ndim(), rhs.value().ndim());
        if xn == 0 || yn == 0 {
            // Let the tensor op produce its error message.
            self.value().matmul(&rhs.value())?;
        }
        // Promote 1-D operands through recorded views, so the product itself is always >= 2-D.
        let x = if xn == 1 { self.unsqueeze(0)? } else { self.clone() };
        let y = if yn == 1 { rhs.unsqueeze(1)? } else { rhs.clone() };
        let (xv, yv) = (x.value(), y.value());
        let z = xv.matmul(&yv)?;
        let mut z = Var::from_op(z, &[&x, &y], || MatMul { x: xv, y: yv });
        let zn = z.value().ndim();
        if yn == 1 {
            z = z.squeeze(zn - 1)?;
        }
        if xn == 1 {
            let zn = z.value().ndim();
            z = z.squeeze(zn - if yn == 1 { 1 } else { 2 })?;
        }
        Ok(z)
    }
}
