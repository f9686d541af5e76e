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

/// Token ids in, one score per sequence out: a model whose `forward` takes `Ids`.
#[derive(Module)]
struct Bag {
    embed: Embedding,
    head: Linear,
}

impl Module<f32, Ids> for Bag {
    fn forward(&self, ids: &Ids) -> Result<Var> {
        self.head.forward(&self.embed.forward_ids(ids)?.mean(&[1], false)?)
    }
}

#[test]
fn a_regression_on_token_ids_needs_only_the_prelude() -> Result<()> {
    // The target of a sequence of 3 ids in 0..6 is the mean of the ids, and its negative.
    let mut gen = Generator::new(3);
    let ids: Vec<usize> = (0..3 * 96).map(|_| gen.below(6) as usize).collect();
    let y: Vec<f32> = ids
        .chunks(3)
        .flat_map(|s| {
            let m = s.iter().sum::<usize>() as f32 / 3.0;
            [m, -m]
        })
        .collect();
    let data = TensorDataset::new((Ids::new(ids, &[96, 3])?, Tensor::from_vec(y, &[96, 2])?))?;
    let model = Bag { embed: Embedding::new(6, 4, &mut gen), head: Linear::new(4, 2, &mut gen) };
    let mut opt = Adam::new(model.parameters(), 0.05);
    let loss_of = |model: &Bag| -> Result<f32> {
        let (ids, y) = data.columns();
        no_grad(|| mse_loss(&model.forward(ids)?, &Var::new(y.clone())))?.item()
    };
    let before = loss_of(&model)?;
    for _epoch in 0..20 {
        for batch in Batches::new(&data, 16, Some(&mut gen))?.drop_last(true) {
            let (ids, y) = batch?;
            let loss = mse_loss(&model.forward(&ids)?, &Var::new(y))?;
            opt.zero_grad();
            loss.backward()?;
            opt.step()?;
        }
    }
    let after = loss_of(&model)?;
    assert!(after < 0.05 * before, "the loss went from {before} to {after}");
    Ok(())
}
