//! `gemm` on every instruction-set path and `Tensor::matmul` against a naive reference computed
//! in f64: tile-edge sizes, strided operands, batch broadcasting, thread-count independence.

use proptest::prelude::*;
use tapegrad_tensor::kernels::gemm::{gemm_init_with, gemm_with, GemmKernels, Init, MatMut, MatRef};
use tapegrad_tensor::kernels::{available_isas, Isa};
use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Float, Generator, Tensor};

// ─── references ─────────────────────────────────────────────────────────────────

/// `Σ_p a(i, p) b(p, j)` and `Σ_p |a(i, p) b(p, j)|` in f64 (the second scales the tolerance).
fn reference<T: Float>(a: &MatRef<'_, T>, b: &MatRef<'_, T>) -> (Vec<f64>, Vec<f64>) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let at = |i: usize, p: usize| a.get(i, p).to_f64();
    let bt = |p: usize, j: usize| b.get(p, j).to_f64();
    let (mut sum, mut mag) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                sum[i * n + j] += at(i, p) * bt(p, j);
                mag[i * n + j] += (at(i, p) * bt(p, j)).abs();
            }
        }
    }
    (sum, mag)
}

/// The rounding error a length-`k` dot product may pick up in `T`, relative to `Σ |a b|`.
fn tolerance<T: Float>(k: usize) -> f64 {
    4.0 * (k as f64 + 2.0) * T::EPSILON.to_f64()
}

fn random_vec<T: Float>(len: usize, seed: u64) -> Vec<T> {
    Tensor::<T>::randn(&[len], &mut Generator::new(seed)).to_vec()
}

// ─── gemm on every path ─────────────────────────────────────────────────────────

/// One product's operands: `A` (`m x k`) and `B` (`k x n`) stored transposed or not, with a
/// leading-dimension pad and an offset, and `C` with its own pad.
#[derive(Clone, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    a_t: bool,
    b_t: bool,
    pad: usize,
    offset: usize,
    accumulate: bool,
    seed: u64,
}

impl Case {
    /// Runs the case on `isa` and checks it against the f64 reference; returns `C`.
    fn check<T: Float>(&self, isa: Isa) -> Vec<T> {
        let Case { m, n, k, a_t, b_t, pad, offset, accumulate, seed } = *self;
        let (a_rows, a_cols) = if a_t { (k, m) } else { (m, k) };
        let (b_rows, b_cols) = if b_t { (n, k) } else { (k, n) };
        let (lda, ldb, ldc) = (a_cols + pad, b_cols + pad, n + pad);
        let a_data = random_vec::<T>(offset + a_rows * lda, seed);
        let b_data = random_vec::<T>(offset + b_rows * ldb, seed + 1);
        let mut a = MatRef::new(&a_data, offset, [a_rows, a_cols], [lda, 1]);
        let mut b = MatRef::new(&b_data, offset, [b_rows, b_cols], [ldb, 1]);
        if a_t {
            a = a.t();
        }
        if b_t {
            b = b.t();
        }
        let c0 = random_vec::<T>(m * ldc, seed + 2);
        let mut c = c0.clone();
        gemm_with(isa, MatMut::new(&mut c, 0, [m, n], [ldc, 1]), a, b, accumulate);
        let (sum, mag) = reference(&a, &b);
        for i in 0..m {
            for j in 0..ldc {
                let (got, before) = (c[i * ldc + j].to_f64(), c0[i * ldc + j].to_f64());
                if j >= n {
                    assert_eq!(got, before, "{isa:?} wrote outside C at ({i}, {j}) in {self:?}");
                    continue;
                }
                let want = sum[i * n + j] + if accumulate { before } else { 0.0 };
                let tol = tolerance::<T>(k) * (mag[i * n + j] + before.abs()) + 1e-30;
                assert!((got - want).abs() <= tol, "{isa:?} {}: C({i}, {j}) = {got}, want {want} in {self:?}", T::NAME);
            }
        }
        c
    }
}

