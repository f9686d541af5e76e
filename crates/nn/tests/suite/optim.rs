//! The optimisers, the max-norm constraint, gradient clipping and the schedulers against
//! PyTorch's values in the golden crate's `optim.json` (float64, produced in Python by
//! `torch.optim.SGD/Adam/AdamW` from one initial tensor with four fixed
//! gradients, `torch.renorm` rows, `clip_grad_norm_`, `StepLR` and `CosineAnnealingLR`), plus
//! the hyperparameter checks and a property test of `max_norm_`.

use proptest::prelude::*;
use serde_json::Value;
use tapegrad_autograd::Var;
use tapegrad_nn::optim::{clip_grad_norm_, max_norm_, Adam, AdamW, CosineLr, LrScheduler, Optimizer, Sgd, StepLr};
use tapegrad_tensor::Tensor;
use tapegrad_tensor::TensorNew;

use tapegrad_golden as golden;

fn case(name: &str) -> Value {
    golden::case("optim.json", name)
}

fn tensor(v: &Value) -> Tensor<f64> {
    golden::tensor(v)
}

// ─── helpers ───────────────────────────────────────────────────────────────────

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-10 * w.abs().max(1e-3), "{what}[{i}]: got {g}, PyTorch {w}");
    }
}

/// Runs an optimiser built by `make` over the case's four gradients, checking every step.
fn trajectory<O: Optimizer>(name: &str, make: impl FnOnce(Vec<Var<f64>>) -> O) {
    let c = case(name);
    let p = Var::parameter(tensor(&c["initial"]));
    let mut opt = make(vec![p.clone()]);
    let grads = c["grads_per_step"].as_array().unwrap();
    let after = c["params_after_each_step"].as_array().unwrap();
    assert_eq!(grads.len(), after.len());
    for (step, (g, want)) in grads.iter().zip(after).enumerate() {
        opt.zero_grad();
        p.set_grad(Some(tensor(g)));
        opt.step().unwrap();
        let want = tensor(want);
        assert_eq!(p.value().shape(), want.shape(), "{name}: shape after step {step}");
        assert_close(&format!("{name} step {}", step + 1), &p.value().to_vec(), &want.to_vec());
    }
}

// ─── golden trajectories ───────────────────────────────────────────────────────

#[test]
fn sgd_matches_pytorch() {
    trajectory("SGD lr 0.1", |p| Sgd::new(p, 0.1));
}

#[test]
fn sgd_momentum_matches_pytorch() {
    trajectory("SGD lr 0.1 momentum 0.9", |p| Sgd::new(p, 0.1).momentum(0.9));
}

#[test]
fn sgd_nesterov_matches_pytorch() {
    trajectory("SGD lr 0.1 momentum 0.9 nesterov", |p| Sgd::new(p, 0.1).momentum(0.9).nesterov(true));
}

#[test]
fn sgd_weight_decay_matches_pytorch() {
    trajectory("SGD lr 0.1 momentum 0.9 weight_decay 0.01", |p| Sgd::new(p, 0.1).momentum(0.9).weight_decay(0.01));
}

#[test]
fn adam_matches_pytorch() {
    trajectory("Adam lr 0.01", |p| Adam::new(p, 0.01));
}

#[test]
fn adam_l2_matches_pytorch() {
    trajectory("Adam lr 0.01 weight_decay 0.1 (L2)", |p| Adam::new(p, 0.01).weight_decay(0.1));
}

#[test]
fn adamw_matches_pytorch() {
    trajectory("AdamW lr 0.01 weight_decay 0.1 (decoupled)", |p| AdamW::new(p, 0.01).weight_decay(0.1));
}

#[test]
fn max_norm_matches_torch_renorm() {
    let c = case("max_norm c=1.5 on rows of a (4,6) Linear weight");
    let w = Var::parameter(tensor(&c["initial"]));
    let bias = Var::parameter(Tensor::from_vec(vec![10.0, -10.0, 3.0, 4.0], &[4]).unwrap());
    max_norm_(&[w.clone(), bias.clone()], c["c"].as_f64().unwrap()).unwrap();
    assert_close("max_norm_", &w.value().to_vec(), &tensor(&c["after"]).to_vec());
    assert_eq!(bias.value().to_vec(), vec![10.0, -10.0, 3.0, 4.0], "1-D parameters are left alone");
}

