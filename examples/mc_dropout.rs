//! Monte Carlo dropout on the digits (Gal & Ghahramani, 2016): an MLP trained with dropout on its
//! input (0.2) and hidden layers (0.5) keeps sampling its masks at test time (`model.eval()` +
//! `model.mc_dropout(true)`), and the class probabilities of `T` passes are averaged. From the
//! `T` predictive distributions `p_t` the example separates
//!
//! - the **predictive entropy** `H[mean_t p_t]` (total uncertainty),
//! - the **expected entropy** `mean_t H[p_t]` (the aleatoric part: noise every sample sees),
//! - their difference, the **mutual information** between the prediction and the weights (the
//!   epistemic part: how much the thinned networks disagree; Houlsby et al. 2011, Gal 2016),
//!
//! and compares the MC average with the same network's deterministic pass and with the same MLP
//! trained without dropout: test accuracy, negative log-likelihood, expected calibration error
//! (15 equal-width confidence bins) with a reliability diagram (SVG), and how well each
//! uncertainty ranks the errors (AUROC).
//!
//! ```sh
//! cargo run --release --example mc_dropout                 # 784-256-256-10, T = 50
//! cargo run --release --example mc_dropout -- --samples 100 --out target/reliability.svg
//! cargo run --release --example mc_dropout -- --smoke      # a few hundred digits, one epoch, T = 5
//! ```

mod common;

use common::science::{self, Config, Table};
use common::svg::{Chart, Series};
use tapegrad::nn::data::Dataset;
use tapegrad::prelude::*;

const WIDTH: usize = 256;
const EPOCHS: usize = 20;
/// Confidence bins of the reliability diagram and the ECE (Guo et al., 2017, use 15).
const BINS: usize = 15;
/// How many of the most uncertain test digits to draw.
const SHOW: usize = 3;

/// One predictive distribution per test digit and what it measured.
struct Predictive {
    name: &'static str,
    /// `[n, classes]` class probabilities.
    probs: Vec<f32>,
    /// Mutual information per digit (zero for a deterministic pass).
    mutual_info: Vec<f64>,
}

/// The MC dropout predictive distribution of `model` over `samples` passes, and the mutual
/// information `H[mean p_t] - mean H[p_t]` of every digit.
fn monte_carlo(model: &mut impl Module, data: &Dataset, classes: usize, samples: usize) -> Result<Predictive> {
    model.eval();
    model.mc_dropout(true);
    let n = data.len();
    let (mut sum, mut expected_entropy) = (vec![0.0f32; n * classes], vec![0.0f64; n]);
    for _ in 0..samples {
        let p = science::probabilities(model, data)?;
        sum.iter_mut().zip(&p).for_each(|(s, x)| *s += x);
        expected_entropy.iter_mut().zip(p.chunks(classes)).for_each(|(h, row)| *h += science::entropy(row));
    }
    model.mc_dropout(false);
    let probs: Vec<f32> = sum.iter().map(|s| s / samples as f32).collect();
    let mutual_info = probs
        .chunks(classes)
        .zip(&expected_entropy)
        // Rounding can make the difference of two nearly equal entropies a hair negative.
        .map(|(mean, h)| (science::entropy(mean) - h / samples as f64).max(0.0))
        .collect();
    Ok(Predictive { name: "MC dropout average", probs, mutual_info })
}

/// Mean negative log-likelihood of the true classes (a probability is floored at 1e-12).
fn nll(probs: &[f32], classes: usize, labels: &[usize]) -> f64 {
    let sum: f64 = probs.chunks(classes).zip(labels).map(|(p, &y)| -(p[y] as f64).max(1e-12).ln()).sum();
    sum / labels.len() as f64
}

/// The mean of `xs` over the digits where `wrong` is `want`, as text.
fn mean_where(xs: &[f64], wrong: &[bool], want: bool) -> String {
    let picked: Vec<f64> = xs.iter().zip(wrong).filter(|(_, &w)| w == want).map(|(&x, _)| x).collect();
    if picked.is_empty() {
        "n/a".into()
    } else {
        format!("{:.3}", science::mean(&picked))
    }
}

/// A 28x28 digit as 14 lines of 28 characters: each character is the mean of two vertically
/// adjacent pixels (terminal cells are about twice as tall as wide), on a 10-step ink ramp.
fn ascii_digit(pixels: &[f32], side: usize) -> Vec<String> {
    const RAMP: &[u8] = b" .:-=+*#%@";
    (0..side / 2)
        .map(|r| {
            (0..side)
                .map(|c| {
                    let v = (pixels[2 * r * side + c] + pixels[(2 * r + 1) * side + c]) / 2.0;
                    RAMP[(v.clamp(0.0, 1.0) * (RAMP.len() - 1) as f32).round() as usize] as char
                })
                .collect()
        })
        .collect()
}

