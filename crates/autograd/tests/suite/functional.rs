//! `autograd::functional` against closed forms: vjp, jvp (double-vjp), hvp, jacobian, hessian.

use tapegrad_autograd::functional::{hessian, hvp, jacobian, jvp, vjp};
use tapegrad_autograd::{Error, Result, Tensor, Var};
use tapegrad_tensor::TensorNew;

fn t(v: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-10 * (1.0 + y.abs())), "{a:?} vs {b:?}");
}

/// f(x, w) = tanh(W x) for W [2, 3], x [3]: J_x = diag(1 - y²) W.
fn layer(v: &[Var<f64>]) -> Result<Var<f64>> {
    Ok(v[1].matmul(&v[0])?.tanh())
}

fn point() -> (Tensor<f64>, Tensor<f64>) {
    (t(&[0.5, -1.0, 0.25], &[3]), t(&[1.0, 0.5, -0.5, 0.2, -0.3, 0.8], &[2, 3]))
}

/// J_x of `layer`, row-major [2, 3], in closed form.
fn jx() -> Vec<f64> {
    let (x, w) = point();
    let (x, w) = (x.to_vec(), w.to_vec());
    let mut j = vec![];
    for o in 0..2 {
        let z: f64 = (0..3).map(|i| w[o * 3 + i] * x[i]).sum();
        let d = 1.0 - z.tanh().powi(2);
        j.extend((0..3).map(|i| d * w[o * 3 + i]));
    }
    j
}

#[test]
fn jacobian_vjp_and_jvp_agree_with_the_closed_form() -> Result<()> {
    let (x, w) = point();
    let j = jacobian(layer, &[x.clone(), w.clone()])?;
    assert_eq!((j[0].shape(), j[1].shape()), (&[2, 3][..], &[2, 2, 3][..]));
    close(&j[0].to_vec(), &jx());
    let u = t(&[1.5, -2.0], &[2]);
    let (_, g) = vjp(layer, &[x.clone(), w.clone()], &u)?;
    let want: Vec<f64> = (0..3).map(|i| 1.5 * jx()[i] - 2.0 * jx()[3 + i]).collect();
    close(&g[0].to_vec(), &want);
    let v = t(&[1.0, 2.0, -1.0], &[3]);
    let (y, jv) = jvp(layer, &[x, w.clone()], &[v, Tensor::<f64>::zeros(&[2, 3])])?;
    assert_eq!(y.shape(), &[2]);
    let want: Vec<f64> = (0..2).map(|o| jx()[o * 3] + 2.0 * jx()[o * 3 + 1] - jx()[o * 3 + 2]).collect();
    close(&jv.to_vec(), &want);
    Ok(())
}

#[test]
fn hessian_and_hvp_of_a_quartic() -> Result<()> {
    // f = Σ x⁴ / 4 + x0 x1: H = diag(3x²) + [[0, 1], [1, 0]].
    let f = |v: &[Var<f64>]| -> Result<Var<f64>> {
        let x = &v[0];
        let cross = x.narrow(0, 0, 1)?.mul(&x.narrow(0, 1, 1)?)?.sum_all();
        x.powf(4.0).mul_scalar(0.25).sum_all().add(&cross)
    };
    let x = t(&[1.0, -2.0], &[2]);
    let h = hessian(f, &x)?;
    assert_eq!(h.shape(), &[2, 2]);
    close(&h.to_vec(), &[3.0, 1.0, 1.0, 12.0]);
    let (_, hv) = hvp(f, std::slice::from_ref(&x), &[t(&[1.0, 1.0], &[2])])?;
    close(&hv[0].to_vec(), &[4.0, 13.0]);
    Ok(())
}

#[test]
fn bad_arguments_are_errors() {
    let x = t(&[1.0, 2.0], &[2]);
    let sq = |v: &[Var<f64>]| v[0].mul(&v[0]);
    let err = vjp(sq, std::slice::from_ref(&x), &t(&[1.0], &[1])).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "vjp", .. }), "{err}");
    let err = hvp(sq, std::slice::from_ref(&x), std::slice::from_ref(&x)).unwrap_err();
    assert!(matches!(err, Error::NonScalar { .. }), "{err}");
    let err = jvp(sq, std::slice::from_ref(&x), &[]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "jvp", .. }), "{err}");
    // An op without a double backward (a custom one: every op of the library has one) makes the
    // Hessian an error naming it.
    let opaque = |v: &[Var<f64>]| Ok(crate::grad::square_first_order_only(&v[0]).sum_all());
    let err = hessian(opaque, &x).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "square_first_order_only", .. }), "{err}");
}
