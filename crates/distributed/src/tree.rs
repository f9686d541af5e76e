//! The fixed order in which micro-batch gradients are summed, and the ordered reduce-scatter
//! that computes it across processes.
//!
//! Floating-point addition is not associative, so "the sum of the micro-batch gradients" is only
//! well defined once its bracketing is. Here it is the *reduction tree* over the micro-batch
//! indices `0..micro`: a node `[lo, hi)` with more than one micro-batch is the sum
//! `left + right` of its children `[lo, mid)` and `[mid, hi)`, `mid = lo + 2^⌈log2(hi-lo)⌉ / 2`
//! (the largest power of two below `hi - lo`, so that for 8 micro-batches the tree is the
//! balanced `((g0+g1)+(g2+g3))+((g4+g5)+(g6+g7))`). The tree depends on `micro` alone.
//!
//! A process that owns micro-batches `[a, b)` covers them with the fewest tree nodes
//! ([`cover`]), sums each node locally (in tree order), and sends every owner of a gradient
//! shard its piece of each node (all-to-all); the owner rebuilds the root from the nodes it got,
//! adding children in tree order, and an all-gather gives every process the whole sum. When the
//! world size and `micro` are powers of two, each process covers its block with one node, so it
//! sends one gradient's worth in all, as a ring all-reduce does.

use std::collections::BTreeMap;

use tapegrad_tensor::{Error, Result};

use crate::comm::Communicator;
use crate::split::shard;

/// A node of the reduction tree: the micro-batches `lo..hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    /// The first micro-batch.
    pub lo: usize,
    /// One past the last.
    pub hi: usize,
}

impl Node {
    /// The root over `micro` micro-batches.
    pub fn root(micro: usize) -> Node {
        Node { lo: 0, hi: micro }
    }

    /// The two children of a node of more than one micro-batch, `None` for a leaf.
    pub fn children(self) -> Option<(Node, Node)> {
        let n = self.hi - self.lo;
        if n < 2 {
            return None;
        }
        let mid = self.lo + n.next_power_of_two() / 2;
        Some((Node { lo: self.lo, hi: mid }, Node { lo: mid, hi: self.hi }))
    }
}

/// The fewest nodes of the tree over `micro` micro-batches that cover `lo..hi`, left to right.
///
/// ```
/// use tapegrad_distributed::tree::{cover, Node};
/// assert_eq!(cover(8, 4, 8), [Node { lo: 4, hi: 8 }]);
/// assert_eq!(cover(4, 0, 3), [Node { lo: 0, hi: 2 }, Node { lo: 2, hi: 3 }]);
/// ```
pub fn cover(micro: usize, lo: usize, hi: usize) -> Vec<Node> {
    fn walk(node: Node, lo: usize, hi: usize, out: &mut Vec<Node>) {
        if node.hi <= lo || hi <= node.lo {
            return;
        }
        if lo <= node.lo && node.hi <= hi {
            out.push(node);
            return;
        }
        if let Some((left, right)) = node.children() {
            walk(left, lo, hi, out);
            walk(right, lo, hi, out);
        }
    }
    let mut out = vec![];
    if lo < hi {
        walk(Node::root(micro), lo, hi, &mut out);
    }
    out
}

/// `acc += x`, element by element: the one addition every sum here is made of.
/// `node`'s leaves (`leaf(m)`, called in increasing `m`) combined in the tree's bracketing:
/// `combine(fold(left), fold(right))` down to single micro-batches. [`node_sum`] is this fold
/// with `+` on `f32` gradients; the synchronised BatchNorm folds its statistics with it.
pub(crate) fn fold<X>(node: Node, leaf: &mut dyn FnMut(usize) -> X, combine: &mut dyn FnMut(X, X) -> X) -> X {
    match node.children() {
        Some((left, right)) => {
            let left = fold(left, leaf, combine);
            let right = fold(right, leaf, combine);
            combine(left, right)
        }
        None => leaf(node.lo),
    }
}

