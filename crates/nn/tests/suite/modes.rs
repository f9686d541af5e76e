//! Modes: `train()` / `eval()` / `mc_dropout()` reach every nested module of a derived model
//! (through `Vec`, `Option` and nested structs), eval-mode dropout is the identity (the same
//! node, nothing recorded), Monte Carlo dropout samples while BatchNorm stays in eval, and
//! `mc_predict` returns a mean and a variance.

use tapegrad_nn::dtype::*;
use tapegrad_nn::{mc_predict, BatchNorm1d, Dropout, Linear, Mode, Module, Result, Var, Visit};
use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Float, Generator, Tensor};

/// Third level: a dropout inside a struct inside a block inside a `Vec`.
#[derive(tapegrad_nn::Module)]
struct Inner {
    drop: Dropout,
}

#[derive(tapegrad_nn::Module)]
struct Block {
    fc: Linear,
    drop: Option<Dropout>,
    inner: Inner,
}

#[derive(tapegrad_nn::Module)]
struct Model {
    layers: Vec<Block>,
    bn: BatchNorm1d,
    head: Linear,
    #[module(skip)]
    width: usize,
}

impl Module for Model {
    fn forward(&self, x: &Var) -> Result<Var> {
        let mut h = x.clone();
        for block in &self.layers {
            h = block.fc.forward(&h)?.relu();
            if let Some(drop) = &block.drop {
                h = drop.forward(&h)?;
            }
            h = block.inner.drop.forward(&h)?;
        }
        self.head.forward(&self.bn.forward(&h)?)
    }
}

fn model(gen: &mut Generator) -> Model {
    let width = 6;
    let block = |drop: bool, gen: &mut Generator| Block {
        fc: Linear::new(width, width, gen),
        drop: if drop { Some(Dropout::new(0.5).unwrap()) } else { None },
        inner: Inner { drop: Dropout::new(0.25).unwrap() },
    };
    Model {
        layers: vec![block(true, gen), block(false, gen), block(true, gen)],
        bn: BatchNorm1d::new(width),
        head: Linear::new(width, 2, gen),
        width,
    }
}

fn modes<T: Float>(m: &impl Visit<T>) -> Vec<Mode> {
    let mut out = vec![];
    m.visit_modes(&mut |mode| out.push(mode));
    out
}

#[test]
fn train_and_eval_reach_every_nested_module() {
    let mut m = model(&mut Generator::new(0));
    // 2 optional dropouts + 3 inner dropouts + the BatchNorm.
    assert_eq!(modes(&m).len(), 6);
    assert!(m.is_training() && modes(&m).iter().all(|mode| mode.training));
    m.eval();
    assert!(!m.is_training());
    assert!(modes(&m).iter().all(|mode| !mode.training && !mode.dropout_active()));
    for block in &m.layers {
        assert!(!block.inner.drop.is_active(), "three levels deep");
        assert!(block.drop.as_ref().is_none_or(|d| !d.is_active()), "inside the Option");
    }
    m.train();
    assert!(m.is_training());
    assert!(modes(&m).iter().all(|mode| mode.training && mode.dropout_active()));
    assert!(m.layers.iter().all(|b| b.inner.drop.is_active()));
    assert!(m.layers[2].drop.as_ref().unwrap().is_active());
    assert_eq!(m.width, 6);
}

#[test]
fn named_parameters_use_dotted_paths_with_vec_indices() {
    let m = model(&mut Generator::new(0));
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "layers.0.fc.weight",
            "layers.0.fc.bias",
            "layers.1.fc.weight",
            "layers.1.fc.bias",
            "layers.2.fc.weight",
            "layers.2.fc.bias",
            "bn.weight",
            "bn.bias",
            "head.weight",
            "head.bias"
        ]
    );
    let buffers: Vec<String> = m.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(buffers, ["bn.running_mean", "bn.running_var"]);
    assert_eq!(m.parameters().len(), 10);

    #[derive(tapegrad_nn::Module)]
    struct Stack {
        layers: Vec<Linear>,
    }
    impl Module for Stack {
        fn forward(&self, x: &Var) -> Result<Var> {
            self.layers.iter().try_fold(x.clone(), |h, l| l.forward(&h))
        }
    }
    let mut gen = Generator::new(1);
    let s = Stack { layers: vec![Linear::new(2, 3, &mut gen), Linear::new(3, 1, &mut gen)] };
    let names: Vec<String> = s.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]);
}

#[test]
fn eval_dropout_is_the_input_itself() -> Result<()> {
    let mut drop: Dropout = Dropout::new(0.5)?;
    let x = Var::parameter(Tensor::ones(&[4, 8]));
    let y = drop.forward(&x)?;
    assert!(!y.same_node(&x) && y.tape().iter().any(|e| e.name == "dropout"), "training samples");
    drop.eval();
    let y = drop.forward(&x)?;
    assert!(y.same_node(&x));
    assert!(y.value().shares_storage(&x.value()));
    assert!(y.tape().is_empty(), "nothing recorded");

    // Through a whole model: no dropout entry on the tape in eval mode.
    let mut m = model(&mut Generator::new(0));
    m.eval();
    let out = m.forward(&Var::new(Tensor::ones(&[4, 6])))?;
    assert!(!out.tape().is_empty());
    assert!(out.tape().iter().all(|e| e.name != "dropout"));
    m.train();
    let out = m.forward(&Var::new(Tensor::ones(&[4, 6])))?;
    assert_eq!(out.tape().iter().filter(|e| e.name == "dropout").count(), 5);
    Ok(())
}

