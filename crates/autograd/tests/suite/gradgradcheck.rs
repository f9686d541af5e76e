//! Second derivatives (`create_graph`) of every op, checked by `gradgradcheck` in f64 against
//! finite differences of the first derivatives, over random shapes (broadcasting for the binary
//! ops) and values; and a coverage test: every op recorded under `src/ops` passed a check here.
//! (An op without a recorded backward, which only a user's custom op can now be, is an error
//! naming it: `grad.rs`.)

use std::collections::BTreeSet;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tapegrad_autograd::{
    alpha_dropout, drop_path, dropout, dropout2d, dropout_shared, feature_alpha_dropout, fused, gaussian_dropout,
    gradgradcheck, Generator, Result, Tensor, Var,
};
use tapegrad_golden as golden;
use tapegrad_tensor::TensorNew;

use super::gradcheck::{gather_index, pool_fits_and_maxima_stand_out, shape, shape_and_dim};

type Outcome = std::result::Result<(), TestCaseError>;

/// Cases per op (each case runs the op some hundreds of times for the finite differences).
const CASES: u32 = 12;

/// The values an input takes.
#[derive(Clone, Copy, Debug)]
enum Values {
    /// Uniform in [-2, 2).
    Any,
    /// Uniform in [0.5, 2.5): for log, sqrt, powf, a divisor.
    Positive,
    /// |v| in [0.2, 2), either sign: away from the kinks of relu and abs.
    NonZero,
}

fn input(shape: &[usize], values: Values, gen: &mut Generator) -> Tensor<f64> {
    let u = Tensor::<f64>::rand(shape, gen);
    match values {
        Values::Any => u.map(|v| 4.0 * v - 2.0),
        Values::Positive => u.map(|v| 0.5 + 2.0 * v),
        Values::NonZero => u.map(|v| {
            let m = 0.2 + 1.8 * (2.0 * v).fract();
            if v < 0.5 {
                -m
            } else {
                m
            }
        }),
    }
}

/// Two shapes that broadcast together (some dims set to 1, leading dims dropped).
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (shape(0..=3), prop::collection::vec(any::<bool>(), 3), prop::collection::vec(any::<bool>(), 3), 0..=3usize)
        .prop_map(|(full, ones_x, ones_y, drop)| {
            let x: Vec<usize> = full.iter().zip(&ones_x).map(|(&n, &one)| if one { 1 } else { n }).collect();
            let y: Vec<usize> =
                full[drop.min(full.len())..].iter().zip(&ones_y).map(|(&n, &one)| if one { 1 } else { n }).collect();
            (x, y)
        })
}

fn check(f: impl Fn(&[Var<f64>]) -> Result<Var<f64>>, inputs: &[Tensor<f64>]) -> Outcome {
    gradgradcheck(f, inputs).map_err(|e| TestCaseError::fail(e.to_string()))
}

fn unary(s: &[usize], values: Values, seed: u64, f: impl Fn(&Var<f64>) -> Result<Var<f64>>) -> Outcome {
    let x = input(s, values, &mut Generator::new(seed));
    check(|v| f(&v[0]), &[x])
}

