//! [`BitMask`]: one bit per element, drawn counter-style from a seeded ChaCha8 stream, and the
//! fused passes that apply it: dropout's forward and backward, ReLU followed by dropout, and the
//! grouped and affine forms of `dropout2d` and `alpha_dropout`.
//!
//! The bit layout, the keep threshold and the parallel split live here and nowhere else: the
//! tape stores a `BitMask` and hands it back to these methods.

use std::sync::Arc;

use crate::parallel::for_each;

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::kernels::{active_isa, chacha, mask, relu_mask};
use crate::ops::elementwise::CHUNK;
use crate::tensor::Tensor;

/// A mask of `len` bits, e.g. which elements a dropout kept.
///
/// Bit `i` is bit `i % 64` of word `i / 64`; the bits past `len` in the last word are zero.
/// Cloning shares the words.
///
/// ```
/// use tapegrad_tensor::{BitMask, Tensor};
/// let mask = BitMask::bernoulli(7, 0, 0.5, 1000)?;
/// assert!((400..600).contains(&mask.count_ones()));
/// let x = Tensor::<f32>::ones(&[1000]);
/// let y = mask.scale(&x, 2.0)?;
/// assert_eq!(y.get(&[3])?, if mask.get(3) { 2.0 } else { 0.0 });
/// # Ok::<(), tapegrad_tensor::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitMask {
    words: Arc<Vec<u64>>,
    len: usize,
}

/// Keep iff the stream word is below `(1 - p) · 2³²` (so `p = 0` keeps everything and `p = 1`
/// nothing).
fn keep_threshold(p: f64) -> u64 {
    ((1.0 - p) * 4_294_967_296.0) as u64
}

/// Stream words drawn at a time: a buffer that stays in L1.
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

/// Checks a drop probability for `op`: in [0, 1], not NaN.
pub(crate) fn check_p(op: &'static str, p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::arg(op, format!("the drop probability p must be in [0, 1], got {p}")))
    }
}

impl BitMask {
    /// A mask from packed words in the layout above.
    ///
    /// # Errors
    /// `BitMask::from_words` when `words` is not `len.div_ceil(64)` long or has a bit set past
    /// `len`.
    pub fn from_words(words: Vec<u64>, len: usize) -> Result<BitMask> {
        const OP: &str = "BitMask::from_words";
        if words.len() != len.div_ceil(64) {
            return Err(Error::arg(OP, format!("{len} bits need {} words, got {}", len.div_ceil(64), words.len())));
        }
        if !len.is_multiple_of(64) && words.last().is_some_and(|w| w >> (len % 64) != 0) {
            return Err(Error::arg(OP, format!("bits past the mask's {len} are set")));
        }
        Ok(BitMask { words: Arc::new(words), len })
    }

    /// The mask with bit `i` set where `bits[i]` is true.
    pub fn from_bools(bits: &[bool]) -> BitMask {
        let mut words = vec![0u64; bits.len().div_ceil(64)];
        for (i, _) in bits.iter().enumerate().filter(|(_, &b)| b) {
            words[i / 64] |= 1 << (i % 64);
        }
        BitMask { words: Arc::new(words), len: bits.len() }
    }

    /// Dropout's keep-mask for drop probability `p`: bit `i` is set iff word `offset + i` of the
    /// ChaCha8 stream of `seed` ([`Stream`](crate::Stream)) is below `(1 - p) · 2³²`. Any range
    /// of it can be drawn on its own, so the mask is the same on any number of threads; drawing it
    /// again from the same `(seed, offset, p, len)` regenerates it exactly. A
    /// [`Generator`](crate::Generator) hands out `(seed, offset)` with `reserve(len)`.
    ///
    /// # Errors
    /// `BitMask::bernoulli` when `p` is outside [0, 1] or NaN.
    pub fn bernoulli(seed: u64, offset: u64, p: f64, len: usize) -> Result<BitMask> {
        check_p("BitMask::bernoulli", p)?;
        let key = chacha::key_for_seed(seed);
        let threshold = keep_threshold(p);
        let mut words = vec![0u64; len.div_ceil(64)];
        for_each(words.chunks_mut(CHUNK / 64).enumerate(), len, |(c, words)| {
            let first = c * CHUNK;
            draw_words(&key, offset, threshold, first, (len - first).min(CHUNK), words);
        });
        Ok(BitMask { words: Arc::new(words), len })
    }

