//! A gradient check, in f64 against central finite differences, for every differentiable op the
//! crate records: random small shapes, broadcasting shapes for the binary ops, non-contiguous
//! inputs (transposed, narrowed and expanded views), and a non-trivial upstream gradient (the
//! default random one, or an explicit non-contiguous one). Each op `x` has a test `grad_x`;
//! `every_recorded_op_is_gradchecked` runs them all, reads the op names from `src/ops` and fails
//! for an op that no passing check had on its tape. `gradcheck` itself is shown to fail on a
//! wrong backward and on a gradient of the wrong shape.

use std::collections::BTreeSet;
use std::path::Path;
use tapegrad_tensor::TensorNew;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tapegrad_autograd::{
    alpha_dropout, drop_path, dropout, dropout2d, dropout_shared, feature_alpha_dropout, gaussian_dropout, gradcheck,
    gradcheck_with, no_grad, Backward, Error, Generator, GradcheckOptions, Grads, Result, Tensor, Var,
};
use tapegrad_golden as golden;

type Outcome = std::result::Result<(), TestCaseError>;

/// Cases per op: the whole file runs in well under a second in release.
const CASES: u32 = 48;

// ─── inputs ──────────────────────────────────────────────────────────────────

/// How an input sits in memory when it reaches the op.
#[derive(Clone, Copy, Debug)]
enum Layout {
    Contiguous,
    /// A transposed view of a contiguous tensor (the last two dims swapped).
    Transposed,
    /// A narrowed view: the last dim is a slice of a longer one.
    Narrowed,
    /// An expanded view: dim 0 has stride 0 (its entries repeat).
    Expanded,
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::Contiguous), Just(Layout::Transposed), Just(Layout::Narrowed), Just(Layout::Expanded)]
}

/// The values an input takes.
#[derive(Clone, Copy, Debug)]
enum Values {
    /// Uniform in [-2, 2).
    Any,
    /// Uniform in [0.5, 2.5): for log, sqrt, powf.
    Positive,
    /// |v| in [0.1, 2), either sign: away from the kinks of relu and abs, and safe to divide by.
    NonZero,
    /// Pairwise at least 0.25 apart: a maximum is unique and stays so under the step.
    Distinct,
}

fn fill(n: usize, values: Values, gen: &mut Generator) -> Vec<f64> {
    let u = Tensor::<f64>::rand(&[n], gen).to_vec();
    match values {
        Values::Any => u.iter().map(|v| 4.0 * v - 2.0).collect(),
        Values::Positive => u.iter().map(|v| 0.5 + 2.0 * v).collect(),
        Values::NonZero => u
            .iter()
            .map(|v| {
                let a = 2.0 * v;
                let magnitude = 0.1 + 1.9 * a.fract();
                if a < 1.0 {
                    -magnitude
                } else {
                    magnitude
                }
            })
            .collect(),
        Values::Distinct => {
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, gen.below(i as u64 + 1) as usize);
            }
            order.iter().map(|&i| (i as f64 - n as f64 / 2.0) * 0.25).collect()
        }
    }
}

/// A tensor of `shape` laid out as `layout` asks (falling back to a layout the rank allows; an
/// expanded view would repeat values, so `Distinct` values take a transposed view instead).
fn input(shape: &[usize], layout: Layout, values: Values, gen: &mut Generator) -> Tensor<f64> {
    let nd = shape.len();
    let from = |storage: &[usize], gen: &mut Generator| {
        let n = storage.iter().product();
        Tensor::from_vec(fill(n, values, gen), storage).expect("the data fits the shape")
    };
    let layout = match (layout, values) {
        (Layout::Expanded, Values::Distinct) => Layout::Transposed,
        (l, _) => l,
    };
    match layout {
        Layout::Transposed if nd >= 2 => {
            let mut storage = shape.to_vec();
            storage.swap(nd - 2, nd - 1);
            from(&storage, gen).transpose(nd - 2, nd - 1).expect("dims in range")
        }
        Layout::Transposed | Layout::Narrowed if nd >= 1 => {
            let mut storage = shape.to_vec();
            storage[nd - 1] += 2;
            from(&storage, gen).narrow(nd - 1, 1, shape[nd - 1]).expect("in range")
        }
        Layout::Expanded if nd >= 1 => {
            let mut storage = shape.to_vec();
            storage[0] = 1;
            from(&storage, gen).expand(shape).expect("a 1 expands")
        }
        _ => from(shape, gen),
    }
}

/// Shapes of rank `ranks` with dims in 1..=3.
pub(super) fn shape(ranks: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=3, ranks)
}

/// Two shapes that broadcast together: a common shape, with leading dims dropped and some dims
/// set to 1 in each.
fn broadcast_pair(max_rank: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (
        shape(0..=max_rank),
        prop::collection::vec(any::<bool>(), max_rank),
        prop::collection::vec(any::<bool>(), max_rank),
        0..=max_rank,
        0..=max_rank,
    )
        .prop_map(|(full, ones_x, ones_y, drop_x, drop_y)| {
            let derive = |ones: &[bool], drop: usize| -> Vec<usize> {
                full[drop.min(full.len())..].iter().zip(ones).map(|(&n, &one)| if one { 1 } else { n }).collect()
            };
            (derive(&ones_x, drop_x), derive(&ones_y, drop_y))
        })
}

// ─── checking ────────────────────────────────────────────────────────────────

/// `gradcheck` with its default random upstream gradient.
fn check(f: impl Fn(&[Var<f64>]) -> Result<Var<f64>>, inputs: &[Tensor<f64>]) -> Outcome {
    gradcheck(f, inputs).map_err(|e| TestCaseError::fail(e.to_string()))
}

