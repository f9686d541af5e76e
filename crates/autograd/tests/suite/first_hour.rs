//! What a PyTorch user reaches for in the first hour, on `Var`: the arithmetic operators (each
//! the op of its method, panicking with the method's message on shapes that do not broadcast),
//! scalars on either side, `item`, `reshape_infer`, and the unary maths of `ops/unary.rs`
//! against the standard library's functions. Their gradients are checked in `gradcheck.rs`.

use tapegrad_autograd::{Result, Var};
use tapegrad_tensor::{Tensor, TensorNew};

fn var(data: &[f64], shape: &[usize]) -> Var<f64> {
    Var::parameter(Tensor::from_vec(data.to_vec(), shape).unwrap())
}

/// The names of the ops on the graph of `y`, oldest first.
fn op_of(y: &Var<f64>) -> String {
    format!("{y:?}").split(',').next().unwrap().trim_start_matches("Var(").to_string()
}

#[test]
fn binary_operators_equal_their_methods_and_record_them() -> Result<()> {
    let x = var(&[1.0, -2.0, 3.0, 0.5, 4.0, -1.5], &[2, 3]);
    let y = var(&[2.0, 0.25, -3.0], &[3]);
    let cases: [(&str, Var<f64>, Var<f64>); 4] = [
        ("add", &x + &y, x.add(&y)?),
        ("sub", &x - &y, x.sub(&y)?),
        ("mul", &x * &y, x.mul(&y)?),
        ("div", &x / &y, x.div(&y)?),
    ];
    for (name, op, method) in cases {
        assert_eq!(op.value().to_vec(), method.value().to_vec(), "{name}");
        assert_eq!(op_of(&op), name);
    }
    // Owned and mixed forms.
    assert_eq!((x.clone() + y.clone()).value().to_vec(), x.add(&y)?.value().to_vec());
    assert_eq!((&x * y.clone()).value().to_vec(), x.mul(&y)?.value().to_vec());
    assert_eq!((x.clone() - &y).value().to_vec(), x.sub(&y)?.value().to_vec());
    assert_eq!((-&x).value().to_vec(), vec![-1.0, 2.0, -3.0, -0.5, -4.0, 1.5]);
    assert_eq!(op_of(&-x.clone()), "neg");
    Ok(())
}

#[test]
fn operator_gradients_flow_to_both_sides() -> Result<()> {
    let x = var(&[1.0, 2.0], &[2]);
    let y = var(&[3.0, 4.0], &[2]);
    // d/dx (x * y - x / y) = y - 1/y; d/dy = x + x / y^2.
    (&(&x * &y) - &(&x / &y)).sum_all().backward()?;
    assert_eq!(x.grad().unwrap().to_vec(), vec![3.0 - 1.0 / 3.0, 4.0 - 0.25]);
    assert_eq!(y.grad().unwrap().to_vec(), vec![1.0 + 1.0 / 9.0, 2.0 + 2.0 / 16.0]);
    Ok(())
}

#[test]
fn operators_panic_with_the_method_message() {
    let x = var(&[0.0; 6], &[2, 3]);
    let y = var(&[0.0; 4], &[4]);
    let expected = x.mul(&y).unwrap_err().to_string();
    assert!(expected.starts_with("mul: [2, 3] and [4]"), "{expected}");
    let panic = std::panic::catch_unwind(|| &x * &y).unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert_eq!(message, &expected);
    for (name, f) in [
        ("add", Box::new(|| drop(&x + &y)) as Box<dyn Fn()>),
        ("sub", Box::new(|| drop(&x - &y))),
        ("div", Box::new(|| drop(x.clone() / y.clone()))),
    ] {
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.starts_with(&format!("{name}: [2, 3] and [4]")), "{message}");
    }
}

#[test]
fn scalars_on_either_side() -> Result<()> {
    let x = var(&[1.0, -2.0, 4.0], &[3]);
    assert_eq!((&x * 2.0).value().to_vec(), vec![2.0, -4.0, 8.0]);
    assert_eq!((2.0 * &x).value().to_vec(), vec![2.0, -4.0, 8.0]);
    assert_eq!((&x + 1.0).value().to_vec(), vec![2.0, -1.0, 5.0]);
    assert_eq!((1.0 + &x).value().to_vec(), vec![2.0, -1.0, 5.0]);
    assert_eq!((&x - 1.0).value().to_vec(), vec![0.0, -3.0, 3.0]);
    assert_eq!((1.0 - &x).value().to_vec(), vec![0.0, 3.0, -3.0]);
    assert_eq!((&x / 4.0).value().to_vec(), vec![0.25, -0.5, 1.0]);
    assert_eq!((x.clone() * 3.0).value().to_vec(), vec![3.0, -6.0, 12.0]);
    assert_eq!(op_of(&(&x * 2.0)), "mul_scalar");
    assert_eq!(op_of(&(1.0 - &x)), "add_scalar");
    // 1 - x has gradient -1; x / 4 has 1/4.
    ((1.0 - &x).sum_all() + (&x / 4.0).sum_all()).backward()?;
    assert_eq!(x.grad().unwrap().to_vec(), vec![-0.75; 3]);

    // f32 on both sides too.
    let w = Var::parameter(Tensor::from_vec(vec![1.5f32, -1.0], &[2])?);
    assert_eq!((0.5f32 * &w - 1.0).value().to_vec(), vec![-0.25, -1.5]);
    Ok(())
}

