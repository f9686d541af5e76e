//! General matrix multiply, `C = A · B` or `C += A · B`, over strided operands.
//!
//! The GotoBLAS / BLIS design, in three layers:
//!
//! - `blocking.rs`: the loop nest. `B` is cut into `kc x nc` panels (kept in L3), `A` into
//!   `mc x kc` blocks (kept in L2); both are packed, then a macrokernel sweeps `mr x nr` tiles of
//!   `C`, each one a call of the microkernel over a `kc`-long slice of `K`.
//! - `packing.rs`: copies a block of `A` (any strides: row-major, transposed, narrowed, expanded)
//!   into `mr`-row micro-panels and a panel of `B` into `nr`-column micro-panels, in the order
//!   the microkernel reads them, zero-padding the ragged edges so the microkernel never branches.
//!   Transposed operands therefore cost nothing extra: packing reads them where they are.
//! - `microkernel/`: one `mr x nr` register-blocked kernel per instruction set (scalar, AVX2+FMA,
//!   AVX-512, NEON), each file documenting its tile and its `kc`; `caches.rs` derives `mc` and
//!   `nc` from the caches the CPU reports.
//!
//! Thin shapes, where the tiles would be mostly padding and packing would cost as much as the
//! product, take unpacked paths where the instruction set has them (f32 on AVX-512 all four,
//! on AVX2 the first two and the last): `dot.rs` and `dot_avx2.rs` (both operands contiguous
//! along `K`, at most 16 columns or rows of `C`), `short_k.rs` and `short_k_avx2.rs` (`K` at
//! most 16), `few_rows.rs` (at most 12 rows of `C`) and `small.rs` (every side at most 64:
//! attention's products; on AVX2 the short-`K` loop). [`gemm_with`] picks one from the shape
//! and strides alone.
//!
//! Large problems run on the current rayon pool: `C` is cut into one rectangle per thread
//! (`blocking.rs`), or the unpacked paths split fixed blocks of rows or columns. Every element of
//! `C` is computed by exactly one thread, summing over `K` in the same order whatever the split,
//! so the result is bit-identical for any thread count. (Different instruction sets may round
//! differently: FMA paths fuse the multiply and the add; the dot-product path sums in 16 partial
//! sums.)
//!
//! [`peak`] holds a small FMA-throughput loop that measures the core's floating-point peak, the
//! yardstick the GEMM benchmark is read against.

use crate::dtype::Float;
use crate::kernels::Isa;

mod blocking;
mod caches;
#[cfg(target_arch = "x86_64")]
mod dot;
#[cfg(target_arch = "x86_64")]
mod dot_avx2;
#[cfg(target_arch = "x86_64")]
mod few_rows;
mod mat;
mod microkernel;
mod packing;
// The FMA peak is measured by the benchmarks only.
#[cfg(any(test, feature = "internals"))]
pub mod peak;
#[cfg(target_arch = "x86_64")]
mod short_k;
#[cfg(target_arch = "x86_64")]
mod short_k_avx2;
#[cfg(target_arch = "x86_64")]
mod small;

pub use caches::CacheSizes;
use mat::Product;
pub use mat::{Init, MatMut, MatRef};

/// The longest thin side of `C` that the dot-product path takes.
const MAX_THIN: usize = 16;

/// The shortest `K` for the dot-product path (one full vector of f32).
const DOT_MIN_K: usize = 16;

/// The operands of a [`DotFn`]: `A(i, p)` at `a + i * lda + p` and `Bᵀ(j, p)` at
/// `b + j * ldb + p` (both contiguous along `K`), `C(i, j)` at `c + i * c_rs + j * c_cs`, and
/// whether `C` accumulates.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the path that reads them is x86_64's
struct Dot<T> {
    a: *const T,
    lda: usize,
    b: *const T,
    ldb: usize,
    c: *mut T,
    c_rs: usize,
    c_cs: usize,
    accumulate: bool,
}

