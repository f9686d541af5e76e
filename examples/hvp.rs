//! A Hessian-vector product through `create_graph`, checked against finite differences: the
//! loss of a small tanh network (f64, fixed data) as a function of all its parameters θ,
//! `H v` from `autograd::functional::hvp` (two backward passes, the first recorded) against the
//! central difference `(∇f(θ + εv) - ∇f(θ - εv)) / 2ε` of plain first gradients, for a random
//! direction `v` and several steps ε. The relative error should fall as ε² until rounding
//! takes over.
//!
//! ```sh
//! cargo run --release --example hvp             # 32 samples, 8-64-64-1 network
//! cargo run --release --example hvp -- --smoke  # 8 samples, 4-8-8-1
//! ```

use std::time::Instant;

use tapegrad::autograd::functional::hvp;
use tapegrad::prelude::*;

fn main() -> Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let (n, d, h) = if smoke { (8, 4, 8) } else { (32, 8, 64) };
    let mut gen = Generator::new(17);
    let x = Tensor::<f64>::randn(&[n, d], &mut gen);
    let target = Tensor::<f64>::randn(&[n, 1], &mut gen);
    let shapes = [vec![d, h], vec![h], vec![h, h], vec![h], vec![h, 1]];
    let theta: Vec<Tensor<f64>> =
        shapes.iter().map(|s| Tensor::<f64>::randn(s, &mut gen).mul_scalar(1.0 / (s[0] as f64).sqrt())).collect();
    let v: Vec<Tensor<f64>> = shapes.iter().map(|s| Tensor::<f64>::randn(s, &mut gen)).collect();
    let count: usize = theta.iter().map(Tensor::numel).sum();

    // Mean squared error of a 2-hidden-layer tanh network.
    let loss = |p: &[Var<f64>]| -> Result<Var<f64>> {
        let input = Var::new(x.clone());
        let h1 = input.matmul(&p[0])?.add(&p[1])?.tanh();
        let h2 = h1.matmul(&p[2])?.add(&p[3])?.tanh();
        let err = h2.matmul(&p[4])?.sub(&Var::new(target.clone()))?;
        Ok(err.mul(&err)?.mean_all())
    };
    let gradient = |at: &[Tensor<f64>]| -> Result<Vec<f64>> {
        let p: Vec<Var<f64>> = at.iter().map(|t| Var::parameter(t.clone())).collect();
        loss(&p)?.backward()?;
        Ok(p.iter().flat_map(|p| p.grad().expect("every parameter is used").to_vec()).collect())
    };

    let start = Instant::now();
    let (value, hv) = hvp(loss, &theta, &v)?;
    let took = start.elapsed();
    let hv: Vec<f64> = hv.iter().flat_map(Tensor::to_vec).collect();
    let norm = |a: &[f64]| a.iter().map(|v| v * v).sum::<f64>().sqrt();
    println!("network {d}-{h}-{h}-1, {n} samples, {count} parameters; loss {:.6}", value.item()?);
    println!("hvp (create_graph, two backward passes): |Hv| = {:.6e} in {:.2} ms", norm(&hv), took.as_secs_f64() * 1e3);
    println!("{:>8}  {:>14}", "eps", "rel. error");
    let mut best = f64::INFINITY;
    for eps in [1e-2, 1e-3, 1e-4, 1e-5] {
        let shifted = |sign: f64| -> Vec<Tensor<f64>> {
            theta.iter().zip(&v).map(|(t, v)| t.add(&v.mul_scalar(sign * eps)).expect("same shapes")).collect()
        };
        let (plus, minus) = (gradient(&shifted(1.0))?, gradient(&shifted(-1.0))?);
        let fd: Vec<f64> = plus.iter().zip(&minus).map(|(p, m)| (p - m) / (2.0 * eps)).collect();
        let diff: Vec<f64> = hv.iter().zip(&fd).map(|(a, b)| a - b).collect();
        let rel = norm(&diff) / norm(&fd);
        best = best.min(rel);
        println!("{eps:>8.0e}  {rel:>14.3e}");
    }
    if best > 1e-6 {
        return Err(Error::arg(
            "hvp example",
            format!("Hv and the finite differences differ: best relative error {best:.3e}"),
        ));
    }
    println!("ok: best relative error {best:.3e}");
    Ok(())
}
