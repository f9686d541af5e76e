//! Compute kernels: the only module with `unsafe` code.
//!
//! Each family (`elementwise`, `gemm`, and `mask` with `relu_mask`, `pool` and `chacha`) has a scalar
//! reference and one implementation per instruction set. The instruction set is chosen once per process at run time ([`active_isa`]):
//! the best one the CPU supports, unless the environment variable `TAPEGRAD_KERNELS`
//! (`scalar`, `avx2`, `avx512`, `neon`) forces one. Tests call each kernel with an explicit
//! [`Isa`] and compare every available path against the scalar reference.
//!
//! # The rule for SIMD code
//!
//! No safe function executes an instruction the CPU may lack (`docs/design.md`, "Kernel
//! dispatch", says why). A function that runs SIMD instructions is either an entry point,
//! `#[target_feature(enable = "...")] unsafe fn`, called only after [`Isa::is_supported`] (or
//! through a token such as `mask`'s `Avx2`, made only after that check), or an
//! `#[inline(always)] unsafe fn` helper whose `# Safety` requires the instruction set, called
//! from an entry point or another helper in an `unsafe` block whose `// SAFETY:` says where the
//! instruction set comes from. Every method of the register traits (`Lanes`, `RowPrims`,
//! `MaskLanes`, `WordLanes`, `MaskIsa::pack64`, `Kernel::call`) is therefore `unsafe`, even on
//! the scalar one-lane registers. The exceptions, instructions every CPU of the target has:
//! `gemm::microkernel`'s `prefetch_t0` (SSE) and the NEON microkernel's safe
//! `#[target_feature(enable = "neon")]` FMA helpers.

use std::sync::OnceLock;

/// The methods every SIMD register wrapper (a tuple struct around the register) writes the same
/// way, one intrinsic each, for both register traits (`elementwise`'s `Lanes` and `mask`'s
/// `MaskLanes`, whose `splat`, `load`, `store` and `mul` have the same contracts): expanded
/// inside an ISA file's `impl` (through `common_lanes_methods!` for `Lanes`). Like every
/// register method they are `unsafe fn`s whose caller guarantees the instruction set (the
/// module's rule, above).
macro_rules! register_methods {
    ($name:ident, $elem:ty, splat: $splat:ident, load: $load:ident, store: $store:ident, mul: $mul:ident) => {
        #[inline(always)]
        unsafe fn splat(x: $elem) -> Self {
            // SAFETY: the caller guarantees the instruction set (the trait's `splat` contract).
            $name(unsafe { $splat(x) })
        }

        #[inline(always)]
        unsafe fn load(p: *const $elem) -> Self {
            // SAFETY: the caller guarantees the instruction set and that `p` is readable for the
            // register.
            $name(unsafe { $load(p) })
        }

        #[inline(always)]
        unsafe fn store(self, p: *mut $elem) {
            // SAFETY: the caller guarantees the instruction set and that `p` is writable for the
            // register.
            unsafe { $store(p, self.0) }
        }

        #[inline(always)]
        unsafe fn mul(self, rhs: Self) -> Self {
            // SAFETY: the caller guarantees the instruction set.
            $name(unsafe { $mul(self.0, rhs.0) })
        }
    };
}
#[allow(unused_imports)]
pub(crate) use register_methods;

pub mod chacha;
pub(crate) mod conv;
pub mod elementwise;
pub(crate) mod fold_rows;
pub(crate) mod fork;
pub mod gemm;
pub mod mask;
pub(crate) mod norm;
pub mod pool;
pub mod relu_mask;
pub(crate) mod row_cascade;

/// An instruction-set path for the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, the reference every other path is tested against.
    Scalar,
    /// x86_64 AVX2 + FMA (256-bit).
    Avx2,
    /// x86_64 AVX-512F and AVX-512VL (512-bit), with AVX2 + FMA.
    Avx512,
    /// aarch64 NEON (128-bit).
    Neon,
}

impl Isa {
    /// The name used by `TAPEGRAD_KERNELS`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parses a `TAPEGRAD_KERNELS` value.
    pub fn from_name(name: &str) -> Option<Isa> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            "neon" => Some(Isa::Neon),
            _ => None,
        }
    }

    /// True when this CPU can run the path.
    #[inline]
    pub fn is_supported(self) -> bool {
        // Detected once: every kernel call asks (softmax rows of 28 elements, for one).
        static SUPPORTED: OnceLock<[bool; 4]> = OnceLock::new();
        SUPPORTED.get_or_init(|| [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon].map(Isa::detect))[self as usize]
    }

    /// Whether this CPU and build can run this path, asked of the CPU.
    fn detect(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// Every path this CPU supports, scalar first, best last.
pub fn available_isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512].into_iter().filter(|i| i.is_supported()).collect()
}

/// The path every kernel uses in this process: `TAPEGRAD_KERNELS` when it names a supported path,
/// otherwise the best supported one. Chosen on first use and fixed after that.
pub fn active_isa() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let best = *available_isas().last().unwrap_or(&Isa::Scalar);
        match std::env::var("TAPEGRAD_KERNELS") {
            Ok(v) => match Isa::from_name(&v) {
                Some(isa) if isa.is_supported() => isa,
                Some(isa) => {
                    eprintln!(
                        "tapegrad: TAPEGRAD_KERNELS={v}: {} is not supported here; using {}",
                        isa.name(),
                        best.name()
                    );
                    best
                }
                None => {
                    eprintln!(
                        "tapegrad: TAPEGRAD_KERNELS={v} is not one of scalar, avx2, avx512, neon; using {}",
                        best.name()
                    );
                    best
                }
            },
            Err(_) => best,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_is_always_available_and_active_is_supported() {
        assert_eq!(available_isas()[0], Isa::Scalar);
        assert!(active_isa().is_supported());
        for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon] {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
    }
}
