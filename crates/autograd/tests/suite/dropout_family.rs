//! The forward behaviour of the whole dropout family (the gradient checks in `gradcheck.rs`
//! pass for any forward consistent with its backward, so they cannot tell a wrong forward):
//! every op refuses a bad `p` naming itself, gives zeros and zero gradients at `p = 1` (except
//! `gaussian_dropout`, which refuses it) and keeps a NaN or infinite input non-finite, as
//! PyTorch's multiply-by-the-mask does; then per op the statistics of its mask or noise with a
//! fixed seed, its scale, the rows, planes or shared dims it zeroes whole, and a replay from the
//! stored seed and offset.

use tapegrad_autograd::{
    alpha_dropout, drop_path, dropout, dropout2d, dropout_shared, feature_alpha_dropout, fused, gaussian_dropout,
    DropoutRecord, Generator, Result, Tensor, Var,
};
use tapegrad_tensor::TensorNew;

type Op = fn(&Var<f64>, f64, &mut Generator) -> Result<Var<f64>>;

/// Every single-input dropout op of the family, by the name its errors carry; `dropout_shared`
/// shares its mask along dim 1.
const OPS: [(&str, Op); 7] = [
    ("dropout", dropout),
    ("dropout2d", dropout2d),
    ("alpha_dropout", alpha_dropout),
    ("feature_alpha_dropout", feature_alpha_dropout),
    ("drop_path", drop_path),
    ("dropout_shared", |x, p, gen| dropout_shared(x, p, &[1], gen)),
    ("gaussian_dropout", gaussian_dropout),
];

/// `dropout(relu(x Wᵀ + b))`, fused, with `x` `[N, 3]` and 4 outputs.
fn linear_relu_dropout(x: &Var<f64>, p: f64, gen: &mut Generator) -> Result<Var<f64>> {
    let k = x.value().shape()[1];
    let w = Var::parameter(Tensor::<f64>::randn(&[4, k], &mut Generator::new(90)));
    let b = Var::parameter(Tensor::<f64>::randn(&[4], &mut Generator::new(91)));
    fused::linear_relu_dropout(x, &w, &b, p, gen)
}

fn record(y: &Var<f64>) -> DropoutRecord {
    y.tape().into_iter().last().expect("an entry on the tape").dropout.expect("a dropout record")
}

/// A binomial count of `n` trials with probability `p` lies within 5 standard deviations of
/// its mean (a false failure has probability below 1e-6).
fn assert_binomial(count: usize, n: usize, p: f64, what: &str) {
    let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
    assert!((count as f64 - mean).abs() <= 5.0 * sd, "{what}: {count} of {n}, expected {mean:.0} ± {sd:.1}");
}

// ─── semantics shared by every op ────────────────────────────────────────────────

#[test]
fn bad_p_is_an_error_naming_the_op() {
    let x = Var::parameter(Tensor::<f64>::ones(&[6, 4]));
    let ops = OPS.iter().copied().chain([("linear_relu_dropout", linear_relu_dropout as Op)]);
    for (name, op) in ops {
        let bad: &[f64] = if name == "gaussian_dropout" { &[-0.1, 1.0, 1.5, f64::NAN] } else { &[-0.1, 1.5, f64::NAN] };
        for &p in bad {
            let err = op(&x, p, &mut Generator::new(0)).err().unwrap_or_else(|| panic!("{name} accepted p = {p}"));
            assert!(err.to_string().contains(name), "{name}, p = {p}: {err}");
        }
        for p in [0.0, 0.3, 0.999] {
            op(&x, p, &mut Generator::new(0)).unwrap_or_else(|e| panic!("{name} refused p = {p}: {e}"));
        }
        // p = 0 is the identity: the input itself, nothing recorded (the fused op still
        // computes its relu(x Wᵀ + b)).
        if name != "linear_relu_dropout" {
            assert!(op(&x, 0.0, &mut Generator::new(0)).unwrap().same_node(&x), "{name} at p = 0");
        }
    }
}

