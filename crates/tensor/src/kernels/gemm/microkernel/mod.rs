//! The `mr x nr` microkernels, one file per instruction set, and the table that picks one.
//!
//! # The microkernel contract
//! Every kernel has the type [`KernelFn`]: `run(kc, a, b, c, ldc, accumulate)` computes
//!
//! ```text
//! c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + Σ_{p < kc} a[p * mr + i] · b[p * nr + j]
//! ```
//!
//! for `i < mr`, `j < nr`, where the sum is formed in a register starting from zero, in
//! increasing `p`, and added to `C` once at the end. The caller guarantees (the `unsafe` part):
//! `a` is readable for `kc * mr` elements (a packed micro-panel of `A`), `b` for `kc * nr` (a
//! packed micro-panel of `B`), `c` is readable and writable for `mr` rows of `nr` elements at
//! row stride `ldc` with no other thread touching them, and the CPU supports the kernel's
//! instruction set (checked once by `select_*` via [`Isa::is_supported`]). No alignment is
//! required. Because every element's sum has one fixed order, the driver may split the work
//! between threads however it likes without changing a bit of the result. A narrow kernel
//! (`Microkernel::narrow`, `b_step` in the macro below) reads the same packed micro-panel of `B`
//! but computes and writes only its first columns, each summed as the full kernel sums it.

use super::Microkernel;
use crate::kernels::Isa;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
mod scalar;

/// A microkernel: `unsafe fn(kc, a, b, c, ldc, accumulate)`, see the module's contract.
pub(super) type KernelFn<T> = unsafe fn(usize, *const T, *const T, *mut T, usize, bool);

/// A microkernel that reads `A` where it is instead of from a packed micro-panel:
/// `unsafe fn(kc, a, a_stride, b, c, ldc, accumulate)` computes what a [`KernelFn`] computes,
/// in the same order (so the same bits), with `A(i, p)` for `i < mr`, `p < kc` read at
/// `a + i * a_stride + p` (a kernel for row-major `A`) or `a + i + p * a_stride` (for a
/// transposed `A`). The caller guarantees that those elements are readable; the rest of the
/// contract is [`KernelFn`]'s (`b` a packed micro-panel, `c` `mr` writable rows of `nr`, the
/// CPU supports the kernel's instruction set).
pub(super) type DirectAKernelFn<T> = unsafe fn(usize, *const T, usize, *const T, *mut T, usize, bool);

/// The largest `mr * nr` of any kernel: the driver's scratch tile for ragged edges has this size.
pub(super) const MAX_TILE: usize = 16 * 64;

/// The f32 kernel for `isa`, or the scalar one when this CPU cannot run `isa`.
pub(super) fn select_f32(isa: Isa) -> Microkernel<f32> {
    let uk = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_supported() => avx512::AVX512_F32,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if isa.is_supported() => avx2::AVX2_F32,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if isa.is_supported() => neon::NEON_F32,
        _ => scalar::SCALAR_F32,
    };
    debug_assert!(uk.mr * uk.nr <= MAX_TILE && uk.mc % uk.mr == 0);
    uk
}

/// The f64 kernel for `isa`, or the scalar one when this CPU cannot run `isa`.
pub(super) fn select_f64(isa: Isa) -> Microkernel<f64> {
    let uk = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.is_supported() => avx512::AVX512_F64,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if isa.is_supported() => avx2::AVX2_F64,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if isa.is_supported() => neon::NEON_F64,
        _ => scalar::SCALAR_F64,
    };
    debug_assert!(uk.mr * uk.nr <= MAX_TILE && uk.mc % uk.mr == 0);
    uk
}

/// Hints the cache to fetch the line holding `p` (never faults, whatever `p` is). A safe
/// function with an intrinsic, the one exception on x86_64 to the kernels' rule (`kernels`'
/// module doc): `prefetcht0` is SSE, which every x86_64 CPU has.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_t0<T>(p: *const T) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch is a hint: it does not access memory architecturally and cannot fault.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) }
}

/// No prefetch: stable Rust has no aarch64 prefetch intrinsic yet; the hardware prefetcher
/// and the out-of-order window cover the C tile.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn no_prefetch<T>(_p: *const T) {}

/// Steps of `k` before the end at which a kernel that streams its micro-panels (one that
/// prefetches them, `ahead`) asks for its tile of `C`. Asked for at the start, as the kernels
/// that keep their panels in L1 do, the tile's lines were evicted from L1 again by the time the
/// loop ended (`kc = 1024` streams 184 KiB of panels through a 48 KiB L1) and its loads or
/// stores waited on L2; 128 steps (about 1800 cycles, 23 KiB of panels) is enough to bring them
/// from memory and too short to lose them. Measured on an Intel Xeon (`docs/benchmarks.md`,
/// session 19).
const C_LEAD: usize = 128;

