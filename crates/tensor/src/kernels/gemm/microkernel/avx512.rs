//! AVX-512F microkernels (x86_64): 14 rows x 2 zmm vectors per tile.
//!
//! A tile of `C` lives in 28 of the 32 zmm registers; per step of `k` the kernel loads two
//! vectors of `B` and broadcasts 14 elements of `A` straight from memory into 28 FMAs. Zen 5
//! has two 512-bit FMA pipes with a latency of 4 cycles, so at least 8 independent accumulators
//! are needed; 28 leave room, and the 16 loads per 28 FMAs stay under the two load ports.
//! With its operands in cache the kernel runs at about 98% of the measured FMA peak on that
//! Zen 5 (`benches/fma_peak.rs`); the rest of a large SGEMM's gap is packing. On an Intel Xeon
//! (sessions 11-21) the same kernel with its operands in L1 reads 79-84% of the peak
//! (`microkernel/avx512` in that benchmark): that core issues fewer FMAs per cycle to code that
//! loads as it multiplies, at the same clock, as every tile shape tried there did
//! (`docs/benchmarks.md`, session 21).
//!
//! Blocking, tuned on a Zen 5 core (L1d 48 KiB, L2 1 MiB, L3 32 MiB shared) by sweeping
//! `kc` from 192 to 1024 at n = 1024 and 2048: the textbook choice (a `kc x nr` micro-panel of
//! `B` held in L1, `kc = 256`) loses 5-8% at n = 2048 to the extra passes over `C` (each `kc`
//! slice re-reads and re-writes all of `C`, 16 MiB there). Zen 5's L2 feeds L1 fast enough
//! (the kernel needs 184 bytes per 14 cycles) for both micro-panels to stream from L2, so:
//! - f32: `mr = 14`, `nr = 32`, `kc = 1024`: the `B` micro-panel (128 KiB) and the `mc x kc`
//!   block of `A` (`mc = 56`: 224 KiB) share L2; `nc = 1024` keeps the packed `B` panel (4 MiB)
//!   a modest slice of L3, shared by both threads.
//! - f64: `mr = 14`, `nr = 16`, with the same byte budgets: `kc = 1024`, `mc = 28`, `nc = 1024`.
//!
//! Edge kernels of 4 and 7 rows (same packed `A`, fewer rows computed) take the short last
//! panel of a block of `M`: 128 rows are 9 full panels and 2 rows, which the full tile would
//! compute as 14. Measured on the MLP's 128-row products at 1 thread
//! (`cargo bench --bench gemm -- mlp/avx512/t1`): 196-218 -> 212-240 GFLOP/s.
//!
//! Two more f32 kernels read `A` where it is (`kernel_f32_a_rows` for a row-major `A`,
//! `kernel_f32_a_cols` for a transposed one), for products whose `C` is narrow enough that
//! packing `A` is a large share of the work (`blocking.rs`): a transformer's linear layers
//! (`n = 64 .. 192`), whose packing of `A` took 8% of the training step. Same multiply-adds in
//! the same order as `kernel_f32`, so the same bits. Measured on the transformer of
//! `examples/bench_models.rs` at 1 thread (`docs/benchmarks.md`, session 14): 13.1-13.8 ->
//! 12.4-12.8 ms. (Unrolled by 4 over `k` to share the row-major kernel's address arithmetic, it
//! spilled accumulators and ran 30% slower.)
//!
//! Narrow kernels (`kernel_f32_n16*`: 14 x 16, one vector per row) take a last micro-panel of
//! `B` at most 16 columns wide, which the full tile would compute as 32: a convolution's
//! `C` of 196 columns (6 panels and 4 columns) or 144 (4 and 16). Same multiply-adds per
//! column, so the same bits. Measured on conv2 of the MNIST CNN
//! (`cargo bench --bench layers -- 'conv2d/l2_16to32_14x14/forward\+backward/1t'`, with
//! `blocking.rs`'s whole-`A` order of the same session): 4.03-4.21 -> 3.90-3.97 ms.
//!
//! The `mc` and `nc` written here are the values before `caches.rs` derives them from the
//! caches this CPU reports (`GemmKernels::microkernel`); the tile and `kc` are used as written.

use std::arch::x86_64::*;

use super::simd_microkernel;
use crate::kernels::gemm::packing::x86::{pack_f32, pack_f32_avx512, pack_f64};
use crate::kernels::gemm::{DirectA, Microkernel, Narrow};
use crate::kernels::Isa;

/// Steps of `k` ahead at which the kernels prefetch their packed micro-panels. With `kc = 1024`
/// neither micro-panel fits a 48 KiB L1, so both stream from L2 on every call; on an Intel Xeon
/// (2 MiB L2) the hardware prefetchers alone left the f32 kernel waiting: SGEMM 1024 at 1 thread
/// went from 196-204 to 213-215 GFLOP/s (83-86% -> 90% of the FMA peak) with this, DGEMM from
/// 87 to 95. 8 and 16 steps measured alike. (The AVX2 kernel, whose `kc = 256` micro-panels
/// fit L1, lost 5% with it: it has none.)
const PREFETCH_AHEAD: usize = 8;

