//! The benchmark MLP training step, timed: 784-1024-1024-10, ReLU, dropout 0.5 after each
//! hidden layer, cross-entropy, plain SGD (no momentum, lr 0.01), batch 128, random data from a
//! fixed seed. One step is forward, backward, the SGD update and zeroing the gradients:
//! `2 · 128 · (3 · (784·1024 + 1024·1024 + 1024·10) − 784·1024)` ≈ 1.22 GFLOP of matrix
//! products (three products per layer, less the input's gradient, which nothing needs).
//!
//! ```sh
//! cargo run --release --example bench_mlp -- --threads 1              # 10 warm-up + 100 timed steps
//! cargo run --release --example bench_mlp -- --threads 2 --steps 300
//! cargo run --release --example bench_mlp -- --threads 1 --path fused  # one fused op per hidden layer
//! cargo run --release --example bench_mlp -- --smoke                   # 2 steps, for CI
//! ```
//!
//! Flags: `--threads N` (0: all cores), `--steps N`, `--warmup N`, `--seed N`, `--smoke`, and
//! `--path layers|fused`: `layers` (the default, what a user writes) composes the modules
//! (`Linear`, whose GEMM adds the bias in place, then `relu` and `Dropout`, each on SIMD
//! kernels); `fused` runs each hidden layer as one recorded op (`linear_relu_dropout`: the GEMM
//! into the broadcast bias, then ReLU and dropout in one SIMD pass over the output, and one pass
//! back). Both draw the
//! same masks and give the same loss; `fused` is a few percent the faster (see
//! docs/benchmarks.md).
//!
//! Prints the median and mean milliseconds per step, the GFLOP/s they imply, the mean time of
//! each phase (forward with the loss, backward, the SGD update with `zero_grad`), the final loss
//! and the process's peak resident set (`VmHWM` from `/proc/self/status`).
//!
//! The steps run on the main thread, as a user's plain loop does, and the kernels' helper
//! threads join each parallel loop there (`--loop pool` runs them on a thread of rayon's pool
//! instead, to compare: 4.90-5.11 against 5.21-5.31 ms per step at 2 threads on the Intel Xeon
//! of `docs/benchmarks.md`).

mod common;

use std::time::Instant;

use tapegrad::autograd::fused::{linear, linear_relu_dropout};
use tapegrad::nn::{self, Dropout, Linear};
use tapegrad::optim::{Optimizer, Sgd};
use tapegrad::prelude::*;

const IN: usize = 784;
const HIDDEN: usize = 1024;
const CLASSES: usize = 10;
const BATCH: usize = 128;
const P: f64 = 0.5;
const LR: f64 = 0.01;

/// Matrix-product flops of one step: forward and the two products of each layer's backward,
/// except the first layer's input gradient (the input is data).
const FLOPS: f64 = 2.0 * BATCH as f64 * (3 * (IN * HIDDEN + HIDDEN * HIDDEN + HIDDEN * CLASSES) - IN * HIDDEN) as f64;

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Fused,
    Layers,
}

struct Options {
    steps: usize,
    warmup: usize,
    path: Path,
}

#[derive(Module)]
struct Mlp {
    fc1: Linear,
    drop1: Dropout,
    fc2: Linear,
    drop2: Dropout,
    fc3: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &Var) -> Result<Var> {
        let h = self.drop1.forward(&self.fc1.forward(x)?.relu())?;
        let h = self.drop2.forward(&self.fc2.forward(&h)?.relu())?;
        self.fc3.forward(&h)
    }
}

/// The same network through the fused ops, with the same mask generators as `Mlp`'s layers.
struct FusedMlp<'a> {
    model: &'a Mlp,
    masks: [Generator; 2],
}