/// `gradcheck_with` an explicit upstream gradient that is itself a non-contiguous view (so each
/// backward formula also meets a strided `dy`).
fn check_strided_upstream(
    f: impl Fn(&[Var<f64>]) -> Result<Var<f64>>,
    inputs: &[Tensor<f64>],
    gen: &mut Generator,
) -> Outcome {
    let vars: Vec<Var<f64>> = inputs.iter().map(|t| Var::new(t.clone())).collect();
    let out = no_grad(|| f(&vars)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let upstream = input(&out.shape(), Layout::Transposed, Values::Any, gen);
    gradcheck_with(f, inputs, Some(&upstream), GradcheckOptions::default())
        .map_err(|e| TestCaseError::fail(e.to_string()))
}

/// Checks a one-input op on an input of `shape`, `layout` and `values`, alternating between the
/// default and a strided upstream gradient.
fn unary(
    shape: &[usize],
    layout: Layout,
    values: Values,
    seed: u64,
    f: impl Fn(&Var<f64>) -> Result<Var<f64>>,
) -> Outcome {
    let gen = &mut Generator::new(seed);
    let x = input(shape, layout, values, gen);
    if seed.is_multiple_of(2) {
        check(|v| f(&v[0]), &[x])
    } else {
        check_strided_upstream(|v| f(&v[0]), &[x], gen)
    }
}

/// Checks a broadcasting binary op, with both inputs as parameters or one a constant, and the
/// default or a strided upstream gradient; `far_apart` rejects inputs whose paired elements are
/// within 1e-3 (the kink of maximum / minimum).
fn binary(
    (xs, ys): (Vec<usize>, Vec<usize>),
    (lx, ly): (Layout, Layout),
    (vx, vy): (Values, Values),
    seed: u64,
    far_apart: bool,
    f: impl Fn(&Var<f64>, &Var<f64>) -> Result<Var<f64>>,
) -> Outcome {
    let gen = &mut Generator::new(seed);
    let x = input(&xs, lx, vx, gen);
    let y = input(&ys, ly, vy, gen);
    if far_apart {
        let gap = x.sub(&y).expect("the shapes broadcast").abs().to_vec();
        prop_assume!(gap.iter().all(|d| *d > 1e-3));
    }
    match seed % 4 {
        0 => check(|v| f(&v[0], &v[1]), &[x, y]),
        1 => check_strided_upstream(|v| f(&v[0], &v[1]), &[x, y], gen),
        // One side a constant: its gradient is not asked for (`needs` is false for it).
        2 => {
            let y = Var::new(y);
            check(|v| f(&v[0], &y), &[x])
        }
        _ => {
            let x = Var::new(x);
            check(|v| f(&x, &v[0]), &[y])
        }
    }
}

/// True when every pre-activation of `relu(x Wᵀ + b)` is farther from 0 than a finite-difference
/// step can move it (one element of `x`, `W` or `b` moves by `eps = 1e-6`, so a pre-activation
/// by at most `eps · max(|x|, |W|, 1) ≤ 2.5e-6` for these inputs): a check that straddles the
/// kink compares the gradient of one side with a difference quotient of both.
fn away_from_relu_kink(x: &Tensor<f64>, w: &Tensor<f64>, b: &Tensor<f64>) -> bool {
    let pre = x.matmul(&w.t().expect("2-D")).and_then(|y| y.add(b)).expect("the shapes fit");
    pre.to_vec().iter().all(|v| v.abs() > 1e-4)
}

/// A shape of rank 1..=3 and a dim of it.
pub(super) fn shape_and_dim() -> impl Strategy<Value = (Vec<usize>, usize)> {
    shape(1..=3).prop_flat_map(|s| {
        let r = s.len();
        (Just(s), 0..r)
    })
}

/// A shape, a dim, and an index of the shape's rank for `gather` and `scatter_add`: no larger
/// than the shape outside `dim`, any length from 1 to `along` along it, entries below the dim's
/// size (with repeats).
pub(super) fn gather_index(along: usize) -> impl Strategy<Value = (Vec<usize>, usize, Vec<usize>, Vec<usize>)> {
    shape_and_dim()
        .prop_flat_map(move |(s, d)| {
            let dims: Vec<BoxedStrategy<usize>> = s
                .iter()
                .enumerate()
                .map(|(i, &n)| if i == d { (1..=along).boxed() } else { (1..=n).boxed() })
                .collect();
            (Just(s), Just(d), dims)
        })
        .prop_flat_map(|(s, d, index_shape)| {
            let count: usize = index_shape.iter().product();
            let n = s[d];
            (Just(s), Just(d), Just(index_shape), prop::collection::vec(0..n, count))
        })
}

// ─── elementwise ─────────────────────────────────────────────────────────────

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn grad_add(shapes in broadcast_pair(3), lx in layout(), ly in layout(), seed in any::<u64>()) {
        binary(shapes, (lx, ly), (Values::Any, Values::Any), seed, false, |x, y| x.add(y))?;
    }

    #[test]
    fn grad_sub(shapes in broadcast_pair(3), lx in layout(), ly in layout(), seed in any::<u64>()) {
        binary(shapes, (lx, ly), (Values::Any, Values::Any), seed, false, |x, y| x.sub(y))?;
    }

    #[test]
    fn grad_mul(shapes in broadcast_pair(3), lx in layout(), ly in layout(), seed in any::<u64>()) {
        binary(shapes, (lx, ly), (Values::Any, Values::Any), seed, false, |x, y| x.mul(y))?;
    }

    /// `x * x`: both inputs of one op are the same node, so the two gradients must add.
    #[test]
    fn grad_mul_fan_out(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| x.mul(x))?;
    }

    #[test]
    fn grad_div(shapes in broadcast_pair(3), lx in layout(), ly in layout(), seed in any::<u64>()) {
        binary(shapes, (lx, ly), (Values::Any, Values::NonZero), seed, false, |x, y| x.div(y))?;
    }

    #[test]
    fn grad_maximum(shapes in broadcast_pair(3), lx in layout(), ly in layout(), seed in any::<u64>()) {
        binary(shapes, (lx, ly), (Values::Any, Values::Any), seed, true, |x, y| x.maximum(y))?;
    }

    #[test]
    fn grad_minimum(shapes in broadcast_pair(3), lx in layout(), ly in layout(), seed in any::<u64>()) {
        binary(shapes, (lx, ly), (Values::Any, Values::Any), seed, true, |x, y| x.minimum(y))?;
    }

    /// At a tie, central differences give each side exactly half, which is the split the backward
    /// makes (as PyTorch's does).
    #[test]
    fn grad_maximum_minimum_ties(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        let gen = &mut Generator::new(seed);
        let x = input(&s, l, Values::Any, gen);
        check(|v| v[0].maximum(&v[1]), &[x.clone(), x.contiguous()])?;
        check(|v| v[0].minimum(&v[1]), &[x.contiguous(), x])?;
    }

    #[test]
    fn grad_add_scalar(s in shape(0..=3), l in layout(), c in -3.0f64..3.0, seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.add_scalar(c)))?;
    }

    #[test]
    fn grad_mul_scalar(s in shape(0..=3), l in layout(), c in -3.0f64..3.0, seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.mul_scalar(c)))?;
    }

    #[test]
    fn grad_powf(s in shape(0..=3), l in layout(), e in -2.5f64..3.0, seed in any::<u64>()) {
        unary(&s, l, Values::Positive, seed, |x| Ok(x.powf(e)))?;
    }

    /// `x^0` is constant: its gradient is 0 everywhere, at `x = 0` too (as PyTorch special-cases),
    /// not `0 * 0^-1 = NaN`. Integer exponents also take negative bases.
    #[test]
    fn grad_powf_integer_exponents(s in shape(0..=3), e in 0i32..=3, l in layout(), seed in any::<u64>()) {
        let gen = &mut Generator::new(seed);
        let x = input(&s, l, Values::Any, gen).map(|v| if v.abs() < 0.5 { 0.0 } else { v });
        check(|v| Ok(v[0].powf(f64::from(e))), &[x])?;
        check(|v| Ok(v[0].powf(0.0)), &[Tensor::<f64>::zeros(&s)])?;
    }

    #[test]
    fn grad_neg(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.neg()))?;
    }

    #[test]
    fn grad_exp(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.exp()))?;
    }

    #[test]
    fn grad_log(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Positive, seed, |x| Ok(x.log()))?;
    }

    #[test]
    fn grad_sqrt(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Positive, seed, |x| Ok(x.sqrt()))?;
    }

    #[test]
    fn grad_tanh(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.tanh()))?;
    }

    #[test]
    fn grad_sigmoid(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.sigmoid()))?;
    }

    #[test]
    fn grad_relu(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::NonZero, seed, |x| Ok(x.relu()))?;
    }

    #[test]
    fn grad_abs(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::NonZero, seed, |x| Ok(x.abs()))?;
    }

    /// At 0 the subgradient 0 is what central differences give for |x|.
    #[test]
    fn grad_abs_at_zero(s in shape(0..=3)) {
        check(|v| Ok(v[0].abs()), &[Tensor::<f64>::zeros(&s)])?;
    }

    #[test]
    fn grad_gelu(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.gelu()))?;
    }

    #[test]
    fn grad_gelu_tanh(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.gelu_tanh()))?;
    }
}

