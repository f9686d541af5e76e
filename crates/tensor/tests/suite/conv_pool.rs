//! `conv2d_max_pool2d` and its backward against the two ops they fuse (`conv2d` then
//! `max_pool2d_with_indices`; `max_pool2d_backward` then `conv2d_backward_needed`), bit for bit:
//! odd sizes, stride 2, padding 0 and 1, pointwise kernels, no bias, batches of 1 to 9 (several
//! backward groups), strided inputs, pools the fused path does not take, f32 and f64, 1 and 2
//! threads; and the errors.

use tapegrad_tensor::ops::conv::MaxPoolIndices;
use tapegrad_tensor::{Error, Float, Generator, Tensor, TensorNew};

use super::common::{bits, with_threads};

/// `[n, c_in, h, w]`, `[c_out, k]`, conv `(stride, padding)`, bias, pool `[kernel, stride, padding]`.
struct Case {
    x: [usize; 4],
    w: [usize; 2],
    conv: (usize, usize),
    bias: bool,
    pool: [usize; 3],
}

const fn case(x: [usize; 4], w: [usize; 2], conv: (usize, usize), bias: bool, pool: [usize; 3]) -> Case {
    Case { x, w, conv, bias, pool }
}

const CASES: &[Case] = &[
    // The MNIST CNN's two blocks, with a small batch.
    case([1, 1, 28, 28], [16, 3], (1, 1), true, [2, 2, 0]),
    case([5, 16, 14, 14], [8, 3], (1, 1), true, [2, 2, 0]),
    // Odd sizes (the last row and column of the convolution output are not pooled).
    case([5, 3, 9, 7], [4, 3], (1, 1), true, [2, 2, 0]),
    case([1, 1, 5, 5], [2, 3], (1, 1), false, [2, 2, 0]),
    // Stride 2, padding 0, no bias.
    case([5, 3, 11, 10], [2, 3], (2, 1), false, [2, 2, 0]),
    case([5, 1, 8, 9], [3, 3], (1, 0), true, [2, 2, 0]),
    // Pointwise (the column matrix is the image itself).
    case([2, 3, 6, 6], [2, 1], (1, 0), true, [2, 2, 0]),
    // Several backward groups, one of them partial; planes short enough to be grouped.
    case([9, 2, 14, 14], [4, 3], (1, 1), true, [2, 2, 0]),
    // Pools the fused path does not take.
    case([5, 3, 9, 9], [2, 3], (1, 1), true, [3, 2, 1]),
    case([3, 2, 7, 7], [2, 3], (1, 1), false, [2, 1, 0]),
    case([3, 2, 7, 7], [2, 3], (1, 1), true, [2, 2, 1]),
    case([3, 2, 6, 6], [2, 3], (1, 1), true, [1, 1, 0]),
    // Empty batch and no output channel.
    case([0, 2, 6, 6], [2, 3], (1, 1), true, [2, 2, 0]),
    case([2, 2, 6, 6], [0, 3], (1, 1), true, [2, 2, 0]),
];

/// The values in a strided layout: stored channels-last and permuted back.
fn channels_last<T: Float>(x: &Tensor<T>) -> Tensor<T> {
    x.permute(&[0, 2, 3, 1]).unwrap().contiguous().permute(&[0, 3, 1, 2]).unwrap()
}

type Grads = [Option<Vec<u64>>; 3];
type Outcome = (Vec<u64>, MaxPoolIndices, Vec<Grads>);

/// The forward and every subset of the gradients, by `run`'s choice of ops.
fn outcome<T: Float>(c: &Case, seed: u64, strided: bool, fused: bool) -> Outcome {
    let gen = &mut Generator::new(seed);
    let x = Tensor::<T>::randn(&c.x, gen);
    let x = if strided { channels_last(&x) } else { x };
    let [c_out, k] = c.w;
    let w = Tensor::<T>::randn(&[c_out, c.x[1], k, k], gen);
    let b = c.bias.then(|| Tensor::<T>::randn(&[c_out], gen));
    let (s, p) = c.conv;
    let [pk, ps, pp] = c.pool;
    let (y, idx) = if fused {
        x.conv2d_max_pool2d(&w, b.as_ref(), s, p, c.pool).unwrap()
    } else {
        x.conv2d(&w, b.as_ref(), s, p).unwrap().max_pool2d_with_indices(pk, ps, pp).unwrap()
    };
    // A non-contiguous upstream gradient (a transposed copy, transposed back).
    let dy = Tensor::<T>::randn(y.shape(), gen).transpose(2, 3).unwrap().contiguous().transpose(2, 3).unwrap();
    let grads = (0u8..8)
        .map(|mask| {
            let needs = [mask & 1 == 1, mask & 2 == 2, mask & 4 == 4];
            let g = if fused {
                x.conv2d_max_pool2d_backward(&w, &dy, &idx, s, p, needs).unwrap()
            } else {
                let dconv = Tensor::max_pool2d_backward(&dy, &idx).unwrap();
                x.conv2d_backward_needed(&w, &dconv, s, p, needs).unwrap()
            };
            [g.dx, g.dweight, g.dbias].map(|t| t.as_ref().map(bits))
        })
        .collect();
    (bits(&y), idx, grads)
}

