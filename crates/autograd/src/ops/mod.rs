//! The differentiable ops, one file per family: each op is a struct implementing
//! [`Backward`](crate::Backward) whose fields are exactly what it saves, next to the `Var`
//! method that records it.

pub mod conv;
pub mod drop_path;
pub mod dropout;
pub mod elementwise;
pub mod feature_dropout;
pub mod fused;
pub mod gaussian_dropout;
pub mod matmul;
pub mod movement;
pub mod norm;
pub mod operators;
pub mod reduce;
pub mod scatter;
pub mod shared_dropout;
pub mod unary;

use tapegrad_tensor::{Error, Float, Tensor, TensorNew};

use crate::var::{Grads, Var, VarGrads};

/// One gradient, for a one-input op.
pub(crate) fn one<T: Float>(g: Tensor<T>) -> Grads<T> {
    Grads::one(g)
}

/// Gradients for a two-input op, computing each only when `needs` asks for it.
pub(crate) fn two<T: Float>(
    needs: &[bool],
    dx: impl FnOnce() -> tapegrad_tensor::Result<Tensor<T>>,
    dy: impl FnOnce() -> tapegrad_tensor::Result<Tensor<T>>,
) -> crate::Result<Grads<T>> {
    let a = if needs[0] { Some(dx()?) } else { None };
    let b = if needs[1] { Some(dy()?) } else { None };
    Ok(Grads::from([a, b]))
}

/// The recorded gradients of a two-input op (for `backward_var`), each built only when `needs`
/// asks for it.
pub(crate) fn two_var<T: Float>(
    needs: &[bool],
    dx: impl FnOnce() -> crate::Result<Var<T>>,
    dy: impl FnOnce() -> crate::Result<Var<T>>,
) -> crate::Result<VarGrads<T>> {
    let a = if needs[0] { Some(dx()?) } else { None };
    let b = if needs[1] { Some(dy()?) } else { None };
    Ok(vec![a, b])
}

/// A tensor computed from saved values that backward treats as a constant (a mask, a
/// selection's weights): a leaf of the recorded gradient.
pub(crate) fn constant<T: Float>(t: Tensor<T>) -> Var<T> {
    Var::new(t)
}

/// The recorded backward of a one-input op whose backward multiplies `dy` elementwise by a
/// stored factor (the dropout family: a stored mask and scale, or noise): `dy` times that
/// factor, rebuilt as the op's backward of ones and held as a constant, so that every order of
/// derivative uses the forward's mask (never a fresh draw).
pub(crate) fn stored_factor_var<T: Float>(op: &dyn crate::var::Backward<T>, dy: &Var<T>) -> crate::Result<VarGrads<T>> {
    let ones = Tensor::<T>::ones(&dy.shape());
    let factor = op.backward(&ones, &[true])?.into_iter().next().flatten();
    let factor = factor.ok_or_else(|| Error::arg(op.name(), "backward returned no gradient for its input"))?;
    Ok(vec![Some(dy.mul(&constant(factor))?)])
}