fn binary(
    (xs, ys): (Vec<usize>, Vec<usize>),
    (vx, vy): (Values, Values),
    seed: u64,
    f: impl Fn(&Var<f64>, &Var<f64>) -> Result<Var<f64>>,
) -> Outcome {
    let gen = &mut Generator::new(seed);
    let (x, y) = (input(&xs, vx, gen), input(&ys, vy, gen));
    check(|v| f(&v[0], &v[1]), &[x, y])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn gg_add(p in broadcast_pair(), seed in any::<u64>()) {
        // A linear op has no second derivative: the check is of the dependence on dy.
        binary(p, (Values::Any, Values::Any), seed, |x, y| x.add(y)?.tanh().add(y))?;
    }

    #[test]
    fn gg_sub(p in broadcast_pair(), seed in any::<u64>()) {
        binary(p, (Values::Any, Values::Any), seed, |x, y| x.sub(y)?.mul(&x.sub(y)?))?;
    }

    #[test]
    fn gg_mul(p in broadcast_pair(), seed in any::<u64>()) {
        binary(p, (Values::Any, Values::Any), seed, |x, y| x.mul(y)?.mul(x))?;
    }

    #[test]
    fn gg_div(p in broadcast_pair(), seed in any::<u64>()) {
        binary(p, (Values::Any, Values::Positive), seed, |x, y| x.div(y))?;
    }

    #[test]
    fn gg_maximum_minimum(p in broadcast_pair(), seed in any::<u64>()) {
        let gen = &mut Generator::new(seed);
        let (x, y) = (input(&p.0, Values::Any, gen), input(&p.1, Values::Any, gen));
        let gap = x.sub(&y).unwrap().abs().to_vec();
        prop_assume!(gap.iter().all(|d| *d > 1e-3));
        check(|v| v[0].maximum(&v[1])?.mul(&v[0].minimum(&v[1])?), &[x, y])?;
    }

    #[test]
    fn gg_scalar_ops(s in shape(0..=3), seed in any::<u64>()) {
        unary(&s, Values::Any, seed, |x| x.add_scalar(0.5).mul(&x.mul_scalar(-1.5).neg()))?;
    }

    #[test]
    fn gg_powf(s in shape(0..=3), e in prop::sample::select(vec![0.0, 1.0, 2.0, 3.0, -1.0, 0.5, 2.5]), seed in any::<u64>()) {
        unary(&s, Values::Positive, seed, |x| Ok(x.powf(e)))?;
    }

    #[test]
    fn gg_exp_log_sqrt(s in shape(0..=3), seed in any::<u64>()) {
        unary(&s, Values::Positive, seed, |x| Ok(x.exp()))?;
        unary(&s, Values::Positive, seed, |x| Ok(x.log()))?;
        unary(&s, Values::Positive, seed, |x| Ok(x.sqrt()))?;
    }

    #[test]
    fn gg_tanh_sigmoid(s in shape(0..=3), seed in any::<u64>()) {
        unary(&s, Values::Any, seed, |x| Ok(x.tanh()))?;
        unary(&s, Values::Any, seed, |x| Ok(x.sigmoid()))?;
    }

    #[test]
    fn gg_unary_maths(s in shape(0..=3), seed in any::<u64>()) {
        unary(&s, Values::Any, seed, |x| Ok(x.sin()))?;
        unary(&s, Values::Any, seed, |x| Ok(x.cos()))?;
        unary(&s, Values::Any, seed, |x| Ok(x.silu()))?;
        unary(&s, Values::Any, seed, |x| Ok(x.softplus()))?;
        // Piecewise linear: the second derivative is the dependence on dy (times x, so that it
        // is not zero).
        unary(&s, Values::NonZero, seed, |x| x.leaky_relu(0.1).mul(x))?;
        unary(&s, Values::NonZero, seed, |x| x.clamp(-1.0, 1.0).mul(x))?;
    }

    #[test]
    fn gg_relu_abs(s in shape(0..=3), seed in any::<u64>()) {
        unary(&s, Values::NonZero, seed, |x| x.relu().mul(x))?;
        unary(&s, Values::NonZero, seed, |x| x.abs().mul(x))?;
    }

    #[test]
    fn gg_gelu_tanh(s in shape(0..=3), seed in any::<u64>()) {
        unary(&s, Values::Any, seed, |x| Ok(x.gelu_tanh()))?;
    }

    #[test]
    fn gg_sum_mean(s in shape(1..=3), dim in 0usize..3, keepdim in any::<bool>(), seed in any::<u64>()) {
        let dim = dim % s.len();
        unary(&s, Values::Any, seed, |x| x.mul(x)?.sum(&[dim], keepdim)?.mul(&x.mean(&[dim], keepdim)?))?;
        unary(&s, Values::Any, seed, |x| x.mul(x)?.sum_all().mul(&x.mean_all()))?;
    }

    #[test]
    fn gg_softmax(s in shape(1..=3), dim in 0usize..3, seed in any::<u64>()) {
        let dim = dim % s.len();
        unary(&s, Values::Any, seed, |x| x.softmax(dim))?;
        unary(&s, Values::Any, seed, |x| x.log_softmax(dim))?;
    }

    #[test]
    fn gg_matmul(m in 1usize..4, k in 1usize..4, n in 1usize..4, batch in 0usize..3, seed in any::<u64>()) {
        let gen = &mut Generator::new(seed);
        let (xs, ys) = if batch == 0 { (vec![m, k], vec![k, n]) } else { (vec![batch, m, k], vec![k, n]) };
        let (x, y) = (input(&xs, Values::Any, gen), input(&ys, Values::Any, gen));
        check(|v| v[0].matmul(&v[1])?.tanh().matmul(&v[1].t()?), &[x, y])?;
    }

    #[test]
    fn gg_views(s in shape(2..=3), seed in any::<u64>()) {
        let n = s.len();
        let numel: usize = s.iter().product();
        // Each view between two nonlinear ops, so that its backward meets a dy depending on x.
        unary(&s, Values::Any, seed, |x| x.tanh().reshape(&[numel])?.mul(&x.reshape(&[numel])?))?;
        unary(&s, Values::Any, seed, |x| x.tanh().transpose(0, n - 1)?.mul(&x.transpose(0, n - 1)?))?;
        let perm: Vec<usize> = (0..n).rev().collect();
        unary(&s, Values::Any, seed, |x| x.tanh().permute(&perm)?.mul(&x.permute(&perm)?))?;
        unary(&s, Values::Any, seed, |x| x.tanh().unsqueeze(1)?.mul(&x.unsqueeze(1)?)?.squeeze(1))?;
        unary(&s, Values::Any, seed, |x| x.t_or_transpose()?.tanh().contiguous().mul(&x.t_or_transpose()?))?;
    }

    #[test]
    fn gg_narrow_cat_stack(s in shape(1..=3), seed in any::<u64>()) {
        let last = s.len() - 1;
        let len = s[last];
        unary(&s, Values::Any, seed, |x| x.tanh().narrow(last, len / 2, len - len / 2)?.mul(&x.narrow(last, 0, len - len / 2)?))?;
        unary(&s, Values::Any, seed, |x| Var::cat(&[&x.tanh(), &x.mul(x)?], last)?.sigmoid().mul(&Var::cat(&[x, x], last)?))?;
        unary(&s, Values::Any, seed, |x| Var::stack(&[&x.tanh(), x], 0)?.mul(&Var::stack(&[x, &x.exp()], 0)?))?;
    }

    #[test]
    fn gg_expand_sum_to(s in shape(1..=3), seed in any::<u64>()) {
        let mut big = vec![2];
        big.extend(s.iter().map(|&n| if n == 1 { 3 } else { n }));
        unary(&s, Values::Any, seed, |x| x.tanh().expand(&big)?.mul(&x.expand(&big)?))?;
        let small = s.clone();
        let gen = &mut Generator::new(seed);
        let x = input(&big, Values::Any, gen);
        check(|v| v[0].tanh().sum_to(&small)?.mul(&v[0].sum_to(&small)?), &[x])?;
    }

    #[test]
    fn gg_dropout(s in shape(1..=3), p in prop::sample::select(vec![0.2, 0.5, 0.8]), seed in any::<u64>()) {
        // The mask is drawn inside f from a fixed seed: every evaluation draws the same one.
        unary(&s, Values::Any, seed, |x| dropout(&x.mul(x)?, p, &mut Generator::new(seed))?.tanh().mul(x))?;
    }

    #[test]
    fn gg_linear(b in 1usize..4, i in 1usize..4, o in 1usize..4, p in prop::sample::select(vec![0.3, 0.6]), seed in any::<u64>()) {
        let gen = &mut Generator::new(seed);
        let (x, w, bias) = (input(&[b, i], Values::Any, gen), input(&[o, i], Values::Any, gen), input(&[o], Values::Any, gen));
        check(|v| fused::linear(&v[0], &v[1], Some(&v[2]))?.tanh().mul(&v[2]), &[x.clone(), w.clone(), bias.clone()])?;
        check(|v| Ok(fused::linear(&v[0], &v[1], None)?.tanh()), &[x.clone(), w.clone()])?;
        // Away from relu's kink: the pre-activations of this case must not be within 1e-3 of 0.
        let z = x.matmul(&w.t().unwrap()).unwrap().add(&bias).unwrap();
        prop_assume!(z.to_vec().iter().all(|v| v.abs() > 1e-3));
        check(
            |v| fused::linear_relu_dropout(&v[0], &v[1], &v[2], p, &mut Generator::new(seed))?.tanh().mul(&v[0].sum(&[1], true)?),
            &[x, w, bias],
        )?;
    }
}