    /// The survivors' scale of inverted dropout, `1 / (1 - p)`, and `0` for `p = 1`, where
    /// nothing survives.
    pub fn keep_scale(p: f64) -> f64 {
        if p < 1.0 {
            1.0 / (1.0 - p)
        } else {
            0.0
        }
    }

    /// The number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a mask of no bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i` (false past the end).
    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] >> (i % 64) & 1 == 1
    }

    /// The number of set bits.
    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The packed words: bit `i` at bit `i % 64` of word `i / 64`.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The memory the words take, in bytes (`len / 8` rounded up to whole words).
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    fn check_len<T: Float>(&self, op: &'static str, x: &Tensor<T>, group: usize) -> Result<()> {
        if x.numel() != self.len.saturating_mul(group) {
            let per = if group == 1 { String::new() } else { format!(" of {group} elements each") };
            return Err(Error::shape(op, x.shape(), format!("the mask has {} bits{per}", self.len)));
        }
        Ok(())
    }

    /// `x · (bit ? scale : 0)` elementwise, as PyTorch's dropout multiplies by its mask: a NaN or
    /// infinite element stays NaN where it is dropped, and a dropped negative one is `-0`.
    /// Dropout's forward (with [`keep_scale`](BitMask::keep_scale)) and backward (on `dy`).
    ///
    /// # Errors
    /// `BitMask::scale` when `x` does not have one element per bit.
    pub fn scale<T: Float>(&self, x: &Tensor<T>, scale: T) -> Result<Tensor<T>> {
        self.check_len("BitMask::scale", x, 1)?;
        let x = x.contiguous();
        let data = x.as_slice().expect("a contiguous tensor has a slice");
        Ok(Tensor::from_contiguous(mask::scale_by_mask_new(data, &self.words, scale, CHUNK), x.shape()))
    }

    /// `relu(x) · (bit ? scale : 0)`: ReLU then dropout in one pass, in place when nothing else
    /// holds `x`'s buffer. NaN stays NaN, as in [`Tensor::relu`] and [`BitMask::scale`].
    ///
    /// # Errors
    /// `BitMask::relu_scale` when `x` does not have one element per bit.
    pub fn relu_scale<T: Float>(&self, mut x: Tensor<T>, scale: T) -> Result<Tensor<T>> {
        self.check_len("BitMask::relu_scale", &x, 1)?;
        let isa = active_isa();
        let work = x.numel();
        let pieces = x.make_mut().chunks_mut(CHUNK).zip(self.words.chunks(CHUNK / 64));
        for_each(pieces, work, |(x, keep)| relu_mask::relu_scale_by_mask_in_place(isa, keep, x, scale));
        Ok(x)
    }

    /// The backward of [`BitMask::relu_scale`] from its output `y`: `dy · (bit ? scale : 0)`
    /// where `y` is not `<= 0`, else `0`, in one SIMD pass. A positive `y` was kept; a NaN `y`
    /// (a NaN input) is NaN whether kept or dropped, and passes its gradient only where kept,
    /// as `dropout(relu(x))` does in PyTorch.
    ///
    /// # Errors
    /// `BitMask::relu_scale_backward` when `y` and `dy` differ in shape or do not have one
    /// element per bit.
    ///
    /// ```
    /// use tapegrad_tensor::{BitMask, Tensor};
    /// let keep = BitMask::from_bools(&[true, false, true, false]);
    /// let y = Tensor::from_vec(vec![2.0f32, f32::NAN, f32::NAN, 0.0], &[4])?;
    /// let dy = Tensor::from_vec(vec![1.0f32, 1.0, 1.0, 1.0], &[4])?;
    /// assert_eq!(keep.relu_scale_backward(&y, &dy, 2.0)?.to_vec(), vec![2.0, 0.0, 2.0, 0.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn relu_scale_backward<T: Float>(&self, y: &Tensor<T>, dy: &Tensor<T>, scale: T) -> Result<Tensor<T>> {
        const OP: &str = "BitMask::relu_scale_backward";
        if y.shape() != dy.shape() {
            return Err(Error::mismatch(OP, y.shape(), dy.shape(), "the output and dy must match"));
        }
        self.check_len(OP, y, 1)?;
        relu_backward_pass(OP, y, dy, scale, Some(&self.words))
    }

    /// `x · (bit[i / group] ? scale : 0)`: one bit for each run of `group` elements (a channel of
    /// `dropout2d`), NaN propagating as in [`BitMask::scale`].
    ///
    /// # Errors
    /// `BitMask::scale_groups` when `x` does not have `group` elements per bit.
    pub fn scale_groups<T: Float>(&self, x: &Tensor<T>, group: usize, scale: T) -> Result<Tensor<T>> {
        self.check_len("BitMask::scale_groups", x, group)?;
        let x = x.contiguous();
        let data = x.as_slice().expect("a contiguous tensor has a slice");
        let group = group.max(1);
        let mut out = crate::memory::for_overwrite(data.len());
        // One multiplier per group, then a plain multiply over the group's run (which the
        // compiler vectorises): `x · 0` keeps a NaN or infinite input NaN, as `scale` does.
        for_each(out.chunks_mut(CHUNK).zip(data.chunks(CHUNK)).enumerate(), data.len(), |(c, (out, x))| {
            let mut j = 0;
            while j < out.len() {
                let at = c * CHUNK + j;
                let end = (at / group + 1) * group - c * CHUNK;
                let end = end.min(out.len());
                let m = if self.get(at / group) { scale } else { T::ZERO };
                for (o, &v) in out[j..end].iter_mut().zip(&x[j..end]) {
                    *o = v * m;
                }
                j = end;
            }
        });
        Ok(Tensor::from_contiguous(out, x.shape()))
    }

    /// `bit ? a · x + b : dropped` elementwise: `alpha_dropout`'s forward, which sends a dropped
    /// element to SELU's negative saturation value and keeps the mean and variance with `a`, `b`.
    ///
    /// # Errors
    /// `BitMask::affine` when `x` does not have one element per bit.
    pub fn affine<T: Float>(&self, x: &Tensor<T>, a: T, b: T, dropped: T) -> Result<Tensor<T>> {
        self.check_len("BitMask::affine", x, 1)?;
        Ok(self.map_bits(x, |v, kept| if kept { a * v + b } else { dropped }))
    }

    /// `f(x[i], bit[i])` for every element, in parallel over fixed chunks.
    fn map_bits<T: Float>(&self, x: &Tensor<T>, f: impl Fn(T, bool) -> T + Sync) -> Tensor<T> {
        let x = x.contiguous();
        let data = x.as_slice().expect("a contiguous tensor has a slice");
        // Every position is written below.
        let mut out = crate::memory::for_overwrite(data.len());
        for_each(out.chunks_mut(CHUNK).zip(data.chunks(CHUNK)).enumerate(), data.len(), |(c, (out, x))| {
            for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
                *o = f(v, self.get(c * CHUNK + j));
            }
        });
        Tensor::from_contiguous(out, x.shape())
    }
}

