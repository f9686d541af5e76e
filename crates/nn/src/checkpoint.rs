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
//! Reading trusts nothing in the file: its real size bounds what is read, the safetensors
//! crate validates the header (length, JSON, offsets that tile the data exactly), and every
//! tensor's element count is checked against its byte range before anything is allocated for
//! it. A load either writes every tensor or none.
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

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use tapegrad_autograd::Var;
use tapegrad_tensor::{Error, Float, Result, Tensor};

use crate::module::Visit;

// ─── models ────────────────────────────────────────────────────────────────────

/// Saves every parameter and buffer of `model` to `path` in the safetensors format, keyed by
/// their dotted names; dtype `F32` for an `f32` model, `F64` for an `f64` one.
///
/// The file is written to a temporary file in the same directory and renamed over `path`, so a
/// crash never leaves a half-written checkpoint under the final name.
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be written; [`Error::Format`] when two tensors
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
///   JSON, byte ranges that overlap, leave gaps or run past the end, an unknown dtype.
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

    let bytes = read_bounded(path)?;
    let file = parse(path, &bytes)?;
    let in_file: HashMap<&str, TensorView<'_>> = file.iter().collect();

    let mut problems = vec![];
    let missing: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).filter(|n| !in_file.contains_key(n)).collect();
    if !missing.is_empty() {
        problems.push(format!("missing {}", quoted(&missing)));
    }
    let mut extra: Vec<&str> = in_file.keys().copied().filter(|n| !by_name.contains_key(n)).collect();
    extra.sort_unstable();
    if !extra.is_empty() {
        problems.push(format!("unexpected {}", quoted(&extra)));
    }
    for (name, var) in &vars {
        let Some(view) = in_file.get(name.as_str()) else { continue };
        let want = var.shape();
        if view.dtype() != dtype::<T>() {
            problems.push(format!("{name:?} has dtype {:?}, the model wants {:?}", view.dtype(), dtype::<T>()));
        }
        if view.shape() != want.as_slice() {
            problems.push(format!("{name:?} has shape {:?}, the model wants {want:?}", view.shape()));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Checkpoint { path: path.to_path_buf(), reason: problems.join("; ") });
    }

    // Convert everything before touching the model, so that a failure leaves it as it was.
    let mut values = Vec::with_capacity(vars.len());
    for (name, _) in &vars {
        values.push(to_tensor::<T>(path, name, &in_file[name.as_str()])?);
    }
    for ((_, var), value) in vars.iter().zip(values) {
        var.set_value(value);
    }
    Ok(())
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
/// atomically: a temporary file in the same directory, then a rename.
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be written; [`Error::Format`] when two tensors
/// share a name.
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
    let path = path.as_ref();
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
    let bytes = safetensors::serialize(views, None).map_err(|e| Error::format(path, e.to_string()))?;
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
    let bytes = read_bounded(path)?;
    let file = parse(path, &bytes)?;
    let mut views: Vec<(&str, TensorView<'_>)> = file.iter().collect();
    views.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let wrong: Vec<String> = views
        .iter()
        .filter(|(_, v)| v.dtype() != dtype::<T>())
        .map(|(n, v)| format!("{n:?} ({:?})", v.dtype()))
        .collect();
    if !wrong.is_empty() {
        return Err(Error::format(path, format!("expected dtype {:?}, found {}", dtype::<T>(), wrong.join(", "))));
    }
    views.iter().map(|(name, view)| Ok((name.to_string(), to_tensor(path, name, view)?))).collect()
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
fn to_le_bytes<T: Float>(values: Vec<T>) -> Vec<u8> {
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

/// The tensor stored in `view`, after checking its dtype and that its element count (computed
/// with overflow checks) matches its byte length: nothing is allocated from a size the file only
/// claims.
fn to_tensor<T: Float>(path: &Path, name: &str, view: &TensorView<'_>) -> Result<Tensor<T>> {
    let bad = |reason: String| Error::format(path, format!("tensor {name:?}: {reason}"));
    if view.dtype() != dtype::<T>() {
        return Err(bad(format!("dtype {:?}, expected {:?}", view.dtype(), dtype::<T>())));
    }
    let width = size_of::<T>();
    let numel = view.shape().iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let bytes = numel.and_then(|n| n.checked_mul(width));
    let (Some(numel), Some(len)) = (numel, bytes) else {
        return Err(bad(format!("shape {:?} overflows", view.shape())));
    };
    let data = view.data();
    if len != data.len() {
        return Err(bad(format!("shape {:?} needs {len} bytes, the file holds {}", view.shape(), data.len())));
    }
    let values: Box<dyn Any> = if width == 4 {
        Box::new(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<f32>>())
    } else {
        Box::new(
            data.chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect::<Vec<f64>>(),
        )
    };
    let values = values.downcast::<Vec<T>>().map_err(|_| bad(format!("no reader for {}", T::NAME)))?;
    debug_assert_eq!(values.len(), numel);
    Tensor::from_vec(*values, view.shape())
}

// ─── files ─────────────────────────────────────────────────────────────────────

/// Reads a regular file whole, never more than the size the file system reports for it.
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let io = |e| Error::io(path, e);
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(Error::format(path, "not a regular file"));
    }
    let len = meta.len();
    let cap = usize::try_from(len).map_err(|_| Error::format(path, format!("{len} bytes is too large to load")))?;
    let mut bytes = Vec::with_capacity(cap);
    file.take(len).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 != len {
        return Err(Error::format(
            path,
            format!("the file changed while being read ({len} bytes became {})", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// Parses and validates a whole safetensors file.
///
/// The safetensors crate checks the header length, the JSON and that the byte ranges tile the
/// data, but adds the last range's end to the header size without an overflow check (a panic in
/// debug builds for ranges that sum to nearly 2^64). So the ranges' ends are first checked
/// against the real data length here; everything else is left to the crate.
fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    let invalid = |reason: String| Error::format(path, format!("not a valid safetensors file: {reason}"));
    if let Some((n, header)) = header(bytes) {
        let data_len = (bytes.len() - 8 - header.len()) as u64;
        if let Ok(serde_json::Value::Object(entries)) = serde_json::from_slice::<serde_json::Value>(header) {
            for (name, info) in entries.iter().filter(|(name, _)| *name != "__metadata__") {
                let end = info.get("data_offsets").and_then(|o| o.get(1)).and_then(serde_json::Value::as_u64);
                if let Some(end) = end.filter(|&end| end > data_len) {
                    return Err(invalid(format!(
                        "tensor {name:?} ends at byte {end} of the data, but the file holds {data_len} data bytes after its {n}-byte header"
                    )));
                }
            }
        }
    }
    SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string()))
}

/// The header length and the header bytes, when the length fits in the file.
fn header(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = usize::try_from(n).ok()?.checked_add(8)?;
    Some((n, bytes.get(8..end)?))
}

/// `"a", "b", "c"`.
fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// Writes `bytes` to a fresh temporary file next to `path`, syncs it and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Some(name) = path.file_name() else {
        return Err(Error::format(path, "a checkpoint path must name a file"));
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let tmp: PathBuf = path.with_file_name(tmp_name);

    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
