//! `RMSNorm`: root-mean-square normalisation over the trailing dims, as PyTorch's `nn.RMSNorm`.
//!
//! A composition of recorded ops (`mul`, `mean`, `add_scalar`, `powf`, `mul`): its gradient is
//! theirs.

use std::fmt;

use tapegrad_autograd::Var;
use tapegrad_tensor::{Error, Float, Result, Tensor, TensorNew};

use crate::layers::norm::py_float;
use crate::module::Module;

/// `y = x / √(mean(x²) + eps) · γ`, the mean over the trailing dims `normalized_shape`, with `γ`
/// (ones) of shape `normalized_shape` when `elementwise_affine`. PyTorch's default `eps` is the
/// element type's machine epsilon (`f32::EPSILON` or `f64::EPSILON`), used here too unless
/// [`RMSNorm::eps`] sets one.
///
/// Backward: through the recorded ops; `dx = γ·dy / r − x · mean(x · γ · dy) / r³` with
/// `r = √(mean(x²) + eps)`.
///
/// ```
/// use tapegrad_nn::{Module, RMSNorm, Var};
/// use tapegrad_tensor::Tensor;
/// let norm: RMSNorm = RMSNorm::new(&[2]);
/// let y = norm.forward(&Var::new(Tensor::from_vec(vec![3.0, 4.0], &[1, 2])?))?;
/// let rms = (12.5f32 + f32::EPSILON).sqrt();
/// let want = [3.0 / rms, 4.0 / rms];
/// assert!(y.value().to_vec().iter().zip(want).all(|(y, w)| (y - w).abs() < 1e-6));
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct RMSNorm<T: Float = f32> {
    /// `γ`, of shape `normalized_shape`, or `None` without elementwise affine.
    pub weight: Option<Var<T>>,
    normalized_shape: Vec<usize>,
    eps: Option<f64>,
}

impl<T: Float> RMSNorm<T> {
    /// Sets `eps`, added to the mean square under the square root.
    pub fn eps(mut self, eps: f64) -> RMSNorm<T> {
        self.eps = Some(eps);
        self
    }

    /// The normalised trailing shape.
    pub fn normalized_shape(&self) -> &[usize] {
        &self.normalized_shape
    }

    /// The `eps` in use: the one set, else the element type's machine epsilon.
    pub fn eps_value(&self) -> f64 {
        self.eps.unwrap_or(if std::mem::size_of::<T>() == 4 { f32::EPSILON as f64 } else { f64::EPSILON })
    }
}

tapegrad_tensor::f32_default! {
    /// The constructors of [`RMSNorm`] for every element type: `RMSNorm::<f64>::new(..)`, or
    /// `RMSNorm::<T>::new(..)` in generic code. `RMSNorm::new(..)` without a type means `f32`.
    RMSNormNew for RMSNorm {
        /// A layer normalising over the trailing dims `normalized_shape`, with a weight.
        fn new(normalized_shape: &[usize]) -> Self {
            RMSNorm {
                weight: Some(Var::parameter(Tensor::<T>::ones(normalized_shape))),
                normalized_shape: normalized_shape.to_vec(),
                eps: None,
            }
        }

        /// Without a weight (`elementwise_affine=False`).
        fn new_no_affine(normalized_shape: &[usize]) -> Self {
            RMSNorm { weight: None, normalized_shape: normalized_shape.to_vec(), eps: None }
        }
    }
}

impl<T: Float> Module<T> for RMSNorm<T> {
    /// # Errors
    /// `RMSNorm` naming the shape when its trailing dims are not `normalized_shape`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let shape = x.shape();
        let k = self.normalized_shape.len();
        if k == 0 || shape.len() < k || shape[shape.len() - k..] != self.normalized_shape[..] {
            return Err(Error::shape("RMSNorm", &shape, format!("expected trailing dims {:?}", self.normalized_shape)));
        }
        let dims: Vec<usize> = (shape.len() - k..shape.len()).collect();
        let inv_rms = x.mul(x)?.mean(&dims, true)?.add_scalar(T::from_f64(self.eps_value())).powf(T::from_f64(-0.5));
        let y = x.mul(&inv_rms)?;
        match &self.weight {
            Some(w) => y.mul(w),
            None => Ok(y),
        }
    }
}

impl<T: Float> fmt::Display for RMSNorm<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.normalized_shape.iter().map(|d| d.to_string()).collect();
        let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        let eps = self.eps.map_or("None".to_string(), py_float);
        let affine = if self.weight.is_some() { "True" } else { "False" };
        write!(f, "RMSNorm({tuple}, eps={eps}, elementwise_affine={affine})")
    }
}
