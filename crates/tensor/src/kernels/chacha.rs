//! ChaCha8 keystream words in bulk, exactly the word stream of `rand_chacha::ChaCha8Rng`.
//!
//! `ChaCha8Rng` (stream 0) is the ChaCha block function with 4 double rounds over the state
//! `[constants, key, block counter (2 words, little end first), 0, 0]`; word `w` of the stream is
//! word `w % 16` of block `w / 16`. The rounds are written once ([`blocks`]) over the
//! instruction sets of [`crate::kernels::mask`] (`mask/isa.rs`), one block per lane: 16 blocks at
//! once on AVX-512, 8 on AVX2, 4 on NEON, 1 on the scalar reference ([`block_scalar`]); each
//! instruction set transposes its lanes back into stream order. Tests check every path against
//! the scalar one and the scalar one against `ChaCha8Rng` itself.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::kernels::mask::isa::{dispatch, Kernel, MaskIsa, WordLanes};
use crate::kernels::Isa;

/// Words in one ChaCha block.
pub const BLOCK_WORDS: usize = 16;

/// "expand 32-byte k".
const CONSTANTS: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// The 256-bit key that `ChaCha8Rng::seed_from_u64(seed)` uses, as eight little-endian words.
pub fn key_for_seed(seed: u64) -> [u32; 8] {
    let bytes = ChaCha8Rng::seed_from_u64(seed).get_seed();
    let mut key = [0u32; 8];
    for (k, b) in key.iter_mut().zip(bytes.chunks_exact(4)) {
        *k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    key
}

/// Block `block` of the ChaCha8 stream of `key` (stream id 0): the scalar reference, the shared
/// [`blocks`] loop on one-lane `u32` "registers".
pub fn block_scalar(key: &[u32; 8], block: u64) -> [u32; 16] {
    let mut out = [0u32; 16];
    // SAFETY: `u32` is the scalar register (always supported); `out` holds one block.
    unsafe { blocks::<u32>(key, block, out.as_mut_ptr()) };
    out
}

/// Fills `out` with words `word_pos, word_pos + 1, ...` of the ChaCha8 stream of `key`, on the
/// [`active_isa`](crate::kernels::active_isa) path.
pub fn fill(key: &[u32; 8], word_pos: u64, out: &mut [u32]) {
    fill_with(crate::kernels::active_isa(), key, word_pos, out);
}

/// [`fill`] on an explicit path (an unsupported path falls back to scalar).
pub fn fill_with(isa: Isa, key: &[u32; 8], word_pos: u64, out: &mut [u32]) {
    let mut pos = word_pos;
    let mut out = out;
    // A partial first block.
    let skip = (pos % BLOCK_WORDS as u64) as usize;
    if skip != 0 && !out.is_empty() {
        let block = block_scalar(key, pos / BLOCK_WORDS as u64);
        let n = (BLOCK_WORDS - skip).min(out.len());
        out[..n].copy_from_slice(&block[skip..skip + n]);
        pos += n as u64;
        out = &mut out[n..];
    }
    // Whole blocks, in groups of the path's width, then a partial last block.
    let block = pos / BLOCK_WORDS as u64;
    let whole = out.len() / BLOCK_WORDS * BLOCK_WORDS;
    let (whole, last) = out.split_at_mut(whole);
    dispatch(isa, FillBlocks { key, block, out: whole });
    if !last.is_empty() {
        let words = block_scalar(key, block.wrapping_add((whole.len() / BLOCK_WORDS) as u64));
        last.copy_from_slice(&words[..last.len()]);
    }
}

/// Whole blocks `block, block + 1, ...` into `out` (a multiple of 16 words).
struct FillBlocks<'a> {
    key: &'a [u32; 8],
    block: u64,
    out: &'a mut [u32],
}

impl Kernel for FillBlocks<'_> {
    type Output = ();

    #[inline(always)]
    unsafe fn call<S: MaskIsa>(self, _isa: S) {
        let wide = S::Words::LANES * BLOCK_WORDS;
        let mut block = self.block;
        let mut groups = self.out.chunks_exact_mut(wide);
        for group in &mut groups {
            // SAFETY: the caller guarantees `S`'s instruction set; `group` holds `LANES` blocks.
            unsafe { blocks::<S::Words>(self.key, block, group.as_mut_ptr()) };
            block = block.wrapping_add(S::Words::LANES as u64);
        }
        for one in groups.into_remainder().chunks_exact_mut(BLOCK_WORDS) {
            // SAFETY: the scalar register is always supported; `one` holds a block.
            unsafe { blocks::<u32>(self.key, block, one.as_mut_ptr()) };
            block = block.wrapping_add(1);
        }
    }
}

