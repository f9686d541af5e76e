//! Reductions against naive f64 references: sum / mean over any set of dims with and without
//! keepdim, max with indices, argmax, softmax, log_softmax and sum_to, on random shapes (with 0-
//! and 1-sized dims) and contiguous / transposed / narrowed / expanded inputs, f32 and f64; large
//! inputs that take the blocked and parallel paths; thread-count independence; error messages.

use proptest::prelude::*;
use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Float, Tensor};

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

/// The reduced dims a mask selects, as a dims list (empty means all, as in PyTorch).
fn dims_of(mask: u32, ndim: usize) -> Vec<usize> {
    (0..ndim).filter(|d| mask >> d & 1 == 1).collect()
}

/// Naive reduction in f64: for every kept position, the list of reduced values in row-major
/// order. Returns the keepdim=false output shape and the groups.
fn reduce_groups(x: &[f64], shape: &[usize], dims: &[usize]) -> (Vec<usize>, Vec<Vec<f64>>) {
    let reduced: Vec<bool> = (0..shape.len()).map(|d| dims.is_empty() || dims.contains(&d)).collect();
    let out_shape: Vec<usize> = shape.iter().zip(&reduced).filter(|(_, &r)| !r).map(|(&n, _)| n).collect();
    let k: usize = out_shape.iter().product();
    let mut out = vec![Vec::new(); k];
    for (i, &v) in x.iter().enumerate() {
        let index = unravel(i, shape);
        let j =
            index.iter().zip(&reduced).zip(shape).filter(|((_, &r), _)| !r).fold(0, |acc, ((&ix, _), &n)| acc * n + ix);
        out[j].push(v);
    }
    (out_shape, out)
}

fn keepdim_shape(shape: &[usize], dims: &[usize]) -> Vec<usize> {
    shape.iter().enumerate().map(|(d, &n)| if dims.is_empty() || dims.contains(&d) { 1 } else { n }).collect()
}

/// The worst-case rounding error of any summation order: `n · ε · Σ|x|` (twice the classic
/// bound).
fn sum_bound<T: Float>(values: &[f64]) -> f64 {
    values.len() as f64 * T::EPSILON.to_f64() * values.iter().map(|v| v.abs()).sum::<f64>()
}

// ─── sum / mean ────────────────────────────────────────────────────────────────

fn check_sum<T: Float>(shape: &[usize], view: View, mask: u32, keepdim: bool, integer: bool, seed: u64) {
    let mut rng = Lcg(seed);
    let x = make::<T>(shape, view, &mut rng, integer);
    let dims = dims_of(mask, shape.len());
    let (out_shape, groups) = reduce_groups(&f64s(&x), shape, &dims);
    let ctx = format!("{} {shape:?} {view:?} dims {dims:?} keepdim {keepdim}", T::NAME);

    let sum = x.sum(&dims, keepdim).unwrap();
    let mean = x.mean(&dims, keepdim).unwrap();
    let want_shape = if keepdim { keepdim_shape(shape, &dims) } else { out_shape };
    assert_eq!(sum.shape(), &want_shape[..], "{ctx}");
    assert_eq!(mean.shape(), &want_shape[..], "{ctx}");
    for ((g, m), values) in f64s(&sum).into_iter().zip(f64s(&mean)).zip(&groups) {
        let want: f64 = values.iter().sum();
        let want_mean = want / values.len() as f64;
        if integer {
            // Every partial sum is an integer below 2^24: exact in any order.
            assert_eq!(g, want, "sum {ctx}");
            assert!(same(m, T::from_f64(want_mean).to_f64()), "mean {ctx}: {m} vs {want_mean}");
        } else {
            assert!((g - want).abs() <= sum_bound::<T>(values), "sum {ctx}: {g} vs {want}");
            assert!(
                close(m, want_mean, 4.0 * T::EPSILON.to_f64(), sum_bound::<T>(values) / values.len() as f64),
                "mean {ctx}"
            );
        }
    }
    if dims.is_empty() || dims.len() == shape.len() {
        let all = x.sum_all();
        assert_eq!(all.shape(), &[] as &[usize]);
        assert_eq!(all.item().unwrap().to_f64(), f64s(&x.sum(&[], false).unwrap())[0], "sum_all {ctx}");
        assert!(same(x.mean_all().item().unwrap().to_f64(), f64s(&x.mean(&[], false).unwrap())[0]), "mean_all {ctx}");
    }
}

