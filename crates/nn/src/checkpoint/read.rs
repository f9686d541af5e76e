//! Reading a safetensors file without trusting it.
//!
//! The 8-byte header length is checked against the format's limit and the file's size before a
//! byte of the header is read. The JSON header is then parsed into exactly what a checkpoint
//! needs, one typed [`Entry`] per tensor, never into a generic JSON tree: the `__metadata__`
//! strings are kept as a map of strings (training checkpoints keep their small records there),
//! and a shape longer than [`MAX_DIMS`] is refused while it
//! is being parsed, so the parsed header costs a small multiple of the header's size. Every shape
//! and byte range is checked before any tensor is allocated, and the tensors are then read one
//! after another straight into their element vectors (no copy of the whole file in memory).
//!
//! A model's tensors are read from any floating dtype (`F16`, `BF16`, `F32`, `F64`) and
//! converted to the model's element type, as PyTorch's `load_state_dict` copies a `float16`
//! tensor into a `float32` parameter; a tensor already of that type is read bit for bit.
//! Integer counters (BatchNorm's `num_batches_tracked`) are read from `I64` or `I32`.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use half::{bf16, f16};
use safetensors::Dtype;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use tapegrad_tensor::{Error, Float, Result, Tensor};

use super::dtype;
use super::fit::{FLOATS, INTEGERS};

/// The largest JSON header accepted, in bytes: the safetensors format's limit of 100 MB, the
/// one the `safetensors` crate and Hugging Face's loaders apply.
pub(super) const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The most dims a tensor in a checkpoint may have. A shape with more dims of at least 2 would
/// count more than 2^64 elements, so only shapes padded with 1s (or holding a 0) could be
/// longer; refusing them bounds what a header of tiny numbers costs to parse.
pub(super) const MAX_DIMS: usize = 64;

/// Bytes read from the file at a time when filling a tensor.
const CHUNK: usize = 1 << 16;

/// One tensor of the header: its name, dtype, shape and byte range in the data section.
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) dtype: Dtype,
    pub(super) shape: Vec<usize>,
    pub(super) start: u64,
    pub(super) end: u64,
}

/// A tensor read from a file: floats converted to the model's `T`, or integers.
pub(super) enum Values<T: Float> {
    /// A floating tensor (any of `F16`, `BF16`, `F32`, `F64`), converted to `T`.
    Float(Tensor<T>),
    /// The elements of an `I64` or `I32` tensor, row-major.
    Int(Vec<i64>),
}

/// A safetensors file whose header has been read and validated, positioned at its data: the
/// entries are sorted by their byte ranges, which tile the data section exactly.
pub(super) struct Checkpoint<'p> {
    path: &'p Path,
    file: BufReader<File>,
    pub(super) entries: Vec<Entry>,
    /// The header's `__metadata__` (empty when it has none).
    pub(super) metadata: BTreeMap<String, String>,
}

