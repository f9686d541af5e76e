//! Loss functions and weight penalties, as `torch.nn.functional`'s.
//!
//! Each loss is one fused op on the tape (a [`Backward`] struct saving exactly what its gradient
//! needs), written for numerical stability: cross-entropy works on log-softmax rows shifted by
//! their maximum, and the logistic loss never exponentiates a positive number. Reductions follow
//! PyTorch: `Mean` (the default) and `Sum` give a 0-dim value, `None` the per-sample losses.
//!
//! ```
//! use tapegrad_autograd::Var;
//! use tapegrad_nn::loss::cross_entropy;
//! use tapegrad_tensor::Tensor;
//! let logits = Var::parameter(Tensor::<f32>::zeros(&[2, 4]));
//! let loss = cross_entropy(&logits, &[1, 3])?;
//! assert!((loss.value().item()? - 4f32.ln()).abs() < 1e-6); // uniform over 4 classes
//! loss.backward()?;
//! assert_eq!(logits.grad().unwrap().shape(), &[2, 4]);
//! # Ok::<(), tapegrad_nn::Error>(())
//! ```

use tapegrad_autograd::{Backward, Grads, Var, VarGrads};
use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Error, Float, Result, Tensor};

/// How per-sample losses are combined, as PyTorch's `reduction` argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The mean over samples (elements, for element-wise losses): a 0-dim value.
    #[default]
    Mean,
    /// The sum: a 0-dim value.
    Sum,
    /// No reduction: one loss per sample (`[N]` for cross-entropy and NLL, the input's shape for
    /// element-wise losses).
    None,
}

/// Options of [`cross_entropy_with`]: PyTorch's `label_smoothing`, `reduction` and
/// `ignore_index`. Build it with `..Default::default()` for the fields left as PyTorch's
/// defaults.
///
/// ```
/// use tapegrad_nn::loss::{CrossEntropyOptions, Reduction};
/// let opts = CrossEntropyOptions { label_smoothing: 0.1, ..Default::default() };
/// assert_eq!((opts.reduction, opts.ignore_index), (Reduction::Mean, None));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CrossEntropyOptions {
    /// ε in [0, 1]: the target distribution is `(1 − ε) onehot + ε / C`. 0 by default.
    pub label_smoothing: f64,
    /// How the per-sample losses are combined. `Mean` by default.
    pub reduction: Reduction,
    /// A target value whose rows are ignored (`ignore_index` of PyTorch, whose default -100 has
    /// no `usize` spelling: `None`, the default here, ignores nothing). An ignored row
    /// contributes neither to the loss nor to the mean's count, and gets a zero gradient; with
    /// `Reduction::None` its loss is 0. When every row is ignored the mean is NaN (0 / 0, as
    /// PyTorch gives) and the sum is 0. The ignored value need not be a valid class.
    pub ignore_index: Option<usize>,
}

/// Checks `[N, C]` input against `N` class indices below `C` (or equal to `ignore`); returns
/// `(N, C)`.
fn check_class_targets(
    op: &'static str,
    shape: &[usize],
    targets: &[usize],
    ignore: Option<usize>,
) -> Result<(usize, usize)> {
    let &[n, c] = shape else {
        return Err(Error::shape(op, shape, "expected a 2-D input [N, C] (a batch of rows of class scores)"));
    };
    if targets.len() != n {
        return Err(Error::shape(op, shape, format!("{} targets given for {n} rows: need one per row", targets.len())));
    }
    if let Some((i, &t)) = targets.iter().enumerate().find(|&(_, &t)| t >= c && Some(t) != ignore) {
        return Err(Error::arg(op, format!("target {t} at row {i} is out of range for {c} classes (input {shape:?})")));
    }
    Ok((n, c))
}

/// Reduces per-sample losses to the op's output.
fn reduce<T: Float>(losses: Vec<f64>, shape: &[usize], reduction: Reduction) -> Result<Tensor<T>> {
    Ok(match reduction {
        Reduction::Mean => Tensor::<T>::scalar(T::from_f64(losses.iter().sum::<f64>() / losses.len() as f64)),
        Reduction::Sum => Tensor::<T>::scalar(T::from_f64(losses.iter().sum::<f64>())),
        Reduction::None => Tensor::from_vec(losses.into_iter().map(T::from_f64).collect(), shape)?,
    })
}