impl<T> Dot<T> {
    /// The same operands starting at row `i` of `A` and `C` and at step `p` of `K` (the
    /// addresses are only computed here; using them is the caller's contract).
    fn at(self, i: usize, p: usize) -> Dot<T> {
        Dot {
            a: self.a.wrapping_add(i * self.lda + p),
            b: self.b.wrapping_add(p),
            c: self.c.wrapping_add(i * self.c_rs),
            ..self
        }
    }
}

/// `unsafe fn(m, n, k, ops)`: for `i < m`, `j < n`, `C(i, j) (+)= Σ_{p < k} A(i, p) · Bᵀ(j, p)`
/// with the operands of [`Dot`], no packing.
///
/// Safety contract: `1 <= n <= MAX_THIN`; every element of `A` and `Bᵀ` named above is
/// readable, every `C(i, j)` is writable and no two share an address, and the CPU runs the
/// function's instruction set.
type DotFn<T> = unsafe fn(usize, usize, usize, Dot<T>);

/// The longest `K` that the short-`K` path takes.
const MAX_SHORT_K: usize = 16;

/// The most rows of `C` that the few-rows path takes.
const MAX_FEW_ROWS: usize = 12;

/// The largest `M`, `N` and `K` of the small-product path: products that fit in the L1 cache
/// many times over (the attention of a transformer: `28 x 28 x 16` per head), where packing
/// both operands costs as much as the product.
const MAX_SMALL: usize = 64;

/// The depth `K` of a direct path's loop: fixed at compile time ([`Fixed`], so that the loop
/// over `K` unrolls) or read at run time ([`Runtime`]).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the paths that use it are x86_64's
trait Depth: Copy {
    /// Whether a block of rows copies its elements of `A` before the sweep (worth it when the
    /// rows of `C` are long: the short-`K` path).
    const COPY_A: bool;
    /// The depth.
    fn get(self) -> usize;
}

/// A depth known at compile time.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the paths that use it are x86_64's
struct Fixed<const K: usize>;

impl<const K: usize> Depth for Fixed<K> {
    const COPY_A: bool = true;
    #[inline(always)]
    fn get(self) -> usize {
        K
    }
}

/// A depth read at run time.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the paths that use it are x86_64's
struct Runtime(usize);

impl Depth for Runtime {
    const COPY_A: bool = false;
    #[inline(always)]
    fn get(self) -> usize {
        self.0
    }
}

/// The operands of a [`DirectFn`]: `A(i, p)` at `a + i * a_rs + p * a_cs`, `B(p, j)` at
/// `b + p * ldb + j * b_cs` and `C(i, j)` at `c + i * ldc + j` (row-major), read and written
/// where they are, and whether `C` accumulates.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the paths that read them are x86_64's
struct Direct<T> {
    a: *const T,
    a_rs: usize,
    a_cs: usize,
    b: *const T,
    ldb: usize,
    /// 1 (`B`'s rows contiguous), except on the small-product path, which also takes `ldb == 1`.
    b_cs: usize,
    c: *mut T,
    ldc: usize,
    accumulate: bool,
}

impl<T> Direct<T> {
    /// The same operands starting at row `i` of `A` and `C` and column `j` of `B` and `C` (the
    /// addresses are only computed here; using them is the caller's contract).
    fn at(self, i: usize, j: usize) -> Direct<T> {
        Direct {
            a: self.a.wrapping_add(i * self.a_rs),
            b: self.b.wrapping_add(j * self.b_cs),
            c: self.c.wrapping_add(i * self.ldc + j),
            ..self
        }
    }
}

