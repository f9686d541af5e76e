//! The layers' public behaviour: gradient checks (f64, central differences) with respect to
//! inputs and parameters in train and eval mode, errors that name the layer and the shapes,
//! PyTorch's printed forms and default initialisation.

use tapegrad_autograd::gradcheck;
use tapegrad_nn::dtype::*;
use tapegrad_nn::{
    Activation, AlphaDropout, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Dropout2d, Embedding, Flatten,
    LayerNorm, Linear, MaxPool2d, Module, MultiheadAttention, ReLU, Sequential, Sigmoid, Tanh, TransformerEncoderLayer,
    Var, GELU,
};
use tapegrad_tensor::{Generator, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::<f64>::randn(shape, &mut Generator::new(seed))
}

fn err_text<T>(r: tapegrad_nn::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

// ─── Gradient checks ────────────────────────────────────────────────────────────

#[test]
fn gradcheck_linear() {
    let f = |v: &[Var<f64>]| {
        let mut fc = Linear::<f64>::new(4, 3, &mut Generator::new(0));
        fc.weight = v[1].clone();
        fc.bias = Some(v[2].clone());
        fc.forward(&v[0])
    };
    gradcheck(f, &[randn(&[5, 4], 1), randn(&[3, 4], 2), randn(&[3], 3)]).unwrap();
}

#[test]
fn linear_on_more_dims_is_the_rows_of_one_matrix() {
    // `[.., in]` runs as `[rows, in]` (the fused op, one weight-gradient product over all rows):
    // the same values and gradients as the 2-D layer on the flattened rows, and it gradchecks,
    // also for an input that is not contiguous (a transposed view, copied by the reshape).
    let f = |v: &[Var<f64>]| {
        let mut fc = Linear::<f64>::new(4, 3, &mut Generator::new(0));
        fc.weight = v[1].clone();
        fc.bias = Some(v[2].clone());
        fc.forward(&v[0])
    };
    let (w, b) = (randn(&[3, 4], 2), randn(&[3], 3));
    gradcheck(f, &[randn(&[2, 5, 4], 1), w.clone(), b.clone()]).unwrap();
    let g = |v: &[Var<f64>]| f(&[v[0].transpose(0, 1)?, v[1].clone(), v[2].clone()]);
    gradcheck(g, &[randn(&[5, 2, 4], 4), w.clone(), b.clone()]).unwrap();

    let x = randn(&[2, 5, 4], 1);
    let run = |x: Tensor<f64>| {
        let (w, b) = (Var::parameter(w.clone()), Var::parameter(b.clone()));
        let y = f(&[Var::new(x), w.clone(), b.clone()]).unwrap();
        y.mul(&y).unwrap().sum_all().backward().unwrap();
        (y.value().to_vec(), y.value().shape().to_vec(), w.grad().unwrap().to_vec(), b.grad().unwrap().to_vec())
    };
    let (y3, shape3, dw3, db3) = run(x.clone());
    let (y2, _, dw2, db2) = run(x.reshape(&[10, 4]).unwrap());
    assert_eq!(shape3, vec![2, 5, 3]);
    assert_eq!((y3, dw3, db3), (y2, dw2, db2));
}

#[test]
fn gradcheck_conv2d() {
    for (stride, padding) in [(1, 1), (2, 0), (2, 1)] {
        let f = |v: &[Var<f64>]| {
            let mut conv = Conv2d::<f64>::new(2, 3, 3, stride, padding, &mut Generator::new(0));
            conv.weight = v[1].clone();
            conv.bias = Some(v[2].clone());
            conv.forward(&v[0])
        };
        gradcheck(f, &[randn(&[2, 2, 5, 5], 1), randn(&[3, 2, 3, 3], 2), randn(&[3], 3)]).unwrap();
    }
}

#[test]
fn gradcheck_pools_and_flatten() {
    let f = |v: &[Var<f64>]| {
        let model: Sequential<f64> = Sequential::<f64>::new()
            .add(MaxPool2d::<f64>::new(2))
            .add(AvgPool2d::<f64>::with_options(2, 1, 1))
            .add(Flatten::<f64>::new());
        model.forward(&v[0])
    };
    gradcheck(f, &[randn(&[2, 2, 4, 4], 4)]).unwrap();
}

#[test]
fn gradcheck_activations() {
    let f = |v: &[Var<f64>]| {
        let model: Sequential<f64> = Sequential::<f64>::new()
            .add(GELU::<f64>::new())
            .add(Tanh::<f64>::new())
            .add(GELU::<f64>::tanh_approximate())
            .add(Sigmoid::<f64>::new());
        model.forward(&v[0])
    };
    gradcheck(f, &[randn(&[3, 4], 5)]).unwrap();
}

fn batch_norm_1d(v: &[Var<f64>], train: bool) -> tapegrad_nn::Result<Var<f64>> {
    let mut bn = BatchNorm1d::<f64>::new(3);
    bn.set_affine(v[1].clone(), v[2].clone())?;
    bn.running_mean().set_value(Tensor::from_vec(vec![0.5, -0.2, 0.1], &[3])?);
    bn.running_var().set_value(Tensor::from_vec(vec![1.5, 0.7, 2.0], &[3])?);
    if !train {
        bn.eval();
    }
    bn.forward(&v[0])
}

#[test]
fn gradcheck_batch_norm_1d_train_and_eval() {
    let affine = [randn(&[3], 2), randn(&[3], 3)];
    for train in [true, false] {
        for shape in [&[6, 3][..], &[4, 3, 5]] {
            let inputs = [randn(shape, 1), affine[0].clone(), affine[1].clone()];
            gradcheck(|v| batch_norm_1d(v, train), &inputs).unwrap();
        }
    }
}

#[test]
fn gradcheck_batch_norm_2d_train_and_eval() {
    for train in [true, false] {
        let f = |v: &[Var<f64>]| {
            let mut bn = BatchNorm2d::<f64>::new(2);
            bn.set_affine(v[1].clone(), v[2].clone())?;
            bn.running_mean().set_value(Tensor::from_vec(vec![0.3, -0.4], &[2])?);
            bn.running_var().set_value(Tensor::from_vec(vec![0.8, 1.9], &[2])?);
            if !train {
                bn.eval();
            }
            bn.forward(&v[0])
        };
        gradcheck(f, &[randn(&[3, 2, 3, 3], 1), randn(&[2], 2), randn(&[2], 3)]).unwrap();
    }
}

#[test]
fn gradcheck_layer_norm() {
    let f = |v: &[Var<f64>]| {
        let mut ln = LayerNorm::<f64>::new(&[3, 4]);
        ln.weight = Some(v[1].clone());
        ln.bias = Some(v[2].clone());
        ln.forward(&v[0])
    };
    gradcheck(f, &[randn(&[2, 3, 4], 1), randn(&[3, 4], 2), randn(&[3, 4], 3)]).unwrap();
}

#[test]
fn gradcheck_embedding_weight() {
    let f = |v: &[Var<f64>]| {
        let mut emb = Embedding::<f64>::new(5, 3, &mut Generator::new(0));
        emb.weight = v[0].clone();
        emb.forward_indices(&[4, 1, 1, 0, 4, 4], &[2, 3])
    };
    gradcheck(f, &[randn(&[5, 3], 1)]).unwrap();
}

fn mha_with(v: &[Var<f64>], p: f64) -> tapegrad_nn::Result<MultiheadAttention<f64>> {
    let mut mha = MultiheadAttention::<f64>::new(4, 2, p, &mut Generator::new(0))?.with_generator(Generator::new(11));
    mha.in_proj_weight = v[0].clone();
    mha.in_proj_bias = v[1].clone();
    mha.out_proj.weight = v[2].clone();
    mha.out_proj.bias = Some(v[3].clone());
    Ok(mha)
}

fn mha_params() -> Vec<Tensor<f64>> {
    vec![randn(&[12, 4], 21), randn(&[12], 22), randn(&[4, 4], 23), randn(&[4], 24)]
}

#[test]
fn gradcheck_multihead_attention_train_with_dropout_and_eval() {
    for (p, train) in [(0.0, true), (0.3, true), (0.3, false)] {
        let f = |v: &[Var<f64>]| {
            let mut mha = mha_with(&v[1..], p)?;
            if !train {
                mha.eval();
            }
            mha.forward(&v[0])
        };
        let mut inputs = vec![randn(&[2, 3, 4], 1)];
        inputs.extend(mha_params());
        if p > 0.0 && train {
            // The check is only meaningful if the attention dropout acted.
            let vars: Vec<Var<f64>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
            let out = f(&vars).unwrap();
            // The attention dropout acts inside the fused op, whose entry carries the mask.
            let fused = out.tape().into_iter().find(|e| e.name == "scaled_dot_product_attention");
            assert!(fused.is_some_and(|e| e.dropout.is_some()), "no attention dropout recorded");
        }
        gradcheck(f, &inputs).unwrap();
    }
}

#[test]
fn gradcheck_attention_with_masks_and_cross_attention() {
    // Causal mask over queries of length 3 and keys of length 3; query / key / value differ.
    let inf = f64::NEG_INFINITY;
    let causal = Tensor::from_vec(vec![0.0, inf, inf, 0.0, 0.0, inf, 0.0, 0.0, 0.0], &[3, 3]).unwrap();
    let f = |v: &[Var<f64>]| {
        let mha = mha_with(&v[3..], 0.0)?;
        mha.attend(&v[0], &v[1], &v[2], Some(&causal), Some(&[false, false, true, false, false, false]))
    };
    let mut inputs = vec![randn(&[2, 3, 4], 1), randn(&[2, 3, 4], 2), randn(&[2, 3, 4], 3)];
    inputs.extend(mha_params());
    gradcheck(f, &inputs).unwrap();

    // Cross-attention with a different key length and a per-head additive mask.
    let mask = randn(&[4, 2, 5], 9);
    let f = |v: &[Var<f64>]| {
        let mha = mha_with(&v[2..], 0.0)?;
        mha.attend(&v[0], &v[1], &v[1], Some(&mask), None)
    };
    let mut inputs = vec![randn(&[2, 2, 4], 4), randn(&[2, 5, 4], 5)];
    inputs.extend(mha_params());
    gradcheck(f, &inputs).unwrap();
}

#[test]
fn attention_masks_hide_positions() -> tapegrad_nn::Result<()> {
    let mut gen = Generator::new(0);
    let mha: MultiheadAttention<f64> = MultiheadAttention::<f64>::new(4, 2, 0.0, &mut gen)?;
    let x = Tensor::<f64>::randn(&[1, 3, 4], &mut gen);
    let full = mha.attend(
        &Var::new(x.clone()),
        &Var::new(x.clone()),
        &Var::new(x.clone()),
        None,
        Some(&[false, false, true]),
    )?;
    // Changing the masked key / value row must not change any output.
    let mut data = x.to_vec();
    for d in &mut data[8..12] {
        *d += 10.0;
    }
    let x2 = Var::new(Tensor::from_vec(data, &[1, 3, 4])?);
    let kv_changed = mha.attend(&Var::new(x.clone()), &x2, &x2, None, Some(&[false, false, true]))?;
    let unmasked = mha.attend(&Var::new(x.clone()), &x2, &x2, None, None)?;
    let diff = |a: &Var<f64>, b: &Var<f64>| -> f64 {
        a.value().to_vec().iter().zip(b.value().to_vec()).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max)
    };
    assert!(diff(&full, &kv_changed) < 1e-12);
    assert!(diff(&full, &unmasked) > 1e-3);
    Ok(())
}

