//! The core's FP32 FMA peak: independent fused multiply-adds on zmm (AVX-512), ymm (AVX2) or
//! q (NEON) registers with nothing else in the loop, on 1 and on 2 threads. The GEMM benchmark
//! is read as a fraction of these numbers. Beside it, `microkernel/<path>/t1|t2`: the GEMM's f32
//! microkernel with its packed panels in L1 (`gemm::peak::microkernel_flops`), the share of
//! the peak a product's inner loop keeps with its loads and nothing else.
//!
//! Throughput is declared as `Elements(flops)`, so criterion's "elem/s" reads as FLOP/s
//! (`Gelem/s` = GFLOP/s).
//!
//! ```text
//! cargo bench --bench fma_peak                  # every path, 1 and 2 threads
//! cargo bench --bench fma_peak -- avx512/t1     # one path's peak and microkernel, 1 thread
//! cargo bench --bench fma_peak -- '^fma_peak/avx512/t1'   # the peak alone (a regex)
//! cargo bench --bench fma_peak -- --quick       # shorter run
//! ```

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use tapegrad::tensor::kernels::available_isas;
use tapegrad::tensor::kernels::gemm::peak::{fma_peak_flops, microkernel_flops};

/// FMA rounds per benchmark iteration (a few milliseconds of work on one core).
const ROUNDS: usize = 1 << 20;

/// FMA rounds timed after each run of the microkernel (`after_microkernel`): a quarter of a
/// millisecond on AVX-512.
const AFTER_ROUNDS: usize = 1 << 16;

/// Microkernel calls per benchmark iteration (about as much work as `ROUNDS` on AVX-512).
const CALLS: usize = 1 << 12;

/// Benchmarks `run` (one run does `flops` floating-point operations) as `name/t1` and `name/t2`:
/// every thread of a pool of that many runs it `iters` times at once, so that many cores are
/// busy.
fn on_each_thread(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, flops: u64, run: impl Fn() -> f64 + Sync) {
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a rayon pool");
        group.throughput(Throughput::Elements(flops * threads as u64));
        group.bench_function(format!("{name}/t{threads}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                pool.broadcast(|_| {
                    for _ in 0..iters {
                        std::hint::black_box(run());
                    }
                });
                start.elapsed()
            })
        });
    }
}

fn fma_peak(c: &mut Criterion) {
    let mut group = c.benchmark_group("fma_peak");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    for isa in available_isas() {
        let flops = fma_peak_flops(isa, 1) as u64 * ROUNDS as u64;
        on_each_thread(&mut group, isa.name(), flops, || fma_peak_flops(isa, ROUNDS));
    }
    for isa in available_isas() {
        let flops = microkernel_flops(isa, CALLS) as u64;
        on_each_thread(&mut group, &format!("microkernel/{}", isa.name()), flops, || microkernel_flops(isa, CALLS));
    }
    // The FMA loop again, each timed run right after the microkernel has run for a few
    // milliseconds (untimed): whether the core still gives the FMA loop its full rate then.
    for isa in available_isas() {
        let flops = fma_peak_flops(isa, 1) as u64 * AFTER_ROUNDS as u64;
        group.throughput(Throughput::Elements(flops));
        group.bench_function(format!("after_microkernel/{}/t1", isa.name()), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    std::hint::black_box(microkernel_flops(isa, 2 * CALLS));
                    let start = Instant::now();
                    std::hint::black_box(fma_peak_flops(isa, AFTER_ROUNDS));
                    timed += start.elapsed();
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fma_peak);
criterion_main!(benches);
