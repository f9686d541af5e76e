//! Every layer's walk, pinned: its parameter and buffer names in order (checkpoints are keyed by
//! them), the modes it reports and how train / eval / Monte Carlo dropout change them, its
//! printed form inside a derived model, and that it visits exactly its own element type (so
//! `nn::save(&layer, path)` infers `T` from the layer alone).

use tapegrad_nn::AvgPool2dNew;
use tapegrad_nn::BatchNorm2dNew;
use tapegrad_nn::Conv2dNew;
use tapegrad_nn::Dropout2dNew;
use tapegrad_nn::GeluNew;
use tapegrad_nn::LayerNormNew;
use tapegrad_nn::LinearNew;
use tapegrad_nn::{
    AlphaDropout, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Dropout2d, Embedding, Flatten, LayerNorm,
    Linear, MaxPool2d, Mode, Module, MultiheadAttention, ReLU, Result, Sequential, Sigmoid, Tanh,
    TransformerEncoderLayer, Var, Visit, GELU,
};
use tapegrad_tensor::{Float, Generator};

/// The names a layer visits. Generic in `T` with nothing else naming it: this compiles only if
/// the layer implements `Visit<T>` for one `T`.
fn parameter_names<T: Float, M: Visit<T> + ?Sized>(m: &M) -> Vec<String> {
    let mut out = vec![];
    m.visit_parameters("", &mut |name, _| out.push(name.to_string()));
    out
}

fn buffer_names<T: Float, M: Visit<T> + ?Sized>(m: &M) -> Vec<String> {
    let mut out = vec![];
    m.visit_buffers("", &mut |name, _| out.push(name.to_string()));
    out
}

fn modes<T: Float, M: Visit<T> + ?Sized>(m: &M) -> Vec<Mode> {
    let mut out = vec![];
    m.visit_modes(&mut |mode| out.push(mode));
    out
}

/// The walk of one layer: parameter names, buffer names, number of modes it reports.
type Walk = (Vec<String>, Vec<String>, usize);

