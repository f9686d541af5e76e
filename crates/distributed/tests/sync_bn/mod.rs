//! `SyncBatchNorm` with `forward_backward_concurrent`: the gradient of BatchNorm over the whole
//! global batch, the same bits (weights and running statistics) on 1, 2, 3 and 4 in-process
//! ranks, errors where it cannot synchronise, and `BatchNorm2d`'s state under the same names.

use std::time::{Duration, Instant};

use tapegrad_autograd::Var;
use tapegrad_distributed::{
    rank_micro_batches, Communicator, DistributedDataParallel, DistributedSampler, LocalWorld, SyncBatchNorm,
};
use tapegrad_nn::loss::cross_entropy;
use tapegrad_nn::{BatchNorm2d, Module, TrainingCheckpoint};
use tapegrad_tensor::{Error, Generator, Result, Tensor};

use crate::common::{data, train, train_sync_bn, BnNet, Mlp, Plan, BATCH, MICRO, ROWS, SEED};

fn world(n: usize) -> LocalWorld {
    LocalWorld::new(n).timeout(Duration::from_secs(20))
}

#[test]
fn sync_batch_norm_training_is_bit_identical_on_1_2_3_and_4_ranks() {
    let single = world(1).run(|comm| train_sync_bn(comm, 2, None)).unwrap().remove(0);
    assert_eq!(single.1.len(), 8, "2 epochs of 4 global batches");
    let untrained = crate::common::state_bits(&BnNet::new(SEED, 0.3, true).unwrap());
    assert_ne!(single.0, untrained, "training moved the weights and the running statistics");
    for n in [2, 3, 4] {
        for (rank, (bits, losses)) in world(n).run(|comm| train_sync_bn(comm, 2, None)).unwrap().iter().enumerate() {
            let differ = bits.iter().zip(&single.0).filter(|(a, b)| a != b).count();
            assert!(differ == 0, "world {n}, rank {rank}: {differ} numbers of the state differ from the 1-rank run's");
            assert_eq!(losses, &single.1, "world {n}, rank {rank}: losses");
        }
    }
}

#[test]
fn the_gradient_is_batch_norm_s_over_the_whole_global_batch() {
    let data = data().unwrap();
    // The first global batch's rows, in order, as one process sees them.
    let rows: Vec<usize> = DistributedSampler::new(ROWS, BATCH, MICRO, 0, 1, SEED).unwrap().epoch(0)[0]
        .micro
        .iter()
        .flat_map(|mb| mb.rows.clone())
        .collect();
    let state = |m: &BnNet| -> Vec<(String, Vec<f32>)> {
        let mut out: Vec<_> = m.named_parameters().into_iter().map(|(n, p)| (n, p.grad().unwrap().to_vec())).collect();
        out.extend(m.named_buffers().into_iter().map(|(n, b)| (n, b.value().to_vec())));
        out
    };
    // The reference: BatchNorm1d on the whole batch, in one forward and backward.
    let reference = BnNet::new(SEED, 0.0, false).unwrap();
    let x = Var::new(data.images().index_select(0, &rows).unwrap());
    let y: Vec<usize> = rows.iter().map(|&r| data.labels()[r]).collect();
    let loss = cross_entropy(&reference.forward(&x).unwrap(), &y).unwrap();
    loss.backward().unwrap();
    let want = state(&reference);
    let want_loss = f64::from(loss.value().item().unwrap());
    for n in [1, 2, 4] {
        let got = world(n)
            .run(|comm| {
                let (rank, world) = (comm.rank(), comm.world_size());
                let mut ddp = DistributedDataParallel::new(BnNet::new(SEED, 0.0, true)?, comm, MICRO, SEED)?;
                let batch = DistributedSampler::new(ROWS, BATCH, MICRO, rank, world, SEED)?.epoch(0).remove(0);
                let loss = ddp.forward_backward_concurrent(&batch, |model, mb| {
                    let (x, y) = mb.gather(&data)?;
                    cross_entropy(&model.forward(&Var::new(x))?, &y)
                })?;
                assert_eq!(ddp.module().norm.named_counters(), [("num_batches_tracked".to_string(), 1)]);
                Ok((loss, state(ddp.module())))
            })
            .unwrap();
        for (rank, (loss, got)) in got.iter().enumerate() {
            assert!((loss - want_loss).abs() < 1e-6, "world {n}, rank {rank}: loss {loss}, BatchNorm's {want_loss}");
            for ((name, g), (want_name, w)) in got.iter().zip(&want) {
                assert_eq!(name, want_name);
                assert!(w.iter().any(|&v| v != 0.0 && v != 1.0), "{name}: {w:?} says nothing");
                for (a, b) in g.iter().zip(w) {
                    assert!(
                        (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
                        "world {n}, rank {rank}, {name}: {g:?} against {w:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn concurrent_micro_batches_give_forward_backward_s_bits_without_sync_batch_norm() {
    let plan = Plan { epochs: 2, sequential: true, ..Plan::default() };
    let reference = world(1).run(|comm| train(comm, plan)).unwrap().remove(0);
    for n in [1, 2, 4] {
        for (rank, got) in
            world(n).run(|comm| train(comm, Plan { concurrent: true, ..plan })).unwrap().iter().enumerate()
        {
            assert!(got == &reference, "world {n}, rank {rank}: differs from forward_backward's run");
        }
    }
}

#[test]
fn sync_batch_norm_refuses_what_it_cannot_synchronise() {
    let data = data().unwrap();
    let step = |sequential: bool, len: usize| {
        world(2).run(|comm| {
            let (rank, world) = (comm.rank(), comm.world_size());
            let mut ddp = DistributedDataParallel::new(BnNet::new(SEED, 0.0, true)?, comm, MICRO, SEED)?;
            let sampler = DistributedSampler::new(len, BATCH, MICRO, rank, world, SEED)?;
            let loss = |model: &BnNet, mb: &tapegrad_distributed::MicroBatch| {
                let (x, y) = mb.gather(&data)?;
                cross_entropy(&model.forward(&Var::new(x))?, &y)
            };
            for batch in sampler.epoch(0) {
                if sequential {
                    ddp.forward_backward(&batch, loss)?;
                } else {
                    ddp.forward_backward_concurrent(&batch, loss)?;
                }
            }
            Ok(())
        })
    };
    // Micro-batches one after another: no global batch to normalise over.
    let err = step(true, ROWS).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { op: "SyncBatchNorm", reason } if reason.contains("forward_backward_concurrent")),
        "{err:?}"
    );
    // 18 rows: a last batch of 2 rows leaves 2 of the 4 micro-batches empty.
    let err = step(false, 18).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { op: "DistributedDataParallel::forward_backward_concurrent", reason }
            if reason.contains("2 rows")),
        "{err:?}"
    );
    assert!(step(false, 16).is_ok());
    // A dropout layer with a generator of its own would be shared by the concurrent micro-batches.
    let err = world(1)
        .run(|comm| {
            let mut model = Mlp::new(SEED)?;
            model.seed_generators(3);
            let mut ddp = DistributedDataParallel::new(model, comm, MICRO, SEED)?;
            let batch = DistributedSampler::new(ROWS, BATCH, MICRO, 0, 1, SEED)?.epoch(0).remove(0);
            ddp.forward_backward_concurrent(&batch, |model, mb| {
                let (x, y) = mb.gather(&data)?;
                cross_entropy(&model.forward(&Var::new(x))?, &y)
            })
        })
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { reason, .. } if reason.contains("\"drop1\" draws from a generator of its own")),
        "{err:?}"
    );
    // A micro-batch that fails stops its rank's other micro-batches (waiting at an exchange)
    // and the other ranks, at once.
    for n in [2, 4] {
        let start = Instant::now();
        let fail = (1, rank_micro_batches(MICRO, n, 1).unwrap().end - 1);
        let err = world(n).run(|comm| train_sync_bn(comm, 1, Some(fail))).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { op: "train_sync_bn", reason } if reason.contains("fails on purpose")),
            "world {n}: {err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    }
}

