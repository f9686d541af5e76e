//! A Wasserstein GAN with gradient penalty (WGAN-GP, Gulrajani et al., 2017) on the paper's toy
//! data, eight Gaussians on a ring. The critic's loss is `mean D(fake) − mean D(real) + λ GP` with
//! the penalty `GP = mean_i (‖∂D(x̂)/∂x̂_i‖ − 1)²` at random interpolates `x̂` of real and fake
//! points: `∂D/∂x̂` is taken with `create_graph`, so each critic step differentiates a gradient
//! once more (the double backward that `crates/nn/tests/suite/gradient_penalty.rs` checks against
//! PyTorch). Five critic steps per generator step, Adam with the paper's betas (0.5, 0.9).
//! Prints the penalty and the Wasserstein estimate `mean D(real) − mean D(fake)` per epoch, then
//! how close the generator's samples fall to the modes.
//!
//! ```sh
//! cargo run --release --example gradient_penalty                  # 10 epochs of 100 generator steps
//! cargo run --release --example gradient_penalty -- --steps 300   # generator steps per epoch
//! cargo run --release --example gradient_penalty -- --smoke       # 1 epoch of 20 steps
//! ```
//!
//! Each epoch's critic loss, penalty and Wasserstein estimate go to `target/gradient_penalty.csv`,
//! their curves to `target/gradient_penalty.svg` (`--out PATH.svg` puts both elsewhere).

mod common;

use std::f64::consts::PI;
use std::time::Instant;

use tapegrad::autograd::{grad, GradOptions};
use tapegrad::nn::{Linear, Module, ReLU, Sequential};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::prelude::*;

use common::metrics::{Epoch, Metrics};

const HIDDEN: usize = 64;
const BATCH: usize = 256;
/// The penalty's weight λ (the paper's).
const LAMBDA: f32 = 10.0;
/// Critic steps per generator step (the paper's).
const CRITIC_STEPS: usize = 5;
const LR: f64 = 1e-3;
const MODES: usize = 8;
const RADIUS: f64 = 2.0;
/// The standard deviation of each mode.
const SPREAD: f64 = 0.05;
/// Samples drawn from the generator to judge it.
const SAMPLES: usize = 2000;

/// `n` points of the ring: a mode chosen uniformly, plus Gaussian noise of `SPREAD`.
fn ring(n: usize, gen: &mut Generator) -> Result<Tensor> {
    let modes = Tensor::<f64>::rand(&[n], gen).to_vec();
    let noise = Tensor::<f64>::randn(&[n, 2], gen).to_vec();
    let mut points = Vec::with_capacity(2 * n);
    for (i, u) in modes.iter().enumerate() {
        let angle = 2.0 * PI * (u * MODES as f64).floor() / MODES as f64;
        points.push((RADIUS * angle.cos() + SPREAD * noise[2 * i]) as f32);
        points.push((RADIUS * angle.sin() + SPREAD * noise[2 * i + 1]) as f32);
    }
    Tensor::from_vec(points, &[n, 2])
}

/// `2 -> 64 -> ReLU -> 64 -> ReLU -> outputs`, for the critic (1 output) and the generator (2).
fn mlp(outputs: usize, gen: &mut Generator) -> Sequential {
    Sequential::new()
        .add(Linear::new(2, HIDDEN, gen))
        .add(ReLU::new())
        .add(Linear::new(HIDDEN, HIDDEN, gen))
        .add(ReLU::new())
        .add(Linear::new(HIDDEN, outputs, gen))
}

/// `λ · mean_i (‖∂D(x̂)/∂x̂_i‖ − 1)²` at `x̂ = ε real + (1 − ε) fake`, one `ε ~ U[0, 1)` per
/// sample; recorded, so that `backward` reaches the critic's parameters through `∂D/∂x̂`.
fn gradient_penalty(critic: &Sequential, real: &Tensor, fake: &Tensor, gen: &mut Generator) -> Result<Var> {
    let eps = Tensor::rand(&[real.shape()[0], 1], gen);
    let x_hat = Var::parameter(eps.mul(real)?.add(&eps.neg().add_scalar(1.0).mul(fake)?)?);
    let create = GradOptions { create_graph: true, ..GradOptions::default() };
    let dx = grad(&[&critic.forward(&x_hat)?.sum_all()], &[&x_hat], None, create)?.remove(0).expect("D depends on x");
    let gap = dx.mul(&dx)?.sum(&[1], false)?.sqrt().add_scalar(-1.0);
    Ok(gap.mul(&gap)?.mean_all().mul_scalar(LAMBDA))
}

/// `batch` samples of the generator from standard normal noise, as constants.
fn sample(generator: &Sequential, batch: usize, gen: &mut Generator) -> Result<Tensor> {
    let z = Var::new(Tensor::randn(&[batch, 2], gen));
    Ok(no_grad(|| generator.forward(&z))?.value())
}

