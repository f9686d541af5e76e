//! Gradient buckets, and the reduction of the last micro-batch's gradient overlapped with its
//! backward pass (PyTorch DDP's `bucket_cap_mb`).
//!
//! The parameters are grouped, in reverse order (the order in which backward finishes them:
//! the last layer first), into buckets of consecutive parameters of at most a cap of bytes; a
//! bucket is a contiguous range of the flattened gradient. During the rank's last micro-batch's
//! backward, which runs on a thread of its own, gradient hooks send each parameter's gradient to
//! the calling thread as soon as it is final; that thread reduces the buckets in index order,
//! each as soon as its parameters are all in, while the backward goes on. Every rank reduces
//! the same buckets in the same order, and the reduction is element by element
//! ([`PendingSum::finish`], [`ordered_all_reduce`]), so the result has the bits of reducing the
//! whole gradient after the backward, at any world size.
//!
//! The collectives stay on the calling thread (an MPI communicator is tied to it; the job's
//! MPI is initialised "serialized"), so their timeouts and the job's abort work as without
//! overlap; the backward thread only computes.

use std::ops::Range;
use std::sync::mpsc::{channel, Receiver};
use std::time::Instant;

use tapegrad_autograd::{detect_anomaly, is_anomaly_enabled, HookHandle, Var};
use tapegrad_tensor::{Error, Result, Tensor};

use crate::comm::Communicator;
use crate::tree::{ordered_all_reduce, PendingSum};

/// PyTorch DDP's default `bucket_cap_mb`: 25 MiB.
pub(crate) const DEFAULT_BUCKET_BYTES: usize = 25 << 20;
/// PyTorch DDP's cap of the first bucket (the last layers, finished first): 1 MiB, so that
/// communication starts early even when the cap is large.
pub(crate) const FIRST_BUCKET_BYTES: usize = 1 << 20;

/// Parameters whose gradients are reduced together: `params` (indices in `parameters()`
/// order), which hold the elements `elems` of the flattened gradient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub(crate) params: Range<usize>,
    pub(crate) elems: Range<usize>,
}

/// The buckets of parameters of `sizes` numbers each (f32), from the last parameter back: each
/// takes parameters while it stays within `cap_bytes` (the first within
/// `min(cap_bytes, FIRST_BUCKET_BYTES)`); a parameter larger than the cap is a bucket alone.
pub(crate) fn buckets(sizes: &[usize], cap_bytes: usize) -> Vec<Bucket> {
    let mut offsets = vec![0];
    for &n in sizes {
        offsets.push(offsets[offsets.len() - 1] + n);
    }
    let bytes = |i: usize| sizes[i].saturating_mul(std::mem::size_of::<f32>());
    let mut out: Vec<Bucket> = vec![];
    let mut hi = sizes.len();
    while hi > 0 {
        let cap = if out.is_empty() { cap_bytes.min(FIRST_BUCKET_BYTES) } else { cap_bytes };
        let mut lo = hi - 1;
        let mut filled = bytes(lo);
        while lo > 0 && filled.saturating_add(bytes(lo - 1)) <= cap {
            lo -= 1;
            filled += bytes(lo);
        }
        out.push(Bucket { params: lo..hi, elems: offsets[lo]..offsets[hi] });
        hi = lo;
    }
    out
}

/// What the reduction of the rank's last micro-batch needs besides that micro-batch's
/// gradient: the sums of this rank's other tree nodes, the pending sum of its last node, and
/// every rank's block of micro-batches.
pub(crate) struct Reduction<'a, C> {
    pub(crate) comm: &'a C,
    pub(crate) micro: usize,
    pub(crate) blocks: &'a [Range<usize>],
    /// The complete sums of the rank's nodes before the last one.
    pub(crate) nodes: &'a [Vec<f32>],
    /// The last node, waiting for its last micro-batch.
    pub(crate) pending: &'a PendingSum,
}