/// `unsafe fn(m, n, k, ops)`: for `i < m`, `j < n`, `C(i, j) (+)= Σ_{p < k} A(i, p) · B(p, j)`
/// with the operands of [`Direct`], no packing.
///
/// Safety contract: `1 <= k <= MAX_SHORT_K` (the short-`K` path), `1 <= m <= MAX_FEW_ROWS`
/// (the few-rows path) or `1 <= m, n, k <= MAX_SMALL` (the small-product path); `b_cs == 1`,
/// or on the small-product path `ldb == 1`; every element of `A` and `B` named above is readable, every element of
/// `C` is writable and no two share an address (`ldc >= n` or `m == 1`), and the CPU runs the
/// function's instruction set.
type DirectFn<T> = unsafe fn(usize, usize, usize, Direct<T>);

/// One instruction set's GEMM microkernel with the blocking sizes tuned for it.
///
/// The packed operands are `mr x kc` micro-panels of `A` and `kc x nr` micro-panels of `B`; a
/// block of `A` has at most `mc` rows, a panel of `B` at most `nc` columns. [`GemmKernels::microkernel`]
/// returns one; [`Microkernel::isa`] tells which path it really is (scalar when the asked-for
/// path is not supported on this CPU).
#[derive(Clone, Copy, Debug)]
pub struct Microkernel<T: 'static> {
    isa: Isa,
    mr: usize,
    nr: usize,
    kc: usize,
    mc: usize,
    nc: usize,
    run: microkernel::KernelFn<T>,
    /// Edge kernels `(rows, kernel)` by increasing `rows < mr`: each computes only the first
    /// `rows` rows of a tile from the same packed micro-panel of `A`, for the last panel of a
    /// block of `M` when it is that short (`M = 128` on 14-row tiles leaves 2 rows).
    edges: &'static [(usize, microkernel::KernelFn<T>)],
    /// Full-tile kernels that read `A` where it is, for products where packing `A` would cost
    /// a large share of the product (`blocking.rs`), where this instruction set has them.
    direct_a: Option<DirectA<T>>,
    /// Kernels for a last micro-panel of `B` at most half as wide as `nr` (`C` 196 columns wide
    /// on 32-column tiles leaves 4), computing only the first columns of each step, where this
    /// instruction set has them.
    narrow: Option<Narrow<T>>,
    /// The unpacked dot-product path for thin products of operands contiguous along `K`
    /// (`dot.rs`), where this instruction set has one.
    dot: Option<DotFn<T>>,
    /// The short-`K` path into a row-major `C` (`short_k.rs`), where this instruction set has
    /// one.
    short_k: Option<DirectFn<T>>,
    /// The few-rows path into a row-major `C` (`few_rows.rs`), where this instruction set has
    /// one.
    few_rows: Option<DirectFn<T>>,
    /// The small-product path into a row-major `C` (the short-`K` loop with `K` up to
    /// [`MAX_SMALL`]), where this instruction set has one.
    small: Option<DirectFn<T>>,
    /// Packs `A` into `mr`-wide micro-panels.
    pack_a: packing::PackFn<T>,
    /// Packs `B` (as its transpose) into `nr`-wide micro-panels.
    pack_b: packing::PackFn<T>,
}

/// The two kernels of [`Microkernel::direct_a`]: for a row-major `A` (`A(i, p)` at
/// `a + i * stride + p`) and for a transposed one (`a + i + p * stride`).
#[derive(Clone, Copy, Debug)]
struct DirectA<T: 'static> {
    rows: microkernel::DirectAKernelFn<T>,
    cols: microkernel::DirectAKernelFn<T>,
}

/// The kernels of [`Microkernel::narrow`]: the same tile rows, `nr` columns of a packed
/// micro-panel `Microkernel::nr` wide (each step of k still that many elements apart), the
/// rest as in the full kernels, so each column computed gets the full kernels' bits.
#[derive(Clone, Copy, Debug)]
struct Narrow<T: 'static> {
    /// Columns computed.
    nr: usize,
    /// The full-height kernel, and the edge kernels by rows (as `Microkernel::edges`).
    run: microkernel::KernelFn<T>,
    edges: &'static [(usize, microkernel::KernelFn<T>)],
    /// Reading `A` where it is (as `Microkernel::direct_a`).
    direct_a: Option<DirectA<T>>,
}

