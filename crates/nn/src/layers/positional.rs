//! Sinusoidal positional encoding, as in "Attention Is All You Need" (and PyTorch's tutorial
//! `PositionalEncoding`): a fixed table added to a sequence's embeddings.

use std::fmt;

use tapegrad_autograd::Var;
use tapegrad_tensor::{Error, Float, Result, Tensor};

use crate::module::Module;

/// The `[len, d_model]` table `PE[pos, 2i] = sin(pos / 10000^(2i / d_model))`,
/// `PE[pos, 2i + 1] = cos(pos / 10000^(2i / d_model))` (for an odd `d_model` the last column is
/// a sine), computed in f64 and rounded once.
///
/// # Errors
/// `sinusoidal_positional_encoding` when `len · d_model` elements overflow.
///
/// ```
/// use tapegrad_nn::sinusoidal_positional_encoding;
/// let pe = sinusoidal_positional_encoding::<f64>(2, 4)?;
/// assert_eq!(pe.to_vec()[..4], [0.0, 1.0, 0.0, 1.0]); // position 0
/// assert_eq!(pe.get(&[1, 0])?, 1f64.sin());
/// assert_eq!(pe.get(&[1, 3])?, (1.0 / 100f64).cos()); // 10000^(2/4) = 100
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn sinusoidal_positional_encoding<T: Float>(len: usize, d_model: usize) -> Result<Tensor<T>> {
    tapegrad_tensor::checked_numel("sinusoidal_positional_encoding", &[len, d_model])?;
    let mut data = Vec::with_capacity(len * d_model);
    for pos in 0..len {
        for j in 0..d_model {
            let angle = pos as f64 / 10000f64.powf((j - j % 2) as f64 / d_model as f64);
            data.push(T::from_f64(if j % 2 == 0 { angle.sin() } else { angle.cos() }));
        }
    }
    Tensor::from_vec(data, &[len, d_model])
}

/// Adds the sinusoidal positional encoding to `x` `[N, L, d_model]` (batch first), for
/// sequences of up to `max_len` positions: `y[n, l, :] = x[n, l, :] + PE[l, :]`
/// ([`sinusoidal_positional_encoding`]). The table is fixed: no parameter, no buffer (it is
/// rebuilt, not saved). Backward: `dx = dy`.
///
/// ```
/// use tapegrad_nn::{Module, SinusoidalPositionalEncoding, Var};
/// use tapegrad_tensor::{Tensor, TensorNew};
/// let pe: SinusoidalPositionalEncoding = SinusoidalPositionalEncoding::new(16, 4)?;
/// let y = pe.forward(&Var::new(Tensor::zeros(&[2, 3, 4])))?;
/// assert_eq!(y.value().get(&[1, 0, 1])?, 1.0); // cos(0)
/// assert!(pe.forward(&Var::new(Tensor::zeros(&[2, 17, 4]))).is_err()); // longer than max_len
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(crate::Module)]
#[module(float = T, display = false)]
pub struct SinusoidalPositionalEncoding<T: Float = f32> {
    #[module(skip)]
    table: Tensor<T>,
}

impl<T: Float> SinusoidalPositionalEncoding<T> {
    /// The encoding for up to `max_len` positions of `d_model` features.
    ///
    /// # Errors
    /// As [`sinusoidal_positional_encoding`].
    pub fn new(max_len: usize, d_model: usize) -> Result<SinusoidalPositionalEncoding<T>> {
        Ok(SinusoidalPositionalEncoding { table: sinusoidal_positional_encoding(max_len, d_model)? })
    }

    /// The `[max_len, d_model]` table.
    pub fn table(&self) -> &Tensor<T> {
        &self.table
    }
}

impl<T: Float> Module<T> for SinusoidalPositionalEncoding<T> {
    /// # Errors
    /// `SinusoidalPositionalEncoding` naming the shape when `x` is not `[N, L, d_model]` with
    /// `L ≤ max_len`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let shape = x.shape();
        let (max_len, d) = (self.table.shape()[0], self.table.shape()[1]);
        match shape.as_slice() {
            &[_, l, dm] if l <= max_len && dm == d => x.add(&Var::new(self.table.narrow(0, 0, l)?)),
            _ => Err(Error::shape(
                "SinusoidalPositionalEncoding",
                &shape,
                format!("expected [N, L, {d}] with L at most max_len = {max_len}"),
            )),
        }
    }
}

impl<T: Float> fmt::Display for SinusoidalPositionalEncoding<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SinusoidalPositionalEncoding(max_len={}, d_model={})", self.table.shape()[0], self.table.shape()[1])
    }
}
