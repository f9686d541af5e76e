//! `LSTM`: the long short-term memory layer, as `torch.nn.LSTM`.

use std::fmt;

use tapegrad_autograd::Var;
use tapegrad_tensor::{Float, Generator, Result};

use super::{recurrent_common, Cell, Recurrent, RecurrentWeights};
use crate::module::Module;

/// A multi-layer LSTM over a sequence, as `torch.nn.LSTM` (without `bidirectional` and
/// `proj_size`). At each step `t` of layer `l` (input `x_t`: the sequence for `l = 0`, else the
/// previous layer's `h_t`):
///
/// ```text
/// i = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      f = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
/// g = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)   o = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
/// c_t = f ⊙ c_{t-1} + i ⊙ g                          h_t = o ⊙ tanh(c_t)
/// ```
///
/// The weights stack the gates in PyTorch's order `i, f, g, o` and carry PyTorch's names
/// (`weight_ih_l0` `[4·hidden, input_size]`, `weight_hh_l0` `[4·hidden, hidden]`, `bias_ih_l0`,
/// `bias_hh_l0`, then `_l1`, ...), so a PyTorch state dict loads by name through
/// [`load`](crate::load). Every parameter starts uniform in `±1/√hidden_size` (PyTorch's
/// initialisation), drawn from the generator.
///
/// Shapes, with `batch_first = false` (the default, as PyTorch's): input `[seq_len, batch,
/// input_size]`, output `[seq_len, batch, hidden_size]` (the last layer's `h_t` at every step);
/// with [`batch_first(true)`](LSTM::batch_first) both are `[batch, seq_len, ...]`. An unbatched
/// input `[seq_len, input_size]` gives `[seq_len, hidden_size]`. The states `h_0`, `c_0`, `h_n`,
/// `c_n` are `[num_layers, batch, hidden_size]` (`[num_layers, hidden_size]` unbatched) whatever
/// `batch_first` is; a missing initial state is zeros.
///
/// [`Module::forward`] returns the output sequence; [`forward_with_state`](LSTM::forward_with_state)
/// takes an initial state and returns `(output, (h_n, c_n))`. Dropout: PyTorch's
/// [`dropout`](LSTM::dropout) between layers, and the variational (locked) dropouts of Gal and
/// Ghahramani (2016) on the input ([`input_dropout`](LSTM::input_dropout)), the recurrent state
/// ([`recurrent_dropout`](LSTM::recurrent_dropout)) and the output
/// ([`output_dropout`](LSTM::output_dropout)), all active only in training (or Monte Carlo)
/// mode.
///
/// # Errors
/// `forward`: `LSTM` naming the shapes when the input is not 2- or 3-dim, its last dim is not
/// `input_size`, it is empty, an initial state does not fit, or a replaced weight has the wrong
/// shape.
///
/// ```
/// use tapegrad_nn::{LSTM, Module, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let mut gen = Generator::new(0);
/// let lstm: LSTM = LSTM::new(3, 8, 2, &mut gen)?.batch_first(true).recurrent_dropout(0.25)?;
/// let x = Var::new(Tensor::randn(&[4, 10, 3], &mut gen)); // [batch, seq_len, input_size]
/// let (y, (h_n, c_n)) = lstm.forward_with_state(&x, None)?;
/// assert_eq!(y.shape(), vec![4, 10, 8]);
/// assert_eq!((h_n.shape(), c_n.shape()), (vec![2, 4, 8], vec![2, 4, 8]));
/// assert_eq!(lstm.named_parameters()[0].0, "weight_ih_l0");
/// assert_eq!(lstm.to_string(), "LSTM(3, 8, num_layers=2, batch_first=True, recurrent_dropout=0.25)");
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct LSTM<T: Float = f32> {
    #[module(flatten)]
    core: Recurrent<T>,
}

tapegrad_tensor::f32_default! {
    /// The constructor of [`LSTM`] for every element type: `LSTM::<f64>::new(..)`, or
    /// `LSTM::<T>::new(..)` in generic code. `LSTM::new(..)` without a type means `f32`.
    LSTMNew for LSTM {
        /// `num_layers` stacked layers from `input_size` features to `hidden_size`, initialised
        /// from `gen` as PyTorch does; no dropout, `batch_first = false`.
        ///
        /// # Errors
        /// `LSTM` when `hidden_size` or `num_layers` is 0.
        fn new(input_size: usize, hidden_size: usize, num_layers: usize, gen: &mut Generator) -> Result<Self> {
            Ok(LSTM { core: Recurrent::new(Cell::Lstm, input_size, hidden_size, num_layers, gen)? })
        }
    }
}

recurrent_common!(LSTM);

impl<T: Float> LSTM<T> {
    /// The layer from an initial state `(h_0, c_0)` (zeros when `None`): returns the output
    /// sequence and the last states `(h_n, c_n)`, as `torch.nn.LSTM` returns
    /// `output, (h_n, c_n)`.
    ///
    /// # Errors
    /// `LSTM` naming the shapes, as for [`Module::forward`].
    ///
    /// ```
    /// use tapegrad_nn::{LSTM, Var};
    /// use tapegrad_tensor::{Generator, Tensor};
    /// let mut gen = Generator::new(0);
    /// let lstm: LSTM = LSTM::new(2, 3, 1, &mut gen)?;
    /// let x = Var::new(Tensor::randn(&[5, 4, 2], &mut gen)); // [seq_len, batch, input_size]
    /// let (h0, c0) = (Var::new(Tensor::zeros(&[1, 4, 3])), Var::new(Tensor::zeros(&[1, 4, 3])));
    /// let (y, (h_n, _)) = lstm.forward_with_state(&x, Some((&h0, &c0)))?;
    /// assert_eq!(y.narrow(0, 4, 1)?.value().to_vec(), h_n.value().to_vec()); // the last step
    /// assert!(lstm.forward_with_state(&x, Some((&c0, &h0.narrow(1, 0, 2)?))).is_err());
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    // The tuple is PyTorch's `output, (h_n, c_n)`, kept as it reads there.
    #[allow(clippy::type_complexity)]
    pub fn forward_with_state(
        &self,
        x: &Var<T>,
        state: Option<(&Var<T>, &Var<T>)>,
    ) -> Result<(Var<T>, (Var<T>, Var<T>))> {
        let run = self.core.run(x, state.map(|s| s.0), state.map(|s| s.1))?;
        let c_n = run.c_n.expect("an LSTM run returns c_n");
        Ok((run.output, (run.h_n, c_n)))
    }
}

impl<T: Float> Module<T> for LSTM<T> {
    /// The output sequence from a zero initial state.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        Ok(self.forward_with_state(x, None)?.0)
    }
}

/// One LSTM step from the gate pre-activations `gi + gh` (`[batch, 4·hidden]`, order `i, f, g,
/// o`) and the previous cell state: `(h_t, c_t)`.
pub(super) fn step<T: Float>(gi: &Var<T>, gh: &Var<T>, c: &Var<T>, hidden: usize) -> Result<(Var<T>, Var<T>)> {
    let gates = gi.add(gh)?;
    let i_f = gates.narrow(1, 0, 2 * hidden)?.sigmoid();
    let g = gates.narrow(1, 2 * hidden, hidden)?.tanh();
    let o = gates.narrow(1, 3 * hidden, hidden)?.sigmoid();
    let (i, f) = (i_f.narrow(1, 0, hidden)?, i_f.narrow(1, hidden, hidden)?);
    let c = f.mul(c)?.add(&i.mul(&g)?)?;
    let h = o.mul(&c.tanh())?;
    Ok((h, c))
}
