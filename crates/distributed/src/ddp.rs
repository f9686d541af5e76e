//! [`DistributedDataParallel`]: a model replicated on every rank, whose gradient is the sum of
//! its micro-batches' gradients in a fixed order, whatever the world size.

use std::fmt::Display;
use std::path::Path;
use std::time::{Duration, Instant};

use tapegrad_autograd::{set_default_generator_state, Var};
use tapegrad_nn::{Module, TrainingCheckpoint};
use tapegrad_tensor::{Error, Generator, Result, Tensor};

use crate::comm::Communicator;
use crate::sampler::RankBatch;
use crate::split::rank_micro_batches;
use crate::stream_seed;
use crate::tree::{cover, node_sum, ordered_all_reduce};

/// The generator whose draws are the dropout masks of micro-batch `micro` of step `step` in a
/// run seeded with `seed`: the masks depend on these three numbers only, never on which rank
/// computes the micro-batch. [`DistributedDataParallel::forward_backward`] makes it the
/// thread's default generator before each micro-batch; a dropout layer with a generator of its
/// own is reseeded from it by the loss closure (`layer.set_generator(...)`).
///
/// ```
/// use tapegrad_distributed::micro_batch_generator;
/// assert_eq!(micro_batch_generator(1, 2, 3), micro_batch_generator(1, 2, 3));
/// assert_ne!(micro_batch_generator(1, 2, 3), micro_batch_generator(1, 3, 2));
/// ```
pub fn micro_batch_generator(seed: u64, step: u64, micro: usize) -> Generator {
    Generator::new(stream_seed(&[seed, 0x44_52_4F_50, step, micro as u64]))
}

/// A model replicated on every rank of a [`Communicator`], PyTorch's
/// `DistributedDataParallel` with a fixed reduction order.
///
/// Each global batch is cut into `micro` micro-batches (the same cut at every world size);
/// each rank computes the gradients of its block of micro-batches one micro-batch at a time,
/// and [`forward_backward`](Self::forward_backward) leaves in every parameter's `grad` the
/// gradient of the global batch's mean loss, summed over the micro-batches in the order of
/// [`crate::tree`]. So with the same seed, data order and `micro`, training on 1, 2 or 4 ranks
/// gives bit-identical weights (see `docs/distributed.md` for what that needs of the model).
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_distributed::{DistributedDataParallel, DistributedSampler, LocalWorld};
/// use tapegrad_nn::{data::Dataset, loss::cross_entropy, Linear, Module};
/// use tapegrad_tensor::{Generator, Tensor};
/// let data = Dataset::new(Tensor::rand(&[16, 3], &mut Generator::new(0)), (0..16).map(|i| i % 2).collect())?;
/// let weights = LocalWorld::new(2).run(|comm| {
///     let (rank, world) = (comm.rank(), comm.world_size());
///     let mut ddp = DistributedDataParallel::new(Linear::new(3, 2, &mut Generator::new(1)), comm, 4, 9)?;
///     for batch in DistributedSampler::new(16, 8, 4, rank, world, 9)?.epoch(0) {
///         ddp.forward_backward(&batch, |model, mb| {
///             let (x, y) = mb.gather(&data)?;
///             cross_entropy(&model.forward(&Var::new(x))?, &y)
///         })?;
///         // an optimiser's step() here, as usual
///     }
///     Ok(ddp.module().parameters()[0].grad().unwrap().to_vec())
/// })?;
/// assert_eq!(weights[0], weights[1]); // every rank holds the same gradient
/// # use tapegrad_distributed::Communicator;
/// # Ok::<(), tapegrad_tensor::Error>(())
/// ```
pub struct DistributedDataParallel<M, C> {
    model: M,
    comm: C,
    params: Vec<Var>,
    micro: usize,
    seed: u64,
    step: u64,
    times: StepTimes,
}

/// Where the time of [`DistributedDataParallel::forward_backward`] went, summed over the calls
/// since the wrapper was made (or [`DistributedDataParallel::reset_times`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimes {
    /// Forward and backward passes of this rank's micro-batches, and their local sums.
    pub compute: Duration,
    /// The reduction across ranks (all-to-all and all-gather of the gradient, and of the
    /// losses), including the wait for the slowest rank.
    pub communicate: Duration,
    /// Calls.
    pub steps: u64,
}