// ─── reductions ──────────────────────────────────────────────────────────────

/// The dims `d < ndim` with `pick[d]`, ascending or descending.
fn picked_dims(ndim: usize, pick: &[bool], descending: bool) -> Vec<usize> {
    let mut dims: Vec<usize> = (0..ndim).filter(|&d| pick[d]).collect();
    if descending {
        dims.reverse();
    }
    dims
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Any subset of dims (empty means all), in ascending or descending order, with and without
    /// keepdim.
    #[test]
    fn grad_sum(
        s in shape(1..=3),
        pick in prop::collection::vec(any::<bool>(), 3),
        descending in any::<bool>(),
        keepdim in any::<bool>(),
        l in layout(),
        seed in any::<u64>(),
    ) {
        let dims = picked_dims(s.len(), &pick, descending);
        unary(&s, l, Values::Any, seed, |x| x.sum(&dims, keepdim))?;
    }

    #[test]
    fn grad_sum_all(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.sum_all()))?;
    }

    #[test]
    fn grad_mean(
        s in shape(1..=3),
        pick in prop::collection::vec(any::<bool>(), 3),
        descending in any::<bool>(),
        keepdim in any::<bool>(),
        l in layout(),
        seed in any::<u64>(),
    ) {
        let dims = picked_dims(s.len(), &pick, descending);
        unary(&s, l, Values::Any, seed, |x| x.mean(&dims, keepdim))?;
    }

    #[test]
    fn grad_mean_all(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.mean_all()))?;
    }

    #[test]
    fn grad_max((s, dim) in shape_and_dim(), keepdim in any::<bool>(), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Distinct, seed, |x| x.max(dim, keepdim))?;
    }

    #[test]
    fn grad_softmax((s, dim) in shape_and_dim(), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| x.softmax(dim))?;
    }

    #[test]
    fn grad_log_softmax((s, dim) in shape_and_dim(), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| x.log_softmax(dim))?;
    }
}

// ─── matmul ──────────────────────────────────────────────────────────────────

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn grad_matmul(m in 1usize..=4, k in 1usize..=4, n in 1usize..=4, lx in layout(), ly in layout(), seed in any::<u64>()) {
        binary((vec![m, k], vec![k, n]), (lx, ly), (Values::Any, Values::Any), seed, false, |x, y| x.matmul(y))?;
    }

    /// Batch dims that broadcast against each other (including a 2-D operand against a batch).
    #[test]
    fn grad_matmul_batched(
        (bx, by) in broadcast_pair(2),
        m in 1usize..=3,
        k in 1usize..=3,
        n in 1usize..=3,
        lx in layout(),
        ly in layout(),
        seed in any::<u64>(),
    ) {
        let xs = [bx.as_slice(), &[m, k]].concat();
        let ys = [by.as_slice(), &[k, n]].concat();
        binary((xs, ys), (lx, ly), (Values::Any, Values::Any), seed, false, |x, y| x.matmul(y))?;
    }

    /// 1-D operands: vector-matrix, matrix-vector, dot, and a vector against a batch.
    #[test]
    fn grad_matmul_1d(case in 0usize..5, b in 1usize..=3, k in 1usize..=4, n in 1usize..=3, lx in layout(), ly in layout(), seed in any::<u64>()) {
        let (xs, ys) = match case {
            0 => (vec![k], vec![k, n]),
            1 => (vec![n, k], vec![k]),
            2 => (vec![k], vec![k]),
            3 => (vec![b, n, k], vec![k]),
            _ => (vec![k], vec![b, k, n]),
        };
        binary((xs, ys), (lx, ly), (Values::Any, Values::Any), seed, false, |x, y| x.matmul(y))?;
    }
}

