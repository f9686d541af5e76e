//! The tape's behaviour as a user sees it: gradient accumulation where a value fans out and across
//! backward passes, retaining and freeing the graph, the errors backward returns, `no_grad`,
//! `detach`, anomaly detection, the tape listing, and memory: saved tensors are released by
//! backward or by dropping the graph, and very deep graphs neither overflow the stack when
//! dropped nor when backpropagated.

use std::panic::{catch_unwind, AssertUnwindSafe};
use tapegrad_tensor::TensorNew;

use tapegrad_autograd::{detect_anomaly, is_anomaly_enabled, is_grad_enabled, no_grad, Error, Var};
use tapegrad_tensor::Tensor;

fn tensor(values: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(values.to_vec(), shape).unwrap()
}

fn param(values: &[f64]) -> Var<f64> {
    Var::parameter(tensor(values, &[values.len()]))
}

fn grad(v: &Var<f64>) -> Vec<f64> {
    v.grad().expect("the parameter has a gradient").to_vec()
}

// ─── fan-out and accumulation ───────────────────────────────────────────────────────────────────

#[test]
fn fan_out_twice_sums_both_paths() {
    // y = x*x + x: x is used three times (twice by mul, once by add); dy/dx = 2x + 1.
    let x = param(&[1.0, -2.0, 0.5]);
    let y = x.mul(&x).unwrap().add(&x).unwrap();
    y.sum_all().backward().unwrap();
    assert_eq!(grad(&x), vec![3.0, -3.0, 2.0]);
}

#[test]
fn fan_out_three_times_and_through_a_shared_intermediate() {
    // y = x*x*x: dy/dx = 3x^2.
    let x = param(&[1.0, -2.0, 3.0]);
    let y = x.mul(&x).unwrap().mul(&x).unwrap();
    y.sum_all().backward().unwrap();
    assert_eq!(grad(&x), vec![3.0, 12.0, 27.0]);

    // h = 2x used three times: z = h + h + h = 6x; dz/dx = 6 (the intermediate fans out, too).
    let x = param(&[1.0, 2.0]);
    let h = x.mul_scalar(2.0);
    let z = h.add(&h).unwrap().add(&h).unwrap();
    z.sum_all().backward().unwrap();
    assert_eq!(grad(&x), vec![6.0, 6.0]);
}

#[test]
fn a_second_backward_on_a_fresh_graph_adds_and_zero_grad_clears() {
    let w = param(&[1.0, 2.0]);
    let c = Var::new(tensor(&[3.0, 5.0], &[2]));
    let loss = || w.mul(&c).unwrap().sum_all();
    loss().backward().unwrap();
    assert_eq!(grad(&w), vec![3.0, 5.0]);
    loss().backward().unwrap();
    assert_eq!(grad(&w), vec![6.0, 10.0], "a second backward adds, as in PyTorch");
    w.zero_grad();
    assert!(w.grad().is_none());
    loss().backward().unwrap();
    assert_eq!(grad(&w), vec![3.0, 5.0]);
}

#[test]
fn backward_retain_allows_a_second_backward_which_doubles_the_grads() {
    let w = param(&[1.0, -1.0]);
    let loss = w.mul(&w).unwrap().sum_all();
    loss.backward_retain().unwrap();
    assert_eq!(grad(&w), vec![2.0, -2.0]);
    loss.backward_retain().unwrap();
    assert_eq!(grad(&w), vec![4.0, -4.0]);
    // A plain backward still works through the retained graph, then frees it.
    loss.backward().unwrap();
    assert_eq!(grad(&w), vec![6.0, -6.0]);
    assert!(matches!(loss.backward(), Err(Error::GraphFreed { .. })));
}

// ─── errors ─────────────────────────────────────────────────────────────────────────────────────