/// The factor each sample's local gradient is multiplied by: `dy / count`, `dy`, or `dy[k]`.
fn upstream_scales<T: Float>(dy: &Tensor<T>, reduction: Reduction, count: usize) -> tapegrad_autograd::Result<Vec<T>> {
    Ok(match reduction {
        Reduction::Mean => vec![dy.item()? / T::from_usize(count); count],
        Reduction::Sum => vec![dy.item()?; count],
        Reduction::None => dy.to_vec(),
    })
}

/// [`upstream_scales`] as a recorded value (for `backward_var`), shaped to broadcast over the
/// input: `dy / count` or `dy` (0-dim) for `Mean` and `Sum`; for `None`, `dy` itself, with a
/// trailing dim added when `per_row` (one loss per row of an `[N, C]` input).
fn upstream_var<T: Float>(dy: &Var<T>, reduction: Reduction, count: usize, per_row: bool) -> Result<Var<T>> {
    match reduction {
        Reduction::Mean => Ok(dy.mul_scalar(T::ONE / T::from_usize(count))),
        Reduction::Sum => Ok(dy.clone()),
        Reduction::None if per_row => dy.unsqueeze(1),
        Reduction::None => Ok(dy.clone()),
    }
}

fn grads<T: Float>(gs: impl IntoIterator<Item = Option<Tensor<T>>>) -> Grads<T> {
    gs.into_iter().collect()
}

// ─── CrossEntropy ─────────────────────────  ℓᵢ = (1 − ε)(−log pᵢ,ₜᵢ) + ε/C Σ_c (−log pᵢ,c)
struct CrossEntropy<T: Float> {
    probs: Tensor<T>,
    targets: Vec<usize>,
    smoothing: f64,
    reduction: Reduction,
    /// The ignored target value: its rows get a zero gradient.
    ignore: Option<usize>,
    /// The rows not ignored: the mean's divisor.
    kept: usize,
}

impl<T: Float> Backward<T> for CrossEntropy<T> {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    /// dx = (softmax(x) − q) · scale, with q = (1 − ε) onehot + ε / C; 0 on ignored rows.
    fn backward(&self, dy: &Tensor<T>, _needs: &[bool]) -> tapegrad_autograd::Result<Grads<T>> {
        let (n, c) = (self.probs.shape()[0], self.probs.shape()[1]);
        let scales = match self.reduction {
            // The mean is over the rows kept (every row without `ignore_index`).
            Reduction::Mean => vec![dy.item()? / T::from_usize(self.kept); n],
            _ => upstream_scales(dy, self.reduction, n)?,
        };
        let off = T::from_f64(self.smoothing / c as f64);
        let on = T::from_f64(1.0 - self.smoothing) + off;
        let mut dx = self.probs.to_vec();
        for (i, row) in dx.chunks_mut(c.max(1)).enumerate() {
            if Some(self.targets[i]) == self.ignore {
                row.fill(T::ZERO);
                continue;
            }
            for (j, v) in row.iter_mut().enumerate() {
                let q = if j == self.targets[i] { on } else { off };
                *v = (*v - q) * scales[i];
            }
        }
        Ok(grads([Some(Tensor::from_vec(dx, &[n, c])?)]))
    }

    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.probs]
    }

    /// The same rule recorded: `(softmax(x) − q) · keep · scale`, with the target distribution
    /// `q` and the kept rows `keep` as constants.
    fn backward_var(&self, dy: &Var<T>, inputs: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        let (n, c) = (self.probs.shape()[0], self.probs.shape()[1]);
        let off = T::from_f64(self.smoothing / c as f64);
        let on = T::from_f64(1.0 - self.smoothing) + off;
        let mut q = vec![off; n * c];
        let mut keep = vec![T::ONE; n];
        for (i, &t) in self.targets.iter().enumerate() {
            if Some(t) == self.ignore {
                keep[i] = T::ZERO;
            } else {
                q[i * c + t] = on;
            }
        }
        let (q, keep) = (Var::new(Tensor::from_vec(q, &[n, c])?), Var::new(Tensor::from_vec(keep, &[n, 1])?));
        // Every row ignored: the gradient is 0 (the mean's divisor does not matter).
        let scale = upstream_var(dy, self.reduction, self.kept.max(1), true)?;
        Ok(vec![Some(inputs[0].softmax(1)?.sub(&q)?.mul(&keep)?.mul(&scale)?)])
    }
}

