//! [`SyncBatchNorm`]: BatchNorm over the whole global batch, every micro-batch of every rank,
//! with the same bits at every world size.
//!
//! [`DistributedDataParallel::forward_backward_concurrent`](crate::DistributedDataParallel::forward_backward_concurrent)
//! runs each of a rank's micro-batches on a thread of its own, all at once. A training
//! `SyncBatchNorm` on such a thread is a rendezvous ([`Group`]): in forward, every micro-batch
//! posts its per-channel `(count, mean, M2)`; in backward, its per-channel `Σ dx̂` and
//! `Σ dx̂·x̂`. When all of the rank's micro-batches have posted, the rank's own thread (the
//! only one that talks to the other ranks) all-gathers every micro-batch's record from every
//! rank and combines them over the fixed tree of micro-batch indices ([`crate::tree`]), in
//! `f64`: every rank, at every world size, gets the same global statistics to the bit.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tapegrad_autograd::{Backward, Grads, Var};
use tapegrad_nn::{BatchNorm2d, Module};
use tapegrad_tensor::{Error, Result, Tensor};

use crate::comm::Communicator;
use crate::tree::{fold, Node};

/// The op name of every error of the layer.
const OP: &str = "SyncBatchNorm";
/// The tags of the two kinds of record, first in each (a check that all agree).
const STATS: f32 = 1.0;
const SUMS: f32 = 2.0;
/// The largest count an `f32` record holds exactly.
const MAX_COUNT: usize = 1 << 24;

