//! Small products (every side at most `MAX_SMALL`, 64) into a row-major `C`: a transformer's
//! attention, per head `q · kᵀ` (`28 x 28 x 16`), `W · v` (`28 x 16 x 28`) and the backward's
//! four like them, where packing both operands would cost as much as the product.
//!
//! `C` is swept in tiles of up to `MR = 14` rows by two vectors (32 columns), the packed
//! microkernel's tile: per step of `K`, two loads of `B` and 14 broadcasts of `A` feed 28 fused
//! multiply-adds into 28 accumulators, stored once (the last vector of a row under a mask). A
//! tile of one vector (`n <= 16`, or the last 16 columns) runs half the multiply-adds. The rows
//! are cut into blocks of equal height (28 rows: two of 14, 20 rows: two of 10), so that no
//! block is left with too few accumulators to hide the FMAs' latency. `A` is read where it is,
//! row-major or transposed, and so is a row-major `B`; a `B` with contiguous columns (`kᵀ` of a
//! key with contiguous rows) is transposed first, 16 x 16 elements at a time in registers, into
//! a 64-byte aligned scratch on the stack (at most 16 KiB, in L1). Each element is summed over
//! `p` in order, one FMA at a time from zero, as the packed microkernel does (`k <= kc`), so the
//! two paths agree to the bit.
//!
//! Measured against the short-`K` loop this path took before (blocks of 8 rows of one or two
//! vectors, `A`'s addresses computed at run time, `kᵀ` copied element by element into a
//! row-major scratch), on the transformer example's heads (`[64, 4, 28, 16]`, one thread,
//! Intel Xeon with AVX-512, the fastest of 400 calls): the fused attention's forward 634 →
//! 566 µs, its backward 755 → 570 µs.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::{Direct, MAX_SMALL};

/// Rows of `C` per tile, at most: 14 rows of two vectors are 28 accumulators, with the two
/// vectors of `B` and a broadcast 31 of the 32 registers.
const MR: usize = 14;

/// f32 lanes per vector.
const LANES: usize = 16;

/// The mask selecting the first `width` lanes (all 16 from 16 up).
#[inline(always)]
fn first_lanes(width: usize) -> __mmask16 {
    if width >= LANES {
        0xFFFF
    } else {
        ((1u32 << width) - 1) as __mmask16
    }
}

/// How a tile reads `A`: along its rows (`a_cs == 1`) or its columns (`a_rs == 1`), the unit
/// stride known at compile time, so that the elements a step of `K` broadcasts lie at fixed
/// offsets from one or a few addresses (with both strides read at run time, the compiler
/// computes the 14 rows' addresses as a chain of additions that took longer than the FMAs).
pub(super) trait AOrder {
    /// `A`'s row and column strides.
    fn strides(ops: &Direct<f32>) -> (usize, usize);
}

/// `A` row-major (`a_cs == 1`).
pub(super) struct ARows;

impl AOrder for ARows {
    #[inline(always)]
    fn strides(ops: &Direct<f32>) -> (usize, usize) {
        (ops.a_rs, 1)
    }
}

/// `A` transposed (`a_rs == 1`).
pub(super) struct ACols;

impl AOrder for ACols {
    #[inline(always)]
    fn strides(ops: &Direct<f32>) -> (usize, usize) {
        (1, ops.a_cs)
    }
}

/// `A` with neither stride 1 (both read at run time): the few-rows path's strided views.
pub(super) struct AStrided;

impl AOrder for AStrided {
    #[inline(always)]
    fn strides(ops: &Direct<f32>) -> (usize, usize) {
        (ops.a_rs, ops.a_cs)
    }
}

/// Steps of `K` per turn of a tile's loop: the rows' addresses, computed once per turn, serve
/// four steps at constant offsets.
const UNROLL: usize = 4;