impl<T: 'static> Microkernel<T> {
    /// This kernel with `mc` and `nc` derived from `caches` (`caches.rs`); the tile and `kc`
    /// (which fixes the order of each element's sum) stay its instruction set's.
    pub fn with_caches(self, caches: &CacheSizes) -> Microkernel<T> {
        let size = std::mem::size_of::<T>();
        let (mc, nc) = caches::derive_mc_nc(caches, (self.mr, self.nr, self.kc), size, KEPT_PACK_ELEMENTS);
        Microkernel { mc, nc, ..self }
    }

    /// The path this kernel runs on.
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// Rows of `C` per microkernel call (the register tile's height).
    pub fn mr(&self) -> usize {
        self.mr
    }
    /// Columns of `C` per microkernel call (the register tile's width).
    pub fn nr(&self) -> usize {
        self.nr
    }
    /// Depth of one packed slice of `K` (each slice is one pass over `C`).
    pub fn kc(&self) -> usize {
        self.kc
    }
    /// Rows of one packed block of `A` (the `mc x kc` block stays in L2).
    pub fn mc(&self) -> usize {
        self.mc
    }
    /// Columns of one packed panel of `B` (the `kc x nc` panel stays in L3).
    pub fn nc(&self) -> usize {
        self.nc
    }
}

