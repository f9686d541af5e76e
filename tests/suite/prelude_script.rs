//! A whole training script written with `use tapegrad::prelude::*;` and nothing else: a derived
//! model with a plain-data field, layers, operators, a loss with `ignore_index`, an optimiser
//! with a scheduler, a dataset in shuffled batches, evaluation and a checkpoint. It must compile
//! (the prelude covers what a script needs, without clashes) and train (the loss falls).

use tapegrad::prelude::*;

#[derive(Module)]
struct Net {
    fc1: Linear,
    norm: RMSNorm,
    drop: Dropout,
    fc2: Linear,
    hidden: usize,
}

impl Net {
    fn new(hidden: usize, gen: &mut Generator) -> Result<Net> {
        Ok(Net {
            fc1: Linear::new(4, hidden, gen),
            norm: RMSNorm::new(&[hidden]),
            drop: Dropout::new(0.1)?,
            fc2: Linear::new(hidden, 3, gen),
            hidden,
        })
    }
}

impl Module for Net {
    fn forward(&self, x: &Var) -> Result<Var> {
        let h = self.norm.forward(&self.fc1.forward(x)?)?.silu();
        let h = &self.drop.forward(&h)? * 1.0 + &h * 0.0;
        self.fc2.forward(&h)
    }
}

/// Three separable classes: the class is which of the first three features is largest.
fn dataset(n: usize, gen: &mut Generator) -> Result<Dataset> {
    let x = Tensor::randn(&[n, 4], gen);
    let labels = (0..n)
        .map(|i| (0..3).max_by(|&a, &b| x.get(&[i, a]).unwrap().total_cmp(&x.get(&[i, b]).unwrap())).unwrap())
        .collect();
    Dataset::new(x, labels)
}

fn mean_loss(model: &Net, data: &Dataset) -> Result<f32> {
    no_grad(|| {
        let mut total = 0.0;
        let mut count = 0;
        for batch in Batches::new(data, 64, None)? {
            let (x, y) = batch?;
            total += cross_entropy(&model.forward(&Var::new(x))?, &y)?.item()? * y.len() as f32;
            count += y.len();
        }
        Ok(total / count as f32)
    })
}

#[test]
fn a_training_script_needs_only_the_prelude() -> Result<()> {
    manual_seed(0);
    let mut gen = Generator::new(1);
    let data = dataset(256, &mut gen)?;
    let mut model = Net::new(16, &mut gen)?;
    assert_eq!(model.hidden, 16);
    let mut opt = Adam::new(model.parameters(), 0.02);
    let mut sched = StepLr::new(2, 0.5);
    let before = mean_loss(&model, &data)?;
    let options = CrossEntropyOptions { ignore_index: Some(usize::MAX), ..Default::default() };
    for _epoch in 0..4 {
        model.train();
        for batch in Batches::new(&data, 32, Some(&mut gen))? {
            let (x, y) = batch?;
            let loss = cross_entropy_with(&model.forward(&Var::new(x))?, &y, options)?;
            opt.zero_grad();
            loss.backward()?;
            clip_grad_norm_(&model.parameters(), 5.0)?;
            opt.step()?;
        }
        sched.step(&mut opt)?;
    }
    model.eval();
    let after = mean_loss(&model, &data)?;
    assert!(after < 0.5 * before, "the loss went from {before} to {after}");

    let path = std::env::temp_dir().join(format!("tapegrad-prelude-{}.safetensors", std::process::id()));
    save(&model, &path)?;
    let mut copy = Net::new(16, &mut Generator::new(2))?;
    load(&mut copy, &path)?;
    std::fs::remove_file(&path).ok();
    copy.eval();
    assert_eq!(mean_loss(&copy, &data)?, after);
    Ok(())
}
