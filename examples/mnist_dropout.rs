//! Dropout against overfitting, as in the dropout paper (Srivastava et al., 2014): the same MLP
//! (784-1024-1024-10, ReLU) trained twice from the same initial weights and the same batch
//! order, once without dropout and once with dropout 0.2 on the input and 0.5 after each hidden
//! layer, then compared epoch by epoch: training loss (measured in eval mode, so that it is
//! comparable with the test loss), test loss, test accuracy, and the generalisation gap.
//!
//! ```sh
//! cargo run --release --example mnist_dropout                      # shipped mnist-10k, 8000 / 2000
//! cargo run --release --example mnist_dropout -- --smoke           # a few hundred digits, one epoch
//! cargo run --release --example mnist_dropout -- --data /usr/share/datasets/fashion-mnist
//! ```
//!
//! Each epoch of both runs (learning rate, train loss, test loss, test accuracy, time) goes to
//! `target/mnist_dropout.csv` as it ends, and the curves to `target/mnist_dropout.svg`;
//! `--out PATH.svg` writes the plot to PATH.svg and the metrics to PATH.csv.
//!
//! Flags: `--data DIR --epochs N --threads N --seed N --out PATH.svg --smoke`, and `--lr`, `--batch`,
//! `--max-norm C` (the paper's max-norm constraint on the dropout run; 0 turns it off).
//! The numbers do not depend on `--threads`; to check, diff two runs without the timings:
//! `sed -E 's/[0-9]+\.[0-9]+ s\b//g'`.
//!
//! `--save-checkpoint PATH` writes both runs' state (weights, optimiser moments and momentum,
//! schedulers, the shuffling and dropout generators, the history) to PATH at the end of every
//! epoch, as one [`TrainingCheckpoint`]; `--resume PATH` continues from it, with the same other
//! flags, and ends with the numbers of an uninterrupted run, bit for bit (see
//! `docs/checkpoints.md`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use tapegrad::nn::data::Dataset;
use tapegrad::nn::{dropout_generator, set_dropout_generator, Dropout, Linear, Position, TrainingCheckpoint};
use tapegrad::optim::{max_norm_, CosineLr, LrScheduler, Optimizer, Sgd, StateDict};
use tapegrad::prelude::*;

use common::metrics::{self, Metrics};

const HIDDEN: usize = 1024;
const EPOCHS: usize = 15;
const LR: f64 = 0.1;
const BATCH: usize = 128;
const MAX_NORM: f64 = 0.0;
const EVAL_BATCH: usize = 1000;

/// 784-1024-1024-10 with ReLU; the dropout layers are the identity when their `p` is 0.
#[derive(Module)]
struct Mlp {
    drop_in: Dropout,
    fc1: Linear,
    drop1: Dropout,
    fc2: Linear,
    drop2: Dropout,
    fc3: Linear,
}