/// The GEMM kernels for one element type (implemented for `f32` and `f64`); `Float` requires it.
pub trait GemmKernels: Copy + Default + Send + Sync + 'static {
    /// The microkernel [`gemm_with`] uses for this type on `isa`: that path's kernel when the
    /// CPU supports it, the scalar reference otherwise.
    fn microkernel(isa: Isa) -> Microkernel<Self>;

    /// Runs `f` on this thread's packing buffer `slot` (0 for blocks of `A`, 1 for panels of
    /// `B` and the thin paths' copies), at least `len` elements starting on a 64-byte boundary.
    /// The buffers live as long as the thread and only grow, up to [`KEPT_PACK_ELEMENTS`] each
    /// (a `kc x nc` panel of `B` fits), so a product pays neither an allocation nor page faults;
    /// a larger request (a thin product with a very long `K`) or a re-entrant use gets a buffer
    /// of its own for the call.
    #[doc(hidden)]
    fn with_pack_buffer<R>(slot: usize, len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

/// The most elements a thread keeps in each of its packing buffers
/// ([`GemmKernels::with_pack_buffer`]): 4 MiB of f32, the largest `kc x nc` panel of `B`.
const KEPT_PACK_ELEMENTS: usize = 1 << 20;

macro_rules! impl_gemm_kernels {
    ($t:ty, $select:path) => {
        impl GemmKernels for $t {
            fn microkernel(isa: Isa) -> Microkernel<$t> {
                // Chosen once per path: every product asks, and the choice reads CPU features
                // and divides the cache sizes.
                static KERNELS: [std::sync::OnceLock<Microkernel<$t>>; 4] = [const { std::sync::OnceLock::new() }; 4];
                *KERNELS[isa as usize].get_or_init(|| $select(isa).with_caches(&CacheSizes::get()))
            }

            fn with_pack_buffer<R>(slot: usize, len: usize, f: impl FnOnce(&mut [$t]) -> R) -> R {
                thread_local! {
                    static BUFFERS: [std::cell::RefCell<Vec<$t>>; 2] = Default::default();
                }
                // Room to move the start up to the next 64-byte boundary.
                let pad = 64 / std::mem::size_of::<$t>();
                let aligned = |buf: &mut Vec<$t>| -> std::ops::Range<usize> {
                    if buf.len() < len + pad {
                        *buf = vec![0.0; len + pad];
                    }
                    let start = buf.as_ptr().align_offset(64).min(pad);
                    start..start + len
                };
                BUFFERS.with(|buffers| {
                    let mut own = Vec::new();
                    let mut kept = if len <= KEPT_PACK_ELEMENTS { buffers[slot].try_borrow_mut().ok() } else { None };
                    let buf: &mut Vec<$t> = match kept.as_deref_mut() {
                        Some(kept) => kept,
                        None => &mut own,
                    };
                    let range = aligned(buf);
                    f(&mut buf[range])
                })
            }
        }
    };
}

impl_gemm_kernels!(f32, microkernel::select_f32);
impl_gemm_kernels!(f64, microkernel::select_f64);

// ─── gemm ───────────────────────────────────────────────────────────────────────

/// `C = A · B`, or `C += A · B` when `accumulate`, on the active instruction set
/// ([`crate::kernels::active_isa`]) and the current rayon pool.
///
/// `A` is `m x k`, `B` is `k x n` and `C` is `m x n`, each a strided view of its slice (see
/// [`MatRef`] and [`MatMut`]): `C(i, j) (+)= Σ_p A(i, p) · B(p, j)`. With `k = 0` the product is
/// zero (so `C` is zeroed, or left as is when accumulating). The result does not depend on the
/// number of rayon threads.
///
/// # Panics
/// When the shapes do not match (`A`'s rows and `C`'s, `B`'s columns and `C`'s, `A`'s columns
/// and `B`'s rows): the message names the three. Tensor ops check shapes before calling, so
/// they never panic here. The views' constructors have checked their bounds, so nothing is
/// read or written out of bounds whatever the arguments.
///
/// ```
/// use tapegrad_tensor::kernels::gemm::{gemm, MatMut, MatRef};
/// let a = [1.0f32, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let b = [5.0f32, 6.0, 7.0, 8.0]; // [[5, 6], [7, 8]]
/// let mut c = [0.0f32; 4];
/// gemm(MatMut::row_major(&mut c, 2, 2), MatRef::row_major(&a, 2, 2), MatRef::row_major(&b, 2, 2), false);
/// assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
/// ```
pub fn gemm<T: Float>(c: MatMut<'_, T>, a: MatRef<'_, T>, b: MatRef<'_, T>, accumulate: bool) {
    gemm_with(crate::kernels::active_isa(), c, a, b, accumulate)
}

/// [`gemm`] on an explicit instruction-set path; a path this CPU does not support falls back to
/// the scalar reference. Tests and benchmarks use it to compare paths.
///
/// # Panics
/// As [`gemm`].
pub fn gemm_with<T: Float>(isa: Isa, mut c: MatMut<'_, T>, a: MatRef<'_, T>, b: MatRef<'_, T>, accumulate: bool) {
    let p = Product::new(&mut c, a, b, accumulate);
    if p.k() == 0 {
        if !accumulate {
            c.fill(T::ZERO);
        }
        return;
    }
    product(isa, p);
}

/// `C = init + A · B`: `C` starts as the vector `init` repeated across it (a linear layer's
/// bias in each row, [`Init::EachRow`]) and the product is added, on the active instruction
/// set and the current rayon pool. The same bits as filling `C` with the vector and calling
/// [`gemm`] with `accumulate`, without that pass over `C`: the packed path writes the start of
/// each tile of `C` just before its first microkernel call, while the tile is in L1.
///
/// # Panics
/// As [`gemm`], and when the vector's length is not `C`'s width (`EachRow`) or height
/// (`EachColumn`).
///
/// ```
/// use tapegrad_tensor::kernels::gemm::{gemm_init, Init, MatMut, MatRef};
/// let a = [1.0f32, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let b = [5.0f32, 6.0, 7.0, 8.0]; // [[5, 6], [7, 8]]
/// let mut c = [0.0f32; 4];
/// let bias = [0.5f32, -1.0];
/// gemm_init(MatMut::row_major(&mut c, 2, 2), MatRef::row_major(&a, 2, 2), MatRef::row_major(&b, 2, 2), Init::EachRow(&bias));
/// assert_eq!(c, [19.5, 21.0, 43.5, 49.0]);
/// ```
pub fn gemm_init<T: Float>(c: MatMut<'_, T>, a: MatRef<'_, T>, b: MatRef<'_, T>, init: Init<'_, T>) {
    gemm_init_with(crate::kernels::active_isa(), c, a, b, init)
}

/// [`gemm_init`] on an explicit instruction-set path (see [`gemm_with`]).
///
/// # Panics
/// As [`gemm_init`].
pub fn gemm_init_with<T: Float>(isa: Isa, mut c: MatMut<'_, T>, a: MatRef<'_, T>, b: MatRef<'_, T>, init: Init<'_, T>) {
    let p = Product::new(&mut c, a, b, false).with_init(init);
    if p.k() == 0 {
        p.prefilled();
        return;
    }
    product(isa, p);
}

/// Runs a checked product with `k >= 1` on the path its shape and strides pick.
fn product<T: Float>(isa: Isa, p: Product<'_, T>) {
    let (m, n, k) = (p.m(), p.n(), p.k());
    if m == 0 || n == 0 {
        return;
    }
    // A start of `C` costs the packed path's scratch tiles what accumulating does (a copy in).
    let accumulate = p.accumulate() || p.init().is_some();
    let (a, b) = (p.a(), p.b());
    let uk = T::microkernel(isa);
    let row_major_c = p.c().col_stride() == 1;
    // A short K into rows of C, B's rows contiguous (a classifier's input gradient `dz · W`):
    // four rows of C at a time swept once, in tiles of 4 x 64 elements, A's few elements broadcast.
    if let Some(short_k) = uk.short_k {
        if k <= MAX_SHORT_K && n >= 16 && b.col_stride() == 1 && row_major_c {
            return direct(short_k, p.prefilled());
        }
    }
    // Few rows of C, B's rows contiguous (a classifier's weight gradient `dzᵀ · h`): B read
    // where it is, since each of its elements would be used by one tile only. Up to kc, so that
    // the sums run in the packed path's order.
    if let Some(few_rows) = uk.few_rows {
        if m <= MAX_FEW_ROWS && k <= uk.kc && n >= 32 && b.col_stride() == 1 && row_major_c {
            return direct(few_rows, p.prefilled());
        }
    }
    // Thin, with both operands contiguous along K (a linear layer's `x · Wᵀ` with few
    // outputs): dot products straight from the operands. Cᵀ = Bᵀ Aᵀ has the same form, so a
    // short M takes the path too.
    if let Some(dot) = uk.dot {
        if k >= DOT_MIN_K && a.col_stride() == 1 && b.row_stride() == 1 {
            if n <= MAX_THIN {
                return thin(dot, p.prefilled());
            }
            if m <= MAX_THIN {
                return thin(dot, p.prefilled().t());
            }
        }
    }
    // A small product (every side at most MAX_SMALL): A and B read where they are (B with
    // contiguous rows or, as attention's `kᵀ`, columns; copied once into a row-major scratch
    // otherwise), A's elements broadcast; no packing. Each element is summed over `p` in order
    // from zero, as in the packed path (k <= kc), so the two agree to the bit.
    if let Some(small) = uk.small {
        if m <= MAX_SMALL && n <= MAX_SMALL && k <= MAX_SMALL.min(uk.kc) && n >= 8 && row_major_c {
            let p = p.prefilled();
            if b.col_stride() == 1 || b.row_stride() == 1 {
                return direct(small, p);
            }
            return T::with_pack_buffer(1, k * n, |scratch| {
                let (data, (rs, cs)) = (b.data(), (b.row_stride(), b.col_stride()));
                for (i, row) in scratch.chunks_exact_mut(n).enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = data[b.offset() + i * rs + j * cs];
                    }
                }
                direct(small, p.with_b(MatRef::row_major(scratch, k, n)));
            });
        }
    }
    // A thin C wastes most of each mr x nr tile on zero padding (n = 10 against nr = 32, or a
    // matrix-vector product). C^T = B^T A^T has the same elements, each summed in the same
    // order: take whichever orientation costs clearly less. A tile costs its k steps, plus, when
    // that orientation's C is not row-major, its copies through the scratch tile element by
    // element (out, and in when accumulating), each about as dear as nr steps of k: this kept a
    // convolution's weight gradient (32 x 144, k = 196) from being transposed for 27% less
    // padding and then copying every tile. The choice depends on the shape only, never on the
    // thread count.
    let cost = |rows: usize, cols: usize, row_major: bool| {
        let copies = if row_major { 0 } else { uk.nr * (1 + usize::from(accumulate)) };
        rows.next_multiple_of(uk.mr).saturating_mul(cols.next_multiple_of(uk.nr)).saturating_mul(k + copies)
    };
    let transposed_row_major = p.c().row_stride() == 1;
    if cost(n, m, transposed_row_major).saturating_mul(5) < cost(m, n, row_major_c).saturating_mul(4) {
        blocking::run(&uk, p.t());
    } else {
        blocking::run(&uk, p);
    }
}

