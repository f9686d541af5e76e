//! [`TrainingCheckpoint`]: everything a training run needs to resume bit for bit, in one
//! safetensors file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tapegrad_autograd::{default_generator_state, set_default_generator_state};
use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};

use super::state::{
    fit_generators, generators_state_dict, load_state_dict, set_generators, state_dict, StateDict, Stateful,
};
use super::{dtype, read, save_with_metadata};
use crate::module::Visit;

/// The part [`TrainingCheckpoint::with_model`] writes a model's generators to.
fn generators_part(model_part: &str) -> String {
    format!("{model_part}.generators")
}

/// The `__metadata__` key that marks a training checkpoint, and its value (the format version).
const FORMAT_KEY: &str = "tapegrad";
const FORMAT: &str = "training-checkpoint/1";

/// The part [`TrainingCheckpoint::with_default_generator`] writes.
pub const DEFAULT_GENERATOR: &str = "default_generator";

/// The state of a whole training run, PyTorch's
/// `torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), ...})`: named parts,
/// each a [`StateDict`] (a model, an optimiser, a scheduler, a generator, the [`Position`] in
/// the data, or any [`Stateful`]), saved to and loaded from one safetensors file.
///
/// In the file, part `p`'s tensor `k` is the tensor `"p/k"` and its value `k` is the
/// `__metadata__` entry `"p/k"`; `__metadata__` also holds `"tapegrad": "training-checkpoint/1"`.
/// See `docs/checkpoints.md` for what resuming reproduces bit for bit.
///
/// [`Position`]: crate::Position
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::optim::{Adam, Optimizer, StepLr};
/// use tapegrad_nn::{Linear, Module, Position, TrainingCheckpoint};
/// use tapegrad_tensor::{Generator, Tensor};
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-train-{}.safetensors", std::process::id()));
/// let model: Linear = Linear::new(3, 2, &mut Generator::new(0));
/// let mut opt = Adam::new(model.parameters(), 1e-3);
/// model.forward(&Var::new(Tensor::ones(&[4, 3])))?.sum_all().backward()?;
/// opt.step()?;
/// let sched = StepLr::new(10, 0.5);
/// TrainingCheckpoint::new()
///     .with_model("model", &model)?
///     .with("optimizer", &opt)?
///     .with("scheduler", &sched)?
///     .with("position", &Position { epoch: 1, batch: 0 })?
///     .save(&path)?;
///
/// let mut model2: Linear = Linear::new(3, 2, &mut Generator::new(1));
/// let mut opt2 = Adam::new(model2.parameters(), 1e-3);
/// let (mut sched2, mut pos) = (StepLr::new(10, 0.5), Position::default());
/// let ckpt = TrainingCheckpoint::load(&path)?;
/// ckpt.restore_model("model", &mut model2)?;
/// ckpt.restore("optimizer", &mut opt2)?;
/// ckpt.restore("scheduler", &mut sched2)?;
/// ckpt.restore("position", &mut pos)?;
/// assert_eq!(model2.weight.value().to_vec(), model.weight.value().to_vec());
/// assert_eq!(pos.epoch, 1);
/// assert!(ckpt.restore("optimizer", &mut sched2).is_err()); // an Adam state is no scheduler's
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct TrainingCheckpoint<T: Float = f32> {
    parts: BTreeMap<String, StateDict<T>>,
    /// The file it was loaded from, named in errors.
    path: Option<PathBuf>,
}

impl TrainingCheckpoint<f32> {
    /// An empty checkpoint (of `f32` tensors; `TrainingCheckpoint::<f64>::default()` for `f64`).
    pub fn new() -> TrainingCheckpoint<f32> {
        TrainingCheckpoint::default()
    }
}

impl<T: Float> TrainingCheckpoint<T> {
    /// Adds (or replaces) part `name`.
    ///
    /// # Errors
    /// An invalid-argument error when `name` is empty or contains `/`.
    pub fn insert(&mut self, name: &str, state: StateDict<T>) -> Result<()> {
        if name.is_empty() || name.contains('/') {
            return Err(Error::arg(
                "TrainingCheckpoint::insert",
                format!("part name {name:?}: it must be non-empty and contain no '/'"),
            ));
        }
        self.parts.insert(name.to_string(), state);
        Ok(())
    }

