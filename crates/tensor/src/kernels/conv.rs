//! The input gradient of a stride-1 convolution whose input and output rows have one length (a
//! "same" width, such as 3x3 with padding 1), gathered plane by plane from the gradient of its
//! column matrix: [`col2im_same`].
//!
//! Row `(c, i, j)` of the column matrix is channel `c`'s plane shifted by
//! `(i - p) · w + (j - p)` elements, so element `t` of the plane receives entry `t - shift` of
//! each of the channel's `kh · kw` rows whose output position `(t / w + p - i, t % w + p - j)`
//! exists. On AVX-512 (f32) a register of 16 plane elements is summed in registers over the rows
//! through masked loads, the masks computed once per convolution ([`SamePlan`]), and stored once:
//! no zeroing pass over the input gradient, no scatter, no zeroing of the entries that wrap
//! around a row edge. Each element is `0 + e_0 + e_1 + …` over its entries in row order, exactly
//! as the scatter into zeros computes it (a lane with no entry adds `+0`, which changes no sum
//! that starts at `+0`), so both give the same bits. Other types and instruction sets get no
//! plan, and the caller scatters.

use crate::dtype::Float;
use crate::kernels::Isa;

/// Lanes of one f32 register on AVX-512.
const LANES: usize = 16;

/// The geometry [`col2im_same`] works on, its lane masks and the kernel that gathers, made once
/// per convolution by [`SamePlan::new`] (only where that kernel exists).
#[derive(Clone, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the kernel that reads it is x86_64's
pub(crate) struct SamePlan<T: 'static> {
    /// Channels.
    c: usize,
    /// Elements of one input plane, `h · w`.
    plane: usize,
    /// Elements of one row of the column matrix, `oh · w`.
    row: usize,
    /// Rows per channel, `kh · kw`.
    offsets: usize,
    /// Per kernel offset `(i, j)`, in row order: the shift `(i - p) · w + (j - p)`.
    shifts: Vec<isize>,
    /// Per kernel offset and register of the plane (`plane.div_ceil(LANES)` of them): the lanes
    /// whose element receives an entry of that offset's row.
    masks: Vec<u16>,
    /// The gathering kernel for `T` on the plan's instruction set.
    gather: GatherFn<T>,
}

impl<T: Float> SamePlan<T> {
    /// The plan for `c` channels of `h x w`, a `kh x kw` kernel, padding `pad` and `oh` output
    /// rows (`oh = h + 2 pad - kh + 1`; the output rows are `w` long, `w = w + 2 pad - kw + 1`),
    /// on `isa`. `None` where `T` has no gathering kernel on `isa` (f32 on AVX-512 has one), and
    /// for a plane smaller than a register (mostly empty lanes: the scatter is cheaper).
    pub(crate) fn new(
        isa: Isa,
        c: usize,
        [h, w]: [usize; 2],
        [kh, kw]: [usize; 2],
        pad: usize,
        oh: usize,
    ) -> Option<SamePlan<T>> {
        let gather = gather_fn::<T>(isa)?;
        let plane = h.checked_mul(w)?;
        let offsets = kh.checked_mul(kw)?;
        let registers = plane.div_ceil(LANES);
        if plane < LANES {
            return None;
        }
        let mut shifts = Vec::with_capacity(offsets);
        let mut masks = Vec::with_capacity(offsets * registers);
        for i in 0..kh {
            for j in 0..kw {
                shifts.push((i as isize - pad as isize) * w as isize + (j as isize - pad as isize));
                for r in 0..registers {
                    let mut m = 0u16;
                    for (lane, t) in (r * LANES..plane.min((r + 1) * LANES)).enumerate() {
                        // The output position (t / w + p - i, t % w + p - j) exists.
                        let (y, x) = (t / w + pad, t % w + pad);
                        if y >= i && y - i < oh && x >= j && x - j < w {
                            m |= 1 << lane;
                        }
                    }
                    masks.push(m);
                }
            }
        }
        Some(SamePlan { c, plane, row: oh * w, offsets, shifts, masks, gather })
    }
}

/// `dx = col2im(cols)` for the geometry of `plan`, by the plan's gathering kernel: every element
/// of `dx` (`c · h · w`) is written, from `cols` (`c · kh · kw` rows of `oh · w`).
///
/// # Panics
/// When `cols` or `dx` does not have the plan's length (a caller bug).
pub(crate) fn col2im_same<T: Float>(plan: &SamePlan<T>, cols: &[T], dx: &mut [T]) {
    assert_eq!(cols.len(), plan.c * plan.offsets * plan.row, "col2im_same: column matrix length");
    assert_eq!(dx.len(), plan.c * plan.plane, "col2im_same: input gradient length");
    // SAFETY: `SamePlan::new` took the kernel from `gather_fn`, which returns one only for a
    // supported instruction set; the lengths were checked above.
    unsafe { (plan.gather)(plan, cols, dx) };
}

/// The gathering kernel for `T` on `isa`, if any: f32 on a CPU with AVX-512, picked by a safe
/// `Any` downcast of a static function pointer (`Float` is sealed to f32 and f64; f64 has none).
fn gather_fn<T: Float>(isa: Isa) -> Option<GatherFn<T>> {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && isa.is_supported() {
        static F32: GatherFn<f32> = gather_f32_avx512;
        return (&F32 as &dyn std::any::Any).downcast_ref::<GatherFn<T>>().copied();
    }
    let _ = isa;
    None
}