/// Runs the dot-product path for `p` (`n <= MAX_THIN`, `A`'s columns and `B`'s rows
/// contiguous), splitting rows of `C` between threads in fixed blocks when the product is large
/// enough.
fn thin<T: Float>(dot: DotFn<T>, p: Product<'_, T>) {
    let (m, n, k) = (p.m(), p.n(), p.k());
    let (a, b) = (p.a(), p.b());
    // The thin operand's rows, copied into this thread's (64-byte aligned) packing buffer for
    // `B`: each row starts on a cache line, so that no vector load straddles two lines, and
    // the stride is not a multiple of 4 KiB, so that rows read together at the same offsets
    // (4 KiB apart for k = 1024 f32) do not all fall in one set of the L1 cache. (n <= 16
    // rows: a few KiB to copy.)
    let line = 64 / std::mem::size_of::<T>();
    let mut ldb = k.next_multiple_of(line) + line;
    if (ldb * std::mem::size_of::<T>()).is_multiple_of(4096) {
        ldb += line;
    }
    T::with_pack_buffer(1, n * ldb, |b_rows| {
        for (j, row) in b_rows.chunks_exact_mut(ldb).enumerate() {
            // Column j of B runs contiguously along K (b.row_stride() == 1).
            let start = b.offset() + j * b.col_stride();
            row[..k].copy_from_slice(&b.data()[start..start + k]);
        }
        let b_rows = &*b_rows;
        let run = |i0: usize, i1: usize| {
            let c = p.c();
            let ops = Dot {
                a: a.as_ptr(),
                lda: a.row_stride(),
                b: b_rows.as_ptr(),
                ldb,
                c: c.at(0, 0),
                c_rs: c.row_stride(),
                c_cs: c.col_stride(),
                accumulate: p.accumulate(),
            };
            // SAFETY: rows i0..i1 < m of `A` and the n rows of `Bᵀ` (the copied columns of `B`)
            // are readable over 0..k (`A` is a checked m x k view, `b_rows` holds n rows of
            // ldb >= k), `C`'s elements are distinct and writable (a checked `MatMut`), this call
            // alone writes rows i0..i1, and `dot` came from the microkernel table for a
            // supported instruction set.
            unsafe { dot(i1 - i0, n, k, ops.at(i0, 0)) }
        };
        in_row_blocks(m, 2 * m * n * k, run);
    })
}