fn check_all<T: Float>() {
    for (i, c) in CASES.iter().enumerate() {
        for strided in [false, true] {
            let seed = 100 + i as u64;
            let want = outcome::<T>(c, seed, strided, false);
            for threads in [1, 2] {
                let got = with_threads(threads, || outcome::<T>(c, seed, strided, true));
                let what =
                    format!("case {i} ({:?}, {:?}, pool {:?}), strided {strided}, {threads} threads", c.x, c.w, c.pool);
                assert_eq!(got.0, want.0, "output of {what}");
                assert_eq!(got.1, want.1, "indices of {what}");
                for (mask, (g, w)) in got.2.iter().zip(&want.2).enumerate() {
                    for (name, g, w) in [("dx", &g[0], &w[0]), ("dweight", &g[1], &w[1]), ("dbias", &g[2], &w[2])] {
                        assert_eq!(g, w, "{name} of {what}, needs mask {mask}");
                    }
                }
            }
        }
    }
}

#[test]
fn conv2d_max_pool2d_is_conv2d_then_max_pool2d_bit_for_bit_f32() {
    check_all::<f32>();
}

#[test]
fn conv2d_max_pool2d_is_conv2d_then_max_pool2d_bit_for_bit_f64() {
    check_all::<f64>();
}

/// The gradient reaches the winner of each window and nothing else: a check that does not rest
/// on the unfused ops (a fused path and the ops could share a mistake).
#[test]
fn conv2d_max_pool2d_backward_routes_to_the_winners() {
    let x = Tensor::<f64>::from_vec((0..2 * 36).map(|v| ((v * 37) % 71) as f64).collect(), &[2, 1, 6, 6]).unwrap();
    let w = Tensor::<f64>::ones(&[1, 1, 1, 1]);
    let (y, idx) = x.conv2d_max_pool2d(&w, None, 1, 0, [2, 2, 0]).unwrap();
    assert_eq!(y.to_vec(), x.max_pool2d(2, 2, 0).unwrap().to_vec());
    let dy = Tensor::<f64>::from_vec((1..=18).map(f64::from).collect(), &[2, 1, 3, 3]).unwrap();
    let g = x.conv2d_max_pool2d_backward(&w, &dy, &idx, 1, 0, [true, true, true]).unwrap();
    let mut dx = vec![0.0; 72];
    for (o, &at) in idx.to_flat().iter().enumerate() {
        assert_eq!(x.to_vec()[o / 9 * 36 + at], y.to_vec()[o], "output {o} names its winner");
        dx[o / 9 * 36 + at] = (o + 1) as f64;
    }
    assert_eq!(g.dx.unwrap().to_vec(), dx);
    let dw: f64 = y.to_vec().iter().zip(1..).map(|(v, d)| v * f64::from(d)).sum();
    assert_eq!(g.dweight.unwrap().to_vec(), vec![dw]);
    assert_eq!(g.dbias.unwrap().to_vec(), vec![171.0]);
}

#[test]
fn conv2d_max_pool2d_errors_name_the_op_and_the_shapes() {
    let x = Tensor::<f32>::zeros(&[2, 3, 6, 6]);
    let w = Tensor::<f32>::zeros(&[4, 3, 3, 3]);
    let e = Tensor::<f32>::zeros(&[3, 6, 6]).conv2d_max_pool2d(&w, None, 1, 1, [2, 2, 0]).unwrap_err().to_string();
    assert!(e.starts_with("conv2d: shape [3, 6, 6]"), "{e}");
    let e = x.conv2d_max_pool2d(&Tensor::zeros(&[4, 2, 3, 3]), None, 1, 1, [2, 2, 0]).unwrap_err().to_string();
    assert!(e.starts_with("conv2d: [2, 3, 6, 6] and [4, 2, 3, 3]"), "{e}");
    let e = x.conv2d_max_pool2d(&w, Some(&Tensor::zeros(&[3])), 1, 1, [2, 2, 0]).unwrap_err().to_string();
    assert!(e.starts_with("conv2d: [4, 3, 3, 3] and [3]"), "{e}");
    assert!(matches!(x.conv2d_max_pool2d(&w, None, 0, 1, [2, 2, 0]), Err(Error::InvalidArgument { op: "conv2d", .. })));
    for pool in [[0, 2, 0], [2, 0, 0], [2, 2, 2]] {
        let r = x.conv2d_max_pool2d(&w, None, 1, 1, pool);
        assert!(matches!(r, Err(Error::InvalidArgument { op: "max_pool2d", .. })), "{pool:?}: {r:?}");
    }
    // A window larger than the convolution's 4 x 4 output.
    let e = x.conv2d_max_pool2d(&w, None, 1, 0, [5, 5, 0]).unwrap_err().to_string();
    assert!(e.starts_with("max_pool2d: shape [2, 4, 4, 4]"), "{e}");

    let (y, idx) = x.conv2d_max_pool2d(&w, None, 1, 1, [2, 2, 0]).unwrap();
    assert_eq!(y.shape(), [2, 4, 3, 3]);
    let needs = [true; 3];
    let e = x.conv2d_max_pool2d_backward(&w, &Tensor::zeros(&[2, 4, 3, 2]), &idx, 1, 1, needs).unwrap_err().to_string();
    assert!(e.starts_with("conv2d_max_pool2d_backward: [2, 4, 3, 3] and [2, 4, 3, 2]"), "{e}");
    // Indices of another convolution's output (padding 0: 4 x 4).
    let (_, other) = x.conv2d_max_pool2d(&w, None, 1, 0, [2, 2, 0]).unwrap();
    let e = x.conv2d_max_pool2d_backward(&w, &y, &other, 1, 1, needs).unwrap_err().to_string();
    assert!(e.starts_with("conv2d_max_pool2d_backward: [2, 4, 6, 6] and [2, 4, 4, 4]"), "{e}");
    let e = x.conv2d_max_pool2d_backward(&Tensor::zeros(&[4, 2, 3, 3]), &y, &idx, 1, 1, needs).unwrap_err().to_string();
    assert!(e.starts_with("conv2d: [2, 3, 6, 6] and [4, 2, 3, 3]"), "{e}");
}
