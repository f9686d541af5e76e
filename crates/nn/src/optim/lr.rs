//! Learning-rate schedules per epoch: `StepLR` and `CosineAnnealingLR`, in closed form.
//!
//! A scheduler starts at epoch 0 with the base learning rate. Each [`LrScheduler::step`], called
//! once at the end of an epoch as in PyTorch, advances the epoch and sets the optimiser's learning
//! rate to [`LrScheduler::lr_at`] of the new epoch. The base learning rate is the optimiser's
//! learning rate at the first `step`, unless it was set with the `base_lr` builder.

use super::{check_range, Optimizer};
use crate::checkpoint::{StateDict, Stateful};
use tapegrad_tensor::{Error, Float, Result};

/// A learning-rate schedule: a learning rate per epoch, applied to an optimiser.
pub trait LrScheduler {
    /// The learning rate of `epoch` (0 is the base learning rate). Before the base learning rate
    /// is known (no `base_lr` set, no `step` yet), a base of 1 is used, so the value is the
    /// schedule's factor. An invalid configuration gives NaN here and an `Err` from `step`.
    fn lr_at(&self, epoch: usize) -> f64;

    /// The current epoch: the number of `step` calls so far.
    fn epoch(&self) -> usize;

    /// Advances one epoch and sets `opt`'s learning rate to that epoch's; returns it.
    ///
    /// # Errors
    /// An invalid configuration (naming the scheduler and the value).
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<f64>;
}

/// What every closed-form schedule tracks: the base learning rate (once known) and the epoch.
#[derive(Clone, Debug, Default)]
struct Progress {
    base_lr: Option<f64>,
    epoch: usize,
}

/// A schedule given by a formula of the epoch: validated configuration plus [`Progress`].
trait ClosedForm: LrScheduler {
    fn validate(&self) -> Result<()>;
    fn progress(&mut self) -> &mut Progress;
}

/// [`LrScheduler::step`] for a closed-form schedule: check the configuration, take the base
/// learning rate from `opt` at the first step, advance, set and return the new epoch's rate.
fn step_closed_form<S: ClosedForm>(s: &mut S, opt: &mut dyn Optimizer) -> Result<f64> {
    s.validate()?;
    let progress = s.progress();
    progress.base_lr.get_or_insert(opt.lr());
    progress.epoch += 1;
    let epoch = progress.epoch;
    let lr = s.lr_at(epoch);
    opt.set_lr(lr);
    Ok(lr)
}

/// `torch.optim.lr_scheduler.StepLR`: the learning rate decays by `gamma` every `step_size`
/// epochs.
///
/// ```text
/// lr(e) = base_lr · γ^⌊e / step_size⌋
/// ```
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::optim::{LrScheduler, Optimizer, Sgd, StepLr};
/// use tapegrad_tensor::Tensor;
/// let mut opt = Sgd::new(vec![Var::parameter(Tensor::<f32>::zeros(&[1]))], 0.1);
/// let mut sched = StepLr::new(2, 0.5);
/// let lrs: Vec<f64> = (0..4).map(|_| sched.step(&mut opt)).collect::<Result<_, _>>()?;
/// assert_eq!(lrs, vec![0.1, 0.05, 0.05, 0.025]); // epochs 1 to 4
/// assert_eq!(opt.lr(), 0.025);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct StepLr {
    step_size: usize,
    gamma: f64,
    progress: Progress,
}

impl StepLr {
    /// Decays by `gamma` every `step_size` epochs (`step_size ≥ 1`, `gamma ≥ 0`, checked by
    /// `step`).
    pub fn new(step_size: usize, gamma: f64) -> StepLr {
        StepLr { step_size, gamma, progress: Progress::default() }
    }

    /// Sets the base learning rate instead of taking the optimiser's at the first `step`.
    pub fn base_lr(mut self, base_lr: f64) -> StepLr {
        self.progress.base_lr = Some(base_lr);
        self
    }
}

impl ClosedForm for StepLr {
    fn validate(&self) -> Result<()> {
        if self.step_size == 0 {
            return Err(Error::arg("StepLR", "step_size 0: it must be at least 1"));
        }
        check_range("StepLR", "gamma", self.gamma, 0.0, f64::INFINITY, false)
    }

    fn progress(&mut self) -> &mut Progress {
        &mut self.progress
    }
}

impl LrScheduler for StepLr {
    fn lr_at(&self, epoch: usize) -> f64 {
        let Some(k) = epoch.checked_div(self.step_size) else { return f64::NAN };
        let k = i32::try_from(k).unwrap_or(i32::MAX);
        self.progress.base_lr.unwrap_or(1.0) * self.gamma.powi(k)
    }

    fn epoch(&self) -> usize {
        self.progress.epoch
    }

    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<f64> {
        step_closed_form(self, opt)
    }
}

