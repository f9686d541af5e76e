//! PyTorch's golden values for tapegrad's tests and the reader that turns them into tensors,
//! plus the small helpers several test files share (a scratch directory, the k-fold check, the
//! reader of the op names a crate records, for the gradient-check coverage tests).
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

mod op_names;
pub use op_names::{backward_op_names, fn_names, op_names};
use tapegrad_tensor::{Float, Tensor};

/// The `.rs` files of the test-suite directory `dir` (a `tests/<name>/` folder that cargo builds
/// into one binary from its `main.rs`) that `main.rs` does not declare with a `mod name;` line:
/// such a file is never compiled, so its tests would silently not run. Sorted file stems.
///
/// # Panics
/// When `dir` or its `main.rs` cannot be read.
pub fn undeclared_suite_files(dir: &Path) -> Vec<String> {
    let main = dir.join("main.rs");
    let src = std::fs::read_to_string(&main).unwrap_or_else(|e| panic!("{}: {e}", main.display()));
    let declared: std::collections::BTreeSet<&str> =
        src.lines().filter_map(|line| line.trim().strip_prefix("mod ")?.strip_suffix(';')).map(str::trim).collect();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut missing: Vec<String> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .filter_map(|path| path.file_stem().and_then(|s| s.to_str()).map(str::to_owned))
        .filter(|stem| stem != "main" && !declared.contains(stem.as_str()))
        .collect();
    missing.sort();
    missing
}

/// This crate's `data/` folder, where the golden files and the numpy fixtures (`data/npy/`,
/// written by `data/npy.py`) are.
pub fn data_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The `cases` array of the golden file `file` (e.g. `"ops.json"`), read from this crate's
/// `data/` folder.
///
/// # Panics
/// When the file cannot be read, is not JSON, or has no `cases` array.
pub fn cases(file: &str) -> Vec<Value> {
    let path = data_dir().join(file);
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

/// A directory under the system temp dir for one test, removed on drop: `tapegrad-{suite}-{pid}-{test}`,
/// so tests of different binaries running at once never share one.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    /// A fresh, empty directory for test `test` of the test binary `suite`.
    ///
    /// # Panics
    /// When the directory cannot be created.
    pub fn new(suite: &str, test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tapegrad-{suite}-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// The directory itself.
    pub fn dir(&self) -> &std::path::Path {
        &self.0
    }

    /// The path of `name` in the directory.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    /// Writes `bytes` to `name` in the directory and returns its path.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn write(&self, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The names of the files in the directory, sorted.
    ///
    /// # Panics
    /// When the directory cannot be read.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks that `folds` are `k` sorted train / validation pairs whose validation parts partition
/// `0..n` with sizes that differ by at most one (what `kfold` promises).
///
/// # Panics
/// On the first property that does not hold.
pub fn check_partition(n: usize, k: usize, folds: &[(Vec<usize>, Vec<usize>)]) {
    assert_eq!(folds.len(), k);
    let mut in_validation = vec![0usize; n];
    let sizes: Vec<usize> = folds.iter().map(|(_, v)| v.len()).collect();
    let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    assert!(max - min <= 1, "fold sizes {sizes:?}");
    assert!(*min >= 1);
    for (train, val) in folds {
        assert!(train.windows(2).all(|w| w[0] < w[1]) && val.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        let t: std::collections::BTreeSet<usize> = train.iter().copied().collect();
        assert!(val.iter().all(|i| !t.contains(i)), "train and validation are disjoint");
        assert_eq!(train.len() + val.len(), n, "together they cover 0..n");
        assert!(train.iter().chain(val).all(|&i| i < n));
        for &i in val {
            in_validation[i] += 1;
        }
    }
    assert!(in_validation.iter().all(|&c| c == 1), "every index in exactly one validation fold");
}
