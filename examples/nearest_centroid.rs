//! Nearest-centroid digit classifier, with tensor ops only (no training loop, no autograd).
//!
//! Each class's centroid is the mean of its training images, computed as `onehotᵀ · X / counts`;
//! a test image gets the class of the nearest centroid, with all squared distances
//! `‖x‖² − 2 x·c + ‖c‖²` computed at once by one matmul.
//!
//! ```text
//! cargo run --release --example nearest_centroid              # the shipped data/mnist-10k
//! cargo run --release --example nearest_centroid -- --data DIR # MNIST or Fashion-MNIST files
//! ```
//!
//! A directory holding one set (like `data/mnist-10k`) is split in a fixed way: the first 80%
//! (8000 images) train, the rest (2000) test. A standard release uses its own train/test sets.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use tapegrad::nn::data::{load_dataset, Dataset, Mnist};
use tapegrad::tensor::Tensor;

const USAGE: &str = "usage: nearest_centroid [--data DIR]  (default: the shipped data/mnist-10k)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = data_dir()?;

    let start = Instant::now();
    let (train, test, split) = match load_dataset(&dir)? {
        Mnist::TrainTest { train, test } => (train, test, "the release's own train and test sets"),
        Mnist::Single(all) => {
            let (train, test) = all.split_at(all.len() * 4 / 5)?;
            (train, test, "one set: the first 80% train, the rest test")
        }
    };
    let load_time = start.elapsed();
    println!("data: {} ({split})", dir.display());
    println!("train {} images, test {} images, {} pixels each", train.len(), test.len(), train.images().shape()[1]);
    println!("kernels: {}", tapegrad::tensor::cpu_capability());

    let start = Instant::now();
    let centroids = class_centroids(&train)?;
    let predictions = nearest(&centroids, test.images())?;
    let compute_time = start.elapsed();

    let correct = predictions.iter().zip(test.labels()).filter(|(p, y)| p == y).count();
    println!("load time: {:.1} ms", load_time.as_secs_f64() * 1e3);
    println!("compute time (centroids + distances + argmax): {:.1} ms", compute_time.as_secs_f64() * 1e3);
    println!("test accuracy: {:.2}% ({correct} / {})", 100.0 * correct as f64 / test.len() as f64, test.len());
    Ok(())
}

/// The `--data DIR` argument, or the shipped `data/mnist-10k`.
fn data_dir() -> Result<PathBuf, String> {
    let mut args = std::env::args().skip(1);
    let mut dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-10k"));
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => dir = args.next().ok_or(format!("--data needs a directory\n{USAGE}"))?.into(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    Ok(dir)
}

/// The mean image of each class, shape `[classes, pixels]`: `onehotᵀ · X`, one row per class
/// holding the sum of its images, divided by the class counts.
fn class_centroids(train: &Dataset) -> Result<Tensor, Box<dyn std::error::Error>> {
    let (n, classes) = (train.len(), train.num_classes());
    let mut onehot = vec![0.0f32; n * classes];
    for (i, &y) in train.labels().iter().enumerate() {
        onehot[i * classes + y] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, &[n, classes])?;
    let sums = onehot.t()?.matmul(train.images())?;
    // [1, classes] -> [classes, 1], so that each row divides by its own count; a class absent
    // from the training set keeps a zero centroid instead of 0 / 0.
    let counts = onehot.sum(&[0], true)?.t()?.maximum(&Tensor::ones(&[1, 1]))?;
    Ok(sums.div(&counts)?)
}

/// For each row of `x` (`[m, pixels]`), the index of the nearest centroid.
fn nearest(centroids: &Tensor, x: &Tensor) -> Result<Vec<usize>, Box<dyn std::error::Error>> {
    // The nearest centroid has the largest negative squared distance (there is no argmin).
    let x_dot_c = x.matmul(&centroids.t()?)?; // [m, classes]
    let x_sq = x.mul(x)?.sum(&[1], true)?; // [m, 1]
    let c_sq = centroids.mul(centroids)?.sum(&[1], false)?; // [classes]
    let neg_dist = x_dot_c.mul_scalar(2.0).sub(&x_sq)?.sub(&c_sq)?;
    Ok(neg_dist.argmax(1)?)
}
