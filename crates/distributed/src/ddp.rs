//! [`DistributedDataParallel`]: a model replicated on every rank, whose gradient is the sum of
//! its micro-batches' gradients in a fixed order, whatever the world size.

use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapegrad_autograd::{detect_anomaly, grad, is_anomaly_enabled, set_default_generator_state, GradOptions, Var};
use tapegrad_nn::{Module, TrainingCheckpoint};
use tapegrad_tensor::{Error, Generator, Result, Tensor};

use crate::bucket::{buckets, Bucket, Reduction, DEFAULT_BUCKET_BYTES};
use crate::comm::Communicator;
use crate::sampler::RankBatch;
use crate::split::rank_micro_batches;
use crate::stream_seed;
use crate::sync_bn::{enter, resolve, sequential, Group};
use crate::tree::{cover, node_sum, ordered_all_reduce, PendingSum};

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
    overlap: bool,
    buckets: Vec<Bucket>,
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
    /// `DistributedDataParallel::new` (invalid argument) when `micro` is smaller than the world
    /// size; [`Error::Distributed`] when the ranks' models differ in size or a collective fails.
    pub fn new(model: M, comm: C, micro: usize, seed: u64) -> Result<Self> {
        rank_micro_batches(micro, comm.world_size(), comm.rank())?;
        let params = model.parameters();
        let buckets = buckets(&numels(&params), DEFAULT_BUCKET_BYTES);
        let ddp = DistributedDataParallel {
            model,
            comm,
            params,
            micro,
            seed,
            step: 0,
            times: StepTimes::default(),
            overlap: true,
            buckets,
        };
        ddp.broadcast_state()?;
        Ok(ddp)
    }

    /// Whether the reduction of the gradient overlaps the backward pass of the rank's last
    /// micro-batch (on by default): each bucket of parameters (see
    /// [`bucket_cap_mb`](Self::bucket_cap_mb)) is reduced as soon as that backward has
    /// finished its parameters, the backward running on a thread of its own. Off, the whole gradient is
    /// reduced after the backward. The weights are bit-identical either way; only the time
    /// differs. Every rank must choose the same.
    ///
    /// ```
    /// use tapegrad_distributed::{DistributedDataParallel, LocalWorld};
    /// use tapegrad_nn::Linear;
    /// use tapegrad_tensor::Generator;
    /// LocalWorld::new(1).run(|comm| {
    ///     let ddp = DistributedDataParallel::new(Linear::new(3, 2, &mut Generator::new(1)), comm, 4, 9)?
    ///         .overlap(false);
    ///     assert!(!ddp.overlaps());
    ///     Ok(())
    /// })?;
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn overlap(mut self, on: bool) -> Self {
        self.overlap = on;
        self
    }

    /// True when the reduction overlaps the backward pass (see [`overlap`](Self::overlap)).
    pub fn overlaps(&self) -> bool {
        self.overlap
    }

    /// Groups the parameters into buckets of at most `mb` MiB (25 by default, PyTorch DDP's
    /// `bucket_cap_mb`) for the overlapped reduction: from the last parameter back (the order
    /// in which backward finishes them), consecutive parameters while the bucket stays within
    /// the cap; the first bucket within 1 MiB (PyTorch's first bucket), a parameter larger than
    /// the cap alone. Smaller buckets start communicating earlier, in more messages. Every rank
    /// must choose the same.
    ///
    /// ```
    /// use tapegrad_distributed::{DistributedDataParallel, LocalWorld};
    /// use tapegrad_nn::Linear;
    /// use tapegrad_tensor::Generator;
    /// LocalWorld::new(1).run(|comm| {
    ///     let model = Linear::new(1000, 500, &mut Generator::new(1)); // 500,000 + 500 numbers
    ///     let ddp = DistributedDataParallel::new(model, comm, 4, 9)?.bucket_cap_mb(1.0)?;
    ///     assert_eq!(ddp.bucket_sizes(), [500, 500_000]); // the bias, then the 2 MB weight alone
    ///     Ok(())
    /// })?;
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    ///
    /// # Errors
    /// `DistributedDataParallel::bucket_cap_mb` (invalid argument) for a cap that is not a
    /// positive number.
    pub fn bucket_cap_mb(mut self, mb: f64) -> Result<Self> {
        if !(mb.is_finite() && mb > 0.0) {
            return Err(Error::arg(
                "DistributedDataParallel::bucket_cap_mb",
                format!("the cap must be a positive number of MiB, got {mb}"),
            ));
        }
        // `as` saturates: a cap past usize::MAX bytes is one bucket anyway.
        self.buckets = buckets(&numels(&self.params), (mb * f64::from(1u32 << 20)) as usize);
        Ok(self)
    }

    /// The number of gradient values in each bucket, in the order they are reduced.
    pub fn bucket_sizes(&self) -> Vec<usize> {
        self.buckets.iter().map(|b| b.elems.len()).collect()
    }

    /// Copies rank 0's parameters and buffers (BatchNorm running statistics) to every rank.
    ///
    /// # Errors
    /// [`Error::Distributed`] when the ranks' models have different numbers of values, or a
    /// collective fails.
    pub fn broadcast_state(&self) -> Result<()> {
        let vars: Vec<Var> =
            self.params.iter().cloned().chain(self.model.named_buffers().into_iter().map(|(_, v)| v)).collect();
        let mut flat: Vec<f32> = vars.iter().flat_map(|v| v.value().to_vec()).collect();
        // Every rank must send the same length: check it before the broadcast trusts it.
        let world = self.comm.world_size();
        let lens = self.comm.all_gather(&[flat.len() as f32], &vec![1; world])?;
        if lens.iter().any(|&l| l != flat.len() as f32) {
            return Err(Error::distributed(
                "broadcast_state",
                self.comm.rank(),
                world,
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
    /// micro-batches; the loss closure's or `backward`'s errors; a collective's
    /// [`Error::Distributed`].
    pub fn forward_backward(
        &mut self,
        batch: &RankBatch,
        mut loss: impl FnMut(&M, &crate::MicroBatch) -> Result<Var>,
    ) -> Result<f64> {
        let (world, rank) = (self.comm.world_size(), self.comm.rank());
        let mine = self.check_batch("DistributedDataParallel::forward_backward", batch)?;
        let len: usize = numels(&self.params).iter().sum();
        let start = Instant::now();
        let mut losses = Vec::with_capacity(batch.micro.len());
        let covers = cover(self.micro, mine.start, mine.end);
        let (&last_node, earlier) = covers.split_last().ok_or_else(|| {
            Error::arg("DistributedDataParallel::forward_backward", format!("rank {rank} holds no micro-batch"))
        })?;
        let first = mine.start;
        let micro_batch = move |m: usize| &batch.micro[m - first];
        // Every micro-batch but the last: forward, backward and its place in the tree.
        let mut leaf = |m: usize| -> Result<Vec<f32>> {
            if let Some(l) = self.micro_loss(micro_batch(m), &mut loss, &mut losses)? {
                l.backward()?;
            }
            Ok(self.flat_grad(len))
        };
        let nodes: Vec<Vec<f32>> = earlier.iter().map(|&node| node_sum(node, &mut leaf)).collect::<Result<_>>()?;
        let pending = PendingSum::new(last_node, &mut leaf)?;
        // The last: its backward, and the reduction, which may overlap it.
        let last = self.micro_loss(micro_batch(pending.last()), &mut loss, &mut losses)?;
        let blocks: Vec<_> = (0..world).map(|r| rank_micro_batches(self.micro, world, r)).collect::<Result<_>>()?;
        let reduction =
            Reduction { comm: &self.comm, micro: self.micro, blocks: &blocks, nodes: &nodes, pending: &pending };
        let (total, computed) = if self.overlap {
            reduction.overlapped(&self.params, &self.buckets, last, len)?
        } else {
            if let Some(l) = last {
                l.backward()?;
            }
            let computed = Instant::now();
            (reduction.reduce(0..len, &self.flat_grad(len))?, computed)
        };
        self.finish_step(&total, &losses, &blocks, start, computed)
    }

    /// One global batch as [`forward_backward`](Self::forward_backward) computes it, with this
    /// rank's micro-batches run at once, each on a thread of its own (each with its own graph
    /// and its generator seeded as there), each taking its gradient with
    /// [`tapegrad_autograd::grad`] instead of accumulating into the shared `grad`. What it is
    /// for: a [`SyncBatchNorm`](crate::SyncBatchNorm) in the model normalises over the global
    /// batch, which needs every micro-batch at each such layer at the same time.
    ///
    /// The gradients are summed in the same fixed order, so the weights are bit-identical at
    /// every world size, with or without `SyncBatchNorm` layers (for a model without them,
    /// equal to [`forward_backward`](Self::forward_backward)'s to the bit). It holds every one of
    /// the rank's micro-batch graphs at once (the memory of one forward pass over the rank's
    /// rows, as a PyTorch rank holds), and does not overlap the reduction with the backward
    /// ([`overlap`](Self::overlap) is ignored). The model must be `Sync`, as every layer of
    /// `tapegrad_nn` is; `Sequential`, which holds `Box<dyn Module>`, is not: declare the model
    /// as a struct (`#[derive(Module)]`), boxing a layer as `Box<dyn Module + Send + Sync>`.
    ///
    /// ```
    /// use tapegrad_autograd::Var;
    /// use tapegrad_distributed::{DistributedDataParallel, DistributedSampler, LocalWorld, SyncBatchNorm};
    /// use tapegrad_nn::{data::Dataset, loss::cross_entropy, Linear, Module};
    /// use tapegrad_tensor::{Generator, Result, Tensor};
    /// #[derive(tapegrad_nn::Module)]
    /// struct Net {
    ///     bn: SyncBatchNorm,
    ///     fc: Linear,
    /// }
    /// impl Module for Net {
    ///     fn forward(&self, x: &Var) -> Result<Var> {
    ///         self.fc.forward(&self.bn.forward(x)?)
    ///     }
    /// }
    /// let data = Dataset::new(Tensor::rand(&[16, 3], &mut Generator::new(0)), (0..16).map(|i| i % 2).collect())?;
    /// let weights = LocalWorld::new(2).run(|comm| {
    ///     let (rank, world) = (comm.rank(), comm.world_size());
    ///     let model = Net { bn: SyncBatchNorm::new(3), fc: Linear::new(3, 2, &mut Generator::new(1)) };
    ///     let mut ddp = DistributedDataParallel::new(model, comm, 4, 9)?;
    ///     for batch in DistributedSampler::new(16, 8, 4, rank, world, 9)?.epoch(0) {
    ///         ddp.forward_backward_concurrent(&batch, |model, mb| {
    ///             let (x, y) = mb.gather(&data)?;
    ///             cross_entropy(&model.forward(&Var::new(x))?, &y)
    ///         })?;
    ///     }
    ///     Ok(ddp.module().named_buffers()[0].1.value().to_vec()) // running_mean
    /// })?;
    /// assert_eq!(weights[0], weights[1]); // the same running statistics on every rank
    /// # use tapegrad_distributed::Communicator;
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    ///
    /// # Errors
    /// `DistributedDataParallel::forward_backward_concurrent` when `batch` does not hold this
    /// rank's micro-batches, the global batch has fewer rows than micro-batches (an empty
    /// micro-batch has no statistics), or a layer of the model in training owns a generator
    /// (a dropout layer given one: the threads would share it); the loss closure's, `grad`'s or a `SyncBatchNorm`'s
    /// errors; a collective's [`Error::Distributed`].
    pub fn forward_backward_concurrent<F>(&mut self, batch: &RankBatch, loss: F) -> Result<f64>
    where
        M: Sync,
        F: Fn(&M, &crate::MicroBatch) -> Result<Var> + Sync,
    {
        const OP: &str = "DistributedDataParallel::forward_backward_concurrent";
        let (world, rank) = (self.comm.world_size(), self.comm.rank());
        let mine = self.check_batch(OP, batch)?;
        // Every rank sees the same global batch length: all fail here alike.
        if batch.len < self.micro {
            return Err(Error::arg(
                OP,
                format!(
                    "a global batch of {} rows leaves micro-batches of the {} empty: every one needs rows \
                     (drop the short last batch, or use fewer micro-batches)",
                    batch.len, self.micro
                ),
            ));
        }
        // Such a layer is shared by the micro-batch threads: reseeding it per micro-batch would
        // race, and its draws would depend on the threads' timing.
        if let Some((name, _)) = self.model.named_generators().first().filter(|_| self.model.is_training()) {
            return Err(Error::arg(
                OP,
                format!(
                    "the layer {name:?} draws from a generator of its own, which the micro-batches, run at \
                     once, would share: let it draw from the thread's default generator (seeded per \
                     micro-batch), or use forward_backward"
                ),
            ));
        }
        let len: usize = numels(&self.params).iter().sum();
        let blocks: Vec<_> = (0..world).map(|r| rank_micro_batches(self.micro, world, r)).collect::<Result<_>>()?;
        let start = Instant::now();
        let group = Arc::new(Group::new(batch.micro.len(), rank, world));
        let (model, params, loss) = (&self.model, &self.params, &loss);
        let (seed, step, anomaly) = (self.seed, self.step, is_anomaly_enabled());
        let outcomes: Vec<Result<(Vec<f32>, f32)>> = std::thread::scope(|s| {
            let mut threads = Vec::with_capacity(batch.micro.len());
            for (slot, mb) in batch.micro.iter().enumerate() {
                let shared = group.clone();
                let spawned = std::thread::Builder::new().name(format!("tapegrad-micro-{}", mb.index)).spawn_scoped(
                    s,
                    move || {
                        // Leaves the group on every exit, a panic included (which stops the others).
                        let mut leave = Leave { group: &shared, slot, error: Some("panicked".into()) };
                        detect_anomaly(anomaly);
                        let outcome = (|| {
                            set_default_generator_state(micro_batch_generator(seed, step, mb.index))?;
                            let _in_group = enter(shared.clone(), slot);
                            let l = loss(model, mb)?;
                            let value = (f64::from(l.value().item()?) * mb.weight) as f32;
                            let weighted = l.mul_scalar(mb.weight as f32);
                            let inputs: Vec<&Var> = params.iter().collect();
                            let grads = grad(
                                &[&weighted],
                                &inputs,
                                None,
                                GradOptions { allow_unused: true, ..GradOptions::default() },
                            )?;
                            let mut flat = Vec::with_capacity(len);
                            for (p, g) in params.iter().zip(grads) {
                                match g {
                                    Some(g) => flat.extend(g.value().to_vec()),
                                    None => flat.extend(std::iter::repeat_n(0.0, p.shape().iter().product())),
                                }
                            }
                            Ok((flat, value))
                        })();
                        leave.error = outcome.as_ref().err().map(ToString::to_string);
                        drop(leave);
                        outcome
                    },
                );
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => {
                        // The threads started so far stop at their first exchange.
                        group.leave(slot, Some(format!("cannot start its thread: {e}")));
                        break;
                    }
                }
            }
            let served = group.serve(|posts| resolve(&self.comm, self.micro, &blocks, posts));
            let mut outcomes: Vec<_> = threads
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect();
            // The first failure itself, rather than the others' "the group stopped".
            if let Some(slot) = group.failed_slot().filter(|&slot| slot < outcomes.len()) {
                if outcomes[slot].is_err() {
                    return vec![outcomes.swap_remove(slot)];
                }
            }
            match served {
                Err(e) => vec![Err(e)],
                Ok(()) if outcomes.len() < batch.micro.len() => {
                    vec![Err(Error::distributed(OP, rank, world, "cannot start the micro-batch threads"))]
                }
                Ok(()) => outcomes,
            }
        });
        let mut grads = Vec::with_capacity(outcomes.len());
        let mut losses = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let (g, l) = outcome?;
            grads.push(g);
            losses.push(l);
        }
        let computed = Instant::now();
        let mut leaf = |m: usize| Ok(std::mem::take(&mut grads[m - mine.start]));
        let nodes: Vec<Vec<f32>> = cover(self.micro, mine.start, mine.end)
            .into_iter()
            .map(|node| node_sum(node, &mut leaf))
            .collect::<Result<_>>()?;
        let total = ordered_all_reduce(&self.comm, self.micro, &blocks, &nodes, len)?;
        self.finish_step(&total, &losses, &blocks, start, computed)
    }

    /// Checks that `batch` holds this rank's micro-batches, and returns them.
    fn check_batch(&self, op: &'static str, batch: &RankBatch) -> Result<std::ops::Range<usize>> {
        let (world, rank) = (self.comm.world_size(), self.comm.rank());
        let mine = rank_micro_batches(self.micro, world, rank)?;
        let indices: Vec<usize> = batch.micro.iter().map(|m| m.index).collect();
        if indices != mine.clone().collect::<Vec<_>>() {
            return Err(Error::arg(
                op,
                format!(
                    "rank {rank} of {world} computes micro-batches {mine:?} of {}, the batch holds {indices:?}",
                    self.micro
                ),
            ));
        }
        Ok(mine)
    }

    /// The end of a step: the reduced gradient `total` into the parameters' `grad`, the losses
    /// gathered (returned as the global mean loss), the step counter and the times.
    fn finish_step(
        &mut self,
        total: &[f32],
        losses: &[f32],
        blocks: &[std::ops::Range<usize>],
        start: Instant,
        computed: Instant,
    ) -> Result<f64> {
        let mut at = 0;
        for p in &self.params {
            let shape = p.shape();
            let n: usize = shape.iter().product();
            p.set_grad(Some(Tensor::from_vec(total[at..at + n].to_vec(), &shape)?));
            at += n;
        }
        let counts: Vec<usize> = blocks.iter().map(|b| b.len()).collect();
        let all = self.comm.all_gather(losses, &counts)?;
        self.step += 1;
        self.times.compute += computed - start;
        self.times.communicate += computed.elapsed();
        self.times.steps += 1;
        Ok(all.iter().map(|&l| f64::from(l)).sum())
    }

    /// One micro-batch's forward pass, with the gradients zeroed and the thread's default
    /// generator seeded for it: its mean loss times its weight, to back-propagate (`None` for
    /// an empty micro-batch), and that weighted loss's value pushed on `losses`.
    fn micro_loss(
        &self,
        mb: &crate::MicroBatch,
        loss: &mut impl FnMut(&M, &crate::MicroBatch) -> Result<Var>,
        losses: &mut Vec<f32>,
    ) -> Result<Option<Var>> {
        self.model.zero_grad();
        if mb.rows.is_empty() {
            losses.push(0.0);
            return Ok(None);
        }
        set_default_generator_state(micro_batch_generator(self.seed, self.step, mb.index))?;
        let l = {
            let _sequential = sequential();
            loss(&self.model, mb)?
        };
        losses.push((f64::from(l.value().item()?) * mb.weight) as f32);
        Ok(Some(l.mul_scalar(mb.weight as f32)))
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
    /// On rank 0, the write's error; on the others, an [`Error::Distributed`] saying rank 0
    /// could not write; a collective's error.
    pub fn save_checkpoint(&self, ckpt: &TrainingCheckpoint, path: &Path) -> Result<()> {
        let outcome = if self.is_main() { ckpt.save(path) } else { Ok(()) };
        let mut flag = [if outcome.is_ok() { 0.0 } else { 1.0 }];
        self.comm.broadcast(&mut flag, 0)?;
        match outcome {
            Err(e) => Err(e),
            Ok(()) if flag[0] != 0.0 => Err(Error::distributed(
                "save_checkpoint",
                self.comm.rank(),
                self.comm.world_size(),
                format!("rank 0 could not write {}", path.display()),
            )),
            Ok(()) => Ok(()),
        }
    }
}

/// Takes a micro-batch thread out of its group when dropped, with `error` if it failed.
struct Leave<'a> {
    group: &'a Group,
    slot: usize,
    error: Option<String>,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.group.leave(self.slot, self.error.take());
    }
}

/// The number of values of each parameter.
fn numels(params: &[Var]) -> Vec<usize> {
    params.iter().map(|p| p.shape().iter().product()).collect()
}
