//! The tensor crate's `ndarray` feature (enabled for these tests by the facade's
//! dev-dependency): conversions between tensors and ndarray's arrays keep the values and shape,
//! and move the buffer instead of copying it exactly where the docs say (checked by the buffer's
//! address).

use ndarray::{array, s, Array, ArrayD, ArrayView, Axis, IxDyn, ShapeBuilder};
use proptest::prelude::*;
use tapegrad::tensor::{Tensor, TensorNew};

/// The address of a tensor's first element in its storage.
fn tensor_ptr(t: &Tensor<f64>) -> *const f64 {
    t.storage().as_slice()[t.offset()..].as_ptr()
}

/// `0, 1, ..., n - 1` as a tensor of `shape` in fresh storage of its own (a large enough
/// `Vec`, not an op's small inline buffer).
fn fresh(shape: &[usize]) -> Tensor<f64> {
    let n = shape.iter().product::<usize>();
    Tensor::from_vec((0..n).map(|i| i as f64).collect(), shape).unwrap()
}

#[test]
fn arrays_of_any_non_negative_strides_become_tensors_without_a_copy() {
    let a = Array::from_shape_fn((3, 4), |(i, j)| (10 * i + j) as f64);
    let expected: Vec<f64> = a.iter().copied().collect();
    let ptr = a.as_ptr();
    let x = Tensor::try_from(a.clone()).unwrap();
    assert_eq!((x.shape(), x.to_vec()), (&[3, 4][..], expected.clone()));
    let x = Tensor::try_from(a).unwrap();
    assert_eq!(tensor_ptr(&x), ptr);

    // Column-major (as ndarray makes it with `.f()` or `reversed_axes`): the same buffer.
    let f = Array::from_shape_vec((3, 4).f(), (0..12).map(f64::from).collect()).unwrap();
    let (ptr, logical) = (f.as_ptr(), f.iter().copied().collect::<Vec<_>>());
    let x = Tensor::try_from(f).unwrap();
    assert_eq!((x.strides(), x.to_vec(), tensor_ptr(&x)), (&[1, 3][..], logical, ptr));

    // A slice starting inside the buffer keeps its offset.
    let b = Array::from_shape_fn((4, 5), |(i, j)| (i * 5 + j) as f64).slice_move(s![1.., 2..4]);
    let (ptr, logical) = (b.as_ptr(), b.iter().copied().collect::<Vec<_>>());
    let x = Tensor::try_from(b).unwrap();
    assert_eq!((x.shape(), x.to_vec(), tensor_ptr(&x)), (&[3, 2][..], logical, ptr));
}

#[test]
fn a_reversed_axis_is_copied_in_logical_order() {
    let mut a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
    a.invert_axis(Axis(1));
    let x = Tensor::try_from(a).unwrap();
    assert_eq!((x.shape(), x.to_vec(), x.is_contiguous()), (&[2, 3][..], vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0], true));
}

#[test]
fn zero_dimensional_empty_and_fixed_rank_arrays_convert() {
    let x = Tensor::try_from(ndarray::arr0(2.5f32)).unwrap();
    assert_eq!((x.shape(), x.item().unwrap()), (&[][..], 2.5));
    let x = Tensor::<f64>::try_from(Array::zeros((0, 3))).unwrap();
    assert_eq!((x.shape(), x.numel()), (&[0, 3][..], 0));
    let x = Tensor::<f32>::try_from(Array::zeros(IxDyn(&[2, 0, 4]))).unwrap();
    assert_eq!(x.shape(), &[2, 0, 4]);
    let back = ArrayD::try_from(x).unwrap();
    assert_eq!(back.shape(), &[2, 0, 4]);
    // Empty, with strides that reach past its empty storage (a case proptest found).
    let back = ArrayD::try_from(fresh(&[2, 2, 0]).permute(&[2, 0, 1]).unwrap()).unwrap();
    assert_eq!(back.shape(), &[0, 2, 2]);
    let back = ArrayD::try_from(Tensor::<f64>::scalar(7.0)).unwrap();
    assert_eq!((back.ndim(), back.first().copied()), (0, Some(7.0)));
}

