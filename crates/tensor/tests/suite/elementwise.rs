//! Elementwise ops against naive f64 references: random shapes (with 0- and 1-sized dims),
//! broadcasting, contiguous / transposed / narrowed / expanded inputs, f32 and f64; every
//! available SIMD path against the scalar kernels; thread-count independence; error messages.

use proptest::prelude::*;
use tapegrad_tensor::kernels::elementwise::{BinaryOp, ElementwiseKernels, Operand, UnaryOp};
use tapegrad_tensor::kernels::{available_isas, Isa};
use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Float, Generator, Tensor};

use tapegrad_golden as golden_file;

use crate::common::{
    bits, close, f64s, fill, make, same, shape_strategy, unravel, view_strategy, with_threads, Lcg, View,
};

/// A case of PyTorch's golden file `ops.json` (in the `tapegrad-golden` crate).
fn golden_case(name: &str) -> serde_json::Value {
    golden_file::case("ops.json", name)
}

fn golden_tensor(v: &serde_json::Value) -> Tensor<f64> {
    golden_file::tensor(v)
}

// ─── helpers ───────────────────────────────────────────────────────────────────

/// NumPy's broadcast of two shapes, naively.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let l = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
            let r = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
            if l == r || r == 1 {
                Some(l)
            } else if l == 1 {
                Some(r)
            } else {
                None
            }
        })
        .collect()
}

/// The row-major index into `shape` (right-aligned, broadcast) of the output multi-index.
fn source_index(out_index: &[usize], shape: &[usize]) -> usize {
    let lead = out_index.len() - shape.len();
    shape.iter().enumerate().fold(0, |acc, (d, &n)| acc * n + if n == 1 { 0 } else { out_index[lead + d] })
}

/// `f` over `a` and `b` broadcast together, in f64.
fn reference_binary(
    a: &[f64],
    ash: &[usize],
    b: &[f64],
    bsh: &[usize],
    f: impl Fn(f64, f64) -> f64,
) -> (Vec<usize>, Vec<f64>) {
    let shape = broadcast(ash, bsh).unwrap();
    let n: usize = shape.iter().product();
    let out = (0..n)
        .map(|i| {
            let index = unravel(i, &shape);
            f(a[source_index(&index, ash)], b[source_index(&index, bsh)])
        })
        .collect();
    (shape, out)
}

/// A broadcast-compatible pair of shapes from one output shape: each drops some leading dims
/// and sets the dims a mask selects to 1.
fn operand_shape(out: &[usize], drop: usize, ones: u32) -> Vec<usize> {
    out[drop.min(out.len())..].iter().enumerate().map(|(d, &n)| if ones >> d & 1 == 1 { 1 } else { n }).collect()
}

fn f64_ref(op: BinaryOp) -> fn(f64, f64) -> f64 {
    match op {
        BinaryOp::Add => |a, b| a + b,
        BinaryOp::Sub => |a, b| a - b,
        BinaryOp::Mul => |a, b| a * b,
        BinaryOp::Div => |a, b| a / b,
        BinaryOp::Maximum => |a, b| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.max(b)
            }
        },
        BinaryOp::Minimum => |a, b| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.min(b)
            }
        },
    }
}

const BINARY_OPS: [BinaryOp; 6] =
    [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum, BinaryOp::Minimum];

fn apply_method<T: Float>(op: BinaryOp, a: &Tensor<T>, b: &Tensor<T>) -> tapegrad_tensor::Result<Tensor<T>> {
    match op {
        BinaryOp::Add => a.add(b),
        BinaryOp::Sub => a.sub(b),
        BinaryOp::Mul => a.mul(b),
        BinaryOp::Div => a.div(b),
        BinaryOp::Maximum => a.maximum(b),
        BinaryOp::Minimum => a.minimum(b),
    }
}

// ─── binary ops with broadcasting ──────────────────────────────────────────────

