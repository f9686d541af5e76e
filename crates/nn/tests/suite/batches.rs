//! Seeded mini-batches, permutations, `Dataset::subset` and k-fold splits, on small synthetic
//! datasets, where each image row carries its own index (the same on the shipped `mnist-10k`, which
//! lies outside this crate, is in the facade package's `tests/suite/mnist.rs`).

use proptest::prelude::*;
use tapegrad_golden::check_partition;
use tapegrad_nn::data::{kfold, permutation, Batches, Dataset};
use tapegrad_nn::Error;
use tapegrad_tensor::{Generator, Tensor};

// ─── helpers ───────────────────────────────────────────────────────────────────

/// `n` samples of 3 features; row `i` is `[i, i + 0.25, -i]` and its label is `i % 7`, so a
/// batch shows which samples it holds and whether images and labels stayed together.
fn indexed(n: usize) -> Dataset {
    let x: Vec<f32> = (0..n).flat_map(|i| [i as f32, i as f32 + 0.25, -(i as f32)]).collect();
    Dataset::new(Tensor::from_vec(x, &[n, 3]).unwrap(), (0..n).map(|i| i % 7).collect()).unwrap()
}

/// The sample indices of a batch of [`indexed`], checking that each row and label belong together.
fn ids(x: &Tensor, y: &[usize]) -> Vec<usize> {
    assert_eq!(x.shape(), &[y.len(), 3]);
    let v = x.to_vec();
    (0..y.len())
        .map(|r| {
            let i = v[3 * r] as usize;
            assert_eq!(&v[3 * r..3 * r + 3], &[i as f32, i as f32 + 0.25, -(i as f32)]);
            assert_eq!(y[r], i % 7, "label of sample {i}");
            i
        })
        .collect()
}

fn epoch(ds: &Dataset, batch_size: usize, gen: Option<&mut Generator>) -> Vec<(Tensor, Vec<usize>)> {
    Batches::new(ds, batch_size, gen).unwrap().collect::<Result<_, _>>().unwrap()
}

fn epoch_ids(batches: &[(Tensor, Vec<usize>)]) -> Vec<usize> {
    batches.iter().flat_map(|(x, y)| ids(x, y)).collect()
}

// ─── permutations ──────────────────────────────────────────────────────────────

#[test]
fn permutation_is_pinned_per_seed() {
    // The same seed gives this exact order on every machine (Fisher-Yates over ChaCha8).
    let p = permutation(10, &mut Generator::new(2024));
    assert_eq!(p, PINNED);
    assert_eq!(permutation(0, &mut Generator::new(0)), Vec::<usize>::new());
    assert_eq!(permutation(1, &mut Generator::new(0)), [0]);
}

// Recorded from this implementation: a change here means saved shuffles no longer replay.
const PINNED: [usize; 10] = [0, 3, 8, 7, 6, 2, 5, 4, 9, 1];

#[test]
fn permutation_is_uniform_over_the_six_orders_of_three() {
    let mut gen = Generator::new(11);
    let mut counts = std::collections::HashMap::new();
    let trials = 6000;
    for _ in 0..trials {
        *counts.entry(permutation(3, &mut gen)).or_insert(0usize) += 1;
    }
    assert_eq!(counts.len(), 6);
    // Each order expects 1000 (sd ≈ 29); 150 is more than 5 sd.
    for (p, c) in counts {
        assert!((850..=1150).contains(&c), "{p:?} came {c} times of {trials}");
    }
}

// ─── batches ───────────────────────────────────────────────────────────────────

#[test]
fn batch_shapes_and_the_last_partial_batch() {
    let ds = indexed(10);
    let sizes = |b: Batches| b.map(|r| r.unwrap().1.len()).collect::<Vec<_>>();
    assert_eq!(sizes(Batches::new(&ds, 4, None).unwrap()), [4, 4, 2]);
    assert_eq!(sizes(Batches::new(&ds, 4, None).unwrap().drop_last(true)), [4, 4]);
    assert_eq!(sizes(Batches::new(&ds, 5, None).unwrap().drop_last(true)), [5, 5]);
    assert_eq!(sizes(Batches::new(&ds, 1, None).unwrap()), [1; 10]);
    assert_eq!(sizes(Batches::new(&ds, 32, None).unwrap()), [10]);
    assert_eq!(sizes(Batches::new(&ds, 32, None).unwrap().drop_last(true)), Vec::<usize>::new());
    // The length is known up front and shrinks as batches are taken.
    let mut b = Batches::new(&ds, 3, Some(&mut Generator::new(0))).unwrap();
    assert_eq!(b.len(), 4);
    b.next();
    assert_eq!(b.len(), 3);
    assert_eq!(b.by_ref().count(), 3);
    assert!(b.next().is_none(), "stays exhausted");
    // Without a generator the order is the dataset's.
    assert_eq!(epoch_ids(&epoch(&ds, 4, None)), (0..10).collect::<Vec<_>>());
}

