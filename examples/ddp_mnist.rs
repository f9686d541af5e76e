//! Data-parallel training over MPI: the MLP of `mnist_dropout` (784-1024-1024-10, ReLU, dropout
//! 0.2 on the input and 0.5 after each hidden layer), or with `--model cnn` the CNN of
//! `cnn_mnist`, trained on the shipped digits with [`DistributedDataParallel`]. Every global batch is cut into `--micro` micro-batches; each
//! process computes its block of them and the gradients are summed in a fixed order, so the
//! weights are bit-identical on 1, 2 or 4 processes (compare the `weights:` fingerprint line).
//! Rank 0 alone prints, shows the progress bar, evaluates and writes the checkpoint. Needs the `mpi` feature and Open MPI
//! (see `docs/distributed.md`).
//!
//! ```sh
//! cargo build --release --features mpi --example ddp_mnist
//! mpirun -np 2 target/release/examples/ddp_mnist --threads 1            # 2 processes x 1 thread
//! mpirun -np 1 target/release/examples/ddp_mnist --threads 2            # 1 process x 2 threads
//! mpirun -np 2 target/release/examples/ddp_mnist -- --smoke             # a few hundred digits
//! ```
//!
//! Flags: `--data DIR --epochs N --threads N --seed N --smoke`, and `--lr` (0.1, cosine to 0),
//! `--batch` (the global batch, 128), `--micro` (micro-batches per global batch, 8: at least the
//! number of processes), `--model mlp|cnn` (`--width`: the CNN's first channels, 16),
//! `--overlap true|false` (reduce the gradient bucket by bucket during the last micro-batch's
//! backward, or after it; true), `--bucket-cap-mb` (25), `--save-checkpoint PATH` (rank 0 writes
//! the run's state after every epoch), `--resume PATH` (every process reads it: a path all of
//! them can see).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use indicatif::ProgressBar;

use common::models::Cnn;
use tapegrad::distributed::comm::mpi::{launch, MpiComm};
use tapegrad::distributed::{Communicator, DistributedDataParallel, DistributedSampler};
use tapegrad::nn::data::Dataset;
use tapegrad::nn::{Dropout, Linear, Position, TrainingCheckpoint};
use tapegrad::optim::{CosineLr, LrScheduler, Optimizer, Sgd, StateDict};
use tapegrad::prelude::*;

const HIDDEN: usize = 1024;
const EPOCHS: usize = 5;
const LR: f64 = 0.1;
const BATCH: usize = 128;
const MICRO: usize = 8;
const EVAL_BATCH: usize = 1000;

