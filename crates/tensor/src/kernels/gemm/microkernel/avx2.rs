//! AVX2 + FMA microkernels (x86_64): 6 rows x 2 ymm vectors per tile.
//!
//! The classic Haswell-to-Zen tile: 12 accumulators, 2 vectors of `B` and one broadcast of `A`
//! fill 15 of the 16 ymm registers; 12 independent FMAs per step of `k` hide the FMA latency on
//! two pipes.
//!
//! Blocking: f32 `mr = 6`, `nr = 16`, `kc = 256` (the `B` micro-panel is 16 KiB, in L1),
//! `mc = 144` (A block 144 KiB, in L2), `nc = 2048`; f64 `mr = 6`, `nr = 8`, `kc = 256`,
//! `mc = 72`, `nc = 1024`.
//!
//! The `mc` and `nc` written here are the values before `caches.rs` derives them from the
//! caches this CPU reports (`GemmKernels::microkernel`); the tile and `kc` are used as written.

use std::arch::x86_64::*;

use super::simd_microkernel;
use crate::kernels::gemm::packing::x86::{pack_f32, pack_f64};
use crate::kernels::gemm::Microkernel;
use crate::kernels::Isa;

/// Rows of the f32 tile.
const F32_MR: usize = 6;
/// Vectors per row of the f32 tile (8 lanes each).
const F32_NV: usize = 2;
/// Columns of the f32 tile.
const F32_NR: usize = F32_NV * 8;

/// Rows of the f64 tile.
const F64_MR: usize = 6;
/// Vectors per row of the f64 tile (4 lanes each).
const F64_NV: usize = 2;
/// Columns of the f64 tile.
const F64_NR: usize = F64_NV * 4;

simd_microkernel! {
    /// f32 AVX2 microkernel, a 6 x 16 tile.
    kernel_f32: f32, "avx2,fma", mr = F32_MR, nv = F32_NV, lanes = 8,
    zero = _mm256_setzero_ps(), load = _mm256_loadu_ps, store = _mm256_storeu_ps,
    splat = _mm256_set1_ps, fma = _mm256_fmadd_ps, add = _mm256_add_ps, prefetch = super::prefetch_t0
}

simd_microkernel! {
    /// f64 AVX2 microkernel, a 6 x 8 tile.
    kernel_f64: f64, "avx2,fma", mr = F64_MR, nv = F64_NV, lanes = 4,
    zero = _mm256_setzero_pd(), load = _mm256_loadu_pd, store = _mm256_storeu_pd,
    splat = _mm256_set1_pd, fma = _mm256_fmadd_pd, add = _mm256_add_pd, prefetch = super::prefetch_t0
}

/// The AVX2 f32 kernel and its blocking.
pub(in crate::kernels::gemm) const AVX2_F32: Microkernel<f32> = Microkernel {
    isa: Isa::Avx2,
    mr: F32_MR,
    nr: F32_NR,
    kc: 256,
    mc: 144,
    nc: 2048,
    run: kernel_f32,
    edges: &[],
    direct_a: None,
    narrow: None,
    dot: Some(crate::kernels::gemm::dot_avx2::dot_f32),
    short_k: Some(crate::kernels::gemm::short_k_avx2::short_k_f32),
    few_rows: None,
    small: Some(crate::kernels::gemm::short_k_avx2::small_f32),
    pack_a: pack_f32::<F32_MR>,
    pack_b: pack_f32::<F32_NR>,
};

/// The AVX2 f64 kernel and its blocking.
pub(in crate::kernels::gemm) const AVX2_F64: Microkernel<f64> = Microkernel {
    isa: Isa::Avx2,
    mr: F64_MR,
    nr: F64_NR,
    kc: 256,
    mc: 72,
    nc: 1024,
    run: kernel_f64,
    edges: &[],
    direct_a: None,
    narrow: None,
    dot: None,
    short_k: None,
    few_rows: None,
    small: None,
    pack_a: pack_f64::<F64_MR>,
    pack_b: pack_f64::<F64_NR>,
};
