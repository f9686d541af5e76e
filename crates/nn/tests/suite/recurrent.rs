//! `LSTM` and `GRU`: forward values and gradients against PyTorch (the golden crate's
//! `recurrent.json`, written by `recurrent.py` beside it: `torch.nn.LSTM` / `torch.nn.GRU` in
//! float64), PyTorch's names, shapes and initialisation, loading PyTorch weights by name through
//! the safetensors path, gradient checks through the layers' composition, the variational
//! (locked) dropouts, eval mode, and the errors.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;
use tapegrad_autograd::{gradcheck, Var};
use tapegrad_nn::dtype::*;
use tapegrad_nn::{Module, Result, GRU, LSTM};
use tapegrad_tensor::{Float, Generator, Tensor};

use golden::{assert_close, tensor};
use tapegrad_golden as golden;

// ─── against PyTorch ───────────────────────────────────────────────────────────

/// A layer of either kind, as the golden and gradient checks drive it.
enum Layer<T: Float> {
    Lstm(LSTM<T>),
    Gru(GRU<T>),
}

impl<T: Float> Layer<T> {
    fn new(kind: &str, input: usize, hidden: usize, layers: usize, gen: &mut Generator) -> Layer<T> {
        match kind {
            "LSTM" => Layer::Lstm(LSTM::<T>::new(input, hidden, layers, gen).unwrap()),
            _ => Layer::Gru(GRU::<T>::new(input, hidden, layers, gen).unwrap()),
        }
    }

    fn named_parameters(&self) -> Vec<(String, Var<T>)> {
        match self {
            Layer::Lstm(m) => m.named_parameters(),
            Layer::Gru(m) => m.named_parameters(),
        }
    }

    /// `(output, h_n, c_n)`.
    fn run(&self, x: &Var<T>, h0: Option<&Var<T>>, c0: Option<&Var<T>>) -> Result<Vec<Var<T>>> {
        Ok(match self {
            Layer::Lstm(m) => {
                let state = h0.zip(c0);
                let (y, (h, c)) = m.forward_with_state(x, state)?;
                vec![y, h, c]
            }
            Layer::Gru(m) => {
                let (y, h) = m.forward_with_state(x, h0)?;
                vec![y, h]
            }
        })
    }
}

fn cases() -> Vec<Value> {
    golden::cases("recurrent.json")
}

/// Builds the case's layer with PyTorch's parameters written into ours by name.
fn golden_layer<T: Float>(case: &Value) -> Layer<T> {
    let a = &case["args"];
    let n = |k: &str| a[k].as_u64().unwrap() as usize;
    let kind = case["kind"].as_str().unwrap();
    let mut layer = Layer::<T>::new(kind, n("input_size"), n("hidden_size"), n("num_layers"), &mut Generator::new(0));
    if a["batch_first"].as_bool().unwrap() {
        layer = match layer {
            Layer::Lstm(m) => Layer::Lstm(m.batch_first(true)),
            Layer::Gru(m) => Layer::Gru(m.batch_first(true)),
        };
    }
    let theirs = case["parameters"].as_object().unwrap();
    let ours = layer.named_parameters();
    assert_eq!(ours.len(), theirs.len(), "{}: parameter count", case["name"]);
    for (name, p) in &ours {
        let value: Tensor<T> = tensor(&theirs[name.as_str()]);
        assert_eq!(p.shape(), value.shape().to_vec(), "{name}: shape as PyTorch's");
        p.set_value(value);
    }
    layer
}

