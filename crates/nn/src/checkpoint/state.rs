//! State dicts: what a model, an optimiser, a scheduler or a generator needs to carry on exactly
//! where it stopped, as named tensors plus named small values, like PyTorch's `state_dict()`.
//!
//! [`Stateful`] is implemented by the optimisers ([`Sgd`](crate::optim::Sgd),
//! [`Adam`](crate::optim::Adam), [`AdamW`](crate::optim::AdamW)), the schedulers
//! ([`StepLr`](crate::optim::StepLr), [`CosineLr`](crate::optim::CosineLr)), [`Generator`] and
//! [`Position`]; a model's state dict is [`state_dict`] / [`load_state_dict`] (a model is any
//! [`Visit`]). [`TrainingCheckpoint`](crate::TrainingCheckpoint) saves several of them to one file.

use std::collections::BTreeMap;
use std::str::FromStr;

use safetensors::Dtype;
use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};

use super::dtype;
use super::fit::{duplicate, misfits, slots, Slot};
use crate::layers::Dropout;
use crate::module::{join, Visit};

/// Named tensors and named values (numbers and flags written as text, exactly: an `f64` is
/// written by `Display`, which reads back to the same bits): the state of one part of a
/// training run, as PyTorch's `state_dict()` returns.
///
/// Every state dict this crate makes has a `"kind"` value naming what it belongs to (`"model"`,
/// `"SGD"`, `"Adam"`, `"AdamW"`, `"StepLR"`, `"CosineAnnealingLR"`, `"Generator"`,
/// `"Position"`), which `load_state_dict` checks first.
///
/// ```
/// use tapegrad_nn::{Stateful, StateDict};
/// use tapegrad_tensor::Generator;
/// let mut gen = Generator::new(7);
/// gen.next_u64();
/// let state: StateDict = gen.state_dict();
/// assert_eq!(state.values["kind"], "Generator");
/// let mut other = Generator::new(0);
/// other.load_state_dict(&state)?;
/// assert_eq!(other, gen);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct StateDict<T: Float = f32> {
    /// The tensors, by name (`"exp_avg.0"`, `"fc1.weight"`).
    pub tensors: BTreeMap<String, Tensor<T>>,
    /// The small values, by name (`"kind"`, `"lr"`, `"step.0"`), as text.
    pub values: BTreeMap<String, String>,
}

impl<T: Float> StateDict<T> {
    /// An empty state dict of kind `kind`.
    pub fn of_kind(kind: &str) -> StateDict<T> {
        let mut s = StateDict { tensors: BTreeMap::new(), values: BTreeMap::new() };
        s.set("kind", kind);
        s
    }

    /// The `"kind"` value, if any.
    pub fn kind(&self) -> Option<&str> {
        self.values.get("kind").map(String::as_str)
    }

    /// Sets value `key` to `value`'s text.
    pub fn set(&mut self, key: &str, value: impl ToString) {
        self.values.insert(key.to_string(), value.to_string());
    }

    /// `Err` naming `op` unless the kind is `kind`.
    pub(crate) fn expect_kind(&self, op: &'static str, kind: &str) -> Result<()> {
        match self.kind() {
            Some(k) if k == kind => Ok(()),
            Some(k) => Err(Error::arg(op, format!("the state is of a {k}, not of a {kind}"))),
            None => Err(Error::arg(op, format!("the state has no \"kind\" value; expected the state of a {kind}"))),
        }
    }

    /// Value `key` parsed as a `V`; `Err` naming `op` and the key when it is missing or does
    /// not parse.
    pub(crate) fn get<V: FromStr>(&self, op: &'static str, key: &str) -> Result<V> {
        let Some(text) = self.values.get(key) else {
            return Err(Error::arg(op, format!("the state has no value {key:?}")));
        };
        text.parse().map_err(|_| {
            let shown: String = text.chars().take(40).collect();
            Error::arg(op, format!("value {key:?} = {shown:?} is not a valid {}", std::any::type_name::<V>()))
        })
    }

    /// `Err` naming `op` and every key that `known` does not accept, values and tensors alike.
    pub(crate) fn refuse_unknown(&self, op: &'static str, known: impl Fn(&str, bool) -> bool) -> Result<()> {
        let mut unknown: Vec<String> =
            self.values.keys().filter(|k| !known(k, false)).map(|k| format!("value {k:?}")).collect();
        unknown.extend(self.tensors.keys().filter(|k| !known(k, true)).map(|k| format!("tensor {k:?}")));
        if unknown.is_empty() {
            Ok(())
        } else {
            unknown.truncate(8);
            Err(Error::arg(op, format!("the state has unexpected entries: {}", unknown.join(", "))))
        }
    }

