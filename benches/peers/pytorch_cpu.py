#!/usr/bin/env python3
"""PyTorch CPU figures for issue 6's table, on the same workloads as tapegrad's benches.

Not used by the tests or CI. Run it where PyTorch is installed (for example
`pip install torch --index-url https://download.pytorch.org/whl/cpu`):

    python3 benches/peers/pytorch_cpu.py --threads 1
    python3 benches/peers/pytorch_cpu.py --threads 2

Workloads (each the median of repeated runs after a warm-up):
- sgemm: C = A @ B for n x n float32, n = 1024 and 2048, in GFLOP/s;
- mlp: one training step of 784-1024-1024-10, ReLU, dropout 0.5 after each hidden layer,
  cross-entropy, plain SGD (lr 0.01), batch 128, random data: ms per step (tapegrad's
  counterpart: `cargo run --release --example bench_mlp -- --threads N`);
- dropout: F.dropout(x, 0.5) forward + backward on 4M float32 elements, ms (tapegrad's:
  `cargo bench --bench dropout`);
- tape: a chain of 100 small ops (add, mul, relu, ...) on 16-element tensors, forward +
  backward, us per op (tapegrad's: `cargo bench --bench tape`);
- and the peak resident memory (ru_maxrss) of the whole run, in MiB; with `--mlp-only` the
  run is only the MLP's 10 warm-up and 100 timed steps, the counterpart of
  `bench_mlp --steps 100`'s VmHWM (or `/usr/bin/time -v`'s maximum resident set).
"""
import argparse
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F


def median_time(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sgemm(n):
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = median_time(lambda: a @ b, repeats=10)
    return 2 * n**3 / t / 1e9


def mlp_step_ms(steps=100):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(1024, 10),
    )
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(10):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def dropout_ms():
    x = torch.randn(4 * 1024 * 1024, requires_grad=True)
    dy = torch.randn(4 * 1024 * 1024)

    def run():
        y = F.dropout(x, 0.5, training=True)
        y.backward(dy)
        x.grad = None

    return 1e3 * median_time(run, repeats=20)


def tape_us_per_op(chain=100):
    w = torch.randn(16, requires_grad=True)
    c = torch.randn(16)

    def run():
        h = w
        for i in range(chain // 4):
            h = h + c
            h = h * c
            h = torch.relu(h)
            h = h - c
        h.sum().backward()
        w.grad = None

    return 1e6 * median_time(run, repeats=200) / chain


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--mlp-only", action="store_true",
        help="run only the MLP steps, so that the peak RSS is theirs (compare with bench_mlp's VmHWM)",
    )
    args = parser.parse_args()
    # Pin the process to N cores: thread-count flags alone do not stop XLA from using every core.
    os.sched_setaffinity(0, set(range(args.threads)))
    torch.set_num_threads(args.threads)
    print(f"PyTorch {torch.__version__}, {args.threads} thread(s)")
    if args.mlp_only:
        print(f"mlp step: {mlp_step_ms():.2f} ms")
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        return
    for n in (1024, 2048):
        print(f"sgemm {n}: {sgemm(n):.1f} GFLOP/s")
    print(f"mlp step: {mlp_step_ms():.2f} ms")
    print(f"dropout fwd+bwd 4M: {dropout_ms():.2f} ms")
    print(f"tape: {tape_us_per_op():.2f} us per op")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
