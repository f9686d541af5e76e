//! `nn::init`: bounds, the mean and variance of each distribution within confidence intervals,
//! fans (including conv receptive fields), gains, determinism per seed, and the errors.

use tapegrad_nn::init::{
    self, calculate_gain, conv2d_default, fan_in_and_fan_out, kaiming_normal, kaiming_uniform, linear_default,
    xavier_normal, xavier_uniform, FanMode, Nonlinearity,
};
use tapegrad_tensor::{Generator, Tensor};

fn mean_var(t: &Tensor<f64>) -> (f64, f64) {
    let v = t.to_vec();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// Checks the sample mean against 0 and the sample variance against `var` within ~5 standard
/// errors (`var / n` for the mean; `var² · (κ − 1) / n` for the variance, κ the kurtosis).
fn check_moments(what: &str, t: &Tensor<f64>, var: f64, kurtosis: f64) {
    let n = t.numel() as f64;
    let (m, v) = mean_var(t);
    assert!(m.abs() < 5.0 * (var / n).sqrt(), "{what}: mean {m}");
    let se = var * ((kurtosis - 1.0) / n).sqrt();
    assert!((v - var).abs() < 5.0 * se, "{what}: variance {v}, expected {var}");
}

const UNIFORM_KURTOSIS: f64 = 1.8;
const NORMAL_KURTOSIS: f64 = 3.0;

#[test]
fn fans_follow_pytorch() {
    assert_eq!(fan_in_and_fan_out(&[10, 4]).unwrap(), (4, 10));
    assert_eq!(fan_in_and_fan_out(&[16, 3, 5, 5]).unwrap(), (75, 400));
    assert_eq!(fan_in_and_fan_out(&[8, 2, 3]).unwrap(), (6, 24));
    let e = fan_in_and_fan_out(&[7]).unwrap_err().to_string();
    assert!(e.contains("[7]") && e.contains("2 dims"), "{e}");
    // Fans of a shape whose product overflows used to wrap: an error now, naming the shape.
    let e = fan_in_and_fan_out(&[2, 1 << 32, 1 << 32]).unwrap_err().to_string();
    assert!(e.starts_with("init: shape [2, 4294967296, 4294967296]"), "{e}");
    assert!(fan_in_and_fan_out(&[0, 1 << 32, 1 << 32]).is_err());
    let gen = &mut Generator::new(0);
    assert!(kaiming_uniform::<f32>(&[1 << 32, 1 << 32], FanMode::FanIn, Nonlinearity::Relu, gen).is_err());
    assert!(xavier_normal::<f32>(&[1 << 40, 1 << 40], 1.0, gen).is_err());
    let e = init::uniform::<f64>(&[1 << 61], 0.0, 1.0, gen).unwrap_err().to_string();
    assert!(e.starts_with("rand: shape [2305843009213693952]"), "{e}");
    assert!(init::normal::<f32>(&[1 << 32, 1 << 32], 0.0, 1.0, gen).is_err());
}

#[test]
fn gains_follow_pytorch() {
    assert_eq!(calculate_gain(Nonlinearity::Linear), 1.0);
    assert_eq!(calculate_gain(Nonlinearity::Conv), 1.0);
    assert_eq!(calculate_gain(Nonlinearity::Sigmoid), 1.0);
    assert_eq!(calculate_gain(Nonlinearity::Tanh), 5.0 / 3.0);
    assert_eq!(calculate_gain(Nonlinearity::Relu), 2f64.sqrt());
    assert_eq!(calculate_gain(Nonlinearity::LeakyRelu(0.0)), 2f64.sqrt());
    assert!((calculate_gain(Nonlinearity::LeakyRelu(0.01)) - (2.0 / 1.0001f64).sqrt()).abs() < 1e-15);
    assert_eq!(calculate_gain(Nonlinearity::Selu), 0.75);
}

#[test]
fn kaiming_uniform_has_the_right_bound_and_variance() {
    let mut gen = Generator::new(1);
    // Conv weight: fan_in = 16 · 3 · 3 = 144, fan_out = 64 · 9 = 576.
    let shape = [64, 16, 3, 3];
    for (mode, fan) in [(FanMode::FanIn, 144.0f64), (FanMode::FanOut, 576.0)] {
        let w = kaiming_uniform::<f64>(&shape, mode, Nonlinearity::Relu, &mut gen).unwrap();
        assert_eq!(w.shape(), &shape);
        let bound = 2f64.sqrt() * (3.0 / fan).sqrt();
        assert!(w.to_vec().iter().all(|v| v.abs() <= bound));
        assert!(w.to_vec().iter().any(|v| v.abs() > 0.95 * bound), "the bound is reached");
        check_moments("kaiming_uniform", &w, 2.0 / fan, UNIFORM_KURTOSIS);
    }
}

#[test]
fn kaiming_normal_has_the_right_variance() {
    let mut gen = Generator::new(2);
    let w = kaiming_normal::<f64>(&[200, 100], FanMode::FanIn, Nonlinearity::LeakyRelu(0.2), &mut gen).unwrap();
    let gain = (2.0 / 1.04f64).sqrt();
    check_moments("kaiming_normal", &w, gain * gain / 100.0, NORMAL_KURTOSIS);
    let w = kaiming_normal::<f64>(&[200, 100], FanMode::FanOut, Nonlinearity::Linear, &mut gen).unwrap();
    check_moments("kaiming_normal fan_out", &w, 1.0 / 200.0, NORMAL_KURTOSIS);
}

#[test]
fn xavier_has_the_right_bound_and_variance() {
    let mut gen = Generator::new(3);
    let gain = calculate_gain(Nonlinearity::Tanh);
    // fan_in = 30 · 2 · 2 = 120, fan_out = 50 · 4 = 200.
    let shape = [50, 30, 2, 2];
    let w = xavier_uniform::<f64>(&shape, gain, &mut gen).unwrap();
    let bound = gain * (6.0f64 / 320.0).sqrt();
    assert!(w.to_vec().iter().all(|v| v.abs() <= bound));
    check_moments("xavier_uniform", &w, gain * gain * 2.0 / 320.0, UNIFORM_KURTOSIS);
    let w = xavier_normal::<f64>(&shape, gain, &mut gen).unwrap();
    check_moments("xavier_normal", &w, gain * gain * 2.0 / 320.0, NORMAL_KURTOSIS);
    assert!(xavier_uniform::<f64>(&shape, -1.0, &mut gen).is_err());
    assert!(xavier_normal::<f64>(&[5], 1.0, &mut gen).is_err());
}

#[test]
fn uniform_and_normal_have_the_right_moments() {
    let mut gen = Generator::new(4);
    let u = init::uniform::<f64>(&[20_000], 2.0, 4.0, &mut gen).unwrap();
    assert!(u.to_vec().iter().all(|v| (2.0..4.0).contains(v)));
    check_moments("uniform", &u.add_scalar(-3.0), 4.0 / 12.0, UNIFORM_KURTOSIS);
    let n = init::normal::<f64>(&[20_000], -1.0, 0.5, &mut gen).unwrap();
    check_moments("normal", &n.add_scalar(1.0), 0.25, NORMAL_KURTOSIS);
    assert!(init::uniform::<f64>(&[2], 1.0, 0.0, &mut gen).is_err());
    assert!(init::uniform::<f64>(&[2], 0.0, f64::INFINITY, &mut gen).is_err());
    let e = init::normal::<f64>(&[2], 0.0, -1.0, &mut gen).unwrap_err().to_string();
    assert!(e.contains("normal") && e.contains("-1"), "{e}");
    assert_eq!(init::zeros::<f64>(&[2, 2]).to_vec(), vec![0.0; 4]);
    assert_eq!(init::ones::<f32>(&[3]).to_vec(), vec![1.0; 3]);
}

#[test]
fn linear_and_conv_defaults_follow_pytorch() {
    let mut gen = Generator::new(5);
    let (w, b) = linear_default::<f64>(300, 64, &mut gen);
    assert_eq!((w.shape(), b.shape()), (&[300, 64][..], &[300][..]));
    let bound = 1.0 / 8.0;
    assert!(w.to_vec().iter().chain(&b.to_vec()).all(|v| v.abs() <= bound));
    check_moments("linear weight", &w, bound * bound / 3.0, UNIFORM_KURTOSIS);
    // PyTorch's weight init is kaiming_uniform(a = √5): the same bound.
    let kaiming_bound = calculate_gain(Nonlinearity::LeakyRelu(5f64.sqrt())) * (3.0f64 / 64.0).sqrt();
    assert!((kaiming_bound - bound).abs() < 1e-15);
    let (w, b) = conv2d_default::<f32>(32, 3, 5, 5, &mut gen);
    assert_eq!((w.shape(), b.shape()), (&[32, 3, 5, 5][..], &[32][..]));
    let bound = 1.0 / 75f32.sqrt();
    assert!(w.to_vec().iter().chain(&b.to_vec()).all(|v| v.abs() <= bound));
    let (w, b) = linear_default::<f32>(3, 0, &mut gen);
    assert_eq!((w.numel(), b.to_vec()), (0, vec![0.0; 3]));
}

#[test]
fn the_same_seed_gives_the_same_weights() {
    let draw = |seed| {
        let mut gen = Generator::new(seed);
        let a = kaiming_uniform::<f32>(&[8, 4], FanMode::FanIn, Nonlinearity::Relu, &mut gen).unwrap();
        let b = xavier_normal::<f32>(&[8, 4], 1.0, &mut gen).unwrap();
        let (c, d) = linear_default::<f32>(8, 4, &mut gen);
        [a, b, c, d].map(|t| t.to_vec())
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
    // Successive draws from one generator differ.
    let [a, _, c, _] = draw(7);
    assert_ne!(a, c);
}

#[test]
fn f32_and_f64_agree_up_to_rounding() {
    let a = kaiming_normal::<f32>(&[6, 5], FanMode::FanIn, Nonlinearity::Tanh, &mut Generator::new(9)).unwrap();
    let b = kaiming_normal::<f64>(&[6, 5], FanMode::FanIn, Nonlinearity::Tanh, &mut Generator::new(9)).unwrap();
    for (x, y) in a.to_vec().iter().zip(b.to_vec()) {
        assert!((*x as f64 - y).abs() < 1e-6);
    }
}
