//! The training steps of the CNN of `cnn_mnist` and the row transformer of `transformer`,
//! timed from a plain user loop: forward, `cross_entropy`, `zero_grad`, `backward`, `step`, on
//! the main thread with nothing around it. Inputs are uniform in [0, 1) with random labels, from
//! a fixed seed; `benches/peers/pytorch_models.py` runs the same steps in PyTorch.
//!
//! ```sh
//! cargo run --release --example bench_models -- --model cnn --threads 1          # 5 warm-up + 30 timed steps
//! cargo run --release --example bench_models -- --model transformer --threads 2
//! cargo run --release --example bench_models -- --model cnn --loop pool          # the loop on a pool thread
//! cargo run --release --example bench_models -- --smoke                          # 2 steps of each, for CI
//! ```
//!
//! Flags: `--model cnn|transformer|both` (default both), `--threads N` (0: all cores),
//! `--steps N`, `--warmup N`, `--batch N` (64), `--width N` (the CNN's first convolution, 16),
//! `--d-model N` (64), `--heads N` (4), `--layers N` (2), `--seed N`, and `--loop pool|plain`
//! (default `plain`, as in every example: `pool` runs the loop on a thread of rayon's pool, to
//! compare).
//!
//! The CNN trains with Adam (lr 2e-3), the transformer with AdamW (lr 2e-3), both in training
//! mode (dropout on). Prints the median, mean and minimum milliseconds per step, the mean time of
//! each phase, and the process's peak resident set (`VmHWM`).

mod common;

use std::time::Instant;

use common::models::{Cnn, RowTransformer};
use tapegrad::nn;
use tapegrad::optim::{Adam, AdamW, Optimizer};
use tapegrad::prelude::*;

struct Options {
    models: Vec<&'static str>,
    steps: usize,
    warmup: usize,
    batch: usize,
    width: usize,
    d_model: usize,
    heads: usize,
    layers: usize,
}

fn main() {
    common::main_with(
        std::env::args().collect(),
        0,
        &["model", "steps", "warmup", "batch", "width", "d-model", "heads", "layers"],
        |args| {
            let models = match args.extra("model", "both".to_string())?.as_str() {
                "cnn" => vec!["cnn"],
                "transformer" => vec!["transformer"],
                "both" => vec!["cnn", "transformer"],
                other => return Err(format!("--model: {other:?} is not cnn, transformer or both")),
            };
            let (steps, warmup) =
                if args.smoke { (2, 0) } else { (args.extra("steps", 30)?, args.extra("warmup", 5)?) };
            let opts = Options {
                models,
                steps,
                warmup,
                batch: args.extra("batch", 64)?,
                width: args.extra("width", 16)?,
                d_model: args.extra("d-model", 64)?,
                heads: args.extra("heads", 4)?,
                layers: args.extra("layers", 2)?,
            };
            if opts.steps == 0 || opts.batch == 0 || opts.width == 0 || opts.d_model == 0 || opts.heads == 0 {
                return Err("--steps, --batch, --width, --d-model and --heads must be positive".into());
            }
            if !opts.d_model.is_multiple_of(opts.heads) {
                return Err(format!("--heads {} must divide --d-model {}", opts.heads, opts.d_model));
            }
            Ok(opts)
        },
        run,
    );
}

fn run(args: &common::Args, opts: Options) -> Result<()> {
    println!("cpu: {}", tapegrad::tensor::cpu_capability());
    println!(
        "threads: {}, loop: {}, batch {}, {} steps after {} warm-up",
        rayon::current_num_threads(),
        if args.plain_loop { "plain (main thread)" } else { "on a pool thread" },
        opts.batch,
        opts.steps,
        opts.warmup
    );
    for &model in &opts.models {
        manual_seed(args.seed);
        let mut gen = Generator::new(args.seed);
        let x = Var::new(Tensor::rand(&[opts.batch, 784], &mut gen));
        let targets: Vec<usize> = (0..opts.batch).map(|_| gen.below(10) as usize).collect();
        let stats = if model == "cnn" {
            let mut cnn = Cnn::new(opts.width, &mut gen)?;
            let mut adam = Adam::new(cnn.parameters(), 2e-3);
            time_steps(&mut cnn, &mut adam, &x, &targets, &opts)?
        } else {
            let mut transformer = RowTransformer::new(opts.d_model, opts.heads, opts.layers, 0.1, &mut gen)?;
            let mut adamw = AdamW::new(transformer.parameters(), 2e-3);
            time_steps(&mut transformer, &mut adamw, &x, &targets, &opts)?
        };
        let label = if model == "cnn" {
            format!("cnn (width {})", opts.width)
        } else {
            format!("transformer (d_model {}, {} heads, {} layers)", opts.d_model, opts.heads, opts.layers)
        };
        println!("{label}: {stats}");
        println!(
            "  buffer cache after the steps: {:.1} MiB (limit {:.0} MiB)",
            tapegrad::tensor::memory::cached_bytes() as f64 / (1 << 20) as f64,
            tapegrad::tensor::memory::cache_limit() as f64 / (1 << 20) as f64
        );
    }
    match common::peak_rss_kib() {
        Some(kib) => println!("peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: /proc/self/status has no VmHWM"),
    }
    Ok(())
}

/// Runs `warmup + steps` training steps and describes the timed ones.
fn time_steps(
    model: &mut impl Module,
    opt: &mut impl Optimizer,
    x: &Var,
    targets: &[usize],
    opts: &Options,
) -> Result<String> {
    model.train();
    let mut times = Vec::with_capacity(opts.steps);
    let mut phases = [0.0f64; 3];
    let mut loss_value = 0.0;
    for step in 0..opts.warmup + opts.steps {
        let start = Instant::now();
        let loss = nn::loss::cross_entropy(&model.forward(x)?, targets)?;
        let t1 = Instant::now();
        opt.zero_grad();
        loss.backward()?;
        let t2 = Instant::now();
        opt.step()?;
        let t3 = Instant::now();
        loss_value = loss.value().item()?;
        if step >= opts.warmup {
            times.push((t3 - start).as_secs_f64() * 1e3);
            for (sum, (from, to)) in phases.iter_mut().zip([(start, t1), (t1, t2), (t2, t3)]) {
                *sum += (to - from).as_secs_f64() * 1e3;
            }
        }
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let [fwd, bwd, update] = phases.map(|ms| ms / opts.steps as f64);
    Ok(format!(
        "ms/step median {median:.2}, mean {mean:.2}, min {:.2}; mean ms per phase: forward + loss {fwd:.2}, \
         zero_grad + backward {bwd:.2}, step {update:.2}; final loss {loss_value:.4}",
        times[0]
    ))
}
