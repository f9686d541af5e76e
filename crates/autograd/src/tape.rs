//! Backward over the recorded graph, and the tape listing.
//!
//! `backward` collects the nodes reachable from the output, sorts them by id (execution order,
//! hence a topological order) and walks them in reverse, summing gradients where a value fans
//! out. Parameters accumulate into their `grad` across passes, as in PyTorch. Afterwards each
//! visited op's saved tensors and input handles are dropped, unless the graph is retained.

use std::collections::{BinaryHeap, HashSet};
use tapegrad_tensor::TensorNew;

use smallvec::SmallVec;
use tapegrad_tensor::{Error, Float, Result, Tensor};

use crate::hooks::{any_hooks, run_hooks};
use crate::no_grad::{is_anomaly_enabled, no_grad};
use crate::ops::dropout::DropoutRecord;
use crate::var::{lock, Backward, EdgeState, Grads, Var, VarGrads};

/// One recorded op, as listed by [`Var::tape`].
#[derive(Clone, Debug)]
pub struct TapeEntry {
    /// The node id (execution order).
    pub id: u64,
    /// The op's name (`"matmul"`, `"dropout"`, ...).
    pub name: &'static str,
    /// The output's shape.
    pub shape: Vec<usize>,
    /// Bytes the op holds for backward (saved tensors plus masks).
    pub saved_bytes: usize,
    /// For a dropout op: its seed, offset, p and bit mask.
    pub dropout: Option<DropoutRecord>,
}

/// A node ordered by id, for the max-heap that walks the graph in reverse execution order.
struct ById<T: Float>(Var<T>);

impl<T: Float> PartialEq for ById<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.id() == other.0.id()
    }
}
impl<T: Float> Eq for ById<T> {}
impl<T: Float> PartialOrd for ById<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Float> Ord for ById<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.id().cmp(&other.0.id())
    }
}

/// One node of the walk: the node, and (when the walk freed its edge) its op with its inputs'
/// ids and whether each wants a gradient.
pub(crate) struct Visit<T: Float> {
    pub(crate) var: Var<T>,
    taken: Option<Taken<T>>,
    /// A node below the walk's floor (see [`reachable_above`]): the walk hands its gradient to
    /// `at_leaf` and goes no further.
    stop: bool,
}

/// An op taken out of its node's edge by a freeing walk.
struct Taken<T: Float> {
    op: Box<dyn Backward<T>>,
    inputs: SmallVec<[(u64, bool); 2]>,
}

/// Every op node reachable from `roots` (and the roots), plus the leaves that require grad, in
/// *decreasing* id order (a reverse topological order). Errors if a reachable op was freed.
///
/// The walk pops the largest id from a max-heap. An input's id is smaller than its output's, so
/// every push of a node happens before its first pop, and the copies of a node (one per edge
/// into it) pop one after the other: comparing with the last id popped removes them, with no
/// hash set.
///
/// With `free`, each edge is taken out of its node as the walk passes (leaving the op's name for
/// a later backward's error): its input handles move into the heap instead of being cloned, and
/// the backward loop needs no second lock. (If the walk then meets an op freed by an earlier
/// backward, it reports that, and the part it walked is freed too.)
pub(crate) fn reachable<T: Float>(roots: &[&Var<T>], free: bool) -> Result<Vec<Visit<T>>> {
    reachable_above(roots, free, 0)
}

/// [`reachable`], not going below `floor`: a node with a smaller id (made before `floor`, as a
/// checkpointed segment's captured values are) is listed as a stop, neither expanded nor freed,
/// and the walk treats it as a leaf.
pub(crate) fn reachable_above<T: Float>(roots: &[&Var<T>], free: bool, floor: u64) -> Result<Vec<Visit<T>>> {
    let mut heap = BinaryHeap::new();
    for &root in roots {
        heap.push(ById(root.clone()));
    }
    let mut nodes = vec![];
    let mut last = None;
    while let Some(ById(var)) = heap.pop() {
        if last == Some(var.id()) {
            continue;
        }
        last = Some(var.id());
        if var.id() < floor {
            nodes.push(Visit { var, taken: None, stop: true });
            continue;
        }
        let mut guard = lock(&var.0.edge);
        let taken = match &*guard {
            EdgeState::Leaf => None,
            EdgeState::Freed(op) => return Err(Error::GraphFreed { op }),
            EdgeState::Live(edge) if !free => {
                for input in &edge.inputs {
                    if input.requires_grad() {
                        heap.push(ById(input.clone()));
                    }
                }
                None
            }
            EdgeState::Live(edge) => {
                let name = edge.op.name();
                let EdgeState::Live(edge) = std::mem::replace(&mut *guard, EdgeState::Freed(name)) else {
                    unreachable!("matched Live above")
                };
                let mut inputs = SmallVec::new();
                for input in edge.inputs {
                    inputs.push((input.id(), input.requires_grad()));
                    if input.requires_grad() {
                        heap.push(ById(input));
                    }
                }
                Some(Taken { op: edge.op, inputs })
            }
        };
        drop(guard);
        nodes.push(Visit { var, taken, stop: false });
    }
    Ok(nodes)
}