    /// Tensor `key`, which must have shape `shape`; `None` when absent.
    pub(crate) fn tensor_of_shape(&self, op: &'static str, key: &str, shape: &[usize]) -> Result<Option<Vec<T>>> {
        let Some(t) = self.tensors.get(key) else { return Ok(None) };
        if t.shape() != shape {
            return Err(Error::mismatch(
                op,
                t.shape(),
                shape,
                format!("tensor {key:?} has shape {:?}, the parameter has shape {shape:?}", t.shape()),
            ));
        }
        Ok(Some(t.to_vec()))
    }

    /// The parameter index `i` of a key `prefix.i`, when `key` has that form with `i < n`.
    pub(crate) fn index_of(key: &str, prefix: &str, n: usize) -> Option<usize> {
        Self::parse_index(key.strip_prefix(prefix)?.strip_prefix('.')?, n)
    }

    /// `text` as an index below `n`, spelled canonically ("3", not "03" or "+3", so that one
    /// index has one key).
    pub(crate) fn parse_index(text: &str, n: usize) -> Option<usize> {
        let i: usize = text.parse().ok()?;
        (i.to_string() == text && i < n).then_some(i)
    }
}

/// Something whose state can be saved and restored exactly: PyTorch's `state_dict()` and
/// `load_state_dict()`.
///
/// `load_state_dict` checks the whole state (its kind, every value, every tensor's shape and
/// that nothing unexpected is present) before changing anything: on an `Err` the object is as
/// it was.
pub trait Stateful<T: Float = f32> {
    /// The state, as a [`StateDict`].
    fn state_dict(&self) -> StateDict<T>;

    /// Restores a state that [`Stateful::state_dict`] of an object of the same kind returned.
    ///
    /// # Errors
    /// An invalid-argument error naming the type and what does not fit: another kind, a
    /// missing or unparsable value, a tensor whose shape differs from the parameter's, a
    /// different number of parameters, an unexpected entry.
    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()>;
}

// ─── generators ────────────────────────────────────────────────────────────────

/// A generator's state: its seed and its offset (see [`Generator::from_state`]).
impl<T: Float> Stateful<T> for Generator {
    fn state_dict(&self) -> StateDict<T> {
        let mut s = StateDict::of_kind("Generator");
        s.set("seed", self.seed());
        s.set("offset", self.offset());
        s
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        const OP: &str = "Generator::load_state_dict";
        state.expect_kind(OP, "Generator")?;
        state.refuse_unknown(OP, |k, tensor| !tensor && ["kind", "seed", "offset"].contains(&k))?;
        let (seed, offset) = (state.get(OP, "seed")?, state.get(OP, "offset")?);
        self.set_state(seed, offset);
        Ok(())
    }
}

// ─── the position in the data ──────────────────────────────────────────────────

/// Where a run is in its data: the epoch (0-based) and the number of batches of it already
/// trained on. With the shuffling generator as it was when the epoch's order was drawn
/// ([`Batches::shuffled_from`](crate::data::Batches::shuffled_from)) it gives back the rest of the
/// epoch with [`Batches::resume_at`](crate::data::Batches::resume_at).
///
/// ```
/// use tapegrad_nn::{Position, Stateful};
/// let mut p = Position::default();
/// p.load_state_dict(&Position { epoch: 3, batch: 5 }.state_dict::<f32>())?;
/// assert_eq!(p, Position { epoch: 3, batch: 5 });
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// The epoch, from 0.
    pub epoch: usize,
    /// Batches of that epoch already trained on.
    pub batch: usize,
}

impl Position {
    /// [`Stateful::state_dict`] with the element type chosen (positions hold no tensors).
    pub fn state_dict<T: Float>(&self) -> StateDict<T> {
        Stateful::<T>::state_dict(self)
    }
}

impl<T: Float> Stateful<T> for Position {
    fn state_dict(&self) -> StateDict<T> {
        let mut s = StateDict::of_kind("Position");
        s.set("epoch", self.epoch);
        s.set("batch", self.batch);
        s
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        const OP: &str = "Position::load_state_dict";
        state.expect_kind(OP, "Position")?;
        state.refuse_unknown(OP, |k, tensor| !tensor && ["kind", "epoch", "batch"].contains(&k))?;
        *self = Position { epoch: state.get(OP, "epoch")?, batch: state.get(OP, "batch")? };
        Ok(())
    }
}

