//! The dropout layers as modules: every one validates `p` (at construction and in `set_p`,
//! naming its op), follows `train()` / `eval()` / Monte Carlo mode, applies its op with its own
//! generator, and prints like its PyTorch (or timm) counterpart; `Dropout2d` refuses an
//! ambiguous 3-dim input.

use tapegrad_autograd::Var;
use tapegrad_autograd::{drop_path, dropout_shared, feature_alpha_dropout, gaussian_dropout};
use tapegrad_nn::dtype::*;
use tapegrad_nn::{
    mc_predict, AlphaDropout, DropPath, Dropout, Dropout2d, FeatureAlphaDropout, GaussianDropout, Module, Result,
};
use tapegrad_tensor::{Generator, Tensor};

/// A layer behind the calls this file makes on every dropout layer.
trait Layer: Module<f64> {
    fn p(&self) -> f64;
    fn set_p(&mut self, p: f64) -> Result<()>;
    fn is_active(&self) -> bool;
    fn generator(&self) -> Generator;
    fn set_generator(&self, gen: Generator);
}

macro_rules! layer {
    ($($t:ident),*) => {$(
        impl Layer for $t<f64> {
            fn p(&self) -> f64 { $t::p(self) }
            fn set_p(&mut self, p: f64) -> Result<()> { $t::set_p(self, p) }
            fn is_active(&self) -> bool { $t::is_active(self) }
            fn generator(&self) -> Generator { $t::generator(self) }
            fn set_generator(&self, gen: Generator) { $t::set_generator(self, gen) }
        }
    )*};
}
layer!(Dropout, Dropout2d, AlphaDropout, FeatureAlphaDropout, GaussianDropout, DropPath);

/// Every layer at drop probability `p` with generator seed 5, its op name, and its largest
/// valid `p` (1, or just below it for Gaussian noise).
fn layers(p: f64) -> Vec<(&'static str, Box<dyn Layer>, f64)> {
    let g = || Generator::new(5);
    vec![
        ("dropout", Box::new(Dropout::<f64>::new(p).unwrap().with_generator(g())), 1.0),
        ("dropout_shared", Box::new(Dropout::<f64>::new(p).unwrap().with_shared_dims(&[1]).with_generator(g())), 1.0),
        ("dropout2d", Box::new(Dropout2d::<f64>::new(p).unwrap().with_generator(g())), 1.0),
        ("alpha_dropout", Box::new(AlphaDropout::<f64>::new(p).unwrap().with_generator(g())), 1.0),
        ("feature_alpha_dropout", Box::new(FeatureAlphaDropout::<f64>::new(p).unwrap().with_generator(g())), 1.0),
        ("gaussian_dropout", Box::new(GaussianDropout::<f64>::new(p).unwrap().with_generator(g())), 0.99),
        ("drop_path", Box::new(DropPath::<f64>::new(p).unwrap().with_generator(g())), 1.0),
    ]
}

fn input() -> Var<f64> {
    Var::parameter(Tensor::<f64>::rand(&[4, 6, 3, 3], &mut Generator::new(1)).add_scalar(1.0))
}