impl<T: Float> Tensor<T> {
    /// Inverted dropout in one pass: draws [`BitMask::bernoulli`]`(seed, offset, p, numel)` and
    /// returns `self · mask / (1 - p)` ([`BitMask::scale`] with [`BitMask::keep_scale`]) with the
    /// mask. Each parallel chunk draws its mask words, then scales its elements, while they are
    /// in cache.
    ///
    /// # Errors
    /// `dropout` when `p` is outside [0, 1] or NaN.
    ///
    /// ```
    /// use tapegrad_tensor::{BitMask, Tensor};
    /// let x = Tensor::<f32>::ones(&[100]);
    /// let (y, mask) = x.dropout_with_mask(3, 0, 0.5)?;
    /// assert_eq!(mask, BitMask::bernoulli(3, 0, 0.5, 100)?);
    /// assert_eq!(y.to_vec(), mask.scale(&x, 2.0)?.to_vec());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn dropout_with_mask(&self, seed: u64, offset: u64, p: f64) -> Result<(Tensor<T>, BitMask)> {
        check_p("dropout", p)?;
        let numel = self.numel();
        let key = chacha::key_for_seed(seed);
        let threshold = keep_threshold(p);
        let mut words = vec![0u64; numel.div_ceil(64)];
        let x = self.contiguous();
        let data = x.as_slice().expect("a contiguous tensor has a slice");
        let scale = T::from_f64(BitMask::keep_scale(p));
        let y = mask::draw_and_scale_new(data, &mut words, scale, CHUNK, |c, words| {
            let first = c * CHUNK;
            draw_words(&key, offset, threshold, first, (numel - first).min(CHUNK), words);
        });
        Ok((Tensor::from_contiguous(y, x.shape()), BitMask { words: Arc::new(words), len: numel }))
    }

    /// ReLU's backward from its output: `0` where `self <= 0`, else `dy` (`self` is `relu(x)`,
    /// positive exactly where `x` is). A NaN output passes `dy`, as PyTorch's
    /// `threshold_backward` does (so a NaN is not hidden by a zero gradient). One SIMD pass.
    ///
    /// # Errors
    /// `relu_backward` when the shapes differ.
    ///
    /// ```
    /// use tapegrad_tensor::Tensor;
    /// let y = Tensor::from_vec(vec![0.0f32, 2.0, 0.0, 5.0, f32::NAN], &[5])?;
    /// let dy = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0], &[5])?;
    /// assert_eq!(y.relu_backward(&dy)?.to_vec(), vec![0.0, 2.0, 0.0, 4.0, 5.0]);
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn relu_backward(&self, dy: &Tensor<T>) -> Result<Tensor<T>> {
        self.relu_backward_scaled(dy, T::ONE)
    }

    /// `0` where `self <= 0`, else `dy · scale` (a NaN `self` included, as in
    /// [`Tensor::relu_backward`]): the backward of [`BitMask::relu_scale`] from its output
    /// (positive exactly where the element was kept and its input positive; a dropped NaN is
    /// NaN too, which only the mask tells from a kept one), in one SIMD pass.
    ///
    /// # Errors
    /// `relu_backward` when the shapes differ.
    pub fn relu_backward_scaled(&self, dy: &Tensor<T>, scale: T) -> Result<Tensor<T>> {
        relu_backward_pass("relu_backward", self, dy, scale, None)
    }
}