/// Sizes where tile edges hide: 0, 1, every kernel's `mr` and `nr` and their neighbours, odd
/// sizes that are not multiples of any vector width.
fn edge_sizes() -> Vec<usize> {
    let mut sizes = vec![0, 1, 2, 3, 5, 7, 9, 15, 17, 31, 33, 47, 65];
    for isa in available_isas() {
        for (mr, nr) in [
            (f32::microkernel(isa).mr(), f32::microkernel(isa).nr()),
            (f64::microkernel(isa).mr(), f64::microkernel(isa).nr()),
        ] {
            for s in [mr, nr] {
                sizes.extend([s - 1, s, s + 1]);
            }
        }
    }
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let sizes = edge_sizes();
    let size = move || prop::sample::select(sizes.clone());
    (
        size(),
        size(),
        prop_oneof![size(), 0usize..300],
        any::<bool>(),
        any::<bool>(),
        0usize..3,
        0usize..4,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(m, n, k, a_t, b_t, pad, offset, accumulate, seed)| Case {
            m,
            n,
            k,
            a_t,
            b_t,
            pad,
            offset,
            accumulate,
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(96), ..ProptestConfig::default() })]

    #[test]
    fn every_path_matches_the_reference_and_the_scalar_path(case in case_strategy()) {
        for isa in available_isas() {
            let c32 = case.check::<f32>(isa);
            let c64 = case.check::<f64>(isa);
            if isa == Isa::Scalar {
                continue;
            }
            // Against the scalar path on the same inputs (both already match the reference;
            // this pins the two paths together independently of it).
            let s32 = case.check::<f32>(Isa::Scalar);
            let s64 = case.check::<f64>(Isa::Scalar);
            let tol32 = tolerance::<f32>(case.k) * (case.k as f64 + 2.0) * 4.0;
            for (x, y) in c32.iter().zip(&s32) {
                prop_assert!((x - y).abs() as f64 <= tol32 * (1.0 + x.abs().max(y.abs()) as f64));
            }
            for (x, y) in c64.iter().zip(&s64) {
                prop_assert!((x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())));
            }
        }
    }
}

#[test]
fn blocks_larger_than_every_cache_block_are_stitched_correctly() {
    // m > mc, n > nc and k > kc for every kernel, so every loop of the nest runs more than once.
    for isa in available_isas() {
        let uk = f32::microkernel(isa);
        let case = Case {
            m: uk.mc() + 3,
            n: uk.nc() + 5,
            k: uk.kc() + 7,
            a_t: false,
            b_t: true,
            pad: 1,
            offset: 2,
            accumulate: true,
            seed: 7,
        };
        case.check::<f32>(isa);
        let uk = f64::microkernel(isa);
        let case = Case {
            m: uk.mc() + 1,
            n: uk.nc() + 3,
            k: uk.kc() * 2 + 1,
            a_t: true,
            b_t: false,
            pad: 0,
            offset: 0,
            accumulate: false,
            seed: 8,
        };
        case.check::<f64>(isa);
    }
}

#[test]
fn unsupported_paths_fall_back_to_scalar() {
    for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon] {
        let uk = f32::microkernel(isa);
        assert_eq!(uk.isa(), if isa.is_supported() { isa } else { Isa::Scalar });
        // Runs (on whatever path) and is right.
        Case { m: 9, n: 17, k: 5, a_t: false, b_t: false, pad: 0, offset: 0, accumulate: false, seed: 1 }
            .check::<f32>(isa);
    }
}

#[test]
fn expanded_operands_with_zero_strides() {
    // Every row of A is the same row; every column of B the same column.
    let a = [1.0f32, 2.0, 3.0];
    let b = [4.0f32, 5.0, 6.0];
    for isa in available_isas() {
        let mut c = vec![0.0f32; 20 * 30];
        let am = MatRef::new(&a, 0, [20, 3], [0, 1]);
        let bm = MatRef::new(&b, 0, [3, 30], [1, 0]);
        gemm_with(isa, MatMut::row_major(&mut c, 20, 30), am, bm, false);
        assert!(c.iter().all(|&v| v == 32.0), "{isa:?}");
    }
}

/// Runs `f` on a fresh rayon pool of `threads` threads.
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a rayon pool").install(f)
}

#[test]
fn results_are_bit_identical_for_one_and_two_threads() {
    // Large enough to be split: many blocks of M; then few rows, so N is split instead.
    for (m, n, k) in [(301, 203, 301), (9, 1000, 300), (1, 3000, 700)] {
        for isa in available_isas() {
            let run = |threads: usize| {
                on_threads(threads, || {
                    let case = Case { m, n, k, a_t: false, b_t: false, pad: 0, offset: 0, accumulate: false, seed: 3 };
                    (case.check::<f32>(isa), case.check::<f64>(isa))
                })
            };
            let (one, two) = (run(1), run(2));
            assert!(one.0.iter().zip(&two.0).all(|(x, y)| x.to_bits() == y.to_bits()), "{isa:?} f32 {m}x{n}x{k}");
            assert!(one.1.iter().zip(&two.1).all(|(x, y)| x.to_bits() == y.to_bits()), "{isa:?} f64 {m}x{n}x{k}");
        }
    }
}

