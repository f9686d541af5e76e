//! `layer_norm` and its backward against naive f64 loops: random row counts and widths, with
//! and without weight and bias, f32 and f64, transposed inputs and upstream gradients; rows large enough to split
//! across threads give the same bits on one and two threads; errors name the shapes.

use proptest::prelude::*;
use tapegrad_tensor::{Generator, Tensor, TensorNew};

/// `(y, dx, dw, db)` of layer norm over rows of `n`, the textbook formulas in f64.
fn naive(x: &[f64], dy: &[f64], n: usize, w: Option<&[f64]>, b: Option<&[f64]>, eps: f64) -> [Vec<f64>; 4] {
    let (mut y, mut dx, mut dw, mut db) = (vec![], vec![], vec![0.0; n], vec![0.0; n]);
    for (x, dy) in x.chunks(n).zip(dy.chunks(n)) {
        let mu = x.iter().sum::<f64>() / n as f64;
        let var = x.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / n as f64;
        let r = 1.0 / (var + eps).sqrt();
        let xhat: Vec<f64> = x.iter().map(|v| (v - mu) * r).collect();
        let g: Vec<f64> = (0..n).map(|j| dy[j] * w.map_or(1.0, |w| w[j])).collect();
        let (sg, sgx) =
            (g.iter().sum::<f64>() / n as f64, g.iter().zip(&xhat).map(|(g, h)| g * h).sum::<f64>() / n as f64);
        for j in 0..n {
            y.push(xhat[j] * w.map_or(1.0, |w| w[j]) + b.map_or(0.0, |b| b[j]));
            dx.push(r * (g[j] - sg - xhat[j] * sgx));
            dw[j] += dy[j] * xhat[j];
            db[j] += dy[j];
        }
    }
    [y, dx, dw, db]
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

fn check(rows: usize, n: usize, affine: u8, seed: u64) {
    let gen = &mut Generator::new(seed);
    let x = Tensor::<f64>::randn(&[rows, n], gen).mul_scalar(3.0).add_scalar(5.0);
    let dy = Tensor::<f64>::randn(&[rows, n], gen);
    let w = (affine & 1 == 1).then(|| Tensor::<f64>::randn(&[n], gen));
    let b = (affine & 2 == 2).then(|| Tensor::<f64>::randn(&[n], gen));
    let (xv, dyv) = (x.to_vec(), dy.to_vec());
    let (wv, bv) = (w.as_ref().map(Tensor::to_vec), b.as_ref().map(Tensor::to_vec));
    let [y, dx, dw, db] = naive(&xv, &dyv, n, wv.as_deref(), bv.as_deref(), 1e-5);

    let out = x.layer_norm(&[n], w.as_ref(), b.as_ref(), 1e-5).unwrap();
    assert_close("y", &out.y.to_vec(), &y, 1e-12);
    let g = x.layer_norm_backward(&dy, &[n], &out.mean, &out.rstd, w.as_ref(), b.is_some()).unwrap();
    assert_close("dx", &g.dx.to_vec(), &dx, 1e-10);
    assert_eq!(g.dweight.is_some(), w.is_some());
    assert_eq!(g.dbias.is_some(), b.is_some());
    if let Some(d) = g.dweight {
        assert_close("dw", &d.to_vec(), &dw, 1e-10);
    }
    if let Some(d) = g.dbias {
        assert_close("db", &d.to_vec(), &db, 1e-10);
    }

    // f32, from a transposed view of the same values: close to the f64 result.
    let x32 = Tensor::from_vec(xv.iter().map(|&v| v as f32).collect(), &[rows, n]).unwrap();
    let xt = x32.t().unwrap().contiguous().t().unwrap();
    let w32 = wv.as_ref().map(|w| Tensor::from_vec(w.iter().map(|&v| v as f32).collect(), &[n]).unwrap());
    let b32 = bv.as_ref().map(|b| Tensor::from_vec(b.iter().map(|&v| v as f32).collect(), &[n]).unwrap());
    let y32 = xt.layer_norm(&[n], w32.as_ref(), b32.as_ref(), 1e-5).unwrap().y;
    let y32: Vec<f64> = y32.to_vec().iter().map(|&v| v as f64).collect();
    assert_close("y (f32)", &y32, &y, 1e-4);

    // The f32 backward, with a transposed upstream gradient too.
    let out32 = xt.layer_norm(&[n], w32.as_ref(), b32.as_ref(), 1e-5).unwrap();
    let dy32 = Tensor::from_vec(dyv.iter().map(|&v| v as f32).collect(), &[rows, n]).unwrap();
    let dyt = dy32.t().unwrap().contiguous().t().unwrap();
    let g32 = xt.layer_norm_backward(&dyt, &[n], &out32.mean, &out32.rstd, w32.as_ref(), b32.is_some()).unwrap();
    let wide = |t: &Tensor<f32>| -> Vec<f64> { t.to_vec().iter().map(|&v| v as f64).collect() };
    // Rounding x to f32 moves a row's dx by up to about r² · max|x| · max|g| · ε₃₂ (r = 1/std:
    // rows whose values nearly agree are ill-conditioned), so the f32 check allows that on top.
    let got = wide(&g32.dx);
    for (row, ((x, dy), (got, want))) in
        xv.chunks(n).zip(dyv.chunks(n)).zip(got.chunks(n).zip(dx.chunks(n))).enumerate()
    {
        let mu = x.iter().sum::<f64>() / n as f64;
        let r2 = 1.0 / (x.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / n as f64 + 1e-5);
        let xmax = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let gmax = (0..n).map(|j| (dy[j] * wv.as_ref().map_or(1.0, |w| w[j])).abs()).fold(0.0, f64::max);
        let slack = 8.0 * r2 * xmax * gmax * f64::from(f32::EPSILON);
        for (j, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()) + slack, "dx (f32)[{row}, {j}]: {g} vs {w}");
        }
    }
    if let Some(d) = g32.dweight {
        assert_close("dw (f32)", &wide(&d), &dw, 1e-4);
    }
    if let Some(d) = g32.dbias {
        assert_close("db (f32)", &wide(&d), &db, 1e-4);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::common::cases(64)))]

    #[test]
    fn layer_norm_matches_the_formulas(rows in 1usize..6, n in 1usize..40, affine in 0u8..4, seed in any::<u64>()) {
        check(rows, n, affine, seed);
    }
}

