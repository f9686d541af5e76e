//! `Module`: the trait every layer and every model implements, and `Visit`, the recursive walk
//! over parameters, buffers, counters, generators, train / eval modes and the printed form.
//!
//! The two are split so that the walk can be derived and `forward` written by hand:
//! `#[derive(Module)]` implements [`Visit`] (and `Display`), never [`Module`] itself. It visits
//! the fields in declaration order: a child field (a layer, a model, a `Var`, or a `Vec`,
//! `Option` or `Box` of them) contributes its parameters and buffers under the field's name
//! (`"fc1.weight"`, `"layers.0.bias"`), its modes, and a `(name): ...` line of the printed tree.
//! `#[module(skip)]` leaves a field out, `#[module(buffer)]` makes a `Var` a buffer,
//! `#[module(mode)]` marks the [`Mode`] a layer keeps, `#[module(flatten)]` visits a field under
//! the parent's own names, `#[module(no_print)]` keeps a child out of the printed tree, and
//! `#[module(display = false)]` on the struct keeps the type's own `Display`; the exact rules
//! are in [`derive@crate::Module`]'s docs. nn's own layers use the same derive, except
//! [`Sequential`](crate::Sequential) (a list of boxed modules printed under its own name).
//!
//! ```
//! use tapegrad_nn::{Dropout, Linear, Module, Result, Var};
//! use tapegrad_tensor::{Generator, Tensor};
//!
//! #[derive(tapegrad_nn::Module)]
//! struct Mlp { fc1: Linear, drop: Dropout, fc2: Linear }
//!
//! impl Module for Mlp {
//!     fn forward(&self, x: &Var) -> Result<Var> {
//!         let h = self.fc1.forward(x)?.relu();
//!         self.fc2.forward(&self.drop.forward(&h)?)
//!     }
//! }
//!
//! let mut gen = Generator::new(0);
//! let mut model = Mlp { fc1: Linear::new(4, 8, &mut gen), drop: Dropout::new(0.5)?, fc2: Linear::new(8, 2, &mut gen) };
//! let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
//! model.eval();
//! assert!(!model.is_training());
//! # Ok::<(), tapegrad_nn::Error>(())
//! ```
//!
//! A layer with more than parameters says what each field is:
//!
//! ```
//! use std::fmt;
//! use tapegrad_nn::{Mode, Module, Result, Var};
//! use tapegrad_tensor::Tensor;
//!
//! /// Scales its input; in eval mode it first subtracts a running mean.
//! #[derive(tapegrad_nn::Module)]
//! #[module(display = false)]
//! struct Center {
//!     scale: Var,
//!     #[module(buffer)]
//!     running_mean: Var,
//!     #[module(mode)]
//!     mode: Mode,
//!     #[module(skip)]
//!     width: usize,
//! }
//!
//! impl fmt::Display for Center {
//!     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
//!         write!(f, "Center({})", self.width)
//!     }
//! }
//!
//! impl Module for Center {
//!     fn forward(&self, x: &Var) -> Result<Var> {
//!         let x = if self.mode.training { x.clone() } else { x.sub(&self.running_mean)? };
//!         Ok(x.mul(&self.scale)?)
//!     }
//! }
//!
//! let mut c = Center {
//!     scale: Var::parameter(Tensor::ones(&[3])),
//!     running_mean: Var::new(Tensor::zeros(&[3])),
//!     mode: Mode::default(),
//!     width: 3,
//! };
//! assert_eq!(c.named_parameters()[0].0, "scale");
//! assert_eq!(c.named_buffers()[0].0, "running_mean");
//! c.eval();
//! assert!(!c.is_training());
//! assert_eq!(c.to_string(), "Center(3)");
//! # Ok::<(), tapegrad_nn::Error>(())
//! ```

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tapegrad_autograd::{thread_stream_seed, with_default_generator, Var};
use tapegrad_tensor::{Float, Generator, Result};

