//! The integration tests of the nn crate, one module per area, built as one test binary: one
//! link and one instantiation of the generic code they share (a binary per file took about twice
//! the compile time, which is most of CI's test step).
//!
//! Tests that need a process of their own stay separate binaries beside this folder:
//! `memory.rs` (a counting global allocator) and `resume.rs` (it reseeds the process-wide
//! default generator and resumes in a fresh process).
//!
//! One area: `cargo test --release -p tapegrad-nn --test suite batches::`.

mod batches;
mod checkpoint;
mod conv_pool;
mod data;
mod derive_plain_data;
mod drop_connect;
mod dropout_family;
mod fuzz_bytes;
mod generators;
mod golden_layers;
mod gradient_penalty;
mod init;
mod layers;
mod layers_first_hour;
mod loss;
mod modes;
mod npy;
mod optim;
mod recurrent;
mod tensor_dataset;
mod torch_state_dicts;
mod visit;

/// A file of this folder that no `mod` line above declares would never be compiled, and its
/// tests would silently not run.
#[test]
fn every_file_of_the_suite_is_declared() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suite");
    let missing = tapegrad_golden::undeclared_suite_files(&dir);
    assert!(missing.is_empty(), "{}: files not declared in main.rs: {missing:?}", dir.display());
}