#[test]
fn a_second_backward_through_a_freed_graph_is_an_error_that_says_so() {
    let w = param(&[1.0, 2.0]);
    let loss = w.exp().sum_all();
    loss.backward().unwrap();
    let first = grad(&w);
    let err = loss.backward().unwrap_err();
    assert_eq!(err, Error::GraphFreed { op: "sum" });
    let msg = err.to_string();
    assert!(msg.contains("freed") && msg.contains("backward_retain"), "{msg}");
    // The failed backward accumulated nothing.
    assert_eq!(grad(&w), first);

    // Reaching a freed op below a live one is the same error: `y` was freed by the first backward.
    let w = param(&[1.0]);
    let y = w.mul_scalar(2.0);
    y.sum_all().backward().unwrap();
    let err = y.exp().sum_all().backward().unwrap_err();
    assert_eq!(err, Error::GraphFreed { op: "mul_scalar" });
}

#[test]
fn backward_on_a_non_scalar_needs_an_upstream_gradient() {
    let w = param(&[1.0, 2.0, 3.0]);
    let y = w.mul(&w).unwrap();
    let err = y.backward().unwrap_err();
    assert_eq!(err, Error::NonScalar { shape: vec![3], numel: 3 });
    assert!(err.to_string().contains("backward_with"), "{err}");

    // A wrongly shaped upstream gradient is an error naming both shapes.
    let err = y.backward_with(&tensor(&[1.0, 1.0], &[2]), false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("backward") && msg.contains("[3]") && msg.contains("[2]"), "{msg}");

    // The vector-Jacobian product: dy/dw = 2w, times the upstream gradient.
    y.backward_with(&tensor(&[1.0, 10.0, -1.0], &[3]), false).unwrap();
    assert_eq!(grad(&w), vec![2.0, 40.0, -6.0]);
}

#[test]
fn backward_on_an_output_that_requires_no_grad_is_an_error() {
    let c = Var::new(tensor(&[1.0, 2.0], &[2]));
    let loss = c.exp().sum_all();
    assert!(!loss.requires_grad());
    let err = loss.backward().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "backward", .. }), "{err}");
    assert!(err.to_string().contains("does not require a gradient"), "{err}");

    let w = param(&[1.0]);
    let loss = no_grad(|| w.exp().sum_all());
    assert!(loss.backward().is_err());
    assert!(w.grad().is_none());
}

// ─── no_grad and detach ─────────────────────────────────────────────────────────────────────────

#[test]
fn no_grad_records_nothing_and_restores_recording() {
    let w = param(&[1.0, 2.0]);
    assert!(is_grad_enabled());
    let y = no_grad(|| {
        assert!(!is_grad_enabled());
        // Nested no_grad leaves recording off when it returns.
        no_grad(|| ());
        assert!(!is_grad_enabled());
        w.mul(&w).unwrap().exp().sum_all()
    });
    assert!(!y.requires_grad());
    assert!(y.is_leaf());
    assert!(y.tape().is_empty());
    // The value is computed as usual.
    let expected = (1f64).exp() + (4f64).exp();
    assert_eq!(y.value().item().unwrap(), expected);

    // Recording is back on.
    assert!(is_grad_enabled());
    let z = w.mul(&w).unwrap();
    assert!(z.requires_grad());
    assert_eq!(z.tape().len(), 1);
}

#[test]
fn no_grad_restores_recording_after_a_panic_inside() {
    let w = param(&[1.0]);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // keep the expected panic out of the test output
    let caught = catch_unwind(AssertUnwindSafe(|| {
        no_grad(|| {
            let _ = w.exp();
            panic!("inside no_grad");
        })
    }));
    std::panic::set_hook(previous);
    assert!(caught.is_err());
    assert!(is_grad_enabled(), "a panic inside no_grad left recording off");
    assert!(w.exp().requires_grad());
}

#[test]
fn detach_cuts_the_graph() {
    let w = param(&[1.0, 3.0]);
    let h = w.mul_scalar(2.0);
    let d = h.detach();
    assert!(!d.requires_grad());
    assert!(d.is_leaf());
    assert!(d.value().shares_storage(&h.value()), "detach copies nothing");
    // loss = sum(d * w) with d = 2w held constant: dloss/dw = d = 2w (not 4w).
    d.mul(&w).unwrap().sum_all().backward().unwrap();
    assert_eq!(grad(&w), vec![2.0, 6.0]);
    // The detached branch alone depends on no parameter.
    assert!(d.exp().sum_all().backward().is_err());
}

// ─── what is saved ──────────────────────────────────────────────────────────────────────────────