/// The cross-entropy of `logits` `[N, C]` against class indices `targets` (`N` of them, each
/// below `C`), averaged over the batch: `F.cross_entropy(logits, targets)`.
///
/// ```text
/// ℓᵢ = −log softmax(xᵢ)[tᵢ] = logsumexp(xᵢ) − xᵢ,ₜᵢ          loss = (1/N) Σᵢ ℓᵢ
/// ∂loss/∂xᵢ = (softmax(xᵢ) − onehot(tᵢ)) / N
/// ```
///
/// One fused op: forward computes each row's log-sum-exp after subtracting the row's maximum
/// (so large logits do not overflow) and saves the softmax probabilities for backward.
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::loss::cross_entropy;
/// use tapegrad_tensor::Tensor;
/// let logits = Var::parameter(Tensor::<f64>::from_vec(vec![1000.0, 0.0], &[1, 2])?);
/// let loss = cross_entropy(&logits, &[0])?; // stable: no overflow at 1000
/// assert!(loss.value().item()?.abs() < 1e-12);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// `logits` not 2-D, a `targets` length other than `N`, a target `≥ C`, or an empty batch.
pub fn cross_entropy<T: Float>(logits: &Var<T>, targets: &[usize]) -> Result<Var<T>> {
    cross_entropy_with(logits, targets, CrossEntropyOptions::default())
}

/// [`cross_entropy`] with PyTorch's `label_smoothing`, `reduction` and `ignore_index`.
///
/// With smoothing ε the target distribution is `q = (1 − ε) onehot(t) + ε / C`:
///
/// ```text
/// ℓᵢ = −Σ_c qᵢ,c log softmax(xᵢ)[c] = (1 − ε)(−log pᵢ,ₜᵢ) + (ε / C) Σ_c (−log pᵢ,c)
/// ∂ℓᵢ/∂xᵢ = softmax(xᵢ) − qᵢ
/// ```
///
/// then reduced as `options.reduction` says (`None` gives the `[N]` per-sample losses). Rows
/// whose target is `options.ignore_index` are left out: their loss and gradient are 0 and the
/// mean divides by the number of rows kept (`K`), so a batch of only ignored rows has a NaN mean
/// (as PyTorch):
///
/// ```text
/// loss = (1/K) Σ_{i: tᵢ ≠ ignore} ℓᵢ        ∂loss/∂xᵢ = (softmax(xᵢ) − qᵢ) / K, 0 for ignored rows
/// ```
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::loss::{cross_entropy_with, CrossEntropyOptions, Reduction};
/// use tapegrad_tensor::{Tensor, TensorNew};
/// let logits = Var::parameter(Tensor::<f64>::zeros(&[3, 4]));
/// let opts = CrossEntropyOptions { label_smoothing: 0.1, reduction: Reduction::None, ..Default::default() };
/// let loss = cross_entropy_with(&logits, &[0, 1, 2], opts)?;
/// assert_eq!(loss.shape(), vec![3]);
/// // Padding positions marked with 99 are ignored: the mean is over the other two rows.
/// let opts = CrossEntropyOptions { ignore_index: Some(99), ..Default::default() };
/// let loss = cross_entropy_with(&logits, &[0, 99, 2], opts)?;
/// assert!((loss.value().item()? - 4f64.ln()).abs() < 1e-12);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// As [`cross_entropy`] (a target equal to `ignore_index` is never out of range); a label
/// smoothing outside [0, 1].
pub fn cross_entropy_with<T: Float>(
    logits: &Var<T>,
    targets: &[usize],
    options: CrossEntropyOptions,
) -> Result<Var<T>> {
    const OP: &str = "cross_entropy";
    let x = logits.value();
    let ignore = options.ignore_index;
    let (n, c) = check_class_targets(OP, x.shape(), targets, ignore)?;
    let eps = options.label_smoothing;
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::arg(OP, format!("label_smoothing {eps} is outside [0, 1]")));
    }
    if n == 0 && options.reduction == Reduction::Mean {
        return Err(Error::shape(OP, x.shape(), "the mean over an empty batch is undefined"));
    }
    if c == 0 {
        return Err(Error::shape(OP, x.shape(), "no classes"));
    }
    let xs = x.to_vec();
    let mut probs = vec![T::ZERO; n * c];
    let mut losses = vec![0.0f64; n];
    for i in (0..n).filter(|&i| Some(targets[i]) != ignore) {
        let row = &xs[i * c..(i + 1) * c];
        // Shift by the row's maximum: exp never overflows and the largest term is exactly 1.
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v.to_f64()));
        let sum: f64 = row.iter().map(|&v| (v.to_f64() - m).exp()).sum();
        let lse = m + sum.ln();
        let nll = lse - row[targets[i]].to_f64();
        losses[i] = if eps == 0.0 {
            nll
        } else {
            let all: f64 = row.iter().map(|&v| lse - v.to_f64()).sum();
            (1.0 - eps) * nll + eps / c as f64 * all
        };
        for (p, &v) in probs[i * c..(i + 1) * c].iter_mut().zip(row) {
            *p = T::from_f64((v.to_f64() - m).exp() / sum);
        }
    }
    let kept = targets.iter().filter(|&&t| Some(t) != ignore).count();
    let y = match options.reduction {
        // Over the rows kept: 0 / 0 = NaN when every row is ignored, as PyTorch.
        Reduction::Mean => Tensor::<T>::scalar(T::from_f64(losses.iter().sum::<f64>() / kept as f64)),
        reduction => reduce(losses, &[n], reduction)?,
    };
    let probs = Tensor::from_vec(probs, &[n, c])?;
    Ok(Var::from_op(y, &[logits], || CrossEntropy {
        probs,
        targets: targets.to_vec(),
        smoothing: eps,
        reduction: options.reduction,
        ignore,
        kept,
    }))
}

