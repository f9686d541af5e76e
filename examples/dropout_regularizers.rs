//! Dropout with max-norm against L2 (Srivastava et al., 2014, section 5.1 and Table 9): the same
//! MLP trained with L2 weight decay alone, the max-norm constraint alone, dropout (0.2 input,
//! 0.5 hidden) with L2, and dropout with max-norm, over several seeds. Each seed gives every
//! configuration the same initial weights and batch order, so the configurations are compared
//! by their per-seed (paired) differences against dropout + max-norm, with 95% t intervals.
//!
//! ```sh
//! cargo run --release --example dropout_regularizers                  # 3 seeds on the shipped digits
//! cargo run --release --example dropout_regularizers -- --seeds 5 --max-norm 4 --weight-decay 1e-4
//! cargo run --release --example dropout_regularizers -- --smoke       # 2 seeds, 1 epoch, 512 digits
//! ```
//!
//! Max-norm (`optim::max_norm_`) rescales each unit's incoming weight vector to norm at most `c`
//! after every step; the example also reports how many hidden units end at that bound, since a
//! constraint that never binds changes nothing. L2 is `Sgd::weight_decay` (coupled, on every
//! parameter, as `torch.optim.SGD`).

mod common;

use common::science::{self, Config, Outcome, Table};
use common::svg::{Chart, Series};
use tapegrad::prelude::*;

const WIDTH: usize = 256;
const EPOCHS: usize = 20;
const MAX_NORM: f64 = 3.0;
const WEIGHT_DECAY: f64 = 5e-4;

struct Options {
    seeds: u64,
    width: usize,
    max_norm: f64,
    weight_decay: f64,
}

fn options(args: &common::Args) -> Result<Options, String> {
    let seeds = args.extra("seeds", if args.smoke { 2 } else { 3 })?;
    let width = args.extra("width", if args.smoke { 32 } else { WIDTH })?;
    let max_norm: f64 = args.extra("max-norm", MAX_NORM)?;
    let weight_decay: f64 = args.extra("weight-decay", WEIGHT_DECAY)?;
    if seeds < 2 || width == 0 {
        return Err("--seeds must be at least 2 (a paired interval needs two pairs), --width at least 1".into());
    }
    if !(max_norm.is_finite() && max_norm > 0.0 && weight_decay.is_finite() && weight_decay > 0.0) {
        return Err("--max-norm and --weight-decay must be positive numbers".into());
    }
    Ok(Options { seeds, width, max_norm, weight_decay })
}

/// The fraction of hidden units (rows of every weight matrix but the classifier's) whose incoming
/// weight vector has a norm of at least 99.9% of `c`.
fn at_bound(model: &impl Module, c: f64) -> f64 {
    let weights: Vec<Tensor> = model.parameters().iter().map(|p| p.value()).filter(|w| w.ndim() == 2).collect();
    let (mut at, mut rows) = (0usize, 0usize);
    for w in &weights[..weights.len().saturating_sub(1)] {
        let cols = w.shape()[1];
        for row in w.to_vec().chunks(cols) {
            rows += 1;
            at += usize::from(row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() >= 0.999 * c);
        }
    }
    at as f64 / rows.max(1) as f64
}

fn run(args: &common::Args, opts: Options) -> Result<()> {
    let mut metrics =
        science::epoch_metrics(args, "dropout_regularizers", "dropout_regularizers: every run, epoch by epoch")?;
    let split = common::load_split(args)?;
    println!("data: {}: {} train, {} test", split.source, split.train.len(), split.test.len());
    let base = Config::new(opts.width, args.epochs);
    let l2 = Config { weight_decay: opts.weight_decay, ..base.clone() };
    let max_norm = Config { max_norm: Some(opts.max_norm), ..base.clone() };
    let configs = [
        ("L2", l2.clone()),
        ("max-norm", max_norm.clone()),
        ("dropout + L2", l2.dropout(0.2, 0.5)),
        ("dropout + max-norm", max_norm.dropout(0.2, 0.5)),
    ];
    for (name, c) in &configs {
        println!("{name:<19} {}", c.describe());
    }
    println!(
        "seeds {}..{}, each the same initial weights and batch order for every configuration\n",
        args.seed,
        args.seed + opts.seeds - 1
    );

    let mut runs: Vec<Vec<Outcome>> = configs.iter().map(|_| vec![]).collect();
    for seed in args.seed..args.seed + opts.seeds {
        for ((name, config), runs) in configs.iter().zip(&mut runs) {
            let r = config.train(&split.train, &split.test, seed, &format!("s{seed} {name}"), &mut metrics)?;
            println!("seed {seed} {name:<19} test error {} ({:.0} s)", science::pct(1.0 - r.eval_acc), r.seconds);
            runs.push(r);
        }
    }

    let error = |rs: &[Outcome]| rs.iter().map(|r| 1.0 - r.eval_acc).collect::<Vec<_>>();
    let reference = error(&runs[runs.len() - 1]);
    let mut table = Table::new(&[
        "regulariser",
        "test error, mean ± sd (%)",
        "train - test gap (points)",
        "minus dropout + max-norm, 95% t interval (points)",
        &format!("hidden units at the max-norm bound c = {}", opts.max_norm),
    ]);
    for ((name, config), rs) in configs.iter().zip(&runs) {
        let gaps: Vec<f64> = rs.iter().map(Outcome::gap).collect();
        let bound: Vec<f64> = rs.iter().map(|r| at_bound(&r.model, opts.max_norm)).collect();
        table.row(vec![
            name.to_string(),
            science::mean_sd_points(&error(rs)),
            science::mean_sd_points(&gaps),
            if *name == "dropout + max-norm" {
                "(reference)".into()
            } else {
                science::interval_points(&science::paired_differences(&error(rs), &reference)?)
            },
            if config.max_norm.is_some() { science::pct(science::mean(&bound)) } else { "(not constrained)".into() },
        ]);
    }
    println!("\n{table}");
    println!(
        "For reference, Srivastava et al. (2014), Table 9, full MNIST, 784-1024-1024-2048-10: L2 1.62%, \
         max-norm 1.35%, dropout + L2 1.25%, dropout + max-norm 1.05% test error (not comparable with this run)."
    );

    let mut chart = Chart::new("Test accuracy, mean over seeds", "epoch", "accuracy (%)");
    for (((name, _), rs), color) in configs.iter().zip(&runs).zip(science::COLORS) {
        chart = chart.series(Series::new(*name, color, science::mean_curve(rs)));
    }
    // One panel is 540 pixels wide: a short title.
    let title = format!(
        "Max-norm vs L2, {}, 784-{w}-{w}-10, {} seeds",
        science::dataset_name(args),
        opts.seeds,
        w = opts.width
    );
    science::write_plot(args, "dropout_regularizers", &title, &[chart])
}

fn main() {
    common::main(EPOCHS, &["seeds", "width", "max-norm", "weight-decay"], options, run);
}