// ─── views and selections ────────────────────────────────────────────────────

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn grad_reshape(s in shape(1..=3), target in 0usize..3, l in layout(), seed in any::<u64>()) {
        let to: Vec<usize> = match target {
            0 => vec![s.iter().product()],
            1 => s.iter().rev().copied().collect(),
            _ => [&[1], s.as_slice()].concat(),
        };
        unary(&s, l, Values::Any, seed, |x| x.reshape(&to))?;
    }

    #[test]
    fn grad_transpose(s in shape(1..=3), a in 0usize..3, b in 0usize..3, l in layout(), seed in any::<u64>()) {
        let (a, b) = (a % s.len(), b % s.len());
        unary(&s, l, Values::Any, seed, |x| x.transpose(a, b))?;
    }

    /// `t` records a transpose for a matrix and is the identity below 2 dims.
    #[test]
    fn grad_t(s in shape(0..=2), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| x.t())?;
    }

    #[test]
    fn grad_permute(
        (s, perm) in (1usize..=3).prop_flat_map(|r| (shape(r..=r), Just((0..r).collect::<Vec<_>>()).prop_shuffle())),
        l in layout(),
        seed in any::<u64>(),
    ) {
        unary(&s, l, Values::Any, seed, |x| x.permute(&perm))?;
    }

    #[test]
    fn grad_narrow(
        (s, dim, start, len) in shape_and_dim().prop_flat_map(|(s, d)| {
            let n = s[d];
            (Just(s), Just(d), 0..n).prop_flat_map(move |(s, d, start)| (Just(s), Just(d), Just(start), 1..=n - start))
        }),
        l in layout(),
        seed in any::<u64>(),
    ) {
        unary(&s, l, Values::Any, seed, |x| x.narrow(dim, start, len))?;
    }

    /// Expands size-1 dims and adds leading ones.
    #[test]
    fn grad_expand((small, full) in broadcast_pair(3).prop_map(|(x, _)| x).prop_flat_map(|small| {
        let full = prop::collection::vec(1usize..=3, small.len()..=3);
        (Just(small), full)
    }), l in layout(), seed in any::<u64>()) {
        // Keep `full` where `small` has a 1 (or a new leading dim), `small`'s size elsewhere.
        let lead = full.len() - small.len();
        let target: Vec<usize> =
            full.iter().enumerate().map(|(d, &n)| if d < lead || small[d - lead] == 1 { n } else { small[d - lead] }).collect();
        unary(&small, l, Values::Any, seed, |x| x.expand(&target))?;
    }

    #[test]
    fn grad_sum_to((small, full) in broadcast_pair(3).prop_map(|(x, _)| x).prop_flat_map(|small| {
        let full = prop::collection::vec(1usize..=3, small.len()..=3);
        (Just(small), full)
    }), l in layout(), seed in any::<u64>()) {
        // `full` broadcast from `small` (as in grad_expand), summed back to `small`.
        let lead = full.len() - small.len();
        let big: Vec<usize> =
            full.iter().enumerate().map(|(d, &n)| if d < lead || small[d - lead] == 1 { n } else { small[d - lead] }).collect();
        prop_assume!(big != small);
        unary(&big, l, Values::Any, seed, |x| x.sum_to(&small))?;
    }

    #[test]
    fn grad_unsqueeze(s in shape(0..=3), dim in 0usize..4, l in layout(), seed in any::<u64>()) {
        let dim = dim % (s.len() + 1);
        unary(&s, l, Values::Any, seed, |x| x.unsqueeze(dim))?;
    }

    #[test]
    fn grad_squeeze(s in shape(0..=2), dim in 0usize..3, l in layout(), seed in any::<u64>()) {
        let dim = dim % (s.len() + 1);
        let mut with_one = s.clone();
        with_one.insert(dim, 1);
        unary(&with_one, l, Values::Any, seed, |x| x.squeeze(dim))?;
    }

    /// A contiguous copy of a view: of a strided input, and of a transposed value inside the graph.
    #[test]
    fn grad_contiguous(s in shape(2..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.contiguous()))?;
        unary(&s, l, Values::Any, seed, |x| Ok(x.transpose(0, 1)?.contiguous().mul_scalar(2.0)))?;
    }

    #[test]
    fn grad_cat(
        (s, dim) in shape_and_dim(),
        sizes in prop::collection::vec(1usize..=3, 2..=3),
        ls in prop::collection::vec(layout(), 3),
        seed in any::<u64>(),
    ) {
        let gen = &mut Generator::new(seed);
        let inputs: Vec<Tensor<f64>> = sizes
            .iter()
            .zip(&ls)
            .map(|(&n, &l)| {
                let mut shape = s.clone();
                shape[dim] = n;
                input(&shape, l, Values::Any, gen)
            })
            .collect();
        check(|v| Var::cat(&v.iter().collect::<Vec<_>>(), dim), &inputs)?;
    }

    #[test]
    fn grad_stack(s in shape(0..=2), count in 1usize..=3, dim in 0usize..3, ls in prop::collection::vec(layout(), 3), seed in any::<u64>()) {
        let gen = &mut Generator::new(seed);
        let dim = dim % (s.len() + 1);
        let inputs: Vec<Tensor<f64>> = ls[..count].iter().map(|&l| input(&s, l, Values::Any, gen)).collect();
        check_strided_upstream(|v| Var::stack(&v.iter().collect::<Vec<_>>(), dim), &inputs, gen)?;
    }

    /// Indices in any order, with repeats (whose gradients must add).
    #[test]
    fn grad_index_select(
        (s, dim, index) in shape_and_dim().prop_flat_map(|(s, d)| {
            let n = s[d];
            (Just(s), Just(d), prop::collection::vec(0..n, 1..=4))
        }),
        l in layout(),
        seed in any::<u64>(),
    ) {
        unary(&s, l, Values::Any, seed, |x| x.index_select(dim, &index))?;
    }

    /// An index of the input's rank, no larger outside `dim`, any length along it, with repeats.
    #[test]
    fn grad_gather(
        (s, dim, index_shape, index) in gather_index(4),
        l in layout(),
        seed in any::<u64>(),
    ) {
        unary(&s, l, Values::Any, seed, |x| x.gather(dim, &index, &index_shape))?;
    }
}

// ─── convolution and pooling ─────────────────────────────────────────────────

/// `(n, c, h, w, kernel, stride, padding)` with the kernel fitting the padded input and, for
/// pooling, `padding <= kernel / 2`.
fn conv_geometry() -> impl Strategy<Value = (usize, usize, usize, usize, usize, usize, usize)> {
    (1usize..=2, 1usize..=2, 2usize..=5, 2usize..=5, 1usize..=3, 1usize..=2, 0usize..=1)
        .prop_filter("the kernel fits the padded input", |&(_, _, h, w, k, _, p)| h + 2 * p >= k && w + 2 * p >= k)
}

