//! Dropout with one mask shared along chosen dims (Keras's `noise_shape`, Flux's `dims`).

use tapegrad_tensor::{Error, Float, Generator, Result, Tensor, TensorNew};

use super::dropout::{check_p, DropoutRecord};
use super::one;
use crate::var::{Backward, Grads, Var};

// ─── DropoutShared ───────────────  y = x · M / (1 - p), M of the noise shape, broadcast;  dx = dy · M / (1 - p)
struct DropoutShared {
    record: DropoutRecord,
    noise_shape: Vec<usize>,
}
impl DropoutShared {
    /// The mask as a tensor of the noise shape: `1 / (1 - p)` where kept, 0 where dropped.
    fn multiplier<T: Float>(&self) -> Result<Tensor<T>> {
        self.record.mask().scale(&Tensor::<T>::ones(&self.noise_shape), self.record.scale())
    }
}
impl<T: Float> Backward<T> for DropoutShared {
    fn name(&self) -> &'static str {
        "dropout_shared"
    }
    fn backward(&self, dy: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        // The multiplier broadcasts up to `dy`'s (and `x`'s) shape: nothing to sum.
        Ok(one(dy.mul(&self.multiplier()?)?))
    }
    fn extra_bytes(&self) -> usize {
        self.record.mask_bytes()
    }
    fn dropout(&self) -> Option<&DropoutRecord> {
        Some(&self.record)
    }
    fn backward_var(&self, dy: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<crate::var::VarGrads<T>> {
        // Linear in its input: dy times the stored factor, a constant.
        super::stored_factor_var(self, dy)
    }
}

/// The noise shape of a mask shared along `shared` dims of `shape`: `shape` with those dims set
/// to 1.
///
/// # Errors
/// `op` when a dim is out of range for `shape` or listed twice.
pub(crate) fn shared_noise_shape(op: &'static str, shape: &[usize], shared: &[usize]) -> Result<Vec<usize>> {
    let mut noise = shape.to_vec();
    for (i, &d) in shared.iter().enumerate() {
        if d >= shape.len() {
            return Err(Error::shape(op, shape, format!("shared dim {d} is out of range for {} dims", shape.len())));
        }
        if shared[..i].contains(&d) {
            return Err(Error::shape(op, shape, format!("shared dim {d} is listed twice in {shared:?}")));
        }
        noise[d] = 1;
    }
    Ok(noise)
}

/// Inverted dropout with one mask value shared along the `shared` dims: the mask has `x`'s
/// shape with those dims set to 1 (Keras's `noise_shape`; Flux's `dims` lists the other dims)
/// and is broadcast, `y = x · M / (1 - p)`. Sharing along time in `[B, T, D]` drops the same
/// features at every step (variational or locked dropout, Gal and Ghahramani, 2016); sharing
/// along `[2, 3]` of `[N, C, H, W]` is [`dropout2d`](crate::dropout2d). Backward:
/// `dx = dy · M / (1 - p)` with the stored mask (one bit per noise-shape entry). `shared = &[]`
/// draws as [`dropout`](crate::dropout) does. `p = 0` returns `x` itself; `p = 1` gives zeros
/// (NaN inputs stay NaN: the op multiplies by the mask) and zero gradients.
///
/// # Errors
/// `dropout_shared` when `p` is outside [0, 1] or NaN, or a shared dim is out of range for `x`
/// or listed twice.
///
/// ```
/// use tapegrad_autograd::{dropout_shared, Var};
/// use tapegrad_tensor::{Generator, Tensor, TensorNew};
/// let x = Var::new(Tensor::<f32>::ones(&[2, 5, 8])); // [B, T, D]
/// let y = dropout_shared(&x, 0.5, &[1], &mut Generator::new(1))?.value().to_vec();
/// // The same features are dropped at every step t.
/// for b in 0..2 {
///     let first = &y[b * 40..b * 40 + 8];
///     assert!((1..5).all(|t| &y[b * 40 + t * 8..b * 40 + t * 8 + 8] == first));
/// }
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn dropout_shared<T: Float>(x: &Var<T>, p: f64, shared: &[usize], gen: &mut Generator) -> Result<Var<T>> {
    const OP: &str = "dropout_shared";
    check_p(OP, p)?;
    let value = x.value();
    let noise_shape = shared_noise_shape(OP, value.shape(), shared)?;
    if p == 0.0 {
        return Ok(x.clone());
    }
    let n = noise_shape.iter().product::<usize>();
    let (seed, offset) = crate::checkpoint::reserve(gen, n as u64, p)?;
    let op = DropoutShared { record: DropoutRecord::regenerate(seed, offset, p, n)?, noise_shape };
    let y = value.mul(&op.multiplier()?)?;
    Ok(Var::from_op(y, &[x], || op))
}
