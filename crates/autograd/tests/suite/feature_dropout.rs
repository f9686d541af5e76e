//! The forward values of the dropout variants (the gradient checks pass for any forward that is
//! consistent with its backward, so they cannot tell a wrong forward): `dropout2d` zeroes whole
//! channel planes and scales the kept ones by `1 / (1 - p)`; `alpha_dropout` sets dropped units
//! to `a α' + b` with SELU's `α' = -λα`, kept ones to `a x + b`, and keeps a standard-normal
//! input at mean 0 and variance 1. Checked in f32 and f64.

use tapegrad_autograd::{alpha_dropout, dropout2d, DropoutRecord, Float, Generator, Tensor, Var};
use tapegrad_tensor::TensorNew;

fn record<T: Float>(y: &Var<T>) -> DropoutRecord {
    let entry = y.tape().into_iter().last().expect("an entry on the tape");
    entry.dropout.expect("the entry carries its dropout record")
}

/// `|got - want|` within a few roundings of `T` (the op computes in `T`, the test in f64).
fn close<T: Float>(got: T, want: f64) -> bool {
    (got.to_f64() - want).abs() <= 4.0 * T::EPSILON.to_f64() * (1.0 + want.abs())
}

/// A binomial count of `n` trials with probability `p` lies within 5 standard deviations of
/// its mean (a false failure has probability below 1e-6).
fn assert_binomial(count: usize, n: usize, p: f64, what: &str) {
    let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
    assert!((count as f64 - mean).abs() <= 5.0 * sd, "{what}: {count} of {n}, expected {mean:.0} ± {sd:.1}");
}

// ─── dropout2d ───────────────────────────────────────────────────────────────────

fn dropout2d_zeroes_whole_planes<T: Float>() {
    let p = 0.3;
    let scale = 1.0 / (1.0 - p);
    // [N, C, H, W] (as a transposed view: the planes are the same elements), [N, C, L], [N, C].
    let gen = &mut Generator::new(5);
    let inputs = [
        Tensor::<T>::rand(&[64, 32, 3, 2], gen).add_scalar(T::ONE).transpose(2, 3).unwrap(),
        Tensor::<T>::rand(&[40, 50, 7], gen).add_scalar(T::ONE),
        Tensor::<T>::rand(&[60, 30], gen).add_scalar(T::ONE),
    ];
    for x in inputs {
        let shape = x.shape().to_vec();
        let planes = shape[0] * shape[1];
        let plane = x.numel() / planes;
        let xv = Var::parameter(x.clone());
        let y = dropout2d(&xv, p, &mut Generator::new(9)).unwrap();
        assert_eq!(y.shape(), shape);
        let rec = record(&y);
        assert_eq!(rec.numel, planes, "one mask bit per channel plane");
        let (xs, ys) = (x.to_vec(), y.value().to_vec());
        let mut dropped = 0;
        for c in 0..planes {
            let span = c * plane..(c + 1) * plane;
            if rec.kept(c) {
                for i in span {
                    assert!(close(ys[i], xs[i].to_f64() * scale), "plane {c}: {} vs {} / (1 - p)", ys[i], xs[i]);
                }
            } else {
                dropped += 1;
                assert!(ys[span].iter().all(|&v| v == T::ZERO), "plane {c} is dropped whole");
            }
        }
        assert_binomial(dropped, planes, p, "dropped planes");
        // The gradient is the same mask, plane by plane.
        y.sum_all().backward().unwrap();
        let g = xv.grad().unwrap().to_vec();
        for c in 0..planes {
            let want = if rec.kept(c) { scale } else { 0.0 };
            assert!(g[c * plane..(c + 1) * plane].iter().all(|&v| close(v, want)), "gradient of plane {c}");
        }
    }
}

#[test]
fn dropout2d_zeroes_whole_planes_f32() {
    dropout2d_zeroes_whole_planes::<f32>();
}

#[test]
fn dropout2d_zeroes_whole_planes_f64() {
    dropout2d_zeroes_whole_planes::<f64>();
}

// ─── alpha_dropout ─────────────────────────────────────────────────────────────────

/// SELU's constants (Klambauer et al., 2017), as `torch.nn.SELU` has them.
const SELU_LAMBDA: f64 = 1.050_700_987_355_480_5;
const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;

