//! The core's FP32 FMA peak: independent fused multiply-adds on zmm (AVX-512), ymm (AVX2) or
//! q (NEON) registers with nothing else in the loop, on 1 and on 2 threads. The GEMM benchmark
//! is read as a fraction of these numbers.
//!
//! Throughput is declared as `Elements(flops)`, so criterion's "elem/s" reads as FLOP/s
//! (`Gelem/s` = GFLOP/s).
//!
//! ```text
//! cargo bench --bench fma_peak                  # every path, 1 and 2 threads
//! cargo bench --bench fma_peak -- avx512/t1     # one path (criterion filters by name)
//! cargo bench --bench fma_peak -- --quick       # shorter run
//! ```

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tapegrad::tensor::kernels::available_isas;
use tapegrad::tensor::kernels::gemm::peak::fma_peak_flops;

/// FMA rounds per benchmark iteration (a few milliseconds of work on one core).
const ROUNDS: usize = 1 << 20;

fn fma_peak(c: &mut Criterion) {
    let mut group = c.benchmark_group("fma_peak");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    for isa in available_isas() {
        let flops = fma_peak_flops(isa, 1) as u64 * ROUNDS as u64;
        for threads in [1usize, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a rayon pool");
            group.throughput(Throughput::Elements(flops * threads as u64));
            group.bench_function(format!("{}/t{threads}", isa.name()), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    // Every pool thread runs the whole loop at once: `threads` cores busy.
                    pool.broadcast(|_| {
                        for _ in 0..iters {
                            std::hint::black_box(fma_peak_flops(isa, ROUNDS));
                        }
                    });
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, fma_peak);
criterion_main!(benches);
