//! Adam with L2 weight decay (`torch.optim.Adam`) and with decoupled weight decay
//! (`torch.optim.AdamW`).

use tapegrad_autograd::Var;
use tapegrad_tensor::ops::optim::{AdamDecay, AdamStep};
use tapegrad_tensor::{Error, Float, Result, Tensor};

use super::{check_range, gradients, shapes, update_whole, Optimizer};
use crate::checkpoint::{StateDict, Stateful};

/// The state both Adam variants share; `decoupled` chooses AdamW's weight decay.
struct AdamState<T: Float> {
    op: &'static str,
    params: Vec<Var<T>>,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    /// Each parameter's shape when the optimiser took it.
    shapes: Vec<Vec<usize>>,
    /// Per parameter: its step count and first and second moments, created at its first step.
    moments: Vec<Option<Moments<T>>>,
}

struct Moments<T> {
    /// Steps taken: a `u64`, which no training run can overflow.
    step: u64,
    m: Vec<T>,
    v: Vec<T>,
}

impl<T: Float> AdamState<T> {
    fn new(op: &'static str, params: Vec<Var<T>>, lr: f64, weight_decay: f64, decoupled: bool) -> AdamState<T> {
        let (shapes, moments) = (shapes(&params), params.iter().map(|_| None).collect());
        AdamState { op, params, lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, decoupled, shapes, moments }
    }

    fn validate(&self) -> Result<()> {
        check_range(self.op, "learning rate", self.lr, 0.0, f64::INFINITY, false)?;
        check_range(self.op, "beta1", self.beta1, 0.0, 1.0, false)?;
        check_range(self.op, "beta2", self.beta2, 0.0, 1.0, false)?;
        check_range(self.op, "eps", self.eps, 0.0, f64::INFINITY, false)?;
        check_range(self.op, "weight_decay", self.weight_decay, 0.0, f64::INFINITY, false)
    }

    fn step(&mut self) -> Result<()> {
        self.validate()?;
        let lr = T::from_f64(self.lr);
        let (b1, b2) = (T::from_f64(self.beta1), T::from_f64(self.beta2));
        let eps = T::from_f64(self.eps);
        let wd = T::from_f64(self.weight_decay);
        let (decay, decoupled) = (self.weight_decay != 0.0, self.decoupled);
        let grads = gradients(self.op, &self.params, &self.shapes)?;
        for (i, ((p, state), grad)) in self.params.iter().zip(&mut self.moments).zip(grads).enumerate() {
            let Some(g) = grad else { continue };
            let n = g.numel();
            let s = state.get_or_insert_with(|| Moments { step: 0, m: vec![T::ZERO; n], v: vec![T::ZERO; n] });
            s.step = s.step.saturating_add(1);
            let bias1 = T::ONE - T::from_f64(power(self.beta1, s.step));
            let bias2_sqrt = (T::ONE - T::from_f64(power(self.beta2, s.step))).sqrt();
            let step = AdamStep {
                // m ← m + (1 − β1)(g − m): PyTorch's lerp, the same as β1 m + (1 − β1) g.
                one_minus_b1: T::ONE - b1,
                b2,
                one_minus_b2: T::ONE - b2,
                bias2_sqrt,
                eps,
                step_size: lr / bias1,
                decay: match (decay, decoupled) {
                    (true, true) => AdamDecay::Decoupled(T::ONE - lr * wd),
                    (true, false) => AdamDecay::L2(wd),
                    (false, _) => AdamDecay::None,
                },
            };
            // One fused pass of the tensor crate (`ops::optim::AdamStep`), vectorised and split
            // into pieces on the pool.
            update_whole(self.op, i, p, &mut s.m, &mut s.v, &g, |x, m, v, g| step.apply(x, m, v, g))?;
        }
        Ok(())
    }

    fn zero_grad(&mut self) {
        self.params.iter().for_each(Var::zero_grad);
    }
}

impl<T: Float> AdamState<T> {
    /// See [`Stateful`] on [`Adam`].
    fn state_dict(&self) -> StateDict<T> {
        let mut s = StateDict::of_kind(self.op);
        s.set("lr", self.lr);
        s.set("beta1", self.beta1);
        s.set("beta2", self.beta2);
        s.set("eps", self.eps);
        s.set("weight_decay", self.weight_decay);
        s.set("params", self.params.len());
        for (i, (state, shape)) in self.moments.iter().zip(&self.shapes).enumerate() {
            let Some(Moments { step, m, v }) = state else { continue };
            s.set(&format!("step.{i}"), step);
            if let (Ok(m), Ok(v)) = (Tensor::from_vec(m.clone(), shape), Tensor::from_vec(v.clone(), shape)) {
                s.tensors.insert(format!("exp_avg.{i}"), m);
                s.tensors.insert(format!("exp_avg_sq.{i}"), v);
            }
        }
        s
    }

