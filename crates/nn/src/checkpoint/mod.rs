//! Checkpoints: a model's parameters and buffers saved to and loaded from a safetensors file.
//!
//! The file is the [safetensors] format that PyTorch and Hugging Face use: an 8-byte
//! little-endian header length, a JSON header mapping each name to its dtype, shape and byte
//! range, then the raw little-endian data. Names are the dotted paths of
//! [`Module::named_parameters`](crate::Module::named_parameters) followed by those of
//! [`Module::named_buffers`](crate::Module::named_buffers) (`"fc1.weight"`,
//! `"bn.running_mean"`) and the counters (`"bn.num_batches_tracked"`, an `I64` scalar), so a
//! model's file lines up with a PyTorch `state_dict` whose names map one to one: [`load`] reads
//! a PyTorch state dict saved with `safetensors.torch.save_file`, converting `F16`, `BF16` and
//! `F64` tensors to the model's type, and PyTorch's strict `load_state_dict` takes a file
//! [`save`] wrote. [`load`] is strict and lists every name that does not fit;
//! [`load_non_strict`] loads what fits and returns a [`LoadReport`].
//!
//! Reading trusts nothing in the file. The header length is checked against the format's
//! 100 MB limit and the file's size before the header is read; the header is parsed into typed
//! entries (no generic JSON tree, so a header of many tiny values costs a small multiple of its
//! size), with at most 64 dims per shape; every shape's size, computed with overflow checks, must
//! equal its byte range, and the ranges must tile the data exactly. Only then is anything
//! allocated for a tensor, and the data is read tensor by tensor, never the whole file at once.
//! A load either writes every tensor or none.
//!
//! [safetensors]: https://huggingface.co/docs/safetensors
//!
//! ```
//! use tapegrad_nn::{Linear, Module};
//! use tapegrad_tensor::Generator;
//! let path = std::env::temp_dir().join(format!("tapegrad-doc-ckpt-{}.safetensors", std::process::id()));
//! let fc: Linear = Linear::new(3, 2, &mut Generator::new(0));
//! tapegrad_nn::save(&fc, &path)?;
//! let mut other: Linear = Linear::new(3, 2, &mut Generator::new(1));
//! tapegrad_nn::load(&mut other, &path)?;
//! assert_eq!(other.weight.value().to_vec(), fc.weight.value().to_vec());
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), tapegrad_nn::Error>(())
//! ```

mod fit;
mod read;
mod state;
mod training;
mod write;

pub use fit::{LoadReport, Mismatch};
pub(crate) use write::write_atomic;

pub use state::{
    dropout_generator, generators_state_dict, load_generators_state_dict, load_state_dict, set_dropout_generator,
    state_dict, Position, StateDict, Stateful,
};
pub use training::TrainingCheckpoint;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use tapegrad_tensor::{Error, Float, Result, Tensor};

use crate::module::Visit;
use fit::Slot;
use read::Values;

// ─── models ────────────────────────────────────────────────────────────────────