// ─── NllLoss ─────────────────────────  ℓᵢ = −xᵢ,ₜᵢ
struct NllLoss {
    shape: [usize; 2],
    targets: Vec<usize>,
    reduction: Reduction,
}

impl<T: Float> Backward<T> for NllLoss {
    fn name(&self) -> &'static str {
        "nll_loss"
    }

    /// dxᵢ,ₜᵢ = −scaleᵢ, zero elsewhere.
    fn backward(&self, dy: &Tensor<T>, _needs: &[bool]) -> tapegrad_autograd::Result<Grads<T>> {
        let [n, c] = self.shape;
        let scales = upstream_scales(dy, self.reduction, n)?;
        let mut dx = vec![T::ZERO; n * c];
        for (i, &t) in self.targets.iter().enumerate() {
            dx[i * c + t] = -scales[i];
        }
        Ok(grads([Some(Tensor::from_vec(dx, &self.shape)?)]))
    }

    /// The same rule recorded: `−onehot(t) · scale`, the one-hot rows a constant.
    fn backward_var(&self, dy: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        let [n, c] = self.shape;
        let mut onehot = vec![T::ZERO; n * c];
        for (i, &t) in self.targets.iter().enumerate() {
            onehot[i * c + t] = T::ONE;
        }
        let scale = upstream_var(dy, self.reduction, n, true)?;
        Ok(vec![Some(Var::new(Tensor::from_vec(onehot, &self.shape)?).mul(&scale)?.neg())])
    }
}

/// The negative log-likelihood of log-probabilities `log_probs` `[N, C]` (the output of a
/// `log_softmax(1)`) at class indices `targets`, averaged over the batch: `F.nll_loss`.
///
/// ```text
/// loss = −(1/N) Σᵢ xᵢ,ₜᵢ            ∂loss/∂xᵢ,ₜᵢ = −1/N (zero elsewhere)
/// ```
///
/// `nll_loss(&x.log_softmax(1)?, t)` equals [`cross_entropy`]`(&x, t)`; the latter is one
/// fused op.
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::loss::nll_loss;
/// use tapegrad_tensor::Tensor;
/// let lp = Var::new(Tensor::<f64>::from_vec(vec![-0.5, -1.0, -2.0, -0.25], &[2, 2])?);
/// assert_eq!(nll_loss(&lp, &[0, 1])?.value().item()?, 0.375);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// `log_probs` not 2-D, a `targets` length other than `N`, a target `≥ C`, or an empty batch.
pub fn nll_loss<T: Float>(log_probs: &Var<T>, targets: &[usize]) -> Result<Var<T>> {
    nll_loss_with(log_probs, targets, Reduction::Mean)
}

