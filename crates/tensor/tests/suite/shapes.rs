//! Checked shape arithmetic: a shape whose element count overflows `usize` (or exceeds
//! `MAX_NUMEL`, whose f64 bytes would not fit in one allocation) is an `Err` naming the op and the
//! shape, wherever it comes from: a constructor, a view, a broadcast, a product, a convolution.
//! Nothing here allocates the huge shapes it names: every check runs before any buffer is made.

use proptest::prelude::*;
use tapegrad_tensor::ops::attention::AttentionOptions;
use tapegrad_tensor::{checked_numel, Error, Generator, Layout, Storage, Tensor, TensorNew, MAX_NUMEL};

/// `err` is an `InvalidShape` or `ShapeMismatch` of `op` whose message contains `text`.
#[track_caller]
fn assert_shape_err(err: Error, op: &str, text: &str) {
    let msg = err.to_string();
    match &err {
        Error::InvalidShape { op: o, .. } | Error::ShapeMismatch { op: o, .. } => assert_eq!(*o, op, "{msg}"),
        other => panic!("expected a shape error of `{op}`, got {other:?}"),
    }
    assert!(msg.contains(text), "`{msg}` does not mention `{text}`");
}

/// A one-element tensor viewed as `shape` (a view: nothing allocated).
fn broadcast(shape: &[usize]) -> Tensor {
    Tensor::ones(&vec![1; shape.len()]).expand(shape).unwrap()
}

// ─── views ─────────────────────────────────────────────────────────────────────

#[test]
fn expand_to_an_overflowing_shape_is_an_error() {
    // In a release build the element count used to wrap to 0: sum_all gave 0 and mean NaN.
    let err = Tensor::ones(&[1, 1]).expand(&[1 << 32, 1 << 32]).unwrap_err();
    assert_eq!(err.to_string(), "expand: shape [4294967296, 4294967296]: the number of elements overflows usize");
    // Valid in usize but past MAX_NUMEL (its f64 bytes would exceed isize::MAX).
    let err = Tensor::ones(&[1]).expand(&[1 << 61]).unwrap_err();
    assert_shape_err(err, "expand", "exceed the most a tensor can have");
    // Right at the limit is a valid (free) view.
    let x = Tensor::ones(&[1]).expand(&[MAX_NUMEL]).unwrap();
    assert_eq!(x.numel(), MAX_NUMEL);
    // A zero dim does not make the product of the others meaningful.
    let err = Tensor::ones(&[1, 1, 1]).expand(&[0, 1 << 32, 1 << 32]).unwrap_err();
    assert_shape_err(err, "expand", "overflows usize");
}

#[test]
fn reshape_and_layout_views_check_their_shapes() {
    let x = broadcast(&[1 << 40]);
    assert_shape_err(x.reshape(&[1 << 40, 1 << 40, 0]).unwrap_err(), "reshape", "overflows");
    assert_shape_err(Tensor::ones(&[0]).reshape(&[0, 1 << 40, 1 << 40]).unwrap_err(), "reshape", "overflows");
    // Layout::reshape_view on a count that does not match is no view, never an overflow.
    let l = Layout::contiguous(&[4, 6]).unwrap().narrow(1, 0, 3).unwrap();
    assert!(l.reshape_view(&[1 << 40, 1 << 40]).is_none());
    assert!(l.reshape_view(&[usize::MAX, 2]).is_none());
    assert_shape_err(Layout::contiguous(&[1 << 40, 1 << 40]).unwrap_err(), "Layout::contiguous", "overflows");
    // An empty layout with huge strides: views and reshapes stay defined.
    let e = Layout::new(&[0, 3], &[usize::MAX / 2, usize::MAX / 4], 0).unwrap();
    assert_eq!(e.unsqueeze(1).unwrap().shape(), &[0, 1, 3]);
    assert!(e.reshape_view(&[3, 0]).is_none_or(|r| r.shape() == [3, 0]));
}

// ─── Layout::new and from_storage ──────────────────────────────────────────────

