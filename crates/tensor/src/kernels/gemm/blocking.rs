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
//! A kernel that keeps its micro-panel of `B` in L1 (AVX2) walks a block's tiles along the
//! rows of `C` instead (`jr` inside `ir`) when a block of `A` and a panel of `B` would not fit
//! in half the L2 together ([`along_rows`]), with the panel of `B` narrowed to half the L2.
//!
//! A product whose rows of `A` fit in one block of twice `mc` rows (a batch of 128 against a
//! weight) packs `A` whole and `B` one micro-panel at a time instead ([`nest`]), so that packed
//! `B` never leaves L2.
//!
//! Against a narrow `C` (at most [`DIRECT_A_MAX_N`] columns), where packing `A` would be a large
//! share of the product, the AVX-512 f32 kernel reads full micro-panels of a row-major or
//! transposed `A` where they are (`Microkernel::direct_a`) and only a ragged last one is
//! packed: the same multiply-adds in the same order, so the same bits.
//!
//! `K` is cut into `k.div_ceil(kc)` slices as even as steps of 16 allow ([`slice_len`]). The
//! first slice writes `C` (or accumulates into it, if asked), later slices accumulate, so every
//! element of `C` is `((0 + s_0) + s_1) + ...` over the slices in order, with each slice sum
//! `s_q` formed by one microkernel call: the same arithmetic whatever the tiling of `M` and `N`,
//! and therefore whatever the thread split.
//!
//! Threads: a problem of at least [`PAR_MIN_FLOPS`] is cut into a grid of rectangles of `C`,
//! one per thread, each a product of its own: it packs its rows of `A` and its columns of `B`
//! and runs the loop nest above, and the threads meet only when all are done. The grid
//! ([`grid`]) is the one that packs the fewest elements per thread, so with 2 threads the longer
//! side of `C` is halved. (An earlier split shared each packed panel of `B` and parcelled out
//! the blocks of `M` with two barriers per panel; measured on the MLP's 128-row products at 2
//! threads it reached 256-339 GFLOP/s where the strips reach about 400, and it was no faster on
//! square products either.) A `C` small against its operands (a weight gradient `dzᵀ x`) is
//! split along `K` instead ([`split_k`]): each thread takes a run of the slices, and the later
//! runs' slice sums are added to `C` in slice order, so the bits are still one thread's.

use std::mem::MaybeUninit;

use super::mat::MatRef;
use super::mat::{copy_run, Init, MatMut, Out, Product};
use super::microkernel::{DirectAKernelFn, MAX_TILE};
use super::{CacheSizes, GemmKernels, Microkernel};

/// Below this many flops (`2 m n k`) a product runs on the calling thread: splitting it would
/// cost more in synchronisation than it saves (about a 128^3 product).
pub(super) const PAR_MIN_FLOPS: usize = 1 << 22;

/// Runs the product `p` with `m, n, k >= 1`, on the current rayon pool when it is large enough.
/// `C` may be row-major or its transpose (any strides its `MatMut` allowed).
pub(super) fn run<T: GemmKernels + std::ops::Add<Output = T>>(uk: &Microkernel<T>, p: Product<'_, T>) {
    let (m, n, k) = (p.m(), p.n(), p.k());
    let threads = if m.saturating_mul(n).saturating_mul(k).saturating_mul(2) >= PAR_MIN_FLOPS {
        rayon::current_num_threads()
    } else {
        1
    };
    // `K`'s slices as even as the kernel's `kc` allows, for every path below (see `slice_len`).
    let uk = &Microkernel { kc: slice_len(uk.kc, k), ..*uk };
    if let Some(parts) = k_parts((m, n, k), k.div_ceil(uk.kc), threads) {
        return split_k(uk, p, parts);
    }
    let (rows, cols) = grid(uk, m, n, threads);
    let (m_units, n_units) = (m.div_ceil(uk.mr), n.div_ceil(uk.nr));
    if rows * cols == 1 {
        return nest(uk, p);
    }
    // Rectangle `t` of the grid: its share of the micro-panels of M and of N, as whole panels
    // (so each element of C is still one microkernel call per kc slice).
    let bounds = |part: usize, parts: usize, units: usize, unit: usize, len: usize| {
        (units * part / parts * unit).min(len)..(units * (part + 1) / parts * unit).min(len)
    };
    crate::parallel::for_each(0..rows * cols, usize::MAX, |t| {
        let i = bounds(t / cols, rows, m_units, uk.mr, m);
        let j = bounds(t % cols, cols, n_units, uk.nr, n);
        if !i.is_empty() && !j.is_empty() {
            nest(uk, p.block(i, j));
        }
    });
}

/// The length of the slices of a `K` of `k` steps for a kernel of depth `kc`: `k` cut into as
/// few slices as `kc` allows (`k.div_ceil(kc)`), as even as steps of 16 make them (the last
/// one shorter). It depends on `k` and the instruction set's `kc` only, so each element's sum
/// is grouped the same way on every CPU of that instruction set and for every thread count;
/// even slices let [`split_k`] give two threads the same share of a `K` of 1792 (a transformer
/// weight gradient's 64 x 28 tokens), where slices of 1024 and 768 would not.
fn slice_len(kc: usize, k: usize) -> usize {
    k.div_ceil(k.div_ceil(kc)).next_multiple_of(16).min(kc)
}

