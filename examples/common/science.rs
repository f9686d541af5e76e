//! What the dropout reproductions share (`dropout_headline`, `dropout_rate`, `dropout_mc_average`,
//! `dropout_regularizers`, `mc_dropout`, `dropout_cv`): statistics (mean, sample standard
//! deviation, paired differences, Student's t interval), calibration (reliability bins and the
//! expected calibration error), training one MLP configuration with seeded weights, batch order
//! and masks, and the markdown results table the examples print.
//!
//! Every comparison in those examples is paired: two configurations trained with the same seed
//! start from the same weights (the dropout layers draw from their own generators, never from the
//! weights' one) and see the same batches, so a per-seed difference measures the configuration,
//! and its t interval is narrower than the two unpaired spreads suggest.

use std::fmt;
use std::time::Instant;

use tapegrad::nn::data::{Batches, Dataset};
use tapegrad::nn::{Dropout, Linear, Module, ReLU, Sequential};
use tapegrad::optim::{max_norm_, CosineLr, LrScheduler, Sgd};
use tapegrad::prelude::*;

use super::metrics::{Epoch, Metrics};

// ─── Statistics ───────────────────────────────────────────────────────────────────────────────

/// Arithmetic mean (NaN for no values).
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation, `n - 1` in the denominator (NaN for fewer than two values).
pub fn sample_sd(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// `a[i] - b[i]` for paired measurements (the same seed or fold); `Err` if the lengths differ.
pub fn paired_differences(a: &[f64], b: &[f64]) -> Result<Vec<f64>> {
    if a.len() != b.len() {
        return Err(Error::arg("paired_differences", format!("{} values against {}", a.len(), b.len())));
    }
    Ok(a.iter().zip(b).map(|(x, y)| x - y).collect())
}

/// A mean with a two-sided confidence interval.
#[derive(Clone, Copy, Debug)]
pub struct Interval {
    /// The sample mean.
    pub mean: f64,
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    /// Whether the interval excludes 0 (the difference is significant at its level).
    pub fn excludes_zero(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }
}

/// The 95% Student's t interval for the mean of `xs`: `mean ± t(0.975, n - 1) · sd / √n`.
/// `None` for fewer than two values (no spread to estimate).
pub fn t_interval95(xs: &[f64]) -> Option<Interval> {
    if xs.len() < 2 {
        return None;
    }
    let (m, n) = (mean(xs), xs.len() as f64);
    let half = t_quantile(0.975, n - 1.0) * sample_sd(xs) / n.sqrt();
    Some(Interval { mean: m, lo: m - half, hi: m + half })
}

/// The `prob` quantile of Student's t distribution with `df` degrees of freedom, by bisection
/// on [`t_cdf`] (to about 1e-12).
pub fn t_quantile(prob: f64, df: f64) -> f64 {
    if prob < 0.5 {
        return -t_quantile(1.0 - prob, df);
    }
    let mut hi = 1.0;
    while t_cdf(hi, df) < prob && hi < 1e12 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < prob {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Student's t cumulative distribution: `1 - I_{df / (df + t²)}(df / 2, 1 / 2) / 2` for `t >= 0`.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * beta_inc(0.5 * df, 0.5, df / (df + t * t));
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The regularised incomplete beta function `I_x(a, b)`, by its continued fraction (modified
/// Lentz), using the symmetry `I_x(a, b) = 1 - I_{1-x}(b, a)` where the fraction converges
/// slowly.
fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - beta_inc(b, a, 1.0 - x);
    }
    const TINY: f64 = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut f = d;
    for m in 1..500 {
        let m = m as f64;
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = 1.0 + numerator / c;
            c = if c.abs() < TINY { TINY } else { c };
            f *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-15 {
            break;
        }
    }
    ln_front.exp() * f / a
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, nine terms: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(π x).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = C[0] + (1..9).map(|i| C[i] / (x + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// Area under the ROC curve of `scores` for telling the positives (`true`) from the negatives:
/// the probability that a random positive scores higher than a random negative, a tie counting
/// one half, computed by ranks (the Mann-Whitney U statistic, tied scores sharing their mean
/// rank). `None` when either class is empty.
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut pos_rank_sum, mut start) = (0.0, 0);
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

// ─── Predictions and calibration ──────────────────────────────────────────────────────────────

/// Entropy in nats of a probability vector (`0 ln 0 = 0`).
pub fn entropy(probs: &[f32]) -> f64 {
    probs.iter().filter(|&&p| p > 0.0).map(|&p| -(p as f64) * (p as f64).ln()).sum()
}

/// Index of the largest value (the first on a tie, like `Tensor::argmax`).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Accuracy of the row-wise argmax of `probs` (`[n, classes]`, row-major) against `labels`.
pub fn accuracy(probs: &[f32], classes: usize, labels: &[usize]) -> f64 {
    let correct = probs.chunks(classes).zip(labels).filter(|(p, &y)| argmax(p) == y).count();
    correct as f64 / labels.len() as f64
}

/// The softmax probabilities of `model` on every sample of `data`, row-major `[n, classes]`,
/// without recording, in whatever mode the model is (eval: the deterministic network; eval with
/// `mc_dropout(true)`: one Monte Carlo sample).
pub fn probabilities<M: Module>(model: &M, data: &Dataset) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(data.len() * data.num_classes());
    for chunk in Batches::new(data, EVAL_BATCH, None)? {
        let (x, _) = chunk?;
        out.extend(no_grad(|| model.forward(&Var::new(x))?.softmax(1))?.value().to_vec());
    }
    Ok(out)
}

/// One confidence bin of a reliability diagram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bin {
    /// The bin holds confidences in `(lo, hi]` (the first bin also 0).
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// Predictions in the bin.
    pub count: usize,
    /// Their mean confidence (the top class's probability); NaN for an empty bin.
    pub confidence: f64,
    /// The fraction of them that is right; NaN for an empty bin.
    pub accuracy: f64,
}

/// The reliability diagram of `probs` (`[n, classes]`) against `labels` in `bins` equal-width
/// confidence bins, as Guo et al. (2017) define it: a prediction's confidence is its top
/// probability, and bin `m` holds the confidences in `((m - 1) / bins, m / bins]`.
pub fn reliability(probs: &[f32], classes: usize, labels: &[usize], bins: usize) -> Vec<Bin> {
    let (mut count, mut conf, mut right) = (vec![0usize; bins], vec![0.0; bins], vec![0usize; bins]);
    for (p, &y) in probs.chunks(classes).zip(labels) {
        let top = argmax(p);
        let c = p[top] as f64;
        let m = ((c * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        count[m] += 1;
        conf[m] += c;
        right[m] += usize::from(top == y);
    }
    (0..bins)
        .map(|m| Bin {
            lo: m as f64 / bins as f64,
            hi: (m + 1) as f64 / bins as f64,
            count: count[m],
            confidence: conf[m] / count[m] as f64,
            accuracy: right[m] as f64 / count[m] as f64,
        })
        .collect()
}

/// The expected calibration error of a reliability diagram:
/// `Σ_m (n_m / n) |accuracy_m - confidence_m|` over the non-empty bins (0 for no predictions).
pub fn expected_calibration_error(bins: &[Bin]) -> f64 {
    let n: usize = bins.iter().map(|b| b.count).sum();
    bins.iter().filter(|b| b.count > 0).map(|b| b.count as f64 / n as f64 * (b.accuracy - b.confidence).abs()).sum()
}

// ─── One MLP configuration ────────────────────────────────────────────────────────────────────

/// The batch size of evaluation passes.
pub const EVAL_BATCH: usize = 1000;

/// An MLP and how it is trained. SGD with momentum 0.9, the learning rate cosine-annealed from
/// `lr` to 0 over `epochs`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Dropout rate on the input pixels.
    pub p_input: f64,
    /// Dropout rate after each hidden layer's ReLU.
    pub p_hidden: f64,
    /// L2 weight decay (coupled, as `torch.optim.SGD`), on every parameter.
    pub weight_decay: f64,
    /// The max-norm constraint on each unit's incoming weights, applied after every step.
    pub max_norm: Option<f64>,
    /// Initial learning rate.
    pub lr: f64,
    /// Mini-batch size.
    pub batch: usize,
    /// Epochs.
    pub epochs: usize,
}

impl Config {
    /// Two hidden layers of `width`, no regularisation, lr 0.1, batch 128 (as `mnist_dropout`).
    pub fn new(width: usize, epochs: usize) -> Config {
        Config {
            hidden: vec![width, width],
            p_input: 0.0,
            p_hidden: 0.0,
            weight_decay: 0.0,
            max_norm: None,
            lr: 0.1,
            batch: 128,
            epochs,
        }
    }

    /// With dropout `p_input` on the input and `p_hidden` after each hidden layer.
    pub fn dropout(mut self, p_input: f64, p_hidden: f64) -> Config {
        (self.p_input, self.p_hidden) = (p_input, p_hidden);
        self
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        let widths: Vec<String> = self.hidden.iter().map(|w| w.to_string()).collect();
        format!(
            "784-{}-10 ReLU, dropout {} input / {} hidden, weight decay {}, max-norm {}, SGD lr {} (cosine to 0) \
             momentum 0.9, batch {}, {} epochs",
            widths.join("-"),
            self.p_input,
            self.p_hidden,
            self.weight_decay,
            self.max_norm.map_or("off".to_string(), |c| c.to_string()),
            self.lr,
            self.batch,
            self.epochs
        )
    }

    /// The network: `Dropout(p_input)`, then per hidden layer `Linear`, `ReLU`, `Dropout(p_hidden)`,
    /// then `Linear` to `classes` logits. The weights come from `seed` alone (so configurations
    /// with the same widths start from the same weights); each dropout layer has its own
    /// generator, also derived from `seed`.
    pub fn build(&self, inputs: usize, classes: usize, seed: u64) -> Result<Sequential> {
        let mut gen = Generator::new(seed);
        let masks = |layer: u64| Generator::new(seed.wrapping_mul(31).wrapping_add(1000 + layer));
        let mut model = Sequential::new().add(Dropout::new(self.p_input)?.with_generator(masks(0)));
        let mut width = inputs;
        for (i, &h) in self.hidden.iter().enumerate() {
            model.push(Linear::new(width, h, &mut gen));
            model.push(ReLU::new());
            model.push(Dropout::new(self.p_hidden)?.with_generator(masks(1 + i as u64)));
            width = h;
        }
        model.push(Linear::new(width, classes, &mut gen));
        Ok(model)
    }

    /// Trains the network of [`Config::build`] on `train` (batch order from `seed` too) and
    /// measures it in eval mode: on `eval` after every epoch, and on both sets at the end. Each
    /// epoch (learning rate, mean training loss, loss and accuracy on `eval`, time) goes to
    /// `metrics` as a row of the run `label`.
    pub fn train(
        &self,
        train: &Dataset,
        eval: &Dataset,
        seed: u64,
        label: &str,
        metrics: &mut Metrics,
    ) -> Result<Outcome> {
        let start = Instant::now();
        let classes = train.num_classes().max(eval.num_classes());
        let mut model = self.build(train.images().shape()[1], classes, seed)?;
        let params = model.parameters();
        let mut opt = Sgd::new(params.clone(), self.lr).momentum(0.9).weight_decay(self.weight_decay);
        let mut schedule = CosineLr::new(self.epochs, 0.0).base_lr(self.lr);
        let mut order = Generator::new(seed.wrapping_add(1));
        let mut curve = Vec::with_capacity(self.epochs);
        for epoch in 1..=self.epochs {
            let (epoch_start, lr) = (Instant::now(), opt.lr());
            let bar = super::epoch_bar(&format!("{label} {epoch}/{}", self.epochs));
            let train_loss =
                super::train_epoch_with(&mut model, &mut opt, train, self.batch, &mut order, &bar, || {
                    match self.max_norm {
                        Some(c) => max_norm_(&params, c),
                        None => Ok(()),
                    }
                })?;
            bar.finish_and_clear();
            let seconds = super::seconds(epoch_start);
            schedule.step(&mut opt)?;
            let (eval_loss, eval_acc) = super::evaluate(&mut model, eval, EVAL_BATCH)?;
            curve.push(eval_acc);
            metrics.record(label, Epoch::measured(epoch, lr, train_loss, (eval_loss, eval_acc), seconds))?;
        }
        let (train_loss, train_acc) = super::evaluate(&mut model, train, EVAL_BATCH)?;
        let (eval_loss, eval_acc) = super::evaluate(&mut model, eval, EVAL_BATCH)?;
        model.eval();
        Ok(Outcome { model, train_loss, train_acc, eval_loss, eval_acc, curve, seconds: super::seconds(start) })
    }
}

/// Where an example's result plot goes: `--out`, else `target/<name>.svg`.
fn plot_path(args: &super::Args, name: &str) -> std::path::PathBuf {
    args.out
        .clone()
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/{name}.svg")))
}

/// The epoch-by-epoch record of every run an example trains ([`Config::train`] writes it):
/// `<plot>_epochs.csv` and its curves `<plot>_epochs.svg`, beside the result plot of
/// [`write_plot`].
pub fn epoch_metrics(args: &super::Args, name: &str, title: &str) -> Result<Metrics> {
    let plot = plot_path(args, name);
    let stem = plot.file_stem().map_or_else(|| name.into(), |s| s.to_string_lossy().into_owned());
    let metrics = Metrics::create(&plot.with_file_name(format!("{stem}_epochs.svg")), title, &[])?;
    println!("metrics: {}", metrics.csv_path().display());
    Ok(metrics)
}

/// A trained network and what it measured (accuracies in [0, 1], eval mode).
pub struct Outcome {
    /// The network, in eval mode.
    pub model: Sequential,
    /// Cross-entropy on the training set.
    pub train_loss: f64,
    /// Accuracy on the training set.
    pub train_acc: f64,
    /// Cross-entropy on the evaluation (test or validation) set.
    pub eval_loss: f64,
    /// Accuracy on the evaluation set.
    pub eval_acc: f64,
    /// Accuracy on the evaluation set after each epoch.
    pub curve: Vec<f64>,
    /// Wall-clock training and evaluation time.
    pub seconds: f64,
}

impl Outcome {
    /// Train minus evaluation accuracy, in [0, 1].
    pub fn gap(&self) -> f64 {
        self.train_acc - self.eval_acc
    }
}

/// The mean over `runs` of their evaluation accuracy after each epoch, in %, as `(epoch, acc)`
/// points for a plot.
pub fn mean_curve(runs: &[Outcome]) -> Vec<(f64, f64)> {
    let epochs = runs.iter().map(|r| r.curve.len()).min().unwrap_or(0);
    (0..epochs)
        .map(|e| {
            let at: Vec<f64> = runs.iter().map(|r| r.curve[e]).collect();
            ((e + 1) as f64, 100.0 * mean(&at))
        })
        .collect()
}

// ─── Results table ────────────────────────────────────────────────────────────────────────────

/// A markdown table, printed with `{}`.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| h.to_string()).collect(), rows: vec![] }
    }

    /// Appends a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "| {} |", self.header.join(" | "))?;
        writeln!(f, "|{}", " --- |".repeat(self.header.len()))?;
        for row in &self.rows {
            writeln!(f, "| {} |", row.join(" | "))?;
        }
        Ok(())
    }
}

