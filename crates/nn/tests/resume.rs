//! Resuming bit for bit: a small MLP with dropout (one layer on its own generator, one on the
//! thread's default generator), trained on shuffled synthetic batches with a scheduler, gives
//! exactly the same weights, optimiser state, generators and position after 200 straight steps
//! as after 100 steps, a checkpoint, a fresh process that loads it, and 100 more steps.
//!
//! The default generator is process-wide state and the resumed half must run in a fresh
//! process, so this binary runs without the test harness (see `[[test]]` in Cargo.toml): `main`
//! runs the checks one after another, and re-runs this same executable with
//! `TAPEGRAD_RESUME_CHILD` set for the resumed half.

use std::path::{Path, PathBuf};
use std::process::Command;

use tapegrad_autograd::{manual_seed, Var};
use tapegrad_nn::data::{Batches, Dataset};
use tapegrad_nn::optim::{Adam, CosineLr, LrScheduler, Optimizer, Sgd, StepLr};
use tapegrad_nn::{loss, Dropout, Linear, Module, Position, StateDict, Stateful, TrainingCheckpoint};
use tapegrad_tensor::{Error, Generator, Result, Tensor};

const CHILD: &str = "TAPEGRAD_RESUME_CHILD";
const N: usize = 96;
const FEATURES: usize = 8;
const CLASSES: usize = 4;
const BATCH: usize = 16;
const STEPS: usize = 200;

#[derive(Module)]
struct Mlp {
    fc1: Linear,
    drop_own: Dropout,
    fc2: Linear,
    drop_default: Dropout,
    fc3: Linear,
}

