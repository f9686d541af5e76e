//! The models of `cnn_mnist` and `transformer`, shared with `bench_models`, which times their
//! training steps.

use tapegrad::nn::{Conv2d, Dropout, Dropout2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, TransformerEncoderLayer};
use tapegrad::prelude::*;

/// `[N, 784]` digits seen as `[N, 1, 28, 28]` images, then features and classifier: two 3 x 3
/// convolutions (`width` and `2 * width` channels) with ReLU and 2 x 2 max-pooling,
/// `Dropout2d(0.1)` on the second's feature maps, then 128 hidden units with `Dropout(0.5)`.
#[derive(Module)]
pub struct Cnn {
    features: Sequential,
    classifier: Sequential,
}

impl Cnn {
    pub fn new(width: usize, gen: &mut Generator) -> Result<Cnn> {
        let features = Sequential::new()
            .add(Conv2d::new(1, width, 3, 1, 1, gen))
            .add(ReLU::new())
            .add(MaxPool2d::new(2))
            .add(Conv2d::new(width, 2 * width, 3, 1, 1, gen))
            .add(ReLU::new())
            .add(Dropout2d::new(0.1)?)
            .add(MaxPool2d::new(2));
        let classifier = Sequential::new()
            .add(Flatten::new())
            .add(Linear::new(2 * width * 7 * 7, 128, gen))
            .add(ReLU::new())
            .add(Dropout::new(0.5)?)
            .add(Linear::new(128, 10, gen));
        Ok(Cnn { features, classifier })
    }
}

impl Module for Cnn {
    fn forward(&self, x: &Var) -> Result<Var> {
        let images = x.reshape(&[x.shape()[0], 1, 28, 28])?;
        self.classifier.forward(&self.features.forward(&images)?)
    }
}

/// Rows of a 28 x 28 digit, and pixels per row.
pub const ROWS: usize = 28;

/// A digit as a sequence of rows → encoder → mean over rows → 10 logits.
#[derive(Module)]
pub struct RowTransformer {
    /// A row of pixels → `d_model`.
    embed: Linear,
    /// The learned positional embedding, `[28, d_model]`, added to every digit.
    pos: Var,
    layers: Vec<TransformerEncoderLayer>,
    head: Linear,
}

impl RowTransformer {
    /// `layers` encoder layers of width `d_model` with `heads` heads, a feed-forward block of
    /// `2 * d_model` and dropout `p`.
    pub fn new(d_model: usize, heads: usize, layers: usize, p: f64, gen: &mut Generator) -> Result<RowTransformer> {
        let layers = (0..layers)
            .map(|_| TransformerEncoderLayer::new(d_model, heads, 2 * d_model, p, gen))
            .collect::<Result<Vec<_>>>()?;
        Ok(RowTransformer {
            embed: Linear::new(ROWS, d_model, gen),
            // Small, as BERT and ViT initialise theirs, so the rows' content dominates at first.
            pos: Var::parameter(Tensor::randn(&[ROWS, d_model], gen).mul_scalar(0.02)),
            layers,
            head: Linear::new(d_model, 10, gen),
        })
    }
}

impl Module for RowTransformer {
    fn forward(&self, x: &Var) -> Result<Var> {
        let rows = x.reshape(&[x.shape()[0], ROWS, ROWS])?;
        // [N, 28, d] + [28, d]: the positional embedding broadcasts over the batch.
        let mut h = self.embed.forward(&rows)?.add(&self.pos)?;
        for layer in &self.layers {
            h = layer.forward(&h)?;
        }
        self.head.forward(&h.mean(&[1], false)?)
    }
}
