//! Mini-batches over a [`Dataset`] or a [`TensorDataset`](super::TensorDataset), in order or
//! shuffled by a seeded [`Generator`], like PyTorch's
//! `DataLoader(dataset, batch_size, shuffle=True, generator=g)`.

use tapegrad_tensor::{Error, Generator, Result, Tensor};

use super::Dataset;

/// What [`Batches`] cuts into mini-batches: a number of samples, and a way to gather a batch
/// of them by index (PyTorch's map-style `Dataset`, batched). Implemented by [`Dataset`]
/// (batches of `(images, labels)`) and [`TensorDataset`](super::TensorDataset) (batches of its
/// columns' tuple).
pub trait Samples {
    /// One mini-batch.
    type Batch;

    /// The number of samples.
    fn num_samples(&self) -> usize;

    /// The samples at `indices` (each below [`num_samples`](Samples::num_samples)), in that
    /// order, as one batch.
    ///
    /// # Errors
    /// What gathering reports (an index out of range, a batch too large to allocate).
    fn gather(&self, indices: &[usize]) -> Result<Self::Batch>;
}

impl Samples for Dataset {
    type Batch = (Tensor<f32>, Vec<usize>);

    fn num_samples(&self) -> usize {
        self.len()
    }

    fn gather(&self, indices: &[usize]) -> Result<Self::Batch> {
        let labels = indices.iter().map(|&i| self.labels()[i]).collect();
        Ok((self.images().index_select(0, indices)?, labels))
    }
}

/// A uniformly random permutation of `0..n`, by Fisher-Yates from the last position down, each
/// swap partner drawn with [`Generator::below`] (unbiased): the same generator state gives the
/// same permutation on every machine.
///
/// ```
/// use tapegrad_nn::data::permutation;
/// use tapegrad_tensor::Generator;
/// let p = permutation(5, &mut Generator::new(0));
/// let mut sorted = p.clone();
/// sorted.sort();
/// assert_eq!(sorted, [0, 1, 2, 3, 4]);
/// assert_eq!(p, permutation(5, &mut Generator::new(0)));
/// ```
pub fn permutation(n: usize, gen: &mut Generator) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        // `below(i + 1)` is at most `i`, so it fits in a usize.
        let j = gen.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// One epoch of mini-batches over a [`Dataset`] or another [`Samples`] source: over a `Dataset`
/// an iterator of `(images, labels)` where `images` has shape `[b, ...]` (`[b, 784]` for
/// MNIST) and `labels` has length `b`; over a [`TensorDataset`](super::TensorDataset) of columns
/// `(x, y, ...)` an iterator of tuples of the same types, each with first dim `b`. `b =
/// batch_size` except for a last, smaller batch (kept unless [`Batches::drop_last`]).
///
/// With a generator the samples are visited in the order of [`permutation`]`(n, gen)`, drawn
/// once when the epoch is created; the generator advances, so the next epoch created from it
/// gets a new order, and the same seed replays the same sequence of epochs. Without one, the
/// samples are visited in dataset order.
///
/// Each batch is gathered with `index_select` into a fresh contiguous tensor. Items are
/// `Result`s; collect them with `collect::<Result<Vec<_>>>()`.
///
/// ```
/// use tapegrad_nn::data::{Batches, Dataset};
/// use tapegrad_tensor::{Generator, Tensor};
/// let ds = Dataset::new(Tensor::zeros(&[10, 4]), (0..10).map(|i| i % 3).collect())?;
/// let mut gen = Generator::new(0);
/// let epoch: Vec<(Tensor, Vec<usize>)> = Batches::new(&ds, 4, Some(&mut gen))?.collect::<Result<_, _>>()?;
/// let sizes: Vec<usize> = epoch.iter().map(|(x, y)| { assert_eq!(x.shape()[0], y.len()); y.len() }).collect();
/// assert_eq!(sizes, [4, 4, 2]);
/// assert_eq!(Batches::new(&ds, 4, None)?.drop_last(true).len(), 2);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Batches<D: Samples = Dataset> {
    dataset: D,
    order: Vec<usize>,
    batch_size: usize,
    drop_last: bool,
    next: usize,
    /// The shuffling generator as it was before it drew `order`.
    shuffled_from: Option<Generator>,
}

