"""Writes torch_state_dicts.json and torch/*.safetensors: PyTorch state dicts for tapegrad to load.

Run with PyTorch 2.15 (CPU) and safetensors, from anywhere: `python tools/torch_state_dicts.py`.
It writes into `crates/golden/data/` of the repository it sits in.
Each case builds a small model with a fixed seed, saves `model.state_dict()` with
`safetensors.torch.save_file` as `torch/<name>.safetensors` (floating tensors in the case's
dtype: float32, float64, float16 or bfloat16; BatchNorm's `num_batches_tracked` stays int64),
and runs the model in eval mode on a fixed input. The JSON has, per case: `name`, `kind`,
`args`, `dtype`, `keys` (the state dict's names, in PyTorch's order), `num_batches_tracked`
(BatchNorm cases), `input` and `output` (`{shape, data}`). The output is computed in float64 from
the weights exactly as stored (a float16 weight is the float16 value), so it is the reference
for a tapegrad model of either element type.

The other direction, `python torch_state_dicts.py --check DIR`: DIR holds, for each case, the
files `<name>.safetensors` (a tapegrad model of that kind saved with `tapegrad_nn::save`) and
`<name>.output.safetensors` (tensor `output`: that model's output on the case's input), which the
test `torch_state_dicts::write_tapegrad_files_for_pytorch` of tapegrad-nn writes when
`TAPEGRAD_TORCH_EXPORT` names a directory. Each file is loaded with
`model.load_state_dict(load_file(path), strict=True)` into the PyTorch model of the case, which
must give tapegrad's output.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from torch import nn

# The fixtures live beside the other golden files of the repository.
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "golden", "data")

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def flat(t):
    return {"shape": list(t.shape), "data": t.detach().double().reshape(-1).tolist()}


def build(kind, args):
    """The PyTorch model of a case (in training mode, float32)."""
    if kind == "Linear":
        return nn.Linear(args["in"], args["out"])
    if kind == "ConvBnRelu":
        c = args["channels"]
        return nn.Sequential(nn.Conv2d(args["in"], c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
    if kind == "Mlp":
        return nn.Sequential(nn.Linear(args["in"], args["hidden"]), nn.ReLU(), nn.Linear(args["hidden"], args["out"]))
    if kind == "LayerNorm":
        return nn.LayerNorm(args["dim"])
    if kind == "Embedding":
        return nn.Embedding(args["num"], args["dim"])
    if kind == "MultiheadAttention":
        return nn.MultiheadAttention(args["dim"], args["heads"], batch_first=True)
    if kind == "TransformerEncoderLayer":
        return nn.TransformerEncoderLayer(args["dim"], args["heads"], args["ff"], dropout=0.1, batch_first=True)
    if kind == "LSTM":
        return nn.LSTM(args["in"], args["hidden"], num_layers=args["layers"])
    if kind == "GRU":
        return nn.GRU(args["in"], args["hidden"], num_layers=args["layers"])
    raise ValueError(kind)


def run(kind, model, x):
    """The model's output on `x` (eval mode), as tapegrad's `Module::forward` computes it."""
    with torch.no_grad():
        if kind == "Embedding":
            return model(x.long())
        if kind == "MultiheadAttention":
            return model(x, x, x, need_weights=False)[0]
        if kind in ("LSTM", "GRU"):
            return model(x)[0]
        return model(x)


def make_input(kind, args, gen):
    if kind == "Embedding":
        return torch.randint(0, args["num"], args["input"], generator=gen).double()
    # float32 values, so that a float32 model reads the input exactly.
    return torch.randn(*args["input"], generator=gen).float().double()


CASES = [
    ("linear", "Linear", "float32", {"in": 4, "out": 3, "input": [2, 4]}),
    ("linear_f64", "Linear", "float64", {"in": 4, "out": 3, "input": [2, 4]}),
    ("conv_bn_relu", "ConvBnRelu", "float32", {"in": 2, "channels": 3, "input": [2, 2, 4, 4]}),
    ("mlp_bf16", "Mlp", "bfloat16", {"in": 4, "hidden": 8, "out": 3, "input": [3, 4]}),
    ("layer_norm_f16", "LayerNorm", "float16", {"dim": 6, "input": [2, 3, 6]}),
    ("embedding", "Embedding", "float32", {"num": 10, "dim": 4, "input": [2, 3]}),
    ("multihead_attention", "MultiheadAttention", "float32", {"dim": 8, "heads": 2, "input": [2, 5, 8]}),
    ("transformer_encoder_layer", "TransformerEncoderLayer", "float32", {"dim": 8, "heads": 2, "ff": 16, "input": [2, 5, 8]}),
    ("lstm", "LSTM", "float32", {"in": 3, "hidden": 4, "layers": 2, "input": [5, 2, 3]}),
    ("gru_f64", "GRU", "float64", {"in": 3, "hidden": 4, "layers": 2, "input": [5, 2, 3]}),
]


def make(name, kind, dtype, args):
    torch.manual_seed(16)
    gen = torch.Generator().manual_seed(160)
    model = build(kind, args)
    with torch.no_grad():
        # Random biases and norm scales (PyTorch starts them at 0 or 1), so that a mix-up of
        # names shows in the output.
        for pname, p in model.named_parameters():
            if "bias" in pname or "norm" in pname or kind == "LayerNorm" or (kind == "ConvBnRelu" and pname == "1.weight"):
                p.uniform_(-0.5, 0.5, generator=gen)
    if kind == "ConvBnRelu":
        # Three training steps move the running statistics and count num_batches_tracked to 3.
        model.train()
        for _ in range(3):
            model(torch.randn(*args["input"], generator=gen) * 2.0 + 0.5)
    model.eval()
    state = {
        k: (v.to(DTYPES[dtype]) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()
    }
    os.makedirs(os.path.join(DATA, "torch"), exist_ok=True)
    save_file(state, os.path.join(DATA, "torch", f"{name}.safetensors"))
    # The reference: float64, from the weights exactly as saved.
    model = model.double()
    model.load_state_dict({k: (v.double() if v.is_floating_point() else v) for k, v in state.items()})
    x = make_input(kind, args, gen)
    out = run(kind, model, x)
    case = {
        "name": name,
        "kind": kind,
        "args": args,
        "dtype": dtype,
        "keys": list(state.keys()),
        "input": flat(x),
        "output": flat(out),
    }
    nbt = [int(v) for k, v in state.items() if k.endswith("num_batches_tracked")]
    if nbt:
        case["num_batches_tracked"] = nbt[0]
    return case


def check(folder):
    """Loads tapegrad's files into the PyTorch models (strict) and compares the outputs."""
    with open(os.path.join(DATA, "torch_state_dicts.json")) as f:
        cases = json.load(f)["cases"]
    passed = failed = 0
    for case in cases:
        name, kind = case["name"], case["kind"]
        model = build(kind, case["args"]).double().eval()
        try:
            state = load_file(os.path.join(folder, f"{name}.safetensors"))
            model.load_state_dict({k: (v.double() if v.is_floating_point() else v) for k, v in state.items()}, strict=True)
            want = load_file(os.path.join(folder, f"{name}.output.safetensors"))["output"].double()
            x = torch.tensor(case["input"]["data"], dtype=torch.float64).reshape(case["input"]["shape"])
            got = run(kind, model, x)
            err = (got - want).abs().max().item()
            ok = got.shape == want.shape and err <= 1e-4 * (1.0 + want.abs().max().item())
            print(f"{'ok  ' if ok else 'FAIL'} {name}: strict load_state_dict, max |torch - tapegrad| = {err:.2e}")
        except Exception as e:  # a failed load is a failed case, reported with the others
            ok = False
            print(f"FAIL {name}: {type(e).__name__}: {e}")
        passed += ok
        failed += not ok
    print(f"{passed} passed, {failed} failed")
    return failed == 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(0 if check(sys.argv[2]) else 1)
    cases = [make(*c) for c in CASES]
    meta = {"torch": torch.__version__, "script": "torch_state_dicts.py"}
    with open(os.path.join(DATA, "torch_state_dicts.json"), "w") as f:
        json.dump({"meta": meta, "cases": cases}, f)
