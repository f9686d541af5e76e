//! The small training run that the in-process and the MPI tests repeat at several world sizes:
//! an MLP with dropout on synthetic data, SGD with momentum.
#![allow(dead_code)] // each test binary uses a part

use std::path::Path;

use tapegrad_autograd::{Backward, Grads, Var};
use tapegrad_distributed::{
    rank_micro_batches, Communicator, DistributedDataParallel, DistributedSampler, MicroBatch, SyncBatchNorm,
};
use tapegrad_nn::data::Dataset;
use tapegrad_nn::loss::cross_entropy;
use tapegrad_nn::optim::{Optimizer, Sgd};
use tapegrad_nn::{BatchNorm1d, Dropout, Linear, Module, Position, TrainingCheckpoint};
use tapegrad_tensor::{Error, Generator, Result, Tensor};

/// Rows, features, classes of the synthetic data.
pub const ROWS: usize = 52;
pub const FEATURES: usize = 12;
pub const CLASSES: usize = 3;
/// Global batch (the last of an epoch is shorter: 52 = 3 x 16 + 4) and micro-batches per batch.
pub const BATCH: usize = 16;
pub const MICRO: usize = 4;
pub const SEED: u64 = 11;

/// 12-32-32-3 with ReLU and dropout 0.3 after each hidden layer, drawing from the thread's
/// default generator (which the DDP step seeds per micro-batch).
#[derive(tapegrad_nn::Module)]
pub struct Mlp {
    fc1: Linear,
    drop1: Dropout,
    fc2: Linear,
    drop2: Dropout,
    fc3: Linear,
}

impl Mlp {
    /// Rank 0 builds it from `seed`; the others from other seeds, which the DDP's broadcast
    /// must overwrite.
    pub fn new(seed: u64) -> Result<Mlp> {
        let mut gen = Generator::new(seed);
        Ok(Mlp {
            fc1: Linear::new(FEATURES, 32, &mut gen),
            drop1: Dropout::new(0.3)?,
            fc2: Linear::new(32, 32, &mut gen),
            drop2: Dropout::new(0.3)?,
            fc3: Linear::new(32, CLASSES, &mut gen),
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Var) -> Result<Var> {
        let h = self.drop1.forward(&self.fc1.forward(x)?.relu())?;
        let h = self.drop2.forward(&self.fc2.forward(&h)?.relu())?;
        self.fc3.forward(&h)
    }
}

/// Noisy labels from a random linear rule, so the loss keeps moving.
pub fn data() -> Result<Dataset> {
    let mut gen = Generator::new(5);
    let x = Tensor::randn(&[ROWS, FEATURES], &mut gen);
    let labels = (0..ROWS).map(|i| (i * 7 + (i / 5)) % CLASSES).collect();
    Dataset::new(x, labels)
}

/// What a run does besides training.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plan<'a> {
    /// Epochs to train to (from 0 or from the checkpoint).
    pub epochs: usize,
    /// Rank `.0` fails with an error before step `.1`.
    pub fail: Option<(usize, u64)>,
    /// Rank `.0` panics before step `.1`.
    pub panic: Option<(usize, u64)>,
    /// Writes a checkpoint here after every epoch.
    pub save: Option<&'a Path>,
    /// Continues from this checkpoint.
    pub resume: Option<&'a Path>,
    /// Reduces the gradient after the last backward instead of overlapping it.
    pub sequential: bool,
    /// Buckets of at most this many MiB for the overlapped reduction (PyTorch's 25 if `None`).
    pub bucket_mb: Option<f64>,
    /// Rank `.0`'s backward of its last micro-batch at step `.1` fails in the way `.2` says,
    /// after it has finished every parameter's gradient (while buckets are reduced).
    pub sabotage: Option<(usize, u64, Sabotage)>,
    /// Runs the micro-batches with `forward_backward_concurrent` (a thread each).
    pub concurrent: bool,
}

/// How a sabotaged backward fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// It returns an error.
    Error,
    /// It panics.
    Panic,
}

/// The identity, whose backward fails: put on the input rows, it runs after every parameter's
/// gradient is final.
struct Sabotaged {
    how: Sabotage,
    rank: usize,
}

impl Backward<f32> for Sabotaged {
    fn name(&self) -> &'static str {
        "sabotaged"
    }

    fn backward(&self, _: &Tensor, _: &[bool]) -> Result<Grads<f32>> {
        let what = format!("rank {} fails in backward on purpose", self.rank);
        match self.how {
            Sabotage::Error => Err(Error::arg("sabotaged", what)),
            Sabotage::Panic => panic!("{what}"),
        }
    }
}

