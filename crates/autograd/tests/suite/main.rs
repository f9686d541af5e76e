//! The integration tests of the autograd crate, one module per area, built as one test binary: one
//! link and one instantiation of the generic code they share (a binary per file took about twice
//! the compile time, which is most of CI's test step).
//!
//! Tests that need a process of their own stay separate binaries beside this folder:
//! `default_generator.rs` (it reseeds the process-wide default generator from threads of its own).
//!
//! One area: `cargo test --release -p tapegrad-autograd --test suite dropout::`.

mod checkpoint;
mod dropout;
mod dropout_family;
mod feature_dropout;
mod first_hour;
mod functional;
mod fused;
mod golden_grads;
mod grad;
mod gradcheck;
mod gradcheck_per_op;
mod gradgradcheck;
mod hooks;
mod op_graphs;
mod penalty;
mod tape;

/// A file of this folder that no `mod` line above declares would never be compiled, and its
/// tests would silently not run.
#[test]
fn every_file_of_the_suite_is_declared() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suite");
    let missing = tapegrad_golden::undeclared_suite_files(&dir);
    assert!(missing.is_empty(), "{}: files not declared in main.rs: {missing:?}", dir.display());
}
