//! gradcheck's per-op mode: each recorded op's backward checked on its own, so that a wrong
//! backward is named even when it sits in the middle of a graph.
//!
//! Finite differences need an op's forward at perturbed inputs, and the tape keeps only
//! backwards. Rather than give every op a replayable forward, the check replays the user's
//! function: while it runs inside a [`Replay`] scope, every node that requires a gradient is
//! numbered in the order it is made (`Var::parameter` and `Var::from_op` pass their value
//! through [`observe`]), and a replay can change one element of node `m`'s value as it is made
//! and keep a copy of node `n`'s value. `f` must therefore record the same ops each run.
//!
//! Op `n` is checked against each distinct input `m`: the analytic side is the
//! vector-Jacobian product `u · ∂y_n/∂y_m` that the tape computes ([`grad`] from `y_n` to
//! `y_m`), the numeric side the central difference of `u · y_n` as `y_m`'s element moves. A
//! direct input may also reach `n` through other ops (`n = m * tanh(m)`); those sit between `m`
//! and `n` in execution order, so they were checked before `n`, and walking the ops in
//! execution order makes the first mismatch the wrong op's. Within an op the inputs go latest
//! made first, which names the input whose rule is wrong.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};

use super::{finite_difference, mismatch_at, GradcheckOptions, CHECKED};
use crate::grad::{grad, GradOptions};
use crate::tape::reachable;
use crate::var::{lock, EdgeState, Var};

thread_local! {
    /// True while a [`Replay`] is installed on this thread: the one check on the path of every
    /// recorded node.
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static REPLAY: RefCell<Replay> = RefCell::new(Replay::default());
}

/// What a run of `f` inside the scope records, changes and keeps.
#[derive(Default)]
struct Replay {
    /// The ordinal the next node made will get.
    next: usize,
    /// The ids of the nodes made, by ordinal.
    made: Vec<u64>,
    /// Set element `.1` of node `.0`'s value to `.2` as the node is made.
    perturb: Option<(usize, usize, f64)>,
    /// The ordinal of the node whose value to keep.
    capture: Option<usize>,
    /// That value, as f64, with its shape.
    captured: Option<(Vec<usize>, Vec<f64>)>,
    /// The perturbed node did not have the element: `f` recorded another graph.
    diverged: bool,
}

/// Passes the value of a node that requires a gradient (id `id`) through the replay scope, if
/// one is installed on this thread: numbers it, perturbs it or keeps a copy as asked.
#[inline]
pub(crate) fn observe<T: Float>(id: u64, value: Tensor<T>) -> Tensor<T> {
    if !ACTIVE.with(Cell::get) {
        return value;
    }
    REPLAY.with(|replay| {
        let mut replay = replay.borrow_mut();
        let ordinal = replay.next;
        replay.next += 1;
        replay.made.push(id);
        let mut value = value;
        if let Some((at, index, x)) = replay.perturb {
            if at == ordinal {
                let mut elements = value.to_vec();
                match elements.get_mut(index) {
                    Some(e) => {
                        *e = T::from_f64(x);
                        // Same number of elements, same shape: cannot fail.
                        value = Tensor::from_vec(elements, value.shape()).unwrap_or(value);
                    }
                    None => replay.diverged = true,
                }
            }
        }
        if replay.capture == Some(ordinal) {
            replay.captured = Some((value.shape().to_vec(), value.to_vec().into_iter().map(T::to_f64).collect()));
        }
        value
    })
}

/// Runs `f` with `replay` installed on this thread and gives it back with what it gathered;
/// the scope is removed even if `f` panics.
fn scoped<R>(replay: Replay, f: impl FnOnce() -> R) -> (R, Replay) {
    struct Uninstall;
    impl Drop for Uninstall {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.set(false));
        }
    }
    REPLAY.with(|r| *r.borrow_mut() = replay);
    ACTIVE.with(|a| a.set(true));
    let guard = Uninstall;
    let out = f();
    drop(guard);
    (out, REPLAY.with(|r| r.take()))
}

/// How a node outside the checked op is moved for a finite difference.
enum Nudge<T: Float> {
    /// A node `f` makes: by its ordinal, as it is made.
    Made(usize),
    /// A node made before `f` ran (a parameter `f` closes over): by setting its value.
    Outside(Var<T>),
}

