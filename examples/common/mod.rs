//! What the examples share: command-line flags, the data split, threads, evaluation and one
//! training epoch. Each example includes it with `mod common;`.
#![allow(dead_code)] // each example uses a different part

pub mod metrics;
pub mod models;
pub mod science;
pub mod svg;

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use metrics::{Epoch, Metrics};
use tapegrad::nn::data::{load_dataset, Batches, Dataset, Mnist};
use tapegrad::nn::{self, Module};
use tapegrad::optim::Optimizer;
use tapegrad::prelude::*;

/// The flags every example takes.
#[derive(Clone, Debug)]
pub struct Args {
    /// `--data DIR`: an IDX dataset (full MNIST / Fashion-MNIST names, or mnist-10k's).
    pub data: PathBuf,
    /// `--epochs N`.
    pub epochs: usize,
    /// `--threads N` (0: rayon's default, all cores).
    pub threads: usize,
    /// `--seed N`.
    pub seed: u64,
    /// `--smoke` or `TAPEGRAD_SMOKE=1`: a tiny run (one short epoch on a few hundred digits) for CI.
    pub smoke: bool,
    /// `--out PATH`: where an example writes its plot or report (see [`Args::out_path`]).
    pub out: Option<PathBuf>,
    /// `--loop plain` (the default): run on the main thread, as a user's plain loop does;
    /// `--loop pool` runs it on a thread of rayon's pool instead, for comparison.
    pub plain_loop: bool,
    /// Flags the example handles itself (`--name value` pairs), in order.
    pub extra: Vec<(String, String)>,
}

impl Args {
    /// An extra flag's value parsed as `T`, or `default`.
    pub fn extra<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.extra.iter().find(|(k, _)| k == name) {
            Some((_, v)) => v.parse().map_err(|_| format!("--{name}: cannot parse {v:?}")),
            None => Ok(default),
        }
    }

    /// `--out`, or `target/<name>.svg` in the repository (never the repository itself): where an
    /// example writes its plot, with its metrics beside it ([`metrics::Metrics`]).
    pub fn out_path(&self, name: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join(format!("{name}.svg")))
    }
}

/// The shipped digits.
pub fn shipped_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist-10k")
}

/// Parses `--data --epochs --threads --seed --smoke --out` and the example's own `--name value`
/// flags (listed in `extra`), with `epochs` as the default epoch count.
pub fn parse_args(argv: Vec<String>, epochs: usize, extra: &[&str]) -> Result<Args, String> {
    let mut args = Args {
        data: shipped_data(),
        epochs,
        threads: 0,
        seed: 0,
        smoke: std::env::var("TAPEGRAD_SMOKE").is_ok_and(|v| v == "1"),
        out: None,
        plain_loop: true,
        extra: vec![],
    };
    let mut it = argv.into_iter().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--smoke" {
            args.smoke = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            let own: String = extra.iter().map(|e| format!(" [--{e} V]")).collect();
            return Err(format!(
                "usage: [--data DIR] [--epochs N] [--threads N] [--seed N] [--out PATH] [--loop pool|plain] [--smoke]{own}"
            ));
        }
        let name = flag.strip_prefix("--").ok_or_else(|| format!("unexpected argument {flag:?}"))?;
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|_| format!("{flag}: {v:?} is not a number"));
        match name {
            "data" => args.data = PathBuf::from(value),
            "epochs" => args.epochs = number(&value)? as usize,
            "threads" => args.threads = number(&value)? as usize,
            "seed" => args.seed = number(&value)?,
            "out" => args.out = Some(PathBuf::from(value)),
            "loop" => {
                args.plain_loop = match value.as_str() {
                    "plain" => true,
                    "pool" => false,
                    other => return Err(format!("--loop: {other:?} is neither pool nor plain")),
                }
            }
            other if extra.contains(&other) => args.extra.push((other.to_string(), value)),
            other => return Err(format!("unknown flag --{other}")),
        }
    }
    if args.smoke {
        args.epochs = 1;
    }
    Ok(args)
}

/// An example's `main`: parses the shared flags and the example's own (turned into `O` by
/// `options`), sizes the thread pool, then runs `run`. Bad flags exit with code 2 and a usage
/// message, a failed run with code 1 and the error: never a panic.
pub fn main<O: Send, E: std::fmt::Display + Send>(
    epochs: usize,
    extra: &[&str],
    options: impl FnOnce(&Args) -> Result<O, String>,
    run: impl FnOnce(&Args, O) -> Result<(), E> + Send,
) {
    main_with(std::env::args().collect(), epochs, extra, options, run);
}

