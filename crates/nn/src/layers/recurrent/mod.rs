//! The recurrent layers `LSTM` and `GRU`, as PyTorch's `nn.LSTM` and `nn.GRU` (gate order,
//! parameter names, initialisation, `num_layers`, `batch_first`, `dropout` between layers), with
//! variational (locked) dropout on the inputs, the recurrent state and the outputs (Gal and
//! Ghahramani, 2016).
//!
//! Both layers share `Recurrent`: the weights, the shape checks, the loop over layers and
//! time steps and the dropouts; a `Cell` says how one step turns the gate pre-activations into
//! the next state. The input-to-hidden products of a whole sequence are one GEMM per layer
//! (`[seq_len · batch, input] → [seq_len · batch, gates · hidden]`); only the hidden-to-hidden
//! product runs once per step.
//!
//! The dropouts are [`Dropout`] children, so `train()` / `eval()`, Monte Carlo dropout and
//! [`mc_predict`](crate::mc_predict) reach them as they reach any dropout layer, and the masks
//! are recorded on the tape by the existing ops:
//! - between layers (PyTorch's `dropout`): a fresh elementwise mask per element and step
//!   (`dropout`), on every layer's output except the last;
//! - on the input sequence and on the output sequence: one mask per sequence (per batch element
//!   and feature) shared by every time step (`dropout_shared` along the time dim);
//! - on the recurrent state: one `[batch, hidden]` mask per layer and sequence multiplies
//!   `h_{t-1}` before the hidden-to-hidden product at every step. The mask is drawn once (one
//!   reservation of the generator) and each step records a `dropout` op replaying that same
//!   `(seed, offset)`: every step's tape entry holds the same mask, and backward uses it.

mod builders;
mod gru;
mod lstm;

use std::fmt;

use tapegrad_autograd::{dropout, fused, Var};
use tapegrad_tensor::{Error, Float, Generator, Result, Tensor, TensorNew};

use crate::layers::dropout::{Dropout, DropoutNew};
use crate::layers::linear::uniform_bound;
use crate::module::{join, GeneratorSlot, Mode, ModeChange, Module, Visit};

use builders::recurrent_common;
pub use gru::{GRUNew, GRU};
pub use lstm::{LSTMNew, LSTM};

/// The weights of one layer of an [`LSTM`] or a [`GRU`], named as PyTorch names them with the
/// layer's suffix (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, then `_l1`, ...).
///
/// `gates` is 4 for the LSTM (rows in PyTorch's order `i, f, g, o`) and 3 for the GRU
/// (`r, z, n`). The forward checks the shapes, so a replaced weight of the wrong shape is an
/// `Err`, not a wrong answer.
///
/// ```
/// use tapegrad_nn::{LSTM, Module};
/// use tapegrad_tensor::Generator;
/// let lstm: LSTM = LSTM::new(3, 5, 1, &mut Generator::new(0))?;
/// assert_eq!(lstm.weights()[0].weight_ih.shape(), vec![20, 3]); // [4 · hidden, input]
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub struct RecurrentWeights<T: Float = f32> {
    /// `[gates · hidden_size, input]` (`input` is `input_size` in layer 0, else `hidden_size`).
    pub weight_ih: Var<T>,
    /// `[gates · hidden_size, hidden_size]`.
    pub weight_hh: Var<T>,
    /// `[gates · hidden_size]`.
    pub bias_ih: Var<T>,
    /// `[gates · hidden_size]`.
    pub bias_hh: Var<T>,
}

/// Which recurrence a [`Recurrent`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    Lstm,
    Gru,
}

impl Cell {
    /// The name errors and the printed form use.
    fn op(self) -> &'static str {
        match self {
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
        }
    }

    /// The gate blocks stacked in each weight.
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

/// The state shared by `LSTM` and `GRU`: sizes, weights and the four dropouts.
struct Recurrent<T: Float> {
    cell: Cell,
    input_size: usize,
    hidden_size: usize,
    batch_first: bool,
    layers: Vec<RecurrentWeights<T>>,
    /// PyTorch's `dropout`: on each layer's output but the last.
    dropout: Dropout<T>,
    /// Locked along time: on the input sequence.
    input_dropout: Dropout<T>,
    /// One mask per layer and sequence on `h_{t-1}`.
    recurrent_dropout: Dropout<T>,
    /// Locked along time: on the output sequence.
    output_dropout: Dropout<T>,
}

