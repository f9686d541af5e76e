//! (Placeholder for the elementwise ops.)
