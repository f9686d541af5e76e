//! Fused ops: what a chain of small ops computes, in one recorded op and fewer passes over memory.
//!
//! - [`linear`]: `y = x Wᵀ + b` as one op. The output starts as the broadcast bias and the GEMM
//!   accumulates the product into it (no separate product tensor, no second pass to add `b`);
//!   backward computes `dx = dy W`, `dW = dyᵀ x` and `db = Σ_rows dy` straight into fresh
//!   buffers, the GEMM reading `dyᵀ` and `W` in place.
//! - [`linear_relu_dropout`]: `y = dropout(relu(x Wᵀ + b), p)`, the hidden layer of an MLP, as one
//!   op. After the GEMM one SIMD pass over the output applies ReLU, the scale and the
//!   one-bit-per-element dropout mask; backward turns `dy` into the pre-activation gradient in one
//!   SIMD pass (the gradient flows where the output is positive: kept and past the ReLU), then
//!   runs [`linear`]'s backward (both passes: `tapegrad_tensor::kernels::relu_mask`). The
//!   mask is drawn exactly as [`dropout`](crate::dropout) draws it (same generator words, same
//!   threshold), so the fused op and the unfused chain give the same values.
//!
//! Every pass splits its work in fixed chunks and the GEMM's result does not depend on the thread
//! count, so neither do these ops.

use rayon::prelude::*;
use smallvec::smallvec;
use tapegrad_tensor::kernels::active_isa;
use tapegrad_tensor::kernels::gemm::{gemm, MatMut};
use tapegrad_tensor::kernels::relu_mask::{relu_scale_by_mask_in_place, scale_where_positive};
use tapegrad_tensor::{buffers, Float, Generator, Tensor};

use crate::error::{Error, Result};
use crate::ops::dropout::{check_p, DropoutRecord};
use crate::var::{Backward, Grads, Var};

/// Elements per parallel chunk of the elementwise passes: a multiple of 64 (whole mask words),
/// fixed so that the split never depends on the thread count.
const CHUNK: usize = 1 << 14;

/// Checks `x [m, k]`, `w [n, k]`, `b [n]` and returns `(m, n, k)`.
fn check_linear<T: Float>(
    op: &'static str,
    x: &Tensor<T>,
    w: &Tensor<T>,
    b: Option<&Tensor<T>>,
) -> Result<(usize, usize, usize)> {
    let mismatch = |lhs: &[usize], rhs: &[usize], reason: String| -> Error {
        tapegrad_tensor::Error::ShapeMismatch { op, lhs: lhs.to_vec(), rhs: rhs.to_vec(), reason }.into()
    };
    if x.ndim() != 2 || w.ndim() != 2 {
        return Err(mismatch(x.shape(), w.shape(), "the input must be [batch, in] and the weight [out, in]".into()));
    }
    let (m, k, n) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    if w.shape()[1] != k {
        return Err(mismatch(x.shape(), w.shape(), format!("the input has {k} features, the weight {}", w.shape()[1])));
    }
    if let Some(b) = b {
        if b.shape() != [n] {
            return Err(mismatch(w.shape(), b.shape(), format!("the bias must be [{n}]")));
        }
    }
    Ok((m, n, k))
}

/// `x Wᵀ + b` into a fresh row-major `[m, n]` buffer: each row starts as the bias and the GEMM
/// accumulates the product into it.
fn linear_forward<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    b: Option<&Tensor<T>>,
    (m, n, _): (usize, usize, usize),
) -> Vec<T> {
    let mut out = match b {
        Some(b) if m > 0 && n > 0 => {
            let b = b.contiguous();
            let bias = b.as_slice().expect("a contiguous tensor has a slice");
            let mut out = buffers::with_capacity(m * n);
            for _ in 0..m {
                out.extend_from_slice(bias);
            }
            out
        }
        _ => buffers::for_overwrite(m * n),
    };
    gemm(MatMut::row_major(&mut out, m, n), x.as_mat(), w.as_mat().t(), b.is_some());
    out
}