#[test]
fn item_reads_one_element() -> Result<()> {
    let loss = var(&[1.0, 2.0, 3.5], &[3]).sum_all();
    assert_eq!(loss.item()?, 6.5);
    assert_eq!(var(&[7.0], &[1, 1]).item()?, 7.0);
    let e = var(&[1.0, 2.0], &[2]).item().unwrap_err().to_string();
    assert!(e.starts_with("item: shape [2]"), "{e}");
    Ok(())
}

#[test]
fn reshape_infer_fills_in_one_dim_and_backpropagates() -> Result<()> {
    let x = Var::parameter(Tensor::<f64>::arange(12));
    let y = x.reshape_infer(&[-1, 4])?;
    assert_eq!(y.shape(), vec![3, 4]);
    assert_eq!(x.reshape_infer(&[2, -1, 3])?.shape(), vec![2, 2, 3]);
    assert_eq!(Tensor::<f32>::zeros(&[2, 3]).reshape_infer(&[-1])?.shape(), &[6]);
    y.mul_scalar(2.0).sum_all().backward()?;
    assert_eq!(x.grad().unwrap().to_vec(), vec![2.0; 12]);
    for bad in [&[-1, 5][..], &[-1, -1], &[-3, 4]] {
        let e = x.reshape_infer(bad).unwrap_err().to_string();
        assert!(e.starts_with("reshape: shape [12]"), "{e}");
    }
    Ok(())
}

#[test]
fn unary_maths_match_the_standard_library() {
    let data = [-30.0, -2.5, -0.3, 0.0, 0.7, 1.9, 40.0];
    let x = var(&data, &[7]);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let close = |name: &str, got: Vec<f64>, want: &dyn Fn(f64) -> f64| {
        for (g, &v) in got.iter().zip(&data) {
            let w = want(v);
            assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{name}({v}) = {g}, want {w}");
        }
    };
    close("sin", x.sin().value().to_vec(), &f64::sin);
    close("cos", x.cos().value().to_vec(), &f64::cos);
    close("silu", x.silu().value().to_vec(), &|v| v * sig(v));
    close("softplus", x.softplus().value().to_vec(), &|v| if v > 20.0 { v } else { v.exp().ln_1p() });
    close("leaky_relu", x.leaky_relu(0.1).value().to_vec(), &|v| if v > 0.0 { v } else { 0.1 * v });
    close("clamp", x.clamp(-1.0, 1.0).value().to_vec(), &|v| v.clamp(-1.0, 1.0));
    for (y, name) in [
        (x.sin(), "sin"),
        (x.cos(), "cos"),
        (x.silu(), "silu"),
        (x.softplus(), "softplus"),
        (x.leaky_relu(0.1), "leaky_relu"),
        (x.clamp(0.0, 1.0), "clamp"),
    ] {
        assert_eq!(op_of(&y), name);
    }
    // f32: correctly rounded from f64, softplus without overflow.
    let x32 = Tensor::from_vec(vec![-100.0f32, 100.0, 1.0], &[3]).unwrap();
    assert_eq!(x32.softplus().to_vec(), vec![(-100.0f64).exp() as f32, 100.0, (1.0f64.exp().ln_1p()) as f32]);
    assert_eq!(x32.sin().to_vec()[2], 1.0f64.sin() as f32);
}

#[test]
fn clamp_edges_follow_pytorch() {
    let x = var(&[f64::NAN, -1.0, 1.0, 5.0], &[4]);
    let y = x.clamp(-1.0, 1.0).value().to_vec();
    assert!(y[0].is_nan());
    assert_eq!(&y[1..], &[-1.0, 1.0, 1.0]);
    // min > max: everything is max (torch.clamp(x, 2, 1) == 1) and no gradient passes.
    let z = x.clamp(2.0, 1.0);
    assert_eq!(&z.value().to_vec()[1..], &[1.0, 1.0, 1.0]);
    z.sum_all().backward().unwrap();
    assert_eq!(&x.grad().unwrap().to_vec()[1..], &[0.0, 0.0, 0.0]);
}

#[test]
fn the_bounds_of_clamp_and_zero_of_leaky_relu_pass_pytorchs_gradient() -> Result<()> {
    let x = var(&[-1.0, 0.0, 1.0], &[3]);
    x.clamp(-1.0, 1.0).sum_all().backward()?;
    assert_eq!(x.grad().unwrap().to_vec(), vec![1.0, 1.0, 1.0]);
    x.zero_grad();
    x.leaky_relu(0.2).sum_all().backward()?;
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.2, 0.2, 1.0]);
    Ok(())
}
