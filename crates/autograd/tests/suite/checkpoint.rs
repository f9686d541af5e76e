//! `checkpoint` (exact recomputation): gradients and generator positions bit-identical to the
//! plain run (an MLP and a transformer-like block with several dropouts, on the default and on
//! explicit generators, nested and in sequence), the segment's graph really dropped, the errors
//! of a segment that computes something else the second time, `no_grad` around and inside, and a
//! gradcheck through a checkpointed segment.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use tapegrad_autograd::{
    checkpoint, default_generator_state, drop_path, dropout, dropout_shared, fused, gaussian_dropout, grad, gradcheck,
    no_grad, set_default_generator_state, Error, Generator, GradOptions, Result, Tensor, Var,
};
use tapegrad_tensor::TensorNew;

fn bits(t: &Tensor<f32>) -> Vec<u32> {
    t.to_vec().into_iter().map(f32::to_bits).collect()
}

fn param(shape: &[usize], seed: u64) -> Var {
    Var::parameter(Tensor::<f32>::randn(shape, &mut Generator::new(seed)).mul_scalar(0.5))
}

/// A segment: `Fn(&[Var]) -> Result<Var>`, shared so that the plain run calls the same code.
type Segment = Arc<dyn Fn(&[Var]) -> Result<Var> + Send + Sync>;

/// The gradients of `params` after `loss(checkpointed?)`'s backward, and of the input `x`.
fn grads_of(params: &[Var], x: &Var, loss: impl FnOnce() -> Result<Var>) -> Result<Vec<Vec<u32>>> {
    params.iter().chain([x]).for_each(Var::zero_grad);
    loss()?.backward()?;
    Ok(params.iter().chain([x]).map(|p| p.grad().map_or_else(Vec::new, |g| bits(&g))).collect())
}

/// A two-layer MLP with dropout after each hidden layer, drawing from the default generator.
fn mlp(params: &[Var]) -> Segment {
    let [w1, b1, w2, b2] = [0, 1, 2, 3].map(|i| params[i].clone());
    Arc::new(move |xs: &[Var]| {
        let h = fused::linear(&xs[0], &w1, Some(&b1))?.relu().dropout(0.3)?;
        let h = fused::linear(&h, &w2, Some(&b2))?.tanh().dropout(0.2)?;
        Ok(h)
    })
}

/// Runs `run` from the default generator state `start`, and returns its result and the state
/// after it; retries when another test thread reseeded the process meanwhile (the stream's seed
/// then changes under us).
fn from_default_state<R>(start: &Generator, run: impl Fn() -> Result<R>) -> Result<(R, Generator)> {
    for _ in 0..5 {
        set_default_generator_state(start.clone())?;
        let out = run()?;
        let end = default_generator_state()?;
        if end.seed() == start.seed() {
            return Ok((out, end));
        }
    }
    Err(Error::arg("test", "the default generator kept being reseeded by other tests"))
}

#[test]
fn mlp_gradients_are_bit_identical_with_the_default_generator() -> Result<()> {
    let params = vec![param(&[16, 12], 1), param(&[16], 2), param(&[8, 16], 3), param(&[8], 4)];
    let x = param(&[5, 12], 5);
    let seg = mlp(&params);
    let start = Generator::new(77);
    let loss = |y: Var| y.mul(&y).map(|y| y.sum_all());
    let (plain, plain_end) =
        from_default_state(&start, || grads_of(&params, &x, || loss(seg(std::slice::from_ref(&x))?)))?;
    let (ckpt, ckpt_end) = from_default_state(&start, || {
        grads_of(&params, &x, || {
            let seg = Arc::clone(&seg);
            loss(checkpoint(move |xs: &[Var]| seg(xs), std::slice::from_ref(&x))?)
        })
    })?;
    assert_eq!(plain, ckpt);
    assert!(plain.iter().all(|g| !g.is_empty()), "every parameter and the input get a gradient");
    // Two draws in the forward pass, none again in backward.
    assert_eq!((plain_end.seed(), plain_end.offset()), (ckpt_end.seed(), ckpt_end.offset()));
    assert!(plain_end.offset() > start.offset());
    Ok(())
}

