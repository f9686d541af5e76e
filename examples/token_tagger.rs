//! A sequence model on integer tokens, trained in a plain loop: the model's `forward` takes the
//! token ids as `Ids` (`impl Module<f32, Ids>`, no float ids), an `Embedding` looks them up, a
//! GRU reads each sequence, and a linear head tags every position. The task needs memory: sequences of 4 to 12 tokens from 1..16, and the tag of each
//! position is the largest token seen so far. Sequences of a batch are padded to the longest with
//! `PAD = 0`, as input and as target, and `cross_entropy_with(.., ignore_index: Some(PAD))`
//! leaves the padding out of the loss, of the mean's count and of the gradient, as PyTorch's
//! `ignore_index` does; accuracy is counted over real tokens only.
//!
//! ```sh
//! cargo run --release --example token_tagger             # 12 epochs of 64 batches
//! cargo run --release --example token_tagger -- --smoke  # 1 epoch of 8 batches
//! ```
//!
//! Each epoch's loss, accuracy on held-out sequences and time go to `target/token_tagger.csv`,
//! their curves to `target/token_tagger.svg` (`--out PATH.svg` puts both elsewhere).

mod common;

use std::time::Instant;

use tapegrad::nn::loss::{cross_entropy_with, CrossEntropyOptions};
use tapegrad::nn::{Embedding, Linear, GRU};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::prelude::*;

use common::metrics::{Epoch, Metrics};

const VOCAB: usize = 16;
const PAD: usize = 0;
const LENGTHS: (usize, usize) = (4, 12);
const EMBED: usize = 16;
const HIDDEN: usize = 48;
const BATCH: usize = 32;
const LR: f64 = 5e-3;

/// Token ids in, one tag per position out.
#[derive(Module)]
struct Tagger {
    embed: Embedding,
    gru: GRU,
    head: Linear,
}

impl Tagger {
    fn new(gen: &mut Generator) -> Result<Tagger> {
        Ok(Tagger {
            embed: Embedding::new(VOCAB, EMBED, gen),
            gru: GRU::new(EMBED, HIDDEN, 1, gen)?.batch_first(true),
            head: Linear::new(HIDDEN, VOCAB, gen),
        })
    }
}

impl Module<f32, Ids> for Tagger {
    /// Logits `[batch * len, VOCAB]` for the token ids of a `[batch, len]` batch, row-major.
    fn forward(&self, ids: &Ids) -> Result<Var> {
        let h = self.gru.forward(&self.embed.forward_ids(ids)?)?;
        self.head.forward(&h.reshape(&[ids.numel(), HIDDEN])?)
    }
}

/// A batch of `n` random sequences padded with `PAD` to the longest: the ids `[n, len]` and the
/// targets (the running maximum, `PAD` past each sequence's end), row-major like the ids.
fn batch(n: usize, gen: &mut Generator) -> Result<(Ids, Vec<usize>)> {
    let lengths: Vec<usize> =
        (0..n).map(|_| LENGTHS.0 + gen.below((LENGTHS.1 - LENGTHS.0 + 1) as u64) as usize).collect();
    let len = lengths.iter().copied().max().unwrap_or(0);
    let (mut ids, mut targets) = (vec![PAD; n * len], vec![PAD; n * len]);
    for (row, &l) in lengths.iter().enumerate() {
        let mut max = 0;
        for t in 0..l {
            let token = 1 + gen.below((VOCAB - 1) as u64) as usize;
            max = max.max(token);
            ids[row * len + t] = token;
            targets[row * len + t] = max;
        }
    }
    Ok((Ids::new(ids, &[n, len])?, targets))
}

/// Mean loss and accuracy over the real (non-padding) positions of `batches`, in eval mode.
fn evaluate(model: &mut Tagger, batches: &[(Ids, Vec<usize>)], options: CrossEntropyOptions) -> Result<(f64, f64)> {
    model.eval();
    let (mut loss_sum, mut correct, mut real) = (0.0, 0, 0);
    for (ids, targets) in batches {
        let logits = no_grad(|| model.forward(ids))?;
        let count = targets.iter().filter(|&&t| t != PAD).count();
        loss_sum += f64::from(cross_entropy_with(&logits, targets, options)?.item()?) * count as f64;
        let predicted = logits.value().argmax(1)?;
        correct += predicted.iter().zip(targets).filter(|&(p, &t)| t != PAD && *p == t).count();
        real += count;
    }
    Ok((loss_sum / real as f64, correct as f64 / real as f64))
}

fn run(args: &common::Args) -> Result<()> {
    let steps = if args.smoke { 8 } else { 64 };
    let mut gen = Generator::new(args.seed);
    let mut model = Tagger::new(&mut gen)?;
    println!("{model}");
    let held_out: Vec<_> = (0..8).map(|_| batch(BATCH, &mut gen)).collect::<Result<_>>()?;
    let options = CrossEntropyOptions { ignore_index: Some(PAD), ..Default::default() };
    let mut opt = Adam::new(model.parameters(), LR);
    let title = format!("GRU tagger (running maximum of tokens 1..{VOCAB}), padding ignored: Adam lr {LR}");
    let mut metrics = Metrics::create(&args.out_path("token_tagger"), title, &[])?;
    println!("{:>5} {:>10} {:>10} {:>9} {:>7}", "epoch", "train loss", "test loss", "test acc", "time");
    for epoch in 1..=args.epochs {
        let start = Instant::now();
        model.train();
        let mut train_loss = 0.0;
        for _ in 0..steps {
            let (ids, targets) = batch(BATCH, &mut gen)?;
            let loss = cross_entropy_with(&model.forward(&ids)?, &targets, options)?;
            opt.zero_grad();
            loss.backward()?;
            opt.step()?;
            train_loss += f64::from(loss.item()?) / steps as f64;
        }
        let seconds = common::seconds(start);
        let (test_loss, test_acc) = evaluate(&mut model, &held_out, options)?;
        println!("{epoch:>5} {train_loss:>10.4} {test_loss:>10.4} {:>8.2}% {seconds:>6.1}s", 100.0 * test_acc);
        metrics.record("", Epoch::measured(epoch, LR, train_loss, (test_loss, test_acc), seconds))?;
    }
    println!("metrics: {}, plot: {}", metrics.csv_path().display(), metrics.svg_path().display());
    Ok(())
}

fn main() {
    common::main(12, &[], |_| Ok(()), |args, ()| run(args));
}
