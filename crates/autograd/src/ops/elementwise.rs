//! Elementwise ops: broadcasting binary ops (their gradients are summed back to each input's
//! shape with `sum_to`), scalar ops and unary maths.

use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Dims, Float, Result, Tensor};

use super::{constant, one, two, two_var};
use crate::var::{Backward, Grads, Var, VarGrads};

// ─── Add ─────────────────────────  z = x + y
struct Add {
    x_shape: Dims,
    y_shape: Dims,
}
impl<T: Float> Backward<T> for Add {
    fn name(&self) -> &'static str {
        "add"
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        two(needs, || dz.sum_to(&self.x_shape), || dz.sum_to(&self.y_shape))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        two_var(needs, || dz.sum_to(&self.x_shape), || dz.sum_to(&self.y_shape))
    }
}

// ─── Sub ─────────────────────────  z = x - y
struct Sub {
    x_shape: Dims,
    y_shape: Dims,
}
impl<T: Float> Backward<T> for Sub {
    fn name(&self) -> &'static str {
        "sub"
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        two(needs, || dz.sum_to(&self.x_shape), || Ok(dz.sum_to(&self.y_shape)?.neg()))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        two_var(needs, || dz.sum_to(&self.x_shape), || Ok(dz.sum_to(&self.y_shape)?.neg()))
    }
}

// ─── Mul ─────────────────────────  z = x * y
struct Mul<T: Float> {
    x: Tensor<T>,
    y: Tensor<T>,
}
impl<T: Float> Backward<T> for Mul<T> {
    fn name(&self) -> &'static str {
        "mul"
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        two(needs, || dz.mul(&self.y)?.sum_to(self.x.shape()), || dz.mul(&self.x)?.sum_to(self.y.shape()))
    }
    fn backward_var(&self, dz: &Var<T>, xy: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        let (x, y) = (&xy[0], &xy[1]);
        two_var(needs, || dz.mul(y)?.sum_to(self.x.shape()), || dz.mul(x)?.sum_to(self.y.shape()))
    }
    fn backward_owned(&self, mut dz: Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        // One input wants a gradient (a product with a constant): dz times the other, in place,
        // when that input has dz's shape (a broadcast input needs the `sum_to` of `backward`).
        let (x_full, y_full) = (self.x.shape() == dz.shape(), self.y.shape() == dz.shape());
        match needs {
            [true, false] if x_full && dz.try_zip_map_in_place(&self.y, |g, y| g * y) => {
                Ok(Grads::from([Some(dz), None]))
            }
            [false, true] if y_full && dz.try_zip_map_in_place(&self.x, |g, x| g * x) => {
                Ok(Grads::from([None, Some(dz)]))
            }
            _ => self.backward(&dz, needs),
        }
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.x, &self.y]
    }
}

// ─── Div ─────────────────────────  z = x / y;  dx = dz / y,  dy = -dz * z / y
struct Div<T: Float> {
    y: Tensor<T>,
    z: Tensor<T>,
    x_shape: Dims,
}
impl<T: Float> Backward<T> for Div<T> {
    fn name(&self) -> &'static str {
        "div"
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        two(
            needs,
            || dz.div(&self.y)?.sum_to(&self.x_shape),
            || dz.mul(&self.z)?.div(&self.y)?.neg().sum_to(self.y.shape()),
        )
    }
    fn backward_var(&self, dz: &Var<T>, xy: &[Var<T>], z: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        let y = &xy[1];
        two_var(needs, || dz.div(y)?.sum_to(&self.x_shape), || dz.mul(z)?.div(y)?.neg().sum_to(self.y.shape()))
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.y, &self.z]
    }
}

