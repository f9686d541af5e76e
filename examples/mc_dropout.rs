//! Monte Carlo dropout on the digits (Gal & Ghahramani, 2016): an MLP trained with dropout keeps
//! sampling its masks at test time (`model.eval()` + `model.mc_dropout(true)`), and
//! `nn::mc_predict` averages the class probabilities of T passes. The spread of those passes is
//! an uncertainty estimate: the example shows that the digits the model gets wrong carry a higher
//! predictive entropy (mean entropy of right vs wrong answers, and the AUROC of entropy as an
//! error detector), that the MC average is at least as accurate as the deterministic eval pass,
//! and draws the most uncertain test digits.
//!
//! ```sh
//! cargo run --release --example mc_dropout                 # 784-512-512-10, p = 0.5, T = 30
//! cargo run --release --example mc_dropout -- --samples 100
//! cargo run --release --example mc_dropout -- --smoke      # a few hundred digits, one epoch, T = 5
//! ```
//!
//! The training epochs' losses, test accuracy and time go to `target/mc_dropout.csv`, their
//! curves to `target/mc_dropout.svg` (`--out PATH.svg` puts both elsewhere).

mod common;

use std::time::Instant;

use tapegrad::nn::data::{Batches, Dataset};
use tapegrad::nn::{self, Dropout, Linear};
use tapegrad::optim::Sgd;
use tapegrad::prelude::*;

use common::metrics::{Epoch, Metrics};

const HIDDEN: usize = 512;
const P: f64 = 0.5;
const BATCH: usize = 64;
const LR: f64 = 0.01;
const MOMENTUM: f64 = 0.9;
const EVAL_BATCH: usize = 500;
/// How many of the most uncertain test digits to draw.
const SHOW: usize = 6;

/// `784 -> 512 -> ReLU -> Dropout(0.5) -> 512 -> ReLU -> Dropout(0.5) -> 10` logits.
#[derive(Module)]
struct Mlp {
    fc1: Linear,
    drop1: Dropout,
    fc2: Linear,
    drop2: Dropout,
    fc3: Linear,
}

impl Mlp {
    fn new(inputs: usize, classes: usize, gen: &mut Generator) -> Result<Mlp> {
        Ok(Mlp {
            fc1: Linear::new(inputs, HIDDEN, gen),
            drop1: Dropout::new(P)?,
            fc2: Linear::new(HIDDEN, HIDDEN, gen),
            drop2: Dropout::new(P)?,
            fc3: Linear::new(HIDDEN, classes, gen),
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Var) -> Result<Var> {
        let h = self.drop1.forward(&self.fc1.forward(x)?.relu())?;
        let h = self.drop2.forward(&self.fc2.forward(&h)?.relu())?;
        self.fc3.forward(&h)
    }
}

/// The trained network followed by a softmax, so that `mc_predict` averages class
/// probabilities (averaging logits would not give the predictive distribution).
#[derive(Module)]
struct Probabilities {
    net: Mlp,
}

impl Module for Probabilities {
    fn forward(&self, x: &Var) -> Result<Var> {
        self.net.forward(x)?.softmax(1)
    }
}

/// Area under the ROC curve of `scores` for telling the positives (`true`) from the negatives:
/// the probability that a random positive scores higher than a random negative, a tie counting
/// one half. Computed by ranking (the Mann-Whitney U statistic): the scores are sorted, tied
/// scores share their average rank (1-based), and
/// `AUROC = (sum of the positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`.
/// `None` when either class is empty (the curve is undefined). O(n log n).
///
/// Checked at startup by [`check_auroc`]: scores `[0.1, 0.4, 0.35, 0.8]` with positives
/// `[F, F, T, T]` give 0.75; with a tie, `[1, 2, 2, 3]` give 0.875; all-equal scores give 0.5.
fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut pos_rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start + 1 ..= end share their mean.
        let rank = (start + 1 + end) as f64 / 2.0;
        pos_rank_sum += rank * order[start..end].iter().filter(|&&i| positive[i]).count() as f64;
        start = end;
    }
    let (n_pos, n_neg) = (n_pos as f64, n_neg as f64);
    Some((pos_rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

/// Runs [`auroc`] on toy cases whose answers are known by counting pairs by hand.
fn check_auroc() -> std::result::Result<(), String> {
    let (f, t) = (false, true);
    let cases: [(&[f64], &[bool], Option<f64>); 5] = [
        // scikit-learn's roc_auc_score example: 3 of the 4 (pos, neg) pairs are ordered.
        (&[0.1, 0.4, 0.35, 0.8], &[f, f, t, t], Some(0.75)),
        // 2 and 2 tie: pairs (2,1) 1, (2,2) 1/2, (3,1) 1, (3,2) 1 -> 3.5 / 4.
        (&[1.0, 2.0, 2.0, 3.0], &[f, f, t, t], Some(0.875)),
        (&[5.0, 5.0, 5.0, 5.0], &[f, t, f, t], Some(0.5)),
        (&[3.0, 2.0, 1.0], &[t, f, f], Some(1.0)),
        (&[1.0, 2.0], &[t, t], None),
    ];
    for (scores, positive, want) in cases {
        let got = auroc(scores, positive);
        let ok = match (got, want) {
            (Some(g), Some(w)) => (g - w).abs() < 1e-12,
            (None, None) => true,
            _ => false,
        };
        if !ok {
            return Err(format!("auroc({scores:?}, {positive:?}) = {got:?}, expected {want:?}"));
        }
    }
    Ok(())
}

/// Entropy in nats of a probability vector (`0 log 0 = 0`).
fn entropy(probs: &[f32]) -> f64 {
    probs.iter().filter(|&&p| p > 0.0).map(|&p| -(p as f64) * (p as f64).ln()).sum()
}

/// Index of the largest value (the first on a tie, like `Tensor::argmax`).
fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// `model`'s outputs on every sample of `data`, row-major `[n, classes]`, without recording.
fn predict<M: Module>(model: &M, data: &Dataset) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for chunk in Batches::new(data, EVAL_BATCH, None)? {
        let (x, _) = chunk?;
        out.extend(no_grad(|| model.forward(&Var::new(x)))?.value().to_vec());
    }
    Ok(out)
}

/// The MC-dropout predictive mean and variance of the class probabilities, each `[n, classes]`.
fn mc_predict_all<M: Module>(model: &M, data: &Dataset, samples: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let (mut mean, mut var) = (Vec::new(), Vec::new());
    for chunk in Batches::new(data, EVAL_BATCH, None)? {
        let (x, _) = chunk?;
        let (m, v) = nn::mc_predict(model, &Var::new(x), samples)?;
        mean.extend(m.to_vec());
        var.extend(v.to_vec());
    }
    Ok((mean, var))
}

/// Accuracy of the row-wise argmax of `probs` (`[n, classes]`) against `labels`.
fn accuracy(probs: &[f32], classes: usize, labels: &[usize]) -> f64 {
    let correct = probs.chunks(classes).zip(labels).filter(|(p, &y)| argmax(p) == y).count();
    correct as f64 / labels.len() as f64
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
                    let level = (v.clamp(0.0, 1.0) * (RAMP.len() - 1) as f32).round() as usize;
                    RAMP[level] as char
                })
                .collect()
        })
        .collect()
}