/// Whether a `[kernel, stride, padding]` max pooling fits the convolution output `y` and the
/// values of each of `y`'s planes are at least 1e-3 apart (so that a finite difference's step
/// does not change which element a window takes).
pub(super) fn pool_fits_and_maxima_stand_out(y: &Tensor<f64>, [kernel, _, padding]: [usize; 3]) -> bool {
    let s = y.shape();
    let plane = s[2] * s[3];
    let apart = y.to_vec().chunks(plane.max(1)).all(|p| {
        let mut sorted = p.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted.windows(2).all(|v| v[1] - v[0] > 1e-3)
    });
    s[2] + 2 * padding >= kernel && s[3] + 2 * padding >= kernel && apart
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// With and without a bias, stride 1 and 2, padding 0 and 1.
    #[test]
    fn grad_conv2d(
        (n, c, h, w, k, stride, padding) in conv_geometry(),
        c_out in 1usize..=2,
        bias in any::<bool>(),
        lx in layout(),
        lw in layout(),
        seed in any::<u64>(),
    ) {
        let gen = &mut Generator::new(seed);
        let x = input(&[n, c, h, w], lx, Values::Any, gen);
        let weight = input(&[c_out, c, k, k], lw, Values::Any, gen);
        if bias {
            let b = input(&[c_out], Layout::Narrowed, Values::Any, gen);
            check_strided_upstream(|v| v[0].conv2d(&v[1], Some(&v[2]), stride, padding), &[x, weight, b], gen)?;
        } else {
            check(|v| v[0].conv2d(&v[1], None, stride, padding), &[x.clone(), weight.clone()])?;
            // A constant input, as in a first layer: only the weight's gradient is computed.
            let x = Var::new(x);
            check(|v| x.conv2d(&v[0], None, stride, padding), &[weight])?;
        }
    }

    #[test]
    fn grad_max_pool2d((n, c, h, w, k, stride, padding) in conv_geometry(), l in layout(), seed in any::<u64>()) {
        let padding = padding.min(k / 2);
        unary(&[n, c, h, w], l, Values::Distinct, seed, |x| x.max_pool2d(k, stride, padding))?;
    }

    /// Through the fused 2 x 2 path and pools that run as the two ops, with and without a bias
    /// (and with a constant input); the convolution's outputs far enough apart within each plane
    /// that no window's maximum changes under the finite differences' step.
    #[test]
    fn grad_conv2d_max_pool2d(
        (n, c, h, w, k, stride, padding) in conv_geometry(),
        c_out in 1usize..=2,
        pool in prop::sample::select(vec![[2usize, 2, 0], [3, 2, 1], [2, 1, 0]]),
        bias in any::<bool>(),
        lx in layout(),
        seed in any::<u64>(),
    ) {
        let gen = &mut Generator::new(seed);
        let x = input(&[n, c, h, w], lx, Values::Any, gen);
        let weight = input(&[c_out, c, k, k], Layout::Contiguous, Values::Any, gen);
        let b = input(&[c_out], Layout::Narrowed, Values::Any, gen);
        prop_assume!(pool_fits_and_maxima_stand_out(&x.conv2d(&weight, Some(&b), stride, padding).expect("it fits"), pool));
        if bias {
            check_strided_upstream(|v| v[0].conv2d_max_pool2d(&v[1], Some(&v[2]), stride, padding, pool), &[x, weight, b], gen)?;
        } else {
            check(|v| v[0].conv2d_max_pool2d(&v[1], None, stride, padding, pool), &[x.clone(), weight.clone()])?;
            let x = Var::new(x);
            check(|v| x.conv2d_max_pool2d(&v[0], None, stride, padding, pool), &[weight])?;
        }
    }

    #[test]
    fn grad_avg_pool2d((n, c, h, w, k, stride, padding) in conv_geometry(), l in layout(), seed in any::<u64>()) {
        let padding = padding.min(k / 2);
        unary(&[n, c, h, w], l, Values::Any, seed, |x| x.avg_pool2d(k, stride, padding))?;
    }

    /// The mask comes from a generator created inside the closure, so every evaluation draws the
    /// same one.
    #[test]
    fn grad_dropout(s in shape(0..=3), p in 0.05f64..0.9, mask_seed in any::<u64>(), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| dropout(x, p, &mut Generator::new(mask_seed)))?;
    }

    /// Whole channels of an `[N, C, ...]` input share one mask bit.
    #[test]
    fn grad_dropout2d(s in shape(2..=4), p in 0.05f64..0.9, mask_seed in any::<u64>(), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| dropout2d(x, p, &mut Generator::new(mask_seed)))?;
    }

    /// Alpha dropout: kept units pass through the affine correction, dropped ones are constant.
    #[test]
    fn grad_alpha_dropout(s in shape(0..=3), p in 0.05f64..0.9, mask_seed in any::<u64>(), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| alpha_dropout(x, p, &mut Generator::new(mask_seed)))?;
    }

    /// Alpha dropout of whole channels of an `[N, C, ...]` input.
    #[test]
    fn grad_feature_alpha_dropout(s in shape(2..=4), p in 0.05f64..0.9, mask_seed in any::<u64>(), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| feature_alpha_dropout(x, p, &mut Generator::new(mask_seed)))?;
    }

    /// Multiplicative `N(1, p / (1 - p))` noise, drawn again identically at every evaluation.
    #[test]
    fn grad_gaussian_dropout(s in shape(0..=3), p in 0.05f64..0.9, mask_seed in any::<u64>(), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| gaussian_dropout(x, p, &mut Generator::new(mask_seed)))?;
    }

    /// One mask bit per row of dim 0.
    #[test]
    fn grad_drop_path(s in shape(1..=3), p in 0.05f64..0.9, mask_seed in any::<u64>(), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| drop_path(x, p, &mut Generator::new(mask_seed)))?;
    }

    /// A mask of the noise shape (1 at the shared dims) broadcast over the input.
    #[test]
    fn grad_dropout_shared(s in shape(1..=4), pick in any::<u8>(), p in 0.05f64..0.9, mask_seed in any::<u64>(), l in layout(), seed in any::<u64>()) {
        let shared: Vec<usize> = (0..s.len()).filter(|d| pick >> d & 1 == 1).collect();
        unary(&s, l, Values::Any, seed, |x| dropout_shared(x, p, &shared, &mut Generator::new(mask_seed)))?;
    }

    /// The fused `x Wᵀ + b` (more cases, and agreement with the unfused chain, in `fused.rs`).
    #[test]
    fn grad_linear(m in 1usize..=4, n in 1usize..=4, k in 1usize..=4, lx in layout(), bias in any::<bool>(), seed in any::<u64>()) {
        let gen = &mut Generator::new(seed);
        let (x, w, b) = (input(&[m, k], lx, Values::Any, gen), input(&[n, k], Layout::Contiguous, Values::Any, gen), input(&[n], Layout::Narrowed, Values::Any, gen));
        if bias {
            check(|v| tapegrad_autograd::fused::linear(&v[0], &v[1], Some(&v[2])), &[x, w, b])?;
        } else {
            check(|v| tapegrad_autograd::fused::linear(&v[0], &v[1], None), &[x, w])?;
        }
    }

    /// The fused `dropout(relu(x Wᵀ + b), p)` (more in `fused.rs`).
    #[test]
    fn grad_linear_relu_dropout(m in 1usize..=4, n in 1usize..=4, k in 1usize..=4, p in 0.05f64..0.9, mask_seed in any::<u64>(), lx in layout(), seed in any::<u64>()) {
        let gen = &mut Generator::new(seed);
        let (x, w, b) = (input(&[m, k], lx, Values::Any, gen), input(&[n, k], Layout::Contiguous, Values::Any, gen), input(&[n], Layout::Contiguous, Values::Any, gen));
        prop_assume!(away_from_relu_kink(&x, &w, &b));
        check(|v| tapegrad_autograd::fused::linear_relu_dropout(&v[0], &v[1], &v[2], p, &mut Generator::new(mask_seed)), &[x, w, b])?;
    }

    /// Fused attention over `[B, L, D]` / `[B, S, D]` / `[B, S, Dv]` (views included), with an
    /// additive mask that broadcasts (`[L, S]` or `[B, 1, S]`), dropout of the weights, and a
    /// scale given or defaulted.
    #[test]
    fn grad_scaled_dot_product_attention(
        b in 1usize..=2, l in 1usize..=3, s in 1usize..=3, d in 1usize..=3, dv in 1usize..=3,
        masked in 0u8..3, p in prop_oneof![Just(0.0f64), 0.05f64..0.9], scale in prop_oneof![Just(None), Just(Some(0.7f64))],
        mask_seed in any::<u64>(), lq in layout(), lk in layout(), seed in any::<u64>(),
    ) {
        let gen = &mut Generator::new(seed);
        let q = input(&[b, l, d], lq, Values::Any, gen);
        let k = input(&[b, s, d], lk, Values::Any, gen);
        let v = input(&[b, s, dv], Layout::Narrowed, Values::Any, gen);
        let mask = match masked {
            0 => None,
            1 => Some(input(&[l, s], Layout::Transposed, Values::Any, gen)),
            _ => Some(input(&[b, 1, s], Layout::Contiguous, Values::Any, gen)),
        };
        let f = |v: &[Var<f64>]| {
            tapegrad_autograd::fused::scaled_dot_product_attention(&v[0], &v[1], &v[2], mask.as_ref(), p, scale, &mut Generator::new(mask_seed))
        };
        if seed.is_multiple_of(2) {
            check(f, &[q, k, v])?;
        } else {
            check_strided_upstream(f, &[q, k, v], gen)?;
        }
    }
}

// ─── normalisation ────────────────────────────────────────────────────────────

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Layer normalisation over the last `k` dims, with and without weight and bias, on views.
    #[test]
    fn grad_layer_norm(s in shape(1..=3), k in 1usize..=3, affine in 0u8..4, l in layout(), seed in any::<u64>()) {
        let k = k.min(s.len());
        let normalized = s[s.len() - k..].to_vec();
        let gen = &mut Generator::new(seed);
        let mut inputs = vec![input(&s, l, Values::Any, gen)];
        let (weight, bias) = (affine & 1 == 1, affine & 2 == 2);
        if weight {
            inputs.push(input(&normalized, Layout::Contiguous, Values::Any, gen));
        }
        if bias {
            inputs.push(input(&normalized, Layout::Narrowed, Values::Any, gen));
        }
        check(
            |v| {
                let w = weight.then(|| &v[1]);
                let b = bias.then(|| &v[v.len() - 1]);
                v[0].layer_norm(&normalized, w, b, 1e-5)
            },
            &inputs,
        )?;
    }
}