#[test]
fn nothing_is_saved_when_no_input_needs_grad() {
    let c = Var::new(Tensor::<f64>::ones(&[4, 8]));
    let y = c.mul(&c).unwrap().exp().relu().matmul(&c.t().unwrap()).unwrap();
    assert!(!y.requires_grad());
    assert!(y.tape().is_empty());

    // Mixing in a parameter records only the ops downstream of it.
    let w = Var::parameter(Tensor::<f64>::ones(&[4, 8]));
    let z = c.exp().mul(&w).unwrap().sum_all();
    let tape = z.tape();
    let names: Vec<_> = tape.iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["mul", "sum"]);
    assert_eq!(tape[0].saved_bytes, 2 * 32 * 8, "mul saves both inputs");
    assert_eq!(tape[1].saved_bytes, 0, "sum saves only the input shape");
}

#[test]
fn the_tape_lists_ops_in_execution_order_with_shapes_and_saved_bytes() {
    let x = Var::new(Tensor::<f32>::ones(&[4, 2]));
    let w = Var::parameter(Tensor::<f32>::ones(&[2, 3]));
    let h = x.matmul(&w).unwrap(); // saves x [4, 2] and w [2, 3]
    let r = h.relu(); // saves its output [4, 3]
    let e = r.exp(); // saves its output [4, 3]
    let s = e.add(&r).unwrap(); // saves shapes only
    let loss = s.mean_all();
    let tape = loss.tape();
    let listed: Vec<(&str, Vec<usize>, usize)> =
        tape.iter().map(|e| (e.name, e.shape.clone(), e.saved_bytes)).collect();
    assert_eq!(
        listed,
        vec![
            ("matmul", vec![4, 3], (8 + 6) * 4),
            ("relu", vec![4, 3], 12 * 4),
            ("exp", vec![4, 3], 12 * 4),
            ("add", vec![4, 3], 0),
            ("mean", vec![], 0),
        ]
    );
    assert!(tape.windows(2).all(|p| p[0].id < p[1].id), "execution order");
    assert!(tape.iter().all(|e| e.dropout.is_none()));

    // After a backward the freed ops hold nothing; the inputs are released, so only the output's
    // own entry is still reachable from it.
    loss.backward().unwrap();
    let after = loss.tape();
    assert_eq!(after.len(), 1);
    assert_eq!((after[0].name, after[0].saved_bytes), ("mean", 0));
}

// ─── anomaly detection ──────────────────────────────────────────────────────────────────────────

#[test]
fn anomaly_detection_names_the_first_op_with_a_non_finite_gradient() {
    assert!(!is_anomaly_enabled(), "off by default");
    detect_anomaly(true);
    // sqrt at 0: d sqrt(x)/dx = 1 / (2 sqrt x) = inf.
    let x = param(&[0.0, 1.0]);
    let err = x.sqrt().mul_scalar(3.0).sum_all().backward().unwrap_err();
    assert_eq!(err, Error::Anomaly { op: "sqrt", input: 0, what: "an infinite value" });
    assert!(err.to_string().contains("sqrt"), "{err}");

    // sqrt then log at 0: in backward order log's gradient (1/0) is the first to go infinite.
    let x = param(&[0.0]);
    let err = x.sqrt().log().sum_all().backward().unwrap_err();
    assert!(matches!(err, Error::Anomaly { op: "log", .. }), "{err}");

    // sqrt of a negative number: NaN.
    let x = param(&[-1.0]);
    let err = x.sqrt().sum_all().backward().unwrap_err();
    assert_eq!(err, Error::Anomaly { op: "sqrt", input: 0, what: "NaN" });

    // A finite graph passes.
    let x = param(&[4.0]);
    x.sqrt().sum_all().backward().unwrap();
    assert_eq!(grad(&x), vec![0.25]);
    detect_anomaly(false);
}

#[test]
fn without_anomaly_detection_a_non_finite_gradient_passes() {
    assert!(!is_anomaly_enabled());
    let x = param(&[0.0, 1.0]);
    x.sqrt().sum_all().backward().unwrap();
    let g = grad(&x);
    assert!(g[0].is_infinite());
    assert_eq!(g[1], 0.5);
}

// ─── memory ─────────────────────────────────────────────────────────────────────────────────────

