//! How a global batch is cut into micro-batches, and which ranks compute which.
//!
//! The cut depends only on the batch's length and the number of micro-batches, never on the
//! world size: that is what lets 1, 2 or 4 processes compute the same partial gradients.

use std::ops::Range;

use tapegrad_tensor::{Error, Result};

/// The rows of micro-batch `m` when a batch of `len` rows is cut into `micro` micro-batches:
/// consecutive ranges whose lengths differ by at most one, the longer ones first (as
/// `numpy.array_split`). Some are empty when `len < micro`.
///
/// ```
/// use tapegrad_distributed::micro_batch_rows;
/// let cuts: Vec<_> = (0..4).map(|m| micro_batch_rows(10, 4, m)).collect();
/// assert_eq!(cuts, [0..3, 3..6, 6..8, 8..10]);
/// ```
///
/// An index past the last micro-batch (or `micro` = 0) has no rows: `len..len`.
pub fn micro_batch_rows(len: usize, micro: usize, m: usize) -> Range<usize> {
    if m >= micro {
        return len..len;
    }
    let (base, extra) = (len / micro, len % micro);
    let start = m * base + m.min(extra);
    start..start + base + usize::from(m < extra)
}

/// The micro-batches that `rank` of `world` computes: a contiguous block, the blocks' lengths
/// differing by at most one (the longer ones first).
///
/// ```
/// use tapegrad_distributed::rank_micro_batches;
/// assert_eq!(rank_micro_batches(8, 2, 1)?, 4..8);
/// assert_eq!(rank_micro_batches(4, 3, 0)?, 0..2);
/// assert!(rank_micro_batches(2, 4, 0).is_err()); // a rank without a micro-batch
/// # Ok::<(), tapegrad_tensor::Error>(())
/// ```
///
/// # Errors
/// `rank_micro_batches` when `world` is 0, `rank >= world`, or `world > micro` (some rank would
/// have nothing to compute: use at least as many micro-batches as processes).
pub fn rank_micro_batches(micro: usize, world: usize, rank: usize) -> Result<Range<usize>> {
    if world == 0 || rank >= world {
        return Err(Error::arg("rank_micro_batches", format!("rank {rank} of a world of {world}")));
    }
    if world > micro {
        return Err(Error::arg(
            "rank_micro_batches",
            format!(
                "{world} processes but only {micro} micro-batches per global batch: each process needs at least one"
            ),
        ));
    }
    Ok(micro_batch_rows(micro, world, rank))
}

/// The slice of a flat gradient of `len` numbers that `rank` of `world` owns in the ordered
/// reduce-scatter: consecutive ranges, lengths differing by at most one.
pub(crate) fn shard(len: usize, world: usize, rank: usize) -> Range<usize> {
    micro_batch_rows(len, world, rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_batches_cover_the_batch_in_order() {
        for len in 0..20 {
            for micro in 1..7 {
                let cuts: Vec<_> = (0..micro).map(|m| micro_batch_rows(len, micro, m)).collect();
                assert_eq!(cuts[0].start, 0);
                assert_eq!(cuts[micro - 1].end, len);
                for w in cuts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[0].len() == w[1].len() || w[0].len() == w[1].len() + 1);
                }
            }
        }
    }

    #[test]
    fn ranks_cover_the_micro_batches() {
        for micro in 1..9 {
            for world in 1..=micro {
                let blocks: Vec<_> = (0..world).map(|r| rank_micro_batches(micro, world, r).unwrap()).collect();
                assert_eq!(blocks.iter().map(|b| b.len()).sum::<usize>(), micro);
                assert!(blocks.iter().all(|b| !b.is_empty()));
            }
        }
        assert!(rank_micro_batches(4, 0, 0).is_err());
        assert_eq!(micro_batch_rows(5, 0, 0), 5..5);
        assert_eq!(micro_batch_rows(5, 2, 2), 5..5);
        assert!(rank_micro_batches(4, 2, 2).is_err());
    }
}
