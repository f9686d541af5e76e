//! A whole training run gives the same bits on 1, 2, 3 and 4 threads: a CNN with both dropout
//! kinds and a transformer encoder layer (with its attention and feed-forward dropouts), trained
//! with Adam from a plain loop inside pools of each size. Every parallel loop cuts its work into pieces fixed by the shape, never by the thread
//! count (`docs/reliability.md`), so nothing the pool size changes can reach a result; the sizes
//! here are large enough that the elementwise ops, the convolutions' image loops and the GEMMs
//! all split across the pool's threads.

use tapegrad::prelude::*;

/// Images per batch: the first convolution's output, 48 x 8 x 784 elements, and the transformer's
/// activations, 48 x 28 x 64, are both past the size at which loops split.
const BATCH: usize = 48;

#[derive(Module)]
struct Model {
    features: Sequential,
    classifier: Sequential,
    embed: Linear,
    encoder: TransformerEncoderLayer,
    head: Linear,
}

impl Model {
    fn new() -> Result<Model> {
        let mut gen = Generator::new(5);
        let features = Sequential::new()
            .add(Conv2d::new(1, 8, 3, 1, 1, &mut gen))
            .add(ReLU::new())
            .add(MaxPool2d::new(2))
            .add(Dropout2d::new(0.2)?);
        let classifier = Sequential::new()
            .add(Flatten::new())
            .add(Linear::new(8 * 14 * 14, 64, &mut gen))
            .add(ReLU::new())
            .add(Dropout::new(0.5)?);
        let mut model = Model {
            features,
            classifier,
            embed: Linear::new(28, 64, &mut gen),
            encoder: TransformerEncoderLayer::new(64, 4, 128, 0.1, &mut gen)?,
            head: Linear::new(64 + 64, 10, &mut gen),
        };
        // Every dropout, the transformer's four inside included, draws from a generator of its
        // own, so the masks do not depend on which thread runs the step (each thread's default
        // generator is distinct by design).
        model.seed_generators(11);
        Ok(model)
    }
}

impl Module for Model {
    fn forward(&self, x: &Var) -> Result<Var> {
        let n = x.shape()[0];
        let cnn = self.classifier.forward(&self.features.forward(&x.reshape(&[n, 1, 28, 28])?)?)?;
        let rows = self.encoder.forward(&self.embed.forward(&x.reshape(&[n, 28, 28])?)?)?;
        self.head.forward(&Var::cat(&[&cnn, &rows.mean(&[1], false)?], 1)?)
    }
}

/// The weights' bits after three Adam steps on a pool of `threads` threads.
fn train(threads: usize) -> Vec<Vec<u32>> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| -> Result<Vec<Vec<u32>>> {
        let mut model = Model::new()?;
        model.train();
        let mut opt = Adam::new(model.parameters(), 1e-3);
        let mut data = Generator::new(3);
        for step in 0..3 {
            let x = Var::new(Tensor::randn(&[BATCH, 784], &mut data));
            let targets: Vec<usize> = (0..BATCH).map(|i| (i * 7 + step) % 10).collect();
            let loss = cross_entropy(&model.forward(&x)?, &targets)?;
            opt.zero_grad();
            loss.backward()?;
            opt.step()?;
        }
        Ok(model.parameters().iter().map(|p| p.value().to_vec().iter().map(|v| v.to_bits()).collect()).collect())
    })
    .unwrap()
}

#[test]
fn training_gives_the_same_bits_on_1_2_3_and_4_threads() {
    let one = train(1);
    assert!(one.iter().flatten().any(|&b| f32::from_bits(b) != 0.0));
    for threads in [2, 3, 4] {
        let other = train(threads);
        for (i, (a, b)) in one.iter().zip(&other).enumerate() {
            let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
            assert_eq!(differ, 0, "parameter {i}: {differ} of {} elements differ on {threads} threads", a.len());
        }
    }
}