#[test]
fn clip_grad_norm_matches_pytorch() {
    let c = case("clip_grad_norm_ max_norm 1.0 over two tensors");
    let before = c["grads_before"].as_array().unwrap();
    let params: Vec<Var<f64>> = before
        .iter()
        .map(|g| {
            let g = tensor(g);
            let p = Var::parameter(Tensor::<f64>::zeros(g.shape()));
            p.set_grad(Some(g));
            p
        })
        .collect();
    let no_grad = Var::parameter(Tensor::<f64>::zeros(&[2]));
    let mut all = params.clone();
    all.push(no_grad.clone());
    let total = clip_grad_norm_(&all, 1.0).unwrap();
    assert_close("total norm", &[total], &[c["total_norm"].as_f64().unwrap()]);
    for (i, (p, want)) in params.iter().zip(c["grads_after"].as_array().unwrap()).enumerate() {
        assert_close(&format!("grad {i} after"), &p.grad().unwrap().to_vec(), &tensor(want).to_vec());
    }
    assert!(no_grad.grad().is_none());
}

#[test]
fn clip_grad_norm_leaves_small_gradients_alone() {
    let p = Var::parameter(Tensor::<f64>::zeros(&[2]));
    p.set_grad(Some(Tensor::from_vec(vec![0.3, 0.4], &[2]).unwrap()));
    assert_eq!(clip_grad_norm_(std::slice::from_ref(&p), 1.0).unwrap(), 0.5);
    assert_eq!(p.grad().unwrap().to_vec(), vec![0.3, 0.4]);
    assert!(clip_grad_norm_(&[p], -1.0).is_err());
}

