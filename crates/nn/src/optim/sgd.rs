//! Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay, as
//! `torch.optim.SGD`.

use tapegrad_autograd::Var;
use tapegrad_tensor::ops::optim::{SgdMomentum, SgdStep};
use tapegrad_tensor::{Error, Float, Result, Tensor};

use super::{check_range, gradients, shapes, update_whole, Optimizer};
use crate::checkpoint::{StateDict, Stateful};

/// Stochastic gradient descent, `torch.optim.SGD`.
///
/// For each parameter `p` with gradient `g`, at step `t` (μ = momentum, τ = dampening,
/// λ = weight decay, η = learning rate):
///
/// ```text
/// g ← g + λ p                          (when λ ≠ 0)
/// b ← g                                (t = 1)
/// b ← μ b + (1 − τ) g                  (t > 1)        (when μ ≠ 0)
/// g ← g + μ b  (Nesterov)  or  g ← b   (otherwise)   (when μ ≠ 0)
/// p ← p − η g
/// ```
///
/// Defaults: no momentum, no dampening, no weight decay, no Nesterov. The builders never fail;
/// [`Optimizer::step`] checks `lr ≥ 0`, `momentum ∈ [0, 1)`, `dampening ∈ [0, 1]`,
/// `weight_decay ≥ 0`, and that Nesterov has momentum and no dampening.
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::optim::{Optimizer, Sgd};
/// use tapegrad_tensor::Tensor;
/// let w = Var::parameter(Tensor::<f64>::from_vec(vec![1.0, -2.0], &[2])?);
/// let mut opt = Sgd::new(vec![w.clone()], 0.5).momentum(0.5).nesterov(true);
/// w.sum_all().backward()?; // g = 1
/// opt.step()?; // b = 1, g + 0.5 b = 1.5, step 0.5 * 1.5
/// assert_eq!(w.value().to_vec(), vec![0.25, -2.75]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub struct Sgd<T: Float = f32> {
    params: Vec<Var<T>>,
    lr: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    weight_decay: f64,
    /// Each parameter's shape when the optimiser took it.
    shapes: Vec<Vec<usize>>,
    /// The momentum buffer per parameter, created at its first step.
    buffers: Vec<Option<Vec<T>>>,
}

impl<T: Float> Sgd<T> {
    /// Plain SGD over `params` with learning rate `lr`. Each parameter's shape is recorded now
    /// and must not change (see the [module docs](super)).
    pub fn new(params: Vec<Var<T>>, lr: f64) -> Sgd<T> {
        let (shapes, buffers) = (shapes(&params), vec![None; params.len()]);
        Sgd { params, lr, momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0, shapes, buffers }
    }

    /// Sets the momentum factor μ, in [0, 1).
    pub fn momentum(mut self, momentum: f64) -> Sgd<T> {
        self.momentum = momentum;
        self
    }

    /// Sets the dampening τ, in [0, 1]: the momentum buffer adds `(1 − τ) g`.
    pub fn dampening(mut self, dampening: f64) -> Sgd<T> {
        self.dampening = dampening;
        self
    }

    /// Switches Nesterov momentum on or off (needs momentum > 0 and dampening 0).
    pub fn nesterov(mut self, nesterov: bool) -> Sgd<T> {
        self.nesterov = nesterov;
        self
    }

    /// Sets the L2 weight decay λ ≥ 0, added to the gradient as `λ p`.
    pub fn weight_decay(mut self, weight_decay: f64) -> Sgd<T> {
        self.weight_decay = weight_decay;
        self
    }

    /// The parameters this optimiser updates.
    pub fn params(&self) -> &[Var<T>] {
        &self.params
    }

    /// Checks the hyperparameters (what [`Optimizer::step`] does first).
    ///
    /// # Errors
    /// An invalid-argument error naming `SGD` and the value.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "SGD";
        check_range(OP, "learning rate", self.lr, 0.0, f64::INFINITY, false)?;
        check_range(OP, "momentum", self.momentum, 0.0, 1.0, false)?;
        check_range(OP, "dampening", self.dampening, 0.0, 1.0, true)?;
        check_range(OP, "weight_decay", self.weight_decay, 0.0, f64::INFINITY, false)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::arg(
                OP,
                format!(
                    "Nesterov momentum requires momentum > 0 and dampening 0, got momentum {} and dampening {}",
                    self.momentum, self.dampening
                ),
            ));
        }
        Ok(())
    }
}

