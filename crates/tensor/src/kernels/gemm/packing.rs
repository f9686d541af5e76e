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

/// Packs `rows x depth` elements, element `(i, p)` at `src + i * row_stride + p * depth_stride`,
/// into `rows.div_ceil(width)` zero-padded micro-panels at the start of `dst`.
///
/// # Safety
/// Every element `(i, p)` with `i < rows`, `p < depth` must be readable at that address (the
/// driver derives `src` from a [`MatRef`](super::MatRef) that `gemm` checked), and `dst` must
/// hold at least `rows.div_ceil(width) * width * depth` elements (checked here with an assert).
pub(super) unsafe fn pack_panels<T: Copy + Default>(
    src: *const T,
    rows: usize,
    depth: usize,
    row_stride: usize,
    depth_stride: usize,
    width: usize,
    dst: &mut [T],
) {
    let panel_len = width * depth;
    assert!(dst.len() >= rows.div_ceil(width) * panel_len, "pack_panels: destination too short");
    for (q, panel) in dst.chunks_exact_mut(panel_len).take(rows.div_ceil(width)).enumerate() {
        let r = width.min(rows - q * width);
        // SAFETY: row `q * width` is below `rows`, so its elements are readable (contract).
        let base = unsafe { src.add(q * width * row_stride) };
        if row_stride == 1 {
            for (p, step) in panel.chunks_exact_mut(width).enumerate() {
                // SAFETY: elements `(q * width + i, p)`, `i < r`, are `r` consecutive readable
                // elements (row_stride is 1).
                let col = unsafe { std::slice::from_raw_parts(base.add(p * depth_stride), r) };
                step[..r].copy_from_slice(col);
                step[r..].fill(T::default());
            }
        } else {
            let out = panel.as_mut_ptr();
            for i in 0..r {
                // SAFETY: row `q * width + i < rows`: `depth` readable elements at stride
                // `depth_stride` (contract).
                let row = unsafe { base.add(i * row_stride) };
                for p in 0..depth {
                    // SAFETY: `p * width + i < panel_len` (`i < r <= width`, `p < depth`) is
                    // inside `panel`, and the source element is readable as above.
                    unsafe { *out.add(p * width + i) = *row.add(p * depth_stride) };
                }
            }
            if r < width {
                for step in panel.chunks_exact_mut(width) {
                    step[r..].fill(T::default());
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
            unsafe { pack_panels(src.as_ptr(), 3, 2, rs, ds, 2, &mut dst) };
            assert_eq!(dst, [1.0, 3.0, 2.0, 4.0, 5.0, 0.0, 6.0, 0.0]);
        }
    }
}
