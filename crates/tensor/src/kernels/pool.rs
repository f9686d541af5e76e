//! Max pooling over 2 x 2 windows with stride 2, the pooling layer of most CNNs, in one pass per
//! plane: [`max_pool_2x2`].
//!
//! Each window is scanned in PyTorch's order (top-left, top-right, bottom-left, bottom-right,
//! keeping the running best unless the next element is greater or NaN). That scan splits into
//! the two rows' pairs and then the rows: `best(t0, t1, b0, b1) = later(later(t0, t1),
//! later(b0, b1))` for the step `later(a, b) = b > a || b is NaN ? b : a` (a tie keeps the top
//! pair's winner, a NaN in the bottom pair wins), so a register of `LANES` windows is two loads
//! split into even and odd columns per row and three steps, with the same result as the scalar
//! scan for every input, NaN and ties included. The loop is written once over the instruction
//! sets of [`crate::kernels::mask`] (`mask/isa.rs`); the scalar register is the reference every
//! path is tested against, bit for bit.
//!
//! Which element won is kept as two bits per window (`2 · row + column`, 0 to 3) in bit planes:
//! for each output row, `words_per_row(ow)` words, a pair (low bit, high bit) per 64 windows.
//! [`max_pool_2x2_backward`] reads them to write each window's gradient into its winner and 0
//! into the other three, with no zero pass and no scatter.

use crate::dtype::Float;
use crate::kernels::mask::isa::{dispatch, elem_kernels, Kernel, MaskElem, MaskIsa, MaskLanes};
use crate::kernels::Isa;

/// The `u64` words of position codes one output row of `ow` windows takes: a (low, high) pair
/// per 64 windows.
pub fn words_per_row(ow: usize) -> usize {
    2 * ow.div_ceil(64)
}

/// The position code `2 · row + column` (0 to 3) of window `j` of an output row whose codes are
/// `row_words` (`words_per_row(ow)` words).
pub fn code_at(row_words: &[u64], j: usize) -> usize {
    let (lo, hi) = (row_words[2 * (j / 64)], row_words[2 * (j / 64) + 1]);
    ((hi >> (j % 64) & 1) << 1 | (lo >> (j % 64) & 1)) as usize
}

/// Sets the position code of window `j` (`code < 4`) in an output row's zeroed `row_words`: what
/// [`code_at`] reads back.
pub fn set_code(row_words: &mut [u64], j: usize, code: usize) {
    row_words[2 * (j / 64)] |= (code as u64 & 1) << (j % 64);
    row_words[2 * (j / 64) + 1] |= (code as u64 >> 1 & 1) << (j % 64);
}

/// Max pooling of one plane over 2 x 2 windows with stride 2: for `i < oh` (`y.len() / ow`) and
/// `j < ow`, `y[i·ow + j]` is the maximum of `x[r · row_stride + c]` over rows `r ∈ {2i, 2i+1}`
/// and columns `c ∈ {2j, 2j+1}` in PyTorch's order (ties keep the first, NaN wins), and
/// `codes` holds `2 · (r - 2i) + (c - 2j)` of the element taken ([`code_at`] reads it), in
/// `words_per_row(ow)` words per output row.
///
/// # Panics
/// When `ow` is 0 while `y` is not empty, `y.len()` is not a multiple of `ow`, `codes` does not
/// have `oh · words_per_row(ow)` words, or `x` does not reach row `2·oh - 1`, column `2·ow - 1`.
pub fn max_pool_2x2<T: Float>(isa: Isa, x: &[T], row_stride: usize, ow: usize, y: &mut [T], codes: &mut [u64]) {
    if y.is_empty() {
        return;
    }
    assert!(ow > 0 && y.len().is_multiple_of(ow), "max_pool_2x2: {} outputs in rows of {ow}", y.len());
    let oh = y.len() / ow;
    assert_eq!(codes.len(), oh * words_per_row(ow), "max_pool_2x2: {} code words for {oh} x {ow} windows", codes.len());
    let needed = (2 * oh - 1).checked_mul(row_stride).and_then(|n| n.checked_add(2 * ow));
    assert!(
        needed.is_some_and(|n| n <= x.len()),
        "max_pool_2x2: {oh} x {ow} windows with rows {row_stride} apart need more than {} elements",
        x.len()
    );
    (elem_kernels::<T>().max_pool_2x2)(isa, x, row_stride, ow, y, codes);
}

