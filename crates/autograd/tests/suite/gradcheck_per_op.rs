//! gradcheck's per-op mode: every recorded op's backward checked on its own, so that a wrong
//! backward in the middle of a graph is named, where the whole-function check names the output's
//! last op.

use std::cell::Cell;

use tapegrad_autograd::{
    gradcheck, gradcheck_per_op, gradcheck_per_op_with, Backward, Error, GradcheckOptions, Grads, Result, Tensor, Var,
};
use tapegrad_tensor::{Float, Generator, TensorNew};

/// `z = x * y` (elementwise, same shapes), with a backward that may be wrong for either input.
struct Product<T: Float> {
    x: Tensor<T>,
    y: Tensor<T>,
    /// Scales the gradient of input `.0` by `.1` (1 = right).
    skew: (usize, f64),
}

impl<T: Float> Backward<T> for Product<T> {
    fn name(&self) -> &'static str {
        "custom_product"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        let scale = |i: usize| T::from_f64(if self.skew.0 == i { self.skew.1 } else { 1.0 });
        let mut grads = Grads::new();
        grads.push(Some(dz.mul(&self.y)?.mul_scalar(scale(0))));
        grads.push(Some(dz.mul(&self.x)?.mul_scalar(scale(1))));
        Ok(grads)
    }
}

fn product<T: Float>(x: &Var<T>, y: &Var<T>, skew: (usize, f64)) -> Result<Var<T>> {
    let (xv, yv) = (x.value(), y.value());
    Ok(Var::from_op(xv.mul(&yv)?, &[x, y], || Product { x: xv, y: yv, skew }))
}

/// A graph with the custom op in the middle: matmul, tanh and a broadcast add before it,
/// softmax, a product of a value with itself, and the sum after it.
fn graph<T: Float>(v: &[Var<T>], skew: (usize, f64)) -> Result<Var<T>> {
    let h = v[0].matmul(&v[1])?.tanh().add(&v[2])?;
    let p = product(&h, &h.sigmoid(), skew)?;
    Ok(p.softmax(1)?.mul(&p)?.sum_all())
}

fn inputs<T: Float>(seed: u64) -> Vec<Tensor<T>> {
    let mut gen = Generator::new(seed);
    vec![
        Tensor::<T>::randn(&[3, 4], &mut gen),
        Tensor::<T>::randn(&[4, 5], &mut gen),
        Tensor::<T>::randn(&[5], &mut gen),
    ]
}

#[test]
fn a_wrong_backward_in_the_middle_is_named_not_the_last_op() {
    let wrong = |v: &[Var<f64>]| graph(v, (0, 1.5));
    let whole = gradcheck(wrong, &inputs(0)).unwrap_err();
    assert!(matches!(&whole, Error::GradcheckMismatch { op, .. } if op == "sum"), "{whole:?}");
    let per_op = gradcheck_per_op(wrong, &inputs(0)).unwrap_err();
    match per_op {
        // `h` is both of the product's inputs (the second through sigmoid), so the tape's
        // value mixes the wrong and the right rule: only the op and the input are asserted.
        Error::GradcheckMismatch { op, input, .. } => assert_eq!((op.as_str(), input), ("custom_product", 0)),
        other => panic!("expected a gradcheck mismatch, got {other:?}"),
    }
    // The wrong gradient of the second input is named as that input.
    let second = gradcheck_per_op(|v: &[Var<f64>]| graph(v, (1, -1.0)), &inputs(1)).unwrap_err();
    assert!(matches!(&second, Error::GradcheckMismatch { op, input: 1, .. } if op == "custom_product"), "{second:?}");
}

#[test]
fn a_right_graph_passes_in_f64_and_f32() {
    gradcheck_per_op(|v: &[Var<f64>]| graph(v, (0, 1.0)), &inputs(2)).unwrap();
    gradcheck_per_op(|v: &[Var<f32>]| graph(v, (0, 1.0)), &inputs(2)).unwrap();
    // ... and the f32 check still finds the wrong op.
    let err = gradcheck_per_op(|v: &[Var<f32>]| graph(v, (1, 0.5)), &inputs(2)).unwrap_err();
    assert!(matches!(&err, Error::GradcheckMismatch { op, .. } if op == "custom_product"), "{err:?}");
}

#[test]
fn a_wrong_op_on_a_parameter_the_function_closes_over_is_found_and_the_value_restored() {
    let w = Var::parameter(Tensor::<f64>::randn(&[4], &mut Generator::new(3)));
    let before = w.value().to_vec();
    let f = |v: &[Var<f64>]| Ok(product(&v[0].exp(), &w, (1, 2.0))?.tanh().sum_all());
    let err = gradcheck_per_op(f, &[Tensor::<f64>::randn(&[4], &mut Generator::new(4))]).unwrap_err();
    assert!(matches!(&err, Error::GradcheckMismatch { op, input: 1, .. } if op == "custom_product"), "{err:?}");
    assert_eq!(w.value().to_vec(), before);
    let right = |v: &[Var<f64>]| Ok(product(&v[0].exp(), &w, (1, 1.0))?.tanh().sum_all());
    gradcheck_per_op(right, &[Tensor::<f64>::randn(&[4], &mut Generator::new(4))]).unwrap();
}

#[test]
fn the_first_wrong_op_in_execution_order_is_named() {
    // Two wrong ops, told apart by their factor (3 then 5): the earlier is reported. A correct
    // op fed by both comes after them.
    let f = |v: &[Var<f64>]| {
        let a = product(&v[0].tanh(), &v[0], (0, 3.0))?;
        let b = product(&a, &v[0], (0, 5.0))?;
        Ok(a.mul(&b)?.sum_all())
    };
    let x = Tensor::<f64>::from_vec(vec![0.4, -0.7, 1.1], &[3]).unwrap();
    match gradcheck_per_op(f, &[x]).unwrap_err() {
        Error::GradcheckMismatch { op, input, analytic, numeric, .. } => {
            assert_eq!((op.as_str(), input), ("custom_product", 0));
            assert!((analytic - 3.0 * numeric).abs() < 1e-6 * (1.0 + numeric.abs()), "{analytic} vs {numeric}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_function_that_records_another_graph_when_rerun_is_an_error() {
    let calls = Cell::new(0);
    let f = |v: &[Var<f64>]| {
        calls.set(calls.get() + 1);
        if calls.get() == 1 {
            Ok(v[0].tanh().exp().sum_all())
        } else {
            Ok(v[0].sum_all())
        }
    };
    let err = gradcheck_per_op(f, &[Tensor::<f64>::ones(&[2])]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "gradcheck_per_op", .. }), "{err:?}");
    // An error of `f` itself comes back as it is.
    let failing = |v: &[Var<f64>]| v[0].matmul(&v[0]);
    assert!(matches!(
        gradcheck_per_op(failing, &[Tensor::<f64>::ones(&[2, 3])]),
        Err(Error::ShapeMismatch { op: "matmul", .. })
    ));
}

#[test]
fn tolerances_apply_as_in_the_whole_function_check() {
    // A backward off by 1e-3 relative passes loose tolerances and fails the default ones.
    let f = |v: &[Var<f64>]| Ok(product(&v[0], &v[0].exp(), (0, 1.0 + 1e-3))?.sum_all());
    let x = [Tensor::<f64>::from_vec(vec![0.5, -0.25], &[2]).unwrap()];
    assert!(gradcheck_per_op(f, &x).is_err());
    gradcheck_per_op_with(f, &x, GradcheckOptions { rtol: 1e-2, ..GradcheckOptions::default() }).unwrap();
}