// ─── max / argmax ──────────────────────────────────────────────────────────────

fn check_max<T: Float>(shape: &[usize], view: View, dim: usize, keepdim: bool, seed: u64) {
    let mut rng = Lcg(seed);
    // Integer data has many ties, which exercises "the first maximum wins".
    let x = make::<T>(shape, view, &mut rng, true);
    let ctx = format!("{} {shape:?} {view:?} dim {dim} keepdim {keepdim}", T::NAME);
    if shape[dim] == 0 {
        let e = x.max(dim, keepdim).unwrap_err().to_string();
        assert!(e.starts_with("max: shape ") && e.contains("size 0"), "{e}");
        assert!(x.argmax(dim).is_err());
        return;
    }
    let (out_shape, groups) = reduce_groups(&f64s(&x), shape, &[dim]);
    let values = x.max(dim, keepdim).unwrap();
    let (values2, indices) = x.max_with_indices(dim, keepdim).unwrap();
    let want_shape = if keepdim { keepdim_shape(shape, &[dim]) } else { out_shape };
    assert_eq!(values.shape(), &want_shape[..], "{ctx}");
    assert_eq!(values2.shape(), &want_shape[..], "{ctx}");
    assert_eq!(x.argmax(dim).unwrap(), indices, "{ctx}");
    for (((v, v2), &i), group) in f64s(&values).into_iter().zip(f64s(&values2)).zip(&indices).zip(&groups) {
        let m = group.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let first = group.iter().position(|&g| g == m).unwrap();
        assert_eq!((v, v2, i), (m, m, first), "{ctx}");
    }
}

// ─── softmax / log_softmax ─────────────────────────────────────────────────────

fn check_softmax<T: Float>(shape: &[usize], view: View, dim: usize, seed: u64) {
    let mut rng = Lcg(seed);
    let x = make::<T>(shape, view, &mut rng, false);
    let ctx = format!("{} {shape:?} {view:?} dim {dim}", T::NAME);
    let p = x.softmax(dim).unwrap();
    let lp = x.log_softmax(dim).unwrap();
    assert_eq!(p.shape(), shape, "{ctx}");
    assert_eq!(lp.shape(), shape, "{ctx}");
    // Move `dim` last so that each slice is a row of the reference.
    let last = shape.len() - 1;
    let rows = |t: &Tensor<T>| f64s(&t.transpose(dim, last).unwrap());
    let (xs, ps, lps) = (rows(&x), rows(&p), rows(&lp));
    let eps = T::EPSILON.to_f64();
    for ((x, p), lp) in
        xs.chunks(shape[dim].max(1)).zip(ps.chunks(shape[dim].max(1))).zip(lps.chunks(shape[dim].max(1)))
    {
        let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = x.iter().map(|v| (v - m).exp()).sum();
        for ((&v, &got), &got_log) in x.iter().zip(p).zip(lp) {
            let want = (v - m).exp() / s;
            let want_log = (v - m) - s.ln();
            assert!(close(got, want, 16.0 * eps, 1e-30), "softmax {ctx}: {got} vs {want}");
            assert!(close(got_log, want_log, 16.0 * eps, 16.0 * eps), "log_softmax {ctx}: {got_log} vs {want_log}");
        }
    }
}

// ─── sum_to ────────────────────────────────────────────────────────────────────

