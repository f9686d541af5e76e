//! The losses against PyTorch's values in the golden crate's `nn.json` (float64: `F.cross_entropy`
//! with and without `label_smoothing=0.1`, `F.nll_loss(F.log_softmax(x, 1), t)`, `F.mse_loss`,
//! `F.binary_cross_entropy_with_logits`; outputs and input gradients after
//! `backward(upstream)`), gradient checks of every loss and reduction (and a test that each of
//! nn's own `Backward` ops was on the tape of one), stability at extreme logits, the errors, and
//! the weight penalties.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use tapegrad_autograd::{gradcheck, gradchecked_ops, gradgradcheck, Var};
use tapegrad_nn::loss::{
    binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_with, cross_entropy, cross_entropy_with,
    mse_loss, mse_loss_with, nll_loss, nll_loss_with, CrossEntropyOptions, Reduction,
};
use tapegrad_nn::{l1_penalty, l2_penalty};
use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Generator, Tensor};

use tapegrad_golden as golden;

fn case(name: &str) -> Value {
    golden::case("nn.json", name)
}

fn tensor(v: &Value) -> Tensor<f64> {
    golden::tensor(v)
}

// ─── helpers ───────────────────────────────────────────────────────────────────

fn targets(c: &Value) -> Vec<usize> {
    c["args"]["targets"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as usize).collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-10 * w.abs().max(1e-3), "{what}[{i}]: got {g}, PyTorch {w}");
    }
}

/// Runs `loss` on the case's input `x`, checks the output, backpropagates the case's upstream
/// gradient (PyTorch's losses are shape [1] in the file; ours are 0-dim, as PyTorch returns them)
/// and checks the gradient of `x`.
fn check_golden(name: &str, loss: impl Fn(&Var<f64>, &Value) -> tapegrad_nn::Result<Var<f64>>) {
    let c = case(name);
    let x = Var::parameter(tensor(&c["inputs"]["x"]));
    let y = loss(&x, &c).unwrap();
    assert_eq!(y.shape(), Vec::<usize>::new(), "{name}: a reduced loss is 0-dim");
    assert_close(&format!("{name} output"), &y.value().to_vec(), &tensor(&c["output"]).to_vec());
    let upstream = tensor(&c["upstream"]).reshape(&[]).unwrap();
    y.backward_with(&upstream, false).unwrap();
    assert_close(&format!("{name} grad"), &x.grad().unwrap().to_vec(), &tensor(&c["grads"]["x"]).to_vec());
}

/// `gradcheck` wants the tape's `Result`; the losses return nn's.
fn lift(r: tapegrad_nn::Result<Var<f64>>) -> tapegrad_autograd::Result<Var<f64>> {
    r.map_err(|e| tapegrad_autograd::Error::InvalidArgument { op: "loss", reason: e.to_string() })
}

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::<f64>::randn(shape, &mut Generator::new(seed))
}

const REDUCTIONS: [Reduction; 3] = [Reduction::Mean, Reduction::Sum, Reduction::None];

// ─── golden ────────────────────────────────────────────────────────────────────

#[test]
fn cross_entropy_matches_pytorch() {
    check_golden("cross_entropy mean", |x, c| cross_entropy(x, &targets(c)));
}

#[test]
fn cross_entropy_label_smoothing_matches_pytorch() {
    check_golden("cross_entropy label_smoothing 0.1", |x, c| {
        let eps = c["args"]["label_smoothing"].as_f64().unwrap();
        let opts = CrossEntropyOptions { label_smoothing: eps, ..Default::default() };
        cross_entropy_with(x, &targets(c), opts)
    });
}

#[test]
fn nll_loss_of_log_softmax_matches_pytorch() {
    check_golden("nll_loss mean of log_softmax", |x, c| nll_loss(&x.log_softmax(1)?, &targets(c)));
}

#[test]
fn mse_loss_matches_pytorch() {
    check_golden("mse_loss mean", |x, c| mse_loss(x, &Var::new(tensor(&c["args"]["target"]))));
}

