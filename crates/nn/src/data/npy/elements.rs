//! Decoding an `.npy` array's data: every supported element type, in either byte order, into
//! tensor elements (`f32` / `f64`) or class labels (`usize`). The type is matched once per array;
//! each loop below is then a plain pass over fixed-size chunks.

use tapegrad_tensor::{Float, Result};

use super::header::{Descr, Kind};
use super::Source;

/// Calls `each` with `$t` read from little- or big-endian bytes as `descr` says, then mapped
/// by `$map`.
macro_rules! by_endian {
    ($data:expr, $descr:expr, $t:ty, $map:expr, $f:expr) => {
        if $descr.big_endian {
            each($data, |b| ($map)(<$t>::from_be_bytes(b)), &mut $f)
        } else {
            each($data, |b| ($map)(<$t>::from_le_bytes(b)), &mut $f)
        }
    };
}

/// The elements of `data` (an array of `descr`, in the file's order) as `T`.
///
/// Floats convert as numpy's `astype` does: exactly from `f2` and `f4`, and from `f8` into `f32`
/// rounded to nearest. Integers and bools convert exactly or not at all: an integer that `T`
/// cannot represent (above 2^24 in magnitude for `f32`, 2^53 for `f64`, unless a multiple of a
/// suitable power of two) is an error naming it, and a bool byte other than 0 or 1 too.
pub(super) fn to_floats<T: Float>(data: &[u8], descr: Descr, src: &Source<'_>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(data.len() / descr.size);
    if descr.kind == Kind::Float {
        each_float(data, descr, |x| out.push(T::from_f64(x)));
        return Ok(out);
    }
    each_int(data, descr, src, |i, v| {
        let x = T::from_f64(v as f64);
        // Exact: the value `T` holds is the integer itself (a rounded one is another integer).
        if x.to_f64() as i128 != v {
            return Err(src.error(format!(
                "element {i} (in file order) is {v}, which {} cannot represent exactly; \
                 read it with read_npy_labels, or as f64 if it fits there",
                T::NAME
            )));
        }
        out.push(x);
        Ok(())
    })?;
    Ok(out)
}

/// The elements of `data` (an integer array of `descr`, in the file's order) as class labels:
/// non-negative integers that fit a `usize`.
pub(super) fn to_labels(data: &[u8], descr: Descr, src: &Source<'_>) -> Result<Vec<usize>> {
    if !matches!(descr.kind, Kind::Int | Kind::UInt) {
        return Err(src.error(format!("labels must be an integer array, found dtype {descr}")));
    }
    let mut out = Vec::with_capacity(data.len() / descr.size);
    each_int(data, descr, src, |i, v| {
        let label = usize::try_from(v)
            .map_err(|_| src.error(format!("element {i} (in file order) is {v}, not a label (0 to usize::MAX)")))?;
        out.push(label);
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` with every float of `data` (a float array of `descr`) as an exact `f64`.
fn each_float(data: &[u8], descr: Descr, mut f: impl FnMut(f64)) {
    let mut g = |_, x| {
        f(x);
        Ok(())
    };
    // The closures cannot fail, so neither can `each`.
    let _ = match descr.size {
        2 => by_endian!(data, descr, u16, f16_to_f64, g),
        4 => by_endian!(data, descr, f32, f64::from, g),
        _ => by_endian!(data, descr, f64, |x| x, g),
    };
}

/// Calls `f` with the position and value of every element of `data` (an integer or bool array
/// of `descr`), stopping at the first error.
fn each_int(data: &[u8], descr: Descr, src: &Source<'_>, mut f: impl FnMut(usize, i128) -> Result<()>) -> Result<()> {
    match (descr.kind, descr.size) {
        (Kind::Bool, _) => each(
            data,
            |[b]: [u8; 1]| b,
            |i, b| match b {
                0 | 1 => f(i, i128::from(b)),
                _ => Err(src.error(format!("element {i} (in file order) is a bool stored as byte {b}, not 0 or 1"))),
            },
        ),
        (Kind::Int, 1) => each(data, |[b]: [u8; 1]| i128::from(b as i8), &mut f),
        (Kind::UInt, 1) => each(data, |[b]: [u8; 1]| i128::from(b), &mut f),
        (Kind::Int, 2) => by_endian!(data, descr, i16, i128::from, f),
        (Kind::UInt, 2) => by_endian!(data, descr, u16, i128::from, f),
        (Kind::Int, 4) => by_endian!(data, descr, i32, i128::from, f),
        (Kind::UInt, 4) => by_endian!(data, descr, u32, i128::from, f),
        (Kind::Int, _) => by_endian!(data, descr, i64, i128::from, f),
        (Kind::UInt, _) => by_endian!(data, descr, u64, i128::from, f),
        (Kind::Float, _) => Err(src.error(format!("dtype {descr} is not an integer type"))),
    }
}

/// Calls `f` with the position and the decoded value of every `N`-byte chunk of `data`.
fn each<const N: usize, V>(
    data: &[u8],
    decode: impl Fn([u8; N]) -> V,
    mut f: impl FnMut(usize, V) -> Result<()>,
) -> Result<()> {
    for (i, chunk) in data.chunks_exact(N).enumerate() {
        let mut bytes = [0u8; N];
        bytes.copy_from_slice(chunk);
        f(i, decode(bytes))?;
    }
    Ok(())
}

/// An IEEE 754 half-precision float, exactly.
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f64::from(bits & 0x3ff);
    sign * match exponent {
        0 => fraction * 2f64.powi(-24),
        0x1f if fraction == 0.0 => f64::INFINITY,
        0x1f => f64::NAN,
        _ => (fraction + 1024.0) * 2f64.powi(exponent - 25),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_convert_exactly() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x7bff), 65504.0);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
        assert_eq!(f16_to_f64(0x3555), 0.333251953125);
        assert_eq!(f16_to_f64(0xfc00), f64::NEG_INFINITY);
        assert!(f16_to_f64(0x7e00).is_nan());
        assert_eq!(f16_to_f64(0x8000).to_bits(), (-0.0f64).to_bits());
    }
}