/// A change of mode, sent down the module tree by [`Module::train`], [`Module::eval`] and
/// [`Module::mc_dropout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeChange {
    /// Training mode: dropout samples, BatchNorm uses batch statistics and updates its running
    /// ones.
    Train,
    /// Evaluation mode, the deterministic network: dropout is the identity (Monte Carlo dropout
    /// is switched off too), BatchNorm uses its running statistics.
    Eval,
    /// Monte Carlo dropout on or off: while on, dropout layers keep sampling in eval mode (and
    /// nothing else changes: BatchNorm stays as it is).
    McDropout(bool),
}

/// The mode state a layer keeps: whether it is training, whether Monte Carlo dropout is on, and
/// whether the layer is a dropout layer (for which MC dropout means sampling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// True in training mode (the default for a new layer, as in PyTorch).
    pub training: bool,
    /// True while Monte Carlo dropout is switched on (set by [`Module::mc_dropout`], cleared
    /// by [`Module::eval`]). Layers other than dropout keep it and ignore it.
    pub mc_dropout: bool,
    /// True for the mode of a dropout layer ([`Mode::dropout`]), false for every other layer
    /// ([`Mode::default`]): how [`mc_predict`](crate::mc_predict) tells the layers it may make
    /// sample from those that must stay in eval.
    pub is_dropout: bool,
}

impl Default for Mode {
    /// The mode of a new layer that is not a dropout layer: training.
    fn default() -> Self {
        Mode { training: true, mc_dropout: false, is_dropout: false }
    }
}

impl Mode {
    /// The mode of a new dropout layer: training, MC dropout off.
    pub fn dropout() -> Mode {
        Mode { is_dropout: true, ..Mode::default() }
    }

    /// Applies a change. `Eval` also switches Monte Carlo dropout off, so that `eval()` always
    /// gives the deterministic network; switch it on again after `eval()`.
    pub fn apply(&mut self, change: ModeChange) {
        match change {
            ModeChange::Train => self.training = true,
            ModeChange::Eval => {
                self.training = false;
                self.mc_dropout = false;
            }
            ModeChange::McDropout(on) => self.mc_dropout = on,
        }
    }

    /// True when a dropout layer in this mode samples: in training, with MC dropout on, or,
    /// for a dropout layer's mode, while [`mc_predict`](crate::mc_predict) runs on this thread.
    pub fn dropout_active(&self) -> bool {
        self.training || self.mc_dropout || (self.is_dropout && MC_PREDICT.with(Cell::get))
    }
}

thread_local! {
    /// True while `mc_predict` runs its forward passes on this thread.
    static MC_PREDICT: Cell<bool> = const { Cell::new(false) };
}

/// While alive, the dropout layers' modes report [`Mode::dropout_active`] on this thread (and
/// nothing else changes); restores the previous state when dropped, also on a panic.
pub(crate) struct McSampling(bool);

impl McSampling {
    pub(crate) fn start() -> McSampling {
        McSampling(MC_PREDICT.with(|m| m.replace(true)))
    }
}

impl Drop for McSampling {
    fn drop(&mut self) {
        MC_PREDICT.with(|m| m.set(self.0));
    }
}