/// `dy · scale` where the output `y` is not `<= 0` (and, with `mask`, its bit is set), else `0`,
/// in parallel pieces of `CHUNK` elements: the one body of [`Tensor::relu_backward_scaled`] and
/// [`BitMask::relu_scale_backward`].
///
/// # Errors
/// `op` when `y` and `dy` differ in shape. (`mask`, when given, covers `y`: its caller checked.)
fn relu_backward_pass<T: Float>(
    op: &'static str,
    y: &Tensor<T>,
    dy: &Tensor<T>,
    scale: T,
    mask: Option<&[u64]>,
) -> Result<Tensor<T>> {
    if y.shape() != dy.shape() {
        return Err(Error::mismatch(op, y.shape(), dy.shape(), "the output and dy must match"));
    }
    let (y, dy) = (y.contiguous(), dy.contiguous());
    let (ys, gs) = (y.as_slice().expect("contiguous"), dy.as_slice().expect("contiguous"));
    let isa = active_isa();
    let out = crate::ops::elementwise::fill_chunked(ys.len(), CHUNK, |start, out| {
        let (y, dy) = (&ys[start..start + out.len()], &gs[start..start + out.len()]);
        match mask {
            // Chunks start on whole words (CHUNK is a multiple of 64).
            Some(words) => relu_mask::scale_where_kept_and_positive(isa, &words[start / 64..], y, dy, scale, out),
            None => relu_mask::scale_where_positive(isa, y, dy, scale, out),
        }
    });
    Ok(Tensor::from_contiguous(out, y.shape()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::Stream;
    use crate::TensorNew;

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
            [(0, 0, 0.5, 1), (1, 16, 0.1, 1000), (7, 3, 0.9, 3 * CHUNK + 1037), (9, 160, 1e-30, 200), (2, 0, 1.0, 300)]
        {
            let want = reference(seed, offset, p, numel);
            assert_eq!(BitMask::bernoulli(seed, offset, p, numel).unwrap().words(), &want[..]);
            let x = Tensor::<f32>::ones(&[numel]);
            let (y, mask) = x.dropout_with_mask(seed, offset, p).unwrap();
            assert_eq!(mask.words(), &want[..]);
            for (i, v) in y.to_vec().iter().enumerate() {
                assert_eq!(*v != 0.0, mask.get(i));
            }
        }
    }

    #[test]
    fn probabilities_outside_the_unit_interval_are_errors() {
        for p in [-0.1, 1.5, f64::NAN] {
            assert!(BitMask::bernoulli(0, 0, p, 10).is_err());
            assert!(Tensor::<f32>::ones(&[3]).dropout_with_mask(0, 0, p).is_err());
        }
        assert_eq!(BitMask::bernoulli(0, 0, 1.0, 100).unwrap().count_ones(), 0);
        assert_eq!(BitMask::bernoulli(0, 0, 0.0, 100).unwrap().count_ones(), 100);
    }

    #[test]
    fn words_are_validated() {
        assert!(BitMask::from_words(vec![0; 2], 64).is_err());
        assert!(BitMask::from_words(vec![1 << 10], 10).is_err());
        let m = BitMask::from_words(vec![0b101], 3).unwrap();
        assert_eq!(m, BitMask::from_bools(&[true, false, true]));
        assert!(m.get(0) && !m.get(1) && m.get(2) && !m.get(3));
    }

    #[test]
    fn lengths_are_checked() {
        let m = BitMask::from_bools(&[true, false, true]);
        let x = Tensor::<f32>::ones(&[4]);
        assert!(m.scale(&x, 1.0).is_err());
        assert!(m.relu_scale(x.clone(), 1.0).is_err());
        assert!(m.affine(&x, 1.0, 0.0, 0.0).is_err());
        assert!(m.scale_groups(&Tensor::<f32>::ones(&[6]), 2, 1.0).is_ok());
        assert!(m.scale_groups(&x, 2, 1.0).is_err());
    }

    #[test]
    fn dropped_elements_are_multiplied_by_zero() {
        let m = BitMask::from_bools(&[true, false, true, false, false]);
        let x = Tensor::from_vec(vec![f32::NAN, f32::NAN, -3.0, -3.0, f32::INFINITY], &[5]).unwrap();
        let y = m.scale(&x, 2.0).unwrap().to_vec();
        assert!(y[0].is_nan() && y[1].is_nan() && y[4].is_nan());
        assert_eq!(y[2], -6.0);
        assert!(y[3] == 0.0 && y[3].is_sign_negative());
        let g = m.scale_groups(&Tensor::<f64>::ones(&[10]), 2, 4.0).unwrap().to_vec();
        assert_eq!(g, vec![4.0, 4.0, 0.0, 0.0, 4.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn scale_groups_matches_the_per_element_rule_across_chunks() {
        // Groups of 7 straddle the chunk boundaries; a NaN in a dropped group stays NaN.
        let group = 7;
        let n = group * (2 * CHUNK / group + 3);
        let m = BitMask::bernoulli(5, 0, 0.5, n / group).unwrap();
        let mut data: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 6.0).collect();
        data[CHUNK + 1] = f32::NAN;
        let x = Tensor::from_vec(data.clone(), &[n]).unwrap();
        let y = m.scale_groups(&x, group, 2.0).unwrap().to_vec();
        for (i, (&v, &got)) in data.iter().zip(&y).enumerate() {
            let want = v * if m.get(i / group) { 2.0 } else { 0.0 };
            assert!(got == want || (got.is_nan() && want.is_nan()), "element {i}: {got} vs {want}");
        }
    }

    #[test]
    fn relu_scale_and_its_backward_match_the_composition() {
        let n = 2 * CHUNK + 77;
        let mut gen = crate::Generator::new(5);
        let x = Tensor::<f64>::randn(&[n], &mut gen);
        let dy = Tensor::<f64>::randn(&[n], &mut gen);
        let m = BitMask::bernoulli(11, 0, 0.3, n).unwrap();
        let s = 1.0 / 0.7;
        let y = m.relu_scale(x.clone(), s).unwrap();
        assert_eq!(y.to_vec(), m.scale(&x.relu(), s).unwrap().to_vec());
        let dz = y.relu_backward_scaled(&dy, s).unwrap().to_vec();
        let (xs, gs) = (x.to_vec(), dy.to_vec());
        let want: Vec<f64> = (0..n).map(|i| if m.get(i) && xs[i] > 0.0 { gs[i] * s } else { 0.0 }).collect();
        assert_eq!(dz, want);
        assert!(y.relu_backward(&dy.narrow(0, 0, 3).unwrap()).is_err());
    }
}