impl<'p> Checkpoint<'p> {
    /// Opens `path` and reads and validates its header (see the module docs).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or read; [`Error::Format`] for anything
    /// wrong with its contents.
    pub(super) fn open(path: &'p Path) -> Result<Checkpoint<'p>> {
        let invalid = |reason: String| Error::format(path, format!("not a valid safetensors file: {reason}"));
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::format(path, "not a regular file"));
        }
        let len = meta.len();
        if len < 8 {
            return Err(invalid(format!("the file holds {len} bytes, fewer than the 8 of the header length")));
        }
        let mut ckpt = Checkpoint { path, file: BufReader::new(file), entries: vec![], metadata: BTreeMap::new() };
        let mut prefix = [0u8; 8];
        ckpt.read_exact(&mut prefix)?;
        let n = u64::from_le_bytes(prefix);
        if n > MAX_HEADER_BYTES {
            return Err(invalid(format!(
                "the header length {n} is above the format's limit of {MAX_HEADER_BYTES} bytes"
            )));
        }
        let data_len = len - 8;
        if n > data_len {
            return Err(invalid(format!("the header length {n} runs past the end of the {len}-byte file")));
        }
        let data_len = data_len - n;
        // At most `MAX_HEADER_BYTES`, and no more than the file really holds.
        let mut header = vec![0u8; n as usize];
        ckpt.read_exact(&mut header)?;
        let Header(mut entries, metadata) = parse_header(&header).map_err(invalid)?;
        drop(header);
        validate(&mut entries, n, data_len).map_err(invalid)?;
        ckpt.entries = entries;
        ckpt.metadata = metadata;
        Ok(ckpt)
    }

    /// Reads every tensor, in the order of [`Checkpoint::entries`], with its name, each of
    /// dtype `T`.
    ///
    /// # Errors
    /// [`Error::Format`] when a tensor's dtype is not `T`'s (callers check this first, to name
    /// every such tensor) or the file shrinks while it is read; [`Error::Io`] when reading fails.
    pub(super) fn read<T: Float>(self) -> Result<Vec<(String, Tensor<T>)>> {
        if let Some(e) = self.entries.iter().find(|e| e.dtype != dtype::<T>()) {
            let reason = format!("tensor {:?} has dtype {:?}, expected {:?}", e.name, e.dtype, dtype::<T>());
            return Err(Error::format(self.path, reason));
        }
        let path = self.path;
        self.read_as::<T>(|_| true)?
            .into_iter()
            .map(|(name, values)| match values {
                Values::Float(t) => Ok((name, t)),
                Values::Int(_) => {
                    Err(Error::format(path, format!("tensor {name:?} is not of dtype {:?}", dtype::<T>())))
                }
            })
            .collect()
    }

    /// Reads the tensors whose name `keep` accepts, in the order of [`Checkpoint::entries`],
    /// with their names; the others are skipped without being read. Floating tensors are
    /// converted to `T` (bit for bit when already of `T`'s dtype), integer ones kept as `i64`.
    ///
    /// # Errors
    /// [`Error::Format`] when a kept tensor has a dtype that is neither (callers check this
    /// first, to name every such tensor) or the file shrinks while it is read; [`Error::Io`]
    /// when reading or skipping fails.
    pub(super) fn read_as<T: Float>(mut self, keep: impl Fn(&str) -> bool) -> Result<Vec<(String, Values<T>)>> {
        let entries = std::mem::take(&mut self.entries);
        let mut chunk = vec![];
        let mut out = Vec::with_capacity(entries.len());
        for Entry { name, dtype: found, shape, start, end } in entries {
            // `validate` checked that the range holds exactly the shape's elements of this dtype
            // and lies within the file, so the allocations below are backed by bytes on disk.
            let Ok(mut left) = usize::try_from(end - start) else {
                return Err(Error::format(self.path, format!("tensor {name:?} is too large to load here")));
            };
            if !keep(&name) {
                let skip = i64::try_from(end - start)
                    .map_err(|_| Error::format(self.path, "a tensor is too large to skip"))?;
                self.file.seek_relative(skip).map_err(|e| Error::io(self.path, e))?;
                continue;
            }
            let Some(width) = element_width(found) else {
                let reason =
                    format!("tensor {name:?} has dtype {found:?}, which is neither a float nor an integer count");
                return Err(Error::format(self.path, reason));
            };
            let is_count = INTEGERS.contains(&found);
            let (mut floats, mut ints): (Vec<T>, Vec<i64>) = (vec![], vec![]);
            if is_count {
                ints.reserve_exact(left / width);
            } else {
                floats.reserve_exact(left / width);
            }
            while left > 0 {
                // CHUNK is a multiple of every width, so each chunk holds whole elements.
                let take = left.min(CHUNK);
                chunk.resize(take, 0);
                self.read_exact(&mut chunk)?;
                if is_count {
                    decode_ints(found, &chunk, &mut ints);
                } else {
                    decode_floats(found, &chunk, &mut floats);
                }
                left -= take;
            }
            let values = if is_count { Values::Int(ints) } else { Values::Float(Tensor::from_vec(floats, &shape)?) };
            out.push((name, values));
        }
        Ok(out)
    }

    /// Fills `buf`; a file that ends early changed after its size was checked.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::format(self.path, "the file changed while being read: it ended early")
            } else {
                Error::io(self.path, e)
            }
        })
    }
}

/// The bytes of one element of `dtype`, for the dtypes [`Checkpoint::read_as`] reads.
fn element_width(dtype: Dtype) -> Option<usize> {
    (FLOATS.contains(&dtype) || INTEGERS.contains(&dtype)).then(|| dtype.bitsize() / 8)
}