impl<D: Samples> Batches<D> {
    /// The batches of one epoch over `dataset`, `batch_size` samples each, shuffled with `shuffle`
    /// when given (the generator advances), in dataset order otherwise.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) (op `Batches::new`) when
    /// `batch_size` is 0.
    pub fn new(dataset: &D, batch_size: usize, shuffle: Option<&mut Generator>) -> Result<Batches<D>>
    where
        D: Clone,
    {
        if batch_size == 0 {
            return Err(Error::arg("Batches::new", "batch_size must be at least 1"));
        }
        let n = dataset.num_samples();
        let shuffled_from = shuffle.as_deref().cloned();
        let order = match shuffle {
            Some(gen) => permutation(n, gen),
            None => (0..n).collect(),
        };
        Ok(Batches { dataset: dataset.clone(), order, batch_size, drop_last: false, next: 0, shuffled_from })
    }

    /// Drops the last batch when it is smaller than `batch_size` (PyTorch's `drop_last`), so
    /// that every batch has the same size.
    pub fn drop_last(mut self, drop: bool) -> Batches<D> {
        self.drop_last = drop;
        self
    }

    /// The order in which this epoch visits the samples (indices into the dataset).
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The number of samples per batch (the last one may have fewer).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The shuffling generator as it was when this epoch's order was drawn (`None` without
    /// shuffling): with it and [`Batches::position`] a checkpoint taken mid-epoch gives back the
    /// rest of the epoch, see [`Batches::resume_at`].
    pub fn shuffled_from(&self) -> Option<&Generator> {
        self.shuffled_from.as_ref()
    }

    /// How many batches this epoch has yielded so far.
    pub fn position(&self) -> usize {
        self.next.div_ceil(self.batch_size)
    }

    /// Skips the first `batch` batches without gathering them: with the same dataset, batch
    /// size and a generator restored to [`Batches::shuffled_from`], the batches that follow are
    /// those an epoch that was not interrupted yields after its `batch`-th.
    ///
    /// ```
    /// use tapegrad_nn::data::{Batches, Dataset};
    /// use tapegrad_tensor::{Generator, Tensor};
    /// let ds = Dataset::new(Tensor::from_vec((0..10).map(|i| i as f32).collect(), &[10, 1])?, (0..10).collect())?;
    /// let mut gen = Generator::new(3);
    /// let mut epoch = Batches::new(&ds, 3, Some(&mut gen))?;
    /// epoch.next();
    /// let (mut again, at) = (epoch.shuffled_from().cloned().unwrap(), epoch.position());
    /// let rest: Vec<Vec<usize>> = epoch.map(|b| b.map(|(_, y)| y)).collect::<Result<_, _>>()?;
    /// let resumed = Batches::new(&ds, 3, Some(&mut again))?.resume_at(at)?;
    /// assert_eq!(resumed.map(|b| b.map(|(_, y)| y)).collect::<Result<Vec<_>, _>>()?, rest);
    /// assert_eq!(again, gen); // the generator continues as the uninterrupted one does
    /// # Ok::<(), tapegrad_nn::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) (op `Batches::resume_at`) when
    /// the epoch has fewer than `batch` batches.
    pub fn resume_at(mut self, batch: usize) -> Result<Batches<D>> {
        let total = self.end().div_ceil(self.batch_size);
        if batch > total {
            return Err(Error::arg(
                "Batches::resume_at",
                format!("batch {batch} is past the end of the epoch, which has {total} batches"),
            ));
        }
        self.next = (batch * self.batch_size).min(self.end());
        Ok(self)
    }

    /// Where the batches still to come end in [`Batches::order`].
    fn end(&self) -> usize {
        if self.drop_last {
            self.order.len() - self.order.len() % self.batch_size
        } else {
            self.order.len()
        }
    }
}

impl<D: Samples> Iterator for Batches<D> {
    type Item = Result<D::Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let end = self.end();
        if self.next >= end {
            return None;
        }
        let stop = (self.next + self.batch_size).min(end);
        let index = &self.order[self.next..stop];
        self.next = stop;
        Some(self.dataset.gather(index))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end().saturating_sub(self.next).div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl<D: Samples> ExactSizeIterator for Batches<D> {}

impl<D: Samples> std::iter::FusedIterator for Batches<D> {}