/// Forward, `sum(output * up)` backward, and every value and gradient against PyTorch's.
fn check_case<T: Float>(case: &Value, tol: f64) {
    let name = case["name"].as_str().unwrap();
    let layer = golden_layer::<T>(case);
    let input = |k: &str| case["inputs"].get(k).map(|v| Var::parameter(tensor::<T>(v)));
    let (x, h0, c0) = (input("x").unwrap(), input("h0"), input("c0"));
    let outs = layer.run(&x, h0.as_ref(), c0.as_ref()).unwrap();
    let mut loss = Var::new(Tensor::<T>::scalar(T::ZERO));
    for (k, out) in ["output", "h_n", "c_n"].iter().zip(&outs) {
        assert_close(&format!("{name}: {k}"), &out.value(), &case["outputs"][k], tol);
        loss = loss.add(&out.mul(&Var::new(tensor(&case["upstream"][k]))).unwrap().sum_all()).unwrap();
    }
    loss.backward().unwrap();
    let grads = &case["grads"];
    assert_close(&format!("{name}: dx"), &x.grad().unwrap(), &grads["x"], tol);
    for (k, s) in [("h0", &h0), ("c0", &c0)] {
        if let Some(s) = s {
            assert_close(&format!("{name}: d{k}"), &s.grad().unwrap(), &grads[k], tol);
        }
    }
    for (p, v) in layer.named_parameters() {
        assert_close(&format!("{name}: d{p}"), &v.grad().unwrap(), &grads[p.as_str()], tol);
    }
}

#[test]
fn lstm_and_gru_match_pytorch_in_f64() {
    let cases = cases();
    assert_eq!(cases.len(), 8);
    for case in &cases {
        check_case::<f64>(case, 1e-10);
    }
}

#[test]
fn lstm_and_gru_match_pytorch_in_f32() {
    for case in &cases() {
        check_case::<f32>(case, 1e-5);
    }
}

#[test]
fn pytorch_weights_load_by_name_through_safetensors() {
    let scratch = golden::Scratch::new("nn", "recurrent_load");
    for case in cases() {
        let theirs: Vec<(String, Tensor<f64>)> =
            case["parameters"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), tensor(v))).collect();
        let path = scratch.path("torch.safetensors");
        tapegrad_nn::save_tensors(&theirs, &path).unwrap();
        let a = &case["args"];
        let n = |k: &str| a[k].as_u64().unwrap() as usize;
        let batch_first = a["batch_first"].as_bool().unwrap();
        let x = Var::new(tensor::<f64>(&case["inputs"]["x"]));
        let y = if case["kind"] == "LSTM" {
            let mut m = LSTM::<f64>::new(n("input_size"), n("hidden_size"), n("num_layers"), &mut Generator::new(9))
                .unwrap()
                .batch_first(batch_first);
            tapegrad_nn::load(&mut m, &path).unwrap();
            let s = ["h0", "c0"].map(|k| case["inputs"].get(k).map(|v| Var::new(tensor::<f64>(v))));
            m.forward_with_state(&x, s[0].as_ref().zip(s[1].as_ref())).unwrap().0
        } else {
            let mut m = GRU::<f64>::new(n("input_size"), n("hidden_size"), n("num_layers"), &mut Generator::new(9))
                .unwrap()
                .batch_first(batch_first);
            tapegrad_nn::load(&mut m, &path).unwrap();
            let h0 = case["inputs"].get("h0").map(|v| Var::new(tensor::<f64>(v)));
            m.forward_with_state(&x, h0.as_ref()).unwrap().0
        };
        assert_close(case["name"].as_str().unwrap(), &y.value(), &case["outputs"]["output"], 1e-10);
    }
}

// ─── names, shapes, initialisation ─────────────────────────────────────────────

#[test]
fn parameter_names_and_shapes_are_pytorchs() {
    let mut gen = Generator::new(0);
    let names =
        |ps: Vec<(String, Var)>| -> Vec<(String, Vec<usize>)> { ps.into_iter().map(|(n, p)| (n, p.shape())).collect() };
    let lstm: LSTM = LSTM::new(3, 5, 2, &mut gen).unwrap();
    let want = |g: usize| -> Vec<(String, Vec<usize>)> {
        let mut out = vec![];
        for (l, input) in [(0, 3), (1, 5)] {
            out.push((format!("weight_ih_l{l}"), vec![g * 5, input]));
            out.push((format!("weight_hh_l{l}"), vec![g * 5, 5]));
            out.push((format!("bias_ih_l{l}"), vec![g * 5]));
            out.push((format!("bias_hh_l{l}"), vec![g * 5]));
        }
        out
    };
    assert_eq!(names(lstm.named_parameters()), want(4));
    let gru: GRU = GRU::new(3, 5, 2, &mut gen).unwrap();
    assert_eq!(names(gru.named_parameters()), want(3));
    assert_eq!(gru.named_buffers().len(), 0);
    assert_eq!(lstm.to_string(), "LSTM(3, 5, num_layers=2)");
    let gru = gru.batch_first(true).dropout(0.5).unwrap().input_dropout(0.1).unwrap().output_dropout(0.2).unwrap();
    assert_eq!(
        gru.to_string(),
        "GRU(3, 5, num_layers=2, batch_first=True, dropout=0.5, input_dropout=0.1, output_dropout=0.2)"
    );
    assert_eq!(gru.dropout_rates(), (0.5, 0.1, 0.0, 0.2));
    assert_eq!((gru.input_size(), gru.hidden_size(), gru.num_layers(), gru.is_batch_first()), (3, 5, 2, true));
}

