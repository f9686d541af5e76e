#!/usr/bin/env python3
"""PyTorch CPU counterparts of `examples/bench_models.rs`: the training steps of the CNN of
`examples/cnn_mnist.rs` and the row transformer of `examples/transformer.rs`.

Not used by the tests or CI. Run it where PyTorch is installed:

    python3 benches/peers/pytorch_models.py --threads 1
    python3 benches/peers/pytorch_models.py --threads 2 --model cnn

Each step is what a user writes: forward, cross-entropy, zero_grad, backward, step, in training
mode (dropout on), on uniform [0, 1) inputs with random labels. Prints the median, mean and
minimum milliseconds per step after the warm-up, and the process's peak resident set (ru_maxrss),
which includes the ~650 MiB that importing torch costs.
"""
import argparse
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class Cnn(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, 1, 1), nn.ReLU(), nn.Dropout2d(0.1), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x.reshape(x.shape[0], 1, 28, 28)))


class RowTransformer(nn.Module):
    def __init__(self, d_model, heads, layers, p):
        super().__init__()
        self.embed = nn.Linear(28, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(28, d_model))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, p, batch_first=True) for _ in range(layers)
        )
        self.head = nn.Linear(d_model, 10)

    def forward(self, x):
        h = self.embed(x.reshape(x.shape[0], 28, 28)) + self.pos
        for layer in self.layers:
            h = layer(h)
        return self.head(h.mean(1))


def time_steps(model, opt, x, y, steps, warmup):
    model.train()
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= warmup:
            times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), statistics.mean(times), min(times), loss.item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", choices=["cnn", "transformer", "both"], default="both")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {a.batch}, "
          f"{a.steps} steps after {a.warmup} warm-up")
    models = ["cnn", "transformer"] if a.model == "both" else [a.model]
    for name in models:
        torch.manual_seed(0)
        x, y = torch.rand(a.batch, 784), torch.randint(0, 10, (a.batch,))
        if name == "cnn":
            model = Cnn(a.width)
            opt = torch.optim.Adam(model.parameters(), lr=2e-3)
            label = f"cnn (width {a.width})"
        else:
            model = RowTransformer(a.d_model, a.heads, a.layers, 0.1)
            opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
            label = f"transformer (d_model {a.d_model}, {a.heads} heads, {a.layers} layers)"
        median, mean, low, loss = time_steps(model, opt, x, y, a.steps, a.warmup)
        print(f"{label}: ms/step median {median:.2f}, mean {mean:.2f}, min {low:.2f}; final loss {loss:.4f}")
    print(f"peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