/// BatchNorm whose training statistics are those of the whole global batch (every micro-batch
/// of every rank), PyTorch's `torch.nn.SyncBatchNorm`, world-size invariant: trained with
/// [`DistributedDataParallel::forward_backward_concurrent`](crate::DistributedDataParallel::forward_backward_concurrent),
/// 1, 2 or 4 ranks end with bit-identical weights *and* running statistics.
///
/// - Input `[N, C, *]` (any rank from 2 to 5, as PyTorch's), normalised per channel.
/// - Training inside `forward_backward_concurrent`: mean and biased variance over every row of
///   the global batch; the backward uses the global sums `Σ dx̂` and `Σ dx̂·x̂`; the running
///   statistics are updated once per step (per call of the layer) with the global mean and
///   unbiased variance, identically on every rank.
/// - Training outside it (a plain loop, one process): the batch statistics of the input, as
///   [`BatchNorm2d`] (PyTorch's `SyncBatchNorm` does the same without a process group).
/// - Training inside [`forward_backward`](crate::DistributedDataParallel::forward_backward),
///   which computes a rank's micro-batches one after another: an error, since the global batch
///   is never there at once.
/// - Eval: the running statistics, as [`BatchNorm2d`].
///
/// Its parameters, buffers and counter are a [`BatchNorm2d`]'s, under the same names
/// (`weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`, as PyTorch's), so
/// state dicts and checkpoints move between the two; [`From<BatchNorm2d>`] converts a built
/// layer with its state (PyTorch's `convert_sync_batchnorm`, one layer at a time: a Rust model
/// declares `SyncBatchNorm` where it declared `BatchNorm2d`).
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_distributed::SyncBatchNorm;
/// use tapegrad_nn::Module;
/// use tapegrad_tensor::Tensor;
/// let bn = SyncBatchNorm::new(2);
/// let x = Var::new(Tensor::from_vec(vec![1.0, 10.0, 3.0, 30.0], &[2, 2])?);
/// let y = bn.forward(&x)?; // outside a data-parallel step: this batch's statistics
/// assert!((y.value().to_vec()[0] + 1.0).abs() < 1e-4);
/// let names: Vec<String> = bn.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["weight", "bias"]);
/// # Ok::<(), tapegrad_tensor::Error>(())
/// ```
#[derive(tapegrad_nn::Module)]
#[module(display = false)]
pub struct SyncBatchNorm(#[module(flatten)] BatchNorm2d);

impl SyncBatchNorm {
    /// A layer over `num_features` channels: weight 1, bias 0, running mean 0, running
    /// variance 1, `eps = 1e-5`, `momentum = 0.1`, in training mode.
    pub fn new(num_features: usize) -> SyncBatchNorm {
        SyncBatchNorm(BatchNorm2d::new(num_features))
    }

    /// Sets `eps`, added to the variance.
    pub fn eps(self, eps: f64) -> SyncBatchNorm {
        SyncBatchNorm(self.0.eps(eps))
    }

    /// Sets the momentum of the running statistics.
    pub fn momentum(self, momentum: f64) -> SyncBatchNorm {
        SyncBatchNorm(self.0.momentum(momentum))
    }

    /// The [`BatchNorm2d`] holding the state (weight, bias, running statistics).
    pub fn batch_norm(&self) -> &BatchNorm2d {
        &self.0
    }

    /// Back to a [`BatchNorm2d`] with the same state.
    pub fn into_batch_norm(self) -> BatchNorm2d {
        self.0
    }

    /// The synchronised training forward pass, on a micro-batch thread of `group`.
    fn forward_synced(&self, x: &Var, ctx: &Context) -> Result<Var> {
        let shape = x.shape();
        let layout = Layout::of(&shape);
        let value = x.value().to_vec();
        // This micro-batch's per-channel count, mean and sum of squared deviations.
        let count = layout.n * layout.s;
        if count > MAX_COUNT {
            return Err(Error::shape(OP, &shape, format!("more than {MAX_COUNT} values per channel in a micro-batch")));
        }
        let mut record = vec![STATS, count as f32];
        let means = layout.per_channel(|c| layout.channel(&value, c).map(f64::from).sum::<f64>() / count as f64);
        let m2 = layout.per_channel(|c| layout.channel(&value, c).map(|v| (f64::from(v) - means[c]).powi(2)).sum());
        record.extend(means.iter().chain(&m2).map(|&v| v as f32));
        let global = ctx.group.exchange(ctx.slot, record)?;
        let c = layout.c;
        let n = global[0] as usize;
        if n < 2 {
            return Err(Error::shape(
                OP,
                &shape,
                "expected more than 1 value per channel in the global batch when training",
            ));
        }
        let (mean, var) = (&global[1..=c], &global[c + 1..=2 * c]);
        let eps = self.0.eps_value();
        let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let invstd: Vec<f32> = var.iter().map(|&v| (1.0 / (v + eps).sqrt()) as f32).collect();
        let mut xhat = value;
        layout.for_each_mut(&mut xhat, |c, v| *v = (*v - mean32[c]) * invstd[c]);
        let xhat = Tensor::from_vec(xhat, &shape)?;
        if ctx.slot == 0 {
            // Once per step on every rank, from the same global numbers.
            let var32: Vec<f32> = var.iter().map(|&v| v as f32).collect();
            self.0.update_running_stats(&Tensor::from_vec(mean32, &[c])?, &Tensor::from_vec(var32, &[c])?, n)?;
        }
        let normalised = Var::from_op(xhat.clone(), &[x], || GlobalNorm {
            group: ctx.group.clone(),
            slot: ctx.slot,
            xhat,
            invstd,
            count: n as f64,
        });
        self.affine(&normalised, shape.len())
    }

    /// `x̂ · weight + bias`, the affine parameters shaped to broadcast over `[N, C, *]`.
    fn affine(&self, xhat: &Var, rank: usize) -> Result<Var> {
        let mut bshape = vec![1; rank];
        bshape[1] = self.0.num_features();
        xhat.mul(&self.0.weight().reshape(&bshape)?)?.add(&self.0.bias().reshape(&bshape)?)
    }
}

impl From<BatchNorm2d> for SyncBatchNorm {
    /// The layer with `bn`'s state: weight, bias, running statistics, count, `eps`, momentum
    /// and mode.
    fn from(bn: BatchNorm2d) -> SyncBatchNorm {
        SyncBatchNorm(bn)
    }
}

impl Module for SyncBatchNorm {
    /// See [`SyncBatchNorm`]: global statistics inside
    /// [`forward_backward_concurrent`](crate::DistributedDataParallel::forward_backward_concurrent),
    /// the input's own outside it, the running ones in eval.
    ///
    /// # Errors
    /// `SyncBatchNorm` for an input that is not `[N, C, *]` of rank 2 to 5 with the layer's
    /// channel count, a training batch of one value per channel, a training call inside
    /// [`forward_backward`](crate::DistributedDataParallel::forward_backward) (which cannot
    /// synchronise), more than 2^24 values per channel in a micro-batch; a failed exchange
    /// with the other micro-batches ([`Error::Distributed`]).
    fn forward(&self, x: &Var) -> Result<Var> {
        let shape = x.shape();
        let c = self.0.num_features();
        if !(2..=5).contains(&shape.len()) || shape[1] != c {
            return Err(Error::shape(OP, &shape, format!("expected [N, {c}, *] of rank 2 to 5")));
        }
        let training = self.is_training();
        if training {
            if let Some(ctx) = CONTEXT.with(|ctx| ctx.borrow().clone()) {
                return self.forward_synced(x, &ctx);
            }
            if SEQUENTIAL.with(Cell::get) {
                return Err(Error::arg(
                    OP,
                    "in training it needs DistributedDataParallel::forward_backward_concurrent: \
                     forward_backward computes a rank's micro-batches one after another, so the \
                     global batch's statistics never exist at once (use forward_backward_concurrent, \
                     or eval mode)",
                ));
            }
            if shape.iter().enumerate().filter(|&(d, _)| d != 1).map(|(_, &n)| n).product::<usize>() < 2 {
                return Err(Error::shape(OP, &shape, "expected more than 1 value per channel when training"));
            }
        }
        // BatchNorm2d's maths, on the input seen as [N, C, S, 1] (the same per-channel sets).
        let layout = Layout::of(&shape);
        let y = self.0.forward(&x.reshape(&[layout.n, c, layout.s, 1])?)?;
        y.reshape(&shape)
    }
}

impl fmt::Display for SyncBatchNorm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.0.to_string();
        write!(f, "{OP}{}", inner.strip_prefix("BatchNorm2d").unwrap_or(&inner))
    }
}

