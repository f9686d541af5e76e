//! Reading PyTorch's golden values (`tests/golden/*.json`), shared by the test files of every
//! crate: each includes it with `#[path = "<relative path>/tests/golden/support.rs"] mod golden;`.
//! (It sits in a folder of `tests/`, so cargo does not build it as a test target of its own.)
//! Paths are relative to a crate under `crates/`.
#![allow(dead_code)] // each test file uses a different part

use serde_json::Value;
use tapegrad_tensor::{Float, Tensor};

/// The `cases` array of `tests/golden/<file>` (e.g. `"ops.json"`), for a crate under `crates/`.
pub fn cases(file: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let root: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    root["cases"].as_array().unwrap_or_else(|| panic!("{file} has no cases array")).clone()
}

/// The case called `name` in `file`.
pub fn case(file: &str, name: &str) -> Value {
    cases(file).into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{file} has no case {name:?}"))
}

/// An array of non-negative integers.
pub fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().expect("an array of integers").iter().map(|x| x.as_u64().expect("an integer") as usize).collect()
}

/// A `{shape, data}` object as a tensor of `T`.
pub fn tensor<T: Float>(v: &Value) -> Tensor<T> {
    let data = v["data"].as_array().expect("data").iter().map(|x| T::from_f64(x.as_f64().expect("a number"))).collect();
    Tensor::from_vec(data, &usizes(&v["shape"])).expect("golden shapes match their data")
}

/// Asserts `got` matches the golden `{shape, data}` within `tol` relative (plus `tol` absolute
/// near zero), naming `what` and the first differing element.
pub fn assert_close<T: Float>(what: &str, got: &Tensor<T>, want: &Value, tol: f64) {
    let want: Tensor<f64> = tensor(want);
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.to_vec().into_iter().zip(want.to_vec()).enumerate() {
        let g = g.to_f64();
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, PyTorch {w}");
    }
}
