//! MPI processes as ranks (the `mpi` feature): [`MpiWorld`] initialises MPI, [`MpiComm`] runs
//! the collectives as non-blocking MPI calls polled against a timeout, and [`launch`] runs a
//! rank's work so that a failure anywhere ends the whole job at once instead of hanging it.

use std::time::{Duration, Instant};

use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::request::{Request, Scope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::Communicator as _;
use mpi::traits::*;
use mpi::Count;
use tapegrad_tensor::{Error, Result};

use super::Communicator;

/// The exit code of a job aborted because a rank returned an error.
pub const EXIT_ERROR: i32 = 1;
/// The exit code of a job aborted because a rank panicked.
pub const EXIT_PANIC: i32 = 101;
/// The exit code of a job aborted because a collective waited longer than the timeout.
pub const EXIT_TIMEOUT: i32 = 124;

/// The default wait of a collective before it aborts the job: `TAPEGRAD_MPI_TIMEOUT` seconds,
/// else 300.
pub fn default_timeout() -> Duration {
    let secs = std::env::var("TAPEGRAD_MPI_TIMEOUT").ok().and_then(|s| s.parse::<f64>().ok());
    Duration::from_secs_f64(secs.filter(|s| s.is_finite() && *s > 0.0).unwrap_or(300.0))
}

/// MPI, initialised: dropping it finalises MPI (so keep it until the end of `main`).
pub struct MpiWorld {
    comm: MpiComm,
    // Dropped last: MPI_Finalize.
    _universe: Universe,
}

impl MpiWorld {
    /// Initialises MPI (thread level "serialized": MPI is called from one thread at a time,
    /// whichever it is) with [`default_timeout`].
    ///
    /// # Errors
    /// `MpiWorld::init` when MPI is already initialised.
    pub fn init() -> Result<MpiWorld> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or_else(|| Error::arg("MpiWorld::init", "MPI is already initialised in this process"))?;
        let comm = MpiComm { world: universe.world(), timeout: default_timeout() };
        Ok(MpiWorld { comm, _universe: universe })
    }

    /// The world communicator.
    pub fn comm(&self) -> &MpiComm {
        &self.comm
    }

    /// Sets how long a collective waits before it aborts the job.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.comm.timeout = timeout;
    }
}

/// `MPI_COMM_WORLD` with a timeout on every collective.
pub struct MpiComm {
    world: SimpleCommunicator,
    timeout: Duration,
}

impl MpiComm {
    /// Ends the whole job (`MPI_Abort` on the world): every rank's process exits with `code`.
    /// Prints `reason` first, naming this rank.
    pub fn abort(&self, code: i32, reason: &str) -> ! {
        eprintln!(
            "tapegrad-distributed: rank {} of {}: {reason}; aborting all ranks (exit code {code})",
            self.world.rank(),
            self.world.size()
        );
        self.world.abort(code)
    }

    /// Polls `req` until it completes; past the timeout, aborts the job naming `op`.
    fn wait<'a, R: ?Sized, S: Scope<'a>>(&self, op: &str, mut req: Request<'a, R, S>) {
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            match req.test() {
                Ok(_) => return,
                Err(pending) => req = pending,
            }
            if start.elapsed() > self.timeout {
                self.abort(
                    EXIT_TIMEOUT,
                    &format!(
                        "{op} waited {:.1} s for the other ranks (TAPEGRAD_MPI_TIMEOUT) and gave up: a rank is stuck or gone",
                        self.timeout.as_secs_f64()
                    ),
                );
            }
            polls += 1;
            if polls < 10_000 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }

    fn check(&self, op: &'static str, what: &str, len: usize) -> Result<()> {
        if len != self.world_size() {
            return Err(Error::arg(op, format!("{len} {what} for a world of {} ranks", self.world_size())));
        }
        Ok(())
    }
}

