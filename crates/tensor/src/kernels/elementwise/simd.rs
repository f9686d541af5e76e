//! The loop bodies every SIMD path shares, written once over a register type ([`Lanes`]).
//!
//! Each ISA file defines its register types (the methods of [`Lanes`] that every instruction set
//! writes alike come from [`common_lanes_methods!`]) and expands [`simd_entry_points!`] with its
//! target features: the `#[target_feature]` entry points there call these `#[inline(always)]` bodies, so
//! the whole loop, intrinsics included, is compiled for that instruction set. Loops run four
//! registers per iteration, then one, then a scalar tail that uses the same per-element formula
//! (`BinaryOp::apply` / `UnaryOp::apply`), so every length gives the reference's result.

use super::scalar::{self, max_nan, Cascade, SUM_BLOCK};
use super::{AdamDecay, AdamStep, BinaryOp, Operand, SgdStep, UnaryOp};
use crate::dtype::Float;

/// One SIMD register of `LANES` elements on one instruction set.
///
/// # Safety
/// Every method executes the type's instructions, so every method is `unsafe` and requires
/// that the CPU supports the type's instruction set (in practice: it is called, inlined, from a
/// `#[target_feature]` entry point of `simd_entry_points!` or from an `unsafe fn` with that
/// requirement). Methods taking pointers list what else they require.
pub(super) trait Lanes: Copy {
    /// The element type.
    type Elem: Float + ExpParams;
    /// Elements per register.
    const LANES: usize;

    /// Every lane set to `x`.
    ///
    /// # Safety
    /// The CPU supports this type's instruction set.
    unsafe fn splat(x: Self::Elem) -> Self;

    /// `LANES` elements from `p` (no alignment needed).
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and `p..p + LANES` is readable.
    unsafe fn load(p: *const Self::Elem) -> Self;

    /// Writes the lanes to `p..p + LANES` (no alignment needed).
    ///
    /// # Safety
    /// The CPU supports this type's instruction set and `p..p + LANES` is writable.
    unsafe fn store(self, p: *mut Self::Elem);

    /// Lane-wise `self + rhs`.
    unsafe fn add(self, rhs: Self) -> Self;
    /// Lane-wise `self - rhs`.
    unsafe fn sub(self, rhs: Self) -> Self;
    /// Lane-wise `self * rhs`.
    unsafe fn mul(self, rhs: Self) -> Self;
    /// Lane-wise `self / rhs`.
    unsafe fn div(self, rhs: Self) -> Self;
    /// Lane-wise [`scalar::max_nan`].
    unsafe fn max_nan(self, rhs: Self) -> Self;
    /// Lane-wise [`scalar::min_nan`].
    unsafe fn min_nan(self, rhs: Self) -> Self;
    /// Lane-wise `-self` (flips the sign bit, so `-0.0` and NaN behave as in scalar code).
    unsafe fn neg(self) -> Self;
    /// Lane-wise `|self|` (clears the sign bit).
    unsafe fn abs(self) -> Self;
    /// Lane-wise `0 > x ? 0 : x` (NaN passes through).
    unsafe fn relu(self) -> Self;
    /// Lane-wise correctly rounded `√self`.
    unsafe fn sqrt(self) -> Self;
    /// Lane-wise `self · b + c`, rounded once (FMA).
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// Lane-wise `2^self`, for integer-valued lanes in the normal exponent range: adds a magic
    /// constant so the (biased) exponent lands in the low mantissa bits, then shifts it into the
    /// exponent field.
    unsafe fn pow2i(self) -> Self;
    /// The lanes' elements, for horizontal reductions and tests.
    unsafe fn to_array(self) -> [Self::Elem; 16];
}

/// Per-type constants of the vectorised `exp`.
pub(super) trait ExpParams: Float + KeepTable {
    /// Inputs are clamped to `[EXP_MIN, EXP_MAX]`: below, eˣ rounds to 0; above, to +∞.
    const EXP_MIN: f64;
    /// See [`ExpParams::EXP_MIN`].
    const EXP_MAX: f64;
    /// Taylor degree for eʳ on |r| ≤ ln2/2: the truncation error stays under 0.1 ulp.
    const EXP_DEGREE: usize;
    /// `2^(mantissa bits) · 1.5`: adding it rounds a float to an integer in the low bits.
    const ROUND_MAGIC: f64;
}

/// `[0; 16]` then `[1; 16]` of element type `$t`, as a constant expression.
macro_rules! keep_table {
    ($t:ty) => {{
        let mut t: [$t; 32] = [0.0; 32];
        let mut i = 16;
        while i < 32 {
            t[i] = 1.0;
            i += 1;
        }
        t
    }};
}

/// `[0; 16]` then `[1; 16]`: loaded at `16 - d`, a register whose first `d` lanes are 0 and the
/// rest 1 (the lanes of a row's last, overlapping register that count in [`softmax_short_rows`]).
static KEEP_F32: [f32; 32] = keep_table!(f32);
/// [`KEEP_F32`] in f64.
static KEEP_F64: [f64; 32] = keep_table!(f64);

/// The element types' [`KEEP_F32`] table.
pub(super) trait KeepTable: Sized + 'static {
    /// `[0; 16]` then `[1; 16]`.
    fn keep_table() -> &'static [Self; 32];
}
impl KeepTable for f32 {
    fn keep_table() -> &'static [f32; 32] {
        &KEEP_F32
    }
}
impl KeepTable for f64 {
    fn keep_table() -> &'static [f64; 32] {
        &KEEP_F64
    }
}

impl ExpParams for f32 {
    const EXP_MIN: f64 = -104.0;
    const EXP_MAX: f64 = 89.0;
    const EXP_DEGREE: usize = 7;
    const ROUND_MAGIC: f64 = 12_582_912.0;
}

