//! The IDX reader, the MNIST loaders, seeded batches and k-fold splits on the shipped
//! `data/mnist-10k` (a folder of this package, described by `data/README.md`). The same functions
//! on small synthetic files are tested in the nn crate's `tests/data.rs` and `tests/batches.rs`.

use std::io::Read;
use std::path::{Path, PathBuf};

use tapegrad::nn::data::{kfold, load_dataset, load_labels, load_mnist_images, read_idx, Batches, Dataset, Mnist};
use tapegrad::prelude::Generator;
use tapegrad_golden::{check_partition, Scratch};

// ─── helpers ───────────────────────────────────────────────────────────────────

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist-10k").join(name)
}

fn mnist() -> Dataset {
    match load_dataset(shipped("")).unwrap() {
        Mnist::Single(all) => all,
        Mnist::TrainTest { train, .. } => train,
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

// ─── the files ─────────────────────────────────────────────────────────────────

#[test]
fn shipped_labels_match_the_data_readme() {
    let idx = read_idx(shipped("labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(idx.dims, vec![10000]);
    assert_eq!(&idx.data[..10], &[6, 1, 0, 0, 4, 5, 3, 4, 7, 2]);
    let mut counts = [0usize; 10];
    for &y in &load_labels(shipped("labels-idx1-ubyte.gz")).unwrap() {
        counts[y] += 1;
    }
    assert_eq!(counts, [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]);
}

#[test]
fn shipped_images_are_10000_digits_of_28_by_28() {
    let idx = read_idx(shipped("images-idx3-ubyte.gz")).unwrap();
    assert_eq!(idx.dims, vec![10000, 28, 28]);
    assert_eq!(idx.data.len(), 7_840_000);
    // Real digits: ink on a background, not a constant image.
    assert_eq!(idx.data.iter().min(), Some(&0));
    assert_eq!(idx.data.iter().max(), Some(&255));

    let x = load_mnist_images(shipped("images-idx3-ubyte.gz")).unwrap();
    assert_eq!(x.shape(), &[10000, 784]);
    let pixels = x.to_vec();
    assert!(pixels.iter().all(|&p| (0.0..=1.0).contains(&p)));
    for (p, &b) in pixels.iter().zip(&idx.data).step_by(997) {
        assert_eq!(*p, f32::from(b) / 255.0);
    }
}

#[test]
fn plain_and_gzip_files_read_the_same_whatever_their_names() {
    let dir = Scratch::new("mnist", "plain-gz");
    let gz = std::fs::read(shipped("images-idx3-ubyte.gz")).unwrap();
    let from_gz = read_idx(shipped("images-idx3-ubyte.gz")).unwrap();
    // Compression is detected from the bytes: a plain file named .gz and a gzip file without it.
    let plain = dir.write("images.gz", &gunzip(&gz));
    let renamed = dir.write("images-no-suffix", &gz);
    assert_eq!(read_idx(&plain).unwrap(), from_gz);
    assert_eq!(read_idx(&renamed).unwrap(), from_gz);
}

#[test]
fn the_shipped_directory_is_a_single_set_to_split() {
    let Mnist::Single(all) = load_dataset(shipped("")).unwrap() else {
        panic!("mnist-10k is a single set");
    };
    assert_eq!((all.len(), all.num_classes()), (10000, 10));
    assert_eq!(all.images().shape(), &[10000, 784]);
    let (train, test) = all.split_at(8000).unwrap();
    assert_eq!((train.len(), test.len()), (8000, 2000));
    assert_eq!(train.images().shape(), &[8000, 784]);
    assert_eq!(test.images().shape(), &[2000, 784]);
    assert!(train.images().shares_storage(all.images()) && test.images().shares_storage(all.images()));
    assert_eq!(&train.labels()[..3], &[6, 1, 0]);
    assert_eq!(test.labels(), &all.labels()[8000..]);
    assert_eq!(test.images().to_vec()[..784], all.images().to_vec()[8000 * 784..8001 * 784]);
}

// ─── batches and folds ─────────────────────────────────────────────────────────

#[test]
fn batches_are_bit_identical_for_the_same_seed_on_mnist() {
    let ds = mnist();
    let a = Batches::new(&ds, 64, Some(&mut Generator::new(3))).unwrap();
    let b = Batches::new(&ds, 64, Some(&mut Generator::new(3))).unwrap();
    assert_eq!(a.len(), 157);
    let order = a.order().to_vec();
    let mut counts = vec![0usize; 10];
    let mut n = 0;
    for (i, (ra, rb)) in a.zip(b).enumerate() {
        let ((xa, ya), (xb, yb)) = (ra.unwrap(), rb.unwrap());
        let b = if i < 156 { 64 } else { 10_000 - 156 * 64 };
        assert_eq!(xa.shape(), &[b, 784]);
        assert_eq!(ya.len(), b);
        assert_eq!(
            xa.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            xb.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(ya, yb);
        if i == 0 {
            // The first batch is exactly the first 64 samples of the order, images with labels.
            let want = ds.subset(&order[..64]).unwrap();
            assert_eq!(xa.to_vec(), want.images().to_vec());
            assert_eq!(ya, want.labels());
        }
        for &y in &ya {
            counts[y] += 1;
        }
        n += ya.len();
    }
    assert_eq!(n, 10_000);
    let mut want = vec![0usize; 10];
    for &y in ds.labels() {
        want[y] += 1;
    }
    assert_eq!(counts, want, "every sample once: the label histogram of an epoch is the dataset's");
    let mut sorted = order;
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10_000).collect::<Vec<_>>());
}

#[test]
fn kfold_on_mnist_gives_usable_subsets() {
    let ds = mnist();
    let folds = kfold(ds.len(), 5, 42).unwrap();
    check_partition(ds.len(), 5, &folds);
    let (train, val) = &folds[2];
    let (train, val) = (ds.subset(train).unwrap(), ds.subset(val).unwrap());
    assert_eq!(train.images().shape(), &[8000, 784]);
    assert_eq!(val.images().shape(), &[2000, 784]);
    assert_eq!(val.num_classes(), 10, "a shuffled fold holds every digit");
    let n = Batches::new(&train, 100, Some(&mut Generator::new(0))).unwrap().drop_last(true).count();
    assert_eq!(n, 80);
}