/// How many threads share the slices of `K` of an `m x n x k` product cut into `slices`, when
/// that is how it should be split (`None`: cut `C` instead, [`grid`]). A `C` small against its
/// operands (`8 m n <= (m + n) k`: a weight gradient `dzᵀ x`, 64 x 64 over 1792 tokens) split
/// by rectangles would have every thread read all of one operand, most of it written moments
/// before by the other thread's half of the previous op; split along `K`, each thread reads its
/// own rows of both. Only when the threads' shares of the slices are close (the largest at most
/// 3/5 of them: 2 of 3 slices would leave the other thread idle a third of the time).
fn k_parts((m, n, k): (usize, usize, usize), slices: usize, threads: usize) -> Option<usize> {
    let parts = threads.min(slices);
    let small_c = m.saturating_mul(n).saturating_mul(8) <= m.saturating_add(n).saturating_mul(k);
    // (The later slices' sums, fewer than `slices` of `m x n` elements, must be countable.)
    let sums_fit = m.checked_mul(n).and_then(|c| c.checked_mul(slices)).is_some();
    (parts > 1 && small_c && sums_fit && slices.div_ceil(parts) * 5 <= slices * 3).then_some(parts)
}

/// Runs `p` with its slices of `K` (`uk.kc` long, [`slice_len`]) shared between `parts`
/// threads, in runs of consecutive slices: the first run into `C` as [`nest`] would, each later
/// slice into an `m x n` sum of its own, which are then added to `C` one by one in the order of
/// the slices, `c + s_q` as the microkernel adds them. So every element is the same
/// `((0 + s_0) + s_1) + ...` as on one thread, bit for bit.
fn split_k<T: GemmKernels + std::ops::Add<Output = T>>(uk: &Microkernel<T>, p: Product<'_, T>, parts: usize) {
    let (m, n, k) = (p.m(), p.n(), p.k());
    let slices = k.div_ceil(uk.kc);
    // Part `t` runs slices `first(t) .. first(t + 1)`.
    let first = |t: usize| slices * t / parts;
    let mut sums = vec![T::default(); (slices - first(1)) * m * n];
    let mut pieces: Vec<(usize, &mut [T])> = Vec::with_capacity(parts);
    let mut rest = &mut sums[..];
    pieces.push((0, &mut []));
    for t in 1..parts {
        let (mine, later) = rest.split_at_mut((first(t + 1) - first(t)) * m * n);
        pieces.push((t, mine));
        rest = later;
    }
    let steps = |q: usize| q * uk.kc..((q + 1) * uk.kc).min(k);
    crate::parallel::for_each(pieces.into_iter(), usize::MAX, |(t, own)| {
        if t == 0 {
            return nest(uk, p.k_range(0..steps(first(1) - 1).end));
        }
        for (q, sum) in (first(t)..).zip(own.chunks_exact_mut(m * n)) {
            let ks = steps(q);
            let mut out = MatMut::row_major(sum, m, n);
            nest(uk, Product::new(&mut out, p.a().block(0..m, ks.clone()), p.b().block(ks, 0..n), false));
        }
    });
    let c = p.c();
    for i in 0..m {
        for sum in sums.chunks_exact(m * n) {
            let row = &sum[i * n..][..n];
            // SAFETY: (i, j) with j < n is an element of the product's `C` (a checked `MatMut`:
            // inside its slice, distinct), and the threads that wrote `C` have finished; with a
            // unit column stride, row `i` is the `n` elements from (i, 0).
            unsafe {
                if c.col_stride() == 1 {
                    let out = std::slice::from_raw_parts_mut(c.at(i, 0), n);
                    out.iter_mut().zip(row).for_each(|(e, &s)| *e = *e + s);
                } else {
                    row.iter().enumerate().for_each(|(j, &s)| *c.at(i, j) = *c.at(i, j) + s);
                }
            }
        }
    }
}

/// The grid of `rows x cols` rectangles (`rows * cols <= threads`) that an `m x n` `C` is cut
/// into for `uk`'s tiles: among the factorisations of the thread count that give every
/// rectangle at least one micro-panel each way, the one whose rectangles pack the fewest
/// elements (per unit of `k`: each block of `A` once per `nc`-wide panel of `B`, plus `B`
/// once), ties going to more columns.
fn grid<T>(uk: &Microkernel<T>, m: usize, n: usize, threads: usize) -> (usize, usize) {
    let (m_units, n_units) = (m.div_ceil(uk.mr), n.div_ceil(uk.nr));
    let packed = |rows: usize, cols: usize| {
        let (m_t, n_t) = (m_units.div_ceil(rows) * uk.mr, n_units.div_ceil(cols) * uk.nr);
        m_t * n_t.div_ceil(uk.nc) + n_t
    };
    for threads in (2..=threads).rev() {
        let best = (1..=threads)
            .rev()
            .filter(|rows| threads % rows == 0 && *rows <= m_units && threads / rows <= n_units)
            .map(|rows| (rows, threads / rows))
            .min_by_key(|&(rows, cols)| (packed(rows, cols), rows));
        if let Some(best) = best {
            return best;
        }
    }
    (1, 1)
}