/// The share of `points` within `3 SPREAD` of a mode, and how many modes got at least 2% of them.
fn quality(points: &Tensor) -> (f64, usize) {
    let xy = points.to_vec();
    let mut hits = [0usize; MODES];
    let mut close = 0;
    for p in xy.chunks(2) {
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        let (mode, dist) = (0..MODES)
            .map(|m| {
                let angle = 2.0 * PI * m as f64 / MODES as f64;
                (m, (x - RADIUS * angle.cos()).hypot(y - RADIUS * angle.sin()))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("eight modes");
        if dist < 3.0 * SPREAD {
            close += 1;
            hits[mode] += 1;
        }
    }
    let n = xy.len() / 2;
    (close as f64 / n as f64, hits.iter().filter(|&&h| h * 50 >= n).count())
}

fn run(args: &common::Args, steps: usize) -> Result<()> {
    let steps = if args.smoke { 20 } else { steps };
    let mut gen = Generator::new(args.seed);
    let critic = mlp(1, &mut gen);
    let generator = mlp(2, &mut gen);
    let mut critic_opt = Adam::new(critic.parameters(), LR).betas(0.5, 0.9);
    let mut generator_opt = Adam::new(generator.parameters(), LR).betas(0.5, 0.9);
    let report = |label: &str, gen: &mut Generator| -> Result<(f64, usize)> {
        let (share, modes) = quality(&sample(&generator, SAMPLES, gen)?);
        println!(
            "{label}: {:.1}% of {SAMPLES} samples within 3σ of a mode, {modes} of {MODES} modes hit",
            100.0 * share
        );
        Ok((share, modes))
    };
    println!("WGAN-GP on {MODES} Gaussians (radius {RADIUS}, σ {SPREAD}): batch {BATCH}, λ {LAMBDA}, {CRITIC_STEPS} critic steps per generator step");
    report("before training", &mut gen)?;
    let title = format!(
        "WGAN-GP on {MODES} Gaussians: critic and generator {HIDDEN}-{HIDDEN} ReLU, Adam lr {LR}, betas (0.5, 0.9)"
    );
    let mut metrics = Metrics::create(&args.out_path("gradient_penalty"), title, &["penalty", "wasserstein_estimate"])?;
    let start = Instant::now();
    for epoch in 1..=args.epochs {
        let epoch_start = Instant::now();
        let (mut penalty, mut wasserstein) = (0.0, 0.0);
        for _ in 0..steps {
            for _ in 0..CRITIC_STEPS {
                let real = ring(BATCH, &mut gen)?;
                let fake = sample(&generator, BATCH, &mut gen)?;
                let d_real = critic.forward(&Var::new(real.clone()))?.mean_all();
                let d_fake = critic.forward(&Var::new(fake.clone()))?.mean_all();
                let gp = gradient_penalty(&critic, &real, &fake, &mut gen)?;
                let loss = d_fake.sub(&d_real)?.add(&gp)?;
                critic_opt.zero_grad();
                loss.backward()?;
                critic_opt.step()?;
                penalty += f64::from(gp.value().item()?);
                wasserstein += f64::from(d_real.value().item()? - d_fake.value().item()?);
            }
            // The generator moves its samples towards where the critic scores high.
            let fake = generator.forward(&Var::new(Tensor::randn(&[BATCH, 2], &mut gen)))?;
            let loss = critic.forward(&fake)?.mean_all().neg();
            generator_opt.zero_grad();
            loss.backward()?;
            generator_opt.step()?;
        }
        let count = (steps * CRITIC_STEPS) as f64;
        println!(
            "epoch {epoch:>2}: penalty λ·GP {:.4}, Wasserstein estimate {:.4} (means over {} critic steps)",
            penalty / count,
            wasserstein / count,
            steps * CRITIC_STEPS
        );
        // The critic's loss is mean D(fake) - mean D(real) + λ GP.
        let (penalty, wasserstein) = (penalty / count, wasserstein / count);
        metrics.record(
            "",
            Epoch {
                epoch,
                lr: Some(LR),
                train_loss: Some(penalty - wasserstein),
                seconds: Some(common::seconds(epoch_start)),
                extra: vec![penalty, wasserstein],
                ..Epoch::default()
            },
        )?;
    }
    println!("metrics: {}, plot: {}", metrics.csv_path().display(), metrics.svg_path().display());
    let took = start.elapsed().as_secs_f64();
    println!(
        "{} generator steps ({} critic steps) in {took:.1} s",
        args.epochs * steps,
        args.epochs * steps * CRITIC_STEPS
    );
    let (share, modes) = report("after training", &mut gen)?;
    if !args.smoke && (share < 0.2 || modes < MODES - 2) {
        return Err(Error::arg(
            "gradient_penalty example",
            format!("the generator did not learn the ring: {:.1}% near a mode, {modes} modes hit", 100.0 * share),
        ));
    }
    Ok(())
}

fn main() {
    common::main(10, &["steps"], |args| args.extra("steps", 100), run);
}
