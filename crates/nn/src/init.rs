//! Parameter initialisation as `torch.nn.init`: Kaiming (He) and Xavier (Glorot), uniform and
//! normal, each drawn from an explicit [`Generator`] so that a seed fixes every weight.
//!
//! Every function takes the shape and returns a fresh [`Tensor`]; to re-initialise a parameter,
//! `param.set_value(init::...(&param.shape(), ..)?)`. Fans follow PyTorch: for a weight of shape
//! `[out, in, k₁, k₂, …]`, `fan_in = in · k₁ · k₂ ⋯` and `fan_out = out · k₁ · k₂ ⋯`.
//!
//! ```
//! use tapegrad_nn::init::{self, FanMode, Nonlinearity};
//! use tapegrad_tensor::Generator;
//! let mut gen = Generator::new(0);
//! let w = init::kaiming_uniform::<f32>(&[256, 784], FanMode::FanIn, Nonlinearity::Relu, &mut gen)?;
//! let bound = (6.0f32 / 784.0).sqrt();
//! assert!(w.to_vec().iter().all(|v| v.abs() <= bound));
//! # Ok::<(), tapegrad_nn::Error>(())
//! ```

use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{checked_numel, Error, Float, Generator, Result, Tensor};

/// The nonlinearity that follows a layer, for [`calculate_gain`] (`torch.nn.init`'s
/// `nonlinearity` argument).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nonlinearity {
    /// No nonlinearity (a linear layer): gain 1.
    Linear,
    /// Any convolution without a nonlinearity: gain 1.
    Conv,
    /// Sigmoid: gain 1.
    Sigmoid,
    /// Tanh: gain 5/3.
    Tanh,
    /// ReLU: gain √2.
    Relu,
    /// Leaky ReLU with this negative slope: gain √(2 / (1 + slope²)). PyTorch's Kaiming default
    /// is `LeakyRelu(0.0)`, the same as `Relu`.
    LeakyRelu(f64),
    /// SELU: gain 3/4.
    Selu,
}

/// The recommended gain for a nonlinearity, as `torch.nn.init.calculate_gain`.
///
/// ```text
/// linear, conv, sigmoid: 1   tanh: 5/3   relu: √2   leaky_relu(a): √(2 / (1 + a²))   selu: 3/4
/// ```
///
/// ```
/// use tapegrad_nn::init::{calculate_gain, Nonlinearity};
/// assert_eq!(calculate_gain(Nonlinearity::Relu), 2f64.sqrt());
/// assert!((calculate_gain(Nonlinearity::LeakyRelu(5f64.sqrt())) - 1.0 / 3f64.sqrt()).abs() < 1e-15);
/// ```
pub fn calculate_gain(nonlinearity: Nonlinearity) -> f64 {
    match nonlinearity {
        Nonlinearity::Linear | Nonlinearity::Conv | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => 2f64.sqrt(),
        Nonlinearity::LeakyRelu(a) => (2.0 / (1.0 + a * a)).sqrt(),
        Nonlinearity::Selu => 0.75,
    }
}

/// Which fan Kaiming initialisation preserves: `FanIn` keeps the forward activations' variance,
/// `FanOut` the backward gradients'.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FanMode {
    /// `fan_in = shape[1] · receptive field` (PyTorch's default).
    #[default]
    FanIn,
    /// `fan_out = shape[0] · receptive field`.
    FanOut,
}

/// `(fan_in, fan_out)` of a weight shape `[out, in, k₁, k₂, …]`, as PyTorch's
/// `_calculate_fan_in_and_fan_out`: `(in · ∏k, out · ∏k)`.
///
/// ```
/// use tapegrad_nn::init::fan_in_and_fan_out;
/// assert_eq!(fan_in_and_fan_out(&[16, 3, 5, 5])?, (75, 400));
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// A shape with fewer than two dims (fans are undefined for a vector), or one too large for a
/// tensor ([`checked_numel`]).
pub fn fan_in_and_fan_out(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::shape("init", shape, "fan in and fan out need a weight with at least 2 dims"));
    }
    // A valid shape's dims multiply without overflow in any grouping, so the fans below fit.
    checked_numel("init", shape)?;
    let receptive: usize = shape[2..].iter().product();
    Ok((shape[1] * receptive, shape[0] * receptive))
}

/// A tensor of `shape` drawn uniformly from `[low, high)`, as `torch.nn.init.uniform_`.
///
/// ```
/// use tapegrad_nn::init;
/// use tapegrad_tensor::Generator;
/// let t = init::uniform::<f64>(&[100], -0.5, 0.5, &mut Generator::new(1))?;
/// assert!(t.to_vec().iter().all(|v| (-0.5..0.5).contains(v)));
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// `low > high`, a bound that is not finite, or a shape too large for a tensor
/// ([`checked_numel`]).
pub fn uniform<T: Float>(shape: &[usize], low: f64, high: f64, gen: &mut Generator) -> Result<Tensor<T>> {
    if !(low.is_finite() && high.is_finite() && low <= high) {
        return Err(Error::arg("uniform", format!("bounds [{low}, {high}) are not finite with low <= high")));
    }
    let (low, width) = (T::from_f64(low), T::from_f64(high - low));
    Ok(Tensor::<T>::try_rand(shape, gen)?.map(|u| low + width * u))
}