fn check_sum_to<T: Float>(shape: &[usize], view: View, drop: usize, ones: u32, seed: u64) {
    let mut rng = Lcg(seed);
    let x = make::<T>(shape, view, &mut rng, true);
    let drop = drop.min(shape.len());
    let target: Vec<usize> =
        shape[drop..].iter().enumerate().map(|(d, &n)| if ones >> d & 1 == 1 { 1 } else { n }).collect();
    let got = x.sum_to(&target).unwrap();
    assert_eq!(got.shape(), &target[..]);
    // Reference: every element added into its broadcast source position.
    let n: usize = target.iter().product();
    let mut want = vec![0.0; n];
    for (i, v) in f64s(&x).into_iter().enumerate() {
        let index = unravel(i, shape);
        let j = target.iter().enumerate().fold(0, |acc, (d, &t)| acc * t + if t == 1 { 0 } else { index[drop + d] });
        want[j] += v;
    }
    assert_eq!(f64s(&got), want, "{} {shape:?} {view:?} -> {target:?}", T::NAME);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(96), ..ProptestConfig::default() })]

    #[test]
    fn sum_and_mean_over_any_dims(
        shape in shape_strategy(4),
        view in view_strategy(),
        mask in any::<u32>(),
        keepdim in any::<bool>(),
        integer in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check_sum::<f32>(&shape, view, mask, keepdim, integer, seed);
        check_sum::<f64>(&shape, view, mask, keepdim, integer, seed);
    }

    #[test]
    fn max_takes_the_first_maximum(shape in shape_strategy(4), view in view_strategy(), dim in 0usize..4, keepdim in any::<bool>(), seed in any::<u64>()) {
        prop_assume!(!shape.is_empty());
        let dim = dim % shape.len();
        check_max::<f32>(&shape, view, dim, keepdim, seed);
        check_max::<f64>(&shape, view, dim, keepdim, seed);
    }

    #[test]
    fn softmax_matches_the_stable_formula(shape in shape_strategy(4), view in view_strategy(), dim in 0usize..4, seed in any::<u64>()) {
        prop_assume!(!shape.is_empty());
        let dim = dim % shape.len();
        check_softmax::<f32>(&shape, view, dim, seed);
        check_softmax::<f64>(&shape, view, dim, seed);
    }

    #[test]
    fn sum_to_undoes_broadcasting(shape in shape_strategy(4), view in view_strategy(), drop in 0usize..3, ones in any::<u32>(), seed in any::<u64>()) {
        check_sum_to::<f32>(&shape, view, drop, ones, seed);
        check_sum_to::<f64>(&shape, view, drop, ones, seed);
    }
}

// ─── large inputs: blocked, parallel and row-wise paths ────────────────────────

#[test]
fn large_reductions_take_every_path_correctly() {
    // (shape, dims): inner order with several blocks per output, rows order with many pieces,
    // rows order with several column blocks, strided reduced dims, expanded input.
    let cases: [(&[usize], &[usize]); 7] = [
        (&[100_003], &[0]),
        (&[3, 70_001], &[1]),
        (&[70_001, 3], &[0]),
        (&[9, 9_001], &[0]),
        (&[4, 300, 50], &[0, 2]),
        (&[50, 300, 4], &[1]),
        (&[2, 40_000], &[]),
    ];
    for (shape, dims) in cases {
        for integer in [true, false] {
            let mut rng = Lcg(shape.iter().product::<usize>() as u64);
            for view in [View::Contiguous, View::Transposed, View::Expanded(0b1)] {
                let x = make::<f32>(shape, view, &mut rng, integer);
                let (_, groups) = reduce_groups(&f64s(&x), shape, dims);
                let got = f64s(&x.sum(dims, false).unwrap());
                for (g, values) in got.iter().zip(&groups) {
                    let want: f64 = values.iter().sum();
                    if integer {
                        assert_eq!(*g, want, "{shape:?} {dims:?} {view:?}");
                    } else {
                        // Blocked and pairwise: far tighter than the worst-case bound.
                        let tight = values.iter().map(|v| v.abs()).sum::<f64>() * 1e-5;
                        assert!((g - want).abs() <= tight, "{shape:?} {dims:?} {view:?}: {g} vs {want}");
                    }
                }
                let dim = dims.first().copied().unwrap_or(0);
                let maxes = f64s(&x.max(dim, false).unwrap());
                let (_, max_groups) = reduce_groups(&f64s(&x), shape, &[dim]);
                let want: Vec<f64> =
                    max_groups.iter().map(|g| g.iter().copied().fold(f64::NEG_INFINITY, f64::max)).collect();
                assert!(maxes == want, "max {shape:?} dim {dim} {view:?}");
            }
        }
    }
    // One long softmax row (longer than a chunk) still sums to 1.
    let mut rng = Lcg(9);
    let row = fill::<f32>(&[1, 100_000], &mut rng, false).softmax(1).unwrap();
    let total: f64 = f64s(&row).iter().sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");
}