/// Joins a parent's prefix and a child's name with a dot: `("fc1", "weight")` → `"fc1.weight"`.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The recursive walk over a module tree: parameters, buffers, modes and the printed form.
///
/// `#[derive(Module)]` writes it for a struct (see [`derive@crate::Module`] for what each field
/// contributes); this file implements it for `Var` (one parameter, named by its prefix),
/// `Vec` (elements named `0`, `1`, ...), `Option` and `Box`. Write it by hand only for a shape
/// the derive does not cover, such as a list of boxed modules printed under its own name.
///
/// A field of plain data written as a primitive, `String` or a container of those needs no
/// attribute; a field of a type of your own that is not a module needs `#[module(skip)]`, and
/// without it the compiler says "`Config` is not a module, a parameter or a list of them" with
/// a note suggesting the attribute:
///
/// ```compile_fail,E0277
/// use tapegrad_nn::{Linear, Module, Result, Var};
/// struct Config { hidden: usize }
/// #[derive(Module)]
/// struct Model { fc: Linear, config: Config } // `#[module(skip)] config: Config` compiles
/// impl Module for Model {
///     fn forward(&self, x: &Var) -> Result<Var> { self.fc.forward(x) }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a module, a parameter or a list of them (it does not implement `Visit<{T}>`)",
    label = "not a module or a parameter",
    note = "a field of a `#[derive(Module)]` struct that holds plain data (a size, a flag, a config) \
            needs `#[module(skip)]` unless its type is written as a primitive, `String`, or an \
            `Option` / `Vec` / array / tuple of those, which are skipped on their own"
)]
pub trait Visit<T: Float = f32> {
    /// Calls `f(name, parameter)` for every parameter, names dotted from `prefix`.
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<T>));

    /// Calls `f(name, buffer)` for every buffer (state that is saved but not trained, such as
    /// BatchNorm's running statistics).
    fn visit_buffers(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Var<T>)) {}

    /// Calls `f(name, counter)` for every [`Counter`]: integer state saved with the model, such
    /// as BatchNorm's `num_batches_tracked`.
    fn visit_counters(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Counter)) {}

    /// Calls `f(name, slot)` for every [`GeneratorSlot`]: where a layer that draws random
    /// numbers (every dropout layer, also those inside attention and recurrent layers) keeps its
    /// own generator, or none.
    fn visit_generators(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &GeneratorSlot)) {}

    /// Applies a mode change to this module and everything below it.
    fn set_mode(&mut self, change: ModeChange);

    /// Calls `f` with the mode of every layer below (and including) this one that keeps one.
    fn visit_modes(&self, f: &mut dyn FnMut(Mode));

    /// Writes the module like PyTorch's `print(model)`, children indented by `indent` levels.
    fn fmt_module(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result;
}

