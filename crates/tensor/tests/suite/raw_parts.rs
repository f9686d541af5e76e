//! Tensors built from raw parts: `Layout::new` + `Tensor::from_storage` and `Tensor::from_vec`
//! with arbitrary shapes, strides, offsets and storage lengths (edge values included: 0, 1,
//! `MAX_NUMEL`, powers of two near overflow, `usize::MAX`). Each is `Err` exactly when an exact
//! `u128` computation says the parts are invalid, with a message naming the constructor; what is
//! built reads exactly the storage elements its layout names, and a chain of views and ops on it
//! either fails with an error naming the op or gives a tensor that stays inside its storage and
//! whose kernels (gathers, reductions, `matmul`, `cat`) agree with naive loops over the layout.
//!
//! The cargo-fuzz target `fuzz/fuzz_targets/raw_parts.rs` runs the same checks on fuzzer input.

use proptest::prelude::*;
use tapegrad_tensor::{Float, Layout, Storage, Tensor, MAX_NUMEL};

/// Tensors with more elements than this (counting empty dims as 1) are only viewed and printed,
/// not computed on.
const COMPUTE_LIMIT: usize = 4096;

/// A view or op applied to the tensor built from the raw parts.
#[derive(Clone, Debug)]
enum View {
    Transpose(usize, usize),
    T,
    Permute(Vec<usize>),
    Narrow(usize, usize, usize),
    Expand(Vec<usize>),
    Reshape(Vec<usize>),
    Unsqueeze(usize),
    Squeeze(usize),
}

impl View {
    fn name(&self) -> &'static str {
        match self {
            View::Transpose(..) => "transpose",
            View::T => "t",
            View::Permute(_) => "permute",
            View::Narrow(..) => "narrow",
            View::Expand(_) => "expand",
            View::Reshape(_) => "reshape",
            View::Unsqueeze(_) => "unsqueeze",
            View::Squeeze(_) => "squeeze",
        }
    }

    fn apply<T: Float>(&self, t: &Tensor<T>) -> tapegrad_tensor::Result<Tensor<T>> {
        match self {
            View::Transpose(a, b) => t.transpose(*a, *b),
            View::T => t.t(),
            View::Permute(dims) => t.permute(dims),
            View::Narrow(dim, start, len) => t.narrow(*dim, *start, *len),
            View::Expand(shape) => t.expand(shape),
            View::Reshape(shape) => t.reshape(shape),
            View::Unsqueeze(dim) => t.unsqueeze(*dim),
            View::Squeeze(dim) => t.squeeze(*dim),
        }
    }
}

/// Whether `Layout::new(shape, strides, offset)` must succeed, in exact arithmetic: as many
/// strides as dims, the product of the non-zero dims at most `MAX_NUMEL`, and the largest index
/// `offset + Σ (d - 1) · s` at most `usize::MAX`.
fn layout_is_valid(shape: &[usize], strides: &[usize], offset: usize) -> bool {
    if shape.len() != strides.len() {
        return false;
    }
    let mut product: u128 = 1;
    for &d in shape.iter().filter(|&&d| d != 0) {
        product = product.saturating_mul(d as u128);
    }
    product <= MAX_NUMEL as u128 && reach(shape, strides, offset) <= usize::MAX as u128
}

/// Whether `shape` is a valid tensor shape (the product of its non-zero dims at most
/// `MAX_NUMEL`).
fn shape_is_valid(shape: &[usize]) -> bool {
    layout_is_valid(shape, &vec![0; shape.len()], 0)
}

/// `offset + Σ (d - 1) · s` without overflow (each term is below 2^128 / 8 for 64-bit parts and
/// at most 64 dims).
fn reach(shape: &[usize], strides: &[usize], offset: usize) -> u128 {
    shape.iter().zip(strides).map(|(&d, &s)| (d.saturating_sub(1) as u128) * s as u128).sum::<u128>() + offset as u128
}

/// The row-major multi-index of element `i` of `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = i % shape[d];
        i /= shape[d];
    }
    index
}

/// The elements of `t` in logical order, read from its storage with the layout's definition.
fn naive<T: Float>(t: &Tensor<T>) -> Vec<f64> {
    let storage = t.storage().as_slice();
    (0..t.numel())
        .map(|i| {
            let index = unravel(i, t.shape());
            let at = t.offset() + index.iter().zip(t.strides()).map(|(i, s)| i * s).sum::<usize>();
            storage[at].to_f64()
        })
        .collect()
}