/// What a call (or one layer) computes: the output sequence, `h_n`, and `c_n` for the LSTM.
struct Run<T: Float> {
    output: Var<T>,
    h_n: Var<T>,
    c_n: Option<Var<T>>,
}

impl<T: Float> Recurrent<T> {
    /// PyTorch's initialisation: every weight and bias uniform in `±1/√hidden_size`, drawn in
    /// the order of the names (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, `_l1`,
    /// ...).
    fn new(
        cell: Cell,
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        gen: &mut Generator,
    ) -> Result<Recurrent<T>> {
        if hidden_size == 0 {
            return Err(Error::arg(cell.op(), "hidden_size must be greater than zero"));
        }
        if num_layers == 0 {
            return Err(Error::arg(cell.op(), "num_layers must be greater than zero"));
        }
        let bound = 1.0 / (hidden_size as f64).sqrt();
        let rows = cell.gates() * hidden_size;
        let layers = (0..num_layers)
            .map(|l| {
                let input = if l == 0 { input_size } else { hidden_size };
                RecurrentWeights {
                    weight_ih: Var::parameter(uniform_bound(&[rows, input], bound, gen)),
                    weight_hh: Var::parameter(uniform_bound(&[rows, hidden_size], bound, gen)),
                    bias_ih: Var::parameter(uniform_bound(&[rows], bound, gen)),
                    bias_hh: Var::parameter(uniform_bound(&[rows], bound, gen)),
                }
            })
            .collect();
        Ok(Recurrent {
            cell,
            input_size,
            hidden_size,
            batch_first: false,
            layers,
            dropout: Dropout::<T>::new(0.0)?,
            input_dropout: Dropout::<T>::new(0.0)?.with_shared_dims(&[0]),
            recurrent_dropout: Dropout::<T>::new(0.0)?,
            output_dropout: Dropout::<T>::new(0.0)?.with_shared_dims(&[0]),
        })
    }

    /// Gives the four dropouts their own generators, seeded `seed` (between layers), `seed + 1`
    /// (input), `seed + 2` (recurrent) and `seed + 3` (output).
    fn with_seed(self, seed: u64) -> Recurrent<T> {
        Recurrent {
            dropout: self.dropout.with_generator(Generator::new(seed)),
            input_dropout: self.input_dropout.with_generator(Generator::new(seed.wrapping_add(1))),
            recurrent_dropout: self.recurrent_dropout.with_generator(Generator::new(seed.wrapping_add(2))),
            output_dropout: self.output_dropout.with_generator(Generator::new(seed.wrapping_add(3))),
            ..self
        }
    }

    /// Checks the weights (they are public, so they may have been replaced) and the input, and
    /// returns `(seq_len, batch, unbatched)`.
    fn check(&self, x: &[usize]) -> Result<(usize, usize, bool)> {
        let name = self.cell.op();
        let rows = self.cell.gates() * self.hidden_size;
        for (l, w) in self.layers.iter().enumerate() {
            let input = if l == 0 { self.input_size } else { self.hidden_size };
            for (what, var, want) in [
                ("weight_ih", &w.weight_ih, vec![rows, input]),
                ("weight_hh", &w.weight_hh, vec![rows, self.hidden_size]),
                ("bias_ih", &w.bias_ih, vec![rows]),
                ("bias_hh", &w.bias_hh, vec![rows]),
            ] {
                let got = var.shape();
                if got != want {
                    return Err(Error::mismatch(name, &got, &want, format!("{what}_l{l} must have shape {want:?}")));
                }
            }
        }
        let layout = if self.batch_first { "[batch, seq_len, input_size]" } else { "[seq_len, batch, input_size]" };
        let (seq_len, batch, unbatched) = match *x {
            [seq_len, _] => (seq_len, 1, true),
            [a, b, _] if self.batch_first => (b, a, false),
            [a, b, _] => (a, b, false),
            _ => {
                return Err(Error::shape(
                    name,
                    x,
                    format!(
                        "expects the input {layout} (batch_first = {}) or unbatched [seq_len, input_size]",
                        self.batch_first
                    ),
                ))
            }
        };
        if x[x.len() - 1] != self.input_size {
            return Err(Error::shape(
                name,
                x,
                format!("the input's last dim must be input_size = {}", self.input_size),
            ));
        }
        if seq_len == 0 || batch == 0 {
            return Err(Error::shape(name, x, format!("expects a non-empty input {layout}")));
        }
        Ok((seq_len, batch, unbatched))
    }