/// Saves every parameter and buffer of `model` to `path` in the safetensors format, keyed by
/// their dotted names; dtype `F32` for an `f32` model, `F64` for an `f64` one. Counters
/// (BatchNorm's `num_batches_tracked`) are saved as `I64` scalars, as PyTorch keeps them, so
/// that the file loads into the equivalent PyTorch model with
/// `model.load_state_dict(safetensors.torch.load_file(path))` (see `docs/checkpoints.md`).
///
/// Atomic and durable: the bytes go to a fresh temporary file `.<file name>.tmp-<pid>-<n>` in
/// `path`'s directory, which is synced to disk and renamed over `path`, and then the directory
/// is synced (on Unix), so neither a crash nor a power loss leaves a half-written checkpoint
/// under the final name. On any error the temporary file is removed. A process killed mid-save
/// cannot remove its own: the next save of the same `path` removes temporary files of that
/// exact pattern whose process is gone (on Linux; elsewhere, that have not changed for a day)
/// and that have not changed for a minute. Nothing else in the directory is touched.
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be written or renamed, or naming the directory
/// when it cannot be synced; [`Error::Format`] when `path` does not name a file, two tensors
/// of the model share a name (a hand-written [`Visit`] that repeats one), or a counter is past
/// `i64::MAX`.
///
/// ```
/// use tapegrad_nn::Linear;
/// use tapegrad_tensor::Generator;
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-save-{}.safetensors", std::process::id()));
/// let fc: Linear = Linear::new(4, 2, &mut Generator::new(0));
/// tapegrad_nn::save(&fc, &path)?;
/// let names: Vec<String> = tapegrad_nn::load_tensors::<f32>(&path)?.into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["bias", "weight"]);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn save<T: Float, M: Visit<T> + ?Sized>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let (mut tensors, mut counters) = (vec![], vec![]);
    for (name, slot) in fit::slots(model) {
        match slot {
            Slot::Tensor(var) => tensors.push((name, var.value())),
            Slot::Counter(c) => {
                let count = i64::try_from(c.get())
                    .map_err(|_| Error::format(path, format!("counter {name:?} = {} does not fit an I64", c.get())))?;
                counters.push((name, count));
            }
        }
    }
    save_with_metadata(&tensors, &counters, None, path)
}

/// Loads a safetensors file into `model` by name: a file written by [`save`], or a PyTorch
/// `state_dict` saved with `safetensors.torch.save_file(model.state_dict(), path)` for the
/// equivalent model (see `docs/checkpoints.md` for the layers whose names match PyTorch's).
/// Each tensor's value is written into the model's existing `Var` of the same name (with
/// [`Var::set_value`](tapegrad_autograd::Var::set_value), so anything holding a clone of a
/// parameter, such as an optimiser, sees the new value); counters (BatchNorm's
/// `num_batches_tracked`) get the file's count.
///
/// Tensors of any floating dtype are converted to the model's element type, as PyTorch's
/// `load_state_dict` does: `F16`, `BF16` and `F32` exactly, `F64` rounded to nearest for an
/// `f32` model. Counters are read from `I64` (or `I32`) scalars.
///
/// Strict, as PyTorch's `load_state_dict(strict=True)`, and all or nothing: the model is
/// changed only when every name fits; [`load_non_strict`] loads what fits and reports the rest.
///
/// # Errors
/// - [`Error::Io`] naming the file when it cannot be read.
/// - [`Error::Format`] when the file is not a valid safetensors file: too short, a header
///   length past the end of the file or above the format's 100 MB limit, a header that is not
///   JSON or not the format's schema, a name given twice, an unknown dtype, a shape of more than
///   64 dims or whose size overflows or differs from its byte range, byte ranges that overlap,
///   leave gaps or run past the end; or a negative count.
/// - [`Error::Checkpoint`] when the file is valid but does not fit the model; the message lists
///   every missing name, every unexpected name and every shape or dtype mismatch (the
///   [`LoadReport`] [`load_non_strict`] returns).
pub fn load<T: Float, M: Visit<T> + ?Sized>(model: &mut M, path: impl AsRef<Path>) -> Result<()> {
    load_checked(model, path.as_ref(), true).map(drop)
}

