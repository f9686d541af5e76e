//! LayerNorm's rows: the forward (`y`, and each row's mean and reciprocal standard deviation)
//! and the backward (`dx`, and the column sums that make `dweight` and `dbias`), over a piece of
//! contiguous rows, in `f64` whatever the element type. `ops/norm.rs` cuts a tensor's rows into
//! pieces fixed by the shape and runs one of these kernels per piece.
//!
//! They contain no `unsafe` and no intrinsics: each is a [`Kernel`] that [`dispatch`] compiles
//! under every instruction set's target features, so the compiler vectorises the same loops
//! wider, and the test below checks every path against the scalar build to the bit.

use crate::dtype::Float;
use crate::kernels::mask::isa::{Kernel, MaskIsa};

/// One piece of `Tensor::layer_norm`'s rows, as a kernel: [`dispatch`](crate::kernels::mask::isa::dispatch) compiles the loop
/// under the CPU's widest instruction set (four f64 lanes on AVX2, eight on AVX-512, where the
/// baseline x86_64 build has two), so the compiler vectorises it wider. The arithmetic is the
/// same on every path: Rust neither contracts nor reorders floating-point operations, so the
/// wider registers change how many lanes run at once, not what each lane computes (the eight
/// interleaved sums of [`sum8`] are eight independent lanes).
pub(crate) struct ForwardRows<'a, T: Float> {
    pub(crate) x: &'a [T],
    pub(crate) w: Option<&'a [T]>,
    pub(crate) b: Option<&'a [T]>,
    pub(crate) n: usize,
    pub(crate) eps: f64,
    pub(crate) y: &'a mut [T],
    pub(crate) mean: &'a mut [T],
    pub(crate) rstd: &'a mut [T],
}

impl<T: Float> Kernel for ForwardRows<'_, T> {
    type Output = ();

    #[inline(always)]
    unsafe fn call<S: MaskIsa>(self, _isa: S) {
        let ForwardRows { x, w, b, n, eps, y, mean, rstd } = self;
        let mut wide = vec![0.0f64; n];
        for (((y, x), m), r) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(mean).zip(rstd) {
            for (w, v) in wide.iter_mut().zip(x) {
                *w = v.to_f64();
            }
            let mu = sum8(&wide) / n as f64;
            for w in &mut wide {
                *w -= mu;
            }
            let var = sum8_zip(&wide, &wide) / n as f64;
            let inv = 1.0 / (var + eps).sqrt();
            let (mu_t, inv_t) = (T::from_f64(mu), T::from_f64(inv));
            match (w, b) {
                (Some(w), Some(b)) => {
                    for (((o, &v), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                        *o = (v - mu_t) * inv_t * w + b;
                    }
                }
                (Some(w), None) => {
                    for ((o, &v), &w) in y.iter_mut().zip(x).zip(w) {
                        *o = (v - mu_t) * inv_t * w;
                    }
                }
                (None, Some(b)) => {
                    for ((o, &v), &b) in y.iter_mut().zip(x).zip(b) {
                        *o = (v - mu_t) * inv_t + b;
                    }
                }
                (None, None) => {
                    for (o, &v) in y.iter_mut().zip(x) {
                        *o = (v - mu_t) * inv_t;
                    }
                }
            }
            (*m, *r) = (mu_t, inv_t);
        }
    }
}

/// One piece of `Tensor::layer_norm_backward`'s rows, as a kernel, for the reasons of
/// [`ForwardRows`]: `dx`, and the piece's column sums of `dy · x̂` (the first `n` of `partial`)
/// and of `dy` (the next `n`).
pub(crate) struct BackwardRows<'a, T: Float> {
    pub(crate) x: &'a [T],
    pub(crate) dy: &'a [T],
    pub(crate) mean: &'a [T],
    pub(crate) rstd: &'a [T],
    pub(crate) w: Option<&'a [T]>,
    pub(crate) n: usize,
    pub(crate) dx: &'a mut [T],
    pub(crate) partial: &'a mut [f64],
}