    /// Checks an initial state `h0` / `c0` against `[num_layers, batch, hidden_size]` (or
    /// `[num_layers, hidden_size]` for an unbatched input) and returns it as a 3-dim `Var`.
    fn initial(&self, what: &str, s: &Var<T>, x: &[usize], batch: usize, unbatched: bool) -> Result<Var<T>> {
        let (layers, hidden) = (self.layers.len(), self.hidden_size);
        let want = if unbatched { vec![layers, hidden] } else { vec![layers, batch, hidden] };
        let got = s.shape();
        if got != want {
            let form = if unbatched { "[num_layers, hidden_size]" } else { "[num_layers, batch, hidden_size]" };
            return Err(Error::mismatch(
                self.cell.op(),
                &got,
                x,
                format!("{what} must be {form} = {want:?} for this input"),
            ));
        }
        if unbatched {
            s.unsqueeze(1)
        } else {
            Ok(s.clone())
        }
    }

    /// The whole forward: checks, layout, the layers, the dropouts.
    fn run(&self, x: &Var<T>, h0: Option<&Var<T>>, c0: Option<&Var<T>>) -> Result<Run<T>> {
        let shape = x.shape();
        let (seq_len, batch, unbatched) = self.check(&shape)?;
        let h0 = h0.map(|s| self.initial("h0", s, &shape, batch, unbatched)).transpose()?;
        let c0 = c0.map(|s| self.initial("c0", s, &shape, batch, unbatched)).transpose()?;

        // Time-major `[seq_len, batch, features]` inside.
        let mut seq = if unbatched {
            x.unsqueeze(1)?
        } else if self.batch_first {
            x.transpose(0, 1)?
        } else {
            x.clone()
        };
        seq = self.input_dropout.forward(&seq)?;
        let (mut h_n, mut c_n) = (vec![], vec![]);
        let last = self.layers.len() - 1;
        for (l, w) in self.layers.iter().enumerate() {
            let initial = |s: &Option<Var<T>>| -> Result<Var<T>> {
                match s {
                    Some(s) => s.narrow(0, l, 1)?.squeeze(0),
                    None => Ok(Var::new(Tensor::<T>::zeros(&[batch, self.hidden_size]))),
                }
            };
            let run = self.layer(w, &seq, seq_len, batch, initial(&h0)?, initial(&c0)?)?;
            h_n.push(run.h_n);
            c_n.extend(run.c_n);
            seq = if l < last { self.dropout.forward(&run.output)? } else { run.output };
        }
        let mut output = self.output_dropout.forward(&seq)?;
        let stack = |v: &[Var<T>]| -> Result<Var<T>> { Var::stack(&v.iter().collect::<Vec<_>>(), 0) };
        let mut h_n = stack(&h_n)?;
        let mut c_n = if c_n.is_empty() { None } else { Some(stack(&c_n)?) };
        if unbatched {
            output = output.squeeze(1)?;
            h_n = h_n.squeeze(1)?;
            c_n = c_n.map(|c| c.squeeze(1)).transpose()?;
        } else if self.batch_first {
            output = output.transpose(0, 1)?;
        }
        Ok(Run { output, h_n, c_n })
    }