/// A transformer-like block: attention with dropout on the weights (fused, explicit generator),
/// residual dropout, LayerNorm, a feed-forward block with dropout, a shared-mask dropout,
/// Gaussian dropout and drop path, every draw from `gen`.
fn block(params: &[Var], gen: Arc<Mutex<Generator>>) -> Segment {
    let params = params.to_vec();
    Arc::new(move |xs: &[Var]| {
        let [wq, wk, wv, w1, w2, ln_w, ln_b] = [0, 1, 2, 3, 4, 5, 6].map(|i| &params[i]);
        let mut g = gen.lock().unwrap_or_else(|e| e.into_inner());
        let x = &xs[0]; // [B, L, D]
        let (q, k, v) = (x.matmul(wq)?, x.matmul(wk)?, x.matmul(wv)?);
        let a = fused::scaled_dot_product_attention(&q, &k, &v, None, 0.25, None, &mut g)?;
        let h = x.add(&dropout(&a, 0.1, &mut g)?)?.layer_norm(&[4], Some(ln_w), Some(ln_b), 1e-5)?;
        let ff = dropout_shared(&h.matmul(w1)?.gelu(), 0.3, &[1], &mut g)?;
        let ff = gaussian_dropout(&ff.matmul(w2)?, 0.2, &mut g)?;
        h.add(&drop_path(&ff, 0.5, &mut g)?)
    })
}

fn block_params(seed: u64) -> Vec<Var> {
    let mut p: Vec<Var> = (0..3).map(|i| param(&[4, 4], seed + i)).collect();
    p.push(param(&[4, 8], seed + 3));
    p.push(param(&[8, 4], seed + 4));
    p.push(Var::parameter(Tensor::<f32>::ones(&[4])));
    p.push(Var::parameter(Tensor::<f32>::zeros(&[4])));
    p
}

/// The gradients, and where each generator ended.
type GradsAndEnds = (Vec<Vec<u32>>, Vec<(u64, u64)>);

#[test]
fn transformer_block_gradients_are_bit_identical_with_an_explicit_generator() -> Result<()> {
    let params = block_params(10);
    let x = param(&[3, 5, 4], 20);
    let loss = |y: Var| y.mul(&y).map(|y| y.sum_all());
    // Two blocks in sequence, each with its own generator.
    let run = |checkpointed: bool| -> Result<GradsAndEnds> {
        let gens = [Arc::new(Mutex::new(Generator::new(3))), Arc::new(Mutex::new(Generator::new(4)))];
        let blocks = [block(&params, Arc::clone(&gens[0])), block(&params, Arc::clone(&gens[1]))];
        let grads = grads_of(&params, &x, || {
            let mut h = x.clone();
            for b in &blocks {
                h = if checkpointed {
                    let b = Arc::clone(b);
                    checkpoint(move |xs: &[Var]| b(xs), &[h])?
                } else {
                    b(&[h])?
                };
            }
            loss(h)
        })?;
        let ends = gens.iter().map(|g| g.lock().map(|g| (g.seed(), g.offset())).unwrap_or((0, 0))).collect();
        Ok((grads, ends))
    };
    let (plain, plain_ends) = run(false)?;
    let (ckpt, ckpt_ends) = run(true)?;
    assert_eq!(plain, ckpt);
    assert_eq!(plain_ends, ckpt_ends, "the generators stand where the plain run leaves them");
    assert!(plain_ends.iter().all(|&(_, offset)| offset > 0));
    assert!(plain.iter().all(|g| !g.is_empty()));
    Ok(())
}

