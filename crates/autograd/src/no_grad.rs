//! Per-thread switches: gradient recording (`no_grad`) and anomaly detection. (The default
//! generator and `manual_seed` are in `seed.rs`.)

use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
    static ANOMALY: Cell<bool> = const { Cell::new(false) };
}

/// Restores the previous recording state when dropped, so a panic inside `no_grad` cannot leave
/// recording switched off.
struct Restore(bool);

impl Drop for Restore {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.0));
    }
}

/// Runs `f` with recording switched off on this thread: ops inside return constants and save
/// nothing, as under PyTorch's `torch.no_grad()`.
///
/// ```
/// use tapegrad_autograd::{no_grad, Var};
/// use tapegrad_tensor::Tensor;
/// let w = Var::parameter(Tensor::<f32>::ones(&[2]));
/// let y = no_grad(|| w.mul_scalar(3.0));
/// assert!(!y.requires_grad());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// Runs `f` with recording switched on (inside a [`no_grad`] too): what `gradgradcheck`'s
/// finite differences need to take first derivatives.
pub(crate) fn enable_grad<R>(f: impl FnOnce() -> R) -> R {
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(true)));
    f()
}

/// True unless inside [`no_grad`] on this thread.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Switches anomaly detection on or off for backward passes run on this thread: when on,
/// `backward` returns [`Error::Anomaly`](crate::Error::Anomaly) naming the first op (in backward
/// order) whose gradient contains a NaN or an infinity.
pub fn detect_anomaly(on: bool) {
    ANOMALY.with(|a| a.set(on));
}

/// True when anomaly detection is on for this thread.
pub fn is_anomaly_enabled() -> bool {
    ANOMALY.with(Cell::get)
}