/// The gradients of `x Wᵀ + b` given `dz` (`[m, n]`, any strides), each computed only when `needs`
/// asks for it (inputs in the order `x, w, b`).
fn linear_backward<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    dz: &Tensor<T>,
    has_bias: bool,
    needs: &[bool],
) -> Result<Grads<T>> {
    let (m, k, n) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    let mut grads: Grads<T> = smallvec![None, None];
    if needs[0] {
        let mut dx = buffers::for_overwrite(m * k);
        gemm(MatMut::row_major(&mut dx, m, k), dz.as_mat(), w.as_mat(), false);
        grads[0] = Some(Tensor::from_vec(dx, &[m, k])?);
    }
    if needs[1] {
        let mut dw = buffers::for_overwrite(n * k);
        gemm(MatMut::row_major(&mut dw, n, k), dz.as_mat().t(), x.as_mat(), false);
        grads[1] = Some(Tensor::from_vec(dw, &[n, k])?);
    }
    if has_bias {
        grads.push(if needs[2] { Some(Tensor::from_vec(column_sums(dz, m, n), &[n])?) } else { None });
    }
    Ok(grads)
}

/// `Σ_i dz[i, j]` for every column `j`, summing rows in order (on one thread: a few hundred
/// thousand additions).
fn column_sums<T: Float>(dz: &Tensor<T>, m: usize, n: usize) -> Vec<T> {
    let mut sums = vec![T::ZERO; n];
    let dz = dz.contiguous();
    if let Some(data) = dz.as_slice() {
        for row in data.chunks_exact(n.max(1)).take(m) {
            for (s, &v) in sums.iter_mut().zip(row) {
                *s += v;
            }
        }
    }
    sums
}

// ─── Linear ──────────────────────  z = x Wᵀ + b
//   dx = dz W,  dW = dzᵀ x,  db = Σ_rows dz
struct Linear<T: Float> {
    x: Tensor<T>,
    w: Tensor<T>,
    has_bias: bool,
}
impl<T: Float> Backward<T> for Linear<T> {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        linear_backward(&self.x, &self.w, dz, self.has_bias, needs)
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.x, &self.w]
    }
}

/// `x Wᵀ + b` for `x` `[batch, in]`, `w` `[out, in]` and `b` `[out]`, as one recorded op: what
/// `x.matmul(&w.t()?)?.add(b)?` computes, without the intermediate product or the pass that adds
/// the bias. `w` is read in place as its transpose.
///
/// # Errors
/// `linear` when the shapes do not fit together.
///
/// ```
/// use tapegrad_autograd::{fused::linear, Var};
/// use tapegrad_tensor::Tensor;
/// let x = Var::new(Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2])?);
/// let w = Var::parameter(Tensor::from_vec(vec![1.0f32, 1.0, 0.0, 1.0], &[2, 2])?);
/// let b = Var::parameter(Tensor::from_vec(vec![10.0f32, 20.0], &[2])?);
/// let y = linear(&x, &w, Some(&b))?;
/// assert_eq!(y.value().to_vec(), vec![13.0, 22.0]);
/// y.sum_all().backward()?;
/// assert_eq!(w.grad().unwrap().to_vec(), vec![1.0, 2.0, 1.0, 2.0]);
/// assert_eq!(b.grad().unwrap().to_vec(), vec![1.0, 1.0]);
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn linear<T: Float>(x: &Var<T>, w: &Var<T>, b: Option<&Var<T>>) -> Result<Var<T>> {
    let (xv, wv) = (x.value(), w.value());
    let bv = b.map(Var::value);
    let dims = check_linear("linear", &xv, &wv, bv.as_ref())?;
    let out = Tensor::from_vec(linear_forward(&xv, &wv, bv.as_ref(), dims), &[dims.0, dims.1])?;
    let make = || Linear { x: xv, w: wv, has_bias: b.is_some() };
    Ok(match b {
        Some(b) => Var::from_op(out, &[x, w, b], make),
        None => Var::from_op(out, &[x, w], make),
    })
}