#[test]
fn initialisation_is_pytorchs_uniform_drawn_in_name_order() {
    let hidden = 16;
    let lstm: LSTM<f64> = LSTM::<f64>::new(7, hidden, 2, &mut Generator::new(3)).unwrap();
    let bound = 1.0 / (hidden as f64).sqrt();
    // The same draws, in the same order, from the same seed.
    let mut gen = Generator::new(3);
    for (name, p) in lstm.named_parameters() {
        let want = Tensor::<f64>::rand(&p.shape(), &mut gen).mul_scalar(2.0 * bound).add_scalar(-bound);
        assert_eq!(p.value().to_vec(), want.to_vec(), "{name}");
        let v = p.value().to_vec();
        assert!(v.iter().all(|x| x.abs() <= bound), "{name} within ±1/√hidden");
        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(lo < -0.8 * bound && hi > 0.8 * bound, "{name} spans the range: [{lo}, {hi}]");
        assert!(p.requires_grad());
    }
}

#[test]
fn layouts_unbatched_and_forward_agree() -> Result<()> {
    let mut gen = Generator::new(1);
    let lstm: LSTM<f64> = LSTM::<f64>::new(3, 4, 2, &mut gen)?;
    let x = Tensor::<f64>::randn(&[5, 2, 3], &mut gen);
    let (y, (h, c)) = lstm.forward_with_state(&Var::new(x.clone()), None)?;
    assert_eq!((y.shape(), h.shape(), c.shape()), (vec![5, 2, 4], vec![2, 2, 4], vec![2, 2, 4]));
    assert_eq!(lstm.forward(&Var::new(x.clone()))?.value().to_vec(), y.value().to_vec());
    // The last layer's h at the last step is the output's last step.
    assert_eq!(y.narrow(0, 4, 1)?.value().to_vec(), h.narrow(0, 1, 1)?.value().to_vec());
    // batch_first: the same numbers, transposed.
    let bf = LSTM::<f64>::new(3, 4, 2, &mut Generator::new(1))?.batch_first(true);
    let (yb, (hb, _)) = bf.forward_with_state(&Var::new(x.transpose(0, 1)?), None)?;
    assert_eq!(yb.shape(), vec![2, 5, 4]);
    assert_eq!(yb.value().transpose(0, 1)?.to_vec(), y.value().to_vec());
    assert_eq!(hb.value().to_vec(), h.value().to_vec());
    // Unbatched: the batch element alone.
    let (yu, (hu, cu)) = lstm.forward_with_state(&Var::new(x.narrow(1, 1, 1)?.squeeze(1)?), None)?;
    assert_eq!((yu.shape(), hu.shape(), cu.shape()), (vec![5, 4], vec![2, 4], vec![2, 4]));
    let close = |a: Vec<f64>, b: Vec<f64>| a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-12);
    assert!(close(yu.value().to_vec(), y.narrow(1, 1, 1)?.value().to_vec()));
    let gru: GRU<f64> = GRU::<f64>::new(3, 4, 1, &mut gen)?;
    let (yg, hg) = gru.forward_with_state(&Var::new(x), None)?;
    assert_eq!((yg.shape(), hg.shape()), (vec![5, 2, 4], vec![1, 2, 4]));
    Ok(())
}

// ─── gradient checks through the layers ────────────────────────────────────────

