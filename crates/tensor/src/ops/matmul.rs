//! (Placeholder for the matmul ops.)