    /// See [`Stateful`] on [`Adam`]; `op` names the type in errors.
    fn load_state_dict(&mut self, op: &'static str, state: &StateDict<T>) -> Result<()> {
        state.expect_kind(op, self.op)?;
        let n = self.params.len();
        let params: usize = state.get(op, "params")?;
        if params != n {
            return Err(Error::arg(
                op,
                format!("the state is of an {} over {params} parameters, this one has {n}", self.op),
            ));
        }
        const VALUES: [&str; 7] = ["kind", "lr", "beta1", "beta2", "eps", "weight_decay", "params"];
        state.refuse_unknown(op, |k, tensor| {
            if tensor {
                ["exp_avg", "exp_avg_sq"].iter().any(|p| StateDict::<T>::index_of(k, p, n).is_some())
            } else {
                VALUES.contains(&k) || StateDict::<T>::index_of(k, "step", n).is_some()
            }
        })?;
        let mut moments = Vec::with_capacity(n);
        for (i, shape) in self.shapes.iter().enumerate() {
            let key = format!("step.{i}");
            let m = state.tensor_of_shape(op, &format!("exp_avg.{i}"), shape)?;
            let v = state.tensor_of_shape(op, &format!("exp_avg_sq.{i}"), shape)?;
            moments.push(match (state.values.contains_key(&key), m, v) {
                (false, None, None) => None,
                (true, Some(m), Some(v)) => Some(Moments { step: state.get(op, &key)?, m, v }),
                _ => {
                    let reason = format!(
                        "parameter {i}: the state must hold all or none of {key}, exp_avg.{i} and exp_avg_sq.{i}"
                    );
                    return Err(Error::arg(op, reason));
                }
            });
        }
        let (lr, beta1, beta2) = (state.get(op, "lr")?, state.get(op, "beta1")?, state.get(op, "beta2")?);
        let (eps, weight_decay) = (state.get(op, "eps")?, state.get(op, "weight_decay")?);
        (self.lr, self.beta1, self.beta2, self.eps, self.weight_decay) = (lr, beta1, beta2, eps, weight_decay);
        self.moments = moments;
        Ok(())
    }
}

/// `beta^t` for the bias corrections: `powi`, as always, while `t` fits in an `i32` (so results
/// stay bit for bit what they were), `powf` past that, where `powi` would need a wrapped exponent.
fn power(beta: f64, t: u64) -> f64 {
    match i32::try_from(t) {
        Ok(t) => beta.powi(t),
        Err(_) => beta.powf(t as f64),
    }
}

macro_rules! adam_builders {
    ($ty:ident) => {
        impl<T: Float> $ty<T> {
            /// Sets the moment decay rates (β1, β2), each in [0, 1).
            pub fn betas(mut self, beta1: f64, beta2: f64) -> $ty<T> {
                self.0.beta1 = beta1;
                self.0.beta2 = beta2;
                self
            }

            /// Sets ε ≥ 0, added to the denominator for numerical stability.
            pub fn eps(mut self, eps: f64) -> $ty<T> {
                self.0.eps = eps;
                self
            }

            /// Sets the weight decay λ ≥ 0 (see the type's formula for how it applies).
            pub fn weight_decay(mut self, weight_decay: f64) -> $ty<T> {
                self.0.weight_decay = weight_decay;
                self
            }

            /// The parameters this optimiser updates.
            pub fn params(&self) -> &[Var<T>] {
                &self.0.params
            }

            /// Checks the hyperparameters (what [`Optimizer::step`] does first).
            ///
            /// # Errors
            /// An invalid-argument error naming the optimiser and the value.
            pub fn validate(&self) -> Result<()> {
                self.0.validate()
            }
        }

        /// The state: the hyperparameters, the number of parameters (`"params"`) and, for each
        /// parameter that has taken a step, its step count (`"step.i"`) and moments
        /// (`"exp_avg.i"`, `"exp_avg_sq.i"`, with the parameter's shape), PyTorch's names.
        /// Loading it restores the hyperparameters too, as PyTorch does.
        impl<T: Float> Stateful<T> for $ty<T> {
            fn state_dict(&self) -> StateDict<T> {
                self.0.state_dict()
            }

            fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
                self.0.load_state_dict(concat!(stringify!($ty), "::load_state_dict"), state)
            }
        }

        impl<T: Float> Optimizer for $ty<T> {
            fn step(&mut self) -> Result<()> {
                self.0.step()
            }

            fn zero_grad(&mut self) {
                self.0.zero_grad()
            }

            fn lr(&self) -> f64 {
                self.0.lr
            }

            fn set_lr(&mut self, lr: f64) {
                self.0.lr = lr;
            }
        }
    };
}