/// A layer or a model: something with a `forward` and a tree of parameters.
///
/// Implement `forward` by hand; `#[derive(Module)]` writes the [`Visit`] supertrait (not this
/// trait). All the provided methods are built on `Visit` and recurse over children, including
/// those in `Vec`s and `Option`s.
///
/// # Inputs other than one `Var`
///
/// `I` is what `forward` takes, one [`Var`] unless the model says otherwise (`impl Module for
/// Mlp` means `Module<f32, Var<f32>>`, whose `forward` takes `&Var`). A model whose forward
/// takes token ids, or several tensors, implements the trait for that input instead: `impl
/// Module<f32, Ids> for Tagger` (see [`Ids`](crate::Ids)), `impl Module<f32, (Var, Var)> for
/// Siamese` (called as `model.forward(&(a, b))`, `Var`s being cheap to clone). Everything else
/// (parameters, `train()`, saving, optimisers) is the same. Implement it for one input type
/// per model: with two, `model.parameters()` no longer knows which impl is meant (give the
/// second input an inherent method, as [`Embedding::forward_ids`](crate::Embedding::forward_ids)
/// does). [`Sequential`](crate::Sequential), [`mc_predict`](crate::mc_predict) and the layers
/// chain `Var`s, so they take modules of one `Var`.
///
/// ```
/// use tapegrad_nn::{Ids, Embedding, Linear, Module, Result, Var};
/// use tapegrad_tensor::Generator;
///
/// /// Token ids and a per-sequence feature in, one score per sequence out.
/// #[derive(tapegrad_nn::Module)]
/// struct Scorer { embed: Embedding, head: Linear }
///
/// impl Module<f32, (Ids, Var)> for Scorer {
///     fn forward(&self, (ids, feature): &(Ids, Var)) -> Result<Var> {
///         let pooled = self.embed.forward_ids(ids)?.mean(&[1], false)?; // [batch, 4]
///         self.head.forward(&Var::cat(&[&pooled, feature], 1)?)
///     }
/// }
///
/// let mut gen = Generator::new(0);
/// let model = Scorer { embed: Embedding::new(10, 4, &mut gen), head: Linear::new(5, 1, &mut gen) };
/// let ids = Ids::new(vec![1, 2, 3, 4, 5, 6], &[2, 3])?;
/// let feature = Var::new(tapegrad_tensor::Tensor::ones(&[2, 1]));
/// let y = model.forward(&(ids, feature))?;
/// assert_eq!(y.shape(), [2, 1]);
/// y.sum_all().backward()?;
/// assert!(model.parameters().iter().all(|p| p.grad().is_some()));
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub trait Module<T: Float = f32, I: ?Sized = Var<T>>: Visit<T> {
    /// Applies the module to `x`.
    ///
    /// # Errors
    /// Shape errors naming the op and the shapes; whatever the layers return.
    fn forward(&self, x: &I) -> Result<Var<T>>;

    /// How this module stands to max pooling, for [`Sequential`](crate::Sequential)'s
    /// reordering (see [`PoolOrder`]). Every module but `ReLU`, `Dropout2d` and `MaxPool2d`
    /// keeps the default, [`PoolOrder::Other`].
    #[doc(hidden)]
    fn pool_order(&self) -> PoolOrder {
        PoolOrder::Other
    }

    /// This module followed by a max pooling of `pool = [kernel, stride, padding]`, as one fused
    /// op, with the same values and gradients as the two in turn; `None` when the module has no
    /// such fused form (the default: only `Conv2d` has one). [`Sequential`](crate::Sequential)
    /// runs a layer and the `MaxPool2d` after it this way.
    #[doc(hidden)]
    fn forward_max_pool(&self, x: &I, pool: [usize; 3]) -> Option<Result<Var<T>>> {
        let _ = (x, pool);
        None
    }

    /// Every parameter, in declaration order.
    fn parameters(&self) -> Vec<Var<T>> {
        let mut out = vec![];
        self.visit_parameters("", &mut |_, p| out.push(p.clone()));
        out
    }

    /// Every parameter with its dotted path (`"fc1.weight"`, `"layers.1.bias"`).
    fn named_parameters(&self) -> Vec<(String, Var<T>)> {
        let mut out = vec![];
        self.visit_parameters("", &mut |name, p| out.push((name.to_string(), p.clone())));
        out
    }

    /// Every buffer with its dotted path (`"bn.running_mean"`).
    fn named_buffers(&self) -> Vec<(String, Var<T>)> {
        let mut out = vec![];
        self.visit_buffers("", &mut |name, b| out.push((name.to_string(), b.clone())));
        out
    }

    /// Every [`Counter`] with its dotted path and its value (`"bn.num_batches_tracked"`): the
    /// integer buffers, which [`named_buffers`](Module::named_buffers) (tensors) leaves out.
    fn named_counters(&self) -> Vec<(String, u64)> {
        let mut out = vec![];
        self.visit_counters("", &mut |name, c| out.push((name.to_string(), c.get())));
        out
    }

    /// Every generator a layer of this module owns (given with `with_generator`, or by
    /// [`seed_generators`](Module::seed_generators)), with its layer's dotted path
    /// (`"encoder.self_attn.dropout"`), as copies. Layers that draw from the thread's default
    /// generator are not listed: that one is `tapegrad_autograd::default_generator_state`.
    /// [`TrainingCheckpoint::with_model`](crate::TrainingCheckpoint::with_model) saves these.
    fn named_generators(&self) -> Vec<(String, Generator)> {
        let mut out = vec![];
        self.visit_generators("", &mut |name, slot| {
            if let Some(gen) = slot.get() {
                out.push((name.to_string(), gen));
            }
        });
        out
    }

    /// Gives every layer that draws random numbers a generator of its own: the `k`-th slot in
    /// visiting order (`k` = 0, 1, ...) gets `Generator::new(thread_stream_seed(seed ^
    /// LAYER_STREAMS, k + 1))` ([`LAYER_STREAMS`], `tapegrad_autograd::thread_stream_seed`),
    /// streams distinct from each other and from every thread's default generator. The model's
    /// masks then depend on `seed` alone: not on other draws, nor on the thread a forward runs
    /// on (each thread's default generator is distinct), which a model trained inside a thread
    /// pool needs in order to be reproducible. Replaces the generators the layers had.
    ///
    /// ```
    /// use tapegrad_nn::{Module, TransformerEncoderLayer, Var};
    /// use tapegrad_tensor::{Generator, Tensor};
    /// let mut layer: TransformerEncoderLayer = TransformerEncoderLayer::new(8, 2, 16, 0.5, &mut Generator::new(0))?;
    /// layer.seed_generators(3);
    /// let names: Vec<String> = layer.named_generators().into_iter().map(|(n, _)| n).collect();
    /// assert_eq!(names, ["self_attn.dropout", "dropout", "dropout1", "dropout2"]);
    /// let x = Var::new(Tensor::ones(&[1, 4, 8]));
    /// let saved = layer.named_generators();
    /// let first = layer.forward(&x)?.value().to_vec();
    /// layer.seed_generators(3); // the same generators, so the same masks again
    /// assert_eq!(layer.named_generators(), saved);
    /// assert_eq!(layer.forward(&x)?.value().to_vec(), first);
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    fn seed_generators(&mut self, seed: u64) {
        let mut k = 0u64;
        self.visit_generators("", &mut |_, slot| {
            k += 1;
            slot.set(Some(Generator::new(thread_stream_seed(seed ^ LAYER_STREAMS, k))));
        });
    }

    /// Switches every layer to training mode.
    fn train(&mut self) {
        self.set_mode(ModeChange::Train);
    }

    /// Switches every layer to evaluation mode, the deterministic network: dropout is the
    /// identity (Monte Carlo dropout is switched off as well) and BatchNorm uses its running
    /// statistics.
    fn eval(&mut self) {
        self.set_mode(ModeChange::Eval);
    }

    /// Switches Monte Carlo dropout on or off in every dropout layer: while on, dropout keeps
    /// sampling in eval mode; BatchNorm and the rest follow train / eval as usual. A later
    /// [`eval`](Module::eval) switches it off again. ([`mc_predict`](crate::mc_predict) needs no
    /// switch: it makes the dropout layers sample by itself.)
    fn mc_dropout(&mut self, on: bool) {
        self.set_mode(ModeChange::McDropout(on));
    }

    /// True when any layer is in training mode (a module with no mode-keeping layer counts as
    /// training, like a fresh PyTorch module).
    fn is_training(&self) -> bool {
        let (mut any, mut seen) = (false, false);
        self.visit_modes(&mut |m| {
            seen = true;
            any |= m.training;
        });
        any || !seen
    }

    /// Clears every parameter's gradient.
    fn zero_grad(&self) {
        self.visit_parameters("", &mut |_, p| p.zero_grad());
    }
}

