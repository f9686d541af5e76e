//! `TensorDataset` (columns of any type sharing their first dim) under `Batches`, `Ids`, and
//! models whose `forward` takes something other than one `Var` (`Module<T, I>`).

use tapegrad_nn::data::{permutation, Batches, TensorDataset};
use tapegrad_nn::loss::cross_entropy;
use tapegrad_nn::optim::{Adam, Optimizer};
use tapegrad_nn::{load, save, Embedding, Error, Ids, Linear, Module, Var};
use tapegrad_tensor::{Generator, Tensor, TensorNew};

/// `n` samples in four columns that all carry the sample's index `i`: f32 features
/// `[i, -i]`, an f64 target `[[i], [2i]]` (two trailing dims), token ids `[i, i + 1, i + 2]`
/// and a class label `i % 5`.
type Four = (Tensor<f32>, Tensor<f64>, Ids, Vec<usize>);

fn indexed(n: usize) -> TensorDataset<Four> {
    let x: Vec<f32> = (0..n).flat_map(|i| [i as f32, -(i as f32)]).collect();
    let y: Vec<f64> = (0..n).flat_map(|i| [i as f64, 2.0 * i as f64]).collect();
    let ids: Vec<usize> = (0..n).flat_map(|i| [i, i + 1, i + 2]).collect();
    TensorDataset::new((
        Tensor::from_vec(x, &[n, 2]).unwrap(),
        Tensor::from_vec(y, &[n, 2, 1]).unwrap(),
        Ids::new(ids, &[n, 3]).unwrap(),
        (0..n).map(|i| i % 5).collect(),
    ))
    .unwrap()
}

/// The sample indices of a batch of [`indexed`], checking that every column's row `r` belongs
/// to the same sample.
fn samples((x, y, ids, labels): &Four) -> Vec<usize> {
    let b = labels.len();
    assert_eq!((x.shape(), y.shape(), ids.shape()), (&[b, 2][..], &[b, 2, 1][..], &[b, 3][..]));
    let (x, y, ids) = (x.to_vec(), y.to_vec(), ids.as_slice());
    (0..b)
        .map(|r| {
            let i = x[2 * r] as usize;
            assert_eq!(x[2 * r + 1], -(i as f32));
            assert_eq!(&y[2 * r..2 * r + 2], &[i as f64, 2.0 * i as f64]);
            assert_eq!(&ids[3 * r..3 * r + 3], &[i, i + 1, i + 2]);
            assert_eq!(labels[r], i % 5);
            i
        })
        .collect()
}

#[test]
fn shuffled_batches_keep_every_column_together_and_visit_each_sample_once() {
    let data = indexed(23);
    let mut gen = Generator::new(5);
    let epoch: Vec<Four> = Batches::new(&data, 4, Some(&mut gen)).unwrap().collect::<Result<_, _>>().unwrap();
    let sizes: Vec<usize> = epoch.iter().map(|b| b.3.len()).collect();
    assert_eq!(sizes, [4, 4, 4, 4, 4, 3]);
    let order: Vec<usize> = epoch.iter().flat_map(samples).collect();
    // The same order `permutation` gives from the same seed: the sampler is `Dataset`'s.
    assert_eq!(order, permutation(23, &mut Generator::new(5)));
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..23).collect::<Vec<_>>());
    // The next epoch from the advanced generator is another order; the same seed replays both.
    let second: Vec<usize> =
        Batches::new(&data, 4, Some(&mut gen)).unwrap().flat_map(|b| samples(&b.unwrap())).collect();
    assert_ne!(second, permutation(23, &mut Generator::new(5)));
    let mut again = Generator::new(5);
    let replay: Vec<Vec<usize>> = (0..2)
        .map(|_| Batches::new(&data, 4, Some(&mut again)).unwrap().flat_map(|b| samples(&b.unwrap())).collect())
        .collect();
    assert_eq!(replay, [permutation(23, &mut Generator::new(5)), second]);
}