// ─── Maximum / Minimum ───────────  the gradient goes to the selected input; ties split it in
// half, as PyTorch does.
struct Select<T: Float> {
    name: &'static str,
    x: Tensor<T>,
    y: Tensor<T>,
    /// +1 for maximum, -1 for minimum.
    sign: T,
}
impl<T: Float> Backward<T> for Select<T> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        let w = self.weights()?;
        two(needs, || dz.mul(&w)?.sum_to(self.x.shape()), || dz.mul(&w.map(|v| T::ONE - v))?.sum_to(self.y.shape()))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        // The selection is piecewise constant: its weights are constants of the gradient.
        let w = self.weights()?;
        let wy = constant(w.map(|v| T::ONE - v));
        let wx = constant(w);
        two_var(needs, || dz.mul(&wx)?.sum_to(self.x.shape()), || dz.mul(&wy)?.sum_to(self.y.shape()))
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.x, &self.y]
    }
}
impl<T: Float> Select<T> {
    /// The weight of x in the output: 1 where x wins, 0.5 on ties, 0 where y wins.
    fn weights(&self) -> Result<Tensor<T>> {
        let half = T::from_f64(0.5);
        self.x.zip_map(&self.y, |a, b| {
            let d = (a - b) * self.sign;
            if d > T::ZERO {
                T::ONE
            } else if d == T::ZERO {
                half
            } else {
                T::ZERO
            }
        })
    }
}

// ─── unary ops ───────────────────  each saves the input or, where the derivative is cheaper
// from it, the output.
// `var: |dz, x, y| ...` is the same rule on recorded `Var`s (input `x`, output `y`), for
// `create_graph`.
macro_rules! unary_backward {
    ($(#[$doc:meta])* $name:ident, $label:literal, |$g:ident, $v:ident| $f:expr,
     var: |$dz:ident, $x:ident, $y:ident| $fv:expr) => {
        $(#[$doc])*
        struct $name<T: Float> {
            saved: Tensor<T>,
        }
        impl<T: Float> Backward<T> for $name<T> {
            fn name(&self) -> &'static str {
                $label
            }
            fn backward(&self, dz: &Tensor<T>, _needs: &[bool]) -> Result<Grads<T>> {
                Ok(one(dz.zip_map(&self.saved, |$g, $v| $f)?))
            }
            fn backward_owned(&self, mut dz: Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
                if dz.try_zip_map_in_place(&self.saved, |$g, $v| $f) {
                    return Ok(one(dz));
                }
                self.backward(&dz, needs)
            }
            fn saved(&self) -> Vec<&Tensor<T>> {
                vec![&self.saved]
            }
            #[allow(unused_variables)]
            fn backward_var(&self, $dz: &Var<T>, inputs: &[Var<T>], $y: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
                let ($x, saved) = (&inputs[0], &self.saved);
                let dx: Result<Var<T>> = $fv(saved);
                Ok(vec![Some(dx?)])
            }
        }
    };
}

unary_backward!(
    /// y = e^x (saves y): dx = dy * y
    Exp, "exp", |g, y| g * y, var: |dz, x, y| |_| dz.mul(y));
unary_backward!(
    /// y = ln x (saves x): dx = dy / x
    Log, "log", |g, x| g / x, var: |dz, x, y| |_| dz.div(x));
unary_backward!(
    /// y = sqrt x (saves y): dx = dy / (2 y)
    Sqrt, "sqrt", |g, y| g / (y + y), var: |dz, x, y| |_| dz.div(&y.mul_scalar(T::from_f64(2.0))));
unary_backward!(
    /// y = tanh x (saves y): dx = dy (1 - y^2)
    Tanh, "tanh", |g, y| g * (T::ONE - y * y),
    var: |dz, x, y| |_| dz.mul(&y.mul(y)?.neg().add_scalar(T::ONE)));
unary_backward!(
    /// y = 1 / (1 + e^-x) (saves y): dx = dy y (1 - y)
    Sigmoid, "sigmoid", |g, y| g * y * (T::ONE - y),
    var: |dz, x, y| |_| dz.mul(&y.mul(&y.neg().add_scalar(T::ONE))?));

// ─── Relu ────────────────────────  y = max(x, 0) (saves y): dx = 0 where y <= 0, else dy
//   (a NaN y passes dy, as PyTorch's threshold_backward)
struct Relu<T: Float> {
    saved: Tensor<T>,
}
impl<T: Float> Backward<T> for Relu<T> {
    fn name(&self) -> &'static str {
        "relu"
    }
    fn backward(&self, dz: &Tensor<T>, _needs: &[bool]) -> Result<Grads<T>> {
        Ok(one(self.saved.relu_backward(dz)?))
    }
    fn backward_owned(&self, mut dz: Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        // A small gradient the tape holds alone is masked in place (the same values as the SIMD
        // pass of `relu_backward`: `dz` or 0); anything else takes that pass.
        if dz.try_zip_map_in_place(&self.saved, |g, y| if y <= T::ZERO { T::ZERO } else { g }) {
            return Ok(one(dz));
        }
        self.backward(&dz, needs)
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.saved]
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        // The mask y > 0 is piecewise constant (relu'' = 0 away from 0, as PyTorch).
        let mask = self.saved.map(|y| if y <= T::ZERO { T::ZERO } else { T::ONE });
        Ok(vec![Some(dz.mul(&constant(mask))?)])
    }
}
unary_backward!(
    /// y = |x| (saves x): dx = dy sign(x), 0 at 0
    Abs, "abs", |g, x| if x > T::ZERO { g } else if x < T::ZERO { -g } else { T::ZERO },
    // sign(x) is piecewise constant.
    var: |dz, x, y| |x: &Tensor<T>| dz.mul(&constant(x.map(|v| abs_sign(v)))));