/// `f` for gradcheck: inputs `[x, h0, (c0,) params...]`; the layer is rebuilt inside with the
/// given parameters swapped in and its dropouts seeded, so each call is deterministic.
#[allow(clippy::too_many_arguments)]
fn through_layer(
    lstm: bool,
    dims: (usize, usize, usize, usize),
    batch_first: bool,
    rates: (f64, f64, f64, f64),
    v: &[Var<f64>],
) -> Result<Var<f64>> {
    let (input, hidden, layers, _) = dims;
    let mut gen = Generator::new(0);
    let seeded = |m: LSTM<f64>| -> Result<LSTM<f64>> {
        m.batch_first(batch_first)
            .dropout(rates.0)?
            .input_dropout(rates.1)?
            .recurrent_dropout(rates.2)?
            .output_dropout(rates.3)
            .map(|m| m.with_seed(5))
    };
    let states = if lstm { 2 } else { 1 };
    let params = &v[1 + states..];
    let mut loss = Var::new(Tensor::<f64>::scalar(0.0));
    let outs: Vec<Var<f64>> = if lstm {
        let mut m = seeded(LSTM::<f64>::new(input, hidden, layers, &mut gen)?)?;
        swap_in(
            m.weights_mut()
                .iter_mut()
                .flat_map(|w| [&mut w.weight_ih, &mut w.weight_hh, &mut w.bias_ih, &mut w.bias_hh]),
            params,
        );
        let (y, (h, c)) = m.forward_with_state(&v[0], Some((&v[1], &v[2])))?;
        vec![y, h, c]
    } else {
        let m = GRU::<f64>::new(input, hidden, layers, &mut gen)?
            .batch_first(batch_first)
            .dropout(rates.0)?
            .input_dropout(rates.1)?
            .recurrent_dropout(rates.2)?
            .output_dropout(rates.3)?
            .with_seed(5);
        let mut m = m;
        swap_in(
            m.weights_mut()
                .iter_mut()
                .flat_map(|w| [&mut w.weight_ih, &mut w.weight_hh, &mut w.bias_ih, &mut w.bias_hh]),
            params,
        );
        let (y, h) = m.forward_with_state(&v[0], Some(&v[1]))?;
        vec![y, h]
    };
    // All outputs count, each through a different nonlinearity-free weighting (gradcheck's
    // upstream weights the one output; the states enter scaled differently).
    for (i, o) in outs.iter().enumerate() {
        loss = loss.add(&o.mul_scalar(1.0 + i as f64).sum_all())?;
    }
    // Something non-trivial of the output itself too.
    loss.add(&outs[0].tanh().sum_all())
}

fn swap_in<'a>(slots: impl Iterator<Item = &'a mut Var<f64>>, params: &[Var<f64>]) {
    for (slot, p) in slots.zip(params) {
        *slot = p.clone();
    }
}