/// The layouts the checks rely on really are strided views.
#[test]
fn layouts_are_views() {
    let gen = &mut Generator::new(7);
    let t = input(&[2, 3], Layout::Transposed, Values::Any, gen);
    assert!(!t.is_contiguous());
    assert_eq!(t.strides(), &[1, 2]);
    let n = input(&[2, 3], Layout::Narrowed, Values::Any, gen);
    assert!(!n.is_contiguous());
    assert_eq!((n.strides(), n.offset()), (&[5, 1][..], 1));
    let e = input(&[2, 3], Layout::Expanded, Values::Any, gen);
    assert_eq!(e.strides(), &[0, 1]);
    let d = input(&[3, 4], Layout::Expanded, Values::Distinct, gen).to_vec();
    let mut sorted = d.clone();
    sorted.sort_by(f64::total_cmp);
    assert!(sorted.windows(2).all(|w| w[1] - w[0] >= 0.25), "distinct values: {d:?}");
}

/// Backward through empty tensors gives empty gradients of the inputs' shapes, not errors.
#[test]
fn backward_through_empty_tensors() -> Result<()> {
    type Op = fn(&Var<f64>) -> Result<Var<f64>>;
    let ops: [(&str, Op); 10] = [
        ("mul", |x| x.mul(x)),
        ("exp", |x| Ok(x.exp())),
        ("sum", |x| x.sum(&[0], false)),
        ("mean", |x| x.mean(&[1], true)),
        ("softmax", |x| x.softmax(1)),
        ("log_softmax", |x| x.log_softmax(0)),
        ("transpose", |x| x.t()),
        ("matmul", |x| x.matmul(&x.t()?)),
        ("narrow", |x| x.narrow(1, 0, 2)),
        ("dropout", |x| dropout(x, 0.5, &mut Generator::new(1))),
    ];
    for (name, op) in ops {
        let x = Var::parameter(Tensor::<f64>::zeros(&[0, 3]));
        let y = op(&x)?;
        y.backward_with(&Tensor::<f64>::ones(&y.shape()), false)?;
        assert_eq!(x.grad().map(|g| g.shape().to_vec()), Some(vec![0, 3]), "{name}");
    }
    Ok(())
}

// ─── gradcheck itself fails on a wrong backward ─────────────────────────────────

/// `y = c x` as a custom op whose backward may be deliberately wrong: it claims
/// `dx = claimed dy`, and with `off_at` adds `off` to one element. Named `right_scale` for
/// `claimed = 3` without an offset (right for the `c = 3` the tests use), else `wrong_scale`.
struct Scale {
    claimed: f64,
    off_at: Option<(usize, f64)>,
}

impl Backward<f64> for Scale {
    fn name(&self) -> &'static str {
        if self.claimed == 3.0 && self.off_at.is_none() {
            "right_scale"
        } else {
            "wrong_scale"
        }
    }
    fn backward(&self, dy: &Tensor<f64>, _: &[bool]) -> Result<Grads<f64>> {
        let mut g = dy.mul_scalar(self.claimed).to_vec();
        if let Some((at, off)) = self.off_at {
            g[at] += off;
        }
        Ok(Grads::one(Tensor::from_vec(g, dy.shape())?))
    }
}

fn scale(x: &Var<f64>, c: f64, backward: Scale) -> Var<f64> {
    Var::from_op(x.value().mul_scalar(c), &[x], || backward)
}

#[test]
fn gradcheck_catches_a_wrong_backward() {
    let x = input(&[2, 3], Layout::Contiguous, Values::Any, &mut Generator::new(1));
    // The right backward passes (the harness is sound) ...
    gradcheck(|v| Ok(scale(&v[0], 3.0, Scale { claimed: 3.0, off_at: None })), std::slice::from_ref(&x)).unwrap();
    // ... a wrong factor fails at the first element, naming the op and both values ...
    let err = gradcheck(|v| Ok(scale(&v[0], 3.0, Scale { claimed: 2.0, off_at: None })), std::slice::from_ref(&x))
        .unwrap_err();
    match err {
        Error::GradcheckMismatch { op, input, index, analytic, numeric } => {
            assert_eq!((op.as_str(), input, index), ("wrong_scale", 0, vec![0, 0]));
            assert!((analytic / numeric - 2.0 / 3.0).abs() < 1e-6, "{analytic} vs {numeric}");
        }
        other => panic!("expected GradcheckMismatch, got {other}"),
    }
    // ... and so does an error of 1e-2 in one element, found at its index.
    let err =
        gradcheck(|v| Ok(scale(&v[0], 3.0, Scale { claimed: 3.0, off_at: Some((4, 1e-2)) })), std::slice::from_ref(&x))
            .unwrap_err();
    assert!(matches!(err, Error::GradcheckMismatch { input: 0, ref index, .. } if index == &[1, 1]), "{err}");
    // A wrong gradient for the second input of a composite is reported as input 1, under the
    // output's op.
    let err =
        gradcheck(|v| v[0].mul(&scale(&v[1], 0.5, Scale { claimed: -0.5, off_at: None })), &[x.clone(), x.clone()])
            .unwrap_err();
    assert!(matches!(err, Error::GradcheckMismatch { ref op, input: 1, .. } if op == "mul"), "{err}");
    let seen = tapegrad_autograd::gradchecked_ops();
    assert!(seen.contains("right_scale") && !seen.contains("wrong_scale"), "a failed check covers nothing");
}

/// A backward that returns a gradient of the wrong shape (same number of elements, or fewer):
/// a shape error, not a flattened comparison that could pass or an index out of bounds.
#[test]
fn gradcheck_rejects_a_gradient_of_the_wrong_shape() {
    struct Reshaped(Vec<usize>);
    impl Backward<f64> for Reshaped {
        fn name(&self) -> &'static str {
            "reshaped_grad"
        }
        fn backward(&self, dy: &Tensor<f64>, _: &[bool]) -> Result<Grads<f64>> {
            let n: usize = self.0.iter().product();
            Ok(Grads::one(Tensor::from_vec(dy.contiguous().to_vec()[..n].to_vec(), &self.0)?))
        }
    }
    let x = input(&[2, 3], Layout::Contiguous, Values::Any, &mut Generator::new(2));
    for wrong in [vec![3, 2], vec![6], vec![1, 3]] {
        let shape = wrong.clone();
        // Upstream ones: with the transposed shape the flattened values would even agree.
        let ones = Tensor::<f64>::ones(&[2, 3]);
        let err = gradcheck_with(
            |v| Ok(Var::from_op(v[0].value(), &[&v[0]], || Reshaped(shape.clone()))),
            std::slice::from_ref(&x),
            Some(&ones),
            GradcheckOptions::default(),
        )
        .unwrap_err();
        match err {
            Error::ShapeMismatch { op: "gradcheck", lhs, rhs, reason } => {
                assert_eq!((lhs, rhs), (wrong, vec![2, 3]));
                assert!(reason.contains("input 0") && reason.contains("reshaped_grad"), "{reason}");
            }
            other => panic!("expected a shape error, got {other}"),
        }
    }
}

