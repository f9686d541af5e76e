//! `Sequential` runs a `Conv2d` and the `MaxPool2d` after it (directly, or moved in front of a
//! run of ReLU and Dropout2d) as one fused op, `conv2d_max_pool2d`: the output, the loss, every
//! gradient and the parameters after optimiser steps are the same bits as the layers run one by
//! one in the order `Sequential` ran them before the fusion (the pool in front of the run), in
//! f32 and f64, training (dropout masks from one seed) and eval mode.

use tapegrad_nn::dtype::*;
use tapegrad_nn::loss::cross_entropy;
use tapegrad_nn::optim::{Optimizer, Sgd};
use tapegrad_nn::{Conv2d, Dropout2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential, Var};
use tapegrad_tensor::{Float, Generator, Tensor, TensorNew};

/// A model, its input shape, and the order in which the unfused `Sequential` ran its layers.
struct Case<T: Float> {
    name: &'static str,
    model: Sequential<T>,
    x: [usize; 4],
    order: Vec<usize>,
    fused: usize,
}

fn cases<T: Float>() -> Vec<Case<T>> {
    let gen = &mut Generator::new(5);
    let mut out = vec![];
    let mut add =
        |name, model, x, order: &[usize], fused| out.push(Case { name, model, x, order: order.to_vec(), fused });
    let seq = Sequential::<T>::new;
    add(
        "conv relu pool",
        seq().add(Conv2d::<T>::new(2, 3, 3, 1, 1, gen)).add(ReLU::<T>::new()).add(MaxPool2d::<T>::new(2)),
        [4, 2, 7, 7],
        &[0, 2, 1],
        1,
    );
    add(
        "conv relu dropout2d pool",
        seq()
            .add(Conv2d::<T>::new(2, 4, 3, 1, 1, gen))
            .add(ReLU::<T>::new())
            .add(Dropout2d::<T>::new(0.4).unwrap())
            .add(MaxPool2d::<T>::new(2)),
        [5, 2, 8, 8],
        &[0, 3, 1, 2],
        1,
    );
    add(
        "conv pool, stride 2, no bias",
        seq().add(Conv2d::<T>::new_no_bias(3, 2, 3, 2, 1, gen)).add(MaxPool2d::<T>::new(2)),
        [3, 3, 9, 10],
        &[0, 1],
        1,
    );
    add(
        "conv relu and a pool the fused path does not take",
        seq()
            .add(Conv2d::<T>::new(2, 3, 3, 1, 1, gen))
            .add(ReLU::<T>::new())
            .add(MaxPool2d::<T>::with_options(3, 2, 1)),
        [2, 2, 7, 7],
        &[0, 2, 1],
        1,
    );
    add(
        "the MNIST CNN's layers, smaller",
        seq()
            .add(Conv2d::<T>::new(1, 4, 3, 1, 1, gen))
            .add(ReLU::<T>::new())
            .add(MaxPool2d::<T>::new(2))
            .add(Conv2d::<T>::new(4, 8, 3, 1, 1, gen))
            .add(ReLU::<T>::new())
            .add(Dropout2d::<T>::new(0.1).unwrap())
            .add(MaxPool2d::<T>::new(2))
            .add(Flatten::<T>::new())
            .add(Linear::<T>::new(8 * 3 * 3, 10, gen)),
        [9, 1, 12, 12],
        &[0, 2, 1, 3, 6, 4, 5, 7, 8],
        2,
    );
    out
}

fn bits<T: Float>(t: &Tensor<T>) -> Vec<u64> {
    t.to_vec().iter().map(|v| v.to_f64().to_bits()).collect()
}

/// Output, loss, input and parameter gradients of each of three SGD steps, and the parameters
/// after them; through `Sequential::forward`, or the layers one by one in `order`.
fn steps<T: Float>(case: &mut Case<T>, unfused: bool, train: bool) -> Vec<Vec<u64>> {
    if train {
        case.model.train();
    } else {
        case.model.eval();
    }
    case.model.seed_generators(11);
    let mut opt = Sgd::new(case.model.parameters(), 0.05).momentum(0.9);
    let gen = &mut Generator::new(3);
    let mut seen = vec![];
    for step in 0..3 {
        let x = Var::parameter(Tensor::<T>::randn(&case.x, gen));
        let y = if unfused {
            let mut h = x.clone();
            for &i in &case.order {
                h = case.model.get(i).unwrap().forward(&h).unwrap();
            }
            h
        } else {
            let y = case.model.forward(&x).unwrap();
            let fused = y.tape().iter().filter(|e| e.name == "conv2d_max_pool2d").count();
            assert_eq!(fused, case.fused, "{}: fused ops on the tape", case.name);
            y
        };
        let logits = y.reshape(&[case.x[0], y.value().numel() / case.x[0]]).unwrap();
        let targets: Vec<usize> = (0..case.x[0]).map(|n| (n * 7 + step) % logits.shape()[1]).collect();
        let loss = cross_entropy(&logits, &targets).unwrap();
        opt.zero_grad();
        loss.backward().unwrap();
        seen.extend([bits(&y.value()), bits(&loss.value()), bits(&x.grad().unwrap())]);
        seen.extend(case.model.parameters().iter().map(|p| bits(&p.grad().unwrap())));
        opt.step().unwrap();
        seen.extend(case.model.parameters().iter().map(|p| bits(&p.value())));
    }
    seen
}

fn fused_matches_unfused<T: Float>() {
    for train in [true, false] {
        for (mut fused, mut plain) in cases::<T>().into_iter().zip(cases::<T>()) {
            let (got, want) = (steps(&mut fused, false, train), steps(&mut plain, true, train));
            assert_eq!(got.len(), want.len());
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{} (train {train}): value {k} differs", fused.name);
            }
        }
    }
}

#[test]
fn sequential_fuses_conv2d_and_max_pool2d_with_the_same_bits_f32() {
    fused_matches_unfused::<f32>();
}

#[test]
fn sequential_fuses_conv2d_and_max_pool2d_with_the_same_bits_f64() {
    fused_matches_unfused::<f64>();
}

/// A convolution's error still names the layer when it runs fused; a pool's names the pool.
#[test]
fn fused_layers_report_their_errors() {
    let gen = &mut Generator::new(1);
    let model: Sequential = Sequential::new().add(Conv2d::new(3, 2, 3, 1, 1, gen)).add(MaxPool2d::new(2));
    let e = model.forward(&Var::new(Tensor::zeros(&[1, 2, 6, 6]))).unwrap_err().to_string();
    assert!(e.starts_with("Conv2d: shape [1, 2, 6, 6]"), "{e}");
    let model: Sequential = Sequential::new().add(Conv2d::new(3, 2, 3, 1, 0, gen)).add(MaxPool2d::new(4));
    let e = model.forward(&Var::new(Tensor::zeros(&[1, 3, 5, 5]))).unwrap_err().to_string();
    assert!(e.starts_with("max_pool2d: shape [1, 2, 3, 3]"), "{e}");
}
