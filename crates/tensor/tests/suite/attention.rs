//! `scaled_dot_product_attention`, its backward and `softmax_backward` against the compositions
//! they replace (`matmul`, `mul_scalar`, `add`, `softmax`, the dropout mask, `matmul`; and
//! `y · (dy − Σ dy·y)`), bit for bit in f32 along the last dim: random batch dims and lengths, masks that broadcast
//! (with stride-0 and transposed rows), dropout, fully masked rows; large products give the same
//! bits on one and two threads; errors name the op and the shapes.

use proptest::prelude::*;
use tapegrad_tensor::ops::attention::{AttentionDropout, AttentionOptions};
use tapegrad_tensor::{BitMask, Generator, Tensor, TensorNew};

/// The scaled, masked softmax and the output, composed from separate ops.
fn composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
    dropout: Option<(&BitMask, f64)>,
) -> (Tensor, Tensor) {
    let n = q.ndim();
    let mut s = q.matmul(&k.transpose(n - 2, n - 1).unwrap()).unwrap().mul_scalar(scale);
    if let Some(m) = mask {
        s = s.add(m).unwrap();
    }
    let w = s.softmax(n - 1).unwrap();
    let kept = match dropout {
        Some((m, p)) => m.scale(&w, BitMask::keep_scale(p) as f32).unwrap(),
        None => w.clone(),
    };
    (w, kept.matmul(v).unwrap())
}

/// The backward of [`composed`], written out with separate ops.
fn composed_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    scale: f32,
    dropout: Option<(&BitMask, f64)>,
) -> [Tensor; 3] {
    let n = q.ndim();
    let keep = |t: &Tensor| match dropout {
        Some((m, p)) => m.scale(t, BitMask::keep_scale(p) as f32).unwrap(),
        None => t.clone(),
    };
    let dv = keep(w).transpose(n - 2, n - 1).unwrap().matmul(dy).unwrap();
    let dw = keep(&dy.matmul(&v.transpose(n - 2, n - 1).unwrap()).unwrap());
    let dot = dw.mul(w).unwrap().sum(&[n - 1], true).unwrap();
    let ds = dw.sub(&dot).unwrap().mul(w).unwrap().mul_scalar(scale);
    let dq = ds.matmul(k).unwrap();
    let dk = ds.transpose(n - 2, n - 1).unwrap().matmul(q).unwrap();
    [dq, dk, dv]
}

fn same_bits(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_vec(), want.to_vec());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{what}[{i}]: {a} vs {b}");
    }
}