#[test]
fn p_one_gives_zeros_and_zero_gradients() {
    let ops = OPS.iter().copied().filter(|(name, _)| *name != "gaussian_dropout");
    let ops = ops.chain([("linear_relu_dropout", linear_relu_dropout as Op)]);
    for (name, op) in ops {
        let x = Var::parameter(Tensor::<f64>::randn(&[5, 3], &mut Generator::new(1)).add_scalar(0.5));
        let y = op(&x, 1.0, &mut Generator::new(2)).unwrap();
        assert!(y.value().to_vec().iter().all(|&v| v == 0.0), "{name}: {:?}", y.value().to_vec());
        y.sum_all().backward().unwrap();
        let g = x.grad().unwrap_or_else(|| Tensor::<f64>::zeros(&[5, 3])).to_vec();
        assert!(g.iter().all(|&v| v == 0.0), "{name}: gradient {g:?}");
    }
}

/// A NaN or infinite input gives a non-finite output whether its unit is kept or dropped: the
/// ops multiply by the mask (or the noise), and `NaN · 0`, `∞ · 0` are NaN, as in PyTorch.
#[test]
fn nan_and_infinity_stay_non_finite_kept_or_dropped() {
    let (rows, cols) = (64, 8);
    let mut values = Tensor::<f64>::randn(&[rows, cols], &mut Generator::new(3)).to_vec();
    let bad: Vec<usize> = (0..rows).map(|r| r * cols + r % cols).collect();
    for (i, &at) in bad.iter().enumerate() {
        values[at] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][i % 3];
    }
    let x = Var::parameter(Tensor::from_vec(values, &[rows, cols]).unwrap());
    for (name, op) in OPS {
        for p in [0.5, 1.0] {
            if name == "gaussian_dropout" && p == 1.0 {
                continue;
            }
            let y = op(&x, p, &mut Generator::new(4)).unwrap().value().to_vec();
            for &at in &bad {
                assert!(!y[at].is_finite(), "{name}, p = {p}: element {at} became {}", y[at]);
            }
            let finite = y.iter().filter(|v| v.is_finite()).count();
            assert_eq!(finite, rows * cols - bad.len(), "{name}, p = {p}: only the bad inputs are non-finite");
        }
    }
    // Alpha dropout, as PyTorch's `x · (a m) + shift`: a kept infinity stays the same infinity
    // (a > 0), a dropped one becomes NaN; with this seed both happen.
    let y = alpha_dropout(&x, 0.5, &mut Generator::new(4)).unwrap().value().to_vec();
    let xv = x.value().to_vec();
    let infinities: Vec<usize> = bad.iter().copied().filter(|&at| xv[at].is_infinite()).collect();
    let kept = infinities.iter().filter(|&&at| y[at] == xv[at]).count();
    assert!(infinities.iter().all(|&at| y[at] == xv[at] || y[at].is_nan()), "alpha_dropout of ±∞");
    assert!(kept > 0 && kept < infinities.len(), "{kept} of {} infinities kept", infinities.len());
    // The fused op: a NaN in a row of x makes that whole row of relu(x Wᵀ + b) NaN, kept or
    // dropped (an infinity may become -∞, which relu sends to 0, as in PyTorch).
    for p in [0.5, 1.0] {
        let y = linear_relu_dropout(&x, p, &mut Generator::new(5)).unwrap().value().to_vec();
        for r in (0..rows).step_by(3) {
            assert!(y[r * 4..r * 4 + 4].iter().all(|v| v.is_nan()), "p = {p}, row {r}: {:?}", &y[r * 4..r * 4 + 4]);
        }
    }
}

// ─── gaussian_dropout ─────────────────────────────────────────────────────────────