#[test]
fn backward_releases_saved_tensors() {
    let w = param(&[1.0, 2.0, 3.0]);
    // A constant made only for this graph: after we drop our handle, only mul's saved copy holds it.
    let c = Var::new(tensor(&[4.0, 5.0, 6.0], &[3]));
    let weak = c.value().storage().downgrade();
    let loss = w.mul(&c).unwrap().sum_all();
    drop(c);
    assert!(weak.upgrade().is_some(), "the graph holds the saved input before backward");
    loss.backward().unwrap();
    assert!(weak.upgrade().is_none(), "backward released the saved input while `loss` is alive");
    assert_eq!(grad(&w), vec![4.0, 5.0, 6.0]);
    drop(loss);
}

#[test]
fn backward_retain_keeps_saved_tensors_while_the_graph_lives() {
    let w = param(&[1.0, 2.0, 3.0]);
    let c = Var::new(tensor(&[4.0, 5.0, 6.0], &[3]));
    let weak = c.value().storage().downgrade();
    let loss = w.mul(&c).unwrap().sum_all();
    drop(c);
    loss.backward_retain().unwrap();
    assert!(weak.upgrade().is_some(), "a retained graph keeps its saved tensors");
    drop(loss);
    assert!(weak.upgrade().is_none(), "dropping the retained graph frees them");
}

#[test]
fn a_graph_dropped_without_backward_frees_its_entries() {
    let w = param(&[1.0, 2.0]);
    let c = Var::new(tensor(&[3.0, 4.0], &[2]));
    let weak_c = c.value().storage().downgrade();
    let h = w.mul(&c).unwrap();
    let weak_h = h.value().storage().downgrade(); // relu's input; exp saves its own output
    let loss = h.relu().exp().sum_all();
    drop((c, h));
    assert!(weak_c.upgrade().is_some() && weak_h.upgrade().is_some());
    drop(loss);
    assert!(weak_c.upgrade().is_none(), "the saved constant outlived its graph");
    assert!(weak_h.upgrade().is_none(), "an intermediate outlived its graph");
    // The parameter itself is untouched.
    assert_eq!(w.value().to_vec(), vec![1.0, 2.0]);
    assert!(w.grad().is_none());
}

#[test]
fn two_independent_graphs_on_one_thread_do_not_interact() {
    let w1 = param(&[1.0, 2.0]);
    let w2 = param(&[10.0, 20.0]);
    // Interleave the two forward passes.
    let a = w1.mul(&w1).unwrap();
    let b = w2.mul_scalar(3.0);
    let loss1 = a.sum_all();
    let loss2 = b.exp().sum_all();
    let saved1 = loss1.tape().iter().map(|e| e.saved_bytes).sum::<usize>();

    loss2.backward().unwrap();
    assert!(w1.grad().is_none(), "backward of graph 2 touched graph 1's parameter");
    assert_eq!(loss1.tape().iter().map(|e| e.saved_bytes).sum::<usize>(), saved1, "graph 1 was freed");
    loss1.backward().unwrap();
    assert_eq!(grad(&w1), vec![2.0, 4.0]);

    // Dropping a graph without backward leaves another graph built on the same parameter intact.
    let w = param(&[1.0, 2.0]);
    let dropped = w.exp().sum_all();
    let kept = w.mul(&w).unwrap().sum_all();
    drop(dropped);
    kept.backward().unwrap();
    assert_eq!(grad(&w), vec![2.0, 4.0]);

    // Two graphs sharing a parameter: the first backward frees its own graph, not the other.
    let w = param(&[1.0, 2.0]);
    let l1 = w.mul(&w).unwrap().sum_all();
    let l2 = w.mul_scalar(5.0).sum_all();
    l1.backward().unwrap();
    l2.backward().unwrap();
    assert_eq!(grad(&w), vec![7.0, 9.0]);
}

// ─── deep graphs ────────────────────────────────────────────────────────────────────────────────

#[test]
fn a_very_deep_chain_drops_without_stack_overflow() {
    let w = param(&[0.0]);
    let mut y = w.clone();
    for _ in 0..200_000 {
        y = y.add_scalar(1.0);
    }
    assert_eq!(y.value().to_vec(), vec![200_000.0]);
    drop(y); // a recursive drop would overflow the test thread's stack here
    assert!(w.grad().is_none());
}