/// Appends the little-endian elements of `dtype` (one of [`FLOATS`]) in `bytes` to `out`,
/// converted to `T`: bit for bit when `dtype` is `T`'s own, exactly when widening (`F16`, `BF16`
/// and `F32` to `f64`; `F16` and `BF16` to `f32`), rounded to nearest when narrowing `F64` to
/// `f32`.
fn decode_floats<T: Float>(dtype: Dtype, bytes: &[u8], out: &mut Vec<T>) {
    if dtype == super::dtype::<T>() {
        decode_into(bytes, out);
        return;
    }
    let convert = |v: f64| T::from_f64(v);
    match dtype {
        Dtype::F16 => out.extend(bytes.chunks_exact(2).map(|c| convert(f16::from_le_bytes([c[0], c[1]]).to_f64()))),
        Dtype::BF16 => out.extend(bytes.chunks_exact(2).map(|c| convert(bf16::from_le_bytes([c[0], c[1]]).to_f64()))),
        Dtype::F32 => {
            out.extend(bytes.chunks_exact(4).map(|c| convert(f32::from_le_bytes([c[0], c[1], c[2], c[3]]).into())))
        }
        Dtype::F64 => out.extend(
            bytes
                .chunks_exact(8)
                .map(|c| convert(f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))),
        ),
        // Callers pass only FLOATS (and a short vector would fail `Tensor::from_vec`).
        _ => {}
    }
}

/// Appends the little-endian `I64` or `I32` elements in `bytes` to `out`.
fn decode_ints(dtype: Dtype, bytes: &[u8], out: &mut Vec<i64>) {
    match dtype {
        Dtype::I64 => out.extend(
            bytes.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
        ),
        Dtype::I32 => {
            out.extend(bytes.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
        }
        // Callers pass only INTEGERS.
        _ => {}
    }
}

/// Appends the little-endian elements in `bytes` to `out`, a `Vec<f32>` or `Vec<f64>`, bit for
/// bit (NaN payloads included).
fn decode_into(bytes: &[u8], out: &mut dyn Any) {
    if let Some(out) = out.downcast_mut::<Vec<f32>>() {
        out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
    } else if let Some(out) = out.downcast_mut::<Vec<f64>>() {
        out.extend(bytes.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])));
    }
    // `Float` is sealed to f32 and f64, so there is no third case (and a short vector would fail
    // `Tensor::from_vec`).
}

// ─── the header ────────────────────────────────────────────────────────────────

/// The entries of a JSON header, in the order they appear, and its metadata; an error names
/// what is wrong.
fn parse_header(bytes: &[u8]) -> std::result::Result<Header, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("the header is not UTF-8: {e}"))?;
    let Header(entries, metadata) = serde_json::from_str(text).map_err(|e| format!("the header is not valid: {e}"))?;
    let mut names = HashSet::with_capacity(entries.len());
    if let Some(dup) = entries.iter().find(|e| !names.insert(e.name.as_str())) {
        return Err(format!("the header names tensor {:?} twice", dup.name));
    }
    Ok(Header(entries, metadata))
}

/// Checks the entries' shapes against their byte ranges and that the ranges tile the
/// `data_len` bytes after the `header_len`-byte header exactly; sorts the entries by range.
fn validate(entries: &mut [Entry], header_len: u64, data_len: u64) -> std::result::Result<(), String> {
    entries.sort_unstable_by_key(|e| (e.start, e.end));
    let mut at = 0u64;
    for Entry { name, dtype, shape, start, end } in entries.iter() {
        let (start, end) = (*start, *end);
        if end < start {
            return Err(format!("tensor {name:?} has byte range [{start}, {end}), which ends before it starts"));
        }
        if end > data_len {
            return Err(format!(
                "tensor {name:?} ends at byte {end} of the data, but the file holds {data_len} data bytes after its {header_len}-byte header"
            ));
        }
        if start < at {
            return Err(format!("tensor {name:?} starts at byte {start}, inside another tensor's bytes (up to {at})"));
        }
        if start > at {
            return Err(format!("bytes {at} to {start} of the data belong to no tensor"));
        }
        let bits = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).and_then(|n| n.checked_mul(dtype.bitsize()));
        let Some(bits) = bits else {
            return Err(format!("tensor {name:?} has shape {shape:?}, whose size overflows"));
        };
        if bits % 8 != 0 {
            return Err(format!("tensor {name:?} of shape {shape:?} and dtype {dtype:?} does not fill whole bytes"));
        }
        let bytes = (bits / 8) as u64;
        if bytes != end - start {
            return Err(format!(
                "tensor {name:?} of shape {shape:?} and dtype {dtype:?} needs {bytes} bytes, its byte range [{start}, {end}) holds {}",
                end - start
            ));
        }
        at = end;
    }
    if at != data_len {
        return Err(format!(
            "the tensors' bytes end at byte {at} of the data, but the file holds {data_len} data bytes"
        ));
    }
    Ok(())
}

