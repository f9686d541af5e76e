//! NEON microkernels (aarch64): 8 rows x 3 q-register vectors per tile.
//!
//! 24 accumulators, 3 vectors of `B` and one broadcast of `A` use 28 of the 32 q registers.
//!
//! Blocking: f32 `mr = 8`, `nr = 12`, `kc = 256`, `mc = 128`, `nc = 2048`; f64 `mr = 8`,
//! `nr = 6`, `kc = 256`, `mc = 64`, `nc = 1024`.
//!
//! The `mc` and `nc` written here are the values before `caches.rs` derives them from the
//! caches this CPU reports (`GemmKernels::microkernel`); the tile and `kc` are used as written.

use std::arch::aarch64::*;

use super::simd_microkernel;
use crate::kernels::gemm::packing::pack_panels;
use crate::kernels::gemm::Microkernel;
use crate::kernels::Isa;

/// `a * b + c` in the `(a, b, c)` order the macro expects (NEON's own takes the addend first).
#[inline]
#[target_feature(enable = "neon")]
fn fma_f32(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
    vfmaq_f32(c, a, b)
}

/// `a * b + c` for f64 lanes.
#[inline]
#[target_feature(enable = "neon")]
fn fma_f64(a: float64x2_t, b: float64x2_t, c: float64x2_t) -> float64x2_t {
    vfmaq_f64(c, a, b)
}

/// Rows of the f32 tile.
const F32_MR: usize = 8;
/// Vectors per row of the f32 tile (4 lanes each).
const F32_NV: usize = 3;
/// Columns of the f32 tile.
const F32_NR: usize = F32_NV * 4;

/// Rows of the f64 tile.
const F64_MR: usize = 8;
/// Vectors per row of the f64 tile (2 lanes each).
const F64_NV: usize = 3;
/// Columns of the f64 tile.
const F64_NR: usize = F64_NV * 2;

simd_microkernel! {
    /// f32 NEON microkernel, an 8 x 12 tile.
    kernel_f32: f32, "neon", mr = F32_MR, nv = F32_NV, lanes = 4,
    zero = vdupq_n_f32(0.0), load = vld1q_f32, store = vst1q_f32,
    splat = vdupq_n_f32, fma = fma_f32, add = vaddq_f32, prefetch = super::no_prefetch
}

simd_microkernel! {
    /// f64 NEON microkernel, an 8 x 6 tile.
    kernel_f64: f64, "neon", mr = F64_MR, nv = F64_NV, lanes = 2,
    zero = vdupq_n_f64(0.0), load = vld1q_f64, store = vst1q_f64,
    splat = vdupq_n_f64, fma = fma_f64, add = vaddq_f64, prefetch = super::no_prefetch
}

/// The NEON f32 kernel and its blocking.
pub(in crate::kernels::gemm) const NEON_F32: Microkernel<f32> = Microkernel {
    isa: Isa::Neon,
    mr: F32_MR,
    nr: F32_NR,
    kc: 256,
    mc: 128,
    nc: 2048,
    run: kernel_f32,
    edges: &[],
    direct_a: None,
    narrow: None,
    dot: None,
    short_k: None,
    few_rows: None,
    small: None,
    pack_a: pack_panels::<f32, F32_MR>,
    pack_b: pack_panels::<f32, F32_NR>,
};

/// The NEON f64 kernel and its blocking.
pub(in crate::kernels::gemm) const NEON_F64: Microkernel<f64> = Microkernel {
    isa: Isa::Neon,
    mr: F64_MR,
    nr: F64_NR,
    kc: 256,
    mc: 64,
    nc: 1024,
    run: kernel_f64,
    edges: &[],
    direct_a: None,
    narrow: None,
    dot: None,
    short_k: None,
    few_rows: None,
    small: None,
    pack_a: pack_panels::<f64, F64_MR>,
    pack_b: pack_panels::<f64, F64_NR>,
};
