//! Random op graphs: programs of `Var` ops (elementwise with broadcasting, scalar ops, matmul,
//! reductions, softmax, layer norm, reshapes and views, cat / stack, index_select) on random
//! shapes, valid and invalid, run through the `Result` API.
//!
//! - Every op's outcome is predicted by an independent shape oracle written here from the
//!   documented rules (NumPy broadcasting, `torch.matmul`'s cases, ...): an op is `Ok` with the
//!   predicted shape exactly when the oracle says it is valid, and otherwise an `Err` whose
//!   message starts with the op's name. Nothing panics.
//! - On programs of smooth ops only (no relu, abs, max or maximum, whose kinks a finite
//!   difference straddles), the tape's gradients match central finite differences in f64
//!   (`gradcheck`, with a random upstream gradient).

use proptest::prelude::*;
use tapegrad_autograd::{gradcheck, Var};
use tapegrad_tensor::{Generator, Tensor, TensorNew};

// ─── programs ──────────────────────────────────────────────────────────────────

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unary {
    Neg,
    Exp,
    Tanh,
    Sigmoid,
    Gelu,
    Relu,
    Abs,
    Square,
    AddScalar,
    MulScalar,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binary {
    Add,
    Sub,
    Mul,
    /// `a / (sigmoid(b) + 0.5)`: a division whose denominator stays away from 0.
    Div,
    Maximum,
    Minimum,
}

#[derive(Clone, Debug)]
enum Reshape {
    Flatten,
    /// `[..., d]` to `[..., d / k, k]` (invalid when `k` does not divide `d`, as a shape of
    /// another numel).
    SplitLast(usize),
    To(Vec<usize>),
}

/// One instruction; operands index the pool of values built so far (modulo its length).
#[derive(Clone, Debug)]
enum Op {
    Unary(Unary, usize),
    Binary(Binary, usize, usize),
    Matmul(usize, usize),
    Sum(usize, Vec<usize>, bool),
    Mean(usize, Vec<usize>, bool),
    Max(usize, usize, bool),
    Softmax(usize, usize),
    LogSoftmax(usize, usize),
    /// `layer_norm` over the operand's last `n` dims (or over `shape` when given), with an
    /// optional weight and bias taken from the pool.
    LayerNorm {
        x: usize,
        n: usize,
        shape: Option<Vec<usize>>,
        weight: Option<usize>,
        bias: Option<usize>,
    },
    Reshape(usize, Reshape),
    Transpose(usize, usize, usize),
    Permute(usize, Vec<usize>),
    Narrow(usize, usize, usize, usize),
    Expand(usize, Vec<usize>),
    Unsqueeze(usize, usize),
    Squeeze(usize, usize),
    Cat(Vec<usize>, usize),
    Stack(Vec<usize>, usize),
    IndexSelect(usize, usize, Vec<usize>),
}

impl Op {
    /// The name the op's errors start with.
    fn name(&self) -> &'static str {
        match self {
            Op::Unary(..) => "unary",
            Op::Binary(b, ..) => match b {
                Binary::Add => "add",
                Binary::Sub => "sub",
                Binary::Mul => "mul",
                Binary::Div => "div",
                Binary::Maximum => "maximum",
                Binary::Minimum => "minimum",
            },
            Op::Matmul(..) => "matmul",
            Op::Sum(..) => "sum",
            Op::Mean(..) => "mean",
            Op::Max(..) => "max",
            Op::Softmax(..) => "softmax",
            Op::LogSoftmax(..) => "log_softmax",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Reshape(..) => "reshape",
            Op::Transpose(..) => "transpose",
            Op::Permute(..) => "permute",
            Op::Narrow(..) => "narrow",
            Op::Expand(..) => "expand",
            Op::Unsqueeze(..) => "unsqueeze",
            Op::Squeeze(..) => "squeeze",
            Op::Cat(..) => "cat",
            Op::Stack(..) => "stack",
            Op::IndexSelect(..) => "index_select",
        }
    }

    /// Whether the op is smooth everywhere (so that its gradient can be checked by finite
    /// differences at any point).
    fn is_smooth(&self) -> bool {
        match self {
            Op::Unary(u, _) => !matches!(u, Unary::Relu | Unary::Abs),
            Op::Binary(b, ..) => !matches!(b, Binary::Maximum | Binary::Minimum),
            Op::Max(..) => false,
            _ => true,
        }
    }
}

