//! Gradient checking: the tape's gradients against central finite differences (in f64, or in
//! f32 with looser tolerances for an f32 model's ops), and second derivatives (`gradgradcheck`): the recorded gradients of `create_graph` against finite
//! differences of the first derivatives.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};

use crate::grad::{grad, GradOptions};
use crate::no_grad::{enable_grad, no_grad};
use crate::var::Var;

mod per_op;

pub(crate) use per_op::observe;
pub use per_op::{gradcheck_per_op, gradcheck_per_op_with};

/// The ops on the tapes of the checks that passed in this process (see [`gradchecked_ops`]).
static CHECKED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// The ops of the functions of the [`gradgradcheck`]s that passed (see [`gradgradchecked_ops`]).
static GRADGRADCHECKED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// The names ([`Backward::name`](crate::Backward::name)) of every op recorded on the tape of a
/// [`gradcheck`] or [`gradcheck_with`] that passed so far in this process: what a test binary
/// uses to assert that each op it owns had its gradient checked.
///
/// ```
/// use tapegrad_autograd::{gradcheck, gradchecked_ops};
/// use tapegrad_tensor::{Tensor, TensorNew};
/// gradcheck(|v| Ok(v[0].tanh().sum_all()), &[Tensor::<f64>::ones(&[2])])?;
/// assert!(gradchecked_ops().contains("tanh") && gradchecked_ops().contains("sum")); // sum_all records "sum"
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn gradchecked_ops() -> BTreeSet<&'static str> {
    CHECKED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Step and tolerances for [`gradcheck_with`].
#[derive(Clone, Copy, Debug)]
pub struct GradcheckOptions {
    /// The finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (of the finite difference's magnitude).
    pub rtol: f64,
}

impl Default for GradcheckOptions {
    /// `eps = 1e-6`, `atol = 1e-5`, `rtol = 1e-4`, as `torch.autograd.gradcheck` roughly uses:
    /// the options for f64.
    fn default() -> Self {
        GradcheckOptions { eps: 1e-6, atol: 1e-5, rtol: 1e-4 }
    }
}

impl GradcheckOptions {
    /// The options for an f32 function: `eps = 1e-3` (a smaller step drowns the difference in
    /// f32's rounding, about 6e-8 of the output), `atol = 1e-3`, `rtol = 1e-2`. Loose enough for
    /// f32's rounding on inputs and outputs of order 1, tight enough to catch a wrong formula (a
    /// missing factor, a wrong sign, a swapped operand); check formulas in f64 first.
    pub fn f32() -> GradcheckOptions {
        GradcheckOptions { eps: 1e-3, atol: 1e-3, rtol: 1e-2 }
    }

    /// The default options for element type `T`: [`GradcheckOptions::default`] for f64,
    /// [`GradcheckOptions::f32`] for f32.
    pub fn of<T: Float>() -> GradcheckOptions {
        if T::NAME == "f32" {
            GradcheckOptions::f32()
        } else {
            GradcheckOptions::default()
        }
    }
}

/// Checks `f`'s gradients at `inputs` with a fixed random (non-trivial) upstream gradient and the
/// default options of the element type ([`GradcheckOptions::of`]). See [`gradcheck_with`].
///
/// ```
/// use tapegrad_autograd::gradcheck;
/// use tapegrad_tensor::Tensor;
/// let x = Tensor::<f64>::from_vec(vec![0.5, -1.0, 2.0], &[3])?;
/// gradcheck(|v| Ok(v[0].tanh().mul(&v[0])?), &[x])?;
/// // An f32 model's ops, checked in f32 (differences in f32, compared with f32's tolerances):
/// let x = Tensor::<f32>::from_vec(vec![0.5, -1.0, 2.0], &[3])?;
/// gradcheck(|v| Ok(v[0].sigmoid().mul(&v[0])?), &[x])?;
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
///
/// # Errors
/// [`Error::GradcheckMismatch`] naming the op, the input, the index and both values at the first
/// disagreement; [`Error::ShapeMismatch`] (op `gradcheck`) when the tape's gradient of an input
/// does not have the input's shape; any error `f` returns.
pub fn gradcheck<T: Float>(f: impl Fn(&[Var<T>]) -> Result<Var<T>>, inputs: &[Tensor<T>]) -> Result<()> {
    gradcheck_with(f, inputs, None, GradcheckOptions::of::<T>())
}

