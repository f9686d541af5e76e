//! `DropConnect`: a mask per weight (one bit each, a new one per call), replayable from a
//! restored generator, the identity of `Linear` in eval, `p = 1` leaving the bias, a bad `p`
//! refused, `Linear`'s parameter names, and a gradcheck.

use proptest::prelude::*;
use tapegrad_autograd::{dropout, fused, gradcheck, Var};
use tapegrad_nn::dtype::*;
use tapegrad_nn::{DropConnect, Error, Linear, Module, Result};
use tapegrad_tensor::{Generator, Tensor};

fn layer(p: f64, seed: u64) -> DropConnect<f64> {
    DropConnect::<f64>::new(6, 4, p, &mut Generator::new(0)).map(|l| l.with_generator(Generator::new(seed))).unwrap()
}

fn input() -> Var<f64> {
    Var::new(Tensor::<f64>::randn(&[5, 6], &mut Generator::new(9)))
}

#[test]
fn the_mask_is_per_weight_and_matches_dropout_of_the_weight() -> Result<()> {
    let fc = layer(0.5, 3);
    let x = input();
    let y = fc.forward(&x)?;
    let records: Vec<_> = y.tape().into_iter().filter_map(|e| e.dropout).collect();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    // One bit per weight, 24 weights: one 64-bit word.
    assert_eq!((record.numel, record.mask_bytes()), (24, 8));
    assert!((1..24).contains(&record.kept_count()), "{}", record.kept_count());
    // Exactly the dropout of the weight Var with the layer's generator, then the linear map.
    let w = dropout(&fc.weight, 0.5, &mut Generator::new(3))?;
    let expect = fused::linear(&x, &w, fc.bias.as_ref())?;
    assert_eq!(y.value().to_vec(), expect.value().to_vec());
    // Each output unit sees its own dropped weights: rows of the mask differ (not one mask per
    // input feature or per output unit).
    let rows: Vec<Vec<bool>> = (0..4).map(|o| (0..6).map(|i| record.kept(o * 6 + i)).collect()).collect();
    assert!(rows.windows(2).any(|r| r[0] != r[1]));
    // A new mask at the next call.
    let again = fc.forward(&x)?.tape().into_iter().find_map(|e| e.dropout).map(|r| r.offset);
    assert_eq!(again, Some(record.offset + 32)); // 24 words, rounded up to whole 16-word blocks
    Ok(())
}

#[test]
fn masks_replay_from_a_restored_generator() -> Result<()> {
    let fc = layer(0.3, 11);
    let x = input();
    let saved = fc.generator();
    let first = fc.forward(&x)?.value().to_vec();
    let second = fc.forward(&x)?.value().to_vec();
    assert_ne!(first, second);
    fc.set_generator(saved);
    assert_eq!(fc.forward(&x)?.value().to_vec(), first);
    assert_eq!(fc.forward(&x)?.value().to_vec(), second);
    Ok(())
}

#[test]
fn eval_is_the_linear_layer_and_p_one_leaves_the_bias() -> Result<()> {
    let mut fc = layer(0.5, 1);
    let x = input();
    fc.eval();
    assert!(!fc.is_active());
    let plain = Linear::from_tensors(fc.weight.value(), fc.bias.as_ref().map(Var::value))?;
    assert_eq!(fc.forward(&x)?.value().to_vec(), plain.forward(&x)?.value().to_vec());
    assert!(fc.forward(&x)?.tape().iter().all(|e| e.dropout.is_none()));
    // p = 1: every weight dropped, the bias alone, and zero weight gradients.
    fc.train();
    fc.set_p(1.0)?;
    let y = fc.forward(&x)?;
    let bias = fc.bias.as_ref().map(Var::value).map(|b| b.to_vec()).unwrap_or_default();
    for row in y.value().to_vec().chunks(4) {
        assert_eq!(row, bias.as_slice());
    }
    y.sum_all().backward()?;
    assert!(fc.weight.grad().is_some_and(|g| g.to_vec().iter().all(|&v| v == 0.0)));
    assert_eq!(fc.bias.as_ref().and_then(Var::grad).map(|g| g.to_vec()), Some(vec![5.0; 4]));
    Ok(())
}

#[test]
fn a_bad_p_is_refused_and_names_are_linears() -> Result<()> {
    for p in [-0.1, 1.5, f64::NAN] {
        let err = DropConnect::new(3, 2, p, &mut Generator::new(0)).err().expect("a bad p is an error");
        assert!(matches!(err, Error::InvalidArgument { op: "dropout", .. }), "{err}");
    }
    let mut fc = DropConnect::new(3, 2, 0.5, &mut Generator::new(0))?;
    assert!(fc.set_p(2.0).is_err());
    assert_eq!(fc.p(), 0.5);
    fc.set_p(0.25)?;
    assert_eq!(fc.p(), 0.25);
    let names: Vec<String> = fc.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight", "bias"]);
    // Same initialisation as Linear from the same generator.
    let lin = Linear::new(3, 2, &mut Generator::new(0));
    assert_eq!(fc.weight.value().to_vec(), lin.weight.value().to_vec());
    assert_eq!(fc.to_string(), "DropConnect(in_features=3, out_features=2, bias=True, p=0.25)");
    // A wrong width is a shape error, also in eval.
    assert!(fc.forward(&Var::new(Tensor::<f32>::ones(&[2, 4]))).is_err());
    fc.eval();
    assert!(fc.forward(&Var::new(Tensor::<f32>::ones(&[2, 4]))).is_err());
    // Leading dims: [2, 3, in] → [2, 3, out].
    assert_eq!(fc.forward(&Var::new(Tensor::<f32>::ones(&[2, 3, 3])))?.shape(), vec![2, 3, 2]);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The gradients of x, W and b through DropConnect in f64, with the layer's mask (a fixed
    /// generator seed, so every evaluation draws the same mask).
    #[test]
    fn grad_drop_connect(rows in 1usize..4, inp in 1usize..5, out in 1usize..4, seed in any::<u64>(), p in 0.0f64..0.9) {
        let mut gen = Generator::new(seed);
        let x = Tensor::<f64>::randn(&[rows, inp], &mut gen);
        let w = Tensor::<f64>::randn(&[out, inp], &mut gen);
        let b = Tensor::<f64>::randn(&[out], &mut gen);
        gradcheck(
            |v| {
                let mut fc = DropConnect::from_linear(Linear::from_tensors(v[1].value(), Some(v[2].value()))?, p)?
                    .with_generator(Generator::new(seed));
                // The layer's parameters are new leaves: put the checked ones in their place.
                fc.weight = v[1].clone();
                fc.bias = Some(v[2].clone());
                fc.forward(&v[0])
            },
            &[x, w, b],
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}