#[test]
fn nested_checkpoints_replay_exactly() -> Result<()> {
    let params = vec![param(&[16, 12], 31), param(&[16], 32), param(&[8, 16], 33), param(&[8], 34)];
    let x = param(&[5, 12], 35);
    let gen = Arc::new(Mutex::new(Generator::new(9)));
    let inner = {
        let (w, b, gen) = (params[2].clone(), params[3].clone(), Arc::clone(&gen));
        move |xs: &[Var]| {
            let h = fused::linear(&xs[0], &w, Some(&b))?;
            dropout(&h, 0.5, &mut gen.lock().unwrap_or_else(|e| e.into_inner()))
        }
    };
    let inner: Segment = Arc::new(inner);
    let outer = |nested: bool| -> Segment {
        let (w, b, gen, inner) = (params[0].clone(), params[1].clone(), Arc::clone(&gen), Arc::clone(&inner));
        Arc::new(move |xs: &[Var]| {
            let h = fused::linear(&xs[0], &w, Some(&b))?.relu();
            let h = dropout(&h, 0.3, &mut gen.lock().unwrap_or_else(|e| e.into_inner()))?;
            let h = if nested {
                let inner = Arc::clone(&inner);
                checkpoint(move |xs: &[Var]| inner(xs), &[h])?
            } else {
                inner(&[h])?
            };
            dropout(&h.sigmoid(), 0.1, &mut gen.lock().unwrap_or_else(|e| e.into_inner()))
        })
    };
    let loss = |y: Var| Ok(y.sum_all());
    *gen.lock().unwrap() = Generator::new(9);
    let plain = grads_of(&params, &x, || loss(outer(false)(std::slice::from_ref(&x))?))?;
    let plain_end = gen.lock().unwrap().offset();
    *gen.lock().unwrap() = Generator::new(9);
    let seg = outer(true);
    let nested = grads_of(&params, &x, || loss(checkpoint(move |xs: &[Var]| seg(xs), std::slice::from_ref(&x))?))?;
    assert_eq!(plain, nested);
    assert_eq!(gen.lock().unwrap().offset(), plain_end);
    Ok(())
}

#[test]
fn a_captured_intermediate_gets_its_gradient_once() -> Result<()> {
    // The segment captures `h`, an op output made before it: its gradient flows back into
    // `h`'s own graph through the outer walk, once (the replay's walk stops at `h`).
    let (w0, w) = (param(&[4, 4], 101), param(&[4, 4], 102));
    let x = param(&[3, 4], 103);
    let run = |checkpointed: bool| -> Result<Vec<Vec<u32>>> {
        grads_of(&[w0.clone(), w.clone()], &x, || {
            let h = x.matmul(&w0)?.tanh();
            let seg = {
                let (h, w) = (h.clone(), w.clone());
                move |xs: &[Var]| xs[0].matmul(&w)?.mul(&h)?.sigmoid().mul(&h)
            };
            let y =
                if checkpointed { checkpoint(seg, std::slice::from_ref(&x))? } else { seg(std::slice::from_ref(&x))? };
            Ok(y.add(&h)?.sum_all())
        })
    };
    let (plain, ckpt) = (run(false)?, run(true)?);
    assert!(plain.iter().all(|g| !g.is_empty()));
    // Equal up to rounding, not bit for bit: `h`'s gradient from inside the segment is summed
    // before the outer use's is added, another order than the plain walk's.
    for (p, c) in plain.iter().flatten().zip(ckpt.iter().flatten()) {
        let (p, c) = (f32::from_bits(*p), f32::from_bits(*c));
        assert!((p - c).abs() <= 1e-5 * (1.0 + p.abs()), "{p} against {c}");
    }
    // Counted twice, the gradient of `w0` would be far off.
    assert_eq!(plain.iter().map(Vec::len).collect::<Vec<_>>(), ckpt.iter().map(Vec::len).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn the_segment_graph_is_dropped_while_the_output_lives() -> Result<()> {
    let params = vec![param(&[64, 32], 41), param(&[64], 42), param(&[32, 64], 43), param(&[32], 44)];
    let x = param(&[16, 32], 45);
    let seg = mlp(&params);
    let plain = seg(std::slice::from_ref(&x))?;
    let tape = plain.tape();
    let plain_bytes: usize = tape.iter().map(|e| e.saved_bytes).sum();
    assert!(tape.len() >= 6, "{tape:?}");
    let seg2 = Arc::clone(&seg);
    let ckpt = checkpoint(move |xs: &[Var]| seg2(xs), std::slice::from_ref(&x))?;
    let tape = ckpt.tape();
    assert_eq!(tape.iter().map(|e| e.name).collect::<Vec<_>>(), ["checkpoint"]);
    // Only the input is held: 16 x 32 floats, against the hidden activations and masks.
    assert_eq!(tape[0].saved_bytes, 16 * 32 * 4);
    assert!(plain_bytes > 4 * tape[0].saved_bytes, "{plain_bytes}");
    assert_eq!(bits(&plain.value()).len(), bits(&ckpt.value()).len());
    Ok(())
}

#[test]
fn a_replay_that_draws_differently_is_an_error_naming_checkpoint() -> Result<()> {
    let x = param(&[4, 6], 51);
    // One more draw the second time.
    let calls = Arc::new(AtomicUsize::new(0));
    let more = {
        let calls = Arc::clone(&calls);
        move |xs: &[Var]| {
            let y = xs[0].dropout(0.5)?;
            if calls.fetch_add(1, Ordering::Relaxed) > 0 {
                return y.dropout(0.5);
            }
            Ok(y)
        }
    };
    let y = checkpoint(more, std::slice::from_ref(&x))?;
    let err = y.sum_all().backward().unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { op: "checkpoint", .. }), "{err}");
    assert!(err.to_string().contains("more dropout masks"), "{err}");
    // One draw fewer.
    let calls = Arc::new(AtomicUsize::new(0));
    let fewer = {
        let calls = Arc::clone(&calls);
        move |xs: &[Var]| {
            let y = xs[0].exp();
            if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                return y.dropout(0.5);
            }
            Ok(y)
        }
    };
    let err = checkpoint(fewer, std::slice::from_ref(&x))?.sum_all().backward().unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { op: "checkpoint", .. }), "{err}");
    assert!(err.to_string().contains("drew 0 dropout masks, the forward pass 1"), "{err}");
    // Another p.
    let calls = Arc::new(AtomicUsize::new(0));
    let other_p = {
        let calls = Arc::clone(&calls);
        move |xs: &[Var]| xs[0].dropout(if calls.fetch_add(1, Ordering::Relaxed) == 0 { 0.5 } else { 0.25 })
    };
    let err = checkpoint(other_p, std::slice::from_ref(&x))?.sum_all().backward().unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { op: "checkpoint", .. }), "{err}");
    assert!(err.to_string().contains("p = 0.25"), "{err}");
    // The frames were popped: a plain dropout afterwards draws as usual.
    let mut gen = Generator::new(1);
    dropout(&x, 0.5, &mut gen)?;
    assert_eq!(gen.offset(), 32);
    Ok(())
}