fn transformer_with(
    v: &[Var<f64>],
    p: f64,
    norm_first: bool,
    activation: Activation,
) -> tapegrad_nn::Result<TransformerEncoderLayer<f64>> {
    let mut t = TransformerEncoderLayer::<f64>::new(4, 2, 6, p, &mut Generator::new(0))?
        .norm_first(norm_first)
        .activation(activation)
        .with_seed(5);
    t.self_attn.in_proj_weight = v[0].clone();
    t.self_attn.in_proj_bias = v[1].clone();
    t.self_attn.out_proj.weight = v[2].clone();
    t.self_attn.out_proj.bias = Some(v[3].clone());
    t.linear1.weight = v[4].clone();
    t.linear1.bias = Some(v[5].clone());
    t.linear2.weight = v[6].clone();
    t.linear2.bias = Some(v[7].clone());
    t.norm1.weight = Some(v[8].clone());
    t.norm1.bias = Some(v[9].clone());
    t.norm2.weight = Some(v[10].clone());
    t.norm2.bias = Some(v[11].clone());
    Ok(t)
}

#[test]
fn gradcheck_transformer_encoder_layer() {
    let mut params = mha_params();
    params.extend([randn(&[6, 4], 31), randn(&[6], 32), randn(&[4, 6], 33), randn(&[4], 34)]);
    params.extend([randn(&[4], 35), randn(&[4], 36), randn(&[4], 37), randn(&[4], 38)]);
    let cases = [
        (0.2, true, false, Activation::Relu),
        (0.2, false, false, Activation::Relu),
        (0.2, true, true, Activation::Gelu),
        (0.0, false, true, Activation::Gelu),
    ];
    for (p, train, norm_first, act) in cases {
        let f = |v: &[Var<f64>]| {
            let mut t = transformer_with(&v[1..], p, norm_first, act)?;
            if !train {
                t.eval();
            }
            t.forward(&v[0])
        };
        let mut inputs = vec![randn(&[2, 3, 4], 1)];
        inputs.extend(params.iter().cloned());
        if train && p > 0.0 {
            let vars: Vec<Var<f64>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
            // Every entry that drew a mask: the fused attention's, dropout, dropout1, dropout2.
            let drops = f(&vars).unwrap().tape().iter().filter(|e| e.dropout.is_some()).count();
            assert_eq!(drops, 4, "attention dropout, dropout, dropout1, dropout2");
        }
        gradcheck(f, &inputs).unwrap();
    }
}

