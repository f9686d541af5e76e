//! The core's floating-point peak, measured: a loop of independent f32 FMAs with nothing else
//! in it (no loads, no stores), the ceiling any GEMM microkernel can approach; and the GEMM's
//! own microkernel with its operands in L1, the ceiling a large product can approach before its
//! packing and cache misses.
//!
//! `benches/fma_peak.rs` times [`fma_peak_flops`] and [`microkernel_flops`] and reports FLOP/s;
//! the GEMM benchmark's numbers are read as a fraction of the first.

use crate::kernels::Isa;

/// Independent accumulator registers per loop: enough to cover FMA latency x FMA pipes on any
/// current core (Zen 5: 4 cycles x 2 pipes = 8; Intel: 4 x 2 = 8), and few enough to stay in
/// the 16 registers of AVX2.
const ACCUMULATORS: usize = 12;

/// Runs `iterations` rounds of 12 independent f32 fused multiply-adds on the
/// widest registers of `isa` (zmm for AVX-512, ymm for AVX2, q for NEON, one lane for scalar;
/// an unsupported `isa` runs the scalar loop) and returns the floating-point operations done,
/// `iterations * 12 * lanes * 2` (a multiply and an add per lane). Dividing by the
/// elapsed time gives the core's FMA throughput.
///
/// ```
/// use tapegrad_tensor::kernels::{gemm::peak::fma_peak_flops, Isa};
/// assert_eq!(fma_peak_flops(Isa::Scalar, 10), 10.0 * 12.0 * 2.0);
/// ```
pub fn fma_peak_flops(isa: Isa, iterations: usize) -> f64 {
    let lanes = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_supported() => {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            std::hint::black_box(unsafe { x86::peak_avx512(iterations) });
            16
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if isa.is_supported() => {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            std::hint::black_box(unsafe { x86::peak_avx2(iterations) });
            8
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if isa.is_supported() => {
            // SAFETY: the CPU supports NEON (checked just above).
            std::hint::black_box(unsafe { neon::peak_neon(iterations) });
            4
        }
        _ => {
            std::hint::black_box(peak_scalar(iterations));
            1
        }
    };
    (iterations * ACCUMULATORS * lanes * 2) as f64
}

/// Steps of `k` of the packed micro-panels [`microkernel_flops`] runs on: few enough that both
/// stay in L1 with room to spare (AVX-512's 14 x 32 f32 tile: 7 KiB of `A` and 16 KiB of `B`;
/// AVX2's 6 x 16: 3 and 8 KiB), many enough that writing the tile after each call is a small
/// share of the call (a 128th of its steps).
const MICROKERNEL_KC: usize = 128;

/// Runs the f32 GEMM microkernel of `isa` (the one the packed products use; the scalar one when
/// this CPU cannot run `isa`) `calls` times on packed micro-panels of 128 steps of `k` that stay
/// in L1, each call writing the same tile of `C`, and returns the floating-point operations done,
/// `calls * 2 * mr * nr * 128`. Read against [`fma_peak_flops`], this is the share of the FMA
/// peak the microkernel keeps with its own loads of `A` and `B` and nothing else: the most a
/// large product can reach before its packing and its cache misses.
///
/// ```
/// use tapegrad_tensor::kernels::{gemm::peak::microkernel_flops, Isa};
/// // The scalar kernel's tile is 4 x 8.
/// assert_eq!(microkernel_flops(Isa::Scalar, 10), 10.0 * 2.0 * 4.0 * 8.0 * 128.0);
/// ```
pub fn microkernel_flops(isa: Isa, calls: usize) -> f64 {
    microkernel_tile(isa, calls).0
}

/// [`microkernel_flops`], and the tile of `C` the last call wrote (every element
/// `128 * 0.5 * 0.25 = 16`, exactly).
fn microkernel_tile(isa: Isa, calls: usize) -> (f64, Vec<f32>) {
    let uk = super::microkernel::select_f32(isa);
    let a = vec![0.5f32; MICROKERNEL_KC * uk.mr];
    let b = vec![0.25f32; MICROKERNEL_KC * uk.nr];
    let mut c = vec![0.0f32; uk.mr * uk.nr];
    for _ in 0..calls {
        // SAFETY: `a` holds `kc * mr` and `b` `kc * nr` elements (two packed micro-panels), `c`
        // holds `mr` rows of `nr` at stride `nr`, and `select_f32` returns a kernel this CPU
        // supports (the scalar one when it does not support `isa`).
        unsafe { (uk.run)(MICROKERNEL_KC, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), uk.nr, false) };
        std::hint::black_box(&mut c);
    }
    ((calls * 2 * uk.mr * uk.nr * MICROKERNEL_KC) as f64, c)
}

/// The scalar loop: `ACCUMULATORS` independent chains of `acc * x + y` (decaying towards a
/// fixed point, so no value overflows or turns subnormal however long it runs).
fn peak_scalar(iterations: usize) -> f32 {
    let (x, y) = (std::hint::black_box(0.999_999f32), std::hint::black_box(1e-6f32));
    let mut acc = [0.0f32; ACCUMULATORS];
    for _ in 0..iterations {
        for v in &mut acc {
            *v = *v * x + y;
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::ACCUMULATORS;

    /// `ACCUMULATORS` independent zmm FMA chains.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn peak_avx512(iterations: usize) -> f32 {
        let x = _mm512_set1_ps(std::hint::black_box(0.999_999));
        let y = _mm512_set1_ps(std::hint::black_box(1e-6));
        let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
        for _ in 0..iterations {
            for v in &mut acc {
                *v = _mm512_fmadd_ps(*v, x, y);
            }
        }
        let sum = acc.iter().fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v));
        _mm512_reduce_add_ps(sum)
    }

    /// `ACCUMULATORS` independent ymm FMA chains.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn peak_avx2(iterations: usize) -> f32 {
        let x = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let y = _mm256_set1_ps(std::hint::black_box(1e-6));
        let mut acc = [_mm256_setzero_ps(); ACCUMULATORS];
        for _ in 0..iterations {
            for v in &mut acc {
                *v = _mm256_fmadd_ps(*v, x, y);
            }
        }
        let sum = acc.iter().fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` has room for the 8 floats of a ymm register.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum()
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::ACCUMULATORS;

    /// `ACCUMULATORS` independent q-register FMA chains.
    ///
    /// # Safety
    /// The CPU must support NEON (baseline on aarch64).
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn peak_neon(iterations: usize) -> f32 {
        let x = vdupq_n_f32(std::hint::black_box(0.999_999));
        let y = vdupq_n_f32(std::hint::black_box(1e-6));
        let mut acc = [vdupq_n_f32(0.0); ACCUMULATORS];
        for _ in 0..iterations {
            for v in &mut acc {
                *v = vfmaq_f32(y, *v, x);
            }
        }
        acc.iter().map(|&v| vaddvq_f32(v)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::available_isas;

    #[test]
    fn the_microkernel_in_l1_computes_its_tile_and_counts_its_flops() {
        for isa in available_isas() {
            let uk = crate::kernels::gemm::microkernel::select_f32(isa);
            let (flops, c) = microkernel_tile(isa, 3);
            assert_eq!(flops, (3 * 2 * uk.mr * uk.nr * MICROKERNEL_KC) as f64, "{isa:?}");
            assert_eq!(c.len(), uk.mr * uk.nr, "{isa:?}");
            assert!(c.iter().all(|&v| v == 16.0), "{isa:?}: {c:?}");
        }
    }
}
