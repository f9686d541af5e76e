//! Datasets: the IDX reader and loaders for MNIST, Fashion-MNIST and the shipped `mnist-10k`;
//! numpy's `.npy` and `.npz` files ([`npy`]: [`read_npy`], [`write_npy`], [`Npz`],
//! [`read_npz`], [`write_npz`]); a dataset of any tensors sharing their first dim
//! ([`TensorDataset`], PyTorch's, for regression and for token ids as [`Ids`]); seeded shuffled
//! mini-batches ([`Batches`], PyTorch's `DataLoader`) and cross-validation splits ([`kfold()`]).
//!
//! Like `torchvision.datasets.MNIST`, a [`Dataset`] holds all its samples in memory: images as
//! one `f32` tensor of shape `[n, rows * cols]` scaled to [0, 1], labels as `Vec<usize>`.
//! The loaders read each file with [`read_idx`], so at most [`DEFAULT_MAX_IDX_BYTES`] (1 GiB) of
//! data per file; [`read_idx_with_limit`] reads larger files.
//!
//! The examples in this module read the `mnist-10k` that tapegrad's repository ships in `data/`,
//! from the repository root; that folder is not part of this crate, so they are compiled but not
//! run here (the facade package's `tests/suite/mnist.rs` checks the same values).
//!
//! ```no_run
//! use tapegrad_nn::data::{load_dataset, Mnist};
//! let dir = "data/mnist-10k";
//! let (train, test) = match load_dataset(dir)? {
//!     Mnist::TrainTest { train, test } => (train, test),
//!     Mnist::Single(all) => all.split_at(8000)?,
//! };
//! assert_eq!((train.len(), test.len()), (8000, 2000));
//! assert_eq!(train.images().shape(), &[8000, 784]);
//! # Ok::<(), tapegrad_nn::Error>(())
//! ```

mod batches;
mod ids;
mod idx;
mod kfold;
pub mod npy;
mod tensor_dataset;

use std::path::{Path, PathBuf};

use tapegrad_tensor::{Error, Result, Tensor};

pub use batches::{permutation, Batches, Samples};
pub use ids::Ids;
pub use idx::{read_idx, read_idx_with_limit, Idx, DEFAULT_MAX_IDX_BYTES};
pub use kfold::kfold;
pub use npy::{
    read_npy, read_npy_labels, read_npz, write_npy, write_npy_labels, write_npz, write_npz_compressed, NpyArray, Npz,
    NpzWriter, DEFAULT_MAX_NPZ_BYTES,
};
pub use tensor_dataset::{Column, Columns, TensorDataset};

// ─── loaders for single files ──────────────────────────────────────────────────

/// Reads an IDX image file (`[n, rows, cols]` unsigned bytes, plain or gzip) as an `f32` tensor
/// of shape `[n, rows * cols]`, each pixel divided by 255 so that values lie in [0, 1].
///
/// # Errors
/// Everything [`read_idx`] reports, and [`Error::Format`] when the file does not have 3 dims.
///
/// ```no_run
/// use tapegrad_nn::data::load_mnist_images;
/// let x = load_mnist_images("data/mnist-10k/images-idx3-ubyte.gz")?;
/// assert_eq!(x.shape(), &[10000, 784]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn load_mnist_images(path: impl AsRef<Path>) -> Result<Tensor<f32>> {
    let path = path.as_ref();
    let idx = read_idx(path)?;
    let &[n, rows, cols] = idx.dims.as_slice() else {
        return Err(Error::format(
            path,
            format!("expected images with 3 dims [n, rows, cols], found dims {:?}", idx.dims),
        ));
    };
    let pixels = idx.data.iter().map(|&b| f32::from(b) / 255.0).collect();
    Tensor::from_vec(pixels, &[n, rows * cols])
}

