//! `grad`: gradients returned as values instead of accumulated into `.grad`, as
//! `torch.autograd.grad` does, and with `create_graph` recorded on the tape so that they can be
//! differentiated again (Hessian-vector products, gradient penalties, physics-informed losses).
//!
//! The walk is the one `backward` runs (`tape.rs`), limited to the nodes between the outputs and
//! the requested inputs. Without `create_graph` the gradients are tensors computed under
//! `no_grad` and returned as constants; with it, every op's [`Backward::backward_var`]
//! (crate::Backward::backward_var) builds its inputs' gradients from recorded `Var` ops.

use tapegrad_tensor::{Error, Float, Result, Tensor};

use crate::no_grad::no_grad;
use crate::tape::{input_ids, position, reachable, seed_gradient, walk, Flow, Visit};
use crate::var::Var;

/// The switches of [`grad`], as `torch.autograd.grad` has them. All off by default.
///
/// ```
/// use tapegrad_autograd::GradOptions;
/// let options = GradOptions { create_graph: true, ..GradOptions::default() };
/// assert!(options.create_graph && !options.allow_unused);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GradOptions {
    /// Keep the walked graph, so that another `grad` or `backward` can run through it. Implied
    /// by `create_graph` (as PyTorch's default `retain_graph = create_graph`).
    pub retain_graph: bool,
    /// Record the backward pass on the tape: the returned gradients are `Var`s that depend on
    /// the inputs and can be differentiated again, to any order. An op that cannot record its
    /// backward makes `grad` return an error naming it.
    pub create_graph: bool,
    /// Return `None` for an input the outputs do not depend on, instead of an error.
    pub allow_unused: bool,
}

/// The gradients of `outputs` with respect to `inputs`, returned instead of accumulated into
/// [`Var::grad`]: entry `i` is `Σ_k grad_outputs[k] · ∂outputs[k]/∂inputs[i]` (a
/// vector-Jacobian product), of `inputs[i]`'s shape. Inputs may be leaves or intermediate values
/// (the gradient flowing into that value); nothing's `.grad` changes.
///
/// - `grad_outputs`: one upstream gradient per output, of its shape; `None` means ones, allowed
///   only for one-element outputs. With `create_graph` they may themselves require a gradient
///   (the double-vjp trick of a forward-mode product).
/// - `options.retain_graph` keeps the graph (by default the walked part is freed, as after
///   [`Var::backward`]); `options.create_graph` records the gradient computation (and keeps
///   the graph); `options.allow_unused` gives `None` for an input the outputs do not depend on.
///
/// Only the part of the graph between the outputs and the inputs is walked: a parameter the
/// question does not ask about gets no gradient computed.
///
/// # Errors
/// `grad` (invalid argument) for empty `outputs` or `inputs`, a `grad_outputs` list of another
/// length, an output or an input that does not require a gradient, or an unused input without
/// `allow_unused`; a `grad` shape mismatch for a wrongly shaped upstream gradient;
/// [`Error::NonScalar`] for a larger output without one; [`Error::GraphFreed`] through a freed
/// graph; with `create_graph`, the error of the first op that cannot record its backward.
///
/// ```
/// use tapegrad_autograd::{grad, GradOptions, Var};
/// use tapegrad_tensor::Tensor;
/// // y = x³: dy/dx = 3x², d²y/dx² = 6x.
/// let x = Var::parameter(Tensor::from_vec(vec![2.0f64], &[1])?);
/// let y = x.mul(&x)?.mul(&x)?.sum_all();
/// let create = GradOptions { create_graph: true, ..GradOptions::default() };
/// let dx = grad(&[&y], &[&x], None, create)?[0].clone().unwrap();
/// assert_eq!(dx.value().to_vec(), vec![12.0]);
/// let d2x = grad(&[&dx.sum_all()], &[&x], None, GradOptions::default())?[0].clone().unwrap();
/// assert_eq!(d2x.value().to_vec(), vec![12.0]);
/// assert!(x.grad().is_none()); // nothing accumulated
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn grad<T: Float>(
    outputs: &[&Var<T>],
    inputs: &[&Var<T>],
    grad_outputs: Option<&[&Var<T>]>,
    options: GradOptions,
) -> Result<Vec<Option<Var<T>>>> {
    const OP: &str = "grad";
    if outputs.is_empty() || inputs.is_empty() {
        return Err(Error::arg(OP, "needs at least one output and one input"));
    }
    if let Some(g) = grad_outputs {
        if g.len() != outputs.len() {
            return Err(Error::arg(OP, format!("{} grad_outputs for {} outputs", g.len(), outputs.len())));
        }
    }
    if let Some(i) = inputs.iter().position(|x| !x.requires_grad()) {
        return Err(Error::arg(
            OP,
            format!("input {i} does not require a gradient (a constant, or computed under no_grad)"),
        ));
    }
    // The seeds, checked before anything is freed.
    let mut seeds = Vec::with_capacity(outputs.len());
    for (k, y) in outputs.iter().enumerate() {
        let upstream = grad_outputs.map(|g| g[k]);
        seed_gradient(OP, y, upstream.map(Var::value).as_ref())?;
        seeds.push(upstream.cloned());
    }
    let retain = options.retain_graph || options.create_graph;
    let mut nodes = reachable(outputs, !retain)?;
    let ids: Vec<u64> = nodes.iter().map(|v| v.var.id()).collect();
    let slot_of = |v: &Var<T>| ids.binary_search_by(|probe| v.id().cmp(probe)).ok();
    let targets: Vec<Option<usize>> = inputs.iter().map(|x| slot_of(x)).collect();
    let needed = needed_nodes(&nodes, &ids, &targets);
    let grads = if options.create_graph {
        let seeds = seeds.into_iter().zip(outputs).map(|(s, y)| s.unwrap_or_else(|| Var::new(ones_like(y))));
        run(&mut nodes, &ids, outputs, seeds, &needed, &targets)?
    } else {
        let seeds: Vec<Tensor<T>> =
            seeds.into_iter().zip(outputs).map(|(s, y)| s.map_or_else(|| ones_like(y), |s| s.value())).collect();
        no_grad(|| run(&mut nodes, &ids, outputs, seeds, &needed, &targets))?
            .into_iter()
            .map(|g| g.map(Var::new))
            .collect()
    };
    for (i, g) in grads.iter().enumerate() {
        if g.is_none() && !options.allow_unused {
            return Err(Error::arg(
                OP,
                format!("input {i} was not used in computing the outputs (set allow_unused to get None for it)"),
            ));
        }
    }
    Ok(grads)
}