#[test]
fn gradcheck_model_with_dropout_in_train_mode() {
    let f = |v: &[Var<f64>]| {
        // The dropout's own generator, created inside the closure: the same mask every call.
        let mut fc1 = Linear::<f64>::new(4, 6, &mut Generator::new(0));
        fc1.weight = v[1].clone();
        fc1.bias = Some(v[2].clone());
        let fc2 = Linear::<f64>::new(6, 2, &mut Generator::new(1));
        let model: Sequential<f64> = Sequential::<f64>::new()
            .add(fc1)
            .add(Tanh::<f64>::new())
            .add(Dropout::<f64>::new(0.5)?.with_generator(Generator::new(42)))
            .add(fc2);
        assert!(model.is_training());
        model.forward(&v[0])
    };
    let inputs = [randn(&[5, 4], 1), randn(&[6, 4], 2), randn(&[6], 3)];
    let vars: Vec<Var<f64>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
    let out = f(&vars).unwrap();
    let entry = out.tape().into_iter().find(|e| e.name == "dropout").expect("a dropout entry");
    let record = entry.dropout.expect("its record");
    assert!(record.kept_count() > 0 && record.kept_count() < 30, "the mask keeps some and drops some");
    gradcheck(f, &inputs).unwrap();
}

// ─── Behaviour ──────────────────────────────────────────────────────────────────

