//! Gradient hooks: reading, replacing and removing them, their order, on parameters and
//! intermediates, through `grad`; and `retain_grad` on intermediate values.

use std::sync::{Arc, Mutex};

use tapegrad_autograd::{grad, GradOptions, Result, Tensor, Var};

fn t(v: &[f32]) -> Tensor<f32> {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

#[test]
fn a_hook_reads_the_total_gradient_of_an_intermediate() -> Result<()> {
    let x = Var::parameter(t(&[1.0, 2.0]));
    let h = x.mul_scalar(2.0);
    let seen = Arc::new(Mutex::new(vec![]));
    let log = Arc::clone(&seen);
    let handle = h.register_hook(move |g| {
        log.lock().unwrap().push(g.to_vec());
        None
    });
    // h fans out: the hook sees the sum of both uses, once.
    h.mul(&h)?.add(&h)?.sum_all().backward()?;
    assert_eq!(*seen.lock().unwrap(), vec![vec![5.0, 9.0]]); // 2h + 1
    assert_eq!(x.grad().unwrap().to_vec(), vec![10.0, 18.0]);
    handle.remove();
    Ok(())
}

#[test]
fn a_hook_replaces_the_gradient_and_removing_it_restores_the_plain_one() -> Result<()> {
    let x = Var::parameter(t(&[1.0, -1.0]));
    let h = x.tanh();
    let handle = h.register_hook(|g| Some(g.mul_scalar(0.0).add_scalar(1.0)));
    h.mul_scalar(3.0).sum_all().backward_retain()?;
    let dtanh: Vec<f32> = [1.0f32, -1.0].iter().map(|v| 1.0 - v.tanh().powi(2)).collect();
    assert_eq!(x.grad().unwrap().to_vec(), dtanh); // dL/dh replaced by ones
    x.zero_grad();
    handle.remove();
    let y = h.mul_scalar(3.0).sum_all();
    y.backward()?;
    let want: Vec<f32> = dtanh.iter().map(|d| 3.0 * d).collect();
    assert_eq!(x.grad().unwrap().to_vec(), want);
    Ok(())
}

#[test]
fn hooks_run_in_order_on_parameters_and_through_grad() -> Result<()> {
    let w = Var::parameter(t(&[1.0, 2.0]));
    let _a = w.register_hook(|g| Some(g.add_scalar(1.0)));
    let _b = w.register_hook(|g| Some(g.mul_scalar(10.0)));
    w.mul(&w)?.sum_all().backward()?;
    // (2w + 1) · 10, not 2w · 10 + 1.
    assert_eq!(w.grad().unwrap().to_vec(), vec![30.0, 50.0]);
    let y = w.mul(&w)?.sum_all();
    let g = grad(&[&y], &[&w], None, GradOptions::default())?;
    assert_eq!(g[0].as_ref().unwrap().value().to_vec(), vec![30.0, 50.0]);
    Ok(())
}

#[test]
fn retain_grad_keeps_an_intermediate_gradient() -> Result<()> {
    let x = Var::parameter(t(&[1.0, 2.0]));
    let h = x.mul_scalar(3.0);
    let unretained = x.mul_scalar(2.0);
    h.retain_grad();
    h.mul(&h)?.add(&unretained)?.sum_all().backward()?;
    assert_eq!(h.grad().unwrap().to_vec(), vec![6.0, 12.0]);
    assert!(unretained.grad().is_none());
    // It accumulates, as a parameter's gradient does.
    let h2 = x.mul_scalar(3.0);
    h2.retain_grad();
    let y = h2.sum_all();
    y.backward_retain()?;
    y.backward()?;
    assert_eq!(h2.grad().unwrap().to_vec(), vec![2.0, 2.0]);
    Ok(())
}

#[test]
fn a_parameter_hook_runs_as_soon_as_its_gradient_is_final() -> Result<()> {
    // Both parameters are made before any op, so in id order their turn comes after every op's
    // backward. `p`'s last use is the op made last: its hook must run before the backward of
    // the op made first (seen through the hook on that op's output, `y`), with the same
    // gradient as at the end of the walk.
    let (p, q) = (Var::parameter(t(&[1.0, 2.0])), Var::parameter(t(&[3.0, 4.0])));
    let y = q.mul_scalar(2.0);
    let z = p.mul(&p)?;
    let order = Arc::new(Mutex::new(vec![]));
    let log = |name: &'static str| {
        let order = Arc::clone(&order);
        move |g: &Tensor<f32>| {
            order.lock().unwrap().push((name, g.to_vec()));
            None
        }
    };
    let handles = [p.register_hook(log("p")), q.register_hook(log("q")), y.register_hook(log("y"))];
    y.add(&z)?.sum_all().backward()?;
    let seen = order.lock().unwrap().clone();
    assert_eq!(seen, [("p", vec![2.0, 4.0]), ("y", vec![1.0, 1.0]), ("q", vec![2.0, 2.0])]);
    assert_eq!(p.grad().unwrap().to_vec(), [2.0, 4.0]);
    assert_eq!(q.grad().unwrap().to_vec(), [2.0, 2.0]);
    for h in handles {
        h.remove();
    }
    Ok(())
}