/// Runs `run(i0, i1)` over rows `0..m` of `C`: in fixed blocks of 64 rows on the rayon pool when
/// the product has at least [`blocking::PAR_MIN_FLOPS`] and the pool has threads to spare, else
/// in one call. Each row's arithmetic
/// is the same either way.
fn in_row_blocks(m: usize, flops: usize, run: impl Fn(usize, usize) + Sync) {
    /// Rows of `C` per task.
    const ROWS: usize = 64;
    if m > ROWS && flops >= blocking::PAR_MIN_FLOPS {
        crate::parallel::for_each(0..m.div_ceil(ROWS), flops / 2, |t| run(t * ROWS, m.min((t + 1) * ROWS)));
    } else {
        run(0, m);
    }
}

/// Runs a [`DirectFn`] path for `p` into a row-major `C` (the path's shape conditions checked
/// by the caller): in fixed blocks of 64 rows, or for few rows in fixed blocks of 256 columns,
/// on the rayon pool when the product is large enough.
fn direct<T: Float>(f: DirectFn<T>, p: Product<'_, T>) {
    /// Columns of `C` per task when there are few rows.
    const COLUMNS: usize = 256;
    let (m, n, k) = (p.m(), p.n(), p.k());
    let (a, b, c) = (p.a(), p.b(), p.c());
    let run = |(i0, i1): (usize, usize), (j0, j1): (usize, usize)| {
        let ops = Direct {
            a: a.as_ptr(),
            a_rs: a.row_stride(),
            a_cs: a.col_stride(),
            b: b.as_ptr(),
            ldb: b.row_stride(),
            b_cs: b.col_stride(),
            c: c.at(0, 0),
            ldc: c.row_stride(),
            accumulate: p.accumulate(),
        };
        // SAFETY: rows i0..i1 < m of `A` over 0..k and columns j0..j1 < n of `B` over 0..k
        // are readable (checked views of m x k and k x n), that block of `C` is distinct,
        // writable (a checked `MatMut`, row-major here) and written by this call alone, and `f`
        // came from the microkernel table for a supported instruction set.
        unsafe { f(i1 - i0, j1 - j0, k, ops.at(i0, j0)) }
    };
    let flops = 2 * m * n * k;
    if m <= MAX_FEW_ROWS && n > COLUMNS && flops >= blocking::PAR_MIN_FLOPS && crate::parallel::split(flops / 2) {
        crate::parallel::for_each(0..n.div_ceil(COLUMNS), flops / 2, |t| {
            run((0, m), (t * COLUMNS, n.min((t + 1) * COLUMNS)))
        });
    } else {
        in_row_blocks(m, flops, |i0, i1| run((i0, i1), (0, n)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "gemm: C (2 x 2) = A (2 x 3) · B (2 x 2): the shapes do not match")]
    fn mismatched_shapes_are_a_clear_panic() {
        let data = [0.0f32; 6];
        let mut c = [0.0f32; 4];
        gemm(MatMut::row_major(&mut c, 2, 2), MatRef::row_major(&data, 2, 3), MatRef::row_major(&data, 2, 2), false);
    }

    #[test]
    fn zero_sized_products_touch_only_c() {
        let empty: [f32; 0] = [];
        // k = 0: C is zeroed, or kept when accumulating.
        let mut c = [5.0f32; 6];
        gemm(MatMut::row_major(&mut c, 2, 3), MatRef::row_major(&empty, 2, 0), MatRef::row_major(&empty, 0, 3), true);
        assert_eq!(c, [5.0; 6]);
        gemm(MatMut::row_major(&mut c, 2, 3), MatRef::row_major(&empty, 2, 0), MatRef::row_major(&empty, 0, 3), false);
        assert_eq!(c, [0.0; 6]);
        // m = 0 or n = 0: nothing to write.
        let data = [1.0f32; 4];
        gemm(
            MatMut::row_major(&mut [] as &mut [f32], 0, 2),
            MatRef::row_major(&empty, 0, 2),
            MatRef::row_major(&data, 2, 2),
            false,
        );
        gemm(
            MatMut::row_major(&mut [] as &mut [f32], 2, 0),
            MatRef::row_major(&data, 2, 2),
            MatRef::row_major(&empty, 2, 0),
            false,
        );
    }
}
