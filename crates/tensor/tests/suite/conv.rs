//! `conv2d`, `max_pool2d`, `avg_pool2d` and their backward helpers against naive f64 loops
//! (random N, C, H, W, kernel, stride, padding; strided inputs; f32 and f64), independence from
//! the thread count, errors, and PyTorch's forward values and gradients.

use proptest::prelude::*;
use serde_json::Value;
use tapegrad_tensor::ops::conv::MaxPoolIndices;
use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Error, Float, Generator, Tensor};

use tapegrad_golden as golden_file;

/// A case of PyTorch's golden file `ops.json` (in the `tapegrad-golden` crate).
fn golden(name: &str) -> Value {
    golden_file::case("ops.json", name)
}

fn golden_tensor(v: &Value) -> Tensor<f64> {
    golden_file::tensor(v)
}

// ─── naive references (f64) ────────────────────────────────────────────────────

/// Element `(n, c, h, w)` of a row-major `[N, C, H, W]` buffer, or `None` in the padding.
fn at(x: &[f64], s: [usize; 4], n: usize, c: usize, h: isize, w: isize) -> Option<f64> {
    if h < 0 || w < 0 || h as usize >= s[2] || w as usize >= s[3] {
        return None;
    }
    Some(x[((n * s[1] + c) * s[2] + h as usize) * s[3] + w as usize])
}

fn out_dim(size: usize, k: usize, stride: usize, pad: usize) -> usize {
    (size + 2 * pad - k) / stride + 1
}

/// An input size whose output along one dim is `out` (at least 1) for a kernel `k`, `stride`
/// and `pad`, `extra < stride` cells past the last window (cells no window reaches); at least 1
/// (when the padding alone covers the kernel, the output is then at least `out`).
fn in_dim(out: usize, k: usize, stride: usize, pad: usize, extra: usize) -> usize {
    ((out - 1) * stride + k + extra % stride).saturating_sub(2 * pad).max(1)
}

/// The direct 7-loop convolution.
fn naive_conv(x: &[f64], xs: [usize; 4], w: &[f64], ws: [usize; 4], b: Option<&[f64]>, s: usize, p: usize) -> Vec<f64> {
    let (oh, ow) = (out_dim(xs[2], ws[2], s, p), out_dim(xs[3], ws[3], s, p));
    let mut y = Vec::with_capacity(xs[0] * ws[0] * oh * ow);
    for n in 0..xs[0] {
        for o in 0..ws[0] {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[o]);
                    for c in 0..xs[1] {
                        for u in 0..ws[2] {
                            for v in 0..ws[3] {
                                let (h, ww) = ((i * s + u) as isize - p as isize, (j * s + v) as isize - p as isize);
                                if let Some(xv) = at(x, xs, n, c, h, ww) {
                                    acc += xv * w[((o * ws[1] + c) * ws[2] + u) * ws[3] + v];
                                }
                            }
                        }
                    }
                    y.push(acc);
                }
            }
        }
    }
    y
}