#[test]
fn drop_last_in_order_and_resume_work_as_for_a_dataset() {
    let data = indexed(10);
    let kept: Vec<Vec<usize>> =
        Batches::new(&data, 3, None).unwrap().drop_last(true).map(|b| samples(&b.unwrap())).collect();
    assert_eq!(kept, [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8]]);
    assert_eq!(Batches::new(&data, 3, None).unwrap().len(), 4);
    assert_eq!(Batches::new(&data, 3, None).unwrap().drop_last(true).len(), 3);
    // Resuming after two batches gives the rest of the shuffled epoch.
    let mut gen = Generator::new(1);
    let mut epoch = Batches::new(&data, 3, Some(&mut gen)).unwrap();
    epoch.next();
    epoch.next();
    let rest: Vec<Vec<usize>> = epoch.clone().map(|b| samples(&b.unwrap())).collect();
    let mut from = epoch.shuffled_from().cloned().unwrap();
    let resumed: Vec<Vec<usize>> =
        Batches::new(&data, 3, Some(&mut from)).unwrap().resume_at(2).unwrap().map(|b| samples(&b.unwrap())).collect();
    assert_eq!(resumed, rest);
    assert!(matches!(Batches::new(&data, 0, None), Err(Error::InvalidArgument { .. })));
}

