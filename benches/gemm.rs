//! (placeholder bench)
fn main() {}