/// The masks a case can take: none, `[L, S]`, `[B0, 1, 1, S]` (key padding), `[L, 1]` expanded
/// along `S` (a stride-0 row), or `[S, L]` transposed (rows with stride L).
fn make_mask(kind: u8, b0: usize, l: usize, s: usize, gen: &mut Generator) -> Option<Tensor> {
    match kind {
        0 => None,
        1 => Some(Tensor::randn(&[l, s], gen)),
        2 => {
            // Some keys forbidden, never all of them.
            let pad: Vec<f32> =
                (0..b0 * s).map(|i| if i % s != 0 && i % 3 == 1 { f32::NEG_INFINITY } else { 0.0 }).collect();
            Some(Tensor::from_vec(pad, &[b0, 1, 1, s]).unwrap())
        }
        3 => Some(Tensor::randn(&[l, 1], gen).expand(&[l, s]).unwrap()),
        _ => Some(Tensor::randn(&[s, l], gen).t().unwrap()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::common::cases(64)))]

    #[test]
    fn matches_the_composition(
        b0 in 1usize..=3, h in 1usize..=3, l in 1usize..=9, s in 1usize..=9, d in 1usize..=17, dv in 1usize..=17,
        mask_kind in 0u8..5, p in prop_oneof![Just(0.0f64), 0.05f64..0.9], seed in any::<u64>(),
        heads_split in any::<bool>(),
    ) {
        let gen = &mut Generator::new(seed);
        // Heads split from projections (`[B, L, H·D]` reshaped and permuted, as a multi-head
        // layer makes them), or contiguous blocks with a transposed key: the op reads them as
        // given.
        let split = |rows: usize, width: usize, gen: &mut Generator| {
            Tensor::randn(&[b0, rows, h * width], gen).reshape(&[b0, rows, h, width]).unwrap().permute(&[0, 2, 1, 3]).unwrap()
        };
        let (q, k, v) = if heads_split {
            (split(l, d, gen), split(s, d, gen), split(s, dv, gen))
        } else {
            let k = Tensor::randn(&[b0, h, d, s], gen).transpose(2, 3).unwrap();
            (Tensor::randn(&[b0, h, l, d], gen), k, Tensor::randn(&[b0, h, s, dv], gen))
        };
        let mask = make_mask(mask_kind, b0, l, s, gen);
        let scale = 1.0 / (d as f32).sqrt();
        let bits = (p > 0.0).then(|| BitMask::bernoulli(seed, 3, p, b0 * h * l * s).unwrap());
        let dropout = bits.as_ref().map(|m| AttentionDropout { mask: m, p });
        let pair = bits.as_ref().map(|m| (m, p));

        let options = AttentionOptions { attn_mask: mask.as_ref(), scale: Some(f64::from(scale)), dropout };
        let a = q.scaled_dot_product_attention(&k, &v, &options).unwrap();
        let (w, out) = composed(&q, &k, &v, mask.as_ref(), scale, pair);
        same_bits("weights", &a.weights, &w);
        same_bits("out", &a.out, &out);
        if heads_split {
            // The output has the query's layout: merging the heads back is a view.
            let merged = a.out.permute(&[0, 2, 1, 3]).unwrap();
            prop_assert!(merged.is_contiguous() || l == 1 || h == 1, "{:?}", a.out.strides());
        }

        let dy = Tensor::randn(&[b0, h, l, dv], gen);
        let g = q.scaled_dot_product_attention_backward(&k, &v, &a.weights, &dy, &options, [true; 3]).unwrap();
        let [dq, dk, dvv] = composed_backward(&q, &k, &v, &w, &dy, scale, pair);
        same_bits("dq", g.dq.as_ref().unwrap(), &dq);
        same_bits("dk", g.dk.as_ref().unwrap(), &dk);
        same_bits("dv", g.dv.as_ref().unwrap(), &dvv);
        if heads_split && l > 1 && s > 1 && h > 1 {
            // Each gradient has its input's layout, so the heads' merge backward is a view.
            for (name, grad) in [("dq", &g.dq), ("dk", &g.dk), ("dv", &g.dv)] {
                let merged = grad.as_ref().unwrap().permute(&[0, 2, 1, 3]).unwrap();
                prop_assert!(merged.is_contiguous(), "{name}: {:?}", grad.as_ref().unwrap().strides());
            }
        }

        // Only what is asked for is computed.
        let only_v = q.scaled_dot_product_attention_backward(&k, &v, &a.weights, &dy, &options, [false, false, true]).unwrap();
        prop_assert!(only_v.dq.is_none() && only_v.dk.is_none());
        same_bits("dv alone", only_v.dv.as_ref().unwrap(), &dvv);
    }

    #[test]
    fn softmax_backward_matches_the_composition(rows in 1usize..=6, n in 1usize..=40, dim in 0usize..2, seed in any::<u64>()) {
        let gen = &mut Generator::new(seed);
        let y = Tensor::randn(&[rows, n], gen).softmax(dim).unwrap();
        let dy = Tensor::randn(&[rows, n], gen);
        let dot = dy.mul(&y).unwrap().sum(&[dim], true).unwrap();
        let want = dy.sub(&dot).unwrap().mul(&y).unwrap();
        let got = y.softmax_backward(&dy, dim).unwrap();
        if dim == 1 {
            same_bits("softmax_backward", &got, &want);
        } else {
            // Along dim 0 the composed sum adds rows in another order: equal to rounding.
            for (a, b) in got.to_vec().iter().zip(want.to_vec()) {
                prop_assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }
}

/// Rows longer than one chunk and enough of them to split: the same bits on 1 and 2 threads,
/// f64 as well.
#[test]
fn thread_count_does_not_change_the_bits() {
    let gen = &mut Generator::new(5);
    let q = Tensor::<f64>::randn(&[8, 4, 64, 16], gen);
    let k = Tensor::<f64>::randn(&[8, 4, 3000, 16], gen);
    let v = Tensor::<f64>::randn(&[8, 4, 3000, 8], gen);
    let dy = Tensor::<f64>::randn(&[8, 4, 64, 8], gen);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let options = AttentionOptions { scale: Some(0.25), ..AttentionOptions::default() };
            let a = q.scaled_dot_product_attention(&k, &v, &options).unwrap();
            let g = q.scaled_dot_product_attention_backward(&k, &v, &a.weights, &dy, &options, [true; 3]).unwrap();
            (a.out.to_vec(), g.dq.unwrap().to_vec(), g.dk.unwrap().to_vec(), g.dv.unwrap().to_vec())
        })
    };
    assert_eq!(run(1), run(2));
}