fn gradcheck_inputs(
    lstm: bool,
    (input, hidden, layers, batch): (usize, usize, usize, usize),
    seq: usize,
    batch_first: bool,
    seed: u64,
) -> Vec<Tensor<f64>> {
    let mut gen = Generator::new(seed);
    let x = if batch_first { [batch, seq, input] } else { [seq, batch, input] };
    let mut v = vec![Tensor::<f64>::randn(&x, &mut gen), Tensor::<f64>::randn(&[layers, batch, hidden], &mut gen)];
    if lstm {
        v.push(Tensor::<f64>::randn(&[layers, batch, hidden], &mut gen));
    }
    let g = if lstm { 4 } else { 3 };
    for l in 0..layers {
        let i = if l == 0 { input } else { hidden };
        for shape in [vec![g * hidden, i], vec![g * hidden, hidden], vec![g * hidden], vec![g * hidden]] {
            v.push(Tensor::<f64>::randn(&shape, &mut gen).mul_scalar(0.6));
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn gradcheck_lstm_and_gru_over_random_shapes(
        lstm in any::<bool>(),
        input in 1usize..4,
        hidden in 1usize..4,
        layers in 1usize..3,
        batch in 1usize..3,
        seq in 1usize..4,
        batch_first in any::<bool>(),
        dropping in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let dims = (input, hidden, layers, batch);
        // Training mode with every dropout on (masks fixed by the seeds inside), or none.
        let rates = if dropping { (0.3, 0.3, 0.4, 0.3) } else { (0.0, 0.0, 0.0, 0.0) };
        let inputs = gradcheck_inputs(lstm, dims, seq, batch_first, seed);
        gradcheck(|v| through_layer(lstm, dims, batch_first, rates, v), &inputs)
            .map_err(|e| TestCaseError::fail(format!("{}: {e}", if lstm { "LSTM" } else { "GRU" })))?;
    }
}

// ─── variational (locked) dropout ──────────────────────────────────────────────

/// The dropout entries on `y`'s tape with op name `name`.
fn dropout_entries(y: &Var<f64>, name: &str) -> Vec<tapegrad_autograd::TapeEntry> {
    y.tape().into_iter().filter(|e| e.name == name && e.dropout.is_some()).collect()
}

fn mask_bits(e: &tapegrad_autograd::TapeEntry) -> Vec<bool> {
    let r = e.dropout.as_ref().unwrap();
    (0..r.numel).map(|i| r.kept(i)).collect()
}

#[test]
fn recurrent_mask_is_the_same_at_every_step_and_differs_between_sequences() -> Result<()> {
    let (seq, batch, hidden, layers) = (6, 4, 16, 2);
    let mut gen = Generator::new(2);
    for lstm in [true, false] {
        let x = Var::new(Tensor::<f64>::randn(&[seq, batch, 3], &mut gen));
        // A state that requires grad, so that step 0's dropout is recorded too.
        let h0 = Var::parameter(Tensor::<f64>::randn(&[layers, batch, hidden], &mut gen));
        let c0 = Var::parameter(Tensor::<f64>::randn(&[layers, batch, hidden], &mut gen));
        let run = |gen: &mut Generator| -> Result<Var<f64>> {
            Ok(if lstm {
                let m = LSTM::<f64>::new(3, hidden, layers, gen)?.recurrent_dropout(0.5)?.with_seed(11);
                let (y, (h, c)) = m.forward_with_state(&x, Some((&h0, &c0)))?;
                y.sum_all().add(&h.sum_all())?.add(&c.sum_all())?
            } else {
                let m = GRU::<f64>::new(3, hidden, layers, gen)?.recurrent_dropout(0.5)?.with_seed(11);
                let (y, h) = m.forward_with_state(&x, Some(&h0))?;
                y.sum_all().add(&h.sum_all())?
            })
        };
        let y = run(&mut Generator::new(0))?;
        let entries = dropout_entries(&y, "dropout");
        assert_eq!(entries.len(), seq * layers, "one recorded dropout per step and layer");
        // Grouped by where they drew: one draw per layer, replayed at every step.
        let mut groups: BTreeMap<(u64, u64), Vec<Vec<bool>>> = BTreeMap::new();
        for e in &entries {
            assert_eq!(e.shape, vec![batch, hidden]);
            let r = e.dropout.as_ref().unwrap();
            assert_eq!(r.p, 0.5);
            groups.entry((r.seed, r.offset)).or_default().push(mask_bits(e));
        }
        assert_eq!(groups.len(), layers, "one mask per layer");
        let masks: Vec<&Vec<bool>> = groups.values().map(|g| &g[0]).collect();
        for g in groups.values() {
            assert_eq!(g.len(), seq);
            assert!(g.iter().all(|m| m == &g[0]), "the same mask at every step");
            // Different for each sequence of the batch (rows of 16 units).
            let rows: Vec<&[bool]> = g[0].chunks(hidden).collect();
            assert!(rows.windows(2).all(|w| w[0] != w[1]), "rows differ: {rows:?}");
        }
        assert_ne!(masks[0], masks[1], "each layer its own mask");
        // A second forward of the same layer draws a fresh mask.
        let m = LSTM::<f64>::new(3, hidden, layers, &mut Generator::new(0))?.recurrent_dropout(0.5)?.with_seed(11);
        let first = m.forward_with_state(&x, Some((&h0, &c0)))?.0.sum_all();
        let second = m.forward_with_state(&x, Some((&h0, &c0)))?.0.sum_all();
        let (a, b) = (dropout_entries(&first, "dropout"), dropout_entries(&second, "dropout"));
        assert_ne!(mask_bits(&a[0]), mask_bits(&b[0]), "a new sequence batch, a new mask");
    }
    Ok(())
}

#[test]
fn input_dropout_drops_the_same_features_at_every_step() -> Result<()> {
    let (seq, batch, input) = (5, 3, 8);
    let mut gen = Generator::new(4);
    let lstm = LSTM::<f64>::new(input, 6, 1, &mut gen)?.input_dropout(0.5)?.with_seed(3);
    let x = Var::parameter(Tensor::<f64>::randn(&[seq, batch, input], &mut gen));
    let y = lstm.forward(&x)?;
    let shared = dropout_entries(&y, "dropout_shared");
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].dropout.as_ref().unwrap().numel, batch * input, "one mask per sequence and feature");
    y.mul(&Var::new(Tensor::<f64>::randn(&[seq, batch, 6], &mut gen)))?.sum_all().backward()?;
    let dx = x.grad().unwrap().to_vec();
    let kept = mask_bits(&shared[0]);
    assert!(kept.iter().any(|&k| k) && kept.iter().any(|&k| !k));
    for t in 0..seq {
        for (j, &k) in kept.iter().enumerate() {
            let g = dx[t * batch * input + j];
            assert_eq!(g == 0.0, !k, "step {t}, entry {j}: the gradient is zero exactly where dropped");
        }
    }
    Ok(())
}

