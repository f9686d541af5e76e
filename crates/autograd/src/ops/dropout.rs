//! Dropout: a stochastic op whose mask is drawn from a seeded generator and stored on the tape.
//!
//! Inverted dropout: each element is kept with probability `1 - p` and scaled by `1 / (1 - p)`,
//! so the expected value of every output equals its input and nothing is rescaled at test time.
//! The mask is drawn counter-style: element `i` keeps iff word `offset + i` of the ChaCha8 stream
//! of `seed` is below `(1 - p) · 2³²`, so any chunk of the mask can be generated on its own and the
//! mask is the same on any number of threads. The tape entry stores `seed`, `offset`, `p` and the
//! mask at one bit per element (a million elements keep 128 KiB); backward multiplies by that
//! stored mask, never by a fresh draw.

use std::sync::Arc;

use rayon::prelude::*;
use tapegrad_tensor::{Float, Generator, Stream, Tensor};

use super::one;
use crate::error::{Error, Result};
use crate::no_grad::with_default_generator;
use crate::var::{Backward, Grads, Var};

/// Elements per parallel chunk: a multiple of 64 (whole mask words). Fixed, so that the work split
/// never depends on the thread count.
const CHUNK: usize = 1 << 16;

/// What a dropout op stored: enough to regenerate the mask, and the mask itself.
#[derive(Clone, Debug, PartialEq)]
pub struct DropoutRecord {
    /// The generator's seed.
    pub seed: u64,
    /// The first stream word this draw used.
    pub offset: u64,
    /// The drop probability.
    pub p: f64,
    /// The number of elements.
    pub numel: usize,
    mask: Arc<Vec<u64>>,
}

impl DropoutRecord {
    /// Draws the mask for `numel` elements from the generator at its current position.
    fn draw(numel: usize, p: f64, gen: &mut Generator) -> DropoutRecord {
        let (seed, offset) = gen.reserve(numel as u64);
        DropoutRecord::regenerate(seed, offset, p, numel)
    }

    /// The mask that `(seed, offset, p)` gives for `numel` elements: what a replay recomputes.
    pub fn regenerate(seed: u64, offset: u64, p: f64, numel: usize) -> DropoutRecord {
        // Keep iff the word is below (1 - p) 2^32; p > 0 here, so the threshold fits in u32 range.
        let threshold = ((1.0 - p) * 4_294_967_296.0) as u64;
        let mut mask = vec![0u64; numel.div_ceil(64)];
        mask.par_chunks_mut(CHUNK / 64).enumerate().for_each(|(c, words)| {
            let first = c * CHUNK;
            let mut stream = Stream::new(seed, offset + first as u64);
            let count = (numel - first).min(CHUNK);
            for (w, word) in words.iter_mut().enumerate() {
                let bits = (count - w * 64).min(64);
                let mut acc = 0u64;
                for b in 0..bits {
                    acc |= u64::from(u64::from(stream.next_u32()) < threshold) << b;
                }
                *word = acc;
            }
        });
        DropoutRecord { seed, offset, p, numel, mask: Arc::new(mask) }
    }

    /// The mask, 64 elements a word, element `i` at bit `i % 64` of word `i / 64`.
    pub fn mask_words(&self) -> &[u64] {
        &self.mask
    }

    /// The bytes the mask takes: `numel / 8`, rounded up to whole words.
    pub fn mask_bytes(&self) -> usize {
        self.mask.len() * 8
    }

    /// True when element `i` was kept.
    pub fn kept(&self, i: usize) -> bool {
        i < self.numel && self.mask[i / 64] >> (i % 64) & 1 == 1
    }

    /// The number of kept elements.
    pub fn kept_count(&self) -> usize {
        self.mask.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// `x * mask / (1 - p)` for a contiguous `x` of `numel` elements.
    fn apply<T: Float>(&self, x: &[T]) -> Vec<T> {
        let scale = T::from_f64(1.0 / (1.0 - self.p));
        let mut out = vec![T::ZERO; x.len()];
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).zip(self.mask.par_chunks(CHUNK / 64)).for_each(
            |((out, x), words)| {
                // Visit only the kept elements of each 64-element word (the output starts at 0):
                // a branch per element on the bit would be mispredicted half the time at p = 0.5.
                for ((out, x), &word) in out.chunks_mut(64).zip(x.chunks(64)).zip(words) {
                    let mut rest = word;
                    while rest != 0 {
                        let b = rest.trailing_zeros() as usize;
                        out[b] = x[b] * scale;
                        rest &= rest - 1;
                    }
                }
            },
        );
        out
    }
}

// ─── Dropout ─────────────────────  y = x · m / (1 - p);  dx = dy · m / (1 - p)  (saves the mask)
struct Dropout {
    record: DropoutRecord,
}
impl<T: Float> Backward<T> for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn backward(&self, dy: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        let dy = dy.contiguous();
        let data = dy.as_slice().map(|s| self.record.apply(s)).unwrap_or_default();
        Ok(one(Tensor::from_vec(data, dy.shape())?))
    }
    fn extra_bytes(&self) -> usize {
        self.record.mask_bytes()
    }
    fn dropout(&self) -> Option<&DropoutRecord> {
        Some(&self.record)
    }
}

/// Checks a drop probability: in [0, 1), not NaN.
pub fn check_p(op: &'static str, p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::arg(op, format!("the drop probability p must be in [0, 1), got {p}")))
    }
}

/// Inverted dropout of `x` with drop probability `p`, the mask drawn from `gen`.
///
/// Each element is zeroed with probability `p` and the survivors are scaled by `1 / (1 - p)`.
/// `p = 0` returns `x` itself (nothing drawn, nothing recorded). Each call advances `gen`, so
/// successive calls draw fresh masks; the same seed gives the same masks on any thread count.
/// The tape entry stores the seed, offset, `p` and the bit mask that backward uses.
///
/// # Errors
/// `dropout` when `p` is outside [0, 1) or NaN.
///
/// ```
/// use tapegrad_autograd::{dropout, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let x = Var::parameter(Tensor::<f32>::ones(&[1000]));
/// let y = dropout(&x, 0.5, &mut Generator::new(1))?;
/// let kept = y.value().to_vec().iter().filter(|&&v| v == 2.0).count();
/// assert!((400..600).contains(&kept));
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn dropout<T: Float>(x: &Var<T>, p: f64, gen: &mut Generator) -> Result<Var<T>> {
    check_p("dropout", p)?;
    if p == 0.0 {
        return Ok(x.clone());
    }
    let value = x.value().contiguous();
    let record = DropoutRecord::draw(value.numel(), p, gen);
    let data = value.as_slice().map(|s| record.apply(s)).unwrap_or_default();
    let y = Tensor::from_vec(data, value.shape())?;
    Ok(Var::from_op(y, &[x], || Dropout { record }))
}

impl<T: Float> Var<T> {
    /// [`dropout`] with this thread's default generator (seeded by
    /// [`manual_seed`](crate::manual_seed)).
    ///
    /// # Errors
    /// `dropout` when `p` is outside [0, 1) or NaN.
    pub fn dropout(&self, p: f64) -> Result<Var<T>> {
        with_default_generator(|gen| dropout(self, p, gen))
    }
}