/// Compares the tape's vector-Jacobian product `upstream · ∂f/∂inputs` with central finite
/// differences of `Σ f(inputs) · upstream`, element by element. `f` runs in its own element
/// type (f64 for exact checks of a formula, f32 to check an f32 model's ops as they run, with
/// [`GradcheckOptions::f32`]); the sum and the difference quotient are taken in f64, over the
/// step actually representable in `T`. `upstream` defaults to a fixed standard-normal tensor of
/// the output's shape, so that every output element counts with a different weight. `f` must be deterministic (a dropout inside it must draw from a
/// generator created inside `f` with a fixed seed).
///
/// A check that passes adds the names of the ops on `f`'s tape to [`gradchecked_ops`].
///
/// # Errors
/// As [`gradcheck`].
pub fn gradcheck_with<T: Float>(
    f: impl Fn(&[Var<T>]) -> Result<Var<T>>,
    inputs: &[Tensor<T>],
    upstream: Option<&Tensor<T>>,
    options: GradcheckOptions,
) -> Result<()> {
    let vars: Vec<Var<T>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
    let out = f(&vars)?;
    let tape = out.tape();
    let op = tape.last().map_or("constant", |e| e.name).to_string();
    let upstream = match upstream {
        Some(u) => u.clone(),
        None => Tensor::<T>::randn(out.value().shape(), &mut Generator::new(0x6AD_C4EC)),
    };
    if out.requires_grad() {
        out.backward_with(&upstream, false)?;
    }
    let weights: Vec<f64> = upstream.to_vec().into_iter().map(T::to_f64).collect();
    let objective = |xs: &[Tensor<T>]| -> Result<f64> {
        let vars: Vec<Var<T>> = xs.iter().map(|t| Var::new(t.clone())).collect();
        let y = no_grad(|| f(&vars))?.value();
        if y.numel() != weights.len() {
            return Err(Error::mismatch(
                "gradcheck",
                y.shape(),
                upstream.shape(),
                "f's output changed shape under a perturbed input",
            ));
        }
        Ok(y.to_vec().into_iter().zip(&weights).map(|(y, w)| y.to_f64() * w).sum())
    };
    for (i, input) in inputs.iter().enumerate() {
        let analytic: Vec<f64> = match vars[i].grad() {
            Some(g) if g.shape() != input.shape() => {
                return Err(Error::mismatch(
                    "gradcheck",
                    g.shape(),
                    input.shape(),
                    format!("the tape's gradient of input {i} (through `{op}`) does not have the input's shape"),
                ));
            }
            Some(g) => g.to_vec().into_iter().map(T::to_f64).collect(),
            None => vec![0.0; input.numel()],
        };
        let base = input.to_vec();
        let shape = input.shape();
        for j in 0..base.len() {
            let numeric = finite_difference(base[j], options.eps, |v| {
                let mut xs: Vec<Tensor<T>> = inputs.to_vec();
                let mut moved = base.clone();
                moved[j] = v;
                xs[i] = Tensor::from_vec(moved, shape)?;
                objective(&xs)
            })?;
            if !close(analytic[j], numeric, options) {
                return Err(mismatch_at(&op, i, shape, j, analytic[j], numeric));
            }
        }
    }
    CHECKED.lock().unwrap_or_else(|e| e.into_inner()).extend(tape.iter().map(|e| e.name));
    Ok(())
}

/// The central difference `(g(x + eps) - g(x - eps)) / step` of `g` at `x`, where `x ± eps`
/// are rounded to `T` and `step` is their difference as `T` holds them (in f32, `x ± eps`
/// rounds).
fn finite_difference<T: Float>(x: T, eps: f64, mut g: impl FnMut(T) -> Result<f64>) -> Result<f64> {
    let (plus, minus) = (T::from_f64(x.to_f64() + eps), T::from_f64(x.to_f64() - eps));
    let step = plus.to_f64() - minus.to_f64();
    Ok((g(plus)? - g(minus)?) / step)
}

/// Whether the tape's `analytic` value agrees with the finite difference `numeric`; written so
/// that a NaN on either side counts as a mismatch.
fn close(analytic: f64, numeric: f64, options: GradcheckOptions) -> bool {
    (analytic - numeric).abs() <= options.atol + options.rtol * numeric.abs()
}

/// The [`Error::GradcheckMismatch`] of `op`'s input `input` (of shape `shape`) at its flat
/// element `j`.
fn mismatch_at(op: &str, input: usize, shape: &[usize], j: usize, analytic: f64, numeric: f64) -> Error {
    let mut index = vec![0; shape.len()];
    let mut rest = j;
    for d in (0..shape.len()).rev() {
        index[d] = rest % shape[d];
        rest /= shape[d];
    }
    Error::GradcheckMismatch { op: op.to_string(), input, index, analytic, numeric }
}

