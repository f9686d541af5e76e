//! The gradient-penalty use case of double backward (WGAN-GP, Gulrajani et al., 2017): the
//! penalty `‖∂ critic(x) / ∂x‖²` of a small convolutional critic (`conv2d`, `relu`,
//! `max_pool2d`, `avg_pool2d`, a fused `linear`), differentiated with respect to the critic's
//! parameters through `grad` with `create_graph`, against central finite differences of the
//! penalty itself.

use tapegrad_autograd::{fused, grad, Generator, GradOptions, Result, Tensor, Var};
use tapegrad_tensor::TensorNew;

/// The critic's parameters: conv weight and bias, linear weight and bias.
fn params(gen: &mut Generator) -> Vec<Tensor<f64>> {
    vec![
        Tensor::<f64>::randn(&[3, 2, 3, 3], gen).mul_scalar(0.5),
        Tensor::<f64>::randn(&[3], gen).mul_scalar(0.1),
        Tensor::<f64>::randn(&[2, 12], gen).mul_scalar(0.5),
        Tensor::<f64>::randn(&[2], gen),
    ]
}

/// `critic(x)`: conv 3x3 (padding 1) -> relu -> max pool 2 -> avg pool 1 -> linear to 2 -> sum,
/// per sample; its sum over the batch.
fn critic(x: &Var<f64>, p: &[Var<f64>]) -> Result<Var<f64>> {
    let n = x.shape()[0];
    let h = x.conv2d(&p[0], Some(&p[1]), 1, 1)?.relu().max_pool2d(2, 2, 0)?.avg_pool2d(1, 1, 0)?;
    let flat = h.reshape(&[n, 12])?;
    Ok(fused::linear(&flat, &p[2], Some(&p[3]))?.tanh().sum_all())
}

/// The penalty `Σ_samples ‖∂ critic / ∂x‖²` (recorded, so that it can be differentiated).
fn penalty(x: &Tensor<f64>, p: &[Var<f64>]) -> Result<Var<f64>> {
    let x = Var::parameter(x.clone());
    let create = GradOptions { create_graph: true, ..GradOptions::default() };
    let dx = grad(&[&critic(&x, p)?], &[&x], None, create)?[0].clone().expect("x is used");
    Ok(dx.mul(&dx)?.sum_all())
}

#[test]
fn gradient_penalty_of_a_conv_critic_matches_finite_differences() {
    let gen = &mut Generator::new(7);
    let x = Tensor::<f64>::randn(&[2, 2, 4, 4], gen);
    let values = params(gen);
    let vars: Vec<Var<f64>> = values.iter().map(|t| Var::parameter(t.clone())).collect();
    penalty(&x, &vars).unwrap().backward().unwrap();
    let value_at = |k: usize, i: usize, delta: f64| -> f64 {
        let mut data = values[k].to_vec();
        data[i] += delta;
        let vars: Vec<Var<f64>> = values
            .iter()
            .enumerate()
            .map(|(j, t)| {
                if j == k {
                    Var::parameter(Tensor::from_vec(data.clone(), t.shape()).unwrap())
                } else {
                    Var::parameter(t.clone())
                }
            })
            .collect();
        penalty(&x, &vars).unwrap().value().item().unwrap()
    };
    let h = 1e-6;
    let mut worst = 0.0f64;
    for (k, var) in vars.iter().enumerate() {
        let analytic = var.grad().expect("every parameter reaches the penalty").to_vec();
        for (i, &a) in analytic.iter().enumerate() {
            let numeric = (value_at(k, i, h) - value_at(k, i, -h)) / (2.0 * h);
            let err = (a - numeric).abs() / numeric.abs().max(1e-3);
            worst = worst.max(err);
            assert!(err < 1e-5, "parameter {k}[{i}]: analytic {a}, finite differences {numeric}");
        }
    }
    // Not a vacuous comparison: the penalty depends on every parameter kind.
    assert!(vars.iter().all(|v| v.grad().unwrap().to_vec().iter().any(|g| g.abs() > 1e-8)), "worst {worst}");
}
