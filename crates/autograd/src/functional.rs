//! `torch.autograd.functional` for tapegrad: vector-Jacobian and Jacobian-vector products,
//! Hessian-vector products, full Jacobians and Hessians of a function of tensors, built on
//! [`grad`] (with `create_graph` where a derivative is differentiated again).
//!
//! Each takes the function as a closure of `Var`s and the point as tensors: the inputs are
//! made parameters inside, so nothing outside changes. An input the output does not depend on
//! gets zeros (PyTorch's `strict=False`).

use tapegrad_tensor::{Error, Float, Result, Tensor, TensorNew};

use crate::grad::{grad, GradOptions};
use crate::var::Var;

const CREATE: GradOptions = GradOptions { retain_graph: true, create_graph: true, allow_unused: true };
const KEEP: GradOptions = GradOptions { retain_graph: true, create_graph: false, allow_unused: true };

/// The inputs as parameters, `f`'s output at them, and a check that `v` has `shape`.
fn setup<T: Float>(
    op: &'static str,
    f: impl Fn(&[Var<T>]) -> Result<Var<T>>,
    inputs: &[Tensor<T>],
) -> Result<(Vec<Var<T>>, Var<T>)> {
    if inputs.is_empty() {
        return Err(Error::arg(op, "needs at least one input"));
    }
    let xs: Vec<Var<T>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
    let out = f(&xs)?;
    Ok((xs, out))
}

fn check_shape<T: Float>(op: &'static str, want: &[usize], v: &Tensor<T>, what: &str) -> Result<()> {
    if v.shape() == want {
        Ok(())
    } else {
        Err(Error::mismatch(op, want, v.shape(), format!("{what} must have this shape")))
    }
}

/// `grad` of `out` with respect to `xs`, zeros where unused (and everywhere when `out` depends
/// on none of them).
fn grads_or_zeros<T: Float>(
    out: &Var<T>,
    xs: &[Var<T>],
    upstream: &Var<T>,
    options: GradOptions,
) -> Result<Vec<Var<T>>> {
    let refs: Vec<&Var<T>> = xs.iter().collect();
    let grads =
        if out.requires_grad() { grad(&[out], &refs, Some(&[upstream]), options)? } else { vec![None; xs.len()] };
    Ok(grads.into_iter().zip(xs).map(|(g, x)| g.unwrap_or_else(|| Var::new(Tensor::<T>::zeros(&x.shape())))).collect())
}

/// `Σ_i Σ g_i · v_i` over the inputs, recorded (`g` and `v` are not empty).
fn dot<T: Float>(g: &[Var<T>], v: &[Tensor<T>]) -> Result<Var<T>> {
    let mut total: Option<Var<T>> = None;
    for (g, t) in g.iter().zip(v) {
        let term = g.mul(&Var::new(t.clone()))?.sum_all();
        total = Some(match total {
            Some(d) => d.add(&term)?,
            None => term,
        });
    }
    total.ok_or_else(|| Error::arg("functional", "no inputs"))
}

/// The vector-Jacobian product `vᵀ J` of `f` at `inputs`: `f`'s value and, per input,
/// `Σ_k v_k ∂f_k/∂x` (of the input's shape), as `torch.autograd.functional.vjp`.
///
/// # Errors
/// `vjp` for no inputs or a `v` not of the output's shape; any error of `f`.
///
/// ```
/// use tapegrad_autograd::functional::vjp;
/// use tapegrad_tensor::Tensor;
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2])?;
/// let v = Tensor::from_vec(vec![1.0f64, 10.0], &[2])?;
/// let (y, g) = vjp(|x| x[0].mul(&x[0]), &[x], &v)?; // J = diag(2x)
/// assert_eq!((y.to_vec(), g[0].to_vec()), (vec![1.0, 4.0], vec![2.0, 40.0]));
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn vjp<T: Float>(
    f: impl Fn(&[Var<T>]) -> Result<Var<T>>,
    inputs: &[Tensor<T>],
    v: &Tensor<T>,
) -> Result<(Tensor<T>, Vec<Tensor<T>>)> {
    let (xs, out) = setup("vjp", f, inputs)?;
    check_shape("vjp", out.value().shape(), v, "v")?;
    let g = grads_or_zeros(&out, &xs, &Var::new(v.clone()), KEEP)?;
    Ok((out.value(), g.iter().map(Var::value).collect()))
}

