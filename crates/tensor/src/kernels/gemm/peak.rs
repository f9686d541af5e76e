//! The core's floating-point peak, measured: a loop of independent f32 FMAs with nothing else
//! in it (no loads, no stores), the ceiling any GEMM microkernel can approach.
//!
//! `benches/fma_peak.rs` times [`fma_peak_flops`] and reports FLOP/s; the GEMM benchmark's
//! numbers are read as a fraction of it.

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