/// A BatchNorm followed by a dropout, to see both at once (generic in the element type, so
/// the derived `Display` prints it in f64 too).
#[derive(tapegrad_nn::Module)]
struct BnDrop<T: Float = f32> {
    bn: BatchNorm1d<T>,
    drop: Dropout<T>,
}

impl<T: Float> Module<T> for BnDrop<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        self.drop.forward(&self.bn.forward(x)?)
    }
}

fn bn_drop() -> Result<(BnDrop<f64>, Var<f64>, Vec<f64>)> {
    let m =
        BnDrop { bn: BatchNorm1d::<f64>::new(3), drop: Dropout::<f64>::new(0.5)?.with_generator(Generator::new(9)) };
    m.bn.running_mean().set_value(Tensor::from_vec(vec![1.0, -2.0, 0.5], &[3])?);
    m.bn.running_var().set_value(Tensor::from_vec(vec![4.0, 0.25, 1.0], &[3])?);
    let x = Var::new(Tensor::<f64>::randn(&[8, 3], &mut Generator::new(3)));
    // What BatchNorm gives in eval: (x - running_mean) / √(running_var + eps).
    let (rm, rv) = ([1.0, -2.0, 0.5], [4.0, 0.25, 1.0]);
    let expected =
        x.value().to_vec().iter().enumerate().map(|(i, v)| (v - rm[i % 3]) / (rv[i % 3] + 1e-5f64).sqrt()).collect();
    Ok((m, x, expected))
}

#[test]
fn mc_dropout_samples_while_batch_norm_stays_in_eval() -> Result<()> {
    let (mut m, x, expected) = bn_drop()?;
    m.eval();
    m.mc_dropout(true);
    assert!(m.drop.is_active());
    let bn_modes = modes(&m.bn);
    assert!(bn_modes.iter().all(|mode| !mode.training), "BatchNorm stays in eval");
    let before = (m.bn.running_mean().value().to_vec(), m.bn.running_var().value().to_vec());

    let a = m.forward(&x)?.value().to_vec();
    let b = m.forward(&x)?.value().to_vec();
    assert_ne!(a, b, "dropout samples a fresh mask each pass");
    for y in [&a, &b] {
        let (mut kept, mut dropped) = (0, 0);
        for (v, e) in y.iter().zip(&expected) {
            if *v == 0.0 {
                dropped += 1;
            } else {
                // Running statistics used, and the kept values scaled by 1 / (1 - p).
                assert!((v - 2.0 * e).abs() < 1e-12, "{v} vs {}", 2.0 * e);
                kept += 1;
            }
        }
        assert!(kept > 0 && dropped > 0);
    }
    assert_eq!(m.bn.running_mean().value().to_vec(), before.0, "running stats not updated");
    assert_eq!(m.bn.running_var().value().to_vec(), before.1);

    m.mc_dropout(false);
    let c = m.forward(&x)?.value().to_vec();
    assert!(c.iter().zip(&expected).all(|(v, e)| (v - e).abs() < 1e-12), "plain eval: the identity dropout");
    Ok(())
}

#[test]
fn eval_switches_mc_dropout_off() -> Result<()> {
    let (mut m, x, expected) = bn_drop()?;
    m.eval();
    m.mc_dropout(true);
    assert!(m.drop.is_active());
    // A later eval() is the deterministic network again, as documented.
    m.eval();
    assert!(!m.drop.is_active());
    assert!(modes(&m).iter().all(|mode| !mode.training && !mode.mc_dropout && !mode.dropout_active()));
    let a = m.forward(&x)?.value().to_vec();
    let b = m.forward(&x)?.value().to_vec();
    assert_eq!(a, b, "eval() does not sample");
    assert!(a.iter().zip(&expected).all(|(v, e)| (v - e).abs() < 1e-12));
    // Switching MC dropout on after eval() still works.
    m.mc_dropout(true);
    assert_ne!(m.forward(&x)?.value().to_vec(), a);
    Ok(())
}

