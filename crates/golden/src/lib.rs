//! PyTorch's golden values for tapegrad's tests, and the reader that turns them into tensors.
//!
//! The data sits beside this file in `data/` (`ops.json`, `nn.json`, `optim.json`, described by
//! `data/README.md`): forward values and gradients that PyTorch computed in float64. The crate is
//! `publish = false` and only ever a dev-dependency, so each published crate's tests read the
//! values through it instead of reaching into another folder of the repository:
//!
//! ```
//! use tapegrad_golden as golden;
//! let case = golden::case("ops.json", "add broadcast (3,1)+(1,4)");
//! let x: tapegrad_tensor::Tensor<f64> = golden::tensor(&case["inputs"]["x"]);
//! assert_eq!(x.shape(), &[3, 1]);
//! assert_eq!(golden::usizes(&case["output"]["shape"]), [3, 4]);
//! ```
//!
//! Every function panics, naming the file and the case, when the data is not what a test expects:
//! a golden file that does not parse is a broken test, not an error to handle.

use std::path::Path;

use serde_json::Value;
use tapegrad_tensor::{Float, Tensor};

/// The `cases` array of the golden file `file` (e.g. `"ops.json"`), read from this crate's
/// `data/` folder.
///
/// # Panics
/// When the file cannot be read, is not JSON, or has no `cases` array.
pub fn cases(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let root: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    root["cases"].as_array().unwrap_or_else(|| panic!("{file} has no cases array")).clone()
}

/// The case called `name` in the golden file `file`.
///
/// # Panics
/// As [`cases`], and when no case has that name.
pub fn case(file: &str, name: &str) -> Value {
    cases(file).into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{file} has no case {name:?}"))
}

/// An array of non-negative integers (a shape, dims, an index list).
///
/// # Panics
/// When `v` is not an array of non-negative integers.
pub fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().expect("an array of integers").iter().map(|x| x.as_u64().expect("an integer") as usize).collect()
}

/// A `{shape, data}` object (row-major data) as a tensor of `T`.
///
/// # Panics
/// When `v` is not such an object or its data does not fill its shape.
pub fn tensor<T: Float>(v: &Value) -> Tensor<T> {
    let data = v["data"].as_array().expect("data").iter().map(|x| T::from_f64(x.as_f64().expect("a number"))).collect();
    Tensor::from_vec(data, &usizes(&v["shape"])).expect("golden shapes match their data")
}

/// Asserts `got` matches the golden `{shape, data}` within `tol` relative (plus `tol` absolute
/// near zero), naming `what` and the first differing element.
///
/// # Panics
/// When the shapes differ or an element is off by more than `tol * (1 + |want|)`.
pub fn assert_close<T: Float>(what: &str, got: &Tensor<T>, want: &Value, tol: f64) {
    let want: Tensor<f64> = tensor(want);
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.to_vec().into_iter().zip(want.to_vec()).enumerate() {
        let g = g.to_f64();
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, PyTorch {w}");
    }
}