// ─── Visit for the building blocks of a model struct ───────────────────────────

/// A `Var` field is a parameter.
impl<T: Float> Visit<T> for Var<T> {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<T>)) {
        f(prefix, self);
    }
    fn set_mode(&mut self, _: ModeChange) {}
    fn visit_modes(&self, _: &mut dyn FnMut(Mode)) {}
    fn fmt_module(&self, f: &mut fmt::Formatter<'_>, _: usize) -> fmt::Result {
        write!(f, "Parameter(shape={:?})", self.shape())
    }
}

/// A count a layer keeps as part of its state, saved with the model as a 64-bit integer (dtype
/// `I64`, shape `[]`): BatchNorm's `num_batches_tracked`, PyTorch's `int64` buffer. A field of
/// this type in a `#[derive(Module)]` struct is visited by [`Visit::visit_counters`] under the
/// field's name. Cloning shares the count, as cloning a [`Var`] shares its value, and the
/// layer's `forward` (which takes `&self`) can advance it.
///
/// ```
/// use tapegrad_nn::module::Counter;
/// let c = Counter::new(2);
/// let shared = c.clone();
/// c.increment();
/// assert_eq!(shared.get(), 3);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// A counter holding `value`.
    pub fn new(value: u64) -> Counter {
        Counter(Arc::new(AtomicU64::new(value)))
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the count (what loading a checkpoint does).
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Adds one (saturating at `u64::MAX`).
    pub fn increment(&self) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_add(1)));
    }
}

/// A `Counter` field is one counter, named by its prefix.
impl<T: Float> Visit<T> for Counter {
    fn visit_parameters(&self, _: &str, _: &mut dyn FnMut(&str, &Var<T>)) {}
    fn visit_counters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Counter)) {
        f(prefix, self);
    }
    fn set_mode(&mut self, _: ModeChange) {}
    fn visit_modes(&self, _: &mut dyn FnMut(Mode)) {}
    fn fmt_module(&self, f: &mut fmt::Formatter<'_>, _: usize) -> fmt::Result {
        write!(f, "Counter({})", self.get())
    }
}

