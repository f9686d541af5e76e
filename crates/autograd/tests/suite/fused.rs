//! The fused ops of `ops/fused.rs`: gradient checks in f64, and agreement with the unfused
//! chains they replace (same values, same masks, same generator position).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tapegrad_autograd::fused::{linear, linear_relu_dropout};
use tapegrad_autograd::{dropout, gradcheck, Error, Generator, Result, Tensor, Var};
use tapegrad_tensor::TensorNew;

type Outcome = std::result::Result<(), TestCaseError>;

fn rand(shape: &[usize], gen: &mut Generator) -> Tensor<f64> {
    Tensor::<f64>::rand(shape, gen).mul_scalar(4.0).add_scalar(-2.0)
}

/// `x [m, k]`, optionally as a transposed view, and `w [n, k]`, `b [n]`.
fn inputs(m: usize, n: usize, k: usize, transposed: bool, seed: u64) -> [Tensor<f64>; 3] {
    let gen = &mut Generator::new(seed);
    let x = if transposed { rand(&[k, m], gen).t().unwrap() } else { rand(&[m, k], gen) };
    [x, rand(&[n, k], gen), rand(&[n], gen)]
}

fn check_linear(m: usize, n: usize, k: usize, transposed: bool, bias: bool, seed: u64) -> Outcome {
    let [x, w, b] = inputs(m, n, k, transposed, seed);
    let ok = if bias {
        gradcheck(|v| linear(&v[0], &v[1], Some(&v[2])), &[x, w, b])
    } else {
        gradcheck(|v| linear(&v[0], &v[1], None), &[x, w])
    };
    ok.map_err(|e| TestCaseError::fail(e.to_string()))
}

fn check_linear_relu_dropout(
    m: usize,
    n: usize,
    k: usize,
    transposed: bool,
    p: f64,
    mask_seed: u64,
    seed: u64,
) -> Outcome {
    let [x, w, b] = inputs(m, n, k, transposed, seed);
    // Pre-activations within a finite-difference step of relu's kink (one input moves by 1e-6,
    // a pre-activation by at most 2.5e-6 here) would compare one side's gradient with a
    // difference quotient across both.
    let pre = x.matmul(&w.t().unwrap()).unwrap().add(&b).unwrap();
    prop_assume!(pre.to_vec().iter().all(|v| v.abs() > 1e-4));
    let ok = gradcheck(|v| linear_relu_dropout(&v[0], &v[1], &v[2], p, &mut Generator::new(mask_seed)), &[x, w, b]);
    ok.map_err(|e| TestCaseError::fail(e.to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn linear_gradcheck(m in 1usize..=5, n in 1usize..=5, k in 1usize..=5, t in any::<bool>(), bias in any::<bool>(), seed in any::<u64>()) {
        check_linear(m, n, k, t, bias, seed)?;
    }

    #[test]
    fn linear_relu_dropout_gradcheck(
        m in 1usize..=5, n in 1usize..=5, k in 1usize..=5, t in any::<bool>(),
        p in 0.0f64..0.9, mask_seed in any::<u64>(), seed in any::<u64>(),
    ) {
        check_linear_relu_dropout(m, n, k, t, p, mask_seed, seed)?;
    }
}

/// The fused ops give what the chains they replace give, values and gradients, and leave the
/// generator where the chain leaves it.
#[test]
fn fused_matches_the_unfused_chain() -> Result<()> {
    for (m, n, k) in [(3, 5, 4), (128, 70, 33), (40, 10, 1100)] {
        let [x, w, b] = inputs(m, n, k, false, 7);
        let (x, w, b) = (x.cast::<f32>(), w.cast::<f32>(), b.cast::<f32>());
        let (xf, wf, bf) = (Var::parameter(x.clone()), Var::parameter(w.clone()), Var::parameter(b.clone()));
        let (xu, wu, bu) = (Var::parameter(x), Var::parameter(w), Var::parameter(b));
        let (mut g1, mut g2) = (Generator::new(3), Generator::new(3));
        let fused = linear_relu_dropout(&xf, &wf, &bf, 0.5, &mut g1)?;
        let plain = dropout(&xu.matmul(&wu.t()?)?.add(&bu)?.relu(), 0.5, &mut g2)?;
        assert_eq!(g1.offset(), g2.offset());
        let close = |a: &Tensor<f32>, b: &Tensor<f32>| {
            let (a, b) = (a.to_vec(), b.to_vec());
            assert_eq!(a.len(), b.len());
            for (a, b) in a.iter().zip(&b) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b} (m {m}, n {n}, k {k})");
            }
        };
        close(&fused.value(), &plain.value());
        fused.sum_all().backward()?;
        plain.sum_all().backward()?;
        for (f, u) in [(&xf, &xu), (&wf, &wu), (&bf, &bu)] {
            close(&f.grad().unwrap(), &u.grad().unwrap());
        }
        let y = linear(&Var::new(xu.value()), &Var::new(wu.value()), Some(&Var::new(bu.value())))?;
        close(&y.value(), &xu.value().matmul(&wu.value().t()?)?.add(&bu.value())?);
    }
    Ok(())
}