/// The names of every op recorded by the function `f` of a [`gradgradcheck`] or
/// [`gradgradcheck_with`] that passed so far in this process: the ops whose double backward
/// (`create_graph`) was checked, for a coverage test.
///
/// ```
/// use tapegrad_autograd::{gradgradcheck, gradgradchecked_ops};
/// use tapegrad_tensor::{Tensor, TensorNew};
/// gradgradcheck(|v| Ok(v[0].tanh()), &[Tensor::<f64>::ones(&[2])])?;
/// assert!(gradgradchecked_ops().contains("tanh"));
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn gradgradchecked_ops() -> BTreeSet<&'static str> {
    GRADGRADCHECKED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Checks `f`'s second derivatives at `inputs` with the default options. See
/// [`gradgradcheck_with`].
///
/// ```
/// use tapegrad_autograd::gradgradcheck;
/// use tapegrad_tensor::Tensor;
/// let x = Tensor::<f64>::from_vec(vec![0.5, -1.0, 2.0], &[3])?;
/// gradgradcheck(|v| Ok(v[0].tanh().mul(&v[0])?), &[x])?;
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
///
/// # Errors
/// As [`gradgradcheck_with`].
pub fn gradgradcheck(f: impl Fn(&[Var<f64>]) -> Result<Var<f64>>, inputs: &[Tensor<f64>]) -> Result<()> {
    gradgradcheck_with(f, inputs, GradcheckOptions::default())
}

/// Compares second derivatives with finite differences of first ones, in f64, as
/// `torch.autograd.gradgradcheck` does: the first derivatives
/// `g(x, u) = u · ∂f/∂x` (every input's, flattened and concatenated), computed by [`grad`] with
/// `create_graph`, are themselves checked by [`gradcheck_with`] as a function of the inputs
/// *and* of the upstream gradient `u` (a fixed standard-normal tensor of `f`'s output shape), so
/// both each op's recorded backward and its dependence on `dy` are tested. The finite
/// differences take first derivatives with the plain tensor backward at perturbed inputs.
///
/// A check that passes adds the names of the ops on `f`'s tape to [`gradgradchecked_ops`].
///
/// # Errors
/// [`Error::GradcheckMismatch`] at the first disagreement (input `inputs.len()` is `u`); the
/// error of an op that cannot record its backward (it names the op); any error `f` returns.
pub fn gradgradcheck_with(
    f: impl Fn(&[Var<f64>]) -> Result<Var<f64>>,
    inputs: &[Tensor<f64>],
    options: GradcheckOptions,
) -> Result<()> {
    let params: Vec<Var<f64>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
    let out = f(&params)?;
    let ops: Vec<&'static str> = out.tape().iter().map(|e| e.name).collect();
    let u = Tensor::<f64>::randn(out.value().shape(), &mut Generator::new(0x6AD_6AD));
    let n = inputs.len();
    let mut all = inputs.to_vec();
    all.push(u);
    // The first derivatives of every input, flattened and concatenated (zeros where unused).
    // With `create_graph` (the analytic side) the recorded `backward_var` formulas; without (the
    // finite differences' side) the plain tensor backward, which `gradcheck` checks: so a
    // recorded formula must agree with the plain one in value, and with its own derivative.
    let first = |vars: &[Var<f64>], create_graph: bool| -> Result<Var<f64>> {
        let (xs, u) = vars.split_at(n);
        let out = f(xs)?;
        let refs: Vec<&Var<f64>> = xs.iter().collect();
        let options = GradOptions { create_graph, allow_unused: true, ..GradOptions::default() };
        let grads = if out.requires_grad() { grad(&[&out], &refs, Some(&[&u[0]]), options)? } else { vec![None; n] };
        let flat = grads
            .into_iter()
            .zip(xs)
            .map(|(g, x)| g.unwrap_or_else(|| Var::new(Tensor::<f64>::zeros(&x.shape()))).reshape(&[x.value().numel()]))
            .collect::<Result<Vec<_>>>()?;
        Var::cat(&flat.iter().collect::<Vec<_>>(), 0)
    };
    gradcheck_with(
        |vars| {
            if vars[0].requires_grad() {
                return first(vars, true);
            }
            // The finite differences' side: constants under no_grad. Take the first derivatives
            // of fresh parameters with their values, and return them as a constant.
            enable_grad(|| {
                let fresh: Vec<Var<f64>> = vars.iter().map(|v| Var::parameter(v.value())).collect();
                Ok(Var::new(first(&fresh, false)?.value()))
            })
        },
        &all,
        None,
        options,
    )?;
    GRADGRADCHECKED.lock().unwrap_or_else(|e| e.into_inner()).extend(ops);
    Ok(())
}
