//! The layers of issue 16's first increment: `Conv1d` against a direct loop, `GroupNorm` and
//! `RMSNorm` against hand-computed statistics, each with a gradient check in f64 and errors
//! naming the layer; `TransformerEncoder` against its layers applied one by one, and causal
//! (an output never depends on later positions under `causal_mask`); the positional encoding.

use tapegrad_autograd::{gradcheck, Var};
use tapegrad_nn::dtype::*;
use tapegrad_nn::{
    causal_mask, sinusoidal_positional_encoding, Conv1d, GroupNorm, LayerNorm, Module, RMSNorm,
    SinusoidalPositionalEncoding, TransformerEncoder, TransformerEncoderLayer,
};
use tapegrad_tensor::{Generator, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::<f64>::randn(shape, &mut Generator::new(seed))
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "{what}[{i}]: got {g}, want {w}");
    }
}

// ─── Conv1d ────────────────────────────────────────────────────────────────────

/// `y[n, o, i] = b[o] + Σ_c Σ_j w[o, c, j] x_pad[n, c, i s + j]`, by loops.
fn conv1d_by_hand(x: &Tensor<f64>, w: &Tensor<f64>, b: &Tensor<f64>, s: usize, p: usize) -> Vec<f64> {
    let (n, c, l) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let (o, k) = (w.shape()[0], w.shape()[2]);
    let out = (l + 2 * p - k) / s + 1;
    let mut y = vec![];
    for ni in 0..n {
        for oi in 0..o {
            for i in 0..out {
                let mut acc = b.get(&[oi]).unwrap();
                for ci in 0..c {
                    for j in 0..k {
                        let pos = (i * s + j) as isize - p as isize;
                        if pos >= 0 && (pos as usize) < l {
                            acc += w.get(&[oi, ci, j]).unwrap() * x.get(&[ni, ci, pos as usize]).unwrap();
                        }
                    }
                }
                y.push(acc);
            }
        }
    }
    y
}

#[test]
fn conv1d_matches_the_direct_sum_for_strides_and_paddings() {
    let x = randn(&[2, 3, 9], 1);
    for (k, s, p) in [(3, 1, 0), (3, 2, 1), (1, 1, 0), (5, 3, 2), (4, 1, 3)] {
        let (w, b) = (randn(&[4, 3, k], 2), randn(&[4], 3));
        let conv = Conv1d::from_tensors(w.clone(), Some(b.clone()), s, p).unwrap();
        let y = conv.forward(&Var::new(x.clone())).unwrap();
        let want = conv1d_by_hand(&x, &w, &b, s, p);
        assert_eq!(y.shape(), vec![2, 4, (9 + 2 * p - k) / s + 1]);
        assert_close(&format!("conv1d k={k} s={s} p={p}"), &y.value().to_vec(), &want, 1e-12);
    }
}

#[test]
fn conv1d_gradchecks_input_weight_and_bias() {
    for (s, p) in [(1, 0), (2, 1)] {
        gradcheck(
            |v| {
                let mut conv = Conv1d::from_tensors(v[1].value(), None, s, p)?;
                conv.weight = v[1].clone();
                conv.bias = Some(v[2].clone());
                conv.forward(&v[0])
            },
            &[randn(&[2, 2, 7], 4), randn(&[3, 2, 3], 5), randn(&[3], 6)],
        )
        .unwrap_or_else(|e| panic!("s={s} p={p}: {e}"));
    }
}

#[test]
fn conv1d_errors_name_the_layer_and_the_shape() {
    let conv: Conv1d = Conv1d::new(3, 4, 5, 1, 0, &mut Generator::new(0));
    let e = conv.forward(&Var::new(Tensor::zeros(&[2, 3, 4, 4]))).unwrap_err().to_string();
    assert!(e.starts_with("Conv1d: shape [2, 3, 4, 4]"), "{e}");
    let e = conv.forward(&Var::new(Tensor::zeros(&[2, 2, 8]))).unwrap_err().to_string();
    assert!(e.contains("expected 3 input channels"), "{e}");
    let e = conv.forward(&Var::new(Tensor::zeros(&[2, 3, 4]))).unwrap_err().to_string();
    assert!(e.contains("longer than the padded input"), "{e}");
    assert!(Conv1d::from_tensors(Tensor::<f32>::zeros(&[4, 3]), None, 1, 0).is_err());
    assert!(Conv1d::from_tensors(Tensor::<f32>::zeros(&[4, 3, 2]), None, 0, 0).is_err());
    let names: Vec<String> = conv.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight", "bias"]);
    assert_eq!(conv.parameters()[0].shape(), vec![4, 3, 5]);
}