impl FusedMlp<'_> {
    fn forward(&mut self, x: &Var) -> Result<Var> {
        let m = self.model;
        let bias = |l: &Linear| l.bias.clone().expect("the layers have a bias");
        let h = linear_relu_dropout(x, &m.fc1.weight, &bias(&m.fc1), P, &mut self.masks[0])?;
        let h = linear_relu_dropout(&h, &m.fc2.weight, &bias(&m.fc2), P, &mut self.masks[1])?;
        linear(&h, &m.fc3.weight, Some(&bias(&m.fc3)))
    }
}

fn main() {
    common::main(
        0,
        &["steps", "warmup", "path"],
        |args| {
            let path = match args.extra("path", "layers".to_string())?.as_str() {
                "fused" => Path::Fused,
                "layers" => Path::Layers,
                other => return Err(format!("--path: {other:?} is neither fused nor layers")),
            };
            let (steps, warmup) =
                if args.smoke { (2, 0) } else { (args.extra("steps", 100)?, args.extra("warmup", 10)?) };
            if steps == 0 {
                return Err("--steps must be at least 1".into());
            }
            Ok(Options { steps, warmup, path })
        },
        run,
    );
}

fn run(args: &common::Args, opts: Options) -> Result<()> {
    let mut gen = Generator::new(args.seed);
    let mask = |layer: u64| Generator::new(args.seed.wrapping_mul(31).wrapping_add(1000 + layer));
    let model = Mlp {
        fc1: Linear::new(IN, HIDDEN, &mut gen),
        drop1: Dropout::new(P)?.with_generator(mask(1)),
        fc2: Linear::new(HIDDEN, HIDDEN, &mut gen),
        drop2: Dropout::new(P)?.with_generator(mask(2)),
        fc3: Linear::new(HIDDEN, CLASSES, &mut gen),
    };
    let mut fused = FusedMlp { model: &model, masks: [mask(1), mask(2)] };
    let mut opt = Sgd::new(model.parameters(), LR);
    let x = Var::new(Tensor::<f32>::randn(&[BATCH, IN], &mut gen));
    let targets: Vec<usize> = (0..BATCH).map(|_| gen.below(CLASSES as u64) as usize).collect();

    let mut times = Vec::with_capacity(opts.steps);
    let mut phases = [0.0f64; 3];
    let mut loss_value = 0.0;
    for step in 0..opts.warmup + opts.steps {
        let start = Instant::now();
        let logits = match opts.path {
            Path::Fused => fused.forward(&x)?,
            Path::Layers => model.forward(&x)?,
        };
        let loss = nn::loss::cross_entropy(&logits, &targets)?;
        let t1 = Instant::now();
        loss.backward()?;
        let t2 = Instant::now();
        opt.step()?;
        opt.zero_grad();
        let t3 = Instant::now();
        if step >= opts.warmup {
            for (sum, (from, to)) in phases.iter_mut().zip([(start, t1), (t1, t2), (t2, t3)]) {
                *sum += (to - from).as_secs_f64() * 1e3;
            }
        }
        loss_value = loss.value().item()?;
        if step >= opts.warmup {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }

    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let path = if opts.path == Path::Fused { "fused" } else { "layers" };
    println!(
        "bench_mlp: path {path}, threads {}, {} steps after {} warm-up",
        rayon::current_num_threads(),
        opts.steps,
        opts.warmup
    );
    println!(
        "ms/step: median {median:.3}, mean {mean:.3}, min {:.3}  ({:.1} GFLOP/s at the median, {:.3} GFLOP per step)",
        times[0],
        FLOPS / median / 1e6,
        FLOPS / 1e9
    );
    let [fwd, bwd, update] = phases.map(|ms| ms / opts.steps as f64);
    println!("mean ms per phase: forward + loss {fwd:.3}, backward {bwd:.3}, SGD update + zero_grad {update:.3}");
    println!("final loss {loss_value:.6}");
    match common::peak_rss_kib() {
        Some(kib) => println!("peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: /proc/self/status has no VmHWM"),
    }
    Ok(())
}