/// The Jacobian-vector product `J v` of `f` at `inputs` (`v` one tensor per input, of its
/// shape): `f`'s value and `Σ_i ∂f/∂x_i · v_i`, of the output's shape, as
/// `torch.autograd.functional.jvp`. Computed by the double-vjp trick: `g(u) = uᵀ J` is linear in
/// a dummy `u`, and the gradient of `g(u) · v` with respect to `u` is `J v`; so every op on the
/// way needs a recorded backward.
///
/// # Errors
/// `jvp` for no inputs, or a `v` of the wrong count or shapes; an op without double backward.
///
/// ```
/// use tapegrad_autograd::functional::jvp;
/// use tapegrad_tensor::Tensor;
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2])?;
/// let v = Tensor::from_vec(vec![1.0f64, 10.0], &[2])?;
/// let (_, jv) = jvp(|x| Ok(x[0].mul(&x[0])?.sum_all()), &[x], &[v])?; // J = 2xᵀ
/// assert_eq!(jv.to_vec(), vec![42.0]);
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn jvp<T: Float>(
    f: impl Fn(&[Var<T>]) -> Result<Var<T>>,
    inputs: &[Tensor<T>],
    v: &[Tensor<T>],
) -> Result<(Tensor<T>, Tensor<T>)> {
    let (xs, out) = setup("jvp", f, inputs)?;
    if v.len() != xs.len() {
        return Err(Error::arg("jvp", format!("{} tangents for {} inputs", v.len(), xs.len())));
    }
    for (x, t) in inputs.iter().zip(v) {
        check_shape("jvp", x.shape(), t, "each tangent")?;
    }
    let u = Var::parameter(Tensor::<T>::zeros(out.value().shape()));
    let g = grads_or_zeros(&out, &xs, &u, CREATE)?;
    let dot = dot(&g, v)?;
    let jv = if dot.requires_grad() {
        grad(&[&dot], &[&u], None, KEEP)?.remove(0).map_or_else(|| Tensor::<T>::zeros(u.value().shape()), |g| g.value())
    } else {
        Tensor::<T>::zeros(u.value().shape())
    };
    Ok((out.value(), jv))
}

/// The Hessian-vector product `H v` of a one-element `f` at `inputs` (`v` one tensor per
/// input): `f`'s value and, per input, `Σ_j ∂²f/∂x_i∂x_j · v_j`, as
/// `torch.autograd.functional.hvp` (the Hessian is symmetric, so this is also `vhp`). Two
/// backward passes, the first recorded; the Hessian itself is never formed.
///
/// # Errors
/// `hvp` for no inputs, or a `v` of the wrong count or shapes; [`Error::NonScalar`] for a
/// larger output; an op without double backward.
///
/// ```
/// use tapegrad_autograd::functional::hvp;
/// use tapegrad_tensor::Tensor;
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2])?;
/// let v = Tensor::from_vec(vec![1.0f64, 0.0], &[2])?;
/// // f = Σ x³: H = diag(6x).
/// let (_, hv) = hvp(|x| Ok(x[0].powf(3.0).sum_all()), &[x], &[v])?;
/// assert_eq!(hv[0].to_vec(), vec![6.0, 0.0]);
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn hvp<T: Float>(
    f: impl Fn(&[Var<T>]) -> Result<Var<T>>,
    inputs: &[Tensor<T>],
    v: &[Tensor<T>],
) -> Result<(Tensor<T>, Vec<Tensor<T>>)> {
    let (xs, out) = setup("hvp", f, inputs)?;
    if v.len() != xs.len() {
        return Err(Error::arg("hvp", format!("{} vectors for {} inputs", v.len(), xs.len())));
    }
    for (x, t) in inputs.iter().zip(v) {
        check_shape("hvp", x.shape(), t, "each vector")?;
    }
    let value = out.value();
    if value.numel() != 1 {
        return Err(Error::NonScalar { shape: value.shape().to_vec(), numel: value.numel() });
    }
    let g = grads_or_zeros(&out, &xs, &Var::new(Tensor::<T>::ones(value.shape())), CREATE)?;
    let dot = dot(&g, v)?;
    let hv = grads_or_zeros(&dot, &xs, &Var::new(Tensor::<T>::ones(&[])), KEEP)?;
    Ok((value, hv.iter().map(Var::value).collect()))
}