/// Writes one SIMD microkernel from a register type and its intrinsics: `MR` rows of `NV`
/// vectors of `LANES` elements, the broadcast of `A` fused into the FMA, `C` touched only at
/// the end (prefetched before the loop, or [`C_LEAD`] steps before its end), and, with
/// `ahead = d`, the packed micro-panels prefetched `d` steps of `k` ahead. Expands to an
/// `unsafe fn` with the [`KernelFn`] contract, or, with `a = rows` or `a = cols` after the
/// name, to a [`DirectAKernelFn`] that reads `A` where it is.
#[allow(unused_macros)]
macro_rules! simd_microkernel {
    (
        $(#[$doc:meta])*
        $name:ident: $t:ty, $feature:literal, mr = $mr:expr, nv = $nv:expr, lanes = $lanes:expr,
        zero = $zero:expr, load = $load:path, store = $store:path, splat = $splat:path,
        fma = $fma:path, add = $add:path, prefetch = $prefetch:path $(, ahead = $ahead:expr)? $(, b_step = $bs:expr)?
    ) => {
        simd_microkernel! {
            $(#[$doc])*
            $name: $t, $feature, mr = $mr, rows = $mr, nv = $nv, lanes = $lanes,
            zero = $zero, load = $load, store = $store, splat = $splat,
            fma = $fma, add = $add, prefetch = $prefetch $(, ahead = $ahead)? $(, b_step = $bs)?
        }
    };
    // An edge kernel: computes only the first `rows` rows of an `mr`-row tile, reading the same
    // packed micro-panel of `A` (stride `mr` per step of k) and writing only those rows of `C`.
    // `ahead` (0 when absent): prefetch the packed micro-panels that many steps of k ahead.
    // `b_step` (`nv * lanes` when absent): the elements per step of the packed micro-panel of
    // `B`, when the kernel computes only its first `nv * lanes` columns (a narrow last panel).
    (
        $(#[$doc:meta])*
        $name:ident: $t:ty, $feature:literal, mr = $mr:expr, rows = $rows:expr, nv = $nv:expr, lanes = $lanes:expr,
        zero = $zero:expr, load = $load:path, store = $store:path, splat = $splat:path,
        fma = $fma:path, add = $add:path, prefetch = $prefetch:path $(, ahead = $ahead:expr)? $(, b_step = $bs:expr)?
    ) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The contract of `microkernel/mod.rs`: `a` holds `kc * mr` and `b` `kc * nr` readable
        /// elements, `c` has `rows` (`mr` unless an edge kernel says fewer) rows of `nr`
        /// writable elements at stride `ldc`, and the CPU supports this kernel's features.
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn $name(kc: usize, a: *const $t, b: *const $t, c: *mut $t, ldc: usize, accumulate: bool) {
            simd_microkernel!(@body $t, mr = $mr, rows = $rows, nv = $nv, lanes = $lanes,
                zero = $zero, load = $load, store = $store, splat = $splat, fma = $fma, add = $add,
                prefetch = $prefetch, ahead = (0 $(+ $ahead)?), b_step = (0 $(+ $bs)?),
                kc = kc, a = a, a_rs = 1, a_cs = $mr, prefetch_a = true, b = b, c = c, ldc = ldc,
                accumulate = accumulate)
        }
    };
    // A kernel reading `A` where it is: all `mr` rows, `A(i, p)` at `a + i * a_stride + p`
    // (`a = rows`: a row-major operand) or at `a + i + p * a_stride` (`a = cols`: a transposed
    // one, whose steps of k are then prefetched as the packed panel's are).
    (
        $(#[$doc:meta])*
        $name:ident, a = $layout:ident: $t:ty, $feature:literal, mr = $mr:expr, nv = $nv:expr, lanes = $lanes:expr,
        zero = $zero:expr, load = $load:path, store = $store:path, splat = $splat:path,
        fma = $fma:path, add = $add:path, prefetch = $prefetch:path, ahead = $ahead:expr $(, b_step = $bs:expr)?
    ) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The contract of `DirectAKernelFn` (`microkernel/mod.rs`) for this layout of `A`,
        /// with `mr` rows, and the CPU supports this kernel's features.
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn $name(
            kc: usize,
            a: *const $t,
            a_stride: usize,
            b: *const $t,
            c: *mut $t,
            ldc: usize,
            accumulate: bool,
        ) {
            simd_microkernel!(@direct $layout, a_stride, $t, mr = $mr, nv = $nv, lanes = $lanes,
                zero = $zero, load = $load, store = $store, splat = $splat, fma = $fma, add = $add,
                prefetch = $prefetch, ahead = $ahead, b_step = (0 $(+ $bs)?), kc = kc, a = a, b = b, c = c,
                ldc = ldc, accumulate = accumulate)
        }
    };
    (@direct rows, $stride:ident, $t:ty, mr = $mr:expr, $($rest:tt)*) => {
        simd_microkernel!(@with_a $t, mr = $mr, rows = $mr, a_rs = $stride, a_cs = 1, prefetch_a = false, $($rest)*)
    };
    (@direct cols, $stride:ident, $t:ty, mr = $mr:expr, $($rest:tt)*) => {
        simd_microkernel!(@with_a $t, mr = $mr, rows = $mr, a_rs = 1, a_cs = $stride, prefetch_a = true, $($rest)*)
    };
    (
        @with_a $t:ty, mr = $mr:expr, rows = $rows:expr, a_rs = $a_rs:expr, a_cs = $a_cs:expr, prefetch_a = $pa:expr,
        nv = $nv:expr, lanes = $lanes:expr, zero = $zero:expr, load = $load:path, store = $store:path,
        splat = $splat:path, fma = $fma:path, add = $add:path, prefetch = $prefetch:path, ahead = $ahead:expr,
        b_step = $bs:expr, kc = $kc:ident, a = $a:ident, b = $b:ident, c = $c:ident, ldc = $ldc:ident,
        accumulate = $accumulate:ident
    ) => {
        simd_microkernel!(@body $t, mr = $mr, rows = $rows, nv = $nv, lanes = $lanes,
            zero = $zero, load = $load, store = $store, splat = $splat, fma = $fma, add = $add,
            prefetch = $prefetch, ahead = ($ahead), b_step = $bs,
            kc = $kc, a = $a, a_rs = $a_rs, a_cs = $a_cs, prefetch_a = $pa, b = $b, c = $c, ldc = $ldc,
            accumulate = $accumulate)
    };
    // The loop all kernels share: `A(i, p)` (`i < rows`) at `a + i * a_rs + p * a_cs`.
    (
        @body $t:ty, mr = $mr:expr, rows = $rows:expr, nv = $nv:expr, lanes = $lanes:expr,
        zero = $zero:expr, load = $load:path, store = $store:path, splat = $splat:path,
        fma = $fma:path, add = $add:path, prefetch = $prefetch:path, ahead = $ahead:expr, b_step = $bs:expr,
        kc = $kc:ident, a = $a:ident, a_rs = $a_rs:expr, a_cs = $a_cs:expr, prefetch_a = $pa:expr,
        b = $b:ident, c = $c:ident, ldc = $ldc:ident, accumulate = $accumulate:ident
    ) => {{
        const ROWS: usize = $rows;
        const NV: usize = $nv;
        /// The columns computed.
        const NR: usize = NV * $lanes;
        /// The elements of `B` per step of k (0: `NR`).
        const B_STEP: usize = if $bs == 0 { NR } else { $bs };
        const AHEAD: usize = $ahead;
        /// Elements per cache line.
        const LINE: usize = 64 / std::mem::size_of::<$t>();
        let (a_rs, a_cs): (usize, usize) = ($a_rs, $a_cs);
        // The tile of C is only touched after the k loop, and on large problems it comes from
        // L3 or memory, a latency the loop hides: it is asked for `C_LEAD` steps before the
        // end (see `C_LEAD`), or before the loop by a kernel that does not stream its panels.
        let c_from = if AHEAD > 0 { $kc.saturating_sub(super::C_LEAD) } else { 0 };
        let mut acc = [[$zero; NV]; ROWS];
        // Pointers past the last step may lie past `A` (a transposed operand's next row of `k`)
        // and are never dereferenced: wrapping adds.
        let (mut a, mut b) = ($a, $b);
        // Two runs of the same loop, the tile of C asked for between them.
        for (run, steps) in [0..c_from, c_from..$kc].into_iter().enumerate() {
            if run == 1 {
                for i in 0..ROWS {
                    for v in 0..NV {
                        $prefetch($c.wrapping_add(i * $ldc + v * $lanes));
                    }
                }
            }
            for _ in steps {
                if AHEAD > 0 {
                    // The step `AHEAD` ahead: its `NR` elements of `B` and its elements of `A` (a
                    // hint, so an address past the operands is harmless).
                    for l in 0..NR.div_ceil(LINE) {
                        $prefetch(b.wrapping_add(AHEAD * B_STEP + l * LINE));
                    }
                    if $pa {
                        $prefetch(a.wrapping_add(AHEAD * a_cs));
                    }
                }
                let mut bv = [$zero; NV];
                for v in 0..NV {
                    // SAFETY: `b` has `B_STEP >= NR` readable elements left in this step
                    // (contract).
                    bv[v] = unsafe { $load(b.add(v * $lanes)) };
                }
                for i in 0..ROWS {
                    // SAFETY: `A(i, p)` of this step `p` is readable at `a + i * a_rs` for
                    // `i < ROWS` (contract).
                    let ai = $splat(unsafe { *a.add(i * a_rs) });
                    for v in 0..NV {
                        acc[i][v] = $fma(ai, bv[v], acc[i][v]);
                    }
                }
                a = a.wrapping_add(a_cs);
                // SAFETY: at most one past the end of the packed micro-panel of `B`.
                b = unsafe { b.add(B_STEP) };
            }
        }
        for i in 0..ROWS {
            for v in 0..NV {
                // SAFETY: row `i < ROWS` of `C` has `NR` writable elements at stride `ldc`.
                unsafe {
                    let cp = $c.add(i * $ldc + v * $lanes);
                    let sum = if $accumulate { $add($load(cp), acc[i][v]) } else { acc[i][v] };
                    $store(cp, sum);
                }
            }
        }
    }};
}
#[allow(unused_imports)]
pub(super) use simd_microkernel;