/// `[N, C, S]`: an input `[N, C, *]` with its trailing dims as one.
struct Layout {
    n: usize,
    c: usize,
    s: usize,
}

impl Layout {
    fn of(shape: &[usize]) -> Layout {
        Layout { n: shape[0], c: shape[1], s: shape[2..].iter().product() }
    }

    /// The ranges of channel `c`'s values in a row-major buffer, one per row.
    fn rows(&self, c: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.n).map(move |n| (n * self.c + c) * self.s..(n * self.c + c + 1) * self.s)
    }

    /// Channel `c`'s values, row by row.
    fn channel<'a>(&'a self, buf: &'a [f32], c: usize) -> impl Iterator<Item = f32> + 'a {
        self.rows(c).flat_map(move |r| buf[r].iter().copied())
    }

    /// `f(c)` for every channel.
    fn per_channel(&self, f: impl FnMut(usize) -> f64) -> Vec<f64> {
        (0..self.c).map(f).collect()
    }

    /// `f(c, value)` on every value of the buffer, with its channel.
    fn for_each_mut(&self, buf: &mut [f32], mut f: impl FnMut(usize, &mut f32)) {
        for c in 0..self.c {
            for r in self.rows(c) {
                buf[r].iter_mut().for_each(|v| f(c, v));
            }
        }
    }
}

/// The backward of `x̂ = (x - mean) · invstd` with the global batch's statistics:
/// `dx = invstd · (dx̂ - Σ dx̂ / N - x̂ · Σ (dx̂ · x̂) / N)`, the sums over the global batch.
struct GlobalNorm {
    group: Arc<Group>,
    slot: usize,
    xhat: Tensor,
    invstd: Vec<f32>,
    count: f64,
}