impl ExpParams for f64 {
    const EXP_MIN: f64 = -746.0;
    const EXP_MAX: f64 = 710.0;
    const EXP_DEGREE: usize = 13;
    const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;
}

/// `ln 2 − LN_2`: what the f64 constant misses of ln 2 (ln 2 = 0.693147180559945309417232121458…).
const LN_2_TAIL: f64 = 2.319_046_813_846_299_6e-17;

/// The constants of [`exp_lanes`], splat once per call.
struct ExpConsts<V> {
    min: V,
    max: V,
    log2e: V,
    ln2_hi: V,
    ln2_lo: V,
    magic: V,
    half: V,
    /// `1/k!` for `k = 0..=EXP_DEGREE`.
    taylor: [V; 14],
}

impl<V: Lanes> ExpConsts<V> {
    /// # Safety
    /// The CPU supports `V`'s instruction set.
    #[inline(always)]
    unsafe fn new() -> ExpConsts<V> {
        let c = |v: f64| V::Elem::from_f64(v);
        // ln 2 = ln2_hi + ln2_lo, with ln2_hi the type's nearest value: the FMA forms
        // `x − n · ln2_hi` with one rounding, and ln2_lo carries the rest, including the part of
        // ln 2 that even f64 cannot hold (`LN_2_TAIL`).
        let ln2_hi = c(std::f64::consts::LN_2);
        let ln2_lo = c((std::f64::consts::LN_2 - ln2_hi.to_f64()) + LN_2_TAIL);
        let mut factorial = 1.0;
        // SAFETY: the caller guarantees the instruction set.
        unsafe {
            let mut taylor = [V::splat(c(1.0)); 14];
            for (k, t) in taylor.iter_mut().enumerate().skip(1) {
                factorial *= k as f64;
                *t = V::splat(c(1.0 / factorial));
            }
            ExpConsts {
                min: V::splat(c(V::Elem::EXP_MIN)),
                max: V::splat(c(V::Elem::EXP_MAX)),
                log2e: V::splat(c(std::f64::consts::LOG2_E)),
                ln2_hi: V::splat(-ln2_hi),
                ln2_lo: V::splat(-ln2_lo),
                magic: V::splat(c(V::Elem::ROUND_MAGIC)),
                half: V::splat(c(0.5)),
                taylor,
            }
        }
    }
}

/// Lane-wise eˣ, within about 2 ulp of the standard library: `x = n·ln2 + r` with `n` an integer
/// and `|r| ≤ ln2/2`, `eʳ` by its Taylor polynomial (Horner with FMA), and `2ⁿ` applied in two
/// halves so that results in the subnormal range and the overflow to +∞ come out right. NaN
/// propagates; −∞ gives 0 and +∞ gives +∞ (through the clamp).
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn exp_lanes<V: Lanes>(x: V, k: &ExpConsts<V>) -> V {
    // SAFETY: the caller guarantees the instruction set.
    unsafe {
        let x = x.max_nan(k.min).min_nan(k.max);
        let n = x.mul_add(k.log2e, k.magic).sub(k.magic);
        let r = n.mul_add(k.ln2_hi, x);
        let r = n.mul_add(k.ln2_lo, r);
        let mut p = k.taylor[V::Elem::EXP_DEGREE];
        for i in (0..V::Elem::EXP_DEGREE).rev() {
            p = p.mul_add(r, k.taylor[i]);
        }
        let n1 = n.mul_add(k.half, k.magic).sub(k.magic);
        let n2 = n.sub(n1);
        p.mul(n1.pow2i()).mul(n2.pow2i())
    }
}

// ─── binary ────────────────────────────────────────────────────────────────────

const ADD: u8 = 0;
const SUB: u8 = 1;
const MUL: u8 = 2;
const DIV: u8 = 3;
const MAXIMUM: u8 = 4;
const MINIMUM: u8 = 5;

/// The op a const code stands for (codes keep the op a compile-time constant inside the loop).
#[inline(always)]
const fn binary_op(code: u8) -> BinaryOp {
    match code {
        ADD => BinaryOp::Add,
        SUB => BinaryOp::Sub,
        MUL => BinaryOp::Mul,
        DIV => BinaryOp::Div,
        MAXIMUM => BinaryOp::Maximum,
        _ => BinaryOp::Minimum,
    }
}

/// `a op b`, lane-wise.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn apply_lanes<V: Lanes>(op: BinaryOp, a: V, b: V) -> V {
    // SAFETY: the caller guarantees the instruction set.
    unsafe {
        match op {
            BinaryOp::Add => a.add(b),
            BinaryOp::Sub => a.sub(b),
            BinaryOp::Mul => a.mul(b),
            BinaryOp::Div => a.div(b),
            BinaryOp::Maximum => a.max_nan(b),
            BinaryOp::Minimum => a.min_nan(b),
        }
    }
}

/// `out[i] = a[i] op b[i]` for `i < n`, where a splat operand is the value `*_val` and its
/// pointer is never read. `out` may be exactly `a` (in-place accumulation): each block is
/// loaded before it is stored.
///
/// # Safety
/// The CPU supports `V`'s instruction set; every non-splat pointer is valid for `n` elements.
#[inline(always)]
unsafe fn binary_loop<V: Lanes, const OP: u8, const SPLAT_A: bool, const SPLAT_B: bool>(
    a: *const V::Elem,
    a_val: V::Elem,
    b: *const V::Elem,
    b_val: V::Elem,
    out: *mut V::Elem,
    n: usize,
) {
    let op = binary_op(OP);
    let w = V::LANES;
    // SAFETY: the caller guarantees the instruction set and that `a`, `b` (unless splat) and
    // `out` hold `n` elements; every offset below is `< n` (blocks end at `i + k * w <= n`).
    unsafe {
        let (va, vb) = (V::splat(a_val), V::splat(b_val));
        let load_a = |i: usize| if SPLAT_A { va } else { V::load(a.add(i)) };
        let load_b = |i: usize| if SPLAT_B { vb } else { V::load(b.add(i)) };
        let mut i = 0;
        while i + 4 * w <= n {
            for k in 0..4 {
                let j = i + k * w;
                apply_lanes(op, load_a(j), load_b(j)).store(out.add(j));
            }
            i += 4 * w;
        }
        while i + w <= n {
            apply_lanes(op, load_a(i), load_b(i)).store(out.add(i));
            i += w;
        }
        while i < n {
            let x = if SPLAT_A { a_val } else { *a.add(i) };
            let y = if SPLAT_B { b_val } else { *b.add(i) };
            *out.add(i) = op.apply(x, y);
            i += 1;
        }
    }
}

