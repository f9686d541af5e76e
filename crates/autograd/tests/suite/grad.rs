//! `grad`: gradients returned as values (unused inputs, non-leaf inputs, upstream gradients, the
//! retain and create flags, errors), and higher derivatives through `create_graph` against closed
//! forms.

use tapegrad_autograd::{dropout, grad, Backward, Error, Generator, GradOptions, Grads, Result, Tensor, Var};

fn t(v: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

const CREATE: GradOptions = GradOptions { retain_graph: false, create_graph: true, allow_unused: false };
const RETAIN: GradOptions = GradOptions { retain_graph: true, create_graph: false, allow_unused: false };

fn plain() -> GradOptions {
    GradOptions::default()
}

/// The one gradient of `y` with respect to `x`.
fn d(y: &Var<f64>, x: &Var<f64>, options: GradOptions) -> Result<Var<f64>> {
    Ok(grad(&[y], &[x], None, options)?.remove(0).expect("x is used"))
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{a:?} vs {b:?}");
    }
}

#[test]
fn grad_returns_the_gradient_and_accumulates_nothing() -> Result<()> {
    let x = Var::parameter(t(&[1.0, -2.0, 3.0], &[3]));
    let w = Var::parameter(t(&[0.5, 0.5, 0.5], &[3]));
    let y = x.mul(&x)?.mul(&w)?.sum_all();
    let g = grad(&[&y], &[&x, &w], None, plain())?;
    assert_eq!(g[0].as_ref().unwrap().value().to_vec(), vec![1.0, -2.0, 3.0]); // 2 x w
    assert_eq!(g[1].as_ref().unwrap().value().to_vec(), vec![1.0, 4.0, 9.0]); // x²
    assert!(x.grad().is_none() && w.grad().is_none());
    assert!(!g[0].as_ref().unwrap().requires_grad(), "without create_graph a gradient is a constant");
    Ok(())
}

#[test]
fn unused_inputs_are_an_error_unless_allowed() -> Result<()> {
    let x = Var::parameter(t(&[1.0, 2.0], &[2]));
    let unused = Var::parameter(t(&[1.0], &[1]));
    let y = x.tanh().sum_all();
    let err = grad(&[&y], &[&x, &unused], None, RETAIN).unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { op: "grad", reason } if reason.contains("input 1")), "{err}");
    let allow = GradOptions { allow_unused: true, ..plain() };
    let g = grad(&[&y], &[&x, &unused], None, allow)?;
    assert!(g[0].is_some() && g[1].is_none());
    Ok(())
}

#[test]
fn inputs_and_outputs_must_require_grad() {
    let x = Var::parameter(t(&[1.0], &[1]));
    let c = Var::new(t(&[1.0], &[1]));
    let y = x.mul(&c).unwrap().sum_all();
    let err = grad(&[&y], &[&c], None, RETAIN).unwrap_err();
    assert!(err.to_string().contains("input 0 does not require a gradient"), "{err}");
    let err = grad(&[&c.sum_all()], &[&x], None, RETAIN).unwrap_err();
    assert!(err.to_string().contains("does not require a gradient"), "{err}");
    let err = grad::<f64>(&[], &[&x], None, RETAIN).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "grad", .. }), "{err}");
}

#[test]
fn non_leaf_inputs_get_the_gradient_flowing_into_them() -> Result<()> {
    // y = 3x; z = Σ y² + Σ y x: dz/dy (with x held) = 2y + x.
    let x = Var::parameter(t(&[1.0, 2.0], &[2]));
    let y = x.mul_scalar(3.0);
    let z = y.mul(&y)?.add(&y.mul(&x)?)?.sum_all();
    let g = grad(&[&z], &[&y, &x], None, plain())?;
    assert_eq!(g[0].as_ref().unwrap().value().to_vec(), vec![7.0, 14.0]);
    // dz/dx in total = 18x + 6x = 24x.
    assert_eq!(g[1].as_ref().unwrap().value().to_vec(), vec![24.0, 48.0]);
    Ok(())
}

