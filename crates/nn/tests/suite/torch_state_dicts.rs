//! PyTorch state dicts saved as safetensors, loaded by name into the equivalent tapegrad models,
//! and tapegrad's checkpoints laid out as PyTorch's strict `load_state_dict` wants them.
//!
//! The fixtures `torch/<case>.safetensors` and `torch_state_dicts.json` of the golden crate are
//! written by `tools/torch_state_dicts.py` (PyTorch 2.15): per case, a small model's
//! `state_dict()` (float32, float64, float16 or bfloat16; BatchNorm's `num_batches_tracked` in
//! int64) and the model's eval-mode output on a fixed input, computed in float64 from the stored
//! weights. The other direction needs Python: `write_tapegrad_files_for_pytorch` writes
//! tapegrad's files where `TAPEGRAD_TORCH_EXPORT` says, and `torch_state_dicts.py --check DIR`
//! loads them into PyTorch (see `docs/checkpoints.md`).

use std::collections::BTreeMap;

use serde_json::Value;
use tapegrad_autograd::Var;
use tapegrad_golden::{self as golden, Scratch};
use tapegrad_nn::dtype::*;
use tapegrad_nn::{
    load, load_non_strict, save, save_tensors, BatchNorm2d, Conv2d, Embedding, Error, LayerNorm, Linear, Module,
    MultiheadAttention, ReLU, Sequential, TransformerEncoderLayer, GRU, LSTM,
};
use tapegrad_tensor::{Float, Generator, Tensor};

const FIXTURES: &str = "torch_state_dicts.json";

fn arg(case: &Value, name: &str) -> usize {
    case["args"][name].as_u64().unwrap_or_else(|| panic!("{}: no argument {name}", case["name"])) as usize
}

/// The tapegrad model of a case's kind (as the script's `build`), initialised from `gen`.
fn build<T: Float>(case: &Value, gen: &mut Generator) -> Box<dyn Module<T>> {
    let a = |name| arg(case, name);
    match case["kind"].as_str().unwrap() {
        "Linear" => Box::new(Linear::<T>::new(a("in"), a("out"), gen)),
        "ConvBnRelu" => Box::new(
            Sequential::<T>::new()
                .add(Conv2d::<T>::new(a("in"), a("channels"), 3, 1, 1, gen))
                .add(BatchNorm2d::<T>::new(a("channels")))
                .add(ReLU::<T>::new()),
        ),
        "Mlp" => Box::new(
            Sequential::<T>::new()
                .add(Linear::<T>::new(a("in"), a("hidden"), gen))
                .add(ReLU::<T>::new())
                .add(Linear::<T>::new(a("hidden"), a("out"), gen)),
        ),
        "LayerNorm" => Box::new(LayerNorm::<T>::new(&[a("dim")])),
        "Embedding" => Box::new(Embedding::<T>::new(a("num"), a("dim"), gen)),
        "MultiheadAttention" => Box::new(MultiheadAttention::<T>::new(a("dim"), a("heads"), 0.0, gen).unwrap()),
        "TransformerEncoderLayer" => {
            Box::new(TransformerEncoderLayer::<T>::new(a("dim"), a("heads"), a("ff"), 0.1, gen).unwrap())
        }
        "LSTM" => Box::new(LSTM::<T>::new(a("in"), a("hidden"), a("layers"), gen).unwrap()),
        "GRU" => Box::new(GRU::<T>::new(a("in"), a("hidden"), a("layers"), gen).unwrap()),
        other => panic!("{FIXTURES}: unknown kind {other}"),
    }
}

fn fixture(case: &Value) -> std::path::PathBuf {
    golden::data_path(&format!("torch/{}.safetensors", case["name"].as_str().unwrap()))
}

/// The `num_batches_tracked` of the model's counters (0 when it has none).
fn batches_tracked<T: Float>(model: &dyn Module<T>) -> u64 {
    model.named_counters().into_iter().map(|(_, c)| c).sum()
}

