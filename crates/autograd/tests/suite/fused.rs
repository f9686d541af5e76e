//! The fused ops of `ops/fused.rs`: gradient checks in f64, agreement with the unfused chains
//! they replace (same values, same masks, same generator position), and attention's recorded
//! backward against its first-order one.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tapegrad_autograd::fused::{linear, linear_relu_dropout, scaled_dot_product_attention};
use tapegrad_autograd::{dropout, grad, gradcheck, Error, Float, Generator, GradOptions, Result, Tensor, Var};
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

/// The gradients of attention's `q`, `k` and `v` for an upstream gradient `up`, from the
/// first-order backward or (`create_graph`) the recorded one; `self_attention` passes one
/// parameter as all three (its gradient then appears three times).
fn attention_grads<T: Float>(
    [q, k, v]: &[Tensor<T>; 3],
    mask: Option<&Tensor<T>>,
    p: f64,
    self_attention: bool,
    create_graph: bool,
) -> Result<Vec<Var<T>>> {
    let vars = if self_attention {
        let x = Var::parameter(q.clone());
        [x.clone(), x.clone(), x]
    } else {
        [q, k, v].map(|t| Var::parameter(t.clone()))
    };
    let y = scaled_dot_product_attention(&vars[0], &vars[1], &vars[2], mask, p, None, &mut Generator::new(5))?;
    let up = Var::new(Tensor::<f64>::randn(&y.shape(), &mut Generator::new(6)).cast::<T>());
    let options = GradOptions { create_graph, allow_unused: false, retain_graph: false };
    let grads = grad(&[&y], &[&vars[0], &vars[1], &vars[2]], Some(&[&up]), options)?;
    Ok(grads.into_iter().map(|g| g.expect("every input is used")).collect())
}

/// Attention's recorded backward (what `create_graph` differentiates again) gives the
/// first-order backward's gradients bit for bit, in f32 (the SIMD kernels) and f64: the same
/// tensor ops in the same order, the weights rebuilt from `q` and `k` with the forward's own
/// numbers, the forward's stored dropout mask. With no mask, an additive one, a causal one
/// (`-inf`) and a padding one (`[B, 1, 1, S]`), with and without dropout, for rows of weights
/// shorter and longer than a vector.
fn recorded_attention_backward_is_bit_identical<T: Float>() -> Result<()> {
    for &(b, h, l, s, d, dv) in &[(2, 3, 5, 7, 4, 6), (1, 2, 33, 40, 16, 9), (2, 1, 1, 1, 1, 1)] {
        let gen = &mut Generator::new(l as u64);
        let mut randn = |shape: &[usize]| Tensor::<f64>::randn(shape, gen).cast::<T>();
        let qkv = [randn(&[b, h, l, d]), randn(&[b, h, s, d]), randn(&[b, h, s, dv])];
        let additive = randn(&[l, s]);
        let causal = (0..l * s).map(|ij| if ij % s <= ij / s { 0.0 } else { f64::NEG_INFINITY }).collect();
        let causal = Tensor::from_vec(causal, &[l, s])?.cast::<T>();
        let padding = (0..b * s).map(|bj| if bj % s < s - (bj / s) % s { 0.0 } else { f64::NEG_INFINITY }).collect();
        let padding = Tensor::from_vec(padding, &[b, 1, 1, s])?.cast::<T>();
        for mask in [None, Some(&additive), Some(&causal), Some(&padding)] {
            for p in [0.0, 0.25] {
                for self_attention in [false, true] {
                    if self_attention && (l != s || d != dv) {
                        continue;
                    }
                    let first = attention_grads(&qkv, mask, p, self_attention, false)?;
                    let recorded = attention_grads(&qkv, mask, p, self_attention, true)?;
                    for (i, (a, r)) in first.iter().zip(&recorded).enumerate() {
                        assert!(r.requires_grad() && !a.requires_grad(), "only create_graph records the gradient");
                        let bits =
                            |v: &Var<T>| v.value().to_vec().iter().map(|x| x.to_f64().to_bits()).collect::<Vec<_>>();
                        assert!(
                            bits(a) == bits(r),
                            "input {i} of {:?}, mask {}, p {p}: {:?} vs {:?}",
                            [b, h, l, s, d, dv],
                            mask.map_or("none".into(), |m| format!("{:?}", m.shape())),
                            a.value().to_vec(),
                            r.value().to_vec()
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn attention_recorded_backward_equals_the_first_order_one() -> Result<()> {
    recorded_attention_backward_is_bit_identical::<f32>()?;
    recorded_attention_backward_is_bit_identical::<f64>()
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

/// A NaN is not hidden by ReLU's backward (PyTorch's `threshold_backward` passes the gradient
/// where the output is NaN): `relu` passes it, and the fused linear-ReLU-dropout passes it where
/// the element was kept and not where it was dropped, as the chain it replaces does.
#[test]
fn relu_backward_passes_the_gradient_of_a_nan() -> Result<()> {
    let x = Var::parameter(Tensor::from_vec(vec![f64::NAN, -1.0, 2.0, 0.0], &[4])?);
    x.relu().sum_all().backward()?;
    assert_eq!(x.grad().unwrap().to_vec(), vec![1.0, 0.0, 1.0, 0.0]);

    let [x, w, b] = inputs(6, 8, 5, false, 9);
    let mut x = x.to_vec();
    x[5] = f64::NAN; // row 1 of z is NaN in every column: kept or dropped, its output is NaN
    let x = Tensor::from_vec(x, &[6, 5])?;
    let (xf, wf, bf) = (Var::parameter(x.clone()), Var::parameter(w.clone()), Var::parameter(b.clone()));
    let (xu, wu, bu) = (Var::parameter(x), Var::parameter(w), Var::parameter(b));
    let fused = linear_relu_dropout(&xf, &wf, &bf, 0.5, &mut Generator::new(3))?;
    let plain = dropout(&xu.matmul(&wu.t()?)?.add(&bu)?.relu(), 0.5, &mut Generator::new(3))?;
    assert!(fused.value().to_vec()[8..16].iter().all(|v| v.is_nan()));
    let record = fused.tape().into_iter().find_map(|e| e.dropout).expect("a dropout record");
    fused.sum_all().backward()?;
    plain.sum_all().backward()?;
    let same = |a: &[f64], b: &[f64]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|(a, b)| (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * (1.0 + b.abs()))
    };
    for (f, u) in [(&xf, &xu), (&wf, &wu), (&bf, &bu)] {
        assert!(same(&f.grad().unwrap().to_vec(), &u.grad().unwrap().to_vec()));
    }
    // Row 1 of dz, the bias gradient's share from the NaN row, is 2 (= 1 / (1 - p)) where kept
    // and 0 where dropped: the input's gradient of that row is `dz W`, finite.
    let kept: Vec<bool> = (8..16).map(|i| record.kept(i)).collect();
    assert!(kept.iter().any(|&k| k) && !kept.iter().all(|&k| k), "the seed keeps some of the NaN row: {kept:?}");
    let dx = xf.grad().unwrap().to_vec();
    let w = wf.value().to_vec();
    for c in 0..5 {
        let want: f64 = (0..8).filter(|&j| kept[j]).map(|j| 2.0 * w[j * 5 + c]).sum();
        assert!((dx[5 + c] - want).abs() <= 1e-12 * (1.0 + want.abs()), "dx[1, {c}] = {} against {want}", dx[5 + c]);
    }
    Ok(())
}