impl<T: Float> Kernel for BackwardRows<'_, T> {
    type Output = ();

    #[inline(always)]
    unsafe fn call<S: MaskIsa>(self, _isa: S) {
        let BackwardRows { x, dy, mean, rstd, w, n, dx, partial } = self;
        let (col_wx, col_b) = partial.split_at_mut(n);
        let mut xhat = vec![0.0f64; n];
        let mut g = vec![0.0f64; n];
        let rows = dx.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(dy.chunks_exact(n));
        for (((dx, x), dy), (mu, r)) in rows.zip(mean.iter().zip(rstd)) {
            let (mu, r) = (mu.to_f64(), r.to_f64());
            for (((xh, g), &x), &dy) in xhat.iter_mut().zip(g.iter_mut()).zip(x).zip(dy) {
                *xh = (x.to_f64() - mu) * r;
                *g = dy.to_f64();
            }
            for (((wx, b), &xh), &dy) in col_wx.iter_mut().zip(col_b.iter_mut()).zip(&xhat).zip(&g) {
                *wx += dy * xh;
                *b += dy;
            }
            if let Some(w) = w {
                for (g, &w) in g.iter_mut().zip(w) {
                    *g *= w.to_f64();
                }
            }
            let mean_g = sum8(&g) / n as f64;
            let mean_gx = sum8_zip(&g, &xhat) / n as f64;
            for ((dx, &g), &xh) in dx.iter_mut().zip(&g).zip(&xhat) {
                *dx = T::from_f64(r * (g - mean_g - xh * mean_gx));
            }
        }
    }
}

/// `Σ values` in `f64`, as eight interleaved partial sums (element `i` goes to sum
/// `i % 8`) added pairwise at the end: a fixed order the compiler can keep in vector registers,
/// where one running sum would wait on each addition.
#[inline(always)]
fn sum8(values: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a += v;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// `Σ a · b` over two equally long slices, in the order of [`sum8`].
#[inline(always)]
fn sum8_zip(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    for ((s, &x), &y) in acc.iter_mut().zip(ta).zip(tb) {
        *s += x * y;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::mask::isa::dispatch;
    use crate::kernels::{available_isas, Isa};

    /// LayerNorm's row kernels give the scalar build's bits on every instruction set (they are
    /// only compiled wider), for widths around the vector lengths and a row with a large offset.
    #[test]
    fn the_row_kernels_agree_with_the_scalar_path_to_the_bit() {
        for n in [1usize, 3, 4, 7, 8, 9, 16, 17, 64, 100] {
            let rows = 3;
            let x: Vec<f32> =
                (0..rows * n).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.37 + if i < n { 1e4 } else { 0.0 }).collect();
            let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 5) as f32 * 0.25).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 3) as f32 - 1.0).collect();
            let dy: Vec<f32> = (0..rows * n).map(|i| ((i * 11 % 7) as f32 - 3.0) * 0.5).collect();
            let run = |isa: Isa| {
                let (mut y, mut mean, mut rstd) = (vec![0.0f32; rows * n], vec![0.0f32; rows], vec![0.0f32; rows]);
                let fwd = ForwardRows {
                    x: &x,
                    w: Some(&w),
                    b: Some(&b),
                    n,
                    eps: 1e-5,
                    y: &mut y,
                    mean: &mut mean,
                    rstd: &mut rstd,
                };
                dispatch(isa, fwd);
                let (mut dx, mut partial) = (vec![0.0f32; rows * n], vec![0.0f64; 2 * n]);
                let bwd = BackwardRows {
                    x: &x,
                    dy: &dy,
                    mean: &mean,
                    rstd: &rstd,
                    w: Some(&w),
                    n,
                    dx: &mut dx,
                    partial: &mut partial,
                };
                dispatch(isa, bwd);
                let bits32 = |v: &[f32]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
                (
                    bits32(&y),
                    bits32(&mean),
                    bits32(&rstd),
                    bits32(&dx),
                    partial.iter().map(|e| e.to_bits()).collect::<Vec<_>>(),
                )
            };
            let want = run(Isa::Scalar);
            for isa in available_isas() {
                assert_eq!(run(isa), want, "{isa:?}, rows of {n}");
            }
        }
    }
}