#[test]
fn layouts_from_parts_are_checked() {
    assert_shape_err(Layout::new(&[2, 3], &[1], 0).unwrap_err(), "Layout::new", "1 strides");
    assert_shape_err(Layout::new(&[1 << 40, 1 << 40], &[1, 1], 0).unwrap_err(), "Layout::new", "overflows");
    // The last element's index overflows: through a stride, through the offset.
    assert_shape_err(Layout::new(&[3], &[usize::MAX / 2 + 1], 0).unwrap_err(), "Layout::new", "reach past usize::MAX");
    assert_eq!(Layout::new(&[3], &[usize::MAX / 2], 1).unwrap().max_offset(), Some(usize::MAX));
    assert_shape_err(Layout::new(&[2], &[1], usize::MAX).unwrap_err(), "Layout::new", "reach past usize::MAX");
    assert_shape_err(
        Layout::new(&[2, 2], &[1 << 62, 1 << 62], 1 << 63).unwrap_err(),
        "Layout::new",
        "reach past usize::MAX",
    );
    // Right at usize::MAX is a valid layout (that no storage will hold).
    let l = Layout::new(&[2], &[1], usize::MAX - 1).unwrap();
    assert_eq!(l.max_offset(), Some(usize::MAX));
    let storage = Storage::new(vec![0.0f32; 8]);
    let err = Tensor::from_storage(storage, l).unwrap_err();
    assert_shape_err(err, "from_storage", "reach element 18446744073709551615 of a storage of 8");
}

#[test]
fn from_storage_checks_the_layout_against_the_storage() {
    let storage = Storage::new((0..6).map(|v| v as f64).collect::<Vec<_>>());
    let t = Tensor::from_storage(storage.clone(), Layout::new(&[2, 2], &[1, 2], 1).unwrap()).unwrap();
    assert_eq!(t.to_vec(), vec![1.0, 3.0, 2.0, 4.0]);
    // One past the end, by the offset and by a stride.
    let err = Tensor::from_storage(storage.clone(), Layout::new(&[2, 3], &[3, 1], 1).unwrap()).unwrap_err();
    assert_shape_err(err, "from_storage", "reach element 6 of a storage of 6");
    let err = Tensor::from_storage(storage.clone(), Layout::new(&[2], &[6], 0).unwrap()).unwrap_err();
    assert_shape_err(err, "from_storage", "reach element 6");
    // Stride 0 repeats an element: fine while it is inside.
    let t = Tensor::from_storage(storage.clone(), Layout::new(&[1 << 40], &[0], 5).unwrap()).unwrap();
    assert_eq!(t.get(&[(1 << 40) - 1]).unwrap(), 5.0);
    // An empty tensor reads nothing, but its offset may not point past the end.
    let t = Tensor::from_storage(storage.clone(), Layout::new(&[0, 4], &[4, 1], 6).unwrap()).unwrap();
    assert_eq!(t.to_vec(), Vec::<f64>::new());
    let err = Tensor::from_storage(storage, Layout::new(&[0], &[1], 7).unwrap()).unwrap_err();
    assert_shape_err(err, "from_storage", "offset 7 is past the end of a storage of 6");
}

// ─── constructors ──────────────────────────────────────────────────────────────

#[test]
fn constructors_reject_overflowing_shapes() {
    let huge = [1usize << 32, 1 << 32];
    let mut gen = Generator::new(0);
    assert_shape_err(Tensor::try_zeros(&huge).unwrap_err(), "full", "overflows usize");
    assert_shape_err(Tensor::try_ones(&huge).unwrap_err(), "full", "overflows usize");
    assert_shape_err(Tensor::<f64>::try_full(&huge, 2.0).unwrap_err(), "full", "overflows usize");
    // Valid in usize, but 2^61 f64 would be 2^64 bytes: an Err, not a capacity-overflow panic.
    assert_shape_err(Tensor::try_zeros(&[1 << 61]).unwrap_err(), "full", "exceed the most");
    let offset = gen.offset();
    assert_shape_err(Tensor::try_rand(&huge, &mut gen).unwrap_err(), "rand", "overflows usize");
    assert_shape_err(Tensor::try_randn(&[1 << 61], &mut gen).unwrap_err(), "randn", "exceed the most");
    assert_eq!(gen.offset(), offset, "nothing is drawn for a rejected shape");
    assert_shape_err(Tensor::try_arange(usize::MAX).unwrap_err(), "arange", "exceed the most");
    let err = Tensor::<f32>::from_vec(vec![], &[0, 1 << 32, 1 << 32]).unwrap_err();
    assert_shape_err(err, "from_vec", "overflows usize");
    let err = Tensor::<f32>::from_vec(vec![0.0; 4], &[usize::MAX, usize::MAX]).unwrap_err();
    assert_shape_err(err, "from_vec", "overflows usize");
    // The fallible versions agree with the infallible ones on valid shapes.
    assert_eq!(Tensor::try_ones(&[2, 3]).unwrap().to_vec(), Tensor::ones(&[2, 3]).to_vec());
}