impl Mlp {
    fn new(hidden: usize, seed: u64) -> Result<Mlp> {
        let mut gen = Generator::new(seed);
        Ok(Mlp {
            fc1: Linear::new(FEATURES, hidden, &mut gen),
            drop_own: Dropout::new(0.3)?.with_generator(Generator::new(seed + 100)),
            fc2: Linear::new(hidden, hidden, &mut gen),
            drop_default: Dropout::new(0.2)?,
            fc3: Linear::new(hidden, CLASSES, &mut gen),
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Var) -> Result<Var> {
        let h = self.drop_own.forward(&self.fc1.forward(x)?.relu())?;
        let h = self.drop_default.forward(&self.fc2.forward(&h)?.relu())?;
        self.fc3.forward(&h)
    }
}

/// An optimiser whose state can be saved.
trait Opt: Optimizer + Stateful {}
impl<O: Optimizer + Stateful> Opt for O {}

/// A scheduler whose state can be saved.
trait Sched: LrScheduler + Stateful {}
impl<S: LrScheduler + Stateful> Sched for S {}

/// One training run: the model, its optimiser and scheduler, the shuffling generator as it was
/// at the start of the current epoch, and the position in the data.
struct Run {
    model: Mlp,
    opt: Box<dyn Opt>,
    sched: Box<dyn Sched>,
    shuffle: Generator,
    pos: Position,
}

impl Run {
    /// A fresh run of configuration `config` (`"adam"`: Adam with StepLR; `"sgd"`: SGD with
    /// Nesterov momentum and weight decay, with cosine annealing), all from `seed`.
    fn new(config: &str, seed: u64) -> Result<Run> {
        let model = Mlp::new(16, seed)?;
        let (opt, sched): (Box<dyn Opt>, Box<dyn Sched>) = match config {
            "adam" => (Box::new(Adam::new(model.parameters(), 0.01)), Box::new(StepLr::new(5, 0.7))),
            "sgd" => (
                Box::new(Sgd::new(model.parameters(), 0.05).momentum(0.9).nesterov(true).weight_decay(1e-3)),
                Box::new(CosineLr::new(20, 0.001)),
            ),
            _ => return Err(Error::arg("resume test", format!("unknown config {config:?}"))),
        };
        Ok(Run { model, opt, sched, shuffle: Generator::new(seed + 1), pos: Position::default() })
    }

    /// Trains `steps` batches from where the run is.
    fn train(&mut self, data: &Dataset, steps: usize) -> Result<()> {
        self.model.train();
        let mut done = 0;
        while done < steps {
            let mut gen = self.shuffle.clone();
            let mut batches = Batches::new(data, BATCH, Some(&mut gen))?.resume_at(self.pos.batch)?;
            loop {
                if done == steps {
                    return Ok(());
                }
                let Some(batch) = batches.next() else { break };
                let (x, y) = batch?;
                let loss = loss::cross_entropy(&self.model.forward(&Var::new(x))?, &y)?;
                self.opt.zero_grad();
                loss.backward()?;
                self.opt.step()?;
                self.pos.batch += 1;
                done += 1;
            }
            // The end of the epoch: the scheduler steps and the next epoch's order comes from
            // the generator as the permutation left it.
            self.sched.step(&mut *self.opt)?;
            self.shuffle = gen;
            self.pos = Position { epoch: self.pos.epoch + 1, batch: 0 };
        }
        Ok(())
    }

    /// Everything needed to resume (`with_model` saves `drop_own`'s generator with the model,
    /// as part `model.generators`).
    fn checkpoint(&self) -> Result<TrainingCheckpoint> {
        TrainingCheckpoint::new()
            .with_model("model", &self.model)?
            .with("optimizer", &*self.opt)?
            .with("scheduler", &*self.sched)?
            .with("shuffle", &self.shuffle)?
            .with("position", &self.pos)?
            .with_default_generator()
    }

    /// Restores everything [`Run::checkpoint`] saved.
    fn restore(&mut self, ckpt: &TrainingCheckpoint) -> Result<()> {
        ckpt.restore_model("model", &mut self.model)?;
        ckpt.restore("optimizer", &mut *self.opt)?;
        ckpt.restore("scheduler", &mut *self.sched)?;
        ckpt.restore("shuffle", &mut self.shuffle)?;
        ckpt.restore("position", &mut self.pos)?;
        ckpt.restore_default_generator()
    }
}

/// 96 samples of 8 features, labelled by which of 4 fixed directions they lean most towards.
fn data() -> Result<Dataset> {
    let x = Tensor::<f32>::randn(&[N, FEATURES], &mut Generator::new(2024));
    let w = Tensor::<f32>::randn(&[FEATURES, CLASSES], &mut Generator::new(7));
    let labels = x.matmul(&w)?.argmax(1)?;
    Dataset::new(x, labels)
}

/// The parts two checkpoints disagree on, bit for bit (tensors by their bits, values by text).
fn differences(a: &TrainingCheckpoint, b: &TrainingCheckpoint) -> Result<Vec<String>> {
    let names: Vec<&str> = a.names().collect();
    if names != b.names().collect::<Vec<_>>() {
        return Ok(vec![format!("parts {names:?} and {:?}", b.names().collect::<Vec<_>>())]);
    }
    let mut out = vec![];
    for name in names {
        let (x, y): (&StateDict, &StateDict) = (a.part(name)?, b.part(name)?);
        if x.values != y.values {
            out.push(format!("{name}: values {:?} and {:?}", x.values, y.values));
        }
        if x.tensors.keys().ne(y.tensors.keys()) {
            out.push(format!("{name}: tensors {:?} and {:?}", x.tensors.keys(), y.tensors.keys()));
            continue;
        }
        for (key, t) in &x.tensors {
            let u = &y.tensors[key];
            let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            if t.shape() != u.shape() || bits(t) != bits(u) {
                out.push(format!("{name}/{key} differs"));
            }
        }
    }
    Ok(out)
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tapegrad-resume-{}-{name}.safetensors", std::process::id()))
}

/// The resumed half, in a fresh process: a run built from other seeds (so that only the
/// checkpoint can make it right), restored, trained `STEPS / 2` more steps, saved to `out`.
fn child(config: &str, from: &Path, out: &Path) -> Result<()> {
    manual_seed(999);
    let mut run = Run::new(config, 12345)?;
    run.restore(&TrainingCheckpoint::load(from)?)?;
    run.train(&data()?, STEPS / 2)?;
    run.checkpoint()?.save(out)
}

/// 200 straight steps against 100, save, load in a fresh process, 100 more.
fn resumes_bit_for_bit(config: &str) -> Result<()> {
    let data = data()?;
    manual_seed(1);
    let mut straight = Run::new(config, 1)?;
    straight.train(&data, STEPS)?;
    let want = straight.checkpoint()?;

    manual_seed(1);
    let mut first = Run::new(config, 1)?;
    first.train(&data, STEPS / 2)?;
    let half = first.checkpoint()?;
    assert_ne!(first.pos.batch, 0, "the checkpoint is taken mid-epoch");
    let (from, out) = (temp(&format!("{config}-half")), temp(&format!("{config}-end")));
    half.save(&from)?;
    let status = Command::new(std::env::current_exe().map_err(|e| Error::io("current_exe", e))?)
        .env(CHILD, format!("{config}\n{}\n{}", from.display(), out.display()))
        .status()
        .map_err(|e| Error::io("resume child", e))?;
    assert!(status.success(), "{config}: the resumed process failed: {status}");
    let got = TrainingCheckpoint::load(&out)?;
    std::fs::remove_file(&from).ok();
    std::fs::remove_file(&out).ok();

    let diff = differences(&want, &got)?;
    assert!(diff.is_empty(), "{config}: the resumed run differs from the straight one:\n{}", diff.join("\n"));
    // Guards against a comparison that could not fail: the second half changed the weights, the
    // moments and every generator.
    let changed = differences(&half, &got)?;
    for part in ["model/", "optimizer", "scheduler", "shuffle", "model.generators", "position", "default_generator"] {
        assert!(changed.iter().any(|d| d.starts_with(part)), "{config}: {part} did not change: {changed:?}");
    }
    println!("{config}: 100 + 100 steps across two processes equal 200 straight steps, bit for bit");
    Ok(())
}

/// Resuming into something that does not fit is an `Err` that says what, and changes nothing.
fn mismatches_are_errors() -> Result<()> {
    let data = data()?;
    manual_seed(3);
    let mut run = Run::new("adam", 3)?;
    run.train(&data, 8)?;
    let path = temp("mismatch");
    run.checkpoint()?.save(&path)?;
    let ckpt = TrainingCheckpoint::load(&path)?;
    let text = |r: Result<()>| r.err().map(|e| e.to_string()).unwrap_or_default();

    // A model with another hidden size: every mismatch named, nothing changed.
    let mut wide = Mlp::new(32, 3)?;
    let before = wide.fc1.weight.value().to_vec();
    let e = text(ckpt.restore_model("model", &mut wide));
    assert!(
        e.contains("\"fc1.weight\" has shape [16, 8], the model wants [32, 8]") && e.contains("part \"model\""),
        "{e}"
    );
    assert_eq!(wide.fc1.weight.value().to_vec(), before);

    // An optimiser over other parameters, or of another kind.
    let model = Mlp::new(16, 3)?;
    let mut fewer = Adam::new(model.fc1.parameters(), 0.01);
    let e = text(ckpt.restore("optimizer", &mut fewer));
    assert!(e.contains("over 6 parameters, this one has 2"), "{e}");
    let mut sgd = Sgd::new(model.parameters(), 0.1);
    let e = text(ckpt.restore("optimizer", &mut sgd));
    assert!(e.contains("the state is of a Adam, not of a SGD"), "{e}");
    let mut wide_opt = Adam::new(wide.parameters(), 0.01);
    let e = text(ckpt.restore("optimizer", &mut wide_opt));
    assert!(e.contains("exp_avg.0") && e.contains("[16, 8]") && e.contains("[32, 8]"), "{e}");
    let e = text(ckpt.restore("scheduler", &mut CosineLr::new(3, 0.0)));
    assert!(e.contains("not of a CosineAnnealingLR"), "{e}");
    let e = text(ckpt.restore("nothing", &mut Position::default()));
    assert!(e.contains("no part \"nothing\""), "{e}");

    // A state dict edited by hand: a lying step count, a missing moment.
    let mut state = run.opt.state_dict();
    state.set("step.0", "-1");
    let e = text(fewer_params(&model).load_state_dict(&state));
    assert!(e.contains("\"step.0\""), "{e}");
    let mut state = run.opt.state_dict();
    state.tensors.remove("exp_avg_sq.1");
    let mut adam = Adam::new(model.parameters(), 0.5);
    let e = text(adam.load_state_dict(&state));
    assert!(e.contains("all or none of step.1"), "{e}");
    assert_eq!(adam.lr(), 0.5, "a refused state changes nothing");

    // Files that are not training checkpoints of this dtype, or are cut short.
    tapegrad_nn::save(&model, &path)?;
    let e = TrainingCheckpoint::<f32>::load(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("not a training checkpoint"), "{e}");
    run.checkpoint()?.save(&path)?;
    let e = TrainingCheckpoint::<f64>::load(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("dtype F32, expected F64"), "{e}");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    for cut in [0, 7, 8, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).map_err(|e| Error::io(&path, e))?;
        assert!(TrainingCheckpoint::<f32>::load(&path).is_err(), "cut at {cut}");
    }
    std::fs::remove_file(&path).ok();
    println!("mismatched models, optimisers, schedulers and files are errors");
    Ok(())
}

/// Six parameters in an Adam, as the checkpointed one has.
fn fewer_params(model: &Mlp) -> Adam {
    Adam::new(model.parameters(), 0.01)
}

fn main() -> Result<()> {
    if let Ok(args) = std::env::var(CHILD) {
        let parts: Vec<&str> = args.split('\n').collect();
        let [config, from, out] = parts[..] else { panic!("{CHILD}: expected three lines, got {args:?}") };
        return child(config, Path::new(from), Path::new(out));
    }
    resumes_bit_for_bit("adam")?;
    resumes_bit_for_bit("sgd")?;
    mismatches_are_errors()
}