// ─── PyTorch semantics ─────────────────────────────────────────────────────────

#[test]
fn empty_and_nan_cases_follow_pytorch() {
    let e = Tensor::<f32>::zeros(&[3, 0]);
    assert_eq!(e.sum(&[1], false).unwrap().to_vec(), vec![0.0; 3]);
    assert!(e.mean(&[1], false).unwrap().to_vec().iter().all(|v| v.is_nan()));
    assert!(e.mean_all().item().unwrap().is_nan());
    assert_eq!(e.sum_all().item().unwrap(), 0.0);
    assert_eq!(e.sum(&[0], true).unwrap().shape(), &[1, 0]);
    assert_eq!(e.max(0, false).unwrap().shape(), &[0]);
    assert_eq!(
        e.max(1, false).unwrap_err().to_string(),
        "max: shape [3, 0]: dim 1 has size 0, and a maximum over no elements is undefined"
    );
    assert_eq!(e.softmax(1).unwrap().shape(), &[3, 0]);
    assert_eq!(e.log_softmax(0).unwrap().shape(), &[3, 0]);

    let x = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0, 3.0, 2.0, 1.0], &[2, 3]).unwrap();
    let (values, indices) = x.max_with_indices(1, false).unwrap();
    assert!(values.to_vec()[0].is_nan());
    assert_eq!(values.to_vec()[1], 3.0);
    assert_eq!(indices, vec![1, 0]);
    assert!(x.sum(&[1], false).unwrap().to_vec()[0].is_nan());
    // Large logits: subtracting the max keeps softmax finite.
    let big = Tensor::from_vec(vec![1e4f32, 1e4 - 1.0, -1e4], &[3]).unwrap();
    let p = big.softmax(0).unwrap().to_vec();
    assert!((p[0] - 0.7310586).abs() < 1e-6 && (p[1] - 0.26894143).abs() < 1e-6 && p[2] == 0.0);
    let lp = big.log_softmax(0).unwrap().to_vec();
    assert!((lp[0] + 0.31326166).abs() < 1e-6 && (lp[2] + 20_000.313).abs() < 1e-2);
    // A 0-dim tensor: the empty dims list reduces nothing away.
    let s = Tensor::<f64>::scalar(2.5);
    assert_eq!(s.sum(&[], false).unwrap().item().unwrap(), 2.5);
    assert_eq!(s.sum_to(&[]).unwrap().item().unwrap(), 2.5);
    assert_eq!(
        s.sum_to(&[1, 1]).unwrap_err().to_string(),
        "sum_to: [] and [1, 1]: the target shape does not broadcast to the tensor's shape"
    );
}