fn check_binary<T: Float>(shape: &[usize], drops: (usize, usize), ones: (u32, u32), views: (View, View), seed: u64) {
    let mut rng = Lcg(seed);
    let (ash, bsh) = (operand_shape(shape, drops.0, ones.0), operand_shape(shape, drops.1, ones.1));
    let (a, b) = (make::<T>(&ash, views.0, &mut rng, false), make::<T>(&bsh, views.1, &mut rng, false));
    for op in BINARY_OPS {
        let got = apply_method(op, &a, &b).unwrap();
        let (want_shape, want) = reference_binary(&f64s(&a), &ash, &f64s(&b), &bsh, f64_ref(op));
        assert_eq!(got.shape(), &want_shape[..], "{op:?} {ash:?} {bsh:?}");
        assert!(got.is_contiguous());
        // +, -, ×, ÷ are correctly rounded, so T's result is the f64 result rounded to T.
        for (g, w) in f64s(&got).into_iter().zip(want) {
            assert!(same(g, T::from_f64(w).to_f64()), "{op:?} {ash:?} {:?} {bsh:?} {:?}: {g} vs {w}", views.0, views.1);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(96), ..ProptestConfig::default() })]

    #[test]
    fn binary_ops_broadcast_like_numpy(
        shape in shape_strategy(4),
        drops in (0usize..3, 0usize..3),
        ones in (any::<u32>(), any::<u32>()),
        views in (view_strategy(), view_strategy()),
        seed in any::<u64>(),
    ) {
        check_binary::<f32>(&shape, drops, ones, views, seed);
        check_binary::<f64>(&shape, drops, ones, views, seed);
    }

    #[test]
    fn unary_ops_match_the_f64_formulas(shape in shape_strategy(4), view in view_strategy(), seed in any::<u64>()) {
        check_unary::<f32>(&shape, view, seed, 2e-5, 2e-6);
        check_unary::<f64>(&shape, view, seed, 1e-13, 1e-14);
    }

    #[test]
    fn map_and_zip_map_follow_the_closure(shape in shape_strategy(3), views in (view_strategy(), view_strategy()), seed in any::<u64>()) {
        let mut rng = Lcg(seed);
        let x = make::<f32>(&shape, views.0, &mut rng, false);
        let y = x.map(|v| v * 3.0 - 1.0);
        prop_assert_eq!(y.shape(), x.shape());
        prop_assert_eq!(y.to_vec(), x.to_vec().iter().map(|v| v * 3.0 - 1.0).collect::<Vec<_>>());
        let rshape = operand_shape(&shape, 1, 0b10);
        let r = make::<f32>(&rshape, views.1, &mut rng, false);
        let z = x.zip_map(&r, |a, b| a * b + 1.0).unwrap();
        let (want_shape, want) = reference_binary(&f64s(&x), &shape, &f64s(&r), &rshape, |a, b| ((a as f32) * (b as f32) + 1.0) as f64);
        prop_assert_eq!(z.shape(), &want_shape[..]);
        prop_assert_eq!(f64s(&z), want);
    }
}

// ─── unary ops ─────────────────────────────────────────────────────────────────

