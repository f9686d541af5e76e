//! A constructor whose arguments do not name the element type means `f32` when the call names
//! none; `f64` is one annotation away (`::<f64>`), and generic code names its `T` the same way.

use std::any::{Any, TypeId};

use tapegrad::nn::{AlphaDropout, BatchNorm1d, Dropout, Flatten, LayerNorm, Linear, ReLU, Sequential, GELU};
use tapegrad::prelude::*;

/// The type of a value, without constraining it: an unannotated constructor that did not
/// resolve by itself would fail to compile here.
fn type_of<T: Any>(_: &T) -> TypeId {
    TypeId::of::<T>()
}

#[test]
fn constructors_without_a_type_mean_f32() -> Result<()> {
    let mut gen = Generator::new(0);
    assert_eq!(type_of(&Tensor::ones(&[2, 3])), TypeId::of::<Tensor<f32>>());
    assert_eq!(type_of(&Tensor::zeros(&[2])), TypeId::of::<Tensor<f32>>());
    assert_eq!(type_of(&Tensor::full(&[2], 0.5)), TypeId::of::<Tensor<f32>>());
    assert_eq!(type_of(&Tensor::scalar(2.0)), TypeId::of::<Tensor<f32>>());
    assert_eq!(type_of(&Tensor::arange(4)), TypeId::of::<Tensor<f32>>());
    assert_eq!(type_of(&Tensor::rand(&[2], &mut gen)), TypeId::of::<Tensor<f32>>());
    assert_eq!(type_of(&Tensor::randn(&[2], &mut gen)), TypeId::of::<Tensor<f32>>());
    assert_eq!(type_of(&Dropout::new(0.5)?), TypeId::of::<Dropout<f32>>());
    assert_eq!(type_of(&Linear::new(3, 2, &mut gen)), TypeId::of::<Linear<f32>>());
    assert_eq!(type_of(&Sequential::new()), TypeId::of::<Sequential<f32>>());
    assert_eq!(type_of(&LayerNorm::new(&[4])), TypeId::of::<LayerNorm<f32>>());

    // A model and its input built side by side, nothing annotated.
    let model = Sequential::new()
        .add(Linear::new(3, 4, &mut gen))
        .add(BatchNorm1d::new(4))
        .add(GELU::new())
        .add(Dropout::new(0.25)?)
        .add(AlphaDropout::new(0.1)?)
        .add(Flatten::new())
        .add(Linear::new(4, 2, &mut gen));
    let y = model.forward(&Var::new(Tensor::randn(&[5, 3], &mut gen)))?;
    assert_eq!(type_of(&y), TypeId::of::<Var<f32>>());
    assert_eq!(y.shape(), vec![5, 2]);
    Ok(())
}

#[test]
fn f64_is_one_annotation_away() -> Result<()> {
    let mut gen = Generator::new(1);
    let model = Sequential::<f64>::new()
        .add(Linear::<f64>::new(3, 4, &mut gen))
        .add(ReLU::<f64>::new())
        .add(Dropout::<f64>::new(0.5)?)
        .add(Linear::<f64>::new(4, 1, &mut gen));
    let x = Var::new(Tensor::<f64>::ones(&[2, 3]));
    let y = model.forward(&x)?;
    assert_eq!(type_of(&y), TypeId::of::<Var<f64>>());
    // A Vec<f64> names its own type.
    let t = Tensor::from_vec(vec![1.0f64, 2.0], &[2])?;
    assert_eq!(type_of(&t), TypeId::of::<Tensor<f64>>());
    Ok(())
}

/// Generic code names its parameter once per constructor.
fn generic_forward<T: Float>(gen: &mut Generator) -> Result<Var<T>> {
    let fc = Linear::<T>::new(3, 2, gen);
    let drop = Dropout::<T>::new(0.0)?;
    drop.forward(&fc.forward(&Var::new(Tensor::<T>::ones(&[4, 3])))?)
}

#[test]
fn generic_code_names_its_type_parameter() -> Result<()> {
    let mut gen = Generator::new(2);
    assert_eq!(type_of(&generic_forward::<f32>(&mut gen)?), TypeId::of::<Var<f32>>());
    assert_eq!(type_of(&generic_forward::<f64>(&mut gen)?), TypeId::of::<Var<f64>>());
    Ok(())
}