#[test]
fn sync_batch_norm_keeps_batch_norm_2d_s_state_and_names() -> Result<()> {
    let bn = BatchNorm2d::new(3).eps(1e-3).momentum(0.2);
    bn.running_mean().set_value(Tensor::from_vec(vec![0.5, -1.0, 2.0], &[3])?);
    bn.running_var().set_value(Tensor::from_vec(vec![2.0, 0.5, 1.5], &[3])?);
    let ckpt = TrainingCheckpoint::new().with_model("bn", &bn)?;
    let mut x = Tensor::rand(&[2, 3, 2, 2], &mut Generator::new(3));
    x = x.mul_scalar(4.0);
    let names = |m: &dyn Module| -> Vec<String> {
        let mut n: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
        n.extend(m.named_buffers().into_iter().map(|(n, _)| n));
        n.extend(m.named_counters().into_iter().map(|(n, _)| n));
        n
    };
    let mut reference = BatchNorm2d::new(3).eps(1e-3).momentum(0.2);
    reference.eval();
    ckpt.restore_model("bn", &mut reference)?;
    let mut sync = SyncBatchNorm::from(bn);
    assert_eq!(names(&sync), ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]);
    assert_eq!(names(&sync), names(&reference));
    assert_eq!(sync.to_string(), "SyncBatchNorm(3, eps=0.001, momentum=0.2, affine=True, track_running_stats=True)");
    sync.eval();
    let bits = |v: Var| v.value().to_vec().iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(sync.forward(&Var::new(x.clone()))?), bits(reference.forward(&Var::new(x.clone()))?));
    // A checkpoint of a SyncBatchNorm restores into a BatchNorm2d and back.
    let mut fresh = SyncBatchNorm::new(3).eps(1e-3).momentum(0.2);
    fresh.eval();
    TrainingCheckpoint::new().with_model("bn", &sync)?.restore_model("bn", &mut fresh)?;
    assert_eq!(bits(fresh.forward(&Var::new(x.clone()))?), bits(reference.forward(&Var::new(x))?));
    // Outside a data-parallel step, training normalises over the input as BatchNorm does.
    let mut plain = SyncBatchNorm::new(3);
    plain.train();
    let err = plain.forward(&Var::new(Tensor::ones(&[1, 3]))).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "SyncBatchNorm", .. }), "{err:?}");
    let err = plain.forward(&Var::new(Tensor::ones(&[4, 2, 3]))).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "SyncBatchNorm", .. }), "{err:?}");
    Ok(())
}
