//! Every layer case of the golden crate's `nn.json` (PyTorch 2.15, float64): PyTorch's parameters
//! are loaded into our layer by name, the input is forwarded in the case's mode, and the output,
//! the gradient of `sum(output * upstream)` with respect to the input and every parameter, and
//! BatchNorm's running statistics after the forward are compared (f64 at 1e-10, f32 at 1e-5).
//!
//! The file was produced by, per case (abridged):
//! ```python
//! m = torch.nn.Conv2d(3, 4, 3, stride=1, padding=1).double()   # or the case's layer
//! m.train() if case["mode"] == "train" else m.eval()
//! x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
//! y = m(x); upstream = torch.randn_like(y); (y * upstream).sum().backward()
//! dump(inputs={"x": x}, parameters=dict(m.named_parameters()), output=y, upstream=upstream,
//!      grads={"x": x.grad, **{n: p.grad for n, p in m.named_parameters()}},
//!      buffers_after={n: b for n, b in m.named_buffers() if "running" in n})
//! ```

use serde_json::Value;
use tapegrad_nn::dtype::*;
use tapegrad_nn::{
    BatchNorm1d, BatchNorm2d, Conv2d, Embedding, LayerNorm, Linear, Module, MultiheadAttention,
    TransformerEncoderLayer, Var,
};
use tapegrad_tensor::{Float, Generator, Tensor};

use golden::{assert_close, tensor};
use tapegrad_golden as golden;

fn case(name: &str) -> Value {
    golden::case("nn.json", name)
}

/// Loads the case's parameters (named as PyTorch does, with `prefix` stripped) into `module`,
/// runs it, and compares everything the case holds.
fn check<T: Float, M: Module<T>>(case: &Value, module: &mut M, prefix: &str, tol: f64) {
    let ours = module.named_parameters();
    let theirs = case["parameters"].as_object().unwrap();
    assert_eq!(ours.len(), theirs.len(), "parameter count");
    for (name, value) in theirs {
        let ours_name = name.strip_prefix(prefix).unwrap_or(name);
        let (_, p) = ours.iter().find(|(n, _)| n == ours_name).unwrap_or_else(|| panic!("no parameter {ours_name}"));
        p.set_value(tensor(value));
    }
    let buffers = module.named_buffers();
    for name in ["running_mean", "running_var"] {
        if let Some(v) = case["args"].get(name) {
            buffers.iter().find(|(n, _)| n == name).unwrap().1.set_value(tensor(v));
        }
    }
    match case["mode"].as_str() {
        Some("eval") => module.eval(),
        _ => module.train(),
    }
    let x = Var::parameter(tensor::<T>(&case["inputs"]["x"]));
    let y = module.forward(&x).unwrap();
    assert_close("output", &y.value(), &case["output"], tol);
    y.backward_with(&tensor(&case["upstream"]), false).unwrap();
    assert_close("grad x", &x.grad().unwrap(), &case["grads"]["x"], tol);
    for (name, p) in module.named_parameters() {
        let torch_name = format!("{prefix}{name}");
        assert_close(&format!("grad {name}"), &p.grad().unwrap(), &case["grads"][&torch_name], tol);
    }
    let after = case["buffers_after"].as_object().cloned().unwrap_or_default();
    let buffers = module.named_buffers();
    assert_eq!(buffers.len(), after.len(), "buffer count");
    for (name, value) in &after {
        let (_, b) = buffers.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no buffer {name}"));
        assert_close(name, &b.value(), value, tol);
    }
}

fn arg(case: &Value, name: &str) -> usize {
    case["args"][name].as_u64().unwrap() as usize
}

fn linear<T: Float>(tol: f64) {
    let c = case("Linear 4->3");
    check::<T, _>(&c, &mut Linear::<T>::new(4, 3, &mut Generator::new(0)), "", tol);
}

fn conv2d<T: Float>(tol: f64) {
    let c = case("Conv2d 3->4 k3 s1 p1");
    let (cin, cout, k, s, p) =
        (arg(&c, "in"), arg(&c, "out"), arg(&c, "kernel"), arg(&c, "stride"), arg(&c, "padding"));
    check::<T, _>(&c, &mut Conv2d::<T>::new(cin, cout, k, s, p, &mut Generator::new(0)), "", tol);
}