/// The gradient of [`max_pool_2x2`] for one `h x w` plane (`dx.len() == h · w`): each window's
/// `dy` (plus `+0`, as a sum into zeros gives it) goes to the element its code names, `+0` to
/// the window's other three and to the rows and columns no window covers. Every element of `dx`
/// is written once.
///
/// # Panics
/// When `ow` is 0 while `dy` is not empty, `dy.len()` is not a multiple of `ow`, `codes` does not
/// have `oh · words_per_row(ow)` words, or the windows do not fit in the plane (`2 · oh > h` or
/// `2 · ow > w`, or `dx.len() != h · w`).
pub fn max_pool_2x2_backward<T: Float>(isa: Isa, dy: &[T], codes: &[u64], ow: usize, w: usize, dx: &mut [T]) {
    if dy.is_empty() {
        dx.fill(T::ZERO);
        return;
    }
    assert!(ow > 0 && dy.len().is_multiple_of(ow), "max_pool_2x2_backward: {} gradients in rows of {ow}", dy.len());
    let oh = dy.len() / ow;
    assert_eq!(codes.len(), oh * words_per_row(ow), "max_pool_2x2_backward: {} code words", codes.len());
    assert!(
        2 * ow <= w && w > 0 && dx.len().is_multiple_of(w) && 2 * oh <= dx.len() / w,
        "max_pool_2x2_backward: {oh} x {ow} windows do not fit a plane of {} elements in rows of {w}",
        dx.len()
    );
    (elem_kernels::<T>().max_pool_2x2_backward)(isa, dy, codes, ow, w, dx);
}

/// [`max_pool_2x2`] for a [`MaskElem`], the lengths checked.
pub(crate) fn max_pool_2x2_elem<T: MaskElem>(
    isa: Isa,
    x: &[T],
    row_stride: usize,
    ow: usize,
    y: &mut [T],
    codes: &mut [u64],
) {
    dispatch(isa, MaxPool2x2 { x, row_stride, ow, y, codes });
}

/// [`max_pool_2x2_backward`] for a [`MaskElem`], the lengths checked.
pub(crate) fn max_pool_2x2_backward_elem<T: MaskElem>(
    isa: Isa,
    dy: &[T],
    codes: &[u64],
    ow: usize,
    w: usize,
    dx: &mut [T],
) {
    dispatch(isa, MaxPool2x2Backward { dy, codes, ow, w, dx });
}

/// The bits `0..n` of a word.
fn low_bits(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1 << n) - 1
    }
}

// ─── forward ─────────────────────  y = max over each 2 x 2 window, code = its position
struct MaxPool2x2<'a, T> {
    x: &'a [T],
    row_stride: usize,
    ow: usize,
    y: &'a mut [T],
    codes: &'a mut [u64],
}

impl<T: MaskElem> Kernel for MaxPool2x2<'_, T> {
    type Output = ();

    #[inline(always)]
    unsafe fn call<S: MaskIsa>(self, _isa: S) {
        let (ow, rs) = (self.ow, self.row_stride);
        let rows = self.y.chunks_exact_mut(ow).zip(self.codes.chunks_exact_mut(words_per_row(ow)));
        for (i, (y, words)) in rows.enumerate() {
            let top = &self.x[2 * i * rs..][..2 * ow];
            let bottom = &self.x[(2 * i + 1) * rs..][..2 * ow];
            words.fill(0);
            // SAFETY: the caller guarantees `S`'s instruction set; the slices above have the lengths
            // `pool_row` needs.
            unsafe { pool_row::<T::Reg<S>>(top, bottom, y, words) };
        }
    }
}

