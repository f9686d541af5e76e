//! `Generator`: the one source of randomness, a ChaCha8 stream addressed by (seed, offset).
//!
//! Every draw is *counter-based*: the value at position `i` of a draw that starts at word `offset`
//! is a pure function of `(seed, offset + 2 i)`, so any chunk of a large draw can be generated on
//! its own (and on any thread) by seeking the ChaCha stream, and the numbers are identical on every
//! machine and every thread count. ChaCha is used directly, never `StdRng`, whose algorithm may
//! change between `rand` versions.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dtype::Float;

/// Elements per parallel chunk of a large draw. Fixed, so results never depend on thread count.
const CHUNK: usize = 1 << 16;

/// 2^-53, to turn the top 53 bits of a `u64` into a uniform in [0, 1).
const TWO_POW_NEG_53: f64 = 1.0 / (1u64 << 53) as f64;

/// A seeded random source: a seed and a position (in 32-bit words) in its ChaCha8 stream.
///
/// ```
/// use tapegrad_tensor::{Generator, Tensor};
/// let a = Tensor::<f32>::rand(&[2, 3], &mut Generator::new(7));
/// let b = Tensor::<f32>::rand(&[2, 3], &mut Generator::new(7));
/// assert_eq!(a.to_vec(), b.to_vec());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generator {
    seed: u64,
    offset: u64,
}

/// A reader of one generator stream from a given word position; seekable in O(1).
pub struct Stream {
    rng: ChaCha8Rng,
    seed: u64,
}

impl Stream {
    /// The stream of `seed`, positioned at word `offset`.
    pub fn new(seed: u64, offset: u64) -> Stream {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_word_pos(u128::from(offset));
        Stream { rng, seed }
    }

    /// The next 32-bit word.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }

    /// The next two words as a `u64`.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Fills `out` with the next words: the same words as `out.len()` calls of
    /// [`next_u32`](Stream::next_u32), generated many blocks at a time on the SIMD path
    /// (the crate's ChaCha kernels).
    pub fn fill_u32(&mut self, out: &mut [u32]) {
        let pos = self.rng.get_word_pos();
        let key = crate::kernels::chacha::key_for_seed(self.seed);
        crate::kernels::chacha::fill(&key, pos as u64, out);
        self.rng.set_word_pos(pos + out.len() as u128);
    }

    /// A uniform in [0, 1) from the next two words (53 random bits, rounded to `T`; an `f32`
    /// that rounds up to 1 is mapped to the largest value below 1).
    #[inline]
    pub fn next_uniform<T: Float>(&mut self) -> T {
        let u = (self.rng.next_u64() >> 11) as f64 * TWO_POW_NEG_53;
        let t = T::from_f64(u);
        if t >= T::ONE {
            T::from_f64(1.0 - T::EPSILON.to_f64() / 2.0)
        } else {
            t
        }
    }
}

impl Generator {
    /// A generator at the start of the stream of `seed`.
    pub fn new(seed: u64) -> Generator {
        Generator { seed, offset: 0 }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The current position in the stream, in 32-bit words.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reserves `words` words of the stream and returns where they start: `(seed, offset)`.
    /// The caller generates them with [`Stream::new`], in any chunks and on any threads.
    pub fn reserve(&mut self, words: u64) -> (u64, u64) {
        let start = self.offset;
        // Round up to a whole ChaCha block (16 words) so that reservations never share a block.
        self.offset = self.offset.wrapping_add(words.div_ceil(16) * 16);
        (self.seed, start)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let (seed, offset) = self.reserve(2);
        Stream::new(seed, offset).next_u64()
    }

    /// A uniform integer in `0..n`, by rejection so it is unbiased; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// Fills `out` with uniforms in [0, 1): element `i` uses words `2 i` and `2 i + 1` of the
    /// reserved range.
    pub fn fill_uniform<T: Float>(&mut self, out: &mut [T]) {
        let (seed, offset) = self.reserve(2 * out.len() as u64);
        let work = out.len();
        crate::parallel::for_each(out.chunks_mut(CHUNK).enumerate(), work, |(c, chunk)| {
            let mut s = Stream::new(seed, offset + 2 * (c * CHUNK) as u64);
            for v in chunk {
                *v = s.next_uniform();
            }
        });
    }

    /// Fills `out` with standard normals by the Box-Muller transform: elements `2 j` and `2 j + 1`
    /// come from uniforms `2 j` and `2 j + 1`, computed in `f64`. Reserves
    /// [`normal_words`](Generator::normal_words)`(out.len())` words and draws them with
    /// [`fill_normal_at`](Generator::fill_normal_at).
    pub fn fill_normal<T: Float>(&mut self, out: &mut [T]) {
        let (seed, offset) = self.reserve(Generator::normal_words(out.len()));
        Generator::fill_normal_at(seed, offset, out);
    }

    /// The stream words a draw of `n` normals takes (two per element, and one pair more for an
    /// odd `n`): what to [`reserve`](Generator::reserve) before
    /// [`fill_normal_at`](Generator::fill_normal_at).
    pub fn normal_words(n: usize) -> u64 {
        2 * (n as u64 + 1)
    }

    /// The standard normals of the draw that starts at word `offset` of the stream of `seed`, as
    /// [`fill_normal`](Generator::fill_normal) draws them: a pure function of
    /// `(seed, offset, out.len())`, so a recorded draw (a Gaussian dropout's noise) can be
    /// regenerated exactly, in fixed chunks on any number of threads.
    ///
    /// ```
    /// use tapegrad_tensor::Generator;
    /// let mut gen = Generator::new(5);
    /// let (seed, offset) = (gen.seed(), gen.offset());
    /// let mut a = vec![0f64; 7];
    /// gen.fill_normal(&mut a);
    /// let mut b = vec![0f64; 7];
    /// Generator::fill_normal_at(seed, offset, &mut b);
    /// assert_eq!(a, b);
    /// ```
    pub fn fill_normal_at<T: Float>(seed: u64, offset: u64, out: &mut [T]) {
        let n = out.len();
        crate::parallel::for_each(out.chunks_mut(CHUNK).enumerate(), n, |(c, chunk)| {
            let mut s = Stream::new(seed, offset + 2 * (c * CHUNK) as u64);
            for pair in chunk.chunks_mut(2) {
                // 1 - u lies in (0, 1], so the logarithm is finite.
                let u1 = 1.0 - s.next_uniform::<f64>();
                let u2 = s.next_uniform::<f64>();
                let r = (-2.0 * u1.ln()).sqrt();
                let theta = 2.0 * std::f64::consts::PI * u2;
                pair[0] = T::from_f64(r * theta.cos());
                if let Some(v) = pair.get_mut(1) {
                    *v = T::from_f64(r * theta.sin());
                }
            }
        });
    }
}

/// Saving and restoring a generator's state, (seed, offset), as checkpoints do (PyTorch's
/// `Generator.get_state` / `set_state`). The state is read with [`Generator::seed`] and
/// [`Generator::offset`]; a generator restored from them draws exactly what the original would
/// have drawn next.
///
/// ```
/// use tapegrad_tensor::Generator;
/// let mut gen = Generator::new(3);
/// gen.next_u64();
/// let mut copy = Generator::from_state(gen.seed(), gen.offset());
/// assert_eq!(copy.next_u64(), gen.next_u64());
/// ```
impl Generator {
    /// The generator of `seed` positioned at word `offset` of its stream.
    pub fn from_state(seed: u64, offset: u64) -> Generator {
        Generator { seed, offset }
    }