impl Backward<f32> for GlobalNorm {
    fn name(&self) -> &'static str {
        "sync_batch_norm"
    }

    fn backward(&self, dy: &Tensor, _: &[bool]) -> Result<Grads<f32>> {
        let shape = self.xhat.shape().to_vec();
        let layout = Layout::of(&shape);
        let (dy, xhat) = (dy.to_vec(), self.xhat.to_vec());
        let s1 = layout.per_channel(|c| layout.channel(&dy, c).map(f64::from).sum());
        let s2 = layout.per_channel(|c| {
            layout.channel(&dy, c).zip(layout.channel(&xhat, c)).map(|(g, h)| f64::from(g) * f64::from(h)).sum()
        });
        let mut record = vec![SUMS];
        record.extend(s1.iter().chain(&s2).map(|&v| v as f32));
        let global = self.group.exchange(self.slot, record)?;
        let c = layout.c;
        let a: Vec<f32> = global[..c].iter().map(|&v| (v / self.count) as f32).collect();
        let b: Vec<f32> = global[c..2 * c].iter().map(|&v| (v / self.count) as f32).collect();
        let mut dx = dy;
        for ch in 0..c {
            for r in layout.rows(ch) {
                for (g, &h) in dx[r.clone()].iter_mut().zip(&xhat[r]) {
                    *g = self.invstd[ch] * (*g - a[ch] - h * b[ch]);
                }
            }
        }
        Ok(Grads::one(Tensor::from_vec(dx, &shape)?))
    }

    fn saved(&self) -> Vec<&Tensor> {
        vec![&self.xhat]
    }
}

// ─── The rendezvous ─────────────────────────────────────────────────────────────

thread_local! {
    /// The group and slot of the micro-batch this thread computes, inside
    /// `forward_backward_concurrent`.
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
    /// True while `forward_backward` runs a loss closure (where a training `SyncBatchNorm`
    /// cannot synchronise).
    static SEQUENTIAL: Cell<bool> = const { Cell::new(false) };
}

#[derive(Clone)]
pub(crate) struct Context {
    group: Arc<Group>,
    slot: usize,
}

/// Makes this thread micro-batch `slot` of `group` until the guard is dropped.
pub(crate) fn enter(group: Arc<Group>, slot: usize) -> impl Drop {
    CONTEXT.with(|ctx| *ctx.borrow_mut() = Some(Context { group, slot }));
    Reset(|| CONTEXT.with(|ctx| *ctx.borrow_mut() = None))
}

/// Marks this thread as running a loss closure of `forward_backward` until the guard is
/// dropped.
pub(crate) fn sequential() -> impl Drop {
    SEQUENTIAL.with(|s| s.set(true));
    Reset(|| SEQUENTIAL.with(|s| s.set(false)))
}

/// Runs its closure when dropped.
struct Reset<F: FnMut()>(F);

impl<F: FnMut()> Drop for Reset<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// One rank's micro-batch threads meeting at each `SyncBatchNorm` exchange, and the rank's own
/// thread serving them ([`serve`](Group::serve)).
pub(crate) struct Group {
    slots: usize,
    rank: usize,
    world: usize,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Exchanges completed.
    round: u64,
    /// This round's records, by slot.
    posts: Vec<Option<Vec<f32>>>,
    /// The last round's result.
    result: Option<Arc<Vec<f64>>>,
    /// Micro-batch threads done.
    left: usize,
    /// Why the group stopped, and the slot whose failure stopped it (`None`: the rank's thread).
    failed: Option<(String, Option<usize>)>,
}