/// 784-1024-1024-10 with ReLU and dropout; the dropout layers draw from the thread's default
/// generator, which the data-parallel step seeds for every micro-batch.
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
    fn new(seed: u64) -> Result<Mlp> {
        let mut gen = Generator::new(seed);
        Ok(Mlp {
            drop_in: Dropout::new(0.2)?,
            fc1: Linear::new(784, HIDDEN, &mut gen),
            drop1: Dropout::new(0.5)?,
            fc2: Linear::new(HIDDEN, HIDDEN, &mut gen),
            drop2: Dropout::new(0.5)?,
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

/// The example's own flags.
struct Options {
    lr: f64,
    batch: usize,
    micro: usize,
    model: String,
    width: usize,
    overlap: bool,
    bucket_cap_mb: f64,
    save_checkpoint: Option<PathBuf>,
    resume: Option<PathBuf>,
}

impl Options {
    fn parse(args: &common::Args) -> Result<Options, String> {
        let lr: f64 = args.extra("lr", LR)?;
        let batch: usize = args.extra("batch", BATCH)?;
        let micro: usize = args.extra("micro", MICRO)?;
        let model: String = args.extra("model", "mlp".to_string())?;
        let width: usize = args.extra("width", 16)?;
        let overlap: bool = args.extra("overlap", true)?;
        let bucket_cap_mb: f64 = args.extra("bucket-cap-mb", 25.0)?;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(format!("--lr {lr}: it must be a positive number"));
        }
        if batch == 0 || micro == 0 || width == 0 || args.epochs == 0 {
            return Err("--batch, --micro, --width and --epochs must be at least 1".into());
        }
        if model != "mlp" && model != "cnn" {
            return Err(format!("--model {model}: mlp or cnn"));
        }
        let path = |name: &str| -> Result<Option<PathBuf>, String> {
            let p: String = args.extra(name, String::new())?;
            Ok((!p.is_empty()).then(|| PathBuf::from(p)))
        };
        Ok(Options {
            lr,
            batch,
            micro,
            model,
            width,
            overlap,
            bucket_cap_mb,
            save_checkpoint: path("save-checkpoint")?,
            resume: path("resume")?,
        })
    }
}

/// A short fingerprint of the weights' bits (FNV-1a), equal on every world size.
fn fingerprint(model: &impl Module) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in model.parameters() {
        for v in p.value().to_vec() {
            for b in v.to_bits().to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    h
}

fn run(comm: &MpiComm, args: &common::Args, opts: &Options) -> Result<()> {
    if opts.model == "cnn" {
        let model = Cnn::new(opts.width, &mut Generator::new(args.seed))?;
        let described =
            format!("CNN (conv {0}, conv {1}, 128, 10; Dropout2d 0.1, dropout 0.5)", opts.width, 2 * opts.width);
        train(comm, args, opts, model, &described)
    } else {
        train(comm, args, opts, Mlp::new(args.seed)?, &format!("784-{HIDDEN}-{HIDDEN}-10, dropout 0.2 / 0.5"))
    }
}

fn train<M: Module>(comm: &MpiComm, args: &common::Args, opts: &Options, mut model: M, described: &str) -> Result<()> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let split = common::load_split(args)?;
    let train: &Dataset = &split.train;
    model.train();
    let mut ddp = DistributedDataParallel::new(model, comm, opts.micro, args.seed)?
        .overlap(opts.overlap)
        .bucket_cap_mb(opts.bucket_cap_mb)?;
    let mut opt = Sgd::new(ddp.module().parameters(), opts.lr).momentum(0.9);
    let mut sched = CosineLr::new(args.epochs, 0.0).base_lr(opts.lr);
    let sampler = DistributedSampler::new(train.len(), opts.batch, opts.micro, rank, world, args.seed)?;
    ddp.print_main(format!("data: {}: {} train, {} test images", split.source, train.len(), split.test.len()));
    ddp.print_main(format!(
        "processes: {world}, threads per process: {}, kernels: {}, seed: {}",
        rayon::current_num_threads(),
        tapegrad::tensor::cpu_capability(),
        args.seed
    ));
    ddp.print_main(format!(
        "model: {described}; SGD lr {} (cosine), momentum 0.9; global batch {}, {} micro-batches ({} per process)",
        opts.lr,
        opts.batch,
        opts.micro,
        opts.micro / world
    ));
    ddp.print_main(format!(
        "gradient reduction: {}, buckets of {:?} numbers",
        if opts.overlap { "overlapped with the last micro-batch's backward" } else { "after the backward" },
        ddp.bucket_sizes()
    ));
    // What must match for a checkpoint to continue this run (not the world size: any fits).
    let config = {
        let mut c = StateDict::of_kind("ddp_mnist");
        for (k, v) in [("seed", args.seed.to_string()), ("lr", opts.lr.to_string()), ("batch", opts.batch.to_string())]
        {
            c.set(k, v);
        }
        c.set("micro", opts.micro);
        c.set("epochs", args.epochs);
        c.set("data", &split.source);
        c.set("model", &opts.model);
        c.set("width", opts.width);
        c
    };
    let mut done = 0;
    if let Some(path) = &opts.resume {
        let ckpt = TrainingCheckpoint::load(path)?;
        let saved = ckpt.part("config")?;
        if saved.values != config.values {
            return Err(tapegrad::Error::arg(
                "ddp_mnist",
                format!(
                    "--resume {}: made with other flags ({:?}, this run {:?})",
                    path.display(),
                    saved.values,
                    config.values
                ),
            ));
        }
        ckpt.restore_model("model", ddp.module_mut())?;
        ckpt.restore("optimizer", &mut opt)?;
        ckpt.restore("scheduler", &mut sched)?;
        let mut at = Position::default();
        ckpt.restore("position", &mut at)?;
        done = at.epoch;
        ddp.set_step_count((done * sampler.batches_per_epoch()) as u64);
        ddp.print_main(format!("resumed from {} after epoch {done}", path.display()));
    }
    ddp.print_main("epoch | train loss  test loss  test acc |  time   step  compute  comm (rank 0)");
    let start = Instant::now();
    for epoch in done..args.epochs {
        let epoch_start = Instant::now();
        ddp.reset_times();
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        // Rank 0's progress bar (hidden when stderr is not a terminal); the others draw none.
        let bar =
            if ddp.is_main() { common::epoch_bar(&format!("epoch {}", epoch + 1)) } else { ProgressBar::hidden() };
        bar.set_length(sampler.batches_per_epoch() as u64);
        for batch in sampler.epoch(epoch as u64) {
            let loss = ddp.forward_backward(&batch, |model, mb| {
                let (x, y) = mb.gather(train)?;
                tapegrad::nn::loss::cross_entropy(&model.forward(&Var::new(x))?, &y)
            })?;
            opt.step()?;
            loss_sum += loss * batch.len as f64;
            seen += batch.len;
            bar.inc(1);
        }
        bar.finish_and_clear();
        sched.step(&mut opt)?;
        let elapsed = common::seconds(epoch_start);
        let times = ddp.times();
        if ddp.is_main() {
            let (test_loss, acc) = common::evaluate(ddp.module_mut(), &split.test, EVAL_BATCH)?;
            let per_step = |d: std::time::Duration| 1e3 * d.as_secs_f64() / times.steps.max(1) as f64;
            println!(
                "{:>5} | {:>10.4} {:>10.4} {:>8.2}% | {elapsed:>5.1} s {:>5.1} ms {:>6.1} ms {:>5.1} ms",
                epoch + 1,
                loss_sum / seen.max(1) as f64,
                test_loss,
                100.0 * acc,
                1e3 * elapsed / times.steps.max(1) as f64,
                per_step(times.compute),
                per_step(times.communicate),
            );
        }
        if let Some(path) = &opts.save_checkpoint {
            let mut ckpt = TrainingCheckpoint::new()
                .with_model("model", ddp.module())?
                .with("optimizer", &opt)?
                .with("scheduler", &sched)?
                .with("position", &Position { epoch: epoch + 1, batch: 0 })?;
            ckpt.insert("config", config.clone())?;
            ddp.save_checkpoint(&ckpt, path)?;
        }
    }
    ddp.print_main(format!("training time: {:.1} s", common::seconds(start)));
    ddp.print_main(format!("weights: {:016x} (the same on any number of processes)", fingerprint(ddp.module())));
    Ok(())
}

fn main() {
    let extra = ["lr", "batch", "micro", "model", "width", "overlap", "bucket-cap-mb", "save-checkpoint", "resume"];
    let parsed = common::parse_args(std::env::args().collect(), EPOCHS, &extra)
        .and_then(|args| Options::parse(&args).map(|o| (args, o)))
        .and_then(|(args, o)| common::init_threads(args.threads).map(|_| (args, o)));
    let (args, opts) = match parsed {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    launch(|comm| run(comm, &args, &opts));
}