/// `gemm_init_with` against filling `C` with the vector and accumulating the product with
/// `gemm_with`, bit for bit, `A` and `B` stored as they are or transposed, `C` row-major (with a
/// pad) or transposed, the vector along rows or columns, on every path this CPU has and on 1
/// and 2 threads.
fn check_init(isa: Isa, (m, n, k): (usize, usize, usize), [a_t, b_t, c_t]: [bool; 3], each_row: bool, threads: usize) {
    let a_data = random_vec::<f32>(m * k + 1, 11);
    let b_data = random_vec::<f32>(k * n + 2, 12);
    let a = if a_t { MatRef::new(&a_data, 1, [k, m], [m, 1]).t() } else { MatRef::new(&a_data, 1, [m, k], [k, 1]) };
    let b = if b_t { MatRef::new(&b_data, 2, [n, k], [k, 1]).t() } else { MatRef::new(&b_data, 2, [k, n], [n, 1]) };
    let v = random_vec::<f32>(if each_row { n } else { m }, 13);
    let init = if each_row { Init::EachRow(&v) } else { Init::EachColumn(&v) };
    let ld = if c_t { m + 1 } else { n + 3 };
    let (dims, strides) = ([m, n], if c_t { [1, ld] } else { [ld, 1] });
    let len = if c_t { n * ld } else { m * ld };
    let old = random_vec::<f32>(len, 14);
    let (mut got, mut want) = (old.clone(), old);
    for i in 0..m {
        for j in 0..n {
            want[i * strides[0] + j * strides[1]] = if each_row { v[j] } else { v[i] };
        }
    }
    on_threads(threads, || {
        gemm_init_with(isa, MatMut::new(&mut got, 0, dims, strides), a, b, init);
        gemm_with(isa, MatMut::new(&mut want, 0, dims, strides), a, b, true);
    });
    let what =
        format!("{isa:?} {m} x {n} x {k}, transposed A {a_t} B {b_t} C {c_t}, each row {each_row}, {threads} threads");
    for (e, (x, y)) in got.iter().zip(&want).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{what}: element {e} of C's slice");
    }
}