#[test]
fn binary_cross_entropy_with_logits_matches_pytorch() {
    check_golden("binary_cross_entropy_with_logits mean", |x, c| {
        binary_cross_entropy_with_logits(x, &Var::new(tensor(&c["args"]["target"])))
    });
}

// ─── gradient checks ───────────────────────────────────────────────────────────

#[test]
fn cross_entropy_gradchecks_for_every_reduction_and_smoothing() {
    let t = vec![2, 0, 3, 3, 1];
    for reduction in REDUCTIONS {
        for label_smoothing in [0.0, 0.1, 1.0] {
            let opts = CrossEntropyOptions { label_smoothing, reduction, ..Default::default() };
            gradcheck(|v| lift(cross_entropy_with(&v[0], &t, opts)), &[randn(&[5, 4], 1).mul_scalar(3.0)])
                .unwrap_or_else(|e| panic!("{reduction:?} ε={label_smoothing}: {e}"));
        }
    }
}

/// Rows with the ignored target (7, not a class) get no gradient; the others the mean's 1/K.
#[test]
fn cross_entropy_with_ignore_index_gradchecks_for_every_reduction_and_smoothing() {
    let t = vec![2, 7, 3, 7, 1];
    for reduction in REDUCTIONS {
        for label_smoothing in [0.0, 0.1] {
            let opts = CrossEntropyOptions { label_smoothing, reduction, ignore_index: Some(7) };
            gradcheck(|v| lift(cross_entropy_with(&v[0], &t, opts)), &[randn(&[5, 4], 8).mul_scalar(3.0)])
                .unwrap_or_else(|e| panic!("{reduction:?} ε={label_smoothing}: {e}"));
        }
    }
}

#[test]
fn cross_entropy_gradchecks_on_a_non_contiguous_input() {
    let x = randn(&[4, 3], 2).t().unwrap(); // [3, 4], transposed strides
    assert!(!x.is_contiguous());
    gradcheck(|v| lift(cross_entropy(&v[0], &[3, 0, 1])), &[x]).unwrap();
}

#[test]
fn nll_loss_gradchecks_for_every_reduction() {
    for reduction in REDUCTIONS {
        gradcheck(|v| lift(nll_loss_with(&v[0], &[1, 0, 2], reduction)), &[randn(&[3, 3], 3)])
            .unwrap_or_else(|e| panic!("{reduction:?}: {e}"));
    }
}

#[test]
fn mse_loss_gradchecks_both_inputs_for_every_reduction() {
    for reduction in REDUCTIONS {
        gradcheck(|v| lift(mse_loss_with(&v[0], &v[1], reduction)), &[randn(&[2, 3], 4), randn(&[2, 3], 5)])
            .unwrap_or_else(|e| panic!("{reduction:?}: {e}"));
    }
}

#[test]
fn bce_with_logits_gradchecks_both_inputs_for_every_reduction() {
    let y = Tensor::<f64>::rand(&[3, 4], &mut Generator::new(6));
    for reduction in REDUCTIONS {
        gradcheck(
            |v| lift(binary_cross_entropy_with_logits_with(&v[0], &v[1], reduction)),
            &[randn(&[3, 4], 7).mul_scalar(4.0), y.clone()],
        )
        .unwrap_or_else(|e| panic!("{reduction:?}: {e}"));
    }
}

#[test]
fn penalties_gradcheck() {
    // Away from 0, where |w| is not differentiable.
    let a = Tensor::from_vec(vec![0.5, -1.5, 2.0, -0.25], &[2, 2]).unwrap();
    let b = Tensor::from_vec(vec![-0.75, 1.0], &[2]).unwrap();
    gradcheck(|v| lift(l1_penalty(v)), &[a.clone(), b.clone()]).unwrap();
    gradcheck(|v| lift(l2_penalty(v)), &[a, b]).unwrap();
}

