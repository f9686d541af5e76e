//! `im2col` and its adjoint `col2im`: the unfolding that turns a convolution into one GEMM.
//!
//! For one image `[C, H, W]` the column matrix has one row per `(c, i, j)` (channel, kernel row,
//! kernel column) and one column per output position `(oh, ow)`:
//! `cols[(c, i, j), (oh, ow)] = x[c, oh * s + i - p, ow * s + j - p]`, zero in the padding.

use crate::dtype::Float;
use crate::kernels::active_isa;
use crate::kernels::elementwise::{BinaryOp, Operand};

/// The sizes of one 2-D convolution or pooling window sweep over a `[C, H, W]` image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Step between windows, both directions.
    pub stride: usize,
    /// Zeros (or -inf) added on every side.
    pub pad: usize,
    /// Output height, `(h + 2 pad - kh) / stride + 1`.
    pub oh: usize,
    /// Output width, `(w + 2 pad - kw) / stride + 1`.
    pub ow: usize,
}

impl Geometry {
    /// Rows of the column matrix: `c * kh * kw`.
    pub fn col_rows(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Columns of the column matrix: `oh * ow`.
    pub fn col_cols(&self) -> usize {
        self.oh * self.ow
    }

    /// True when the column matrix is the image itself (1x1 kernel, stride 1, no padding).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
}

/// The outputs `o < out` whose input coordinate `o * stride + k - pad` lies in `0..size`, as a
/// half-open range (empty when none does).
pub(super) fn valid_outputs(out: usize, k: usize, stride: usize, pad: usize, size: usize) -> (usize, usize) {
    // o is valid iff pad <= o * stride + k < pad + size.
    let lo = if k >= pad { 0 } else { (pad - k).div_ceil(stride) };
    let hi = if pad + size > k { (pad + size - k).div_ceil(stride) } else { 0 };
    let lo = lo.min(out);
    (lo, hi.min(out).max(lo))
}

/// Fills `cols` (`col_rows x col_cols`, row-major with rows `ld >= col_cols` apart: the image's
/// block of columns in a wider matrix) from the image whose element `(c, h, w)` is
/// `x[base + c * sc + h * sh + w * sw]`. Only the `col_cols` first elements of each row are
/// written.
pub(super) fn im2col<T: Float>(
    x: &[T],
    base: usize,
    [sc, sh, sw]: [usize; 3],
    g: &Geometry,
    cols: &mut [T],
    ld: usize,
) {
    let ncols = g.col_cols();
    debug_assert!(ld >= ncols && (g.col_rows() == 0 || cols.len() >= (g.col_rows() - 1) * ld + ncols));
    if g.stride == 1 && sw == 1 && sh == g.ow && ncols > 0 {
        return im2col_shifted(x, base, sc, g, cols, ld);
    }
    let mut rows = cols.chunks_mut(ld.max(1)).map(|row| &mut row[..ncols]);
    for c in 0..g.c {
        for i in 0..g.kh {
            let (h_lo, h_hi) = valid_outputs(g.oh, i, g.stride, g.pad, g.h);
            for j in 0..g.kw {
                let (w_lo, w_hi) = valid_outputs(g.ow, j, g.stride, g.pad, g.w);
                let Some(row) = rows.next() else { return };
                for oh in 0..g.oh {
                    let out = &mut row[oh * g.ow..(oh + 1) * g.ow];
                    if oh < h_lo || oh >= h_hi || w_lo == w_hi {
                        out.fill(T::ZERO);
                        continue;
                    }
                    let h = oh * g.stride + i - g.pad;
                    let w0 = w_lo * g.stride + j - g.pad;
                    let src = base + c * sc + h * sh + w0 * sw;
                    out[..w_lo].fill(T::ZERO);
                    let step = g.stride * sw;
                    if step == 1 {
                        // Stride 1 over a row of unit stride: a plain copy.
                        out[w_lo..w_hi].copy_from_slice(&x[src..src + (w_hi - w_lo)]);
                    } else {
                        for (k, o) in out[w_lo..w_hi].iter_mut().enumerate() {
                            *o = x[src + k * step];
                        }
                    }
                    out[w_hi..].fill(T::ZERO);
                }
            }
        }
    }
}

/// The rows `(c, i, j)` of the column matrix of a stride-1 "same" convolution for one kernel
/// offset `(i, j)`, and the outputs of them that read the image: rows `h` and columns `w`
/// (half-open), where input and output rows have one length, so each row is its channel's
/// plane shifted by `(i - p)` rows and `(j - p)` columns. `None` when no output reads the
/// image. The shift depends on the offset only, so a column matrix needs `kh * kw` of them
/// ([`ShiftedRow::table`]), whatever its channel count.
#[derive(Clone, Copy, Debug)]
struct ShiftedRow {
    i: usize,
    j: usize,
    h: (usize, usize),
    w: (usize, usize),
}

impl ShiftedRow {
    fn of(i: usize, j: usize, g: &Geometry) -> Option<ShiftedRow> {
        let h = valid_outputs(g.oh, i, 1, g.pad, g.h);
        let w = valid_outputs(g.ow, j, 1, g.pad, g.w);
        (h.0 < h.1 && w.0 < w.1).then_some(ShiftedRow { i, j, h, w })
    }