// ─── GroupNorm ─────────────────────────────────────────────────────────────────

#[test]
fn group_norm_normalises_each_group_by_hand() {
    let (n, c, l, g) = (2, 6, 5, 3);
    let x = randn(&[n, c, l], 7);
    let mut gn = GroupNorm::<f64>::new(g, c).unwrap();
    let (w, b) = (randn(&[c], 8), randn(&[c], 9));
    gn.weight = Some(Var::parameter(w.clone()));
    gn.bias = Some(Var::parameter(b.clone()));
    let y = gn.forward(&Var::new(x.clone())).unwrap().value();
    let xs = x.to_vec();
    let per = c / g * l;
    let mut want = vec![0.0; xs.len()];
    for ni in 0..n {
        for gi in 0..g {
            let start = ni * c * l + gi * per;
            let group = &xs[start..start + per];
            let mean = group.iter().sum::<f64>() / per as f64;
            let var = group.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / per as f64;
            for (k, v) in group.iter().enumerate() {
                let ch = gi * (c / g) + k / l;
                want[start + k] = (v - mean) / (var + 1e-5).sqrt() * w.to_vec()[ch] + b.to_vec()[ch];
            }
        }
    }
    assert_close("group_norm", &y.to_vec(), &want, 1e-12);
}

#[test]
fn group_norm_gradchecks_and_rejects_bad_shapes() {
    gradcheck(
        |v| {
            let mut gn = GroupNorm::<f64>::new(2, 4)?;
            gn.weight = Some(v[1].clone());
            gn.bias = Some(v[2].clone());
            gn.forward(&v[0])
        },
        &[randn(&[2, 4, 3], 10), randn(&[4], 11), randn(&[4], 12)],
    )
    .unwrap();
    let e = GroupNorm::<f32>::new(4, 6).err().unwrap().to_string();
    assert!(e.starts_with("GroupNorm: ") && e.contains("divisible"), "{e}");
    assert!(GroupNorm::<f32>::new(0, 6).is_err());
    let gn = GroupNorm::<f32>::new(2, 4).unwrap();
    let e = gn.forward(&Var::new(Tensor::zeros(&[2, 3, 5]))).unwrap_err().to_string();
    assert!(e.starts_with("GroupNorm: shape [2, 3, 5]"), "{e}");
    assert_eq!(gn.to_string(), "GroupNorm(2, 4, eps=1e-05, affine=True)");
}

// ─── RMSNorm ───────────────────────────────────────────────────────────────────

#[test]
fn rms_norm_divides_by_the_root_mean_square_by_hand() {
    let x = randn(&[3, 4], 13);
    let w = randn(&[4], 14);
    let mut norm = RMSNorm::<f64>::new(&[4]).eps(1e-3);
    norm.weight = Some(Var::parameter(w.clone()));
    let y = norm.forward(&Var::new(x.clone())).unwrap().value().to_vec();
    let mut want = vec![];
    for row in x.to_vec().chunks(4) {
        let rms = (row.iter().map(|v| v * v).sum::<f64>() / 4.0 + 1e-3).sqrt();
        want.extend(row.iter().zip(w.to_vec()).map(|(v, w)| v / rms * w));
    }
    assert_close("rms_norm", &y, &want, 1e-12);
    // The default eps is the type's machine epsilon, as PyTorch.
    assert_eq!(RMSNorm::<f64>::new(&[4]).eps_value(), f64::EPSILON);
    assert_eq!(RMSNorm::<f32>::new(&[4]).eps_value(), f32::EPSILON as f64);
}

#[test]
fn rms_norm_gradchecks_over_two_trailing_dims_and_rejects_bad_shapes() {
    gradcheck(
        |v| {
            let mut norm = RMSNorm::<f64>::new(&[2, 3]).eps(1e-2);
            norm.weight = Some(v[1].clone());
            norm.forward(&v[0])
        },
        &[randn(&[2, 2, 3], 15), randn(&[2, 3], 16)],
    )
    .unwrap();
    let norm = RMSNorm::<f32>::new(&[4]);
    let e = norm.forward(&Var::new(Tensor::zeros(&[2, 3]))).unwrap_err().to_string();
    assert!(e.starts_with("RMSNorm: shape [2, 3]"), "{e}");
    assert_eq!(norm.to_string(), "RMSNorm((4,), eps=None, elementwise_affine=True)");
}

// ─── TransformerEncoder, causal_mask ───────────────────────────────────────────

