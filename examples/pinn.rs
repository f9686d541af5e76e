//! A physics-informed network: `u(x)` on [0, 2π] learned from the equation `u'' = -u` and the
//! initial conditions `u(0) = 0`, `u'(0) = 1` alone (no samples of the solution), then compared
//! with the closed form `sin x`. `u'` and `u''` are gradients of the network's output with respect
//! to its input, taken with `create_graph` so that the residual `u'' + u` can itself be
//! differentiated with respect to the weights: each training step is a third-order derivative
//! through the tanh network.
//!
//! ```sh
//! cargo run --release --example pinn             # 1-32-32-1 tanh, 64 collocation points, 3000 Adam steps
//! cargo run --release --example pinn -- --smoke  # 300 steps
//! ```
//!
//! The loss and the mean residual every 10 steps go to `target/pinn.csv` (its `epoch` column
//! holds the step), their curves to `target/pinn.svg` (`--out PATH.svg` puts both elsewhere).

mod common;

use std::f64::consts::PI;
use std::time::Instant;

use tapegrad::autograd::{grad, GradOptions};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::prelude::*;

use common::metrics::{Epoch, Metrics};

const HIDDEN: usize = 32;
const POINTS: usize = 64;
const SPAN: f64 = 2.0 * PI;

struct Net {
    params: Vec<Var<f64>>,
}

impl Net {
    fn new(gen: &mut Generator) -> Net {
        let shapes = [vec![1, HIDDEN], vec![HIDDEN], vec![HIDDEN, HIDDEN], vec![HIDDEN], vec![HIDDEN, 1]];
        let params = shapes
            .iter()
            .map(|s| Var::parameter(Tensor::<f64>::randn(s, gen).mul_scalar((1.0 / s[0] as f64).sqrt())))
            .collect();
        Net { params }
    }

    /// `u(x)` for a column `x` `[n, 1]`.
    fn forward(&self, x: &Var<f64>) -> Result<Var<f64>> {
        let p = &self.params;
        let h = x.matmul(&p[0])?.add(&p[1])?.tanh();
        let h = h.matmul(&p[2])?.add(&p[3])?.tanh();
        h.matmul(&p[4])
    }

    /// `u`, `u'` and `u''` at `x` (a parameter column: each `u_i` depends on `x_i` only, so the
    /// gradient of `Σ u` is `u'` pointwise), all recorded.
    fn derivatives(&self, x: &Var<f64>) -> Result<(Var<f64>, Var<f64>, Var<f64>)> {
        let create = GradOptions { create_graph: true, ..GradOptions::default() };
        let u = self.forward(x)?;
        let du = grad(&[&u.sum_all()], &[x], None, create)?.remove(0).expect("u depends on x");
        let d2u = grad(&[&du.sum_all()], &[x], None, create)?.remove(0).expect("u' depends on x");
        Ok((u, du, d2u))
    }
}

fn main() -> Result<()> {
    let args = common::parse_args(std::env::args().collect(), 1, &[]).map_err(|e| Error::arg("pinn example", e))?;
    let smoke = args.smoke;
    let steps = if smoke { 300 } else { 3000 };
    let mut gen = Generator::new(5);
    let net = Net::new(&mut gen);
    let grid: Vec<f64> = (0..POINTS).map(|i| SPAN * (i as f64 + 0.5) / POINTS as f64).collect();
    let mut opt = Adam::new(net.params.clone(), 3e-3);
    let title =
        format!("PINN for u'' = -u, u(0) = 0, u'(0) = 1: 1-{HIDDEN}-{HIDDEN}-1 tanh, {POINTS} points, Adam lr 3e-3");
    let mut metrics =
        Metrics::create(&args.out_path("pinn"), title, &["mean_abs_residual"])?.x_label("step").log_loss();
    let start = Instant::now();
    for step in 0..=steps {
        let x = Var::parameter(Tensor::from_vec(grid.clone(), &[POINTS, 1])?);
        let (u, _, d2u) = net.derivatives(&x)?;
        let residual = d2u.add(&u)?;
        let x0 = Var::parameter(Tensor::<f64>::zeros(&[1, 1]));
        let (u0, du0, _) = net.derivatives(&x0)?;
        let ic = u0.mul(&u0)?.add(&du0.add_scalar(-1.0).powf(2.0))?.sum_all();
        let loss = residual.mul(&residual)?.mean_all().add(&ic)?;
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
        if step % 10 == 0 {
            let row = Epoch {
                epoch: step,
                lr: Some(3e-3),
                train_loss: Some(loss.value().item()?),
                extra: vec![residual.value().abs().mean_all().item()?],
                ..Epoch::default()
            };
            metrics.record("", row)?;
        }
        if step % (steps / 5) == 0 {
            println!(
                "step {step:>5}: loss {:.3e} (residual {:.3e})",
                loss.value().item()?,
                residual.value().abs().mean_all().item()?
            );
        }
    }
    let took = start.elapsed();
    // The error against sin x on a fine grid, between and beyond the collocation points.
    let fine: Vec<f64> = (0..=400).map(|i| SPAN * i as f64 / 400.0).collect();
    let u = no_grad(|| net.forward(&Var::new(Tensor::from_vec(fine.clone(), &[fine.len(), 1])?)))?.value().to_vec();
    let max_err = u.iter().zip(&fine).map(|(u, x)| (u - x.sin()).abs()).fold(0.0, f64::max);
    let rms = (u.iter().zip(&fine).map(|(u, x)| (u - x.sin()).powi(2)).sum::<f64>() / fine.len() as f64).sqrt();
    println!("{steps} steps in {:.1} s; |u - sin x| on [0, 2π]: max {max_err:.3e}, rms {rms:.3e}", took.as_secs_f64());
    println!("metrics: {}, plot: {}", metrics.csv_path().display(), metrics.svg_path().display());
    if !smoke && max_err > 0.05 {
        return Err(Error::arg("pinn example", format!("the fit is off: max error {max_err:.3e}")));
    }
    Ok(())
}
