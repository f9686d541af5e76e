//! Dropout: a stochastic op whose mask is drawn from a seeded generator and stored on the tape.
//!
//! Inverted dropout: each element is kept with probability `1 - p` and scaled by `1 / (1 - p)`,
//! so the expected value of every output equals its input and nothing is rescaled at test time.
//! The mask is drawn counter-style: element `i` keeps iff word `offset + i` of the ChaCha8 stream
//! of `seed` is below `(1 - p) · 2³²`, so any chunk of the mask can be generated on its own and the
//! mask is the same on any number of threads. The tape entry stores `seed`, `offset`, `p` and the
//! mask at one bit per element (a million elements keep 128 KiB); backward multiplies by that
//! stored mask, never by a fresh draw.

use tapegrad_tensor::{BitMask, Error, Float, Generator, Result, Tensor};

use super::one;
use crate::seed::with_default_generator;
use crate::var::{Backward, Grads, Var, VarGrads};

/// What a dropout op stored: enough to regenerate the mask (or noise), and the mask itself.
///
/// A Bernoulli op (`dropout`, `dropout2d`, `alpha_dropout`, `feature_alpha_dropout`,
/// `drop_path`, `dropout_shared`, the fused ones) stores its mask at one bit per mask entry.
/// `gaussian_dropout` draws standard normals instead: its record has an empty [`mask`] and
/// [`gaussian_noise`] regenerates the noise from `(seed, offset)`.
///
/// [`mask`]: DropoutRecord::mask
/// [`gaussian_noise`]: DropoutRecord::gaussian_noise
#[derive(Clone, Debug, PartialEq)]
pub struct DropoutRecord {
    /// The generator's seed.
    pub seed: u64,
    /// The first stream word this draw used.
    pub offset: u64,
    /// The drop probability.
    pub p: f64,
    /// The number of mask (or noise) entries: the elements, or the channels, rows or noise-shape
    /// entries of a shared mask.
    pub numel: usize,
    mask: BitMask,
    gaussian: bool,
}

impl DropoutRecord {
    /// Draws the mask for `numel` elements from the generator at its current position.
    pub(crate) fn draw(numel: usize, p: f64, gen: &mut Generator) -> Result<DropoutRecord> {
        let (seed, offset) = crate::checkpoint::reserve(gen, numel as u64, p)?;
        DropoutRecord::regenerate(seed, offset, p, numel)
    }

    /// The mask that `(seed, offset, p)` gives for `numel` elements ([`BitMask::bernoulli`]):
    /// what a replay recomputes.
    ///
    /// # Errors
    /// When `p` is outside [0, 1] or NaN.
    pub fn regenerate(seed: u64, offset: u64, p: f64, numel: usize) -> Result<DropoutRecord> {
        Ok(DropoutRecord { seed, offset, p, numel, mask: BitMask::bernoulli(seed, offset, p, numel)?, gaussian: false })
    }

    /// The record of a Gaussian draw of `numel` standard normals at `(seed, offset)`
    /// ([`Generator::fill_normal_at`]); it holds no bit mask.
    pub(crate) fn gaussian(seed: u64, offset: u64, p: f64, numel: usize) -> DropoutRecord {
        DropoutRecord { seed, offset, p, numel, mask: BitMask::from_bools(&[]), gaussian: true }
    }

    /// True for a `gaussian_dropout` record (normal noise, no bit mask).
    pub fn is_gaussian(&self) -> bool {
        self.gaussian
    }

    /// The multiplicative noise `1 + σ z` (`σ² = p / (1 - p)`, `z` the standard normals of
    /// `(seed, offset)`) that a `gaussian_dropout` record's op multiplied its input by,
    /// regenerated from the seed and offset: what a replay recomputes. `None` for a Bernoulli
    /// record.
    pub fn gaussian_noise<T: Float>(&self) -> Option<Vec<T>> {
        if !self.gaussian {
            return None;
        }
        let mut z = vec![T::ZERO; self.numel];
        Generator::fill_normal_at(self.seed, self.offset, &mut z);
        let sigma = T::from_f64(gaussian_sigma(self.p));
        Some(z.into_iter().map(|z| T::ONE + sigma * z).collect())
    }