fn values<T: Float>(t: &Tensor<T>) -> Vec<f64> {
    t.to_vec().into_iter().map(Float::to_f64).collect()
}

/// Every tensor, however it was made, keeps its layout inside its storage.
fn assert_in_bounds<T: Float>(t: &Tensor<T>) {
    let len = t.storage().len() as u128;
    if t.numel() == 0 {
        assert!(t.offset() as u128 <= len, "offset {} past a storage of {len}", t.offset());
    } else {
        let r = reach(t.shape(), t.strides(), t.offset());
        assert!(r < len, "shape {:?} strides {:?} offset {} reach {r} of {len}", t.shape(), t.strides(), t.offset());
    }
}

/// Checks `t`'s kernels against naive loops over its layout (when it is small enough to compute
/// on) and that printing it works whatever its size.
fn check_tensor<T: Float>(t: &Tensor<T>) {
    assert_in_bounds(t);
    let shown = format!("{t}");
    assert!(!shown.is_empty());
    // Bounded by the product of the dims counted as at least 1, not by the numel: an empty
    // tensor of shape [0, 2^40] has outputs (its sum over dim 0) of 2^40 elements.
    if t.shape().iter().fold(1usize, |n, &d| n.saturating_mul(d.max(1))) > COMPUTE_LIMIT {
        return;
    }
    let want = naive(t);
    assert_eq!(values(t), want, "to_vec of shape {:?} strides {:?} offset {}", t.shape(), t.strides(), t.offset());
    assert_eq!(values(&t.contiguous()), want, "contiguous");
    if let Some(last) = want.len().checked_sub(1) {
        assert_eq!(t.get(&unravel(last, t.shape())).unwrap().to_f64(), want[last], "get");
    }
    // The storage holds small integers, so every sum below is exact in f32 and f64.
    let total: f64 = want.iter().sum();
    assert_eq!(t.sum_all().item().unwrap().to_f64(), total, "sum_all");
    assert_eq!(values(&t.add(t).unwrap()), want.iter().map(|v| 2.0 * v).collect::<Vec<_>>(), "add");
    if t.ndim() == 0 {
        return;
    }
    let s = t.sum(&[0], false).unwrap();
    assert_eq!(values(&s).iter().sum::<f64>(), total, "sum over dim 0");
    let last = t.ndim() - 1;
    let mut shape = t.shape().to_vec();
    shape[last] = shape[last].saturating_mul(2);
    match Tensor::cat(&[t, t], last) {
        // An empty tensor may have a last dim whose double is too large a shape.
        Err(e) => assert!(!shape_is_valid(&shape) && e.to_string().starts_with("cat: "), "{e}"),
        Ok(both) => {
            assert_eq!(both.shape(), shape.as_slice(), "cat");
            assert_eq!(values(&both).iter().sum::<f64>(), 2.0 * total, "cat");
        }
    }
    if t.shape()[last] > 0 {
        let m = t.max(last, false).unwrap();
        let rows: Vec<f64> = want.chunks(t.shape()[last]).map(|r| r.iter().copied().fold(f64::MIN, f64::max)).collect();
        assert_eq!(values(&m), rows, "max over the last dim");
        let p = t.softmax(last).unwrap();
        for row in values(&p).chunks(t.shape()[last]) {
            let sum: f64 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "softmax row sums to {sum}");
        }
    }
    if t.ndim() == 2 && t.shape()[0].max(1) * t.shape()[1].max(1) <= 256 {
        // t @ tᵀ against the naive triple loop.
        let (m, k) = (t.shape()[0], t.shape()[1]);
        let got = values(&t.matmul(&t.t().unwrap()).unwrap());
        let mut expected = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..m {
                expected[i * m + j] = (0..k).map(|p| want[i * k + p] * want[j * k + p]).sum();
            }
        }
        assert_eq!(got, expected, "matmul of [{m}, {k}] by its transpose");
    }
}

/// Whether to leave out `view` on `t`: a reshape that cannot be a view copies the tensor, which
/// for a huge broadcast is a huge (and legitimate) allocation.
fn skip<T: Float>(view: &View, t: &Tensor<T>) -> bool {
    matches!(view, View::Reshape(_)) && t.numel() > COMPUTE_LIMIT
}

