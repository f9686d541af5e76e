//! Dropout forward + backward on 4M f32 elements (`p = 0.5`), on 1 and 2 rayon threads: draw the
//! mask from the generator and write `y = x · m / (1 - p)`, then backpropagate an upstream
//! gradient through the stored bit mask (`dx = dy · m / (1 - p)`).
//!
//! Throughput counts the bytes the issue assigns to one step: x read, y written, grad_y read,
//! grad_x written (4 bytes each per element), and the bit mask written once and read once
//! (numel / 8 bytes each): `4M · 16 + 2 · 4M / 8` bytes. criterion prints it as GB/s.
//!
//! Run: `cargo bench --bench dropout -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tapegrad::autograd::{dropout, Var};
use tapegrad::tensor::{Generator, Tensor};

/// Elements: 4M.
const NUMEL: usize = 1 << 22;

fn dropout_bench(c: &mut Criterion) {
    let mut init = Generator::new(0);
    let x = Var::parameter(Tensor::<f32>::randn(&[NUMEL], &mut init));
    let dy = Tensor::<f32>::randn(&[NUMEL], &mut init);
    let bytes = (NUMEL * (4 + 4 + 4 + 4) + 2 * (NUMEL / 8)) as u64;

    let mut group = c.benchmark_group("dropout_fwd_bwd");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(bytes));
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut gen = Generator::new(1);
        group.bench_function(BenchmarkId::new("f32/4M", format!("{threads}t")), |b| {
            pool.install(|| {
                b.iter(|| {
                    let y = dropout(&x, 0.5, &mut gen).unwrap();
                    y.backward_with(&dy, false).unwrap();
                    x.zero_grad();
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, dropout_bench);
criterion_main!(benches);