/// [`binary_loop`] with the op turned into a constant.
///
/// # Safety
/// As [`binary_loop`].
#[inline(always)]
unsafe fn binary_any<V: Lanes, const SPLAT_A: bool, const SPLAT_B: bool>(
    op: BinaryOp,
    a: *const V::Elem,
    a_val: V::Elem,
    b: *const V::Elem,
    b_val: V::Elem,
    out: *mut V::Elem,
    n: usize,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match op {
            BinaryOp::Add => binary_loop::<V, ADD, SPLAT_A, SPLAT_B>(a, a_val, b, b_val, out, n),
            BinaryOp::Sub => binary_loop::<V, SUB, SPLAT_A, SPLAT_B>(a, a_val, b, b_val, out, n),
            BinaryOp::Mul => binary_loop::<V, MUL, SPLAT_A, SPLAT_B>(a, a_val, b, b_val, out, n),
            BinaryOp::Div => binary_loop::<V, DIV, SPLAT_A, SPLAT_B>(a, a_val, b, b_val, out, n),
            BinaryOp::Maximum => binary_loop::<V, MAXIMUM, SPLAT_A, SPLAT_B>(a, a_val, b, b_val, out, n),
            BinaryOp::Minimum => binary_loop::<V, MINIMUM, SPLAT_A, SPLAT_B>(a, a_val, b, b_val, out, n),
        }
    }
}

/// `ElementwiseKernels::binary` on register type `V`.
///
/// # Safety
/// The CPU supports `V`'s instruction set; slice operands are as long as `out`.
#[inline(always)]
pub(super) unsafe fn binary<V: Lanes>(
    op: BinaryOp,
    lhs: Operand<'_, V::Elem>,
    rhs: Operand<'_, V::Elem>,
    out: &mut [V::Elem],
) {
    let n = out.len();
    let o = out.as_mut_ptr();
    let zero = V::Elem::ZERO;
    let none = std::ptr::null();
    // SAFETY: the caller guarantees the instruction set and the lengths; `none` is only passed
    // for splat operands, whose pointer is never read.
    unsafe {
        match (lhs, rhs) {
            (Operand::Slice(a), Operand::Slice(b)) => {
                binary_any::<V, false, false>(op, a.as_ptr(), zero, b.as_ptr(), zero, o, n)
            }
            (Operand::Slice(a), Operand::Splat(b)) => binary_any::<V, false, true>(op, a.as_ptr(), zero, none, b, o, n),
            (Operand::Splat(a), Operand::Slice(b)) => binary_any::<V, true, false>(op, none, a, b.as_ptr(), zero, o, n),
            (Operand::Splat(a), Operand::Splat(b)) => out.fill(op.apply(a, b)),
        }
    }
}

/// `ElementwiseKernels::binary_assign` on register type `V`.
///
/// # Safety
/// The CPU supports `V`'s instruction set; a slice `rhs` is as long as `acc`.
#[inline(always)]
pub(super) unsafe fn binary_assign<V: Lanes>(op: BinaryOp, acc: &mut [V::Elem], rhs: Operand<'_, V::Elem>) {
    let n = acc.len();
    let o = acc.as_mut_ptr();
    let zero = V::Elem::ZERO;
    // SAFETY: the caller guarantees the instruction set and the lengths. `acc` is read and
    // written through the one pointer `o`, which `binary_loop` allows (load before store).
    unsafe {
        match rhs {
            Operand::Slice(b) => binary_any::<V, false, false>(op, o, zero, b.as_ptr(), zero, o, n),
            Operand::Splat(b) => binary_any::<V, false, true>(op, o, zero, std::ptr::null(), b, o, n),
        }
    }
}

// ─── unary ─────────────────────────────────────────────────────────────────────

const NEG: u8 = 0;
const ABS: u8 = 1;
const RELU: u8 = 2;
const SQRT: u8 = 3;

/// `out[i] = op(x[i])` for a vectorised op code.
///
/// # Safety
/// The CPU supports `V`'s instruction set; `x` and `out` hold `n` elements (they may be equal).
#[inline(always)]
unsafe fn unary_loop<V: Lanes, const OP: u8>(x: *const V::Elem, out: *mut V::Elem, n: usize) {
    let w = V::LANES;
    // SAFETY: called only below, where the caller guarantees the instruction set.
    let f = |v: V| unsafe {
        match OP {
            NEG => v.neg(),
            ABS => v.abs(),
            RELU => v.relu(),
            _ => v.sqrt(),
        }
    };
    let op = match OP {
        NEG => UnaryOp::Neg,
        ABS => UnaryOp::Abs,
        RELU => UnaryOp::Relu,
        _ => UnaryOp::Sqrt,
    };
    // SAFETY: offsets stay below `n` (blocks end at `i + k * w <= n`); the caller guarantees
    // the instruction set and the lengths.
    unsafe {
        let mut i = 0;
        while i + 4 * w <= n {
            for k in 0..4 {
                let j = i + k * w;
                f(V::load(x.add(j))).store(out.add(j));
            }
            i += 4 * w;
        }
        while i + w <= n {
            f(V::load(x.add(i))).store(out.add(i));
            i += w;
        }
        while i < n {
            *out.add(i) = op.apply(*x.add(i));
            i += 1;
        }
    }
}