/// The ids of the op inputs of the node visited by `visit` that want a gradient (none for a leaf).
pub(crate) fn input_ids<T: Float>(visit: &Visit<T>) -> SmallVec<[u64; 2]> {
    if let Some(taken) = &visit.taken {
        return taken.inputs.iter().filter(|i| i.1).map(|i| i.0).collect();
    }
    match &*lock(&visit.var.0.edge) {
        EdgeState::Live(e) => e.inputs.iter().filter(|v| v.requires_grad()).map(Var::id).collect(),
        _ => SmallVec::new(),
    }
}

/// The position of node `id` in `ids`, which is sorted in decreasing order, for an input of the
/// node at `slot`. The next node is tried first: in a chain of ops it is the input.
#[inline]
pub(crate) fn position(ids: &[u64], id: u64, slot: usize) -> usize {
    if ids.get(slot + 1) == Some(&id) {
        return slot + 1;
    }
    ids.binary_search_by(|probe| id.cmp(probe)).expect("every input that requires grad was collected")
}

/// What flows backward through the walk: plain tensors (`backward`, and `grad` without
/// `create_graph`, run under `no_grad`), or recorded `Var`s (`grad` with `create_graph`, whose
/// gradients can be differentiated again).
pub(crate) trait Flow<T: Float>: Sized {
    /// The input gradients an op's backward returns.
    type Grads: IntoIterator<Item = Option<Self>>;
    /// Runs `op`'s backward from `dy`, the gradient of `output`; `inputs` are the op's inputs
    /// (empty when a freeing walk took them).
    fn run(op: &dyn Backward<T>, inputs: &[Var<T>], output: &Var<T>, dy: Self, needs: &[bool]) -> Result<Self::Grads>;
    /// `self + other`, where a value fans out.
    fn add(self, other: Self) -> Result<Self>;
    /// The [`Error::Anomaly`] for a non-finite gradient of `op`'s input `input`.
    fn anomaly(&self, op: &'static str, input: usize) -> Option<Error>;
    /// Runs the hooks registered on node `id` (see [`Var::register_hook`]) on this gradient.
    fn hooked(&mut self, id: u64);
}

impl<T: Float> Flow<T> for Tensor<T> {
    type Grads = Grads<T>;
    #[inline]
    fn run(op: &dyn Backward<T>, _: &[Var<T>], _: &Var<T>, dy: Self, needs: &[bool]) -> Result<Grads<T>> {
        op.backward_owned(dy, needs)
    }
    #[inline]
    fn add(self, other: Self) -> Result<Self> {
        // Into `self`'s buffer when nothing else holds it (the same values as `Tensor::add`).
        self.add_owned(&other)
    }
    fn anomaly(&self, op: &'static str, input: usize) -> Option<Error> {
        anomaly_in(op, input, &self.to_vec())
    }
    fn hooked(&mut self, id: u64) {
        if let Some(g) = run_hooks(id, self) {
            *self = g;
        }
    }
}

impl<T: Float> Flow<T> for Var<T> {
    type Grads = VarGrads<T>;
    fn run(op: &dyn Backward<T>, inputs: &[Var<T>], output: &Var<T>, dy: Self, needs: &[bool]) -> Result<VarGrads<T>> {
        if inputs.len() != needs.len() {
            return Err(Error::arg(op.name(), "create_graph needs the graph kept: it was freed by this walk"));
        }
        let grads = op.backward_var(&dy, inputs, output, needs)?;
        if grads.len() != needs.len() {
            return Err(Error::arg(
                op.name(),
                format!("backward_var returned {} gradients for {} inputs", grads.len(), needs.len()),
            ));
        }
        Ok(grads)
    }
    fn add(self, other: Self) -> Result<Self> {
        Var::add(&self, &other)
    }
    fn anomaly(&self, op: &'static str, input: usize) -> Option<Error> {
        anomaly_in(op, input, &self.value().to_vec())
    }
    fn hooked(&mut self, id: u64) {
        if let Some(g) = run_hooks(id, &self.value()) {
            *self = Var::new(g);
        }
    }
}

/// Runs one recorded op's backward with the gradient `dy` of its output (the node at `slot`) and
/// adds each input's gradient into `grads`. `inputs` are the op's inputs' ids and whether each
/// wants a gradient; `vars` the input handles when the edge still holds them.
#[allow(clippy::too_many_arguments)]
#[inline]
fn backward_op<T: Float, F: Flow<T>>(
    op: &dyn Backward<T>,
    inputs: &[(u64, bool)],
    vars: &[Var<T>],
    output: &Var<T>,
    dy: F,
    slot: usize,
    ids: &[u64],
    grads: &mut [Option<F>],
    anomaly: bool,
) -> Result<()> {
    // Which inputs want a gradient, without a collection for the usual one or two.
    let mut small = [false; 4];
    let many: Vec<bool>;
    let needs: &[bool] = if inputs.len() <= small.len() {
        for (n, input) in small.iter_mut().zip(inputs) {
            *n = input.1;
        }
        &small[..inputs.len()]
    } else {
        many = inputs.iter().map(|input| input.1).collect();
        &many
    };
    let input_grads = F::run(op, vars, output, dy, needs)?;
    for (i, (&(id, wants), g)) in inputs.iter().zip(input_grads).enumerate() {
        let Some(g) = g else { continue };
        if !wants {
            continue;
        }
        if anomaly {
            if let Some(e) = g.anomaly(op.name(), i) {
                return Err(e);
            }
        }
        let acc = &mut grads[position(ids, id, slot)];
        *acc = Some(match acc.take() {
            Some(acc) => acc.add(g)?,
            None => g,
        });
    }
    Ok(())
}

/// The reverse loop over `nodes` (from [`reachable`], `ids` their ids), with the roots'
/// gradients already in `grads`. Each node with a gradient first goes through `at_node`
/// (which may read, copy or replace it); an op node then runs its backward, a leaf goes to
/// `at_leaf`. `needed`, when given, limits the walk to the nodes whose slot is true (and input
/// gradients to those nodes). The caller chooses `no_grad` or recording.
pub(crate) fn walk<T: Float, F: Flow<T>>(
    nodes: &mut [Visit<T>],
    ids: &[u64],
    grads: &mut [Option<F>],
    needed: Option<&[bool]>,
    mut at_node: impl FnMut(usize, &Var<T>, &mut F) -> Result<()>,
    mut at_leaf: impl FnMut(&Var<T>, F) -> Result<()>,
) -> Result<()> {
    let anomaly = is_anomaly_enabled();
    let hooks = any_hooks();
    let wanted = |slot: usize, (id, wants): (u64, bool)| -> (u64, bool) {
        match needed {
            Some(needed) if wants => (id, needed[position(ids, id, slot)]),
            _ => (id, wants),
        }
    };
    // With hooks registered, a leaf is visited as soon as the last op that uses it has run (its
    // gradient is final then), instead of at its place in id order, which for a parameter is
    // after every op of the forward pass: a hook on a parameter (the data-parallel step's
    // gradient buckets) sees its gradient while the backward goes on. Same gradient, earlier.
    let early = if hooks { leaves_by_last_use(nodes, ids) } else { Vec::new() };
    let mut next_early = 0;
    for slot in 0..nodes.len() {
        while let Some(&(_, leaf)) = early.get(next_early).filter(|&&(after, _)| after < slot) {
            next_early += 1;
            let Some(mut dy) = grads[leaf].take() else { continue };
            if needed.is_some_and(|needed| !needed[leaf]) {
                continue;
            }
            let var = &nodes[leaf].var;
            dy.hooked(var.id());
            at_node(leaf, var, &mut dy)?;
            at_leaf(var, dy)?;
        }
        let visit = &mut nodes[slot];
        // A taken op is dropped at the end of its turn, freeing its saved tensors (also
        // when no gradient reached it).
        let taken = visit.taken.take();
        let Some(dy) = grads[slot].take() else { continue };
        if needed.is_some_and(|needed| !needed[slot]) {
            continue;
        }
        let mut dy = dy;
        if hooks {
            dy.hooked(visit.var.id());
        }
        at_node(slot, &visit.var, &mut dy)?;
        if visit.stop {
            at_leaf(&visit.var, dy)?;
            continue;
        }
        if let Some(Taken { op, inputs }) = &taken {
            let pruned: SmallVec<[(u64, bool); 2]>;
            let inputs: &[(u64, bool)] = if needed.is_some() {
                pruned = inputs.iter().map(|&i| wanted(slot, i)).collect();
                &pruned
            } else {
                inputs
            };
            backward_op(op.as_ref(), inputs, &[], &visit.var, dy, slot, ids, grads, anomaly)?;
            continue;
        }
        let mut guard = lock(&visit.var.0.edge);
        if let EdgeState::Live(e) = &*guard {
            // The graph is kept: the edge is lent out of its node for the op's turn and put
            // back after, so that no lock is held while a recorded backward builds (and may
            // walk) a graph of its own.
            let name = e.op.name();
            let EdgeState::Live(edge) = std::mem::replace(&mut *guard, EdgeState::Freed(name)) else {
                unreachable!("matched Live above")
            };
            drop(guard);
            let inputs: SmallVec<[(u64, bool); 2]> =
                edge.inputs.iter().map(|input| wanted(slot, (input.id(), input.requires_grad()))).collect();
            let done = backward_op(edge.op.as_ref(), &inputs, &edge.inputs, &visit.var, dy, slot, ids, grads, anomaly);
            *lock(&visit.var.0.edge) = EdgeState::Live(edge);
            done?;
            continue;
        }
        drop(guard);
        at_leaf(&visit.var, dy)?;
    }
    Ok(())
}

/// The leaves (parameters) among `nodes`, each with the position of the last node of the walk
/// that uses it, in walk order: `(last use, leaf)` pairs sorted by last use.
fn leaves_by_last_use<T: Float>(nodes: &[Visit<T>], ids: &[u64]) -> Vec<(usize, usize)> {
    let mut last_use = vec![None; nodes.len()];
    for (slot, visit) in nodes.iter().enumerate() {
        for id in input_ids(visit) {
            last_use[position(ids, id, slot)] = Some(slot);
        }
    }
    let mut out: Vec<(usize, usize)> = last_use
        .into_iter()
        .enumerate()
        .filter_map(|(leaf, used)| used.map(|after| (after, leaf)))
        .filter(|&(_, leaf)| {
            let visit = &nodes[leaf];
            !visit.stop && visit.taken.is_none() && matches!(*lock(&visit.var.0.edge), EdgeState::Leaf)
        })
        .collect();
    out.sort_unstable();
    out
}

impl<T: Float> Var<T> {
    /// Backpropagates from this one-element output: every parameter it depends on gets
    /// d(self)/d(parameter) added to its gradient. The graph's saved tensors are freed afterwards;
    /// a second backward through it is an error (use [`Var::backward_retain`] to keep it).
    ///
    /// # Errors
    /// [`Error::NonScalar`] for an output with more than one element, [`Error::GraphFreed`] for a
    /// freed graph, [`Error::Anomaly`] under [`detect_anomaly`](crate::detect_anomaly), and any
    /// tensor error from a backward formula.
    pub fn backward(&self) -> Result<()> {
        self.backward_impl(None, false)
    }