// ─── the shape oracle ──────────────────────────────────────────────────────────

/// NumPy's broadcast of two shapes.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let x = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let y = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// `torch.matmul`'s output shape.
fn matmul_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let a2: Vec<usize> = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2: Vec<usize> = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return None;
    }
    let mut out = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Some(out)
}

/// The shape of a reduction over `dims` (all when empty); `None` for a dim out of range or
/// repeated.
fn reduce_shape(shape: &[usize], dims: &[usize], keepdim: bool) -> Option<Vec<usize>> {
    let mut seen = vec![false; shape.len()];
    for &d in dims {
        if d >= shape.len() || seen[d] {
            return None;
        }
        seen[d] = true;
    }
    let all = dims.is_empty();
    Some(
        shape
            .iter()
            .enumerate()
            .filter_map(|(i, &s)| match (all || seen[i], keepdim) {
                (false, _) => Some(s),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect(),
    )
}

fn is_permutation(dims: &[usize], n: usize) -> bool {
    let mut sorted = dims.to_vec();
    sorted.sort_unstable();
    sorted == (0..n).collect::<Vec<_>>()
}

/// PyTorch's rule for `expand`: at least as many dims; aligned from the right, each existing
/// dim equals the target's or is 1.
fn can_expand(from: &[usize], to: &[usize]) -> bool {
    to.len() >= from.len() && from.iter().rev().zip(to.iter().rev()).all(|(&f, &t)| f == t || f == 1)
}

/// Runs `op` on `pool`, checks its outcome against the oracle, and pushes the result.
fn step(pool: &mut Vec<Var<f64>>, op: &Op) {
    let n = pool.len();
    let get = |i: usize| pool[i % n].clone();
    let shape_of = |i: usize| pool[i % n].shape();
    let (expected, result): (Option<Vec<usize>>, tapegrad_tensor::Result<Var<f64>>) = match op {
        Op::Unary(u, x) => {
            let x = get(*x);
            let y = match u {
                Unary::Neg => x.neg(),
                Unary::Exp => x.exp(),
                Unary::Tanh => x.tanh(),
                Unary::Sigmoid => x.sigmoid(),
                Unary::Gelu => x.gelu(),
                Unary::Relu => x.relu(),
                Unary::Abs => x.abs(),
                Unary::Square => x.powf(2.0),
                Unary::AddScalar => x.add_scalar(0.75),
                Unary::MulScalar => x.mul_scalar(-1.5),
            };
            (Some(x.shape()), Ok(y))
        }
        Op::Binary(b, x, y) => {
            let (x, y) = (get(*x), get(*y));
            let z = match b {
                Binary::Add => x.add(&y),
                Binary::Sub => x.sub(&y),
                Binary::Mul => x.mul(&y),
                Binary::Div => x.div(&y.sigmoid().add_scalar(0.5)),
                Binary::Maximum => x.maximum(&y),
                Binary::Minimum => x.minimum(&y),
            };
            (broadcast(&x.shape(), &y.shape()), z)
        }
        Op::Matmul(x, y) => (matmul_shape(&shape_of(*x), &shape_of(*y)), get(*x).matmul(&get(*y))),
        Op::Sum(x, dims, keep) => (reduce_shape(&shape_of(*x), dims, *keep), get(*x).sum(dims, *keep)),
        Op::Mean(x, dims, keep) => (reduce_shape(&shape_of(*x), dims, *keep), get(*x).mean(dims, *keep)),
        Op::Max(x, dim, keep) => {
            let s = shape_of(*x);
            let ok = *dim < s.len() && s[*dim] > 0;
            (reduce_shape(&s, &[*dim], *keep).filter(|_| ok), get(*x).max(*dim, *keep))
        }
        Op::Softmax(x, dim) => {
            let s = shape_of(*x);
            ((*dim < s.len()).then(|| s.clone()), get(*x).softmax(*dim))
        }
        Op::LogSoftmax(x, dim) => {
            let s = shape_of(*x);
            ((*dim < s.len()).then(|| s.clone()), get(*x).log_softmax(*dim))
        }
        Op::LayerNorm { x, n: k, shape, weight, bias } => {
            let s = shape_of(*x);
            let ns = shape.clone().unwrap_or_else(|| s[s.len() - (*k).min(s.len())..].to_vec());
            let (w, b) = (weight.map(&get), bias.map(&get));
            let ok = !ns.is_empty()
                && s.ends_with(&ns)
                && w.as_ref().is_none_or(|w| w.shape() == ns)
                && b.as_ref().is_none_or(|b| b.shape() == ns);
            (ok.then(|| s.clone()), get(*x).layer_norm(&ns, w.as_ref(), b.as_ref(), 0.1))
        }
        Op::Reshape(x, r) => {
            let s = shape_of(*x);
            let numel: usize = s.iter().product();
            let to = match r {
                Reshape::Flatten => vec![numel],
                Reshape::SplitLast(k) => {
                    let mut to = s.clone();
                    match to.pop() {
                        Some(d) => to.extend([d / k, *k]),
                        None => to.extend([1, *k]),
                    }
                    to
                }
                Reshape::To(to) => to.clone(),
            };
            ((to.iter().product::<usize>() == numel).then(|| to.clone()), get(*x).reshape(&to))
        }
        Op::Transpose(x, a, b) => {
            let s = shape_of(*x);
            let expected = (*a < s.len() && *b < s.len()).then(|| {
                let mut t = s.clone();
                t.swap(*a, *b);
                t
            });
            (expected, get(*x).transpose(*a, *b))
        }
        Op::Permute(x, dims) => {
            let s = shape_of(*x);
            let expected = is_permutation(dims, s.len()).then(|| dims.iter().map(|&d| s[d]).collect());
            (expected, get(*x).permute(dims))
        }
        Op::Narrow(x, dim, start, len) => {
            let s = shape_of(*x);
            let ok = *dim < s.len() && start.checked_add(*len).is_some_and(|end| end <= s[*dim]);
            let expected = ok.then(|| {
                let mut t = s.clone();
                t[*dim] = *len;
                t
            });
            (expected, get(*x).narrow(*dim, *start, *len))
        }
        Op::Expand(x, to) => (can_expand(&shape_of(*x), to).then(|| to.clone()), get(*x).expand(to)),
        Op::Unsqueeze(x, dim) => {
            let s = shape_of(*x);
            let expected = (*dim <= s.len()).then(|| {
                let mut t = s.clone();
                t.insert(*dim, 1);
                t
            });
            (expected, get(*x).unsqueeze(*dim))
        }
        Op::Squeeze(x, dim) => {
            let s = shape_of(*x);
            let expected = (*dim < s.len() && s[*dim] == 1).then(|| {
                let mut t = s.clone();
                t.remove(*dim);
                t
            });
            (expected, get(*x).squeeze(*dim))
        }
        Op::Cat(xs, dim) => {
            let vars: Vec<Var<f64>> = xs.iter().map(|&i| get(i)).collect();
            let shapes: Vec<Vec<usize>> = vars.iter().map(Var::shape).collect();
            let first = &shapes[0];
            let ok = *dim < first.len()
                && shapes.iter().all(|s| s.len() == first.len() && (0..s.len()).all(|d| d == *dim || s[d] == first[d]));
            let expected = ok.then(|| {
                let mut t = first.clone();
                t[*dim] = shapes.iter().map(|s| s[*dim]).sum();
                t
            });
            (expected, Var::cat(&vars.iter().collect::<Vec<_>>(), *dim))
        }
        Op::Stack(xs, dim) => {
            let vars: Vec<Var<f64>> = xs.iter().map(|&i| get(i)).collect();
            let first = vars[0].shape();
            let ok = *dim <= first.len() && vars.iter().all(|v| v.shape() == first);
            let expected = ok.then(|| {
                let mut t = first.clone();
                t.insert(*dim, vars.len());
                t
            });
            (expected, Var::stack(&vars.iter().collect::<Vec<_>>(), *dim))
        }
        Op::IndexSelect(x, dim, index) => {
            let s = shape_of(*x);
            let ok = *dim < s.len() && index.iter().all(|&i| i < s[*dim]);
            let expected = ok.then(|| {
                let mut t = s.clone();
                t[*dim] = index.len();
                t
            });
            (expected, get(*x).index_select(*dim, index))
        }
    };
    let shapes: Vec<Vec<usize>> = pool.iter().map(Var::shape).collect();
    match (expected, result) {
        (Some(want), Ok(y)) => {
            assert_eq!(y.shape(), want, "{op:?} on {shapes:?}");
            assert_eq!(y.value().to_vec().len(), want.iter().product::<usize>());
            pool.push(y);
        }
        (None, Err(e)) => {
            let msg = e.to_string();
            // `max` reports as `max_with_indices`, the tensor op it runs: the name still leads.
            assert!(msg.starts_with(op.name()), "{op:?} on {shapes:?}: the error does not name the op: {msg}");
        }
        (Some(want), Err(e)) => panic!("{op:?} on {shapes:?} should give shape {want:?}, got: {e}"),
        (None, Ok(y)) => panic!("{op:?} on {shapes:?} should be an error, got shape {:?}", y.shape()),
    }
}

/// Runs `program` on `inputs` and returns the last value built.
fn run(inputs: &[Var<f64>], program: &[Op]) -> Var<f64> {
    let mut pool = inputs.to_vec();
    for op in program {
        step(&mut pool, op);
    }
    pool.pop().expect("the pool starts with the inputs")
}

// ─── strategies ────────────────────────────────────────────────────────────────

/// Input shapes that often broadcast: suffixes of one base shape with some dims set to 1.
fn input_shapes(count: usize, max_dim: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    let base = prop::collection::vec(1..=max_dim, 0..=3);
    (base, prop::collection::vec((0usize..=3, any::<u8>()), count)).prop_map(|(base, picks)| {
        picks
            .into_iter()
            .map(|(drop, ones)| {
                let suffix = &base[drop.min(base.len())..];
                suffix.iter().enumerate().map(|(i, &d)| if ones >> i & 1 == 1 && i % 2 == 0 { 1 } else { d }).collect()
            })
            .collect()
    })
}

fn small_dims() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..5, 0..4)
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..5, 0..4)
}