#[test]
fn no_grad_around_records_nothing_and_inside_holds_in_both_runs() -> Result<()> {
    let w = param(&[6, 6], 61);
    let x = param(&[3, 6], 62);
    let seg = {
        let w = w.clone();
        move |xs: &[Var]| xs[0].matmul(&w)?.tanh().matmul(&w)
    };
    // Around: f(inputs), nothing recorded.
    let y = no_grad(|| checkpoint(seg.clone(), std::slice::from_ref(&x)))?;
    assert!(!y.requires_grad() && y.tape().is_empty());
    // Inside: the no_grad part is a constant in both runs, as in the plain run.
    let inside = {
        let w = w.clone();
        move |xs: &[Var]| {
            let c = no_grad(|| xs[0].matmul(&w))?;
            xs[0].mul(&c.tanh())?.matmul(&w)
        }
    };
    let plain = grads_of(std::slice::from_ref(&w), &x, || Ok(inside(std::slice::from_ref(&x))?.sum_all()))?;
    let ckpt =
        grads_of(std::slice::from_ref(&w), &x, || Ok(checkpoint(inside.clone(), std::slice::from_ref(&x))?.sum_all()))?;
    assert_eq!(plain, ckpt);
    Ok(())
}

#[test]
fn a_segment_with_nothing_requiring_grad_records_nothing() -> Result<()> {
    let c = Var::new(Tensor::<f32>::ones(&[2, 3]));
    let k = Var::new(Tensor::<f32>::ones(&[3, 3]));
    let seg = {
        let k = k.clone();
        move |xs: &[Var]| xs[0].matmul(&k)?.dropout(0.5)
    };
    let y = checkpoint(seg, std::slice::from_ref(&c))?;
    assert!(!y.requires_grad() && y.tape().is_empty());
    // A constant input with a captured parameter: the parameter gets its gradient (PyTorch's
    // `use_reentrant=False`).
    let w = param(&[3, 3], 71);
    let seg = {
        let w = w.clone();
        move |xs: &[Var]| xs[0].matmul(&w)
    };
    let y = checkpoint(seg, &[c])?;
    assert_eq!(y.tape().len(), 1);
    y.sum_all().backward()?;
    assert_eq!(w.grad().map(|g| g.to_vec()), Some(vec![2.0; 9]));
    Ok(())
}

