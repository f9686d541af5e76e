//! The GotoBLAS loop nest around the microkernel, and how it is split between threads.
//!
//! ```text
//! for jc in (0..n).step_by(nc)            B panel   kc x nc   packed once, shared   (L3)
//!   for pc in (0..k).step_by(kc)
//!     pack B[pc.., jc..]
//!     for ic in (0..m).step_by(mc)        A block   mc x kc   packed per task       (L2)
//!       pack A[ic.., pc..]
//!       for jr in (0..nc).step_by(nr)     B micro-panel kc x nr                     (L1)
//!         for ir in (0..mc).step_by(mr)   C tile    mr x nr                  (registers)
//!           microkernel(kc, A micro-panel, B micro-panel, C tile)
//! ```
//!
//! The first `kc` slice of `K` writes `C` (or accumulates into it, if asked), later slices
//! accumulate, so every element of `C` is `((0 + s_0) + s_1) + ...` over the slices in order,
//! with each slice sum `s_q` formed by one microkernel call: the same arithmetic whatever the
//! tiling of `M` and `N`, and therefore whatever the thread split.
//!
//! Threads: for problems of at least [`PAR_MIN_FLOPS`], each `(jc, pc)` step packs `B` in
//! parallel, then runs the `ic` blocks as tasks on the rayon pool. `mc` is shrunk (to a multiple
//! of `mr`) so the number of blocks is a multiple of the thread count; when no such height
//! exists (few rows), each block's `jr` loop is split into one chunk per thread instead. Each
//! task packs its own block of `A`, and tasks write disjoint tiles of `C`.

use rayon::prelude::*;

use super::microkernel::MAX_TILE;
use super::{GemmKernels, MatRef, Microkernel};

/// Below this many flops (`2 m n k`) a product runs on the calling thread: splitting it would
/// cost more in synchronisation than it saves (about a 128^3 product).
pub(super) const PAR_MIN_FLOPS: usize = 1 << 22;

/// `*mut T` that may cross threads: tasks write disjoint tiles of `C` through it.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: the driver hands each task a disjoint set of `C` tiles, so no element is written by
// two threads, and the pointer outlives the parallel region (it borrows `c` for the whole call).
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above; the pointer itself is only copied, never used to create shared references.
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// Runs the loop nest for `C (+)= A · B` with `m, n, k >= 1`.
///
/// The caller ([`super::gemm_with`]) has checked that `a` and `b` cover `m x k` and `k x n` and
/// that `c` covers the `m x n` elements `c[i * c_rs + j * c_cs]` without two of them sharing an
/// index (`C` row-major with `ldc >= n`, or its transpose).
pub(super) fn run<T: GemmKernels>(
    uk: &Microkernel<T>,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
    c_rs: usize,
    c_cs: usize,
    accumulate: bool,
) {
    let (mr, nr) = (uk.mr, uk.nr);
    let threads = if m.saturating_mul(n).saturating_mul(k).saturating_mul(2) >= PAR_MIN_FLOPS {
        rayon::current_num_threads()
    } else {
        1
    };
    let (mc, m_blocks) = split_m(m, uk.mc, mr, threads);
    let kc_max = uk.kc.min(k);
    let nc_max = uk.nc.min(n.next_multiple_of(nr));
    let c_ptr = SharedMut(c.as_mut_ptr());
    T::with_pack_buffer(1, kc_max * nc_max, |b_pack| {
        for jc in (0..n).step_by(uk.nc) {
            let nc = uk.nc.min(n - jc);
            let n_panels = nc.div_ceil(nr);
            for pc in (0..k).step_by(uk.kc) {
                let kc = uk.kc.min(k - pc);
                let acc = accumulate || pc > 0;
                let b_len = n_panels * nr * kc;
                let b_buf = &mut b_pack[..b_len];
                // B's panel is packed as its transpose (rows are the nc columns, depth runs along
                // k), in one chunk of whole micro-panels per thread.
                let per_chunk = n_panels.div_ceil(threads);
                let pack_b = |(ch, panels): (usize, &mut [T])| {
                    let j0 = ch * per_chunk * nr;
                    let cols = (nc - j0).min(per_chunk * nr);
                    // SAFETY: this chunk covers b(pc + p, jc + j0 + j) for p < kc, j < cols, all
                    // inside `b.data` because `b` covers k x n (checked by gemm_with); `panels`
                    // holds cols.div_ceil(nr) micro-panels of nr * kc elements.
                    unsafe {
                        let src = b.data.as_ptr().add(b.offset + pc * b.row_stride + (jc + j0) * b.col_stride);
                        (uk.pack_b)(src, cols, kc, b.col_stride, b.row_stride, panels)
                    }
                };
                if threads > 1 {
                    b_buf.par_chunks_mut(per_chunk * nr * kc).enumerate().for_each(pack_b);
                } else {
                    pack_b((0, b_buf));
                }
                let b_buf = &*b_buf;

                // One task: block `ib` of M times panels `panels` of N.
                let task = |a_buf: &mut [T], ib: usize, panels: std::ops::Range<usize>| {
                    let ic = ib * mc;
                    let rows = mc.min(m - ic);
                    let a_buf = &mut a_buf[..rows.div_ceil(mr) * mr * kc];
                    // SAFETY: rows ic .. ic + rows and columns pc .. pc + kc of `a` are inside
                    // `a.data` because `a` covers m x k (checked by gemm_with).
                    unsafe {
                        let src = a.data.as_ptr().add(a.offset + ic * a.row_stride + pc * a.col_stride);
                        (uk.pack_a)(src, rows, kc, a.row_stride, a.col_stride, a_buf);
                    }
                    macrokernel(
                        uk,
                        kc,
                        a_buf,
                        rows,
                        b_buf,
                        panels,
                        nc,
                        c_ptr,
                        ic * c_rs + jc * c_cs,
                        (c_rs, c_cs),
                        acc,
                    );
                };

                let a_len = mc.div_ceil(mr) * mr * kc;
                if threads == 1 {
                    T::with_pack_buffer(0, a_len, |a_buf| {
                        for ib in 0..m_blocks {
                            task(a_buf, ib, 0..n_panels);
                        }
                    });
                } else {
                    // When the blocks of M cannot be shared out evenly, cut each block's N panels
                    // into one chunk per thread as well (each chunk packs its block of A again).
                    let n_chunks = if m_blocks % threads == 0 { 1 } else { threads.min(n_panels) };
                    let per_chunk = n_panels.div_ceil(n_chunks);
                    (0..m_blocks * n_chunks).into_par_iter().for_each(|t| {
                        let (ib, chunk) = (t / n_chunks, t % n_chunks);
                        let panels = chunk * per_chunk..((chunk + 1) * per_chunk).min(n_panels);
                        if !panels.is_empty() {
                            T::with_pack_buffer(0, a_len, |a_buf| task(a_buf, ib, panels));
                        }
                    });
                }
            }
        }
    });
}