/// `ElementwiseKernels::unary` on register type `V`: vector instructions for the vectorised
/// ops, the scalar formula for the rest.
///
/// # Safety
/// The CPU supports `V`'s instruction set; `x` is as long as `out`.
#[inline(always)]
pub(super) unsafe fn unary<V: Lanes>(op: UnaryOp<V::Elem>, x: &[V::Elem], out: &mut [V::Elem]) {
    let (p, o, n) = (x.as_ptr(), out.as_mut_ptr(), out.len());
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match op {
            UnaryOp::Neg => unary_loop::<V, NEG>(p, o, n),
            UnaryOp::Abs => unary_loop::<V, ABS>(p, o, n),
            UnaryOp::Relu => unary_loop::<V, RELU>(p, o, n),
            UnaryOp::Sqrt => unary_loop::<V, SQRT>(p, o, n),
            UnaryOp::Exp => exp_loop::<V>(p, V::Elem::ZERO, o, n),
            _ => scalar::unary(op, x, out),
        }
    }
}

// ─── short softmax rows ─────────────────────────────────────────────────────────

/// Softmax rows of `LANES ..= SHORT_ROW_REGS · LANES` elements stay in registers
/// ([`softmax_short_rows`]).
pub(super) const SHORT_ROW_REGS: usize = 4;

/// Softmax rows in registers: per row of `len` elements (`LANES <= len <= SHORT_ROW_REGS ·
/// LANES`), `out = e^(r − max r) / Σ e^(r − max r)` with `r = x · scale (+ mask(row))`.
///
/// A row is `⌈len / LANES⌉` registers, the last one ending at `len` (so overlapping the one
/// before when `LANES` does not divide `len`): no scalar tail and no trip through memory between
/// the steps, which for attention's rows of 28 cost more than the arithmetic. The steps are the
/// composition's (`x · scale`, then `+ mask`, each rounded; the maximum; the same `exp`; the
/// division), and the sum adds the registers lane by lane, then across lanes pairwise, the
/// repeated lanes of the last register multiplied by 0 (exact: each term is in [0, 1] or NaN,
/// and a NaN repeats one already summed). The repeated lanes are stored twice, with the same
/// bits.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
///
/// # Panics
/// When `len` is out of range, `x` and `out` differ in length or are not whole rows, or a mask
/// row is not `len` long.
#[inline(always)]
pub(super) unsafe fn softmax_short_rows<'m, V: Lanes>(
    x: &[V::Elem],
    scale: V::Elem,
    mask: &dyn Fn(usize) -> Option<&'m [V::Elem]>,
    len: usize,
    out: &mut [V::Elem],
) {
    let w = V::LANES;
    assert!(
        (w..=SHORT_ROW_REGS * w).contains(&len) && x.len() == out.len() && x.len().is_multiple_of(len),
        "softmax_short_rows: rows of {len} over {} for {w} lanes",
        x.len()
    );
    // SAFETY: forwarded: the instruction set (caller), the lengths (asserted above).
    unsafe {
        match len.div_ceil(w) {
            1 => short_rows::<V, 1, 4>(x, scale, mask, len, out),
            2 => short_rows::<V, 2, 4>(x, scale, mask, len, out),
            3 => short_rows::<V, 3, 2>(x, scale, mask, len, out),
            _ => short_rows::<V, 4, 2>(x, scale, mask, len, out),
        }
    }
}