/// Loads every fixture into a freshly initialised tapegrad model of element type `T` and checks
/// its eval-mode output against PyTorch's within `tol`.
fn check_every_fixture<T: Float>(tol: f64) {
    let cases = golden::cases(FIXTURES);
    assert_eq!(cases.len(), 10, "{FIXTURES}: every case");
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let mut model = build::<T>(case, &mut Generator::new(3));
        load(&mut model, fixture(case)).unwrap_or_else(|e| panic!("{name}: {e}"));
        model.eval();
        let x = Var::new(golden::tensor::<T>(&case["input"]));
        let y = model.forward(&x).unwrap_or_else(|e| panic!("{name}: {e}"));
        golden::assert_close(
            &format!("{name} ({}, into {})", case["dtype"], T::NAME),
            &y.value(),
            &case["output"],
            tol,
        );
        let want = case["num_batches_tracked"].as_u64().unwrap_or(0);
        assert_eq!(batches_tracked(&*model), want, "{name}: PyTorch's num_batches_tracked");
    }
}

#[test]
fn pytorch_state_dicts_load_into_f32_models_and_give_pytorchs_outputs() {
    check_every_fixture::<f32>(1e-5);
}

#[test]
fn pytorch_state_dicts_load_into_f64_models_and_give_pytorchs_outputs() {
    check_every_fixture::<f64>(1e-10);
}

#[test]
fn half_precision_values_are_converted_exactly() {
    // bfloat16 and float16 values are exact in f32: the loaded weights are the stored ones.
    let dir = Scratch::new("nn-torch", "half");
    let header = r#"{"weight":{"dtype":"F16","shape":[5],"data_offsets":[0,10]},"bias":{"dtype":"BF16","shape":[4],"data_offsets":[10,18]}}"#;
    let mut data = vec![];
    // f16: 1, -2, +inf, the smallest subnormal 2^-24, 0x3555 = 0.333251953125.
    for bits in [0x3C00u16, 0xC000, 0x7C00, 0x0001, 0x3555] {
        data.extend_from_slice(&bits.to_le_bytes());
    }
    // bf16: 1, 3.140625, -inf, 2^-133 (a subnormal).
    for bits in [0x3F80u16, 0x4049, 0xFF80, 0x0001] {
        data.extend_from_slice(&bits.to_le_bytes());
    }
    let path = dir.write("half.safetensors", &crate::checkpoint::raw_file(header, &data));
    #[derive(tapegrad_nn::Module)]
    struct Leaf<T: Float> {
        weight: Var<T>,
        bias: Var<T>,
    }
    let mut leaf =
        Leaf { weight: Var::parameter(Tensor::<f32>::zeros(&[5])), bias: Var::parameter(Tensor::zeros(&[4])) };
    load(&mut leaf, &path).unwrap();
    assert_eq!(leaf.weight.value().to_vec(), vec![1.0, -2.0, f32::INFINITY, 2f32.powi(-24), 1365.0 / 4096.0]);
    assert_eq!(leaf.bias.value().to_vec(), vec![1.0, 3.140625, f32::NEG_INFINITY, 2f32.powi(-133)]);
    let mut wide =
        Leaf { weight: Var::parameter(Tensor::<f64>::zeros(&[5])), bias: Var::parameter(Tensor::<f64>::zeros(&[4])) };
    load(&mut wide, &path).unwrap();
    assert_eq!(wide.weight.value().to_vec(), vec![1.0, -2.0, f64::INFINITY, 2f64.powi(-24), 1365.0 / 4096.0]);
    assert_eq!(wide.bias.value().to_vec(), vec![1.0, 3.140625, f64::NEG_INFINITY, 2f64.powi(-133)]);
}

// ─── names that do not fit ─────────────────────────────────────────────────────

/// Every tensor value and every count of a model, by name.
type Snapshot = (Vec<(String, Vec<f64>)>, Vec<(String, u64)>);

/// Every tensor and counter value of `model`, to check that a failed load changed nothing.
fn snapshot<T: Float>(model: &dyn Module<T>) -> Snapshot {
    let mut tensors: Vec<(String, Vec<f64>)> = vec![];
    for (n, v) in model.named_parameters().into_iter().chain(model.named_buffers()) {
        tensors.push((n, v.value().to_vec().iter().map(|x| x.to_f64()).collect()));
    }
    (tensors, model.named_counters())
}

fn case(name: &str) -> Value {
    golden::case(FIXTURES, name)
}