#[test]
fn batch_norm_running_stats_update_in_train_only() -> tapegrad_nn::Result<()> {
    let mut bn: BatchNorm1d<f64> = BatchNorm1d::<f64>::new(2);
    let x = Var::new(Tensor::from_vec(vec![1.0, 2.0, 3.0, 6.0, 5.0, 1.0], &[3, 2])?);
    bn.forward(&x)?;
    // mean [3, 3], unbiased var [4, 7]
    let close = |a: Vec<f64>, b: &[f64]| a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-12);
    assert!(close(bn.running_mean().value().to_vec(), &[0.3, 0.3]));
    assert!(close(bn.running_var().value().to_vec(), &[0.9 + 0.4, 0.9 + 0.7]));
    bn.forward(&x)?;
    assert!(close(bn.running_mean().value().to_vec(), &[0.57, 0.57]));
    bn.eval();
    let before = bn.running_var().value().to_vec();
    let y = bn.forward(&x)?;
    assert_eq!(bn.running_var().value().to_vec(), before);
    let want = (1.0 - 0.57) / (before[0] + 1e-5f64).sqrt();
    assert!((y.value().to_vec()[0] - want).abs() < 1e-12);
    Ok(())
}

#[test]
fn default_initialisation_matches_pytorch() {
    let mut gen = Generator::new(0);
    let conv: Conv2d<f64> = Conv2d::<f64>::new(3, 8, 3, 1, 0, &mut gen);
    let bound = 1.0 / 27f64.sqrt();
    for t in [conv.weight.value(), conv.bias.as_ref().unwrap().value()] {
        let v = t.to_vec();
        assert!(v.iter().all(|x| x.abs() <= bound));
        assert!(v.iter().any(|x| x.abs() > 0.8 * bound), "uses the whole range");
    }
    let bn: BatchNorm2d<f64> = BatchNorm2d::<f64>::new(3);
    assert_eq!(bn.weight().value().to_vec(), vec![1.0; 3]);
    assert_eq!(bn.bias().value().to_vec(), vec![0.0; 3]);
    assert_eq!(bn.running_mean().value().to_vec(), vec![0.0; 3]);
    assert_eq!(bn.running_var().value().to_vec(), vec![1.0; 3]);
    assert!(bn.weight().requires_grad() && !bn.running_mean().requires_grad());

    let emb: Embedding<f64> = Embedding::<f64>::new(100, 100, &mut gen);
    let v = emb.weight.value().to_vec();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
    assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "N(0, 1): mean {mean}, var {var}");

    let mha: MultiheadAttention<f64> = MultiheadAttention::<f64>::new(8, 2, 0.0, &mut gen).unwrap();
    let xavier = (6.0f64 / 32.0).sqrt();
    assert!(mha.in_proj_weight.value().to_vec().iter().all(|x| x.abs() <= xavier));
    assert_eq!(mha.in_proj_bias.value().to_vec(), vec![0.0; 24]);
    assert_eq!(mha.out_proj.bias.as_ref().unwrap().value().to_vec(), vec![0.0; 8]);
}

