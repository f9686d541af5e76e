//! More unary maths on the tape: trigonometry and PyTorch's common activations beyond
//! `relu` / `gelu` / `tanh` / `sigmoid` (`sin`, `cos`, `silu`, `softplus`, `leaky_relu`,
//! `clamp`). Each forward is a [`Tensor`] method; each backward saves the input and is one
//! elementwise pass over the output's gradient.

use tapegrad_tensor::{Float, Result, Tensor};

use super::{constant, one};
use crate::var::{Backward, Grads, Var, VarGrads};

/// The one-input backward of this file: `dx = dy · f'(x)`, with `x` saved.
macro_rules! saved_input_backward {
    (
        $(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* }, $label:literal, |$g:ident, $x:ident, $s:ident| $f:expr,
        var: |$vg:ident, $vx:ident, $vs:ident| $vf:expr
    ) => {
        $(#[$doc])*
        struct $name<T: Float> {
            x: Tensor<T>,
            $($field: $ty,)*
        }
        impl<T: Float> Backward<T> for $name<T> {
            fn name(&self) -> &'static str {
                $label
            }
            fn backward(&self, dy: &Tensor<T>, _needs: &[bool]) -> Result<Grads<T>> {
                let $s = self;
                Ok(one(dy.zip_map(&self.x, |$g, $x| $f)?))
            }
            fn backward_owned(&self, mut dy: Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
                let $s = self;
                if dy.try_zip_map_in_place(&self.x, |$g, $x| $f) {
                    return Ok(one(dy));
                }
                self.backward(&dy, needs)
            }
            fn saved(&self) -> Vec<&Tensor<T>> {
                vec![&self.x]
            }
            fn backward_var(&self, $vg: &Var<T>, inputs: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
                let ($vx, $vs) = (&inputs[0], self);
                Ok(vec![Some($vf)])
            }
        }
    };
}

/// `f` evaluated in f64 for a `T`.
fn f64_of<T: Float>(x: T, f: impl Fn(f64) -> f64) -> T {
    T::from_f64(f(x.to_f64()))
}

/// `σ(x) = (1 + tanh(x / 2)) / 2`: the logistic function without an exponential that could
/// overflow.
fn sigmoid(x: f64) -> f64 {
    0.5 * (1.0 + (0.5 * x).tanh())
}

// ─── Sin ─────────────────────────  y = sin x:  dx = dy cos x
saved_input_backward!(Sin {}, "sin", |g, x, _s| g * f64_of(x, f64::cos), var: |dy, x, _s| dy.mul(&x.cos())?);

// ─── Cos ─────────────────────────  y = cos x:  dx = -dy sin x
saved_input_backward!(Cos {}, "cos", |g, x, _s| -(g * f64_of(x, f64::sin)), var: |dy, x, _s| dy.mul(&x.sin())?.neg());

// ─── Silu ────────────────────────  y = x σ(x):  dx = dy σ(x) (1 + x (1 - σ(x)))
saved_input_backward!(Silu {}, "silu", |g, x, _s| g * f64_of(x, |x| {
    let s = sigmoid(x);
    s * (1.0 + x * (1.0 - s))
}), var: |dy, x, _s| {
    // σ(x) (1 + x (1 - σ(x))) = σ(x) + x σ(x) (1 - σ(x)), from ops with their own backward.
    let s = x.sigmoid();
    let ds = s.mul(&s.neg().add_scalar(T::ONE))?;
    dy.mul(&s.add(&x.mul(&ds)?)?)?
});

// ─── Softplus ────────────────────  y = ln(1 + e^x):  dx = dy σ(x)
saved_input_backward!(Softplus {}, "softplus", |g, x, _s| g * f64_of(x, sigmoid), var: |dy, x, _s| dy.mul(&x.sigmoid())?);

// ─── LeakyRelu ───────────────────  y = x (x > 0), slope x otherwise:  dx = dy or slope dy
saved_input_backward!(LeakyRelu { slope: T }, "leaky_relu", |g, x, s| if x > T::ZERO { g } else { g * s.slope },
    // The factor (1 or slope) is piecewise constant: a constant of the gradient.
    var: |dy, _x, s| dy.mul(&constant(s.x.map(|x| if x > T::ZERO { T::ONE } else { s.slope })))?);

// ─── Clamp ───────────────────────  y = min(max(x, lo), hi):  dx = dy where lo <= x <= hi, else 0
// (PyTorch's rule: the bounds themselves pass the gradient).
saved_input_backward!(Clamp { min: T, max: T }, "clamp", |g, x, s| if x >= s.min && x <= s.max { g } else { T::ZERO },
    // The pass-through mask is piecewise constant: a constant of the gradient.
    var: |dy, _x, s| dy.mul(&constant(s.x.map(|x| if x >= s.min && x <= s.max { T::ONE } else { T::ZERO })))?);

