//! Data-parallel training for tapegrad, world-size invariant: PyTorch's
//! `DistributedDataParallel` and `DistributedSampler`, over MPI (the `mpi` feature) or over
//! in-process ranks ([`LocalWorld`]).
//!
//! - [`split`](micro_batch_rows): a global batch is cut into a fixed number of micro-batches,
//!   the same cut at every world size; each rank computes a contiguous block of them
//!   ([`rank_micro_batches`]).
//! - [`tree`]: the micro-batch gradients are summed in one fixed bracketing, computed across
//!   ranks by an ordered reduce-scatter (all-to-all) and an all-gather.
//! - [`DistributedSampler`]: each rank's rows of every global batch.
//! - [`DistributedDataParallel`]: broadcasts rank 0's weights, runs a rank's micro-batches with
//!   dropout seeded by (seed, step, micro-batch) ([`micro_batch_generator`]), reduces the
//!   gradients, by default bucket by bucket while the last micro-batch's backward runs
//!   ([`overlap`](DistributedDataParallel::overlap),
//!   [`bucket_cap_mb`](DistributedDataParallel::bucket_cap_mb)); rank-0 printing and
//!   checkpointing.
//! - [`SyncBatchNorm`]: BatchNorm over the global batch, with
//!   [`forward_backward_concurrent`](DistributedDataParallel::forward_backward_concurrent)
//!   (a rank's micro-batches on threads of their own), world-size invariant too.
//! - [`Communicator`]: the collectives, in-process ([`LocalWorld`]) or MPI (`comm::mpi`).
//!
//! The guarantee, in `docs/distributed.md`: for the same seed, data order, global batch and
//! number of micro-batches, training on any number of ranks up to the number of micro-batches
//! gives bit-identical weights, for models whose forward pass depends only on the micro-batch,
//! the weights and the dropout generator (no per-replica statistics such as `BatchNorm2d`'s;
//! `SyncBatchNorm`'s are global).
#![forbid(unsafe_code)]

mod bucket;
pub mod comm;
mod ddp;
mod sampler;
mod split;
mod sync_bn;
pub mod tree;

pub use comm::{Communicator, LocalComm, LocalWorld};
pub use ddp::{micro_batch_generator, DistributedDataParallel, StepTimes};
pub use sampler::{DistributedSampler, MicroBatch, RankBatch};
pub use split::{micro_batch_rows, rank_micro_batches};
pub use sync_bn::SyncBatchNorm;

/// SplitMix64's output function: a bijective 64-bit mixer.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed derived from a list of words (a seed, a tag, a step, an index), each mixed in with
/// SplitMix64, so that nearby lists give unrelated seeds.
pub(crate) fn stream_seed(words: &[u64]) -> u64 {
    words.iter().fold(0, |acc, &w| splitmix64(acc ^ splitmix64(w)))
}