#[test]
fn output_dropout_is_locked_and_inverted() -> Result<()> {
    let (seq, batch, hidden) = (4, 3, 10);
    let mut gen = Generator::new(5);
    let x = Var::new(Tensor::<f64>::randn(&[batch, seq, 2], &mut gen));
    for p in [0.25, 0.5] {
        let mut gru = GRU::<f64>::new(2, hidden, 1, &mut Generator::new(1))?.batch_first(true).output_dropout(p)?;
        let train = gru.forward(&x)?.value().to_vec();
        gru.eval();
        let eval = gru.forward(&x)?.value().to_vec();
        let mut dropped = 0;
        for b in 0..batch {
            for j in 0..hidden {
                let at = |t: usize| (b * seq + t) * hidden + j;
                let kept = train[at(0)] != 0.0;
                dropped += usize::from(!kept);
                for t in 0..seq {
                    let want = if kept { eval[at(t)] / (1.0 - p) } else { 0.0 };
                    assert!((train[at(t)] - want).abs() < 1e-12, "b {b} unit {j} step {t}: {} vs {want}", train[at(t)]);
                }
            }
        }
        assert!(dropped > 0 && dropped < batch * hidden);
    }
    Ok(())
}

#[test]
fn rate_one_gives_zeros_and_bad_rates_are_errors() -> Result<()> {
    let mut gen = Generator::new(6);
    let x = Var::new(Tensor::<f64>::randn(&[4, 2, 3], &mut gen));
    // Output dropout 1: zeros.
    let m = LSTM::<f64>::new(3, 5, 1, &mut Generator::new(1))?.output_dropout(1.0)?;
    assert!(m.forward(&x)?.value().to_vec().iter().all(|&v| v == 0.0));
    // Input dropout 1: as a zero input.
    let m = LSTM::<f64>::new(3, 5, 1, &mut Generator::new(1))?.input_dropout(1.0)?;
    let plain = LSTM::<f64>::new(3, 5, 1, &mut Generator::new(1))?;
    let zeros = Var::new(Tensor::<f64>::zeros(&[4, 2, 3]));
    assert_eq!(m.forward(&x)?.value().to_vec(), plain.forward(&zeros)?.value().to_vec());
    // Recurrent dropout 1: as W_hh = 0, for both cells.
    for lstm in [true, false] {
        let build = || -> Result<Layer<f64>> {
            Ok(if lstm {
                Layer::Lstm(LSTM::<f64>::new(3, 5, 2, &mut Generator::new(2))?)
            } else {
                Layer::Gru(GRU::<f64>::new(3, 5, 2, &mut Generator::new(2))?)
            })
        };
        let dropped = match build()? {
            Layer::Lstm(m) => Layer::Lstm(m.recurrent_dropout(1.0)?),
            Layer::Gru(m) => Layer::Gru(m.recurrent_dropout(1.0)?),
        };
        let zeroed = build()?;
        for (n, p) in zeroed.named_parameters() {
            if n.starts_with("weight_hh") {
                p.set_value(Tensor::<f64>::zeros(&p.shape()));
            }
        }
        let a = dropped.run(&x, None, None)?[0].value().to_vec();
        let b = zeroed.run(&x, None, None)?[0].value().to_vec();
        assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-12), "lstm {lstm}");
    }
    for bad in [-0.1, 1.5, f64::NAN] {
        let m = || LSTM::<f64>::new(3, 5, 2, &mut Generator::new(1)).unwrap();
        assert!(m().dropout(bad).is_err());
        assert!(m().input_dropout(bad).is_err());
        assert!(m().recurrent_dropout(bad).is_err());
        let e = m().output_dropout(bad).err().unwrap().to_string();
        assert!(e.contains("dropout"), "{e}");
        assert!(GRU::<f64>::new(3, 5, 2, &mut Generator::new(1))?.recurrent_dropout(bad).is_err());
    }
    Ok(())
}

