//! The few collectives the data-parallel step needs, behind one trait: in-process ranks on
//! threads ([`LocalWorld`], for tests and for simulating a world size on one machine) and, with
//! the `mpi` feature, MPI processes (`MpiComm`).
//!
//! Every collective must be called by every rank of the world in the same order; each waits at
//! most the communicator's timeout for the others and then fails (in-process, with an
//! [`Error::Distributed`](tapegrad_tensor::Error::Distributed)) or aborts the job (MPI) with a
//! message naming the collective, instead of hanging.

mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

pub use local::{LocalComm, LocalWorld};

use tapegrad_tensor::Result;

/// A group of ranks `0..world_size()` that exchange `f32` buffers.
pub trait Communicator {
    /// This process's (or in-process rank's) index, `0..world_size()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// All-to-all: `send[q]` goes to rank `q`; returns what each rank `r` sent to this one,
    /// `recv_counts[r]` numbers from rank `r` (MPI's `Alltoallv`).
    ///
    /// # Errors
    /// An invalid argument when `send` or `recv_counts` does not have one entry per rank; an
    /// [`Error::Distributed`](tapegrad_tensor::Error::Distributed) naming the collective and
    /// this rank when another rank failed or left, the wait timed out (in-process ranks: MPI
    /// aborts the job instead), or a message's length differs from the agreed count.
    fn all_to_all(&self, send: &[Vec<f32>], recv_counts: &[usize]) -> Result<Vec<Vec<f32>>>;

    /// All-gather: every rank's `local`, `counts[r]` numbers from rank `r`, concatenated in rank
    /// order (MPI's `Allgatherv`).
    ///
    /// # Errors
    /// As [`Communicator::all_to_all`].
    fn all_gather(&self, local: &[f32], counts: &[usize]) -> Result<Vec<f32>>;

    /// Broadcast: `buf` on every rank becomes `root`'s `buf` (same length on every rank).
    ///
    /// # Errors
    /// As [`Communicator::all_to_all`].
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;

    /// Waits until every rank has reached this call.
    ///
    /// # Errors
    /// As [`Communicator::all_to_all`].
    fn barrier(&self) -> Result<()> {
        self.all_gather(&[], &vec![0; self.world_size()]).map(|_| ())
    }
}

impl<C: Communicator + ?Sized> Communicator for &C {
    fn rank(&self) -> usize {
        (**self).rank()
    }

    fn world_size(&self) -> usize {
        (**self).world_size()
    }

    fn all_to_all(&self, send: &[Vec<f32>], recv_counts: &[usize]) -> Result<Vec<Vec<f32>>> {
        (**self).all_to_all(send, recv_counts)
    }

    fn all_gather(&self, local: &[f32], counts: &[usize]) -> Result<Vec<f32>> {
        (**self).all_gather(local, counts)
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        (**self).broadcast(buf, root)
    }

    fn barrier(&self) -> Result<()> {
        (**self).barrier()
    }
}