/// Builds a tensor from the parts (over a storage of `len` small integers), checks it against
/// the oracles, then applies `views` in turn, checking each result or error.
fn check_parts<T: Float>(len: usize, shape: &[usize], strides: &[usize], offset: usize, views: &[View]) {
    let storage = Storage::new((0..len).map(|i| T::from_usize(i % 251)).collect());
    let layout = Layout::new(shape, strides, offset);
    assert_eq!(
        layout.is_ok(),
        layout_is_valid(shape, strides, offset),
        "Layout::new({shape:?}, {strides:?}, {offset})"
    );
    let layout = match layout {
        Ok(layout) => layout,
        Err(e) => {
            assert!(e.to_string().starts_with("Layout::new: "), "{e}");
            return;
        }
    };
    let fits = if shape.contains(&0) { offset <= len } else { reach(shape, strides, offset) < len as u128 };
    let t = match Tensor::from_storage(storage, layout) {
        Ok(t) => {
            assert!(fits, "from_storage accepted {shape:?} {strides:?} {offset} on a storage of {len}");
            t
        }
        Err(e) => {
            assert!(!fits, "from_storage refused {shape:?} {strides:?} {offset} on a storage of {len}: {e}");
            assert!(e.to_string().starts_with("from_storage: "), "{e}");
            return;
        }
    };
    assert_eq!((t.shape(), t.strides(), t.offset()), (shape, strides, offset));
    check_tensor(&t);
    apply_views(t, views);
}

/// Applies `views` in turn from `t`, checking each result, or each error's message.
fn apply_views<T: Float>(mut t: Tensor<T>, views: &[View]) {
    for view in views {
        if skip(view, &t) {
            continue;
        }
        match view.apply(&t) {
            Ok(next) => {
                check_tensor(&next);
                t = next;
            }
            Err(e) => assert!(e.to_string().starts_with(&format!("{}: ", view.name())), "{view:?}: {e}"),
        }
    }
}

/// A dim, stride or offset: mostly small, sometimes an edge value.
fn number() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..5,
        1 => 5usize..70,
        1 => prop::sample::select(vec![
            MAX_NUMEL,
            MAX_NUMEL + 1,
            1 << 31,
            1 << 32,
            (1 << 32) + 1,
            1 << 62,
            1 << 63,
            usize::MAX / 2,
            usize::MAX - 1,
            usize::MAX,
        ]),
        1 => any::<usize>(),
    ]
}

fn dims() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(number(), 0..5)
}

fn view() -> impl Strategy<Value = View> {
    let small = || 0usize..5;
    prop_oneof![
        (small(), small()).prop_map(|(a, b)| View::Transpose(a, b)),
        Just(View::T),
        prop::collection::vec(small(), 0..5).prop_map(View::Permute),
        (small(), number(), number()).prop_map(|(d, s, l)| View::Narrow(d, s, l)),
        dims().prop_map(View::Expand),
        dims().prop_map(View::Reshape),
        small().prop_map(View::Unsqueeze),
        small().prop_map(View::Squeeze),
    ]
}