impl<M: Module, C: Communicator> DistributedDataParallel<M, C> {
    /// Wraps `model` for `micro` micro-batches per global batch, dropout seeded from `seed`,
    /// and makes every rank's parameters and buffers rank 0's (a broadcast), so replicas built
    /// differently still start equal.
    ///
    /// # Errors
    /// `DistributedDataParallel::new` when `micro` is smaller than the world size, or when the
    /// ranks' models differ in shape; a communication error.
    pub fn new(model: M, comm: C, micro: usize, seed: u64) -> Result<Self> {
        rank_micro_batches(micro, comm.world_size(), comm.rank())?;
        let params = model.parameters();
        let ddp = DistributedDataParallel { model, comm, params, micro, seed, step: 0, times: StepTimes::default() };
        ddp.broadcast_state()?;
        Ok(ddp)
    }

    /// Copies rank 0's parameters and buffers (BatchNorm running statistics) to every rank.
    ///
    /// # Errors
    /// When the ranks' models have different numbers of values; a communication error.
    pub fn broadcast_state(&self) -> Result<()> {
        let vars: Vec<Var> =
            self.params.iter().cloned().chain(self.model.named_buffers().into_iter().map(|(_, v)| v)).collect();
        let mut flat: Vec<f32> = vars.iter().flat_map(|v| v.value().to_vec()).collect();
        // Every rank must send the same length: check it before the broadcast trusts it.
        let world = self.comm.world_size();
        let lens = self.comm.all_gather(&[flat.len() as f32], &vec![1; world])?;
        if lens.iter().any(|&l| l != flat.len() as f32) {
            return Err(Error::arg(
                "DistributedDataParallel::new",
                format!("the ranks' models differ: they hold {lens:?} numbers"),
            ));
        }
        self.comm.broadcast(&mut flat, 0)?;
        let mut at = 0;
        for v in &vars {
            let shape = v.shape();
            let n: usize = shape.iter().product();
            v.set_value(Tensor::from_vec(flat[at..at + n].to_vec(), &shape)?);
            at += n;
        }
        Ok(())
    }

    /// One global batch: for each of this rank's micro-batches in order, seeds the thread's
    /// default generator with [`micro_batch_generator`]`(seed, step, index)`, calls
    /// `loss(model, micro_batch)` for the micro-batch's *mean* loss, and back-propagates it
    /// times the micro-batch's weight; then sums all ranks' micro-batch gradients in the fixed
    /// order and puts the sum in every parameter's `grad` (replacing what was there). Returns
    /// the global batch's mean loss. Advances the step counter, which seeds the next batch's
    /// dropout.
    ///
    /// Every rank must call it with its part of the same global batch.
    ///
    /// # Errors
    /// `DistributedDataParallel::forward_backward` when `batch` does not hold this rank's
    /// micro-batches; the loss closure's or `backward`'s errors; a communication error.
    pub fn forward_backward(
        &mut self,
        batch: &RankBatch,
        mut loss: impl FnMut(&M, &crate::MicroBatch) -> Result<Var>,
    ) -> Result<f64> {
        let (world, rank) = (self.comm.world_size(), self.comm.rank());
        let mine = rank_micro_batches(self.micro, world, rank)?;
        let indices: Vec<usize> = batch.micro.iter().map(|m| m.index).collect();
        if indices != mine.clone().collect::<Vec<_>>() {
            return Err(Error::arg(
                "DistributedDataParallel::forward_backward",
                format!(
                    "rank {rank} of {world} computes micro-batches {mine:?} of {}, the batch holds {indices:?}",
                    self.micro
                ),
            ));
        }
        let len: usize = self.params.iter().map(|p| p.shape().iter().product::<usize>()).sum();
        let start = Instant::now();
        let mut losses = Vec::with_capacity(batch.micro.len());
        let mut nodes = Vec::new();
        for node in cover(self.micro, mine.start, mine.end) {
            let sum = node_sum(node, &mut |m| {
                let mb = &batch.micro[m - mine.start];
                self.model.zero_grad();
                if mb.rows.is_empty() {
                    losses.push(0.0);
                    return Ok(vec![0.0; len]);
                }
                set_default_generator_state(micro_batch_generator(self.seed, self.step, m))?;
                let l = loss(&self.model, mb)?;
                let weighted = l.mul_scalar(mb.weight as f32);
                losses.push((f64::from(l.value().item()?) * mb.weight) as f32);
                weighted.backward()?;
                Ok(self.flat_grad(len))
            })?;
            nodes.push(sum);
        }
        let computed = Instant::now();
        let blocks: Vec<_> = (0..world).map(|r| rank_micro_batches(self.micro, world, r)).collect::<Result<_>>()?;
        let total = ordered_all_reduce(&self.comm, self.micro, &blocks, &nodes, len)?;
        let mut at = 0;
        for p in &self.params {
            let shape = p.shape();
            let n: usize = shape.iter().product();
            p.set_grad(Some(Tensor::from_vec(total[at..at + n].to_vec(), &shape)?));
            at += n;
        }
        let counts: Vec<usize> = blocks.iter().map(|b| b.len()).collect();
        let all = self.comm.all_gather(&losses, &counts)?;
        self.step += 1;
        self.times.compute += computed - start;
        self.times.communicate += computed.elapsed();
        self.times.steps += 1;
        Ok(all.iter().map(|&l| f64::from(l)).sum())
    }