/// An f32 model's ops checked as they run, in f32, with f32's tolerances: a layer's composite
/// passes, and a backward 5% off is still caught.
#[test]
fn gradcheck_in_f32() {
    let mut gen = Generator::new(3);
    let x = Tensor::<f32>::randn(&[3, 4], &mut gen);
    let w = Tensor::<f32>::randn(&[4, 5], &mut gen).mul_scalar(0.5);
    let b = Tensor::<f32>::randn(&[5], &mut gen);
    gradcheck(|v| v[0].matmul(&v[1])?.add(&v[2])?.tanh().log_softmax(1), &[x.clone(), w, b]).unwrap();

    /// `y = 2 x` whose backward claims `dx = claimed dy`.
    struct Doubled(f32);
    impl Backward<f32> for Doubled {
        fn name(&self) -> &'static str {
            if self.0 == 2.0 {
                "right_double_f32"
            } else {
                "wrong_double_f32"
            }
        }
        fn backward(&self, dy: &Tensor<f32>, _: &[bool]) -> Result<Grads<f32>> {
            Ok(Grads::one(dy.mul_scalar(self.0)))
        }
    }
    let doubled =
        |v: &[Var<f32>], claimed: f32| Ok(Var::from_op(v[0].value().mul_scalar(2.0), &[&v[0]], || Doubled(claimed)));
    gradcheck(|v| doubled(v, 2.0), std::slice::from_ref(&x)).unwrap();
    let err = gradcheck(|v| doubled(v, 2.1), std::slice::from_ref(&x)).unwrap_err();
    match err {
        Error::GradcheckMismatch { op, analytic, numeric, .. } => {
            assert_eq!(op, "wrong_double_f32");
            assert!((analytic / numeric - 1.05).abs() < 1e-3, "{analytic} vs {numeric}");
        }
        other => panic!("expected GradcheckMismatch, got {other}"),
    }
    assert_eq!(GradcheckOptions::of::<f64>().eps, GradcheckOptions::default().eps);
    assert_eq!(GradcheckOptions::of::<f32>().eps, GradcheckOptions::f32().eps);
}

// ─── every op has a check ────────────────────────────────────────────────────

/// Every gradient check of this file, run once more by the coverage test below: the harness
/// runs tests in parallel and in any order, so a test cannot wait for the others.
const CHECKS: &[(&str, fn())] = &[
    ("grad_add", grad_add),
    ("grad_sub", grad_sub),
    ("grad_mul", grad_mul),
    ("grad_mul_fan_out", grad_mul_fan_out),
    ("grad_div", grad_div),
    ("grad_maximum", grad_maximum),
    ("grad_minimum", grad_minimum),
    ("grad_maximum_minimum_ties", grad_maximum_minimum_ties),
    ("grad_add_scalar", grad_add_scalar),
    ("grad_mul_scalar", grad_mul_scalar),
    ("grad_powf", grad_powf),
    ("grad_powf_integer_exponents", grad_powf_integer_exponents),
    ("grad_neg", grad_neg),
    ("grad_exp", grad_exp),
    ("grad_log", grad_log),
    ("grad_sqrt", grad_sqrt),
    ("grad_tanh", grad_tanh),
    ("grad_sigmoid", grad_sigmoid),
    ("grad_relu", grad_relu),
    ("grad_abs", grad_abs),
    ("grad_abs_at_zero", grad_abs_at_zero),
    ("grad_gelu", grad_gelu),
    ("grad_gelu_tanh", grad_gelu_tanh),
    ("grad_sum", grad_sum),
    ("grad_sum_all", grad_sum_all),
    ("grad_mean", grad_mean),
    ("grad_mean_all", grad_mean_all),
    ("grad_max", grad_max),
    ("grad_softmax", grad_softmax),
    ("grad_log_softmax", grad_log_softmax),
    ("grad_matmul", grad_matmul),
    ("grad_matmul_batched", grad_matmul_batched),
    ("grad_matmul_1d", grad_matmul_1d),
    ("grad_reshape", grad_reshape),
    ("grad_transpose", grad_transpose),
    ("grad_t", grad_t),
    ("grad_permute", grad_permute),
    ("grad_narrow", grad_narrow),
    ("grad_expand", grad_expand),
    ("grad_sum_to", grad_sum_to),
    ("grad_unsqueeze", grad_unsqueeze),
    ("grad_squeeze", grad_squeeze),
    ("grad_contiguous", grad_contiguous),
    ("grad_cat", grad_cat),
    ("grad_stack", grad_stack),
    ("grad_index_select", grad_index_select),
    ("grad_gather", grad_gather),
    ("grad_conv2d", grad_conv2d),
    ("grad_max_pool2d", grad_max_pool2d),
    ("grad_conv2d_max_pool2d", grad_conv2d_max_pool2d),
    ("grad_avg_pool2d", grad_avg_pool2d),
    ("grad_dropout", grad_dropout),
    ("grad_dropout2d", grad_dropout2d),
    ("grad_alpha_dropout", grad_alpha_dropout),
    ("grad_feature_alpha_dropout", grad_feature_alpha_dropout),
    ("grad_gaussian_dropout", grad_gaussian_dropout),
    ("grad_drop_path", grad_drop_path),
    ("grad_dropout_shared", grad_dropout_shared),
    ("grad_linear", grad_linear),
    ("grad_linear_relu_dropout", grad_linear_relu_dropout),
    ("grad_scaled_dot_product_attention", grad_scaled_dot_product_attention),
    ("grad_layer_norm", grad_layer_norm),
    ("grad_sin", grad_sin),
    ("grad_cos", grad_cos),
    ("grad_silu", grad_silu),
    ("grad_softplus", grad_softplus),
    ("grad_leaky_relu", grad_leaky_relu),
    ("grad_clamp", grad_clamp),
    ("grad_operators", grad_operators),
    ("grad_erf", grad_erf),
    ("grad_index_add", grad_index_add),
    ("grad_scatter_add", grad_scatter_add),
    ("grad_conv2d_backward_input", grad_conv2d_backward_input),
    ("grad_conv2d_backward_weight", grad_conv2d_backward_weight),
];