    /// [`Var::backward`], keeping the graph so that it can be backpropagated again.
    pub fn backward_retain(&self) -> Result<()> {
        self.backward_impl(None, true)
    }

    /// Backpropagates from an output of any shape with an explicit upstream gradient (of the
    /// output's shape): parameters get the vector-Jacobian product `upstream · d(self)/d(param)`.
    ///
    /// # Errors
    /// As [`Var::backward`]; a wrongly shaped `upstream` is a shape error.
    pub fn backward_with(&self, upstream: &Tensor<T>, retain_graph: bool) -> Result<()> {
        self.backward_impl(Some(upstream), retain_graph)
    }

    fn backward_impl(&self, upstream: Option<&Tensor<T>>, retain: bool) -> Result<()> {
        let seed = seed_gradient("backward", self, upstream)?;
        let mut nodes = reachable(&[self], !retain)?;
        let ids: Vec<u64> = nodes.iter().map(|v| v.var.id()).collect();
        // The gradient flowing into each node, by position in `nodes` (ids are unique and
        // sorted, so a binary search finds an input's slot).
        let mut grads: Vec<Option<Tensor<T>>> = Vec::with_capacity(nodes.len());
        grads.resize_with(nodes.len(), || None);
        grads[0] = Some(seed);
        // Backward formulas are tensor code: record nothing while they run.
        no_grad(|| {
            walk(
                &mut nodes,
                &ids,
                &mut grads,
                None,
                |_, _, _| Ok(()),
                |var, dy| {
                    // A parameter: accumulate, as a second backward in PyTorch adds.
                    let mut g = lock(&var.0.grad);
                    *g = Some(match g.take() {
                        Some(old) => Tensor::add(&old, &dy)?,
                        None => dy.contiguous(),
                    });
                    Ok(())
                },
            )
        })
    }

