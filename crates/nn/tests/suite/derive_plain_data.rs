//! `#[derive(Module)]` on structs that hold plain data beside their layers: fields written as a
//! primitive, `String`, `PhantomData`, or an `Option` / `Vec` / `Box` / array / tuple of those
//! are skipped without an attribute, and a field of a user type needs (and takes)
//! `#[module(skip)]`. The error message for a forgotten `#[module(skip)]` is pinned by a
//! `compile_fail,E0277` doctest on `Visit`.

use std::marker::PhantomData;

use tapegrad_nn::{Linear, Module, Result, Var};
use tapegrad_tensor::{Generator, Tensor};

#[derive(Clone, Debug, PartialEq)]
struct Config {
    depth: usize,
}

#[derive(Module)]
struct Model {
    fc1: Linear,
    hidden: usize,
    scale: f32,
    residual: bool,
    name: String,
    tag: &'static str,
    dims: Vec<usize>,
    limit: Option<f64>,
    pair: (u8, i64),
    window: [usize; 2],
    boxed: Box<u32>,
    #[module(skip)]
    config: Config,
    marker: PhantomData<f32>,
    fc2: Linear,
}

impl Module for Model {
    fn forward(&self, x: &Var) -> Result<Var> {
        let h = self.fc1.forward(x)?.relu().mul_scalar(self.scale);
        self.fc2.forward(&h)
    }
}

fn model() -> Model {
    let gen = &mut Generator::new(0);
    Model {
        fc1: Linear::new(3, 4, gen),
        hidden: 4,
        scale: 0.5,
        residual: false,
        name: "mlp".into(),
        tag: "t",
        dims: vec![3, 4, 2],
        limit: Some(1.0),
        pair: (1, -1),
        window: [2, 2],
        boxed: Box::new(7),
        config: Config { depth: 2 },
        marker: PhantomData,
        fc2: Linear::new(4, 2, gen),
    }
}

#[test]
fn plain_fields_are_skipped_and_layers_are_visited() -> Result<()> {
    let m = model();
    let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
    let printed = m.to_string();
    assert_eq!(printed.lines().count(), 4, "{printed}");
    assert!(!printed.contains("hidden"), "{printed}");
    let y = m.forward(&Var::new(Tensor::<f32>::ones(&[5, 3])))?;
    assert_eq!(y.shape(), vec![5, 2]);
    // The plain fields are the user's, untouched.
    assert_eq!((m.hidden, m.config.depth, m.dims.len(), m.name.as_str(), m.tag), (4, 2, 3, "mlp", "t"));
    assert_eq!((m.residual, m.limit, m.pair, m.window, *m.boxed), (false, Some(1.0), (1, -1), [2, 2], 7));
    Ok(())
}

/// A tuple struct with a size beside its layer.
#[derive(Module)]
struct Wrapped(Linear, usize);

impl Module for Wrapped {
    fn forward(&self, x: &Var) -> Result<Var> {
        self.0.forward(x)
    }
}

#[test]
fn tuple_structs_skip_plain_fields_too() {
    let w = Wrapped(Linear::new(2, 2, &mut Generator::new(1)), 9);
    let names: Vec<String> = w.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.weight", "0.bias"]);
    assert_eq!(w.1, 9);
}
