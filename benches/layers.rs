//! The layers of the examples' models (`examples/common/models.rs`), in f32 on 1 and 2 rayon
//! threads, each timed as `forward` alone (recorded on the tape, the graph then dropped) and as
//! `forward+backward` (the same forward, `backward_with` a fixed random upstream gradient of the
//! output's shape, then `zero_grad` on the leaves). Inputs, weights and biases are
//! `Var::parameter`s built once outside the timed loop.
//!
//! - `conv2d`: the CNN's two convolutions, 3 x 3, stride 1, padding 1, batch 64:
//!   `l1_1to16_28x28` (`x [64,1,28,28]`, `w [16,1,3,3]`, `b [16]`) and `l2_16to32_14x14`
//!   (`x [64,16,14,14]`, `w [32,16,3,3]`, `b [32]`). Throughput is in multiply-adds,
//!   `N·C_out·H_out·W_out·C_in·kh·kw` for the forward and 3x that for forward+backward (the
//!   input gradient and the weight gradient each cost as much as the forward), so criterion's
//!   `thrpt` line is MAC/s.
//! - `max_pool2d`: kernel 2, stride 2, padding 0 on the CNN's pre-pooling maps,
//!   `64x16x28x28` and `64x32x14x14`. Throughput is the input's bytes.
//! - `conv2d_max_pool2d`: the CNN's two blocks' convolution and the 2 x 2 max pool after it
//!   (kernel 2, stride 2), the fused op `Var::conv2d_max_pool2d` that `Sequential` runs, on the
//!   shapes of `conv2d` above (`l1_1to16_28x28`, `l2_16to32_14x14`), and the same as the two ops
//!   `conv2d` then `max_pool2d` (`..._two_ops`), for comparison. Throughput is in multiply-adds, as
//!   for `conv2d`.
//! - `layer_norm`: the row transformer's `x [64,28,64]` normalised over the last dim, weight and
//!   bias `[64]`, eps 1e-5. Throughput is the input's bytes.
//! - `softmax`: along the last dim of the transformer's attention scores `[64,4,28,28]`.
//!   Throughput is the input's bytes.
//! - `attention`: `MultiheadAttention(64, 4 heads, dropout 0)` self-attention on `x [64,28,64]`;
//!   forward+backward also zeroes the module's parameter gradients; and the heads' attention
//!   alone, `fused::scaled_dot_product_attention` on `q, k, v [64,4,28,16]` with attention
//!   dropout 0.1. No throughput.
//! - `linear`: the row transformer's fused linear layers on its `64 x 28` token rows,
//!   `fused::linear(x [1792, in], w [out, in], b [out])`: `1792x64to64` (each of the attention's
//!   four projections), `1792x64to128` (`linear1`) and `1792x128to64` (`linear2`). Throughput is in
//!   multiply-adds, `rows·in·out` for the forward and 3x that for forward+backward (the input
//!   gradient and the weight gradient each cost as much as the forward).
//!
//! `conv2d` and `attention` use flat sampling (the same iteration count in every sample): their
//! forward+backward takes 10-30 ms, too slow for linear sampling's 210 iterations in 3 s.
//!
//! Benchmark ids are `<group>/<shape>/<forward|forward+backward>/<threads>t`.
//!
//! Run: `cargo bench --bench layers -- --warm-up-time 1 --measurement-time 3`.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use rayon::ThreadPool;
use tapegrad::autograd::fused::scaled_dot_product_attention;
use tapegrad::nn::MultiheadAttention;
use tapegrad::prelude::*;

/// Batch size of the examples.
const BATCH: usize = 64;
/// Rows per digit (the transformer's sequence length) and pixels per row.
const SEQ: usize = 28;
/// The transformer's width.
const D_MODEL: usize = 64;
/// The transformer's heads.
const HEADS: usize = 4;

/// One pool per thread count.
fn pools() -> Vec<(usize, ThreadPool)> {
    [1usize, 2]
        .into_iter()
        .map(|threads| (threads, rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()))
        .collect()
}

/// Bytes of an f32 tensor of this shape.
fn bytes(shape: &[usize]) -> u64 {
    (shape.iter().product::<usize>() * std::mem::size_of::<f32>()) as u64
}