/// Reads an IDX label file (`[n]` unsigned bytes, plain or gzip) as class indices.
///
/// # Errors
/// Everything [`read_idx`] reports, and [`Error::Format`] when the file does not have 1 dim.
///
/// ```no_run
/// use tapegrad_nn::data::load_labels;
/// let y = load_labels("data/mnist-10k/labels-idx1-ubyte.gz")?;
/// assert_eq!(&y[..4], &[6, 1, 0, 0]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn load_labels(path: impl AsRef<Path>) -> Result<Vec<usize>> {
    let path = path.as_ref();
    let idx = read_idx(path)?;
    if idx.dims.len() != 1 {
        return Err(Error::format(path, format!("expected labels with 1 dim [n], found dims {:?}", idx.dims)));
    }
    Ok(idx.data.into_iter().map(usize::from).collect())
}

// ─── Dataset ───────────────────────────────────────────────────────────────────

/// Samples and their class labels, held in memory: `images` has shape `[n, ...]` and
/// `labels[i]` is the class of `images[i]`.
///
/// Cloning is cheap (the tensor's storage is shared), and so is [`Dataset::split_at`].
#[derive(Clone, Debug)]
pub struct Dataset {
    images: Tensor<f32>,
    labels: Vec<usize>,
}

impl Dataset {
    /// A dataset of `images` (shape `[n, ...]`) labelled by `labels` (length `n`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming both shapes when `images` is 0-dimensional or its first dim is
    /// not `labels.len()`.
    ///
    /// ```
    /// use tapegrad_nn::data::Dataset;
    /// use tapegrad_tensor::Tensor;
    /// let ds = Dataset::new(Tensor::zeros(&[3, 4]), vec![0, 1, 1])?;
    /// assert_eq!((ds.len(), ds.num_classes()), (3, 2));
    /// assert!(Dataset::new(Tensor::zeros(&[3, 4]), vec![0, 1]).is_err());
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    pub fn new(images: Tensor<f32>, labels: Vec<usize>) -> Result<Dataset> {
        if images.shape().first() != Some(&labels.len()) {
            return Err(Error::mismatch(
                "Dataset::new",
                images.shape(),
                &[labels.len()],
                "the images' first dim must be the number of labels",
            ));
        }
        Ok(Dataset { images, labels })
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there is no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The samples, shape `[n, ...]` (`[n, rows * cols]` in [0, 1] from the loaders here).
    pub fn images(&self) -> &Tensor<f32> {
        &self.images
    }

    /// The class of each sample.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// One more than the largest label (10 for MNIST); 0 for an empty dataset.
    pub fn num_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| m + 1)
    }

    /// The first `mid` samples and the rest, as views of the same storage (like
    /// `slice::split_at`, but fallible).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `mid > len()`.
    pub fn split_at(&self, mid: usize) -> Result<(Dataset, Dataset)> {
        let n = self.len();
        if mid > n {
            return Err(Error::arg("Dataset::split_at", format!("split point {mid} is past the {n} samples")));
        }
        let head = Dataset { images: self.images.narrow(0, 0, mid)?, labels: self.labels[..mid].to_vec() };
        let tail = Dataset { images: self.images.narrow(0, mid, n - mid)?, labels: self.labels[mid..].to_vec() };
        Ok((head, tail))
    }

    /// The samples at `indices`, in that order (repeats allowed), copied into a new dataset:
    /// `images.index_select(0, indices)` and the matching labels. With [`kfold()`]'s indices it
    /// gives a fold's training or validation set.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (op `Dataset::subset`) naming the first index that
    /// is not below `len()`.
    ///
    /// ```
    /// use tapegrad_nn::data::Dataset;
    /// use tapegrad_tensor::Tensor;
    /// let ds = Dataset::new(Tensor::arange(6).reshape(&[3, 2])?, vec![7, 8, 9])?;
    /// let sub = ds.subset(&[2, 0])?;
    /// assert_eq!((sub.images().to_vec(), sub.labels()), (vec![4.0, 5.0, 0.0, 1.0], &[9, 7][..]));
    /// assert!(ds.subset(&[3]).is_err());
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::arg("Dataset::subset", format!("index {bad} is out of range for {n} samples")));
        }
        let images = self.images.index_select(0, indices)?;
        Ok(Dataset { images, labels: indices.iter().map(|&i| self.labels[i]).collect() })
    }

    /// The images and labels, taken apart.
    pub fn into_parts(self) -> (Tensor<f32>, Vec<usize>) {
        (self.images, self.labels)
    }
}