/// [`nll_loss`] with a [`Reduction`] (`None` gives the `[N]` per-sample losses `−xᵢ,ₜᵢ`).
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::loss::{nll_loss_with, Reduction};
/// use tapegrad_tensor::Tensor;
/// let lp = Var::new(Tensor::<f64>::from_vec(vec![-0.5, -1.0, -2.0, -0.25], &[2, 2])?);
/// assert_eq!(nll_loss_with(&lp, &[0, 1], Reduction::None)?.value().to_vec(), vec![0.5, 0.25]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// As [`nll_loss`].
pub fn nll_loss_with<T: Float>(log_probs: &Var<T>, targets: &[usize], reduction: Reduction) -> Result<Var<T>> {
    const OP: &str = "nll_loss";
    let x = log_probs.value();
    let (n, c) = check_class_targets(OP, x.shape(), targets, None)?;
    if n == 0 && reduction == Reduction::Mean {
        return Err(Error::shape(OP, x.shape(), "the mean over an empty batch is undefined"));
    }
    let xs = x.to_vec();
    let losses = targets.iter().enumerate().map(|(i, &t)| -xs[i * c + t].to_f64()).collect();
    let y = reduce(losses, &[n], reduction)?;
    Ok(Var::from_op(y, &[log_probs], || NllLoss { shape: [n, c], targets: targets.to_vec(), reduction }))
}

/// Checks that an element-wise loss's two inputs have the same shape; returns their values.
fn same_shape<T: Float>(
    op: &'static str,
    x: &Var<T>,
    y: &Var<T>,
    reduction: Reduction,
) -> Result<(Tensor<T>, Tensor<T>)> {
    let (x, y) = (x.value(), y.value());
    if x.shape() != y.shape() {
        return Err(Error::mismatch(op, x.shape(), y.shape(), "the input and the target must have the same shape"));
    }
    if x.numel() == 0 && reduction == Reduction::Mean {
        return Err(Error::shape(op, x.shape(), "the mean over an empty input is undefined"));
    }
    Ok((x, y))
}

// ─── MseLoss ─────────────────────────  ℓₖ = (xₖ − yₖ)²
struct MseLoss<T: Float> {
    diff: Tensor<T>,
    reduction: Reduction,
}

impl<T: Float> Backward<T> for MseLoss<T> {
    fn name(&self) -> &'static str {
        "mse_loss"
    }

    /// dx = 2 (x − y) · scale, dy_target = −dx.
    fn backward(&self, dy: &Tensor<T>, needs: &[bool]) -> tapegrad_autograd::Result<Grads<T>> {
        let scales = upstream_scales(dy, self.reduction, self.diff.numel())?;
        let two = T::from_f64(2.0);
        let dx: Vec<T> = self.diff.to_vec().iter().zip(&scales).map(|(&d, &s)| two * d * s).collect();
        let dx = Tensor::from_vec(dx, self.diff.shape())?;
        let dt = needs.get(1).copied().unwrap_or(false).then(|| dx.neg());
        Ok(grads([needs[0].then_some(dx), dt]))
    }

    /// The same rule recorded: `2 (x − y) · scale` from the input `Var`s, and its negation.
    fn backward_var(&self, dy: &Var<T>, inputs: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        let scale = upstream_var(dy, self.reduction, self.diff.numel(), false)?;
        let dx = inputs[0].sub(&inputs[1])?.mul_scalar(T::from_f64(2.0)).mul(&scale)?;
        let dt = needs[1].then(|| dx.neg());
        Ok(vec![needs[0].then_some(dx), dt])
    }

    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.diff]
    }
}

/// The mean squared error between `pred` and `target` (same shape): `F.mse_loss`.
///
/// ```text
/// loss = (1/n) Σₖ (xₖ − yₖ)²        ∂loss/∂x = 2 (x − y) / n,  ∂loss/∂y = −2 (x − y) / n
/// ```
///
/// `target` is a `Var` so that it may carry a gradient too; wrap a plain tensor in
/// [`Var::new`].
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::loss::mse_loss;
/// use tapegrad_tensor::Tensor;
/// let x = Var::parameter(Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2])?);
/// let y = Var::new(Tensor::from_vec(vec![0.0, 4.0], &[2])?);
/// assert_eq!(mse_loss(&x, &y)?.value().item()?, 2.5);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// Different shapes (no broadcasting, unlike PyTorch's warning), or an empty input.
pub fn mse_loss<T: Float>(pred: &Var<T>, target: &Var<T>) -> Result<Var<T>> {
    mse_loss_with(pred, target, Reduction::Mean)
}

