//! GEMM throughput: SGEMM on every kernel path for square sizes at 1 and 2 threads, a DGEMM
//! sample, and the f32 products of the benchmark 784-1024-1024-10 MLP at batch 128 (forward and
//! both backward products of each layer, which read transposed operands in place), and those of the
//! row transformer's linear layers.
//!
//! Throughput is declared as `Elements(2 m n k)`, so criterion's "elem/s" reads as FLOP/s
//! (`Gelem/s` = GFLOP/s); compare with `benches/fma_peak.rs`. Names are
//! `group/path/threads/size`, so criterion's filter picks a subset:
//!
//! ```text
//! cargo bench --bench gemm                            # everything (a few minutes)
//! cargo bench --bench gemm -- 'sgemm/avx512/t1/1024'  # one point
//! cargo bench --bench gemm -- 'sgemm/.*/2048'         # every path at n = 2048
//! cargo bench --bench gemm -- mlp --quick             # shorter run
//! ```
//!
//! The scalar path is skipped at n = 2048 (tens of seconds per sample; it is the reference,
//! not a contender).

use std::time::{Duration, Instant};
use tapegrad::tensor::TensorNew;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use rayon::ThreadPool;
use tapegrad::tensor::kernels::gemm::{gemm_with, MatMut, MatRef};
use tapegrad::tensor::kernels::{active_isa, available_isas, Isa};
use tapegrad::tensor::{Float, Generator, Tensor};

const SIZES: [usize; 6] = [64, 128, 256, 512, 1024, 2048];

fn pools() -> [(usize, ThreadPool); 2] {
    [1, 2].map(|t| (t, rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("a rayon pool")))
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
}

/// Times `iters` runs of `f` inside `pool` (one `install` per sample, not per run).
fn timed(pool: &ThreadPool, iters: u64, mut f: impl FnMut() + Send) -> Duration {
    pool.install(|| {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        start.elapsed()
    })
}

/// `C = A · B` for square `n x n` row-major operands on `isa`.
fn square<T: Float>(group: &mut BenchmarkGroup<'_, WallTime>, isa: Isa, sizes: &[usize]) {
    let mut gen = Generator::new(0);
    for &n in sizes {
        if isa == Isa::Scalar && n > 1024 {
            continue;
        }
        let a = Tensor::<T>::randn(&[n, n], &mut gen).to_vec();
        let b = Tensor::<T>::randn(&[n, n], &mut gen).to_vec();
        let mut c = vec![T::ZERO; n * n];
        group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        for (threads, pool) in pools() {
            group.bench_function(format!("{}/t{threads}/{n}", isa.name()), |bench| {
                bench.iter_custom(|iters| {
                    timed(&pool, iters, || {
                        let (a, b) = (MatRef::row_major(&a, n, n), MatRef::row_major(&b, n, n));
                        gemm_with(isa, MatMut::row_major(&mut c, n, n), a, b, false)
                    })
                })
            });
        }
    }
}

fn sgemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("sgemm");
    configure(&mut group);
    for isa in available_isas() {
        square::<f32>(&mut group, isa, &SIZES);
    }
    group.finish();
}

fn dgemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("dgemm");
    configure(&mut group);
    square::<f64>(&mut group, active_isa(), &[256, 1024]);
    group.finish();
}