fn encoder(gen: &mut Generator) -> TransformerEncoder<f64> {
    let layers = (0..3).map(|_| TransformerEncoderLayer::<f64>::new(8, 2, 16, 0.0, gen).unwrap()).collect::<Vec<_>>();
    TransformerEncoder::new(layers).with_norm(LayerNorm::<f64>::new(&[8]))
}

#[test]
fn transformer_encoder_applies_its_layers_in_order_then_the_norm() {
    let gen = &mut Generator::new(17);
    let enc = encoder(gen);
    let x = Var::new(randn(&[2, 5, 8], 18));
    let mask = causal_mask::<f64>(5).unwrap();
    let mut h = x.clone();
    for layer in &enc.layers {
        h = layer.forward_masked(&h, Some(&mask), None).unwrap();
    }
    let want = enc.norm.as_ref().unwrap().forward(&h).unwrap().value().to_vec();
    let got = enc.forward_masked(&x, Some(&mask), None).unwrap().value().to_vec();
    assert_eq!(got, want);
    let names: Vec<String> = enc.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 3 * 12 + 2);
    assert_eq!(
        (names[0].as_str(), names[12].as_str()),
        ("layers.0.self_attn.in_proj_weight", "layers.1.self_attn.in_proj_weight")
    );
    assert_eq!(names.last().unwrap(), "norm.bias");
}

/// Under the causal mask, changing the last position changes no earlier output; without it,
/// it changes them all.
#[test]
fn the_causal_mask_makes_the_encoder_causal() {
    let gen = &mut Generator::new(19);
    let enc = encoder(gen);
    let x = randn(&[1, 4, 8], 20);
    let mut changed = x.to_vec();
    for v in &mut changed[3 * 8..] {
        *v += 1.0;
    }
    let changed = Tensor::from_vec(changed, &[1, 4, 8]).unwrap();
    let mask = causal_mask::<f64>(4).unwrap();
    let run = |t: &Tensor<f64>, m: Option<&Tensor<f64>>| {
        enc.forward_masked(&Var::new(t.clone()), m, None).unwrap().value().to_vec()
    };
    let (a, b) = (run(&x, Some(&mask)), run(&changed, Some(&mask)));
    assert_eq!(a[..3 * 8], b[..3 * 8]);
    assert_ne!(a[3 * 8..], b[3 * 8..]);
    let (a, b) = (run(&x, None), run(&changed, None));
    assert!(a[..8].iter().zip(&b[..8]).all(|(a, b)| a != b));
}

#[test]
fn causal_mask_is_zero_on_and_below_the_diagonal() {
    let m = causal_mask::<f64>(4).unwrap();
    for i in 0..4 {
        for j in 0..4 {
            let v = m.get(&[i, j]).unwrap();
            assert!(if j <= i { v == 0.0 } else { v == f64::NEG_INFINITY }, "[{i}, {j}] = {v}");
        }
    }
    assert_eq!(causal_mask::<f32>(0).unwrap().shape(), &[0, 0]);
    assert!(causal_mask::<f32>(usize::MAX).is_err());
}

// ─── positional encoding ───────────────────────────────────────────────────────

#[test]
fn positional_encoding_follows_the_formula_and_adds_to_its_input() {
    let (len, d) = (6, 5);
    let pe = sinusoidal_positional_encoding::<f64>(len, d).unwrap();
    for pos in 0..len {
        for i in 0..d {
            let angle = pos as f64 / 10000f64.powf((2 * (i / 2)) as f64 / d as f64);
            let want = if i % 2 == 0 { angle.sin() } else { angle.cos() };
            assert_eq!(pe.get(&[pos, i]).unwrap(), want, "[{pos}, {i}]");
        }
    }
    let layer = SinusoidalPositionalEncoding::<f64>::new(len, d).unwrap();
    let x = Var::parameter(randn(&[2, 4, d], 21));
    let y = layer.forward(&x).unwrap();
    let want = x.value().add(&pe.narrow(0, 0, 4).unwrap()).unwrap();
    assert_eq!(y.value().to_vec(), want.to_vec());
    y.sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![1.0; 2 * 4 * d]);
    assert!(layer.parameters().is_empty());
    let e = layer.forward(&Var::new(Tensor::<f64>::zeros(&[2, 7, d]))).unwrap_err().to_string();
    assert!(e.starts_with("SinusoidalPositionalEncoding: shape [2, 7, 5]"), "{e}");
    assert!(sinusoidal_positional_encoding::<f32>(usize::MAX, 2).is_err());
}