/// Rows of the f32 tile.
const F32_MR: usize = 14;
/// Vectors per row of the f32 tile (16 lanes each).
const F32_NV: usize = 2;
/// Columns of the f32 tile.
const F32_NR: usize = F32_NV * 16;

/// Rows of the f64 tile.
const F64_MR: usize = 14;
/// Vectors per row of the f64 tile (8 lanes each).
const F64_NV: usize = 2;
/// Columns of the f64 tile.
const F64_NR: usize = F64_NV * 8;

simd_microkernel! {
    /// f32 AVX-512 microkernel, a 14 x 32 tile.
    kernel_f32: f32, "avx512f", mr = F32_MR, nv = F32_NV, lanes = 16,
    zero = _mm512_setzero_ps(), load = _mm512_loadu_ps, store = _mm512_storeu_ps,
    splat = _mm512_set1_ps, fma = _mm512_fmadd_ps, add = _mm512_add_ps, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD
}

simd_microkernel! {
    /// f64 AVX-512 microkernel, a 14 x 16 tile.
    kernel_f64: f64, "avx512f", mr = F64_MR, nv = F64_NV, lanes = 8,
    zero = _mm512_setzero_pd(), load = _mm512_loadu_pd, store = _mm512_storeu_pd,
    splat = _mm512_set1_pd, fma = _mm512_fmadd_pd, add = _mm512_add_pd, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD
}

simd_microkernel! {
    /// f32 AVX-512 edge kernel: the first 4 rows of a 14 x 32 tile.
    kernel_f32_rows4: f32, "avx512f", mr = F32_MR, rows = 4, nv = F32_NV, lanes = 16,
    zero = _mm512_setzero_ps(), load = _mm512_loadu_ps, store = _mm512_storeu_ps,
    splat = _mm512_set1_ps, fma = _mm512_fmadd_ps, add = _mm512_add_ps, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD
}

simd_microkernel! {
    /// f32 AVX-512 edge kernel: the first 7 rows of a 14 x 32 tile.
    kernel_f32_rows7: f32, "avx512f", mr = F32_MR, rows = 7, nv = F32_NV, lanes = 16,
    zero = _mm512_setzero_ps(), load = _mm512_loadu_ps, store = _mm512_storeu_ps,
    splat = _mm512_set1_ps, fma = _mm512_fmadd_ps, add = _mm512_add_ps, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD
}

simd_microkernel! {
    /// f32 AVX-512 edge kernel: the first 10 rows of a 14 x 32 tile (the 8 rows a 64-row
    /// weight gradient leaves after four full tiles).
    kernel_f32_rows10: f32, "avx512f", mr = F32_MR, rows = 10, nv = F32_NV, lanes = 16,
    zero = _mm512_setzero_ps(), load = _mm512_loadu_ps, store = _mm512_storeu_ps,
    splat = _mm512_set1_ps, fma = _mm512_fmadd_ps, add = _mm512_add_ps, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD
}

simd_microkernel! {
    /// f64 AVX-512 edge kernel: the first 4 rows of a 14 x 16 tile.
    kernel_f64_rows4: f64, "avx512f", mr = F64_MR, rows = 4, nv = F64_NV, lanes = 8,
    zero = _mm512_setzero_pd(), load = _mm512_loadu_pd, store = _mm512_storeu_pd,
    splat = _mm512_set1_pd, fma = _mm512_fmadd_pd, add = _mm512_add_pd, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD
}

simd_microkernel! {
    /// f64 AVX-512 edge kernel: the first 7 rows of a 14 x 16 tile.
    kernel_f64_rows7: f64, "avx512f", mr = F64_MR, rows = 7, nv = F64_NV, lanes = 8,
    zero = _mm512_setzero_pd(), load = _mm512_loadu_pd, store = _mm512_storeu_pd,
    splat = _mm512_set1_pd, fma = _mm512_fmadd_pd, add = _mm512_add_pd, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD
}

simd_microkernel! {
    /// f32 AVX-512 microkernel, a 14 x 32 tile, reading a row-major `A` where it is.
    kernel_f32_a_rows, a = rows: f32, "avx512f", mr = F32_MR, nv = F32_NV, lanes = 16,
    zero = _mm512_setzero_ps(), load = _mm512_loadu_ps, store = _mm512_storeu_ps,
    splat = _mm512_set1_ps, fma = _mm512_fmadd_ps, add = _mm512_add_ps, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD
}

simd_microkernel! {
    /// f32 AVX-512 microkernel, a 14 x 32 tile, reading a transposed `A` where it is.
    kernel_f32_a_cols, a = cols: f32, "avx512f", mr = F32_MR, nv = F32_NV, lanes = 16,
    zero = _mm512_setzero_ps(), load = _mm512_loadu_ps, store = _mm512_storeu_ps,
    splat = _mm512_set1_ps, fma = _mm512_fmadd_ps, add = _mm512_add_ps, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD
}