impl Mlp {
    /// The weights come from `seed` alone, so both runs start from the same network; each
    /// dropout layer draws its masks from its own generator.
    fn new(p_input: f64, p_hidden: f64, seed: u64) -> Result<Mlp> {
        let mut gen = Generator::new(seed);
        let masks = |layer: u64| Generator::new(seed.wrapping_mul(31).wrapping_add(1000 + layer));
        Ok(Mlp {
            drop_in: Dropout::new(p_input)?.with_generator(masks(0)),
            fc1: Linear::new(784, HIDDEN, &mut gen),
            drop1: Dropout::new(p_hidden)?.with_generator(masks(1)),
            fc2: Linear::new(HIDDEN, HIDDEN, &mut gen),
            drop2: Dropout::new(p_hidden)?.with_generator(masks(2)),
            fc3: Linear::new(HIDDEN, 10, &mut gen),
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Var) -> Result<Var> {
        let h = self.fc1.forward(&self.drop_in.forward(x)?)?.relu();
        let h = self.fc2.forward(&self.drop1.forward(&h)?)?.relu();
        self.fc3.forward(&self.drop2.forward(&h)?)
    }
}

/// What one epoch measured.
#[derive(Clone, Copy)]
struct Epoch {
    train_loss: f64,
    test_loss: f64,
    test_acc: f64,
}

/// One of the two trainings: its model, optimiser, batch order and history.
struct Run {
    name: &'static str,
    model: Mlp,
    opt: Sgd,
    sched: CosineLr,
    shuffle: Generator,
    max_norm: Option<f64>,
    history: Vec<Epoch>,
}

impl Run {
    fn new(
        name: &'static str,
        p_input: f64,
        p_hidden: f64,
        max_norm: Option<f64>,
        args: &common::Args,
        lr: f64,
    ) -> Result<Run> {
        let model = Mlp::new(p_input, p_hidden, args.seed)?;
        let opt = Sgd::new(model.parameters(), lr).momentum(0.9);
        let shuffle = Generator::new(args.seed.wrapping_add(1));
        let sched = CosineLr::new(args.epochs, 0.0).base_lr(lr);
        Ok(Run { name, model, opt, sched, shuffle, max_norm, history: vec![] })
    }

    /// Trains one epoch, then measures the training and test sets in eval mode.
    fn epoch(&mut self, train: &Dataset, test: &Dataset, batch: usize, label: &str) -> Result<Epoch> {
        let bar = common::epoch_bar(label);
        let params = self.model.parameters();
        let max_norm = self.max_norm;
        common::train_epoch_with(&mut self.model, &mut self.opt, train, batch, &mut self.shuffle, &bar, || {
            match max_norm {
                Some(c) => max_norm_(&params, c),
                None => Ok(()),
            }
        })?;
        bar.finish_and_clear();
        self.sched.step(&mut self.opt)?;
        let (train_loss, _) = common::evaluate(&mut self.model, train, EVAL_BATCH)?;
        let (test_loss, test_acc) = common::evaluate(&mut self.model, test, EVAL_BATCH)?;
        let e = Epoch { train_loss, test_loss, test_acc };
        self.history.push(e);
        Ok(e)
    }

    /// The part names of this run in a checkpoint start with this.
    fn key(&self) -> &'static str {
        if self.name == "dropout" {
            "dropout"
        } else {
            "plain"
        }
    }

    /// This run's dropout layers, by name.
    fn dropouts(&self) -> [(&'static str, &Dropout); 3] {
        [("drop_in", &self.model.drop_in), ("drop1", &self.model.drop1), ("drop2", &self.model.drop2)]
    }

    /// Adds everything this run needs to continue to `ckpt`.
    fn save_into(&self, mut ckpt: TrainingCheckpoint) -> Result<TrainingCheckpoint> {
        let k = self.key();
        ckpt = ckpt
            .with_model(&format!("{k}.model"), &self.model)?
            .with(&format!("{k}.optimizer"), &self.opt)?
            .with(&format!("{k}.scheduler"), &self.sched)?
            .with(&format!("{k}.shuffle"), &self.shuffle)?;
        for (name, layer) in self.dropouts() {
            ckpt = ckpt.with(&format!("{k}.{name}"), &dropout_generator(layer))?;
        }
        let mut history = StateDict::of_kind("history");
        for (i, e) in self.history.iter().enumerate() {
            history.set(&format!("train_loss.{i}"), e.train_loss);
            history.set(&format!("test_loss.{i}"), e.test_loss);
            history.set(&format!("test_acc.{i}"), e.test_acc);
        }
        ckpt.insert(&format!("{k}.history"), history)?;
        Ok(ckpt)
    }

    /// Restores what [`Run::save_into`] saved, with `epochs` epochs of history.
    fn restore(&mut self, ckpt: &TrainingCheckpoint, epochs: usize) -> Result<()> {
        let k = self.key();
        ckpt.restore_model(&format!("{k}.model"), &mut self.model)?;
        ckpt.restore(&format!("{k}.optimizer"), &mut self.opt)?;
        ckpt.restore(&format!("{k}.scheduler"), &mut self.sched)?;
        ckpt.restore(&format!("{k}.shuffle"), &mut self.shuffle)?;
        for (name, layer) in self.dropouts() {
            set_dropout_generator(layer, ckpt.generator(&format!("{k}.{name}"))?);
        }
        let history = ckpt.part(&format!("{k}.history"))?;
        let value = |key: String| -> Result<f64> {
            history.values.get(&key).and_then(|v| v.parse().ok()).ok_or_else(|| {
                tapegrad::Error::arg("mnist_dropout", format!("the checkpoint's {k}.history has no number {key:?}"))
            })
        };
        self.history = (0..epochs)
            .map(|i| {
                Ok(Epoch {
                    train_loss: value(format!("train_loss.{i}"))?,
                    test_loss: value(format!("test_loss.{i}"))?,
                    test_acc: value(format!("test_acc.{i}"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// The epoch (1-based) with the best test accuracy, the first one on ties.
    fn best(&self) -> (usize, Epoch) {
        let mut best = (1, self.history[0]);
        for (i, e) in self.history.iter().enumerate() {
            if e.test_acc > best.1.test_acc {
                best = (i + 1, *e);
            }
        }
        best
    }
}

/// The example's own flags, checked before anything runs.
struct Options {
    lr: f64,
    batch: usize,
    /// The max-norm constraint, `None` when off (`--max-norm 0`).
    max_norm: Option<f64>,
    /// Where to save a checkpoint at the end of every epoch.
    save_checkpoint: Option<PathBuf>,
    /// The checkpoint to continue from.
    resume: Option<PathBuf>,
}

impl Options {
    fn parse(args: &common::Args) -> Result<Options, String> {
        let lr: f64 = args.extra("lr", LR)?;
        let batch: usize = args.extra("batch", BATCH)?;
        let max_norm: f64 = args.extra("max-norm", MAX_NORM)?;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(format!("--lr {lr}: it must be a positive number"));
        }
        if batch == 0 || args.epochs == 0 {
            return Err("--batch and --epochs must be at least 1".into());
        }
        if !(max_norm.is_finite() && max_norm >= 0.0) {
            return Err(format!("--max-norm {max_norm}: it must be >= 0 (0: off)"));
        }
        let path = |name: &str| -> Result<Option<PathBuf>, String> {
            let p: String = args.extra(name, String::new())?;
            Ok((!p.is_empty()).then(|| PathBuf::from(p)))
        };
        let (save_checkpoint, resume) = (path("save-checkpoint")?, path("resume")?);
        Ok(Options { lr, batch, max_norm: (max_norm > 0.0).then_some(max_norm), save_checkpoint, resume })
    }
}

fn run(args: &common::Args, opts: Options) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Options { lr, batch, max_norm, save_checkpoint, resume } = opts;
    let split = common::load_split(args)?;
    println!("data: {}: {} train, {} test images", split.source, split.train.len(), split.test.len());
    println!(
        "kernels: {}, threads: {}, seed: {}",
        tapegrad::tensor::cpu_capability(),
        rayon::current_num_threads(),
        args.seed
    );
    let mut runs =
        [Run::new("no dropout", 0.0, 0.0, None, args, lr)?, Run::new("dropout", 0.2, 0.5, max_norm, args, lr)?];
    let params: usize = runs[0].model.parameters().iter().map(|p| p.value().numel()).sum();
    println!("model: 784-{HIDDEN}-{HIDDEN}-10, ReLU, {params} parameters; both runs start from the same weights");
    println!("dropout run: {}", runs[1].model);
    println!(
        "SGD: lr {lr} (cosine to 0), momentum 0.9, batch {batch}, epochs {}, same batch order for both; max-norm: {}",
        args.epochs,
        max_norm.map_or("off (--max-norm C turns it on)".to_string(), |c| format!(
            "c = {c} on the dropout run's weight rows"
        )),
    );
    // What must match for a checkpoint to continue this run.
    let config = {
        let mut c = StateDict::of_kind("mnist_dropout");
        c.set("seed", args.seed);
        c.set("lr", lr);
        c.set("batch", batch);
        c.set("max_norm", max_norm.unwrap_or(0.0));
        c.set("epochs", args.epochs);
        c.set("data", &split.source);
        c
    };
    let done = match &resume {
        Some(path) => {
            let done = restore(path, &config, &mut runs)?;
            println!("resumed from {} after epoch {done}", path.display());
            done
        }
        None => 0,
    };
    let dataset = args.data.file_name().map_or("MNIST".into(), |n| n.to_string_lossy().into_owned());
    let title = format!("MLP 784-{HIDDEN}-{HIDDEN}-10 on {dataset}: without and with dropout (0.2 input, 0.5 hidden)");
    let mut metrics = Metrics::create(&args.out_path("mnist_dropout"), title, &[])?
        .loss_title("Cross-entropy loss (train: eval mode)");
    let record = |metrics: &mut Metrics, run: &Run, epoch: usize, lr: Option<f64>, seconds: Option<f64>| {
        let e = run.history[epoch - 1];
        let row = metrics::Epoch {
            epoch,
            lr,
            train_loss: Some(e.train_loss),
            test_loss: Some(e.test_loss),
            test_acc: Some(e.test_acc),
            seconds,
            ..Default::default()
        };
        metrics.record(run.name, row)
    };
    // The epochs a checkpoint brought back go first (their learning rates and times were not saved).
    for epoch in 1..=done {
        for run in &runs {
            record(&mut metrics, run, epoch, None, None)?;
        }
    }
    println!("train loss: cross-entropy over the whole training set in eval mode after the epoch\n");
    println!("      |        without dropout         |          with dropout          |");
    println!("epoch | train loss  test loss  test acc | train loss  test loss  test acc |   time");
    println!("------+--------------------------------+--------------------------------+--------");

    if resume.is_some() {
        for (i, (p, d)) in runs[0].history.iter().zip(&runs[1].history).enumerate() {
            let cells =
                |e: &Epoch| format!(" {:>10.4} {:>10.4} {:>8.2}% |", e.train_loss, e.test_loss, 100.0 * e.test_acc);
            println!("{:>5} |{}{}   saved", i + 1, cells(p), cells(d));
        }
    }

    let start = Instant::now();
    for epoch in done + 1..=args.epochs {
        let epoch_start = Instant::now();
        let mut row = format!("{epoch:>5} |");
        for run in runs.iter_mut() {
            let label = format!("{epoch}/{} {}", args.epochs, run.name);
            let (lr, run_start) = (run.opt.lr(), Instant::now());
            let e = run.epoch(&split.train, &split.test, batch, &label)?;
            record(&mut metrics, run, epoch, Some(lr), Some(common::seconds(run_start)))?;
            row += &format!(" {:>10.4} {:>10.4} {:>8.2}% |", e.train_loss, e.test_loss, 100.0 * e.test_acc);
        }
        println!("{row} {:>5.1} s", common::seconds(epoch_start));
        if let Some(path) = &save_checkpoint {
            let mut ckpt = TrainingCheckpoint::new().with("position", &Position { epoch, batch: 0 })?;
            ckpt.insert("config", config.clone())?;
            for run in &runs {
                ckpt = run.save_into(ckpt)?;
            }
            ckpt.save(path)?;
        }
    }
    let total = common::seconds(start);
    let trained = args.epochs.saturating_sub(done).max(1);

    let [plain, drop] = &runs;
    let (p, d) = (plain.history[plain.history.len() - 1], drop.history[drop.history.len() - 1]);
    let (pb, db) = (plain.best(), drop.best());
    let line = |label: &str, without: String, with: String| println!("{label:<36}{without:>17}{with:>15}");
    println!();
    line(
        &format!("after {} epoch{}", args.epochs, if args.epochs == 1 { "" } else { "s" }),
        "without dropout".into(),
        "with dropout".into(),
    );
    line("test accuracy", format!("{:.2}%", 100.0 * p.test_acc), format!("{:.2}%", 100.0 * d.test_acc));
    line("train loss (eval mode)", format!("{:.4}", p.train_loss), format!("{:.4}", d.train_loss));
    line("test loss", format!("{:.4}", p.test_loss), format!("{:.4}", d.test_loss));
    let (gap_p, gap_d) = (p.test_loss - p.train_loss, d.test_loss - d.train_loss);
    line("generalisation gap (test - train)", format!("{gap_p:.4}"), format!("{gap_d:.4}"));
    line(
        "best epoch (test accuracy)",
        format!("{} ({:.2}%)", pb.0, 100.0 * pb.1.test_acc),
        format!("{} ({:.2}%)", db.0, 100.0 * db.1.test_acc),
    );
    println!(
        "dropout {} the train-test loss gap ({gap_p:.4} -> {gap_d:.4}) and {} test accuracy by {:.2} points",
        if gap_d < gap_p { "narrows" } else { "does not narrow" },
        if d.test_acc >= p.test_acc { "raises" } else { "lowers" },
        100.0 * (d.test_acc - p.test_acc).abs()
    );
    println!("total time: {total:.1} s ({:.1} s per epoch for both runs)", total / trained as f64);
    println!("metrics: {}", metrics.csv_path().display());
    println!("plot: {}", metrics.svg_path().display());
    Ok(())
}

/// Restores both runs from the checkpoint at `path`, which must have been made with the same
/// `config`; returns the number of epochs it had finished.
fn restore(path: &Path, config: &StateDict, runs: &mut [Run; 2]) -> Result<usize, String> {
    let ckpt = TrainingCheckpoint::load(path).map_err(|e| e.to_string())?;
    let saved = ckpt.part("config").map_err(|e| e.to_string())?;
    for (key, want) in &config.values {
        let got = saved.values.get(key).map_or("nothing", String::as_str);
        if got != want {
            let flag = if key == "max_norm" { "max-norm".to_string() } else { key.clone() };
            return Err(format!(
                "--resume {}: the checkpoint was made with {flag} {got}, this run has {flag} {want}",
                path.display()
            ));
        }
    }
    let mut position = Position::default();
    ckpt.restore("position", &mut position).map_err(|e| e.to_string())?;
    let epochs: usize = config.values.get("epochs").and_then(|e| e.parse().ok()).unwrap_or(0);
    if position.epoch > epochs {
        return Err(format!("--resume {}: the checkpoint is at epoch {} of {epochs}", path.display(), position.epoch));
    }
    for run in runs.iter_mut() {
        run.restore(&ckpt, position.epoch).map_err(|e| e.to_string())?;
    }
    Ok(position.epoch)
}

fn main() {
    common::main(EPOCHS, &["lr", "batch", "max-norm", "save-checkpoint", "resume"], Options::parse, run);
}
