//! The integration tests of the tensor crate, one module per area, built as one test binary: one
//! link and one instantiation of the generic code they share (a binary per file took about twice
//! the compile time, which is most of CI's test step).
//!
//! Tests that need a process of their own stay separate binaries beside this folder:
//! `display_alloc.rs` (it counts allocations with a global allocator).
//!
//! One area: `cargo test --release -p tapegrad-tensor --test suite attention::`.

mod attention;
mod common;
mod conv;
mod conv_pool;
mod elementwise;
mod golden_ops;
mod matmul;
mod movement;
mod norm;
mod raw_parts;
mod reduce;
mod shapes;
mod views;

/// A file of this folder that no `mod` line above declares would never be compiled, and its
/// tests would silently not run.
#[test]
fn every_file_of_the_suite_is_declared() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suite");
    let missing = tapegrad_golden::undeclared_suite_files(&dir);
    assert!(missing.is_empty(), "{}: files not declared in main.rs: {missing:?}", dir.display());
}
