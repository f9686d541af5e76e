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
use tapegrad_tensor::kernels::{active_isa, chacha, mask};
use tapegrad_tensor::{Float, Generator, Tensor};

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

    /// Draws the mask for `x` from the generator and returns `x * mask / (1 - p)` with it, both
    /// in one parallel pass (each chunk draws its mask words, then scales its elements).
    fn draw_and_apply<T: Float>(x: &[T], p: f64, gen: &mut Generator) -> (DropoutRecord, Vec<T>) {
        let numel = x.len();
        let (seed, offset) = gen.reserve(numel as u64);
        let key = chacha::key_for_seed(seed);
        let threshold = keep_threshold(p);
        let mut mask = vec![0u64; numel.div_ceil(64)];
        let y = mask::draw_and_scale_new(x, &mut mask, scale_of::<T>(p), CHUNK, |c, words| {
            let first = c * CHUNK;
            draw_words(&key, offset, threshold, first, (numel - first).min(CHUNK), words);
        });
        (DropoutRecord { seed, offset, p, numel, mask: Arc::new(mask) }, y)
    }

    /// The mask that `(seed, offset, p)` gives for `numel` elements: what a replay recomputes.
    pub fn regenerate(seed: u64, offset: u64, p: f64, numel: usize) -> DropoutRecord {
        let key = chacha::key_for_seed(seed);
        let threshold = keep_threshold(p);
        let mut mask = vec![0u64; numel.div_ceil(64)];
        mask.par_chunks_mut(CHUNK / 64).enumerate().for_each(|(c, words)| {
            let first = c * CHUNK;
            draw_words(&key, offset, threshold, first, (numel - first).min(CHUNK), words);
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
        mask::scale_by_mask_new(x, &self.mask, scale_of::<T>(self.p), CHUNK)
    }
}

/// Keep iff the word is below `(1 - p) 2^32` (p > 0, so the threshold is at most 2^32).
fn keep_threshold(p: f64) -> u64 {
    ((1.0 - p) * 4_294_967_296.0) as u64
}

/// The survivors' scale, `1 / (1 - p)`.
fn scale_of<T: Float>(p: f64) -> T {
    T::from_f64(1.0 / (1.0 - p))
}

/// Words of the stream drawn at a time: a buffer that stays in L1.
const STAGE: usize = 1024;

/// The mask words of elements `first .. first + count` (`first` a multiple of 64): element `i`
/// keeps iff word `offset + i` of the stream of `key` is below `threshold`.
fn draw_words(key: &[u32; 8], offset: u64, threshold: u64, first: usize, count: usize, words: &mut [u64]) {
    let isa = active_isa();
    let mut buf = [0u32; STAGE];
    for (s, out) in words.chunks_mut(STAGE / 64).enumerate() {
        let start = s * STAGE;
        let len = (count - start).min(STAGE);
        chacha::fill(key, offset.wrapping_add((first + start) as u64), &mut buf[..len]);
        mask::pack_below(isa, &buf[..len], threshold, out);
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
    let (record, data) = match value.as_slice() {
        Some(s) => DropoutRecord::draw_and_apply(s, p, gen),
        None => (DropoutRecord::draw(value.numel(), p, gen), vec![]),
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use tapegrad_tensor::Stream;

    /// The mask as first defined: element `i` keeps iff word `offset + i`, read one at a time
    /// from the ChaCha8 stream, is below `(1 - p) 2^32`.
    fn reference(seed: u64, offset: u64, p: f64, numel: usize) -> Vec<u64> {
        let threshold = keep_threshold(p);
        let mut s = Stream::new(seed, offset);
        let mut mask = vec![0u64; numel.div_ceil(64)];
        for i in 0..numel {
            mask[i / 64] |= u64::from(u64::from(s.next_u32()) < threshold) << (i % 64);
        }
        mask
    }

    #[test]
    fn masks_match_the_one_word_at_a_time_definition() {
        for (seed, offset, p, numel) in
            [(0, 0, 0.5, 1), (1, 16, 0.1, 1000), (7, 3, 0.9, 3 * CHUNK + 1037), (9, 160, 1e-30, 200)]
        {
            let want = reference(seed, offset, p, numel);
            assert_eq!(DropoutRecord::regenerate(seed, offset, p, numel).mask_words(), &want[..]);
            let x = vec![1.0f32; numel];
            let mut gen = Generator::new(seed);
            gen.reserve(offset);
            if gen.offset() == offset {
                let (rec, y) = DropoutRecord::draw_and_apply(&x, p, &mut gen);
                assert_eq!(rec.mask_words(), &want[..]);
                for (i, v) in y.iter().enumerate() {
                    assert_eq!(*v != 0.0, rec.kept(i));
                }
            }
        }
    }
}
