//! (Placeholder for the reduce ops.)
