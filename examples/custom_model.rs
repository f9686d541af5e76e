//! A custom model written as a user writes one, as a short tour of the API: a struct of layers with
//! `#[derive(Module)]`, a hand-written `forward`, SGD with momentum, `train()` / `eval()`. Each
//! epoch's numbers go to `target/custom_model.csv`, their curves to `target/custom_model.svg`
//! (`--out PATH.svg` puts both elsewhere).
//!
//! ```sh
//! cargo run --release --example custom_model            # 3 epochs on the shipped digits
//! cargo run --release --example custom_model -- --smoke # a few hundred digits, one epoch
//! ```

mod common;

use std::time::Instant;

use tapegrad::nn::{Dropout, Linear};
use tapegrad::optim::{Optimizer, Sgd};
use tapegrad::prelude::*;

use common::metrics::{Epoch, Metrics};

#[derive(Module)]
struct Mlp {
    fc1: Linear,
    drop: Dropout,
    fc2: Linear,
}

impl Mlp {
    fn new(gen: &mut Generator) -> Result<Mlp> {
        Ok(Mlp { fc1: Linear::new(784, 256, gen), drop: Dropout::new(0.5)?, fc2: Linear::new(256, 10, gen) })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Var) -> Result<Var> {
        let h = self.fc1.forward(x)?.relu();
        self.fc2.forward(&self.drop.forward(&h)?)
    }
}

fn run(args: &common::Args) -> Result<()> {
    let split = common::load_split(args)?;
    println!("data: {}", split.source);
    manual_seed(args.seed);
    let mut gen = Generator::new(args.seed);
    let mut model = Mlp::new(&mut gen)?;
    println!("{model}");
    println!("parameters: {}", model.parameters().iter().map(|p| p.value().numel()).sum::<usize>());

    let mut opt = Sgd::new(model.parameters(), 0.05).momentum(0.9);
    let mut metrics = Metrics::create(&args.out_path("custom_model"), "Mlp 784-256-10, dropout 0.5: SGD lr 0.05", &[])?;
    for epoch in 1..=args.epochs {
        let start = Instant::now();
        let bar = common::epoch_bar(&format!("epoch {epoch}"));
        let train_loss = common::train_epoch(&mut model, &mut opt, &split.train, 64, &mut gen, &bar)?;
        bar.finish_and_clear();
        let took = common::seconds(start);
        let (test_loss, test_acc) = common::evaluate(&mut model, &split.test, 500)?;
        println!(
            "epoch {epoch}: train loss {train_loss:.4}, test loss {test_loss:.4}, test accuracy {:.2}% ({:.1} s)",
            100.0 * test_acc,
            common::seconds(start)
        );
        metrics.record("", Epoch::measured(epoch, opt.lr(), train_loss, (test_loss, test_acc), took))?;
    }
    println!("metrics: {}, plot: {}", metrics.csv_path().display(), metrics.svg_path().display());
    model.eval();
    println!("first parameter: {} {:?}", model.named_parameters()[0].0, model.named_parameters()[0].1.shape());
    println!("final learning rate: {}", opt.lr());
    Ok(())
}

fn main() {
    common::main(3, &[], |_| Ok(()), |args, ()| run(args));
}
