//! Checkpoints: a model's parameters and buffers saved to and loaded from a safetensors file.
//!
//! The file is the [safetensors] format that PyTorch and Hugging Face use: an 8-byte
//! little-endian header length, a JSON header mapping each name to its dtype, shape and byte
//! range, then the raw little-endian data. Names are the dotted paths of
//! [`Module::named_parameters`](crate::Module::named_parameters) followed by those of
//! [`Module::named_buffers`](crate::Module::named_buffers) (`"fc1.weight"`,
//! `"bn.running_mean"`), so a model's file lines up with a PyTorch `state_dict` whose names map
//! one to one.
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

mod read;
mod state;
mod training;
mod write;

pub(crate) use write::write_atomic;

pub use state::{dropout_generator, load_state_dict, set_dropout_generator, state_dict, Position, StateDict, Stateful};
pub use training::TrainingCheckpoint;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use tapegrad_autograd::Var;
use tapegrad_tensor::{Error, Float, Result, Tensor};

use crate::module::Visit;

// ─── models ────────────────────────────────────────────────────────────────────

/// Saves every parameter and buffer of `model` to `path` in the safetensors format, keyed by
/// their dotted names; dtype `F32` for an `f32` model, `F64` for an `f64` one.
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
/// when it cannot be synced; [`Error::Format`] when `path` does not name a file or two tensors
/// of the model share a name (a hand-written [`Visit`] that repeats one).
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
    let tensors: Vec<(String, Tensor<T>)> = state(model).into_iter().map(|(name, var)| (name, var.value())).collect();
    save_tensors(&tensors, path)
}

/// Loads a file written by [`save`] into `model`: each tensor's value is written into the
/// model's existing `Var` of the same name (with [`Var::set_value`], so anything holding a clone
/// of a parameter, such as an optimiser, sees the new value).
///
/// All or nothing: the model is changed only when every tensor fits.
///
/// # Errors
/// - [`Error::Io`] naming the file when it cannot be read.
/// - [`Error::Format`] when the file is not a valid safetensors file: too short, a header
///   length past the end of the file or above the format's 100 MB limit, a header that is not
///   JSON or not the format's schema, a name given twice, an unknown dtype, a shape of more than
///   64 dims or whose size overflows or differs from its byte range, byte ranges that overlap,
///   leave gaps or run past the end.
/// - [`Error::Checkpoint`] when the file is valid but does not fit the model; the message lists
///   every missing name, every extra name and every shape or dtype mismatch.
pub fn load<T: Float, M: Visit<T> + ?Sized>(model: &mut M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let vars = state(model);
    let mut by_name: HashMap<&str, &Var<T>> = HashMap::with_capacity(vars.len());
    for (name, var) in &vars {
        if by_name.insert(name, var).is_some() {
            return Err(Error::format(path, format!("the model has two tensors named {name:?}")));
        }
    }

    let file = read::Checkpoint::open(path)?;
    let found: Vec<(&str, Dtype, &[usize])> =
        file.entries.iter().map(|e| (e.name.as_str(), e.dtype, e.shape.as_slice())).collect();
    let problems = misfits::<T>(&vars, &found);
    drop(found);
    if !problems.is_empty() {
        return Err(Error::Checkpoint { path: path.to_path_buf(), reason: problems.join("; ") });
    }

    // The file holds exactly the model's names, each with the model's dtype and shape. Read
    // everything before touching the model, so that a failure leaves it as it was.
    let mut read: HashMap<String, Tensor<T>> = file.read::<T>()?.into_iter().collect();
    let mut values = Vec::with_capacity(vars.len());
    for (name, _) in &vars {
        let value = read.remove(name).ok_or_else(|| Error::format(path, format!("tensor {name:?} was not read")))?;
        values.push(value);
    }
    for ((_, var), value) in vars.iter().zip(values) {
        var.set_value(value);
    }
    Ok(())
}

/// What keeps tensors `found` (name, dtype, shape) from fitting the model's `vars` exactly:
/// every missing name, every extra name, every dtype or shape mismatch; empty when they fit.
fn misfits<T: Float>(vars: &[(String, Var<T>)], found: &[(&str, Dtype, &[usize])]) -> Vec<String> {
    let in_file: HashMap<&str, (Dtype, &[usize])> = found.iter().map(|&(n, d, s)| (n, (d, s))).collect();
    let ours: HashSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    let mut problems = vec![];
    let missing: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).filter(|n| !in_file.contains_key(n)).collect();
    if !missing.is_empty() {
        problems.push(format!("missing {}", quoted(&missing)));
    }
    let mut extra: Vec<&str> = in_file.keys().copied().filter(|n| !ours.contains(n)).collect();
    extra.sort_unstable();
    if !extra.is_empty() {
        problems.push(format!("unexpected {}", quoted(&extra)));
    }
    for (name, var) in vars {
        let Some(&(dtype_found, shape)) = in_file.get(name.as_str()) else { continue };
        let want = var.shape();
        if dtype_found != dtype::<T>() {
            problems.push(format!("{name:?} has dtype {dtype_found:?}, the model wants {:?}", dtype::<T>()));
        }
        if shape != want.as_slice() {
            problems.push(format!("{name:?} has shape {shape:?}, the model wants {want:?}"));
        }
    }
    problems
}

/// The parameters, then the buffers, of `model`, with their dotted names.
fn state<T: Float, M: Visit<T> + ?Sized>(model: &M) -> Vec<(String, Var<T>)> {
    let mut out = vec![];
    model.visit_parameters("", &mut |name, p| out.push((name.to_string(), p.clone())));
    model.visit_buffers("", &mut |name, b| out.push((name.to_string(), b.clone())));
    out
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
    save_with_metadata(tensors, None, path.as_ref())
}

/// [`save_tensors`] with a `__metadata__` map of strings in the header.
fn save_with_metadata<T: Float>(
    tensors: &[(String, Tensor<T>)],
    metadata: Option<HashMap<String, String>>,
    path: &Path,
) -> Result<()> {
    let mut seen = HashSet::with_capacity(tensors.len());
    for (name, _) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(Error::format(path, format!("two tensors are named {name:?}")));
        }
    }
    let data: Vec<Vec<u8>> = tensors.iter().map(|(_, t)| to_le_bytes(t.to_vec())).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, t), bytes) in tensors.iter().zip(&data) {
        let view = TensorView::new(dtype::<T>(), t.shape().to_vec(), bytes)
            .map_err(|e| Error::format(path, format!("tensor {name:?}: {e}")))?;
        views.push((name.as_str(), view));
    }
    let bytes = safetensors::serialize(views, metadata).map_err(|e| Error::format(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Loads every tensor of a safetensors file of dtype `T` (`F32` for `f32`, `F64` for `f64`),
/// sorted by name.
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

// ─── files ─────────────────────────────────────────────────────────────────────

/// `"a", "b", "c"`.
fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}
