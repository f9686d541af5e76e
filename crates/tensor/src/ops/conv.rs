//! (Placeholder for the conv ops.)