// ─── models ────────────────────────────────────────────────────────────────────

/// A model's state dict: its parameters, then its buffers, by dotted name (the tensors
/// [`save`](crate::save) writes), its counters (BatchNorm's `num_batches_tracked`) as values of
/// the same names, and `kind` `"model"`. The tensors are the values now (cheap handles: a later
/// optimiser step does not change them).
///
/// ```
/// use tapegrad_nn::{load_state_dict, state_dict, Linear};
/// use tapegrad_tensor::Generator;
/// let fc: Linear = Linear::new(3, 2, &mut Generator::new(0));
/// let state = state_dict(&fc);
/// assert_eq!(state.tensors.keys().collect::<Vec<_>>(), ["bias", "weight"]);
/// let mut other: Linear = Linear::new(3, 2, &mut Generator::new(1));
/// load_state_dict(&mut other, &state)?;
/// assert_eq!(other.weight.value().to_vec(), fc.weight.value().to_vec());
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn state_dict<T: Float, M: Visit<T> + ?Sized>(model: &M) -> StateDict<T> {
    let mut s = StateDict::of_kind("model");
    for (name, slot) in slots(model) {
        match slot {
            Slot::Tensor(var) => {
                s.tensors.insert(name, var.value());
            }
            Slot::Counter(c) => s.set(&name, c.get()),
        }
    }
    s
}

/// Writes a model state dict into `model`, all or nothing, with the checks of
/// [`load`](crate::load): the same names, each with the model's shape.
///
/// # Errors
/// An invalid-argument error (op `load_state_dict`) listing every missing name, every
/// unexpected name and every shape mismatch; naming a counter whose value is not a count; or
/// naming a state of another kind.
pub fn load_state_dict<T: Float, M: Visit<T> + ?Sized>(model: &mut M, state_dict: &StateDict<T>) -> Result<()> {
    const OP: &str = "load_state_dict";
    state_dict.expect_kind(OP, "model")?;
    let slots = slots(model);
    if let Some(dup) = duplicate(&slots) {
        return Err(Error::arg(OP, format!("the model has two tensors named {dup:?}")));
    }
    // The values other than "kind" are the counters, integer scalars.
    let counters = state_dict.values.keys().filter(|k| *k != "kind");
    let found: Vec<(&str, Dtype, &[usize])> = (state_dict.tensors.iter())
        .map(|(n, t)| (n.as_str(), dtype::<T>(), t.shape()))
        .chain(counters.map(|n| (n.as_str(), Dtype::I64, &[][..])))
        .collect();
    let report = misfits(&slots, &found);
    if !report.is_empty() {
        return Err(Error::arg(OP, format!("the state does not fit the model: {report}")));
    }
    let mut counts = vec![];
    for (name, slot) in &slots {
        if let Slot::Counter(c) = slot {
            counts.push((c, state_dict.get::<u64>(OP, name)?));
        }
    }
    for (name, slot) in &slots {
        if let (Slot::Tensor(var), Some(t)) = (slot, state_dict.tensors.get(name)) {
            var.set_value(t.clone());
        }
    }
    for (c, count) in counts {
        c.set(count);
    }
    Ok(())
}

// ─── a model's generators ──────────────────────────────────────────────────────

/// The state of every generator `model`'s layers own ([`Module::named_generators`]): kind
/// `"generators"` and, for the layer at path `name`, the values `"name.seed"` and
/// `"name.offset"`. Layers that draw from the thread's default generator have no entry.
/// [`TrainingCheckpoint::with_model`](crate::TrainingCheckpoint::with_model) saves it beside the
/// model's tensors.
///
/// [`Module::named_generators`]: crate::Module::named_generators
///
/// ```
/// use tapegrad_nn::{generators_state_dict, load_generators_state_dict, Dropout, Module, Sequential, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let mut model = Sequential::new().add(Dropout::new(0.5)?).add(Dropout::new(0.5)?);
/// model.seed_generators(1);
/// let state = generators_state_dict(&model);
/// assert!(state.values.contains_key("1.offset"));
/// let x = Var::new(Tensor::ones(&[32]));
/// let first = model.forward(&x)?.value().to_vec();
/// load_generators_state_dict(&model, &state)?; // back to where they were
/// assert_eq!(model.forward(&x)?.value().to_vec(), first);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn generators_state_dict<T: Float, M: Visit<T> + ?Sized>(model: &M) -> StateDict<T> {
    let mut s = StateDict::of_kind("generators");
    model.visit_generators("", &mut |name, slot| {
        if let Some(gen) = slot.get() {
            s.set(&join(name, "seed"), gen.seed());
            s.set(&join(name, "offset"), gen.offset());
        }
    });
    s
}