    /// One entry per kernel offset `(i, j)`, in the order of the column matrix's rows of one
    /// channel: the row `r` uses entry `r % (kh * kw)` and reads channel `r / (kh * kw)`.
    fn table(g: &Geometry) -> Vec<Option<ShiftedRow>> {
        (0..g.kh).flat_map(|i| (0..g.kw).map(move |j| ShiftedRow::of(i, j, g))).collect()
    }

    /// The span of the row from its first valid output to its last: one contiguous run of the
    /// plane, `(first, last)`.
    fn span(&self, ow: usize) -> (usize, usize) {
        (self.h.0 * ow + self.w.0, (self.h.1 - 1) * ow + self.w.1)
    }

    /// The plane offset (row-major `[h, w]` with rows `ow` long in memory) of the span's first
    /// element.
    fn source(&self, g: &Geometry) -> usize {
        (self.h.0 + self.i - g.pad) * g.ow + (self.w.0 + self.j - g.pad)
    }

    /// Zeroes the span's entries left and right of the valid columns (they belong to the
    /// neighbouring rows of the plane).
    fn zero_wrapped<T: Float>(&self, row: &mut [T], ow: usize) {
        // Column by column: the runs are a padding's width (one or two elements), too short
        // for a `fill` per output row (a memset call each).
        for j in (0..self.w.0).chain(self.w.1..ow) {
            for oh in self.h.0..self.h.1 {
                row[oh * ow + j] = T::ZERO;
            }
        }
    }
}

/// The rows of a column matrix (rows of `len` elements, `ld >= len` apart) with the channel and
/// the [`ShiftedRow`] of each.
fn shifted_rows<'a, T>(
    cols: &'a mut [T],
    len: usize,
    ld: usize,
    table: &'a [Option<ShiftedRow>],
) -> impl Iterator<Item = (usize, Option<&'a ShiftedRow>, &'a mut [T])> {
    let per_channel = table.len().max(1);
    cols.chunks_mut(ld)
        .map(move |row| &mut row[..len])
        .enumerate()
        .map(move |(r, row)| (r / per_channel, table[r % per_channel].as_ref(), row))
}

/// [`im2col`] at stride 1 when an input row is as long in memory as an output row (`sh == ow`,
/// unit column stride: a "same" convolution of a contiguous image). Then row `(c, i, j)` of
/// `cols` is the channel's plane shifted by `(i - p) * sh + (j - p)` elements: one copy of the
/// span from the first valid output to the last, then zeros where the span wrapped around a row
/// edge and in the rows above and below. One copy per row of `cols` instead of one per output
/// row.
fn im2col_shifted<T: Float>(x: &[T], base: usize, sc: usize, g: &Geometry, cols: &mut [T], ld: usize) {
    let table = ShiftedRow::table(g);
    for (c, s, row) in shifted_rows(cols, g.col_cols(), ld, &table).take(g.col_rows()) {
        let Some(s) = s else {
            row.fill(T::ZERO);
            continue;
        };
        let (first, last) = s.span(g.ow);
        let src = base + c * sc + s.source(g);
        row[..first].fill(T::ZERO);
        row[first..last].copy_from_slice(&x[src..src + (last - first)]);
        row[last..].fill(T::ZERO);
        s.zero_wrapped(row, g.ow);
    }
}