fn walk<T: Float, M: Visit<T> + ?Sized>(m: &M) -> Walk {
    (parameter_names(m), buffer_names(m), modes(m).len())
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_layer_visits_its_parameters_buffers_and_modes_in_order() -> Result<()> {
    let mut gen = Generator::new(0);
    let wb = strings(&["weight", "bias"]);
    let w = strings(&["weight"]);
    let none: Vec<String> = vec![];
    let running = strings(&["running_mean", "running_var"]);
    let mha = strings(&["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]);

    let table: Vec<(&str, Walk, Walk)> = vec![
        ("Linear", walk(&Linear::<f32>::new(3, 2, &mut gen)), (wb.clone(), none.clone(), 0)),
        ("Linear (no bias)", walk(&Linear::<f64>::new_no_bias(3, 2, &mut gen)), (w.clone(), none.clone(), 0)),
        ("Conv2d", walk(&Conv2d::<f32>::new(1, 2, 3, 1, 0, &mut gen)), (wb.clone(), none.clone(), 0)),
        ("Conv2d (no bias)", walk(&Conv2d::<f64>::new_no_bias(1, 2, 3, 1, 0, &mut gen)), (w.clone(), none.clone(), 0)),
        ("MaxPool2d", walk(&MaxPool2d::<f32>::new(2)), (none.clone(), none.clone(), 0)),
        ("AvgPool2d", walk(&AvgPool2d::<f64>::new(2)), (none.clone(), none.clone(), 0)),
        ("Flatten", walk(&Flatten::<f32>::new()), (none.clone(), none.clone(), 0)),
        ("ReLU", walk(&ReLU::<f32>::new()), (none.clone(), none.clone(), 0)),
        ("GELU", walk(&GELU::<f64>::new()), (none.clone(), none.clone(), 0)),
        ("Tanh", walk(&Tanh::<f32>::new()), (none.clone(), none.clone(), 0)),
        ("Sigmoid", walk(&Sigmoid::<f32>::new()), (none.clone(), none.clone(), 0)),
        ("Dropout", walk(&Dropout::<f32>::new(0.5)?), (none.clone(), none.clone(), 1)),
        ("Dropout2d", walk(&Dropout2d::<f64>::new(0.5)?), (none.clone(), none.clone(), 1)),
        ("AlphaDropout", walk(&AlphaDropout::<f32>::new(0.5)?), (none.clone(), none.clone(), 1)),
        ("BatchNorm1d", walk(&BatchNorm1d::<f32>::new(3)), (wb.clone(), running.clone(), 1)),
        ("BatchNorm2d", walk(&BatchNorm2d::<f64>::new(3)), (wb.clone(), running.clone(), 1)),
        ("LayerNorm", walk(&LayerNorm::<f32>::new(&[3])), (wb.clone(), none.clone(), 0)),
        ("LayerNorm (no affine)", walk(&LayerNorm::<f64>::new_no_affine(&[3])), (none.clone(), none.clone(), 0)),
        ("Embedding", walk(&Embedding::<f32>::new(5, 3, &mut gen)), (w.clone(), none.clone(), 0)),
        ("MultiheadAttention", walk(&MultiheadAttention::<f32>::new(4, 2, 0.1, &mut gen)?), (mha.clone(), none, 1)),
    ];
    for (layer, got, expected) in table {
        assert_eq!(got, expected, "{layer}");
    }

    let t = TransformerEncoderLayer::<f32>::new(4, 2, 8, 0.1, &mut gen)?;
    let mut expected: Vec<String> = mha.iter().map(|n| format!("self_attn.{n}")).collect();
    for layer in ["linear1", "linear2", "norm1", "norm2"] {
        expected.extend(wb.iter().map(|n| format!("{layer}.{n}")));
    }
    // The attention's dropout, then dropout, dropout1, dropout2.
    assert_eq!(walk(&t), (expected, vec![], 4));

    let s: Sequential = Sequential::new()
        .add(Linear::new(3, 3, &mut gen))
        .add(BatchNorm1d::new(3))
        .add(Dropout::new(0.5)?)
        .add(LayerNorm::new(&[3]));
    let expected = (
        strings(&["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]),
        strings(&["1.running_mean", "1.running_var"]),
        2,
    );
    assert_eq!(walk(&s), expected);
    Ok(())
}

#[test]
fn every_mode_keeping_layer_follows_train_eval_and_mc_dropout() -> Result<()> {
    let mut gen = Generator::new(0);
    let mut layers: Vec<Box<dyn Module>> = vec![
        Box::new(Dropout::new(0.5)?),
        Box::new(Dropout2d::new(0.5)?),
        Box::new(AlphaDropout::new(0.5)?),
        Box::new(BatchNorm1d::new(3)),
        Box::new(BatchNorm2d::new(3)),
        Box::new(MultiheadAttention::new(4, 2, 0.1, &mut gen)?),
        Box::new(TransformerEncoderLayer::new(4, 2, 8, 0.1, &mut gen)?),
    ];
    // Every mode records every change (BatchNorm keeps the MC flag and ignores it).
    let all = |layer: &dyn Module, training: bool, mc_dropout: bool| {
        let m = modes(layer);
        !m.is_empty() && m.iter().all(|m| (m.training, m.mc_dropout) == (training, mc_dropout))
    };
    for layer in &mut layers {
        assert!(all(&**layer, true, false));
        layer.eval();
        assert!(all(&**layer, false, false) && !layer.is_training());
        layer.mc_dropout(true);
        assert!(all(&**layer, false, true));
        layer.train();
        assert!(all(&**layer, true, true) && layer.is_training());
        layer.mc_dropout(false);
        assert!(all(&**layer, true, false));
        // eval() is the deterministic network: it switches MC dropout off too.
        layer.mc_dropout(true);
        layer.eval();
        assert!(all(&**layer, false, false));
        layer.train();
    }
    Ok(())
}

/// Every layer as the child of a derived model: the tree print uses each layer's own form.
#[derive(tapegrad_nn::Module)]
struct Everything {
    fc: Linear,
    conv: Conv2d,
    max: MaxPool2d,
    avg: AvgPool2d,
    flat: Flatten,
    relu: ReLU,
    gelu: GELU,
    tanh: Tanh,
    sigmoid: Sigmoid,
    drop: Dropout,
    drop2d: Dropout2d,
    alpha: AlphaDropout,
    bn1: BatchNorm1d,
    bn2: BatchNorm2d,
    ln: LayerNorm,
    emb: Embedding,
    mha: MultiheadAttention,
    seq: Sequential,
}

impl Module for Everything {
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(x.clone())
    }
}

#[test]
fn every_layer_prints_itself_inside_a_derived_model() -> Result<()> {
    let mut gen = Generator::new(0);
    let m = Everything {
        fc: Linear::new(3, 2, &mut gen),
        conv: Conv2d::new_no_bias(1, 2, 3, 1, 1, &mut gen),
        max: MaxPool2d::new(2),
        avg: AvgPool2d::new(2),
        flat: Flatten::new(),
        relu: ReLU::new(),
        gelu: GELU::tanh_approximate(),
        tanh: Tanh::new(),
        sigmoid: Sigmoid::new(),
        drop: Dropout::new(0.5)?,
        drop2d: Dropout2d::new(0.25)?,
        alpha: AlphaDropout::new(0.1)?,
        bn1: BatchNorm1d::new(3),
        bn2: BatchNorm2d::new(2),
        ln: LayerNorm::new(&[3]),
        emb: Embedding::new(5, 3, &mut gen),
        mha: MultiheadAttention::new(4, 2, 0.0, &mut gen)?,
        seq: Sequential::new().add(Linear::new(2, 2, &mut gen)).add(ReLU::new()),
    };
    assert_eq!(
        m.to_string(),
        "Everything(
  (fc): Linear(in_features=3, out_features=2, bias=True)
  (conv): Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
  (max): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  (avg): AvgPool2d(kernel_size=2, stride=2, padding=0)
  (flat): Flatten(start_dim=1, end_dim=-1)
  (relu): ReLU()
  (gelu): GELU(approximate='tanh')
  (tanh): Tanh()
  (sigmoid): Sigmoid()
  (drop): Dropout(p=0.5)
  (drop2d): Dropout2d(p=0.25)
  (alpha): AlphaDropout(p=0.1)
  (bn1): BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (bn2): BatchNorm2d(2, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (ln): LayerNorm((3,), eps=1e-05, elementwise_affine=True)
  (emb): Embedding(5, 3)
  (mha): MultiheadAttention(
    (out_proj): Linear(in_features=4, out_features=4, bias=True)
  )
  (seq): Sequential(
    (0): Linear(in_features=2, out_features=2, bias=True)
    (1): ReLU()
  )
)"
    );
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "fc.weight",
            "fc.bias",
            "conv.weight",
            "bn1.weight",
            "bn1.bias",
            "bn2.weight",
            "bn2.bias",
            "ln.weight",
            "ln.bias",
            "emb.weight",
            "mha.in_proj_weight",
            "mha.in_proj_bias",
            "mha.out_proj.weight",
            "mha.out_proj.bias",
            "seq.0.weight",
            "seq.0.bias"
        ]
    );
    let buffers: Vec<String> = m.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(buffers, ["bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"]);
    // drop, drop2d, alpha, bn1, bn2 and the attention's dropout.
    assert_eq!(modes(&m).len(), 6);
    Ok(())
}