/// Blocks `block .. block + V::LANES` (one per lane, the counter wrapping at 2^64) into
/// `out` in stream order: 4 double rounds over `[constants, key, counter low, counter high,
/// 0, 0]`, then the input added back.
///
/// # Safety
/// The CPU supports `V`'s instruction set; `out .. out + 16 · V::LANES` is writable.
#[inline(always)]
unsafe fn blocks<V: WordLanes>(key: &[u32; 8], block: u64, out: *mut u32) {
    let (mut lo, mut hi) = ([0u32; 16], [0u32; 16]);
    for b in 0..V::LANES {
        let counter = block.wrapping_add(b as u64);
        (lo[b], hi[b]) = (counter as u32, (counter >> 32) as u32);
    }
    // SAFETY: the caller guarantees the instruction set; `lo` and `hi` hold 16 ≥ LANES words.
    let init: [V; 16] = unsafe {
        let mut init = [V::splat(0); 16];
        for (v, &c) in init.iter_mut().zip(&CONSTANTS) {
            *v = V::splat(c);
        }
        for (v, &k) in init[4..].iter_mut().zip(key) {
            *v = V::splat(k);
        }
        init[12] = V::load(lo.as_ptr());
        init[13] = V::load(hi.as_ptr());
        init
    };
    let mut x = init;
    for _ in 0..4 {
        // SAFETY: the caller guarantees the instruction set.
        unsafe {
            quarter(&mut x, 0, 4, 8, 12);
            quarter(&mut x, 1, 5, 9, 13);
            quarter(&mut x, 2, 6, 10, 14);
            quarter(&mut x, 3, 7, 11, 15);
            quarter(&mut x, 0, 5, 10, 15);
            quarter(&mut x, 1, 6, 11, 12);
            quarter(&mut x, 2, 7, 8, 13);
            quarter(&mut x, 3, 4, 9, 14);
        }
    }
    // SAFETY: the caller guarantees the instruction set and `out`.
    unsafe {
        for (v, i) in x.iter_mut().zip(init) {
            *v = v.add(i);
        }
        V::store_blocks(&x, out);
    }
}

/// The ChaCha quarter round on words `a, b, c, d` of each lane's block.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn quarter<V: WordLanes>(x: &mut [V; 16], a: usize, b: usize, c: usize, d: usize) {
    // SAFETY: the caller guarantees the instruction set.
    unsafe {
        x[a] = x[a].add(x[b]);
        x[d] = x[d].xor(x[a]).rol::<16>();
        x[c] = x[c].add(x[d]);
        x[b] = x[b].xor(x[c]).rol::<12>();
        x[a] = x[a].add(x[b]);
        x[d] = x[d].xor(x[a]).rol::<8>();
        x[c] = x[c].add(x[d]);
        x[b] = x[b].xor(x[c]).rol::<7>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::RngCore;

    fn reference(seed: u64, word_pos: u64, n: usize) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_word_pos(u128::from(word_pos));
        (0..n).map(|_| rng.next_u32()).collect()
    }

    /// Words per test draw: 700 (43 blocks and a partial one); 40 under Miri (two blocks and a
    /// partial one from an unaligned position), where each word is interpreted.
    const DRAW: usize = if cfg!(miri) { 40 } else { 700 };

    #[test]
    fn scalar_matches_rand_chacha() {
        for seed in [0u64, 1, 0xdead_beef] {
            let key = key_for_seed(seed);
            for pos in [0u64, 5, 16, 333, 1 << 20] {
                let mut out = vec![0u32; DRAW];
                fill_with(Isa::Scalar, &key, pos, &mut out);
                assert_eq!(out, reference(seed, pos, DRAW), "seed {seed}, pos {pos}");
            }
        }
    }

    #[test]
    fn every_path_matches_scalar() {
        let key = key_for_seed(42);
        for isa in crate::kernels::available_isas() {
            for pos in [0u64, 3, 16, 4096 + 7, (u64::from(u32::MAX) - 5) * 16 + 9] {
                let lengths: &[usize] = if cfg!(miri) {
                    &[0, 1, 15, 16, 17, 33]
                } else {
                    &[0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 4099]
                };
                for &n in lengths {
                    let mut want = vec![0u32; n];
                    fill_with(Isa::Scalar, &key, pos, &mut want);
                    let mut got = vec![0u32; n];
                    fill_with(isa, &key, pos, &mut got);
                    assert_eq!(got, want, "{isa:?}, pos {pos}, n {n}");
                }
            }
        }
        // The block counter carries into its high word across 2^32 blocks.
        let pos = (u64::from(u32::MAX) - 5) * 16;
        let n = if cfg!(miri) { 100 } else { 300 };
        let mut got = vec![0u32; n];
        fill_with(crate::kernels::active_isa(), &key, pos, &mut got);
        assert_eq!(got, reference(42, pos, n));
    }
}