/// The widest `C` for which `A` is read where it is rather than packed (where the instruction
/// set has kernels for it, [`direct_a`]). Packing `A` copies each of its elements once per
/// panel of `B`, for `2 n` flops per element: against a narrow `C` that is a large share of the
/// product (a transformer's linear layers, `n = 64 .. 192`: 8% of its training step went to
/// packing `A`), against a wide one little, and the packed micro-panels are the friendlier
/// stream.
const DIRECT_A_MAX_N: usize = 256;

/// A direct kernel for full micro-panels of `B`, and its narrow variant where there is one
/// ([`Microkernel::narrow`]).
type DirectKernels<T> = (DirectAKernelFn<T>, Option<DirectAKernelFn<T>>);

/// How the macrokernel reads a block of `A`.
#[derive(Clone, Copy)]
enum ABlock<'a, T: 'static> {
    /// Packed into `mr`-row micro-panels.
    Packed(&'a [T]),
    /// Where it is: the first `full` micro-panels of rows with `kernel`, row `i` of the block
    /// starting at `ptr + i * row_stride` (`A`'s own strides; `stride` is the one the kernel
    /// takes), and the rows after them packed in `tail`.
    Direct { ptr: *const T, row_stride: usize, stride: usize, kernel: DirectKernels<T>, full: usize, tail: &'a [T] },
}

/// The kernel and stride that read `A` where it is for a product of `n` columns, when
/// `uk`'s instruction set has such kernels, `n <= DIRECT_A_MAX_N` and `A` is row-major or
/// transposed with a stride that does not map its rows (or its steps of `k`) to a few sets of
/// the L1 cache (a multiple of 2 KiB would) and whose byte count does not overflow.
fn direct_a<T>(uk: &Microkernel<T>, a: MatRef<'_, T>, n: usize) -> Option<(DirectKernels<T>, usize)> {
    let kernels = uk.direct_a.as_ref()?;
    let narrow = uk.narrow.as_ref().and_then(|narrow| narrow.direct_a.as_ref());
    // (A stride whose byte count overflows is some view's broadcast or wrap: packed.)
    let spread = |stride: usize| stride.checked_mul(std::mem::size_of::<T>()).is_some_and(|b| !b.is_multiple_of(2048));
    if n > DIRECT_A_MAX_N {
        None
    } else if a.col_stride() == 1 && spread(a.row_stride()) {
        Some(((kernels.rows, narrow.map(|k| k.rows)), a.row_stride()))
    } else if a.row_stride() == 1 && spread(a.col_stride()) {
        Some(((kernels.cols, narrow.map(|k| k.cols)), a.col_stride()))
    } else {
        None
    }
}

/// The loop nest for the product `p` on the calling thread, which owns `p`'s block of `C` for
/// the whole call (see [`run`]).
///
/// When all of `p`'s rows of `A` fit in one block of twice `mc` rows (half the L2: a batch of
/// 128 rows against a weight, as in an MLP's forward and input gradient), `A` is packed whole
/// and `B` one micro-panel at a time, just before the tiles that use it ([`nest_whole_a`]):
/// each packed micro-panel of `B` is then read from L2, where a packed `kc x nc` panel (4 MiB)
/// would go out to L3 and come back for each block of `A`. The microkernel calls, and so the
/// bits, are the same in both orders.
fn nest<T: GemmKernels>(uk: &Microkernel<T>, p: Product<'_, T>) {
    let (m, n, mr) = (p.m(), p.n(), uk.mr);
    if m.div_ceil(mr) * mr <= 2 * uk.mc && n > uk.nr {
        nest_whole_a(uk, p)
    } else {
        nest_blocked(uk, p)
    }
}

/// [`nest`] in the GotoBLAS order of the module's header, each block's tiles walked along the
/// rows of `C` when [`along_rows`] says so.
fn nest_blocked<T: GemmKernels>(uk: &Microkernel<T>, p: Product<'_, T>) {
    let (mc, kc_max) = (block_rows(uk, p.m()), uk.kc.min(p.k()));
    let rows_first = along_rows(uk, mc * kc_max, uk.nc.min(p.n()) * kc_max);
    nest_blocked_in(uk, p, rows_first)
}

/// Blocks of `m` rows as even as whole micro-panels allow, none taller than `mc`.
fn block_rows<T>(uk: &Microkernel<T>, m: usize) -> usize {
    m.div_ceil(m.div_ceil(uk.mc)).next_multiple_of(uk.mr).min(uk.mc)
}

/// [`nest_blocked`] with the order of the tiles given: along the rows of `C`, with the panel of
/// `B` narrowed to half the L2 (where its micro-panels are then read from), or down its columns.
fn nest_blocked_in<T: GemmKernels>(uk: &Microkernel<T>, p: Product<'_, T>, along_rows: bool) {
    let (m, n, k) = (p.m(), p.n(), p.k());
    let (a, b, c) = (p.a(), p.b(), p.c());
    let (mr, nr) = (uk.mr, uk.nr);
    let (mc, kc_max) = (block_rows(uk, m), uk.kc.min(k));
    let nc_step = if along_rows {
        (CacheSizes::get().l2 / 2 / (kc_max * std::mem::size_of::<T>()) / nr * nr).clamp(nr, uk.nc.max(nr))
    } else {
        uk.nc
    };
    // Whole micro-panels: nc need not be a multiple of nr (NEON's f32 2048 against 12).
    let nc_max = nc_step.min(n).next_multiple_of(nr);
    let direct = direct_a(uk, a, n);
    T::with_pack_buffer(1, kc_max * nc_max, |b_pack| {
        T::with_pack_buffer(0, mc.div_ceil(mr) * mr * kc_max, |a_pack| {
            for jc in (0..n).step_by(nc_step) {
                let nc = nc_step.min(n - jc);
                for pc in (0..k).step_by(uk.kc) {
                    let kc = uk.kc.min(k - pc);
                    let accumulate = p.accumulate() || pc > 0;
                    let b_buf = pack_b_panel(uk, b, (pc, kc), (jc, nc), b_pack);
                    for ic in (0..m).step_by(mc) {
                        let rows = mc.min(m - ic);
                        let a_block = a_block(uk, a, direct, (ic, rows), (pc, kc), a_pack);
                        let packed = Packed { a: a_block, rows, b: b_buf, cols: nc, kc };
                        let start = p.init().filter(|_| pc == 0).map(|init| init.block(ic..ic + rows, jc..jc + nc));
                        macrokernel(uk, packed, c.starting_at(ic, jc), accumulate, start, along_rows);
                    }
                }
            }
        })
    })
}

/// Whether [`nest_blocked`] should walk each block's tiles along the rows of `C` (all the
/// micro-panels of `B` against one of `A`, which stays in L1) rather than down its columns (the
/// GotoBLAS order: one micro-panel of `B` held in L1 against every micro-panel of the block of
/// `A`, read from L2), for a block of `A` and a panel of `B` of `a_block` and `b_panel`
/// elements. The GotoBLAS order needs the block of `A` to stay in L2 while the panel of `B`
/// streams past it; when the two together take more than half the L2 they do not: on an
/// Intel Xeon's AVX2 path (2 MiB L2, a 256-deep panel of `B` 1 KiB per column), SGEMM at
/// 1 thread read 85 GFLOP/s at n = 2048 against 105 along rows, 78 against 98 at n = 2000,
/// 98 against 103 at n = 1536, the same at n = 1024 (`docs/benchmarks.md`, session 20). Along
/// rows the micro-panels of `B` come from L2 instead, so the panel of `B` is narrowed to half
/// the L2. Only for kernels whose micro-panel of `B` is meant to stay in L1 (in half of it:
/// AVX2's 16 KiB); kernels that stream their panels from L2 anyway (AVX-512's, `kc = 1024`)
/// keep the GotoBLAS order, which measured no worse there. The microkernel calls, and so the
/// bits, are the same in either order.
fn along_rows<T: GemmKernels>(uk: &Microkernel<T>, a_block: usize, b_panel: usize) -> bool {
    let size = std::mem::size_of::<T>();
    let caches = CacheSizes::get();
    let b_in_l1 = uk.kc.saturating_mul(uk.nr).saturating_mul(size) <= caches.l1d / 2;
    b_in_l1 && a_block.saturating_add(b_panel).saturating_mul(size) > caches.l2 / 2
}

/// [`nest`] for a product whose rows of `A` all fit in one block: per `kc` slice, `A` packed
/// whole (or read where it is), then each micro-panel of `B` packed and swept against it.
fn nest_whole_a<T: GemmKernels>(uk: &Microkernel<T>, p: Product<'_, T>) {
    let (m, n, k) = (p.m(), p.n(), p.k());
    let (a, b, c) = (p.a(), p.b(), p.c());
    let (mr, nr) = (uk.mr, uk.nr);
    let kc_max = uk.kc.min(k);
    let direct = direct_a(uk, a, n);
    T::with_pack_buffer(1, kc_max * nr, |b_pack| {
        T::with_pack_buffer(0, m.div_ceil(mr) * mr * kc_max, |a_pack| {
            for pc in (0..k).step_by(uk.kc) {
                let kc = uk.kc.min(k - pc);
                let accumulate = p.accumulate() || pc > 0;
                let a_block = a_block(uk, a, direct, (0, m), (pc, kc), a_pack);
                for jc in (0..n).step_by(nr) {
                    let cols = nr.min(n - jc);
                    let b_buf = pack_b_panel(uk, b, (pc, kc), (jc, cols), b_pack);
                    let packed = Packed { a: a_block, rows: m, b: b_buf, cols, kc };
                    let start = p.init().filter(|_| pc == 0).map(|init| init.block(0..m, jc..jc + cols));
                    macrokernel(uk, packed, c.starting_at(0, jc), accumulate, start, false);
                }
            }
        })
    })
}

/// Packs `B(pc .. pc + kc, jc .. jc + nc)` (as its transpose, in `nr`-column micro-panels)
/// into the front of `b_pack`, which holds at least `nc.div_ceil(nr) * nr * kc` elements, and
/// returns the packed part.
fn pack_b_panel<'a, T: GemmKernels>(
    uk: &Microkernel<T>,
    b: MatRef<'_, T>,
    (pc, kc): (usize, usize),
    (jc, nc): (usize, usize),
    b_pack: &'a mut [T],
) -> &'a [T] {
    let b_buf = &mut b_pack[..nc.div_ceil(uk.nr) * uk.nr * kc];
    // SAFETY: B(pc + q, jc + j) for q < kc, j < nc is inside `b`'s slice because `b` is a
    // checked k x n view and the caller's ranges lie inside it; `b_buf` holds the micro-panels.
    unsafe {
        let src = b.as_ptr().add(pc * b.row_stride() + jc * b.col_stride());
        (uk.pack_b)(src, nc, kc, b.col_stride(), b.row_stride(), b_buf);
    }
    b_buf
}