/// [`softmax_short_rows`] for rows of `C` registers (`C = ⌈len / LANES⌉`), `G` rows at a time,
/// each row computed exactly as alone. A row is a chain of dependent steps (the maximum across
/// lanes, `exp`, the sum across lanes, the division); several chains side by side keep the core
/// busy where one left it waiting. `G · C` at most 8 registers of rows, which with `exp`'s
/// constants fit AVX2's 16. Attention's rows of 28 on AVX-512, `cargo bench --bench layers --
/// softmax/64x4x28x28/forward/1t`: 278-299 -> 248-257 µs (docs/benchmarks.md, session 17).
///
/// # Safety
/// The CPU supports `V`'s instruction set; `C = ⌈len / LANES⌉ <= SHORT_ROW_REGS`, `x` and `out`
/// are whole rows of `len` of one length (the caller asserts it).
#[inline(always)]
unsafe fn short_rows<'m, V: Lanes, const C: usize, const G: usize>(
    x: &[V::Elem],
    scale: V::Elem,
    mask: &dyn Fn(usize) -> Option<&'m [V::Elem]>,
    len: usize,
    out: &mut [V::Elem],
) {
    let w = V::LANES;
    let start = |i: usize| if i + 1 == C { len - w } else { i * w };
    let repeated = C * w - len;
    let rows = x.len() / len;
    // SAFETY: every register reads or writes `start(i) .. start(i) + w` of a row, inside its
    // `len` elements of `x`, the mask row (its length asserted) and `out`; `16 - repeated + w
    // <= 32` stays inside the table. The caller guarantees the instruction set. (The steps are
    // macros, not closures: a closure would not inherit the instruction set.)
    unsafe {
        let k = ExpConsts::<V>::new();
        let s = V::splat(scale);
        let zero = V::splat(V::Elem::ZERO);
        let keep = V::load(V::Elem::keep_table().as_ptr().add(16 - repeated));
        let (src, dst) = (x.as_ptr(), out.as_mut_ptr());
        // One row's registers: `x · scale (+ mask)`.
        macro_rules! load {
            ($row:expr) => {{
                let row = $row;
                let m = mask(row);
                assert!(m.is_none_or(|m| m.len() == len), "softmax_short_rows: a mask row of another length");
                let mut r = [zero; C];
                for (i, reg) in r.iter_mut().enumerate() {
                    let v = V::load(src.add(row * len + start(i))).mul(s);
                    *reg = match m {
                        Some(m) => v.add(V::load(m.as_ptr().add(start(i)))),
                        None => v,
                    };
                }
                r
            }};
        }
        // The row's largest lane, splat.
        macro_rules! shift {
            ($r:expr) => {{
                let r: &[V; C] = $r;
                let mut top = r[0];
                for &v in &r[1..] {
                    top = v.max_nan(top);
                }
                V::splat(reduce_max::<V>(top))
            }};
        }
        // `e^(r − shift)` in place, and the sum of the row's lanes, splat.
        macro_rules! exp_total {
            ($r:expr, $shift:expr) => {{
                let (r, shift): (&mut [V; C], V) = ($r, $shift);
                let mut acc = zero;
                for (i, reg) in r.iter_mut().enumerate() {
                    let e = exp_lanes(reg.sub(shift), &k);
                    *reg = e;
                    acc = acc.add(if i + 1 == C && repeated > 0 { e.mul(keep) } else { e });
                }
                V::splat(reduce_sum(acc))
            }};
        }
        macro_rules! store {
            ($row:expr, $r:expr, $total:expr) => {{
                let (row, r, total): (usize, &[V; C], V) = ($row, $r, $total);
                for (i, reg) in r.iter().enumerate() {
                    reg.div(total).store(dst.add(row * len + start(i)));
                }
            }};
        }
        let mut row = 0;
        while row + G <= rows {
            let mut r = [[zero; C]; G];
            for (g, r) in r.iter_mut().enumerate() {
                *r = load!(row + g);
            }
            let mut shifts = [zero; G];
            for (shift, r) in shifts.iter_mut().zip(&r) {
                *shift = shift!(r);
            }
            let mut totals = [zero; G];
            for ((total, r), &shift) in totals.iter_mut().zip(&mut r).zip(&shifts) {
                *total = exp_total!(r, shift);
            }
            for (g, (r, &total)) in r.iter().zip(&totals).enumerate() {
                store!(row + g, r, total);
            }
            row += G;
        }
        for row in row..rows {
            let mut r = load!(row);
            let shift = shift!(&r);
            let total = exp_total!(&mut r, shift);
            store!(row, &r, total);
        }
    }
}

// ─── Adam ──────────────────────────────────────────────────────────────────────

/// `ElementwiseKernels::adam` on register type `V`: [`AdamStep::element`]'s operations on whole
/// registers (each rounded once, in the same order, so the same bits), the tail by the scalar
/// definition.
///
/// # Safety
/// The CPU supports `V`'s instruction set; the four slices have one length.
#[inline(always)]
pub(super) unsafe fn adam<V: Lanes>(
    step: &AdamStep<V::Elem>,
    x: &mut [V::Elem],
    m: &mut [V::Elem],
    v: &mut [V::Elem],
    g: &[V::Elem],
) {
    let (n, w) = (x.len(), V::LANES);
    let full = n - n % w;
    let (xp, mp, vp, gp) = (x.as_mut_ptr(), m.as_mut_ptr(), v.as_mut_ptr(), g.as_ptr());
    // SAFETY: offsets `i .. i + w` with `i + w <= full <= n` lie inside all four slices (one
    // length, the caller's contract), each written only through its own pointer after the
    // loads; the caller guarantees the instruction set.
    unsafe {
        let (omb1, b2, omb2) = (V::splat(step.one_minus_b1), V::splat(step.b2), V::splat(step.one_minus_b2));
        let (bias2, eps, size) = (V::splat(step.bias2_sqrt), V::splat(step.eps), V::splat(step.step_size));
        let (l2, shrink) = match step.decay {
            AdamDecay::L2(wd) => (Some(V::splat(wd)), None),
            AdamDecay::Decoupled(shrink) => (None, Some(V::splat(shrink))),
            AdamDecay::None => (None, None),
        };
        for i in (0..full).step_by(w) {
            let (mut xv, mut gv) = (V::load(xp.add(i)), V::load(gp.add(i)));
            if let Some(wd) = l2 {
                gv = gv.add(wd.mul(xv));
            }
            if let Some(shrink) = shrink {
                xv = xv.mul(shrink);
            }
            let mv = V::load(mp.add(i));
            let mv = mv.add(omb1.mul(gv.sub(mv)));
            let vv = b2.mul(V::load(vp.add(i))).add(omb2.mul(gv).mul(gv));
            let denom = vv.sqrt().div(bias2).add(eps);
            xv.sub(size.mul(mv).div(denom)).store(xp.add(i));
            mv.store(mp.add(i));
            vv.store(vp.add(i));
        }
    }
    scalar::adam(step, &mut x[full..], &mut m[full..], &mut v[full..], &g[full..]);
}

// ─── SGD ───────────────────────────────────────────────────────────────────────