#[test]
fn a_start_of_c_is_the_same_as_filling_c_and_accumulating() {
    // Every path: short K (40 x 70 x 9, B row-major), few rows (5 x 300), thin dot products
    // (200 x 10 and, transposed, 10 x 200, with B's columns contiguous), small (30 x 50 x 40),
    // packed with A whole, packed in blocks (several slices of K, and split along K on 2
    // threads), k = 0, and empty sides.
    let shapes = [
        (40, 70, 9),
        (5, 300, 100),
        (200, 10, 300),
        (10, 200, 300),
        (30, 50, 40),
        (128, 300, 100),
        (301, 203, 1500),
        (64, 64, 3000),
        (17, 33, 0),
        (0, 5, 3),
        (4, 0, 3),
    ];
    for isa in available_isas() {
        for shape in shapes {
            for (transposed, each_row) in [
                ([false, false, false], true),
                ([true, false, false], false),
                ([false, false, true], true),
                ([true, false, true], false),
                ([false, true, false], true),
                ([false, true, true], false),
            ] {
                for threads in [1, 2] {
                    check_init(isa, shape, transposed, each_row, threads);
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "gemm: the vector C starts as must have 3 elements")]
fn a_start_of_the_wrong_length_is_a_clear_panic() {
    let (a, b, mut c, v) = ([0.0f32; 4], [0.0f32; 6], [0.0f32; 6], [0.0f32; 2]);
    gemm_init_with(
        Isa::Scalar,
        MatMut::row_major(&mut c, 2, 3),
        MatRef::row_major(&a, 2, 2),
        MatRef::row_major(&b, 2, 3),
        Init::EachRow(&v),
    );
}

// ─── Tensor::matmul ─────────────────────────────────────────────────────────────

/// PyTorch's matmul on row-major data, in f64, written from the definition.
fn matmul_reference(x: &[f64], xs: &[usize], y: &[f64], ys: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let xs2: Vec<usize> = if xs.len() == 1 { vec![1, xs[0]] } else { xs.to_vec() };
    let ys2: Vec<usize> = if ys.len() == 1 { vec![ys[0], 1] } else { ys.to_vec() };
    let (xb, yb) = (&xs2[..xs2.len() - 2], &ys2[..ys2.len() - 2]);
    let nb = xb.len().max(yb.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= nb {
            s[i + s.len() - nb]
        } else {
            1
        }
    };
    let batch: Vec<usize> = (0..nb).map(|i| dim(xb, i).max(dim(yb, i))).collect();
    let (m, k, n) = (xs2[xs2.len() - 2], xs2[xs2.len() - 1], ys2[ys2.len() - 1]);
    let count: usize = batch.iter().product();
    let mut out = Vec::with_capacity(count * m * n);
    for bi in 0..count {
        // The operand's batch index: each broadcast dim of size 1 stays at 0.
        let (mut rem, mut xi, mut yi, mut xstride, mut ystride) = (bi, 0, 0, 1, 1);
        for d in (0..nb).rev() {
            let i = rem % batch[d];
            rem /= batch[d];
            let (xd, yd) = (dim(xb, d), dim(yb, d));
            xi += if xd == 1 { 0 } else { i * xstride };
            yi += if yd == 1 { 0 } else { i * ystride };
            xstride *= xd;
            ystride *= yd;
        }
        for i in 0..m {
            for j in 0..n {
                out.push((0..k).map(|p| x[(xi * m + i) * k + p] * y[(yi * k + p) * n + j]).sum());
            }
        }
    }
    let mut shape = batch;
    if xs.len() > 1 {
        shape.push(m);
    }
    if ys.len() > 1 {
        shape.push(n);
    }
    (out, shape)
}

/// How an operand of the wanted shape is built: plain, as a transposed view, as a narrowed
/// view, or (for a leading dim of size 1 in the wanted shape) as an expanded view.
#[derive(Clone, Copy, Debug)]
enum View {
    Plain,
    Transposed,
    Narrowed,
    Offset,
}

fn make<T: Float>(shape: &[usize], view: View, seed: u64) -> Tensor<T> {
    let mut gen = Generator::new(seed);
    let nd = shape.len();
    match view {
        View::Transposed if nd >= 2 => {
            let mut s = shape.to_vec();
            s.swap(nd - 2, nd - 1);
            Tensor::<T>::randn(&s, &mut gen).transpose(nd - 2, nd - 1).expect("a valid transpose")
        }
        View::Narrowed => {
            let mut s = shape.to_vec();
            s[nd - 1] += 3;
            Tensor::<T>::randn(&s, &mut gen).narrow(nd - 1, 1, shape[nd - 1]).expect("a valid narrow")
        }
        View::Offset => {
            let mut s = shape.to_vec();
            s[0] += 1;
            Tensor::<T>::randn(&s, &mut gen).narrow(0, 1, shape[0]).expect("a valid narrow")
        }
        _ => Tensor::<T>::randn(shape, &mut gen),
    }
}

fn view_strategy() -> impl Strategy<Value = View> {
    prop_oneof![Just(View::Plain), Just(View::Transposed), Just(View::Narrowed), Just(View::Offset)]
}

/// A pair of shapes matmul accepts: 1-D operands, or matrices with up to three batch dims that
/// broadcast (each operand keeps a suffix of the batch dims, some of them turned into 1).
fn shapes_strategy() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    let d = || prop_oneof![Just(0usize), Just(1usize), 1usize..20];
    let batch = prop::collection::vec((1usize..4, any::<bool>(), any::<bool>()), 0..4);
    (d(), d(), d(), batch, 0usize..4, 0usize..4, any::<bool>(), any::<bool>()).prop_map(
        |(m, k, n, batch, x_drop, y_drop, x_vec, y_vec)| {
            let keep = |drop: usize, ones: fn(&(usize, bool, bool)) -> bool| -> Vec<usize> {
                batch.iter().skip(drop.min(batch.len())).map(|b| if ones(b) { 1 } else { b.0 }).collect()
            };
            let xb = keep(x_drop, |b| b.1);
            let yb = keep(y_drop, |b| b.2);
            let xs = if x_vec { vec![k] } else { [xb, vec![m, k]].concat() };
            let ys = if y_vec { vec![k] } else { [yb, vec![k, n]].concat() };
            (xs, ys)
        },
    )
}

fn check_matmul<T: Float>(xs: &[usize], ys: &[usize], xv: View, yv: View, seed: u64) -> Result<(), TestCaseError> {
    let x = make::<T>(xs, xv, seed);
    let y = make::<T>(ys, yv, seed + 1);
    let z = x.matmul(&y).map_err(|e| TestCaseError::fail(format!("{xs:?} @ {ys:?}: {e}")))?;
    let to64 = |t: &Tensor<T>| t.to_vec().into_iter().map(|v| v.to_f64()).collect::<Vec<_>>();
    let (want, shape) = matmul_reference(&to64(&x), xs, &to64(&y), ys);
    prop_assert_eq!(z.shape(), shape.as_slice(), "{:?} @ {:?}", xs, ys);
    let k = xs[xs.len() - 1];
    let scale = x.to_vec().iter().fold(0.0f64, |s, v| s.max(v.to_f64().abs()))
        * y.to_vec().iter().fold(0.0f64, |s, v| s.max(v.to_f64().abs()));
    for (got, want) in z.to_vec().iter().zip(&want) {
        prop_assert!(
            (got.to_f64() - want).abs() <= tolerance::<T>(k) * k as f64 * scale + 1e-30,
            "{:?} @ {:?}: {} vs {}",
            xs,
            ys,
            got,
            want
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(128), ..ProptestConfig::default() })]

    #[test]
    fn matmul_matches_the_reference((xs, ys) in shapes_strategy(), xv in view_strategy(), yv in view_strategy(), seed in any::<u64>()) {
        check_matmul::<f32>(&xs, &ys, xv, yv, seed)?;
        check_matmul::<f64>(&xs, &ys, xv, yv, seed)?;
    }
}

#[test]
fn vector_promotion_follows_pytorch() {
    let v = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).unwrap();
    let m = Tensor::from_vec((0..6).map(f64::from).collect(), &[3, 2]).unwrap();
    let dot = v.matmul(&v).unwrap();
    assert_eq!((dot.shape(), dot.item().unwrap()), (&[][..], 14.0));
    let vm = v.matmul(&m).unwrap();
    assert_eq!((vm.shape(), vm.to_vec()), (&[2][..], vec![16.0, 22.0]));
    let mv = m.t().unwrap().matmul(&v).unwrap();
    assert_eq!((mv.shape(), mv.to_vec()), (&[2][..], vec![16.0, 22.0]));
    let batched = Tensor::<f64>::ones(&[4, 2, 3]).matmul(&v).unwrap();
    assert_eq!((batched.shape(), batched.to_vec()), (&[4, 2][..], vec![6.0; 8]));
    let vb = v.matmul(&Tensor::<f64>::ones(&[5, 3, 2])).unwrap();
    assert_eq!(vb.shape(), &[5, 2]);
}