    /// The mask: bit `i` is set where element (or channel, row, noise-shape entry) `i` was kept;
    /// empty for a Gaussian record.
    pub fn mask(&self) -> &BitMask {
        &self.mask
    }

    /// The mask's packed words ([`BitMask::words`]).
    pub fn mask_words(&self) -> &[u64] {
        self.mask.words()
    }

    /// The bytes the mask takes: `numel / 8`, rounded up to whole words.
    pub fn mask_bytes(&self) -> usize {
        self.mask.bytes()
    }

    /// True when element `i` was kept.
    pub fn kept(&self, i: usize) -> bool {
        self.mask.get(i)
    }

    /// The number of kept elements.
    pub fn kept_count(&self) -> usize {
        self.mask.count_ones()
    }

    /// The survivors' scale, `1 / (1 - p)` ([`BitMask::keep_scale`]).
    pub(crate) fn scale<T: Float>(&self) -> T {
        T::from_f64(BitMask::keep_scale(self.p))
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
        Ok(one(self.record.mask().scale(dy, self.record.scale())?))
    }
    fn extra_bytes(&self) -> usize {
        self.record.mask_bytes()
    }
    fn dropout(&self) -> Option<&DropoutRecord> {
        Some(&self.record)
    }
    fn backward_var(&self, dy: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        // Dropout is linear in its input: its backward is the same dropout, with the same stored
        // mask (recorded as a dropout op again, so its own gradient uses that mask too).
        Ok(vec![Some(with_record(dy, self.record.clone())?)])
    }
}

/// `x` through the dropout whose mask `record` holds (no new draw), recorded as a `dropout` op.
pub(crate) fn with_record<T: Float>(x: &Var<T>, record: DropoutRecord) -> Result<Var<T>> {
    let y = record.mask().scale(&x.value(), record.scale())?;
    Ok(Var::from_op(y, &[x], || Dropout { record }))
}

/// Checks a drop probability for `op`: in [0, 1], not NaN.
///
/// # Errors
/// `op` when `p` is outside [0, 1] or NaN.
pub fn check_p(op: &'static str, p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::arg(op, format!("the drop probability p must be in [0, 1], got {p}")))
    }
}

/// Inverted dropout of `x` with drop probability `p`, the mask drawn from `gen`.
///
/// Each element is zeroed with probability `p` and the survivors are scaled by `1 / (1 - p)`:
/// the output is `x · m` with `m = 1 / (1 - p)` where kept and `0` where dropped, as PyTorch
/// computes it, so a NaN or infinite input stays NaN whether kept or dropped, and so does its
/// gradient. `p = 0` returns `x` itself (nothing drawn, nothing recorded); `p = 1` gives zeros
/// and zero gradients. Each call advances `gen`, so
/// successive calls draw fresh masks; the same seed gives the same masks on any thread count.
/// The tape entry stores the seed, offset, `p` and the bit mask that backward uses.
///
/// # Errors
/// `dropout` when `p` is outside [0, 1] or NaN.
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
    let value = x.value();
    let (seed, offset) = crate::checkpoint::reserve(gen, value.numel() as u64, p)?;
    let (y, mask) = value.dropout_with_mask(seed, offset, p)?;
    let record = DropoutRecord { seed, offset, p, numel: value.numel(), mask, gaussian: false };
    Ok(Var::from_op(y, &[x], || Dropout { record }))
}

/// The standard deviation `σ = √(p / (1 - p))` of Gaussian dropout's noise.
pub(crate) fn gaussian_sigma(p: f64) -> f64 {
    (p / (1.0 - p)).sqrt()
}

impl<T: Float> Var<T> {
    /// [`dropout`] with this thread's default generator (seeded, for every thread, by
    /// [`manual_seed`](crate::manual_seed); see [`with_default_generator`] for which stream
    /// each thread draws).
    ///
    /// # Errors
    /// `dropout` when `p` is outside [0, 1] or NaN.
    pub fn dropout(&self, p: f64) -> Result<Var<T>> {
        with_default_generator(|gen| dropout(self, p, gen))
    }
}