/// Adam, `torch.optim.Adam` (without amsgrad), with L2 weight decay added to the gradient.
///
/// For each parameter `p` with gradient `g`, at its step `t` (η = learning rate):
///
/// ```text
/// g ← g + λ p                                   (when λ ≠ 0)
/// m ← β1 m + (1 − β1) g
/// v ← β2 v + (1 − β2) g²
/// p ← p − η / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
/// ```
///
/// Defaults: β = (0.9, 0.999), ε = 1e-8, λ = 0. [`Optimizer::step`] checks `lr ≥ 0`,
/// β ∈ [0, 1), ε ≥ 0, λ ≥ 0.
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::optim::{Adam, Optimizer};
/// use tapegrad_tensor::Tensor;
/// let w = Var::parameter(Tensor::<f64>::from_vec(vec![1.0, -2.0], &[2])?);
/// let mut opt = Adam::new(vec![w.clone()], 0.1).betas(0.9, 0.99);
/// w.mul(&w)?.sum_all().backward()?;
/// opt.step()?; // the first Adam step moves each weight by about lr against its gradient's sign
/// let x = w.value().to_vec();
/// assert!((x[0] - 0.9).abs() < 1e-6 && (x[1] + 1.9).abs() < 1e-6);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub struct Adam<T: Float = f32>(AdamState<T>);

impl<T: Float> Adam<T> {
    /// Adam over `params` with learning rate `lr` and the defaults above. Each parameter's shape
    /// is recorded now and must not change (see the [module docs](super)).
    pub fn new(params: Vec<Var<T>>, lr: f64) -> Adam<T> {
        Adam(AdamState::new("Adam", params, lr, 0.0, false))
    }
}

adam_builders!(Adam);

/// AdamW, `torch.optim.AdamW`: Adam with decoupled weight decay, which shrinks the parameter
/// instead of adding to its gradient.
///
/// ```text
/// p ← p (1 − η λ)
/// m ← β1 m + (1 − β1) g
/// v ← β2 v + (1 − β2) g²
/// p ← p − η / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
/// ```
///
/// Defaults: β = (0.9, 0.999), ε = 1e-8, λ = 0.01 (PyTorch's default).
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::optim::{AdamW, Optimizer};
/// use tapegrad_tensor::Tensor;
/// let w = Var::parameter(Tensor::<f64>::from_vec(vec![1.0, -2.0], &[2])?);
/// let mut opt = AdamW::new(vec![w.clone()], 0.1).weight_decay(0.5);
/// w.mul(&w)?.sum_all().backward()?;
/// opt.step()?; // p (1 - 0.05), then about 0.1 against the gradient's sign
/// let x = w.value().to_vec();
/// assert!((x[0] - 0.85).abs() < 1e-6 && (x[1] + 1.8).abs() < 1e-6);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub struct AdamW<T: Float = f32>(AdamState<T>);

impl<T: Float> AdamW<T> {
    /// AdamW over `params` with learning rate `lr` and the defaults above. Each parameter's shape
    /// is recorded now and must not change (see the [module docs](super)).
    pub fn new(params: Vec<Var<T>>, lr: f64) -> AdamW<T> {
        AdamW(AdamState::new("AdamW", params, lr, 0.01, true))
    }
}

adam_builders!(AdamW);

#[cfg(test)]
mod tests {
    use super::*;
    use tapegrad_tensor::Tensor;

    #[test]
    fn bias_powers_are_right_past_the_i32_range() {
        for t in [1u64, 2, 7, 1000, 1 << 20, i32::MAX as u64] {
            assert_eq!(power(0.9, t).to_bits(), 0.9f64.powi(t as i32).to_bits(), "t = {t}");
        }
        // (1 − 1e-9)^(3e9) = e^−3 (to about 1e-9): a wrapped i32 exponent gives a huge number.
        let t = 3_000_000_000u64;
        let beta: f64 = 1.0 - 1e-9;
        let want = (t as f64 * (beta - 1.0).ln_1p()).exp();
        assert!((power(beta, t) - want).abs() < 1e-12 && (want - (-3.0f64).exp()).abs() < 1e-6, "{}", power(beta, t));
        assert_eq!(power(0.999, u64::MAX), 0.0);
        assert_eq!(power(0.0, u64::MAX), 0.0);
    }

    #[test]
    fn a_step_past_two_billion_steps_uses_the_converged_bias_corrections() {
        let w = Var::parameter(Tensor::<f64>::from_vec(vec![1.0, -1.0], &[2]).unwrap());
        let mut opt = Adam::new(vec![w.clone()], 0.01);
        for start in [i32::MAX as u64, u64::MAX - 1, u64::MAX] {
            w.set_value(Tensor::from_vec(vec![1.0, -1.0], &[2]).unwrap());
            opt.0.moments[0] = Some(Moments { step: start, m: vec![0.0; 2], v: vec![0.0; 2] });
            w.set_grad(Some(Tensor::from_vec(vec![1.0, -1.0], &[2]).unwrap()));
            opt.step().unwrap();
            // β1^t and β2^t are 0 here: m = 0.1 g, v = 0.001 g², x −= lr m / (√v + ε).
            let delta = 0.01 * 0.1 / (0.001f64.sqrt() + 1e-8);
            let x = w.value().to_vec();
            assert!((x[0] - (1.0 - delta)).abs() < 1e-12 && (x[1] + 1.0 - delta).abs() < 1e-12, "{start}: {x:?}");
            let step = opt.0.moments[0].as_ref().map(|s| s.step);
            assert_eq!(step, Some(start.saturating_add(1)));
        }
    }
}