/// The adjoint of [`im2col`]: adds every entry of `cols` into the contiguous image `dx`
/// (`[c, h, w]`) at the position it was read from; padding entries are dropped.
/// `cols` is scratch: entries that map to no input position may be overwritten.
pub(super) fn col2im<T: Float>(cols: &mut [T], g: &Geometry, dx: &mut [T]) {
    let ncols = g.col_cols();
    debug_assert_eq!(cols.len(), g.col_rows() * ncols);
    debug_assert_eq!(dx.len(), g.c * g.h * g.w);
    if g.stride == 1 && g.w == g.ow && ncols > 0 {
        return col2im_shifted(cols, g, dx);
    }
    let mut rows = cols.chunks_exact(ncols.max(1));
    for c in 0..g.c {
        for i in 0..g.kh {
            let (h_lo, h_hi) = valid_outputs(g.oh, i, g.stride, g.pad, g.h);
            for j in 0..g.kw {
                let (w_lo, w_hi) = valid_outputs(g.ow, j, g.stride, g.pad, g.w);
                let Some(row) = rows.next() else { return };
                if w_lo == w_hi {
                    continue;
                }
                for oh in h_lo..h_hi {
                    let h = oh * g.stride + i - g.pad;
                    let w0 = w_lo * g.stride + j - g.pad;
                    let dst = (c * g.h + h) * g.w + w0;
                    let src = &row[oh * g.ow + w_lo..oh * g.ow + w_hi];
                    if g.stride == 1 {
                        // Contiguous on both sides: an add the compiler vectorises.
                        for (d, &v) in dx[dst..dst + src.len()].iter_mut().zip(src) {
                            *d += v;
                        }
                    } else {
                        for (k, &v) in src.iter().enumerate() {
                            dx[dst + k * g.stride] += v;
                        }
                    }
                }
            }
        }
    }
}