#[test]
fn mc_predict_returns_mean_and_variance() -> Result<()> {
    let (mut m, x, expected) = bn_drop()?;
    m.eval();
    let err = mc_predict(&m, &x, 0).unwrap_err().to_string();
    assert!(err.contains("mc_predict") && err.contains("samples"), "{err}");

    // Plain eval mode is enough: mc_predict makes the dropout layer sample by itself.
    let (mean, var) = mc_predict(&m, &x, 4000)?;
    assert_eq!(mean.shape(), &[8, 3]);
    assert_eq!(var.shape(), &[8, 3]);
    // Inverted dropout is unbiased: the mean tends to the eval output; each element is 0 or
    // 2e with probability 1/2, so its variance tends to e².
    for ((m, v), e) in mean.to_vec().iter().zip(var.to_vec()).zip(&expected) {
        assert!((m - e).abs() < 0.1 * (1.0 + e.abs()), "mean {m} vs {e}");
        assert!(v > 0.0 || e.abs() < 1e-12);
        assert!((v - e * e).abs() < 0.15 * (1.0 + e * e), "variance {v} vs {}", e * e);
    }
    assert_eq!(m.bn.running_mean().value().to_vec(), vec![1.0, -2.0, 0.5], "BatchNorm untouched");
    assert_eq!(m.bn.running_var().value().to_vec(), vec![4.0, 0.25, 1.0]);
    // The sampling ends with mc_predict: the model is the deterministic eval network again.
    assert!(!m.drop.is_active());
    let y = m.forward(&x)?.value().to_vec();
    assert!(y.iter().zip(&expected).all(|(v, e)| (v - e).abs() < 1e-12));

    // With MC dropout switched on as well: the same.
    m.mc_dropout(true);
    let (mean2, _) = mc_predict(&m, &x, 10)?;
    assert_eq!(mean2.shape(), &[8, 3]);
    Ok(())
}

#[test]
fn mc_predict_samples_only_dropout_layers() -> Result<()> {
    // Training mode would make BatchNorm use batch statistics and update its running ones:
    // an Err that says to call eval(), and the statistics are untouched.
    let (mut m, x, _) = bn_drop()?;
    m.train();
    for mc in [false, true] {
        m.mc_dropout(mc);
        let err = mc_predict(&m, &x, 5).unwrap_err().to_string();
        assert!(err.contains("mc_predict") && err.contains("eval()"), "{err}");
        assert!(!err.contains("train()"), "must not suggest what corrupts BatchNorm: {err}");
    }
    assert_eq!(m.bn.running_mean().value().to_vec(), vec![1.0, -2.0, 0.5]);
    assert_eq!(m.bn.running_var().value().to_vec(), vec![4.0, 0.25, 1.0]);

    // A model whose only mode-keeping layer is a BatchNorm has nothing to sample, in either mode.
    let mut bn = BatchNorm1d::<f64>::new(3);
    for train in [true, false] {
        if train {
            bn.train();
        } else {
            bn.eval();
        }
        bn.mc_dropout(true);
        let err = mc_predict(&bn, &x, 5).unwrap_err().to_string();
        assert!(err.contains("mc_predict") && !err.contains("train()"), "{err}");
    }
    assert_eq!(bn.running_mean().value().to_vec(), vec![0.0; 3], "not updated");
    bn.eval();
    assert!(mc_predict(&bn, &x, 5).unwrap_err().to_string().contains("no dropout layer"));

    // The nested model: dropout deep inside Vec / Option / struct, a BatchNorm, all in eval.
    let mut deep = model(&mut Generator::new(0));
    deep.eval();
    let x6 = Var::new(Tensor::<f32>::randn(&[16, 6], &mut Generator::new(5)));
    let stats = (deep.bn.running_mean().value().to_vec(), deep.bn.running_var().value().to_vec());
    let (_, var) = mc_predict(&deep, &x6, 20)?;
    assert!(var.to_vec().iter().any(|&v| v > 0.0), "the nested dropout layers sampled");
    assert_eq!((deep.bn.running_mean().value().to_vec(), deep.bn.running_var().value().to_vec()), stats);
    Ok(())
}

#[test]
fn dropout_layers_say_they_are_dropout() -> Result<()> {
    let m = model(&mut Generator::new(0));
    let kinds: Vec<bool> = modes(&m).iter().map(|mode| mode.is_dropout).collect();
    // Five dropouts, then the BatchNorm.
    assert_eq!(kinds, [true, true, true, true, true, false]);
    assert_eq!(Mode::default(), Mode { training: true, mc_dropout: false, is_dropout: false });
    assert_eq!(Mode::dropout(), Mode { is_dropout: true, ..Mode::default() });
    Ok(())
}

#[test]
fn display_of_a_derived_model() {
    let m = model(&mut Generator::new(0));
    assert_eq!(
        m.to_string(),
        "Model(
  (layers): ModuleList(
    (0): Block(
      (fc): Linear(in_features=6, out_features=6, bias=True)
      (drop): Dropout(p=0.5)
      (inner): Inner(
        (drop): Dropout(p=0.25)
      )
    )
    (1): Block(
      (fc): Linear(in_features=6, out_features=6, bias=True)
      (drop): None
      (inner): Inner(
        (drop): Dropout(p=0.25)
      )
    )
    (2): Block(
      (fc): Linear(in_features=6, out_features=6, bias=True)
      (drop): Dropout(p=0.5)
      (inner): Inner(
        (drop): Dropout(p=0.25)
      )
    )
  )
  (bn): BatchNorm1d(6, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
  (head): Linear(in_features=6, out_features=2, bias=True)
)"
    );
}