fn op(smooth_only: bool) -> impl Strategy<Value = Op> {
    let i = || 0usize..8;
    let d = || 0usize..4;
    let unary = prop::sample::select(vec![
        Unary::Neg,
        Unary::Exp,
        Unary::Tanh,
        Unary::Sigmoid,
        Unary::Gelu,
        Unary::Relu,
        Unary::Abs,
        Unary::Square,
        Unary::AddScalar,
        Unary::MulScalar,
    ]);
    let binary = prop::sample::select(vec![
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Maximum,
        Binary::Minimum,
    ]);
    let reshape =
        prop_oneof![Just(Reshape::Flatten), (1usize..4).prop_map(Reshape::SplitLast), shape().prop_map(Reshape::To)];
    let any_op = prop_oneof![
        3 => (unary, i()).prop_map(|(u, x)| Op::Unary(u, x)),
        4 => (binary, i(), i()).prop_map(|(b, x, y)| Op::Binary(b, x, y)),
        2 => (i(), i()).prop_map(|(x, y)| Op::Matmul(x, y)),
        1 => (i(), small_dims(), any::<bool>()).prop_map(|(x, ds, k)| Op::Sum(x, ds, k)),
        1 => (i(), small_dims(), any::<bool>()).prop_map(|(x, ds, k)| Op::Mean(x, ds, k)),
        1 => (i(), d(), any::<bool>()).prop_map(|(x, dim, k)| Op::Max(x, dim, k)),
        1 => (i(), d()).prop_map(|(x, dim)| Op::Softmax(x, dim)),
        1 => (i(), d()).prop_map(|(x, dim)| Op::LogSoftmax(x, dim)),
        1 => (i(), 0usize..3, prop::option::weighted(0.2, shape()), prop::option::of(i()), prop::option::of(i()))
            .prop_map(|(x, n, shape, weight, bias)| Op::LayerNorm { x, n, shape, weight, bias }),
        1 => (i(), reshape).prop_map(|(x, r)| Op::Reshape(x, r)),
        1 => (i(), d(), d()).prop_map(|(x, a, b)| Op::Transpose(x, a, b)),
        1 => (i(), prop::collection::vec(d(), 0..4)).prop_map(|(x, p)| Op::Permute(x, p)),
        1 => (i(), d(), 0usize..4, 0usize..4).prop_map(|(x, dim, s, l)| Op::Narrow(x, dim, s, l)),
        1 => (i(), prop::collection::vec(1usize..5, 0..5)).prop_map(|(x, to)| Op::Expand(x, to)),
        1 => (i(), d()).prop_map(|(x, dim)| Op::Unsqueeze(x, dim)),
        1 => (i(), d()).prop_map(|(x, dim)| Op::Squeeze(x, dim)),
        1 => (prop::collection::vec(i(), 1..4), d()).prop_map(|(xs, dim)| Op::Cat(xs, dim)),
        1 => (prop::collection::vec(i(), 1..4), d()).prop_map(|(xs, dim)| Op::Stack(xs, dim)),
        1 => (i(), d(), prop::collection::vec(0usize..4, 0..4)).prop_map(|(x, dim, ix)| Op::IndexSelect(x, dim, ix)),
    ];
    any_op.prop_filter("a smooth op", move |op| !smooth_only || op.is_smooth())
}