#[test]
fn between_layer_dropout_is_never_after_the_last_layer() -> Result<()> {
    let mut gen = Generator::new(7);
    let x = Var::parameter(Tensor::<f64>::randn(&[5, 2, 3], &mut gen));
    for layers in [1, 2, 3] {
        let m = LSTM::<f64>::new(3, 4, layers, &mut gen)?.dropout(0.5)?.with_seed(1);
        let y = m.forward(&x)?;
        let entries = dropout_entries(&y, "dropout");
        assert_eq!(entries.len(), layers - 1, "{layers} layers");
        assert!(entries.iter().all(|e| e.shape == vec![5, 2, 4]));
    }
    Ok(())
}

#[test]
fn eval_is_deterministic_and_records_no_dropout() -> Result<()> {
    let mut gen = Generator::new(8);
    let x = Var::parameter(Tensor::<f64>::randn(&[5, 2, 3], &mut gen));
    let mut m = LSTM::<f64>::new(3, 4, 2, &mut gen)?
        .dropout(0.3)?
        .input_dropout(0.3)?
        .recurrent_dropout(0.3)?
        .output_dropout(0.3)?;
    let dropouts = |y: &Var<f64>| y.tape().iter().filter(|e| e.dropout.is_some()).count();
    let train = m.forward(&x)?;
    // Input, recurrent (2 layers × 4 steps: step 0's state is a constant zero, not recorded),
    // between the layers, output.
    assert_eq!(dropouts(&train), 1 + 2 * 4 + 1 + 1);
    assert!(m.is_training());
    m.eval();
    assert!(!m.is_training());
    let (a, b) = (m.forward(&x)?, m.forward(&x)?);
    assert_eq!(dropouts(&a), 0);
    assert_eq!(a.value().to_vec(), b.value().to_vec());
    let mut plain = LSTM::<f64>::new(3, 4, 2, &mut Generator::new(0))?;
    for ((_, p), (_, q)) in plain.named_parameters().iter().zip(m.named_parameters()) {
        p.set_value(q.value());
    }
    plain.eval();
    assert_eq!(a.value().to_vec(), plain.forward(&x)?.value().to_vec(), "eval: no dropout at all");
    // Monte Carlo dropout samples again in eval mode.
    m.mc_dropout(true);
    assert_eq!(dropouts(&m.forward(&x)?), 11);
    Ok(())
}

