//! `GRU`: the gated recurrent unit layer, as `torch.nn.GRU`.

use std::fmt;

use tapegrad_autograd::Var;
use tapegrad_tensor::{Float, Generator, Result};

use super::{recurrent_common, Cell, Recurrent, RecurrentWeights};
use crate::module::Module;

/// A multi-layer GRU over a sequence, as `torch.nn.GRU` (without `bidirectional`). At each step
/// `t` of layer `l` (input `x_t`: the sequence for `l = 0`, else the previous layer's `h_t`):
///
/// ```text
/// r = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
/// z = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
/// n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))
/// h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
/// ```
///
/// The reset gate multiplies `W_hn h + b_hn` (PyTorch's form, not `W_hn (r ⊙ h)`). The weights
/// stack the gates in PyTorch's order `r, z, n` and carry PyTorch's names (`weight_ih_l0`
/// `[3·hidden, input_size]`, `weight_hh_l0` `[3·hidden, hidden]`, `bias_ih_l0`, `bias_hh_l0`,
/// then `_l1`, ...), so a PyTorch state dict loads by name through [`load`](crate::load). Every
/// parameter starts uniform in `±1/√hidden_size`, drawn from the generator.
///
/// Shapes as [`LSTM`](crate::LSTM)'s: input `[seq_len, batch, input_size]` (`batch_first =
/// false`, the default, as PyTorch's) or `[batch, seq_len, input_size]`, or unbatched
/// `[seq_len, input_size]`; output `[.., hidden_size]` in the same layout; `h_0` and `h_n`
/// `[num_layers, batch, hidden_size]`. [`Module::forward`] returns the output sequence;
/// [`forward_with_state`](GRU::forward_with_state) returns `(output, h_n)`. The dropouts are
/// the LSTM's: PyTorch's [`dropout`](GRU::dropout) between layers, and variational
/// [`input_dropout`](GRU::input_dropout), [`recurrent_dropout`](GRU::recurrent_dropout) (on the
/// `h_{t-1}` that enters `W_h· h`; the `z ⊙ h_{t-1}` term keeps the undropped state) and
/// [`output_dropout`](GRU::output_dropout).
///
/// # Errors
/// `forward`: `GRU` naming the shapes, as for the LSTM.
///
/// ```
/// use tapegrad_nn::{Module, Var, GRU};
/// use tapegrad_tensor::{Generator, Tensor};
/// let mut gen = Generator::new(0);
/// let gru: GRU = GRU::new(3, 8, 1, &mut gen)?;
/// let y = gru.forward(&Var::new(Tensor::randn(&[10, 4, 3], &mut gen)))?; // [seq_len, batch, input]
/// assert_eq!(y.shape(), vec![10, 4, 8]);
/// assert_eq!(gru.weights()[0].weight_hh.shape(), vec![24, 8]);
/// assert!(gru.forward(&Var::new(Tensor::zeros(&[10, 4, 5]))).is_err()); // input_size is 3
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct GRU<T: Float = f32> {
    #[module(flatten)]
    core: Recurrent<T>,
}

tapegrad_tensor::f32_default! {
    /// The constructor of [`GRU`] for every element type: `GRU::<f64>::new(..)`, or
    /// `GRU::<T>::new(..)` in generic code. `GRU::new(..)` without a type means `f32`.
    GRUNew for GRU {
        /// `num_layers` stacked layers from `input_size` features to `hidden_size`, initialised
        /// from `gen` as PyTorch does; no dropout, `batch_first = false`.
        ///
        /// # Errors
        /// `GRU` when `hidden_size` or `num_layers` is 0.
        fn new(input_size: usize, hidden_size: usize, num_layers: usize, gen: &mut Generator) -> Result<Self> {
            Ok(GRU { core: Recurrent::new(Cell::Gru, input_size, hidden_size, num_layers, gen)? })
        }
    }
}

recurrent_common!(GRU);

impl<T: Float> GRU<T> {
    /// The layer from an initial state `h_0` (zeros when `None`): returns the output sequence
    /// and the last state `h_n`, as `torch.nn.GRU` returns `output, h_n`.
    ///
    /// # Errors
    /// `GRU` naming the shapes, as for [`Module::forward`].
    ///
    /// ```
    /// use tapegrad_nn::{Var, GRU};
    /// use tapegrad_tensor::{Generator, Tensor};
    /// let mut gen = Generator::new(0);
    /// let gru: GRU = GRU::new(2, 3, 2, &mut gen)?;
    /// let x = Var::new(Tensor::randn(&[5, 2], &mut gen)); // unbatched [seq_len, input_size]
    /// let (y, h_n) = gru.forward_with_state(&x, Some(&Var::new(Tensor::zeros(&[2, 3]))))?;
    /// assert_eq!((y.shape(), h_n.shape()), (vec![5, 3], vec![2, 3]));
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    pub fn forward_with_state(&self, x: &Var<T>, h0: Option<&Var<T>>) -> Result<(Var<T>, Var<T>)> {
        let run = self.core.run(x, h0, None)?;
        Ok((run.output, run.h_n))
    }
}

impl<T: Float> Module<T> for GRU<T> {
    /// The output sequence from a zero initial state.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        Ok(self.forward_with_state(x, None)?.0)
    }
}

/// One GRU step from the input and hidden pre-activations (`[batch, 3·hidden]` each, order `r,
/// z, n`) and the previous state: `h_t = n + z ⊙ (h_{t-1} - n)`.
pub(super) fn step<T: Float>(gi: &Var<T>, gh: &Var<T>, h: &Var<T>, hidden: usize) -> Result<Var<T>> {
    let rz = gi.narrow(1, 0, 2 * hidden)?.add(&gh.narrow(1, 0, 2 * hidden)?)?.sigmoid();
    let (r, z) = (rz.narrow(1, 0, hidden)?, rz.narrow(1, hidden, hidden)?);
    let n = gi.narrow(1, 2 * hidden, hidden)?.add(&r.mul(&gh.narrow(1, 2 * hidden, hidden)?)?)?.tanh();
    n.add(&z.mul(&h.sub(&n)?)?)
}