/// `MB` rows of `C` by `NV` vectors from column `j`, the last vector's lanes under `last`.
///
/// # Safety
/// The contract of `DirectFn` with `m = MB`, `ops.b_cs == 1` and `A`'s unit stride where `L`
/// says, for the columns `j ..` the vectors and `last` select.
#[target_feature(enable = "avx512f")]
unsafe fn tile<const MB: usize, const NV: usize, L: AOrder>(k: usize, ops: Direct<f32>, j: usize, last: __mmask16) {
    let mask = |q: usize| if q + 1 == NV { last } else { 0xFFFF };
    let (a_rs, a_cs) = L::strides(&ops);
    let mut acc = [[_mm512_setzero_ps(); NV]; MB];
    // One step of `K`: `B(p, j ..)` times each row's `A(i, p)`, added in order.
    let mut step = |p: usize| {
        // SAFETY: the lanes loaded are `B(p, j ..)` with `p < k` and columns below `n`: readable
        // (contract); masked-off lanes are not accessed.
        let bv: [__m512; NV] =
            std::array::from_fn(|q| unsafe { _mm512_maskz_loadu_ps(mask(q), ops.b.add(p * ops.ldb + j + LANES * q)) });
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `A(i, p)` with `i < MB`, `p < k` is readable (contract).
            let ai = _mm512_set1_ps(unsafe { *ops.a.add(i * a_rs + p * a_cs) });
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = _mm512_fmadd_ps(ai, bv, *acc);
            }
        }
    };
    let unrolled = k - k % UNROLL;
    for p in (0..unrolled).step_by(UNROLL) {
        for u in 0..UNROLL {
            step(p + u);
        }
    }
    for p in unrolled..k {
        step(p);
    }
    for (i, row) in acc.iter().enumerate() {
        for (q, &sum) in row.iter().enumerate() {
            // SAFETY: the lanes `mask(q)` selects are `C(i, j + 16 q ..)` with `i < MB` and
            // columns below `n`: writable (contract); masked-off lanes are not touched.
            unsafe {
                let cp = ops.c.add(i * ops.ldc + j + LANES * q);
                let out = if ops.accumulate { _mm512_add_ps(_mm512_maskz_loadu_ps(mask(q), cp), sum) } else { sum };
                _mm512_mask_storeu_ps(cp, mask(q), out);
            }
        }
    }
}

/// `mb` rows of `C` (at most `MR`), all `n` columns: tiles of two vectors, the last one or two
/// vectors under a mask.
///
/// # Safety
/// The contract of `DirectFn` with `m = mb <= MR`, `ops.b_cs == 1` and `A`'s unit stride where
/// `L` says.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn row_block<L: AOrder>(mb: usize, n: usize, k: usize, ops: Direct<f32>) {
    macro_rules! by_rows {
        ($nv:literal, $j:expr, $last:expr; $($mb:literal)*) => {
            match mb {
                // SAFETY: `mb` rows, columns `j ..` under the masks: the caller's contract.
                $($mb => unsafe { tile::<$mb, $nv, L>(k, ops, $j, $last) },)*
                _ => unreachable!("a block of the small path has 1 to {MR} rows, got {mb}"),
            }
        };
    }
    let mut j = 0;
    while j < n {
        let width = (n - j).min(2 * LANES);
        if width > LANES {
            by_rows!(2, j, first_lanes(width - LANES); 1 2 3 4 5 6 7 8 9 10 11 12 13 14);
        } else {
            by_rows!(1, j, first_lanes(width); 1 2 3 4 5 6 7 8 9 10 11 12 13 14);
        }
        j += width;
    }
}

/// A 16 x 16 block of f32 transposed in registers: `out[c]` lane `r` is `rows[r]` lane `c`.
///
/// # Safety
/// The CPU supports AVX-512F (the crate's rule: no safe function runs SIMD instructions).
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // Pairs of rows interleaved, then pairs of pairs, then the 128-bit quarters twice.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (x, y) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(x, y)
        } else {
            _mm512_unpackhi_ps(x, y)
        }
    });
    // u[4g + s]: from t[4g + s / 2] and t[4g + 2 + s / 2], the low (even s) or high pairs.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (g, s) = (i / 4 * 4, i % 4);
        let (x, y) = (t[g + s / 2], t[g + 2 + s / 2]);
        if s % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(x, y)
        } else {
            _mm512_shuffle_ps::<0xEE>(x, y)
        }
    });
    // v[8h + s]: quarters 0 and 2 (s < 4) or 1 and 3 of u[8h + s % 4] and u[8h + 4 + s % 4].
    let v: [__m512; 16] = std::array::from_fn(|i| {
        let (h, s) = (i / 8 * 8, i % 8);
        let (x, y) = (u[h + s % 4], u[h + 4 + s % 4]);
        if s < 4 {
            _mm512_shuffle_f32x4::<0x88>(x, y)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(x, y)
        }
    });
    std::array::from_fn(|i| {
        let (x, y) = (v[i % 8], v[8 + i % 8]);
        if i < 8 {
            _mm512_shuffle_f32x4::<0x88>(x, y)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(x, y)
        }
    })
}