    /// The parameters' gradients, flattened in `parameters()` order (zeros where none).
    fn flat_grad(&self, len: usize) -> Vec<f32> {
        let mut flat = Vec::with_capacity(len);
        for p in &self.params {
            match p.grad() {
                Some(g) => flat.extend(g.to_vec()),
                None => flat.extend(std::iter::repeat_n(0.0, p.shape().iter().product())),
            }
        }
        flat
    }

    /// The time spent computing and communicating so far.
    pub fn times(&self) -> StepTimes {
        self.times
    }

    /// Starts [`times`](Self::times) from zero (after warm-up steps, say).
    pub fn reset_times(&mut self) {
        self.times = StepTimes::default();
    }

    /// The wrapped model.
    pub fn module(&self) -> &M {
        &self.model
    }

    /// The wrapped model, mutably (for `train()` / `eval()` or loading weights; call
    /// [`broadcast_state`](Self::broadcast_state) after changing weights on one rank only).
    pub fn module_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// The model back.
    pub fn into_inner(self) -> M {
        self.model
    }

    /// The communicator.
    pub fn comm(&self) -> &C {
        &self.comm
    }

    /// This rank, `0..world_size()`.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    /// True on rank 0, the one that prints and writes checkpoints.
    pub fn is_main(&self) -> bool {
        self.comm.rank() == 0
    }

    /// Prints `line` on rank 0 only.
    pub fn print_main(&self, line: impl Display) {
        if self.is_main() {
            println!("{line}");
        }
    }

    /// Micro-batches per global batch.
    pub fn micro_batches(&self) -> usize {
        self.micro
    }

    /// Global batches done so far (the step that seeds the next batch's dropout).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Sets the step counter: what a resumed run restores from its checkpoint.
    pub fn set_step_count(&mut self, step: u64) {
        self.step = step;
    }

    /// Rank 0 writes `ckpt` to `path` (the only copy: other ranks write nothing), then every
    /// rank learns whether it worked, so that all return the same outcome.
    ///
    /// # Errors
    /// On rank 0, the write's error; on the others, an error saying rank 0 could not write;
    /// a communication error.
    pub fn save_checkpoint(&self, ckpt: &TrainingCheckpoint, path: &Path) -> Result<()> {
        let outcome = if self.is_main() { ckpt.save(path) } else { Ok(()) };
        let mut flag = [if outcome.is_ok() { 0.0 } else { 1.0 }];
        self.comm.broadcast(&mut flag, 0)?;
        match outcome {
            Err(e) => Err(e),
            Ok(()) if flag[0] != 0.0 => Err(Error::arg(
                "DistributedDataParallel::save_checkpoint",
                format!("rank 0 could not write {}", path.display()),
            )),
            Ok(()) => Ok(()),
        }
    }
}