#[test]
fn many_rows_split_across_pieces_and_threads_give_the_same_bits() {
    // 4096 rows of 64: the forward splits the rows into several pieces, and the backward's
    // reductions run over many chunks.
    check(4096, 64, 3, 1);
    let gen = &mut Generator::new(2);
    let x = Tensor::<f32>::randn(&[4096, 64], gen);
    let dy = Tensor::<f32>::randn(&[4096, 64], gen);
    let (w, b) = (Tensor::<f32>::randn(&[64], gen), Tensor::<f32>::randn(&[64], gen));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let out = x.layer_norm(&[64], Some(&w), Some(&b), 1e-5).unwrap();
            let g = x.layer_norm_backward(&dy, &[64], &out.mean, &out.rstd, Some(&w), true).unwrap();
            (out.y.to_vec(), g.dx.to_vec(), g.dweight.unwrap().to_vec(), g.dbias.unwrap().to_vec())
        })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn normalised_trailing_dims_and_errors_name_the_shapes() {
    let x = Tensor::<f64>::arange(24).reshape(&[2, 3, 4]).unwrap();
    // Over the last two dims: one row per leading index.
    let out = x.layer_norm(&[3, 4], None, None, 0.0).unwrap();
    assert_eq!(out.mean.to_vec(), vec![5.5, 17.5]);
    let e = x.layer_norm(&[4, 3], None, None, 1e-5).unwrap_err().to_string();
    assert!(e.starts_with("layer_norm: [2, 3, 4] and [4, 3]"), "{e}");
    let e = x.layer_norm(&[4], Some(&Tensor::<f64>::zeros(&[3])), None, 1e-5).unwrap_err().to_string();
    assert!(e.starts_with("layer_norm: [3] and [4]"), "{e}");
    assert!(x.layer_norm(&[], None, None, 1e-5).is_err());
    let out = x.layer_norm(&[4], None, None, 1e-5).unwrap();
    let e = x.layer_norm_backward(&Tensor::<f64>::zeros(&[2, 3]), &[4], &out.mean, &out.rstd, None, false).unwrap_err();
    assert!(e.to_string().starts_with("layer_norm_backward: [2, 3, 4] and [2, 3]"), "{e}");
}

#[test]
fn rows_of_no_elements_have_empty_gradients() {
    // A [2, 0] input normalised over its empty last dim (a narrow to nothing, then a layer norm
    // with an affine part): the backward gives empty gradients instead of panicking.
    let x = Tensor::<f64>::zeros(&[2, 0]);
    let (w, b) = (Tensor::<f64>::zeros(&[0]), Tensor::<f64>::zeros(&[0]));
    let out = x.layer_norm(&[0], Some(&w), Some(&b), 1e-5).unwrap();
    assert_eq!(out.y.shape(), &[2, 0]);
    let g = x.layer_norm_backward(&x, &[0], &out.mean, &out.rstd, Some(&w), true).unwrap();
    assert_eq!(g.dx.shape(), &[2, 0]);
    assert_eq!(g.dweight.map(|d| d.shape().to_vec()), Some(vec![0]));
    assert_eq!(g.dbias.map(|d| d.shape().to_vec()), Some(vec![0]));
}