fn gelu(x: f64) -> f64 {
    x * 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

fn check_unary<T: Float>(shape: &[usize], view: View, seed: u64, rtol: f64, atol: f64) {
    let mut rng = Lcg(seed);
    let x = make::<T>(shape, view, &mut rng, false);
    let xs = f64s(&x);
    type Case<T> = (&'static str, fn(&Tensor<T>) -> Tensor<T>, fn(f64) -> f64, bool);
    let cases: [Case<T>; 14] = [
        ("neg", |t| t.neg(), |v| -v, true),
        ("abs", |t| t.abs(), f64::abs, true),
        ("relu", |t| t.relu(), |v| if v > 0.0 { v } else { 0.0 }, true),
        ("sqrt", |t| t.sqrt(), f64::sqrt, true),
        ("add_scalar", |t| t.add_scalar(T::from_f64(0.75)), |v| v + 0.75, true),
        ("mul_scalar", |t| t.mul_scalar(T::from_f64(-1.5)), |v| v * -1.5, true),
        ("exp", |t| t.exp(), f64::exp, false),
        ("log", |t| t.log(), f64::ln, false),
        ("tanh", |t| t.tanh(), f64::tanh, false),
        ("sigmoid", |t| t.sigmoid(), |v| 1.0 / (1.0 + (-v).exp()), false),
        ("gelu", |t| t.gelu(), gelu, false),
        ("gelu_tanh", |t| t.gelu_tanh(), gelu_tanh, false),
        ("powf", |t| t.powf(T::from_f64(3.0)), |v| v.powf(3.0), false),
        ("powf", |t| t.abs().powf(T::from_f64(0.5)), |v| v.abs().powf(0.5), false),
    ];
    for (name, method, reference, exact) in cases {
        let got = method(&x);
        assert_eq!(got.shape(), x.shape(), "{name}");
        for (&v, g) in xs.iter().zip(f64s(&got)) {
            let want = reference(v);
            let ok = if exact { same(g, T::from_f64(want).to_f64()) } else { close(g, want, rtol, atol) };
            assert!(ok, "{name}({v}) on {} {shape:?} {view:?}: got {g}, want {want}", T::NAME);
        }
    }
    // Operators: -x.
    assert_eq!((-&x).to_vec(), x.neg().to_vec());
}

#[test]
fn pytorch_special_values() {
    let x = Tensor::from_vec(vec![f32::NAN, -1.0, 0.0, 2.0, f32::INFINITY, f32::NEG_INFINITY], &[6]).unwrap();
    let relu = x.relu().to_vec();
    assert!(relu[0].is_nan());
    assert_eq!(&relu[1..], &[0.0, 0.0, 2.0, f32::INFINITY, 0.0]);
    let m = x.maximum(&Tensor::scalar(1.0)).unwrap().to_vec();
    assert!(m[0].is_nan());
    assert_eq!(&m[1..], &[1.0, 1.0, 2.0, f32::INFINITY, 1.0]);
    let m = Tensor::scalar(1.0f32).minimum(&x).unwrap().to_vec();
    assert!(m[0].is_nan());
    assert_eq!(&m[1..], &[-1.0, 0.0, 1.0, 1.0, f32::NEG_INFINITY]);
    let s = x.sigmoid().to_vec();
    assert_eq!(&s[4..], &[1.0, 0.0]);
    let big = Tensor::from_vec(vec![-800.0f64, 800.0, -40.0], &[3]).unwrap().sigmoid().to_vec();
    assert_eq!(&big[..2], &[0.0, 1.0]);
    assert!((big[2] - 4.248354255291589e-18).abs() < 1e-30);
    // From Python's math module:
    //   x * 0.5 * (1 + math.erf(x / math.sqrt(2)))
    //   0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    let g = Tensor::from_vec(vec![-1.0f64, 0.5, 3.0], &[3]).unwrap();
    for (got, want) in g.gelu().to_vec().iter().zip([-0.15865525393145707, 0.34573123063700656, 2.99595030590511]) {
        assert!((got - want).abs() < 2e-15, "gelu {got} vs {want}");
    }
    for (got, want) in g.gelu_tanh().to_vec().iter().zip([-0.15880800939172324, 0.34571400982514394, 2.996362607918227])
    {
        assert!((got - want).abs() < 2e-15, "gelu_tanh {got} vs {want}");
    }
}

#[test]
fn forward_values_match_pytorch() {
    type Op = fn(&Tensor<f64>, Option<&Tensor<f64>>) -> Tensor<f64>;
    let cases: [(&str, Op); 16] = [
        ("add broadcast (3,1)+(1,4)", |x, y| x + y.unwrap()),
        ("sub broadcast (2,3,4)-(4)", |x, y| x - y.unwrap()),
        ("mul broadcast (2,1,4)*(3,1)", |x, y| x * y.unwrap()),
        ("div broadcast", |x, y| x / y.unwrap()),
        ("maximum", |x, y| x.maximum(y.unwrap()).unwrap()),
        ("powf 2.5", |x, _| x.powf(2.5)),
        ("neg", |x, _| -x),
        ("exp", |x, _| x.exp()),
        ("log", |x, _| x.log()),
        ("sqrt", |x, _| x.sqrt()),
        ("tanh", |x, _| x.tanh()),
        ("sigmoid", |x, _| x.sigmoid()),
        ("relu", |x, _| x.relu()),
        ("abs", |x, _| x.abs()),
        ("gelu (erf)", |x, _| x.gelu()),
        ("gelu (tanh approximation)", |x, _| x.gelu_tanh()),
    ];
    for (name, op) in cases {
        let case = golden_case(name);
        let x = golden_tensor(&case["inputs"]["x"]);
        let y = case["inputs"].get("y").map(golden_tensor);
        let want = golden_tensor(&case["output"]);
        let got = op(&x, y.as_ref());
        assert_eq!(got.shape(), want.shape(), "{name}");
        for (g, w) in got.to_vec().iter().zip(want.to_vec()) {
            assert!(close(*g, w, 1e-14, 1e-15), "{name}: {g} vs {w}");
        }
    }
}

// ─── operators and errors ──────────────────────────────────────────────────────

#[test]
fn operators_match_methods_and_panic_with_the_same_message() {
    let a = Tensor::<f32>::arange(6).reshape(&[2, 3]).unwrap();
    let b = Tensor::from_vec(vec![1.0f32, 2.0, 4.0], &[3]).unwrap();
    assert_eq!((&a + &b).to_vec(), a.add(&b).unwrap().to_vec());
    assert_eq!((a.clone() - b.clone()).to_vec(), a.sub(&b).unwrap().to_vec());
    assert_eq!((&a * b.clone()).to_vec(), a.mul(&b).unwrap().to_vec());
    assert_eq!((a.clone() / &b).to_vec(), a.div(&b).unwrap().to_vec());
    assert_eq!((-a.clone()).to_vec(), a.neg().to_vec());

    let c = Tensor::<f32>::zeros(&[4]);
    let err = a.add(&c).unwrap_err();
    assert_eq!(
        err.to_string(),
        "add: [2, 3] and [4]: dims 3 and 4 at position 1 of the broadcast shape cannot be broadcast"
    );
    let panic = std::panic::catch_unwind(|| &a + &c).unwrap_err();
    assert_eq!(panic.downcast_ref::<String>().map(String::as_str), Some(err.to_string().as_str()));
    for op in BINARY_OPS {
        let e = apply_method(op, &a, &c).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: [2, 3] and [4]", op.name())), "{e}");
    }
    assert!(a.zip_map(&c, |x, _| x).unwrap_err().to_string().starts_with("zip_map: [2, 3] and [4]"));
}

#[test]
fn outputs_are_fresh_contiguous_tensors() {
    let x = Tensor::<f32>::arange(12).reshape(&[3, 4]).unwrap();
    let y = x.t().unwrap().add_scalar(1.0);
    assert!(y.is_contiguous());
    assert!(!y.shares_storage(&x));
    assert_eq!(y.shape(), &[4, 3]);
    assert_eq!(y.to_vec()[..4], [1.0, 5.0, 9.0, 2.0]);
    let e = Tensor::<f64>::zeros(&[0, 3]).add(&Tensor::<f64>::ones(&[3])).unwrap();
    assert_eq!(e.shape(), &[0, 3]);
    let s = Tensor::<f64>::scalar(2.0).mul(&Tensor::<f64>::scalar(3.0)).unwrap();
    assert_eq!((s.shape(), s.item().unwrap()), (&[][..], 6.0));
}

// ─── SIMD kernels against the scalar reference ─────────────────────────────────

fn kernel_lengths() -> Vec<usize> {
    let mut n: Vec<usize> = (0..=70).collect();
    for m in [8usize, 16, 32, 64, 128, 256, 1024] {
        n.extend([m * 3 - 1, m * 3, m * 3 + 1, m * 5 - 1, m * 5 + 1]);
    }
    n
}

/// Data with NaN, ±∞, ±0 sprinkled in, to exercise NaN propagation and sign handling.
fn kernel_data<T: Float>(n: usize, seed: u64, specials: bool) -> Vec<T> {
    let mut rng = Lcg(seed);
    (0..n)
        .map(|i| {
            let v = rng.value(false);
            let s = match (specials, i % 23) {
                (true, 5) => f64::NAN,
                (true, 11) => f64::INFINITY,
                (true, 13) => -0.0,
                (true, 17) => 0.0,
                (true, 19) => f64::NEG_INFINITY,
                _ => v,
            };
            T::from_f64(s)
        })
        .collect()
}

fn same_slices<T: Float>(got: &[T], want: &[T]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| same(g.to_f64(), w.to_f64()))
}

fn check_kernels<T: Float>() {
    for isa in available_isas() {
        for n in kernel_lengths() {
            for specials in [false, true] {
                let (a, b) = (kernel_data::<T>(n, n as u64, specials), kernel_data::<T>(n, 7 + n as u64, specials));
                let c = T::from_f64(-0.375);
                let ctx = format!("{} on {isa:?}, n = {n}, specials = {specials}", T::NAME);
                for op in BINARY_OPS {
                    let operands = [
                        (Operand::Slice(&a[..]), Operand::Slice(&b[..])),
                        (Operand::Slice(&a[..]), Operand::Splat(c)),
                        (Operand::Splat(c), Operand::Slice(&b[..])),
                        (Operand::Splat(c), Operand::Splat(T::from_f64(2.0))),
                    ];
                    for (lhs, rhs) in operands {
                        let (mut got, mut want) = (vec![T::ZERO; n], vec![T::ZERO; n]);
                        T::binary(isa, op, lhs, rhs, &mut got);
                        T::binary(Isa::Scalar, op, lhs, rhs, &mut want);
                        assert!(same_slices(&got, &want), "binary {op:?} {ctx}");
                        // The reference itself: the per-element formula.
                        let at = |o: &Operand<'_, T>, i: usize| match o {
                            Operand::Slice(s) => s[i],
                            Operand::Splat(v) => *v,
                        };
                        assert!((0..n).all(|i| same(want[i].to_f64(), op.apply(at(&lhs, i), at(&rhs, i)).to_f64())));
                    }
                    let mut got = a.clone();
                    T::binary_assign(isa, op, &mut got, Operand::Slice(&b));
                    let mut want = vec![T::ZERO; n];
                    T::binary(Isa::Scalar, op, Operand::Slice(&a), Operand::Slice(&b), &mut want);
                    assert!(same_slices(&got, &want), "binary_assign {op:?} {ctx}");
                    let mut got = a.clone();
                    T::binary_assign(isa, op, &mut got, Operand::Splat(c));
                    T::binary(Isa::Scalar, op, Operand::Slice(&a), Operand::Splat(c), &mut want);
                    assert!(same_slices(&got, &want), "binary_assign splat {op:?} {ctx}");
                }
                let unary_ops = [
                    UnaryOp::Neg,
                    UnaryOp::Abs,
                    UnaryOp::Relu,
                    UnaryOp::Sqrt,
                    UnaryOp::Exp,
                    UnaryOp::Tanh,
                    UnaryOp::Sigmoid,
                    UnaryOp::Gelu,
                ];
                for op in unary_ops {
                    let (mut got, mut want) = (vec![T::ZERO; n], vec![T::ZERO; n]);
                    T::unary(isa, op, &a, &mut got);
                    T::unary(Isa::Scalar, op, &a, &mut want);
                    if op == UnaryOp::Exp {
                        // The SIMD exp is a polynomial of its own: a few ulp from the scalar one.
                        let eps = T::EPSILON.to_f64();
                        assert!(
                            got.iter().zip(&want).all(|(g, w)| close(g.to_f64(), w.to_f64(), 4.0 * eps, 0.0)),
                            "exp {ctx}"
                        );
                    } else {
                        assert!(same_slices(&got, &want), "unary {op:?} {ctx}");
                    }
                    assert!((0..n).all(|i| same(want[i].to_f64(), op.apply(a[i]).to_f64())));
                }
                // Reductions: max is exact; sums differ only by the order of the additions.
                assert!(same(T::max(isa, &a).to_f64(), T::max(Isa::Scalar, &a).to_f64()), "max {ctx}");
                let naive_max = a.iter().fold(f64::NEG_INFINITY, |m, v| {
                    if m.is_nan() || v.to_f64().is_nan() {
                        f64::NAN
                    } else {
                        m.max(v.to_f64())
                    }
                });
                assert!(same(T::max(isa, &a).to_f64(), naive_max), "max {ctx}");
                if !specials {
                    let exact: f64 = a.iter().map(|v| v.to_f64()).sum();
                    let bound = a.iter().map(|v| v.to_f64().abs()).sum::<f64>() * n as f64 * T::EPSILON.to_f64();
                    let got = <T as ElementwiseKernels>::sum(isa, &a).to_f64();
                    assert!((got - exact).abs() <= bound, "sum {ctx}: {got} vs {exact}");
                    let (mut got_e, mut want_e) = (vec![T::ZERO; n], vec![T::ZERO; n]);
                    let s = T::exp_sum(isa, &a, T::from_f64(10.0), &mut got_e);
                    let s_ref = T::exp_sum(Isa::Scalar, &a, T::from_f64(10.0), &mut want_e);
                    assert!(
                        got_e.iter().zip(&want_e).all(|(g, w)| close(
                            g.to_f64(),
                            w.to_f64(),
                            4.0 * T::EPSILON.to_f64(),
                            0.0
                        )),
                        "exp_sum {ctx}"
                    );
                    assert!(
                        close(s.to_f64(), s_ref.to_f64(), 4.0 * n as f64 * T::EPSILON.to_f64(), 0.0),
                        "exp_sum {ctx}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_isa_matches_the_scalar_kernels_f32() {
    check_kernels::<f32>();
}

#[test]
fn every_isa_matches_the_scalar_kernels_f64() {
    check_kernels::<f64>();
}

/// Every path's `exp` within 2 ulp of the exact value (3 for f64, whose reference is itself
/// rounded) over the whole range, including the subnormal results, the overflow to +∞, ±∞ and
/// NaN.
fn check_exp_accuracy<T: Float>(lo: f64, hi: f64, min_positive: f64, ulps: f64) {
    let n = 200_003;
    let mut x: Vec<T> = (0..n).map(|i| T::from_f64(lo + (hi - lo) * i as f64 / n as f64)).collect();
    x.extend([f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0, 1e-30, -1e-30].map(T::from_f64));
    for isa in available_isas() {
        let mut got = vec![T::ZERO; x.len()];
        T::unary(isa, UnaryOp::Exp, &x, &mut got);
        for (&x, &g) in x.iter().zip(&got) {
            let want = x.to_f64().exp();
            let (g, w) = (g.to_f64(), T::from_f64(want).to_f64());
            // One ulp of the result (the subnormal spacing below the normal range).
            let ulp = (w.abs() * T::EPSILON.to_f64()).max(min_positive * T::EPSILON.to_f64());
            assert!(
                same(g, w) || (g - want).abs() <= ulps * ulp,
                "{isa:?} {} exp({}) = {g}, want {want}",
                T::NAME,
                x.to_f64()
            );
        }
    }
}

#[test]
fn simd_exp_is_accurate_over_the_whole_range() {
    check_exp_accuracy::<f32>(-110.0, 90.0, f32::MIN_POSITIVE as f64, 2.0);
    check_exp_accuracy::<f64>(-750.0, 712.0, f64::MIN_POSITIVE, 3.0);
}

#[test]
fn an_unsupported_isa_falls_back_to_scalar() {
    let unsupported = [Isa::Avx2, Isa::Avx512, Isa::Neon].into_iter().find(|i| !i.is_supported());
    if let Some(isa) = unsupported {
        let x = [1.0f32, -2.0, 3.0];
        let mut out = [0.0; 3];
        f32::unary(isa, UnaryOp::Relu, &x, &mut out);
        assert_eq!(out, [1.0, 0.0, 3.0]);
        assert_eq!(<f32 as ElementwiseKernels>::sum(isa, &x), 2.0);
    }
}

// ─── thread-count independence ─────────────────────────────────────────────────

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = Lcg(42);
    let x = fill::<f32>(&[300, 700], &mut rng, false);
    let row = fill::<f32>(&[700], &mut rng, false);
    let col = fill::<f32>(&[300, 1], &mut rng, false);
    let run = || {
        let xt = x.t().unwrap();
        vec![
            bits(&x.add(&row).unwrap()),
            bits(&x.div(&col).unwrap()),
            bits(&xt.mul(&xt).unwrap()),
            bits(&x.exp()),
            bits(&x.gelu()),
            bits(&xt.relu()),
            bits(&x.mul_scalar(0.5)),
            bits(&x.map(|v| v * v)),
        ]
    };
    let one = with_threads(1, run);
    let two = with_threads(2, run);
    assert!(one == two);
}

/// The fused softmax row kernels give, on every path, exactly the bits of the row-by-row
/// composition of the separate kernels they replace: rows with and without a mask row (one of
/// them all −∞, one with a NaN), every tail length, a scale of 1 and another. The exception, by
/// design: a forward row of one to four registers on a SIMD path is computed in registers
/// (another order of summation), within a few ulp of the composition, with NaN in the same
/// places; `Tensor::softmax` takes the same kernel, so it agrees with `softmax_rows` to the bit.
fn check_softmax_rows<T: Float>() {
    let mut gen = Lcg(7);
    for len in [1usize, 3, 4, 7, 8, 9, 15, 16, 17, 28, 32, 33, 63, 64, 65, 100] {
        // Two groups of the in-register kernel's four rows and a row after them.
        let rows = 9;
        let mut x: Vec<T> = (0..rows * len).map(|_| T::from_f64(4.0 * gen.unit() - 2.0)).collect();
        x[len / 2] = T::from_f64(f64::NAN);
        let masks: Vec<Option<Vec<T>>> = (0..rows)
            .map(|r| match r % 3 {
                0 => None,
                1 => Some((0..len).map(|j| T::from_f64(if j % 2 == 0 { 0.0 } else { f64::NEG_INFINITY })).collect()),
                _ => Some(vec![T::from_f64(f64::NEG_INFINITY); len]),
            })
            .collect();
        let dy: Vec<T> = (0..rows * len).map(|_| T::from_f64(2.0 * gen.unit() - 1.0)).collect();
        for scale in [T::ONE, T::from_f64(0.25)] {
            for isa in available_isas() {
                // The composition, row by row.
                let mut want = vec![T::ZERO; rows * len];
                let mut want_back = vec![T::ZERO; rows * len];
                let mut scratch = vec![T::ZERO; len];
                for r in 0..rows {
                    let (x, out) = (&x[r * len..(r + 1) * len], &mut want[r * len..(r + 1) * len]);
                    T::binary(isa, BinaryOp::Mul, Operand::Slice(x), Operand::Splat(scale), &mut scratch);
                    if let Some(m) = &masks[r] {
                        T::binary_assign(isa, BinaryOp::Add, &mut scratch, Operand::Slice(m));
                    }
                    let m = T::max(isa, &scratch);
                    let s = T::exp_sum(isa, &scratch, m, out);
                    T::binary_assign(isa, BinaryOp::Div, out, Operand::Splat(s));
                }
                for r in 0..rows {
                    let span = r * len..(r + 1) * len;
                    let (y, dy) = (&want[span.clone()], &dy[span.clone()]);
                    let row = &mut want_back[span];
                    T::binary(isa, BinaryOp::Mul, Operand::Slice(dy), Operand::Slice(y), row);
                    let dot = <T as ElementwiseKernels>::sum(isa, row);
                    T::binary(isa, BinaryOp::Sub, Operand::Slice(dy), Operand::Splat(dot), row);
                    T::binary_assign(isa, BinaryOp::Mul, row, Operand::Slice(y));
                    if scale != T::ONE {
                        T::binary_assign(isa, BinaryOp::Mul, row, Operand::Splat(scale));
                    }
                }
                // The fused kernels, all rows in one call.
                let mut got = vec![T::ZERO; rows * len];
                let mask_of = |r: usize| masks[r].as_deref();
                T::softmax_rows(isa, &x, scale, &mask_of, &mut scratch, &mut got);
                let mut got_back = vec![T::ZERO; rows * len];
                T::softmax_backward_rows(isa, &want, &dy, len, scale, &mut got_back);
                let slice_bits = |v: &[T]| v.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
                let lanes = match isa {
                    Isa::Avx512 => 64 / std::mem::size_of::<T>(),
                    Isa::Avx2 => 32 / std::mem::size_of::<T>(),
                    Isa::Neon => 16 / std::mem::size_of::<T>(),
                    Isa::Scalar => 0, // the composition at every length
                };
                if lanes > 0 && (lanes..=4 * lanes).contains(&len) {
                    // Rows in groups give each row the bits it gets alone.
                    for r in 0..rows {
                        let mut alone = vec![T::ZERO; len];
                        let row_mask = |_: usize| masks[r].as_deref();
                        T::softmax_rows(isa, &x[r * len..(r + 1) * len], scale, &row_mask, &mut scratch, &mut alone);
                        assert_eq!(
                            slice_bits(&got[r * len..(r + 1) * len]),
                            slice_bits(&alone),
                            "{isa:?} {} softmax_rows, row {r} of {len} in a group and alone",
                            T::NAME
                        );
                    }
                    let tol = if T::NAME == "f32" { 1e-6 } else { 1e-14 };
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        let (g, w) = (g.to_f64(), w.to_f64());
                        assert!(
                            (g.is_nan() && w.is_nan()) || (g - w).abs() <= tol,
                            "{isa:?} {} softmax_rows in registers, len {len}, [{i}]: {g} vs {w}",
                            T::NAME
                        );
                    }
                    // A softmax along the last dim takes the same kernel (scale 1, no mask).
                    if scale == T::ONE && isa == tapegrad_tensor::kernels::active_isa() {
                        let plain = Tensor::from_vec(x.clone(), &[rows, len]).unwrap().softmax(1).unwrap().to_vec();
                        let mut fused = vec![T::ZERO; rows * len];
                        T::softmax_rows(isa, &x, scale, &|_| None, &mut scratch, &mut fused);
                        assert_eq!(slice_bits(&plain), slice_bits(&fused), "{isa:?} {} softmax, len {len}", T::NAME);
                    }
                } else {
                    assert_eq!(slice_bits(&got), slice_bits(&want), "{isa:?} {} softmax_rows, len {len}", T::NAME);
                }
                assert_eq!(
                    slice_bits(&got_back),
                    slice_bits(&want_back),
                    "{isa:?} {} softmax_backward_rows, len {len}",
                    T::NAME
                );
            }
        }
    }
}

#[test]
fn fused_softmax_rows_match_the_row_by_row_kernels_to_the_bit() {
    check_softmax_rows::<f32>();
    check_softmax_rows::<f64>();
}

/// The Adam kernel on every available path gives the scalar definition's bits (each operation
/// rounded once, in order), for every tail length, each kind of weight decay, and elements that
/// are zero, NaN or infinite; `AdamStep::apply` (pieces on the pool) gives them too on 1 and 2
/// threads, and refuses slices of different lengths.
fn check_adam<T: Float>() {
    use tapegrad_tensor::ops::optim::{AdamDecay, AdamStep};
    let mut gen = Lcg(11);
    let decays = [AdamDecay::None, AdamDecay::L2(T::from_f64(0.01)), AdamDecay::Decoupled(T::from_f64(0.999))];
    for decay in decays {
        let step = AdamStep {
            one_minus_b1: T::from_f64(0.1),
            b2: T::from_f64(0.999),
            one_minus_b2: T::ONE - T::from_f64(0.999),
            bias2_sqrt: T::from_f64(0.0447),
            eps: T::from_f64(1e-8),
            step_size: T::from_f64(0.003),
            decay,
        };
        for n in [0usize, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 70_001] {
            let mut draw =
                |scale: f64| -> Vec<T> { (0..n).map(|_| T::from_f64(scale * (2.0 * gen.unit() - 1.0))).collect() };
            let (mut x, m, mut v, mut g) = (draw(2.0), draw(0.1), draw(0.01), draw(1.0));
            v.iter_mut().for_each(|e| *e = e.abs());
            for (i, special) in [0.0, f64::NAN, f64::INFINITY, -0.0].into_iter().enumerate() {
                if i < n {
                    g[(i * 7) % n] = T::from_f64(special);
                    x[(i * 5 + 1) % n] = T::from_f64(special);
                }
            }
            let run = |isa: Isa| {
                let (mut x, mut m, mut v) = (x.clone(), m.clone(), v.clone());
                T::adam(isa, &step, &mut x, &mut m, &mut v, &g);
                [x, m, v].map(|s| s.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>())
            };
            let want = run(Isa::Scalar);
            for isa in available_isas() {
                assert_eq!(run(isa), want, "{isa:?} {} adam, n {n}, {decay:?}", T::NAME);
            }
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let (mut xa, mut ma, mut va) = (x.clone(), m.clone(), v.clone());
                pool.install(|| step.apply(&mut xa, &mut ma, &mut va, &g)).unwrap();
                let got = [xa, ma, va].map(|s| s.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>());
                assert_eq!(got, want, "{} AdamStep::apply, n {n}, {threads} threads", T::NAME);
            }
        }
        let (mut x, mut m, mut v) = (vec![T::ONE; 4], vec![T::ZERO; 4], vec![T::ZERO; 3]);
        let e = step.apply(&mut x, &mut m, &mut v, &[T::ONE; 4]).unwrap_err().to_string();
        assert!(e.contains("adam") && e.contains('3') && e.contains('4'), "{e}");
    }
}

#[test]
fn the_adam_kernel_gives_the_scalar_bits_on_every_path() {
    check_adam::<f32>();
    check_adam::<f64>();
}

/// The SGD kernel gives the bits of PyTorch's formula written out as a loop (the one the `nn`
/// crate ran before session 21) on every available path, for every tail length, with and without
/// weight decay, and without momentum or with it (its first step and later ones, dampened, in
/// Nesterov's form), for elements that are zero, NaN or infinite; `SgdStep::apply` (pieces on the
/// pool) gives them too on 1 and 2 threads, and refuses slices of the wrong lengths.
fn check_sgd<T: Float>() {
    use tapegrad_tensor::ops::optim::{SgdMomentum, SgdStep};
    let mut gen = Lcg(12);
    let (lr, mu, damp, wd) = (T::from_f64(0.05), T::from_f64(0.9), T::from_f64(0.75), T::from_f64(0.01));
    // (first step, Nesterov) for the runs with momentum.
    let momenta = [None, Some((true, false)), Some((false, false)), Some((true, true)), Some((false, true))];
    for decay in [false, true] {
        for momentum in momenta {
            let step = SgdStep {
                lr,
                weight_decay: decay.then_some(wd),
                momentum: momentum.map(|(first, nesterov)| SgdMomentum {
                    momentum: mu,
                    one_minus_dampening: damp,
                    nesterov,
                    first,
                }),
            };
            // The formula, element by element.
            let reference = |x: &mut [T], b: &mut [T], g: &[T]| {
                for i in 0..x.len() {
                    let mut d = g[i];
                    if decay {
                        d += wd * x[i];
                    }
                    if let Some((first, nesterov)) = momentum {
                        b[i] = if first { d } else { mu * b[i] + damp * d };
                        d = if nesterov { d + mu * b[i] } else { b[i] };
                    }
                    x[i] -= lr * d;
                }
            };
            for n in [0usize, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 70_001] {
                let mut draw =
                    |scale: f64| -> Vec<T> { (0..n).map(|_| T::from_f64(scale * (2.0 * gen.unit() - 1.0))).collect() };
                let (mut x, b, mut g) = (draw(2.0), draw(0.1), draw(1.0));
                let b = if momentum.is_some() { b } else { Vec::new() };
                for (i, special) in [0.0, f64::NAN, f64::INFINITY, -0.0].into_iter().enumerate() {
                    if i < n {
                        g[(i * 7) % n] = T::from_f64(special);
                        x[(i * 5 + 1) % n] = T::from_f64(special);
                    }
                }
                let bits = |s: &[T]| s.iter().map(|e| e.to_f64().to_bits()).collect::<Vec<_>>();
                let want = {
                    let (mut x, mut b) = (x.clone(), b.clone());
                    reference(&mut x, &mut b, &g);
                    [bits(&x), bits(&b)]
                };
                for isa in available_isas() {
                    let (mut xi, mut bi) = (x.clone(), b.clone());
                    T::sgd(isa, &step, &mut xi, &mut bi, &g);
                    assert_eq!([bits(&xi), bits(&bi)], want, "{isa:?} {} sgd, n {n}, {step:?}", T::NAME);
                }
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let (mut xa, mut ba) = (x.clone(), b.clone());
                    pool.install(|| step.apply(&mut xa, &mut ba, &g)).unwrap();
                    assert_eq!([bits(&xa), bits(&ba)], want, "{} SgdStep::apply, n {n}, {threads} threads", T::NAME);
                }
            }
            let wrong_b = if momentum.is_some() { 3 } else { 1 };
            let (mut x, mut b) = (vec![T::ONE; 4], vec![T::ZERO; wrong_b]);
            let e = step.apply(&mut x, &mut b, &[T::ONE; 4]).unwrap_err().to_string();
            assert!(e.contains("sgd") && e.contains('4') && e.contains(&wrong_b.to_string()), "{e}");
            let b_len = if momentum.is_some() { 4 } else { 0 };
            let e = step.apply(&mut x, &mut vec![T::ZERO; b_len], &[T::ONE; 5]).unwrap_err().to_string();
            assert!(e.contains("sgd") && e.contains('5'), "{e}");
        }
    }
}

#[test]
fn the_sgd_kernel_gives_the_formulas_bits_on_every_path() {
    check_sgd::<f32>();
    check_sgd::<f64>();
}

/// `add_owned` writes into its own buffer only when nothing else holds it (a clone keeps its
/// values), and gives `add`'s bits in every case: in place, shared, broadcast, non-contiguous,
/// large enough for pieces on the pool.
#[test]
fn add_owned_is_add_and_reuses_only_a_buffer_nothing_else_holds() {
    let mut gen = Generator::new(3);
    for n in [1usize, 17, 100_003] {
        let a = Tensor::<f32>::randn(&[n], &mut gen);
        let b = Tensor::<f32>::randn(&[n], &mut gen);
        let want: Vec<u32> = a.add(&b).unwrap().to_vec().iter().map(|v| v.to_bits()).collect();
        let bits = |t: &Tensor<f32>| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        // Shared: the clone keeps its values.
        let kept = a.clone();
        let sum = a.clone().add_owned(&b).unwrap();
        assert_eq!(bits(&sum), want, "n {n}, shared");
        assert_eq!(bits(&kept), bits(&a), "n {n}: the shared buffer was written");
        // Unique: the same buffer comes back, holding the sum.
        let own = Tensor::from_vec(a.to_vec(), &[n]).unwrap();
        let ptr = own.as_slice().unwrap().as_ptr();
        let sum = own.add_owned(&b).unwrap();
        assert_eq!(sum.as_slice().unwrap().as_ptr(), ptr, "n {n}: not in place");
        assert_eq!(bits(&sum), want, "n {n}, in place");
    }
    // Broadcast and transposed operands take `add`.
    let m = Tensor::<f32>::randn(&[3, 4], &mut gen);
    let row = Tensor::<f32>::randn(&[4], &mut gen);
    assert_eq!(m.clone().add_owned(&row).unwrap().to_vec(), m.add(&row).unwrap().to_vec());
    let t = Tensor::<f32>::randn(&[4, 3], &mut gen).transpose(0, 1).unwrap();
    assert_eq!(m.clone().add_owned(&t).unwrap().to_vec(), m.add(&t).unwrap().to_vec());
    assert_eq!(t.clone().add_owned(&m).unwrap().to_vec(), t.add(&m).unwrap().to_vec());
    assert!(m.add_owned(&Tensor::<f32>::zeros(&[5])).is_err());
}