#[test]
fn expanded_and_stacked_batches() {
    // A batch of rows times one shared matrix (folded into one tall product) and an expanded
    // batch on the left (stride 0), both against the per-batch loop.
    let mut gen = Generator::new(5);
    let x = Tensor::<f32>::randn(&[3, 4, 5, 6], &mut gen);
    let w = Tensor::<f32>::randn(&[6, 7], &mut gen);
    let x1 = Tensor::<f32>::randn(&[1, 5, 6], &mut gen).expand(&[4, 5, 6]).unwrap();
    for (lhs, rhs) in [(&x, &w), (&x1, &w)] {
        let z = lhs.matmul(rhs).unwrap();
        let per = lhs.contiguous().reshape(&[lhs.numel() / 6, 6]).unwrap().matmul(rhs).unwrap();
        let diff = z.to_vec().iter().zip(per.to_vec()).fold(0.0f32, |d, (a, b)| d.max((a - b).abs()));
        assert!(diff < 1e-5, "{diff}");
    }
}

#[test]
fn batched_matmul_is_thread_count_independent() {
    let mut gen = Generator::new(9);
    let x = Tensor::<f32>::randn(&[6, 40, 50], &mut gen);
    let y = Tensor::<f32>::randn(&[1, 50, 30], &mut gen);
    let big = Tensor::<f32>::randn(&[2, 200, 300], &mut gen);
    let bigy = Tensor::<f32>::randn(&[300, 150], &mut gen).t().unwrap().contiguous().t().unwrap();
    let run = |t| on_threads(t, || (x.matmul(&y).unwrap().to_vec(), big.matmul(&bigy).unwrap().to_vec()));
    let (one, two) = (run(1), run(2));
    assert!(one.0.iter().zip(&two.0).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(one.1.iter().zip(&two.1).all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn bad_shapes_are_errors_that_name_the_op_and_shapes() {
    let a = Tensor::<f32>::zeros(&[2, 3]);
    let b = Tensor::<f32>::zeros(&[2, 4]);
    assert_eq!(a.matmul(&b).unwrap_err().to_string(), "matmul: [2, 3] and [2, 4]: inner dimensions 3 and 2 differ");
    let s = Tensor::<f32>::scalar(1.0);
    assert_eq!(s.matmul(&a).unwrap_err().to_string(), "matmul: [] and [2, 3]: both operands need at least one dim");
    let x = Tensor::<f32>::zeros(&[2, 2, 3]);
    let y = Tensor::<f32>::zeros(&[3, 3, 4]);
    assert_eq!(
        x.matmul(&y).unwrap_err().to_string(),
        "matmul: [2, 2, 3] and [3, 3, 4]: the batch dims cannot be broadcast"
    );
    let v = Tensor::<f32>::zeros(&[4]);
    assert_eq!(v.matmul(&a).unwrap_err().to_string(), "matmul: [4] and [2, 3]: inner dimensions 4 and 2 differ");
}

#[test]
fn every_short_last_panel_of_m_is_right_and_matches_the_full_tile_bit_for_bit() {
    // m = mr + t for every tail t < mr: the last panel runs an edge kernel (where the path has
    // one) or the full tile on zero-padded rows. Rows computed by either agree to the bit with
    // the same rows computed inside a full panel (the same FMAs in the same order).
    for isa in available_isas() {
        let mr = f32::microkernel(isa).mr();
        // B row-major (not contiguous along K), so that m = mr + t <= 16 stays on the packed
        // path rather than the dot-product one.
        let full =
            Case { m: 2 * mr, n: 37, k: 45, a_t: false, b_t: false, pad: 1, offset: 0, accumulate: true, seed: 11 };
        let c_full = full.check::<f32>(isa);
        for tail in 1..mr {
            let case = Case { m: mr + tail, ..full.clone() };
            let c = case.check::<f32>(isa);
            let ldc = full.n + full.pad;
            assert_eq!(c[..(mr + tail) * ldc], c_full[..(mr + tail) * ldc], "{isa:?} tail {tail}");
            Case { m: f64::microkernel(isa).mr() + tail, a_t: true, ..case }.check::<f64>(isa);
        }
    }
}

#[test]
fn thin_products_of_operands_contiguous_along_k_are_right_for_every_width() {
    // A row-major and B the transpose of a row-major matrix (a linear layer's x · Wᵀ): the
    // dot-product path where the instruction set has one, for every thin width and both
    // orientations (thin n, and thin m with a wide n), full and partial vectors of K.
    for isa in available_isas() {
        for thin in 1..=16 {
            for (k, accumulate) in [(16, false), (45, true), (1024, false), (2100, true)] {
                let case = Case { m: 70, n: thin, k, a_t: false, b_t: true, pad: 3, offset: 1, accumulate, seed: 5 };
                case.check::<f32>(isa);
                Case { m: thin, n: 70, ..case }.check::<f32>(isa);
                Case { m: 1, ..case }.check::<f32>(isa);
            }
        }
        // A K long enough that the copy of Bᵀ (16 rows) outgrows the kept packing buffer. Random
        // values' rounding bound over 70,000 terms exceeds the sums themselves (an all-zero C
        // would pass it), so this one uses small integers, whose sums f32 holds exactly.
        check_exact_integers(isa, 3, 16, 70_000, 6);
    }
}

/// `A Bᵀ` for `A` `[m, k]` and `B` `[n, k]` row-major, of integers in `-4..=4`, on `isa`: every
/// partial sum is an integer below 2^24 in magnitude, so f32 computes it exactly in any order and
/// the result must equal the integer reference bit for bit.
fn check_exact_integers(isa: Isa, m: usize, n: usize, k: usize, seed: u64) {
    assert!(16 * k < 1 << 24, "k = {k} is too long for exact f32 sums");
    let ints = |len, seed| -> Vec<f32> {
        random_vec::<f32>(len, seed).iter().map(|v| (v * 2.0).round().clamp(-4.0, 4.0)).collect()
    };
    let (a, b) = (ints(m * k, seed), ints(n * k, seed + 1));
    let mut c = vec![f32::NAN; m * n];
    let bt = MatRef::row_major(&b, n, k).t();
    gemm_with(isa, MatMut::row_major(&mut c, m, n), MatRef::row_major(&a, m, k), bt, false);
    let want: Vec<f32> = (0..m * n)
        .map(|ij| {
            let (i, j) = (ij / n, ij % n);
            (0..k).map(|p| (a[i * k + p] * b[j * k + p]) as i64).sum::<i64>() as f32
        })
        .collect();
    assert!(want.iter().any(|&v| v.abs() > 100.0), "the reference is not trivially small: {want:?}");
    assert_eq!(c, want, "{isa:?}: A Bᵀ with k = {k}");
}

#[test]
fn short_k_products_are_right_for_every_depth_and_match_the_packed_fma_order() {
    // k <= 16 into a row-major C with B row-major (a classifier's input gradient dz · W): the
    // short-K path where the instruction set has one. Each element is summed over p in order,
    // one FMA at a time, as every SIMD microkernel does, so AVX-512 and AVX2 agree to the bit.
    for k in 1..=16 {
        for (m, n, accumulate, a_t) in [(37, 70, false, false), (5, 16, true, true), (1, 1030, false, false)] {
            check_simd_paths_agree(&Case { m, n, k, a_t, b_t: false, pad: 2, offset: 3, accumulate, seed: k as u64 });
        }
    }
}

#[test]
fn the_direct_paths_agree_with_the_packed_path_to_the_bit() {
    // The short-K and few-rows paths sum each element over p in order, one FMA at a time from
    // zero, as the packed microkernel does: C = A · B through them equals, bit for bit, Cᵀ =
    // Bᵀ · Aᵀ computed by the packed path (whose operands are not contiguous where the direct
    // paths need it), on every path this CPU has, with A row-major, transposed and strided
    // both ways.
    for isa in available_isas() {
        let shapes = [
            (37, 70, 9),
            (16, 784, 9),
            (4, 1030, 16),
            (5, 33, 1),
            (10, 200, 64),
            (3, 40, 250),
            (12, 100, 33),
            (1, 70, 1000),
        ];
        for (m, n, k) in shapes {
            let (data, b) = (random_vec::<f32>(2 * m * k + 8, 3), random_vec::<f32>(k * n, 4));
            let b = MatRef::row_major(&b, k, n);
            for strides in [[k, 1], [1, m], [2 * k, 2], [2, 2 * m]] {
                let a = MatRef::new(&data, 1, [m, k], strides);
                let mut c = vec![0.0f32; m * n];
                gemm_with(isa, MatMut::row_major(&mut c, m, n), a, b, false);
                let mut ct = vec![0.0f32; n * m];
                gemm_with(isa, MatMut::row_major(&mut ct, n, m), b.t(), a.t(), false);
                for (ij, &v) in c.iter().enumerate() {
                    let (i, j) = (ij / n, ij % n);
                    let what = format!("{isa:?} {m} x {n} x {k}, A {strides:?}: C({i}, {j})");
                    assert_eq!(v.to_bits(), ct[j * m + i].to_bits(), "{what}");
                }
            }
        }
    }
}

#[test]
fn the_small_product_path_agrees_with_the_packed_path_to_the_bit() {
    // Small products (every side at most 64, a row-major C) read A and B where they are (B
    // transposed once into a row-major scratch when its rows are not contiguous) and sum each
    // element over p in order from zero, as the packed microkernel does. The same product into a
    // column-major C takes the packed path: the bits must agree, for A and B row-major or read
    // through a transpose (attention's `q · kᵀ`, `dSᵀ · q`), with and without accumulation.
    for isa in available_isas() {
        for (m, n, k) in [
            (28, 28, 16),
            (28, 16, 28),
            (64, 64, 64),
            (1, 8, 1),
            (5, 9, 33),
            (64, 8, 17),
            (13, 61, 64),
            (9, 32, 5),
            (17, 17, 3),
        ] {
            let a_rows = random_vec::<f32>(m * k, 5);
            let a_cols: Vec<f32> = (0..k * m).map(|i| a_rows[(i % m) * k + i / m]).collect();
            let b_rows = random_vec::<f32>(k * n, 6);
            let b_cols: Vec<f32> = (0..n * k).map(|i| b_rows[(i % k) * n + i / k]).collect();
            let start = random_vec::<f32>(m * n, 7);
            let a_views = [MatRef::row_major(&a_rows, m, k), MatRef::row_major(&a_cols, k, m).t()];
            let b_views = [MatRef::row_major(&b_rows, k, n), MatRef::row_major(&b_cols, n, k).t()];
            for (a, b) in a_views.into_iter().flat_map(|a| b_views.map(|b| (a, b))) {
                for accumulate in [false, true] {
                    let mut c = start.clone();
                    gemm_with(isa, MatMut::row_major(&mut c, m, n), a, b, accumulate);
                    // C column-major: element (i, j) at j · m + i.
                    let mut packed: Vec<f32> = (0..m * n).map(|ji| start[(ji % m) * n + ji / m]).collect();
                    gemm_with(isa, MatMut::new(&mut packed, 0, [m, n], [1, m]), a, b, accumulate);
                    for (ij, &v) in c.iter().enumerate() {
                        let (i, j) = (ij / n, ij % n);
                        let want = packed[j * m + i];
                        assert_eq!(v.to_bits(), want.to_bits(), "{isa:?} {m} x {n} x {k} ({accumulate}): C({i}, {j})");
                    }
                }
            }
        }
    }
}

#[test]
fn short_k_results_do_not_depend_on_where_b_starts() {
    // The short-K path starts its tiles at B's first 64-byte boundary, the columns before it
    // first: that must change nothing. The same operands at an aligned and at misaligned
    // addresses give the same bits, and the reference's values.
    let (m, n, k): (usize, usize, usize) = (37, 1030, 10);
    let ldb = n.next_multiple_of(16);
    let a = random_vec::<f32>(m * k, 1);
    let values = random_vec::<f32>(k * ldb, 2);
    let mut store = vec![0.0f32; k * ldb + 32];
    let aligned = store.as_ptr().align_offset(64);
    let mut results = Vec::new();
    for offset in [aligned, aligned + 1, aligned + 4] {
        store[offset..offset + k * ldb].copy_from_slice(&values);
        let b = MatRef::new(&store, offset, [k, n], [ldb, 1]);
        let a = MatRef::row_major(&a, m, k);
        let mut c = vec![0.0f32; m * n];
        gemm_with(tapegrad_tensor::kernels::active_isa(), MatMut::row_major(&mut c, m, n), a, b, false);
        let (want, scale) = reference(&a, &b);
        for (i, (&got, (&w, &s))) in c.iter().zip(want.iter().zip(&scale)).enumerate() {
            assert!((got as f64 - w).abs() <= tolerance::<f32>(k) * s, "offset {offset}, element {i}: {got} vs {w}");
        }
        results.push(c);
    }
    assert!(results.iter().all(|c| c == &results[0]), "results differ with the alignment of B");
}

/// Runs `case` on every available path (each checked against the reference) and asserts that
/// the AVX-512 and AVX2 results are equal to the bit, when both paths run here.
fn check_simd_paths_agree(case: &Case) {
    let isas = available_isas();
    let results: Vec<Vec<f32>> = isas.iter().map(|&isa| case.check::<f32>(isa)).collect();
    if let (Some(i512), Some(i2)) =
        (isas.iter().position(|&i| i == Isa::Avx512), isas.iter().position(|&i| i == Isa::Avx2))
    {
        assert_eq!(results[i512], results[i2], "{case:?}");
    }
}

#[test]
fn few_row_products_are_right_for_every_height_and_match_the_packed_fma_order() {
    // m <= 12 rows of a row-major C with B row-major (a classifier's weight gradient dzᵀ · h):
    // the few-rows path where the instruction set has one. With k within every path's kc (256
    // here) each element is one FMA chain over p in order, so AVX-512 and AVX2 agree to the bit.
    for m in 1..=12 {
        for (n, k, accumulate, a_t) in [(33, 17, false, true), (70, 128, true, false), (1030, 200, false, true)] {
            check_simd_paths_agree(&Case { m, n, k, a_t, b_t: false, pad: 1, offset: 2, accumulate, seed: m as u64 });
        }
    }
    // Past kc the path is not taken (the packed one sums K in slices); still right.
    Case { m: 10, n: 64, k: 1500, a_t: true, b_t: false, pad: 0, offset: 0, accumulate: false, seed: 9 }
        .check::<f32>(Isa::Avx512);
}
