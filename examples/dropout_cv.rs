//! Choosing the dropout rate by k-fold cross-validation: for each `p` in 0, 0.1, ..., 0.7 an MLP
//! with dropout `p` after each hidden layer is trained on k - 1 folds of the training split and
//! scored on the held-out fold (`nn::data::kfold` + `Dataset::subset`). Every rate reports its
//! training and validation accuracy (so under- and overfitting are measured, not assumed) and
//! its per-fold paired difference against the best rate, with a 95% t interval. The rate with
//! the highest mean validation accuracy is retrained on the whole training split and scored once
//! on the test split, which the selection never saw.
//!
//! ```sh
//! cargo run --release --example dropout_cv                # 5 folds x 8 rates on the shipped digits
//! cargo run --release --example dropout_cv -- --folds 3   # fewer folds
//! cargo run --release --example dropout_cv -- --smoke     # 2 folds, 2 rates, 1 epoch, a few hundred digits
//! ```
//!
//! Every (rate, fold) run starts from the same initial weights and the same batch order for that
//! fold, so the rates are compared on equal terms (common random numbers): a per-fold difference
//! between two rates comes from the rate, not from a luckier initialisation, and its spread over
//! the folds is what the interval measures.

mod common;

use std::time::Instant;

use common::science::{self, Config, Table};
use common::svg::{Chart, Series};
use tapegrad::nn::data::kfold;
use tapegrad::prelude::*;

/// Hidden width: 784-256-256-10 keeps the whole grid x folds within a few minutes on one core.
const WIDTH: usize = 256;
const EPOCHS: usize = 10;

/// What one rate measured: per fold, the accuracy on the k - 1 training folds and on the
/// held-out fold.
struct Rate {
    p: f64,
    train: Vec<f64>,
    val: Vec<f64>,
}