/// [`mse_loss`] with a [`Reduction`] (`None` gives `(x − y)²` in the input's shape).
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::loss::{mse_loss_with, Reduction};
/// use tapegrad_tensor::Tensor;
/// let x = Var::new(Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2])?);
/// let y = Var::new(Tensor::from_vec(vec![0.0, 4.0], &[2])?);
/// assert_eq!(mse_loss_with(&x, &y, Reduction::Sum)?.value().item()?, 5.0);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// As [`mse_loss`].
pub fn mse_loss_with<T: Float>(pred: &Var<T>, target: &Var<T>, reduction: Reduction) -> Result<Var<T>> {
    let (x, y) = same_shape("mse_loss", pred, target, reduction)?;
    let diff = x.sub(&y)?;
    let losses = diff.to_vec().iter().map(|&d| d.to_f64() * d.to_f64()).collect();
    let out = reduce(losses, x.shape(), reduction)?;
    Ok(Var::from_op(out, &[pred, target], || MseLoss { diff, reduction }))
}

// ─── BceWithLogits ─────────────────────────  ℓₖ = max(xₖ, 0) − xₖ yₖ + log(1 + e^(−|xₖ|))
struct BceWithLogits<T: Float> {
    x: Tensor<T>,
    y: Tensor<T>,
    reduction: Reduction,
}

impl<T: Float> Backward<T> for BceWithLogits<T> {
    fn name(&self) -> &'static str {
        "binary_cross_entropy_with_logits"
    }

    /// dx = (σ(x) − y) · scale, dy_target = −x · scale.
    fn backward(&self, dy: &Tensor<T>, needs: &[bool]) -> tapegrad_autograd::Result<Grads<T>> {
        let scales = upstream_scales(dy, self.reduction, self.x.numel())?;
        let shape = self.x.shape();
        let (xs, ys) = (self.x.to_vec(), self.y.to_vec());
        let dx = if needs[0] {
            let sig = self.x.sigmoid().to_vec();
            let dx = sig.iter().zip(&ys).zip(&scales).map(|((&p, &y), &s)| (p - y) * s).collect();
            Some(Tensor::from_vec(dx, shape)?)
        } else {
            None
        };
        let dt = if needs.get(1).copied().unwrap_or(false) {
            Some(Tensor::from_vec(xs.iter().zip(&scales).map(|(&x, &s)| -x * s).collect(), shape)?)
        } else {
            None
        };
        Ok(grads([dx, dt]))
    }

    /// The same rule recorded: `(σ(x) − y) · scale` and `−x · scale` from the input `Var`s.
    fn backward_var(&self, dy: &Var<T>, inputs: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        let (x, y) = (&inputs[0], &inputs[1]);
        let scale = upstream_var(dy, self.reduction, self.x.numel(), false)?;
        let dx = if needs[0] { Some(x.sigmoid().sub(y)?.mul(&scale)?) } else { None };
        let dt = if needs[1] { Some(x.mul(&scale)?.neg()) } else { None };
        Ok(vec![dx, dt])
    }

    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.x, &self.y]
    }
}

/// The binary cross-entropy of probabilities `σ(logits)` against `targets` in [0, 1] (same
/// shape), averaged over elements: `F.binary_cross_entropy_with_logits`.
///
/// ```text
/// ℓₖ = −yₖ log σ(xₖ) − (1 − yₖ) log(1 − σ(xₖ)) = max(xₖ, 0) − xₖ yₖ + log(1 + e^(−|xₖ|))
/// loss = (1/n) Σₖ ℓₖ        ∂loss/∂x = (σ(x) − y) / n,  ∂loss/∂y = −x / n
/// ```
///
/// The second form is the stable one: the exponent is never positive, so no logit overflows.
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::loss::binary_cross_entropy_with_logits;
/// use tapegrad_tensor::Tensor;
/// let x = Var::parameter(Tensor::<f64>::from_vec(vec![0.0, 800.0], &[2])?);
/// let y = Var::new(Tensor::from_vec(vec![1.0, 1.0], &[2])?);
/// let loss = binary_cross_entropy_with_logits(&x, &y)?;
/// assert!((loss.value().item()? - 2f64.ln() / 2.0).abs() < 1e-12);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// Different shapes, or an empty input.
pub fn binary_cross_entropy_with_logits<T: Float>(logits: &Var<T>, targets: &Var<T>) -> Result<Var<T>> {
    binary_cross_entropy_with_logits_with(logits, targets, Reduction::Mean)
}

