//! The effect of the dropout rate (Srivastava et al., 2014, section 7.3 and Figure 9): train and
//! test error of an MLP against the keep probability `q = 1 - p` of its hidden units, once with a
//! fixed width `n` and once with the width scaled as `n = nq / q` (so that the expected number of
//! units kept, `n · q`, stays the same). The input is not dropped.
//!
//! ```sh
//! cargo run --release --example dropout_rate                  # q = 0.2 ... 1.0 on the shipped digits
//! cargo run --release --example dropout_rate -- --seeds 3     # mean over 3 seeds
//! cargo run --release --example dropout_rate -- --smoke       # 2 rates, 1 epoch, 512 digits
//! ```
//!
//! Errors are measured in eval mode after the last epoch; training error is on the whole training
//! set. With one seed each test error has a standard error of about 0.4 points on 2,000 digits.

mod common;

use common::science::{self, Config, Table};
use common::svg::{Chart, Series};
use tapegrad::prelude::*;

/// The fixed width, and `n · q` of the scaled networks.
const WIDTH: usize = 256;
const KEPT: usize = 128;
const EPOCHS: usize = 15;

struct Options {
    seeds: u64,
    width: usize,
    kept: usize,
}

fn options(args: &common::Args) -> Result<Options, String> {
    let seeds = args.extra("seeds", 1)?;
    let width = args.extra("width", if args.smoke { 32 } else { WIDTH })?;
    let kept = args.extra("kept", if args.smoke { 16 } else { KEPT })?;
    if seeds == 0 || width == 0 || kept == 0 {
        return Err("--seeds, --width and --kept must be at least 1".into());
    }
    Ok(Options { seeds, width, kept })
}

/// Mean train and test error over the seeds, for hidden width `width` and keep probability `q`.
fn errors(
    args: &common::Args,
    split: &common::Split,
    width: usize,
    q: f64,
    seeds: u64,
    metrics: &mut common::metrics::Metrics,
) -> Result<(f64, f64, f64)> {
    let config = Config::new(width, args.epochs).dropout(0.0, 1.0 - q);
    let (mut train, mut test, mut seconds) = (vec![], vec![], 0.0);
    for seed in args.seed..args.seed + seeds {
        let r = config.train(&split.train, &split.test, seed, &format!("q={q:.1} n={width} s{seed}"), metrics)?;
        train.push(1.0 - r.train_acc);
        test.push(1.0 - r.eval_acc);
        seconds += r.seconds;
    }
    Ok((science::mean(&train), science::mean(&test), seconds))
}

fn run(args: &common::Args, opts: Options) -> Result<()> {
    let mut metrics = science::epoch_metrics(args, "dropout_rate", "dropout_rate: every run, epoch by epoch")?;
    let split = common::load_split(args)?;
    println!("data: {}: {} train, {} test", split.source, split.train.len(), split.test.len());
    let keep: Vec<f64> = if args.smoke { vec![0.5, 1.0] } else { (2..=10).map(|i| i as f64 / 10.0).collect() };
    println!(
        "{}",
        Config::new(opts.width, args.epochs).dropout(0.0, 0.5).describe().replace("0.5 hidden", "1 - q hidden")
    );
    println!(
        "keep probabilities q = {keep:?}; fixed n = {}, scaled n = {} / q; mean over {} seed(s) from {}\n",
        opts.width, opts.kept, opts.seeds, args.seed
    );

    let mut table = Table::new(&[
        "q (keep)",
        "p (drop)",
        "fixed n: train err",
        "fixed n: test err",
        "scaled n",
        "scaled: train err",
        "scaled: test err",
        "time (s)",
    ]);
    let (mut fixed, mut scaled) = (vec![], vec![]);
    for &q in &keep {
        let (tr_f, te_f, s_f) = errors(args, &split, opts.width, q, opts.seeds, &mut metrics)?;
        let width = (opts.kept as f64 / q).round() as usize;
        let (tr_s, te_s, s_s) = errors(args, &split, width, q, opts.seeds, &mut metrics)?;
        println!("q = {q:.1}: fixed test error {}, scaled (n = {width}) {}", science::pct(te_f), science::pct(te_s));
        table.row(vec![
            format!("{q:.1}"),
            format!("{:.1}", 1.0 - q),
            science::pct(tr_f),
            science::pct(te_f),
            width.to_string(),
            science::pct(tr_s),
            science::pct(te_s),
            format!("{s_f:.0} + {s_s:.0}"),
        ]);
        fixed.push((q, tr_f, te_f));
        scaled.push((q, tr_s, te_s));
    }
    println!("\n{table}");

    let panel = |title: String, points: &[(f64, f64, f64)]| {
        let line = |f: fn(&(f64, f64, f64)) -> f64| points.iter().map(|p| (p.0, 100.0 * f(p))).collect();
        Chart::new(title, "probability of keeping a hidden unit, q", "error (%)")
            .y_from_zero()
            .series(Series::new("test", science::COLORS[1], line(|p| p.2)))
            .series(Series::new("train", science::COLORS[0], line(|p| p.1)).dashed())
    };
    let charts = [
        panel(format!("fixed width n = {}", opts.width), &fixed),
        panel(format!("scaled width, n · q = {}", opts.kept), &scaled),
    ];
    let title = format!("Dropout rate on {}: 2 hidden layers, {} epochs", science::dataset_name(args), args.epochs);
    science::write_plot(args, "dropout_rate", &title, &charts)
}

fn main() {
    common::main(EPOCHS, &["seeds", "width", "kept"], options, run);
}