/// A fraction as a percentage, `0.9634` → `96.34%`.
pub fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// Mean ± sample sd of fractions, in percentage points: `96.34 ± 0.21`.
pub fn mean_sd_points(xs: &[f64]) -> String {
    format!("{:.2} ± {:.2}", 100.0 * mean(xs), 100.0 * sample_sd(xs))
}

/// The 95% t interval of paired differences of fractions, in points: `+0.52 [+0.21, +0.83]`.
pub fn interval_points(diffs: &[f64]) -> String {
    match t_interval95(diffs) {
        Some(i) => format!("{:+.2} [{:+.2}, {:+.2}]", 100.0 * i.mean, 100.0 * i.lo, 100.0 * i.hi),
        None => format!("{:+.2} (one pair: no interval)", 100.0 * mean(diffs)),
    }
}

/// The SVG colours of the examples' series, in order.
pub const COLORS: [&str; 6] = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// The last path component of `--data`, for plot titles.
pub fn dataset_name(args: &super::Args) -> String {
    args.data.file_name().map_or("MNIST".into(), |n| n.to_string_lossy().into_owned())
}

/// Writes `charts` to `--out` or `target/<name>.svg` and prints where.
pub fn write_plot(args: &super::Args, name: &'static str, title: &str, charts: &[super::svg::Chart]) -> Result<()> {
    let out = plot_path(args, name);
    super::svg::write(&out, title, charts)
        .map_err(|e| Error::arg(name, format!("cannot write {}: {e}", out.display())))?;
    println!("plot: {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn t_quantiles_match_scipy() {
        // scipy.stats.t.ppf(0.975, df) for df = 1, 2, 4, 9, 29.
        for (df, want) in [
            (1.0, 12.706204736174694),
            (2.0, 4.302652729749464),
            (4.0, 2.7764451051977987),
            (9.0, 2.2621571628540993),
            (29.0, 2.045229642132703),
        ] {
            let got = t_quantile(0.975, df);
            assert!(close(got, want, 1e-7 * want), "t(0.975, {df}) = {got}, scipy {want}");
        }
        // Many degrees of freedom: the normal quantile z plus the first term of the Cornish-Fisher
        // expansion, (z³ + z) / (4 df).
        let (z, df) = (1.959963984540054, 1e7);
        assert!(close(t_quantile(0.975, df), z + (z * z * z + z) / (4.0 * df), 1e-9));
        assert!(close(t_quantile(0.025, 4.0), -2.7764451051977987, 1e-7));
        assert!(close(t_cdf(0.0, 3.0), 0.5, 1e-15));
    }

    #[test]
    fn t_interval_by_hand() {
        // mean 3, sd √2.5, se √0.5, half width 2.7764451 · 0.7071068 = 1.9632432.
        let i = t_interval95(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert!(close(i.mean, 3.0, 1e-12));
        assert!(close(i.lo, 3.0 - 1.963_243_2, 1e-6) && close(i.hi, 3.0 + 1.963_243_2, 1e-6), "{i:?}");
        assert!(i.excludes_zero());
        assert!(!t_interval95(&[-1.0, 1.0]).unwrap().excludes_zero());
        assert!(t_interval95(&[1.0]).is_none());
        assert!(close(sample_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]), (32.0f64 / 7.0).sqrt(), 1e-12));
        assert_eq!(paired_differences(&[3.0, 5.0], &[1.0, 1.0]).unwrap(), vec![2.0, 4.0]);
        assert!(paired_differences(&[1.0], &[]).is_err());
    }

    #[test]
    fn calibration_error_by_hand() {
        // Four predictions over two classes in 2 bins, (0, 0.5] and (0.5, 1]:
        // confidences 0.5 (right), 0.6 (right), 0.9 (wrong), 1.0 (right).
        let probs = [0.5, 0.5, 0.6, 0.4, 0.1, 0.9, 1.0, 0.0];
        let labels = [0, 0, 0, 0];
        let bins = reliability(&probs, 2, &labels, 2);
        assert_eq!(bins[0].count, 1);
        assert!(close(bins[0].confidence, 0.5, 1e-7) && bins[0].accuracy == 1.0);
        assert_eq!(bins[1].count, 3);
        let conf = (0.6f32 as f64 + 0.9f32 as f64 + 1.0) / 3.0;
        assert!(close(bins[1].confidence, conf, 1e-12) && close(bins[1].accuracy, 2.0 / 3.0, 1e-12));
        // ECE = 1/4 |1 - 0.5| + 3/4 |2/3 - conf|.
        let want = 0.25 * 0.5 + 0.75 * (2.0 / 3.0 - conf).abs();
        assert!(close(expected_calibration_error(&bins), want, 1e-12));
        // A perfectly calibrated diagram has no error; an empty bin counts for nothing.
        let perfect = reliability(&[1.0, 0.0, 0.0, 1.0], 2, &[0, 1], 10);
        assert_eq!(expected_calibration_error(&perfect), 0.0);
        assert!(perfect[0].confidence.is_nan());
    }

    #[test]
    fn auroc_counts_ordered_pairs() {
        let (f, t) = (false, true);
        // scikit-learn's roc_auc_score example: 3 of the 4 (positive, negative) pairs are ordered.
        assert_eq!(auroc(&[0.1, 0.4, 0.35, 0.8], &[f, f, t, t]), Some(0.75));
        // A tie counts one half: (1 + 1/2 + 1 + 1) / 4.
        assert_eq!(auroc(&[1.0, 2.0, 2.0, 3.0], &[f, f, t, t]), Some(0.875));
        assert_eq!(auroc(&[5.0; 4], &[f, t, f, t]), Some(0.5));
        assert_eq!(auroc(&[1.0, 2.0], &[t, t]), None);
        assert!(close(entropy(&[0.5, 0.5, 0.0]), std::f64::consts::LN_2, 1e-12));
        assert_eq!(argmax(&[0.1, 0.7, 0.7]), 1);
    }
}