/// Times `forward` alone and forward + `backward_with(dy)` + `zero_grad` of `leaves` (and
/// `after`), on 1 and 2 threads, as `<what>/forward` and `<what>/forward+backward`.
fn fwd_bwd(
    group: &mut BenchmarkGroup<'_, WallTime>,
    what: &str,
    forward: impl Fn() -> Var + Sync,
    leaves: &[&Var],
    after: impl Fn() + Sync,
    fwd_throughput: Option<Throughput>,
    bwd_throughput: Option<Throughput>,
) {
    let dy = Tensor::<f32>::randn(&forward().shape(), &mut Generator::new(7));
    for (threads, pool) in pools() {
        if let Some(t) = fwd_throughput.clone() {
            group.throughput(t);
        }
        group.bench_function(BenchmarkId::new(format!("{what}/forward"), format!("{threads}t")), |b| {
            pool.install(|| b.iter(&forward))
        });
        if let Some(t) = bwd_throughput.clone() {
            group.throughput(t);
        }
        group.bench_function(BenchmarkId::new(format!("{what}/forward+backward"), format!("{threads}t")), |b| {
            pool.install(|| {
                b.iter(|| {
                    forward().backward_with(&dy, false).unwrap();
                    for leaf in leaves {
                        leaf.zero_grad();
                    }
                    after();
                })
            })
        });
    }
}

/// The CNN's two convolutions: (name, N, C_in, H = W, C_out), 3 x 3 kernel, stride 1, padding 1
/// (H_out = H).
const CONVS: [(&str, usize, usize, usize, usize); 2] =
    [("l1_1to16_28x28", BATCH, 1, 28, 16), ("l2_16to32_14x14", BATCH, 16, 14, 32)];

/// A convolution's input, weight and bias (drawn from `init` in that order) and its
/// multiply-adds.
fn conv_operands(init: &mut Generator, (n, cin, hw, cout): (usize, usize, usize, usize)) -> ([Var<f32>; 3], u64) {
    let x = Var::parameter(Tensor::<f32>::randn(&[n, cin, hw, hw], init));
    let w = Var::parameter(Tensor::<f32>::randn(&[cout, cin, 3, 3], init).mul_scalar(0.1));
    let bias = Var::parameter(Tensor::<f32>::randn(&[cout], init));
    ([x, w, bias], (n * cout * hw * hw * cin * 3 * 3) as u64)
}

fn conv2d(c: &mut Criterion) {
    let mut init = Generator::new(0);
    let mut group = c.benchmark_group("conv2d");
    group.sample_size(20);
    // Up to ~30 ms an iteration: linear sampling's 210 iterations would overrun the time.
    group.sampling_mode(SamplingMode::Flat);
    for (what, n, cin, hw, cout) in CONVS {
        let ([x, w, bias], macs) = conv_operands(&mut init, (n, cin, hw, cout));
        fwd_bwd(
            &mut group,
            what,
            || x.conv2d(&w, Some(&bias), 1, 1).unwrap(),
            &[&x, &w, &bias],
            || {},
            Some(Throughput::Elements(macs)),
            Some(Throughput::Elements(3 * macs)),
        );
    }
    group.finish();
}

fn max_pool2d(c: &mut Criterion) {
    let mut init = Generator::new(1);
    let mut group = c.benchmark_group("max_pool2d");
    group.sample_size(20);
    for (what, shape) in [("64x16x28x28", [BATCH, 16, 28, 28]), ("64x32x14x14", [BATCH, 32, 14, 14])] {
        let x = Var::parameter(Tensor::<f32>::randn(&shape, &mut init));
        let t = Throughput::Bytes(bytes(&shape));
        fwd_bwd(&mut group, what, || x.max_pool2d(2, 2, 0).unwrap(), &[&x], || {}, Some(t.clone()), Some(t));
    }
    group.finish();
}

fn conv2d_max_pool2d(c: &mut Criterion) {
    let mut init = Generator::new(0);
    let mut group = c.benchmark_group("conv2d_max_pool2d");
    group.sample_size(20);
    group.sampling_mode(SamplingMode::Flat);
    // The shapes of `conv2d` (the same inputs: the same generator seed and order).
    for (what, n, cin, hw, cout) in CONVS {
        let ([x, w, bias], macs) = conv_operands(&mut init, (n, cin, hw, cout));
        let fused = || x.conv2d_max_pool2d(&w, Some(&bias), 1, 1, [2, 2, 0]).unwrap();
        let two_ops = || x.conv2d(&w, Some(&bias), 1, 1).unwrap().max_pool2d(2, 2, 0).unwrap();
        let (fwd, bwd) = (Some(Throughput::Elements(macs)), Some(Throughput::Elements(3 * macs)));
        fwd_bwd(&mut group, what, fused, &[&x, &w, &bias], || {}, fwd.clone(), bwd.clone());
        fwd_bwd(&mut group, &format!("{what}_two_ops"), two_ops, &[&x, &w, &bias], || {}, fwd, bwd);
    }
    group.finish();
}