/// Mixed into the seed of [`Module::seed_generators`], so that the layers' streams differ from
/// the threads' default streams that `manual_seed` derives from the same seed.
pub const LAYER_STREAMS: u64 = 0x6c61_7965_7273_2e2e;

/// Where a layer keeps the generator it draws random numbers from: its own, or none, and then
/// the thread's default generator (seeded by `manual_seed`). Every dropout layer has one, and
/// [`Visit::visit_generators`] reaches it under the layer's name, so that a model's generators
/// can be listed, reseeded, saved and restored ([`Module::named_generators`],
/// [`Module::seed_generators`], [`TrainingCheckpoint`](crate::TrainingCheckpoint)) without
/// knowing where its layers are.
///
/// ```
/// use tapegrad_nn::module::GeneratorSlot;
/// use tapegrad_tensor::Generator;
/// let slot = GeneratorSlot::new(None);
/// assert!(slot.get().is_none()); // draws from the thread's default generator
/// slot.set(Some(Generator::new(4)));
/// let first = slot.with(|gen| gen.next_u64());
/// assert_eq!(first, Generator::new(4).next_u64());
/// assert!(slot.get().is_some_and(|gen| gen.offset() > 0)); // the draw advanced it
/// ```
#[derive(Debug, Default)]
pub struct GeneratorSlot(Mutex<Option<Generator>>);

impl GeneratorSlot {
    /// A slot holding `gen`, or none (the thread's default generator is used).
    pub fn new(gen: Option<Generator>) -> GeneratorSlot {
        GeneratorSlot(Mutex::new(gen))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Generator>> {
        // A draw that panicked leaves a generator that is still a valid state.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the layer's own generator, `None` when it draws from the thread's default one.
    pub fn get(&self) -> Option<Generator> {
        self.lock().clone()
    }

    /// Gives the layer `gen` as its own generator, or (`None`) makes it draw from the thread's
    /// default one.
    pub fn set(&self, gen: Option<Generator>) {
        *self.lock() = gen;
    }

    /// Runs `f` on the layer's own generator, or else on the thread's default one.
    pub fn with<R>(&self, f: impl FnOnce(&mut Generator) -> R) -> R {
        let mut own = self.lock();
        match own.as_mut() {
            Some(gen) => f(gen),
            None => {
                drop(own);
                with_default_generator(f)
            }
        }
    }
}

/// A `GeneratorSlot` field is one generator slot, named by its prefix.
impl<T: Float> Visit<T> for GeneratorSlot {
    fn visit_parameters(&self, _: &str, _: &mut dyn FnMut(&str, &Var<T>)) {}
    fn visit_generators(&self, prefix: &str, f: &mut dyn FnMut(&str, &GeneratorSlot)) {
        f(prefix, self);
    }
    fn set_mode(&mut self, _: ModeChange) {}
    fn visit_modes(&self, _: &mut dyn FnMut(Mode)) {}
    fn fmt_module(&self, f: &mut fmt::Formatter<'_>, _: usize) -> fmt::Result {
        match self.get() {
            Some(gen) => write!(f, "Generator(seed={}, offset={})", gen.seed(), gen.offset()),
            None => write!(f, "Generator(default)"),
        }
    }
}

impl<T: Float, M: Visit<T>> Visit<T> for Vec<M> {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<T>)) {
        for (i, m) in self.iter().enumerate() {
            m.visit_parameters(&join(prefix, &i.to_string()), f);
        }
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<T>)) {
        for (i, m) in self.iter().enumerate() {
            m.visit_buffers(&join(prefix, &i.to_string()), f);
        }
    }
    fn visit_counters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Counter)) {
        for (i, m) in self.iter().enumerate() {
            m.visit_counters(&join(prefix, &i.to_string()), f);
        }
    }
    fn visit_generators(&self, prefix: &str, f: &mut dyn FnMut(&str, &GeneratorSlot)) {
        for (i, m) in self.iter().enumerate() {
            m.visit_generators(&join(prefix, &i.to_string()), f);
        }
    }
    fn set_mode(&mut self, change: ModeChange) {
        for m in self {
            m.set_mode(change);
        }
    }
    fn visit_modes(&self, f: &mut dyn FnMut(Mode)) {
        for m in self {
            m.visit_modes(f);
        }
    }
    fn fmt_module(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        writeln!(f, "ModuleList(")?;
        for (i, m) in self.iter().enumerate() {
            write!(f, "{}({i}): ", "  ".repeat(indent + 1))?;
            m.fmt_module(f, indent + 1)?;
            writeln!(f)?;
        }
        write!(f, "{})", "  ".repeat(indent))
    }
}

