//! World-size invariance in one process: the same run on 1, 2, 3 and 4 in-process ranks
//! ([`LocalWorld`]) ends with bit-identical weights, with the reduction overlapped with
//! backward or not; a failing rank (in its loss or in an overlapped backward) stops the others
//! with an error; a checkpoint written by rank 0 resumes at another world size. `sync_bn`: the
//! same for `SyncBatchNorm`, whose statistics span the global batch.

mod common;
mod sync_bn;

use std::time::{Duration, Instant};

use common::{train, Plan, Sabotage};
use tapegrad_distributed::tree::ordered_sum;
use tapegrad_distributed::{Communicator, LocalWorld};
use tapegrad_tensor::Error;

fn run(world: usize, plan: Plan<'_>) -> tapegrad_tensor::Result<Vec<(Vec<u32>, Vec<f64>)>> {
    LocalWorld::new(world).timeout(Duration::from_secs(20)).run(|comm| train(comm, plan))
}

#[test]
fn weights_are_bit_identical_on_1_2_3_and_4_ranks() {
    let plan = Plan { epochs: 2, ..Plan::default() };
    let single = run(1, plan).unwrap().remove(0);
    let initial: Vec<u32> = {
        use tapegrad_nn::Module;
        let m = common::Mlp::new(common::SEED).unwrap();
        m.parameters().iter().flat_map(|p| p.value().to_vec()).map(f32::to_bits).collect()
    };
    assert_ne!(single.0, initial, "training moved the weights");
    assert_eq!(single.1.len(), 8, "2 epochs of 4 global batches");
    for world in [2, 3, 4] {
        let ranks = run(world, plan).unwrap();
        for (rank, (bits, losses)) in ranks.iter().enumerate() {
            assert!(bits == &single.0, "world {world}, rank {rank}: the weights differ from the 1-rank run's");
            assert_eq!(losses, &single.1, "world {world}, rank {rank}: losses");
        }
    }
}

#[test]
fn overlapped_and_sequential_reductions_give_the_same_bits() {
    let plan = Plan { epochs: 2, ..Plan::default() };
    let reference = run(1, Plan { sequential: true, ..plan }).unwrap().remove(0);
    // The default buckets (one here) and buckets of 1 KiB (four: the reduction of the first
    // runs while the backward computes the others' gradients).
    let variants = [Plan { sequential: true, ..plan }, plan, Plan { bucket_mb: Some(0.001), ..plan }];
    for world in [1, 2, 4] {
        for variant in variants {
            for (rank, (bits, losses)) in run(world, variant).unwrap().iter().enumerate() {
                assert!(
                    bits == &reference.0 && losses == &reference.1,
                    "world {world}, rank {rank}, sequential {}, buckets {:?}: differs from the 1-rank sequential run",
                    variant.sequential,
                    variant.bucket_mb
                );
            }
        }
    }
}

#[test]
fn a_backward_that_fails_during_the_overlapped_reduction_stops_every_rank() {
    for world in [2, 4] {
        for sequential in [false, true] {
            let start = Instant::now();
            let plan = Plan { epochs: 2, sequential, bucket_mb: Some(0.001), ..Plan::default() };
            let err = run(world, Plan { sabotage: Some((1, 2, Sabotage::Error)), ..plan }).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument { op: "sabotaged", reason } if reason == "rank 1 fails in backward on purpose"),
                "world {world}: {err:?}"
            );
            let err = run(world, Plan { sabotage: Some((1, 3, Sabotage::Panic)), ..plan }).unwrap_err();
            assert!(
                matches!(&err, Error::Distributed { op: "LocalWorld::run", rank: 1, reason, .. }
                    if reason == "panicked: rank 1 fails in backward on purpose"),
                "world {world}: {err:?}"
            );
            assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
        }
    }
}

#[test]
fn the_order_matters_so_the_test_above_can_fail() {
    // The gradients of one step's four micro-batches, summed as the tree does and as a
    // two-rank MPI_Allreduce of per-rank left folds might: the bits differ somewhere, so a
    // reduction in another order would not pass the test above.
    let g: Vec<Vec<f32>> =
        (0..4).map(|m| (0..1000).map(|i| ((i * 37 + m * 101) as f32).sin() * 1e-3).collect()).collect();
    let tree = ordered_sum(&g).unwrap();
    let fold: Vec<f32> = (0..1000).map(|i| ((g[0][i] + g[1][i]) + g[2][i]) + g[3][i]).collect();
    assert!(tree.iter().zip(&fold).any(|(a, b)| a.to_bits() != b.to_bits()));
}

#[test]
fn a_failing_rank_stops_the_others_with_its_error() {
    for world in [2, 4] {
        let start = Instant::now();
        let err = run(world, Plan { epochs: 2, fail: Some((1, 2)), ..Plan::default() }).unwrap_err().to_string();
        assert!(err.contains("rank 1 fails on purpose before step 2"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    }
}

#[test]
fn a_panicking_rank_stops_the_others() {
    let start = Instant::now();
    let err = run(2, Plan { epochs: 2, panic: Some((0, 3)), ..Plan::default() }).unwrap_err();
    assert!(
        matches!(&err, Error::Distributed { op: "LocalWorld::run", rank: 0, world: 2, reason }
            if reason == "panicked: rank 0 panics on purpose before step 3"),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_rank_that_left_is_a_distributed_error_naming_it() {
    let errors = LocalWorld::new(2).run(|comm| Ok(if comm.rank() == 0 { comm.barrier().err() } else { None })).unwrap();
    let err = errors[0].as_ref().expect("rank 1 finished without the barrier: rank 0's barrier fails");
    assert!(
        matches!(err, Error::Distributed { op: "all_gather", rank: 0, world: 2, reason }
            if reason.contains("rank 1 left the world")),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("all_gather: rank 0 of 2: rank 1 left the world"), "{err}");
}

#[test]
fn a_rank_that_stops_answering_times_out_with_a_distributed_error() {
    let start = Instant::now();
    let err = LocalWorld::new(2)
        .timeout(Duration::from_millis(300))
        .run(|comm| {
            if comm.rank() == 1 {
                std::thread::sleep(Duration::from_secs(2)); // alive, but never joins the barrier
                return Ok(());
            }
            comm.barrier()
        })
        .unwrap_err();
    assert!(
        matches!(&err, Error::Distributed { op: "all_gather", rank: 0, world: 2, reason }
            if reason == "waited 0.3 s for rank 1 and gave up"),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn a_checkpoint_of_rank_0_resumes_at_another_world_size() {
    let dir = std::env::temp_dir().join(format!("tapegrad-distributed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ckpt.tgc");
    let straight = run(1, Plan { epochs: 2, ..Plan::default() }).unwrap().remove(0).0;
    run(4, Plan { epochs: 1, save: Some(&path), ..Plan::default() }).unwrap();
    let resumed = run(2, Plan { epochs: 2, resume: Some(&path), ..Plan::default() }).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    for (rank, (bits, _)) in resumed.iter().enumerate() {
        assert!(bits == &straight, "rank {rank}: the resumed weights differ from an uninterrupted run's");
    }
}
