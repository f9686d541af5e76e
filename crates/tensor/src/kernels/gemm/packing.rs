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
///
/// Inlined into each caller, so that the SIMD packers' copies of whole steps compile with their
/// instruction set (as its own function, built for the baseline x86_64, it moved 16 bytes at a
/// time: 7% of the transformer's step went to its copies).
#[inline(always)]
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
        // transposed). In blocks of `STEPS` steps, panel by panel: each panel's part of the
        // block is one output stream written front to back (scattering each run to every panel
        // at once writes as many streams as panels, each a panel apart: a multiple of 4 KiB, so
        // all in one set of the L1 cache), while the reads move along each of the block's
        // `STEPS` source rows from panel to panel, streams the hardware prefetchers follow.
        // (Panel by panel over the whole depth, each read is the next row's run: a new page
        // per step when rows are 4 KiB apart, which no prefetcher follows. A 1024 x 1024
        // row-major `B` packed in 32-column panels took 360 us that way, 310 in blocks of 32
        // steps, against 290 for a plain copy; in 14-row panels, 520 and 320.)
        const STEPS: usize = 32;
        for p0 in (0..depth).step_by(STEPS) {
            let steps = p0..(p0 + STEPS).min(depth);
            for (q, panel) in dst.chunks_exact_mut(panel_len).take(panels).enumerate() {
                let r = W.min(rows - q * W);
                for (p, step) in steps.clone().zip(panel[steps.start * W..steps.end * W].chunks_exact_mut(W)) {
                    // SAFETY: elements (q W + i, p) for i < r are `r` consecutive readable
                    // elements (row_stride is 1, q W + i < rows, p < depth; contract).
                    let run = unsafe { std::slice::from_raw_parts(src.add(q * W + p * depth_stride), r) };
                    if r == W {
                        let step: &mut [T; W] = step.try_into().expect("W elements");
                        *step = run.try_into().expect("W elements");
                    } else {
                        step[..r].copy_from_slice(run);
                        step[r..].fill(T::default());
                    }
                }
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

/// Packing with AVX2 register transposes, for the x86 kernel tables.
///
/// The common layout `A` row-major (and `B` transposed) has each panel row contiguous along
/// `depth`, while the packed panel wants each depth step contiguous across rows: a transpose.
/// Element by element that costs a load and a store per element (about 5% of a large SGEMM and
/// most of a thin one); in 8 x 8 (f32) or 4 x 4 (f64) register blocks it costs two vector
/// moves per block row. Row blocks of a panel whose width is not a multiple of the block
/// overlap (the last block ends at row `W`), rewriting a few elements with the same values.
#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use super::pack_panels;

    /// The loops the transposing packers share: [`pack_panels`] for `depth_stride == 1` and
    /// `W >= B`, each full panel in `B x B` blocks by `block(s, d)`, which reads rows
    /// `i0 .. i0 + B` and columns `p0 .. p0 + B` from `s` (element `(i0, p0)`, rows
    /// `row_stride` apart) and stores depth step `p0 + c` of rows `i0 .. i0 + B` at
    /// `d + c * W` (`d` is packed element `(i0, p0)`). Row blocks overlap when `B` does not
    /// divide `W` (the last ends at row `W`); the depth steps before the first aligned block and
    /// after the last block go element by element, the ragged last panel to [`pack_panels`].
    /// Inlined into each packer, so that `block` compiles with the packer's instruction set.
    ///
    /// # Safety
    /// The contract of [`pack_panels`] with `depth_stride == 1` and `B <= W`, and `block` reads
    /// and writes only the elements named above.
    #[inline(always)]
    unsafe fn transposing<T: Copy + Default, const W: usize, const B: usize>(
        src: *const T,
        rows: usize,
        depth: usize,
        row_stride: usize,
        dst: &mut [T],
        block: impl Fn(*const T, *mut T),
    ) {
        let panel_len = W * depth;
        let full_panels = rows / W;
        assert!(dst.len() >= rows.div_ceil(W) * panel_len, "pack_panels: destination too short");
        // When every row starts at the same offset from a B-element boundary, the first `lead`
        // depth steps go element by element so that the blocks' loads are aligned: a vector
        // load across two cache lines reads both, and rows a multiple of 4 KiB apart share a
        // set of the L1 cache, so the second line would be evicted before the next block reads
        // it. (Same packed values either way.)
        let bytes = B * std::mem::size_of::<T>();
        let lead = if (row_stride * std::mem::size_of::<T>()).is_multiple_of(bytes) {
            ((bytes - src as usize % bytes) % bytes / std::mem::size_of::<T>()).min(depth)
        } else {
            0
        };
        let full = lead + (depth - lead) / B * B;
        for (q, panel) in dst.chunks_exact_mut(panel_len).take(full_panels).enumerate() {
            // SAFETY: rows q * W .. q * W + W are below `rows` (a full panel): each has `depth`
            // contiguous readable elements (depth_stride is 1; contract).
            let base = unsafe { src.add(q * W * row_stride) };
            let out = panel.as_mut_ptr();
            for p0 in (lead..full).step_by(B) {
                let mut i0 = 0;
                loop {
                    // SAFETY: rows i0 .. i0 + B <= W of the panel and columns p0 .. p0 + B <=
                    // depth are readable; depth steps p0 .. p0 + B < depth of rows
                    // i0 .. i0 + B <= W lie inside the panel.
                    unsafe { block(base.add(i0 * row_stride + p0), out.add(p0 * W + i0)) };
                    if i0 + B == W {
                        break;
                    }
                    i0 = (i0 + B).min(W - B);
                }
            }
            for p in (0..lead).chain(full..depth) {
                for i in 0..W {
                    // SAFETY: row i < W of a full panel and p < depth: readable (contract).
                    panel[p * W + i] = unsafe { *base.add(i * row_stride + p) };
                }
            }
        }
        if full_panels * W < rows {
            // The ragged last panel, zero-padded by the generic routine.
            // SAFETY: its rows are readable (contract); the rest of `dst` holds one panel.
            unsafe {
                pack_panels::<T, W>(
                    src.add(full_panels * W * row_stride),
                    rows - full_panels * W,
                    depth,
                    row_stride,
                    1,
                    &mut dst[full_panels * panel_len..],
                )
            };
        }
    }

    /// f32 [`pack_panels`] with 8 x 8 AVX2 transposes for full, depth-contiguous panels.
    ///
    /// # Safety
    /// The contract of [`pack_panels`], and the CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub(in crate::kernels::gemm) unsafe fn pack_f32<const W: usize>(
        src: *const f32,
        rows: usize,
        depth: usize,
        row_stride: usize,
        depth_stride: usize,
        dst: &mut [f32],
    ) {
        if depth_stride != 1 || W < 8 || rows < W {
            // SAFETY: the same contract.
            return unsafe { pack_panels::<f32, W>(src, rows, depth, row_stride, depth_stride, dst) };
        }
        let block = |s: *const f32, d: *mut f32| {
            // SAFETY: 8 rows of 8 readable elements from `s`, 8 steps of 8 writable elements
            // from `d` (the contract of `transposing`).
            unsafe {
                let row = |ii: usize| _mm256_loadu_ps(s.add(ii * row_stride));
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let (r4, r5, r6, r7) = (row(4), row(5), row(6), row(7));
                let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
                let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
                let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
                let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
                let (u0, u1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
                let (u2, u3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
                let (u4, u5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
                let (u6, u7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
                let col = |c: usize| d.add(c * W);
                _mm256_storeu_ps(col(0), _mm256_permute2f128_ps::<0x20>(u0, u4));
                _mm256_storeu_ps(col(1), _mm256_permute2f128_ps::<0x20>(u1, u5));
                _mm256_storeu_ps(col(2), _mm256_permute2f128_ps::<0x20>(u2, u6));
                _mm256_storeu_ps(col(3), _mm256_permute2f128_ps::<0x20>(u3, u7));
                _mm256_storeu_ps(col(4), _mm256_permute2f128_ps::<0x31>(u0, u4));
                _mm256_storeu_ps(col(5), _mm256_permute2f128_ps::<0x31>(u1, u5));
                _mm256_storeu_ps(col(6), _mm256_permute2f128_ps::<0x31>(u2, u6));
                _mm256_storeu_ps(col(7), _mm256_permute2f128_ps::<0x31>(u3, u7));
            }
        };
        // SAFETY: the contract of `pack_panels`, depth_stride is 1 and 8 <= W (checked above);
        // `block` touches only its 8 x 8 block.
        unsafe { transposing::<f32, W, 8>(src, rows, depth, row_stride, dst, block) }
    }

    /// f32 [`pack_panels`] with 16 x 16 AVX-512 transposes for full, depth-contiguous panels at
    /// least 16 wide (the AVX-512 kernel's 32-column panels of `B`); anything else goes to
    /// [`pack_f32`]. A 16 x 16 block is 16 loads, 64 shuffles and 16 stores, against 32, 96 and
    /// 32 for the same block in 8 x 8 pieces.
    ///
    /// # Safety
    /// The contract of [`pack_panels`], and the CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(in crate::kernels::gemm) unsafe fn pack_f32_avx512<const W: usize>(
        src: *const f32,
        rows: usize,
        depth: usize,
        row_stride: usize,
        depth_stride: usize,
        dst: &mut [f32],
    ) {
        const B: usize = 16;
        if depth_stride != 1 || W < B || rows < W {
            // SAFETY: the same contract (AVX-512F implies AVX2 on every CPU that has it).
            return unsafe { pack_f32::<W>(src, rows, depth, row_stride, depth_stride, dst) };
        }
        let block = |s: *const f32, d: *mut f32| {
            // SAFETY: 16 rows of 16 readable elements from `s`, 16 steps of 16 writable
            // elements from `d` (the contract of `transposing`).
            unsafe {
                let r: [__m512; B] = std::array::from_fn(|ii| _mm512_loadu_ps(s.add(ii * row_stride)));
                // Within each 128-bit lane: pairs of rows interleaved, then groups of four rows:
                // u[4 g + j] holds, in lane L, rows 4g .. 4g + 3 of column 4 L + j.
                let t: [__m512; B] = std::array::from_fn(|x| {
                    let (a, b) = (r[x & !1], r[x | 1]);
                    if x % 2 == 0 {
                        _mm512_unpacklo_ps(a, b)
                    } else {
                        _mm512_unpackhi_ps(a, b)
                    }
                });
                let u: [__m512; B] = std::array::from_fn(|x| {
                    let (g, j) = (x / 4, x % 4);
                    let (a, b) = (t[4 * g + j / 2], t[4 * g + 2 + j / 2]);
                    if j % 2 == 0 {
                        _mm512_shuffle_ps::<0x44>(a, b)
                    } else {
                        _mm512_shuffle_ps::<0xEE>(a, b)
                    }
                });
                // Across lanes: column 4 L + j gathers lane L of u[j], u[4 + j], u[8 + j],
                // u[12 + j].
                for j in 0..4 {
                    let v0 = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
                    let v1 = _mm512_shuffle_f32x4::<0xDD>(u[j], u[4 + j]);
                    let w0 = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
                    let w1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + j], u[12 + j]);
                    let col = |c: usize| d.add(c * W);
                    _mm512_storeu_ps(col(j), _mm512_shuffle_f32x4::<0x88>(v0, w0));
                    _mm512_storeu_ps(col(4 + j), _mm512_shuffle_f32x4::<0x88>(v1, w1));
                    _mm512_storeu_ps(col(8 + j), _mm512_shuffle_f32x4::<0xDD>(v0, w0));
                    _mm512_storeu_ps(col(12 + j), _mm512_shuffle_f32x4::<0xDD>(v1, w1));
                }
            }
        };
        // SAFETY: the contract of `pack_panels`, depth_stride is 1 and 16 <= W (checked
        // above); `block` touches only its 16 x 16 block.
        unsafe { transposing::<f32, W, B>(src, rows, depth, row_stride, dst, block) }
    }

    /// f64 [`pack_panels`] with 4 x 4 AVX2 transposes for full, depth-contiguous panels.
    ///
    /// # Safety
    /// The contract of [`pack_panels`], and the CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub(in crate::kernels::gemm) unsafe fn pack_f64<const W: usize>(
        src: *const f64,
        rows: usize,
        depth: usize,
        row_stride: usize,
        depth_stride: usize,
        dst: &mut [f64],
    ) {
        if depth_stride != 1 || W < 4 || rows < W {
            // SAFETY: the same contract.
            return unsafe { pack_panels::<f64, W>(src, rows, depth, row_stride, depth_stride, dst) };
        }
        let block = |s: *const f64, d: *mut f64| {
            // SAFETY: 4 rows of 4 readable elements from `s`, 4 steps of 4 writable elements
            // from `d` (the contract of `transposing`).
            unsafe {
                let row = |ii: usize| _mm256_loadu_pd(s.add(ii * row_stride));
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let (t0, t1) = (_mm256_unpacklo_pd(r0, r1), _mm256_unpackhi_pd(r0, r1));
                let (t2, t3) = (_mm256_unpacklo_pd(r2, r3), _mm256_unpackhi_pd(r2, r3));
                let col = |c: usize| d.add(c * W);
                _mm256_storeu_pd(col(0), _mm256_permute2f128_pd::<0x20>(t0, t2));
                _mm256_storeu_pd(col(1), _mm256_permute2f128_pd::<0x20>(t1, t3));
                _mm256_storeu_pd(col(2), _mm256_permute2f128_pd::<0x31>(t0, t2));
                _mm256_storeu_pd(col(3), _mm256_permute2f128_pd::<0x31>(t1, t3));
            }
        };
        // SAFETY: the contract of `pack_panels`, depth_stride is 1 and 4 <= W (checked above);
        // `block` touches only its 4 x 4 block.
        unsafe { transposing::<f64, W, 4>(src, rows, depth, row_stride, dst, block) }
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

    /// `pack_panels::<f32, W>` of a `rows x depth` matrix stored with `strides` against the
    /// definition: element `(q W + i, p)` at `q W depth + p W + i`, zeros past the last row.
    fn check_against_the_definition<const W: usize>(rows: usize, depth: usize, strides: [usize; 2]) {
        let len = (rows - 1) * strides[0] + (depth - 1) * strides[1] + 1;
        let src: Vec<f32> = (0..len).map(|v| v as f32 + 0.5).collect();
        let panels = rows.div_ceil(W);
        let mut got = vec![f32::NAN; panels * W * depth];
        // SAFETY: element (i, p) is src[i * strides[0] + p * strides[1]] < len; `got` holds
        // the padded panels.
        unsafe { pack_panels::<f32, W>(src.as_ptr(), rows, depth, strides[0], strides[1], &mut got) };
        for q in 0..panels {
            for p in 0..depth {
                for i in 0..W {
                    let row = q * W + i;
                    let want = if row < rows { src[row * strides[0] + p * strides[1]] } else { 0.0 };
                    let at = q * W * depth + p * W + i;
                    assert_eq!(
                        got[at].to_bits(),
                        want.to_bits(),
                        "W {W}, {rows} x {depth}, strides {strides:?}, ({row}, {p})"
                    );
                }
            }
        }
    }

    #[test]
    fn panels_match_their_definition_for_every_layout() {
        // Contiguous runs across the panels (row stride 1: B row-major, A transposed) packed in
        // blocks of depth steps: depths within one block, across several and ragged at the end;
        // full and ragged last panels. Then the gathering layout and a general one.
        for (rows, depth) in [(70, 1), (64, 31), (70, 32), (33, 75), (14, 100), (5, 65)] {
            for strides in [[1, rows + 3], [depth + 2, 1], [3, 3 * rows + 1]] {
                check_against_the_definition::<32>(rows, depth, strides);
                check_against_the_definition::<14>(rows, depth, strides);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_simd_transposes_pack_exactly_what_the_generic_routine_packs() {
        // Depth-contiguous rows (a transposed B), full and ragged panels, depth tails; rows at
        // an odd stride, and rows whose stride is a whole number of blocks starting off a block
        // boundary (the packers first go element by element up to an aligned block).
        let rows = 70;
        for (row_stride, skew) in [(53usize, 0usize), (64, 3), (80, 13)] {
            let data: Vec<f32> = (0..rows * row_stride + skew).map(|v| v as f32 * 0.5 - 7.0).collect();
            let src = &data[skew..];
            for depth in [1, 15, 16, 17, 40, 53] {
                check_simd_packers(src, rows, depth, row_stride);
            }
        }
    }

    /// Packs `rows x depth` of `src` (rows `row_stride` apart) with every SIMD packer this CPU
    /// runs and with the generic routine, and asserts that they agree element for element.
    #[cfg(target_arch = "x86_64")]
    fn check_simd_packers(src: &[f32], rows: usize, depth: usize, row_stride: usize) {
        /// Runs `$pack::<$t, $w>` and `pack_panels::<$t, $w>` on `$src` and compares.
        macro_rules! same {
            ($pack:path, $t:ty, $w:literal, $src:expr, $what:literal) => {{
                let len = rows.div_ceil($w) * $w * depth;
                let (mut want, mut got) = (vec![<$t>::NAN; len], vec![<$t>::NAN; len]);
                // SAFETY: element (i, p) is src[i * row_stride + p] with i < rows and
                // p < depth <= row_stride: inside `src`; both buffers hold the padded panels;
                // the caller checked the CPU's features.
                unsafe {
                    pack_panels::<$t, $w>($src.as_ptr(), rows, depth, row_stride, 1, &mut want);
                    $pack($src.as_ptr(), rows, depth, row_stride, 1, &mut got);
                }
                assert_eq!(got, want, "{}, stride {row_stride}, depth {depth}", $what);
            }};
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            same!(x86::pack_f32_avx512::<32>, f32, 32, src, "avx512 W 32");
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            same!(x86::pack_f32::<32>, f32, 32, src, "avx2 W 32");
            // The AVX-512 kernel's A: 14-wide panels, so the 8 x 8 blocks overlap.
            same!(x86::pack_f32::<14>, f32, 14, src, "avx2 W 14");
            let src64: Vec<f64> = src.iter().map(|&v| f64::from(v) + 0.25).collect();
            same!(x86::pack_f64::<14>, f64, 14, src64, "avx2 f64 W 14");
            same!(x86::pack_f64::<16>, f64, 16, src64, "avx2 f64 W 16");
        }
    }
}