unary_backward!(
    /// y = x Φ(x) (saves x): dx = dy (Φ(x) + x φ(x))
    Gelu, "gelu", |g, x| g * gelu_grad(x),
    var: |dz, x, y| |_| dz.mul(&gelu_grad_var(x)?));
unary_backward!(
    /// y = x/2 (1 + tanh(√(2/π)(x + 0.044715 x³))) (saves x)
    GeluTanh, "gelu_tanh", |g, x| g * gelu_tanh_grad(x),
    var: |dz, x, y| |_| dz.mul(&gelu_tanh_grad_var(x)?));

/// sign(x), 0 at 0 (and for NaN).
fn abs_sign<T: Float>(x: T) -> T {
    if x > T::ZERO {
        T::ONE
    } else if x < T::ZERO {
        -T::ONE
    } else {
        T::ZERO
    }
}

/// `gelu_grad`, `Φ(x) + x φ(x)`, written with recorded ops (`Φ(x) = (1 + erf(x / √2)) / 2`,
/// `φ(x) = e^(-x²/2) / √(2π)`), so that it can be differentiated again.
fn gelu_grad_var<T: Float>(x: &Var<T>) -> Result<Var<T>> {
    let cdf = x
        .mul_scalar(T::from_f64(std::f64::consts::FRAC_1_SQRT_2))
        .erf()
        .add_scalar(T::ONE)
        .mul_scalar(T::from_f64(0.5));
    let inv_sqrt_2pi = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
    let pdf = x.mul(x)?.mul_scalar(T::from_f64(-0.5)).exp().mul_scalar(T::from_f64(inv_sqrt_2pi));
    cdf.add(&x.mul(&pdf)?)
}

/// `gelu_tanh_grad` written with recorded ops, so that it can be differentiated again.
fn gelu_tanh_grad_var<T: Float>(x: &Var<T>) -> Result<Var<T>> {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let c = 0.044715;
    let x2 = x.mul(x)?;
    let t = x.add(&x2.mul(x)?.mul_scalar(T::from_f64(c)))?.mul_scalar(T::from_f64(k)).tanh();
    let dinner = x2.mul_scalar(T::from_f64(3.0 * c)).add_scalar(T::ONE).mul_scalar(T::from_f64(k));
    let left = t.add_scalar(T::ONE);
    let right = x.mul(&t.mul(&t)?.neg().add_scalar(T::ONE))?.mul(&dinner)?;
    Ok(left.add(&right)?.mul_scalar(T::from_f64(0.5)))
}

fn gelu_grad<T: Float>(x: T) -> T {
    let x = x.to_f64();
    let cdf = 0.5 * (1.0 + libm_erf(x / std::f64::consts::SQRT_2));
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    T::from_f64(cdf + x * pdf)
}

fn libm_erf(x: f64) -> f64 {
    <f64 as Float>::erf(x)
}

fn gelu_tanh_grad<T: Float>(x: T) -> T {
    let x = x.to_f64();
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let inner = k * (x + 0.044715 * x * x * x);
    let t = inner.tanh();
    let dinner = k * (1.0 + 3.0 * 0.044715 * x * x);
    T::from_f64(0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner)
}