#[test]
fn grad_outputs_weight_each_output() -> Result<()> {
    let x = Var::parameter(t(&[1.0, 2.0, 3.0], &[3]));
    let y = x.mul(&x)?; // not a scalar
    let err = grad(&[&y], &[&x], None, RETAIN).unwrap_err();
    assert!(matches!(err, Error::NonScalar { numel: 3, .. }), "{err}");
    let wrong = Var::new(t(&[1.0, 1.0], &[2]));
    let err = grad(&[&y], &[&x], Some(&[&wrong]), RETAIN).unwrap_err();
    assert!(matches!(&err, Error::ShapeMismatch { op: "grad", lhs, rhs, .. } if lhs == &[3] && rhs == &[2]), "{err}");
    let v = Var::new(t(&[1.0, 0.0, -1.0], &[3]));
    let g = grad(&[&y], &[&x], Some(&[&v]), RETAIN)?;
    assert_eq!(g[0].as_ref().unwrap().value().to_vec(), vec![2.0, 0.0, -6.0]);
    // Two outputs: the gradients add.
    let s = x.sum_all();
    let g = grad(&[&y, &s], &[&x], Some(&[&v, &Var::new(t(&[10.0], &[]))]), plain())?;
    assert_eq!(g[0].as_ref().unwrap().value().to_vec(), vec![12.0, 10.0, 4.0]);
    Ok(())
}

#[test]
fn the_graph_is_freed_unless_retained() -> Result<()> {
    let x = Var::parameter(t(&[0.5], &[1]));
    let y = x.exp().sum_all();
    d(&y, &x, RETAIN)?;
    d(&y, &x, plain())?;
    let err = d(&y, &x, plain()).unwrap_err();
    assert!(matches!(err, Error::GraphFreed { .. }), "{err}");
    Ok(())
}

#[test]
fn create_graph_gives_a_differentiable_gradient_and_keeps_the_graph() -> Result<()> {
    let x = Var::parameter(t(&[0.3, -1.2], &[2]));
    let y = x.tanh().sum_all();
    let dx = d(&y, &x, CREATE)?;
    assert!(dx.requires_grad());
    // The graph is kept: the first derivative can be taken again (keeping it once more, as
    // the created gradient is built from tanh's output).
    d(&y, &x, RETAIN)?;
    // d²/dx² tanh = -2 tanh (1 - tanh²).
    let d2 = d(&dx.sum_all(), &x, RETAIN)?;
    let want: Vec<f64> = [0.3f64, -1.2].iter().map(|v| -2.0 * v.tanh() * (1.0 - v.tanh().powi(2))).collect();
    close(&d2.value().to_vec(), &want, 1e-12);
    // backward() through a created gradient accumulates the second derivative into .grad.
    dx.sum_all().backward()?;
    close(&x.grad().unwrap().to_vec(), &want, 1e-12);
    Ok(())
}

#[test]
fn third_derivatives_of_composites_match_closed_forms() -> Result<()> {
    // p(x) = x⁴ - 2x³ + x: p''' = 24x - 12.
    let x = Var::parameter(t(&[-1.0, 0.5, 2.0], &[3]));
    let x2 = x.mul(&x)?;
    let p = x2.mul(&x2)?.sub(&x2.mul(&x)?.mul_scalar(2.0))?.add(&x)?.sum_all();
    let d1 = d(&p, &x, CREATE)?;
    let d2 = d(&d1.sum_all(), &x, CREATE)?;
    let d3 = d(&d2.sum_all(), &x, CREATE)?;
    close(&d3.value().to_vec(), &[-36.0, 0.0, 36.0], 1e-12);
    // d³/dx³ of sigmoid: s (1 - s)(1 - 6s + 6s²); of exp(x)/x (through div, exp, log-free).
    let s = x.sigmoid().sum_all();
    let s3 = d(&d(&d(&s, &x, CREATE)?.sum_all(), &x, CREATE)?.sum_all(), &x, plain())?;
    let want: Vec<f64> = [-1.0f64, 0.5, 2.0]
        .iter()
        .map(|v| {
            let s = 1.0 / (1.0 + (-v).exp());
            s * (1.0 - s) * (1.0 - 6.0 * s + 6.0 * s * s)
        })
        .collect();
    close(&s3.value().to_vec(), &want, 1e-10);
    // f = e^x / x: f'' = e^x (x² - 2x + 2) / x³.
    let f = x.exp().div(&x)?.sum_all();
    let f2 = d(&d(&f, &x, CREATE)?.sum_all(), &x, plain())?;
    let want: Vec<f64> = [-1.0f64, 0.5, 2.0].iter().map(|v| v.exp() * (v * v - 2.0 * v + 2.0) / v.powi(3)).collect();
    close(&f2.value().to_vec(), &want, 1e-10);
    Ok(())
}