/// The noise `e = y / x` has mean 1 and variance `p / (1 - p)` (within 5 standard errors, from
/// the sample's own fourth moment), the tape entry regenerates it from its seed and offset, and
/// backward multiplies by it.
#[test]
fn gaussian_noise_has_the_right_moments_and_replays() {
    let n = 1 << 17;
    for (p, seed) in [(0.1, 1), (0.5, 2), (0.8, 3)] {
        let x = Var::parameter(Tensor::<f64>::ones(&[n]));
        let y = gaussian_dropout(&x, p, &mut Generator::new(seed)).unwrap();
        let e = y.value().to_vec();
        let nf = n as f64;
        let mean = e.iter().sum::<f64>() / nf;
        let var = e.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / nf;
        let m4 = e.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / nf;
        let want = p / (1.0 - p);
        assert!((mean - 1.0).abs() <= 5.0 * (var / nf).sqrt(), "p {p}: mean {mean}");
        assert!((var - want).abs() <= 5.0 * ((m4 - var * var) / nf).sqrt(), "p {p}: variance {var}, want {want}");

        let rec = record(&y);
        assert!(rec.is_gaussian() && rec.mask().is_empty());
        assert_eq!((rec.seed, rec.offset, rec.p, rec.numel), (seed, 0, p, n));
        assert_eq!(rec.gaussian_noise::<f64>().unwrap(), e, "replay from (seed, offset)");
        y.backward_with(&Tensor::<f64>::full(&[n], 3.0), false).unwrap();
        let g = x.grad().unwrap().to_vec();
        assert!(g.iter().zip(&e).all(|(g, e)| *g == 3.0 * e), "dx = dy · e");
    }
    // A fresh call draws fresh noise; a Bernoulli record has no Gaussian noise.
    let mut gen = Generator::new(7);
    let x = Var::new(Tensor::<f32>::ones(&[64]));
    let a = gaussian_dropout(&x, 0.5, &mut gen).unwrap().value().to_vec();
    let b = gaussian_dropout(&x, 0.5, &mut gen).unwrap().value().to_vec();
    assert_ne!(a, b);
    let d = dropout(&Var::parameter(Tensor::<f64>::ones(&[8])), 0.5, &mut gen).unwrap();
    assert!(record(&d).gaussian_noise::<f64>().is_none());
}

#[test]
fn gaussian_noise_is_the_same_on_1_and_2_threads() {
    // Past one 65536-element chunk of the parallel draw, with an odd tail.
    let n = (1 << 16) + 4097;
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let x = Var::new(Tensor::<f32>::ones(&[n]));
            gaussian_dropout(&x, 0.3, &mut Generator::new(11)).unwrap().value().to_vec()
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert!(one.iter().all(|v| v.is_finite() && *v != 1.0));
}

// ─── drop_path ────────────────────────────────────────────────────────────────────

#[test]
fn drop_path_zeroes_whole_rows_and_scales_the_rest() {
    let (rows, p) = (4096, 0.3);
    let x = Tensor::<f64>::rand(&[rows, 2, 3], &mut Generator::new(1)).add_scalar(1.0);
    let y = drop_path(&Var::parameter(x.clone()), p, &mut Generator::new(2)).unwrap();
    let rec = record(&y);
    assert_eq!(rec.numel, rows, "one mask bit per row");
    let (xs, ys) = (x.to_vec(), y.value().to_vec());
    let mut dropped = 0;
    for r in 0..rows {
        let (xr, yr) = (&xs[r * 6..r * 6 + 6], &ys[r * 6..r * 6 + 6]);
        if rec.kept(r) {
            assert!(xr.iter().zip(yr).all(|(x, y)| *y == x * (1.0 / (1.0 - p))), "row {r} kept: {yr:?}");
        } else {
            dropped += 1;
            assert!(yr.iter().all(|&v| v == 0.0), "row {r} dropped: {yr:?}");
        }
    }
    assert_binomial(dropped, rows, p, "dropped rows");
    // The record regenerates the mask; the same seed draws it again.
    assert_eq!(DropoutRecord::regenerate(rec.seed, rec.offset, p, rows).unwrap(), rec);
    let again = drop_path(&Var::new(x), p, &mut Generator::new(2)).unwrap().value().to_vec();
    assert_eq!(again, ys);
    // A scalar has no rows.
    let err = drop_path(&Var::new(Tensor::<f64>::scalar(1.0)), 0.5, &mut Generator::new(0)).unwrap_err();
    assert!(err.to_string().contains("drop_path"), "{err}");
}