/// [`load`] without strictness, as PyTorch's `load_state_dict(strict=False)`: loads every
/// tensor whose name, dtype and shape fit the model and returns what did not (missing names
/// keep their values, unexpected names are ignored, mismatched ones keep their values). Unlike
/// PyTorch, which raises on a shape mismatch even then, a mismatch is reported, not an error.
///
/// All or nothing all the same: an `Err` (a file that cannot be read or is not valid) leaves
/// the model as it was.
///
/// # Errors
/// [`Error::Io`] and [`Error::Format`] as [`load`].
///
/// ```
/// use tapegrad_nn::{Linear, Module, Sequential};
/// use tapegrad_tensor::Generator;
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-nonstrict-{}.safetensors", std::process::id()));
/// let mut gen = Generator::new(0);
/// let backbone: Sequential = Sequential::new().add(Linear::new(4, 8, &mut gen));
/// tapegrad_nn::save(&backbone, &path)?;
/// // A model with one more layer: the first loads, the new head stays as initialised.
/// let mut model: Sequential = Sequential::new().add(Linear::new(4, 8, &mut gen)).add(Linear::new(8, 2, &mut gen));
/// let report = tapegrad_nn::load_non_strict(&mut model, &path)?;
/// assert_eq!(report.missing, ["1.weight", "1.bias"]);
/// assert!(report.unexpected.is_empty() && report.mismatched.is_empty());
/// assert_eq!(model.named_parameters()[0].1.value().to_vec(), backbone.named_parameters()[0].1.value().to_vec());
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn load_non_strict<T: Float, M: Visit<T> + ?Sized>(model: &mut M, path: impl AsRef<Path>) -> Result<LoadReport> {
    load_checked(model, path.as_ref(), false)
}

/// [`load`] (`strict`) or [`load_non_strict`].
fn load_checked<T: Float, M: Visit<T> + ?Sized>(model: &mut M, path: &Path, strict: bool) -> Result<LoadReport> {
    let slots = fit::slots(model);
    if let Some(name) = fit::duplicate(&slots) {
        return Err(Error::format(path, format!("the model has two tensors named {name:?}")));
    }

    let file = read::Checkpoint::open(path)?;
    let found: Vec<(&str, Dtype, &[usize])> =
        file.entries.iter().map(|e| (e.name.as_str(), e.dtype, e.shape.as_slice())).collect();
    let report = fit::misfits::<T>(&slots, &found);
    drop(found);
    if strict && !report.is_empty() {
        return Err(Error::Checkpoint { path: path.to_path_buf(), reason: report.to_string() });
    }

    // Read everything that fits before touching the model, so that a failure leaves it as it
    // was.
    let skip: HashSet<&str> = report
        .missing
        .iter()
        .chain(&report.unexpected)
        .map(String::as_str)
        .chain(report.mismatched.iter().map(|m| m.name.as_str()))
        .collect();
    let mut read: HashMap<String, Values<T>> = file.read_as::<T>(|name| !skip.contains(name))?.into_iter().collect();
    let (mut tensors, mut counts) = (Vec::with_capacity(read.len()), vec![]);
    for (name, slot) in &slots {
        let Some(values) = read.remove(name) else { continue };
        match (slot, values) {
            (Slot::Tensor(var), Values::Float(t)) => tensors.push((var, t)),
            (Slot::Counter(counter), Values::Int(v)) => match v.as_slice() {
                &[count] if count >= 0 => counts.push((counter, count.unsigned_abs())),
                _ => return Err(Error::format(path, format!("counter {name:?} is {v:?}, not a count"))),
            },
            _ => return Err(Error::format(path, format!("tensor {name:?} was read as the wrong kind"))),
        }
    }
    for (var, t) in tensors {
        var.set_value(t);
    }
    for (counter, count) in counts {
        counter.set(count);
    }
    Ok(report)
}

// ─── named tensors ─────────────────────────────────────────────────────────────

/// Saves named tensors to `path` in the safetensors format (dtype `F32` or `F64` after `T`),
/// atomically and durably, as [`save`] does.
///
/// # Errors
/// As [`save`]: [`Error::Io`] when the file cannot be written, [`Error::Format`] when two
/// tensors share a name.
///
/// ```
/// use tapegrad_tensor::Tensor;
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-tensors-{}.safetensors", std::process::id()));
/// let t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3])?;
/// tapegrad_nn::save_tensors(&[("t".to_string(), t)], &path)?;
/// let back = tapegrad_nn::load_tensors::<f64>(&path)?;
/// assert_eq!((back[0].0.as_str(), back[0].1.to_vec()), ("t", vec![1.0, 2.0, 3.0]));
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn save_tensors<T: Float>(tensors: &[(String, Tensor<T>)], path: impl AsRef<Path>) -> Result<()> {
    save_with_metadata(tensors, &[], None, path.as_ref())
}

