//! Choosing the dropout rate by k-fold cross-validation: for each `p` in 0, 0.1, ..., 0.7 an MLP
//! with dropout `p` after each hidden layer is trained on k - 1 folds of the training split and
//! scored on the held-out fold (`nn::data::kfold` + `Dataset::subset`); the rate with the highest
//! mean validation accuracy is retrained on the whole training split and scored once on the test
//! split, which the selection never saw.
//!
//! ```sh
//! cargo run --release --example dropout_cv                # 5 folds x 8 rates on the shipped digits
//! cargo run --release --example dropout_cv -- --folds 3   # fewer folds
//! cargo run --release --example dropout_cv -- --smoke     # 2 folds, 2 rates, 1 epoch, a few hundred digits
//! ```
//!
//! The final fit's epochs (train loss, test loss and accuracy, time) go to
//! `target/dropout_cv.csv`, their curves to `target/dropout_cv.svg` (`--out PATH.svg` puts both
//! elsewhere); the selection runs are not recorded.
//!
//! Every (rate, fold) run starts from the same initial weights and the same batch order for that
//! fold, so the rates are compared on equal terms (common random numbers): the differences
//! between rows come from the dropout rate, not from a luckier initialisation.

mod common;

use std::time::Instant;

use tapegrad::nn::data::{kfold, Dataset};
use tapegrad::nn::{Dropout, Linear, ReLU, Sequential};
use tapegrad::optim::Sgd;
use tapegrad::prelude::*;

use common::metrics::{Epoch, Metrics};

/// Hidden layer widths: 784-256-256-10 keeps the whole grid x folds within a few minutes on two
/// cores.
const HIDDEN: [usize; 2] = [256, 256];
const BATCH: usize = 64;
const LR: f64 = 0.01;
const MOMENTUM: f64 = 0.9;

/// `784 -> 256 -> ReLU -> Dropout(p) -> 256 -> ReLU -> Dropout(p) -> 10`.
fn mlp(p: f64, inputs: usize, classes: usize, gen: &mut Generator) -> Result<Sequential> {
    let mut model = Sequential::new();
    let mut width = inputs;
    for &h in &HIDDEN {
        model.push(Linear::new(width, h, gen));
        model.push(ReLU::new());
        model.push(Dropout::new(p)?);
        width = h;
    }
    model.push(Linear::new(width, classes, gen));
    Ok(model)
}

/// Trains a fresh model with dropout `p` on `train` for `epochs` epochs and returns it. The
/// initial weights, the batch order and the dropout masks all come from `seed`. With `monitor`,
/// each epoch is scored on its dataset and recorded in its metrics (the final fit's curves; the
/// selection never sees them).
fn fit(
    p: f64,
    train: &Dataset,
    classes: usize,
    epochs: usize,
    seed: u64,
    label: &str,
    mut monitor: Option<(&Dataset, &mut Metrics)>,
) -> Result<Sequential> {
    let mut gen = Generator::new(seed);
    let mut model = mlp(p, train.images().shape()[1], classes, &mut gen)?;
    manual_seed(seed);
    let mut opt = Sgd::new(model.parameters(), LR).momentum(MOMENTUM);
    for epoch in 1..=epochs {
        let start = Instant::now();
        let bar = common::epoch_bar(&format!("{label} e{epoch}"));
        let train_loss = common::train_epoch(&mut model, &mut opt, train, BATCH, &mut gen, &bar)?;
        bar.finish_and_clear();
        if let Some((test, metrics)) = monitor.as_mut() {
            let seconds = common::seconds(start);
            let (test_loss, test_acc) = common::evaluate(&mut model, test, 500)?;
            let row = Epoch {
                epoch,
                lr: Some(LR),
                train_loss: Some(train_loss),
                test_loss: Some(test_loss),
                test_acc: Some(test_acc),
                seconds: Some(seconds),
                ..Epoch::default()
            };
            metrics.record(&format!("p = {p:.1}"), row)?;
        }
    }
    model.eval();
    Ok(model)
}

/// Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value).
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