fn ones_like<T: Float>(y: &Var<T>) -> Tensor<T> {
    use tapegrad_tensor::TensorNew;
    Tensor::<T>::ones(&y.shape())
}

/// Which nodes lie on a path from an output to a target: a target, or an op with an input that
/// is one of those. Inputs have smaller ids, so one pass in increasing id order settles each.
fn needed_nodes<T: Float>(nodes: &[Visit<T>], ids: &[u64], targets: &[Option<usize>]) -> Vec<bool> {
    let mut needed = vec![false; nodes.len()];
    for &slot in targets.iter().flatten() {
        needed[slot] = true;
    }
    for slot in (0..nodes.len()).rev() {
        if !needed[slot] {
            needed[slot] = input_ids(&nodes[slot]).iter().any(|&id| needed[position(ids, id, slot)]);
        }
    }
    needed
}

/// The walk of [`grad`] with gradients of type `F`: seeds each output, keeps a copy of the
/// gradient reaching each target, leaves `.grad` alone.
fn run<T: Float, F: Flow<T> + Clone>(
    nodes: &mut [Visit<T>],
    ids: &[u64],
    outputs: &[&Var<T>],
    seeds: impl IntoIterator<Item = F>,
    needed: &[bool],
    targets: &[Option<usize>],
) -> Result<Vec<Option<F>>> {
    let mut grads: Vec<Option<F>> = Vec::with_capacity(nodes.len());
    grads.resize_with(nodes.len(), || None);
    for (y, seed) in outputs.iter().zip(seeds) {
        let slot = ids.binary_search_by(|probe| y.id().cmp(probe)).expect("each output is a root of the walk");
        grads[slot] = Some(match grads[slot].take() {
            Some(acc) => acc.add(seed)?,
            None => seed,
        });
    }
    let mut found: Vec<Option<F>> = vec![None; targets.len()];
    walk(
        nodes,
        ids,
        &mut grads,
        Some(needed),
        |slot, _, dy| {
            for (k, target) in targets.iter().enumerate() {
                if *target == Some(slot) {
                    found[k] = Some(dy.clone());
                }
            }
            Ok(())
        },
        |_, _| Ok(()),
    )?;
    Ok(found)
}