#[test]
fn set_p_validates_and_takes_effect() -> Result<()> {
    let x = input();
    for (name, mut layer, max) in layers(0.5) {
        assert_eq!(layer.p(), 0.5);
        let bad: &[f64] = if name == "gaussian_dropout" { &[-0.5, 1.0, 2.0, f64::NAN] } else { &[-0.5, 2.0, f64::NAN] };
        for &p in bad {
            let err = layer.set_p(p).expect_err(name).to_string();
            assert!(err.contains(name), "{name}: {err}");
            assert_eq!(layer.p(), 0.5, "{name}: a refused p leaves the old one");
        }
        // p = 0: the input itself, in training.
        layer.set_p(0.0)?;
        assert!(layer.forward(&x)?.same_node(&x), "{name} at p = 0");
        layer.set_p(max)?;
        assert_eq!(layer.p(), max);
        let y = layer.forward(&x)?.value().to_vec();
        if name == "gaussian_dropout" {
            assert!(y.iter().any(|&v| v < 0.0), "{name}: the noise variance 99 must show");
        } else {
            // p = 1: zeros, whatever the layer.
            assert!(y.iter().all(|&v| v == 0.0), "{name} at p = 1");
        }
    }
    // The constructors validate as set_p does.
    assert!(Dropout::<f64>::new(1.5).err().is_some_and(|e| e.to_string().contains("dropout")));
    assert!(GaussianDropout::<f64>::new(1.0).err().is_some_and(|e| e.to_string().contains("gaussian_dropout")));
    assert!(DropPath::<f64>::new(-0.1).err().is_some_and(|e| e.to_string().contains("drop_path")));
    assert!(FeatureAlphaDropout::<f64>::new(f64::NAN)
        .err()
        .is_some_and(|e| e.to_string().contains("feature_alpha_dropout")));
    Ok(())
}

/// Every layer's generator can be read and given back (what a training checkpoint saves): after
/// restoring it, the layer draws the same mask again; without restoring, a different one.
#[test]
fn every_layer_replays_its_masks_from_a_restored_generator() -> Result<()> {
    let x = input();
    for (name, layer, _) in layers(0.5) {
        let saved = layer.generator();
        let first = layer.forward(&x)?.value().to_vec();
        let second = layer.forward(&x)?.value().to_vec();
        assert_ne!(first, second, "{name}: two draws in a row differ");
        layer.set_generator(saved);
        assert_eq!(layer.forward(&x)?.value().to_vec(), first, "{name}: the restored generator replays");
    }
    Ok(())
}

#[test]
fn eval_is_the_identity_and_mc_dropout_samples() -> Result<()> {
    let x = input();
    for (name, mut layer, _) in layers(0.5) {
        assert!(layer.is_active(), "{name}: a new layer trains");
        assert!(!layer.forward(&x)?.same_node(&x), "{name}: training samples");
        layer.eval();
        assert!(!layer.is_active());
        let y = layer.forward(&x)?;
        assert!(y.same_node(&x), "{name}: eval returns the input itself");
        assert!(y.tape().is_empty() || y.tape().iter().all(|e| e.dropout.is_none()), "{name}: nothing recorded");
        layer.mc_dropout(true);
        assert!(layer.is_active(), "{name}: MC dropout samples in eval");
        let a = layer.forward(&x)?.value().to_vec();
        let b = layer.forward(&x)?.value().to_vec();
        assert_ne!(a, b, "{name}: each MC pass draws afresh");
        layer.eval();
        assert!(layer.forward(&x)?.same_node(&x), "{name}: eval switches MC dropout off");
        layer.train();
        assert!(layer.is_active());
    }
    // mc_predict samples a model made of any of them.
    for (name, mut layer, _) in layers(0.3) {
        layer.eval();
        let (mean, var) = mc_predict(&*layer, &x, 8)?;
        assert_eq!(mean.shape(), &[4, 6, 3, 3], "{name}");
        assert!(var.to_vec().iter().any(|&v| v > 0.0), "{name}: the samples differ");
    }
    Ok(())
}