fn add_into(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// The error of micro-batch gradients of different lengths.
fn lengths_differ(a: usize, b: usize) -> Error {
    Error::arg("node_sum", format!("micro-batch gradients of {a} and {b} numbers"))
}

/// The sum of `node`'s micro-batches in tree order, each leaf given by `leaf(m)` (called in
/// increasing `m`). Holds at most one partial sum per tree level.
///
/// # Errors
/// The first error of `leaf`, or a length mismatch between leaves.
pub fn node_sum(node: Node, leaf: &mut dyn FnMut(usize) -> Result<Vec<f32>>) -> Result<Vec<f32>> {
    let pending = PendingSum::new(node, leaf)?;
    let last = leaf(pending.last())?;
    let len = pending.lefts.first().map_or(last.len(), Vec::len);
    if last.len() != len {
        return Err(lengths_differ(len, last.len()));
    }
    pending.finish(0..len, &last)
}

/// A node's sum while its last micro-batch's gradient is still being computed: the sums of the
/// left children along the node's right spine, outermost first. For the node `[4, 8)` that is
/// `g4+g5` and `g6`, and the sum is `(g4+g5) + (g6 + g7)` once `g7` is known.
///
/// Each element of the sum depends only on the same element of every micro-batch gradient, so
/// the sum can be finished a range at a time ([`finish`](Self::finish)), as the last
/// micro-batch's backward makes each parameter's gradient final, with the same bits as
/// [`node_sum`] (which finishes the whole range at once).
///
/// ```
/// use tapegrad_distributed::tree::{node_sum, Node, PendingSum};
/// let g = [vec![1.0_f32, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]];
/// let node = Node { lo: 0, hi: 3 };
/// let pending = PendingSum::new(node, &mut |m| Ok(g[m].clone()))?; // g0 and g1 only
/// assert_eq!(pending.last(), 2);
/// let (head, tail) = (pending.finish(0..1, &g[2][..1])?, pending.finish(1..2, &g[2][1..])?);
/// assert_eq!([head, tail].concat(), node_sum(node, &mut |m| Ok(g[m].clone()))?);
/// # Ok::<(), tapegrad_tensor::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct PendingSum {
    /// The left children's sums on the right spine, outermost first.
    lefts: Vec<Vec<f32>>,
    /// The node's last micro-batch.
    last: usize,
}

impl PendingSum {
    /// Sums every micro-batch of `node` but the last, each given by `leaf(m)` (called in
    /// increasing `m`), into the left children of the node's right spine.
    ///
    /// # Errors
    /// The first error of `leaf`, or a length mismatch between leaves.
    pub fn new(node: Node, leaf: &mut dyn FnMut(usize) -> Result<Vec<f32>>) -> Result<PendingSum> {
        let mut lefts: Vec<Vec<f32>> = vec![];
        let mut at = node;
        while let Some((left, right)) = at.children() {
            let sum = node_sum(left, leaf)?;
            if let Some(first) = lefts.first().filter(|first| first.len() != sum.len()) {
                return Err(lengths_differ(first.len(), sum.len()));
            }
            lefts.push(sum);
            at = right;
        }
        Ok(PendingSum { lefts, last: at.lo })
    }

    /// The micro-batch whose gradient finishes the sum.
    pub fn last(&self) -> usize {
        self.last
    }

    /// Elements `range` of the node's sum, given the same elements of the last micro-batch's
    /// gradient: `left + (left + (... + last))` along the spine, innermost first.
    ///
    /// # Errors
    /// `node_sum` when `last` is not `range`'s length or `range` is past the gradient's end.
    pub fn finish(&self, range: std::ops::Range<usize>, last: &[f32]) -> Result<Vec<f32>> {
        let len = self.lefts.first().map_or(range.end, Vec::len);
        if last.len() != range.len() || range.end > len {
            return Err(Error::arg(
                "node_sum",
                format!(
                    "micro-batch {}: {} numbers for elements {range:?} of a gradient of {len}",
                    self.last,
                    last.len()
                ),
            ));
        }
        let mut right = last.to_vec();
        for left in self.lefts.iter().rev() {
            let mut sum = left[range.clone()].to_vec();
            add_into(&mut sum, &right);
            right = sum;
        }
        Ok(right)
    }
}