impl<T: Float> Optimizer for Sgd<T> {
    fn step(&mut self) -> Result<()> {
        self.validate()?;
        let lr = T::from_f64(self.lr);
        let mu = T::from_f64(self.momentum);
        let damp = T::ONE - T::from_f64(self.dampening);
        let wd = T::from_f64(self.weight_decay);
        let (decay, momentum, nesterov) = (self.weight_decay != 0.0, self.momentum != 0.0, self.nesterov);
        let grads = gradients("SGD", &self.params, &self.shapes)?;
        for (i, ((p, buffer), grad)) in self.params.iter().zip(&mut self.buffers).zip(grads).enumerate() {
            let Some(g) = grad else { continue };
            let first = buffer.is_none();
            let b = buffer.get_or_insert_with(|| if momentum { vec![T::ZERO; g.numel()] } else { Vec::new() });
            // One fused pass of the tensor crate per parameter (`ops::optim::SgdStep`), in place,
            // with PyTorch's operations in PyTorch's order: g ← g + wd x;  b ← g (first step) or
            // μ b + (1 − dampening) g;  d ← g + μ b (Nesterov) or b;  x ← x − lr d.
            let step = SgdStep {
                lr,
                weight_decay: decay.then_some(wd),
                momentum: momentum.then_some(SgdMomentum { momentum: mu, one_minus_dampening: damp, nesterov, first }),
            };
            // (A buffer loaded from a state with momentum is not read by a step without.)
            let b = if momentum { b.as_mut_slice() } else { &mut [] };
            update_whole("SGD", i, p, b, &mut [], &g, |x, b, _, g| step.apply(x, b, g))?;
        }
        Ok(())
    }

    fn zero_grad(&mut self) {
        self.params.iter().for_each(Var::zero_grad);
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// The state of an SGD: its hyperparameters, its number of parameters (`"params"`), the
/// parameters that have taken a step (`"started"`, indices joined by commas) and each one's
/// momentum buffer (`"momentum_buffer.i"`, with the parameter's shape). Loading it restores the
/// hyperparameters too, as PyTorch does.
impl<T: Float> Stateful<T> for Sgd<T> {
    fn state_dict(&self) -> StateDict<T> {
        let mut s = StateDict::of_kind("SGD");
        s.set("lr", self.lr);
        s.set("momentum", self.momentum);
        s.set("dampening", self.dampening);
        s.set("nesterov", self.nesterov);
        s.set("weight_decay", self.weight_decay);
        s.set("params", self.params.len());
        let started: Vec<String> =
            self.buffers.iter().enumerate().filter(|(_, b)| b.is_some()).map(|(i, _)| i.to_string()).collect();
        s.set("started", started.join(","));
        for (i, (b, shape)) in self.buffers.iter().zip(&self.shapes).enumerate() {
            if let Some(b) = b.as_ref().filter(|b| !b.is_empty()) {
                if let Ok(t) = Tensor::from_vec(b.clone(), shape) {
                    s.tensors.insert(format!("momentum_buffer.{i}"), t);
                }
            }
        }
        s
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        const OP: &str = "SGD::load_state_dict";
        state.expect_kind(OP, "SGD")?;
        let n = self.params.len();
        let params: usize = state.get(OP, "params")?;
        if params != n {
            return Err(Error::arg(OP, format!("the state is of an SGD over {params} parameters, this one has {n}")));
        }
        const VALUES: [&str; 8] =
            ["kind", "lr", "momentum", "dampening", "nesterov", "weight_decay", "params", "started"];
        state.refuse_unknown(OP, |k, tensor| {
            if tensor {
                StateDict::<T>::index_of(k, "momentum_buffer", n).is_some()
            } else {
                VALUES.contains(&k)
            }
        })?;
        let momentum: f64 = state.get(OP, "momentum")?;
        let started: String = state.get(OP, "started")?;
        let mut buffers: Vec<Option<Vec<T>>> = vec![None; n];
        for i in started.split(',').filter(|s| !s.is_empty()) {
            let Some(i) = StateDict::<T>::parse_index(i, n) else {
                return Err(Error::arg(OP, format!("\"started\" names parameter {i:?}, which is not one of the {n}")));
            };
            if buffers[i].is_some() {
                return Err(Error::arg(OP, format!("\"started\" names parameter {i} twice")));
            }
            let key = format!("momentum_buffer.{i}");
            buffers[i] = Some(match state.tensor_of_shape(OP, &key, &self.shapes[i])? {
                Some(b) => b,
                None if momentum == 0.0 => Vec::new(),
                None => return Err(Error::arg(OP, format!("parameter {i} has started but the state has no {key:?}"))),
            });
        }
        if let Some(key) = state.tensors.keys().find(|k| {
            StateDict::<T>::index_of(k, "momentum_buffer", n)
                .is_some_and(|i| !matches!(&buffers[i], Some(b) if !b.is_empty()))
        }) {
            return Err(Error::arg(
                OP,
                format!("tensor {key:?} belongs to a parameter that has not started, or without momentum"),
            ));
        }
        let (lr, dampening, nesterov, weight_decay) = (
            state.get(OP, "lr")?,
            state.get(OP, "dampening")?,
            state.get(OP, "nesterov")?,
            state.get(OP, "weight_decay")?,
        );
        *self = Sgd {
            params: std::mem::take(&mut self.params),
            lr,
            momentum,
            dampening,
            nesterov,
            weight_decay,
            shapes: std::mem::take(&mut self.shapes),
            buffers,
        };
        Ok(())
    }
}