#[test]
#[should_panic(expected = "full: shape [4294967296, 4294967296]: the number of elements overflows usize")]
fn infallible_constructors_panic_with_the_error_message() {
    let _ = Tensor::zeros(&[1 << 32, 1 << 32]);
}

// ─── ops whose output shape is computed ────────────────────────────────────────

#[test]
fn broadcasting_ops_reject_an_overflowing_result() {
    let (col, row) = (broadcast(&[1 << 40, 1]), broadcast(&[1, 1 << 40]));
    let err = col.add(&row).unwrap_err();
    assert_shape_err(err, "add", "the broadcast shape [1099511627776, 1099511627776]");
    assert_shape_err(col.zip_map(&row, |a, b| a * b).unwrap_err(), "zip_map", "overflows usize");
    let err = tapegrad_tensor::broadcast_shapes("mul", &[1 << 31, 1], &[1, 1 << 31]).unwrap_err();
    assert_shape_err(err, "mul", "exceed the most");
}

#[test]
fn products_reject_an_overflowing_result() {
    // [2^31, 1] @ [1, 2^31]: 2^62 outputs.
    let (x, y) = (broadcast(&[1 << 31, 1]), broadcast(&[1, 1 << 31]));
    assert_shape_err(x.matmul(&y).unwrap_err(), "matmul", "the result's shape [2147483648, 2147483648]");
    // Batched, with broadcast batch dims whose product overflows.
    let (x, y) = (broadcast(&[1 << 40, 1, 1, 1]), broadcast(&[1, 1 << 40, 1, 1]));
    assert_shape_err(x.matmul(&y).unwrap_err(), "matmul", "overflows usize");
    // The fused linear: [2^31, 1] with a [2^31, 1] weight.
    let (x, w) = (broadcast(&[1 << 31, 1]), broadcast(&[1 << 31, 1]));
    assert_shape_err(x.linear(&w, None).unwrap_err(), "linear", "the result's shape");
    // Attention scores [1, 2^31, 2^31].
    let q = broadcast(&[1, 1 << 31, 1]);
    let err = q.scaled_dot_product_attention(&q, &q, &AttentionOptions::default()).unwrap_err();
    assert_shape_err(err, "scaled_dot_product_attention", "exceed the most");
}

#[test]
fn cat_and_index_ops_reject_an_overflowing_result() {
    let x = broadcast(&[1 << 59]);
    assert_shape_err(Tensor::cat(&[&x, &x], 0).unwrap_err(), "cat", "exceed the most");
    assert_shape_err(Tensor::stack(&[&x, &x], 0).unwrap_err(), "cat", "exceed the most");
    let wide = broadcast(&[1, 1 << 59]);
    assert_shape_err(wide.index_select(0, &[0, 0, 0, 0]).unwrap_err(), "index_select", "exceed the most");
    let x = broadcast(&[1, 1 << 29, 1 << 30]);
    let err = x.gather(0, &[], &[1 << 40, 1 << 29, 1 << 30]).unwrap_err();
    assert_shape_err(err, "gather", "overflows usize");
}

