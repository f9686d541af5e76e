#!/usr/bin/env python3
"""Writes `crates/golden/data/gradient_penalty.json`: PyTorch's WGAN-GP gradient penalty (Gulrajani
et al., 2017) for two small critics in float64, its gradient with respect to every critic
parameter (a double backward), and a few Adam steps of the critic's loss with the penalty.

Run it with PyTorch 2.15 (CPU) from anywhere: `python3 benches/peers/gradient_penalty.py`.
`crates/nn/tests/suite/gradient_penalty.rs` checks tapegrad against the file.

For a critic `D`, real and fake batches and interpolation weights `eps` (one per sample),
`x_hat = eps real + (1 - eps) fake` and

    penalty = lambda * mean_i (||d D(x_hat)_i / d x_hat_i||_2 - 1)^2,

the gradient taken with `create_graph=True` so that the penalty can be differentiated with
respect to the parameters. The critic's loss is `mean D(fake) - mean D(real) + penalty`, and
`mean D(real) - mean D(fake)` is the Wasserstein estimate.

Each case has `kind` ("mlp" or "attention"), `args` (`lambda`, `lr`, `betas`, `steps`),
`inputs` (`real`, `fake`, `eps`), `parameters` (the initial weights under PyTorch's names),
`grad_norms` (`||d D / d x_hat||` per sample), `penalty` (shape []), `grads` (the penalty's
gradient for each parameter; zeros for the output layer's bias, which moves `D` but not its
gradient), then, per Adam step (`torch.optim.Adam(lr, betas)`, the loss
computed before the step), `losses`, `penalties` and `wasserstein` (shape [steps]), and
`parameters_after` the steps.

- "mlp": `nn.Sequential(Linear(2, 16), LayerNorm(16), Tanh(), Linear(16, 16), Tanh(),
  Linear(16, 1))` on 2-D points (LayerNorm rather than BatchNorm: the penalty is per sample).
- "attention": each sample a set of 5 points `[5, 2]`; a tanh embedding `Linear(2, 8)`, single-head
  causal self-attention (`query`, `key`, `value` projections, `F.scaled_dot_product_attention`
  with an additive `-inf` mask above the diagonal), tanh, the mean over the set, `out`
  `Linear(8, 1)`. PyTorch's fused CPU attention kernel has no double backward
  ("derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
  implemented"), so the attention runs under `sdpa_kernel(SDPBackend.MATH)`, the composite form.
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

torch.manual_seed(17)
torch.set_default_dtype(torch.float64)

LAMBDA = 10.0
LR = 1e-2
BETAS = (0.5, 0.9)
STEPS = 5


def flat(t):
    return {"shape": list(t.shape), "data": t.detach().reshape(-1).tolist()}


class AttentionCritic(nn.Module):
    def __init__(self, width=8, points=5):
        super().__init__()
        self.embed = nn.Linear(2, width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, 1)
        self.register_buffer("mask", torch.triu(torch.full((points, points), -math.inf), 1))

    def forward(self, x):
        h = torch.tanh(self.embed(x))
        with sdpa_kernel(SDPBackend.MATH):
            a = F.scaled_dot_product_attention(self.query(h), self.key(h), self.value(h), attn_mask=self.mask)
        return self.out(torch.tanh(a).mean(1))


def mlp_critic():
    m = nn.Sequential(nn.Linear(2, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    # LayerNorm starts at weight 1, bias 0; move it, so that its gradients are not special.
    with torch.no_grad():
        m[1].weight.uniform_(0.5, 1.5)
        m[1].bias.uniform_(-0.2, 0.2)
    return m


def ring(n):
    """Points near a ring of 8 Gaussians of radius 2 (the WGAN-GP paper's toy data)."""
    centre = torch.randint(0, 8, (n,)).double() * (2 * math.pi / 8)
    return 2 * torch.stack([centre.cos(), centre.sin()], 1) + 0.05 * torch.randn(n, 2)


def grad_norms(critic, real, fake, eps, create_graph):
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (dx,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=create_graph)
    return dx.flatten(1).norm(2, dim=1)


def penalty(critic, real, fake, eps):
    return LAMBDA * ((grad_norms(critic, real, fake, eps, True) - 1) ** 2).mean()


def case(name, kind, critic, real, fake, eps):
    parameters = {k: flat(p) for k, p in critic.named_parameters()}
    norms = grad_norms(critic, real, fake, eps, False)
    gp = penalty(critic, real, fake, eps)
    # The output layer's bias moves D(x) but not its gradient: zeros (PyTorch's None).
    grads = torch.autograd.grad(gp, list(critic.parameters()), materialize_grads=True)
    grads = {k: flat(g) for (k, _), g in zip(critic.named_parameters(), grads)}
    opt = torch.optim.Adam(critic.parameters(), lr=LR, betas=BETAS)
    losses, penalties, wasserstein = [], [], []
    for _ in range(STEPS):
        d_real, d_fake = critic(real).mean(), critic(fake).mean()
        step_gp = penalty(critic, real, fake, eps)
        loss = d_fake - d_real + step_gp
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        penalties.append(step_gp.item())
        wasserstein.append((d_real - d_fake).item())
    as_tensor = lambda v: flat(torch.tensor(v))
    return {
        "name": name,
        "kind": kind,
        "args": {"lambda": LAMBDA, "lr": LR, "betas": list(BETAS), "steps": STEPS},
        "inputs": {"real": flat(real), "fake": flat(fake), "eps": flat(eps)},
        "parameters": parameters,
        "grad_norms": flat(norms),
        "penalty": flat(gp),
        "grads": grads,
        "losses": as_tensor(losses),
        "penalties": as_tensor(penalties),
        "wasserstein": as_tensor(wasserstein),
        "parameters_after": {k: flat(p) for k, p in critic.named_parameters()},
    }


cases = []
n = 8
cases.append(case("mlp critic on 2-D points", "mlp", mlp_critic(), ring(n), 0.5 * torch.randn(n, 2), torch.rand(n, 1)))
n, points = 4, 5
real = torch.stack([ring(points) for _ in range(n)])
cases.append(
    case(
        "causal self-attention critic on sets of points",
        "attention",
        AttentionCritic(8, points),
        real,
        0.5 * torch.randn(n, points, 2),
        torch.rand(n, 1, 1),
    )
)

meta = {"torch": torch.__version__, "dtype": "float64", "script": "benches/peers/gradient_penalty.py"}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "crates", "golden", "data", "gradient_penalty.json")
with open(out, "w") as f:
    json.dump({"meta": meta, "cases": cases}, f)
print(f"wrote {os.path.normpath(out)}: " + ", ".join(f"{c['name']}: penalty {c['penalty']['data'][0]:.6f}" for c in cases))