/// The block of `A` of rows `ic .. ic + rows` and columns `pc .. pc + kc`, as the macrokernel
/// reads it: packed into `a_pack` (at least `rows.div_ceil(mr) * mr * kc` elements), or, with
/// `direct`, its full micro-panels where they are and only the rows after them packed.
fn a_block<'a, T: GemmKernels>(
    uk: &Microkernel<T>,
    a: MatRef<'a, T>,
    direct: Option<(DirectKernels<T>, usize)>,
    (ic, rows): (usize, usize),
    (pc, kc): (usize, usize),
    a_pack: &'a mut [T],
) -> ABlock<'a, T> {
    let mr = uk.mr;
    // Rows ic .. ic + rows and columns pc .. pc + kc of `a` are inside its slice because `a`
    // is a checked m x k view and the caller's ranges lie inside it.
    let src = a.as_ptr().wrapping_add(ic * a.row_stride() + pc * a.col_stride());
    // The rows to pack: all of them, or those after the full micro-panels read where they are.
    let full = if direct.is_some() { rows / mr } else { 0 };
    let packed = rows - full * mr;
    let a_buf = &mut a_pack[..packed.div_ceil(mr) * mr * kc];
    if packed > 0 {
        // SAFETY: those rows (from `ic + full * mr`) and columns are inside `a`'s slice
        // (above); `a_buf` holds their micro-panels.
        unsafe {
            let src = src.add(full * mr * a.row_stride());
            (uk.pack_a)(src, packed, kc, a.row_stride(), a.col_stride(), a_buf);
        }
    }
    match direct {
        Some((kernel, stride)) => {
            ABlock::Direct { ptr: src, row_stride: a.row_stride(), stride, kernel, full, tail: a_buf }
        }
        None => ABlock::Packed(a_buf),
    }
}