/// Checks each op `f` records, on its own, with the default options of the element type. See
/// [`gradcheck_per_op_with`].
///
/// ```
/// use tapegrad_autograd::{gradcheck_per_op, Backward, Grads, Result, Var};
/// use tapegrad_tensor::Tensor;
/// // y = x², with a backward that forgot the factor 2, in the middle of a graph.
/// struct Square(Tensor<f64>);
/// impl Backward<f64> for Square {
///     fn name(&self) -> &'static str { "square" }
///     fn backward(&self, dy: &Tensor<f64>, _: &[bool]) -> Result<Grads<f64>> {
///         Ok(Grads::one(dy.mul(&self.0)?)) // should be 2 x dy
///     }
/// }
/// let f = |v: &[Var<f64>]| -> Result<Var<f64>> {
///     let h = v[0].tanh();
///     let s = Var::from_op(h.value().mul(&h.value())?, &[&h], || Square(h.value()));
///     Ok(s.exp().sum_all())
/// };
/// let x = Tensor::from_vec(vec![0.3, -0.8], &[2])?;
/// // The whole-function check sees a wrong gradient, and names the last op:
/// let whole = tapegrad_autograd::gradcheck(f, &[x.clone()]).unwrap_err();
/// assert!(whole.to_string().contains("sum"), "{whole}");
/// // The per-op check names the op whose backward is wrong:
/// let per_op = gradcheck_per_op(f, &[x]).unwrap_err();
/// assert!(matches!(&per_op, tapegrad_autograd::Error::GradcheckMismatch { op, .. } if op == "square"));
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
///
/// # Errors
/// As [`gradcheck_per_op_with`].
pub fn gradcheck_per_op<T: Float>(f: impl Fn(&[Var<T>]) -> Result<Var<T>>, inputs: &[Tensor<T>]) -> Result<()> {
    gradcheck_per_op_with(f, inputs, GradcheckOptions::of::<T>())
}

