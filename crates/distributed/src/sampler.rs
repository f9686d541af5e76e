//! Which rows of the dataset each rank trains on: every epoch is one seeded permutation, cut
//! into global batches, each cut into micro-batches ([`micro_batch_rows`]); a rank gets the
//! micro-batches of its block ([`rank_micro_batches`]). PyTorch's `DistributedSampler`, but
//! by micro-batch, so that the samples of micro-batch `m` do not depend on the world size.

use std::ops::Range;

use tapegrad_nn::data::{permutation, Dataset};
use tapegrad_tensor::{Error, Generator, Result, Tensor};

use crate::split::{micro_batch_rows, rank_micro_batches};
use crate::stream_seed;

/// One micro-batch of a global batch: which rows of the dataset, and its weight in the batch's
/// mean loss.
#[derive(Clone, Debug, PartialEq)]
pub struct MicroBatch {
    /// The micro-batch's index in its global batch, `0..micro`: what its dropout masks and
    /// its place in the reduction order derive from.
    pub index: usize,
    /// Dataset rows, in order.
    pub rows: Vec<usize>,
    /// `rows.len() / global batch length`: the micro-batch's mean loss times this, summed over
    /// the micro-batches, is the global batch's mean loss.
    pub weight: f64,
}

impl MicroBatch {
    /// The micro-batch's images (`[rows, ...]`, gathered into a fresh tensor) and labels.
    ///
    /// # Errors
    /// `index_select` when a row is out of the dataset's range.
    pub fn gather(&self, data: &Dataset) -> Result<(Tensor<f32>, Vec<usize>)> {
        let labels = self.rows.iter().map(|&i| data.labels().get(i).copied()).collect::<Option<Vec<usize>>>();
        let labels = labels.ok_or_else(|| {
            Error::arg("MicroBatch::gather", format!("a row is past the dataset's {} samples", data.len()))
        })?;
        Ok((data.images().index_select(0, &self.rows)?, labels))
    }
}

/// A global batch as one rank sees it: its micro-batches, in index order.
#[derive(Clone, Debug, PartialEq)]
pub struct RankBatch {
    /// The global batch's index in its epoch.
    pub batch: usize,
    /// The rows of the whole global batch (every rank's).
    pub len: usize,
    /// This rank's micro-batches.
    pub micro: Vec<MicroBatch>,
}

/// Gives each rank its micro-batches of every global batch of every epoch.
///
/// ```
/// use tapegrad_distributed::DistributedSampler;
/// // 10 rows, global batches of 4 cut into 2 micro-batches, 2 ranks.
/// let r0 = DistributedSampler::new(10, 4, 2, 0, 2, 7)?;
/// let r1 = DistributedSampler::new(10, 4, 2, 1, 2, 7)?;
/// let one = DistributedSampler::new(10, 4, 2, 0, 1, 7)?;
/// let (e0, e1, all) = (r0.epoch(0), r1.epoch(0), one.epoch(0));
/// assert_eq!(all.len(), 3); // 4 + 4 + 2
/// for ((a, b), whole) in e0.iter().zip(&e1).zip(&all) {
///     assert_eq!([a.micro.clone(), b.micro.clone()].concat(), whole.micro);
/// }
/// # Ok::<(), tapegrad_tensor::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct DistributedSampler {
    len: usize,
    batch: usize,
    micro: usize,
    mine: Range<usize>,
    seed: u64,
    shuffle: bool,
    drop_last: bool,
}

impl DistributedSampler {
    /// A sampler over `len` rows in global batches of `batch`, each cut into `micro`
    /// micro-batches, for `rank` of `world`, shuffled every epoch from `seed`.
    ///
    /// # Errors
    /// `DistributedSampler::new` when `batch` or `micro` is 0, or as [`rank_micro_batches`].
    pub fn new(len: usize, batch: usize, micro: usize, rank: usize, world: usize, seed: u64) -> Result<Self> {
        if batch == 0 || micro == 0 {
            return Err(Error::arg("DistributedSampler::new", "batch and micro must be at least 1"));
        }
        let mine = rank_micro_batches(micro, world, rank)?;
        Ok(DistributedSampler { len, batch, micro, mine, seed, shuffle: true, drop_last: false })
    }

    /// Visits the rows in dataset order instead of a seeded permutation.
    pub fn shuffle(mut self, on: bool) -> Self {
        self.shuffle = on;
        self
    }

    /// Drops the last global batch when it is shorter than `batch`.
    pub fn drop_last(mut self, on: bool) -> Self {
        self.drop_last = on;
        self
    }

    /// The number of global batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last {
            self.len / self.batch
        } else {
            self.len.div_ceil(self.batch)
        }
    }

    /// The order of the rows in `epoch`: `permutation(len)` drawn from a generator seeded with
    /// `(seed, epoch)` (so any epoch can be recomputed, e.g. when resuming), or `0..len`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        if self.shuffle {
            permutation(self.len, &mut Generator::new(stream_seed(&[self.seed, 0x5A_4D_50_4C_45, epoch])))
        } else {
            (0..self.len).collect()
        }
    }

    /// This rank's part of every global batch of `epoch`.
    pub fn epoch(&self, epoch: u64) -> Vec<RankBatch> {
        let order = self.order(epoch);
        (0..self.batches_per_epoch())
            .map(|b| {
                let rows = &order[b * self.batch..((b + 1) * self.batch).min(self.len)];
                let micro = self
                    .mine
                    .clone()
                    .map(|m| {
                        let cut = micro_batch_rows(rows.len(), self.micro, m);
                        MicroBatch { index: m, weight: cut.len() as f64 / rows.len() as f64, rows: rows[cut].to_vec() }
                    })
                    .collect();
                RankBatch { batch: b, len: rows.len(), micro }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_world_size_sees_the_same_micro_batches() {
        let (len, batch, micro) = (37, 8, 4);
        let one = DistributedSampler::new(len, batch, micro, 0, 1, 3).unwrap();
        for epoch in 0..3 {
            let whole = one.epoch(epoch);
            // Each epoch visits every row once, and the weights of a batch sum to 1.
            let mut rows: Vec<usize> = whole.iter().flat_map(|b| b.micro.iter().flat_map(|m| m.rows.clone())).collect();
            rows.sort();
            assert_eq!(rows, (0..len).collect::<Vec<_>>());
            for b in &whole {
                assert!((b.micro.iter().map(|m| m.weight).sum::<f64>() - 1.0).abs() < 1e-12);
            }
            for world in [2, 3, 4] {
                let parts: Vec<Vec<RankBatch>> = (0..world)
                    .map(|r| DistributedSampler::new(len, batch, micro, r, world, 3).unwrap().epoch(epoch))
                    .collect();
                for (i, b) in whole.iter().enumerate() {
                    let joined: Vec<MicroBatch> = parts.iter().flat_map(|p| p[i].micro.clone()).collect();
                    assert_eq!(joined, b.micro, "world {world}, epoch {epoch}, batch {i}");
                }
            }
        }
        assert_ne!(one.order(0), one.order(1), "each epoch is shuffled anew");
        assert_eq!(one.clone().drop_last(true).batches_per_epoch(), 4);
        assert_eq!(one.clone().shuffle(false).order(5), (0..len).collect::<Vec<_>>());
    }
}
