//! Ranks as threads of one process, talking over channels: the same collectives as MPI, so the
//! data-parallel step can be run (and tested) at any world size without MPI.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use tapegrad_tensor::{Error, Result};

use super::Communicator;

/// One rank's end of a [`LocalWorld`]: a sender to every rank and a receiver from every rank,
/// so that messages between two ranks arrive in the order they were sent.
pub struct LocalComm {
    rank: usize,
    to: Vec<Sender<Vec<f32>>>,
    from: Vec<Receiver<Vec<f32>>>,
    timeout: Duration,
}

/// A world of in-process ranks, each running on a thread of its own.
///
/// ```
/// use tapegrad_distributed::{Communicator, LocalWorld};
/// let sums = LocalWorld::new(3).run(|comm| {
///     let all = comm.all_gather(&[comm.rank() as f32], &[1, 1, 1])?;
///     Ok(all.iter().sum::<f32>())
/// })?;
/// assert_eq!(sums, [3.0, 3.0, 3.0]);
/// # Ok::<(), tapegrad_tensor::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct LocalWorld {
    size: usize,
    timeout: Duration,
}

impl LocalWorld {
    /// A world of `size` ranks whose collectives wait at most 60 s for the others.
    pub fn new(size: usize) -> LocalWorld {
        LocalWorld { size, timeout: Duration::from_secs(60) }
    }

    /// Sets how long a collective waits for another rank before it fails.
    pub fn timeout(mut self, timeout: Duration) -> LocalWorld {
        self.timeout = timeout;
        self
    }

    /// Runs `f` on every rank, each on its own scoped thread, and returns their results in rank
    /// order. A rank that fails (returns an error or panics) drops its channels, so the others'
    /// next collective fails at once with an [`Error::Distributed`] naming it.
    ///
    /// # Errors
    /// `LocalWorld::run` (invalid argument) for a world of 0 ranks; otherwise the error of the
    /// lowest rank that failed, preferring a rank's own error to the "rank left" errors it
    /// caused in the others; a rank that panicked gives an [`Error::Distributed`] of
    /// `LocalWorld::run` with its panic message.
    pub fn run<R: Send>(&self, f: impl Fn(LocalComm) -> Result<R> + Sync) -> Result<Vec<R>> {
        if self.size == 0 {
            return Err(Error::arg(RUN, "a world needs at least one rank"));
        }
        let n = self.size;
        // channels[src][dst]
        let mut senders: Vec<Vec<Option<Sender<Vec<f32>>>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut receivers: Vec<Vec<Option<Receiver<Vec<f32>>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for src in 0..n {
            for dst in 0..n {
                let (tx, rx) = channel();
                senders[src][dst] = Some(tx);
                receivers[dst][src] = Some(rx);
            }
        }
        let comms: Vec<LocalComm> = senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(rank, (to, from))| LocalComm {
                rank,
                to: to.into_iter().flatten().collect(),
                from: from.into_iter().flatten().collect(),
                timeout: self.timeout,
            })
            .collect();
        let f = &f;
        let results: Vec<std::thread::Result<Result<R>>> = std::thread::scope(|s| {
            let handles: Vec<_> = comms
                .into_iter()
                .map(|comm| {
                    let rank = comm.rank;
                    std::thread::Builder::new()
                        .name(format!("rank-{rank}"))
                        .spawn_scoped(s, move || f(comm))
                        .map_err(|e| Error::distributed(RUN, rank, n, format!("cannot start the rank's thread: {e}")))
                })
                .collect();
            // A rank whose thread did not start has dropped its channels: the others fail fast.
            handles.into_iter().map(|h| h.map_or_else(|e| Ok(Err(e)), |h| h.join())).collect()
        });
        let mut out = Vec::with_capacity(n);
        let mut first_err: Option<Error> = None;
        for (rank, r) in results.into_iter().enumerate() {
            match r {
                Ok(Ok(v)) => out.push(v),
                Ok(Err(e)) => {
                    if first_err.is_none() || !left(&e) && first_err.as_ref().is_some_and(left) {
                        first_err = Some(e);
                    }
                }
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    if first_err.as_ref().is_none_or(left) {
                        first_err = Some(Error::distributed(RUN, rank, n, format!("panicked: {msg}")));
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// The op named by the errors of [`LocalWorld::run`] itself.
const RUN: &str = "LocalWorld::run";

/// The words of the error a rank gets when another left the world.
const LEFT: &str = "left the world";

/// True for the error a rank gets because another one left: an effect, not the cause.
fn left(e: &Error) -> bool {
    matches!(e, Error::Distributed { reason, .. } if reason.contains(LEFT))
}

impl LocalComm {
    fn check(&self, op: &'static str, what: &str, len: usize) -> Result<()> {
        if len != self.to.len() {
            return Err(Error::arg(op, format!("{len} {what} for a world of {} ranks", self.to.len())));
        }
        Ok(())
    }

    /// An [`Error::Distributed`] of `op` on this rank.
    fn failed(&self, op: &'static str, reason: String) -> Error {
        Error::distributed(op, self.rank, self.to.len(), reason)
    }

    fn send(&self, op: &'static str, to: usize, data: Vec<f32>) -> Result<()> {
        self.to[to].send(data).map_err(|_| {
            self.failed(op, format!("rank {to} {LEFT} (it failed or finished) before this rank sent to it"))
        })
    }

    fn recv(&self, op: &'static str, from: usize, count: usize) -> Result<Vec<f32>> {
        let data = self.from[from].recv_timeout(self.timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => {
                self.failed(op, format!("waited {:.1} s for rank {from} and gave up", self.timeout.as_secs_f64()))
            }
            RecvTimeoutError::Disconnected => {
                self.failed(op, format!("rank {from} {LEFT} (it failed or finished) while this rank waited"))
            }
        })?;
        if data.len() != count {
            return Err(self.failed(op, format!("expected {count} numbers from rank {from}, got {}", data.len())));
        }
        Ok(data)
    }
}

impl Communicator for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.to.len()
    }

    fn all_to_all(&self, send: &[Vec<f32>], recv_counts: &[usize]) -> Result<Vec<Vec<f32>>> {
        const OP: &str = "all_to_all";
        self.check(OP, "send buffers", send.len())?;
        self.check(OP, "receive counts", recv_counts.len())?;
        for (q, buf) in send.iter().enumerate() {
            self.send(OP, q, buf.clone())?;
        }
        (0..send.len()).map(|r| self.recv(OP, r, recv_counts[r])).collect()
    }

    fn all_gather(&self, local: &[f32], counts: &[usize]) -> Result<Vec<f32>> {
        const OP: &str = "all_gather";
        self.check(OP, "counts", counts.len())?;
        for q in 0..counts.len() {
            self.send(OP, q, local.to_vec())?;
        }
        let mut out = Vec::with_capacity(counts.iter().sum());
        for (r, &count) in counts.iter().enumerate() {
            out.extend(self.recv(OP, r, count)?);
        }
        Ok(out)
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        const OP: &str = "broadcast";
        if root >= self.to.len() {
            return Err(Error::arg(OP, format!("root {root} in a world of {} ranks", self.to.len())));
        }
        if self.rank == root {
            for q in 0..self.to.len() {
                self.send(OP, q, buf.to_vec())?;
            }
        }
        let data = self.recv(OP, root, buf.len())?;
        buf.copy_from_slice(&data);
        Ok(())
    }
}