/// A tensor of `shape` drawn from `N(mean, std²)`, as `torch.nn.init.normal_`.
///
/// ```
/// use tapegrad_nn::init;
/// use tapegrad_tensor::Generator;
/// let t = init::normal::<f64>(&[10_000], 1.0, 0.1, &mut Generator::new(1))?;
/// assert!((t.mean_all().item()? - 1.0).abs() < 0.01);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// A negative or non-finite `std`, a non-finite `mean`, or a shape too large for a tensor
/// ([`checked_numel`]).
pub fn normal<T: Float>(shape: &[usize], mean: f64, std: f64, gen: &mut Generator) -> Result<Tensor<T>> {
    if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
        return Err(Error::arg("normal", format!("mean {mean} and std {std}: need finite values and std >= 0")));
    }
    let (mean, std) = (T::from_f64(mean), T::from_f64(std));
    Ok(Tensor::<T>::try_randn(shape, gen)?.map(|z| mean + std * z))
}

/// A tensor of zeros, as `torch.nn.init.zeros_`.
///
/// ```
/// assert_eq!(tapegrad_nn::init::zeros::<f32>(&[2]).to_vec(), vec![0.0, 0.0]);
/// ```
pub fn zeros<T: Float>(shape: &[usize]) -> Tensor<T> {
    Tensor::<T>::zeros(shape)
}

/// A tensor of ones, as `torch.nn.init.ones_`.
///
/// ```
/// assert_eq!(tapegrad_nn::init::ones::<f32>(&[2]).to_vec(), vec![1.0, 1.0]);
/// ```
pub fn ones<T: Float>(shape: &[usize]) -> Tensor<T> {
    Tensor::<T>::ones(shape)
}

/// `1 / √fan`, or 0 for an empty fan (PyTorch's bias bound for a zero-element fan).
fn inv_sqrt(fan: usize) -> f64 {
    if fan == 0 {
        0.0
    } else {
        1.0 / (fan as f64).sqrt()
    }
}

/// Kaiming (He) uniform initialisation, as `torch.nn.init.kaiming_uniform_`:
/// `U(−b, b)` with
///
/// ```text
/// b = gain · √(3 / fan),   gain = calculate_gain(nonlinearity),   fan = fan_in or fan_out
/// ```
///
/// PyTorch's default arguments are `FanMode::FanIn, Nonlinearity::LeakyRelu(0.0)`.
///
/// ```
/// use tapegrad_nn::init::{kaiming_uniform, FanMode, Nonlinearity};
/// use tapegrad_tensor::Generator;
/// let w = kaiming_uniform::<f64>(&[8, 3, 3, 3], FanMode::FanIn, Nonlinearity::Relu, &mut Generator::new(0))?;
/// assert!(w.to_vec().iter().all(|v| v.abs() <= (6.0 / 27f64).sqrt()));
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// A shape with fewer than two dims.
pub fn kaiming_uniform<T: Float>(
    shape: &[usize],
    mode: FanMode,
    nonlinearity: Nonlinearity,
    gen: &mut Generator,
) -> Result<Tensor<T>> {
    let bound = calculate_gain(nonlinearity) * 3f64.sqrt() * inv_sqrt(kaiming_fan(shape, mode)?);
    uniform(shape, -bound, bound, gen)
}

/// Kaiming (He) normal initialisation, as `torch.nn.init.kaiming_normal_`: `N(0, σ²)` with
///
/// ```text
/// σ = gain / √fan,   gain = calculate_gain(nonlinearity),   fan = fan_in or fan_out
/// ```
///
/// ```
/// use tapegrad_nn::init::{kaiming_normal, FanMode, Nonlinearity};
/// use tapegrad_tensor::Generator;
/// let w = kaiming_normal::<f32>(&[64, 32], FanMode::FanOut, Nonlinearity::Relu, &mut Generator::new(0))?;
/// assert_eq!(w.shape(), &[64, 32]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// A shape with fewer than two dims.
pub fn kaiming_normal<T: Float>(
    shape: &[usize],
    mode: FanMode,
    nonlinearity: Nonlinearity,
    gen: &mut Generator,
) -> Result<Tensor<T>> {
    let std = calculate_gain(nonlinearity) * inv_sqrt(kaiming_fan(shape, mode)?);
    normal(shape, 0.0, std, gen)
}

fn kaiming_fan(shape: &[usize], mode: FanMode) -> Result<usize> {
    let (fan_in, fan_out) = fan_in_and_fan_out(shape)?;
    Ok(match mode {
        FanMode::FanIn => fan_in,
        FanMode::FanOut => fan_out,
    })
}