// ─── Neg ─────────────────────────  y = -x
struct Neg;
impl<T: Float> Backward<T> for Neg {
    fn name(&self) -> &'static str {
        "neg"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(dz.neg()))
    }
    fn backward_owned(&self, mut dz: Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        if dz.try_map_in_place(|g| -g) {
            return Ok(one(dz));
        }
        self.backward(&dz, needs)
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        Ok(vec![Some(dz.neg())])
    }
}

// ─── AddScalar ───────────────────  y = x + c
struct AddScalar;
impl<T: Float> Backward<T> for AddScalar {
    fn name(&self) -> &'static str {
        "add_scalar"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(dz.clone()))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        Ok(vec![Some(dz.clone())])
    }
}

// ─── MulScalar ───────────────────  y = c x
struct MulScalar<T: Float> {
    c: T,
}
impl<T: Float> Backward<T> for MulScalar<T> {
    fn name(&self) -> &'static str {
        "mul_scalar"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(dz.mul_scalar(self.c)))
    }
    fn backward_owned(&self, mut dz: Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        if dz.try_map_in_place(|g| g * self.c) {
            return Ok(one(dz));
        }
        self.backward(&dz, needs)
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        Ok(vec![Some(dz.mul_scalar(self.c))])
    }
}

// ─── Powf ────────────────────────  y = x^e (saves x): dx = dy e x^(e-1), and 0 for e = 0
// (x^0 is constant; the formula would give 0 * 0^-1 = NaN at x = 0, where PyTorch gives 0).
struct Powf<T: Float> {
    x: Tensor<T>,
    e: T,
}
impl<T: Float> Backward<T> for Powf<T> {
    fn name(&self) -> &'static str {
        "powf"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        let e = self.e;
        if e == T::ZERO {
            return Ok(one(Tensor::<T>::zeros(self.x.shape())));
        }
        Ok(one(dz.zip_map(&self.x, |g, x| g * e * x.powf(e - T::ONE))?))
    }
    fn backward_var(&self, dz: &Var<T>, x: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        if self.e == T::ZERO {
            return Ok(vec![Some(constant(Tensor::<T>::zeros(self.x.shape())))]);
        }
        Ok(vec![Some(dz.mul(&x[0].powf(self.e - T::ONE).mul_scalar(self.e))?)])
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.x]
    }
}

/// A value's shape, kept by ops whose backward needs only the shape.
fn dims<T: Float>(t: &Tensor<T>) -> Dims {
    Dims::from_slice(t.shape())
}

impl<T: Float> Var<T> {
    /// `self + rhs`, broadcasting. Backward: each input gets `dz` summed to its shape.
    ///
    /// # Errors
    /// `add` names both shapes when they do not broadcast.
    pub fn add(&self, rhs: &Var<T>) -> Result<Var<T>> {
        let y = rhs.value();
        let (z, x_shape) = self.with_value(|x| Ok::<_, crate::Error>((x.add(&y)?, dims(x))))?;
        Ok(Var::from_op(z, &[self, rhs], || Add { x_shape, y_shape: dims(&y) }))
    }

    /// `self - rhs`, broadcasting.
    ///
    /// # Errors
    /// `sub` names both shapes when they do not broadcast.
    pub fn sub(&self, rhs: &Var<T>) -> Result<Var<T>> {
        let y = rhs.value();
        let (z, x_shape) = self.with_value(|x| Ok::<_, crate::Error>((x.sub(&y)?, dims(x))))?;
        Ok(Var::from_op(z, &[self, rhs], || Sub { x_shape, y_shape: dims(&y) }))
    }

    /// `self * rhs` elementwise, broadcasting.
    ///
    /// # Errors
    /// `mul` names both shapes when they do not broadcast.
    pub fn mul(&self, rhs: &Var<T>) -> Result<Var<T>> {
        let (x, y) = (self.value(), rhs.value());
        let z = x.mul(&y)?;
        Ok(Var::from_op(z, &[self, rhs], || Mul { x, y }))
    }

