//! Variational (locked) dropout in a recurrent network (Gal and Ghahramani, 2016): the shipped
//! digits read row by row (28 steps of 28 pixels) by an LSTM (or a GRU), classified from the
//! last step's hidden state. The same network is trained twice from the same initial weights
//! and the same batch order, once without dropout and once with variational dropout on the
//! input rows, the recurrent state and the output; each epoch prints the training and test
//! accuracy (both in eval mode), the train-test gap and the epoch's time.
//!
//! ```sh
//! cargo run --release --example sequence_dropout                    # shipped mnist-10k, 8000 / 2000
//! cargo run --release --example sequence_dropout -- --smoke         # a few hundred digits, one epoch
//! cargo run --release --example sequence_dropout -- --cell gru --p-rec 0.3
//! ```
//!
//! Each epoch's learning rate, training loss (dropout on), training and test accuracy (eval mode)
//! and time go to `target/sequence_dropout.csv`, their curves to `target/sequence_dropout.svg`.
//!
//! Flags: `--data DIR --epochs N --threads N --seed N --out PATH.svg --smoke`, and `--cell lstm|gru`,
//! `--hidden N`, `--layers N`, `--lr`, `--batch`, `--p-in`, `--p-rec`, `--p-out` (the
//! variational rates of the dropout run).

mod common;

use std::time::Instant;

use tapegrad::nn::data::Dataset;
use tapegrad::nn::{Linear, GRU, LSTM};
use tapegrad::optim::{Adam, CosineLr, LrScheduler, Optimizer};
use tapegrad::prelude::*;

use common::metrics::Metrics;

const EPOCHS: usize = 8;
const ROWS: usize = 28;

/// Rows in, the last step's output through a linear classifier.
#[derive(Module)]
struct RowClassifier {
    lstm: Option<LSTM>,
    gru: Option<GRU>,
    fc: Linear,
}

/// The dropout rates of one run.
#[derive(Clone, Copy)]
struct Rates {
    input: f64,
    recurrent: f64,
    output: f64,
}

impl RowClassifier {
    /// The weights come from `seed` alone, so both runs start from the same network; the
    /// dropouts draw from their own generators.
    fn new(opts: &Options, rates: Rates, seed: u64) -> Result<RowClassifier> {
        let mut gen = Generator::new(seed);
        let fc = |gen: &mut Generator| Linear::new(opts.hidden, 10, gen);
        let seed = seed.wrapping_add(100);
        Ok(match opts.cell {
            Cell::Lstm => {
                let lstm = LSTM::new(ROWS, opts.hidden, opts.layers, &mut gen)?
                    .batch_first(true)
                    .input_dropout(rates.input)?
                    .recurrent_dropout(rates.recurrent)?
                    .output_dropout(rates.output)?
                    .with_seed(seed);
                RowClassifier { lstm: Some(lstm), gru: None, fc: fc(&mut gen) }
            }
            Cell::Gru => {
                let gru = GRU::new(ROWS, opts.hidden, opts.layers, &mut gen)?
                    .batch_first(true)
                    .input_dropout(rates.input)?
                    .recurrent_dropout(rates.recurrent)?
                    .output_dropout(rates.output)?
                    .with_seed(seed);
                RowClassifier { lstm: None, gru: Some(gru), fc: fc(&mut gen) }
            }
        })
    }
}