/// Many small blocks (the fused path: a transformer's heads, split from projections), with a
/// mask and dropout: the same bits on 1 and 2 threads.
#[test]
fn thread_count_does_not_change_the_bits_of_small_blocks() {
    let gen = &mut Generator::new(6);
    let split = |rows: usize, gen: &mut Generator| {
        Tensor::<f32>::randn(&[16, rows, 64], gen).reshape(&[16, rows, 4, 16]).unwrap().permute(&[0, 2, 1, 3]).unwrap()
    };
    let (q, k, v) = (split(28, gen), split(28, gen), split(28, gen));
    let dy = split(28, gen);
    let mask = Tensor::<f32>::randn(&[28, 28], gen);
    let bits = BitMask::bernoulli(9, 0, 0.1, 16 * 4 * 28 * 28).unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let dropout = Some(AttentionDropout { mask: &bits, p: 0.1 });
            let options = AttentionOptions { attn_mask: Some(&mask), scale: None, dropout };
            let a = q.scaled_dot_product_attention(&k, &v, &options).unwrap();
            let g = q.scaled_dot_product_attention_backward(&k, &v, &a.weights, &dy, &options, [true; 3]).unwrap();
            (a.out.to_vec(), a.weights.to_vec(), g.dq.unwrap().to_vec(), g.dk.unwrap().to_vec(), g.dv.unwrap().to_vec())
        })
    };
    assert_eq!(run(1), run(2));
}

/// A row whose every key is forbidden is NaN, as in PyTorch; the other rows are unaffected.
#[test]
fn a_fully_masked_row_is_nan() {
    let q = Tensor::<f32>::ones(&[1, 2, 2]);
    let k = Tensor::<f32>::ones(&[1, 3, 2]);
    let v = Tensor::<f32>::ones(&[1, 3, 1]);
    let inf = f32::NEG_INFINITY;
    let mask = Tensor::from_vec(vec![inf, inf, inf, 0.0, inf, 0.0], &[2, 3]).unwrap();
    let options = AttentionOptions { attn_mask: Some(&mask), scale: Some(1.0), dropout: None };
    let a = q.scaled_dot_product_attention(&k, &v, &options).unwrap();
    let w = a.weights.to_vec();
    assert!(w[..3].iter().all(|x| x.is_nan()), "{w:?}");
    assert_eq!(&w[3..], &[0.5, 0.0, 0.5]);
    assert!(a.out.to_vec()[0].is_nan());
    assert_eq!(a.out.to_vec()[1], 1.0);
}

#[test]
fn errors_name_the_op_and_the_shapes() {
    let q = Tensor::<f32>::zeros(&[2, 3, 4]);
    let k = Tensor::<f32>::zeros(&[2, 5, 4]);
    let v = Tensor::<f32>::zeros(&[2, 5, 6]);
    let attend = |q: &Tensor, k: &Tensor, v: &Tensor, m: Option<&Tensor>| {
        q.scaled_dot_product_attention(k, v, &AttentionOptions { attn_mask: m, ..AttentionOptions::default() })
            .unwrap_err()
            .to_string()
    };
    let e = attend(&q, &Tensor::zeros(&[2, 5, 3]), &v, None);
    assert!(e.contains("scaled_dot_product_attention") && e.contains("[2, 3, 4]") && e.contains("[2, 5, 3]"), "{e}");
    let e = attend(&q, &k, &Tensor::zeros(&[2, 4, 6]), None);
    assert!(e.contains("[2, 5, 4]") && e.contains("[2, 4, 6]"), "{e}");
    let e = attend(&q, &Tensor::zeros(&[3, 5, 4]), &v, None);
    assert!(e.contains("batch"), "{e}");
    let e = attend(&Tensor::zeros(&[4]), &Tensor::zeros(&[4]), &Tensor::zeros(&[4]), None);
    assert!(e.contains("at least 2"), "{e}");
    let e = attend(&q, &k, &v, Some(&Tensor::zeros(&[3, 4])));
    assert!(e.contains("[3, 4]") && e.contains("[2, 3, 5]") && e.contains("broadcast"), "{e}");

    let short = BitMask::from_bools(&[true; 7]);
    let e = q
        .scaled_dot_product_attention(
            &k,
            &v,
            &AttentionOptions {
                dropout: Some(AttentionDropout { mask: &short, p: 0.5 }),
                ..AttentionOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("7 bits"), "{e}");

    let w = Tensor::<f32>::zeros(&[2, 3, 5]);
    let e = q
        .scaled_dot_product_attention_backward(
            &k,
            &v,
            &w,
            &Tensor::zeros(&[2, 3, 5]),
            &AttentionOptions::default(),
            [true; 3],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("[2, 3, 5]") && e.contains("[2, 3, 6]"), "{e}");
    let e = w.softmax_backward(&Tensor::zeros(&[2, 5, 3]), 2).unwrap_err().to_string();
    assert!(e.contains("softmax_backward") && e.contains("[2, 3, 5]") && e.contains("[2, 5, 3]"), "{e}");
    let e = w.softmax_backward(&w, 3).unwrap_err().to_string();
    assert!(e.contains("softmax_backward"), "{e}");
}