/// Gives `model`'s layers the generators of a [`generators_state_dict`], all or nothing: every
/// layer named in it gets its generator (also one that drew from the thread's default
/// generator), and a layer that owns a generator must be named in it.
///
/// # Errors
/// An invalid-argument error (op `load_generators_state_dict`) naming the state's entries that
/// no layer of the model draws from, the layers with a generator of their own that the state
/// leaves out, or a value that is not a `u64`; or naming a state of another kind.
pub fn load_generators_state_dict<T: Float, M: Visit<T> + ?Sized>(model: &M, state: &StateDict<T>) -> Result<()> {
    let gens = fit_generators(model, state)?;
    set_generators(model, gens);
    Ok(())
}

/// The generators of `state` by layer name, checked against `model`'s slots as
/// [`load_generators_state_dict`] describes; nothing is changed.
pub(crate) fn fit_generators<T: Float, M: Visit<T> + ?Sized>(
    model: &M,
    state: &StateDict<T>,
) -> Result<BTreeMap<String, Generator>> {
    const OP: &str = "load_generators_state_dict";
    state.expect_kind(OP, "generators")?;
    let mut slots: Vec<(String, bool)> = vec![];
    model.visit_generators("", &mut |name, slot| slots.push((name.to_string(), slot.get().is_some())));
    state.refuse_unknown(OP, |k, tensor| {
        !tensor && (k == "kind" || slots.iter().any(|(n, _)| k == join(n, "seed") || k == join(n, "offset")))
    })?;
    let mut gens = BTreeMap::new();
    let mut missing = vec![];
    for (name, owned) in &slots {
        let (seed, offset) = (join(name, "seed"), join(name, "offset"));
        if state.values.contains_key(&seed) || state.values.contains_key(&offset) {
            gens.insert(name.clone(), Generator::from_state(state.get(OP, &seed)?, state.get(OP, &offset)?));
        } else if *owned {
            missing.push(format!("{name:?}"));
        }
    }
    if !missing.is_empty() {
        return Err(Error::arg(
            OP,
            format!("the state has no generator for the layers {} (they own one)", missing.join(", ")),
        ));
    }
    Ok(gens)
}

/// Gives each layer named in `gens` its generator.
pub(crate) fn set_generators<T: Float, M: Visit<T> + ?Sized>(model: &M, mut gens: BTreeMap<String, Generator>) {
    model.visit_generators("", &mut |name, slot| {
        if let Some(gen) = gens.remove(name) {
            slot.set(Some(gen));
        }
    });
}

// ─── dropout layers' generators ────────────────────────────────────────────────

/// A copy of the generator `layer` draws its masks from: its own (given with
/// [`Dropout::with_generator`]), or else the thread's default one. Save it in a checkpoint
/// (`.with("drop1", &dropout_generator(&model.drop1))`) and give it back with
/// [`set_dropout_generator`].
///
/// ```
/// use tapegrad_nn::{dropout_generator, set_dropout_generator, Dropout, Module};
/// use tapegrad_autograd::Var;
/// use tapegrad_tensor::{Generator, Tensor};
/// let drop: Dropout = Dropout::new(0.5)?.with_generator(Generator::new(4));
/// let x = Var::new(Tensor::ones(&[16]));
/// let saved = dropout_generator(&drop);
/// let first = drop.forward(&x)?.value().to_vec();
/// set_dropout_generator(&drop, saved);
/// assert_eq!(drop.forward(&x)?.value().to_vec(), first);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn dropout_generator<T: Float>(layer: &Dropout<T>) -> Generator {
    layer.generator()
}

/// Replaces the generator `layer` draws its masks from (its own, or else the thread's default
/// one) by `gen`.
pub fn set_dropout_generator<T: Float>(layer: &Dropout<T>, gen: Generator) {
    layer.set_generator(gen);
}