/// `(N, C, H, W, kernel, stride, padding)` with the kernel fitting the padded input.
fn conv_geometry() -> impl Strategy<Value = (usize, usize, usize, usize, usize, usize, usize)> {
    (1usize..=2, 1usize..=2, 2usize..=4, 2usize..=4, 1usize..=3, 1usize..=2, 0usize..=1)
        .prop_filter("the kernel fits the padded input", |&(_, _, h, w, k, _, p)| h + 2 * p >= k && w + 2 * p >= k)
}

/// A 4-D input stored with its last two dims swapped: `f` gets it back in `[N, C, H, W]` order
/// as a transposed (non-contiguous) view with [`untranspose`].
fn transposed_input(&[n, c, h, w]: &[usize; 4], values: Values, gen: &mut Generator) -> Tensor<f64> {
    input(&[n, c, w, h], values, gen)
}

fn untranspose(v: &Var<f64>) -> Result<Var<f64>> {
    v.transpose(2, 3)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn gg_gelu(s in shape(0..=3), seed in any::<u64>()) {
        unary(&s, Values::Any, seed, |x| Ok(x.gelu()))?;
        unary(&s, Values::Any, seed, |x| Ok(x.t_or_transpose_any()?.gelu()))?;
    }

    #[test]
    fn gg_erf(s in shape(0..=3), seed in any::<u64>()) {
        unary(&s, Values::Any, seed, |x| Ok(x.erf()))?;
    }

    #[test]
    fn gg_layer_norm(
        s in shape(1..=3),
        trailing in 1usize..=2,
        affine in 0usize..3,
        seed in any::<u64>(),
    ) {
        let trailing = trailing.min(s.len());
        let normalized = s[s.len() - trailing..].to_vec();
        let gen = &mut Generator::new(seed);
        let mut inputs = vec![input(&s, Values::Any, gen)];
        if affine >= 1 {
            inputs.push(input(&normalized, Values::Any, gen));
        }
        if affine == 2 {
            inputs.push(input(&normalized, Values::Any, gen));
        }
        // eps large enough that a row of one element stays well conditioned.
        check(
            |v| {
                let x = v[0].t_or_transpose_any()?.t_or_transpose_any()?;
                x.layer_norm(&normalized, v.get(1), v.get(2), 0.1)
            },
            &inputs,
        )?;
    }

    #[test]
    fn gg_max(s in shape(1..=3), dim in 0usize..3, keepdim in any::<bool>(), seed in any::<u64>()) {
        let dim = dim % s.len();
        unary(&s, Values::Any, seed, |x| Ok(x.max(dim, keepdim)?.tanh()))?;
        unary(&s, Values::Any, seed, |x| x.max(dim, keepdim)?.mul(&x.sum(&[dim], keepdim)?))?;
    }

    #[test]
    fn gg_index_select(
        (s, dim, index) in shape_and_dim().prop_flat_map(|(s, d)| {
            let n = s[d];
            (Just(s), Just(d), prop::collection::vec(0..n, 1..=4))
        }),
        seed in any::<u64>(),
    ) {
        unary(&s, Values::Any, seed, |x| Ok(x.index_select(dim, &index)?.tanh()))?;
        // Its recorded backward's own op, in both inputs.
        let gen = &mut Generator::new(seed);
        let mut src_shape = s.clone();
        src_shape[dim] = index.len();
        let (x, src) = (input(&s, Values::Any, gen), input(&src_shape, Values::Any, gen));
        check(|v| v[0].index_add(dim, &index, &v[1])?.tanh().mul(&v[0]), &[x, src])?;
    }

    #[test]
    fn gg_gather((s, dim, index_shape, index) in gather_index(3), seed in any::<u64>()) {
        unary(&s, Values::Any, seed, |x| Ok(x.gather(dim, &index, &index_shape)?.tanh()))?;
        // Its recorded backward's own op, in both inputs.
        let gen = &mut Generator::new(seed);
        let (x, src) = (input(&s, Values::Any, gen), input(&index_shape, Values::Any, gen));
        check(|v| v[0].scatter_add(dim, &index, &index_shape, &v[1])?.tanh().mul(&v[0]), &[x, src])?;
    }

    /// Input, weight and bias, the input a transposed view.
    #[test]
    fn gg_conv2d((n, c, h, w, k, stride, padding) in conv_geometry(), c_out in 1usize..=2, bias in any::<bool>(), seed in any::<u64>()) {
        let gen = &mut Generator::new(seed);
        let x = transposed_input(&[n, c, h, w], Values::Any, gen);
        let weight = input(&[c_out, c, k, k], Values::Any, gen);
        if bias {
            let b = input(&[c_out], Values::Any, gen);
            check(|v| Ok(untranspose(&v[0])?.conv2d(&v[1], Some(&v[2]), stride, padding)?.tanh()), &[x, weight, b])?;
        } else {
            check(|v| Ok(untranspose(&v[0])?.conv2d(&v[1], None, stride, padding)?.tanh()), &[x, weight])?;
        }
    }

    /// The ops of conv2d's recorded backward, each in both of its inputs.
    #[test]
    fn gg_conv2d_backward((n, c, h, w, k, stride, padding) in conv_geometry(), c_out in 1usize..=2, seed in any::<u64>()) {
        let gen = &mut Generator::new(seed);
        let (oh, ow) = ((h + 2 * padding - k) / stride + 1, (w + 2 * padding - k) / stride + 1);
        let x = input(&[n, c, h, w], Values::Any, gen);
        let dy = input(&[n, c_out, oh, ow], Values::Any, gen);
        let weight = input(&[c_out, c, k, k], Values::Any, gen);
        check(|v| Ok(Var::conv2d_backward_input(&v[0], &v[1], &[n, c, h, w], stride, padding)?.tanh()), &[dy.clone(), weight])?;
        check(|v| Ok(Var::conv2d_backward_weight(&v[0], &v[1], &[c_out, c, k, k], stride, padding)?.tanh()), &[x, dy])?;
    }

    /// The input a transposed view; values far enough apart that the maximum of a window does
    /// not change under the finite differences' step.
    #[test]
    fn gg_max_pool2d((n, c, h, w, k, stride, padding) in conv_geometry(), seed in any::<u64>()) {
        let padding = padding.min(k / 2);
        let gen = &mut Generator::new(seed);
        let x = transposed_input(&[n, c, h, w], Values::Any, gen);
        let mut sorted = x.to_vec();
        sorted.sort_by(f64::total_cmp);
        prop_assume!(sorted.windows(2).all(|p| p[1] - p[0] > 1e-3));
        check(|v| Ok(untranspose(&v[0])?.max_pool2d(k, stride, padding)?.tanh()), &[x])?;
    }

    /// The fused op (its recorded backward: max_pool2d's then conv2d's), the input a transposed
    /// view; through the 2 x 2 path and a pool that runs as the two ops.
    #[test]
    fn gg_conv2d_max_pool2d(
        (n, c, h, w, k, stride, padding) in conv_geometry(),
        c_out in 1usize..=2,
        pool in prop::sample::select(vec![[2usize, 2, 0], [2, 1, 0]]),
        seed in any::<u64>(),
    ) {
        let gen = &mut Generator::new(seed);
        let x = transposed_input(&[n, c, h, w], Values::Any, gen);
        let weight = input(&[c_out, c, k, k], Values::Any, gen);
        let b = input(&[c_out], Values::Any, gen);
        let y = x.transpose(2, 3).and_then(|x| x.conv2d(&weight, Some(&b), stride, padding)).expect("it fits");
        prop_assume!(pool_fits_and_maxima_stand_out(&y, pool));
        check(|v| Ok(untranspose(&v[0])?.conv2d_max_pool2d(&v[1], Some(&v[2]), stride, padding, pool)?.tanh()), &[x, weight, b])?;
    }

    #[test]
    fn gg_avg_pool2d((n, c, h, w, k, stride, padding) in conv_geometry(), seed in any::<u64>()) {
        let padding = padding.min(k / 2);
        let gen = &mut Generator::new(seed);
        let x = transposed_input(&[n, c, h, w], Values::Any, gen);
        check(|v| Ok(untranspose(&v[0])?.avg_pool2d(k, stride, padding)?.tanh()), &[x])?;
    }

    /// Each mask is drawn inside f from a fixed seed: every evaluation draws the same one.
    #[test]
    fn gg_dropout_family(s in shape(2..=3), p in prop::sample::select(vec![0.2, 0.5]), seed in any::<u64>()) {
        let gen = || Generator::new(seed);
        unary(&s, Values::Any, seed, |x| dropout2d(&x.mul(x)?, p, &mut gen())?.tanh().mul(x))?;
        unary(&s, Values::Any, seed, |x| alpha_dropout(&x.mul(x)?, p, &mut gen())?.tanh().mul(x))?;
        unary(&s, Values::Any, seed, |x| feature_alpha_dropout(&x.mul(x)?, p, &mut gen())?.tanh().mul(x))?;
        unary(&s, Values::Any, seed, |x| gaussian_dropout(&x.mul(x)?, p, &mut gen())?.tanh().mul(x))?;
        unary(&s, Values::Any, seed, |x| drop_path(&x.mul(x)?, p, &mut gen())?.tanh().mul(x))?;
        unary(&s, Values::Any, seed, |x| dropout_shared(&x.mul(x)?, p, &[1], &mut gen())?.tanh().mul(x))?;
    }
}