/// The tape entry carries the dropout record, which regenerates the mask.
#[test]
fn the_record_regenerates_the_mask() -> Result<()> {
    let x = Var::parameter(Tensor::<f32>::ones(&[6, 3]));
    let w = Var::parameter(Tensor::<f32>::ones(&[20, 3]));
    let b = Var::parameter(Tensor::<f32>::zeros(&[20]));
    let y = linear_relu_dropout(&x, &w, &b, 0.3, &mut Generator::new(11))?;
    let entry = y.tape().into_iter().find(|e| e.dropout.is_some()).expect("a dropout record");
    let record = entry.dropout.unwrap();
    let again = tapegrad_autograd::DropoutRecord::regenerate(record.seed, record.offset, record.p, record.numel);
    assert_eq!(record, again.unwrap());
    let values = y.value().to_vec();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(*v != 0.0, record.kept(i), "element {i}");
    }
    Ok(())
}

/// Shape errors are errors naming the op and the shapes, not panics; each call is wrong in
/// exactly one way (a valid `p`, 0.5 or 1, where the shape is what is wrong).
#[test]
fn bad_shapes_are_errors() {
    let shape_error = |r: Result<Var<f32>>, op: &str| {
        let err = r.unwrap_err();
        assert!(
            matches!(err, Error::ShapeMismatch { .. } | Error::InvalidShape { .. }),
            "expected a shape error, got {err}"
        );
        assert!(err.to_string().starts_with(op), "{err}");
    };
    let x = Var::new(Tensor::<f32>::ones(&[2, 3]));
    let w = Var::parameter(Tensor::<f32>::ones(&[4, 3]));
    let b = Var::new(Tensor::<f32>::ones(&[4]));
    let mut gen = Generator::new(0);
    // The well-formed calls succeed, p = 1 included (the fused op reports its shapes as `linear`,
    // the product it computes first).
    assert!(linear(&x, &w, Some(&b)).is_ok());
    for p in [0.5, 1.0] {
        assert!(linear_relu_dropout(&x, &w, &b, p, &mut gen).is_ok());
    }

    let w_wide = Var::parameter(Tensor::<f32>::ones(&[4, 5]));
    shape_error(linear(&x, &w_wide, None), "linear");
    shape_error(linear(&x, &w, Some(&Var::new(Tensor::ones(&[3])))), "linear");
    shape_error(linear(&Var::new(Tensor::<f32>::ones(&[3])), &w, None), "linear");
    for p in [0.5, 1.0] {
        shape_error(linear_relu_dropout(&x, &w_wide, &b, p, &mut gen), "linear");
        shape_error(linear_relu_dropout(&x, &w, &Var::new(Tensor::ones(&[3])), p, &mut gen), "linear");
        shape_error(linear_relu_dropout(&Var::new(Tensor::ones(&[3])), &w, &b, p, &mut gen), "linear");
    }
    // And a p outside [0, 1] is an argument error of its own.
    let err = linear_relu_dropout(&x, &w, &b, 1.5, &mut gen).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}