/// Xavier (Glorot) uniform initialisation, as `torch.nn.init.xavier_uniform_`: `U(−b, b)` with
///
/// ```text
/// b = gain · √(6 / (fan_in + fan_out))
/// ```
///
/// ```
/// use tapegrad_nn::init::{xavier_uniform, calculate_gain, Nonlinearity};
/// use tapegrad_tensor::Generator;
/// let gain = calculate_gain(Nonlinearity::Tanh);
/// let w = xavier_uniform::<f64>(&[20, 30], gain, &mut Generator::new(0))?;
/// assert!(w.to_vec().iter().all(|v| v.abs() <= gain * (6.0f64 / 50.0).sqrt()));
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// A shape with fewer than two dims; a negative or non-finite gain.
pub fn xavier_uniform<T: Float>(shape: &[usize], gain: f64, gen: &mut Generator) -> Result<Tensor<T>> {
    let bound = xavier_gain("xavier_uniform", gain)? * 3f64.sqrt() * xavier_scale(shape)?;
    uniform(shape, -bound, bound, gen)
}

/// Xavier (Glorot) normal initialisation, as `torch.nn.init.xavier_normal_`: `N(0, σ²)` with
///
/// ```text
/// σ = gain · √(2 / (fan_in + fan_out))
/// ```
///
/// ```
/// use tapegrad_nn::init::xavier_normal;
/// use tapegrad_tensor::Generator;
/// let w = xavier_normal::<f32>(&[20, 30], 1.0, &mut Generator::new(0))?;
/// assert_eq!(w.shape(), &[20, 30]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// A shape with fewer than two dims; a negative or non-finite gain.
pub fn xavier_normal<T: Float>(shape: &[usize], gain: f64, gen: &mut Generator) -> Result<Tensor<T>> {
    let std = xavier_gain("xavier_normal", gain)? * xavier_scale(shape)?;
    normal(shape, 0.0, std, gen)
}

fn xavier_gain(op: &'static str, gain: f64) -> Result<f64> {
    if gain.is_finite() && gain >= 0.0 {
        Ok(gain)
    } else {
        Err(Error::arg(op, format!("gain {gain} must be finite and >= 0")))
    }
}

/// `√(2 / (fan_in + fan_out))`, 0 for an empty tensor.
fn xavier_scale(shape: &[usize]) -> Result<f64> {
    let (fan_in, fan_out) = fan_in_and_fan_out(shape)?;
    Ok(2f64.sqrt() * inv_sqrt(fan_in + fan_out))
}

/// PyTorch's default initialisation of `nn.Linear(in_features, out_features)`: weight
/// `[out, in]` and bias `[out]`, both `U(−1/√in, 1/√in)` (the weight by `kaiming_uniform` with
/// `a = √5`, whose bound works out to the same `1/√fan_in`). Drawn weight first, then bias.
///
/// ```
/// use tapegrad_nn::init::linear_default;
/// use tapegrad_tensor::Generator;
/// let (w, b) = linear_default::<f32>(10, 4, &mut Generator::new(0));
/// assert_eq!((w.shape(), b.shape()), (&[10, 4][..], &[10][..]));
/// assert!(w.to_vec().iter().chain(&b.to_vec()).all(|v| v.abs() <= 0.5));
/// ```
pub fn linear_default<T: Float>(
    out_features: usize,
    in_features: usize,
    gen: &mut Generator,
) -> (Tensor<T>, Tensor<T>) {
    default_pair(&[out_features, in_features], in_features, gen)
}

/// PyTorch's default initialisation of `nn.Conv2d(in_channels, out_channels, (kh, kw))`: weight
/// `[out, in, kh, kw]` and bias `[out]`, both `U(−1/√fan_in, 1/√fan_in)` with
/// `fan_in = in · kh · kw`. Drawn weight first, then bias.
///
/// ```
/// use tapegrad_nn::init::conv2d_default;
/// use tapegrad_tensor::Generator;
/// let (w, b) = conv2d_default::<f32>(8, 1, 3, 3, &mut Generator::new(0));
/// assert_eq!((w.shape(), b.shape()), (&[8, 1, 3, 3][..], &[8][..]));
/// assert!(w.to_vec().iter().all(|v| v.abs() <= 1.0 / 3.0));
/// ```
pub fn conv2d_default<T: Float>(
    out_channels: usize,
    in_channels: usize,
    kh: usize,
    kw: usize,
    gen: &mut Generator,
) -> (Tensor<T>, Tensor<T>) {
    default_pair(&[out_channels, in_channels, kh, kw], in_channels * kh * kw, gen)
}

fn default_pair<T: Float>(shape: &[usize], fan_in: usize, gen: &mut Generator) -> (Tensor<T>, Tensor<T>) {
    let bound = T::from_f64(inv_sqrt(fan_in));
    let mut draw = |shape: &[usize]| Tensor::<T>::rand(shape, gen).map(|u| bound * (u + u - T::ONE));
    let weight = draw(shape);
    let bias = draw(&shape[..1]);
    (weight, bias)
}