/// Trains on `comm` and returns the final weights, flattened, as bits, and the losses.
pub fn train<C: Communicator>(comm: C, plan: Plan<'_>) -> Result<(Vec<u32>, Vec<f64>)> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let data = data()?;
    let mut model = Mlp::new(SEED + rank as u64)?;
    model.train();
    let mut ddp = DistributedDataParallel::new(model, comm, MICRO, SEED)?.overlap(!plan.sequential);
    if let Some(mb) = plan.bucket_mb {
        ddp = ddp.bucket_cap_mb(mb)?;
    }
    let last_micro = rank_micro_batches(MICRO, world, rank)?.end - 1;
    let mut opt = Sgd::new(ddp.module().parameters(), 0.1).momentum(0.9);
    let sampler = DistributedSampler::new(ROWS, BATCH, MICRO, rank, world, SEED)?;
    let mut first_epoch = 0;
    if let Some(path) = plan.resume {
        let ckpt = TrainingCheckpoint::load(path)?;
        ckpt.restore_model("model", ddp.module_mut())?;
        ckpt.restore("optimizer", &mut opt)?;
        let mut at = Position::default();
        ckpt.restore("position", &mut at)?;
        first_epoch = at.epoch;
        ddp.set_step_count((at.epoch * sampler.batches_per_epoch() + at.batch) as u64);
    }
    let mut losses = vec![];
    for epoch in first_epoch..plan.epochs {
        for batch in sampler.epoch(epoch as u64) {
            let step = ddp.step_count();
            if plan.fail == Some((rank, step)) {
                return Err(Error::arg("train", format!("rank {rank} fails on purpose before step {step}")));
            }
            if plan.panic == Some((rank, step)) {
                panic!("rank {rank} panics on purpose before step {step}");
            }
            let sabotage = plan.sabotage.filter(|&(r, s, _)| (r, s) == (rank, step)).map(|(.., how)| how);
            let loss_fn = |model: &Mlp, mb: &MicroBatch| {
                let (x, y) = mb.gather(&data)?;
                let x = match sabotage.filter(|_| mb.index == last_micro) {
                    Some(how) => {
                        let x = Var::parameter(x);
                        Var::from_op(x.value(), &[&x], || Sabotaged { how, rank })
                    }
                    None => Var::new(x),
                };
                cross_entropy(&model.forward(&x)?, &y)
            };
            let loss = if plan.concurrent {
                ddp.forward_backward_concurrent(&batch, loss_fn)?
            } else {
                ddp.forward_backward(&batch, loss_fn)?
            };
            opt.step()?;
            losses.push(loss);
        }
        if let Some(path) = plan.save {
            let ckpt = TrainingCheckpoint::new()
                .with_model("model", ddp.module())?
                .with("optimizer", &opt)?
                .with("position", &Position { epoch: epoch + 1, batch: 0 })?;
            ddp.save_checkpoint(&ckpt, path)?;
        }
    }
    let bits = ddp.module().parameters().iter().flat_map(|p| p.value().to_vec()).map(f32::to_bits).collect();
    Ok((bits, losses))
}

/// 12-8 linear, a BatchNorm over `[N, 2, 4]` (the 8 features as 2 channels of 4), ReLU,
/// dropout, 8-3 linear: the model of the `SyncBatchNorm` tests.
#[derive(tapegrad_nn::Module)]
pub struct BnNet {
    fc1: Linear,
    /// `SyncBatchNorm`, or `BatchNorm1d` for the single-process reference.
    pub norm: Box<dyn Module + Send + Sync>,
    drop: Dropout,
    fc2: Linear,
}

impl BnNet {
    /// Weights from `seed`, dropout `p`, a `SyncBatchNorm` if `sync`, else a `BatchNorm1d`.
    pub fn new(seed: u64, p: f64, sync: bool) -> Result<BnNet> {
        let mut gen = Generator::new(seed);
        let norm: Box<dyn Module + Send + Sync> =
            if sync { Box::new(SyncBatchNorm::new(2)) } else { Box::new(BatchNorm1d::new(2)) };
        Ok(BnNet {
            fc1: Linear::new(FEATURES, 8, &mut gen),
            norm,
            drop: Dropout::new(p)?,
            fc2: Linear::new(8, CLASSES, &mut gen),
        })
    }
}

impl Module for BnNet {
    fn forward(&self, x: &Var) -> Result<Var> {
        let n = x.shape()[0];
        let h = self.norm.forward(&self.fc1.forward(x)?.reshape(&[n, 2, 4])?)?;
        self.fc2.forward(&self.drop.forward(&h.reshape(&[n, 8])?.relu())?)
    }
}

/// Every number of a model's state as bits: parameters, buffers (running statistics) and
/// counters.
pub fn state_bits(model: &impl Module) -> Vec<u32> {
    let mut bits: Vec<u32> = model.parameters().iter().flat_map(|p| p.value().to_vec()).map(f32::to_bits).collect();
    bits.extend(model.named_buffers().iter().flat_map(|(_, b)| b.value().to_vec()).map(f32::to_bits));
    bits.extend(model.named_counters().iter().map(|&(_, c)| c as u32));
    bits
}

/// Trains [`BnNet`] with a `SyncBatchNorm` and dropout 0.3 for `epochs` on `comm` with
/// `forward_backward_concurrent`; the state's bits (weights, running statistics, count) and
/// the losses. Rank `fail.0` returns an error from its loss closure on micro-batch `fail.1` of
/// the first step.
pub fn train_sync_bn<C: Communicator>(
    comm: C,
    epochs: usize,
    fail: Option<(usize, usize)>,
) -> Result<(Vec<u32>, Vec<f64>)> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let data = data()?;
    let model = BnNet::new(SEED + rank as u64, 0.3, true)?;
    let mut ddp = DistributedDataParallel::new(model, comm, MICRO, SEED)?;
    let mut opt = Sgd::new(ddp.module().parameters(), 0.1).momentum(0.9);
    let sampler = DistributedSampler::new(ROWS, BATCH, MICRO, rank, world, SEED)?;
    let mut losses = vec![];
    for epoch in 0..epochs {
        for batch in sampler.epoch(epoch as u64) {
            let loss = ddp.forward_backward_concurrent(&batch, |model, mb| {
                if fail == Some((rank, mb.index)) {
                    return Err(Error::arg("train_sync_bn", format!("micro-batch {} fails on purpose", mb.index)));
                }
                let (x, y) = mb.gather(&data)?;
                cross_entropy(&model.forward(&Var::new(x))?, &y)
            })?;
            opt.step()?;
            losses.push(loss);
        }
    }
    Ok((state_bits(ddp.module()), losses))
}
