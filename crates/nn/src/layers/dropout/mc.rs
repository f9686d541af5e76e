//! Monte Carlo dropout prediction: the mean and variance of many sampling forward passes.

use tapegrad_autograd::{no_grad, Var};
use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Error, Float, Result, Tensor};

use crate::module::{McSampling, Module};

/// Monte Carlo dropout prediction: runs `model` on `x` `samples` times (without recording) with
/// its dropout layers sampling, and returns the elementwise mean and (population) variance of
/// the outputs over the samples.
///
/// This is the standard MC-dropout recipe: only the dropout layers sample (`mc_predict` makes
/// them sample for its duration, on this thread, whatever their mode), everything else runs
/// as in eval mode, so call `model.eval()` first: BatchNorm then normalises with its running
/// statistics and never updates them. (`model.mc_dropout(true)` is not needed, and harmless.)
/// Apply a softmax inside the model (or to its outputs before averaging) to average class
/// probabilities. The masks come from each layer's generator (or the default one), as in a
/// training forward.
///
/// # Errors
/// `mc_predict` when `samples` is 0, when the model has no dropout layer (every sample would
/// be the same), or when a layer other than dropout is in training mode (a BatchNorm would
/// normalise with batch statistics and update its running statistics); errors from `forward`.
pub fn mc_predict<T: Float, M: Module<T> + ?Sized>(
    model: &M,
    x: &Var<T>,
    samples: usize,
) -> Result<(Tensor<T>, Tensor<T>)> {
    if samples == 0 {
        return Err(Error::arg("mc_predict", "samples must be at least 1"));
    }
    let (mut dropouts, mut training) = (0usize, 0usize);
    model.visit_modes(&mut |m| {
        if m.is_dropout {
            dropouts += 1;
        } else if m.training {
            training += 1;
        }
    });
    if training > 0 {
        return Err(Error::arg(
            "mc_predict",
            format!(
                "{training} layer(s) other than dropout (such as BatchNorm) are in training mode, where they \
                 would use batch statistics and update their running statistics: call model.eval() first \
                 (mc_predict makes the dropout layers sample by itself)"
            ),
        ));
    }
    if dropouts == 0 {
        return Err(Error::arg(
            "mc_predict",
            "the model has no dropout layer to sample: every sample would be the same",
        ));
    }
    let _sampling = McSampling::start();
    // Welford's update keeps the variance accurate when the mean is large.
    let mut mean = no_grad(|| model.forward(x))?.value();
    let mut m2 = Tensor::<T>::zeros(mean.shape());
    for i in 1..samples {
        let y = no_grad(|| model.forward(x))?.value();
        let delta = y.sub(&mean)?;
        mean = mean.add(&delta.mul_scalar(T::ONE / T::from_usize(i + 1)))?;
        m2 = m2.add(&delta.mul(&y.sub(&mean)?)?)?;
    }
    Ok((mean, m2.mul_scalar(T::ONE / T::from_usize(samples))))
}
