//! Per-op tape overhead on tiny tensors: a chain of `N` ops on 16-element f32 values (cycling
//! `add`, `mul`, `relu`, `mul_scalar`), where the arithmetic is negligible and the cost is the
//! bookkeeping around it.
//!
//! - `var/forward+backward`: the chain on `Var` (each op allocates a node and saves what its
//!   backward needs), then `sum_all` and `backward` (the reverse walk, the gradient tensors, and
//!   freeing the graph);
//! - `var/forward`: the same chain recorded but never backpropagated (the graph is dropped);
//! - `var/no_grad`: the chain on `Var` inside `no_grad` (nothing recorded);
//! - `tensor/forward`: the chain on plain `Tensor`, the baseline without a tape.
//!
//! Each benchmark declares `Throughput::Elements(N)`, so criterion's `thrpt` line is in ops per
//! second; ns per op = 1e9 / thrpt (equivalently the `time` line divided by `N`). The tape's
//! overhead per op is the difference between a `var/*` line and `tensor/forward`.
//!
//! Run: `cargo bench --bench tape -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tapegrad::autograd::{no_grad, Var};
use tapegrad::tensor::{Generator, Tensor};

/// Ops per chain.
const N: usize = 100;
/// Elements per value.
const LEN: usize = 16;

fn var_chain(w: &Var, c: &Var) -> Var {
    let mut y = w.clone();
    for i in 0..N {
        y = match i % 4 {
            0 => y.add(c).unwrap(),
            1 => y.mul(c).unwrap(),
            2 => y.relu(),
            _ => y.mul_scalar(0.5),
        };
    }
    y
}

fn tensor_chain(w: &Tensor, c: &Tensor) -> Tensor {
    let mut y = w.clone();
    for i in 0..N {
        y = match i % 4 {
            0 => y.add(c).unwrap(),
            1 => y.mul(c).unwrap(),
            2 => y.relu(),
            _ => y.mul_scalar(0.5),
        };
    }
    y
}

fn tape(c: &mut Criterion) {
    let mut gen = Generator::new(0);
    let w0 = Tensor::<f32>::randn(&[LEN], &mut gen);
    let c0 = Tensor::<f32>::rand(&[LEN], &mut gen).add_scalar(0.5);
    let (w, cv) = (Var::parameter(w0.clone()), Var::new(c0.clone()));

    let mut group = c.benchmark_group(format!("chain{N}_f32x{LEN}"));
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("var/forward+backward", |b| {
        b.iter(|| {
            var_chain(&w, &cv).sum_all().backward().unwrap();
            w.zero_grad();
        })
    });
    group.bench_function("var/forward", |b| b.iter(|| var_chain(&w, &cv)));
    group.bench_function("var/no_grad", |b| b.iter(|| no_grad(|| var_chain(&w, &cv))));
    group.bench_function("tensor/forward", |b| b.iter(|| tensor_chain(&w0, &c0)));
    group.finish();
}

criterion_group!(benches, tape);
criterion_main!(benches);
