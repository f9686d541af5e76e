//! Modules, layers, losses, optimisers, checkpoints and datasets for tapegrad (issue 4: not
//! built yet).
#![forbid(unsafe_code)]