fn run(args: &common::Args, samples: usize) -> Result<()> {
    let mut metrics = science::epoch_metrics(args, "mc_dropout", "mc_dropout: training, epoch by epoch")?;
    let split = common::load_split(args)?;
    println!("data: {}: {} train, {} test", split.source, split.train.len(), split.test.len());
    let (test, labels) = (&split.test, split.test.labels());
    let classes = test.num_classes().max(split.train.num_classes());
    let width = if args.smoke { 32 } else { WIDTH };
    let plain = Config::new(width, args.epochs);
    let dropout = plain.clone().dropout(0.2, 0.5);
    println!("dropout network: {}\nplain network:   {}", dropout.describe(), plain.describe());
    println!("both from seed {} (same initial weights and batch order); T = {samples} MC samples\n", args.seed);

    let mut with = dropout.train(&split.train, test, args.seed, "dropout", &mut metrics)?;
    let without = plain.train(&split.train, test, args.seed, "plain", &mut metrics)?;
    let zeros = vec![0.0; test.len()];
    let predictives = [
        monte_carlo(&mut with.model, test, classes, samples)?,
        Predictive {
            name: "dropout net, deterministic pass",
            probs: science::probabilities(&with.model, test)?,
            mutual_info: zeros.clone(),
        },
        Predictive {
            name: "plain net (no dropout)",
            probs: science::probabilities(&without.model, test)?,
            mutual_info: zeros,
        },
    ];

    let mut table = Table::new(&[
        &format!("on {} test digits", test.len()),
        "accuracy",
        "NLL (nats)",
        &format!("ECE ({BINS} bins)"),
        "predictive entropy, right / wrong",
        "mutual information, right / wrong",
        "AUROC of errors: entropy",
        "AUROC of errors: MI",
    ]);
    let mut reliability = Chart::new("Reliability diagram", "confidence (top probability)", "accuracy (%)")
        .series(Series::new("perfect calibration", "#7f7f7f", vec![(0.0, 0.0), (100.0, 100.0)]).dashed());
    let mut counts =
        Chart::new("Predictions per confidence bin", "confidence (top probability)", "digits").y_from_zero();
    for (pred, color) in predictives.iter().zip(science::COLORS) {
        let entropy: Vec<f64> = pred.probs.chunks(classes).map(science::entropy).collect();
        let wrong: Vec<bool> = pred.probs.chunks(classes).zip(labels).map(|(p, &y)| science::argmax(p) != y).collect();
        let bins = science::reliability(&pred.probs, classes, labels, BINS);
        let auroc = |scores: &[f64]| science::auroc(scores, &wrong).map_or("n/a".into(), |a| format!("{a:.3}"));
        let is_mc = pred.name.starts_with("MC");
        table.row(vec![
            pred.name.to_string(),
            science::pct(science::accuracy(&pred.probs, classes, labels)),
            format!("{:.4}", nll(&pred.probs, classes, labels)),
            format!("{:.2}%", 100.0 * science::expected_calibration_error(&bins)),
            format!("{} / {}", mean_where(&entropy, &wrong, false), mean_where(&entropy, &wrong, true)),
            if is_mc {
                format!(
                    "{} / {}",
                    mean_where(&pred.mutual_info, &wrong, false),
                    mean_where(&pred.mutual_info, &wrong, true)
                )
            } else {
                "0 (one network)".into()
            },
            auroc(&entropy),
            if is_mc { auroc(&pred.mutual_info) } else { "n/a".into() },
        ]);
        let filled = bins.iter().filter(|b| b.count > 0);
        reliability = reliability.series(Series::new(
            pred.name,
            color,
            filled.clone().map(|b| (100.0 * b.confidence, 100.0 * b.accuracy)).collect(),
        ));
        counts = counts.series(Series::new(
            pred.name,
            color,
            bins.iter().map(|b| (100.0 * (b.lo + b.hi) / 2.0, b.count as f64)).collect(),
        ));
    }
    println!("{table}");
    println!(
        "entropy and mutual information in nats (max ln {classes} = {:.3}); AUROC: the probability that a wrong \
         answer is more uncertain than a right one (0.5 = chance)\n",
        (classes as f64).ln()
    );

    // The digits the thinned networks disagree on most (highest mutual information).
    let mc = &predictives[0];
    let mut order: Vec<usize> = (0..test.len()).collect();
    order.sort_by(|&a, &b| mc.mutual_info[b].total_cmp(&mc.mutual_info[a]).then(a.cmp(&b)));
    let (inputs, images) = (test.images().shape()[1], test.images().to_vec());
    let side = (inputs as f64).sqrt().round() as usize;
    println!("the {SHOW} test digits with the highest mutual information:");
    for &i in order.iter().take(SHOW) {
        let p = &mc.probs[i * classes..(i + 1) * classes];
        let pred = science::argmax(p);
        println!(
            "test #{i}: true {}, predicted {pred} (p {:.2}), entropy {:.2}, mutual information {:.2}",
            labels[i],
            p[pred],
            science::entropy(p),
            mc.mutual_info[i]
        );
        if side * side == inputs {
            for line in ascii_digit(&images[i * inputs..(i + 1) * inputs], side) {
                println!("|{line}|");
            }
        }
    }
    let title = format!("MC dropout (T = {samples}) against deterministic passes on {}", science::dataset_name(args));
    science::write_plot(args, "mc_dropout", &title, &[reliability, counts])
}

fn main() {
    let samples = |args: &common::Args| {
        let samples = args.extra("samples", if args.smoke { 5 } else { 50 })?;
        if samples == 0 {
            return Err("--samples: need at least 1 Monte Carlo sample".to_string());
        }
        Ok(samples)
    };
    common::main(EPOCHS, &["samples"], samples, run);
}