/// One block of `A` (`rows x kc`, packed in `mr`-row micro-panels or read where it is) and one
/// packed panel of `B` (`kc x cols`, in `nr`-column micro-panels), zero-padded to whole
/// micro-panels.
struct Packed<'a, T: 'static> {
    a: ABlock<'a, T>,
    rows: usize,
    b: &'a [T],
    cols: usize,
    kc: usize,
}

/// Sweeps the `mr x nr` tiles of the block of `A` against the micro-panels of the packed
/// panel of `B`, writing the `rows x cols` block of `C` whose element `(0, 0)` is `c`'s. Full
/// tiles of a row-major `C`, and short tiles whose rows an edge kernel computes exactly, go
/// straight to the kernel; other edge tiles and transposed `C` go through a scratch tile, so a
/// kernel always writes whole row-major rows of `nr`. With a `start` (the block's part of the
/// vector `C` starts as, given only for the first slice of `K`), each tile is written with it
/// just before the kernel adds into it: the same bits as a `C` filled beforehand, without that
/// pass.
fn macrokernel<T: Copy + Default>(
    uk: &Microkernel<T>,
    packed: Packed<'_, T>,
    c: Out<'_, T>,
    accumulate: bool,
    start: Option<Init<'_, T>>,
    along_rows: bool,
) {
    // A tile with a start is written with it just before the microkernel adds into it.
    let accumulate = accumulate || start.is_some();
    let Packed { a, rows, b: b_buf, cols: nc, kc } = packed;
    let (mr, nr) = (uk.mr, uk.nr);
    let (c_rs, c_cs) = (c.row_stride(), c.col_stride());
    // The scratch tile for ragged edges: only its first mr * nr elements are used, and only those
    // are zeroed (zeroing all MAX_TILE of them cost a 4 KiB memset per call).
    let mut scratch_buf = [MaybeUninit::<T>::uninit(); MAX_TILE];
    for e in &mut scratch_buf[..mr * nr] {
        e.write(T::default());
    }
    // SAFETY: the first mr * nr <= MAX_TILE elements were initialised just above, and
    // `MaybeUninit<T>` has `T`'s layout.
    let scratch: &mut [T] = unsafe { std::slice::from_raw_parts_mut(scratch_buf.as_mut_ptr().cast::<T>(), mr * nr) };
    // Tile `t` of the block: down the columns of tiles (panel `jp` of `B` against every panel
    // of `A`), or along the rows of tiles ([`along_rows`]).
    let (b_panels, a_panels) = (nc.div_ceil(nr), rows.div_ceil(mr));
    for t in 0..b_panels * a_panels {
        let (jp, ip) = if along_rows { (t % b_panels, t / b_panels) } else { (t / a_panels, t % a_panels) };
        let cols = nr.min(nc - jp * nr);
        let b_panel = &b_buf[jp * nr * kc..(jp + 1) * nr * kc];
        // A panel of B at most as wide as the narrow kernels runs them: fewer columns of zeros.
        let narrow = uk.narrow.as_ref().filter(|narrow| cols <= narrow.nr);
        let (width, full_run, edges) = match narrow {
            Some(narrow) => (narrow.nr, narrow.run, narrow.edges),
            None => (nr, uk.run, uk.edges),
        };
        let tile_rows = mr.min(rows - ip * mr);
        // The micro-panel of A: where it is (a full one of a direct block), or packed. A
        // direct block's narrow panels need a narrow direct kernel (all or none exist).
        let (direct, a_panel) = match a {
            ABlock::Direct { ptr, row_stride, stride, kernel: (kernel, narrow_kernel), full, .. } if ip < full => {
                let kernel = if narrow.is_some() { narrow_kernel.unwrap_or(kernel) } else { kernel };
                (Some((kernel, stride)), ptr.wrapping_add(ip * mr * row_stride))
            }
            ABlock::Direct { full, tail, .. } => (None, tail[(ip - full) * mr * kc..][..mr * kc].as_ptr()),
            ABlock::Packed(buf) => (None, buf[ip * mr * kc..][..mr * kc].as_ptr()),
        };
        // A short last panel runs the smallest edge kernel that covers its rows, which
        // writes `computed` rows.
        let (computed, run) = match edges.iter().find(|&&(r, _)| tile_rows < mr && r >= tile_rows) {
            Some(&(r, edge)) => (r, edge),
            None => (mr, full_run),
        };
        // SAFETY: the micro-panel of `A` is a packed one of kc * mr elements, or (direct)
        // `mr` full rows of the block, each readable over its kc columns (`nest`: `A` is a
        // checked view) with the strides the direct kernel was chosen for; the packed
        // micro-panel of `B` holds kc * nr elements. `C` is `c_out`, `mr` (`computed`)
        // writable rows of `width` at stride `ldc` that this task alone owns (below). Every
        // kernel matches this CPU (chosen by `select_*`).
        let call = |c_out: *mut T, ldc: usize| unsafe {
            match direct {
                Some((kernel, stride)) => kernel(kc, a_panel, stride, b_panel.as_ptr(), c_out, ldc, accumulate),
                None => run(kc, a_panel, b_panel.as_ptr(), c_out, ldc, accumulate),
            }
        };
        // SAFETY: the tile's elements (i, j), i < tile_rows, j < cols, are elements of the
        // product's C (a checked `MatMut`: inside its slice and distinct), this task alone
        // owns them. The kernel writes exactly `computed` rows of `nr` elements (`mr` for a
        // direct one, which only takes full panels), so it writes C directly only when those
        // are the tile's. The scratch tile has mr * nr <= MAX_TILE elements (a narrow kernel
        // writes the first `width` of each row of `nr`). A start is the tile's block of the
        // block's vector (`nest`: the vector matches the product's `C`).
        unsafe {
            let tile = c.at(ip * mr, jp * nr);
            let start = start.map(|init| init.block(ip * mr..ip * mr + tile_rows, jp * nr..jp * nr + cols));
            if computed == tile_rows && cols == width && c_cs == 1 && c_rs >= width {
                if let Some(init) = start {
                    init.write(tile_rows, cols, tile, c_rs, 1);
                }
                call(tile, c_rs);
            } else {
                // Row by row: a row-major `C`'s rows are runs (copied as such), a transposed
                // one's element by element; a start is written into the scratch tile.
                match start {
                    Some(init) => init.write(tile_rows, cols, scratch.as_mut_ptr(), nr, 1),
                    None if accumulate => {
                        for i in 0..tile_rows {
                            let (row, s) = (tile.add(i * c_rs), &mut scratch[i * nr..][..cols]);
                            if c_cs == 1 {
                                copy_run(std::slice::from_raw_parts(row, cols), s.as_mut_ptr());
                            } else {
                                s.iter_mut().enumerate().for_each(|(j, e)| *e = *row.add(j * c_cs));
                            }
                        }
                    }
                    None => {}
                }
                call(scratch.as_mut_ptr(), nr);
                for i in 0..tile_rows {
                    let (row, s) = (tile.add(i * c_rs), &scratch[i * nr..][..cols]);
                    if c_cs == 1 {
                        copy_run(s, row);
                    } else {
                        s.iter().enumerate().for_each(|(j, &e)| *row.add(j * c_cs) = e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::MatMut;

    /// Values in `[-0.5, 0.5)` from a linear congruential generator started at `state`.
    fn values(mut state: u32) -> impl FnMut() -> f32 {
        move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1 << 24) as f32 - 0.5
        }
    }

    /// `C (+)= A · B` run by `got` and by `want` from the same random `C` (row-major and
    /// transposed, accumulating or not), with `B` a random row-major `k x n`: the same bits.
    fn assert_same_bits(
        got: &dyn Fn(Product<'_, f32>),
        want: &dyn Fn(Product<'_, f32>),
        a: MatRef<'_, f32>,
        n: usize,
        next: &mut dyn FnMut() -> f32,
    ) {
        let (m, k) = (a.rows(), a.cols());
        let b_data: Vec<f32> = (0..k * n).map(|_| next()).collect();
        let b = MatRef::row_major(&b_data, k, n);
        let start: Vec<f32> = (0..m * n).map(|_| next()).collect();
        for accumulate in [false, true] {
            // C row-major, and transposed (through the scratch tile).
            for c_strides in [[n, 1], [1, m]] {
                let run_with = |order: &dyn Fn(Product<'_, f32>)| {
                    let mut c_data = start.clone();
                    order(Product::new(&mut MatMut::new(&mut c_data, 0, [m, n], c_strides), a, b, accumulate));
                    c_data
                };
                let (x, y) = (run_with(got), run_with(want));
                let same = x.iter().zip(&y).all(|(x, y)| x.to_bits() == y.to_bits());
                let a_strides = [a.row_stride(), a.col_stride()];
                assert!(
                    same,
                    "{m} x {n} x {k}, A strides {a_strides:?}, C strides {c_strides:?}, accumulate {accumulate}"
                );
            }
        }
    }

    /// The `m x k` view of fresh random values with `strides`, from element `offset`.
    fn random_a(next: &mut dyn FnMut() -> f32, (m, k): (usize, usize), strides: [usize; 2], offset: usize) -> Vec<f32> {
        let len = offset + (m - 1) * strides[0] + (k - 1) * strides[1] + 1;
        (0..len).map(|_| next()).collect()
    }

    #[test]
    fn reading_a_where_it_is_gives_the_packed_paths_bits() {
        let uk = <f32 as GemmKernels>::microkernel(crate::kernels::active_isa());
        if uk.direct_a.is_none() {
            // Only the AVX-512 f32 kernel has them: on a CPU that runs it, this test must run.
            #[cfg(target_arch = "x86_64")]
            assert!(uk.isa() != crate::kernels::Isa::Avx512);
            return;
        }
        let packed_only = Microkernel { direct_a: None, ..uk };
        let mut next = values(0x2545_f491);
        // Full and ragged panels of M and N, K across two kc slices, a block of M taller than mc.
        for (m, n, k) in [(14, 32, 1), (30, 64, 70), (128, 192, 64), (45, 100, 1100), (300, 33, 20), (1, 17, 5)] {
            // A row-major (rows padded by 3), transposed (columns padded by 5), and row-major
            // with a stride of 2 KiB (left to the packed path).
            for (a_strides, direct) in [([k + 3, 1], true), ([1, m + 5], true), ([512, 1], false)] {
                if a_strides[0] == 512 && k > 512 {
                    continue;
                }
                let a_data = random_a(&mut next, (m, k), a_strides, 2);
                let a = MatRef::new(&a_data, 2, [m, k], a_strides);
                assert_eq!(direct_a(&uk, a, n).is_some(), direct, "{m} x {n} x {k}, A strides {a_strides:?}");
                assert_same_bits(&|p| run(&uk, p), &|p| run(&packed_only, p), a, n, &mut next);
            }
        }
    }

    #[test]
    fn narrow_last_panels_give_the_full_kernels_bits() {
        let uk = <f32 as GemmKernels>::microkernel(crate::kernels::active_isa());
        if uk.narrow.is_none() {
            // Only the AVX-512 f32 kernel has them: on a CPU that runs it, this test must run.
            #[cfg(target_arch = "x86_64")]
            assert!(uk.isa() != crate::kernels::Isa::Avx512);
            return;
        }
        let full_only = Microkernel { narrow: None, ..uk };
        let mut next = values(0x51ed_270b);
        // Last panels of 1, 4, 16 and 17 columns (the last on the full kernels); rows that fill
        // tiles and that leave 2, 5 or 9 (the edge kernels); K across two kc slices.
        for (m, n, k) in [(28, 36, 20), (30, 196, 144), (33, 144, 70), (19, 16, 9), (128, 49, 1100), (5, 81, 3)] {
            // A row-major and transposed (read where it is for n <= 256), and with a 2 KiB
            // row stride (packed).
            for a_strides in [[k + 3, 1], [1, m + 5], [512, 1]] {
                if a_strides[0] == 512 && k > 512 {
                    continue;
                }
                let a_data = random_a(&mut next, (m, k), a_strides, 0);
                let a = MatRef::new(&a_data, 0, [m, k], a_strides);
                assert_same_bits(&|p| run(&uk, p), &|p| run(&full_only, p), a, n, &mut next);
            }
        }
    }

    #[test]
    fn packing_a_whole_and_b_per_micro_panel_gives_the_blocked_orders_bits() {
        let uk = <f32 as GemmKernels>::microkernel(crate::kernels::active_isa());
        // Several kc slices (kc 16), ragged panels both ways, A row-major (direct where the
        // instruction set reads it in place) and transposed, C row-major and transposed.
        // Blocks of one micro-panel of rows and panels of B two micro-panels wide.
        let uk = Microkernel { kc: 16, mc: uk.mr, nc: 2 * uk.nr, ..uk };
        let mut next = values(0x9e37_79b9);
        for (m, n, k) in [(30, 100, 70), (5, 40, 33), (45, 64, 16), (128, 300, 50)] {
            for a_strides in [[k, 1], [1, m]] {
                let a_data = random_a(&mut next, (m, k), a_strides, 0);
                let a = MatRef::new(&a_data, 0, [m, k], a_strides);
                assert_same_bits(&|p| nest_whole_a(&uk, p), &|p| nest_blocked(&uk, p), a, n, &mut next);
            }
        }
    }

    #[test]
    fn tiles_along_the_rows_of_c_give_the_column_orders_bits() {
        let mut next = values(0x3c6e_f372);
        // Every path this CPU has, blocks of two micro-panels of A, panels of B three wide,
        // several kc slices, ragged edges both ways, C's rows 1024 elements apart.
        let shapes = [(70, 100, 40), (29, 64, 16), (45, 33, 70)];
        for (isa, (m, n, k)) in crate::kernels::available_isas().into_iter().flat_map(|isa| shapes.map(|s| (isa, s))) {
            let uk = <f32 as GemmKernels>::microkernel(isa);
            let uk = Microkernel { kc: 16, mc: 2 * uk.mr, nc: 3 * uk.nr, ..uk };
            let a_data: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b_data: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let start: Vec<f32> = (0..m * 1024).map(|_| next()).collect();
            for accumulate in [false, true] {
                let run_with = |order: &dyn Fn(Product<'_, f32>)| {
                    let mut c = start.clone();
                    let (a, b) = (MatRef::row_major(&a_data, m, k), MatRef::row_major(&b_data, k, n));
                    order(Product::new(&mut MatMut::new(&mut c, 0, [m, n], [1024, 1]), a, b, accumulate));
                    c
                };
                let rows_first = run_with(&|p| nest_blocked_in(&uk, p, true));
                let columns_first = run_with(&|p| nest_whole_a(&uk, p));
                let same = rows_first.iter().zip(&columns_first).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{isa:?}, {m} x {n} x {k}, accumulate {accumulate}");
            }
        }
    }

    #[test]
    fn only_kernels_that_keep_b_in_l1_walk_along_rows_and_only_when_a_and_b_overflow_half_the_l2() {
        let half_l2 = CacheSizes::get().l2 / 2 / std::mem::size_of::<f32>();
        let uk = Microkernel { kc: 16, ..<f32 as GemmKernels>::microkernel(crate::kernels::active_isa()) };
        assert!(!along_rows(&uk, half_l2 / 2, half_l2 / 2));
        assert!(along_rows(&uk, half_l2 / 2, half_l2 / 2 + 1));
        // A micro-panel of B larger than any L1 (1024 x 32 f32: 128 KiB): never.
        let streamed = Microkernel { kc: 1024, nr: 32, ..uk };
        assert!(!along_rows(&streamed, half_l2, half_l2));
    }

    #[test]
    fn sharing_the_slices_of_k_between_threads_gives_one_threads_bits() {
        let pool = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let (one, two) = (pool(1), pool(2));
        for isa in crate::kernels::available_isas() {
            let uk = <f32 as GemmKernels>::microkernel(isa);
            let mut next = values(0x7f4a_7c15);
            // C small against K (split along K when the two shares are close: 2, 5 and 7
            // slices; 3 slices are not), and a C too large for it. A row-major and transposed.
            let kc = uk.kc;
            for (m, n, k, split) in [
                (64, 64, 1792, true),
                (50, 30, 4 * kc + 1, true),
                (14, 200, 3 * kc, false),
                (64, 64, 2 * kc - 32, true),
                (600, 600, 2 * kc, false),
            ] {
                let slices = k.div_ceil(slice_len(kc, k));
                assert_eq!(k_parts((m, n, k), slices, 2).is_some(), split, "{isa:?} {m} x {n} x {k}");
                for a_strides in [[k + 3, 1], [1, m + 5]] {
                    let a_data = random_a(&mut next, (m, k), a_strides, 1);
                    let a = MatRef::new(&a_data, 1, [m, k], a_strides);
                    let on = |pool: &rayon::ThreadPool, p: Product<'_, f32>| pool.install(|| run(&uk, p));
                    assert_same_bits(&|p| on(&two, p), &|p| on(&one, p), a, n, &mut next);
                }
            }
        }
    }

    #[test]
    fn grid_splits_the_side_that_packs_less_and_never_makes_empty_rectangles() {
        fn kernel(mr: usize, nr: usize, nc: usize) -> Microkernel<f32> {
            Microkernel { mr, nr, nc, mc: mr, ..super::super::microkernel::select_f32(crate::kernels::Isa::Scalar) }
        }
        let uk = kernel(14, 32, 1024);
        assert_eq!(grid(&uk, 128, 1024, 1), (1, 1));
        assert_eq!(grid(&uk, 128, 1024, 2), (1, 2)); // the MLP's forward: split N
        assert_eq!(grid(&uk, 1024, 128, 2), (2, 1));
        assert_eq!(grid(&uk, 1024, 1024, 2), (2, 1)); // 518 rows + 1024 columns < 1036 + 512
        assert_eq!(grid(&uk, 1024, 1080, 2), (1, 2)); // 1036 + 544 < 2 · 518 + 1088 (B wider than nc)
        assert_eq!(grid(&uk, 2048, 2048, 2), (1, 2)); // A packed once per thread, not twice
        assert_eq!(grid(&uk, 2048, 2048, 4), (2, 2));
        assert_eq!(grid(&uk, 10, 1024, 4), (1, 4));
        assert_eq!(grid(&uk, 1, 1, 8), (1, 1));
        assert_eq!(grid(&uk, 40, 1, 8), (3, 1)); // 3 panels of 14 rows: 3 rectangles
        let uk = kernel(4, 8, 64);
        for (m, n, t) in [(5, 7, 6), (100, 3, 8), (2, 2, 3), (1, 9, 16), (17, 33, 7)] {
            let (r, c) = grid(&uk, m, n, t);
            assert!(r * c <= t && r <= m.div_ceil(4) && c <= n.div_ceil(8) && r * c >= 1, "{m} {n} {t}: {r} x {c}");
        }
    }
}
