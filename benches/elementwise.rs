//! Elementwise and reduction throughput in GB/s (bytes read + written by the op, counting each
//! operand once), for f32 tensors of 1M and 4M elements shaped `[n / 1024, 1024]`, on 1 and 2
//! rayon threads:
//!
//! - `add/same`: `x + y`, both `[n/1024, 1024]` (reads 2n, writes n);
//! - `add/row`: `x + row`, `row` of shape `[1024]` broadcast over the rows (reads n, writes n);
//! - `mul_scalar`, `relu`, `exp`: one input, one output (reads n, writes n);
//! - `sum_all`: reads n;
//! - `softmax_rows`: softmax over the last dim (reads n, writes n; the kernel makes three passes
//!   over each row, which stays in cache).
//!
//! And `sum_dim0`: the column sums of a `[1792, 64]` and a `[1792, 128]` f32 tensor (`sum(&[0],
//! false)`, the transformer's bias gradients: 1792 tokens, rows of 64 or 128 features), which
//! stay in L2 (reads n).
//!
//! Run: `cargo bench --bench elementwise -- --warm-up-time 1 --measurement-time 2`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tapegrad::tensor::{Generator, Tensor};

/// Elements per row of the benchmark tensors.
const COLS: usize = 1024;

fn elementwise(c: &mut Criterion) {
    let sizes = [1usize << 20, 1 << 22];
    let mut gen = Generator::new(0);
    let inputs: Vec<(usize, Tensor, Tensor, Tensor)> = sizes
        .iter()
        .map(|&n| {
            let shape = [n / COLS, COLS];
            (n, Tensor::randn(&shape, &mut gen), Tensor::randn(&shape, &mut gen), Tensor::randn(&[COLS], &mut gen))
        })
        .collect();
    type Op = fn(&Tensor, &Tensor, &Tensor) -> Tensor;
    // (name, op, elements moved per input element)
    let ops: [(&str, Op, u64); 7] = [
        ("add/same", |x, y, _| x.add(y).unwrap(), 3),
        ("add/row", |x, _, row| x.add(row).unwrap(), 2),
        ("mul_scalar", |x, _, _| x.mul_scalar(1.5), 2),
        ("relu", |x, _, _| x.relu(), 2),
        ("exp", |x, _, _| x.exp(), 2),
        ("sum_all", |x, _, _| x.sum_all(), 1),
        ("softmax_rows", |x, _, _| x.softmax(1).unwrap(), 2),
    ];
    for (name, op, moved) in ops {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        for threads in [1usize, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for (n, x, y, row) in &inputs {
                group.throughput(Throughput::Bytes(moved * (*n as u64) * 4));
                let id = BenchmarkId::new(format!("f32/{threads}t"), format!("{}M", n >> 20));
                group.bench_function(id, |b| pool.install(|| b.iter(|| op(x, y, row))));
            }
        }
        group.finish();
    }
    let mut group = c.benchmark_group("sum_dim0");
    group.sample_size(10);
    let grads: Vec<Tensor> = [64, 128].iter().map(|&cols| Tensor::randn(&[1792, cols], &mut gen)).collect();
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for dz in &grads {
            let (rows, cols) = (dz.shape()[0], dz.shape()[1]);
            group.throughput(Throughput::Bytes((rows * cols * 4) as u64));
            let id = BenchmarkId::new(format!("f32/{threads}t"), format!("{rows}x{cols}"));
            group.bench_function(id, |b| pool.install(|| b.iter(|| dz.sum(&[0], false).unwrap())));
        }
    }
    group.finish();
}

criterion_group!(benches, elementwise);
criterion_main!(benches);
