//! Packing: copies a block of an operand into the order the microkernel reads it.
//!
//! Both operands use one routine. A block of `A` (`rows x depth`, `depth` running along `K`) is
//! cut into micro-panels of `width = mr` rows; a panel of `B` is packed as its transpose, cut
//! into micro-panels of `width = nr` columns. Micro-panel `q` holds element `(q * width + i, p)`
//! at `q * depth * width + p * width + i`, so the microkernel walks each panel front to back.
//! Rows past the edge of the last panel are zero, which lets the microkernel always compute a
//! full tile (the zeros add nothing; the driver writes back only the valid part).
//!
//! The source is read through its strides, so transposed, narrowed and expanded operands are
//! packed straight from their storage. The two common layouts get contiguous inner loops:
//! `depth_stride == 1` (`A` row-major, `B` transposed) and `row_stride == 1` (`A` transposed,
//! `B` row-major).

/// A packing routine for one micro-panel width (see [`pack_panels`]):
/// `unsafe fn(src, rows, depth, row_stride, depth_stride, dst)`.
pub(super) type PackFn<T> = unsafe fn(*const T, usize, usize, usize, usize, &mut [T]);

/// Packs `rows x depth` elements, element `(i, p)` at `src + i * row_stride + p * depth_stride`,
/// into `rows.div_ceil(W)` zero-padded micro-panels of width `W` at the start of `dst`. `W` is
/// a compile-time constant (each kernel instantiates its `mr` and `nr`), so the per-step
/// copies are fixed-size moves rather than calls to `memcpy`.
///
/// # Safety
/// Every element `(i, p)` with `i < rows`, `p < depth` must be readable at that address (the
/// driver derives `src` from a [`MatRef`](super::MatRef) that `gemm` checked), and `dst` must
/// hold at least `rows.div_ceil(W) * W * depth` elements (checked here with an assert).
pub(super) unsafe fn pack_panels<T: Copy + Default, const W: usize>(
    src: *const T,
    rows: usize,
    depth: usize,
    row_stride: usize,
    depth_stride: usize,
    dst: &mut [T],
) {
    let panel_len = W * depth;
    let panels = rows.div_ceil(W);
    assert!(dst.len() >= panels * panel_len, "pack_panels: destination too short");
    if row_stride == 1 {
        // Each step of `depth` is a contiguous run across all panels (B row-major, A
        // transposed): read it front to back once, scattering W-long pieces to the panels.
        for p in 0..depth {
            // SAFETY: elements (i, p) for i < rows are `rows` consecutive readable elements
            // (row_stride is 1; contract).
            let run = unsafe { std::slice::from_raw_parts(src.add(p * depth_stride), rows) };
            let mut pieces = run.chunks_exact(W);
            for (q, piece) in pieces.by_ref().enumerate() {
                let at = q * panel_len + p * W;
                let step: &mut [T; W] = (&mut dst[at..at + W]).try_into().expect("W elements");
                *step = piece.try_into().expect("W elements");
            }
            let rest = pieces.remainder();
            if !rest.is_empty() {
                let at = (panels - 1) * panel_len + p * W;
                let step = &mut dst[at..at + W];
                step[..rest.len()].copy_from_slice(rest);
                step[rest.len()..].fill(T::default());
            }
        }
        return;
    }
    for (q, panel) in dst.chunks_exact_mut(panel_len).take(panels).enumerate() {
        let r = W.min(rows - q * W);
        // SAFETY: row `q * W` is below `rows`, so its elements are readable (contract).
        let base = unsafe { src.add(q * W * row_stride) };
        if r == W {
            // A full panel: gather one element from each of the W rows per step, so the
            // stores are whole W-long steps.
            for (p, step) in panel.chunks_exact_mut(W).enumerate() {
                let step: &mut [T; W] = step.try_into().expect("W elements");
                for (i, v) in step.iter_mut().enumerate() {
                    // SAFETY: row i < W = r of this panel is below `rows` and p < depth:
                    // readable (contract).
                    *v = unsafe { *base.add(i * row_stride + p * depth_stride) };
                }
            }
        } else {
            for (p, step) in panel.chunks_exact_mut(W).enumerate() {
                for (i, v) in step.iter_mut().enumerate() {
                    *v = if i < r {
                        // SAFETY: row i < r of this panel is below `rows` and p < depth:
                        // readable (contract).
                        unsafe { *base.add(i * row_stride + p * depth_stride) }
                    } else {
                        T::default()
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_are_depth_major_and_zero_padded() {
        // A 3 x 2 row-major matrix packed in panels of width 2: rows (0, 1) then (2, pad).
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        for (rs, ds, src) in [(2, 1, a), (1, 3, [1.0, 3.0, 5.0, 2.0, 4.0, 6.0])] {
            let mut dst = [9.0f32; 8];
            // SAFETY: the 3 x 2 view of `src` with these strides stays inside its 6 elements.
            unsafe { pack_panels::<f32, 2>(src.as_ptr(), 3, 2, rs, ds, &mut dst) };
            assert_eq!(dst, [1.0, 3.0, 2.0, 4.0, 5.0, 0.0, 6.0, 0.0]);
        }
    }
}
