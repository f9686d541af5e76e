//! The dropout paper's headline result, measured with the statistics it needs: an MLP trained
//! with and without dropout (0.2 on the input, 0.5 after each hidden layer; Srivastava et al.,
//! 2014) over several seeds. Each seed gives one pair of runs with the same initial weights and
//! batch order; the table reports mean and sample sd of the test accuracy and of the train-test
//! accuracy gap, and the mean paired difference with its 95% t interval.
//!
//! ```sh
//! cargo run --release --example dropout_headline                 # 5 seeds on the shipped digits
//! cargo run --release --example dropout_headline -- --seeds 10 --width 1024
//! cargo run --release --example dropout_headline -- --data DIR   # full MNIST / Fashion-MNIST
//! cargo run --release --example dropout_headline -- --smoke      # 2 seeds, 1 epoch, 512 digits
//! ```
//!
//! The shipped digits are 8,000 training and 2,000 test images: a test accuracy there has a
//! standard error of about 0.4 points, and the error rates are not comparable with the paper's
//! full-MNIST ones (60,000 / 10,000, millions of updates), which the example quotes only for
//! reference.

mod common;

use common::science::{self, Config, Outcome, Table};
use common::svg::{Chart, Series};
use tapegrad::prelude::*;

const WIDTH: usize = 512;
const EPOCHS: usize = 20;
const SEEDS: u64 = 5;

struct Options {
    seeds: u64,
    width: usize,
}

fn options(args: &common::Args) -> Result<Options, String> {
    let seeds = args.extra("seeds", if args.smoke { 2 } else { SEEDS })?;
    let width = args.extra("width", if args.smoke { 64 } else { WIDTH })?;
    if seeds < 2 || width == 0 {
        return Err("--seeds must be at least 2 (a paired interval needs two pairs), --width at least 1".into());
    }
    Ok(Options { seeds, width })
}

fn run(args: &common::Args, opts: Options) -> Result<()> {
    let mut metrics = science::epoch_metrics(args, "dropout_headline", "dropout_headline: every run, epoch by epoch")?;
    let split = common::load_split(args)?;
    println!("data: {}: {} train, {} test", split.source, split.train.len(), split.test.len());
    let plain = Config::new(opts.width, args.epochs);
    let dropout = plain.clone().dropout(0.2, 0.5);
    println!("without dropout: {}\nwith dropout:    {}", plain.describe(), dropout.describe());
    println!(
        "seeds {}..{}: each seed gives both runs the same initial weights and batch order\n",
        args.seed,
        args.seed + opts.seeds - 1
    );

    let (mut without, mut with) = (Vec::new(), Vec::new());
    let mut per_seed = Table::new(&[
        "seed",
        "test acc, no dropout",
        "test acc, dropout",
        "difference (points)",
        "gap, no dropout",
        "gap, dropout",
        "time (s)",
    ]);
    for seed in args.seed..args.seed + opts.seeds {
        let a = plain.train(&split.train, &split.test, seed, &format!("seed {seed} plain"), &mut metrics)?;
        let b = dropout.train(&split.train, &split.test, seed, &format!("seed {seed} dropout"), &mut metrics)?;
        per_seed.row(vec![
            seed.to_string(),
            science::pct(a.eval_acc),
            science::pct(b.eval_acc),
            format!("{:+.2}", 100.0 * (b.eval_acc - a.eval_acc)),
            format!("{:.2}", 100.0 * a.gap()),
            format!("{:.2}", 100.0 * b.gap()),
            format!("{:.1} + {:.1}", a.seconds, b.seconds),
        ]);
        println!("seed {seed}: test {} -> {}", science::pct(a.eval_acc), science::pct(b.eval_acc));
        without.push(a);
        with.push(b);
    }
    println!("\n{per_seed}");

    let acc = |runs: &[Outcome]| runs.iter().map(|r| r.eval_acc).collect::<Vec<_>>();
    let gap = |runs: &[Outcome]| runs.iter().map(Outcome::gap).collect::<Vec<_>>();
    let mut summary = Table::new(&[
        &format!("over {} seeds (points)", opts.seeds),
        "no dropout, mean ± sd",
        "dropout, mean ± sd",
        "paired difference, 95% t interval",
    ]);
    for (name, a, b) in
        [("test accuracy", acc(&without), acc(&with)), ("train - test accuracy gap", gap(&without), gap(&with))]
    {
        summary.row(vec![
            name.to_string(),
            science::mean_sd_points(&a),
            science::mean_sd_points(&b),
            science::interval_points(&science::paired_differences(&b, &a)?),
        ]);
    }
    println!("{summary}");
    println!(
        "Not comparable with the paper: these are {} training / {} test digits and {} epochs. For reference, \
         Srivastava et al. (2014) report on full MNIST (60,000 / 10,000), Table 2: standard net 1.60% error \
         (Simard et al. 2003), dropout ReLU 3 x 1024 1.25%, dropout + max-norm ReLU 3 x 1024 1.06%, \
         2 x 8192 0.95%; Table 9 (784-1024-1024-2048-10): L2 1.62%, dropout + L2 1.25%, dropout + max-norm 1.05%.",
        split.train.len(),
        split.test.len(),
        args.epochs
    );

    let final_acc = |runs: &[Outcome]| -> Vec<(f64, f64)> {
        runs.iter().enumerate().map(|(i, r)| ((args.seed + i as u64) as f64, 100.0 * r.eval_acc)).collect()
    };
    let curves = Chart::new("Test accuracy, mean over seeds", "epoch", "accuracy (%)")
        .series(Series::new("no dropout", science::COLORS[0], science::mean_curve(&without)))
        .series(Series::new("dropout 0.2 / 0.5", science::COLORS[1], science::mean_curve(&with)));
    let seeds = Chart::new("Final test accuracy per seed (paired)", "seed", "accuracy (%)")
        .series(Series::new("no dropout", science::COLORS[0], final_acc(&without)))
        .series(Series::new("dropout 0.2 / 0.5", science::COLORS[1], final_acc(&with)));
    let title = format!(
        "MLP 784-{w}-{w}-10 on {}: with and without dropout over {} seeds",
        science::dataset_name(args),
        opts.seeds,
        w = opts.width
    );
    science::write_plot(args, "dropout_headline", &title, &[curves, seeds])
}

fn main() {
    common::main(EPOCHS, &["seeds", "width"], options, run);
}