fn batch_norm_1d_train<T: Float>(tol: f64) {
    let c = case("BatchNorm1d train (running stats updated once)");
    let momentum = c["args"]["momentum"].as_f64().unwrap();
    let eps = c["args"]["eps"].as_f64().unwrap();
    check::<T, _>(&c, &mut BatchNorm1d::<T>::new(arg(&c, "features")).momentum(momentum).eps(eps), "", tol);
}

fn batch_norm_2d_eval<T: Float>(tol: f64) {
    let c = case("BatchNorm2d eval (uses the given running stats)");
    let eps = c["args"]["eps"].as_f64().unwrap();
    check::<T, _>(&c, &mut BatchNorm2d::<T>::new(arg(&c, "features")).eps(eps), "", tol);
}

fn layer_norm<T: Float>(tol: f64) {
    let c = case("LayerNorm over last dim 5");
    let shape: Vec<usize> =
        c["args"]["normalized_shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    check::<T, _>(&c, &mut LayerNorm::<T>::new(&shape).eps(c["args"]["eps"].as_f64().unwrap()), "", tol);
}

fn embedding<T: Float>(tol: f64) {
    let c = case("Embedding 6x3, repeated index");
    let weight: Tensor<T> = tensor(&c["parameters"]["weight"]);
    let emb = Embedding::<T>::new(weight.shape()[0], weight.shape()[1], &mut Generator::new(0));
    emb.weight.set_value(weight);
    let idx = &c["args"]["indices"];
    let shape: Vec<usize> = idx["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let indices: Vec<usize> = idx["data"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let y = emb.forward_indices(&indices, &shape).unwrap();
    assert_close("output", &y.value(), &c["output"], tol);
    // Module::forward with the ids as integral floats gives the same rows.
    let ids = Var::<T>::new(Tensor::from_vec(indices.iter().map(|&i| T::from_usize(i)).collect(), &shape).unwrap());
    assert_close("output via forward", &emb.forward(&ids).unwrap().value(), &c["output"], tol);
    y.backward_with(&tensor(&c["upstream"]), false).unwrap();
    assert_close("grad weight", &emb.weight.grad().unwrap(), &c["grads"]["weight"], tol);
}

fn multihead_attention<T: Float>(tol: f64) {
    let c = case("MultiheadAttention self-attention, 8 dims, 2 heads, batch_first");
    assert_eq!(c["args"]["batch_first"], true);
    let mut mha =
        MultiheadAttention::<T>::new(arg(&c, "embed_dim"), arg(&c, "num_heads"), 0.0, &mut Generator::new(0)).unwrap();
    check::<T, _>(&c, &mut mha, "mha.", tol);
}

fn transformer<T: Float>(tol: f64) {
    let c = case("TransformerEncoderLayer post-norm, relu, ff 16, eval");
    assert_eq!(c["args"]["norm_first"], false);
    assert_eq!(c["args"]["activation"], "relu");
    let (d, h, ff) = (arg(&c, "d_model"), arg(&c, "nhead"), arg(&c, "dim_feedforward"));
    // Dropout 0.1 as PyTorch's default: the case runs in eval mode, so it must not act.
    let mut layer = TransformerEncoderLayer::<T>::new(d, h, ff, 0.1, &mut Generator::new(0)).unwrap();
    check::<T, _>(&c, &mut layer, "", tol);
}

macro_rules! golden_tests {
    ($($name:ident),*) => {
        mod f64_at_1e_10 {
            $(#[test] fn $name() { super::$name::<f64>(1e-10); })*
        }
        mod f32_at_1e_5 {
            $(#[test] fn $name() { super::$name::<f32>(1e-5); })*
        }
    };
}

golden_tests!(
    linear,
    conv2d,
    batch_norm_1d_train,
    batch_norm_2d_eval,
    layer_norm,
    embedding,
    multihead_attention,
    transformer
);

#[test]
fn every_layer_case_is_covered() {
    let covered = [
        "Linear 4->3",
        "Conv2d 3->4 k3 s1 p1",
        "BatchNorm1d train (running stats updated once)",
        "BatchNorm2d eval (uses the given running stats)",
        "LayerNorm over last dim 5",
        "Embedding 6x3, repeated index",
        "MultiheadAttention self-attention, 8 dims, 2 heads, batch_first",
        "TransformerEncoderLayer post-norm, relu, ff 16, eval",
    ];
    for c in &golden::cases("nn.json") {
        let name = c["name"].as_str().unwrap();
        let is_layer = c.get("parameters").is_some();
        assert_eq!(is_layer, covered.contains(&name), "{name}");
    }
}