impl<T: Float, M: Visit<T>> Visit<T> for Option<M> {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<T>)) {
        if let Some(m) = self {
            m.visit_parameters(prefix, f);
        }
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<T>)) {
        if let Some(m) = self {
            m.visit_buffers(prefix, f);
        }
    }
    fn visit_counters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Counter)) {
        if let Some(m) = self {
            m.visit_counters(prefix, f);
        }
    }
    fn visit_generators(&self, prefix: &str, f: &mut dyn FnMut(&str, &GeneratorSlot)) {
        if let Some(m) = self {
            m.visit_generators(prefix, f);
        }
    }
    fn set_mode(&mut self, change: ModeChange) {
        if let Some(m) = self {
            m.set_mode(change);
        }
    }
    fn visit_modes(&self, f: &mut dyn FnMut(Mode)) {
        if let Some(m) = self {
            m.visit_modes(f);
        }
    }
    fn fmt_module(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        match self {
            Some(m) => m.fmt_module(f, indent),
            None => write!(f, "None"),
        }
    }
}

impl<T: Float, M: Visit<T> + ?Sized> Visit<T> for Box<M> {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<T>)) {
        (**self).visit_parameters(prefix, f);
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<T>)) {
        (**self).visit_buffers(prefix, f);
    }
    fn visit_counters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Counter)) {
        (**self).visit_counters(prefix, f);
    }
    fn visit_generators(&self, prefix: &str, f: &mut dyn FnMut(&str, &GeneratorSlot)) {
        (**self).visit_generators(prefix, f);
    }
    fn set_mode(&mut self, change: ModeChange) {
        (**self).set_mode(change);
    }
    fn visit_modes(&self, f: &mut dyn FnMut(Mode)) {
        (**self).visit_modes(f);
    }
    fn fmt_module(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        (**self).fmt_module(f, indent)
    }
}

impl<T: Float, I: ?Sized, M: Module<T, I> + ?Sized> Module<T, I> for Box<M> {
    fn forward(&self, x: &I) -> Result<Var<T>> {
        (**self).forward(x)
    }
    fn pool_order(&self) -> PoolOrder {
        (**self).pool_order()
    }
    fn forward_max_pool(&self, x: &I, pool: [usize; 3]) -> Option<Result<Var<T>>> {
        (**self).forward_max_pool(x, pool)
    }
}

/// How a module stands to max pooling ([`Module::pool_order`]), for
/// [`Sequential`](crate::Sequential): a run of modules that commute with max pooling, followed
/// by a max pool, runs the pool first, so that the run works on the pooled tensor (a quarter of
/// the elements for 2 x 2 windows). `max_pool(f(x))` and `f(max_pool(x))` are the same values for
/// a function `f` that maps each element (or each channel, with one factor) through a
/// non-decreasing function and draws no more random numbers for a larger input: ReLU, and
/// Dropout2d (a factor 0 or `1 / (1 - p)` per channel, drawn per channel); a zero's sign may
/// differ where a dropped channel mixed signs. The gradients are the same too: where `f`'s
/// backward zeroes a window's maximum, it zeroes the one position the pool routes it to.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolOrder {
    /// A max pool of `[kernel, stride, padding]`.
    MaxPool([usize; 3]),
    /// Commutes with a following max pool.
    Commutes,
    /// Neither: runs in order.
    Other,
}