/// The Jacobian of `f` at `inputs`: per input, a tensor of shape `output ++ input` holding
/// `∂f[o]/∂x[i]`, as `torch.autograd.functional.jacobian`; one backward pass per output
/// element (the graph is kept between them).
///
/// # Errors
/// `jacobian` for no inputs; any error of `f`.
///
/// ```
/// use tapegrad_autograd::functional::jacobian;
/// use tapegrad_tensor::Tensor;
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2])?;
/// let j = jacobian(|x| x[0].mul(&x[0]), &[x])?;
/// assert_eq!((j[0].shape(), j[0].to_vec()), (&[2, 2][..], vec![2.0, 0.0, 0.0, 4.0]));
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn jacobian<T: Float>(f: impl Fn(&[Var<T>]) -> Result<Var<T>>, inputs: &[Tensor<T>]) -> Result<Vec<Tensor<T>>> {
    let (xs, out) = setup("jacobian", f, inputs)?;
    let out_shape = out.value().shape().to_vec();
    jacobian_of(&out, &xs, &out_shape)
}

/// The rows `∂out[o]/∂xs` for every element `o` of `out`, stacked into `out_shape ++ x.shape`.
fn jacobian_of<T: Float>(out: &Var<T>, xs: &[Var<T>], out_shape: &[usize]) -> Result<Vec<Tensor<T>>> {
    let n = out.value().numel();
    let mut rows: Vec<Vec<T>> = vec![Vec::new(); xs.len()];
    for o in 0..n {
        let mut e = vec![T::ZERO; n];
        e[o] = T::ONE;
        let g = grads_or_zeros(out, xs, &Var::new(Tensor::from_vec(e, out_shape)?), KEEP)?;
        for (row, g) in rows.iter_mut().zip(g) {
            row.extend(g.value().to_vec());
        }
    }
    rows.into_iter()
        .zip(xs)
        .map(|(data, x)| {
            let mut shape = out_shape.to_vec();
            shape.extend(x.shape());
            Tensor::from_vec(data, &shape)
        })
        .collect()
}

/// The Hessian of a one-element `f` at one input `x`: a tensor of shape `x ++ x` holding
/// `∂²f/∂x[i]∂x[j]`, as `torch.autograd.functional.hessian` (the Jacobian of the recorded
/// gradient).
///
/// # Errors
/// [`Error::NonScalar`] for a larger output; an op without double backward; any error of `f`.
///
/// ```
/// use tapegrad_autograd::functional::hessian;
/// use tapegrad_tensor::Tensor;
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], &[2])?;
/// // f = x0² x1: H = [[2 x1, 2 x0], [2 x0, 0]].
/// let h = hessian(|x| Ok(x[0].narrow(0, 0, 1)?.powf(2.0).mul(&x[0].narrow(0, 1, 1)?)?.sum_all()), &x)?;
/// assert_eq!(h.to_vec(), vec![4.0, 2.0, 2.0, 0.0]);
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn hessian<T: Float>(f: impl Fn(&[Var<T>]) -> Result<Var<T>>, x: &Tensor<T>) -> Result<Tensor<T>> {
    let (xs, out) = setup("hessian", f, std::slice::from_ref(x))?;
    let value = out.value();
    if value.numel() != 1 {
        return Err(Error::NonScalar { shape: value.shape().to_vec(), numel: value.numel() });
    }
    let g = grads_or_zeros(&out, &xs, &Var::new(Tensor::<T>::ones(value.shape())), CREATE)?.remove(0);
    if !g.requires_grad() {
        let mut shape = x.shape().to_vec();
        shape.extend(x.shape());
        return Ok(Tensor::<T>::zeros(&shape));
    }
    Ok(jacobian_of(&g, &xs, x.shape())?.remove(0))
}