/// `unsafe fn(plan, cols, dx)`: [`col2im_same`]'s kernel. Safety contract: the CPU runs its
/// instruction set, and `cols` and `dx` have the plan's lengths.
type GatherFn<T> = unsafe fn(&SamePlan<T>, &[T], &mut [T]);

/// [`col2im_same`] for f32 on AVX-512.
///
/// # Safety
/// The CPU supports AVX-512F; `cols.len() == c · kh · kw · oh · w` and `dx.len() == c · h · w`
/// for the plan's geometry.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_f32_avx512(plan: &SamePlan<f32>, cols: &[f32], dx: &mut [f32]) {
    use std::arch::x86_64::{_mm512_add_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_setzero_ps};
    let registers = plan.plane.div_ceil(LANES);
    for (rows, plane) in cols.chunks_exact(plan.offsets * plan.row).zip(dx.chunks_exact_mut(plan.plane)) {
        for r in 0..registers {
            let mut acc = _mm512_setzero_ps();
            for (k, &shift) in plan.shifts.iter().enumerate() {
                let m = plan.masks[k * registers + r];
                if m == 0 {
                    continue;
                }
                // Lane `l` reads entry `t - shift` of row `k` for `t = r · LANES + l`: a set
                // lane's output position exists, so that entry lies in the row (`0 <= t - shift
                // < oh · w`). The address is only formed for the other lanes, never read.
                let src = rows.as_ptr().wrapping_add(k * plan.row + r * LANES).wrapping_offset(-shift);
                // SAFETY: AVX-512F is enabled here; the masked load reads only the set lanes,
                // each inside `rows` (above).
                acc = _mm512_add_ps(acc, unsafe { _mm512_maskz_loadu_ps(m, src) });
            }
            let n = LANES.min(plan.plane - r * LANES);
            let keep = if n == LANES { u16::MAX } else { (1u16 << n) - 1 };
            // SAFETY: AVX-512F is enabled here; lanes `0..n` are elements `r · LANES..` of the
            // plane, below `plane.len()`.
            unsafe { _mm512_mask_storeu_ps(plane.as_mut_ptr().add(r * LANES), keep, acc) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::available_isas;

    /// The scatter `col2im_same` replaces: every entry added into zeros where it was read from.
    fn scatter(cols: &[f32], c: usize, [h, w]: [usize; 2], [kh, kw]: [usize; 2], pad: usize, oh: usize) -> Vec<f32> {
        let mut dx = vec![0.0f32; c * h * w];
        for (r, row) in cols.chunks_exact(oh * w).enumerate() {
            let (ci, i, j) = (r / (kh * kw), r / kw % kh, r % kw);
            for (o, &v) in row.iter().enumerate() {
                let (y, x) = ((o / w + i) as isize - pad as isize, (o % w + j) as isize - pad as isize);
                if (0..h as isize).contains(&y) && (0..w as isize).contains(&x) {
                    dx[(ci * h + y as usize) * w + x as usize] += v;
                }
            }
        }
        dx
    }

    /// Every path that has the kernel gives the scatter's bits, NaN, infinities and signed zeros
    /// included, over geometries with ragged last registers and kernels taller or wider than
    /// the padding.
    #[test]
    fn the_gather_matches_the_scatter_bit_for_bit() {
        for (c, h, w, kh, kw, pad) in [
            (2, 14, 14, 3, 3, 1),
            (3, 28, 28, 3, 3, 1),
            (1, 5, 7, 5, 5, 2),
            (2, 6, 5, 3, 1, 0),
            (1, 9, 4, 1, 3, 1),
            (1, 4, 4, 3, 3, 1),
        ] {
            let oh = h + 2 * pad + 1 - kh;
            assert_eq!(w + 2 * pad + 1 - kw, w, "a same width");
            let mut cols: Vec<f32> = (0..c * kh * kw * oh * w).map(|v| ((v * 7919) % 23) as f32 * 0.37 - 4.0).collect();
            let n = cols.len();
            cols[n / 3] = f32::NAN;
            cols[n / 2] = f32::INFINITY;
            cols[n / 5] = -0.0;
            let want = scatter(&cols, c, [h, w], [kh, kw], pad, oh);
            for isa in available_isas() {
                // A plan exactly where the kernel is (f32 on AVX-512); elsewhere the caller scatters.
                let plan = SamePlan::<f32>::new(isa, c, [h, w], [kh, kw], pad, oh);
                assert_eq!(plan.is_some(), isa == Isa::Avx512, "{isa:?}: {c} x {h} x {w}");
                let Some(plan) = plan else { continue };
                let mut dx = vec![f32::NAN; c * h * w];
                col2im_same(&plan, &cols, &mut dx);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&dx), bits(&want), "{isa:?}: {c} x {h} x {w}, {kh}x{kw} pad {pad}");
            }
        }
    }

    #[test]
    fn tiny_planes_and_other_paths_take_no_plan() {
        let plan = |isa, hw: usize| SamePlan::<f32>::new(isa, 4, [hw, hw], [3, 3], 1, hw);
        assert!(plan(Isa::Avx512, 3).is_none());
        assert_eq!(plan(Isa::Avx512, 4).is_some(), Isa::Avx512.is_supported());
        assert!(plan(Isa::Scalar, 4).is_none());
        assert!(SamePlan::<f64>::new(Isa::Avx512, 4, [4, 4], [3, 3], 1, 4).is_none());
    }
}