#[test]
fn gelu_variants_and_activation_values() -> tapegrad_nn::Result<()> {
    let x = Var::<f64>::new(Tensor::<f64>::from_vec(vec![-1.0, 0.5, 2.0], &[3])?);
    let exact = GELU::<f64>::new().forward(&x)?.value().to_vec();
    let approx = GELU::<f64>::tanh_approximate().forward(&x)?.value().to_vec();
    for (i, &v) in [-1.0f64, 0.5, 2.0].iter().enumerate() {
        let phi = 0.5 * (1.0 + libm_erf(v / 2f64.sqrt()));
        assert!((exact[i] - v * phi).abs() < 1e-12);
        let t = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3));
        assert!((approx[i] - 0.5 * v * (1.0 + t.tanh())).abs() < 1e-12);
    }
    assert!((exact[0] - approx[0]).abs() > 1e-6, "the two forms differ");
    assert_eq!(ReLU::<f64>::new().forward(&x)?.value().to_vec(), vec![0.0, 0.5, 2.0]);
    Ok(())
}

/// erf by its Taylor series (enough terms for |x| < 2).
fn libm_erf(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..80 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn sequential_names_and_forward() -> tapegrad_nn::Result<()> {
    let mut gen = Generator::new(0);
    let mut model: Sequential = Sequential::new();
    model.push(Conv2d::new(1, 2, 3, 1, 1, &mut gen));
    model.push(BatchNorm2d::new(2));
    model.push(ReLU::new());
    model.push(MaxPool2d::new(2));
    model.push(Flatten::new());
    model.push(Linear::new(8, 3, &mut gen));
    let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"]);
    let buffers: Vec<String> = model.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(buffers, ["1.running_mean", "1.running_var"]);
    let y = model.forward(&Var::new(Tensor::randn(&[2, 1, 4, 4], &mut gen)))?;
    assert_eq!(y.shape(), vec![2, 3]);
    assert_eq!(model.len(), 6);
    model.eval();
    assert!(!model.is_training());
    Ok(())
}

// ─── Errors ─────────────────────────────────────────────────────────────────────

#[test]
fn wrong_inputs_are_errors_naming_layer_and_shapes() {
    let mut gen = Generator::new(0);
    let conv: Conv2d = Conv2d::new(3, 4, 3, 1, 1, &mut gen);
    let e = err_text(conv.forward(&Var::new(Tensor::zeros(&[3, 5, 5]))));
    assert!(e.contains("Conv2d") && e.contains("[3, 5, 5]"), "{e}");
    let e = err_text(conv.forward(&Var::new(Tensor::zeros(&[1, 2, 5, 5]))));
    assert!(e.contains("Conv2d") && e.contains("[1, 2, 5, 5]") && e.contains("3 input channels"), "{e}");
    let e = err_text(Conv2d::<f32>::from_tensors(Tensor::zeros(&[4, 3, 3]), None, 1, 0));
    assert!(e.contains("Conv2d::from_tensors") && e.contains("[4, 3, 3]"), "{e}");

    let e = err_text(MaxPool2d::<f32>::new(2).forward(&Var::new(Tensor::zeros(&[2, 4]))));
    assert!(e.contains("MaxPool2d") && e.contains("[2, 4]"), "{e}");
    let e = err_text(AvgPool2d::<f32>::new(2).forward(&Var::new(Tensor::zeros(&[2, 4, 4]))));
    assert!(e.contains("AvgPool2d") && e.contains("[2, 4, 4]"), "{e}");
    let e = err_text(Flatten::<f32>::new().forward(&Var::new(Tensor::zeros(&[6]))));
    assert!(e.contains("Flatten") && e.contains("[6]"), "{e}");

    let bn1: BatchNorm1d = BatchNorm1d::new(3);
    let e = err_text(bn1.forward(&Var::new(Tensor::zeros(&[2, 3, 4, 4]))));
    assert!(e.contains("BatchNorm1d") && e.contains("[2, 3, 4, 4]"), "{e}");
    let e = err_text(bn1.forward(&Var::new(Tensor::zeros(&[2, 4]))));
    assert!(e.contains("BatchNorm1d") && e.contains("[2, 4]") && e.contains("3 channels"), "{e}");
    let e = err_text(bn1.forward(&Var::new(Tensor::zeros(&[1, 3]))));
    assert!(e.contains("BatchNorm1d") && e.contains("more than 1 value"), "{e}");
    let bn2: BatchNorm2d = BatchNorm2d::new(3);
    let e = err_text(bn2.forward(&Var::new(Tensor::zeros(&[2, 3]))));
    assert!(e.contains("BatchNorm2d") && e.contains("[2, 3]"), "{e}");
    let mut bn = BatchNorm2d::<f32>::new(3);
    let e = err_text(bn.set_affine(Var::new(Tensor::ones(&[2])), Var::new(Tensor::zeros(&[3]))));
    assert!(e.contains("BatchNorm2d") && e.contains("[2]"), "{e}");

    let ln: LayerNorm = LayerNorm::new(&[5]);
    let e = err_text(ln.forward(&Var::new(Tensor::zeros(&[3, 4]))));
    assert!(e.contains("LayerNorm") && e.contains("[3, 4]") && e.contains("[5]"), "{e}");

    let emb: Embedding = Embedding::new(6, 3, &mut gen);
    let e = err_text(emb.forward_indices(&[1, 6], &[2]));
    assert!(e.contains("Embedding") && e.contains("index 6"), "{e}");
    let e = err_text(emb.forward_indices(&[1, 2, 3], &[2, 2]));
    assert!(e.contains("Embedding") && e.contains("[2, 2]"), "{e}");
    // An index shape whose product overflows (it used to wrap, here to 0 = the index count).
    let e = err_text(emb.forward_indices(&[], &[1 << 63, 2]));
    assert!(e.starts_with("Embedding: shape [9223372036854775808, 2]") && e.contains("overflows"), "{e}");
    // Valid alone, too large with the embedding dim appended.
    let e = err_text(emb.forward_indices(&[], &[0, 1 << 59]));
    assert!(e.starts_with("Embedding: shape [0, 576460752303423488, 3]"), "{e}");
    let e = err_text(emb.forward(&Var::new(Tensor::from_vec(vec![1.5, 2.0], &[2]).unwrap())));
    assert!(e.contains("Embedding") && e.contains("1.5"), "{e}");
    let e = err_text(emb.forward(&Var::new(Tensor::from_vec(vec![-1.0], &[1]).unwrap())));
    assert!(e.contains("Embedding"), "{e}");

    let e = err_text(MultiheadAttention::<f32>::new(6, 4, 0.0, &mut gen));
    assert!(e.contains("MultiheadAttention") && e.contains("divisible"), "{e}");
    let e = err_text(MultiheadAttention::<f32>::new(8, 2, 1.5, &mut gen));
    assert!(e.contains("dropout"), "{e}");
    let mha: MultiheadAttention = MultiheadAttention::new(8, 2, 0.0, &mut gen).unwrap();
    let e = err_text(mha.forward(&Var::new(Tensor::zeros(&[2, 3, 6]))));
    assert!(e.contains("MultiheadAttention") && e.contains("[2, 3, 6]"), "{e}");
    let e = err_text(mha.forward(&Var::new(Tensor::zeros(&[3, 8]))));
    assert!(e.contains("MultiheadAttention") && e.contains("[3, 8]"), "{e}");
    let (q, kv) = (Var::new(Tensor::zeros(&[2, 3, 8])), Var::new(Tensor::zeros(&[2, 4, 8])));
    let e = err_text(mha.attend(&q, &kv, &q, None, None));
    assert!(e.contains("MultiheadAttention") && e.contains("[2, 4, 8]") && e.contains("[2, 3, 8]"), "{e}");
    let e = err_text(mha.attend(&q, &kv, &kv, Some(&Tensor::zeros(&[3, 3])), None));
    assert!(e.contains("MultiheadAttention") && e.contains("[3, 3]") && e.contains("attn_mask"), "{e}");
    let e = err_text(mha.attend(&q, &kv, &kv, None, Some(&[false; 3])));
    assert!(e.contains("MultiheadAttention") && e.contains("key_padding_mask"), "{e}");

    let t: TransformerEncoderLayer = TransformerEncoderLayer::new(8, 2, 16, 0.1, &mut gen).unwrap();
    let e = err_text(t.forward(&Var::new(Tensor::zeros(&[2, 3, 4]))));
    assert!(e.contains("MultiheadAttention") && e.contains("[2, 3, 4]"), "{e}");
    let e = err_text(TransformerEncoderLayer::<f32>::new(8, 3, 16, 0.1, &mut gen));
    assert!(e.contains("divisible"), "{e}");

    let model: Sequential = Sequential::new().add(Linear::new(4, 3, &mut gen)).add(ReLU::new());
    let e = err_text(model.forward(&Var::new(Tensor::zeros(&[2, 5]))));
    assert!(e.contains("matmul") && e.contains("[2, 5]"), "{e}");
}

// ─── Display ────────────────────────────────────────────────────────────────────

#[test]
fn display_like_pytorch() {
    let mut gen = Generator::new(0);
    let s = |x: &dyn std::fmt::Display| x.to_string();
    assert_eq!(
        s(&Conv2d::<f32>::new(3, 4, 3, 1, 1, &mut gen)),
        "Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"
    );
    assert_eq!(s(&Conv2d::<f32>::new(1, 8, 5, 2, 0, &mut gen)), "Conv2d(1, 8, kernel_size=(5, 5), stride=(2, 2))");
    assert_eq!(
        s(&Conv2d::<f32>::new_no_bias(1, 8, 5, 1, 0, &mut gen)),
        "Conv2d(1, 8, kernel_size=(5, 5), stride=(1, 1), bias=False)"
    );
    assert_eq!(
        s(&MaxPool2d::<f32>::new(2)),
        "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    );
    assert_eq!(s(&AvgPool2d::<f32>::with_options(3, 1, 1)), "AvgPool2d(kernel_size=3, stride=1, padding=1)");
    assert_eq!(s(&Flatten::<f32>::new()), "Flatten(start_dim=1, end_dim=-1)");
    assert_eq!(s(&ReLU::<f32>::new()), "ReLU()");
    assert_eq!(s(&Tanh::<f32>::new()), "Tanh()");
    assert_eq!(s(&Sigmoid::<f32>::new()), "Sigmoid()");
    assert_eq!(s(&GELU::<f32>::new()), "GELU(approximate='none')");
    assert_eq!(s(&GELU::<f32>::tanh_approximate()), "GELU(approximate='tanh')");
    assert_eq!(
        s(&BatchNorm1d::<f32>::new(4)),
        "BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    );
    assert_eq!(
        s(&BatchNorm2d::<f32>::new(16).eps(1e-3).momentum(0.01)),
        "BatchNorm2d(16, eps=0.001, momentum=0.01, affine=True, track_running_stats=True)"
    );
    assert_eq!(s(&LayerNorm::<f32>::new(&[5])), "LayerNorm((5,), eps=1e-05, elementwise_affine=True)");
    assert_eq!(
        s(&LayerNorm::<f32>::new_no_affine(&[2, 3]).eps(1e-6)),
        "LayerNorm((2, 3), eps=1e-06, elementwise_affine=False)"
    );
    assert_eq!(s(&Embedding::<f32>::new(6, 3, &mut gen)), "Embedding(6, 3)");
    assert_eq!(
        s(&MultiheadAttention::<f32>::new(8, 2, 0.0, &mut gen).unwrap()),
        "MultiheadAttention(\n  (out_proj): Linear(in_features=8, out_features=8, bias=True)\n)"
    );
    let model: Sequential =
        Sequential::new().add(Linear::new(4, 3, &mut gen)).add(ReLU::new()).add(Dropout::new(0.5).unwrap());
    assert_eq!(
        s(&model),
        "Sequential(\n  (0): Linear(in_features=4, out_features=3, bias=True)\n  (1): ReLU()\n  (2): Dropout(p=0.5)\n)"
    );
    let t: TransformerEncoderLayer = TransformerEncoderLayer::new(8, 2, 16, 0.1, &mut gen).unwrap();
    assert_eq!(
        s(&t),
        "TransformerEncoderLayer(
  (self_attn): MultiheadAttention(
    (out_proj): Linear(in_features=8, out_features=8, bias=True)
  )
  (linear1): Linear(in_features=8, out_features=16, bias=True)
  (dropout): Dropout(p=0.1)
  (linear2): Linear(in_features=16, out_features=8, bias=True)
  (norm1): LayerNorm((8,), eps=1e-05, elementwise_affine=True)
  (norm2): LayerNorm((8,), eps=1e-05, elementwise_affine=True)
  (dropout1): Dropout(p=0.1)
  (dropout2): Dropout(p=0.1)
)"
    );
    let names: Vec<String> = t.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "self_attn.in_proj_weight",
            "self_attn.in_proj_bias",
            "self_attn.out_proj.weight",
            "self_attn.out_proj.bias",
            "linear1.weight",
            "linear1.bias",
            "linear2.weight",
            "linear2.bias",
            "norm1.weight",
            "norm1.bias",
            "norm2.weight",
            "norm2.bias"
        ]
    );
}