impl Group {
    pub(crate) fn new(slots: usize, rank: usize, world: usize) -> Group {
        let state = State { posts: vec![None; slots], ..State::default() };
        Group { slots, rank, world, state: Mutex::new(state), changed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn error(&self, reason: &str) -> Error {
        Error::distributed(OP, self.rank, self.world, reason.to_string())
    }

    /// Posts micro-batch `slot`'s record and waits for the round's combined result.
    fn exchange(&self, slot: usize, record: Vec<f32>) -> Result<Arc<Vec<f64>>> {
        let mut st = self.lock();
        if let Some((why, _)) = &st.failed {
            return Err(self.error(why));
        }
        let round = st.round;
        st.posts[slot] = Some(record);
        self.changed.notify_all();
        while st.round == round && st.failed.is_none() {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        match (&st.failed, &st.result) {
            // The next round needs this slot's record, so the result is still this round's.
            (_, Some(result)) if st.round > round => Ok(result.clone()),
            (Some((why, _)), _) => Err(self.error(why)),
            _ => Err(self.error("an exchange ended without a result")),
        }
    }

    /// Micro-batch `slot` is done, with its error if it failed (which stops the others).
    pub(crate) fn leave(&self, slot: usize, error: Option<String>) {
        let mut st = self.lock();
        st.left += 1;
        if let Some(why) = error {
            st.failed.get_or_insert((format!("micro-batch thread {slot} failed: {why}"), Some(slot)));
        }
        self.changed.notify_all();
    }

    /// The slot whose own failure stopped the group, if one did.
    pub(crate) fn failed_slot(&self) -> Option<usize> {
        self.lock().failed.as_ref().and_then(|(_, slot)| *slot)
    }

    /// Serves the exchanges until every micro-batch thread has left: each time all have posted,
    /// `resolve` turns their records (by slot) into the result they all get.
    ///
    /// # Errors
    /// `resolve`'s error (which also stops the threads), a thread's failure, or threads that
    /// took part in different numbers of exchanges.
    pub(crate) fn serve(&self, mut resolve: impl FnMut(&[Vec<f32>]) -> Result<Vec<f64>>) -> Result<()> {
        loop {
            let mut st = self.lock();
            loop {
                if let Some((why, _)) = &st.failed {
                    return Err(self.error(why));
                }
                let posted = st.posts.iter().filter(|p| p.is_some()).count();
                if posted == self.slots {
                    break;
                }
                if st.left == self.slots {
                    return Ok(());
                }
                if posted > 0 && posted + st.left == self.slots {
                    let why = "the micro-batches reached different numbers of SyncBatchNorm layers".to_string();
                    st.failed = Some((why.clone(), None));
                    self.changed.notify_all();
                    return Err(self.error(&why));
                }
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            let posts: Vec<Vec<f32>> = st.posts.iter_mut().filter_map(Option::take).collect();
            drop(st);
            let result = resolve(&posts);
            let mut st = self.lock();
            match result {
                Ok(result) => {
                    st.result = Some(Arc::new(result));
                    st.round += 1;
                    self.changed.notify_all();
                }
                Err(e) => {
                    st.failed.get_or_insert((e.to_string(), None));
                    self.changed.notify_all();
                    return Err(e);
                }
            }
        }
    }
}

/// The rank's side of one exchange: all-gathers every micro-batch's record (`posts`, this
/// rank's in order; `blocks[r]` rank `r`'s micro-batches) and combines them over the tree of
/// `micro` micro-batches, in `f64`.
pub(crate) fn resolve(
    comm: &dyn Communicator,
    micro: usize,
    blocks: &[Range<usize>],
    posts: &[Vec<f32>],
) -> Result<Vec<f64>> {
    let len = posts.first().map_or(0, Vec::len);
    let fail = |why: String| Error::distributed(OP, comm.rank(), comm.world_size(), why);
    if len < 1 || posts.iter().any(|p| p.len() != len || p[0] != posts[0][0]) {
        return Err(fail("the micro-batches reached different SyncBatchNorm layers".into()));
    }
    let local: Vec<f32> = posts.concat();
    let counts: Vec<usize> = blocks.iter().map(|b| b.len() * len).collect();
    let all = comm.all_gather(&local, &counts)?;
    let records: Vec<&[f32]> = all.chunks(len).collect();
    if records.len() != micro || records.iter().any(|r| r[0] != posts[0][0]) {
        return Err(fail("the ranks reached different SyncBatchNorm layers".into()));
    }
    let widen = |r: &[f32]| -> Vec<f64> { r.iter().map(|&v| f64::from(v)).collect() };
    let root = Node::root(micro);
    if posts[0][0] == STATS {
        // (count, mean, M2) per channel, combined pairwise (Chan, Golub and LeVeque).
        let c = (len - 2) / 2;
        let (n, mean, m2) = fold(
            root,
            &mut |m| {
                let r = widen(records[m]);
                (r[1], r[2..2 + c].to_vec(), r[2 + c..].to_vec())
            },
            &mut |(na, ma, sa), (nb, mb, sb)| {
                let n = na + nb;
                let mut mean = Vec::with_capacity(c);
                let mut m2 = Vec::with_capacity(c);
                for k in 0..c {
                    let delta = mb[k] - ma[k];
                    mean.push(ma[k] + delta * nb / n);
                    m2.push(sa[k] + sb[k] + delta * delta * na * nb / n);
                }
                (n, mean, m2)
            },
        );
        let mut out = vec![n];
        out.extend(mean);
        out.extend(m2.iter().map(|s| s / n));
        Ok(out)
    } else {
        Ok(fold(root, &mut |m| widen(&records[m][1..]), &mut |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{rank_micro_batches, LocalWorld};

    /// Every rank's `resolve` for `records` (one per micro-batch) at `world` ranks.
    fn resolve_at(world: usize, records: &[Vec<f32>]) -> Vec<Vec<f64>> {
        let micro = records.len();
        LocalWorld::new(world)
            .run(|comm| {
                let blocks = (0..world).map(|r| rank_micro_batches(micro, world, r)).collect::<Result<Vec<_>>>()?;
                let posts: Vec<Vec<f32>> = blocks[comm.rank()].clone().map(|m| records[m].clone()).collect();
                resolve(&comm, micro, &blocks, &posts)
            })
            .unwrap()
    }

    #[test]
    fn every_rank_combines_every_micro_batch_in_tree_order_at_any_world_size() {
        // (1e17 + 1) + (-1e17 + 1) = 0 in f64; a left fold, or a sum per rank first at 4
        // ranks, gives 1.
        let records: Vec<Vec<f32>> = [1e17_f32, 1.0, -1e17, 1.0].iter().map(|&v| vec![SUMS, v]).collect();
        for world in [1, 2, 4] {
            assert_eq!(resolve_at(world, &records), vec![vec![0.0]; world], "world {world}");
        }
    }

    #[test]
    fn combined_statistics_are_those_of_the_whole_batch() {
        let parts = [vec![1.0_f64, 2.0], vec![10.0, -3.0, 4.0], vec![0.5, 0.25, 8.0, 7.0]];
        let record = |xs: &[f64]| {
            let n = xs.len() as f64;
            let mean = xs.iter().sum::<f64>() / n;
            vec![STATS, n as f32, mean as f32, xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() as f32]
        };
        let records: Vec<Vec<f32>> = parts.iter().map(|p| record(p)).collect();
        let all: Vec<f64> = parts.concat();
        let mean = all.iter().sum::<f64>() / 9.0;
        let var = all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 9.0;
        for world in [1, 3] {
            for got in resolve_at(world, &records) {
                assert_eq!(got[0], 9.0);
                assert!((got[1] - mean).abs() < 1e-6 && (got[2] - var).abs() < 1e-5, "{got:?}: {mean}, {var}");
            }
        }
        // Records of different kinds (layers) are refused, not mixed.
        let mixed = vec![records[0].clone(), vec![SUMS, 1.0, 2.0, 3.0]];
        let err =
            LocalWorld::new(1).run(|comm| resolve(&comm, 2, &[rank_micro_batches(2, 1, 0)?], &mixed)).unwrap_err();
        assert!(matches!(err, Error::Distributed { op: "SyncBatchNorm", .. }), "{err:?}");
    }
}
