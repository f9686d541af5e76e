//! Every forward value in the golden crate's `ops.json` (PyTorch 2.15, float64), matched in f64 and f32.
//!
//! The file was produced by PyTorch; each case gives inputs, args and the output (see the
//! golden crate's `data/README.md`). Gradients in the same file are checked by the autograd crate.

use golden::{tensor, usizes};
use serde_json::Value;
use tapegrad_tensor::{Float, Result, Tensor};

use tapegrad_golden as golden;

/// Runs the op a case names on its inputs, in `T`.
fn run<T: Float>(case: &Value) -> Result<Tensor<T>> {
    let name = case["name"].as_str().expect("a case name");
    let args = &case["args"];
    let x: Tensor<T> = tensor(&case["inputs"]["x"]);
    let input = |k: &str| tensor::<T>(&case["inputs"][k]);
    let arg = |k: &str| args[k].as_u64().expect("an integer argument") as usize;
    let op = name.split([' ', '(']).next().expect("a name");
    Ok(match op {
        "matmul" => x.matmul(&input("y"))?,
        "add" => x.add(&input("y"))?,
        "sub" => x.sub(&input("y"))?,
        "mul" => x.mul(&input("y"))?,
        "div" => x.div(&input("y"))?,
        "maximum" => x.maximum(&input("y"))?,
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
        "sum" => x.sum(&usizes(&args["dims"]), args["keepdim"].as_bool().expect("keepdim"))?,
        "mean" => x.mean(&usizes(&args["dims"]), args["keepdim"].as_bool().expect("keepdim"))?,
        "max" => x.max(arg("dim"), args["keepdim"].as_bool().expect("keepdim"))?,
        "softmax" => x.softmax(arg("dim"))?,
        "log_softmax" => x.log_softmax(arg("dim"))?,
        // PyTorch: x.t() * 2, an op on a non-contiguous view.
        "transpose" => x.transpose(0, 1)?.mul_scalar(T::from_f64(2.0)),
        "permute" => x.permute(&usizes(&args["dims"]))?,
        "narrow" => x.narrow(arg("dim"), arg("start"), arg("len"))?,
        "expand" => x.expand(&usizes(&args["shape"]))?,
        "reshape" => x.reshape(&usizes(&args["shape"]))?,
        "cat" => Tensor::cat(&[&x, &input("y")], arg("dim"))?,
        "stack" => Tensor::stack(&[&x, &input("y")], arg("dim"))?,
        "index_select" => x.index_select(arg("dim"), &usizes(&args["index"]))?,
        "gather" => {
            let index = &args["index"];
            x.gather(arg("dim"), &usizes(&index["data"]), &usizes(&index["shape"]))?
        }
        "conv2d" => x.conv2d(&input("w"), Some(&input("b")), arg("stride"), arg("padding"))?,
        "max_pool2d" => x.max_pool2d(arg("kernel"), arg("stride"), args["padding"].as_u64().unwrap_or(0) as usize)?,
        "avg_pool2d" => x.avg_pool2d(arg("kernel"), arg("stride"), args["padding"].as_u64().unwrap_or(0) as usize)?,
        other => panic!("golden case {name:?}: no op {other:?} is mapped; add it to this test"),
    })
}

/// Compares every case in `T` with relative tolerance `rtol` (plus `rtol` absolute near zero).
fn check_all<T: Float>(rtol: f64) {
    let mut failures = vec![];
    let cases = golden::cases("ops.json");
    assert!(cases.len() >= 40, "expected the full golden file, found {} cases", cases.len());
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("?");
        let want = tensor::<f64>(&case["output"]);
        match run::<T>(case) {
            Err(e) => failures.push(format!("{name}: error {e}")),
            Ok(got) if got.shape() != want.shape() => {
                failures.push(format!("{name}: shape {:?}, PyTorch {:?}", got.shape(), want.shape()))
            }
            Ok(got) => {
                for (i, (g, w)) in got.to_vec().into_iter().zip(want.to_vec()).enumerate() {
                    let g = g.to_f64();
                    if (g - w).abs() > rtol * (1.0 + w.abs()) {
                        failures.push(format!("{name}: element {i}: {g} vs PyTorch {w}"));
                        break;
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases differ in {}:\n{}",
        failures.len(),
        cases.len(),
        T::NAME,
        failures.join("\n")
    );
}

#[test]
fn golden_forward_values_f64() {
    check_all::<f64>(1e-10);
}

#[test]
fn golden_forward_values_f32() {
    check_all::<f32>(1e-5);
}
