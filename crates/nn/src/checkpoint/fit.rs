//! Whether a file's (or a state dict's) tensors fit a model: the model's named slots, and the
//! missing, unexpected and mismatched names, as PyTorch's `load_state_dict` reports them.

use std::collections::{HashMap, HashSet};
use std::fmt;

use safetensors::Dtype;
use tapegrad_autograd::Var;
use tapegrad_tensor::Float;

use crate::module::{Counter, Visit};

/// What a model holds under one name: a parameter or buffer (a tensor of `T`), or an integer
/// [`Counter`] (BatchNorm's `num_batches_tracked`).
pub(super) enum Slot<T: Float> {
    Tensor(Var<T>),
    Counter(Counter),
}

/// The parameters, then the buffers, then the counters of `model`, with their dotted names.
pub(super) fn slots<T: Float, M: Visit<T> + ?Sized>(model: &M) -> Vec<(String, Slot<T>)> {
    let mut out = vec![];
    model.visit_parameters("", &mut |name, p| out.push((name.to_string(), Slot::Tensor(p.clone()))));
    model.visit_buffers("", &mut |name, b| out.push((name.to_string(), Slot::Tensor(b.clone()))));
    model.visit_counters("", &mut |name, c| out.push((name.to_string(), Slot::Counter(c.clone()))));
    out
}

/// The first name that two slots share, if any (a hand-written [`Visit`] that repeats one).
pub(super) fn duplicate<T: Float>(slots: &[(String, Slot<T>)]) -> Option<&str> {
    let mut names = HashSet::with_capacity(slots.len());
    slots.iter().map(|(n, _)| n.as_str()).find(|n| !names.insert(*n))
}

/// The floating dtypes a tensor of the model is read from (converted to `T`).
pub(super) const FLOATS: [Dtype; 4] = [Dtype::F16, Dtype::BF16, Dtype::F32, Dtype::F64];

/// The integer dtypes a counter is read from (PyTorch writes `I64`).
pub(super) const INTEGERS: [Dtype; 2] = [Dtype::I64, Dtype::I32];

/// What keeps the tensors `found` (name, dtype, shape) from fitting `slots` exactly: the
/// model's names absent from `found`, the names of `found` the model lacks, and the names whose
/// dtype or shape cannot go into the model's slot. A tensor slot takes any of [`FLOATS`] in its
/// own shape; a counter takes one of [`INTEGERS`] of shape `[]`, and keeps its value when
/// `found` lacks it.
pub(super) fn misfits<T: Float>(slots: &[(String, Slot<T>)], found: &[(&str, Dtype, &[usize])]) -> LoadReport {
    let in_file: HashMap<&str, (Dtype, &[usize])> = found.iter().map(|&(n, d, s)| (n, (d, s))).collect();
    let ours: HashSet<&str> = slots.iter().map(|(n, _)| n.as_str()).collect();
    let mut report = LoadReport::default();
    for (name, slot) in slots {
        let Some(&(dtype, shape)) = in_file.get(name.as_str()) else {
            // As PyTorch fills in a `num_batches_tracked` that a state dict without version
            // metadata lacks: files saved before BatchNorm counted its batches still load.
            if let Slot::Tensor(_) = slot {
                report.missing.push(name.clone());
            }
            continue;
        };
        let (want_shape, dtypes, what) = match slot {
            Slot::Tensor(var) => (var.shape(), &FLOATS[..], "a float tensor (F16, BF16, F32 or F64)"),
            Slot::Counter(_) => (vec![], &INTEGERS[..], "an integer count (I64 or I32)"),
        };
        let mut reasons = vec![];
        if !dtypes.contains(&dtype) {
            reasons.push(format!("has dtype {dtype:?}, the model wants {what}"));
        }
        if shape != want_shape.as_slice() {
            reasons.push(format!("has shape {shape:?}, the model wants {want_shape:?}"));
        }
        if !reasons.is_empty() {
            report.mismatched.push(Mismatch { name: name.clone(), reason: reasons.join(" and ") });
        }
    }
    report.unexpected = found.iter().map(|&(n, _, _)| n).filter(|n| !ours.contains(n)).map(str::to_string).collect();
    report.unexpected.sort_unstable();
    report
}

/// What did not fit when loading a checkpoint into a model, as PyTorch's
/// `load_state_dict(..., strict=False)` returns it (`missing_keys`, `unexpected_keys`), plus
/// the names whose shape or dtype differs (which PyTorch reports as size mismatches).
///
/// [`load`](crate::load) refuses a file unless this is empty, with an error that lists all three;
/// [`load_non_strict`](crate::load_non_strict) loads the rest and returns it.
///
/// ```
/// use tapegrad_nn::{LoadReport, Mismatch};
/// let report = LoadReport {
///     missing: vec!["fc2.bias".into()],
///     unexpected: vec!["head.weight".into()],
///     mismatched: vec![Mismatch { name: "fc1.weight".into(), reason: "has shape [4, 3], the model wants [4, 2]".into() }],
/// };
/// assert_eq!(
///     report.to_string(),
///     "missing \"fc2.bias\"; unexpected \"head.weight\"; \"fc1.weight\" has shape [4, 3], the model wants [4, 2]"
/// );
/// assert!(!report.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The model's names the file does not hold (left as they were), in the model's order.
    pub missing: Vec<String>,
    /// The file's names the model does not have (ignored), sorted.
    pub unexpected: Vec<String>,
    /// Names both have whose dtype or shape does not fit (left as they were), in the model's
    /// order.
    pub mismatched: Vec<Mismatch>,
}

/// A tensor of a checkpoint whose shape or dtype does not fit the model's tensor of that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The dotted name.
    pub name: String,
    /// What differs, as `has shape [5, 8], the model wants [8, 5]`.
    pub reason: String,
}

impl LoadReport {
    /// True when everything fit: nothing missing, unexpected or mismatched.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}", self.name, self.reason)
    }
}

/// `missing "a", "b"; unexpected "c"; "d" has shape [2], the model wants [3]`, leaving out the
/// empty parts.
impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |names: &[String]| names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
        let mut parts = vec![];
        if !self.missing.is_empty() {
            parts.push(format!("missing {}", quoted(&self.missing)));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected {}", quoted(&self.unexpected)));
        }
        parts.extend(self.mismatched.iter().map(Mismatch::to_string));
        f.write_str(&parts.join("; "))
    }
}