#[test]
fn views_are_copied_into_tensors() {
    let a = Array::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f64);
    let view: ArrayView<'_, f64, _> = a.slice(s![..;2, 1..]);
    let x = Tensor::try_from(view).unwrap();
    assert_eq!((x.shape(), x.to_vec()), (&[2, 3][..], vec![1.0, 2.0, 3.0, 9.0, 10.0, 11.0]));
}

#[test]
fn a_tensor_that_owns_its_buffer_moves_it_into_the_array() {
    let x = fresh(&[3, 4]);
    let ptr = tensor_ptr(&x);
    let a = ArrayD::try_from(x).unwrap();
    assert_eq!((a.shape(), a.as_ptr()), (&[3, 4][..], ptr));
    assert_eq!(a.iter().copied().collect::<Vec<_>>(), (0..12).map(f64::from).collect::<Vec<_>>());

    // A transposed view that is the only handle keeps its strides and the buffer.
    let t = fresh(&[2, 3]).t().unwrap();
    let (ptr, logical) = (tensor_ptr(&t), t.to_vec());
    let a = ArrayD::try_from(t).unwrap();
    assert_eq!((a.as_ptr(), a.strides(), a.iter().copied().collect::<Vec<_>>()), (ptr, &[1, 3][..], logical));
}

#[test]
fn a_shared_offset_or_expanded_tensor_is_copied() {
    // Shared with a clone: the array gets its own copy and the clone is untouched.
    let x = fresh(&[2, 2]);
    let keep = x.clone();
    let mut a = ArrayD::try_from(x).unwrap();
    assert_ne!(a.as_ptr(), tensor_ptr(&keep));
    a[[0, 0]] = 100.0;
    assert_eq!(keep.to_vec(), [0.0, 1.0, 2.0, 3.0]);

    // Starting past the beginning of its buffer.
    let x = fresh(&[4, 3]).narrow(0, 1, 2).unwrap();
    let logical = x.to_vec();
    let a = ArrayD::try_from(x).unwrap();
    assert_eq!((a.shape(), a.iter().copied().collect::<Vec<_>>()), (&[2, 3][..], logical));

    // An expanded dim (stride 0) would alias in an owned array.
    let x = fresh(&[1, 3]).expand(&[4, 3]).unwrap();
    let logical = x.to_vec();
    let a = ArrayD::try_from(x).unwrap();
    assert_eq!(a.iter().copied().collect::<Vec<_>>(), logical);
    assert!(a.is_standard_layout());
}

#[test]
fn as_ndarray_borrows_every_layout() {
    let base = fresh(&[3, 4]);
    for x in [
        base.clone(),
        base.t().unwrap(),
        base.narrow(1, 1, 2).unwrap(),
        base.narrow(0, 1, 1).unwrap().expand(&[5, 4]).unwrap(),
        base.reshape(&[2, 2, 3]).unwrap().permute(&[2, 0, 1]).unwrap(),
        base.narrow(0, 3, 0).unwrap(),
        // Empty, with strides that reach past its empty storage.
        fresh(&[2, 0, 3]).permute(&[2, 0, 1]).unwrap(),
    ] {
        let v = x.as_ndarray().unwrap();
        assert_eq!(v.shape(), x.shape());
        assert_eq!(v.iter().copied().collect::<Vec<_>>(), x.to_vec(), "{:?}", x.layout());
        if x.numel() > 0 {
            assert_eq!(v.as_ptr(), tensor_ptr(&x));
        }
    }
}

proptest! {
    #[test]
    fn round_trips_keep_shape_values_and_layout(
        (shape, axes) in prop::collection::vec(0usize..4, 0..5)
            .prop_flat_map(|shape| {
                let n = shape.len();
                (Just(shape), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
            }),
        share in any::<bool>(),
    ) {
        let x = fresh(&shape).permute(&axes).unwrap();
        let logical = x.to_vec();
        let keep = share.then(|| x.clone());
        let a = ArrayD::try_from(x).unwrap();
        let permuted: Vec<usize> = axes.iter().map(|&i| shape[i]).collect();
        prop_assert_eq!(a.shape(), &permuted[..]);
        prop_assert_eq!(a.iter().copied().collect::<Vec<_>>(), logical.clone());
        let y = Tensor::try_from(a).unwrap();
        prop_assert_eq!(y.to_vec(), logical);
        if let Some(keep) = keep {
            prop_assert_eq!(y.shape(), keep.shape());
            prop_assert!(!y.shares_storage(&keep));
        }
    }
}