#[test]
fn a_retained_graph_recomputes_at_each_backward() -> Result<()> {
    let w = param(&[4, 4], 81);
    let x = param(&[2, 4], 82);
    let gen = Arc::new(Mutex::new(Generator::new(5)));
    let seg = {
        let (w, gen) = (w.clone(), Arc::clone(&gen));
        move |xs: &[Var]| dropout(&xs[0].matmul(&w)?, 0.5, &mut gen.lock().unwrap_or_else(|e| e.into_inner()))
    };
    let y = checkpoint(seg, std::slice::from_ref(&x))?.sum_all();
    y.backward_retain()?;
    let once = w.grad().map(|g| g.to_vec()).unwrap_or_default();
    y.backward()?;
    let twice = w.grad().map(|g| g.to_vec()).unwrap_or_default();
    assert_eq!(twice, once.iter().map(|g| 2.0 * g).collect::<Vec<_>>());
    assert_eq!(gen.lock().unwrap().offset(), 16, "one draw, in the forward pass only");
    assert!(y.backward().is_err(), "freed after the non-retaining backward");
    Ok(())
}

#[test]
fn grad_without_create_graph_works_and_double_backward_says_so() -> Result<()> {
    let w = param(&[3, 3], 91);
    let x = param(&[2, 3], 92);
    let seg = {
        let w = w.clone();
        move |xs: &[Var]| Ok(xs[0].matmul(&w)?.tanh())
    };
    let plain = grad(&[&seg(std::slice::from_ref(&x))?.sum_all()], &[&w, &x], None, GradOptions::default())?;
    let y = checkpoint(seg, std::slice::from_ref(&x))?.sum_all();
    let ckpt = grad(&[&y], &[&w, &x], None, GradOptions { retain_graph: true, ..GradOptions::default() })?;
    for (p, c) in plain.iter().zip(&ckpt) {
        assert_eq!(p.as_ref().map(|g| bits(&g.value())), c.as_ref().map(|g| bits(&g.value())));
    }
    assert!(w.grad().is_none(), "grad accumulates nothing");
    let create = GradOptions { create_graph: true, ..GradOptions::default() };
    let err = grad(&[&y], &[&x], None, create).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { op: "checkpoint", reason } if reason.contains("double backward")),
        "{err}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Finite differences through a checkpointed segment (its dropout draws from a generator
    /// made inside the outer function, so every evaluation draws the same mask), with a
    /// parameter captured from outside the segment and a non-trivial upstream gradient.
    #[test]
    fn grad_through_checkpoint(rows in 1usize..4, cols in 1usize..5, seed in any::<u64>()) {
        let mut gen = Generator::new(seed);
        let x = Tensor::<f64>::randn(&[rows, cols], &mut gen);
        let w = Tensor::<f64>::randn(&[cols, 3], &mut gen);
        let b = Tensor::<f64>::randn(&[3], &mut gen);
        gradcheck(
            |v| {
                let (w, b) = (v[1].clone(), v[2].clone());
                let gen = Arc::new(Mutex::new(Generator::new(seed)));
                checkpoint(
                    move |xs: &[Var<f64>]| {
                        let h = xs[0].matmul(&w)?.add(&b)?.tanh();
                        dropout(&h, 0.3, &mut gen.lock().unwrap_or_else(|e| e.into_inner()))?.mul(&xs[1])
                    },
                    &[v[0].clone(), v[0].matmul(&v[1])?],
                )
            },
            &[x, w, b],
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}
