//! Weight scaling against Monte Carlo model averaging (Srivastava et al., 2014, section 7.5 and
//! Figure 11): a dropout network's single deterministic pass (with inverted dropout, the plain
//! network: the classic rule's weight scaling is folded into training) against the average of
//! the class probabilities of `T` sampled thinned networks, as `T` grows from 1 to 100. The
//! sampling is repeated with fresh masks to show its spread.
//!
//! ```sh
//! cargo run --release --example dropout_mc_average                # T up to 100, 5 repetitions
//! cargo run --release --example dropout_mc_average -- --repeats 10 --samples 200
//! cargo run --release --example dropout_mc_average -- --smoke     # T up to 5, 1 epoch, 512 digits
//! ```

mod common;

use common::science::{self, Config, Table};
use common::svg::{Chart, Series};
use tapegrad::prelude::*;

const WIDTH: usize = 256;
const EPOCHS: usize = 20;

struct Options {
    samples: usize,
    repeats: usize,
    width: usize,
}

fn options(args: &common::Args) -> Result<Options, String> {
    let samples = args.extra("samples", if args.smoke { 5 } else { 100 })?;
    let repeats = args.extra("repeats", if args.smoke { 2 } else { 5 })?;
    let width = args.extra("width", if args.smoke { 32 } else { WIDTH })?;
    if samples == 0 || repeats == 0 || width == 0 {
        return Err("--samples, --repeats and --width must be at least 1".into());
    }
    Ok(Options { samples, repeats, width })
}

/// The sample counts reported: 1, 2, 3, 5, 7 and so on, roughly evenly on a log scale, and `max`.
fn checkpoints(max: usize) -> Vec<usize> {
    let mut ts: Vec<usize> = [1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000]
        .into_iter()
        .filter(|&t| t < max)
        .collect();
    ts.push(max);
    ts
}

fn run(args: &common::Args, opts: Options) -> Result<()> {
    let mut metrics =
        science::epoch_metrics(args, "dropout_mc_average", "dropout_mc_average: training, epoch by epoch")?;
    let split = common::load_split(args)?;
    println!("data: {}: {} train, {} test", split.source, split.train.len(), split.test.len());
    let config = Config::new(opts.width, args.epochs).dropout(0.2, 0.5);
    println!("{}; seed {}", config.describe(), args.seed);
    let mut trained = config.train(&split.train, &split.test, args.seed, "training", &mut metrics)?;
    let (test, labels) = (&split.test, split.test.labels());
    let classes = test.num_classes().max(split.train.num_classes());
    let deterministic = 1.0 - science::accuracy(&science::probabilities(&trained.model, test)?, classes, labels);
    println!("deterministic pass (eval mode): test error {}", science::pct(deterministic));

    // errors[r][i]: the error of repetition r's average of the first ts[i] samples.
    let ts = checkpoints(opts.samples);
    let model = &mut trained.model;
    model.eval();
    model.mc_dropout(true);
    let mut errors = vec![Vec::with_capacity(ts.len()); opts.repeats];
    for (r, row) in errors.iter_mut().enumerate() {
        // The dropout layers' generators keep running, so each repetition draws fresh masks.
        let mut sum = vec![0.0f32; test.len() * classes];
        for t in 1..=opts.samples {
            let sample = science::probabilities(model, test)?;
            sum.iter_mut().zip(&sample).for_each(|(s, p)| *s += p);
            if ts.contains(&t) {
                // The argmax of the sum is the argmax of the mean.
                row.push(1.0 - science::accuracy(&sum, classes, labels));
            }
        }
        println!("repetition {}: error with T = {}: {}", r + 1, opts.samples, science::pct(row[row.len() - 1]));
    }
    model.mc_dropout(false);

    let mut table = Table::new(&[
        "T (samples)",
        &format!("MC average: test error, mean ± sd over {} repetitions (%)", opts.repeats),
        "MC minus deterministic (points)",
    ]);
    let (mut mean_line, mut lo_line, mut hi_line) = (vec![], vec![], vec![]);
    for (i, &t) in ts.iter().enumerate() {
        let at: Vec<f64> = errors.iter().map(|row| row[i]).collect();
        let (m, sd) = (science::mean(&at), science::sample_sd(&at));
        table.row(vec![t.to_string(), science::mean_sd_points(&at), format!("{:+.2}", 100.0 * (m - deterministic))]);
        mean_line.push((t as f64, 100.0 * m));
        if sd.is_finite() {
            lo_line.push((t as f64, 100.0 * (m - sd)));
            hi_line.push((t as f64, 100.0 * (m + sd)));
        }
    }
    println!("\ndeterministic pass (weight scaling): {} test error\n\n{table}", science::pct(deterministic));

    let flat = vec![(1.0, 100.0 * deterministic), (opts.samples as f64, 100.0 * deterministic)];
    let chart = Chart::new("Test error against the number of MC samples", "samples averaged, T", "test error (%)")
        .series(Series::new("MC average, mean", science::COLORS[1], mean_line))
        .series(Series::new("mean - sd", science::COLORS[1], lo_line).dashed())
        .series(Series::new("mean + sd", science::COLORS[1], hi_line).dashed())
        .series(Series::new("deterministic pass", science::COLORS[0], flat));
    // One panel is 540 pixels wide: a short title.
    let title =
        format!("MC averaging vs weight scaling, {}, 784-{w}-{w}-10", science::dataset_name(args), w = opts.width);
    science::write_plot(args, "dropout_mc_average", &title, &[chart])
}

fn main() {
    common::main(EPOCHS, &["samples", "repeats", "width"], options, run);
}