#[test]
fn a_strict_load_lists_missing_unexpected_and_mismatched_names_and_changes_nothing() {
    // The bfloat16 MLP's file into an MLP of another width and with an extra layer.
    let mlp = case("mlp_bf16");
    let mut gen = Generator::new(5);
    let mut model: Sequential = Sequential::new()
        .add(Linear::new(4, 6, &mut gen))
        .add(ReLU::new())
        .add(Linear::new(6, 3, &mut gen))
        .add(Linear::new(3, 3, &mut gen));
    let before = snapshot(&model);
    let err = load(&mut model, fixture(&mlp)).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    let msg = err.to_string();
    for needle in [
        "mlp_bf16.safetensors",
        "missing \"3.weight\", \"3.bias\"",
        "\"0.weight\" has shape [8, 4], the model wants [6, 4]",
        "\"0.bias\" has shape [8], the model wants [6]",
        "\"2.weight\" has shape [3, 8], the model wants [3, 6]",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }
    assert!(!msg.contains("\"2.bias\""), "2.bias fits: {msg}");
    assert_eq!(snapshot(&model), before, "a failed load changes nothing");

    // A Linear's file into a Sequential holding the same Linear: PyTorch's names differ by "0.".
    let linear = case("linear");
    let mut seq: Sequential = Sequential::new().add(Linear::new(4, 3, &mut gen));
    let msg = load(&mut seq, fixture(&linear)).unwrap_err().to_string();
    assert!(msg.contains("missing \"0.weight\", \"0.bias\"; unexpected \"bias\", \"weight\""), "{msg}");
}

#[test]
fn a_non_strict_load_loads_what_fits_and_reports_the_rest() {
    let mlp = case("mlp_bf16");
    let mut gen = Generator::new(6);
    let mut model: Sequential = Sequential::new()
        .add(Linear::new(4, 8, &mut gen))
        .add(ReLU::new())
        .add(Linear::new(8, 2, &mut gen))
        .add(Linear::new(2, 2, &mut gen));
    let before = snapshot(&model);
    let report = load_non_strict(&mut model, fixture(&mlp)).unwrap();
    assert_eq!(report.missing, ["3.weight", "3.bias"]);
    assert!(report.unexpected.is_empty(), "{report}");
    let mismatched: Vec<&str> = report.mismatched.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(mismatched, ["2.weight", "2.bias"]);
    assert_eq!(report.mismatched[0].reason, "has shape [3, 8], the model wants [2, 8]");
    // The first layer is PyTorch's; the mismatched and missing ones are as they were.
    let mut reference = build::<f32>(&mlp, &mut Generator::new(0));
    load(&mut reference, fixture(&mlp)).unwrap();
    let now = snapshot(&model).0;
    let want = snapshot(&*reference).0;
    assert_eq!(now[..2], want[..2], "0.weight and 0.bias loaded");
    assert_eq!(now[2..], before.0[2..], "the rest unchanged");

    // A file that fits exactly reports nothing; unexpected names are ignored.
    let mut exact = build::<f32>(&mlp, &mut Generator::new(1));
    assert!(load_non_strict(&mut exact, fixture(&mlp)).unwrap().is_empty());
    let mut first: Sequential = Sequential::new().add(Linear::new(4, 8, &mut gen));
    let report = load_non_strict(&mut first, fixture(&mlp)).unwrap();
    assert!(report.missing.is_empty() && report.mismatched.is_empty(), "{report}");
    assert_eq!(report.unexpected, ["2.bias", "2.weight"]);
}