impl Module for RowClassifier {
    fn forward(&self, x: &Var) -> Result<Var> {
        // [batch, 784] → [batch, 28 rows, 28 pixels], batch first.
        let rows = x.reshape(&[x.shape()[0], ROWS, ROWS])?;
        let y = match (&self.lstm, &self.gru) {
            (Some(lstm), _) => lstm.forward(&rows)?,
            (_, Some(gru)) => gru.forward(&rows)?,
            _ => return Err(Error::arg("RowClassifier", "no recurrent layer")),
        };
        // The last step (output dropout applied), then the classifier.
        self.fc.forward(&y.narrow(1, ROWS - 1, 1)?.squeeze(1)?)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Cell {
    Lstm,
    Gru,
}

struct Options {
    cell: Cell,
    hidden: usize,
    layers: usize,
    lr: f64,
    batch: usize,
    rates: Rates,
}

impl Options {
    fn parse(args: &common::Args) -> std::result::Result<Options, String> {
        let cell = match args.extra("cell", "lstm".to_string())?.as_str() {
            "lstm" => Cell::Lstm,
            "gru" => Cell::Gru,
            other => return Err(format!("--cell: lstm or gru, not {other:?}")),
        };
        let smoke = args.smoke;
        let opts = Options {
            cell,
            hidden: args.extra("hidden", if smoke { 16 } else { 64 })?,
            layers: args.extra("layers", 1)?,
            lr: args.extra("lr", 3e-3)?,
            batch: args.extra("batch", 64)?,
            rates: Rates {
                input: args.extra("p-in", 0.1)?,
                recurrent: args.extra("p-rec", 0.25)?,
                output: args.extra("p-out", 0.25)?,
            },
        };
        if opts.batch == 0 || opts.hidden == 0 || opts.layers == 0 || args.epochs == 0 {
            return Err("--batch, --hidden, --layers and --epochs must be at least 1".into());
        }
        Ok(opts)
    }
}

/// One training: its model, optimiser, schedule and batch order.
struct Run {
    name: &'static str,
    model: RowClassifier,
    opt: Adam,
    sched: CosineLr,
    shuffle: Generator,
}

/// What one epoch measured.
struct Epoch {
    lr: f64,
    train_loss: f64,
    train_acc: f64,
    test_acc: f64,
    seconds: f64,
}

impl Run {
    fn epoch(&mut self, train: &Dataset, test: &Dataset, batch: usize, label: &str) -> Result<Epoch> {
        let bar = common::epoch_bar(label);
        let start = Instant::now();
        let lr = self.opt.lr();
        let train_loss = common::train_epoch(&mut self.model, &mut self.opt, train, batch, &mut self.shuffle, &bar)?;
        let seconds = common::seconds(start);
        bar.finish_and_clear();
        self.sched.step(&mut self.opt)?;
        let (_, train_acc) = common::evaluate(&mut self.model, train, 500)?;
        let (_, test_acc) = common::evaluate(&mut self.model, test, 500)?;
        Ok(Epoch { lr, train_loss, train_acc, test_acc, seconds })
    }
}

fn run(args: &common::Args, opts: Options) -> Result<()> {
    let split = common::load_split(args)?;
    let cell = if opts.cell == Cell::Lstm { "LSTM" } else { "GRU" };
    println!(
        "data: {}: {} train, {} test digits, read as 28 rows of 28 pixels",
        split.source,
        split.train.len(),
        split.test.len()
    );
    println!(
        "model: {cell}(28, {}, num_layers={}) batch first, last step -> Linear({}, 10); Adam lr {} (cosine to 0), batch {}, \
         epochs {}, seed {}",
        opts.hidden, opts.layers, opts.hidden, opts.lr, opts.batch, args.epochs, args.seed
    );
    let r = opts.rates;
    println!("variational dropout run: input {}, recurrent {}, output {}", r.input, r.recurrent, r.output);
    let none = Rates { input: 0.0, recurrent: 0.0, output: 0.0 };
    let mut runs = vec![];
    for (name, rates) in [("no dropout", none), ("variational", opts.rates)] {
        let model = RowClassifier::new(&opts, rates, args.seed)?;
        let opt = Adam::new(model.parameters(), opts.lr);
        let sched = CosineLr::new(args.epochs, 0.0).base_lr(opts.lr);
        runs.push(Run { name, model, opt, sched, shuffle: Generator::new(args.seed.wrapping_add(1)) });
    }
    let title = format!(
        "{cell} {} hidden, without and with variational dropout ({}, {}, {})",
        opts.hidden, r.input, r.recurrent, r.output
    );
    let mut metrics = Metrics::create(&args.out_path("sequence_dropout"), title, &[])?;
    println!();
    println!("{:>5}  {:<12} {:>9} {:>9} {:>8} {:>9}", "epoch", "run", "train acc", "test acc", "gap", "time");
    let mut last = vec![];
    let mut train_seconds = [0.0; 2];
    for epoch in 1..=args.epochs {
        last.clear();
        for (i, run) in runs.iter_mut().enumerate() {
            let e =
                run.epoch(&split.train, &split.test, opts.batch, &format!("{epoch}/{} {}", args.epochs, run.name))?;
            println!(
                "{epoch:>5}  {:<12} {:>8.2}% {:>8.2}% {:>7.2}% {:>7.1} s",
                run.name,
                100.0 * e.train_acc,
                100.0 * e.test_acc,
                100.0 * (e.train_acc - e.test_acc),
                e.seconds
            );
            train_seconds[i] += e.seconds;
            metrics.record(
                run.name,
                common::metrics::Epoch {
                    epoch,
                    lr: Some(e.lr),
                    train_loss: Some(e.train_loss),
                    train_acc: Some(e.train_acc),
                    test_acc: Some(e.test_acc),
                    seconds: Some(e.seconds),
                    ..Default::default()
                },
            )?;
            last.push((run.name, e));
        }
    }
    println!();
    println!("after {} epoch{}:", args.epochs, if args.epochs == 1 { "" } else { "s" });
    for ((name, e), seconds) in last.iter().zip(train_seconds) {
        println!(
            "  {name:<12} test accuracy {:.2}%, train accuracy {:.2}%, gap {:.2} points, {:.1} s per training epoch",
            100.0 * e.test_acc,
            100.0 * e.train_acc,
            100.0 * (e.train_acc - e.test_acc),
            seconds / args.epochs as f64
        );
    }
    println!("metrics: {}, plot: {}", metrics.csv_path().display(), metrics.svg_path().display());
    Ok(())
}

fn main() {
    common::main(EPOCHS, &["cell", "hidden", "layers", "lr", "batch", "p-in", "p-rec", "p-out"], Options::parse, run);
}