/// The scalar backward loops: (dx, dw, db) of sum(conv(x, w) * dy).
fn naive_conv_backward(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    dy: &[f64],
    s: usize,
    p: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (oh, ow) = (out_dim(xs[2], ws[2], s, p), out_dim(xs[3], ws[3], s, p));
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; ws[0]]);
    for n in 0..xs[0] {
        for o in 0..ws[0] {
            for i in 0..oh {
                for j in 0..ow {
                    let g = dy[((n * ws[0] + o) * oh + i) * ow + j];
                    db[o] += g;
                    for c in 0..xs[1] {
                        for u in 0..ws[2] {
                            for v in 0..ws[3] {
                                let (h, ww) = ((i * s + u) as isize - p as isize, (j * s + v) as isize - p as isize);
                                if at(x, xs, n, c, h, ww).is_some() {
                                    let xi = ((n * xs[1] + c) * xs[2] + h as usize) * xs[3] + ww as usize;
                                    let wi = ((o * ws[1] + c) * ws[2] + u) * ws[3] + v;
                                    dx[xi] += w[wi] * g;
                                    dw[wi] += x[xi] * g;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}

/// (values, plane indices) of max pooling with -inf padding; ties keep the first.
fn naive_max_pool(x: &[f64], xs: [usize; 4], k: usize, s: usize, p: usize) -> (Vec<f64>, Vec<usize>) {
    let (oh, ow) = (out_dim(xs[2], k, s, p), out_dim(xs[3], k, s, p));
    let (mut y, mut idx) = (vec![], vec![]);
    for n in 0..xs[0] {
        for c in 0..xs[1] {
            for i in 0..oh {
                for j in 0..ow {
                    let mut best: Option<(f64, usize)> = None;
                    for u in 0..k {
                        for v in 0..k {
                            let (h, w) = ((i * s + u) as isize - p as isize, (j * s + v) as isize - p as isize);
                            if let Some(val) = at(x, xs, n, c, h, w) {
                                if best.is_none_or(|(b, _)| val > b) {
                                    best = Some((val, h as usize * xs[3] + w as usize));
                                }
                            }
                        }
                    }
                    let (b, at) = best.unwrap();
                    y.push(b);
                    idx.push(at);
                }
            }
        }
    }
    (y, idx)
}

/// Average pooling, padding counted as zeros (divisor k²).
fn naive_avg_pool(x: &[f64], xs: [usize; 4], k: usize, s: usize, p: usize) -> Vec<f64> {
    let (oh, ow) = (out_dim(xs[2], k, s, p), out_dim(xs[3], k, s, p));
    let mut y = vec![];
    for n in 0..xs[0] {
        for c in 0..xs[1] {
            for i in 0..oh {
                for j in 0..ow {
                    let mut sum = 0.0;
                    for u in 0..k {
                        for v in 0..k {
                            let (h, w) = ((i * s + u) as isize - p as isize, (j * s + v) as isize - p as isize);
                            sum += at(x, xs, n, c, h, w).unwrap_or(0.0);
                        }
                    }
                    y.push(sum / (k * k) as f64);
                }
            }
        }
    }
    y
}

fn naive_avg_pool_backward(xs: [usize; 4], dy: &[f64], k: usize, s: usize, p: usize) -> Vec<f64> {
    let (oh, ow) = (out_dim(xs[2], k, s, p), out_dim(xs[3], k, s, p));
    let mut dx = vec![0.0; xs.iter().product()];
    for n in 0..xs[0] {
        for c in 0..xs[1] {
            for i in 0..oh {
                for j in 0..ow {
                    let g = dy[((n * xs[1] + c) * oh + i) * ow + j] / (k * k) as f64;
                    for u in 0..k {
                        for v in 0..k {
                            let (h, w) = ((i * s + u) as isize - p as isize, (j * s + v) as isize - p as isize);
                            if at(&dx, xs, n, c, h, w).is_some() {
                                dx[((n * xs[1] + c) * xs[2] + h as usize) * xs[3] + w as usize] += g;
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

// ─── helpers ───────────────────────────────────────────────────────────────────

fn shape4(x: &Tensor<f64>) -> [usize; 4] {
    [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]]
}

fn values<T: Float>(x: &Tensor<T>) -> Vec<f64> {
    x.to_vec().into_iter().map(Float::to_f64).collect()
}

/// The same values in another layout: 0 contiguous, 1 stored channels-last and permuted back,
/// 2 narrowed out of a wider tensor (rows not mergeable with columns).
fn relayout<T: Float>(x: &Tensor<T>, kind: u8) -> Tensor<T> {
    match kind {
        1 => x.permute(&[0, 2, 3, 1]).unwrap().contiguous().permute(&[0, 3, 1, 2]).unwrap(),
        2 => {
            let s = x.shape();
            let pad = Tensor::<T>::full(&[s[0], s[1], s[2], 2], T::NAN);
            Tensor::cat(&[&x.clone(), &pad], 3).unwrap().narrow(3, 0, s[3]).unwrap()
        }
        _ => x.clone(),
    }
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}", what);
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        prop_assert!((g - w).abs() <= tol * w.abs().max(1.0), "{}[{}]: {} vs {}", what, k, g, w);
    }
    Ok(())
}

// ─── conv2d ────────────────────────────────────────────────────────────────────

#[derive(Clone, Copy, Debug)]
struct ConvCase {
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    bias: bool,
    layout: u8,
    seed: u64,
}

fn check_conv(case: ConvCase) -> Result<(), TestCaseError> {
    let ConvCase { n, c_in, c_out, h, w, kh, kw, stride, pad, bias, layout, seed } = case;
    let mut gen = Generator::new(seed);
    let x = Tensor::<f64>::randn(&[n, c_in, h, w], &mut gen);
    let wt = Tensor::<f64>::randn(&[c_out, c_in, kh, kw], &mut gen);
    let b = Tensor::<f64>::randn(&[c_out], &mut gen);
    let (xs, ws) = (shape4(&x), shape4(&wt));
    let (oh, ow) = (out_dim(h, kh, stride, pad), out_dim(w, kw, stride, pad));
    let dy = Tensor::<f64>::randn(&[n, c_out, oh, ow], &mut gen);
    let (xd, wd, bd, dyd) = (x.to_vec(), wt.to_vec(), b.to_vec(), dy.to_vec());
    let want = naive_conv(&xd, xs, &wd, ws, bias.then_some(&bd[..]), stride, pad);
    let (dx, dw, db) = naive_conv_backward(&xd, xs, &wd, ws, &dyd, stride, pad);

    // f64, exact up to summation order.
    let xv = relayout(&x, layout);
    let bias64 = bias.then_some(&b);
    let y = xv.conv2d(&wt, bias64, stride, pad).unwrap();
    prop_assert_eq!(y.shape(), &[n, c_out, oh, ow][..]);
    assert_close("y f64", &y.to_vec(), &want, 1e-10)?;
    let (gx, gw, gb) = xv.conv2d_backward(&wt, &relayout(&dy, layout), stride, pad).unwrap();
    prop_assert_eq!(gx.shape(), x.shape());
    prop_assert_eq!(gw.shape(), wt.shape());
    assert_close("dx f64", &gx.to_vec(), &dx, 1e-10)?;
    assert_close("dw f64", &gw.to_vec(), &dw, 1e-10)?;
    assert_close("db f64", &gb.to_vec(), &db, 1e-10)?;

    // f32, against the same f64 reference.
    let (x32, w32, b32, dy32) =
        (relayout(&x.cast::<f32>(), layout), wt.cast::<f32>(), b.cast::<f32>(), dy.cast::<f32>());
    let y = x32.conv2d(&w32, bias.then_some(&b32), stride, pad).unwrap();
    assert_close("y f32", &values(&y), &want, 1e-4)?;
    let (gx, gw, gb) = x32.conv2d_backward(&w32, &dy32, stride, pad).unwrap();
    assert_close("dx f32", &values(&gx), &dx, 1e-4)?;
    assert_close("dw f32", &values(&gw), &dw, 1e-4)?;
    assert_close("db f32", &values(&gb), &db, 1e-4)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(96), ..ProptestConfig::default() })]

    /// Non-empty cases only: the input size is derived from the output size wanted, so that
    /// every kernel fits (empty dims have their own test below).
    #[test]
    fn conv2d_and_its_backward_match_direct_loops(
        n in 1..3usize, c_in in 1..4usize, c_out in 1..4usize,
        oh in 1..5usize, ow in 1..5usize, kh in 1..5usize, kw in 1..5usize,
        stride in 1..4usize, pad in 0..3usize, extra in 0..3usize, bias: bool, layout in 0..3u8, seed: u64,
    ) {
        let (h, w) = (in_dim(oh, kh, stride, pad, extra), in_dim(ow, kw, stride, pad, extra + 1));
        prop_assert!(out_dim(h, kh, stride, pad) >= oh && out_dim(w, kw, stride, pad) >= ow);
        check_conv(ConvCase { n, c_in, c_out, h, w, kh, kw, stride, pad, bias, layout, seed })?;
    }
}

#[test]
fn conv2d_with_empty_dims() {
    // No image, no output channel, no input channel (the output is the bias), and all three:
    // empty outputs (or an empty reduction) on every layout, forward and backward.
    for layout in 0..3 {
        for (n, c_in, c_out) in [(0, 2, 3), (2, 2, 0), (2, 0, 3), (0, 0, 0), (0, 2, 0)] {
            let case =
                ConvCase { n, c_in, c_out, h: 4, w: 3, kh: 2, kw: 3, stride: 2, pad: 1, bias: true, layout, seed: 5 };
            check_conv(case).unwrap_or_else(|e| panic!("{case:?}: {e}"));
        }
    }
}

#[test]
fn conv2d_edge_geometries() {
    let mut cases = vec![];
    for layout in 0..3 {
        // 1x1 kernels (the pointwise path, and its fallback for unmergeable strides).
        cases.push(ConvCase {
            n: 2,
            c_in: 3,
            c_out: 2,
            h: 4,
            w: 5,
            kh: 1,
            kw: 1,
            stride: 1,
            pad: 0,
            bias: true,
            layout,
            seed: 1,
        });
        cases.push(ConvCase {
            n: 2,
            c_in: 3,
            c_out: 2,
            h: 1,
            w: 5,
            kh: 1,
            kw: 1,
            stride: 1,
            pad: 0,
            bias: false,
            layout,
            seed: 2,
        });
        cases.push(ConvCase {
            n: 2,
            c_in: 3,
            c_out: 2,
            h: 5,
            w: 1,
            kh: 1,
            kw: 1,
            stride: 1,
            pad: 0,
            bias: false,
            layout,
            seed: 3,
        });
        cases.push(ConvCase {
            n: 1,
            c_in: 2,
            c_out: 2,
            h: 6,
            w: 6,
            kh: 1,
            kw: 1,
            stride: 2,
            pad: 1,
            bias: true,
            layout,
            seed: 4,
        });
        // Kernel == input size, and == padded input size.
        cases.push(ConvCase {
            n: 2,
            c_in: 2,
            c_out: 3,
            h: 4,
            w: 3,
            kh: 4,
            kw: 3,
            stride: 1,
            pad: 0,
            bias: true,
            layout,
            seed: 5,
        });
        cases.push(ConvCase {
            n: 1,
            c_in: 2,
            c_out: 1,
            h: 3,
            w: 3,
            kh: 5,
            kw: 5,
            stride: 2,
            pad: 1,
            bias: false,
            layout,
            seed: 6,
        });
        // Stride larger than the kernel (skipped rows and columns).
        cases.push(ConvCase {
            n: 3,
            c_in: 2,
            c_out: 2,
            h: 9,
            w: 7,
            kh: 2,
            kw: 2,
            stride: 3,
            pad: 1,
            bias: true,
            layout,
            seed: 7,
        });
        // More images than one backward group.
        cases.push(ConvCase {
            n: 9,
            c_in: 2,
            c_out: 3,
            h: 5,
            w: 5,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: 1,
            bias: true,
            layout,
            seed: 8,
        });
        // No input channels: the output is the bias.
        cases.push(ConvCase {
            n: 2,
            c_in: 0,
            c_out: 2,
            h: 3,
            w: 3,
            kh: 2,
            kw: 2,
            stride: 1,
            pad: 0,
            bias: true,
            layout,
            seed: 9,
        });
    }
    for case in cases {
        check_conv(case).unwrap_or_else(|e| panic!("{case:?}: {e}"));
    }
}

#[test]
fn conv2d_does_not_depend_on_the_thread_count() {
    let mut gen = Generator::new(42);
    let x = Tensor::<f32>::randn(&[11, 3, 9, 8], &mut gen);
    let w = Tensor::<f32>::randn(&[5, 3, 3, 3], &mut gen);
    let b = Tensor::<f32>::randn(&[5], &mut gen);
    let dy = Tensor::<f32>::randn(&[11, 5, 5, 4], &mut gen);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let y = x.conv2d(&w, Some(&b), 2, 1).unwrap();
            let (dx, dw, db) = x.conv2d_backward(&w, &dy, 2, 1).unwrap();
            let (mp, idx) = x.max_pool2d_with_indices(3, 2, 1).unwrap();
            let ap = x.avg_pool2d(2, 2, 1).unwrap();
            (y.to_vec(), dx.to_vec(), dw.to_vec(), db.to_vec(), mp.to_vec(), idx.to_flat(), ap.to_vec())
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

/// Asking for a subset of the gradients gives exactly those of the full backward, and `None`
/// for the rest; on 1 and 2 threads.
#[test]
fn conv2d_backward_computes_only_what_is_needed() {
    let mut gen = Generator::new(43);
    let x = Tensor::<f32>::randn(&[9, 2, 7, 6], &mut gen);
    let w = Tensor::<f32>::randn(&[3, 2, 3, 3], &mut gen);
    let dy = Tensor::<f32>::randn(&[9, 3, 7, 6], &mut gen);
    let (dx, dw, db) = x.conv2d_backward(&w, &dy, 1, 1).unwrap();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for mask in 0u8..8 {
            let needs = [mask & 1 == 1, mask & 2 == 2, mask & 4 == 4];
            let g = pool.install(|| x.conv2d_backward_needed(&w, &dy, 1, 1, needs).unwrap());
            for (what, got, want, need) in [
                ("dx", &g.dx, &dx, needs[0]),
                ("dweight", &g.dweight, &dw, needs[1]),
                ("dbias", &g.dbias, &db, needs[2]),
            ] {
                assert_eq!(got.as_ref().map(Tensor::to_vec), need.then(|| want.to_vec()), "{what} for {needs:?}");
            }
        }
    }
}

#[test]
fn conv2d_errors_name_the_op_and_the_shapes() {
    let x = Tensor::<f32>::zeros(&[1, 3, 5, 5]);
    let w = Tensor::<f32>::zeros(&[2, 3, 3, 3]);
    let e = Tensor::<f32>::zeros(&[3, 5, 5]).conv2d(&w, None, 1, 0).unwrap_err().to_string();
    assert!(e.starts_with("conv2d: shape [3, 5, 5]"), "{e}");
    assert!(x.conv2d(&Tensor::zeros(&[2, 3, 3]), None, 1, 0).is_err());
    let e = x.conv2d(&Tensor::zeros(&[2, 4, 3, 3]), None, 1, 0).unwrap_err().to_string();
    assert!(e.starts_with("conv2d: [1, 3, 5, 5] and [2, 4, 3, 3]"), "{e}");
    assert!(e.contains("channels"), "{e}");
    let e = x.conv2d(&Tensor::zeros(&[2, 3, 6, 3]), None, 1, 0).unwrap_err().to_string();
    assert!(e.contains("larger than the input"), "{e}");
    assert!(x.conv2d(&Tensor::zeros(&[2, 3, 6, 3]), None, 1, 1).is_ok());
    assert!(matches!(x.conv2d(&w, None, 0, 0), Err(Error::InvalidArgument { op: "conv2d", .. })));
    assert!(x.conv2d(&Tensor::zeros(&[2, 3, 0, 3]), None, 1, 0).is_err());
    let e = x.conv2d(&w, Some(&Tensor::zeros(&[3])), 1, 0).unwrap_err().to_string();
    assert!(e.starts_with("conv2d: [2, 3, 3, 3] and [3]"), "{e}");
    assert!(x.conv2d(&w, None, 1, usize::MAX).is_err());
    let e = x.conv2d_backward(&w, &Tensor::zeros(&[1, 2, 5, 5]), 1, 0).unwrap_err().to_string();
    assert!(e.starts_with("conv2d_backward: [1, 2, 3, 3] and [1, 2, 5, 5]"), "{e}");
}

// ─── pooling ───────────────────────────────────────────────────────────────────

fn check_pools<T: Float>(
    x: &Tensor<f64>,
    k: usize,
    s: usize,
    p: usize,
    layout: u8,
    dy: &Tensor<f64>,
) -> Result<(), TestCaseError> {
    let xs = shape4(x);
    let (xd, dyd) = (x.to_vec(), dy.to_vec());
    let tol = if T::NAME == "f32" { 1e-5 } else { 1e-12 };
    // Round the input once so the max picks the same element in f32 and f64.
    let xt = relayout(&x.cast::<T>(), layout);
    let xr = values(&xt);
    let (want, want_idx) = naive_max_pool(&xr, xs, k, s, p);
    let (y, idx) = xt.max_pool2d_with_indices(k, s, p).unwrap();
    prop_assert_eq!(y.shape(), &[xs[0], xs[1], out_dim(xs[2], k, s, p), out_dim(xs[3], k, s, p)][..]);
    prop_assert_eq!(values(&y), want);
    prop_assert_eq!(&idx.to_flat(), &want_idx);
    prop_assert_eq!(values(&xt.max_pool2d(k, s, p).unwrap()), values(&y));

    let dyt = relayout(&dy.cast::<T>(), layout);
    let dx = Tensor::max_pool2d_backward(&dyt, &idx).unwrap();
    let mut want_dx = vec![0.0; xd.len()];
    let plane = xs[2] * xs[3];
    let out_plane = dyd.len() / (xs[0] * xs[1]).max(1);
    for (f, (&g, &i)) in values(&dyt).iter().zip(&want_idx).enumerate() {
        want_dx[f / out_plane.max(1) * plane + i] += g;
    }
    assert_close("max dx", &values(&dx), &want_dx, tol)?;

    assert_close("avg", &values(&xt.avg_pool2d(k, s, p).unwrap()), &naive_avg_pool(&xr, xs, k, s, p), tol)?;
    let dx = Tensor::avg_pool2d_backward(&dyt, &xs, k, s, p).unwrap();
    assert_close("avg dx", &values(&dx), &naive_avg_pool_backward(xs, &values(&dyt), k, s, p), tol)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::common::cases(96), ..ProptestConfig::default() })]

    /// Non-empty cases only, every one valid: the input size is derived from the output size
    /// (empty batches and channels have their own test below).
    #[test]
    fn pools_match_direct_loops(
        n in 1..3usize, c in 1..3usize, oh in 1..5usize, ow in 1..5usize,
        k in 1..5usize, s in 1..5usize, p_raw in 0..3usize, extra in 0..4usize, layout in 0..3u8, seed: u64,
    ) {
        let p = p_raw % (k / 2 + 1);
        let (h, w) = (in_dim(oh, k, s, p, extra), in_dim(ow, k, s, p, extra + 1));
        prop_assert!(out_dim(h, k, s, p) >= oh && out_dim(w, k, s, p) >= ow);
        check_pool_case(n, c, h, w, k, s, p, layout, seed)?;
    }
}

/// `check_pools` in f32 and f64 on a random input `[n, c, h, w]` and upstream gradient.
#[allow(clippy::too_many_arguments)]
fn check_pool_case(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    layout: u8,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut gen = Generator::new(seed);
    let x = Tensor::<f64>::randn(&[n, c, h, w], &mut gen);
    let dy = Tensor::<f64>::randn(&[n, c, out_dim(h, k, s, p), out_dim(w, k, s, p)], &mut gen);
    check_pools::<f32>(&x, k, s, p, layout, &dy)?;
    check_pools::<f64>(&x, k, s, p, layout, &dy)
}

#[test]
fn pools_with_empty_batches_or_channels() {
    for layout in 0..3 {
        for (n, c) in [(0, 2), (2, 0), (0, 0)] {
            check_pool_case(n, c, 5, 4, 3, 2, 1, layout, 3).unwrap_or_else(|e| panic!("{n} {c} {layout}: {e}"));
        }
    }
}

#[test]
fn max_pool_semantics_padding_ties_and_nan() {
    // Padding is -inf, not 0: an all-negative input pools to its own values.
    let x = Tensor::<f32>::from_vec(vec![-4.0, -3.0, -2.0, -1.0], &[1, 1, 2, 2]).unwrap();
    let (y, idx) = x.max_pool2d_with_indices(2, 1, 1).unwrap();
    assert_eq!(y.to_vec(), vec![-4.0, -3.0, -3.0, -2.0, -1.0, -1.0, -2.0, -1.0, -1.0]);
    assert_eq!(idx.to_flat(), vec![0, 1, 1, 2, 3, 3, 2, 3, 3]);
    // Ties keep the first element in row-major window order.
    let (_, idx) = Tensor::<f32>::ones(&[1, 1, 2, 2]).max_pool2d_with_indices(2, 2, 0).unwrap();
    assert_eq!(idx.to_flat(), vec![0]);
    // A NaN in the window wins.
    let x = Tensor::<f64>::from_vec(vec![1.0, f64::NAN, 3.0, 2.0], &[1, 1, 2, 2]).unwrap();
    let (y, idx) = x.max_pool2d_with_indices(2, 2, 0).unwrap();
    assert!(y.item().unwrap().is_nan());
    assert_eq!(idx.to_flat(), vec![1]);
    // The 2 x 2, stride-2 path (its own loop, for unit column strides) agrees with the general
    // loop (which a channels-last layout takes) for every placement of one or two NaNs (the
    // last NaN in window order wins, as in PyTorch), infinities and ties, on planes of odd width
    // (the last column unused).
    let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.0];
    for a in 0..6 {
        for b in a..6 {
            for (sa, sb) in [(0, 0), (0, 1), (1, 3), (3, 3), (2, 0)] {
                let mut v: Vec<f64> = (0..15).map(|i| (i % 4) as f64 * 0.5 - 1.0).collect();
                v[a + 2 * (a / 2)] = specials[sa];
                v[b + 5 * (b % 2)] = specials[sb];
                let x = Tensor::from_vec([v.clone(), v.clone()].concat(), &[1, 2, 3, 5]).unwrap();
                let channels_last = x.permute(&[0, 2, 3, 1]).unwrap().contiguous().permute(&[0, 3, 1, 2]).unwrap();
                assert_eq!(channels_last.strides()[3], 2);
                let (want, want_idx) = channels_last.max_pool2d_with_indices(2, 2, 0).unwrap();
                let (y, idx) = x.max_pool2d_with_indices(2, 2, 0).unwrap();
                assert_eq!(idx.to_flat(), want_idx.to_flat(), "{v:?}");
                let (got, want) = (y.to_vec(), want.to_vec());
                assert!(got.iter().zip(&want).all(|(g, w)| g == w || (g.is_nan() && w.is_nan())), "{v:?}");
            }
        }
    }
    // Avg pooling counts padded cells in the divisor.
    let y = Tensor::<f64>::ones(&[1, 1, 2, 2]).avg_pool2d(2, 2, 1).unwrap();
    assert_eq!(y.to_vec(), vec![0.25, 0.25, 0.25, 0.25]);
}

#[test]
fn window_2x2_backward_matches_the_flat_scatter() {
    // The 2 x 2 / stride 2 indices (a byte per window, written without a zero pass) route the
    // gradient exactly as the flat indices' scatter into zeros does: odd sizes leave a row and a
    // column outside every window, and dy holds -0 and NaN.
    let mut gen = Generator::new(5);
    for (h, w) in [(4, 4), (5, 7), (2, 3), (3, 2), (3, 3)] {
        let x = Tensor::<f32>::randn(&[2, 3, h, w], &mut gen);
        let (y, idx) = x.max_pool2d_with_indices(2, 2, 0).unwrap();
        let mut g = Tensor::<f32>::randn(y.shape(), &mut gen).to_vec();
        g.iter_mut().step_by(3).for_each(|v| *v = -0.0);
        if let Some(v) = g.get_mut(1) {
            *v = f32::NAN;
        }
        let dy = Tensor::from_vec(g, y.shape()).unwrap();
        let flat = MaxPoolIndices::from_flat(idx.to_flat(), x.shape(), y.shape()).unwrap();
        let want = Tensor::max_pool2d_backward(&dy, &flat).unwrap().to_vec();
        let got = Tensor::max_pool2d_backward(&dy, &idx).unwrap().to_vec();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{h} x {w}");
        assert_eq!(idx.len(), y.numel());
    }
}

#[test]
fn pool_errors_are_errs_not_panics() {
    let x = Tensor::<f32>::zeros(&[1, 2, 4, 4]);
    let e = x.max_pool2d(2, 2, 2).unwrap_err().to_string();
    assert!(e.starts_with("max_pool2d: padding 2"), "{e}");
    assert!(x.avg_pool2d(3, 1, 2).is_err());
    assert!(x.max_pool2d(0, 1, 0).is_err());
    assert!(x.max_pool2d(2, 0, 0).is_err());
    assert!(x.max_pool2d(5, 1, 0).is_err());
    assert!(x.max_pool2d(5, 1, 2).is_ok());
    assert!(Tensor::<f32>::zeros(&[2, 4, 4]).avg_pool2d(2, 2, 0).is_err());
    assert!(Tensor::<f32>::zeros(&[1, 1, 0, 4]).max_pool2d(2, 2, 1).is_err());
    let dy = Tensor::<f32>::ones(&[1, 2, 2, 2]);
    let flat = |idx: Vec<usize>, input: &[usize]| MaxPoolIndices::from_flat(idx, input, &[1, 2, 2, 2]);
    let idx = flat(vec![0; 8], &[1, 2, 4, 4]).unwrap();
    assert!(Tensor::max_pool2d_backward(&dy, &idx).is_ok());
    let e = flat(vec![16; 8], &[1, 2, 4, 4]).unwrap_err().to_string();
    assert!(e.starts_with("max_pool2d_backward: index 16"), "{e}");
    assert!(flat(vec![0; 7], &[1, 2, 4, 4]).is_err());
    assert!(flat(vec![0; 8], &[1, 3, 4, 4]).is_err());
    assert!(flat(vec![0; 8], &[2, 4, 4]).is_err());
    // dy of another shape than the indices were made for.
    let e = Tensor::max_pool2d_backward(&Tensor::<f32>::ones(&[1, 2, 2, 3]), &idx).unwrap_err().to_string();
    assert!(e.starts_with("max_pool2d_backward: [1, 2, 2, 2] and [1, 2, 2, 3]"), "{e}");
    let (_, window_idx) = Tensor::<f32>::zeros(&[1, 2, 4, 4]).max_pool2d_with_indices(2, 2, 0).unwrap();
    assert!(Tensor::max_pool2d_backward(&Tensor::<f32>::ones(&[1, 2, 2, 1]), &window_idx).is_err());
    assert!(Tensor::avg_pool2d_backward(&dy, &[1, 2, 4, 4], 2, 2, 0).is_ok());
    let e = Tensor::avg_pool2d_backward(&dy, &[1, 2, 4, 4], 2, 1, 0).unwrap_err().to_string();
    assert!(e.starts_with("avg_pool2d_backward: [1, 2, 3, 3] and [1, 2, 2, 2]"), "{e}");
}

// ─── golden values (PyTorch) ───────────────────────────────────────────────────

fn arg(case: &Value, name: &str) -> usize {
    case["args"][name].as_u64().map_or(0, |v| v as usize)
}

fn assert_golden<T: Float>(name: &str, what: &str, got: &Tensor<T>, want: &Value) {
    let want = golden_tensor(want);
    let tol = if T::NAME == "f32" { 1e-5 } else { 1e-10 };
    assert_eq!(got.shape(), want.shape(), "{name}: {what}");
    for (g, w) in values(got).iter().zip(want.to_vec()) {
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "{name}: {what}: {g} vs {w}");
    }
}

fn golden_conv<T: Float>(name: &str) {
    let case = golden(name);
    let input = |k: &str| golden_tensor(&case["inputs"][k]).cast::<T>();
    let (x, w, b, dy) = (input("x"), input("w"), input("b"), golden_tensor(&case["upstream"]).cast::<T>());
    let (s, p) = (arg(&case, "stride"), arg(&case, "padding"));
    assert_golden(name, "output", &x.conv2d(&w, Some(&b), s, p).unwrap(), &case["output"]);
    let (dx, dw, db) = x.conv2d_backward(&w, &dy, s, p).unwrap();
    assert_golden(name, "dx", &dx, &case["grads"]["x"]);
    assert_golden(name, "dw", &dw, &case["grads"]["w"]);
    assert_golden(name, "db", &db, &case["grads"]["b"]);
}

fn golden_pool<T: Float>(name: &str) {
    let case = golden(name);
    let (x, dy) = (golden_tensor(&case["inputs"]["x"]).cast::<T>(), golden_tensor(&case["upstream"]).cast::<T>());
    let (k, s, p) = (arg(&case, "kernel"), arg(&case, "stride"), arg(&case, "padding"));
    let dx = if name.starts_with("max") {
        let (y, idx) = x.max_pool2d_with_indices(k, s, p).unwrap();
        assert_golden(name, "output", &y, &case["output"]);
        Tensor::max_pool2d_backward(&dy, &idx).unwrap()
    } else {
        assert_golden(name, "output", &x.avg_pool2d(k, s, p).unwrap(), &case["output"]);
        Tensor::avg_pool2d_backward(&dy, x.shape(), k, s, p).unwrap()
    };
    assert_golden(name, "dx", &dx, &case["grads"]["x"]);
}

#[test]
fn conv_and_pools_match_pytorch() {
    for name in ["conv2d stride 1 padding 0", "conv2d stride 1 padding 1", "conv2d stride 2 padding 1"] {
        golden_conv::<f64>(name);
        golden_conv::<f32>(name);
    }
    for name in ["max_pool2d k2 s2", "avg_pool2d k2 s2", "max_pool2d k3 s2 padding 1"] {
        golden_pool::<f64>(name);
        golden_pool::<f32>(name);
    }
}