/// The gradient checks above, run once more by the coverage test below (the harness runs tests
/// in parallel and in any order, so a test cannot wait for the others).
const CHECKS: &[(&str, fn())] = &[
    (
        "cross_entropy_gradchecks_for_every_reduction_and_smoothing",
        cross_entropy_gradchecks_for_every_reduction_and_smoothing,
    ),
    ("cross_entropy_gradchecks_on_a_non_contiguous_input", cross_entropy_gradchecks_on_a_non_contiguous_input),
    (
        "cross_entropy_with_ignore_index_gradchecks_for_every_reduction_and_smoothing",
        cross_entropy_with_ignore_index_gradchecks_for_every_reduction_and_smoothing,
    ),
    ("nll_loss_gradchecks_for_every_reduction", nll_loss_gradchecks_for_every_reduction),
    ("mse_loss_gradchecks_both_inputs_for_every_reduction", mse_loss_gradchecks_both_inputs_for_every_reduction),
    (
        "bce_with_logits_gradchecks_both_inputs_for_every_reduction",
        bce_with_logits_gradchecks_both_inputs_for_every_reduction,
    ),
    ("penalties_gradcheck", penalties_gradcheck),
];

/// nn's own ops (the custom `Backward` impls under `src`, the fused losses) were each on the
/// tape of a passing gradient check: `gradchecked_ops` records what every passing `gradcheck` of
/// the test binary saw, and this test runs every check of this file itself first.
#[test]
fn every_nn_backward_is_covered() {
    // CHECKS lists every test of this file with "gradcheck" in its name.
    let own = include_str!("loss.rs");
    let defined: BTreeSet<&str> = golden::fn_names(own)
        .into_iter()
        .filter(|&(name, rest)| rest.starts_with("()") && name.contains("gradcheck"))
        .map(|(name, _)| name)
        .collect();
    let listed: BTreeSet<&str> = CHECKS.iter().map(|(name, _)| *name).collect();
    assert_eq!(defined, listed, "CHECKS must list every gradient-check test of this file");

    for (_, check) in CHECKS {
        check();
    }
    let seen = gradchecked_ops();
    let names = golden::backward_op_names(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for known in ["cross_entropy", "nll_loss", "mse_loss", "binary_cross_entropy_with_logits"] {
        assert!(names.contains(known), "backward_op_names missed {known:?}; found {names:?}");
    }
    let missing: Vec<&String> = names.iter().filter(|n| !seen.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "nn ops that no passing gradient check saw: {missing:?}");
}

// ─── values and behaviour ──────────────────────────────────────────────────────

#[test]
fn cross_entropy_equals_nll_of_log_softmax_and_reductions_agree() {
    let x = Var::new(randn(&[6, 5], 8));
    let t = [0, 4, 2, 2, 1, 3];
    let fused = cross_entropy(&x, &t).unwrap().value().item().unwrap();
    let composed = nll_loss(&x.log_softmax(1).unwrap(), &t).unwrap().value().item().unwrap();
    assert!((fused - composed).abs() < 1e-12);
    let none = cross_entropy_with(&x, &t, CrossEntropyOptions { reduction: Reduction::None, ..Default::default() })
        .unwrap()
        .value();
    assert_eq!(none.shape(), &[6]);
    let sum = cross_entropy_with(&x, &t, CrossEntropyOptions { reduction: Reduction::Sum, ..Default::default() })
        .unwrap()
        .value()
        .item()
        .unwrap();
    assert!((none.to_vec().iter().sum::<f64>() - sum).abs() < 1e-12);
    assert!((sum / 6.0 - fused).abs() < 1e-12);
}

#[test]
fn cross_entropy_is_stable_at_extreme_logits() {
    // f32 logits of ±1e4: a naive softmax would overflow to inf / NaN.
    let x = Var::parameter(Tensor::<f32>::from_vec(vec![1e4, -1e4, 0.0, 1e4, 1e4, 1e4], &[2, 3]).unwrap());
    let loss = cross_entropy(&x, &[1, 0]).unwrap();
    let v = loss.value().item().unwrap();
    // Row 0: 2e4; row 1: ln 3.
    assert!(((v as f64) - (2e4 + 3f64.ln()) / 2.0).abs() < 1.0, "{v}");
    loss.backward().unwrap();
    let g = x.grad().unwrap().to_vec();
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    assert!((g[0] - 0.5).abs() < 1e-6 && (g[1] + 0.5).abs() < 1e-6, "{g:?}");
}

#[test]
fn bce_with_logits_is_stable_at_extreme_logits() {
    let x = Var::parameter(Tensor::<f32>::from_vec(vec![100.0, -100.0, 100.0, -100.0], &[4]).unwrap());
    let y = Var::new(Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[4]).unwrap());
    let loss = binary_cross_entropy_with_logits(&x, &y).unwrap();
    assert!((loss.value().item().unwrap() - 50.0).abs() < 1e-4);
    loss.backward().unwrap();
    let g = x.grad().unwrap().to_vec();
    assert!(g.iter().all(|v| v.is_finite()));
    assert!((g[2] - 0.25).abs() < 1e-6 && (g[3] + 0.25).abs() < 1e-6, "{g:?}");
}