#[test]
fn columns_that_disagree_on_the_number_of_samples_are_an_error_naming_the_shapes() {
    let err = TensorDataset::new((Tensor::<f32>::zeros(&[4, 3]), Ids::new(vec![0; 10], &[5, 2]).unwrap())).unwrap_err();
    match &err {
        Error::ShapeMismatch { op, lhs, rhs, .. } => {
            assert_eq!((*op, lhs.as_slice(), rhs.as_slice()), ("TensorDataset::new", &[4, 3][..], &[5, 2][..]));
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("column 1 has 5 samples where column 0 has 4"), "{err}");
    let scalar = TensorDataset::new((Tensor::<f32>::zeros(&[3]), Tensor::<f64>::scalar(1.0))).unwrap_err();
    assert!(matches!(scalar, Error::InvalidShape { op: "TensorDataset::new", .. }), "{scalar:?}");
    // Labels count as a column of shape [len].
    assert!(TensorDataset::new((Tensor::<f32>::zeros(&[3, 1]), vec![0usize, 1])).is_err());
}

#[test]
fn subset_split_and_get_select_rows_of_every_column() {
    let data = indexed(6);
    assert_eq!((data.len(), data.is_empty()), (6, false));
    assert_eq!(samples(data.subset(&[4, 1, 4]).unwrap().columns()), [4, 1, 4]);
    let (head, tail) = data.split_at(2).unwrap();
    assert_eq!((samples(head.columns()), samples(tail.columns())), (vec![0, 1], vec![2, 3, 4, 5]));
    assert_eq!(samples(&data.get(3).unwrap()), [3]);
    assert!(matches!(data.subset(&[6]), Err(Error::InvalidArgument { op: "TensorDataset::subset", .. })));
    assert!(data.split_at(7).is_err() && data.get(6).is_err());
    let empty = data.subset(&[]).unwrap();
    assert!(empty.is_empty());
    assert_eq!(Batches::new(&empty, 2, None).unwrap().count(), 0);
}

#[test]
fn ids_check_their_shape_and_convert_from_integral_floats_only() {
    assert!(matches!(Ids::new(vec![1, 2, 3], &[2, 2]), Err(Error::InvalidShape { op: "Ids::new", .. })));
    assert!(Ids::new(vec![], &[usize::MAX, 2]).is_err());
    let ids = Ids::from_floats(&Tensor::<f64>::from_vec(vec![3.0, 0.0, 7.0, 1.0], &[2, 2]).unwrap()).unwrap();
    assert_eq!((ids.as_slice(), ids.shape(), ids.max()), (&[3, 0, 7, 1][..], &[2, 2][..], Some(7)));
    assert_eq!(ids.to_tensor::<f32>().to_vec(), [3.0, 0.0, 7.0, 1.0]);
    assert_eq!(ids.reshape(&[4]).unwrap().shape(), &[4]);
    assert!(ids.reshape(&[3]).is_err());
    for bad in [-1.0, 0.5, f64::NAN, f64::INFINITY, 1e300] {
        let err = Ids::from_floats(&Tensor::<f64>::from_vec(vec![1.0, bad], &[2]).unwrap()).unwrap_err();
        assert!(matches!(err, Error::InvalidShape { op: "Ids::from_floats", .. }), "{bad}: {err:?}");
    }
    assert!(Ids::from(vec![1, 2]).index_select(&[2]).is_err());
    assert!(Ids::new(vec![5], &[]).unwrap().index_select(&[0]).is_err());
}

/// A model of two inputs, token ids and a float feature per sequence: `Module<f32, (Ids, Var)>`.
#[derive(tapegrad_nn::Module)]
struct Scorer {
    embed: Embedding,
    head: Linear,
    #[module(skip)]
    classes: usize,
}

impl Scorer {
    fn new(seed: u64) -> Scorer {
        let mut gen = Generator::new(seed);
        Scorer { embed: Embedding::new(8, 4, &mut gen), head: Linear::new(5, 3, &mut gen), classes: 3 }
    }
}

impl Module<f32, (Ids, Var)> for Scorer {
    fn forward(&self, (ids, feature): &(Ids, Var)) -> tapegrad_nn::Result<Var> {
        let pooled = self.embed.forward_ids(ids)?.mean(&[1], false)?;
        self.head.forward(&Var::cat(&[&pooled, feature], 1)?)
    }
}

#[test]
fn a_model_of_ids_and_a_feature_trains_from_a_tensor_dataset_and_saves() {
    // Class = whether token 7 occurs (0 / 1), or 2 when the feature is large.
    let n = 48;
    let mut gen = Generator::new(2);
    let (mut ids, mut feature, mut labels) = (vec![], vec![], vec![]);
    for _ in 0..n {
        let seq: Vec<usize> = (0..4).map(|_| gen.below(8) as usize).collect();
        let f = gen.below(4) as f32;
        labels.push(if f >= 3.0 { 2 } else { usize::from(seq.contains(&7)) });
        ids.extend(seq);
        feature.push(f);
    }
    let data =
        TensorDataset::new((Ids::new(ids, &[n, 4]).unwrap(), Tensor::from_vec(feature, &[n, 1]).unwrap(), labels))
            .unwrap();
    let mut model = Scorer::new(0);
    assert_eq!(model.classes, 3);
    let mut opt = Adam::new(model.parameters(), 0.05);
    let loss_of = |model: &Scorer| -> f32 {
        let (ids, x, y) = data.columns();
        cross_entropy(&model.forward(&(ids.clone(), Var::new(x.clone()))).unwrap(), y).unwrap().item().unwrap()
    };
    let first = loss_of(&model);
    model.train();
    for _ in 0..30 {
        for batch in Batches::new(&data, 16, Some(&mut gen)).unwrap() {
            let (ids, x, y) = batch.unwrap();
            let loss = cross_entropy(&model.forward(&(ids, Var::new(x))).unwrap(), &y).unwrap();
            opt.zero_grad();
            loss.backward().unwrap();
            opt.step().unwrap();
        }
    }
    let last = loss_of(&model);
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    // Everything besides `forward` is as for any model: names, saving, loading.
    let names: Vec<String> = model.named_parameters().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["embed.weight", "head.weight", "head.bias"]);
    let path = std::env::temp_dir().join(format!("tapegrad-scorer-{}.safetensors", std::process::id()));
    save(&model, &path).unwrap();
    let mut copy = Scorer::new(9);
    load(&mut copy, &path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(loss_of(&copy), last);
    // A boxed model of another input is a module of that input too.
    let boxed: Box<dyn Module<f32, (Ids, Var)>> = Box::new(copy);
    let (ids, x, _) = data.columns();
    assert_eq!(boxed.forward(&(ids.clone(), Var::new(x.clone()))).unwrap().shape(), [n, 3]);
}

#[test]
fn embedding_looks_up_ids_as_it_does_integral_floats() {
    let emb: Embedding = Embedding::new(6, 3, &mut Generator::new(0));
    let ids = Ids::new(vec![5, 0, 2, 2], &[2, 2]).unwrap();
    let by_ids = emb.forward_ids(&ids).unwrap();
    let by_floats = emb.forward(&Var::new(ids.to_tensor())).unwrap();
    assert_eq!(by_ids.shape(), [2, 2, 3]);
    assert_eq!(by_ids.value().to_vec(), by_floats.value().to_vec());
    let out_of_range = emb.forward_ids(&Ids::from(vec![6])).unwrap_err();
    assert!(out_of_range.to_string().contains("out of range for 6 embeddings"), "{out_of_range}");
    let fractional = emb.forward(&Var::new(Tensor::from_vec(vec![1.5], &[1]).unwrap())).unwrap_err();
    assert!(matches!(fractional, Error::InvalidShape { op: "Embedding", .. }), "{fractional:?}");
}