fn run(args: &common::Args, folds_k: usize) -> Result<()> {
    let mut metrics = science::epoch_metrics(args, "dropout_cv", "dropout_cv: every run, epoch by epoch")?;
    let total = Instant::now();
    let split = common::load_split(args)?;
    let folds = kfold(split.train.len(), folds_k, args.seed)?;
    let rates: Vec<f64> = if args.smoke { vec![0.0, 0.5] } else { (0..=7).map(|i| i as f64 / 10.0).collect() };
    let width = if args.smoke { 32 } else { WIDTH };
    let config = |p: f64| Config::new(width, args.epochs).dropout(0.0, p);

    println!("data: {}", split.source);
    println!("model and training: {}", config(0.5).describe().replace("0.5 hidden", "p hidden"));
    let fold_sizes: Vec<String> = folds.iter().map(|(_, v)| v.len().to_string()).collect();
    println!(
        "cross-validation: {folds_k} folds of the {} training digits (validation sizes {}), rates {:?}, seed {}\n",
        split.train.len(),
        fold_sizes.join(", "),
        rates,
        args.seed
    );

    // The folds' datasets are built once and shared by every rate.
    let mut fold_data = Vec::with_capacity(folds.len());
    for (train_idx, val_idx) in &folds {
        fold_data.push((split.train.subset(train_idx)?, split.train.subset(val_idx)?));
    }

    let mut results: Vec<Rate> = Vec::with_capacity(rates.len());
    for &p in &rates {
        let start = Instant::now();
        let mut rate = Rate { p, train: vec![], val: vec![] };
        for (i, (train, val)) in fold_data.iter().enumerate() {
            // Seeded by the fold only: every rate sees the same start for a given fold.
            let seed = args.seed.wrapping_add(1 + i as u64);
            let r = config(p).train(train, val, seed, &format!("p={p:.1} k{}/{folds_k}", i + 1), &mut metrics)?;
            rate.train.push(r.train_acc);
            rate.val.push(r.eval_acc);
        }
        let per_fold: Vec<String> = rate.val.iter().map(|a| format!("{:.2}", 100.0 * a)).collect();
        println!(
            "p={p:.1}: fold validation accuracies {} -> mean {} ({:.1} s)",
            per_fold.join(" "),
            science::pct(science::mean(&rate.val)),
            common::seconds(start)
        );
        results.push(rate);
    }

    // Highest mean validation accuracy; an exact tie goes to the smaller p (the grid is
    // ascending and only a strictly better mean replaces the incumbent).
    let mut best = 0;
    for (i, r) in results.iter().enumerate() {
        if science::mean(&r.val) > science::mean(&results[best].val) {
            best = i;
        }
    }
    let mut table = Table::new(&[
        "p",
        "train acc (%)",
        "validation acc, mean ± sd (%)",
        "train - validation (points)",
        &format!("minus p = {:.1}, per-fold 95% t interval (points)", results[best].p),
    ]);
    for (i, r) in results.iter().enumerate() {
        let gaps = science::paired_differences(&r.train, &r.val)?;
        table.row(vec![
            if i == best { format!("**{:.1}**", r.p) } else { format!("{:.1}", r.p) },
            format!("{:.2}", 100.0 * science::mean(&r.train)),
            science::mean_sd_points(&r.val),
            format!("{:.2}", 100.0 * science::mean(&gaps)),
            if i == best {
                "(chosen)".into()
            } else {
                science::interval_points(&science::paired_differences(&r.val, &results[best].val)?)
            },
        ]);
    }
    println!("\nover {folds_k} folds (train: the k - 1 training folds; both in eval mode):\n\n{table}");
    let indistinguishable: Vec<String> = results
        .iter()
        .enumerate()
        .filter(|&(i, r)| {
            i != best
                && science::paired_differences(&r.val, &results[best].val)
                    .ok()
                    .and_then(|d| science::t_interval95(&d))
                    .is_some_and(|iv| !iv.excludes_zero())
        })
        .map(|(_, r)| format!("{:.1}", r.p))
        .collect();
    println!(
        "chosen rate: p = {:.1} (highest mean validation accuracy; an exact tie goes to the smaller p); \
         rates whose interval against it contains 0: {}\n",
        results[best].p,
        if indistinguishable.is_empty() { "none".to_string() } else { indistinguishable.join(", ") }
    );

    let start = Instant::now();
    let p = results[best].p;
    let r = config(p).train(&split.train, &split.test, args.seed, &format!("final p={p:.1}"), &mut metrics)?;
    println!(
        "retrained with p = {p:.1} on all {} training digits: train accuracy {}, test accuracy {} on the {} \
         held-out digits ({:.1} s)",
        split.train.len(),
        science::pct(r.train_acc),
        science::pct(r.eval_acc),
        split.test.len(),
        common::seconds(start)
    );
    println!("time total: {:.1} s", common::seconds(total));

    let line = |f: fn(&Rate) -> &[f64]| -> Vec<(f64, f64)> {
        results.iter().map(|r| (r.p, 100.0 * science::mean(f(r)))).collect()
    };
    let chart = Chart::new(format!("Mean over {folds_k} folds"), "dropout rate p (hidden layers)", "accuracy (%)")
        .series(Series::new("validation", science::COLORS[1], line(|r| r.val.as_slice())))
        .series(Series::new("train (k - 1 folds)", science::COLORS[0], line(|r| r.train.as_slice())).dashed());
    // One panel is 540 pixels wide: a short title.
    let title = format!("{folds_k}-fold CV on {}, MLP 784-{width}-{width}-10", science::dataset_name(args));
    science::write_plot(args, "dropout_cv", &title, &[chart])
}

fn main() {
    common::main(
        EPOCHS,
        &["folds"],
        |args| {
            let k: usize = args.extra("folds", if args.smoke { 2 } else { 5 })?;
            if k < 2 {
                return Err("--folds must be at least 2".to_string());
            }
            Ok(k)
        },
        run,
    );
}