/// [`col2im`] at stride 1 when input and output rows have one length (a "same" convolution):
/// row `(c, i, j)` of `cols` adds into the plane shifted by `(i - p) w + (j - p)`, so after
/// zeroing its entries outside the valid columns (they would land on a neighbouring row), the
/// span from the first to the last valid output is one vectorised add.
fn col2im_shifted<T: Float>(cols: &mut [T], g: &Geometry, dx: &mut [T]) {
    let isa = active_isa();
    let table = ShiftedRow::table(g);
    for (c, s, row) in shifted_rows(cols, g.col_cols(), g.col_cols(), &table) {
        let Some(s) = s else { continue };
        s.zero_wrapped(row, g.ow);
        let (first, last) = s.span(g.ow);
        let dst = c * g.h * g.w + s.source(g);
        // The vector kernel: the same additions as a scalar loop, so the same bits.
        T::binary_assign(isa, BinaryOp::Add, &mut dx[dst..dst + (last - first)], Operand::Slice(&row[first..last]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(c: usize, h: usize, w: usize, k: usize, stride: usize, pad: usize) -> Geometry {
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        Geometry { c, h, w, kh: k, kw: k, stride, pad, oh, ow }
    }

    #[test]
    fn valid_outputs_matches_a_scan() {
        for out in 0..6 {
            for k in 0..4 {
                for stride in 1..4 {
                    for pad in 0..3 {
                        for size in 0..6 {
                            let ok: Vec<usize> =
                                (0..out).filter(|&o| o * stride + k >= pad && o * stride + k < pad + size).collect();
                            let (lo, hi) = valid_outputs(out, k, stride, pad, size);
                            assert_eq!((lo..hi).collect::<Vec<_>>(), ok, "{out} {k} {stride} {pad} {size}");
                        }
                    }
                }
            }
        }
    }

    /// The shifted-plane path and the row-by-row loop fill the same columns.
    #[test]
    fn the_shifted_path_matches_the_general_loop() {
        for (c, h, w, k, pad) in [(2, 5, 5, 3, 1), (1, 4, 6, 3, 1), (3, 7, 4, 5, 2), (2, 3, 3, 1, 0), (1, 2, 2, 3, 1)] {
            let g = geometry(c, h, w, k, 1, pad);
            assert_eq!(g.ow, w, "a same convolution");
            let base = 3;
            let x: Vec<f64> = (0..base + c * h * w + 2).map(|v| v as f64 + 0.5).collect();
            let mut fast = vec![f64::NAN; g.col_rows() * g.col_cols()];
            im2col(&x, base, [h * w, w, 1], &g, &mut fast, g.col_cols());
            // The same image read through a column stride of 1 but a row stride the fast path
            // does not take: a copy with one spare element per row.
            let mut wide = vec![-7.0; base + c * h * (w + 1)];
            for (ci, hi, wi) in (0..c).flat_map(|ci| (0..h).flat_map(move |hi| (0..w).map(move |wi| (ci, hi, wi)))) {
                wide[base + (ci * h + hi) * (w + 1) + wi] = x[base + (ci * h + hi) * w + wi];
            }
            let mut slow = vec![f64::NAN; fast.len()];
            im2col(&wide, base, [h * (w + 1), w + 1, 1], &g, &mut slow, g.col_cols());
            assert_eq!(fast, slow, "{c} {h} {w} {k} {pad}");
        }
    }

    /// The shifted `col2im` adds exactly what an entry-by-entry scatter adds.
    #[test]
    fn the_shifted_col2im_matches_a_scatter() {
        for (c, h, w, k, pad) in [(2, 5, 5, 3, 1), (1, 4, 6, 3, 1), (3, 7, 4, 5, 2), (2, 3, 3, 1, 0), (1, 2, 2, 3, 1)] {
            let g = geometry(c, h, w, k, 1, pad);
            let mut cols: Vec<f64> = (0..g.col_rows() * g.col_cols()).map(|v| ((v * 7) % 13) as f64 - 6.0).collect();
            let mut want = vec![0.5; c * h * w];
            for (r, row) in cols.chunks_exact(g.col_cols()).enumerate() {
                let (ci, i, j) = (r / (k * k), r / k % k, r % k);
                for (o, &v) in row.iter().enumerate() {
                    let (hh, ww) = ((o / g.ow + i) as isize - pad as isize, (o % g.ow + j) as isize - pad as isize);
                    if (0..h as isize).contains(&hh) && (0..w as isize).contains(&ww) {
                        want[(ci * h + hh as usize) * w + ww as usize] += v;
                    }
                }
            }
            let mut got = vec![0.5; c * h * w];
            col2im(&mut cols, &g, &mut got);
            assert_eq!(got, want, "{c} {h} {w} {k} {pad}");
        }
    }

    #[test]
    fn im2col_pads_with_zeros_and_col2im_is_its_adjoint() {
        let g = geometry(2, 4, 5, 3, 2, 1);
        let x: Vec<f64> = (0..g.c * g.h * g.w).map(|v| v as f64 + 1.0).collect();
        let mut cols = vec![f64::NAN; g.col_rows() * g.col_cols()];
        im2col(&x, 0, [g.h * g.w, g.w, 1], &g, &mut cols, g.col_cols());
        // Row (c=0, i=0, j=0), output (0, 0) reads x[0, -1, -1]: padding.
        assert_eq!(cols[0], 0.0);
        // Row (c=0, i=1, j=1), output (0, 0) reads x[0, 0, 0].
        assert_eq!(cols[(3 + 1) * g.col_cols()], 1.0);
        // <im2col(x), y> == <x, col2im(y)>.
        let y: Vec<f64> = (0..cols.len()).map(|v| ((v * 7) % 11) as f64 - 5.0).collect();
        let mut dx = vec![0.0; x.len()];
        col2im(&mut y.clone(), &g, &mut dx);
        let lhs: f64 = cols.iter().zip(&y).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
        assert_eq!(lhs, rhs);
    }
}