// ─── LinearReluDropout ─────────  y = dropout(relu(x Wᵀ + b), p)
//   dz = dy / (1 - p) where y > 0 (kept and positive), else 0;  then as Linear
struct LinearReluDropout<T: Float> {
    x: Tensor<T>,
    w: Tensor<T>,
    /// The output: `y > 0` exactly where the element was kept and its pre-activation positive
    /// (`z / (1 - p) > 0` iff `z > 0`, and NaN compares false as relu's gradient wants). It is
    /// the next layer's input, so saving it costs no memory.
    y: Tensor<T>,
    record: DropoutRecord,
}
impl<T: Float> Backward<T> for LinearReluDropout<T> {
    fn name(&self) -> &'static str {
        "linear_relu_dropout"
    }
    fn backward(&self, dy: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        let dy = dy.contiguous();
        let scale = T::from_f64(1.0 / (1.0 - self.record.p));
        let mut dz = buffers::for_overwrite(dy.numel());
        match (dy.as_slice(), self.y.as_slice()) {
            (Some(dy), Some(y)) => {
                let isa = active_isa();
                dz.par_chunks_mut(CHUNK)
                    .zip(dy.par_chunks(CHUNK))
                    .zip(y.par_chunks(CHUNK))
                    .for_each(|((dz, dy), y)| scale_where_positive(isa, y, dy, scale, dz));
            }
            _ => dz.fill(T::ZERO),
        }
        let dz = Tensor::from_vec(dz, dy.shape())?;
        linear_backward(&self.x, &self.w, &dz, true, needs)
    }
    fn saved(&self) -> Vec<&Tensor<T>> {
        vec![&self.x, &self.w, &self.y]
    }
    fn extra_bytes(&self) -> usize {
        self.record.mask_bytes()
    }
    fn dropout(&self) -> Option<&DropoutRecord> {
        Some(&self.record)
    }
}

/// `dropout(relu(x Wᵀ + b), p)` with the mask drawn from `gen`, as one recorded op: the hidden
/// layer of an MLP. The GEMM accumulates into the broadcast bias, then one pass applies ReLU and
/// the mask; backward masks `dy` where the output is positive (kept and past the ReLU) in one
/// pass and runs the GEMMs of [`linear`]'s backward.
///
/// The values and the mask are those of `dropout(&linear(x, w, Some(b))?.relu(), p, gen)`: the
/// generator advances by the same number of words. The tape entry carries the
/// [`DropoutRecord`], as a plain dropout's does. `p = 0` is `linear` followed by `relu`.
///
/// # Errors
/// `linear_relu_dropout` when the shapes do not fit together or `p` is outside [0, 1).
///
/// ```
/// use tapegrad_autograd::{fused::linear_relu_dropout, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let x = Var::new(Tensor::<f32>::ones(&[4, 3]));
/// let w = Var::parameter(Tensor::<f32>::ones(&[5, 3]));
/// let b = Var::parameter(Tensor::<f32>::zeros(&[5]));
/// let y = linear_relu_dropout(&x, &w, &b, 0.5, &mut Generator::new(0))?;
/// assert!(y.value().to_vec().iter().all(|&v| v == 0.0 || v == 6.0));
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn linear_relu_dropout<T: Float>(
    x: &Var<T>,
    w: &Var<T>,
    b: &Var<T>,
    p: f64,
    gen: &mut Generator,
) -> Result<Var<T>> {
    const OP: &str = "linear_relu_dropout";
    check_p(OP, p)?;
    if p == 0.0 {
        return Ok(linear(x, w, Some(b))?.relu());
    }
    let (xv, wv, bv) = (x.value(), w.value(), b.value());
    let dims = check_linear(OP, &xv, &wv, Some(&bv))?;
    let mut out = linear_forward(&xv, &wv, Some(&bv), dims);
    let numel = out.len();
    let (seed, offset) = gen.reserve(numel as u64);
    let record = DropoutRecord::regenerate(seed, offset, p, numel);
    let scale = T::from_f64(1.0 / (1.0 - p));
    // relu, the mask and the scale in one SIMD pass (NaN stays NaN where kept, as in
    // `Tensor::relu`).
    let isa = active_isa();
    out.par_chunks_mut(CHUNK)
        .zip(record.mask_words().par_chunks(CHUNK / 64))
        .for_each(|(out, keep)| relu_scale_by_mask_in_place(isa, keep, out, scale));
    let out = Tensor::from_vec(out, &[dims.0, dims.1])?;
    let y = out.clone();
    Ok(Var::from_op(out, &[x, w, b], || LinearReluDropout { x: xv, w: wv, y, record }))
}