/// The affine correction of the paper for drop probability `p`, dropped value `α' = -λα`:
/// `a = ((1 - p)(1 + p α'²))^(-1/2)`, `b = -a α' p`.
fn affine(p: f64) -> (f64, f64, f64) {
    let alpha_prime = -SELU_LAMBDA * SELU_ALPHA;
    let a = ((1.0 - p) * (1.0 + p * alpha_prime * alpha_prime)).powf(-0.5);
    (alpha_prime, a, -a * alpha_prime * p)
}

fn alpha_dropout_values_and_moments<T: Float>() {
    let n = 1 << 20;
    for (p, seed) in [(0.1, 1), (0.2, 2), (0.5, 3)] {
        let (alpha_prime, a, b) = affine(p);
        let x = Tensor::<T>::randn(&[1024, n / 1024], &mut Generator::new(seed));
        let y = alpha_dropout(&Var::parameter(x.clone()), p, &mut Generator::new(seed + 100)).unwrap();
        let rec = record(&y);
        let (xs, ys) = (x.to_vec(), y.value().to_vec());
        let dropped_value = a * alpha_prime + b;
        let mut dropped = 0;
        for i in 0..n {
            if rec.kept(i) {
                assert!(close(ys[i], a * xs[i].to_f64() + b), "kept {i}: {} vs a x + b", ys[i]);
            } else {
                dropped += 1;
                assert!(close(ys[i], dropped_value), "dropped {i}: {} vs a α' + b = {dropped_value}", ys[i]);
            }
        }
        assert_binomial(dropped, n, p, "dropped units");

        // Mean 0 and variance 1, the point of the correction. The sample mean of n values of
        // variance s² has standard deviation s / √n; the sample variance has standard deviation
        // √((m4 - s⁴) / n) (m4 the fourth central moment, estimated from the sample). Five of
        // them bound a false failure below 1e-6, while a missing shift b (|b| ≥ 0.15 here) or a
        // wrong a would be off by dozens.
        let ys: Vec<f64> = ys.iter().map(|v| v.to_f64()).collect();
        let nf = n as f64;
        let mean = ys.iter().sum::<f64>() / nf;
        let var = ys.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / nf;
        let m4 = ys.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / nf;
        let (sd_mean, sd_var) = ((var / nf).sqrt(), ((m4 - var * var) / nf).sqrt());
        assert!(mean.abs() <= 5.0 * sd_mean, "p {p}: mean {mean}, expected 0 ± {sd_mean:.1e}");
        assert!((var - 1.0).abs() <= 5.0 * sd_var, "p {p}: variance {var}, expected 1 ± {sd_var:.1e}");
        assert!(b.abs() > 30.0 * sd_mean, "the test would see a missing shift");
    }
}

#[test]
fn alpha_dropout_values_and_moments_f32() {
    alpha_dropout_values_and_moments::<f32>();
}

#[test]
fn alpha_dropout_values_and_moments_f64() {
    alpha_dropout_values_and_moments::<f64>();
}

/// The dropped value is SELU's negative saturation after the affine map: for a SELU input far
/// below zero, `selu(x) → -λα`, so a dropped unit looks like a saturated one.
#[test]
fn alpha_dropout_drops_to_selus_saturation() {
    let (alpha_prime, a, b) = affine(0.2);
    let selu_floor = SELU_LAMBDA * SELU_ALPHA * ((-40.0f64).exp() - 1.0);
    assert!((alpha_prime - selu_floor).abs() < 1e-12);
    // A constant input: every output is the dropped value or the kept `a x + b`, both occur.
    let x = Var::new(Tensor::<f64>::full(&[4096], 123.0));
    let y = alpha_dropout(&x, 0.2, &mut Generator::new(4)).unwrap();
    let ys = y.value().to_vec();
    assert!(ys.iter().any(|v| (v - (a * alpha_prime + b)).abs() < 1e-12));
    assert!(ys.iter().any(|v| (v - (a * 123.0 + b)).abs() < 1e-9));
    assert!(ys.iter().all(|v| (v - (a * alpha_prime + b)).abs() < 1e-12 || (v - (a * 123.0 + b)).abs() < 1e-9));
}