/// `ElementwiseKernels::sgd` on register type `V`: [`SgdStep::element`]'s operations on whole
/// registers (each rounded once, in the same order, so the same bits), the tail by the scalar
/// definition.
///
/// # Safety
/// The CPU supports `V`'s instruction set; `x` and `g` have one length, and `b` has it too when
/// the step has momentum (it is not touched otherwise).
#[inline(always)]
pub(super) unsafe fn sgd<V: Lanes>(step: &SgdStep<V::Elem>, x: &mut [V::Elem], b: &mut [V::Elem], g: &[V::Elem]) {
    let (n, w) = (x.len(), V::LANES);
    let full = n - n % w;
    let (xp, bp, gp) = (x.as_mut_ptr(), b.as_mut_ptr(), g.as_ptr());
    // SAFETY: offsets `i .. i + w` with `i + w <= full <= n` lie inside `x` and `g`, and inside
    // `b` when there is momentum (the only case `b` is read or written); each slice is written
    // only through its own pointer after the loads; the caller guarantees the instruction set.
    unsafe {
        let lr = V::splat(step.lr);
        let wd = step.weight_decay.map(|wd| V::splat(wd));
        let momentum = step.momentum.map(|m| (V::splat(m.momentum), V::splat(m.one_minus_dampening), m));
        for i in (0..full).step_by(w) {
            let xv = V::load(xp.add(i));
            let mut d = V::load(gp.add(i));
            if let Some(wd) = wd {
                d = d.add(wd.mul(xv));
            }
            if let Some((mu, damp, m)) = momentum {
                let bv = if m.first { d } else { mu.mul(V::load(bp.add(i))).add(damp.mul(d)) };
                bv.store(bp.add(i));
                d = if m.nesterov { d.add(mu.mul(bv)) } else { bv };
            }
            xv.sub(lr.mul(d)).store(xp.add(i));
        }
    }
    // (Without momentum `b` is empty and stays so.)
    let b_tail = if step.momentum.is_some() { &mut b[full..] } else { b };
    scalar::sgd(step, &mut x[full..], b_tail, &g[full..]);
}

// ─── reductions ────────────────────────────────────────────────────────────────

/// The largest of the first `V::LANES` lanes by [`max_nan`] ([`max_pairwise`]).
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn reduce_max<V: Lanes>(v: V) -> V::Elem {
    // SAFETY: the caller guarantees the instruction set.
    let mut lanes = unsafe { v.to_array() };
    max_pairwise(&mut lanes[..V::LANES])
}

/// The largest of `x` (a power of two long) by [`max_nan`], in a tree of adjacent pairs with the
/// later element first: bit for bit the fold `max_nan(x[i], m)` over `i` in order from `-∞` (a
/// tie keeps the earlier element, as between `-0` and `+0`; a NaN beats every number and the
/// latest NaN every NaN), in `log₂ n` dependent steps instead of `n` (a softmax row's maximum
/// was a chain of 16). Overwrites `x`.
#[inline(always)]
fn max_pairwise<T: Float>(x: &mut [T]) -> T {
    let mut n = x.len();
    debug_assert!(n.is_power_of_two());
    while n > 1 {
        n /= 2;
        for i in 0..n {
            x[i] = max_nan(x[2 * i + 1], x[2 * i]);
        }
    }
    x[0]
}

/// Pairwise sum of the first `V::LANES` lanes.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn reduce_sum<V: Lanes>(v: V) -> V::Elem {
    // SAFETY: the caller guarantees the instruction set.
    let a = unsafe { v.to_array() };
    let mut n = V::LANES;
    let mut buf = a;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            buf[i] = buf[2 * i] + buf[2 * i + 1];
        }
    }
    buf[0]
}

/// `ElementwiseKernels::sum` on register type `V`: blocks of `SUM_BLOCK` elements, each summed
/// in four register accumulators (then pairwise across lanes), the block totals combined
/// pairwise by a [`Cascade`].
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(super) unsafe fn sum<V: Lanes>(x: &[V::Elem]) -> V::Elem {
    if x.len() <= SUM_BLOCK {
        // One block: the cascade's result for it, without the cascade.
        // SAFETY: forwarded from this function's contract.
        return unsafe { sum_block::<V>(x) };
    }
    let mut total = Cascade::new(BinaryOp::Add);
    for block in x.chunks(SUM_BLOCK) {
        // SAFETY: forwarded from this function's contract.
        total.push(unsafe { sum_block::<V>(block) });
    }
    total.finish(V::Elem::ZERO)
}

/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn sum_block<V: Lanes>(x: &[V::Elem]) -> V::Elem {
    let (p, n, w) = (x.as_ptr(), x.len(), V::LANES);
    // SAFETY: offsets stay below `n`; the caller guarantees the instruction set.
    unsafe {
        let mut acc = [V::splat(V::Elem::ZERO); 4];
        let mut i = 0;
        while i + 4 * w <= n {
            for k in 0..4 {
                acc[k] = acc[k].add(V::load(p.add(i + k * w)));
            }
            i += 4 * w;
        }
        while i + w <= n {
            acc[0] = acc[0].add(V::load(p.add(i)));
            i += w;
        }
        let total = reduce_sum(acc[0].add(acc[1]).add(acc[2].add(acc[3])));
        total + scalar::sum(&x[i..])
    }
}

/// `ElementwiseKernels::max` on register type `V`.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(super) unsafe fn max<V: Lanes>(x: &[V::Elem]) -> V::Elem {
    let (p, n, w) = (x.as_ptr(), x.len(), V::LANES);
    // SAFETY: offsets stay below `n`; the caller guarantees the instruction set.
    unsafe {
        let mut acc = [V::splat(V::Elem::NEG_INFINITY); 4];
        let mut i = 0;
        while i + 4 * w <= n {
            for k in 0..4 {
                acc[k] = V::load(p.add(i + k * w)).max_nan(acc[k]);
            }
            i += 4 * w;
        }
        while i + w <= n {
            acc[0] = V::load(p.add(i)).max_nan(acc[0]);
            i += w;
        }
        let m = reduce_max::<V>(acc[0].max_nan(acc[1]).max_nan(acc[2].max_nan(acc[3])));
        max_nan(scalar::max(&x[i..]), m)
    }
}