#[test]
fn losses_work_in_f32_and_record_one_op() {
    let x = Var::parameter(Tensor::<f32>::randn(&[3, 4], &mut Generator::new(9)));
    let loss = cross_entropy(&x, &[0, 1, 2]).unwrap();
    let tape = loss.tape();
    assert_eq!(tape.len(), 1);
    assert_eq!(tape[0].name, "cross_entropy");
    loss.backward().unwrap();
    // Each row of the gradient sums to zero: softmax and the one-hot both sum to 1.
    let g = x.grad().unwrap().to_vec();
    for row in g.chunks(4) {
        assert!(row.iter().sum::<f32>().abs() < 1e-6);
    }
}

#[test]
fn constant_inputs_record_nothing() {
    let x = Var::new(randn(&[2, 3], 10));
    let loss = cross_entropy(&x, &[0, 2]).unwrap();
    assert!(!loss.requires_grad());
    assert!(loss.tape().is_empty());
}

// ─── errors ────────────────────────────────────────────────────────────────────

#[test]
fn class_losses_reject_bad_targets_and_shapes() {
    let x = Var::new(Tensor::<f64>::zeros(&[2, 3]));
    let e = cross_entropy(&x, &[0, 3]).unwrap_err().to_string();
    assert!(e.contains("cross_entropy") && e.contains("target 3") && e.contains("[2, 3]"), "{e}");
    let e = cross_entropy(&x, &[0]).unwrap_err().to_string();
    assert!(e.contains("cross_entropy") && e.contains("[2, 3]") && e.contains("1 targets"), "{e}");
    let e = cross_entropy(&Var::new(Tensor::<f64>::zeros(&[6])), &[0]).unwrap_err().to_string();
    assert!(e.contains("cross_entropy") && e.contains("[6]") && e.contains("2-D"), "{e}");
    let e = cross_entropy(&Var::new(Tensor::<f64>::zeros(&[0, 3])), &[]).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let opts = CrossEntropyOptions { label_smoothing: 1.5, ..Default::default() };
    let e = cross_entropy_with(&x, &[0, 1], opts).unwrap_err().to_string();
    assert!(e.contains("label_smoothing 1.5"), "{e}");
    let e = nll_loss(&x, &[5, 0]).unwrap_err().to_string();
    assert!(e.contains("nll_loss") && e.contains("target 5"), "{e}");
    let e = nll_loss(&Var::new(Tensor::<f64>::zeros(&[2, 3, 4])), &[0, 0]).unwrap_err().to_string();
    assert!(e.contains("nll_loss") && e.contains("[2, 3, 4]"), "{e}");
}