/// The header's entries, parsed from its JSON object: the tensors in order of appearance, and
/// `__metadata__`, checked to map strings to strings.
pub(super) struct Header(Vec<Entry>, BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Header, D::Error> {
        deserializer.deserialize_map(HeaderVisitor)
    }
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Header;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of tensor names to {dtype, shape, data_offsets}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Header, A::Error> {
        let mut entries = vec![];
        let mut metadata = None;
        while let Some(name) = map.next_key::<String>()? {
            if name == "__metadata__" {
                if metadata.is_some() {
                    return Err(de::Error::custom("__metadata__ appears twice"));
                }
                metadata = Some(map.next_value::<Metadata>()?.0);
                continue;
            }
            let Info { dtype, shape: Shape(shape), data_offsets: (start, end) } = map.next_value()?;
            entries.push(Entry { name, dtype, shape, start, end });
        }
        Ok(Header(entries, metadata.unwrap_or_default()))
    }
}

/// What the header says of one tensor.
#[derive(Deserialize)]
struct Info {
    dtype: Dtype,
    shape: Shape,
    data_offsets: (u64, u64),
}

/// A shape of at most [`MAX_DIMS`] dims, refused as soon as it grows longer.
struct Shape(Vec<usize>);

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Shape, D::Error> {
        struct ShapeVisitor;
        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {MAX_DIMS} dims")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Shape, A::Error> {
                let mut dims = Vec::new();
                while let Some(d) = seq.next_element::<usize>()? {
                    if dims.len() == MAX_DIMS {
                        return Err(de::Error::custom(format!("a shape has more than {MAX_DIMS} dims")));
                    }
                    dims.push(d);
                }
                Ok(Shape(dims))
            }
        }
        deserializer.deserialize_seq(ShapeVisitor)
    }
}

/// `__metadata__`: an object of strings, each key at most once.
struct Metadata(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Metadata, D::Error> {
        struct MetadataVisitor;
        impl<'de> Visitor<'de> for MetadataVisitor {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Metadata, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format!("__metadata__ has key {key:?} twice")));
                    }
                    out.insert(key, value);
                }
                Ok(Metadata(out))
            }
        }
        deserializer.deserialize_map(MetadataVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_into_entries_and_metadata() {
        let json = br#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},
            "a":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}"#;
        let Header(mut entries, metadata) = parse_header(json).unwrap();
        assert_eq!(metadata.get("format").map(String::as_str), Some("pt"));
        validate(&mut entries, json.len() as u64, 16).unwrap();
        let got: Vec<(&str, Dtype, &[usize], u64, u64)> =
            entries.iter().map(|e| (e.name.as_str(), e.dtype, e.shape.as_slice(), e.start, e.end)).collect();
        assert_eq!(got, [("a", Dtype::F64, &[][..], 0, 8), ("b", Dtype::F32, &[2][..], 8, 16)]);
    }

    #[test]
    fn bad_headers_are_refused_with_a_reason() {
        let cases: [(&[u8], &str); 7] = [
            (br#"{"__metadata__":{"format":1}}"#, "a string"),
            (br#"{"__metadata__":{},"__metadata__":{}}"#, "twice"),
            (br#"{"__metadata__":{"k":"a","k":"b"}}"#, "\"k\" twice"),
            (br#"{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[],"data_offsets":[4,8]}}"#, "\"a\" twice"),
            (br#"{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}"#, "more than 64 dims"),
            (br#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, "invalid value"),
            (b"{} x", "trailing"),
        ];
        for (json, needle) in cases {
            let err = parse_header(json).err().unwrap_or_else(|| panic!("{} parsed", String::from_utf8_lossy(json)));
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
        // Exactly MAX_DIMS dims is fine.
        let ones = vec!["1"; MAX_DIMS].join(",");
        let json = format!(r#"{{"a":{{"dtype":"F32","shape":[{ones}],"data_offsets":[0,4]}}}}"#);
        let Header(mut entries, _) = parse_header(json.as_bytes()).unwrap();
        validate(&mut entries, 0, 4).unwrap();
    }

    #[test]
    fn shapes_are_checked_against_their_byte_ranges() {
        let check = |json: &str, data_len: u64| {
            let Header(mut entries, _) = parse_header(json.as_bytes()).unwrap();
            validate(&mut entries, 0, data_len).unwrap_err()
        };
        let e = check(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8);
        assert!(e.contains("needs 12 bytes") && e.contains("holds 8"), "{e}");
        let e = check(r#"{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, 8);
        assert!(e.contains("overflows"), "{e}");
        let e = check(r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, 2);
        assert!(e.contains("whole bytes"), "{e}");
        let e = check(r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#, 3);
        assert!(e.contains("end at byte 2") && e.contains("3 data bytes"), "{e}");
        let e = check(r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#, 1);
        assert!(e.contains("ends at byte 2"), "{e}");
    }
}
