//! The distributed tests that need real MPI processes; run by `.ci/mpi` under
//! `mpirun -np 2` and `-np 4` (a test binary without the harness: every rank is a process).
//!
//! ```sh
//! mpirun -np 4 <this binary> invariance DIR   # weights after 2 epochs bit-identical to 1 process (overlap on and off,
//!                                             # concurrent micro-batches, SyncBatchNorm); resume from rank 0's checkpoint
//! mpirun -np 2 <this binary> fault error      # rank 1 returns an error: the job aborts at once
//! mpirun -np 2 <this binary> fault panic      # rank 1 panics
//! mpirun -np 2 <this binary> fault backward-panic  # rank 1's backward panics on its own thread, buckets in flight
//! mpirun -np 2 <this binary> fault hang       # rank 1 stops answering: the others time out (TAPEGRAD_MPI_TIMEOUT)
//! mpirun -np 2 <this binary> fault kill       # rank 1 is killed (SIGKILL)
//! ```
//! Each prints one `ok:` line on rank 0 when it passes; a failure aborts the job with a message
//! and a nonzero exit code.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{train, train_sync_bn, Plan, Sabotage};
use tapegrad_distributed::comm::mpi::{launch, MpiComm};
use tapegrad_distributed::{Communicator, LocalWorld};
use tapegrad_tensor::{Error, Result};

fn fail(reason: String) -> Error {
    Error::arg("mpi test", reason)
}

/// The same run in this process on one in-process rank: the reference.
fn single(plan: Plan<'_>) -> Result<(Vec<u32>, Vec<f64>)> {
    Ok(LocalWorld::new(1).run(|comm| train(comm, plan))?.remove(0))
}

fn invariance(comm: &MpiComm, dir: &Path) -> Result<()> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let start = Instant::now();
    let full = Plan { epochs: 2, ..Plan::default() };
    let (bits, losses) = train(comm, full)?;
    let (want, want_losses) = single(full)?;
    if bits != want {
        let differ = bits.iter().zip(&want).filter(|(a, b)| a != b).count();
        return Err(fail(format!(
            "rank {rank} of {world}: {differ} of {} weights differ from the 1-process run",
            want.len()
        )));
    }
    if losses != want_losses {
        return Err(fail(format!("rank {rank}: losses {losses:?}, the 1-process run's {want_losses:?}")));
    }
    // The reduction overlapped with backward in 1 KiB buckets, and not overlapped: the same bits.
    for variant in [Plan { bucket_mb: Some(0.001), ..full }, Plan { sequential: true, ..full }] {
        if train(comm, variant)? != (want.clone(), want_losses.clone()) {
            return Err(fail(format!(
                "rank {rank} of {world}: sequential {}, buckets {:?}: the weights differ from the 1-process run",
                variant.sequential, variant.bucket_mb
            )));
        }
    }
    // The micro-batches on threads of their own (forward_backward_concurrent): the same bits;
    // and a SyncBatchNorm model, whose weights and running statistics match its 1-process run.
    if train(comm, Plan { concurrent: true, ..full })? != (want.clone(), want_losses.clone()) {
        return Err(fail(format!("rank {rank} of {world}: forward_backward_concurrent: the weights differ")));
    }
    let synced = train_sync_bn(comm, 2, None)?;
    if synced != LocalWorld::new(1).run(|comm| train_sync_bn(comm, 2, None))?.remove(0) {
        return Err(fail(format!("rank {rank} of {world}: SyncBatchNorm: the state differs from the 1-process run's")));
    }
    if rank == 0 {
        println!(
            "ok: {world} processes: {} weights after {} steps bit-identical to the 1-process run, with the \
             reduction overlapped (default and 1 KiB buckets) and not, the micro-batches concurrent, and \
             a SyncBatchNorm model's weights and running statistics ({:.2} s)",
            bits.len(),
            losses.len(),
            start.elapsed().as_secs_f64()
        );
    }
    // Rank 0 writes the only checkpoint after epoch 1; a second run resumes from it.
    let path = dir.join(format!("ckpt-np{world}.tgc"));
    train(comm, Plan { epochs: 1, save: Some(&path), ..Plan::default() })?;
    comm.barrier()?;
    let files: Vec<_> = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.collect();
    if files.len() != 1 {
        return Err(fail(format!(
            "rank {rank}: {} files in {}, expected rank 0's checkpoint only",
            files.len(),
            dir.display()
        )));
    }
    let (resumed, _) = train(comm, Plan { epochs: 2, resume: Some(&path), ..Plan::default() })?;
    if resumed != want {
        return Err(fail(format!("rank {rank}: the resumed weights differ from the uninterrupted run's")));
    }
    comm.barrier()?;
    if rank == 0 {
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        println!("ok: {world} processes: resumed from rank 0's checkpoint after epoch 1, weights bit-identical");
    }
    Ok(())
}

fn fault(comm: &MpiComm, kind: &str) -> Result<()> {
    let rank = comm.rank();
    let plan = Plan { epochs: 3, ..Plan::default() };
    match kind {
        "error" => train(comm, Plan { fail: Some((1, 2)), ..plan }).map(|_| ()),
        "panic" => train(comm, Plan { panic: Some((1, 2)), ..plan }).map(|_| ()),
        "backward-panic" => {
            train(comm, Plan { sabotage: Some((1, 2, Sabotage::Panic)), bucket_mb: Some(0.001), ..plan }).map(|_| ())
        }
        "hang" | "kill" => {
            if rank == 1 {
                if kind == "kill" {
                    eprintln!("rank 1 kills itself (SIGKILL)");
                    let _ = std::process::Command::new("kill").args(["-9", &std::process::id().to_string()]).status();
                }
                eprintln!("rank 1 stops answering");
                std::thread::sleep(Duration::from_secs(3600));
            }
            train(comm, plan).map(|_| ())
        }
        other => Err(fail(format!("unknown fault {other:?}: error, panic, backward-panic, hang or kill"))),
    }?;
    Err(fail(format!("rank {rank}: the run finished although a rank failed")))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    launch(|comm| match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["invariance", dir] => invariance(comm, Path::new(dir)),
        ["fault", kind] => fault(comm, kind),
        _ => Err(fail(format!("usage: invariance DIR | fault error|panic|backward-panic|hang|kill (got {args:?})"))),
    });
}
