//! A small convolutional network with both kinds of dropout on the shipped digits:
//! `Dropout2d` zeroes whole feature maps after the second convolution (neighbouring pixels of
//! a map are correlated, so dropping single pixels would barely regularise), and `Dropout`
//! zeroes single units before the classifier, as in the dropout paper.
//!
//! ```sh
//! cargo run --release --example cnn_mnist                # the default run (8000 / 2000 digits)
//! cargo run --release --example cnn_mnist -- --smoke     # a few hundred digits, one epoch
//! cargo run --release --example cnn_mnist -- --threads 1 # same numbers as on 2 threads
//! ```
//!
//! Each epoch's learning rate, losses, test accuracy and time go to `target/cnn_mnist.csv` and
//! their curves to `target/cnn_mnist.svg` (`--out PATH.svg` puts both elsewhere).
//!
//! Own flags: `--lr` (Adam's learning rate), `--batch`, `--width` (channels of the first
//! convolution; the second has twice as many).

mod common;

use common::metrics::Metrics;
use common::models::Cnn;
use tapegrad::optim::Adam;
use tapegrad::prelude::*;

/// The example's own flags.
struct Options {
    lr: f64,
    batch: usize,
    width: usize,
}

impl Options {
    fn parse(args: &common::Args) -> Result<Options, String> {
        let options = Options {
            lr: args.extra("lr", 2e-3)?,
            batch: args.extra("batch", 64)?,
            width: args.extra("width", if args.smoke { 4 } else { 16 })?,
        };
        if options.batch == 0 || options.width == 0 || options.lr.is_nan() || options.lr <= 0.0 {
            return Err("--lr, --batch and --width must be positive".to_string());
        }
        Ok(options)
    }
}

fn run(args: &common::Args, opts: &Options) -> Result<()> {
    let (lr, batch, width) = (opts.lr, opts.batch, opts.width);
    let split = common::load_split(args)?;
    println!("data: {}", split.source);
    println!("threads: {}", rayon::current_num_threads());
    manual_seed(args.seed);
    let mut gen = Generator::new(args.seed);
    let mut model = Cnn::new(width, &mut gen)?;
    println!("{model}");
    println!("parameters: {}", model.parameters().iter().map(|p| p.value().numel()).sum::<usize>());

    // The probe shuffles with its own generator and its dropout masks come from the default
    // one: reseed that afterwards, so the run draws the same masks whether or not it was timed.
    let per_batch = common::time_batches(&mut model, &split.train, batch, &mut Generator::new(u64::MAX))?;
    manual_seed(args.seed);
    let batches = split.train.len().div_ceil(batch);
    println!(
        "timing: {:.1} ms per batch of {batch} → about {:.1} s per epoch; {} epoch(s), Adam lr {lr} cosine-annealed to 0",
        1e3 * per_batch,
        per_batch * batches as f64,
        args.epochs
    );

    let mut opt = Adam::new(model.parameters(), lr);
    let title = format!("CNN (width {width}) with Dropout2d and Dropout: Adam lr {lr}, cosine");
    let mut metrics = Metrics::create(&args.out_path("cnn_mnist"), title, &[])?;
    common::fit_cosine_recorded(&mut model, &mut opt, lr, &split, batch, args.epochs, &mut gen, Some(&mut metrics))?;
    Ok(())
}

fn main() {
    common::main(15, &["lr", "batch", "width"], Options::parse, |args, opts| run(args, &opts));
}