/// [`save_tensors`] plus `counters` as `I64` scalars and a `__metadata__` map of strings in the
/// header.
fn save_with_metadata<T: Float>(
    tensors: &[(String, Tensor<T>)],
    counters: &[(String, i64)],
    metadata: Option<HashMap<String, String>>,
    path: &Path,
) -> Result<()> {
    let mut seen = HashSet::with_capacity(tensors.len() + counters.len());
    for name in tensors.iter().map(|(n, _)| n).chain(counters.iter().map(|(n, _)| n)) {
        if !seen.insert(name.as_str()) {
            return Err(Error::format(path, format!("two tensors are named {name:?}")));
        }
    }
    let data: Vec<Vec<u8>> = tensors.iter().map(|(_, t)| to_le_bytes(t.to_vec())).collect();
    let counts: Vec<[u8; 8]> = counters.iter().map(|(_, c)| c.to_le_bytes()).collect();
    let mut views = Vec::with_capacity(tensors.len() + counters.len());
    for ((name, t), bytes) in tensors.iter().zip(&data) {
        let view = TensorView::new(dtype::<T>(), t.shape().to_vec(), bytes)
            .map_err(|e| Error::format(path, format!("tensor {name:?}: {e}")))?;
        views.push((name.as_str(), view));
    }
    for ((name, _), bytes) in counters.iter().zip(&counts) {
        let view = TensorView::new(Dtype::I64, vec![], bytes)
            .map_err(|e| Error::format(path, format!("counter {name:?}: {e}")))?;
        views.push((name.as_str(), view));
    }
    let bytes = safetensors::serialize(views, metadata).map_err(|e| Error::format(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Loads every tensor of a safetensors file of dtype `T` (`F32` for `f32`, `F64` for `f64`),
/// sorted by name. Unlike [`load`], it converts nothing: a model file with BatchNorm layers also
/// holds their `I64` `num_batches_tracked`, which only [`load`] reads.
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be read; [`Error::Format`] when it is not a
/// valid safetensors file (see [`load`]) or holds a tensor of another dtype (the message names
/// every such tensor).
pub fn load_tensors<T: Float>(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor<T>)>> {
    let path = path.as_ref();
    let file = read::Checkpoint::open(path)?;
    let mut wrong: Vec<(&str, Dtype)> =
        file.entries.iter().filter(|e| e.dtype != dtype::<T>()).map(|e| (e.name.as_str(), e.dtype)).collect();
    if !wrong.is_empty() {
        wrong.sort_unstable_by_key(|&(name, _)| name);
        let wrong: Vec<String> = wrong.iter().map(|(n, d)| format!("{n:?} ({d:?})")).collect();
        return Err(Error::format(path, format!("expected dtype {:?}, found {}", dtype::<T>(), wrong.join(", "))));
    }
    let mut tensors = file.read::<T>()?;
    tensors.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

// ─── bytes ─────────────────────────────────────────────────────────────────────

/// The safetensors dtype of `T`.
fn dtype<T: Float>() -> Dtype {
    if T::NAME == "f64" {
        Dtype::F64
    } else {
        Dtype::F32
    }
}

/// The little-endian bytes of `values`, bit for bit (NaN payloads included).
pub(crate) fn to_le_bytes<T: Float>(values: Vec<T>) -> Vec<u8> {
    let any: Box<dyn Any> = Box::new(values);
    match any.downcast::<Vec<f32>>() {
        Ok(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Err(any) => match any.downcast::<Vec<f64>>() {
            Ok(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            // `Float` is sealed to f32 and f64, so this arm is never taken.
            Err(_) => vec![],
        },
    }
}