/// The tree-ordered sum of all `partials` (one per micro-batch) in one process: the reference
/// that the distributed reduction reproduces bit for bit.
///
/// ```
/// use tapegrad_distributed::tree::ordered_sum;
/// let g = [vec![1e8_f32], vec![1.0], vec![-1e8], vec![1.0]];
/// assert_eq!(ordered_sum(&g)?, [0.0]); // (1e8 + 1) + (-1e8 + 1): each 1 is absorbed
/// # Ok::<(), tapegrad_tensor::Error>(())
/// ```
///
/// # Errors
/// `node_sum` when the partials differ in length, `ordered_sum` when there are none.
pub fn ordered_sum(partials: &[Vec<f32>]) -> Result<Vec<f32>> {
    if partials.is_empty() {
        return Err(Error::arg("ordered_sum", "no micro-batch gradients to sum"));
    }
    node_sum(Node::root(partials.len()), &mut |m| Ok(partials[m].clone()))
}

/// The tree-ordered sum over all processes: `local` holds this process's sums of the nodes of
/// `cover(micro, lo, hi)` for its block `lo..hi` (as [`node_sum`] makes them), every process's
/// blocks together cover `0..micro` once, and every process gets the whole root sum back,
/// equal bit for bit to [`ordered_sum`] of all micro-batch gradients in one process.
///
/// The sum is element by element, so a bucket of the gradient (the same elements of every
/// node, on every rank) can be reduced on its own with the same bits.
///
/// `blocks[r]` is rank `r`'s block of micro-batches; `len` the gradient's length.
///
/// # Errors
/// A collective's [`Error::Distributed`], or nodes of the wrong length (invalid argument).
pub fn ordered_all_reduce<V: AsRef<[f32]>>(
    comm: &dyn Communicator,
    micro: usize,
    blocks: &[std::ops::Range<usize>],
    local: &[V],
    len: usize,
) -> Result<Vec<f32>> {
    let (world, rank) = (comm.world_size(), comm.rank());
    if blocks.len() != world {
        return Err(Error::arg("ordered_all_reduce", format!("{} blocks for {world} ranks", blocks.len())));
    }
    let covers: Vec<Vec<Node>> = blocks.iter().map(|b| cover(micro, b.start, b.end)).collect();
    if local.len() != covers[rank].len() || local.iter().any(|v| v.as_ref().len() != len) {
        return Err(Error::arg(
            "ordered_all_reduce",
            format!(
                "rank {rank} has {} node sums, its block needs {} of {len} numbers",
                local.len(),
                covers[rank].len()
            ),
        ));
    }
    if world == 1 {
        // The whole tree is local: the only node is the root.
        return local
            .first()
            .map(|v| v.as_ref().to_vec())
            .ok_or_else(|| Error::arg("ordered_all_reduce", "the only rank's block holds no micro-batch"));
    }
    let shards: Vec<_> = (0..world).map(|q| shard(len, world, q)).collect();
    // Reduce-scatter: rank q gets shard q of every node of every rank.
    let send: Vec<Vec<f32>> = shards
        .iter()
        .map(|s| local.iter().flat_map(|node| node.as_ref()[s.clone()].iter().copied()).collect())
        .collect();
    let mine = shards[rank].clone();
    let recv_counts: Vec<usize> = covers.iter().map(|c| c.len() * mine.len()).collect();
    let recv = comm.all_to_all(&send, &recv_counts)?;
    let mut pieces: BTreeMap<Node, Vec<f32>> = BTreeMap::new();
    for (from, nodes) in covers.iter().enumerate() {
        for (i, node) in nodes.iter().enumerate() {
            pieces.insert(*node, recv[from][i * mine.len()..(i + 1) * mine.len()].to_vec());
        }
    }
    let reduced = rebuild(Node::root(micro), &mut pieces)?;
    // All-gather the owners' shards into the whole sum.
    let counts: Vec<usize> = shards.iter().map(|s| s.len()).collect();
    comm.all_gather(&reduced, &counts)
}