    /// One layer over the time-major `seq`: the output sequence `[seq_len, batch, hidden]`, the
    /// last `h` and (LSTM) the last `c`, each `[batch, hidden]`.
    fn layer(
        &self,
        w: &RecurrentWeights<T>,
        seq: &Var<T>,
        seq_len: usize,
        batch: usize,
        mut h: Var<T>,
        mut c: Var<T>,
    ) -> Result<Run<T>> {
        let features = seq.shape()[2];
        // All the input-to-hidden products of the sequence in one GEMM.
        let xw = fused::linear(&seq.reshape(&[seq_len * batch, features])?, &w.weight_ih, Some(&w.bias_ih))?;
        // The recurrent mask: one reservation now; every step replays it.
        let numel = batch * self.hidden_size;
        let mask: Option<(f64, Generator)> = self.recurrent_dropout.draw_with(|p, gen| {
            (p > 0.0).then(|| {
                let at = gen.clone();
                gen.reserve(numel as u64);
                (p, at)
            })
        });
        let mut outputs = Vec::with_capacity(seq_len);
        for t in 0..seq_len {
            let h_in = match &mask {
                Some((p, at)) => dropout(&h, *p, &mut at.clone())?,
                None => h.clone(),
            };
            let gi = xw.narrow(0, t * batch, batch)?;
            let gh = fused::linear(&h_in, &w.weight_hh, Some(&w.bias_hh))?;
            (h, c) = match self.cell {
                Cell::Lstm => lstm::step(&gi, &gh, &c, self.hidden_size)?,
                Cell::Gru => (gru::step(&gi, &gh, &h, self.hidden_size)?, c),
            };
            outputs.push(h.clone());
        }
        let output = Var::stack(&outputs.iter().collect::<Vec<_>>(), 0)?;
        Ok(Run { output, h_n: h, c_n: (self.cell == Cell::Lstm).then_some(c) })
    }
}

impl<T: Float> Visit<T> for Recurrent<T> {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<T>)) {
        for (l, w) in self.layers.iter().enumerate() {
            f(&join(prefix, &format!("weight_ih_l{l}")), &w.weight_ih);
            f(&join(prefix, &format!("weight_hh_l{l}")), &w.weight_hh);
            f(&join(prefix, &format!("bias_ih_l{l}")), &w.bias_ih);
            f(&join(prefix, &format!("bias_hh_l{l}")), &w.bias_hh);
        }
    }

    fn visit_generators(&self, prefix: &str, f: &mut dyn FnMut(&str, &GeneratorSlot)) {
        for (name, d) in [
            ("dropout", &self.dropout),
            ("input_dropout", &self.input_dropout),
            ("recurrent_dropout", &self.recurrent_dropout),
            ("output_dropout", &self.output_dropout),
        ] {
            d.visit_generators(&join(prefix, name), f);
        }
    }

    fn set_mode(&mut self, change: ModeChange) {
        for d in [&mut self.dropout, &mut self.input_dropout, &mut self.recurrent_dropout, &mut self.output_dropout] {
            d.set_mode(change);
        }
    }

    fn visit_modes(&self, f: &mut dyn FnMut(Mode)) {
        for d in [&self.dropout, &self.input_dropout, &self.recurrent_dropout, &self.output_dropout] {
            d.visit_modes(f);
        }
    }

    fn fmt_module(&self, f: &mut fmt::Formatter<'_>, _: usize) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<T: Float> fmt::Display for Recurrent<T> {
    /// PyTorch's repr (`LSTM(10, 20, num_layers=2, batch_first=True, dropout=0.5)`), then the
    /// variational rates that are not 0.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}, {}", self.cell.op(), self.input_size, self.hidden_size)?;
        if self.layers.len() != 1 {
            write!(f, ", num_layers={}", self.layers.len())?;
        }
        if self.batch_first {
            write!(f, ", batch_first=True")?;
        }
        for (what, d) in [
            ("dropout", &self.dropout),
            ("input_dropout", &self.input_dropout),
            ("recurrent_dropout", &self.recurrent_dropout),
            ("output_dropout", &self.output_dropout),
        ] {
            if d.p() != 0.0 {
                write!(f, ", {what}={}", d.p())?;
            }
        }
        write!(f, ")")
    }
}