/// Fails when an op recorded anywhere under `src/ops` was not on the tape of a passing gradient
/// check (`gradchecked_ops` records what each passing `gradcheck` of the test binary saw; this
/// test runs every check of this file itself, so none can be missed by running later).
#[test]
fn every_recorded_op_is_gradchecked() {
    // CHECKS lists every `fn grad_*` of this file.
    let own = include_str!("gradcheck.rs");
    let defined: BTreeSet<&str> = golden::fn_names(own)
        .into_iter()
        .filter(|&(name, rest)| rest.starts_with('(') && name.len() > "grad_".len() && name.starts_with("grad_"))
        .map(|(name, _)| name)
        .collect();
    let listed: BTreeSet<&str> = CHECKS.iter().map(|(name, _)| *name).collect();
    assert_eq!(defined, listed, "CHECKS must list every `fn grad_*` of this file");
    assert_eq!(listed.len(), CHECKS.len(), "CHECKS lists a check twice");

    for (_, check) in CHECKS {
        check();
    }
    let seen = tapegrad_autograd::gradchecked_ops();
    let names = golden::backward_op_names(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops"));
    // The reader itself must work: these are recorded in three different ways.
    for known in ["add", "maximum", "minimum", "exp", "gelu_tanh", "matmul", "conv2d", "dropout", "gather"] {
        assert!(names.contains(known), "backward_op_names missed {known:?}; found {names:?}");
    }
    assert!(names.len() >= 40, "only {} op names found: {names:?}", names.len());
    let missing: Vec<&String> = names.iter().filter(|n| !seen.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "ops recorded in src/ops that no passing gradient check saw: {missing:?}");
}

// ─── more unary maths (ops/unary.rs) and the operators (ops/operators.rs) ──────────────────

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn grad_sin(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.sin()))?;
    }

    #[test]
    fn grad_cos(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.cos()))?;
    }

    #[test]
    fn grad_silu(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.silu()))?;
    }

    /// Large arguments too: the stable formula's gradient is σ(x) on both tails.
    #[test]
    fn grad_softplus(s in shape(0..=3), l in layout(), seed in any::<u64>(), scale in prop_oneof![Just(1.0), Just(30.0)]) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.mul_scalar(scale).softplus()))?;
    }

    #[test]
    fn grad_leaky_relu(s in shape(0..=3), l in layout(), seed in any::<u64>(), slope in -0.5f64..0.5) {
        unary(&s, l, Values::NonZero, seed, |x| Ok(x.leaky_relu(slope)))?;
    }

    /// Bounds inside the inputs' range [-2, 2), so that elements fall below, between and above.
    #[test]
    fn grad_clamp(s in shape(0..=3), l in layout(), seed in any::<u64>(), lo in -1.5f64..0.0, width in 0.1f64..1.5) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.clamp(lo, lo + width)))?;
    }

    /// The operators record the ops of their methods: `(x + y) * x - y / 2 + 3 - (-x)`.
    #[test]
    fn grad_operators(shapes in broadcast_pair(3), seed in any::<u64>()) {
        let gen = &mut Generator::new(seed);
        let x = input(&shapes.0, Layout::Contiguous, Values::Any, gen);
        let y = input(&shapes.1, Layout::Contiguous, Values::NonZero, gen);
        check(|v| {
            let (x, y) = (&v[0], &v[1]);
            Ok(&(&(x + y) * x) - &(y / 2.0) + 3.0 - (-x) + 2.0 * y / y)
        }, &[x, y])?;
    }
}

// ─── the recorded backwards' own ops (ops/unary.rs, ops/scatter.rs, ops/conv.rs) ─────────────

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn grad_erf(s in shape(0..=3), l in layout(), seed in any::<u64>()) {
        unary(&s, l, Values::Any, seed, |x| Ok(x.erf()))?;
    }

    /// Both inputs, with repeated indices (which add).
    #[test]
    fn grad_index_add(
        (s, dim, index) in shape_and_dim().prop_flat_map(|(s, d)| {
            let n = s[d];
            (Just(s), Just(d), prop::collection::vec(0..n, 1..=4))
        }),
        lx in layout(),
        ls in layout(),
        seed in any::<u64>(),
    ) {
        let gen = &mut Generator::new(seed);
        let x = input(&s, lx, Values::Any, gen);
        let mut src_shape = s.clone();
        src_shape[dim] = index.len();
        let src = input(&src_shape, ls, Values::Any, gen);
        check_strided_upstream(|v| v[0].index_add(dim, &index, &v[1]), &[x, src], gen)?;
    }

    /// Both inputs; `src` of the index's shape, with repeated indices (which add).
    #[test]
    fn grad_scatter_add(
        (s, dim, index_shape, index) in gather_index(4),
        lx in layout(),
        ls in layout(),
        seed in any::<u64>(),
    ) {
        let gen = &mut Generator::new(seed);
        let x = input(&s, lx, Values::Any, gen);
        let src = input(&index_shape, ls, Values::Any, gen);
        check(|v| v[0].scatter_add(dim, &index, &index_shape, &v[1]), &[x, src])?;
    }

    /// The transposed convolution of `conv2d`'s input gradient, in `dy` and the weight.
    #[test]
    fn grad_conv2d_backward_input(
        (n, c, h, w, k, stride, padding) in conv_geometry(),
        c_out in 1usize..=2,
        ld in layout(),
        lw in layout(),
        seed in any::<u64>(),
    ) {
        let gen = &mut Generator::new(seed);
        let (oh, ow) = ((h + 2 * padding - k) / stride + 1, (w + 2 * padding - k) / stride + 1);
        let dy = input(&[n, c_out, oh, ow], ld, Values::Any, gen);
        let weight = input(&[c_out, c, k, k], lw, Values::Any, gen);
        check_strided_upstream(|v| Var::conv2d_backward_input(&v[0], &v[1], &[n, c, h, w], stride, padding), &[dy, weight], gen)?;
    }

    /// `conv2d`'s weight gradient, in the input and `dy`.
    #[test]
    fn grad_conv2d_backward_weight(
        (n, c, h, w, k, stride, padding) in conv_geometry(),
        c_out in 1usize..=2,
        lx in layout(),
        ld in layout(),
        seed in any::<u64>(),
    ) {
        let gen = &mut Generator::new(seed);
        let (oh, ow) = ((h + 2 * padding - k) / stride + 1, (w + 2 * padding - k) / stride + 1);
        let x = input(&[n, c, h, w], lx, Values::Any, gen);
        let dy = input(&[n, c_out, oh, ow], ld, Values::Any, gen);
        check(|v| Var::conv2d_backward_weight(&v[0], &v[1], &[c_out, c, k, k], stride, padding), &[x, dy])?;
    }
}

/// A broadcast parameter times a constant, with a fresh (contiguous, unshared) gradient
/// reaching the product: the in-place path of `mul`'s backward must not hand the parameter a
/// gradient of the product's shape (it once did: `[2, 2]` for a 0-dim scale).
#[test]
fn mul_gives_a_broadcast_input_its_own_shape() {
    let x = Var::new(Tensor::<f64>::from_vec(vec![0.1, 0.2, 0.3, 0.4], &[2, 2]).unwrap());
    for shape in [&[][..], &[1, 2], &[2, 1]] {
        for x_first in [true, false] {
            let y = Var::parameter(Tensor::<f64>::ones(shape));
            let z = if x_first { x.mul(&y) } else { y.mul(&x) }.unwrap();
            z.tanh().sum_all().backward().unwrap();
            assert_eq!(y.grad().unwrap().shape(), shape, "x_first {x_first}");
        }
        let y = Tensor::<f64>::ones(shape);
        check_fixed(|v| Ok(Var::new(x.value()).mul(&v[0])?.tanh()), &[y]);
    }
}

fn check_fixed(f: impl Fn(&[Var<f64>]) -> Result<Var<f64>>, inputs: &[Tensor<f64>]) {
    gradcheck(f, inputs).unwrap();
}
