"""Writes recurrent.json: torch.nn.LSTM and torch.nn.GRU in float64, forward values and gradients.

Run from this folder with PyTorch 2.15 (CPU): `python recurrent.py`. Each case has `args`
(input_size, hidden_size, num_layers, batch_first), `inputs` (`x`, and `h0` / `c0` when the
case passes an initial state), `parameters` under PyTorch's names, `outputs` (`output`, `h_n`,
and `c_n` for the LSTM), `upstream` for each output, and `grads`: the gradient of
`sum(output * up_output) + sum(h_n * up_h_n) [+ sum(c_n * up_c_n)]` with respect to each input
and parameter.
"""
import json

import torch

torch.manual_seed(14)


def flat(t):
    return {"shape": list(t.shape), "data": t.detach().reshape(-1).tolist()}


def case(kind, name, input_size, hidden_size, num_layers, seq, batch, batch_first, with_state):
    cls = torch.nn.LSTM if kind == "LSTM" else torch.nn.GRU
    m = cls(input_size, hidden_size, num_layers=num_layers, batch_first=batch_first).double()
    # Wider than the default init, so that the gates leave their linear range.
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.8, 0.8)
    shape = (batch, seq, input_size) if batch_first else (seq, batch, input_size)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    inputs = {"x": x}
    if with_state:
        h0 = torch.randn(num_layers, batch, hidden_size, dtype=torch.float64, requires_grad=True)
        inputs["h0"] = h0
        if kind == "LSTM":
            c0 = torch.randn(num_layers, batch, hidden_size, dtype=torch.float64, requires_grad=True)
            inputs["c0"] = c0
            out, (h_n, c_n) = m(x, (h0, c0))
        else:
            out, h_n = m(x, h0)
    else:
        if kind == "LSTM":
            out, (h_n, c_n) = m(x)
        else:
            out, h_n = m(x)
    outputs = {"output": out, "h_n": h_n}
    if kind == "LSTM":
        outputs["c_n"] = c_n
    upstream = {k: torch.randn_like(v) for k, v in outputs.items()}
    loss = sum((v * upstream[k]).sum() for k, v in outputs.items())
    loss.backward()
    grads = {k: flat(v.grad) for k, v in inputs.items()}
    grads.update({k: flat(p.grad) for k, p in m.named_parameters()})
    return {
        "name": name,
        "kind": kind,
        "args": {
            "input_size": input_size,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "batch_first": batch_first,
        },
        "inputs": {k: flat(v) for k, v in inputs.items()},
        "parameters": {k: flat(p) for k, p in m.named_parameters()},
        "outputs": {k: flat(v) for k, v in outputs.items()},
        "upstream": {k: flat(v) for k, v in upstream.items()},
        "grads": grads,
    }


cases = []
for kind in ["LSTM", "GRU"]:
    cases.append(case(kind, f"{kind} 2 layers, no state", 3, 4, 2, 5, 2, False, False))
    cases.append(case(kind, f"{kind} 2 layers, initial state", 3, 4, 2, 5, 2, False, True))
    cases.append(case(kind, f"{kind} 2 layers, batch_first, initial state", 3, 4, 2, 4, 3, True, True))
    cases.append(case(kind, f"{kind} 1 layer, batch 1", 2, 3, 1, 3, 1, False, False))

meta = {"torch": torch.__version__, "dtype": "float64", "script": "recurrent.py"}
with open("recurrent.json", "w") as f:
    json.dump({"meta": meta, "cases": cases}, f)