// ─── MNIST-style directories ───────────────────────────────────────────────────

/// What [`load_dataset`] found in a directory.
#[derive(Clone, Debug)]
pub enum Mnist {
    /// The standard release of MNIST or Fashion-MNIST: `train-*` (60000 samples) and `t10k-*`
    /// (10000 samples).
    TrainTest {
        /// From `train-images-idx3-ubyte` and `train-labels-idx1-ubyte`.
        train: Dataset,
        /// From `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`.
        test: Dataset,
    },
    /// A single set (`images-idx3-ubyte` and `labels-idx1-ubyte`, like the shipped
    /// `mnist-10k`), for the caller to split, e.g. with [`Dataset::split_at`].
    Single(Dataset),
}

/// Loads an MNIST-style directory: the four files of the standard MNIST or Fashion-MNIST release
/// (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
/// `t10k-labels-idx1-ubyte`), or the single pair `images-idx3-ubyte` + `labels-idx1-ubyte` of the
/// shipped `data/mnist-10k`. Each name may carry a `.gz` suffix. See the [module docs](self) for
/// an example.
///
/// # Errors
/// [`Error::Io`] when the directory cannot be read; [`Error::Format`] when it holds neither set
/// or only part of one (the message lists the missing names), when an images file and its labels
/// file disagree on the number of samples, and everything [`load_mnist_images`] and
/// [`load_labels`] report.
pub fn load_dataset(dir: impl AsRef<Path>) -> Result<Mnist> {
    let dir = dir.as_ref();
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::format(dir, "expected a directory of IDX files"));
    }
    if let Some([train_x, train_y, test_x, test_y]) = find_set(dir, STANDARD)? {
        return Ok(Mnist::TrainTest { train: load_pair(&train_x, &train_y)?, test: load_pair(&test_x, &test_y)? });
    }
    if let Some([x, y]) = find_set(dir, SINGLE)? {
        return Ok(Mnist::Single(load_pair(&x, &y)?));
    }
    Err(Error::format(
        dir,
        format!(
            "found no MNIST-style IDX files: expected {} (each optionally .gz), or {}",
            STANDARD.join(", "),
            SINGLE.join(" and ")
        ),
    ))
}

/// The files of a standard MNIST or Fashion-MNIST release.
const STANDARD: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// The files of a single set, like the shipped `mnist-10k`.
const SINGLE: [&str; 2] = ["images-idx3-ubyte", "labels-idx1-ubyte"];

/// The paths of the files `names` (each plain or `.gz`) in `dir`: `None` when none of them is
/// there, an error listing the missing ones when only some are.
fn find_set<const N: usize>(dir: &Path, names: [&str; N]) -> Result<Option<[PathBuf; N]>> {
    let paths = names.map(|name| find_idx(dir, name));
    if paths.iter().all(Option::is_none) {
        return Ok(None);
    }
    let missing: Vec<&str> = names.iter().zip(&paths).filter(|(_, p)| p.is_none()).map(|(n, _)| *n).collect();
    if !missing.is_empty() {
        return Err(Error::format(dir, format!("incomplete dataset: missing {} (or .gz)", missing.join(", "))));
    }
    // Every entry is `Some` here, so the default is never used.
    Ok(Some(paths.map(Option::unwrap_or_default)))
}

/// `dir/name` if it is a file, else `dir/name.gz` if that is, else `None`.
fn find_idx(dir: &Path, name: &str) -> Option<PathBuf> {
    [name.to_string(), format!("{name}.gz")].into_iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// The dataset of one images file and its labels file.
fn load_pair(images: &Path, labels: &Path) -> Result<Dataset> {
    let x = load_mnist_images(images)?;
    let y = load_labels(labels)?;
    if x.shape()[0] != y.len() {
        return Err(Error::format(
            images,
            format!("holds {} images, but {} holds {} labels", x.shape()[0], labels.display(), y.len()),
        ));
    }
    Dataset::new(x, y)
}