fn lr_case(name: &str) -> (f64, Vec<f64>) {
    let c = case(name);
    let lrs = c["lr_per_epoch"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    (c["base_lr"].as_f64().unwrap(), lrs)
}

/// Checks, through `step`, the optimiser's learning rate at every epoch, then `lr_at` (the base
/// learning rate is known after the first step).
fn check_schedule(name: &str, mut sched: impl LrScheduler, base: f64, want: &[f64]) {
    let close = |got: f64, w: f64| (got - w).abs() <= 1e-10 * w.abs() + 1e-15;
    let mut opt = Sgd::new(vec![Var::parameter(Tensor::<f64>::zeros(&[1]))], base);
    for (epoch, &w) in want.iter().enumerate() {
        assert_eq!(sched.epoch(), epoch);
        assert!(close(opt.lr(), w), "{name} epoch {epoch}: {} vs {w}", opt.lr());
        let next = sched.step(&mut opt).unwrap();
        assert_eq!(next, opt.lr());
    }
    for (epoch, &w) in want.iter().enumerate() {
        assert!(close(sched.lr_at(epoch), w), "{name} lr_at({epoch}): {} vs {w}", sched.lr_at(epoch));
    }
}

#[test]
fn step_lr_matches_pytorch() {
    let (base, want) = lr_case("StepLR step 3 gamma 0.5");
    check_schedule("StepLR", StepLr::new(3, 0.5), base, &want);
    check_schedule("StepLR with base_lr", StepLr::new(3, 0.5).base_lr(base), base, &want);
}

#[test]
fn cosine_lr_matches_pytorch() {
    let (base, want) = lr_case("CosineAnnealingLR T_max 10");
    check_schedule("CosineAnnealingLR", CosineLr::new(10, 0.0), base, &want);
    let sched = CosineLr::new(10, 0.0).base_lr(base);
    assert_eq!(sched.lr_at(0), base);
    assert_eq!(StepLr::new(3, 0.5).lr_at(4), 0.5, "without a base, lr_at is the factor");
}

#[test]
fn schedulers_reject_invalid_configurations() {
    let mut opt = Sgd::new(vec![Var::parameter(Tensor::<f32>::zeros(&[1]))], 0.1);
    let e = StepLr::new(0, 0.5).step(&mut opt).unwrap_err().to_string();
    assert!(e.contains("StepLR") && e.contains("step_size"), "{e}");
    let e = CosineLr::new(0, 0.0).step(&mut opt).unwrap_err().to_string();
    assert!(e.contains("CosineAnnealingLR") && e.contains("t_max"), "{e}");
    assert!(StepLr::new(0, 0.5).lr_at(3).is_nan());
    assert_eq!(opt.lr(), 0.1, "a failed step leaves the learning rate alone");
}

// ─── behaviour ─────────────────────────────────────────────────────────────────

#[test]
fn parameters_without_a_gradient_are_skipped() {
    let a = Var::parameter(Tensor::<f64>::ones(&[2]));
    let b = Var::parameter(Tensor::<f64>::ones(&[2]));
    let mut opts: Vec<Box<dyn Optimizer>> = vec![
        Box::new(Sgd::new(vec![a.clone(), b.clone()], 0.1).momentum(0.9)),
        Box::new(Adam::new(vec![a.clone(), b.clone()], 0.1)),
        Box::new(AdamW::new(vec![a.clone(), b.clone()], 0.1)),
    ];
    for opt in &mut opts {
        opt.zero_grad();
        a.set_grad(Some(Tensor::<f64>::ones(&[2])));
        let before = a.value().to_vec();
        opt.step().unwrap();
        assert_eq!(b.value().to_vec(), vec![1.0, 1.0]);
        assert_ne!(a.value().to_vec(), before);
    }
}

#[test]
fn zero_grad_clears_every_gradient() {
    let a = Var::parameter(Tensor::<f32>::ones(&[2]));
    a.set_grad(Some(Tensor::ones(&[2])));
    let mut opt = Sgd::new(vec![a.clone()], 0.1);
    opt.zero_grad();
    assert!(a.grad().is_none());
}

#[test]
fn training_through_the_tape_reduces_a_quadratic() {
    // f(w) = Σ (w − 3)²: every optimiser drives w towards 3.
    type Make = Box<dyn Fn(Vec<Var<f32>>) -> Box<dyn Optimizer>>;
    let makers: Vec<(&str, Make)> = vec![
        ("SGD", Box::new(|p| Box::new(Sgd::new(p, 0.1).momentum(0.5)))),
        ("Adam", Box::new(|p| Box::new(Adam::new(p, 0.1)))),
        ("AdamW", Box::new(|p| Box::new(AdamW::new(p, 0.1).weight_decay(0.0)))),
    ];
    for (name, make) in makers {
        let w = Var::parameter(Tensor::<f32>::zeros(&[3]));
        let target = Var::new(Tensor::full(&[3], 3.0));
        let mut opt = make(vec![w.clone()]);
        for _ in 0..300 {
            opt.zero_grad();
            let d = w.sub(&target).unwrap();
            d.mul(&d).unwrap().sum_all().backward().unwrap();
            opt.step().unwrap();
        }
        assert!(w.value().to_vec().iter().all(|v| (v - 3.0).abs() < 1e-2), "{name}: {:?}", w.value().to_vec());
    }
}

#[test]
fn invalid_hyperparameters_are_errors_naming_the_optimiser_and_value() {
    let p = || vec![Var::parameter(Tensor::<f64>::ones(&[2]))];
    let cases: Vec<(Box<dyn Optimizer>, &str, &str)> = vec![
        (Box::new(Sgd::new(p(), -0.1)), "SGD", "-0.1"),
        (Box::new(Sgd::new(p(), 0.1).momentum(1.0)), "SGD", "momentum 1"),
        (Box::new(Sgd::new(p(), 0.1).momentum(-0.5)), "SGD", "momentum -0.5"),
        (Box::new(Sgd::new(p(), 0.1).nesterov(true)), "SGD", "Nesterov"),
        (Box::new(Sgd::new(p(), 0.1).momentum(0.9).dampening(0.1).nesterov(true)), "SGD", "dampening 0.1"),
        (Box::new(Sgd::new(p(), 0.1).weight_decay(-1.0)), "SGD", "weight_decay -1"),
        (Box::new(Sgd::new(p(), f64::NAN)), "SGD", "NaN"),
        (Box::new(Adam::new(p(), 0.1).betas(1.0, 0.999)), "Adam", "beta1 1"),
        (Box::new(Adam::new(p(), 0.1).betas(0.9, -0.1)), "Adam", "beta2 -0.1"),
        (Box::new(Adam::new(p(), 0.1).eps(-1e-8)), "Adam", "eps"),
        (Box::new(AdamW::new(p(), -1.0)), "AdamW", "-1"),
        (Box::new(AdamW::new(p(), 0.1).weight_decay(-0.01)), "AdamW", "weight_decay -0.01"),
    ];
    for (mut opt, name, value) in cases {
        let e = opt.step().unwrap_err().to_string();
        assert!(e.starts_with(&format!("{name}:")) && e.contains(value), "{e}");
    }
    // The error comes before any update.
    let w = Var::parameter(Tensor::<f64>::ones(&[2]));
    w.set_grad(Some(Tensor::<f64>::ones(&[2])));
    assert!(Sgd::new(vec![w.clone()], 0.1).momentum(2.0).step().is_err());
    assert_eq!(w.value().to_vec(), vec![1.0, 1.0]);
}

#[test]
fn a_gradient_of_the_wrong_shape_is_an_error() {
    let w = Var::parameter(Tensor::<f64>::ones(&[2, 3]));
    w.set_grad(Some(Tensor::<f64>::ones(&[3, 2])));
    let e = Sgd::new(vec![w], 0.1).step().unwrap_err().to_string();
    assert!(e.contains("SGD") && e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
}

type MakeF32 = Box<dyn Fn(Vec<Var<f32>>) -> Box<dyn Optimizer>>;

/// Every optimiser, with state (momentum, moments) and without.
fn every_optimiser() -> Vec<(&'static str, MakeF32)> {
    vec![
        ("SGD", Box::new(|p| Box::new(Sgd::new(p, 0.1)))),
        ("SGD", Box::new(|p| Box::new(Sgd::new(p, 0.1).weight_decay(0.01)))),
        ("SGD", Box::new(|p| Box::new(Sgd::new(p, 0.1).momentum(0.9)))),
        ("SGD", Box::new(|p| Box::new(Sgd::new(p, 0.1).momentum(0.9).nesterov(true)))),
        ("Adam", Box::new(|p| Box::new(Adam::new(p, 0.1)))),
        ("AdamW", Box::new(|p| Box::new(AdamW::new(p, 0.1)))),
    ]
}

#[test]
fn a_parameter_whose_shape_changed_is_an_error_in_step_and_the_state_survives() {
    let grad = |shape: &[usize]| Some(Tensor::<f32>::full(shape, 0.5));
    for (name, make) in every_optimiser() {
        // Uninterrupted: two steps.
        let (a, w) = (Var::parameter(Tensor::<f32>::ones(&[3])), Var::parameter(Tensor::<f32>::ones(&[2, 3])));
        let mut opt = make(vec![a.clone(), w.clone()]);
        for _ in 0..2 {
            a.set_grad(grad(&[3]));
            w.set_grad(grad(&[2, 3]));
            opt.step().unwrap();
        }
        let want = (a.value().to_vec(), w.value().to_vec());

        // Interrupted: one step, then each of a larger, a smaller and a transposed shape.
        for new_shape in [vec![4, 3], vec![2], vec![3, 2]] {
            let (a, w) = (Var::parameter(Tensor::<f32>::ones(&[3])), Var::parameter(Tensor::<f32>::ones(&[2, 3])));
            let mut opt = make(vec![a.clone(), w.clone()]);
            a.set_grad(grad(&[3]));
            w.set_grad(grad(&[2, 3]));
            opt.step().unwrap();
            let (a_after, w_after) = (a.value(), w.value());
            w.set_value(Tensor::full(&new_shape, 2.0));
            w.set_grad(grad(&new_shape));
            a.set_grad(grad(&[3]));
            for _ in 0..2 {
                let e = opt.step().unwrap_err();
                assert!(matches!(e, tapegrad_nn::Error::ShapeMismatch { .. }), "{name}: {e:?}");
                let msg = e.to_string();
                let new = format!("{new_shape:?}");
                for part in [&format!("{name}:"), "parameter 1", "[2, 3]", new.as_str()] {
                    assert!(msg.contains(part), "{name}: {part:?} not in {msg}");
                }
                // Nothing moved, not even the parameter before it.
                assert_eq!(a.value().to_vec(), a_after.to_vec(), "{name}");
                assert_eq!(w.value().to_vec(), vec![2.0; new_shape.iter().product()], "{name}");
            }
            // Back to its shape, the parameter continues from its state as if nothing happened.
            w.set_value(w_after);
            w.set_grad(grad(&[2, 3]));
            opt.step().unwrap();
            assert_eq!((a.value().to_vec(), w.value().to_vec()), want, "{name} after {new_shape:?}");
        }

        // A change before the first step is refused too: the shape is the one the optimiser took.
        let w = Var::parameter(Tensor::<f32>::ones(&[2, 3]));
        let mut opt = make(vec![w.clone()]);
        w.set_value(Tensor::ones(&[5]));
        w.set_grad(grad(&[5]));
        let msg = opt.step().unwrap_err().to_string();
        assert!(msg.contains("parameter 0") && msg.contains("[2, 3]") && msg.contains("[5]"), "{name}: {msg}");
    }
}

#[test]
fn max_norm_handles_conv_weights_and_rejects_bad_c() {
    // A conv weight [2, 1, 2, 2]: each output channel's 4 weights form a row.
    let w =
        Var::parameter(Tensor::<f32>::from_vec(vec![2.0, 2.0, 2.0, 2.0, 0.1, 0.1, 0.1, 0.1], &[2, 1, 2, 2]).unwrap());
    max_norm_(std::slice::from_ref(&w), 1.0).unwrap();
    let x = w.value().to_vec();
    assert!(x[..4].iter().all(|v| (v - 0.5).abs() < 1e-6), "{x:?}");
    assert_eq!(&x[4..], &[0.1; 4]);
    assert_eq!(w.shape(), vec![2, 1, 2, 2]);
    assert!(max_norm_(std::slice::from_ref(&w), -1.0).is_err());
    assert!(max_norm_(&[w], f64::NAN).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After `max_norm_`, every row of every ≥ 2-D parameter has norm ≤ c, rows within c are
    /// unchanged, and 1-D parameters are untouched.
    #[test]
    fn max_norm_keeps_every_row_within_c(
        rows in 1usize..6,
        cols in 1usize..8,
        c in 0.01f64..5.0,
        data in proptest::collection::vec(-10.0f64..10.0, 48),
    ) {
        let before: Vec<f64> = data[..rows * cols].to_vec();
        let w = Var::parameter(Tensor::from_vec(before.clone(), &[rows, cols]).unwrap());
        let b = Var::parameter(Tensor::from_vec(data[..cols].to_vec(), &[cols]).unwrap());
        max_norm_(&[w.clone(), b.clone()], c).unwrap();
        let after = w.value().to_vec();
        for r in 0..rows {
            let row = &after[r * cols..(r + 1) * cols];
            let old = &before[r * cols..(r + 1) * cols];
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            prop_assert!(norm <= c * (1.0 + 1e-12), "row {} norm {} > c {}", r, norm, c);
            let old_norm = old.iter().map(|v| v * v).sum::<f64>().sqrt();
            if old_norm <= c {
                prop_assert_eq!(row, old);
            }
        }
        prop_assert_eq!(b.value().to_vec(), data[..cols].to_vec());
    }
}

// ─── state dicts ─────────────────────────────────────────────────────────────────

/// An optimiser restored from another's state dict, over other parameters with the same values,
/// takes exactly the same steps afterwards, for every optimiser and configuration.
#[test]
fn a_restored_optimiser_continues_exactly_as_the_original() {
    use tapegrad_nn::optim::Stateful;
    type Make = fn(Vec<Var<f64>>) -> Box<dyn StatefulOptimizer>;
    trait StatefulOptimizer: Optimizer + Stateful<f64> {}
    impl<O: Optimizer + Stateful<f64>> StatefulOptimizer for O {}
    let makes: [(&str, Make); 5] = [
        ("sgd", |p| Box::new(Sgd::new(p, 0.1))),
        ("sgd momentum", |p| Box::new(Sgd::new(p, 0.1).momentum(0.9).dampening(0.1).weight_decay(0.01))),
        ("sgd nesterov", |p| Box::new(Sgd::new(p, 0.1).momentum(0.8).nesterov(true))),
        ("adam", |p| Box::new(Adam::new(p, 0.01).betas(0.8, 0.99).weight_decay(0.1))),
        ("adamw", |p| Box::new(AdamW::new(p, 0.01).eps(1e-6))),
    ];
    let params = || {
        vec![
            Var::parameter(Tensor::<f64>::from_vec(vec![0.5, -1.5, 2.0, 0.25], &[2, 2]).unwrap()),
            Var::parameter(Tensor::<f64>::from_vec(vec![1.0, -0.5, 0.75], &[3]).unwrap()),
        ]
    };
    // A loss whose gradient depends on the weights, so a wrong state shows in later steps.
    let step = |opt: &mut Box<dyn StatefulOptimizer>, p: &[Var<f64>], k: usize| {
        opt.zero_grad();
        let loss = p[0].mul(&p[0]).unwrap().sum_all().add(&p[1].exp().sum_all()).unwrap();
        // The second parameter has no gradient at the first step: its state starts later.
        if k == 0 {
            p[0].mul(&p[0]).unwrap().sum_all().backward().unwrap();
        } else {
            loss.backward().unwrap();
        }
        opt.step().unwrap();
    };
    for (name, make) in makes {
        let (a, b) = (params(), params());
        let mut first = make(a.clone());
        step(&mut first, &a, 0);
        first.set_lr(0.05);
        let mut second = make(b.clone());
        for (x, y) in a.iter().zip(&b) {
            y.set_value(x.value());
        }
        second.load_state_dict(&first.state_dict()).unwrap();
        assert_eq!(second.lr(), 0.05, "{name}: the learning rate is part of the state");
        for k in 1..4 {
            step(&mut first, &a, k);
            step(&mut second, &b, k);
        }
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.value().to_vec(), y.value().to_vec(), "{name}");
        }
        let (sa, sb) = (first.state_dict(), second.state_dict());
        assert_eq!(sa.values, sb.values, "{name}");
        for (k, t) in &sa.tensors {
            assert_eq!(t.to_vec(), sb.tensors[k].to_vec(), "{name}: {k}");
        }
        // A state whose parameter count differs is refused, naming both counts.
        let mut fewer = make(b[..1].to_vec());
        let e = fewer.load_state_dict(&sa).unwrap_err().to_string();
        assert!(e.contains("over 2 parameters, this one has 1"), "{name}: {e}");
    }
}

/// A scheduler restored from a state dict continues the same schedule.
#[test]
fn a_restored_scheduler_continues_the_same_schedule() {
    use tapegrad_nn::optim::Stateful;
    let mut opt = Sgd::new(vec![Var::parameter(Tensor::<f32>::zeros(&[1]))], 0.1);
    let (mut step, mut cosine) = (StepLr::new(2, 0.5), CosineLr::new(7, 0.01));
    for _ in 0..3 {
        step.step(&mut opt).unwrap();
        cosine.step(&mut opt).unwrap();
    }
    let (mut step2, mut cosine2) = (StepLr::new(9, 0.9), CosineLr::new(1, 0.0));
    Stateful::<f32>::load_state_dict(&mut step2, &Stateful::<f32>::state_dict(&step)).unwrap();
    Stateful::<f32>::load_state_dict(&mut cosine2, &Stateful::<f32>::state_dict(&cosine)).unwrap();
    for _ in 0..5 {
        assert_eq!(step.step(&mut opt).unwrap(), step2.step(&mut opt).unwrap());
        assert_eq!(cosine.step(&mut opt).unwrap(), cosine2.step(&mut opt).unwrap());
    }
    let e = Stateful::<f32>::load_state_dict(&mut step2, &Stateful::<f32>::state_dict(&cosine)).unwrap_err();
    assert!(e.to_string().contains("not of a StepLR"), "{e}");
}
