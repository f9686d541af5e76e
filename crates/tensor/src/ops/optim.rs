//! Optimiser updates as fused passes over a parameter's elements, its state and its gradient.
//!
//! [`AdamStep`] is one Adam or AdamW step, [`SgdStep`] one SGD step: every operation of the
//! update on whole SIMD registers, each rounded once and in the order the scalar formula takes
//! (so the same bits on every instruction set and thread count), in fixed pieces on the pool
//! when the parameter is large. `tapegrad_nn::optim::{Adam, AdamW, Sgd}` step through them.
//! (Written as a loop in the `nn` crate, Adam's update compiled to 4-lane SSE; its division and
//! square root per element made it 7% of the MLP's training step at 1 thread: docs/benchmarks.md,
//! session 17. SGD's is bound by memory; it moved here in session 21 so that every loop over
//! elements is the tensor crate's.)

pub use crate::kernels::elementwise::{AdamDecay, AdamStep, SgdMomentum, SgdStep};

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::kernels::active_isa;
use crate::ops::elementwise::CHUNK;

impl<T: Float> AdamStep<T> {
    /// Applies the step to a parameter's elements `x`, its first and second moments `m` and `v`
    /// and its gradient `g`, in place (see [`AdamStep`] for the formula).
    ///
    /// # Errors
    /// `adam` naming the lengths when the four slices differ in length.
    ///
    /// ```
    /// use tapegrad_tensor::ops::optim::{AdamDecay, AdamStep};
    /// let step = AdamStep::<f32> {
    ///     one_minus_b1: 0.1, b2: 0.999, one_minus_b2: 0.001, bias2_sqrt: 0.001f32.sqrt(),
    ///     eps: 1e-8, step_size: 0.01 / 0.1, decay: AdamDecay::None,
    /// };
    /// let (mut x, mut m, mut v) = (vec![1.0f32; 3], vec![0.0; 3], vec![0.0; 3]);
    /// step.apply(&mut x, &mut m, &mut v, &[0.5, -0.5, 0.0])?;
    /// // Adam's first step moves each weight by about the learning rate, against the gradient.
    /// assert!((x[0] - 0.99).abs() < 1e-5 && (x[1] - 1.01).abs() < 1e-5 && x[2] == 1.0);
    /// assert!(step.apply(&mut x, &mut m, &mut v, &[0.5]).is_err());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn apply(&self, x: &mut [T], m: &mut [T], v: &mut [T], g: &[T]) -> Result<()> {
        let n = x.len();
        if m.len() != n || v.len() != n || g.len() != n {
            return Err(Error::mismatch(
                "adam",
                &[n],
                &[m.len(), v.len(), g.len()],
                "the parameter, its two moments and its gradient must have one length",
            ));
        }
        let isa = active_isa();
        let pieces = x.chunks_mut(CHUNK).zip(m.chunks_mut(CHUNK)).zip(v.chunks_mut(CHUNK)).zip(g.chunks(CHUNK));
        crate::parallel::for_each(pieces, n, |(((x, m), v), g)| T::adam(isa, self, x, m, v, g));
        Ok(())
    }
}

impl<T: Float> SgdStep<T> {
    /// Applies the step to a parameter's elements `x`, its momentum buffer `b` (as long as `x`
    /// with momentum, empty without) and its gradient `g`, in place (see [`SgdStep`] for the
    /// formula).
    ///
    /// # Errors
    /// `sgd` naming the lengths when `g` differs from `x` in length, or `b` is not as long as
    /// `x` with momentum or not empty without.
    ///
    /// ```
    /// use tapegrad_tensor::ops::optim::{SgdMomentum, SgdStep};
    /// let plain = SgdStep::<f32> { lr: 0.5, weight_decay: None, momentum: None };
    /// let mut x = vec![1.0f32, 2.0];
    /// plain.apply(&mut x, &mut [], &[0.5, -1.0])?;
    /// assert_eq!(x, [0.75, 2.5]);
    /// // Momentum 0.9 from its first step: the buffer starts as the gradient.
    /// let momentum = Some(SgdMomentum { momentum: 0.9, one_minus_dampening: 1.0, nesterov: false, first: true });
    /// let (mut x, mut b) = (vec![1.0f32], vec![0.0f32]);
    /// SgdStep { lr: 0.5, weight_decay: None, momentum }.apply(&mut x, &mut b, &[1.0])?;
    /// assert_eq!((x[0], b[0]), (0.5, 1.0));
    /// assert!(plain.apply(&mut x, &mut b, &[1.0]).is_err()); // a buffer without momentum
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn apply(&self, x: &mut [T], b: &mut [T], g: &[T]) -> Result<()> {
        let n = x.len();
        if g.len() != n || b.len() != self.buffer_len(n) {
            return Err(Error::mismatch(
                "sgd",
                &[n],
                &[b.len(), g.len()],
                "the gradient must be as long as the parameter, and the momentum buffer too with momentum (empty without)",
            ));
        }
        let isa = active_isa();
        if self.momentum.is_some() {
            let pieces = x.chunks_mut(CHUNK).zip(b.chunks_mut(CHUNK)).zip(g.chunks(CHUNK));
            crate::parallel::for_each(pieces, n, |((x, b), g)| T::sgd(isa, self, x, b, g));
        } else {
            let pieces = x.chunks_mut(CHUNK).zip(g.chunks(CHUNK));
            crate::parallel::for_each(pieces, n, |(x, g)| T::sgd(isa, self, x, &mut [], g));
        }
        Ok(())
    }
}