// ─── Erf ─────────────────────────  y = erf x:  dx = dy 2/√π e^(-x²)
saved_input_backward!(Erf {}, "erf", |g, x, _s| g * f64_of(x, |x| std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp()),
    var: |dy, x, _s| dy.mul(&x.mul(x)?.neg().exp().mul_scalar(T::from_f64(std::f64::consts::FRAC_2_SQRT_PI)))?);

impl<T: Float> Var<T> {
    /// The error function `erf(self)`, elementwise (`torch.erf`). Backward: `dx = dy · 2/√π · e^(−x²)`. The exact `gelu`'s recorded backward
    /// is written with it.
    ///
    /// ```
    /// # use tapegrad_autograd::Var;
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::parameter(Tensor::<f64>::zeros(&[2]));
    /// assert_eq!(x.erf().value().to_vec(), vec![0.0, 0.0]);
    /// x.erf().sum_all().backward()?;
    /// assert!((x.grad().unwrap().to_vec()[0] - 2.0 / std::f64::consts::PI.sqrt()).abs() < 1e-15);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn erf(&self) -> Var<T> {
        let x = self.value();
        Var::from_op(x.map(|v| v.erf()), &[self], || Erf { x })
    }

    /// `sin(self)`, elementwise. Backward: `dx = dy · cos x`.
    ///
    /// ```
    /// # use tapegrad_autograd::Var;
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::parameter(Tensor::<f64>::zeros(&[2]));
    /// x.sin().sum_all().backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![1.0, 1.0]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn sin(&self) -> Var<T> {
        let x = self.value();
        Var::from_op(x.sin(), &[self], || Sin { x })
    }

    /// `cos(self)`, elementwise. Backward: `dx = −dy · sin x`.
    ///
    /// ```
    /// # use tapegrad_autograd::Var;
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::parameter(Tensor::<f64>::zeros(&[2]));
    /// assert_eq!(x.cos().value().to_vec(), vec![1.0, 1.0]);
    /// ```
    pub fn cos(&self) -> Var<T> {
        let x = self.value();
        Var::from_op(x.cos(), &[self], || Cos { x })
    }

    /// SiLU (swish), `x · σ(x)`. Backward: `dx = dy · σ(x)(1 + x(1 − σ(x)))`.
    ///
    /// ```
    /// # use tapegrad_autograd::Var;
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::parameter(Tensor::<f64>::zeros(&[1]));
    /// x.silu().sum_all().backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![0.5]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn silu(&self) -> Var<T> {
        let x = self.value();
        Var::from_op(x.silu(), &[self], || Silu { x })
    }

    /// Softplus, `ln(1 + eˣ)`, computed stably ([`Tensor::softplus`]). Backward: `dx = dy · σ(x)`.
    ///
    /// ```
    /// # use tapegrad_autograd::Var;
    /// # use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::parameter(Tensor::<f64>::zeros(&[1]));
    /// x.softplus().sum_all().backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![0.5]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn softplus(&self) -> Var<T> {
        let x = self.value();
        Var::from_op(x.softplus(), &[self], || Softplus { x })
    }

    /// Leaky ReLU: `x` where `x > 0`, `slope · x` elsewhere. Backward: `dx = dy` where `x > 0`,
    /// `slope · dy` elsewhere (at 0 too, as PyTorch).
    ///
    /// ```
    /// # use tapegrad_autograd::Var;
    /// # use tapegrad_tensor::Tensor;
    /// let x = Var::parameter(Tensor::from_vec(vec![-1.0f32, 2.0], &[2])?);
    /// x.leaky_relu(0.1).sum_all().backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![0.1, 1.0]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn leaky_relu(&self, slope: T) -> Var<T> {
        let x = self.value();
        Var::from_op(x.leaky_relu(slope), &[self], || LeakyRelu { x, slope })
    }

    /// Every element limited to `[min, max]` ([`Tensor::clamp`]). Backward: `dx = dy` where
    /// `min ≤ x ≤ max` (the bounds included, as PyTorch), 0 outside.
    ///
    /// ```
    /// # use tapegrad_autograd::Var;
    /// # use tapegrad_tensor::Tensor;
    /// let x = Var::parameter(Tensor::from_vec(vec![-2.0f32, 0.5, 3.0], &[3])?);
    /// x.clamp(-1.0, 1.0).sum_all().backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![0.0, 1.0, 0.0]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn clamp(&self, min: T, max: T) -> Var<T> {
        let x = self.value();
        Var::from_op(x.clamp(min, max), &[self], || Clamp { x, min, max })
    }
}
