//! `cat`, `stack`, `index_select` / `index_add`, `gather` / `scatter_add` against naive f64
//! references (random shapes with 0- and 1-sized dims, non-contiguous inputs, f32 and f64), the
//! adjoint identities that make each pair a forward and its backward, errors, and PyTorch's values.

use proptest::prelude::*;
use serde_json::Value;
use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Error, Float, Tensor};

use tapegrad_golden as golden_file;

/// A case of PyTorch's golden file `ops.json` (in the `tapegrad-golden` crate).
fn golden(name: &str) -> Value {
    golden_file::case("ops.json", name)
}

fn golden_tensor(v: &Value) -> Tensor<f64> {
    golden_file::tensor(v)
}

use golden_file::usizes;

// ─── helpers ───────────────────────────────────────────────────────────────────

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major multi-index of `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
    idx
}

fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

fn values<T: Float>(x: &Tensor<T>) -> Vec<f64> {
    x.to_vec().into_iter().map(Float::to_f64).collect()
}

/// A tensor of `shape` holding `data`, built as a non-contiguous view when `layout` asks:
/// 0 contiguous, 1 transposed storage (the last two dims), 2 narrowed from a wider tensor.
fn build<T: Float>(data: &[f64], shape: &[usize], layout: u8) -> Tensor<T> {
    let conv = |v: &[f64]| v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
    let nd = shape.len();
    match layout {
        1 if nd >= 2 => {
            let mut tshape = shape.to_vec();
            tshape.swap(nd - 1, nd - 2);
            let t: Vec<f64> = (0..numel(&tshape))
                .map(|f| {
                    let mut i = unravel(f, &tshape);
                    i.swap(nd - 1, nd - 2);
                    data[ravel(&i, shape)]
                })
                .collect();
            Tensor::from_vec(conv(&t), &tshape).unwrap().transpose(nd - 1, nd - 2).unwrap()
        }
        2 if nd >= 1 => {
            let mut wide = shape.to_vec();
            wide[nd - 1] += 2;
            let w: Vec<f64> = (0..numel(&wide))
                .map(|f| {
                    let i = unravel(f, &wide);
                    if i[nd - 1] >= 1 && i[nd - 1] <= shape[nd - 1] {
                        let mut j = i.clone();
                        j[nd - 1] -= 1;
                        data[ravel(&j, shape)]
                    } else {
                        f64::NAN
                    }
                })
                .collect();
            Tensor::from_vec(conv(&w), &wide).unwrap().narrow(nd - 1, 1, shape[nd - 1]).unwrap()
        }
        _ => Tensor::from_vec(conv(data), shape).unwrap(),
    }
}

fn data_for(shape: &[usize], seed: u64) -> Vec<f64> {
    // Distinct small values (exact in f32), different per seed.
    (0..numel(shape)).map(|i| ((i as u64 * 37 + seed * 101) % 997) as f64 / 8.0 - 60.0).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

// ─── cat / stack ───────────────────────────────────────────────────────────────

fn naive_cat(parts: &[(Vec<f64>, Vec<usize>)], dim: usize) -> (Vec<f64>, Vec<usize>) {
    let mut shape = parts[0].1.clone();
    shape[dim] = parts.iter().map(|p| p.1[dim]).sum();
    let out = (0..numel(&shape))
        .map(|f| {
            let mut i = unravel(f, &shape);
            let mut k = 0;
            while i[dim] >= parts[k].1[dim] {
                i[dim] -= parts[k].1[dim];
                k += 1;
            }
            parts[k].0[ravel(&i, &parts[k].1)]
        })
        .collect();
    (out, shape)
}

fn check_cat<T: Float>(base: &[usize], dim: usize, sizes: &[(usize, u8)]) -> Result<(), TestCaseError> {
    let parts: Vec<(Vec<f64>, Vec<usize>)> = sizes
        .iter()
        .enumerate()
        .map(|(k, &(s, _))| {
            let mut shape = base.to_vec();
            shape[dim] = s;
            (data_for(&shape, k as u64), shape)
        })
        .collect();
    let tensors: Vec<Tensor<T>> = parts.iter().zip(sizes).map(|((d, s), &(_, l))| build(d, s, l)).collect();
    let refs: Vec<&Tensor<T>> = tensors.iter().collect();
    let got = Tensor::cat(&refs, dim).unwrap();
    let (want, shape) = naive_cat(&parts, dim);
    prop_assert_eq!(got.shape(), shape.as_slice());
    prop_assert_eq!(values(&got), want);
    Ok(())
}

fn check_stack<T: Float>(shape: &[usize], dim: usize, layouts: &[u8]) -> Result<(), TestCaseError> {
    let parts: Vec<Vec<f64>> = (0..layouts.len()).map(|k| data_for(shape, k as u64)).collect();
    let tensors: Vec<Tensor<T>> = parts.iter().zip(layouts).map(|(d, &l)| build(d, shape, l)).collect();
    let refs: Vec<&Tensor<T>> = tensors.iter().collect();
    let got = Tensor::stack(&refs, dim).unwrap();
    let mut out_shape = shape.to_vec();
    out_shape.insert(dim, layouts.len());
    prop_assert_eq!(got.shape(), out_shape.as_slice());
    let want: Vec<f64> = (0..numel(&out_shape))
        .map(|f| {
            let mut i = unravel(f, &out_shape);
            let k = i.remove(dim);
            parts[k][ravel(&i, shape)]
        })
        .collect();
    prop_assert_eq!(values(&got), want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(96), ..ProptestConfig::default() })]

    #[test]
    fn cat_matches_the_reference(
        base in prop::collection::vec(0..4usize, 1..5),
        dim in 0..4usize,
        sizes in prop::collection::vec((0..4usize, 0..3u8), 1..5),
    ) {
        let dim = dim % base.len();
        check_cat::<f32>(&base, dim, &sizes)?;
        check_cat::<f64>(&base, dim, &sizes)?;
    }

    #[test]
    fn stack_matches_the_reference(
        shape in prop::collection::vec(0..4usize, 0..4),
        dim in 0..5usize,
        layouts in prop::collection::vec(0..3u8, 1..4),
    ) {
        let dim = dim % (shape.len() + 1);
        check_stack::<f32>(&shape, dim, &layouts)?;
        check_stack::<f64>(&shape, dim, &layouts)?;
    }
}

#[test]
fn cat_accepts_expanded_and_transposed_views() {
    let row = Tensor::<f32>::from_vec(vec![1.0, 2.0], &[1, 2]).unwrap().expand(&[3, 2]).unwrap();
    let t = Tensor::<f32>::arange(6).reshape(&[2, 3]).unwrap().t().unwrap();
    let y = Tensor::cat(&[&row, &t], 1).unwrap();
    assert_eq!(y.shape(), &[3, 4]);
    assert_eq!(y.to_vec(), vec![1.0, 2.0, 0.0, 3.0, 1.0, 2.0, 1.0, 4.0, 1.0, 2.0, 2.0, 5.0]);
}

#[test]
fn cat_and_stack_errors_name_the_op_and_the_shapes() {
    let a = Tensor::<f32>::zeros(&[2, 3]);
    let b = Tensor::<f32>::zeros(&[3, 3]);
    let c = Tensor::<f32>::zeros(&[2, 3, 1]);
    assert!(matches!(Tensor::<f32>::cat(&[], 0), Err(Error::InvalidArgument { op: "cat", .. })));
    assert!(matches!(Tensor::<f32>::stack(&[], 0), Err(Error::InvalidArgument { op: "stack", .. })));
    let e = Tensor::cat(&[&a, &b], 1).unwrap_err().to_string();
    assert!(e.starts_with("cat: [2, 3] and [3, 3]"), "{e}");
    assert!(e.contains("dim 0"), "{e}");
    assert!(Tensor::cat(&[&a, &b], 0).is_ok());
    let e = Tensor::cat(&[&a, &c], 0).unwrap_err().to_string();
    assert!(e.starts_with("cat: [2, 3] and [2, 3, 1]"), "{e}");
    assert!(matches!(Tensor::cat(&[&a], 2), Err(Error::DimOutOfRange { op: "cat", dim: 2, .. })));
    let e = Tensor::stack(&[&a, &b], 0).unwrap_err().to_string();
    assert!(e.starts_with("stack: [2, 3] and [3, 3]"), "{e}");
    assert!(Tensor::stack(&[&a, &a], 2).is_ok());
    assert!(matches!(Tensor::stack(&[&a, &a], 3), Err(Error::DimOutOfRange { op: "stack", dim: 3, .. })));
    // A 0-dim tensor has no dim to concatenate along, but stacks into a vector.
    let s = Tensor::<f32>::scalar(1.0);
    assert!(Tensor::cat(&[&s, &s], 0).is_err());
    assert_eq!(Tensor::stack(&[&s, &s], 0).unwrap().shape(), &[2]);
}

// ─── index_select / index_add ──────────────────────────────────────────────────

fn naive_index_select(x: &[f64], shape: &[usize], dim: usize, index: &[usize]) -> Vec<f64> {
    let mut out_shape = shape.to_vec();
    out_shape[dim] = index.len();
    (0..numel(&out_shape))
        .map(|f| {
            let mut i = unravel(f, &out_shape);
            i[dim] = index[i[dim]];
            x[ravel(&i, shape)]
        })
        .collect()
}

fn naive_index_add(x: &[f64], shape: &[usize], dim: usize, index: &[usize], src: &[f64]) -> Vec<f64> {
    let mut out = x.to_vec();
    let mut src_shape = shape.to_vec();
    src_shape[dim] = index.len();
    for (f, &v) in src.iter().enumerate() {
        let mut i = unravel(f, &src_shape);
        i[dim] = index[i[dim]];
        out[ravel(&i, shape)] += v;
    }
    out
}

fn check_index<T: Float>(shape: &[usize], dim: usize, raw: &[usize], layout: u8) -> Result<(), TestCaseError> {
    let size = shape[dim];
    let index: Vec<usize> = if size == 0 { vec![] } else { raw.iter().map(|r| r % size).collect() };
    let xd = data_for(shape, 1);
    let x = build::<T>(&xd, shape, layout);
    let got = x.index_select(dim, &index).unwrap();
    prop_assert_eq!(values(&got), naive_index_select(&xd, shape, dim, &index));

    let mut src_shape = shape.to_vec();
    src_shape[dim] = index.len();
    let sd = data_for(&src_shape, 2);
    let src = build::<T>(&sd, &src_shape, layout);
    let got = x.index_add(dim, &index, &src).unwrap();
    prop_assert_eq!(got.shape(), shape);
    let want = naive_index_add(&xd, shape, dim, &index, &sd);
    for (g, w) in values(&got).iter().zip(&want) {
        prop_assert!(close(*g, *w, 1e-6), "{} vs {}", g, w);
    }

    // Adjoint: <index_select(x), y> == <x, index_add(0, y)>.
    let lhs = dot(&values(&x.index_select(dim, &index).unwrap()), &sd);
    let rhs = dot(&xd, &values(&Tensor::<T>::zeros(shape).index_add(dim, &index, &src).unwrap()));
    prop_assert!(close(lhs, rhs, 1e-5), "{} vs {}", lhs, rhs);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(96), ..ProptestConfig::default() })]

    #[test]
    fn index_select_and_index_add_match_the_reference(
        shape in prop::collection::vec(0..5usize, 1..4),
        dim in 0..3usize,
        raw in prop::collection::vec(0..100usize, 0..7),
        layout in 0..3u8,
    ) {
        let dim = dim % shape.len();
        check_index::<f32>(&shape, dim, &raw, layout)?;
        check_index::<f64>(&shape, dim, &raw, layout)?;
    }
}

#[test]
fn index_errors_are_errs_not_panics() {
    let x = Tensor::<f64>::zeros(&[3, 4]);
    let e = x.index_select(1, &[0, 4]).unwrap_err().to_string();
    assert!(e.starts_with("index_select: index 4"), "{e}");
    assert!(e.contains("[3, 4]"), "{e}");
    assert!(matches!(x.index_select(2, &[0]), Err(Error::DimOutOfRange { op: "index_select", .. })));
    assert!(Tensor::<f64>::zeros(&[0, 2]).index_select(0, &[0]).is_err());
    assert_eq!(Tensor::<f64>::zeros(&[0, 2]).index_select(0, &[]).unwrap().shape(), &[0, 2]);
    assert!(x.index_add(0, &[3], &Tensor::<f64>::zeros(&[1, 4])).is_err());
    let e = x.index_add(0, &[0, 1], &Tensor::<f64>::zeros(&[2, 3])).unwrap_err().to_string();
    assert!(e.starts_with("index_add: [3, 4] and [2, 3]"), "{e}");
    assert!(x.index_add(2, &[0], &Tensor::<f64>::zeros(&[3, 4])).is_err());
}

// ─── gather / scatter_add ──────────────────────────────────────────────────────

fn naive_gather(x: &[f64], shape: &[usize], dim: usize, index: &[usize], index_shape: &[usize]) -> Vec<f64> {
    (0..index.len())
        .map(|f| {
            let mut i = unravel(f, index_shape);
            i[dim] = index[f];
            x[ravel(&i, shape)]
        })
        .collect()
}

fn naive_scatter_add(
    x: &[f64],
    shape: &[usize],
    dim: usize,
    index: &[usize],
    index_shape: &[usize],
    src: &[f64],
    src_shape: &[usize],
) -> Vec<f64> {
    let mut out = x.to_vec();
    for (f, &ix) in index.iter().enumerate() {
        let p = unravel(f, index_shape);
        let mut i = p.clone();
        i[dim] = ix;
        out[ravel(&i, shape)] += src[ravel(&p, src_shape)];
    }
    out
}

/// `index_shape` is `shape` shrunk (by `shrink`) in the dims other than `dim`, and any size
/// (from `along`) in `dim`; `grow` makes the scatter source larger than the index.
fn check_gather<T: Float>(
    shape: &[usize],
    dim: usize,
    shrink: &[usize],
    along: usize,
    raw: &[usize],
    grow: &[usize],
    layout: u8,
) -> Result<(), TestCaseError> {
    let index_shape: Vec<usize> =
        (0..shape.len()).map(|d| if d == dim { along } else { shape[d] - shrink[d] % (shape[d] + 1) }).collect();
    let n = numel(&index_shape);
    let size = shape[dim];
    if size == 0 && n > 0 {
        return Ok(());
    }
    let index: Vec<usize> = (0..n).map(|k| raw[k % raw.len()].wrapping_add(k * 7) % size.max(1)).collect();
    let xd = data_for(shape, 3);
    let x = build::<T>(&xd, shape, layout);
    let got = x.gather(dim, &index, &index_shape).unwrap();
    prop_assert_eq!(got.shape(), index_shape.as_slice());
    prop_assert_eq!(values(&got), naive_gather(&xd, shape, dim, &index, &index_shape));

    let src_shape: Vec<usize> = index_shape.iter().zip(grow).map(|(i, g)| i + g % 2).collect();
    let sd = data_for(&src_shape, 4);
    let src = build::<T>(&sd, &src_shape, layout);
    let got = x.scatter_add(dim, &index, &index_shape, &src).unwrap();
    prop_assert_eq!(got.shape(), shape);
    let want = naive_scatter_add(&xd, shape, dim, &index, &index_shape, &sd, &src_shape);
    for (g, w) in values(&got).iter().zip(&want) {
        prop_assert!(close(*g, *w, 1e-6), "{} vs {}", g, w);
    }

    // Adjoint: <gather(x), y> == <x, scatter_add(0, y)> for y of the index's shape.
    let yd = data_for(&index_shape, 5);
    let y = build::<T>(&yd, &index_shape, layout);
    let lhs = dot(&values(&x.gather(dim, &index, &index_shape).unwrap()), &yd);
    let rhs = dot(&xd, &values(&Tensor::<T>::zeros(shape).scatter_add(dim, &index, &index_shape, &y).unwrap()));
    prop_assert!(close(lhs, rhs, 1e-5), "{} vs {}", lhs, rhs);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(96), ..ProptestConfig::default() })]

    #[test]
    fn gather_and_scatter_add_match_the_reference(
        shape in prop::collection::vec(0..5usize, 1..4),
        dim in 0..3usize,
        shrink in prop::collection::vec(0..3usize, 3),
        along in 0..6usize,
        raw in prop::collection::vec(0..100usize, 1..8),
        grow in prop::collection::vec(0..2usize, 3),
        layout in 0..3u8,
    ) {
        let dim = dim % shape.len();
        check_gather::<f32>(&shape, dim, &shrink, along, &raw, &grow, layout)?;
        check_gather::<f64>(&shape, dim, &shrink, along, &raw, &grow, layout)?;
    }
}

#[test]
fn gather_errors_are_errs_not_panics() {
    let x = Tensor::<f32>::zeros(&[3, 4]);
    assert!(x.gather(1, &[0, 1, 2], &[3, 1]).is_ok());
    let e = x.gather(1, &[0, 4, 0], &[3, 1]).unwrap_err().to_string();
    assert!(e.starts_with("gather: index 4"), "{e}");
    // Wrong ndim, too large in a non-gather dim, index count mismatch, dim out of range.
    assert!(x.gather(1, &[0, 1, 2], &[3]).is_err());
    let e = x.gather(1, &[0; 4], &[4, 1]).unwrap_err().to_string();
    assert!(e.starts_with("gather: [3, 4] and [4, 1]"), "{e}");
    assert!(x.gather(1, &[0, 1], &[3, 1]).is_err());
    assert!(matches!(x.gather(2, &[0], &[1, 1]), Err(Error::DimOutOfRange { op: "gather", .. })));
    assert!(x.gather(0, &[0; 3], &[usize::MAX, 2]).is_err());
    let src = Tensor::<f32>::ones(&[3, 1]);
    assert!(x.scatter_add(1, &[0, 1, 2], &[3, 1], &src).is_ok());
    assert!(x.scatter_add(1, &[0, 1, 9], &[3, 1], &src).is_err());
    let e = x.scatter_add(1, &[0; 6], &[3, 2], &src).unwrap_err().to_string();
    assert!(e.starts_with("scatter_add: [3, 2] and [3, 1]"), "{e}");
    assert!(x.scatter_add(1, &[0; 3], &[3, 1], &Tensor::ones(&[3])).is_err());
}

// ─── golden values (PyTorch) ───────────────────────────────────────────────────

fn assert_golden(name: &str, what: &str, got: &Tensor<f64>, want: &Value) {
    let want = golden_tensor(want);
    assert_eq!(got.shape(), want.shape(), "{name}: {what}");
    for (g, w) in got.to_vec().iter().zip(want.to_vec()) {
        assert!(close(*g, w, 1e-10), "{name}: {what}: {g} vs {w}");
    }
}

#[test]
fn forward_and_adjoint_match_pytorch() {
    // Gradients are d/d(input) of sum(output * upstream): for these ops, the adjoint applied to
    // the upstream gradient.
    let case = golden("cat dim 1");
    let (x, y, dy) =
        (golden_tensor(&case["inputs"]["x"]), golden_tensor(&case["inputs"]["y"]), golden_tensor(&case["upstream"]));
    assert_golden("cat", "output", &Tensor::cat(&[&x, &y], 1).unwrap(), &case["output"]);
    assert_golden("cat", "dx", &dy.narrow(1, 0, 3).unwrap(), &case["grads"]["x"]);
    assert_golden("cat", "dy", &dy.narrow(1, 3, 2).unwrap(), &case["grads"]["y"]);

    let case = golden("stack dim 0");
    let (x, y, dy) =
        (golden_tensor(&case["inputs"]["x"]), golden_tensor(&case["inputs"]["y"]), golden_tensor(&case["upstream"]));
    assert_golden("stack", "output", &Tensor::stack(&[&x, &y], 0).unwrap(), &case["output"]);
    assert_golden("stack", "dx", &dy.narrow(0, 0, 1).unwrap().squeeze(0).unwrap(), &case["grads"]["x"]);
    assert_golden("stack", "dy", &dy.narrow(0, 1, 1).unwrap().squeeze(0).unwrap(), &case["grads"]["y"]);

    let case = golden("index_select dim 0 [2,0,2]");
    let (x, dy) = (golden_tensor(&case["inputs"]["x"]), golden_tensor(&case["upstream"]));
    let index = usizes(&case["args"]["index"]);
    assert_golden("index_select", "output", &x.index_select(0, &index).unwrap(), &case["output"]);
    let dx = Tensor::<f64>::zeros(x.shape()).index_add(0, &index, &dy).unwrap();
    assert_golden("index_select", "dx", &dx, &case["grads"]["x"]);

    let case = golden("gather dim 1");
    let (x, dy) = (golden_tensor(&case["inputs"]["x"]), golden_tensor(&case["upstream"]));
    let (index, index_shape) = (usizes(&case["args"]["index"]["data"]), usizes(&case["args"]["index"]["shape"]));
    assert_golden("gather", "output", &x.gather(1, &index, &index_shape).unwrap(), &case["output"]);
    let dx = Tensor::<f64>::zeros(x.shape()).scatter_add(1, &index, &index_shape, &dy).unwrap();
    assert_golden("gather", "dx", &dx, &case["grads"]["x"]);
}