/// Each layer applies its op with its own generator: the same values as the functional op
/// called with a generator of the same seed.
#[test]
fn layers_apply_their_ops() -> Result<()> {
    let x = input();
    let g = || Generator::new(5);
    let same = |layer: &dyn Module<f64>, want: Var<f64>| -> Result<()> {
        assert_eq!(layer.forward(&x)?.value().to_vec(), want.value().to_vec());
        Ok(())
    };
    same(&GaussianDropout::<f64>::new(0.4)?.with_generator(g()), gaussian_dropout(&x, 0.4, &mut g())?)?;
    same(&DropPath::<f64>::new(0.4)?.with_generator(g()), drop_path(&x, 0.4, &mut g())?)?;
    same(&FeatureAlphaDropout::<f64>::new(0.4)?.with_generator(g()), feature_alpha_dropout(&x, 0.4, &mut g())?)?;
    let shared = Dropout::<f64>::new(0.4)?.with_shared_dims(&[2, 3]).with_generator(g());
    assert_eq!(shared.shared_dims(), &[2, 3]);
    same(&shared, dropout_shared(&x, 0.4, &[2, 3], &mut g())?)?;
    // A bad shared dim is an error at forward, naming the op and the shape.
    let bad = Dropout::<f64>::new(0.4)?.with_shared_dims(&[7]);
    let err = bad.forward(&x).unwrap_err().to_string();
    assert!(err.contains("dropout_shared") && err.contains("[4, 6, 3, 3]"), "{err}");
    Ok(())
}

/// DropPath zeroes whole samples of a residual branch: with a fixed seed, about `p` of the rows
/// are zero and the rest scaled by `1 / (1 - p)`.
#[test]
fn drop_path_layer_drops_whole_samples() -> Result<()> {
    let (rows, p) = (2048, 0.25);
    let x = Var::new(Tensor::<f64>::ones(&[rows, 4]));
    let y = DropPath::<f64>::new(p)?.with_generator(Generator::new(3)).forward(&x)?.value().to_vec();
    let mut dropped = 0;
    for row in y.chunks(4) {
        if row[0] == 0.0 {
            dropped += 1;
        }
        assert!(row.iter().all(|&v| v == row[0]) && (row[0] == 0.0 || row[0] == 1.0 / (1.0 - p)), "{row:?}");
    }
    let (mean, sd) = (rows as f64 * p, (rows as f64 * p * (1.0 - p)).sqrt());
    assert!((dropped as f64 - mean).abs() <= 5.0 * sd, "{dropped} of {rows} rows dropped");
    Ok(())
}

#[test]
fn dropout2d_refuses_an_unbatched_map() -> Result<()> {
    let mut layer = Dropout2d::<f64>::new(0.5)?;
    for mode in ["train", "eval"] {
        if mode == "eval" {
            layer.eval();
        }
        let chw = Var::new(Tensor::<f64>::ones(&[3, 8, 8]));
        let err = layer.forward(&chw).unwrap_err().to_string();
        assert!(
            err.contains("Dropout2d") && err.contains("[3, 8, 8]") && err.contains("unsqueeze(0)"),
            "{mode}: {err}"
        );
        assert!(layer.forward(&Var::new(Tensor::<f64>::ones(&[8, 8]))).is_err(), "{mode}: 2 dims");
        assert_eq!(layer.forward(&chw.unsqueeze(0)?)?.value().shape(), &[1, 3, 8, 8], "{mode}");
    }
    Ok(())
}

#[test]
fn layers_print_like_pytorch() -> Result<()> {
    let printed: Vec<String> = vec![
        Dropout::<f32>::new(0.5)?.to_string(),
        Dropout::<f32>::new(0.5)?.with_shared_dims(&[1]).to_string(),
        FeatureAlphaDropout::<f32>::new(0.2)?.to_string(),
        GaussianDropout::<f32>::new(0.3)?.to_string(),
        DropPath::<f32>::new(0.1)?.to_string(),
    ];
    assert_eq!(
        printed,
        [
            "Dropout(p=0.5)",
            "Dropout(p=0.5, shared_dims=[1])",
            "FeatureAlphaDropout(p=0.2)",
            "GaussianDropout(p=0.3)",
            "DropPath(drop_prob=0.100)"
        ]
    );
    // set_p shows in the repr.
    let mut d = DropPath::<f32>::new(0.1)?;
    d.set_p(0.25)?;
    assert_eq!(d.to_string(), "DropPath(drop_prob=0.250)");
    Ok(())
}