fn tensors(shapes: &[Vec<usize>], seed: u64) -> Vec<Tensor<f64>> {
    let mut gen = Generator::new(seed);
    shapes.iter().map(|s| Tensor::<f64>::randn(s, &mut gen)).collect()
}

// ─── the tests ─────────────────────────────────────────────────────────────────

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Any program: every op is Ok with the oracle's shape or an Err naming the op, and the
    /// last value's backward runs (from a sum, so from any shape).
    #[test]
    fn random_programs_match_the_shape_oracle(
        shapes in input_shapes(3, 4),
        program in prop::collection::vec(op(false), 1..10),
        seed in any::<u64>(),
    ) {
        let inputs: Vec<Var<f64>> = tensors(&shapes, seed).into_iter().map(Var::parameter).collect();
        let out = run(&inputs, &program);
        out.sum_all().backward().unwrap();
        for (x, s) in inputs.iter().zip(&shapes) {
            if let Some(g) = x.grad() {
                prop_assert_eq!(g.shape(), s.as_slice());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Programs of smooth ops: the tape's gradients match finite differences.
    #[test]
    fn gradients_of_smooth_programs_match_finite_differences(
        shapes in input_shapes(2, 3),
        program in prop::collection::vec(op(true), 1..7),
        seed in any::<u64>(),
    ) {
        let inputs = tensors(&shapes, seed);
        // Keep to programs whose values stay moderate, where a finite difference is accurate.
        let out = run(&inputs.iter().cloned().map(Var::new).collect::<Vec<_>>(), &program).value().to_vec();
        prop_assume!(out.iter().all(|v| v.abs() < 1e3));
        gradcheck(|v| Ok(run(v, &program)), &inputs).map_err(|e| TestCaseError::fail(format!("{program:?} on {shapes:?}: {e}")))?;
    }
}

/// A few hand-written programs whose outcome is known, so that the oracle itself is checked.
#[test]
fn the_oracle_agrees_with_known_cases() {
    assert_eq!(broadcast(&[2, 1, 3], &[4, 1]), Some(vec![2, 4, 3]));
    assert_eq!(broadcast(&[2, 3], &[3, 2]), None);
    assert_eq!(matmul_shape(&[3], &[3]), Some(vec![]));
    assert_eq!(matmul_shape(&[2, 1, 4, 3], &[5, 3, 2]), Some(vec![2, 5, 4, 2]));
    assert_eq!(matmul_shape(&[4], &[2, 4, 3]), Some(vec![2, 3]));
    assert_eq!(matmul_shape(&[2, 3], &[2, 3]), None);
    assert_eq!(reduce_shape(&[2, 3, 4], &[2, 0], true), Some(vec![1, 3, 1]));
    assert_eq!(reduce_shape(&[2, 3], &[1, 1], false), None);
    assert!(can_expand(&[3, 1], &[2, 3, 4]) && !can_expand(&[3, 2], &[3, 4]));

    let x = Var::parameter(Tensor::<f64>::ones(&[2, 3]));
    let mut pool = vec![x.clone(), Var::new(Tensor::<f64>::ones(&[4]))];
    step(&mut pool, &Op::Matmul(0, 1)); // [2, 3] @ [4]: an error naming matmul
    step(&mut pool, &Op::Binary(Binary::Add, 0, 1)); // [2, 3] + [4]: an error naming add
    assert_eq!(pool.len(), 2);
    step(&mut pool, &Op::Reshape(0, Reshape::SplitLast(3))); // [2, 1, 3]
    step(&mut pool, &Op::Expand(2, vec![4, 2, 5, 3]));
    assert_eq!(pool[3].shape(), [4, 2, 5, 3]);
    step(&mut pool, &Op::LayerNorm { x: 3, n: 2, shape: None, weight: None, bias: None });
    assert_eq!(pool.len(), 5);
}