#[test]
fn hessian_vector_product_of_a_quadratic_form() -> Result<()> {
    // f(x) = ½ xᵀ A x with A symmetric: ∇f = A x, ∇(∇f · v) = A v.
    let a = Var::new(t(&[2.0, 1.0, 0.0, 1.0, 3.0, -1.0, 0.0, -1.0, 4.0], &[3, 3]));
    let x = Var::parameter(t(&[1.0, -1.0, 0.5], &[3, 1]));
    let f = x.t()?.matmul(&a)?.matmul(&x)?.mul_scalar(0.5).sum_all();
    let g = d(&f, &x, CREATE)?;
    close(&g.value().to_vec(), &[1.0, -2.5, 3.0], 1e-12);
    let v = Var::new(t(&[1.0, 0.0, -1.0], &[3, 1]));
    let hv = d(&g.mul(&v)?.sum_all(), &x, plain())?;
    close(&hv.value().to_vec(), &[2.0, 2.0, -4.0], 1e-12);
    Ok(())
}

#[test]
fn dropout_second_pass_uses_the_stored_mask() -> Result<()> {
    let x = Var::parameter(Tensor::<f64>::from_vec((1..=64).map(|i| i as f64 / 16.0).collect(), &[64])?);
    let y = dropout(&x.mul(&x)?, 0.5, &mut Generator::new(7))?;
    let record = y.tape().into_iter().find_map(|e| e.dropout).expect("a dropout entry");
    let dx = d(&y.sum_all(), &x, CREATE)?;
    let d2 = d(&dx.sum_all(), &x, plain())?.value().to_vec();
    for (i, v) in d2.iter().enumerate() {
        let want = if record.kept(i) { 4.0 } else { 0.0 }; // 2 · m / (1 - p)
        assert_eq!(*v, want, "element {i}");
    }
    assert!(record.kept_count() > 10 && record.kept_count() < 54);
    Ok(())
}

/// `y = x²` as a custom op written with a first-order `backward` only, as a user's op may be:
/// every op of the library has a recorded backward (`gradgradcheck`'s coverage test), so this
/// is how an op without one looks.
struct SquareFirstOrderOnly {
    x: Tensor<f64>,
}

impl Backward<f64> for SquareFirstOrderOnly {
    fn name(&self) -> &'static str {
        "square_first_order_only"
    }
    fn backward(&self, dy: &Tensor<f64>, _: &[bool]) -> Result<Grads<f64>> {
        Ok(Grads::one(dy.mul(&self.x)?.mul_scalar(2.0)))
    }
}

/// `x²` through [`SquareFirstOrderOnly`].
pub(crate) fn square_first_order_only(x: &Var<f64>) -> Var<f64> {
    let xv = x.value();
    Var::from_op(xv.mul(&xv).expect("one shape"), &[x], || SquareFirstOrderOnly { x: xv })
}

#[test]
fn an_op_without_double_backward_is_an_error_naming_it() -> Result<()> {
    let x = Var::parameter(t(&[0.5, -0.5, 0.25, 1.0], &[1, 2, 2]));
    let y = square_first_order_only(&x).sum_all();
    let err = d(&y, &x, CREATE).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { op: "square_first_order_only", reason } if reason.contains("double backward")),
        "{err}"
    );
    // The first derivative alone still works.
    assert_eq!(d(&y, &x, plain())?.value().to_vec(), vec![1.0, -1.0, 0.5, 2.0]);
    // Only the part of the graph between the outputs and the inputs is walked: an unsupported
    // op on another parameter's branch does not matter.
    let w = Var::parameter(t(&[1.0, 2.0, 0.5, -1.0], &[1, 2, 2]));
    let y = x.tanh().mul(&square_first_order_only(&w))?.sum_all();
    d(&y, &x, CREATE)?;
    Ok(())
}

#[test]
fn plain_backward_is_unchanged_next_to_grad() -> Result<()> {
    let x = Var::parameter(t(&[1.0, 2.0], &[2]));
    let y = x.mul(&x)?.sum_all();
    let g = d(&y, &x, RETAIN)?;
    y.backward()?;
    assert_eq!(x.grad().unwrap().to_vec(), g.value().to_vec());
    Ok(())
}