/// A row-major copy of an operand of the small path, 64-byte aligned.
#[repr(C, align(64))]
pub(super) struct Scratch([MaybeUninit<f32>; MAX_SMALL * MAX_SMALL]);

impl Scratch {
    /// An uninitialised scratch (on the stack; nothing is written until a copy).
    pub(super) fn new() -> Scratch {
        Scratch([MaybeUninit::uninit(); MAX_SMALL * MAX_SMALL])
    }

    /// Copies the `rows x cols` elements `(i, j)` at `src + i * rs + j * cs` into rows of `cols`
    /// and returns the start of the copy (row-major, row stride `cols`).
    ///
    /// # Safety
    /// `rows · cols <= MAX_SMALL²`, and every element named is readable.
    pub(super) unsafe fn copy_rows(
        &mut self,
        src: *const f32,
        [rows, cols]: [usize; 2],
        [rs, cs]: [usize; 2],
    ) -> *const f32 {
        for (i, row) in self.0.chunks_exact_mut(cols.max(1)).take(rows).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: element `(i, j)` with `i < rows`, `j < cols` is readable (contract).
                v.write(unsafe { *src.add(i * rs + j * cs) });
            }
        }
        self.0.as_ptr().cast()
    }
}

/// Copies `B` (`k x n`, `B(p, j)` at `ops.b + p + j * ops.b_cs`: columns contiguous) into
/// `scratch` as rows of `ld = n` rounded up to 16 (the columns past `n` zero), 16 x 16 elements
/// at a time through [`transpose16`]; returns `ld`.
///
/// # Safety
/// `k, n <= MAX_SMALL`, and every `B(p, j)` with `p < k`, `j < n` is readable.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_b(k: usize, n: usize, ops: Direct<f32>, scratch: &mut Scratch) -> usize {
    let ld = n.next_multiple_of(LANES);
    let out = scratch.0.as_mut_ptr().cast::<f32>();
    for p0 in (0..k).step_by(LANES) {
        let depth = (k - p0).min(LANES);
        for j0 in (0..ld).step_by(LANES) {
            let rows = std::array::from_fn(|r| {
                if j0 + r < n {
                    // SAFETY: the lanes loaded are `B(p0 .., j0 + r)`, `p < k`: readable
                    // (contract); masked-off lanes are not accessed.
                    unsafe { _mm512_maskz_loadu_ps(first_lanes(depth), ops.b.add((j0 + r) * ops.b_cs + p0)) }
                } else {
                    _mm512_setzero_ps()
                }
            });
            // SAFETY: AVX-512F, as this function's own contract requires.
            let cols = unsafe { transpose16(rows) };
            for (c, &col) in cols[..depth].iter().enumerate() {
                // SAFETY: row `p0 + c < k <= MAX_SMALL` of the scratch, columns `j0 .. j0 + 16
                // <= ld <= MAX_SMALL`: inside it, and 64-byte aligned (`ld` is a multiple of 16).
                unsafe { _mm512_store_ps(out.add((p0 + c) * ld + j0), col) };
            }
        }
    }
    ld
}