    /// Adds part `name` with the state of `part` (an optimiser, a scheduler, a generator, a
    /// position).
    ///
    /// # Errors
    /// As [`TrainingCheckpoint::insert`].
    pub fn with(mut self, name: &str, part: &dyn Stateful<T>) -> Result<Self> {
        self.insert(name, part.state_dict())?;
        Ok(self)
    }

    /// Adds part `name` with the state of `model` (its parameters, buffers and counters) and,
    /// when its layers own generators ([`Module::named_generators`]), part `"name.generators"`
    /// with theirs ([`generators_state_dict`](crate::generators_state_dict)), so that the resumed model draws the same masks.
    ///
    /// [`Module::named_generators`]: crate::Module::named_generators
    ///
    /// # Errors
    /// As [`TrainingCheckpoint::insert`].
    pub fn with_model<M: Visit<T> + ?Sized>(mut self, name: &str, model: &M) -> Result<Self> {
        self.insert(name, state_dict(model))?;
        let gens = generators_state_dict(model);
        if gens.values.len() > 1 {
            self.insert(&generators_part(name), gens)?;
        }
        Ok(self)
    }

    /// Adds part `"default_generator"`: this thread's default generator (what `Var::dropout`
    /// and dropout layers without a generator of their own draw from), see
    /// [`default_generator_state`].
    ///
    /// # Errors
    /// When called inside `with_default_generator`.
    pub fn with_default_generator(self) -> Result<Self> {
        let gen = default_generator_state()?;
        self.with(DEFAULT_GENERATOR, &gen)
    }