/// [`binary_cross_entropy_with_logits`] with a [`Reduction`] (`None` gives `ℓ` in the input's
/// shape).
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_nn::loss::{binary_cross_entropy_with_logits_with, Reduction};
/// use tapegrad_tensor::{Tensor, TensorNew};
/// let x = Var::new(Tensor::<f64>::zeros(&[3]));
/// let y = Var::new(Tensor::<f64>::ones(&[3]));
/// let loss = binary_cross_entropy_with_logits_with(&x, &y, Reduction::Sum)?;
/// assert!((loss.value().item()? - 3.0 * 2f64.ln()).abs() < 1e-12);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// As [`binary_cross_entropy_with_logits`].
pub fn binary_cross_entropy_with_logits_with<T: Float>(
    logits: &Var<T>,
    targets: &Var<T>,
    reduction: Reduction,
) -> Result<Var<T>> {
    let (x, y) = same_shape("binary_cross_entropy_with_logits", logits, targets, reduction)?;
    let losses = x
        .to_vec()
        .iter()
        .zip(y.to_vec())
        .map(|(&x, y)| {
            let (x, y) = (x.to_f64(), y.to_f64());
            x.max(0.0) - x * y + (-x.abs()).exp().ln_1p()
        })
        .collect();
    let out = reduce(losses, x.shape(), reduction)?;
    Ok(Var::from_op(out, &[logits, targets], || BceWithLogits { x, y, reduction }))
}

/// The L1 penalty `Σ_p Σ |w|` over `params` (add `λ · l1_penalty(..)` to a loss for lasso-style
/// sparsity). Built from `abs` and `sum_all` on the tape, so its gradient is `sign(w)` (0 at 0).
/// An empty list gives a constant 0.
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_tensor::Tensor;
/// let w = Var::parameter(Tensor::<f64>::from_vec(vec![1.0, -2.0], &[2])?);
/// assert_eq!(tapegrad_nn::l1_penalty(&[w])?.value().item()?, 3.0);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// None in practice (the sums are 0-dim); the `Result` is for the tape's adds.
pub fn l1_penalty<T: Float>(params: &[Var<T>]) -> Result<Var<T>> {
    penalty(params, |p| Ok(p.abs().sum_all()))
}

/// The L2 penalty `Σ_p Σ w²` over `params`: the plain sum of squares, without a factor 1/2, so
/// its gradient is `2 w` (add `λ · l2_penalty(..)` to a loss; `weight_decay = 2λ` in [`Sgd`]
/// does the same for plain SGD). An empty list gives a constant 0.
///
/// [`Sgd`]: crate::optim::Sgd
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_tensor::Tensor;
/// let w = Var::parameter(Tensor::<f64>::from_vec(vec![1.0, -2.0], &[2])?);
/// assert_eq!(tapegrad_nn::l2_penalty(&[w])?.value().item()?, 5.0);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
///
/// # Errors
/// None in practice (the sums are 0-dim); the `Result` is for the tape's adds.
pub fn l2_penalty<T: Float>(params: &[Var<T>]) -> Result<Var<T>> {
    penalty(params, |p| Ok(p.mul(p)?.sum_all()))
}

fn penalty<T: Float>(params: &[Var<T>], term: impl Fn(&Var<T>) -> Result<Var<T>>) -> Result<Var<T>> {
    let mut total: Option<Var<T>> = None;
    for p in params {
        let t = term(p)?;
        total = Some(match total {
            Some(acc) => acc.add(&t)?,
            None => t,
        });
    }
    Ok(total.unwrap_or_else(|| Var::new(Tensor::<T>::scalar(T::ZERO))))
}