/// A causal mask `[l, s]`: 0 where key `j <= i`, `-inf` after (every row keeps key 0).
fn causal_mask(l: usize, s: usize) -> Tensor<f64> {
    let data = (0..l * s).map(|ij| if ij % s <= ij / s { 0.0 } else { f64::NEG_INFINITY }).collect();
    Tensor::from_vec(data, &[l, s]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// Fused attention over `[B, L, D]` / `[B, S, D]` / `[B, S, Dv]`, the query a transposed
    /// view: no mask, an additive mask broadcast from `[L, S]`, or a causal one; dropout of the
    /// weights or none (the mask drawn inside f from a fixed seed: every evaluation draws the
    /// same one); the scale given or defaulted. Then self-attention (`q = k = v`, one input
    /// reaching the op three times) with the same options.
    #[test]
    fn gg_scaled_dot_product_attention(
        b in 1usize..=2, l in 1usize..=3, s in 1usize..=3, d in 1usize..=3, dv in 1usize..=3,
        masked in 0u8..3, p in prop::sample::select(vec![0.0, 0.3, 0.6]),
        scale in prop_oneof![Just(None), Just(Some(0.7f64))], seed in any::<u64>(),
    ) {
        let gen = &mut Generator::new(seed);
        let (q, k, v) = (input(&[b, d, l], Values::Any, gen), input(&[b, s, d], Values::Any, gen), input(&[b, s, dv], Values::Any, gen));
        let mask = |l, s, gen: &mut Generator| match masked {
            0 => None,
            1 => Some(input(&[l, s], Values::Any, gen)),
            _ => Some(causal_mask(l, s)),
        };
        let (cross, own) = (mask(l, s, gen), mask(l, l, gen));
        let attend = |q: &Var<f64>, k: &Var<f64>, v: &Var<f64>, mask: Option<&Tensor<f64>>| {
            fused::scaled_dot_product_attention(q, k, v, mask, p, scale, &mut Generator::new(seed))
        };
        check(|v| attend(&v[0].transpose(1, 2)?, &v[1], &v[2], cross.as_ref()), &[q.clone(), k, v])?;
        check(|v| attend(&v[0], &v[0], &v[0], own.as_ref()), &[q.transpose(1, 2).unwrap().contiguous()])?;
    }
}

/// A transpose of the last two dims for a value of rank 2 or more (itself otherwise): a
/// non-contiguous view where the rank allows one.
trait TransposeAny {
    fn t_or_transpose_any(&self) -> Result<Var<f64>>;
}
impl TransposeAny for Var<f64> {
    fn t_or_transpose_any(&self) -> Result<Var<f64>> {
        let n = self.value().ndim();
        if n >= 2 {
            self.transpose(n - 2, n - 1)
        } else {
            Ok(self.clone())
        }
    }
}

/// `t()` for a matrix, a transpose of the last two dims otherwise.
trait TOrTranspose {
    fn t_or_transpose(&self) -> Result<Var<f64>>;
}
impl TOrTranspose for Var<f64> {
    fn t_or_transpose(&self) -> Result<Var<f64>> {
        let n = self.value().ndim();
        if n == 2 {
            self.t()
        } else {
            self.transpose(n - 2, n - 1)
        }
    }
}

// ─── coverage ────────────────────────────────────────────────────────────────

/// Every check of this file, run once more by the coverage test.
const CHECKS: &[(&str, fn())] = &[
    ("gg_add", gg_add),
    ("gg_sub", gg_sub),
    ("gg_mul", gg_mul),
    ("gg_div", gg_div),
    ("gg_maximum_minimum", gg_maximum_minimum),
    ("gg_scalar_ops", gg_scalar_ops),
    ("gg_powf", gg_powf),
    ("gg_exp_log_sqrt", gg_exp_log_sqrt),
    ("gg_tanh_sigmoid", gg_tanh_sigmoid),
    ("gg_unary_maths", gg_unary_maths),
    ("gg_relu_abs", gg_relu_abs),
    ("gg_gelu_tanh", gg_gelu_tanh),
    ("gg_sum_mean", gg_sum_mean),
    ("gg_softmax", gg_softmax),
    ("gg_matmul", gg_matmul),
    ("gg_views", gg_views),
    ("gg_narrow_cat_stack", gg_narrow_cat_stack),
    ("gg_expand_sum_to", gg_expand_sum_to),
    ("gg_dropout", gg_dropout),
    ("gg_linear", gg_linear),
    ("gg_gelu", gg_gelu),
    ("gg_erf", gg_erf),
    ("gg_layer_norm", gg_layer_norm),
    ("gg_max", gg_max),
    ("gg_index_select", gg_index_select),
    ("gg_gather", gg_gather),
    ("gg_conv2d", gg_conv2d),
    ("gg_conv2d_backward", gg_conv2d_backward),
    ("gg_max_pool2d", gg_max_pool2d),
    ("gg_conv2d_max_pool2d", gg_conv2d_max_pool2d),
    ("gg_avg_pool2d", gg_avg_pool2d),
    ("gg_dropout_family", gg_dropout_family),
    ("gg_scaled_dot_product_attention", gg_scaled_dot_product_attention),
];

#[test]
fn every_recorded_op_has_double_backward_checked() {
    let own = include_str!("gradgradcheck.rs");
    let defined: BTreeSet<&str> = golden::fn_names(own)
        .into_iter()
        .filter(|&(name, rest)| rest.starts_with('(') && name.starts_with("gg_"))
        .map(|(n, _)| n)
        .collect();
    let listed: BTreeSet<&str> = CHECKS.iter().map(|(name, _)| *name).collect();
    assert_eq!(defined, listed, "CHECKS must list every `fn gg_*` of this file");
    for (_, check) in CHECKS {
        check();
    }
    let seen = tapegrad_autograd::gradgradchecked_ops();
    let names = golden::backward_op_names(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops"));
    assert!(names.len() >= 40, "only {} op names found: {names:?}", names.len());
    let missing: Vec<&String> = names.iter().filter(|n| !seen.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "ops without a passing gradgradcheck: {missing:?}");
}