    /// Moves this generator to word `offset` of the stream of `seed`.
    pub fn set_state(&mut self, seed: u64, offset: u64) {
        *self = Generator::from_state(seed, offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_fresh_draws_differ() {
        let (mut a, mut b) = (Generator::new(1), Generator::new(1));
        let mut x = vec![0f32; 100];
        let mut y = vec![0f32; 100];
        a.fill_uniform(&mut x);
        b.fill_uniform(&mut y);
        assert_eq!(x, y);
        a.fill_uniform(&mut y);
        assert_ne!(x, y);
        assert!(x.iter().all(|&v| (0.0..1.0).contains(&v)));
    }

    /// `n` normals drawn one pair at a time from one [`Stream`] at `(seed, offset)`: what the
    /// chunked, parallel `fill_normal` must reproduce by seeking to each chunk's start.
    fn normals_one_by_one(seed: u64, offset: u64, n: usize) -> Vec<f64> {
        let mut s = Stream::new(seed, offset);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let u1 = 1.0 - s.next_uniform::<f64>();
            let u2 = s.next_uniform::<f64>();
            let (r, theta) = ((-2.0 * u1.ln()).sqrt(), 2.0 * std::f64::consts::PI * u2);
            out.push(r * theta.cos());
            if out.len() < n {
                out.push(r * theta.sin());
            }
        }
        out
    }

    #[test]
    fn chunked_draws_match_one_stream_read_in_order() {
        // Several chunks, an odd tail, and a generator that has drawn before (a non-zero offset).
        let n = 3 * CHUNK + 17;
        let mut gen = Generator::new(9);
        gen.fill_uniform(&mut [0f32; 5]);
        let offset = gen.offset();
        assert_ne!(offset, 0);
        let mut par = vec![0f64; n];
        gen.fill_normal(&mut par);
        assert_eq!(par, normals_one_by_one(9, offset, n), "fill_normal vs one Stream");

        let offset = gen.offset();
        let mut uniform = vec![0f32; n];
        gen.fill_uniform(&mut uniform);
        let mut s = Stream::new(9, offset);
        let want: Vec<f32> = (0..n).map(|_| s.next_uniform::<f32>()).collect();
        assert_eq!(uniform, want, "fill_uniform vs one Stream");

        // And on one thread, the same numbers again.
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let mut seq = vec![0f64; n];
        one.install(|| Generator::new(9).fill_normal(&mut seq));
        assert_eq!(seq, normals_one_by_one(9, 0, n));
        let mean = par.iter().sum::<f64>() / n as f64;
        let var = par.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "mean {mean}, var {var}");
    }

    #[test]
    fn fill_u32_matches_next_u32() {
        for (offset, n) in [(0u64, 1000usize), (5, 37), (16 * 1000 + 3, 4097)] {
            let mut a = Stream::new(11, offset);
            let mut got = vec![0u32; n];
            a.fill_u32(&mut got);
            let mut b = Stream::new(11, offset);
            let want: Vec<u32> = (0..n).map(|_| b.next_u32()).collect();
            assert_eq!(got, want);
            assert_eq!(a.next_u32(), b.next_u32(), "the stream continues after the fill");
        }
    }

    #[test]
    fn below_is_in_range() {
        let mut g = Generator::new(3);
        let mut counts = [0usize; 5];
        for _ in 0..5000 {
            counts[g.below(5) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (850..1150).contains(&c)), "{counts:?}");
    }
}