#[test]
fn errors_name_the_op_and_the_shape() {
    let x = Tensor::<f32>::zeros(&[2, 3]);
    assert_eq!(x.sum(&[2], false).unwrap_err().to_string(), "sum: dim 2 is out of range for shape [2, 3] (2 dims)");
    assert_eq!(x.mean(&[0, 5], true).unwrap_err().to_string(), "mean: dim 5 is out of range for shape [2, 3] (2 dims)");
    assert_eq!(
        x.sum(&[1, 1], false).unwrap_err().to_string(),
        "sum: shape [2, 3]: dim 1 appears more than once in dims [1, 1]"
    );
    assert_eq!(x.max(2, false).unwrap_err().to_string(), "max: dim 2 is out of range for shape [2, 3] (2 dims)");
    assert!(x.argmax(7).unwrap_err().to_string().starts_with("argmax: dim 7"));
    assert!(x.max_with_indices(3, true).unwrap_err().to_string().starts_with("max_with_indices: dim 3"));
    assert!(x.softmax(2).unwrap_err().to_string().starts_with("softmax: dim 2"));
    assert!(x.log_softmax(2).unwrap_err().to_string().starts_with("log_softmax: dim 2"));
    assert_eq!(
        x.sum_to(&[2]).unwrap_err().to_string(),
        "sum_to: [2, 3] and [2]: the target shape does not broadcast to the tensor's shape"
    );
    assert!(x.sum_to(&[1, 2, 3]).is_err());
    assert_eq!(x.sum_to(&[1, 3]).unwrap().shape(), &[1, 3]);
    assert_eq!(x.sum_to(&[2, 1]).unwrap().shape(), &[2, 1]);
    assert_eq!(x.sum_to(&[2, 3]).unwrap().shape(), &[2, 3]);
}

// ─── golden values from PyTorch ────────────────────────────────────────────────

#[test]
fn forward_values_match_pytorch() {
    type Op = fn(&Tensor<f64>) -> Tensor<f64>;
    let cases: [(&str, Op); 8] = [
        ("sum dims [0,2] keepdim", |x| x.sum(&[0, 2], true).unwrap()),
        ("sum dim 1", |x| x.sum(&[1], false).unwrap()),
        ("sum all", |x| x.sum_all()),
        ("mean dim 2", |x| x.mean(&[2], false).unwrap()),
        ("max dim 1 (values)", |x| x.max(1, false).unwrap()),
        ("softmax dim 1", |x| x.softmax(1).unwrap()),
        ("softmax dim 0 of a large range", |x| x.softmax(0).unwrap()),
        ("log_softmax dim 1", |x| x.log_softmax(1).unwrap()),
    ];
    for (name, op) in cases {
        let case = golden_case(name);
        let want = golden_tensor(&case["output"]);
        let got = op(&golden_tensor(&case["inputs"]["x"]));
        assert_eq!(got.shape(), want.shape(), "{name}");
        for (g, w) in got.to_vec().iter().zip(want.to_vec()) {
            assert!(close(*g, w, 1e-13, 1e-15), "{name}: {g} vs {w}");
        }
    }
}

// ─── thread-count independence ─────────────────────────────────────────────────

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = Lcg(7);
    let x = fill::<f32>(&[300, 700], &mut rng, false);
    let long = fill::<f32>(&[3, 200_000], &mut rng, false);
    let run = || {
        let xt = x.t().unwrap();
        vec![
            bits(&x.sum_all()),
            bits(&long.sum_all()),
            bits(&long.sum(&[1], false).unwrap()),
            bits(&long.t().unwrap().sum(&[0], true).unwrap()),
            bits(&x.sum(&[0], false).unwrap()),
            bits(&x.sum(&[1], true).unwrap()),
            bits(&xt.mean(&[1], false).unwrap()),
            bits(&x.max(0, false).unwrap()),
            bits(&x.softmax(1).unwrap()),
            bits(&x.softmax(0).unwrap()),
            bits(&x.log_softmax(1).unwrap()),
            bits(&x.sum_to(&[1, 700]).unwrap()),
            x.argmax(1).unwrap().iter().map(|&i| i as u64).collect(),
        ]
    };
    let one = with_threads(1, run);
    let two = with_threads(2, run);
    assert!(one == two);
}
