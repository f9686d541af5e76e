#!/usr/bin/env python3
"""JAX (XLA, CPU) figures for issue 6's table: SGEMM and the MLP training step.

Not used by the tests or CI. Run it where JAX is installed (`pip install jax`); XLA's CPU
thread count is set through XLA_FLAGS before JAX is imported:

    python3 benches/peers/jax_cpu.py --threads 1
    python3 benches/peers/jax_cpu.py --threads 2

The MLP step is the same as in pytorch_cpu.py (784-1024-1024-10, ReLU, dropout 0.5 after each
hidden layer, cross-entropy, plain SGD lr 0.01, batch 128), jit-compiled, median of 100 steps.
"""
import argparse
import os
import statistics
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    # Pin the process to N cores: thread-count flags alone do not stop XLA from using every core.
    os.sched_setaffinity(0, set(range(args.threads)))
    os.environ["XLA_FLAGS"] = (
        f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
        f"intra_op_parallelism_threads={args.threads}"
    )
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)

    def timed(fn, repeats):
        for _ in range(3):
            jax.block_until_ready(fn())
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    print(f"JAX {jax.__version__}, {args.threads} thread(s)")
    for n in (1024, 2048):
        a = jax.random.normal(key, (n, n), jnp.float32)
        b = jax.random.normal(key, (n, n), jnp.float32)
        mm = jax.jit(lambda a, b: a @ b)
        print(f"sgemm {n}: {2 * n**3 / timed(lambda: mm(a, b), 10) / 1e9:.1f} GFLOP/s")

    sizes = [(784, 1024), (1024, 1024), (1024, 10)]
    keys = jax.random.split(key, len(sizes) + 2)
    params = [
        (jax.random.uniform(k, (i, o), jnp.float32, -(i**-0.5), i**-0.5), jnp.zeros(o, jnp.float32))
        for k, (i, o) in zip(keys, sizes)
    ]
    x = jax.random.normal(keys[-2], (128, 784), jnp.float32)
    y = jax.random.randint(keys[-1], (128,), 0, 10)

    def loss(params, x, y, key):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.relu(h)
                key, sub = jax.random.split(key)
                keep = jax.random.bernoulli(sub, 0.5, h.shape)
                h = jnp.where(keep, h / 0.5, 0.0)
        logp = jax.nn.log_softmax(h)
        return -jnp.mean(logp[jnp.arange(x.shape[0]), y])

    @jax.jit
    def step(params, key):
        g = jax.grad(loss)(params, x, y, key)
        return [(w - 0.01 * gw, b - 0.01 * gb) for (w, b), (gw, gb) in zip(params, g)]

    state = {"params": params, "key": key}

    def one():
        state["key"], sub = jax.random.split(state["key"])
        state["params"] = step(state["params"], sub)
        return state["params"]

    print(f"mlp step: {1e3 * timed(one, 100):.2f} ms")


if __name__ == "__main__":
    main()
