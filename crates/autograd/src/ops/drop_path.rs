//! Drop path (stochastic depth): dropout of whole samples of a residual branch.

use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};

use super::dropout::{check_p, DropoutRecord};
use super::one;
use crate::seed::with_default_generator;
use crate::var::{Backward, Grads, Var};

// ─── DropPath ────────────────────  y = x · m[n] / (1 - p);  dx = dy · m[n] / (1 - p)
struct DropPath {
    record: DropoutRecord,
    row: usize,
}
impl<T: Float> Backward<T> for DropPath {
    fn name(&self) -> &'static str {
        "drop_path"
    }
    fn backward(&self, dy: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(self.record.mask().scale_groups(dy, self.row, self.record.scale())?))
    }
    fn extra_bytes(&self) -> usize {
        self.record.mask_bytes()
    }
    fn dropout(&self) -> Option<&DropoutRecord> {
        Some(&self.record)
    }
    fn backward_var(&self, dy: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<crate::var::VarGrads<T>> {
        // Linear in its input: dy times the stored factor, a constant.
        super::stored_factor_var(self, dy)
    }
}

/// Drop path, or stochastic depth, for the output of a residual branch: each sample (row of
/// dim 0) is zeroed whole with probability `p` and the kept ones are scaled by `1 / (1 - p)`,
/// `y = x · m[n] / (1 - p)`, one mask bit per sample. Used as `x + drop_path(branch(x))`, it
/// skips the branch for that sample (Huang et al., 2016, "Deep Networks with Stochastic
/// Depth"); this is timm's `drop_path` with `scale_by_keep=True` and torchvision's
/// `stochastic_depth(mode="row")`. Backward: `dx = dy · m[n] / (1 - p)` with the stored mask.
/// `x` is `[N, ...]` with at least one dim. `p = 0` returns `x` itself; `p = 1` gives zeros
/// (NaN inputs stay NaN: the op multiplies by the mask) and zero gradients.
///
/// # Errors
/// `drop_path` when `p` is outside [0, 1] or NaN, or `x` is a scalar (0 dims).
///
/// ```
/// use tapegrad_autograd::{drop_path, Var};
/// use tapegrad_tensor::{Generator, Tensor, TensorNew};
/// let x = Var::new(Tensor::<f32>::ones(&[64, 5]));
/// let y = drop_path(&x, 0.25, &mut Generator::new(1))?.value().to_vec();
/// // Every row is all zeros or all 1 / 0.75.
/// assert!(y.chunks(5).all(|row| row.iter().all(|&v| v == row[0]) && (row[0] == 0.0 || row[0] == 1.0 / 0.75)));
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn drop_path<T: Float>(x: &Var<T>, p: f64, gen: &mut Generator) -> Result<Var<T>> {
    const OP: &str = "drop_path";
    check_p(OP, p)?;
    let value = x.value().contiguous();
    if value.ndim() == 0 {
        return Err(Error::shape(OP, value.shape(), "expects [N, ...] with at least 1 dim (one mask bit per row)"));
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let rows = value.shape()[0];
    let row = value.shape()[1..].iter().product::<usize>();
    let (seed, offset) = crate::checkpoint::reserve(gen, rows as u64, p)?;
    let record = DropoutRecord::regenerate(seed, offset, p, rows)?;
    let y = record.mask().scale_groups(&value, row, record.scale())?;
    Ok(Var::from_op(y, &[x], || DropPath { record, row }))
}

impl<T: Float> Var<T> {
    /// [`drop_path`] with this thread's default generator (seeded by
    /// [`manual_seed`](crate::manual_seed)).
    ///
    /// # Errors
    /// `drop_path` when `p` is outside [0, 1] or NaN, or `self` is a scalar.
    ///
    /// ```
    /// use tapegrad_autograd::{manual_seed, Var};
    /// use tapegrad_tensor::{Tensor, TensorNew};
    /// manual_seed(3);
    /// let y = Var::new(Tensor::<f32>::ones(&[8, 4])).drop_path(0.5)?;
    /// assert_eq!(y.value().shape(), &[8, 4]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn drop_path(&self, p: f64) -> Result<Var<T>> {
        with_default_generator(|gen| drop_path(self, p, gen))
    }
}