fn layer_norm(c: &mut Criterion) {
    let mut init = Generator::new(2);
    let mut group = c.benchmark_group("layer_norm");
    group.sample_size(20);
    let shape = [BATCH, SEQ, D_MODEL];
    let x = Var::parameter(Tensor::<f32>::randn(&shape, &mut init));
    let w = Var::parameter(Tensor::<f32>::randn(&[D_MODEL], &mut init));
    let bias = Var::parameter(Tensor::<f32>::randn(&[D_MODEL], &mut init));
    let t = Throughput::Bytes(bytes(&shape));
    fwd_bwd(
        &mut group,
        "64x28x64",
        || x.layer_norm(&[D_MODEL], Some(&w), Some(&bias), 1e-5).unwrap(),
        &[&x, &w, &bias],
        || {},
        Some(t.clone()),
        Some(t),
    );
    group.finish();
}

fn softmax(c: &mut Criterion) {
    let mut init = Generator::new(3);
    let mut group = c.benchmark_group("softmax");
    group.sample_size(20);
    let shape = [BATCH, HEADS, SEQ, SEQ];
    let x = Var::parameter(Tensor::<f32>::randn(&shape, &mut init));
    let t = Throughput::Bytes(bytes(&shape));
    fwd_bwd(&mut group, "64x4x28x28", || x.softmax(3).unwrap(), &[&x], || {}, Some(t.clone()), Some(t));
    group.finish();
}

fn attention(c: &mut Criterion) {
    let mut gen = Generator::new(4);
    let mha = MultiheadAttention::new(D_MODEL, HEADS, 0.0, &mut gen).unwrap();
    let x = Var::parameter(Tensor::<f32>::randn(&[BATCH, SEQ, D_MODEL], &mut gen));
    let mut group = c.benchmark_group("attention");
    group.sample_size(20);
    // Up to ~20 ms an iteration: linear sampling's 210 iterations would overrun the time.
    group.sampling_mode(SamplingMode::Flat);
    fwd_bwd(&mut group, "mha_64x28x64_4h", || mha.forward(&x).unwrap(), &[&x], || mha.zero_grad(), None, None);
    // The heads' attention alone: `[batch, heads, L, D]` operands, attention dropout 0.1.
    let head = [BATCH, HEADS, SEQ, D_MODEL / HEADS];
    let (q, k, v) = (
        Var::parameter(Tensor::<f32>::randn(&head, &mut gen)),
        Var::parameter(Tensor::<f32>::randn(&head, &mut gen)),
        Var::parameter(Tensor::<f32>::randn(&head, &mut gen)),
    );
    let drop_gen = std::sync::Mutex::new(Generator::new(5));
    let sdpa = || {
        let mut gen = drop_gen.lock().unwrap();
        scaled_dot_product_attention(&q, &k, &v, None, 0.1, None, &mut gen).unwrap()
    };
    fwd_bwd(&mut group, "sdpa_64x4x28x16_p0.1", sdpa, &[&q, &k, &v], || {}, None, None);
    group.finish();
}

fn linear(c: &mut Criterion) {
    let mut init = Generator::new(6);
    let mut group = c.benchmark_group("linear");
    group.sample_size(20);
    for (fan_in, fan_out) in [(D_MODEL, D_MODEL), (D_MODEL, 2 * D_MODEL), (2 * D_MODEL, D_MODEL)] {
        let rows = BATCH * SEQ;
        let x = Var::parameter(Tensor::<f32>::randn(&[rows, fan_in], &mut init));
        let w = Var::parameter(Tensor::<f32>::randn(&[fan_out, fan_in], &mut init).mul_scalar(0.1));
        let bias = Var::parameter(Tensor::<f32>::randn(&[fan_out], &mut init));
        let macs = (rows * fan_in * fan_out) as u64;
        fwd_bwd(
            &mut group,
            &format!("{rows}x{fan_in}to{fan_out}"),
            || tapegrad::autograd::fused::linear(&x, &w, Some(&bias)).unwrap(),
            &[&x, &w, &bias],
            || {},
            Some(Throughput::Elements(macs)),
            Some(Throughput::Elements(3 * macs)),
        );
    }
    group.finish();
}

criterion_group!(benches, conv2d, max_pool2d, conv2d_max_pool2d, layer_norm, softmax, attention, linear);
criterion_main!(benches);