    /// `self / rhs` elementwise, broadcasting.
    ///
    /// # Errors
    /// `div` names both shapes when they do not broadcast.
    pub fn div(&self, rhs: &Var<T>) -> Result<Var<T>> {
        let (x, y) = (self.value(), rhs.value());
        let z = x.div(&y)?;
        let saved = z.clone();
        Ok(Var::from_op(z, &[self, rhs], || Div { y, z: saved, x_shape: dims(&x) }))
    }

    /// The elementwise maximum, broadcasting (NaN propagates).
    ///
    /// # Errors
    /// `maximum` names both shapes when they do not broadcast.
    pub fn maximum(&self, rhs: &Var<T>) -> Result<Var<T>> {
        let (x, y) = (self.value(), rhs.value());
        let z = x.maximum(&y)?;
        Ok(Var::from_op(z, &[self, rhs], || Select { name: "maximum", x, y, sign: T::ONE }))
    }

    /// The elementwise minimum, broadcasting (NaN propagates).
    ///
    /// # Errors
    /// `minimum` names both shapes when they do not broadcast.
    pub fn minimum(&self, rhs: &Var<T>) -> Result<Var<T>> {
        let (x, y) = (self.value(), rhs.value());
        let z = x.minimum(&y)?;
        Ok(Var::from_op(z, &[self, rhs], || Select { name: "minimum", x, y, sign: -T::ONE }))
    }

    /// `self + c`.
    pub fn add_scalar(&self, c: T) -> Var<T> {
        Var::from_op(self.with_value(|x| x.add_scalar(c)), &[self], || AddScalar)
    }

    /// `c * self`.
    pub fn mul_scalar(&self, c: T) -> Var<T> {
        Var::from_op(self.with_value(|x| x.mul_scalar(c)), &[self], || MulScalar { c })
    }

    /// `self ^ e` elementwise.
    pub fn powf(&self, e: T) -> Var<T> {
        let x = self.value();
        Var::from_op(x.powf(e), &[self], || Powf { x, e })
    }

    /// `-self`.
    pub fn neg(&self) -> Var<T> {
        Var::from_op(self.with_value(Tensor::neg), &[self], || Neg)
    }

    /// `e^self`.
    pub fn exp(&self) -> Var<T> {
        let y = self.with_value(Tensor::exp);
        let saved = y.clone();
        Var::from_op(y, &[self], || Exp { saved })
    }

    /// The natural logarithm.
    pub fn log(&self) -> Var<T> {
        let x = self.value();
        Var::from_op(x.log(), &[self], || Log { saved: x })
    }

    /// The square root.
    pub fn sqrt(&self) -> Var<T> {
        let y = self.with_value(Tensor::sqrt);
        let saved = y.clone();
        Var::from_op(y, &[self], || Sqrt { saved })
    }

    /// The hyperbolic tangent.
    pub fn tanh(&self) -> Var<T> {
        let y = self.with_value(Tensor::tanh);
        let saved = y.clone();
        Var::from_op(y, &[self], || Tanh { saved })
    }

    /// The logistic sigmoid.
    pub fn sigmoid(&self) -> Var<T> {
        let y = self.with_value(Tensor::sigmoid);
        let saved = y.clone();
        Var::from_op(y, &[self], || Sigmoid { saved })
    }

    /// `max(self, 0)`.
    pub fn relu(&self) -> Var<T> {
        let y = self.with_value(Tensor::relu);
        let saved = y.clone();
        Var::from_op(y, &[self], || Relu { saved })
    }

    /// `|self|`.
    pub fn abs(&self) -> Var<T> {
        let x = self.value();
        Var::from_op(x.abs(), &[self], || Abs { saved: x })
    }

    /// GELU with the exact normal CDF: `x Φ(x)`.
    pub fn gelu(&self) -> Var<T> {
        let x = self.value();
        Var::from_op(x.gelu(), &[self], || Gelu { saved: x })
    }

    /// GELU with PyTorch's tanh approximation.
    pub fn gelu_tanh(&self) -> Var<T> {
        let x = self.value();
        Var::from_op(x.gelu_tanh(), &[self], || GeluTanh { saved: x })
    }
}
