//! The memory that `autograd::checkpoint` saves on the `transformer` example's model: the same
//! row transformer (a linear embedding of each 28-pixel row, a learned positional embedding,
//! `layers` encoder layers with dropout 0.1 everywhere, a mean over rows and a linear head),
//! trained for a few AdamW steps on the shipped digits, with every encoder layer checkpointed or
//! not. It prints the bytes the tape holds for backward at the end of the forward pass, the time
//! per step, the process's peak resident set (`VmHWM`), and a checksum of the final parameters,
//! which is the same with and without checkpointing (the dropout masks are replayed exactly).
//!
//! ```sh
//! cargo run --release --example checkpoint_memory -- --checkpoint false
//! cargo run --release --example checkpoint_memory -- --checkpoint true
//! /usr/bin/time -v target/release/examples/checkpoint_memory --checkpoint true   # peak RSS
//! cargo run --release --example checkpoint_memory -- --smoke
//! ```
//!
//! Own flags: `--checkpoint true|false` (default true), `--steps`, `--batch`, `--d-model`,
//! `--heads`, `--layers`.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::models::ROWS;
use tapegrad::autograd::checkpoint;
use tapegrad::nn::data::Batches;
use tapegrad::nn::{loss, Linear, TransformerEncoderLayer};
use tapegrad::optim::{AdamW, Optimizer};
use tapegrad::prelude::*;

/// The example's own flags.
struct Options {
    checkpoint: bool,
    steps: usize,
    batch: usize,
    d_model: usize,
    heads: usize,
    layers: usize,
}

impl Options {
    fn parse(args: &common::Args) -> Result<Options, String> {
        let options = Options {
            checkpoint: args.extra("checkpoint", true)?,
            steps: args.extra("steps", if args.smoke { 2 } else { 5 })?,
            batch: args.extra("batch", if args.smoke { 32 } else { 256 })?,
            d_model: args.extra("d-model", if args.smoke { 16 } else { 128 })?,
            heads: args.extra("heads", 4)?,
            layers: args.extra("layers", if args.smoke { 2 } else { 4 })?,
        };
        if options.batch == 0 || options.d_model == 0 || options.heads == 0 || options.steps == 0 {
            return Err("--steps, --batch, --d-model and --heads must be positive".to_string());
        }
        if !options.d_model.is_multiple_of(options.heads) {
            return Err(format!("--heads {} must divide --d-model {}", options.heads, options.d_model));
        }
        Ok(options)
    }
}

/// `common::models::RowTransformer` with its encoder layers behind `Arc`s, so that a
/// checkpointed segment (kept by the tape until backward) can own a handle to its layer.
struct Model {
    embed: Linear,
    pos: Var,
    layers: Vec<Arc<TransformerEncoderLayer>>,
    head: Linear,
    checkpoint: bool,
}

impl Model {
    fn new(opts: &Options, gen: &mut Generator) -> Result<Model> {
        let layers = (0..opts.layers)
            .map(|_| TransformerEncoderLayer::new(opts.d_model, opts.heads, 2 * opts.d_model, 0.1, gen).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Model {
            embed: Linear::new(ROWS, opts.d_model, gen),
            pos: Var::parameter(Tensor::randn(&[ROWS, opts.d_model], gen).mul_scalar(0.02)),
            layers,
            head: Linear::new(opts.d_model, 10, gen),
            checkpoint: opts.checkpoint,
        })
    }

    fn parameters(&self) -> Vec<Var> {
        let mut params = self.embed.parameters();
        params.push(self.pos.clone());
        for layer in &self.layers {
            params.extend(layer.parameters());
        }
        params.extend(self.head.parameters());
        params
    }

    fn forward(&self, x: &Var) -> Result<Var> {
        let rows = x.reshape(&[x.shape()[0], ROWS, ROWS])?;
        let mut h = self.embed.forward(&rows)?.add(&self.pos)?;
        for layer in &self.layers {
            h = if self.checkpoint {
                let layer = Arc::clone(layer);
                checkpoint(move |xs: &[Var]| layer.forward(&xs[0]), &[h])?
            } else {
                layer.forward(&h)?
            };
        }
        self.head.forward(&h.mean(&[1], false)?)
    }
}

fn run(args: &common::Args, opts: &Options) -> Result<()> {
    let split = common::load_split(args)?;
    println!("data: {}", split.source);
    println!("threads: {}", rayon::current_num_threads());
    manual_seed(args.seed);
    let mut gen = Generator::new(args.seed);
    let model = Model::new(opts, &mut gen)?;
    let params = model.parameters();
    println!(
        "model: {} encoder layers, d_model {}, {} heads, batch {}, {} parameters, checkpoint {}",
        opts.layers,
        opts.d_model,
        opts.heads,
        opts.batch,
        params.iter().map(|p| p.value().numel()).sum::<usize>(),
        opts.checkpoint
    );
    let rss_before = common::peak_rss_kib();
    let mut opt = AdamW::new(params.clone(), 1e-3);
    let mut saved = 0;
    let mut steps = 0;
    let start = Instant::now();
    for batch in Batches::new(&split.train, opts.batch, Some(&mut gen))?.take(opts.steps) {
        let (x, y) = batch?;
        let loss = loss::cross_entropy(&model.forward(&Var::new(x))?, &y)?;
        // What the tape holds for backward now, at the end of the forward pass.
        saved = loss.tape().iter().map(|e| e.saved_bytes).sum::<usize>();
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
        steps += 1;
    }
    let per_step = common::seconds(start) / steps.max(1) as f64;
    let checksum: f64 = params.iter().map(|p| p.value().to_vec().iter().map(|&v| f64::from(v)).sum::<f64>()).sum();
    println!("saved for backward at the end of the forward pass: {:.1} MiB", saved as f64 / (1 << 20) as f64);
    println!("time: {:.1} ms per step over {steps} steps", 1e3 * per_step);
    if let (Some(before), Some(after)) = (rss_before, common::peak_rss_kib()) {
        println!("peak RSS: {:.1} MiB (before training {:.1} MiB)", after as f64 / 1024.0, before as f64 / 1024.0);
    }
    println!("parameter checksum: {checksum:.9e}");
    Ok(())
}

fn main() {
    common::main(1, &["checkpoint", "steps", "batch", "d-model", "heads", "layers"], Options::parse, |args, opts| {
        run(args, &opts)
    });
}