    /// The ops recorded in the graph that produces this value, in execution order (leaves are not
    /// listed). Freed ops are listed with 0 saved bytes.
    pub fn tape(&self) -> Vec<TapeEntry> {
        let mut seen = HashSet::new();
        let mut stack = vec![self.clone()];
        let mut entries = vec![];
        seen.insert(self.id());
        while let Some(var) = stack.pop() {
            let shape = var.shape();
            match &*lock(&var.0.edge) {
                EdgeState::Leaf => {}
                EdgeState::Freed(name) => {
                    entries.push(TapeEntry { id: var.id(), name, shape, saved_bytes: 0, dropout: None })
                }
                EdgeState::Live(edge) => {
                    let saved: usize = edge.op.saved().iter().map(|t| t.numel() * std::mem::size_of::<T>()).sum();
                    entries.push(TapeEntry {
                        id: var.id(),
                        name: edge.op.name(),
                        shape,
                        saved_bytes: saved + edge.op.extra_bytes(),
                        dropout: edge.op.dropout().cloned(),
                    });
                    for input in &edge.inputs {
                        if seen.insert(input.id()) {
                            stack.push(input.clone());
                        }
                    }
                }
            }
        }
        entries.sort_by_key(|e| e.id);
        entries
    }
}

/// The [`Error::Anomaly`] for a gradient with a NaN or infinite value, `None` when all are finite.
fn anomaly_in<T: Float>(op: &'static str, input: usize, values: &[T]) -> Option<Error> {
    let what = if values.iter().any(|v| v.is_nan()) {
        "NaN"
    } else if values.iter().any(|v| !v.is_finite()) {
        "an infinite value"
    } else {
        return None;
    };
    Some(Error::Anomaly { op, input, what })
}

/// The gradient a walk from `output` starts with: `upstream` when given (of the output's shape),
/// else ones for a one-element output. `op` names the caller in errors.
///
/// # Errors
/// A shape mismatch for a wrongly shaped `upstream`, [`Error::NonScalar`] for a larger output
/// without one, and an invalid argument when `output` does not require a gradient.
pub(crate) fn seed_gradient<T: Float>(
    op: &'static str,
    output: &Var<T>,
    upstream: Option<&Tensor<T>>,
) -> Result<Tensor<T>> {
    let value = output.value();
    let seed = match upstream {
        Some(g) if g.shape() == value.shape() => g.clone(),
        Some(g) => {
            return Err(Error::mismatch(
                op,
                value.shape(),
                g.shape(),
                "the upstream gradient must have the output's shape",
            ))
        }
        None if value.numel() == 1 => Tensor::<T>::ones(value.shape()),
        None => return Err(Error::NonScalar { shape: value.shape().to_vec(), numel: value.numel() }),
    };
    if !output.requires_grad() {
        return Err(Error::arg(
            op,
            "the output does not require a gradient: it depends on no parameter (or was computed under no_grad)",
        ));
    }
    Ok(seed)
}