#[test]
fn convolution_and_pooling_reject_huge_sizes() {
    // The output [1, 2^20, 2^29, 2^30] overflows.
    let x = broadcast(&[1, 1, 1 << 29, 1 << 30]);
    let w = broadcast(&[1 << 20, 1, 1, 1]);
    assert_shape_err(x.conv2d(&w, None, 1, 0).unwrap_err(), "conv2d", "the output [1, 1048576, 536870912, 1073741824]");
    // A 2^20 x 2^20 kernel over a 1x1 input padded by 2^20: the column matrix has 2^40 rows of
    // (2^20 + 2)^2 columns.
    let x = Tensor::ones(&[1, 1, 1, 1]);
    let w = broadcast(&[1, 1, 1 << 20, 1 << 20]);
    assert_shape_err(x.conv2d(&w, None, 1, 1 << 20).unwrap_err(), "conv2d", "the column matrix");
    let err = x.conv2d_backward(&w, &Tensor::ones(&[1, 1, 1, 1]), 1, 1 << 20).unwrap_err();
    assert_shape_err(err, "conv2d", "the column matrix");
    // Padding so large that the padded size overflows.
    assert!(x.conv2d(&Tensor::ones(&[1, 1, 1, 1]), None, 1, usize::MAX / 2 + 1).is_err());

    // A window whose area overflows (2^33 squared), allowed by pad <= kernel / 2.
    let err = x.max_pool2d(1 << 33, 1, 1 << 32).unwrap_err();
    assert!(err.to_string().starts_with("max_pool2d: "), "{err}");
    assert!(x.avg_pool2d(1 << 33, 1, 1 << 32).is_err());
    // Backwards given an input shape that is not a valid shape.
    let dy = Tensor::ones(&[1, 1, 1, 1]);
    let err = Tensor::avg_pool2d_backward(&dy, &[1 << 40, 1 << 40, 1, 1], 1, 1, 0).unwrap_err();
    assert_shape_err(err, "avg_pool2d", "overflows usize");
    let err = tapegrad_tensor::ops::conv::MaxPoolIndices::from_flat(vec![0], &[1, 1, 1 << 40, 1 << 40], &[1, 1, 1, 1])
        .unwrap_err();
    assert!(err.to_string().starts_with("max_pool2d_backward: "), "{err}");
}

// ─── random huge shapes ────────────────────────────────────────────────────────

/// A dim that is often 0 or 1, sometimes small, sometimes huge.
fn any_dim() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(1usize), 2usize..5, (20u32..64).prop_map(|b| 1usize << b), any::<usize>()]
}

/// The product of the non-zero dims in exact arithmetic.
fn wide_product(shape: &[usize]) -> u128 {
    shape.iter().filter(|&&d| d != 0).fold(1u128, |acc, &d| acc.saturating_mul(d as u128))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::common::cases(512)))]

    #[test]
    fn numel_is_checked_exactly(shape in prop::collection::vec(any_dim(), 0..5)) {
        let exact = wide_product(&shape);
        let valid = exact <= MAX_NUMEL as u128;
        let numel = if shape.contains(&0) { 0 } else { exact as usize };
        match checked_numel("op", &shape) {
            Ok(n) => prop_assert!(valid && n == numel, "{shape:?}: {n}"),
            Err(e) => prop_assert!(!valid, "{shape:?}: {e}"),
        }
        // Views never allocate: an expand of one element is Ok exactly for valid shapes.
        match Tensor::<f32>::ones(&vec![1; shape.len()]).expand(&shape) {
            Ok(t) => prop_assert!(valid && t.numel() == numel),
            Err(e) => {
                prop_assert!(!valid);
                prop_assert!(e.to_string().starts_with("expand: shape "), "{e}");
            }
        }
        // A rejected shape is rejected by the constructors before anything is allocated.
        if !valid {
            prop_assert!(Tensor::<f64>::try_zeros(&shape).is_err());
            prop_assert!(Tensor::<f32>::from_vec(vec![], &shape).is_err());
        }
    }

    #[test]
    fn layouts_and_storage_bounds_are_checked_exactly(
        dims in prop::collection::vec((any_dim(), any_dim()), 0..4),
        offset in prop_oneof![0usize..8, any::<usize>()],
    ) {
        let (shape, strides): (Vec<usize>, Vec<usize>) = dims.into_iter().unzip();
        let reach = shape.iter().zip(&strides)
            .fold(offset as u128, |acc, (&d, &s)| acc.saturating_add((d.saturating_sub(1) as u128).saturating_mul(s as u128)));
        let valid = wide_product(&shape) <= MAX_NUMEL as u128 && reach <= usize::MAX as u128;
        match Layout::new(&shape, &strides, offset) {
            Err(e) => prop_assert!(!valid, "{e}"),
            Ok(layout) => {
                prop_assert!(valid);
                let len = 16;
                let empty = shape.contains(&0);
                let fits = if empty { offset <= len } else { reach < len as u128 };
                let t = Tensor::from_storage(Storage::new(vec![1.0f32; len]), layout);
                prop_assert_eq!(t.is_ok(), fits);
                if let Ok(t) = t {
                    if t.numel() <= 4096 {
                        prop_assert!(t.to_vec().iter().all(|&v| v == 1.0));
                    }
                }
            }
        }
    }
}