/// One output row: `LANES` windows per step, the last few (`ow % LANES`) through the partial
/// loads and stores.
///
/// # Safety
/// The CPU supports `V`'s instruction set; `top` and `bottom` hold `2 · y.len()` elements and
/// `words` `words_per_row(y.len())`, zeroed.
#[inline(always)]
unsafe fn pool_row<V: MaskLanes>(top: &[V::Elem], bottom: &[V::Elem], y: &mut [V::Elem], words: &mut [u64]) {
    let ow = y.len();
    let mut j = 0;
    while j < ow {
        let n = V::LANES.min(ow - j);
        // SAFETY: windows j..j + n are below `ow`: their `2n` elements of each row and their `n`
        // outputs are in bounds (the caller's lengths).
        let (best, (lo, hi)) = unsafe { pool_step::<V>(top.as_ptr().add(2 * j), bottom.as_ptr().add(2 * j), n) };
        // SAFETY: as above.
        unsafe {
            if n == V::LANES {
                best.store(y.as_mut_ptr().add(j));
            } else {
                best.store_first(y.as_mut_ptr().add(j), n);
            }
        }
        // Windows j..j + n lie inside one word pair (LANES divides 64).
        let keep = low_bits(n);
        words[2 * (j / 64)] |= (lo & keep) << (j % 64);
        words[2 * (j / 64) + 1] |= (hi & keep) << (j % 64);
        j += n;
    }
}

/// The maxima of `n <= LANES` windows whose rows start at `top` and `bottom`, and their codes'
/// low and high bits (lanes from `n` on unspecified).
///
/// # Safety
/// The CPU supports `V`'s instruction set; `top..top + 2n` and the same of `bottom` are
/// readable.
#[inline(always)]
unsafe fn pool_step<V: MaskLanes>(top: *const V::Elem, bottom: *const V::Elem, n: usize) -> (V, (u64, u64)) {
    // SAFETY: the caller's contract.
    let ((t0, t1), (b0, b1)) = unsafe {
        if n == V::LANES {
            (V::load_pairs(top), V::load_pairs(bottom))
        } else {
            (V::load_pairs_first(top, n), V::load_pairs_first(bottom, n))
        }
    };
    // SAFETY: the caller guarantees the instruction set.
    let ((t, right_top), (b, right_bottom)) = unsafe { (t0.take_later(t1), b0.take_later(b1)) };
    // SAFETY: as above.
    let (best, from_bottom) = unsafe { t.take_later(b) };
    (best, ((from_bottom & right_bottom) | (!from_bottom & right_top), from_bottom))
}

// ─── backward ────────────────────  dx = dy at each window's winner, +0 elsewhere
struct MaxPool2x2Backward<'a, T> {
    dy: &'a [T],
    codes: &'a [u64],
    ow: usize,
    w: usize,
    dx: &'a mut [T],
}

impl<T: MaskElem> Kernel for MaxPool2x2Backward<'_, T> {
    type Output = ();

    #[inline(always)]
    unsafe fn call<S: MaskIsa>(self, _isa: S) {
        let (ow, w) = (self.ow, self.w);
        let oh = self.dy.len() / ow;
        let rows = self.dy.chunks_exact(ow).zip(self.codes.chunks_exact(words_per_row(ow)));
        for (i, (dy, words)) in rows.enumerate() {
            let (top, bottom) = self.dx[2 * i * w..(2 * i + 2) * w].split_at_mut(w);
            // SAFETY: the caller guarantees `S`'s instruction set; `top` and `bottom` hold
            // `w >= 2 · ow` elements and `words` a row's codes.
            unsafe { route_row::<T::Reg<S>>(dy, words, &mut top[..2 * ow], &mut bottom[..2 * ow]) };
            top[2 * ow..].fill(T::ZERO);
            bottom[2 * ow..].fill(T::ZERO);
        }
        self.dx[2 * oh * w..].fill(T::ZERO);
    }
}