#[test]
fn a_counter_takes_only_an_integer_scalar() {
    let dir = Scratch::new("nn-torch", "counter");
    let mut bn = BatchNorm2d::new(2);
    let names = ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"];
    let file = |nbt_dtype: &str, nbt_shape: &str, nbt: &[u8]| {
        let mut header = String::from("{");
        let mut data = vec![];
        for name in names {
            let start = data.len();
            if name == "num_batches_tracked" {
                data.extend_from_slice(nbt);
                header += &format!(
                    r#""{name}":{{"dtype":"{nbt_dtype}","shape":{nbt_shape},"data_offsets":[{start},{}]}},"#,
                    data.len()
                );
            } else {
                data.extend_from_slice(&[0; 8]);
                header +=
                    &format!(r#""{name}":{{"dtype":"F32","shape":[2],"data_offsets":[{start},{}]}},"#, data.len());
            }
        }
        header.pop();
        header.push('}');
        dir.write("bn.safetensors", &crate::checkpoint::raw_file(&header, &data))
    };
    load(&mut bn, file("I64", "[]", &7i64.to_le_bytes())).unwrap();
    assert_eq!(bn.num_batches_tracked(), 7);
    load(&mut bn, file("I32", "[]", &9i32.to_le_bytes())).unwrap();
    assert_eq!(bn.num_batches_tracked(), 9);
    let msg = load(&mut bn, file("F32", "[]", &1f32.to_le_bytes())).unwrap_err().to_string();
    assert!(msg.contains("\"num_batches_tracked\" has dtype F32, the model wants an integer count"), "{msg}");
    let msg = load(&mut bn, file("I64", "[1]", &3i64.to_le_bytes())).unwrap_err().to_string();
    assert!(msg.contains("\"num_batches_tracked\" has shape [1], the model wants []"), "{msg}");
    let err = load(&mut bn, file("I64", "[]", &(-1i64).to_le_bytes())).unwrap_err();
    assert!(matches!(err, Error::Format { .. }) && err.to_string().contains("not a count"), "{err}");
    assert_eq!(bn.num_batches_tracked(), 9, "failed loads change nothing");
    assert_eq!(bn.running_mean().value().to_vec(), vec![0.0, 0.0]);

    // A file without the counter (saved before BatchNorm counted, or by hand) loads, as PyTorch
    // fills in a missing num_batches_tracked: the count stays.
    let floats: Vec<(String, Tensor)> = bn
        .named_parameters()
        .into_iter()
        .chain(bn.named_buffers())
        .map(|(n, v)| (n, v.value().add_scalar(1.0)))
        .collect();
    let path = dir.path("old.safetensors");
    save_tensors(&floats, &path).unwrap();
    load(&mut bn, &path).unwrap();
    assert_eq!((bn.num_batches_tracked(), bn.running_mean().value().to_vec()), (9, vec![1.0, 1.0]));
}

// ─── tapegrad → PyTorch ────────────────────────────────────────────────────────

/// The names, dtypes and shapes of a safetensors file, sorted by name.
fn layout(path: &std::path::Path) -> BTreeMap<String, (String, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors().into_iter().map(|(n, t)| (n, (format!("{:?}", t.dtype()), t.shape().to_vec()))).collect()
}

/// Writes, for every case, a tapegrad model of its kind (tapegrad's own initialisation, BatchNorm
/// trained for two batches) as `<case>.safetensors` and its output on the case's input as
/// `<case>.output.safetensors`, into `TAPEGRAD_TORCH_EXPORT` when set (for
/// `torch_state_dicts.py --check DIR`), else into a scratch directory. Checks here that each
/// file has exactly PyTorch's names and shapes, F32 tensors and an I64 `num_batches_tracked`,
/// which is what PyTorch's strict `load_state_dict` needs.
#[test]
fn write_tapegrad_files_for_pytorch() {
    let scratch = Scratch::new("nn-torch", "export");
    let dir = std::env::var_os("TAPEGRAD_TORCH_EXPORT").map_or_else(|| scratch.dir().to_path_buf(), Into::into);
    std::fs::create_dir_all(&dir).unwrap();
    for case in golden::cases(FIXTURES) {
        let name = case["name"].as_str().unwrap();
        let mut gen = Generator::new(11);
        let mut model = build::<f32>(&case, &mut gen);
        if case["kind"] == "ConvBnRelu" {
            for _ in 0..2 {
                let shape = golden::usizes(&case["input"]["shape"]);
                model.forward(&Var::new(Tensor::randn(&shape, &mut gen).add_scalar(0.5))).unwrap();
            }
        }
        model.eval();
        let y = model.forward(&Var::new(golden::tensor::<f32>(&case["input"]))).unwrap().value();
        let path = dir.join(format!("{name}.safetensors"));
        save(&model, &path).unwrap();
        save_tensors(&[("output".to_string(), y)], dir.join(format!("{name}.output.safetensors"))).unwrap();

        let ours = layout(&path);
        let theirs = layout(&fixture(&case));
        let names = |m: &BTreeMap<String, (String, Vec<usize>)>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&ours), names(&theirs), "{name}: PyTorch's state dict names");
        for (key, (dtype, shape)) in &ours {
            let (their_dtype, their_shape) = &theirs[key];
            assert_eq!(shape, their_shape, "{name}: {key}");
            let want = if their_dtype == "I64" { "I64" } else { "F32" };
            assert_eq!(dtype, want, "{name}: {key}");
        }
        let keys: Vec<&str> = case["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(keys.len(), ours.len(), "{name}: the JSON lists the file's keys");
    }
}