/// `out[i] = e^(x[i] − shift)` for `i < n` with the vectorised exp (the scalar one in the tail).
///
/// # Safety
/// The CPU supports `V`'s instruction set; `x` and `out` hold `n` elements.
#[inline(always)]
unsafe fn exp_loop<V: Lanes>(x: *const V::Elem, shift: V::Elem, out: *mut V::Elem, n: usize) {
    let w = V::LANES;
    const { assert!(V::LANES <= 16, "the tail's padded copy holds 16 elements") };
    // SAFETY: offsets stay below `n`; the caller guarantees the instruction set and lengths. The
    // tail (fewer than `w <= 16` elements) is copied into and out of a 16-element local, which
    // the vector load and store stay inside.
    unsafe {
        let k = ExpConsts::<V>::new();
        let s = V::splat(shift);
        let mut i = 0;
        while i + 2 * w <= n {
            for j in [i, i + w] {
                exp_lanes(V::load(x.add(j)).sub(s), &k).store(out.add(j));
            }
            i += 2 * w;
        }
        while i + w <= n {
            exp_lanes(V::load(x.add(i)).sub(s), &k).store(out.add(i));
            i += w;
        }
        if i < n {
            // The tail through one more vector, from a padded copy: no call of the scalar `exp`
            // per element (a softmax row of 28 has a tail on every ISA). 16 covers every
            // register width (up to 16 f32 lanes).
            let mut pad = [shift; 16];
            let tail = n - i;
            std::ptr::copy_nonoverlapping(x.add(i), pad.as_mut_ptr(), tail);
            exp_lanes(V::load(pad.as_ptr()).sub(s), &k).store(pad.as_mut_ptr());
            std::ptr::copy_nonoverlapping(pad.as_ptr(), out.add(i), tail);
        }
    }
}

/// `ElementwiseKernels::exp_sum` on register type `V`: the vectorised exp block by block, each
/// block summed while it is still in L1, block totals combined pairwise.
///
/// # Safety
/// The CPU supports `V`'s instruction set; `x` is as long as `out`.
#[inline(always)]
pub(super) unsafe fn exp_sum<V: Lanes>(x: &[V::Elem], shift: V::Elem, out: &mut [V::Elem]) -> V::Elem {
    if x.len() <= SUM_BLOCK {
        // One block (a softmax row): the cascade's result for it, without the cascade.
        // SAFETY: forwarded from this function's contract.
        return unsafe {
            exp_loop::<V>(x.as_ptr(), shift, out.as_mut_ptr(), out.len());
            sum_block::<V>(out)
        };
    }
    let mut total = Cascade::new(BinaryOp::Add);
    for (x, out) in x.chunks(SUM_BLOCK).zip(out.chunks_mut(SUM_BLOCK)) {
        // SAFETY: forwarded from this function's contract; the chunks have equal lengths.
        unsafe {
            exp_loop::<V>(x.as_ptr(), shift, out.as_mut_ptr(), out.len());
            total.push(sum_block::<V>(out));
        }
    }
    total.finish(V::Elem::ZERO)
}

/// The [`Lanes`] methods that every instruction set writes the same way, one intrinsic or a
/// fixed chain of them each, expanded inside an ISA file's `impl Lanes for $name` (`$name` a
/// tuple struct around the register): `splat`, `load`, `store`, the four arithmetic operators,
/// `sqrt`, `pow2i` and `to_array`. The rest (`max_nan`, `min_nan`, `neg`, `abs`, `relu`,
/// `mul_add`) differ between instruction sets and stay in their files.
macro_rules! common_lanes_methods {
    (
        $name:ident, $elem:ty,
        splat: $set1:ident, load: $load:ident, store: $store:ident,
        add: $add:ident, sub: $sub:ident, mul: $mul:ident, div: $div:ident, sqrt: $sqrt:ident,
        to_int: $to_int:ident, from_int: $from_int:ident, shift_left: $shl:ident,
        mantissa_bits: $mbits:literal, pow2_magic: $pow2_magic:literal
    ) => {
        $crate::kernels::register_methods!($name, $elem, splat: $set1, load: $load, store: $store, mul: $mul);

        #[inline(always)]
        unsafe fn add(self, rhs: Self) -> Self {
            // SAFETY: the caller guarantees the instruction set (see `Lanes`).
            $name(unsafe { $add(self.0, rhs.0) })
        }

        #[inline(always)]
        unsafe fn sub(self, rhs: Self) -> Self {
            // SAFETY: as in `add`.
            $name(unsafe { $sub(self.0, rhs.0) })
        }

        #[inline(always)]
        unsafe fn div(self, rhs: Self) -> Self {
            // SAFETY: as in `add`.
            $name(unsafe { $div(self.0, rhs.0) })
        }

        #[inline(always)]
        unsafe fn sqrt(self) -> Self {
            // SAFETY: as in `add`.
            $name(unsafe { $sqrt(self.0) })
        }

        #[inline(always)]
        unsafe fn pow2i(self) -> Self {
            // SAFETY: as in `add`.
            $name(unsafe { $from_int($shl::<$mbits>($to_int($add(self.0, $set1($pow2_magic))))) })
        }

        #[inline(always)]
        unsafe fn to_array(self) -> [$elem; 16] {
            let mut out = [0.0; 16];
            // SAFETY: `out` has room for the register's lanes; the caller guarantees the
            // instruction set.
            unsafe { $store(out.as_mut_ptr(), self.0) };
            out
        }
    };
}
pub(super) use common_lanes_methods;