/// Parts for a storage of `len` elements, often made to fit: strides derived from the shape
/// (row-major, permuted or broadcast) as well as arbitrary ones.
fn parts() -> impl Strategy<Value = (usize, Vec<usize>, Vec<usize>, usize)> {
    (0usize..80, dims(), any::<bool>(), prop::collection::vec(number(), 0..5), number()).prop_map(
        |(len, shape, derived, strides, offset)| {
            if !derived {
                return (len, shape, strides, offset);
            }
            // Row-major strides with some set to zero (a broadcast), so more layouts fit.
            let mut strides = vec![0usize; shape.len()];
            let mut step = 1usize;
            for d in (0..shape.len()).rev() {
                strides[d] = if offset % (d + 2) == 0 { 0 } else { step };
                step = step.saturating_mul(shape[d].max(1));
            }
            (len, shape, strides, offset % 8)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(3000), ..ProptestConfig::default() })]

    #[test]
    fn from_storage_is_err_or_a_valid_tensor_f32((len, shape, strides, offset) in parts(), views in prop::collection::vec(view(), 0..5)) {
        check_parts::<f32>(len, &shape, &strides, offset, &views);
    }

    #[test]
    fn from_storage_is_err_or_a_valid_tensor_f64((len, shape, strides, offset) in parts(), views in prop::collection::vec(view(), 0..5)) {
        check_parts::<f64>(len, &shape, &strides, offset, &views);
    }

    #[test]
    fn from_vec_is_err_or_a_valid_tensor(len in 0usize..80, shape in dims(), views in prop::collection::vec(view(), 0..5)) {
        let data: Vec<f32> = (0..len).map(|i| (i % 251) as f32).collect();
        let numel = shape.iter().fold(1u128, |n, &d| n.saturating_mul(d as u128));
        let valid = shape_is_valid(&shape) && numel == len as u128;
        match Tensor::from_vec(data, &shape) {
            Ok(t) => {
                prop_assert!(valid, "from_vec accepted {} elements as {:?}", len, shape);
                prop_assert!(t.is_contiguous());
                check_tensor(&t);
                apply_views(t, &views);
            }
            Err(e) => {
                prop_assert!(!valid, "from_vec refused {} elements as {:?}: {}", len, shape, e);
                prop_assert!(e.to_string().starts_with("from_vec: "), "{}", e);
            }
        }
    }
}

/// Hand-picked parts at the edges: each must give exactly the expected outcome.
#[test]
fn edge_parts() {
    let views = [View::T, View::Unsqueeze(0), View::Expand(vec![3, 2, 2])];
    // A broadcast of one element: valid, and every element is storage[0].
    check_parts::<f32>(1, &[4, 3], &[0, 0], 0, &views);
    // An empty tensor may start at the end of its storage, not past it.
    check_parts::<f32>(3, &[0, 5], &[5, 1], 3, &views);
    assert!(Tensor::from_storage(Storage::new(vec![0.0f32; 3]), Layout::new(&[0, 5], &[5, 1], 4).unwrap()).is_err());
    // The last element exactly at the end of the storage, and one past it.
    check_parts::<f64>(6, &[2, 3], &[3, 1], 0, &views);
    assert!(Tensor::from_storage(Storage::new(vec![0.0f64; 6]), Layout::new(&[2, 3], &[3, 1], 1).unwrap()).is_err());
    // Reaches that overflow usize, and shapes past MAX_NUMEL, are refused by Layout::new.
    assert!(Layout::new(&[2], &[usize::MAX], 1).is_err());
    assert!(Layout::new(&[1], &[usize::MAX], usize::MAX).is_ok());
    assert!(Layout::new(&[MAX_NUMEL + 1], &[1], 0).is_err());
    assert!(Layout::new(&[0, MAX_NUMEL + 1], &[1, 1], 0).is_err());
    assert!(Layout::new(&[2, 2], &[1], 0).is_err());
    // A huge broadcast view is valid and printable without being materialised.
    check_parts::<f32>(1, &[1 << 20, 1 << 20], &[0, 0], 0, &[View::Expand(vec![2, 1 << 20, 1 << 20])]);
}

/// `Display` of an empty tensor walked its dims although it shows no element, so a `[2^40, 0]`
/// tensor took hours to print "tensor([], size=...)" (found by the fuzz target).
#[test]
fn printing_an_empty_tensor_with_a_huge_dim() {
    let t =
        Tensor::from_storage(Storage::new(vec![0.0f32; 1]), Layout::new(&[1 << 40, 0], &[1, 1], 0).unwrap()).unwrap();
    assert!(!format!("{t}").is_empty());
}

/// `Layout::narrow` moved the offset of an empty tensor (another dim is 0) by `start * stride`,
/// past the end of the storage, and `as_slice` then panicked slicing `storage[7..7]` of 6
/// elements (found by the raw-parts proptest).
#[test]
fn narrowing_an_empty_tensor_keeps_its_offset_in_bounds() {
    let t =
        Tensor::from_storage(Storage::new(vec![0.0f64; 6]), Layout::new(&[0, 2, 0], &[0, 1, 1], 6).unwrap()).unwrap();
    let n = t.narrow(1, 1, 1).unwrap();
    assert_in_bounds(&n);
    assert_eq!(n.as_slice(), Some(&[][..]));
}
