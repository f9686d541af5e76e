//! Tensors built from raw parts on fuzzer input: `Layout::new` + `Tensor::from_storage` and
//! `Tensor::from_vec` with arbitrary shapes, strides, offsets and storage lengths, then a chain
//! of views. Every step must be `Err` (naming its op) exactly when exact `u128` arithmetic says
//! so, or a tensor that stays inside its storage and whose kernels agree with naive loops over
//! its layout; never a panic, never an out-of-bounds read.
//!
//! The oracles below are those of `crates/tensor/tests/suite/raw_parts.rs` (the proptest of the same
//! entry points in the normal suite); keep the two in step.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tapegrad_tensor::{Float, Layout, Storage, Tensor, MAX_NUMEL};

/// Tensors with more elements than this (counting empty dims as 1) are only viewed and printed,
/// not computed on.
const COMPUTE_LIMIT: usize = 4096;

/// A view or op applied to the tensor built from the raw parts.
#[derive(Arbitrary, Clone, Debug)]
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
    // An empty tensor with a huge dim is not printed: its Display walks the huge dim (a known
    // bug, `printing_an_empty_tensor_with_a_huge_dim` in crates/tensor/tests/suite/raw_parts.rs).
    if t.numel() > 0 || t.shape().iter().all(|&d| d <= COMPUTE_LIMIT) {
        let shown = format!("{t}");
        assert!(!shown.is_empty());
    }
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
///
/// Also left out: narrowing an empty tensor, whose offset `Layout::narrow` moves past the end of
/// the storage (a known bug, `narrowing_an_empty_tensor_keeps_its_offset_in_bounds`).
fn skip<T: Float>(view: &View, t: &Tensor<T>) -> bool {
    (matches!(view, View::Reshape(_)) && t.numel() > COMPUTE_LIMIT)
        || (matches!(view, View::Narrow(..)) && t.numel() == 0)
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
    let mut t = t;
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

/// A dim, stride or offset: small, or any `usize` (the edges are where bugs hide).
#[derive(Arbitrary, Clone, Copy, Debug)]
enum Num {
    Small(u8),
    Any(usize),
}

impl Num {
    fn get(self) -> usize {
        match self {
            Num::Small(n) => usize::from(n % 70),
            Num::Any(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    f64: bool,
    from_vec: bool,
    len: u8,
    shape: Vec<Num>,
    strides: Vec<Num>,
    offset: Num,
    views: Vec<View>,
}

fuzz_target!(|input: Input| {
    let nums = |v: &[Num]| -> Vec<usize> { v.iter().take(6).map(|n| n.get()).collect() };
    let (len, shape, strides, offset) =
        (usize::from(input.len), nums(&input.shape), nums(&input.strides), input.offset.get());
    let views = &input.views[..input.views.len().min(6)];
    if input.from_vec {
        let data: Vec<f32> = (0..len).map(|i| (i % 251) as f32).collect();
        let numel = shape.iter().fold(1u128, |n, &d| n.saturating_mul(d as u128));
        let valid = shape_is_valid(&shape) && numel == len as u128;
        match Tensor::from_vec(data, &shape) {
            Ok(t) => {
                assert!(valid, "from_vec accepted {len} elements as {shape:?}");
                let (shape, strides) = (t.shape().to_vec(), t.strides().to_vec());
                check_parts::<f32>(len, &shape, &strides, 0, views);
            }
            Err(e) => {
                assert!(!valid, "from_vec refused {len} elements as {shape:?}: {e}");
                assert!(e.to_string().starts_with("from_vec: "), "{e}");
            }
        }
    } else if input.f64 {
        check_parts::<f64>(len, &shape, &strides, offset, views);
    } else {
        check_parts::<f32>(len, &shape, &strides, offset, views);
    }
});
