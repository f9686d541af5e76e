//! The integration tests of the facade package, one module per area, built as one test binary: one
//! link and one instantiation of the generic code they share (a binary per file took about twice
//! the compile time, which is most of CI's test step).
//!
//! One area: `cargo test --release -p tapegrad --test suite api_names::`.

mod api_names;
mod custom_model;
mod dtype_default;
mod mnist;
mod ndarray_interop;
mod plots;
mod prelude_script;
mod threads;

/// A file of this folder that no `mod` line above declares would never be compiled, and its
/// tests would silently not run.
#[test]
fn every_file_of_the_suite_is_declared() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suite");
    let missing = tapegrad_golden::undeclared_suite_files(&dir);
    assert!(missing.is_empty(), "{}: files not declared in main.rs: {missing:?}", dir.display());
}