/// Picks the block height for `M`: at most `mc` and a multiple of `mr`. With several threads it
/// looks (among the next few block counts) for the tallest height that gives a number of blocks
/// divisible by `threads`, so every thread gets the same work; the caller splits `N` as well
/// when there is none. Returns the height and the number of blocks.
fn split_m(m: usize, mc: usize, mr: usize, threads: usize) -> (usize, usize) {
    if threads > 1 {
        let fewest = m.div_ceil(mc).next_multiple_of(threads);
        for blocks in (fewest..fewest + threads * 8).step_by(threads) {
            let height = m.div_ceil(blocks).next_multiple_of(mr);
            if height <= mc && m.div_ceil(height) % threads == 0 {
                return (height, m.div_ceil(height));
            }
        }
    }
    let height = m.div_ceil(m.div_ceil(mc)).next_multiple_of(mr).min(mc);
    (height, m.div_ceil(height))
}

/// Sweeps the `mr x nr` tiles of one packed block of `A` (`rows x kc`) against the micro-panels
/// `panels` of the packed `B` panel (`nc` columns wide), writing the tiles of `C` whose element
/// `(i, j)` is at `c_start + i * c_rs + j * c_cs`. Full tiles of a row-major `C` go straight to
/// the microkernel; edge tiles and transposed `C` go through a scratch tile, so the microkernel
/// always writes a full row-major `mr x nr`.
fn macrokernel<T: Copy + Default>(
    uk: &Microkernel<T>,
    kc: usize,
    a_buf: &[T],
    rows: usize,
    b_buf: &[T],
    panels: std::ops::Range<usize>,
    nc: usize,
    c: SharedMut<T>,
    c_start: usize,
    (c_rs, c_cs): (usize, usize),
    accumulate: bool,
) {
    let (mr, nr) = (uk.mr, uk.nr);
    let mut scratch = [T::default(); MAX_TILE];
    for jp in panels {
        let cols = nr.min(nc - jp * nr);
        let b_panel = &b_buf[jp * nr * kc..(jp + 1) * nr * kc];
        for (ip, a_panel) in a_buf.chunks_exact(mr * kc).enumerate() {
            let tile_rows = mr.min(rows - ip * mr);
            let offset = c_start + ip * mr * c_rs + jp * nr * c_cs;
            // SAFETY: the tile's elements (i, j), i < tile_rows, j < cols, are elements of the
            // m x n matrix C that `c` covers (checked by gemm_with), this task alone owns them,
            // and the packed micro-panels hold kc * mr and kc * nr elements. `uk.run` matches
            // this CPU (chosen by `select_*`). The scratch tile has mr * nr <= MAX_TILE elements.
            unsafe {
                let tile = c.0.add(offset);
                if tile_rows == mr && cols == nr && c_cs == 1 && c_rs >= nr {
                    (uk.run)(kc, a_panel.as_ptr(), b_panel.as_ptr(), tile, c_rs, accumulate);
                } else {
                    if accumulate {
                        for i in 0..tile_rows {
                            for j in 0..cols {
                                scratch[i * nr + j] = *tile.add(i * c_rs + j * c_cs);
                            }
                        }
                    }
                    (uk.run)(kc, a_panel.as_ptr(), b_panel.as_ptr(), scratch.as_mut_ptr(), nr, accumulate);
                    for i in 0..tile_rows {
                        for j in 0..cols {
                            *tile.add(i * c_rs + j * c_cs) = scratch[i * nr + j];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_m_balances_blocks_over_threads() {
        assert_eq!(split_m(2048, 168, 14, 1), (168, 13));
        for (m, threads) in [(256, 2), (1000, 3), (300, 2), (600, 2)] {
            let (h, blocks) = split_m(m, 56, 14, threads);
            assert_eq!((h % 14, blocks % threads), (0, 0), "m = {m}");
            assert!(h <= 56 && h * blocks >= m && h * (blocks - 1) < m, "m = {m}");
        }
        assert_eq!(split_m(256, 56, 14, 2), (28, 10));
        // No balanced height near 56 for 2048 rows: 37 blocks, and the caller splits N too.
        assert_eq!(split_m(2048, 56, 14, 2), (56, 37));
        assert_eq!(split_m(5, 168, 14, 2), (14, 1));
        assert_eq!(split_m(1, 64, 4, 1), (4, 1));
    }
}