#[test]
fn elementwise_losses_reject_shape_mismatches() {
    let a = Var::new(Tensor::<f64>::zeros(&[2, 3]));
    let b = Var::new(Tensor::<f64>::zeros(&[3, 2]));
    let e = mse_loss(&a, &b).unwrap_err().to_string();
    assert!(e.contains("mse_loss") && e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
    let e = binary_cross_entropy_with_logits(&a, &b).unwrap_err().to_string();
    assert!(e.contains("binary_cross_entropy_with_logits") && e.contains("[3, 2]"), "{e}");
    let empty = Var::new(Tensor::<f64>::zeros(&[0]));
    assert!(mse_loss(&empty, &empty).is_err());
    assert_eq!(mse_loss_with(&empty, &empty, Reduction::Sum).unwrap().value().item().unwrap(), 0.0);
}

// ─── penalties ─────────────────────────────────────────────────────────────────

#[test]
fn penalties_sum_over_all_parameters() {
    let a = Var::parameter(Tensor::<f64>::from_vec(vec![1.0, -2.0], &[2]).unwrap());
    let b = Var::parameter(Tensor::<f64>::from_vec(vec![3.0, -4.0, 0.5, 0.0], &[2, 2]).unwrap());
    let params = [a.clone(), b.clone()];
    assert_eq!(l1_penalty(&params).unwrap().value().item().unwrap(), 10.5);
    let l2 = l2_penalty(&params).unwrap();
    assert_eq!(l2.value().item().unwrap(), 30.25, "a plain sum of squares, no 1/2");
    l2.backward().unwrap();
    assert_eq!(a.grad().unwrap().to_vec(), vec![2.0, -4.0]);
    assert_eq!(l1_penalty::<f64>(&[]).unwrap().value().item().unwrap(), 0.0);
    assert_eq!(l2_penalty::<f32>(&[]).unwrap().value().item().unwrap(), 0.0);
}

// ─── ignore_index ──────────────────────────────────────────────────────────────

fn ignoring(index: usize, reduction: Reduction) -> CrossEntropyOptions {
    CrossEntropyOptions { ignore_index: Some(index), reduction, ..Default::default() }
}

/// By hand: row 0 (zeros, target 0) has ℓ = ln 4; row 2 ([5, 0, 0, 0], target 0) has
/// ℓ = ln(e⁵ + 3) − 5; row 1 is ignored, so the mean is over 2 rows.
#[test]
fn ignore_index_leaves_rows_out_of_the_loss_and_the_count() {
    let x = Var::parameter(
        Tensor::from_vec(vec![0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0, 0.0], &[3, 4]).unwrap(),
    );
    let (l0, l2) = (4f64.ln(), (5f64.exp() + 3.0).ln() - 5.0);
    let mean = cross_entropy_with(&x, &[0, 99, 0], ignoring(99, Reduction::Mean)).unwrap();
    assert!((mean.value().item().unwrap() - (l0 + l2) / 2.0).abs() < 1e-14);
    let sum = cross_entropy_with(&x, &[0, 99, 0], ignoring(99, Reduction::Sum)).unwrap();
    assert!((sum.value().item().unwrap() - (l0 + l2)).abs() < 1e-14);
    let none = cross_entropy_with(&x, &[0, 99, 0], ignoring(99, Reduction::None)).unwrap().value().to_vec();
    assert!((none[0] - l0).abs() < 1e-14 && none[1] == 0.0 && (none[2] - l2).abs() < 1e-14, "{none:?}");

    // The gradient: the kept rows' (softmax − onehot) / 2, and zeros on the ignored row.
    mean.backward().unwrap();
    let g = x.grad().unwrap().to_vec();
    let e5 = 5f64.exp() + 3.0;
    let want =
        [-0.375, 0.125, 0.125, 0.125, 0.0, 0.0, 0.0, 0.0, (5f64.exp() / e5 - 1.0) / 2.0, 0.5 / e5, 0.5 / e5, 0.5 / e5];
    assert_close("ignore_index grad", &g, &want);
}

/// Ignoring a valid class works too, and equals the loss over the other rows alone.
#[test]
fn ignore_index_equals_the_loss_of_the_rows_kept() {
    let xs = randn(&[6, 3], 9);
    let t = [1, 0, 2, 0, 0, 1];
    let x = Var::parameter(xs.clone());
    let loss = cross_entropy_with(&x, &t, ignoring(0, Reduction::Mean)).unwrap();
    let kept =
        Tensor::cat(&[&xs.narrow(0, 0, 1).unwrap(), &xs.narrow(0, 2, 1).unwrap(), &xs.narrow(0, 5, 1).unwrap()], 0)
            .unwrap();
    let sub = cross_entropy(&Var::new(kept), &[1, 2, 1]).unwrap();
    assert!((loss.value().item().unwrap() - sub.value().item().unwrap()).abs() < 1e-14);
}

/// All rows ignored: the mean is NaN (PyTorch: `F.cross_entropy(x, full(-100))` is nan), the sum
/// 0, and the gradient zero (not NaN) in every reduction.
#[test]
fn ignore_index_on_every_row_gives_a_nan_mean_and_zero_gradients() {
    for reduction in REDUCTIONS {
        let x = Var::parameter(randn(&[2, 3], 10));
        let loss = cross_entropy_with(&x, &[5, 5], ignoring(5, reduction)).unwrap();
        let v = loss.value().to_vec();
        match reduction {
            Reduction::Mean => assert!(v[0].is_nan(), "{v:?}"),
            Reduction::Sum => assert_eq!(v, vec![0.0]),
            Reduction::None => assert_eq!(v, vec![0.0, 0.0]),
        }
        loss.sum_all().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec(), vec![0.0; 6], "{reduction:?}");
    }
}