/// Checks the backward of every op on `f`'s tape on its own, in execution order, and names the
/// first that is wrong, where [`gradcheck_with`](super::gradcheck_with) can only say that the
/// gradient of the output (named by its last op) is.
///
/// `f` is run once with `inputs` as parameters, and then once per perturbed element: for each
/// recorded op `y = op(x₁, ..., x_k)` and each distinct input `x_i` that requires a gradient,
/// the vector-Jacobian product `u · ∂y/∂x_i` that the tape computes (with `u` a fixed
/// standard-normal tensor of `y`'s shape) is compared element by element with the central
/// difference of `u · y` as that element of `x_i` moves by `options.eps`, `f` being re-run
/// with only that value changed as it is made. An input that is an intermediate value works as
/// well as one of `inputs`, and so does a parameter `f` closes over (its value is set and
/// restored). Ops recorded before `f` ran are not checked. The cost is two runs of `f` per
/// element of every op's inputs: a tool for small graphs in tests, as
/// [`gradcheck`](super::gradcheck) is.
///
/// `f` must record the same ops in the same order on every run (deterministic, no branching on
/// values near the step); a dropout inside it must draw from a generator made inside `f` with
/// a fixed seed.
///
/// A check that passes adds the names of the ops on `f`'s tape to
/// [`gradchecked_ops`](super::gradchecked_ops).
///
/// # Errors
/// [`Error::GradcheckMismatch`] whose `op` is the first op (in execution order) whose backward
/// disagrees, `input` the op's input (its position among the op's inputs), `index` the element;
/// [`Error::ShapeMismatch`] (op `gradcheck_per_op`) when a re-run of `f` recorded another graph;
/// any error `f` or the tape's backward returns.
pub fn gradcheck_per_op_with<T: Float>(
    f: impl Fn(&[Var<T>]) -> Result<Var<T>>,
    inputs: &[Tensor<T>],
    options: GradcheckOptions,
) -> Result<()> {
    // `f` with its inputs made inside the scope, so that they are numbered like the rest.
    let run = || {
        let vars: Vec<Var<T>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
        f(&vars)
    };
    let (out, recorded) = scoped(Replay::default(), run);
    let out = out?;
    let ordinal: HashMap<u64, usize> = recorded.made.iter().enumerate().map(|(k, &id)| (id, k)).collect();
    // `reachable` lists the nodes latest first; the check goes in execution order.
    let nodes = reachable(&[&out], false)?;
    let mut names = vec![];
    for visit in nodes.iter().rev() {
        let y = &visit.var;
        let (name, op_inputs): (&'static str, Vec<Var<T>>) = match &*lock(&y.0.edge) {
            EdgeState::Live(edge) => (edge.op.name(), edge.inputs.iter().cloned().collect()),
            _ => continue,
        };
        let Some(&at) = ordinal.get(&y.id()) else { continue };
        names.push(name);
        // Each distinct input that wants a gradient, with its first position among the op's.
        let mut distinct: Vec<(usize, Var<T>)> = vec![];
        for (slot, x) in op_inputs.into_iter().enumerate() {
            if x.requires_grad() && !distinct.iter().any(|(_, d)| d.same_node(&x)) {
                distinct.push((slot, x));
            }
        }
        if distinct.is_empty() {
            continue;
        }
        // Latest-made input first: an earlier input may reach the op through a later one as
        // well (`m` and `tanh(m)`), so a wrong rule for the later one also shows in the earlier
        // one's total derivative; checked first, the later one is the one named.
        distinct.sort_by_key(|(_, x)| std::cmp::Reverse(x.id()));
        let u = Tensor::<T>::randn(&y.shape(), &mut Generator::new(0x6AD_0B5 ^ at as u64));
        let weights: Vec<f64> = u.to_vec().into_iter().map(T::to_f64).collect();
        let refs: Vec<&Var<T>> = distinct.iter().map(|(_, x)| x).collect();
        let keep = GradOptions { retain_graph: true, allow_unused: true, ..GradOptions::default() };
        let analytic = grad(&[y], &refs, Some(&[&Var::new(u.clone())]), keep)?;
        for ((slot, x), g) in distinct.iter().zip(analytic) {
            let base = x.value();
            let analytic: Vec<f64> = match g {
                Some(g) => g.value().to_vec().into_iter().map(T::to_f64).collect(),
                None => vec![0.0; base.numel()],
            };
            let nudge = match ordinal.get(&x.id()) {
                Some(&m) => Nudge::Made(m),
                None => Nudge::Outside(x.clone()),
            };
            // `u · y` with element `j` of `x` set to `value`.
            let objective = |j: usize, value: T| -> Result<f64> {
                let mut replay = Replay { capture: Some(at), ..Replay::default() };
                let replayed = match &nudge {
                    Nudge::Made(m) => {
                        replay.perturb = Some((*m, j, value.to_f64()));
                        scoped(replay, run)
                    }
                    Nudge::Outside(var) => {
                        let mut moved = base.to_vec();
                        moved[j] = value;
                        var.set_value(Tensor::from_vec(moved, base.shape())?);
                        let replayed = scoped(replay, run);
                        var.set_value(base.clone());
                        replayed
                    }
                };
                let (result, replay) = replayed;
                result?;
                match replay.captured {
                    Some((shape, ys)) if !replay.diverged && shape == y.shape() => {
                        Ok(ys.iter().zip(&weights).map(|(y, w)| y * w).sum())
                    }
                    captured => Err(Error::mismatch(
                        "gradcheck_per_op",
                        &captured.map_or(vec![], |(shape, _)| shape),
                        &y.shape(),
                        format!(
                            "a re-run of f recorded another graph (op `{name}` not found where it was): \
                             the per-op check needs f to record the same ops on every run"
                        ),
                    )),
                }
            };
            let base = base.to_vec();
            for (j, &xj) in base.iter().enumerate() {
                let numeric = finite_difference(xj, options.eps, |v| objective(j, v))?;
                if !super::close(analytic[j], numeric, options) {
                    return Err(mismatch_at(name, *slot, &x.shape(), j, analytic[j], numeric));
                }
            }
        }
    }
    CHECKED.lock().unwrap_or_else(|e| e.into_inner()).extend(names);
    Ok(())
}