fn mean_where(xs: &[f64], mask: &[bool], want: bool) -> (f64, usize) {
    let picked: Vec<f64> = xs.iter().zip(mask).filter(|(_, &m)| m == want).map(|(&x, _)| x).collect();
    let n = picked.len();
    (if n == 0 { f64::NAN } else { picked.iter().sum::<f64>() / n as f64 }, n)
}

fn fmt_auroc(a: Option<f64>) -> String {
    a.map_or_else(|| "n/a (no errors or no correct answers)".into(), |a| format!("{a:.4}"))
}

fn run(args: &common::Args, samples: usize) -> Result<()> {
    let total = Instant::now();
    println!("AUROC self-check on 5 toy cases (ties by average rank): ok");
    let split = common::load_split(args)?;
    println!("data: {}", split.source);
    let classes = split.train.num_classes().max(split.test.num_classes());
    let inputs = split.train.images().shape()[1];
    let side = (inputs as f64).sqrt().round() as usize;

    manual_seed(args.seed);
    let mut gen = Generator::new(args.seed);
    let mut model = Mlp::new(inputs, classes, &mut gen)?;
    println!("{model}");
    let mut opt = Sgd::new(model.parameters(), LR).momentum(MOMENTUM);
    println!("training: SGD lr {LR} momentum {MOMENTUM}, batch {BATCH}, {} epoch(s), seed {}", args.epochs, args.seed);
    let title = format!("MLP {inputs}-512-512-{classes}, dropout {P}: SGD lr {LR}, momentum {MOMENTUM}");
    let mut metrics = Metrics::create(&args.out_path("mc_dropout"), title, &[])?;
    for epoch in 1..=args.epochs {
        let start = Instant::now();
        let bar = common::epoch_bar(&format!("epoch {epoch}"));
        let train_loss = common::train_epoch(&mut model, &mut opt, &split.train, BATCH, &mut gen, &bar)?;
        bar.finish_and_clear();
        let took = common::seconds(start);
        let (test_loss, test_acc) = common::evaluate(&mut model, &split.test, EVAL_BATCH)?;
        metrics.record(
            "",
            Epoch {
                epoch,
                lr: Some(LR),
                train_loss: Some(train_loss),
                test_loss: Some(test_loss),
                test_acc: Some(test_acc),
                seconds: Some(took),
                ..Epoch::default()
            },
        )?;
        println!(
            "epoch {epoch:>2}: train loss {train_loss:.4}, test loss {test_loss:.4}, test accuracy {:.2}%",
            100.0 * test_acc
        );
        println!("time epoch {epoch}: {:.1} s", common::seconds(start));
    }

    println!("metrics: {}, plot: {}", metrics.csv_path().display(), metrics.svg_path().display());

    // Deterministic pass: eval mode, dropout off (the usual test-time network).
    let mut probs_model = Probabilities { net: model };
    probs_model.eval();
    probs_model.mc_dropout(false);
    let det = predict(&probs_model, &split.test)?;

    // Monte Carlo dropout: eval mode, but the dropout layers keep sampling.
    let start = Instant::now();
    probs_model.mc_dropout(true);
    manual_seed(args.seed.wrapping_add(1));
    let single = predict(&probs_model, &split.test)?;
    let (mean, var) = mc_predict_all(&probs_model, &split.test, samples)?;
    probs_model.mc_dropout(false);
    let mc_time = common::seconds(start);

    let labels = split.test.labels();
    let n = labels.len();
    let (acc_det, acc_single, acc_mc) =
        (accuracy(&det, classes, labels), accuracy(&single, classes, labels), accuracy(&mean, classes, labels));
    println!("\ntest accuracy on {n} held-out digits:");
    println!("  deterministic eval pass (MC dropout off): {:.2}%", 100.0 * acc_det);
    println!("  one MC dropout sample:                    {:.2}%", 100.0 * acc_single);
    println!("  MC dropout average of T = {samples:<3} samples:   {:.2}%", 100.0 * acc_mc);
    println!(
        "  MC average {} the deterministic pass ({:+.2} points)",
        if acc_mc >= acc_det { "is at least as accurate as" } else { "is LESS accurate than" },
        100.0 * (acc_mc - acc_det)
    );
    println!("time MC dropout ({} forward passes of the test set): {mc_time:.1} s", samples + 1);

    // Uncertainty of each MC prediction: predictive entropy of the mean probabilities, and the
    // total variance of the probabilities across the samples.
    let mc_entropy: Vec<f64> = mean.chunks(classes).map(entropy).collect();
    let mc_var: Vec<f64> = var.chunks(classes).map(|v| v.iter().map(|&x| x as f64).sum()).collect();
    let mc_wrong: Vec<bool> = mean.chunks(classes).zip(labels).map(|(p, &y)| argmax(p) != y).collect();
    let det_entropy: Vec<f64> = det.chunks(classes).map(entropy).collect();
    let det_wrong: Vec<bool> = det.chunks(classes).zip(labels).map(|(p, &y)| argmax(p) != y).collect();

    let (h_right, n_right) = mean_where(&mc_entropy, &mc_wrong, false);
    let (h_wrong, n_wrong) = mean_where(&mc_entropy, &mc_wrong, true);
    println!("\npredictive entropy of the MC average (nats; max ln {classes} = {:.3}):", (classes as f64).ln());
    println!("  correct predictions: mean {h_right:.4} over {n_right} digits");
    println!("  wrong predictions:   mean {h_wrong:.4} over {n_wrong} digits");
    if n_right > 0 && n_wrong > 0 {
        println!("  wrong / correct:     {:.1}x", h_wrong / h_right);
    }
    println!("AUROC for spotting the errors (1 = every error more uncertain than every correct answer, 0.5 = chance):");
    println!("  MC predictive entropy:              {}", fmt_auroc(auroc(&mc_entropy, &mc_wrong)));
    println!("  MC total variance of probabilities: {}", fmt_auroc(auroc(&mc_var, &mc_wrong)));
    println!("  deterministic softmax entropy:      {}", fmt_auroc(auroc(&det_entropy, &det_wrong)));

    // The most uncertain test digits (highest MC entropy; a tie goes to the earlier digit).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| mc_entropy[b].total_cmp(&mc_entropy[a]).then(a.cmp(&b)));
    let images = split.test.images().to_vec();
    let show = SHOW.min(n);
    println!("\nthe {show} most uncertain test digits (MC average of T = {samples}):");
    for group in order[..show].chunks(3) {
        let drawings: Vec<Vec<String>> =
            group.iter().map(|&i| ascii_digit(&images[i * inputs..(i + 1) * inputs], side)).collect();
        let cell = |text: String| format!("{text:<width$}", width = side + 4);
        let (mut top, mut bottom) = (String::new(), String::new());
        for &i in group {
            let p = &mean[i * classes..(i + 1) * classes];
            let pred = argmax(p);
            top += &cell(format!(" test #{i}: true {}, pred {}", labels[i], pred));
            bottom += &cell(format!(" p(pred) {:.2}, entropy {:.2}", p[pred], mc_entropy[i]));
        }
        println!("{}\n{}", top.trim_end(), bottom.trim_end());
        for row in 0..side / 2 {
            let line: String = drawings.iter().map(|d| format!("|{}|  ", d[row])).collect();
            println!("{}", line.trim_end());
        }
        println!();
    }
    println!("time total: {:.1} s", common::seconds(total));
    Ok(())
}

fn main() {
    if let Err(msg) = check_auroc() {
        eprintln!("error: AUROC self-check failed: {msg}");
        std::process::exit(1);
    }
    let samples = |args: &common::Args| {
        let samples = args.extra("samples", if args.smoke { 5 } else { 30 })?;
        if samples == 0 {
            return Err("--samples: need at least 1 Monte Carlo sample".to_string());
        }
        Ok(samples)
    };
    common::main(20, &["samples"], samples, run);
}