/// [`main`] with the command line given (`argv[0]` is the program).
pub fn main_with<O: Send, E: std::fmt::Display + Send>(
    argv: Vec<String>,
    epochs: usize,
    extra: &[&str],
    options: impl FnOnce(&Args) -> Result<O, String>,
    run: impl FnOnce(&Args, O) -> Result<(), E> + Send,
) {
    let (args, opts) = match parse_args(argv, epochs, extra).and_then(|args| options(&args).map(|o| (args, o))) {
        Ok(parsed) => parsed,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    // By default the run executes on the main thread, as a user's own loop does (the kernels'
    // helper threads join it there; docs/design.md, "Threads"); `--loop pool` runs it on one of
    // rayon's pool threads instead, where the pool's own workers help.
    let result = init_threads(args.threads).and_then(|_| {
        if args.plain_loop {
            run(&args, opts).map_err(|e| e.to_string())
        } else {
            rayon::scope(|_| run(&args, opts)).map_err(|e| e.to_string())
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Sizes the global rayon pool (`0` keeps the default). Results do not depend on it: every
/// kernel splits work in fixed chunks.
pub fn init_threads(threads: usize) -> Result<(), String> {
    if threads > 0 {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The peak resident set of this process in KiB (`VmHWM`), if the kernel reports it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A train / test split.
pub struct Split {
    /// Training digits.
    pub train: Dataset,
    /// Held-out digits.
    pub test: Dataset,
    /// Where they came from, for the log.
    pub source: String,
}

/// Loads `args.data`: the standard train / test files, or a single set (the shipped mnist-10k)
/// split 80% / 20% in file order (the shipped file is already shuffled and class-balanced).
/// A smoke run keeps 512 training and 256 test digits.
pub fn load_split(args: &Args) -> Result<Split> {
    let (train, test, source) = match load_dataset(&args.data)? {
        Mnist::TrainTest { train, test } => (train, test, format!("{} (train / t10k files)", args.data.display())),
        Mnist::Single(all) => {
            let cut = all.len() * 4 / 5;
            let (train, test) = all.split_at(cut)?;
            (train, test, format!("{} (first {cut} train, last {} test)", args.data.display(), all.len() - cut))
        }
    };
    if args.smoke {
        let (train, _) = train.split_at(train.len().min(512))?;
        let (test, _) = test.split_at(test.len().min(256))?;
        return Ok(Split { train, test, source: format!("{source}, smoke subset") });
    }
    Ok(Split { train, test, source })
}

/// Mean cross-entropy and accuracy of `model` on `data`, in eval mode (whatever mode the model
/// was in is restored), without recording.
pub fn evaluate<M: Module>(model: &mut M, data: &Dataset, batch: usize) -> Result<(f64, f64)> {
    let was_training = model.is_training();
    model.eval();
    let (mut loss_sum, mut correct) = (0.0, 0usize);
    for chunk in Batches::new(data, batch, None)? {
        let (x, y) = chunk?;
        let logits = no_grad(|| model.forward(&Var::new(x)))?;
        loss_sum += nn::loss::cross_entropy(&logits, &y)?.value().item()? as f64 * y.len() as f64;
        correct += logits.value().argmax(1)?.iter().zip(&y).filter(|(p, t)| p == t).count();
    }
    if was_training {
        model.train();
    }
    Ok((loss_sum / data.len() as f64, correct as f64 / data.len() as f64))
}

/// One epoch of mini-batch training in shuffled order; returns the mean training loss (as
/// measured with dropout active, like PyTorch's running loss).
pub fn train_epoch<M: Module, O: Optimizer>(
    model: &mut M,
    opt: &mut O,
    data: &Dataset,
    batch: usize,
    gen: &mut Generator,
    bar: &ProgressBar,
) -> Result<f64> {
    train_epoch_with(model, opt, data, batch, gen, bar, || Ok(()))
}

/// [`train_epoch`] with `after_step` called after every optimiser step, for a constraint on
/// the weights such as the dropout paper's max-norm (`optim::max_norm_`).
pub fn train_epoch_with<M: Module, O: Optimizer>(
    model: &mut M,
    opt: &mut O,
    data: &Dataset,
    batch: usize,
    gen: &mut Generator,
    bar: &ProgressBar,
    mut after_step: impl FnMut() -> Result<()>,
) -> Result<f64> {
    model.train();
    let batches = Batches::new(data, batch, Some(gen))?;
    bar.set_length(batches.len() as u64);
    bar.set_position(0);
    let (mut loss_sum, mut seen) = (0.0, 0usize);
    for chunk in batches {
        let (x, y) = chunk?;
        let loss = nn::loss::cross_entropy(&model.forward(&Var::new(x))?, &y)?;
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
        after_step()?;
        loss_sum += loss.value().item()? as f64 * y.len() as f64;
        seen += y.len();
        bar.inc(1);
    }
    Ok(loss_sum / seen.max(1) as f64)
}

/// Seconds per training batch, measured on a few batches before the real run. The parameters
/// are put back afterwards, so the measurement does not change what the run learns (re-seed the
/// default generator after it: the probe's dropout draws from it).
pub fn time_batches<M: Module>(model: &mut M, train: &Dataset, batch: usize, gen: &mut Generator) -> Result<f64> {
    let saved: Vec<Tensor> = model.parameters().iter().map(|p| p.value()).collect();
    let mut opt = tapegrad::optim::Adam::new(model.parameters(), 1e-3);
    let (probe, _) = train.split_at(train.len().min(4 * batch))?;
    let bar = epoch_bar("timing");
    let start = Instant::now();
    train_epoch(model, &mut opt, &probe, batch, gen, &bar)?;
    bar.finish_and_clear();
    let per_batch = seconds(start) / probe.len().div_ceil(batch.max(1)) as f64;
    for (p, v) in model.parameters().iter().zip(saved) {
        p.set_value(v);
        p.zero_grad();
    }
    Ok(per_batch)
}

/// Trains for `epochs` with the learning rate cosine-annealed from `lr` to 0, printing a table
/// (epoch, lr, train loss, test loss, test accuracy, time), then the training time and the
/// final test accuracy, and recording each epoch in `metrics` (its CSV file and plot) when given.
#[allow(clippy::too_many_arguments)]
pub fn fit_cosine_recorded<M: Module, O: Optimizer>(
    model: &mut M,
    opt: &mut O,
    lr: f64,
    split: &Split,
    batch: usize,
    epochs: usize,
    gen: &mut Generator,
    mut metrics: Option<&mut Metrics>,
) -> Result<()> {
    use tapegrad::optim::{CosineLr, LrScheduler};
    let mut schedule = CosineLr::new(epochs.max(1), 0.0).base_lr(lr);
    println!("{:>5} {:>8} {:>10} {:>10} {:>9} {:>8}", "epoch", "lr", "train loss", "test loss", "test acc", "time");
    let total = Instant::now();
    for epoch in 1..=epochs {
        let epoch_lr = opt.lr();
        let start = Instant::now();
        let bar = epoch_bar(&format!("epoch {epoch}"));
        let train_loss = train_epoch(model, opt, &split.train, batch, gen, &bar)?;
        bar.finish_and_clear();
        let took = seconds(start);
        let (test_loss, test_acc) = evaluate(model, &split.test, 500)?;
        schedule.step(opt)?;
        println!(
            "{epoch:>5} {epoch_lr:>8.2e} {train_loss:>10.4} {test_loss:>10.4} {:>8.2}% {:>7.1}s",
            100.0 * test_acc,
            seconds(start)
        );
        if let Some(metrics) = metrics.as_deref_mut() {
            metrics.record("", Epoch::measured(epoch, epoch_lr, train_loss, (test_loss, test_acc), took))?;
        }
    }
    println!("training time: {:.1} s", seconds(total));
    let (_, acc) = evaluate(model, &split.test, 500)?;
    println!("final test accuracy: {:.2}% on {} digits", 100.0 * acc, split.test.len());
    if let Some(metrics) = metrics {
        println!("metrics: {}, plot: {}", metrics.csv_path().display(), metrics.svg_path().display());
    }
    Ok(())
}

/// A progress bar for one epoch (hidden when stderr is not a terminal, so logs stay clean).
pub fn epoch_bar(label: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} batches {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Seconds since `start`, for the timings the examples print.
pub fn seconds(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
