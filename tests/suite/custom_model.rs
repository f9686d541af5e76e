//! A custom model, written exactly as a user writes one with the public API, trained end to end on
//! the shipped digits with fixed seeds.

use tapegrad::nn::{self, Dropout, Linear};
use tapegrad::optim::{Optimizer, Sgd};
use tapegrad::prelude::*;

// ─── as a user writes it ──────────────────────────────────────────────────────

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

fn train(model: &mut Mlp, batches: &[(Tensor, Vec<usize>)]) -> Result<()> {
    let mut opt = Sgd::new(model.parameters(), 0.05).momentum(0.9);
    model.train();
    for (x, y) in batches {
        let loss = nn::loss::cross_entropy(&model.forward(&Var::new(x.clone()))?, y)?;
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
    }
    model.eval();
    Ok(())
}

// ─── the test ─────────────────────────────────────────────────────────────────

fn accuracy(model: &Mlp, x: &Tensor, y: &[usize]) -> Result<f64> {
    let logits = no_grad(|| model.forward(&Var::new(x.clone())))?.value();
    let predicted = logits.argmax(1)?;
    Ok(predicted.iter().zip(y).filter(|(p, t)| p == t).count() as f64 / y.len() as f64)
}

#[test]
fn the_api_md_model_learns_the_digits() -> Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-10k");
    let nn::data::Mnist::Single(all) = nn::data::load_dataset(dir)? else { panic!("mnist-10k is one set") };
    let (train_set, test_set) = all.split_at(8000)?;

    // 300 steps of batch 64: 2.4 epochs over the first 8000 digits.
    let batch = 64;
    let per_epoch = train_set.len() / batch;
    let batches: Vec<(Tensor, Vec<usize>)> = (0..300)
        .map(|step| {
            let start = (step % per_epoch) * batch;
            let x = train_set.images().narrow(0, start, batch)?;
            Ok((x, train_set.labels()[start..start + batch].to_vec()))
        })
        .collect::<Result<_>>()?;

    manual_seed(7);
    let mut model = Mlp::new(&mut Generator::new(42))?;
    let before = accuracy(&model, test_set.images(), test_set.labels())?;
    train(&mut model, &batches)?;
    assert!(!model.is_training());
    let after = accuracy(&model, test_set.images(), test_set.labels())?;
    println!("test accuracy: {:.2}% before training, {:.2}% after 300 steps", 100.0 * before, 100.0 * after);
    // Chance is 10%; a nearest-centroid classifier gets 81.6% on this split. 300 steps of SGD
    // with momentum reach well above both.
    assert!(after > 0.90, "test accuracy {after}");
    Ok(())
}

// ─── the derive on f64 and generic models ─────────────────────────────────────

#[derive(Module)]
#[module(float = f64)]
struct Wide {
    fc: Linear<f64>,
    #[module(skip)]
    _width: usize,
}

#[derive(Module)]
struct Generic<T: tapegrad::tensor::Float = f32> {
    layers: Vec<Linear<T>>,
    head: Option<Linear<T>>,
}

#[test]
fn the_derive_serves_f64_and_generic_models() {
    let mut gen = Generator::new(1);
    let wide = Wide { fc: Linear::<f64>::new(3, 2, &mut gen), _width: 3 };
    assert_eq!(wide.to_string(), "Wide(\n  (fc): Linear(in_features=3, out_features=2, bias=True)\n)");
    let g: Generic<f64> =
        Generic { layers: vec![Linear::<f64>::new(2, 2, &mut gen), Linear::<f64>::new(2, 1, &mut gen)], head: None };
    let names: Vec<String> = Module::<f64>::named_parameters(&LinearStack(g)).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.layers.0.weight", "0.layers.0.bias", "0.layers.1.weight", "0.layers.1.bias"]);
}

/// A tuple struct wrapping a generic model.
#[derive(Module)]
#[module(float = f64)]
struct LinearStack(Generic<f64>);

impl Module<f64> for LinearStack {
    fn forward(&self, x: &Var<f64>) -> Result<Var<f64>> {
        self.0.layers.iter().try_fold(x.clone(), |h, l| l.forward(&h))
    }
}