/// The feature-dropout layers apply their own op (whose values `tapegrad-autograd`'s
/// `tests/suite/feature_dropout.rs` checks) with the layer's generator: `Dropout2d` zeroes whole
/// `[H, W]` planes and scales the rest by `1 / (1 - p)`, `AlphaDropout` is the alpha-dropout
/// op; in eval mode both return the input itself.
#[test]
fn feature_dropout_layers_apply_their_ops() -> tapegrad_nn::Result<()> {
    let x = Var::new(Tensor::<f64>::rand(&[6, 8, 3, 3], &mut Generator::new(1)).add_scalar(1.0));
    let mut d2 = Dropout2d::<f64>::new(0.5)?.with_generator(Generator::new(7));
    let y = d2.forward(&x)?.value().to_vec();
    let want = tapegrad_autograd::dropout2d(&x, 0.5, &mut Generator::new(7))?.value().to_vec();
    assert_eq!(y, want);
    let xs = x.value().to_vec();
    let (mut kept, mut dropped) = (0, 0);
    for (plane, (ys, xs)) in y.chunks(9).zip(xs.chunks(9)).enumerate() {
        if ys.iter().all(|&v| v == 0.0) {
            dropped += 1;
        } else {
            kept += 1;
            assert!(ys.iter().zip(xs).all(|(y, x)| (y - 2.0 * x).abs() < 1e-12), "plane {plane} scaled by 2");
        }
    }
    assert!(kept > 0 && dropped > 0);

    let z = Var::new(Tensor::<f64>::randn(&[4096], &mut Generator::new(2)));
    let mut alpha = AlphaDropout::<f64>::new(0.2)?.with_generator(Generator::new(8));
    let got = alpha.forward(&z)?.value().to_vec();
    assert_eq!(got, tapegrad_autograd::alpha_dropout(&z, 0.2, &mut Generator::new(8))?.value().to_vec());
    assert_ne!(got, z.value().to_vec());

    d2.eval();
    alpha.eval();
    assert!(d2.forward(&x)?.same_node(&x) && alpha.forward(&z)?.same_node(&z));
    Ok(())
}