#[test]
fn masks_replay_from_the_same_seed_and_follow_the_default_generator() -> Result<()> {
    let mut gen = Generator::new(9);
    let x = Var::new(Tensor::<f64>::randn(&[5, 2, 3], &mut gen));
    let build = || {
        GRU::<f64>::new(3, 4, 2, &mut Generator::new(0))
            .and_then(|m| m.input_dropout(0.4)?.recurrent_dropout(0.4)?.output_dropout(0.4)?.dropout(0.4))
    };
    let seeded = |s| build().map(|m| m.with_seed(s));
    let a = seeded(3)?.forward(&x)?.value().to_vec();
    assert_eq!(a, seeded(3)?.forward(&x)?.value().to_vec());
    assert_ne!(a, seeded(4)?.forward(&x)?.value().to_vec());
    // Without its own generators, the thread's default one (`manual_seed`).
    tapegrad_autograd::manual_seed(21);
    let b = build()?.forward(&x)?.value().to_vec();
    tapegrad_autograd::manual_seed(21);
    assert_eq!(b, build()?.forward(&x)?.value().to_vec());
    Ok(())
}

// ─── errors ────────────────────────────────────────────────────────────────────

#[test]
fn bad_shapes_are_errors_naming_the_layer_and_the_shapes() -> Result<()> {
    let mut gen = Generator::new(10);
    let lstm: LSTM<f64> = LSTM::<f64>::new(3, 4, 2, &mut gen)?;
    let gru: GRU<f64> = GRU::<f64>::new(3, 4, 2, &mut gen)?;
    let v = |shape: &[usize]| Var::new(Tensor::<f64>::zeros(shape));
    let err = |r: Result<Var<f64>>| r.expect_err("an error").to_string();
    let has = |e: String, parts: &[&str]| assert!(parts.iter().all(|p| e.contains(p)), "{e} should contain {parts:?}");
    has(err(lstm.forward(&v(&[5, 2, 7]))), &["LSTM", "[5, 2, 7]", "input_size = 3"]);
    has(err(gru.forward(&v(&[5, 2, 7]))), &["GRU", "[5, 2, 7]", "input_size = 3"]);
    has(err(lstm.forward(&v(&[1, 5, 2, 3]))), &["LSTM", "[1, 5, 2, 3]", "[seq_len, batch, input_size]"]);
    has(err(gru.forward(&v(&[3]))), &["GRU", "[3]"]);
    has(err(lstm.forward(&v(&[0, 2, 3]))), &["LSTM", "[0, 2, 3]", "non-empty"]);
    has(err(gru.forward(&v(&[4, 0, 3]))), &["GRU", "[4, 0, 3]"]);
    let x = v(&[5, 2, 3]);
    let r = lstm.forward_with_state(&x, Some((&v(&[2, 3, 4]), &v(&[2, 2, 4])))).map(|r| r.0);
    has(err(r), &["LSTM", "[2, 3, 4]", "[5, 2, 3]", "h0", "[2, 2, 4]"]);
    let r = lstm.forward_with_state(&x, Some((&v(&[2, 2, 4]), &v(&[1, 2, 4])))).map(|r| r.0);
    has(err(r), &["LSTM", "[1, 2, 4]", "c0"]);
    has(err(gru.forward_with_state(&x, Some(&v(&[2, 4]))).map(|r| r.0)), &["GRU", "[2, 4]", "h0"]);
    // Unbatched input wants an unbatched state.
    has(
        err(gru.forward_with_state(&v(&[5, 3]), Some(&v(&[2, 1, 4]))).map(|r| r.0)),
        &["GRU", "[num_layers, hidden_size]"],
    );
    // batch_first names its layout.
    let bf = GRU::<f64>::new(3, 4, 1, &mut gen)?.batch_first(true);
    has(err(bf.forward(&v(&[2]))), &["GRU", "[batch, seq_len, input_size]"]);
    // A replaced weight of the wrong shape.
    let mut m = LSTM::<f64>::new(3, 4, 2, &mut gen)?;
    m.weights_mut()[1].weight_hh = Var::parameter(Tensor::<f64>::zeros(&[16, 5]));
    has(err(m.forward(&x)), &["LSTM", "weight_hh_l1", "[16, 5]", "[16, 4]"]);
    // Constructors.
    has(LSTM::<f64>::new(3, 0, 1, &mut gen).err().unwrap().to_string(), &["LSTM", "hidden_size"]);
    has(GRU::<f64>::new(3, 4, 0, &mut gen).err().unwrap().to_string(), &["GRU", "num_layers"]);
    Ok(())
}