/// The `#[target_feature]` entry points of one instruction-set file: each forwards to the body
/// of the same name in this module, compiled with `$feature` enabled.
macro_rules! simd_entry_points {
    ($feature:literal) => {
        use $crate::kernels::elementwise::simd::{self, Lanes};
        use $crate::kernels::elementwise::{BinaryOp, Operand, UnaryOp};

        /// `ElementwiseKernels::binary` on this instruction set.
        ///
        /// # Safety
        /// The CPU supports this file's features, `V` is one of its register types, and slice
        /// operands are as long as `out`.
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn binary<V: Lanes>(
            op: BinaryOp,
            lhs: Operand<'_, V::Elem>,
            rhs: Operand<'_, V::Elem>,
            out: &mut [V::Elem],
        ) {
            // SAFETY: forwarded from this function's contract.
            unsafe { simd::binary::<V>(op, lhs, rhs, out) }
        }

        /// `ElementwiseKernels::binary_assign` on this instruction set.
        ///
        /// # Safety
        /// As [`binary`].
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn binary_assign<V: Lanes>(op: BinaryOp, acc: &mut [V::Elem], rhs: Operand<'_, V::Elem>) {
            // SAFETY: forwarded from this function's contract.
            unsafe { simd::binary_assign::<V>(op, acc, rhs) }
        }

        /// `ElementwiseKernels::unary` on this instruction set.
        ///
        /// # Safety
        /// As [`binary`].
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn unary<V: Lanes>(op: UnaryOp<V::Elem>, x: &[V::Elem], out: &mut [V::Elem]) {
            // SAFETY: forwarded from this function's contract.
            unsafe { simd::unary::<V>(op, x, out) }
        }

        /// `ElementwiseKernels::sum` on this instruction set.
        ///
        /// # Safety
        /// The CPU supports this file's features and `V` is one of its register types.
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn sum<V: Lanes>(x: &[V::Elem]) -> V::Elem {
            // SAFETY: forwarded from this function's contract.
            unsafe { simd::sum::<V>(x) }
        }

        /// `ElementwiseKernels::max` on this instruction set.
        ///
        /// # Safety
        /// As [`sum`].
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn max<V: Lanes>(x: &[V::Elem]) -> V::Elem {
            // SAFETY: forwarded from this function's contract.
            unsafe { simd::max::<V>(x) }
        }

        /// `ElementwiseKernels::exp_sum` on this instruction set.
        ///
        /// # Safety
        /// As [`binary`].
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn exp_sum<V: Lanes>(x: &[V::Elem], shift: V::Elem, out: &mut [V::Elem]) -> V::Elem {
            // SAFETY: forwarded from this function's contract.
            unsafe { simd::exp_sum::<V>(x, shift, out) }
        }

        /// `ElementwiseKernels::softmax_rows` on this instruction set.
        ///
        /// # Safety
        /// The CPU supports this file's features and `V` is one of its register types.
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn softmax_rows<'m, V: Lanes>(
            x: &[V::Elem],
            scale: V::Elem,
            mask: &dyn Fn(usize) -> Option<&'m [V::Elem]>,
            scratch: &mut [V::Elem],
            out: &mut [V::Elem],
        ) {
            let p = $crate::kernels::elementwise::rows::Simd::<V>::new();
            // SAFETY: forwarded from this function's contract.
            unsafe { $crate::kernels::elementwise::rows::softmax_rows(p, x, scale, mask, scratch, out) }
        }

        /// `ElementwiseKernels::adam` on this instruction set.
        ///
        /// # Safety
        /// The CPU supports this file's features, `V` is one of its register types, and the four
        /// slices have one length.
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn adam<V: Lanes>(
            step: &$crate::kernels::elementwise::AdamStep<V::Elem>,
            x: &mut [V::Elem],
            m: &mut [V::Elem],
            v: &mut [V::Elem],
            g: &[V::Elem],
        ) {
            // SAFETY: forwarded from this function's contract.
            unsafe { simd::adam::<V>(step, x, m, v, g) }
        }

        /// `ElementwiseKernels::sgd` on this instruction set.
        ///
        /// # Safety
        /// The CPU supports this file's features, `V` is one of its register types, `x` and `g`
        /// have one length, and `b` has it too when the step has momentum.
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn sgd<V: Lanes>(
            step: &$crate::kernels::elementwise::SgdStep<V::Elem>,
            x: &mut [V::Elem],
            b: &mut [V::Elem],
            g: &[V::Elem],
        ) {
            // SAFETY: forwarded from this function's contract.
            unsafe { simd::sgd::<V>(step, x, b, g) }
        }

        /// `ElementwiseKernels::softmax_backward_rows` on this instruction set.
        ///
        /// # Safety
        /// As [`softmax_rows`].
        #[target_feature(enable = $feature)]
        pub(super) unsafe fn softmax_backward_rows<V: Lanes>(
            y: &[V::Elem],
            dy: &[V::Elem],
            len: usize,
            scale: V::Elem,
            out: &mut [V::Elem],
        ) {
            let p = $crate::kernels::elementwise::rows::Simd::<V>::new();
            // SAFETY: forwarded from this function's contract.
            unsafe { $crate::kernels::elementwise::rows::softmax_backward_rows(p, y, dy, len, scale, out) }
        }
    };
}

#[allow(unused_imports)]
pub(super) use simd_entry_points;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pairwise_maximum_is_the_fold_bit_for_bit() {
        // Lanes drawn from values that tie (the zeros, repeated numbers), NaNs of different
        // payloads and infinities, for every length a register has.
        let values = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            f32::from_bits(0x7fc0_0001),
            f32::from_bits(0xffc0_0002),
            2.5,
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in [1, 2, 4, 8, 16] {
            for _ in 0..20_000 {
                let x: Vec<f32> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        values[(state % values.len() as u64) as usize]
                    })
                    .collect();
                let fold = x.iter().fold(f32::NEG_INFINITY, |m, &v| max_nan(v, m));
                let tree = max_pairwise(&mut x.clone());
                assert_eq!(tree.to_bits(), fold.to_bits(), "{x:?}");
            }
        }
    }
}
