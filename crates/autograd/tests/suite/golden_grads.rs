//! Every gradient in the golden crate's `ops.json` (PyTorch 2.15, float64), matched in f64 and f32.
//!
//! Each case gives inputs, args, an upstream gradient and PyTorch's gradient of
//! `sum(output * upstream)` for each input (see the golden crate's `data/README.md`). Here every input is a
//! parameter, the op runs on `Var` exactly as the tensor crate's `tests/suite/golden_ops.rs` runs it on
//! `Tensor`, and `backward_with(upstream)` must reproduce PyTorch's gradients.

use std::collections::BTreeMap;

use golden::{tensor, usizes};
use serde_json::Value;
use tapegrad_autograd::{Float, Result, Var};

use tapegrad_golden as golden;

/// Runs the op a case names on its inputs (all parameters), in `T`.
fn run<T: Float>(case: &Value, inputs: &BTreeMap<String, Var<T>>) -> Result<Var<T>> {
    let name = case["name"].as_str().expect("a case name");
    let args = &case["args"];
    let x = &inputs["x"];
    let input = |k: &str| inputs.get(k).unwrap_or_else(|| panic!("golden case {name:?} has no input {k:?}"));
    let arg = |k: &str| args[k].as_u64().expect("an integer argument") as usize;
    let keepdim = || args["keepdim"].as_bool().expect("keepdim");
    let padding = || args["padding"].as_u64().unwrap_or(0) as usize;
    let op = name.split([' ', '(']).next().expect("a name");
    Ok(match op {
        "matmul" => x.matmul(input("y"))?,
        "add" => x.add(input("y"))?,
        "sub" => x.sub(input("y"))?,
        "mul" => x.mul(input("y"))?,
        "div" => x.div(input("y"))?,
        "maximum" => x.maximum(input("y"))?,
        "powf" => x.powf(T::from_f64(args["exponent"].as_f64().expect("exponent"))),
        "neg" => x.neg(),
        "exp" => x.exp(),
        "log" => x.log(),
        "sqrt" => x.sqrt(),
        "tanh" => x.tanh(),
        "sigmoid" => x.sigmoid(),
        "relu" => x.relu(),
        "abs" => x.abs(),
        "gelu" if name.contains("tanh") => x.gelu_tanh(),
        "gelu" => x.gelu(),
        "sum" if name == "sum all" => x.sum_all(),
        "sum" => x.sum(&usizes(&args["dims"]), keepdim())?,
        "mean" => x.mean(&usizes(&args["dims"]), keepdim())?,
        "max" => x.max(arg("dim"), keepdim())?,
        "softmax" => x.softmax(arg("dim"))?,
        "log_softmax" => x.log_softmax(arg("dim"))?,
        // PyTorch: x.t() * 2, an op on a non-contiguous view.
        "transpose" => x.transpose(0, 1)?.mul_scalar(T::from_f64(2.0)),
        "permute" => x.permute(&usizes(&args["dims"]))?,
        "narrow" => x.narrow(arg("dim"), arg("start"), arg("len"))?,
        "expand" => x.expand(&usizes(&args["shape"]))?,
        "reshape" => x.reshape(&usizes(&args["shape"]))?,
        "cat" => Var::cat(&[x, input("y")], arg("dim"))?,
        "stack" => Var::stack(&[x, input("y")], arg("dim"))?,
        "index_select" => x.index_select(arg("dim"), &usizes(&args["index"]))?,
        "gather" => {
            let index = &args["index"];
            x.gather(arg("dim"), &usizes(&index["data"]), &usizes(&index["shape"]))?
        }
        "conv2d" => x.conv2d(input("w"), Some(input("b")), arg("stride"), arg("padding"))?,
        "max_pool2d" => x.max_pool2d(arg("kernel"), arg("stride"), padding())?,
        "avg_pool2d" => x.avg_pool2d(arg("kernel"), arg("stride"), padding())?,
        other => panic!("golden case {name:?}: no op {other:?} is mapped; add it to this test"),
    })
}

/// Runs one case's forward and backward in `T` and lists how its gradients differ from PyTorch's.
fn check_case<T: Float>(case: &Value, rtol: f64) -> Vec<String> {
    let name = case["name"].as_str().unwrap_or("?");
    let inputs: BTreeMap<String, Var<T>> = case["inputs"]
        .as_object()
        .expect("an inputs object")
        .iter()
        .map(|(k, v)| (k.clone(), Var::parameter(tensor::<T>(v))))
        .collect();
    let upstream = tensor::<T>(&case["upstream"]);
    let out = match run(case, &inputs) {
        Ok(out) => out,
        Err(e) => return vec![format!("{name}: forward error {e}")],
    };
    if let Err(e) = out.backward_with(&upstream, false) {
        return vec![format!("{name}: backward error {e}")];
    }
    let grads = case["grads"].as_object().expect("a grads object");
    assert_eq!(
        grads.keys().collect::<Vec<_>>(),
        inputs.keys().collect::<Vec<_>>(),
        "golden case {name:?}: a gradient for every input"
    );
    let mut failures = vec![];
    for (k, want) in grads {
        let want = tensor::<f64>(want);
        let Some(got) = inputs[k].grad() else {
            failures.push(format!("{name}: input {k} got no gradient"));
            continue;
        };
        if got.shape() != want.shape() {
            failures.push(format!("{name}: grad {k} has shape {:?}, PyTorch {:?}", got.shape(), want.shape()));
            continue;
        }
        for (i, (g, w)) in got.to_vec().into_iter().zip(want.to_vec()).enumerate() {
            let g = g.to_f64();
            let close = (g - w).abs() <= rtol * (1.0 + w.abs());
            // `close` is false for a NaN, which counts as a difference.
            if !close {
                failures.push(format!("{name}: grad {k} element {i}: {g} vs PyTorch {w}"));
                break;
            }
        }
    }
    failures
}

fn check_all<T: Float>(rtol: f64) {
    let cases = golden::cases("ops.json");
    assert!(cases.len() >= 40, "expected the full golden file, found {} cases", cases.len());
    let failures: Vec<String> = cases.iter().flat_map(|case| check_case::<T>(case, rtol)).collect();
    assert!(
        failures.is_empty(),
        "{} gradients differ from PyTorch's in {}:\n{}",
        failures.len(),
        T::NAME,
        failures.join("\n")
    );
}

#[test]
fn golden_gradients_f64() {
    check_all::<f64>(1e-10);
}

#[test]
fn golden_gradients_f32() {
    check_all::<f32>(1e-5);
}

/// The comparison is not vacuous: a gradient scaled by a tiny amount is reported.
#[test]
fn a_wrong_gradient_is_reported() {
    let mut case = golden::cases("ops.json").into_iter().find(|c| c["name"] == "exp").expect("the exp case");
    let first = case["grads"]["x"]["data"][0].as_f64().expect("a number");
    case["grads"]["x"]["data"][0] = Value::from(first * (1.0 + 1e-8));
    assert_eq!(check_case::<f64>(&case, 1e-10).len(), 1);
}
