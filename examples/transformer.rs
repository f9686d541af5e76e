//! A small Transformer encoder reading each digit as a sequence of 28 rows: every row of 28
//! pixels is projected to `d_model`, a learned positional embedding is added, `layers`
//! `TransformerEncoderLayer`s (self-attention with dropout on the attention weights, the
//! residual branches and the feed-forward block) mix the rows, and the mean over the sequence
//! goes to a linear classifier.
//!
//! ```sh
//! cargo run --release --example transformer                # the default run (8000 / 2000 digits)
//! cargo run --release --example transformer -- --smoke     # a few hundred digits, one epoch
//! cargo run --release --example transformer -- --threads 1 # same numbers as on 2 threads
//! ```
//!
//! Each epoch's learning rate, losses, test accuracy and time go to `target/transformer.csv` and
//! their curves to `target/transformer.svg` (`--out PATH.svg` puts both elsewhere).
//!
//! Own flags: `--lr` (AdamW's learning rate), `--batch`, `--d-model`, `--heads`, `--layers`,
//! `--dropout`.

mod common;

use common::metrics::Metrics;
use common::models::RowTransformer;
use tapegrad::optim::AdamW;
use tapegrad::prelude::*;

/// The example's own flags.
struct Options {
    lr: f64,
    batch: usize,
    d_model: usize,
    heads: usize,
    layers: usize,
    dropout: f64,
}

impl Options {
    fn parse(args: &common::Args) -> Result<Options, String> {
        let options = Options {
            lr: args.extra("lr", 2e-3)?,
            batch: args.extra("batch", 64)?,
            d_model: args.extra("d-model", if args.smoke { 16 } else { 64 })?,
            heads: args.extra("heads", 4)?,
            layers: args.extra("layers", if args.smoke { 1 } else { 2 })?,
            dropout: args.extra("dropout", 0.1)?,
        };
        if options.batch == 0 || options.d_model == 0 || options.heads == 0 || options.lr.is_nan() || options.lr <= 0.0
        {
            return Err("--lr, --batch, --d-model and --heads must be positive".to_string());
        }
        if !options.d_model.is_multiple_of(options.heads) {
            return Err(format!("--heads {} must divide --d-model {}", options.heads, options.d_model));
        }
        Ok(options)
    }
}

fn run(args: &common::Args, opts: &Options) -> Result<()> {
    let split = common::load_split(args)?;
    println!("data: {}", split.source);
    println!("threads: {}", rayon::current_num_threads());
    // The dropout layers draw from the thread's default generator.
    manual_seed(args.seed);
    let mut gen = Generator::new(args.seed);
    let mut model = RowTransformer::new(opts.d_model, opts.heads, opts.layers, opts.dropout, &mut gen)?;
    println!("{model}");
    println!("parameters: {}", model.parameters().iter().map(|p| p.value().numel()).sum::<usize>());

    // The probe's dropout masks come from the default generator: reseed it afterwards so the run
    // draws the same masks whether or not it was timed.
    let per_batch = common::time_batches(&mut model, &split.train, opts.batch, &mut Generator::new(u64::MAX))?;
    manual_seed(args.seed);
    let batches = split.train.len().div_ceil(opts.batch);
    println!(
        "timing: {:.1} ms per batch of {} → about {:.1} s per epoch; {} epoch(s), AdamW lr {} cosine-annealed to 0",
        1e3 * per_batch,
        opts.batch,
        per_batch * batches as f64,
        args.epochs,
        opts.lr
    );

    let mut opt = AdamW::new(model.parameters(), opts.lr);
    let title = format!(
        "Row transformer (d_model {}, {} heads, {} layers, dropout {}): AdamW lr {}, cosine",
        opts.d_model, opts.heads, opts.layers, opts.dropout, opts.lr
    );
    let mut metrics = Metrics::create(&args.out_path("transformer"), title, &[])?;
    let (lr, batch, epochs) = (opts.lr, opts.batch, args.epochs);
    common::fit_cosine_recorded(&mut model, &mut opt, lr, &split, batch, epochs, &mut gen, Some(&mut metrics))?;
    Ok(())
}

fn main() {
    common::main(10, &["lr", "batch", "d-model", "heads", "layers", "dropout"], Options::parse, |args, opts| {
        run(args, &opts)
    });
}