#[test]
fn backward_through_a_long_chain() {
    let w = param(&[1.0, 2.0]);
    let mut y = w.clone();
    for i in 0..20_000 {
        y = if i % 2 == 0 { y.add_scalar(1.0) } else { y.mul_scalar(1.0) };
    }
    let loss = y.mul(&y).unwrap().sum_all();
    loss.backward().unwrap();
    // y = w + 10_000, loss = sum(y^2): dloss/dw = 2 (w + 10_000).
    assert_eq!(grad(&w), vec![20_002.0, 20_004.0]);
    drop(loss);
    drop(y);
}

/// The ops whose backward writes into the incoming gradient's buffer when the tape owns it
/// alone (`Backward::backward_owned`), by name.
type VarOp = fn(&Var<f64>) -> Var<f64>;

fn in_place_ops() -> Vec<(&'static str, VarOp)> {
    let ops: Vec<(&'static str, VarOp)> = vec![
        ("exp", |x| x.exp()),
        ("log", |x| x.abs().add_scalar(0.5).log()),
        ("sqrt", |x| x.abs().add_scalar(0.5).sqrt()),
        ("tanh", |x| x.tanh()),
        ("sigmoid", |x| x.sigmoid()),
        ("relu", |x| x.relu()),
        ("abs", |x| x.abs()),
        ("gelu", |x| x.gelu()),
        ("gelu_tanh", |x| x.gelu_tanh()),
        ("neg", |x| x.neg()),
        ("mul_scalar", |x| x.mul_scalar(-0.75)),
        ("mul, constant right", |x| x.mul(&Var::new(Tensor::<f64>::full(&[40], 1.5))).unwrap()),
        ("mul, constant left", |x| Var::new(Tensor::<f64>::full(&[40], 1.5)).mul(x).unwrap()),
    ];
    ops
}

#[test]
fn a_gradient_written_in_place_equals_the_borrowed_formula_and_never_touches_a_shared_tensor() {
    let values: Vec<f64> = (0..40).map(|i| (i as f64 - 19.5) * 0.37).collect();
    let upstream = tensor(&(0..40).map(|i| 1.0 + (i % 7) as f64 * 0.25).collect::<Vec<_>>(), &[40]);
    for (name, op) in in_place_ops() {
        // Straight from `backward_with`: the tape's gradient shares the caller's `upstream`, so
        // the op must not write into it (the borrowed formula runs).
        let x = param(&values);
        op(&x).backward_with(&upstream, false).unwrap();
        let borrowed = grad(&x);
        // Behind `mul_scalar(1.0)` (whose result is a fresh buffer only the tape holds): the op
        // writes in place. `g * 1.0 == g` exactly, so both must agree to the bit.
        let x = param(&values);
        op(&x).mul_scalar(1.0).backward_with(&upstream, false).unwrap();
        assert_eq!(grad(&x), borrowed, "{name}");
        assert_eq!(upstream.to_vec(), (0..40).map(|i| 1.0 + (i % 7) as f64 * 0.25).collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn views_and_products_to_overflowing_shapes_are_errors_that_record_nothing() {
    // In a release build `expand` used to accept this, and its element count wrapped to 0.
    let x = Var::parameter(Tensor::<f64>::ones(&[1, 1]));
    let err = x.expand(&[1 << 32, 1 << 32]).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "expand", .. }), "{err:?}");
    assert_eq!(err.to_string(), "expand: shape [4294967296, 4294967296]: the number of elements overflows usize");
    // A valid broadcast whose product with another is too large.
    let col = x.expand(&[1 << 40, 1]).unwrap();
    let row = x.expand(&[1, 1 << 40]).unwrap();
    let err = col.add(&row).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "add", .. }), "{err:?}");
    let err = col.matmul(&row).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "matmul", .. }), "{err:?}");
    assert!(x.reshape(&[0, 1 << 40, 1 << 40]).is_err());
    // The failed ops recorded nothing that gets in the way: a backward through a small view works.
    x.expand(&[2, 3]).unwrap().sum_all().backward().unwrap();
    assert_eq!(grad(&x), vec![6.0]);
}