fn run(args: &common::Args, folds_k: usize) -> Result<()> {
    let total = Instant::now();
    let split = common::load_split(args)?;
    let folds = kfold(split.train.len(), folds_k, args.seed)?;
    let rates: Vec<f64> = if args.smoke { vec![0.0, 0.5] } else { (0..=7).map(|i| i as f64 / 10.0).collect() };
    let classes = split.train.num_classes().max(split.test.num_classes());
    let inputs = split.train.images().shape()[1];

    println!("data: {}", split.source);
    println!(
        "model (p = the rate under test):\n{}",
        mlp(0.5, inputs, classes, &mut Generator::new(args.seed))?.to_string().replace("p=0.5", "p")
    );
    println!(
        "training: SGD lr {LR} momentum {MOMENTUM}, batch {BATCH}, {} epoch(s) per run; seed {}",
        args.epochs, args.seed
    );
    let fold_sizes: Vec<String> = folds.iter().map(|(_, v)| v.len().to_string()).collect();
    println!(
        "cross-validation: {folds_k} folds of the {} training digits (validation sizes {}), rates {:?}\n",
        split.train.len(),
        fold_sizes.join(", "),
        rates
    );

    // The folds' datasets are built once and shared by every rate.
    let mut fold_data = Vec::with_capacity(folds.len());
    for (train_idx, val_idx) in &folds {
        fold_data.push((split.train.subset(train_idx)?, split.train.subset(val_idx)?));
    }

    let mut results: Vec<(f64, f64, f64)> = Vec::with_capacity(rates.len()); // (p, mean, std)
    for &p in &rates {
        let start = Instant::now();
        let mut accs = Vec::with_capacity(folds_k);
        for (i, (train, val)) in fold_data.iter().enumerate() {
            let label = format!("p={p:.1} k{}/{folds_k}", i + 1);
            // Seeded by the fold only: every rate sees the same start for a given fold.
            let seed = args.seed.wrapping_add(1 + i as u64);
            let mut model = fit(p, train, classes, args.epochs, seed, &label, None)?;
            accs.push(common::evaluate(&mut model, val, 500)?.1);
        }
        let (mean, std) = mean_std(&accs);
        let per_fold: Vec<String> = accs.iter().map(|a| format!("{:.2}", 100.0 * a)).collect();
        println!("p={p:.1}: fold accuracies {} -> mean {:.2}%", per_fold.join(" "), 100.0 * mean);
        println!("time p={p:.1}: {:.1} s for {folds_k} folds", common::seconds(start));
        results.push((p, mean, std));
    }

    // Highest mean validation accuracy; an exact tie goes to the smaller p (the grid is
    // ascending and only a strictly better mean replaces the incumbent).
    let mut best = results[0];
    for &r in &results[1..] {
        if r.1 > best.1 {
            best = r;
        }
    }
    println!("\nvalidation accuracy over {folds_k} folds (mean and sample std, in %):");
    println!("{:>6}  {:>7}  {:>6}", "p", "mean", "std");
    for &(p, mean, std) in &results {
        let mark = if p == best.0 { "  <- chosen" } else { "" };
        println!("{p:>6.1}  {:>7.2}  {:>6.2}{mark}", 100.0 * mean, 100.0 * std);
    }
    println!("chosen rate: p = {:.1} (highest mean validation accuracy; an exact tie goes to the smaller p)\n", best.0);

    let start = Instant::now();
    let title = format!("MLP 784-256-256-10 retrained with the chosen dropout p = {:.1}: SGD lr {LR}", best.0);
    let mut metrics = Metrics::create(&args.out_path("dropout_cv"), title, &[])?;
    let label = format!("final p={:.1}", best.0);
    let monitor = Some((&split.test, &mut metrics));
    let mut model = fit(best.0, &split.train, classes, args.epochs, args.seed, &label, monitor)?;
    let (train_loss, train_acc) = common::evaluate(&mut model, &split.train, 500)?;
    let (test_loss, test_acc) = common::evaluate(&mut model, &split.test, 500)?;
    println!(
        "retrained with p = {:.1} on all {} training digits: train loss {train_loss:.4} (accuracy {:.2}%), \
         test loss {test_loss:.4}, test accuracy {:.2}% on the {} held-out digits",
        best.0,
        split.train.len(),
        100.0 * train_acc,
        100.0 * test_acc,
        split.test.len()
    );
    println!("time final fit: {:.1} s", common::seconds(start));
    println!("metrics of the final fit: {}, plot: {}", metrics.csv_path().display(), metrics.svg_path().display());
    println!("time total: {:.1} s", common::seconds(total));
    Ok(())
}

fn main() {
    common::main(20, &["folds"], |args| args.extra("folds", if args.smoke { 2 } else { 5 }), run);
}