/// `torch.optim.lr_scheduler.CosineAnnealingLR`, in its closed form: the learning rate follows
/// half a cosine from the base learning rate down to `eta_min` over `t_max` epochs, then back up
/// (the cosine continues past `t_max`, as in PyTorch).
///
/// ```text
/// lr(e) = η_min + (base_lr − η_min) · (1 + cos(π e / T_max)) / 2
/// ```
///
/// ```
/// use tapegrad_nn::optim::{CosineLr, LrScheduler};
/// let sched = CosineLr::new(10, 0.0).base_lr(0.1);
/// assert_eq!(sched.lr_at(0), 0.1);
/// assert!((sched.lr_at(5) - 0.05).abs() < 1e-12);
/// assert_eq!(sched.lr_at(10), 0.0);
/// ```
#[derive(Clone, Debug)]
pub struct CosineLr {
    t_max: usize,
    eta_min: f64,
    progress: Progress,
}

impl CosineLr {
    /// Anneals to `eta_min` over `t_max` epochs (`t_max ≥ 1`, `eta_min ≥ 0`, checked by `step`).
    pub fn new(t_max: usize, eta_min: f64) -> CosineLr {
        CosineLr { t_max, eta_min, progress: Progress::default() }
    }

    /// Sets the base learning rate instead of taking the optimiser's at the first `step`.
    pub fn base_lr(mut self, base_lr: f64) -> CosineLr {
        self.progress.base_lr = Some(base_lr);
        self
    }
}

impl ClosedForm for CosineLr {
    fn validate(&self) -> Result<()> {
        if self.t_max == 0 {
            return Err(Error::arg("CosineAnnealingLR", "t_max 0: it must be at least 1"));
        }
        check_range("CosineAnnealingLR", "eta_min", self.eta_min, 0.0, f64::INFINITY, false)
    }

    fn progress(&mut self) -> &mut Progress {
        &mut self.progress
    }
}

impl LrScheduler for CosineLr {
    fn lr_at(&self, epoch: usize) -> f64 {
        if self.t_max == 0 {
            return f64::NAN;
        }
        let base = self.progress.base_lr.unwrap_or(1.0);
        let phase = std::f64::consts::PI * epoch as f64 / self.t_max as f64;
        self.eta_min + (base - self.eta_min) * (1.0 + phase.cos()) / 2.0
    }

    fn epoch(&self) -> usize {
        self.progress.epoch
    }

    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<f64> {
        step_closed_form(self, opt)
    }
}

// ─── state ─────────────────────────────────────────────────────────────────────

impl Progress {
    /// Writes the base learning rate (`"none"` before it is known) and the epoch.
    fn save<T: Float>(&self, s: &mut StateDict<T>) {
        s.set("base_lr", self.base_lr.map_or("none".to_string(), |lr| lr.to_string()));
        s.set("epoch", self.epoch);
    }

    /// Reads what [`Progress::save`] wrote.
    fn load<T: Float>(op: &'static str, s: &StateDict<T>) -> Result<Progress> {
        let base_lr = match s.values.get("base_lr").map(String::as_str) {
            Some("none") => None,
            _ => Some(s.get(op, "base_lr")?),
        };
        Ok(Progress { base_lr, epoch: s.get(op, "epoch")? })
    }
}

/// The state: `step_size`, `gamma`, the base learning rate (`"none"` before it is known) and
/// the epoch. Loading it restores the configuration too, as PyTorch does.
impl<T: Float> Stateful<T> for StepLr {
    fn state_dict(&self) -> StateDict<T> {
        let mut s = StateDict::of_kind("StepLR");
        s.set("step_size", self.step_size);
        s.set("gamma", self.gamma);
        self.progress.save(&mut s);
        s
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        const OP: &str = "StepLr::load_state_dict";
        state.expect_kind(OP, "StepLR")?;
        state.refuse_unknown(OP, |k, tensor| {
            !tensor && ["kind", "step_size", "gamma", "base_lr", "epoch"].contains(&k)
        })?;
        let progress = Progress::load(OP, state)?;
        *self = StepLr { step_size: state.get(OP, "step_size")?, gamma: state.get(OP, "gamma")?, progress };
        Ok(())
    }
}

/// The state: `t_max`, `eta_min`, the base learning rate (`"none"` before it is known) and
/// the epoch. Loading it restores the configuration too, as PyTorch does.
impl<T: Float> Stateful<T> for CosineLr {
    fn state_dict(&self) -> StateDict<T> {
        let mut s = StateDict::of_kind("CosineAnnealingLR");
        s.set("t_max", self.t_max);
        s.set("eta_min", self.eta_min);
        self.progress.save(&mut s);
        s
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        const OP: &str = "CosineLr::load_state_dict";
        state.expect_kind(OP, "CosineAnnealingLR")?;
        state
            .refuse_unknown(OP, |k, tensor| !tensor && ["kind", "t_max", "eta_min", "base_lr", "epoch"].contains(&k))?;
        let progress = Progress::load(OP, state)?;
        *self = CosineLr { t_max: state.get(OP, "t_max")?, eta_min: state.get(OP, "eta_min")?, progress };
        Ok(())
    }
}