/// One output row's gradients into the two input rows under it, `LANES` windows per step, the
/// last few (`ow % LANES`) through the partial loads and stores.
///
/// # Safety
/// The CPU supports `V`'s instruction set; `top` and `bottom` hold `2 · dy.len()` elements and
/// `words` `words_per_row(dy.len())`.
#[inline(always)]
unsafe fn route_row<V: MaskLanes>(dy: &[V::Elem], words: &[u64], top: &mut [V::Elem], bottom: &mut [V::Elem]) {
    let ow = dy.len();
    let mut j = 0;
    while j < ow {
        let n = V::LANES.min(ow - j);
        let code = (words[2 * (j / 64)] >> (j % 64), words[2 * (j / 64) + 1] >> (j % 64));
        // SAFETY: windows j..j + n are below `ow`: their `n` gradients and their `2n` elements of
        // each row are in bounds (the caller's lengths).
        unsafe {
            route_step::<V>(dy.as_ptr().add(j), code, top.as_mut_ptr().add(2 * j), bottom.as_mut_ptr().add(2 * j), n)
        };
        j += n;
    }
}

/// `n <= LANES` windows' gradients at `dy`, routed by their codes' (low, high) bits into the
/// rows at `top` and `bottom`.
///
/// # Safety
/// The CPU supports `V`'s instruction set; `dy..dy + n` is readable, `top..top + 2n` and the
/// same of `bottom` are writable.
#[inline(always)]
unsafe fn route_step<V: MaskLanes>(
    dy: *const V::Elem,
    (lo, hi): (u64, u64),
    top: *mut V::Elem,
    bottom: *mut V::Elem,
    n: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let whole = n == V::LANES;
        // `dy + 0`: what a scatter into zeros gives (-0 becomes +0).
        let g = if whole { V::load(dy) } else { V::load_first(dy, n) }.add(V::splat(<V::Elem as Float>::ZERO));
        let rows = [(top, !hi), (bottom, hi)];
        for (row, high) in rows {
            let (left, right) = (g.select_bits(high & !lo), g.select_bits(high & lo));
            if whole {
                V::store_pairs(left, right, row);
            } else {
                V::store_pairs_first(left, right, row, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::available_isas;
    use crate::kernels::mask::tests::{bits, special_values};

    /// The window scan as written in PyTorch, element by element: the reference of the reference.
    fn scan<T: Float>(x: &[T], rs: usize, ow: usize, oh: usize) -> (Vec<T>, Vec<usize>) {
        let (mut y, mut codes) = (Vec::new(), Vec::new());
        for i in 0..oh {
            for j in 0..ow {
                let (mut best, mut code) = (T::NEG_INFINITY, 0);
                for (c, (r, col)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                    let v = x[(2 * i + r) * rs + 2 * j + col];
                    if v > best || v.is_nan() {
                        (best, code) = (v, c);
                    }
                }
                y.push(best);
                codes.push(code);
            }
        }
        (y, codes)
    }

    /// Every window's code, row-major.
    fn all_codes(words: &[u64], oh: usize, ow: usize) -> Vec<usize> {
        (0..oh)
            .flat_map(|i| (0..ow).map(move |j| (i, j)))
            .map(|(i, j)| code_at(&words[i * words_per_row(ow)..], j))
            .collect()
    }

    /// Normal values rounded to halves (many ties), NaN of both signs, ±inf, ±0.
    fn test_values<T: Float>(n: usize, seed: u64) -> Vec<T> {
        special_values::<T>(n, seed)
            .into_iter()
            .map(|v| if v.is_finite() && v != T::ZERO { T::from_f64((v.to_f64() * 2.0).round() * 0.5) } else { v })
            .collect()
    }

    fn paths_match<T: Float>() {
        // Widths around every register size (1, 2, 4, 8, 16 lanes) and a code word (64), rows
        // padded past 2 · ow.
        for ow in [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, 63, 64, 65, 130] {
            for oh in [1, 2, 3] {
                let rs = 2 * ow + ow % 3;
                let x: Vec<T> = test_values(2 * oh * rs, (ow * 7 + oh) as u64);
                let (want, want_codes) = scan(&x, rs, ow, oh);
                // The backward's reference: a scatter into zeros, as PyTorch computes it.
                let (h, w) = (2 * oh + ow % 2, 2 * ow + oh % 2);
                let dy: Vec<T> = test_values(oh * ow, 99 + ow as u64);
                let mut want_dx = vec![T::ZERO; h * w];
                for (e, (&g, &code)) in dy.iter().zip(&want_codes).enumerate() {
                    let (i, j) = (e / ow, e % ow);
                    want_dx[(2 * i + code / 2) * w + 2 * j + code % 2] += g;
                }
                for isa in available_isas() {
                    let mut y = vec![T::ZERO; oh * ow];
                    let mut codes = vec![u64::MAX; oh * words_per_row(ow)];
                    max_pool_2x2(isa, &x, rs, ow, &mut y, &mut codes);
                    assert_eq!(bits(&y), bits(&want), "{isa:?} ow {ow} oh {oh}");
                    assert_eq!(all_codes(&codes, oh, ow), want_codes, "{isa:?} ow {ow} oh {oh}");
                    let mut dx = vec![T::NAN; h * w];
                    max_pool_2x2_backward(isa, &dy, &codes, ow, w, &mut dx);
                    assert_eq!(bits(&dx), bits(&want_dx), "{isa:?} dx ow {ow} oh {oh}");
                }
            }
        }
    }

    #[test]
    fn every_path_matches_the_window_scan_f32() {
        paths_match::<f32>();
    }

    #[test]
    fn every_path_matches_the_window_scan_f64() {
        paths_match::<f64>();
    }

    #[test]
    fn ties_keep_the_first_and_the_last_nan_wins() {
        let nan = f32::NAN;
        // One window's [top pair, bottom pair], its maximum and its code.
        let cases: [([f32; 4], f32, usize); 6] = [
            ([1.0, 1.0, 1.0, 1.0], 1.0, 0),
            ([0.0, 2.0, 2.0, 1.0], 2.0, 1),
            ([0.0, 1.0, 3.0, 3.0], 3.0, 2),
            ([nan, 5.0, 1.0, 1.0], nan, 0),
            ([1.0, nan, nan, 0.0], nan, 2),
            ([f32::NEG_INFINITY; 4], f32::NEG_INFINITY, 0),
        ];
        for isa in available_isas() {
            // Sixteen copies of each case, so that every path's registers see them.
            for (window, want, code) in cases {
                let ow = 16;
                let mut x = vec![0.0f32; 4 * ow];
                for j in 0..ow {
                    x[2 * j..2 * j + 2].copy_from_slice(&window[..2]);
                    x[2 * ow + 2 * j..2 * ow + 2 * j + 2].copy_from_slice(&window[2..]);
                }
                let (mut y, mut codes) = (vec![0.0f32; ow], vec![0u64; words_per_row(ow)]);
                max_pool_2x2(isa, &x, 2 * ow, ow, &mut y, &mut codes);
                assert!(y.iter().all(|v| v.to_bits() == want.to_bits()), "{isa:?} {window:?}: {y:?}");
                assert!(all_codes(&codes, 1, ow).iter().all(|&c| c == code), "{isa:?} {window:?}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "max_pool_2x2: 2 x 3 windows with rows 6 apart need more than 11 elements")]
    fn a_short_input_is_a_clear_panic() {
        let (mut y, mut codes) = (vec![0.0f32; 6], vec![0u64; 4]);
        max_pool_2x2(Isa::Scalar, &[0.0f32; 11], 6, 3, &mut y, &mut codes);
    }

    #[test]
    #[should_panic(expected = "max_pool_2x2_backward: 2 x 3 windows do not fit a plane of 20 elements in rows of 5")]
    fn windows_outside_the_plane_are_a_clear_panic() {
        let mut dx = vec![0.0f32; 20];
        max_pool_2x2_backward(Isa::Scalar, &[0.0f32; 6], &[0u64; 4], 3, 5, &mut dx);
    }
}