#[test]
fn an_empty_dataset_has_no_batches_and_batch_size_zero_is_refused() {
    let empty = indexed(0);
    assert_eq!(Batches::new(&empty, 4, Some(&mut Generator::new(0))).unwrap().count(), 0);
    let err = Batches::new(&indexed(3), 0, None).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { op: "Batches::new", .. }), "{err:?}");
    assert!(err.to_string().contains("Batches::new"), "{err}");
}

#[test]
fn every_sample_comes_exactly_once_per_shuffled_epoch() {
    let ds = indexed(103);
    let mut gen = Generator::new(7);
    for _ in 0..3 {
        let batches = epoch(&ds, 10, Some(&mut gen));
        assert_eq!(batches.len(), 11);
        assert!(batches[..10].iter().all(|(x, y)| x.shape() == [10, 3] && y.len() == 10));
        assert_eq!(batches[10].0.shape(), &[3, 3]);
        let mut seen = epoch_ids(&batches);
        assert_ne!(seen, (0..103).collect::<Vec<_>>(), "shuffled");
        seen.sort_unstable();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
    }
    // With drop_last, each sample comes at most once and only the remainder is left out.
    let b = Batches::new(&ds, 10, Some(&mut Generator::new(7))).unwrap().drop_last(true);
    let order = b.order().to_vec();
    let got = epoch_ids(&b.collect::<Result<Vec<_>, _>>().unwrap());
    assert_eq!(got, order[..100]);
}

#[test]
fn the_same_seed_replays_the_same_epochs_and_other_seeds_differ() {
    let ds = indexed(50);
    let run = |seed: u64| {
        let mut gen = Generator::new(seed);
        (0..3).map(|_| epoch_ids(&epoch(&ds, 8, Some(&mut gen)))).collect::<Vec<_>>()
    };
    let a = run(1);
    assert_eq!(a, run(1), "same seed, same sequence of epochs");
    assert_ne!(a[0], a[1], "the generator advances: the next epoch has a new order");
    assert_ne!(a[1], a[2]);
    let b = run(2);
    assert_ne!(a[0], b[0], "another seed, another order");
    // The order is the documented one: `permutation` on the same generator.
    assert_eq!(a[0], permutation(50, &mut Generator::new(1)));
}

// ─── subset ────────────────────────────────────────────────────────────────────

#[test]
fn subset_keeps_images_and_labels_together() {
    let ds = indexed(20);
    let sub = ds.subset(&[5, 0, 19, 5]).unwrap();
    assert_eq!(sub.len(), 4);
    assert_eq!(ids(sub.images(), sub.labels()), [5, 0, 19, 5]);
    assert_eq!(ds.subset(&[]).unwrap().images().shape(), &[0, 3]);
    let err = ds.subset(&[3, 20]).unwrap_err();
    assert!(err.to_string().contains("Dataset::subset") && err.to_string().contains("20"), "{err}");
}

// ─── kfold ─────────────────────────────────────────────────────────────────────

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn kfold_is_a_partition(n in 2usize..300, k_frac in 0.0f64..1.0, seed in any::<u64>()) {
        let k = 2 + ((n - 1) as f64 * k_frac) as usize; // 2..=n
        let k = k.min(n);
        let folds = kfold(n, k, seed).unwrap();
        check_partition(n, k, &folds);
        prop_assert_eq!(folds, kfold(n, k, seed).unwrap(), "deterministic");
    }

    #[test]
    fn kfold_refuses_k_outside_2_to_n(n in 0usize..50, k in 0usize..60) {
        let r = kfold(n, k, 0);
        if (2..=n).contains(&k) {
            prop_assert!(r.is_ok());
        } else {
            let err = r.unwrap_err();
            prop_assert!(err.to_string().contains("kfold"), "{}", err);
        }
    }
}

#[test]
fn kfold_shuffles_by_seed() {
    let a = kfold(100, 4, 0).unwrap();
    assert_eq!(a, kfold(100, 4, 0).unwrap());
    assert_ne!(a, kfold(100, 4, 1).unwrap(), "another seed, other folds");
    assert_ne!(a[0].1, (0..25).collect::<Vec<_>>(), "shuffled, not consecutive");
    // Leave-one-out is k = n.
    let loo = kfold(5, 5, 9).unwrap();
    check_partition(5, 5, &loo);
    assert!(loo.iter().all(|(t, v)| t.len() == 4 && v.len() == 1));
}