/// Counts (as MPI's `int`) and their displacements.
fn layout(op: &'static str, counts: &[usize]) -> Result<(Vec<Count>, Vec<Count>)> {
    let too_big = || Error::arg(op, "a message of more than 2^31 numbers");
    let counts: Vec<Count> =
        counts.iter().map(|&c| Count::try_from(c).map_err(|_| too_big())).collect::<Result<_>>()?;
    let mut displs = Vec::with_capacity(counts.len());
    let mut at: Count = 0;
    for &c in &counts {
        displs.push(at);
        at = at.checked_add(c).ok_or_else(too_big)?;
    }
    Ok((counts, displs))
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world_size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_to_all(&self, send: &[Vec<f32>], recv_counts: &[usize]) -> Result<Vec<Vec<f32>>> {
        const OP: &str = "all_to_all";
        self.check(OP, "send buffers", send.len())?;
        self.check(OP, "receive counts", recv_counts.len())?;
        let send_counts: Vec<usize> = send.iter().map(Vec::len).collect();
        let (sc, sd) = layout(OP, &send_counts)?;
        let (rc, rd) = layout(OP, recv_counts)?;
        let flat: Vec<f32> = send.concat();
        let mut recv = vec![0.0_f32; recv_counts.iter().sum()];
        {
            let send_part = Partition::new(&flat[..], sc, sd);
            let mut recv_part = PartitionMut::new(&mut recv[..], rc, &rd[..]);
            mpi::request::scope(|scope| {
                let req = self.world.immediate_all_to_all_varcount_into(scope, &send_part, &mut recv_part);
                self.wait(OP, req);
            });
        }
        Ok(rd.iter().zip(recv_counts).map(|(&d, &c)| recv[d as usize..d as usize + c].to_vec()).collect())
    }

    fn all_gather(&self, local: &[f32], counts: &[usize]) -> Result<Vec<f32>> {
        const OP: &str = "all_gather";
        self.check(OP, "counts", counts.len())?;
        if counts[self.rank()] != local.len() {
            return Err(Error::arg(
                OP,
                format!("rank {} sends {} numbers, counts say {}", self.rank(), local.len(), counts[self.rank()]),
            ));
        }
        let (c, d) = layout(OP, counts)?;
        let mut out = vec![0.0_f32; counts.iter().sum()];
        {
            let mut part = PartitionMut::new(&mut out[..], c, d);
            mpi::request::scope(|scope| {
                let req = self.world.immediate_all_gather_varcount_into(scope, local, &mut part);
                self.wait(OP, req);
            });
        }
        Ok(out)
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        const OP: &str = "broadcast";
        if root >= self.world_size() {
            return Err(Error::arg(OP, format!("root {root} in a world of {} ranks", self.world_size())));
        }
        let root = self.world.process_at_rank(root as Count);
        mpi::request::scope(|scope| {
            let req = root.immediate_broadcast_into(scope, buf);
            self.wait(OP, req);
        });
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.wait("barrier", self.world.immediate_barrier());
        Ok(())
    }
}

/// Runs one rank's work under MPI so that no failure leaves the others hanging: initialises
/// MPI, makes a panic on any thread abort the whole job (after the panic message), and when
/// `work` returns an error prints it with this rank's number and aborts the job
/// ([`EXIT_ERROR`]); a killed process ends the job through `mpirun`, and a collective that waits
/// past the timeout aborts it ([`EXIT_TIMEOUT`]). Returns normally (MPI finalised) when `work`
/// succeeds on this rank.
///
/// ```no_run
/// use tapegrad_distributed::comm::mpi::launch;
/// use tapegrad_distributed::Communicator;
/// launch(|comm| {
///     if comm.rank() == 0 { println!("{} ranks", comm.world_size()); }
///     Ok(())
/// });
/// ```
pub fn launch(work: impl FnOnce(&MpiComm) -> Result<()>) {
    let world = match MpiWorld::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("tapegrad-distributed: {e}");
            std::process::exit(EXIT_ERROR);
        }
    };
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let world = SimpleCommunicator::world();
        eprintln!(
            "tapegrad-distributed: rank {} of {} panicked; aborting all ranks (exit code {EXIT_PANIC})",
            world.rank(),
            world.size()
        );
        world.abort(EXIT_PANIC);
    }));
    if let Err(e) = work(world.comm()) {
        world.comm().abort(EXIT_ERROR, &format!("error: {e}"));
    }
}