    /// The names of the parts, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.keys().map(String::as_str)
    }

    /// Part `name`.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] (or an invalid-argument error for a checkpoint not read from a
    /// file) naming the missing part and the parts present.
    pub fn part(&self, name: &str) -> Result<&StateDict<T>> {
        self.parts.get(name).ok_or_else(|| {
            let present: Vec<String> = self.parts.keys().map(|n| format!("{n:?}")).collect();
            self.error(format!("no part {name:?} (the parts are {})", present.join(", ")))
        })
    }

    /// Restores `target` from part `name` with [`Stateful::load_state_dict`]: all or nothing.
    ///
    /// # Errors
    /// A missing part, or whatever `load_state_dict` refuses (another kind, another number of
    /// parameters, another shape, ...), as [`Error::Checkpoint`] naming the file and the part.
    pub fn restore(&self, name: &str, target: &mut dyn Stateful<T>) -> Result<()> {
        target.load_state_dict(self.part(name)?).map_err(|e| self.error(format!("part {name:?}: {e}")))
    }

    /// Restores `model` from part `name` with [`load_state_dict`], and its layers' generators
    /// from part `"name.generators"` when there is one
    /// ([`load_generators_state_dict`](crate::load_generators_state_dict)): all
    /// or nothing.
    ///
    /// # Errors
    /// A missing part, a part whose names or shapes do not fit the model, or generators that do
    /// not fit its layers (also: none saved while its layers own some), as
    /// [`Error::Checkpoint`] naming the file, the part and every mismatch.
    pub fn restore_model<M: Visit<T> + ?Sized>(&self, name: &str, model: &mut M) -> Result<()> {
        let gens_name = generators_part(name);
        let none = StateDict::of_kind("generators");
        // The generators are checked before anything changes, and set once the tensors are in.
        let gens = fit_generators(model, self.parts.get(&gens_name).unwrap_or(&none))
            .map_err(|e| self.error(format!("part {gens_name:?}: {e}")))?;
        load_state_dict(model, self.part(name)?).map_err(|e| self.error(format!("part {name:?}: {e}")))?;
        set_generators(model, gens);
        Ok(())
    }

    /// Generator part `name`, as a [`Generator`].
    ///
    /// # Errors
    /// A missing part, or one that is not a generator's state.
    pub fn generator(&self, name: &str) -> Result<Generator> {
        let mut gen = Generator::new(0);
        self.restore(name, &mut gen)?;
        Ok(gen)
    }

    /// Makes part `"default_generator"` this thread's default generator again (see
    /// [`set_default_generator_state`]).
    ///
    /// # Errors
    /// A missing or invalid part; a call inside `with_default_generator`.
    pub fn restore_default_generator(&self) -> Result<()> {
        set_default_generator_state(self.generator(DEFAULT_GENERATOR)?)
    }

    /// Saves every part to `path`, atomically and durably as [`save`](crate::save) does.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut tensors: Vec<(String, Tensor<T>)> = vec![];
        let mut metadata = HashMap::new();
        metadata.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
        for (part, state) in &self.parts {
            tensors.extend(state.tensors.iter().map(|(k, t)| (format!("{part}/{k}"), t.clone())));
            metadata.extend(state.values.iter().map(|(k, v)| (format!("{part}/{k}"), v.clone())));
        }
        save_with_metadata(&tensors, &[], Some(metadata), path.as_ref())
    }

    /// Loads a checkpoint written by [`TrainingCheckpoint::save`], checking the file as
    /// [`load`](crate::load) does (nothing in it is trusted) and that it is a training
    /// checkpoint of `T`'s dtype. Nothing is restored yet: see [`TrainingCheckpoint::restore`].
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::Format`] when it is not a valid
    /// safetensors file, not a training checkpoint (no `"tapegrad"` metadata, or another
    /// version), holds a tensor of another dtype, or a tensor or value outside every part.
    pub fn load(path: impl AsRef<Path>) -> Result<TrainingCheckpoint<T>> {
        let path = path.as_ref();
        let file = read::Checkpoint::open(path)?;
        match file.metadata.get(FORMAT_KEY) {
            Some(v) if v == FORMAT => {}
            Some(v) => {
                let v: String = v.chars().take(40).collect();
                return Err(Error::format(
                    path,
                    format!("training checkpoint format {v:?}; this build reads {FORMAT:?}"),
                ));
            }
            None => {
                return Err(Error::format(
                    path,
                    format!(
                        "not a training checkpoint: no {FORMAT_KEY:?} metadata (a model file is read with nn::load)"
                    ),
                ))
            }
        }
        let mut parts: BTreeMap<String, StateDict<T>> = BTreeMap::new();
        let split = |name: &str, what: &str| -> Result<(String, String)> {
            match name.split_once('/') {
                Some((part, key)) if !part.is_empty() => Ok((part.to_string(), key.to_string())),
                _ => Err(Error::format(path, format!("{what} {name:?} belongs to no part (names are \"part/key\")"))),
            }
        };
        for (name, value) in &file.metadata {
            if name == FORMAT_KEY {
                continue;
            }
            let (part, key) = split(name, "metadata entry")?;
            parts.entry(part).or_default().values.insert(key, value.clone());
        }
        let mut placed = Vec::with_capacity(file.entries.len());
        for e in &file.entries {
            if e.dtype != dtype::<T>() {
                let reason = format!("tensor {:?} has dtype {:?}, expected {:?}", e.name, e.dtype, dtype::<T>());
                return Err(Error::format(path, reason));
            }
            placed.push(split(&e.name, "tensor")?);
        }
        let mut placed: HashMap<String, (String, String)> =
            file.entries.iter().map(|e| e.name.clone()).zip(placed).collect();
        for (name, tensor) in file.read::<T>()? {
            let Some((part, key)) = placed.remove(&name) else {
                return Err(Error::format(path, format!("tensor {name:?} was not in the header")));
            };
            parts.entry(part).or_default().tensors.insert(key, tensor);
        }
        Ok(TrainingCheckpoint { parts, path: Some(path.to_path_buf()) })
    }

    /// An error about this checkpoint: [`Error::Checkpoint`] naming its file, or an
    /// invalid-argument error when it was not read from one.
    fn error(&self, reason: String) -> Error {
        match &self.path {
            Some(path) => Error::checkpoint(path, reason),
            None => Error::arg("TrainingCheckpoint", reason),
        }
    }
}