// ─── dropout_shared ───────────────────────────────────────────────────────────────

#[test]
fn shared_dropout_repeats_its_mask_along_the_shared_dims() {
    let (b, t, d, p) = (16, 5, 32, 0.4);
    let x = Tensor::<f64>::rand(&[b, t, d], &mut Generator::new(1)).add_scalar(1.0);
    let y = dropout_shared(&Var::parameter(x.clone()), p, &[1], &mut Generator::new(2)).unwrap();
    let rec = record(&y);
    assert_eq!(rec.numel, b * d, "one mask bit per entry of the noise shape [B, 1, D]");
    let (xs, ys) = (x.to_vec(), y.value().to_vec());
    for i in 0..b {
        for k in 0..d {
            let kept = rec.kept(i * d + k);
            for s in 0..t {
                let at = (i * t + s) * d + k;
                let want = if kept { xs[at] / (1.0 - p) } else { 0.0 };
                assert!((ys[at] - want).abs() <= 1e-15 * want.abs(), "[{i}, {s}, {k}]: {} vs {want}", ys[at]);
            }
        }
    }
    assert_binomial(b * d - rec.kept_count(), b * d, p, "dropped features");
    assert_eq!(DropoutRecord::regenerate(rec.seed, rec.offset, p, b * d).unwrap(), rec);
}

/// Sharing nothing draws what `dropout` draws; sharing the spatial dims of `[N, C, H, W]`
/// draws what `dropout2d` draws, from the same generator.
#[test]
fn shared_dropout_generalises_dropout_and_dropout2d() {
    let x = Var::new(Tensor::<f64>::randn(&[3, 6, 4, 5], &mut Generator::new(1)));
    let plain = dropout(&x, 0.5, &mut Generator::new(9)).unwrap().value().to_vec();
    assert_eq!(dropout_shared(&x, 0.5, &[], &mut Generator::new(9)).unwrap().value().to_vec(), plain);
    let planes = dropout2d(&x, 0.5, &mut Generator::new(9)).unwrap().value().to_vec();
    assert_eq!(dropout_shared(&x, 0.5, &[3, 2], &mut Generator::new(9)).unwrap().value().to_vec(), planes);
    for bad in [&[4][..], &[1, 1]] {
        let err = dropout_shared(&x, 0.5, bad, &mut Generator::new(0)).unwrap_err().to_string();
        assert!(err.contains("dropout_shared") && err.contains("[3, 6, 4, 5]"), "{bad:?}: {err}");
    }
}

// ─── feature_alpha_dropout ────────────────────────────────────────────────────────

const SELU_LAMBDA: f64 = 1.050_700_987_355_480_5;
const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;

#[test]
fn feature_alpha_dropout_drops_whole_channels_to_the_saturation_value() {
    let (n, c, p) = (32, 64, 0.2);
    let alpha_prime = -SELU_LAMBDA * SELU_ALPHA;
    let a = ((1.0 - p) * (1.0 + p * alpha_prime * alpha_prime)).powf(-0.5);
    let b = -a * alpha_prime * p;
    let x = Tensor::<f64>::randn(&[n, c, 2, 2], &mut Generator::new(1));
    let y = feature_alpha_dropout(&Var::parameter(x.clone()), p, &mut Generator::new(2)).unwrap();
    let rec = record(&y);
    assert_eq!(rec.numel, n * c, "one mask bit per channel");
    let (xs, ys) = (x.to_vec(), y.value().to_vec());
    for ch in 0..n * c {
        for j in ch * 4..ch * 4 + 4 {
            let want = if rec.kept(ch) { a * xs[j] + b } else { a * alpha_prime + b };
            assert!((ys[j] - want).abs() < 1e-12, "channel {ch}: {} vs {want}", ys[j]);
        }
    }
    assert_binomial(n * c - rec.kept_count(), n * c, p, "dropped channels");
    let err = feature_alpha_dropout(&Var::new(Tensor::<f64>::ones(&[5])), 0.5, &mut Generator::new(0)).unwrap_err();
    assert!(err.to_string().contains("feature_alpha_dropout"), "{err}");
}
