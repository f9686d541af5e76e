//! ChaCha8 keystream words in bulk, exactly the word stream of `rand_chacha::ChaCha8Rng`.
//!
//! `ChaCha8Rng` (stream 0) is the ChaCha block function with 4 double rounds over the state
//! `[constants, key, block counter (2 words, little end first), 0, 0]`; word `w` of the stream is
//! word `w % 16` of block `w / 16`. [`block_scalar`] is the reference; the SIMD paths compute
//! 16 (AVX-512) or 8 (AVX2) blocks at once with one block per lane, then transpose the lanes back
//! into stream order. Tests check every path against the scalar one and the scalar one against
//! `ChaCha8Rng` itself.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

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

#[inline(always)]
fn quarter(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(16);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(12);
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(8);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(7);
}

/// Block `block` of the ChaCha8 stream of `key` (stream id 0): the scalar reference.
pub fn block_scalar(key: &[u32; 8], block: u64) -> [u32; 16] {
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&CONSTANTS);
    init[4..12].copy_from_slice(key);
    init[12] = block as u32;
    init[13] = (block >> 32) as u32;
    let mut x = init;
    for _ in 0..4 {
        quarter(&mut x, 0, 4, 8, 12);
        quarter(&mut x, 1, 5, 9, 13);
        quarter(&mut x, 2, 6, 10, 14);
        quarter(&mut x, 3, 7, 11, 15);
        quarter(&mut x, 0, 5, 10, 15);
        quarter(&mut x, 1, 6, 11, 12);
        quarter(&mut x, 2, 7, 8, 13);
        quarter(&mut x, 3, 4, 9, 14);
    }
    for (v, i) in x.iter_mut().zip(init) {
        *v = v.wrapping_add(i);
    }
    x
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
    // Whole blocks, in groups of the path's width.
    let mut block = pos / BLOCK_WORDS as u64;
    #[cfg(target_arch = "x86_64")]
    {
        let wide = match isa {
            Isa::Avx512 if isa.is_supported() => 16,
            Isa::Avx2 | Isa::Avx512 if Isa::Avx2.is_supported() => 8,
            _ => 0,
        };
        if wide != 0 {
            let group = wide * BLOCK_WORDS;
            let mut chunks = out.chunks_exact_mut(group);
            for chunk in &mut chunks {
                if wide == 16 {
                    let chunk: &mut [u32; 256] = chunk.try_into().expect("256 words");
                    // SAFETY: AVX-512F and AVX2 were checked just above (`is_supported`).
                    unsafe { x86::blocks16(key, block, chunk) };
                } else {
                    let chunk: &mut [u32; 128] = chunk.try_into().expect("128 words");
                    // SAFETY: AVX2 was checked just above (`is_supported`).
                    unsafe { x86::blocks8(key, block, chunk) };
                }
                block = block.wrapping_add(wide as u64);
            }
            out = chunks.into_remainder();
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    for chunk in out.chunks_mut(BLOCK_WORDS) {
        let words = block_scalar(key, block);
        chunk.copy_from_slice(&words[..chunk.len()]);
        block = block.wrapping_add(1);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::CONSTANTS;

    macro_rules! rounds {
        ($x:ident, $add:ident, $xor:ident, $rol:ident) => {
            macro_rules! qr {
                ($a:expr, $b:expr, $c:expr, $d:expr) => {
                    $x[$a] = $add($x[$a], $x[$b]);
                    $x[$d] = $rol::<16>($xor($x[$d], $x[$a]));
                    $x[$c] = $add($x[$c], $x[$d]);
                    $x[$b] = $rol::<12>($xor($x[$b], $x[$c]));
                    $x[$a] = $add($x[$a], $x[$b]);
                    $x[$d] = $rol::<8>($xor($x[$d], $x[$a]));
                    $x[$c] = $add($x[$c], $x[$d]);
                    $x[$b] = $rol::<7>($xor($x[$b], $x[$c]));
                };
            }
            for _ in 0..4 {
                qr!(0, 4, 8, 12);
                qr!(1, 5, 9, 13);
                qr!(2, 6, 10, 14);
                qr!(3, 7, 11, 15);
                qr!(0, 5, 10, 15);
                qr!(1, 6, 11, 12);
                qr!(2, 7, 8, 13);
                qr!(3, 4, 9, 14);
            }
        };
    }

    #[inline(always)]
    fn add512(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: only inlined into `blocks16`, which requires AVX-512F.
        unsafe { _mm512_add_epi32(a, b) }
    }
    #[inline(always)]
    fn xor512(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: as `add512`.
        unsafe { _mm512_xor_si512(a, b) }
    }
    #[inline(always)]
    fn rol512<const R: i32>(a: __m512i) -> __m512i {
        // SAFETY: as `add512`.
        unsafe { _mm512_rol_epi32::<R>(a) }
    }

    /// Blocks `block .. block + 16` into `out` (256 words, stream order).
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX2.
    #[target_feature(enable = "avx512f,avx2")]
    pub(super) unsafe fn blocks16(key: &[u32; 8], block: u64, out: &mut [u32; 256]) {
        let lo = _mm512_add_epi32(
            _mm512_set1_epi32(block as u32 as i32),
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        );
        // A lane whose low word wrapped past 2^32 carries into the high word.
        let carry = _mm512_cmplt_epu32_mask(lo, _mm512_set1_epi32(block as u32 as i32));
        let hi0 = _mm512_set1_epi32((block >> 32) as u32 as i32);
        let hi = _mm512_mask_add_epi32(hi0, carry, hi0, _mm512_set1_epi32(1));
        let mut init = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            init[i] = _mm512_set1_epi32(CONSTANTS[i] as i32);
        }
        for i in 0..8 {
            init[4 + i] = _mm512_set1_epi32(key[i] as i32);
        }
        init[12] = lo;
        init[13] = hi;
        let mut x = init;
        rounds!(x, add512, xor512, rol512);
        for i in 0..16 {
            x[i] = _mm512_add_epi32(x[i], init[i]);
        }
        // Transpose: x[j] lane b is word j of block b. First 4×4 within each 128-bit lane:
        // s[g][k] lane l = words 4g..4g+4 of block 4l + k.
        let mut s = [[_mm512_setzero_si512(); 4]; 4];
        for g in 0..4 {
            let t0 = _mm512_unpacklo_epi32(x[4 * g], x[4 * g + 1]);
            let t1 = _mm512_unpackhi_epi32(x[4 * g], x[4 * g + 1]);
            let t2 = _mm512_unpacklo_epi32(x[4 * g + 2], x[4 * g + 3]);
            let t3 = _mm512_unpackhi_epi32(x[4 * g + 2], x[4 * g + 3]);
            s[g][0] = _mm512_unpacklo_epi64(t0, t2);
            s[g][1] = _mm512_unpackhi_epi64(t0, t2);
            s[g][2] = _mm512_unpacklo_epi64(t1, t3);
            s[g][3] = _mm512_unpackhi_epi64(t1, t3);
        }
        // Then a 4×4 transpose of 128-bit lanes: block 4l + k = lane l of s[0..4][k].
        let p = out.as_mut_ptr();
        for k in 0..4 {
            let a = _mm512_shuffle_i32x4::<0x44>(s[0][k], s[1][k]);
            let b = _mm512_shuffle_i32x4::<0x44>(s[2][k], s[3][k]);
            let c = _mm512_shuffle_i32x4::<0xEE>(s[0][k], s[1][k]);
            let d = _mm512_shuffle_i32x4::<0xEE>(s[2][k], s[3][k]);
            let rows = [
                _mm512_shuffle_i32x4::<0x88>(a, b),
                _mm512_shuffle_i32x4::<0xDD>(a, b),
                _mm512_shuffle_i32x4::<0x88>(c, d),
                _mm512_shuffle_i32x4::<0xDD>(c, d),
            ];
            for (l, row) in rows.into_iter().enumerate() {
                // SAFETY: block 4l + k < 16, so its 16 words lie inside the 256 of `out`.
                unsafe { _mm512_storeu_si512(p.add((4 * l + k) * 16).cast(), row) };
            }
        }
    }

    #[inline(always)]
    fn add256(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: only inlined into `blocks8`, which requires AVX2.
        unsafe { _mm256_add_epi32(a, b) }
    }
    #[inline(always)]
    fn xor256(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: as `add256`.
        unsafe { _mm256_xor_si256(a, b) }
    }
    #[inline(always)]
    fn rol256<const R: i32>(a: __m256i) -> __m256i {
        // SAFETY: as `add256`.
        unsafe {
            _mm256_or_si256(_mm256_sll_epi32(a, _mm_cvtsi32_si128(R)), _mm256_srl_epi32(a, _mm_cvtsi32_si128(32 - R)))
        }
    }

    /// Blocks `block .. block + 8` into `out` (128 words, stream order).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn blocks8(key: &[u32; 8], block: u64, out: &mut [u32; 128]) {
        let mut init = [_mm256_setzero_si256(); 16];
        for i in 0..4 {
            init[i] = _mm256_set1_epi32(CONSTANTS[i] as i32);
        }
        for i in 0..8 {
            init[4 + i] = _mm256_set1_epi32(key[i] as i32);
        }
        let mut lo = [0u32; 8];
        let mut hi = [0u32; 8];
        for i in 0..8 {
            let b = block.wrapping_add(i as u64);
            lo[i] = b as u32;
            hi[i] = (b >> 32) as u32;
        }
        // SAFETY: `lo` and `hi` are 8 readable words each.
        init[12] = unsafe { _mm256_loadu_si256(lo.as_ptr().cast()) };
        // SAFETY: as above.
        init[13] = unsafe { _mm256_loadu_si256(hi.as_ptr().cast()) };
        let mut x = init;
        rounds!(x, add256, xor256, rol256);
        for i in 0..16 {
            x[i] = _mm256_add_epi32(x[i], init[i]);
        }
        let mut s = [[_mm256_setzero_si256(); 4]; 4];
        for g in 0..4 {
            let t0 = _mm256_unpacklo_epi32(x[4 * g], x[4 * g + 1]);
            let t1 = _mm256_unpackhi_epi32(x[4 * g], x[4 * g + 1]);
            let t2 = _mm256_unpacklo_epi32(x[4 * g + 2], x[4 * g + 3]);
            let t3 = _mm256_unpackhi_epi32(x[4 * g + 2], x[4 * g + 3]);
            s[g][0] = _mm256_unpacklo_epi64(t0, t2);
            s[g][1] = _mm256_unpackhi_epi64(t0, t2);
            s[g][2] = _mm256_unpacklo_epi64(t1, t3);
            s[g][3] = _mm256_unpackhi_epi64(t1, t3);
        }
        // s[g][k] lane l (of 2) = words 4g..4g+4 of block 4l + k.
        let p = out.as_mut_ptr();
        for k in 0..4 {
            let rows = [
                (k, _mm256_permute2x128_si256::<0x20>(s[0][k], s[1][k]), 0),
                (k, _mm256_permute2x128_si256::<0x20>(s[2][k], s[3][k]), 8),
                (4 + k, _mm256_permute2x128_si256::<0x31>(s[0][k], s[1][k]), 0),
                (4 + k, _mm256_permute2x128_si256::<0x31>(s[2][k], s[3][k]), 8),
            ];
            for (b, row, half) in rows {
                // SAFETY: block b < 8, so words b·16 + half .. + 8 lie inside the 128 of `out`.
                unsafe { _mm256_storeu_si256(p.add(b * 16 + half).cast(), row) };
            }
        }
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

    #[test]
    fn scalar_matches_rand_chacha() {
        for seed in [0u64, 1, 0xdead_beef] {
            let key = key_for_seed(seed);
            for pos in [0u64, 5, 16, 333, 1 << 20] {
                let mut out = vec![0u32; 700];
                fill_with(Isa::Scalar, &key, pos, &mut out);
                assert_eq!(out, reference(seed, pos, 700), "seed {seed}, pos {pos}");
            }
        }
    }

    #[test]
    fn every_path_matches_scalar() {
        let key = key_for_seed(42);
        for isa in crate::kernels::available_isas() {
            for pos in [0u64, 3, 16, 4096 + 7, (u64::from(u32::MAX) - 5) * 16 + 9] {
                for n in [0usize, 1, 15, 16, 255, 256, 257, 1000, 4099] {
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
        assert_eq!(reference(42, pos, 300).len(), 300);
        let mut got = vec![0u32; 300];
        fill_with(crate::kernels::active_isa(), &key, pos, &mut got);
        assert_eq!(got, reference(42, pos, 300));
    }
}