/// The products of one training step of the 784-1024-1024-10 MLP at batch 128 (weights
/// stored `[out, in]` as `Linear` keeps them), through `Tensor::matmul` on the active path:
/// `(name, lhs, rhs)` with transposed views where the layer reads them. Named
/// `layer_role_m x k x n`.
fn mlp(c: &mut Criterion) {
    let mut group = c.benchmark_group("mlp");
    configure(&mut group);
    let mut gen = Generator::new(1);
    let mut randn = |shape: &[usize]| Tensor::<f32>::randn(shape, &mut gen);
    let (x, h, dh, dy) = (randn(&[128, 784]), randn(&[128, 1024]), randn(&[128, 1024]), randn(&[128, 10]));
    let (w1, w2, w3) = (randn(&[1024, 784]), randn(&[1024, 1024]), randn(&[10, 1024]));
    let t = |v: &Tensor<f32>| v.t().expect("a 2-D tensor");
    let products: [(&str, Tensor<f32>, Tensor<f32>); 8] = [
        ("fc1_fwd_128x784x1024", x.clone(), t(&w1)),  // h1 = x W1ᵀ
        ("fc1_dw_1024x128x784", t(&dh), x.clone()),   // dW1 = dh1ᵀ x
        ("fc2_fwd_128x1024x1024", h.clone(), t(&w2)), // h2 = h1 W2ᵀ
        ("fc2_dx_128x1024x1024", dh.clone(), w2),     // dh1 = dh2 W2
        ("fc2_dw_1024x128x1024", t(&dh), h.clone()),  // dW2 = dh2ᵀ h1
        ("fc3_fwd_128x1024x10", h.clone(), t(&w3)),   // y = h2 W3ᵀ
        ("fc3_dx_128x10x1024", dy.clone(), w3),       // dh2 = dy W3
        ("fc3_dw_10x128x1024", t(&dy), h),            // dW3 = dyᵀ h2
    ];
    named_products(&mut group, &products);
    group.finish();
}

/// The products of the row transformer's linear layers (`examples/transformer.rs`: 64 digits
/// of 28 rows, so 1792 token rows; width 64, feed-forward 128) in one training step: each of the
/// attention's four `64 -> 64` projections and `linear1` (`64 -> 128`), forward, input gradient
/// and weight gradient (`linear2`'s are `linear1`'s with `m` and `n` swapped). Named as `mlp`'s.
fn transformer(c: &mut Criterion) {
    let mut group = c.benchmark_group("transformer");
    configure(&mut group);
    let mut gen = Generator::new(2);
    let mut randn = |shape: &[usize]| Tensor::<f32>::randn(shape, &mut gen);
    let (x, dz, dh) = (randn(&[1792, 64]), randn(&[1792, 64]), randn(&[1792, 128]));
    let (w, w1) = (randn(&[64, 64]), randn(&[128, 64]));
    let t = |v: &Tensor<f32>| v.t().expect("a 2-D tensor");
    let products: [(&str, Tensor<f32>, Tensor<f32>); 6] = [
        ("proj_fwd_1792x64x64", x.clone(), t(&w)), // z = x Wᵀ
        ("proj_dx_1792x64x64", dz.clone(), w),     // dx = dz W
        ("proj_dw_64x1792x64", t(&dz), x.clone()), // dW = dzᵀ x
        ("ff1_fwd_1792x64x128", x.clone(), t(&w1)),
        ("ff1_dx_1792x128x64", dh.clone(), w1),
        ("ff1_dw_128x1792x64", t(&dh), x),
    ];
    named_products(&mut group, &products);
    group.finish();
}

/// Times each `(name, lhs, rhs)` of `products` as `lhs.matmul(rhs)` on 1 and 2 threads, as
/// `<path>/t<threads>/<name>`, with its flops as the throughput.
fn named_products(group: &mut BenchmarkGroup<'_, WallTime>, products: &[(&str, Tensor<f32>, Tensor<f32>)]) {
    for (name, lhs, rhs) in products {
        let (m, k, n) = (lhs.shape()[0], lhs.shape()[1], rhs.shape()[1]);
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        for (threads, pool) in pools() {
            group.bench_function(format!("{}/t{threads}/{name}", active_isa().name()), |bench| {
                bench.iter_custom(|iters| {
                    timed(&pool, iters, || {
                        std::hint::black_box(lhs.matmul(rhs).expect("matching shapes"));
                    })
                })
            });
        }
    }
}

criterion_group!(benches, sgemm, dgemm, mlp, transformer);
criterion_main!(benches);