/// The sum of `node` from the received node pieces, adding children in tree order.
fn rebuild(node: Node, pieces: &mut BTreeMap<Node, Vec<f32>>) -> Result<Vec<f32>> {
    if let Some(piece) = pieces.remove(&node) {
        return Ok(piece);
    }
    let (left, right) = node.children().ok_or_else(|| {
        Error::arg(
            "ordered_all_reduce",
            format!("no rank sent micro-batch {}: the blocks do not cover the batch", node.lo),
        )
    })?;
    let mut acc = rebuild(left, pieces)?;
    add_into(&mut acc, &rebuild(right, pieces)?);
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_are_disjoint_tree_nodes() {
        for micro in 1..17 {
            for lo in 0..micro {
                for hi in lo + 1..=micro {
                    let nodes = cover(micro, lo, hi);
                    let mut at = lo;
                    for n in &nodes {
                        assert_eq!(n.lo, at);
                        at = n.hi;
                    }
                    assert_eq!(at, hi);
                }
            }
        }
        // Power-of-two blocks of a power-of-two tree are single nodes: one message's worth.
        for world in [1, 2, 4, 8] {
            for r in 0..world {
                assert_eq!(cover(8, r * 8 / world, (r + 1) * 8 / world).len(), 1);
            }
        }
    }

    #[test]
    fn a_sum_finished_range_by_range_has_the_bits_of_the_whole_sum() {
        let len = 37;
        for micro in 1..12 {
            // Magnitudes from 1e-3 to 1e3, so that the order of additions shows in the bits.
            let g: Vec<Vec<f32>> = (0..micro)
                .map(|m| (0..len).map(|i| ((i * 31 + m * 7) as f32).sin() * 10f32.powi((i % 7) as i32 - 3)).collect())
                .collect();
            for lo in 0..micro {
                let node = cover(micro, lo, micro)[0];
                let whole = node_sum(node, &mut |m| Ok(g[m].clone())).unwrap();
                let pending = PendingSum::new(node, &mut |m| Ok(g[m].clone())).unwrap();
                assert_eq!(pending.last(), node.hi - 1);
                let mut parts = vec![];
                for r in [0..5, 5..6, 6..6, 6..30, 30..37] {
                    parts.extend(pending.finish(r.clone(), &g[node.hi - 1][r]).unwrap());
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&parts), bits(&whole), "micro {micro}, node {node:?}");
            }
        }
        let pending = PendingSum::new(Node::root(2), &mut |_| Ok(vec![1.0; 4])).unwrap();
        assert!(pending.finish(2..5, &[1.0; 3]).is_err(), "past the end");
        assert!(pending.finish(0..2, &[1.0; 3]).is_err(), "a piece of the wrong length");
        assert!(node_sum(Node::root(2), &mut |m| Ok(vec![1.0; 4 + m])).is_err(), "leaves of different lengths");
    }

    #[test]
    fn fold_brackets_as_node_sum() {
        for micro in 1..12 {
            let g: Vec<f32> = (0..micro).map(|m| ((m * 13) as f32).sin() * 10f32.powi(m as i32 % 7 - 3)).collect();
            let sum = fold(Node::root(micro), &mut |m| g[m], &mut |a, b| a + b);
            let reference = node_sum(Node::root(micro), &mut |m| Ok(vec![g[m]])).unwrap();
            assert_eq!(sum.to_bits(), reference[0].to_bits(), "micro {micro}");
        }
        let order = fold(Node::root(5), &mut |m| m.to_string(), &mut |a, b| format!("({a}+{b})"));
        assert_eq!(order, "(((0+1)+(2+3))+4)");
    }

    #[test]
    fn the_tree_brackets_pairwise() {
        let g = [vec![0.5_f32], vec![0.5], vec![1e8], vec![-1e8]];
        let left_fold = ((0.5_f32 + 0.5) + 1e8) + -1e8;
        let tree = (0.5_f32 + 0.5) + (1e8 + -1e8);
        assert_ne!(left_fold, tree);
        assert_eq!(ordered_sum(&g).unwrap(), [tree]);
    }
}