impl<C: Communicator> Reduction<'_, C> {
    /// Elements `elems` of the global sum, given the same elements of the rank's last
    /// micro-batch's gradient.
    ///
    /// # Errors
    /// A collective's error; a piece of the wrong length.
    pub(crate) fn reduce(&self, elems: Range<usize>, piece: &[f32]) -> Result<Vec<f32>> {
        let last = self.pending.finish(elems.clone(), piece)?;
        let mut local: Vec<&[f32]> = self.nodes.iter().map(|node| &node[elems.clone()]).collect();
        local.push(&last);
        ordered_all_reduce(self.comm, self.micro, self.blocks, &local, elems.len())
    }

    /// Runs `loss`'s backward (nothing for an empty micro-batch) on a thread of its own while
    /// this thread reduces the `buckets` of `params`' gradients in order, each as soon as the
    /// backward has finished its parameters. Returns the whole reduced gradient and when the
    /// backward ended.
    ///
    /// # Errors
    /// The backward's error (after the collectives already started are done, so that every
    /// rank stays in step), a collective's error, or a gradient of the wrong size.
    ///
    /// # Panics
    /// Re-raises a panic of the backward on this thread, with its payload.
    pub(crate) fn overlapped(
        &self,
        params: &[Var],
        buckets: &[Bucket],
        loss: Option<Var>,
        len: usize,
    ) -> Result<(Vec<f32>, Instant)> {
        let (tx, rx) = channel();
        let hooks = Hooks(
            params
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let tx = tx.clone();
                    p.register_hook(move |g| {
                        // The receiver is gone only when this rank has already failed.
                        let _ = tx.send(Ready::Grad(i, g.clone()));
                        None
                    })
                })
                .collect(),
        );
        let anomaly = is_anomaly_enabled();
        std::thread::scope(|s| {
            let backward = std::thread::Builder::new()
                .name("tapegrad-backward".into())
                .spawn_scoped(s, move || {
                    detect_anomaly(anomaly);
                    let done = loss.map_or(Ok(()), |l| l.backward()).map(|()| Instant::now());
                    // Removed before `Done`, and on a panic by the unwinding: the channel then
                    // closes and the reduction below stops waiting.
                    drop(hooks);
                    let _ = tx.send(Ready::Done(done));
                })
                .map_err(|e| self.failed(format!("cannot start the backward thread: {e}")))?;
            let reduced = self.as_ready(params, buckets, &rx, len);
            if let Err(panic) = backward.join() {
                std::panic::resume_unwind(panic);
            }
            reduced
        })
    }

    /// The loop of [`overlapped`](Self::overlapped) on the calling thread.
    fn as_ready(
        &self,
        params: &[Var],
        buckets: &[Bucket],
        rx: &Receiver<Ready>,
        len: usize,
    ) -> Result<(Vec<f32>, Instant)> {
        let mut grads: Vec<Option<Tensor>> = vec![None; params.len()];
        let mut done: Option<Instant> = None;
        let mut total = vec![0.0_f32; len];
        let mut next = 0;
        loop {
            while let Some(b) = buckets.get(next) {
                // After the backward, a parameter it did not reach has a zero gradient.
                if done.is_none() && grads[b.params.clone()].iter().any(Option::is_none) {
                    break;
                }
                let mut piece = Vec::with_capacity(b.elems.len());
                for i in b.params.clone() {
                    let numel: usize = params[i].shape().iter().product();
                    match grads[i].take() {
                        Some(g) if g.numel() == numel => piece.extend(g.to_vec()),
                        Some(g) => {
                            return Err(self
                                .failed(format!("parameter {i} of {numel} numbers got a gradient of {}", g.numel())))
                        }
                        None => piece.resize(piece.len() + numel, 0.0),
                    }
                }
                total[b.elems.clone()].copy_from_slice(&self.reduce(b.elems.clone(), &piece)?);
                next += 1;
            }
            if let Some(end) = done.filter(|_| next == buckets.len()) {
                return Ok((total, end));
            }
            match rx.recv() {
                Ok(Ready::Grad(i, g)) => grads[i] = Some(g),
                Ok(Ready::Done(end)) => done = Some(end?),
                Err(_) => return Err(self.failed("the backward thread ended without finishing".into())),
            }
        }
    }

    /// An [`Error::Distributed`] of the overlapped reduction on this rank.
    fn failed(&self, reason: String) -> Error {
        Error::distributed("forward_backward", self.comm.rank(), self.comm.world_size(), reason)
    }
}

/// What the backward thread tells the reducing thread.
enum Ready {
    /// Parameter `.0`'s gradient of the micro-batch, final.
    Grad(usize, Tensor),
    /// The backward's end (or error): every gradient it computes has been sent.
    Done(Result<Instant>),
}

/// Gradient hooks removed when dropped (also on a panic), which closes their channel.
struct Hooks(Vec<HookHandle>);

impl Drop for Hooks {
    fn drop(&mut self) {
        for h in self.0.drain(..) {
            h.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_run_backwards_within_the_cap() {
        // 4-byte numbers: sizes of 100, 50, 300, 10, 10 numbers, caps in bytes.
        let sizes = [100, 50, 300, 10, 10];
        let b = buckets(&sizes, 600);
        let params: Vec<_> = b.iter().map(|b| b.params.clone()).collect();
        assert_eq!(params, [3..5, 2..3, 0..2]); // 300 numbers = 1200 bytes: a bucket alone
        let params: Vec<_> = buckets(&sizes, 599).iter().map(|b| b.params.clone()).collect();
        assert_eq!(params, [3..5, 2..3, 1..2, 0..1]);
        assert_eq!(b[0].elems, 450..470);
        assert_eq!(b[2].elems, 0..150);
        // One bucket when everything fits, except that the first holds at most 1 MiB.
        assert_eq!(buckets(&sizes, DEFAULT_BUCKET_BYTES).len(), 1);
        let big = [1 << 20, 1000, 10];
        let params: Vec<_> = buckets(&big, DEFAULT_BUCKET_BYTES).iter().map(|b| b.params.clone()).collect();
        assert_eq!(params, [1..3, 0..1]);
        assert!(buckets(&[], 600).is_empty());
        // Every parameter in exactly one bucket, the elements tiling the gradient.
        for cap in [1, 4, 40, 1000, 5000] {
            let b = buckets(&sizes, cap);
            let mut at = 470;
            for bucket in &b {
                assert_eq!(bucket.elems.end, at);
                at = bucket.elems.start;
            }
            assert_eq!(at, 0);
        }
    }
}