/// The AVX-512 f32 `DirectFn` for a small product (the small path's contract: `m, n, k <=
/// MAX_SMALL`; `ops.b_cs` is 1, or `ops.ldb` is 1 and `B` is transposed into a scratch first).
/// An `A` with neither stride 1 (a strided or expanded view) is copied into rows first.
///
/// # Safety
/// The contract of `DirectFn`, with `m, n, k <= MAX_SMALL`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn small_f32(m: usize, n: usize, k: usize, mut ops: Direct<f32>) {
    let mut b_rows = Scratch::new();
    if ops.b_cs != 1 {
        // SAFETY: `B`'s columns are contiguous when its rows are not (contract), `k, n <=
        // MAX_SMALL`.
        let ld = unsafe { transpose_b(k, n, ops, &mut b_rows) };
        // Rows `0..k` of the scratch, `ld >= n` columns each, were all written just now.
        ops = Direct { b: b_rows.0.as_ptr().cast(), ldb: ld, b_cs: 1, ..ops };
    }
    let mut a_rows = Scratch::new();
    if ops.a_cs != 1 && ops.a_rs != 1 {
        // SAFETY: `A(i, p)` with `i < m`, `p < k` is readable (contract), `m, k <= MAX_SMALL`.
        let a = unsafe { a_rows.copy_rows(ops.a, [m, k], [ops.a_rs, ops.a_cs]) };
        // Rows `0..m` of `k` elements, all written just now.
        ops = Direct { a, a_rs: k, a_cs: 1, ..ops };
    }
    let blocks = m.div_ceil(MR);
    let (height, taller) = (m / blocks, m % blocks);
    let mut i = 0;
    for block in 0..blocks {
        let mb = height + usize::from(block < taller);
        // SAFETY: rows `i .. i + mb <= m`, at most `MR` (`blocks` of `ceil(m / blocks) <= MR`
        // rows): inside the contract's ranges, `B` row-major, `A` with the unit stride chosen.
        unsafe {
            if ops.a_cs == 1 {
                row_block::<ARows>(mb, n, k, ops.at(i, 0));
            } else {
                row_block::<ACols>(mb, n, k, ops.at(i, 0));
            }
        }
        i += mb;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `C (+)= A · B` summed over `p` in order, one `mul_add` at a time from zero: the bits of
    /// the packed microkernel.
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
    ) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).fold(0.0f32, |acc, p| a(i, p).mul_add(b(p, j), acc));
            }
        }
        c
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32).map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 1999) as f32 / 997.0 - 1.0).collect()
    }

    #[test]
    fn every_shape_matches_the_in_order_fma_sum_to_the_bit() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let sizes = [1, 2, 13, 14, 15, 16, 17, 28, 31, 32, 33, 47, 64];
        for &m in &sizes {
            for &n in &sizes[2..] {
                for &k in &[1, 5, 16, 17, 28, 64] {
                    // A row-major (lda = k + 3), transposed (lda = m + 1) or strided both ways
                    // (rows 2k + 3 apart, every other element); B row-major (ldb = n + 5) or with
                    // contiguous columns (ld = k + 2); C with ldc = n + 1.
                    let (lda_r, lda_c, lda_s, ldb_r, ldb_c, ldc) = (k + 3, m + 1, 2 * k + 3, n + 5, k + 2, n + 1);
                    let a_rows = values(m * lda_r, 1);
                    let a_cols = values(k * lda_c, 2);
                    let a_strided = values(m * lda_s, 6);
                    let b_rows = values(k * ldb_r, 3);
                    let b_cols = values(n * ldb_c, 4);
                    let start = values(m * ldc, 5);
                    for (a_order, b_t) in [0, 1, 2].into_iter().flat_map(|a| [(a, false), (a, true)]) {
                        let accumulate = (a_order + usize::from(b_t)) % 2 == 1;
                        let (a, a_rs, a_cs) = match a_order {
                            0 => (&a_rows, lda_r, 1),
                            1 => (&a_cols, 1, lda_c),
                            _ => (&a_strided, lda_s, 2),
                        };
                        let (b, ldb, b_cs) = if b_t { (&b_cols, 1, ldb_c) } else { (&b_rows, ldb_r, 1) };
                        let want = reference(m, n, k, |i, p| a[i * a_rs + p * a_cs], |p, j| b[p * ldb + j * b_cs]);
                        let mut c = start.clone();
                        let ops = Direct {
                            a: a.as_ptr(),
                            a_rs,
                            a_cs,
                            b: b.as_ptr(),
                            ldb,
                            b_cs,
                            c: c.as_mut_ptr(),
                            ldc,
                            accumulate,
                        };
                        // SAFETY: every element named is inside its vector, and the CPU has
                        // AVX-512 (checked above).
                        unsafe { small_f32(m, n, k, ops) };
                        for i in 0..m {
                            for j in 0..ldc {
                                let got = c[i * ldc + j];
                                let expect = if j >= n {
                                    start[i * ldc + j]
                                } else if accumulate {
                                    start[i * ldc + j] + want[i * n + j]
                                } else {
                                    want[i * n + j]
                                };
                                assert_eq!(
                                    got.to_bits(),
                                    expect.to_bits(),
                                    "{m} x {n} x {k} (A order {a_order}, B transposed {b_t}): C({i}, {j})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn transpose16_transposes() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let data: Vec<f32> = (0..256).map(|i| i as f32).collect();
        // SAFETY: the CPU has AVX-512 (checked above); each load reads 16 of the 256 elements.
        let out = unsafe { transpose16(std::array::from_fn(|r| _mm512_loadu_ps(data.as_ptr().add(16 * r)))) };
        for (c, col) in out.iter().enumerate() {
            let mut lanes = [0.0f32; 16];
            // SAFETY: 16 writable lanes.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *col) };
            for (r, &v) in lanes.iter().enumerate() {
                assert_eq!(v, data[16 * r + c], "lane {r} of column {c}");
            }
        }
    }
}
