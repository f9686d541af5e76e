//! The portable reference microkernel: a 4 x 8 tile of plain multiply-adds (never fused, so it
//! rounds like the textbook loop), the path every SIMD kernel is tested against.
//!
//! Blocking: `mr = 4`, `nr = 8`, `kc = 256`, `mc = 64`, `nc = 1024` for both types (modest
//! sizes: this path favours clarity over speed).
//!
//! The `mc` and `nc` written here are the values before `caches.rs` derives them from the
//! caches this CPU reports (`GemmKernels::microkernel`); the tile and `kc` are used as written.

use std::ops::{Add, Mul};

use crate::kernels::gemm::packing::pack_panels;
use crate::kernels::gemm::Microkernel;
use crate::kernels::Isa;

const MR: usize = 4;
const NR: usize = 8;

/// The scalar microkernel, generic over the element type.
///
/// # Safety
/// The contract of `microkernel/mod.rs`: `a` holds `kc * 4` and `b` `kc * 8` readable elements,
/// `c` has 4 rows of 8 writable elements at stride `ldc`.
unsafe fn kernel<T: Copy + Default + Add<Output = T> + Mul<Output = T>>(
    kc: usize,
    a: *const T,
    b: *const T,
    c: *mut T,
    ldc: usize,
    accumulate: bool,
) {
    // SAFETY: the contract makes both packed micro-panels readable for these lengths.
    let (a, b) = unsafe { (std::slice::from_raw_parts(a, kc * MR), std::slice::from_raw_parts(b, kc * NR)) };
    let mut acc = [[T::default(); NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] = acc[i][j] + ap[i] * bp[j];
            }
        }
    }
    for i in 0..MR {
        // SAFETY: row `i < MR` of `C` has `NR` writable elements at stride `ldc`, and no other
        // thread touches them (contract).
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), NR) };
        for j in 0..NR {
            row[j] = if accumulate { row[j] + acc[i][j] } else { acc[i][j] };
        }
    }
}

/// The scalar f32 kernel and its blocking.
pub(in crate::kernels::gemm) const SCALAR_F32: Microkernel<f32> = Microkernel {
    isa: Isa::Scalar,
    mr: MR,
    nr: NR,
    kc: 256,
    mc: 64,
    nc: 1024,
    run: kernel::<f32>,
    edges: &[],
    direct_a: None,
    narrow: None,
    dot: None,
    short_k: None,
    few_rows: None,
    small: None,
    pack_a: pack_panels::<f32, MR>,
    pack_b: pack_panels::<f32, NR>,
};

/// The scalar f64 kernel and its blocking.
pub(in crate::kernels::gemm) const SCALAR_F64: Microkernel<f64> = Microkernel {
    isa: Isa::Scalar,
    mr: MR,
    nr: NR,
    kc: 256,
    mc: 64,
    nc: 1024,
    run: kernel::<f64>,
    edges: &[],
    direct_a: None,
    narrow: None,
    dot: None,
    short_k: None,
    few_rows: None,
    small: None,
    pack_a: pack_panels::<f64, MR>,
    pack_b: pack_panels::<f64, NR>,
};