/// `Sequential` runs a max pool before the ReLU and Dropout2d in front of it (they commute with
/// it): the output, the input's gradient and the weights' gradients are those of the layers run
/// one by one in the order given, on inputs with negatives, ties and a NaN, in training (with
/// masks drawn from one seed) and in eval mode.
#[test]
fn sequential_pools_before_relu_and_dropout2d_with_the_same_results() {
    let build = || {
        let mut gen = Generator::new(3);
        Sequential::<f64>::new()
            .add(Conv2d::<f64>::new(2, 3, 3, 1, 1, &mut gen))
            .add(ReLU::<f64>::new())
            .add(Dropout2d::<f64>::new(0.4).unwrap())
            .add(MaxPool2d::<f64>::new(2))
            .add(ReLU::<f64>::new())
            .add(MaxPool2d::<f64>::with_options(3, 1, 1))
    };
    let mut x = randn(&[4, 2, 6, 6], 9).to_vec();
    x[7] = f64::NAN;
    x[40..44].iter_mut().for_each(|v| *v = 0.5); // ties
    let x = Tensor::from_vec(x, &[4, 2, 6, 6]).unwrap();
    for train in [true, false] {
        let (mut fused, mut plain) = (build(), build());
        if !train {
            fused.eval();
            plain.eval();
        }
        fused.seed_generators(11);
        plain.seed_generators(11);
        let run = |model: &Sequential<f64>, in_order: bool| {
            let xv = Var::parameter(x.clone());
            let y = if in_order {
                // The layers one by one, as listed.
                let mut h = xv.clone();
                for i in 0..model.len() {
                    h = model.get(i).unwrap().forward(&h).unwrap();
                }
                h
            } else {
                model.forward(&xv).unwrap()
            };
            let out = y.value().to_vec();
            // A weighted sum so that every output's gradient differs.
            let w =
                Tensor::from_vec((0..y.value().numel()).map(|i| (i % 7) as f64 - 3.0).collect(), &y.shape()).unwrap();
            y.mul(&Var::new(w)).unwrap().sum_all().backward().unwrap();
            let mut grads = vec![xv.grad().unwrap().to_vec()];
            grads.extend(model.parameters().iter().map(|p| p.grad().unwrap().to_vec()));
            (out, grads)
        };
        let (out_fused, grads_fused) = run(&fused, false);
        let (out_plain, grads_plain) = run(&plain, true);
        let same = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
        assert!(same(&out_fused, &out_plain), "train {train}: outputs differ");
        assert!(out_plain.iter().any(|v| v.is_nan()) && out_plain.iter().any(|&v| v > 0.0));
        for (a, b) in grads_fused.iter().zip(&grads_plain) {
            assert!(same(a, b), "train {train}: gradients differ");
        }
    }
}