simd_microkernel! {
    /// f32 AVX-512 narrow kernel: the first 16 columns of a 14 x 32 tile.
    kernel_f32_n16: f32, "avx512f", mr = F32_MR, nv = 1, lanes = 16,
    zero = _mm512_setzero_ps(), load = _mm512_loadu_ps, store = _mm512_storeu_ps,
    splat = _mm512_set1_ps, fma = _mm512_fmadd_ps, add = _mm512_add_ps, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD,
    b_step = F32_NR
}

simd_microkernel! {
    /// f32 AVX-512 narrow edge kernel: the first 4 rows and 16 columns of a 14 x 32 tile.
    kernel_f32_n16_rows4: f32, "avx512f", mr = F32_MR, rows = 4, nv = 1, lanes = 16,
    zero = _mm512_setzero_ps(), load = _mm512_loadu_ps, store = _mm512_storeu_ps,
    splat = _mm512_set1_ps, fma = _mm512_fmadd_ps, add = _mm512_add_ps, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD,
    b_step = F32_NR
}

simd_microkernel! {
    /// f32 AVX-512 narrow edge kernel: the first 7 rows and 16 columns of a 14 x 32 tile.
    kernel_f32_n16_rows7: f32, "avx512f", mr = F32_MR, rows = 7, nv = 1, lanes = 16,
    zero = _mm512_setzero_ps(), load = _mm512_loadu_ps, store = _mm512_storeu_ps,
    splat = _mm512_set1_ps, fma = _mm512_fmadd_ps, add = _mm512_add_ps, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD,
    b_step = F32_NR
}

simd_microkernel! {
    /// f32 AVX-512 narrow kernel reading a row-major `A` where it is: 14 x 16 of a 14 x 32 tile.
    kernel_f32_n16_a_rows, a = rows: f32, "avx512f", mr = F32_MR, nv = 1, lanes = 16,
    zero = _mm512_setzero_ps(), load = _mm512_loadu_ps, store = _mm512_storeu_ps,
    splat = _mm512_set1_ps, fma = _mm512_fmadd_ps, add = _mm512_add_ps, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD,
    b_step = F32_NR
}

simd_microkernel! {
    /// f32 AVX-512 narrow kernel reading a transposed `A` where it is: 14 x 16 of a 14 x 32 tile.
    kernel_f32_n16_a_cols, a = cols: f32, "avx512f", mr = F32_MR, nv = 1, lanes = 16,
    zero = _mm512_setzero_ps(), load = _mm512_loadu_ps, store = _mm512_storeu_ps,
    splat = _mm512_set1_ps, fma = _mm512_fmadd_ps, add = _mm512_add_ps, prefetch = super::prefetch_t0, ahead = PREFETCH_AHEAD,
    b_step = F32_NR
}

/// The AVX-512 f32 kernel and its blocking.
pub(in crate::kernels::gemm) const AVX512_F32: Microkernel<f32> = Microkernel {
    isa: Isa::Avx512,
    mr: F32_MR,
    nr: F32_NR,
    kc: 1024,
    mc: 56,
    nc: 1024,
    run: kernel_f32,
    edges: &[(4, kernel_f32_rows4), (7, kernel_f32_rows7), (10, kernel_f32_rows10)],
    direct_a: Some(DirectA { rows: kernel_f32_a_rows, cols: kernel_f32_a_cols }),
    narrow: Some(Narrow {
        nr: 16,
        run: kernel_f32_n16,
        edges: &[(4, kernel_f32_n16_rows4), (7, kernel_f32_n16_rows7)],
        direct_a: Some(DirectA { rows: kernel_f32_n16_a_rows, cols: kernel_f32_n16_a_cols }),
    }),
    dot: Some(crate::kernels::gemm::dot::dot_f32),
    short_k: Some(crate::kernels::gemm::short_k::short_k_f32),
    few_rows: Some(crate::kernels::gemm::few_rows::few_rows_f32),
    small: Some(crate::kernels::gemm::small::small_f32),
    pack_a: pack_f32::<F32_MR>,
    pack_b: pack_f32_avx512::<F32_NR>,
};

/// The AVX-512 f64 kernel and its blocking.
pub(in crate::kernels::gemm) const AVX512_F64: Microkernel<f64> = Microkernel {
    isa: Isa::Avx512,
    mr: F64_MR,
    nr: F64_NR,
    kc: 1024,
    mc: 28,
    nc: 1024,
    run: kernel_f64,
    edges: &[(4, kernel_f64_rows4), (7, kernel_f64_rows7)],
    direct_a: None,
    narrow: None,
    dot: None,
    short_k: None,
    few_rows: None,
    small: None,
    pack_a: pack_f64::<F64_MR>,
    pack_b: pack_f64::<F64_NR>,
};