#[test]
fn a_target_out_of_range_is_still_an_error_beside_ignore_index() {
    let x = Var::new(Tensor::<f64>::zeros(&[2, 3]));
    let e = cross_entropy_with(&x, &[5, 3], ignoring(5, Reduction::Mean)).unwrap_err().to_string();
    assert!(e.starts_with("cross_entropy: ") && e.contains("target 3 at row 1"), "{e}");
}

// ─── double backward ───────────────────────────────────────────────────────────

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 16, failure_persistence: None, ..Default::default() })]

    /// Each loss's recorded backward (`create_graph`): second derivatives against finite
    /// differences of the first, for every reduction, label smoothing and ignored rows, both
    /// inputs of the element-wise losses, and the logits a transposed (non-contiguous) view.
    #[test]
    fn losses_double_backward(
        n in 1usize..=4,
        c in 1usize..=4,
        reduction in 0usize..3,
        smoothing in proptest::sample::select(vec![0.0, 0.1]),
        ignore_first in proptest::bool::ANY,
        seed in 0u64..1_000_000,
    ) {
        let reduction = REDUCTIONS[reduction];
        let gen = &mut Generator::new(seed);
        let targets: Vec<usize> = (0..n).map(|_| gen.below(c as u64) as usize).collect();
        let logits_t = Tensor::<f64>::randn(&[c, n], gen);
        let grad_err = |e: tapegrad_autograd::Error| proptest::test_runner::TestCaseError::fail(e.to_string());
        // Ignoring the first row's class: with n > 1 the mean is over the others.
        let ignore = (ignore_first && n > 1).then_some(targets[0]);
        let options = CrossEntropyOptions { label_smoothing: smoothing, reduction, ignore_index: ignore };
        gradgradcheck(|v| cross_entropy_with(&v[0].t()?, &targets, options), std::slice::from_ref(&logits_t)).map_err(grad_err)?;
        gradgradcheck(|v| nll_loss_with(&v[0].t()?.log_softmax(1)?, &targets, reduction), &[logits_t]).map_err(grad_err)?;
        let (x, y) = (Tensor::<f64>::randn(&[n, c], gen), Tensor::<f64>::rand(&[n, c], gen));
        gradgradcheck(|v| mse_loss_with(&v[0].tanh(), &v[1].tanh(), reduction), &[x.clone(), y.clone()]).map_err(grad_err)?;
        gradgradcheck(|v| binary_cross_entropy_with_logits_with(&v[0], &v[1].tanh(), reduction), &[x, y]).map_err(grad_err)?;
    }
}

/// The ops of the checks above were differentiated twice (`gradgradchecked_ops` records the ops
/// of each passing `gradgradcheck`).
#[test]
fn every_loss_has_double_backward() {
    losses_double_backward();
    let seen = tapegrad_autograd::gradgradchecked_ops();
    for op in ["cross_entropy", "nll_loss", "mse_loss", "binary_cross_entropy_with_logits"] {
        assert!(seen.contains(op), "{op} has no passing gradgradcheck");
    }
}
