//! The `.npy` header: the magic `\x93NUMPY`, the version, the header's length, then a Python
//! dict literal such as `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded
//! with spaces to a multiple of 64 bytes and ended by a newline.
//!
//! The dict is parsed here, by hand, as the small subset of Python literals that numpy writes
//! (strings, `True` / `False`, integers, tuples), so that nothing in it is trusted before it is
//! checked: the header's length against numpy's own limit and the bytes that follow it, the
//! shape's element count and byte size with overflow checks against the data actually there.

use std::fmt;
use std::io::Read;

use tapegrad_tensor::{checked_numel, Result};

use super::Source;

/// The first six bytes of every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The longest header read: numpy's own default (`np.load(max_header_size=10000)`), which it
/// applies for the same reason, a hostile header.
pub(super) const MAX_HEADER_LEN: usize = 10_000;

/// The most dims a numpy array can have (`NPY_MAXDIMS` in numpy 2), and so the most a tensor
/// written to `.npy` may have.
pub(super) const MAX_DIMS: usize = 64;

/// The most nested a literal can be: the shape is a tuple inside the dict.
const MAX_DEPTH: usize = 2;

/// The element kinds tapegrad reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `b1`.
    Bool,
    /// `i1`, `i2`, `i4`, `i8`.
    Int,
    /// `u1`, `u2`, `u4`, `u8`.
    UInt,
    /// `f2`, `f4`, `f8`.
    Float,
}

/// An element type, numpy's `descr`: a kind, a size in bytes and a byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Descr {
    pub(super) kind: Kind,
    pub(super) size: usize,
    pub(super) big_endian: bool,
}

impl Descr {
    /// The descr of a tensor element written by tapegrad: little-endian `f4` or `f8`.
    pub(super) fn float(size: usize) -> Descr {
        Descr { kind: Kind::Float, size, big_endian: false }
    }

    /// Parses a descr string like `<f4`, `>i8`, `|u1` or `|b1`; the reason it is not supported
    /// otherwise.
    fn parse(s: &str) -> std::result::Result<Descr, String> {
        let unsupported = |why: &str| format!("dtype {s:?} is not supported ({why})");
        let bytes = s.as_bytes();
        let (&order, rest) = bytes.split_first().ok_or_else(|| unsupported("empty"))?;
        let big_endian = match order {
            b'<' | b'|' => false,
            b'>' => true,
            b'=' => cfg!(target_endian = "big"),
            _ => return Err(unsupported("no byte order: expected <, >, = or |")),
        };
        let (&code, size) = rest.split_first().ok_or_else(|| unsupported("no type code"))?;
        let size: usize = std::str::from_utf8(size).ok().and_then(|n| n.parse().ok()).unwrap_or(0);
        let kind = match (code, size) {
            (b'b', 1) => Kind::Bool,
            (b'i', 1 | 2 | 4 | 8) => Kind::Int,
            (b'u', 1 | 2 | 4 | 8) => Kind::UInt,
            (b'f', 2 | 4 | 8) => Kind::Float,
            (b'c', _) => return Err(unsupported("complex numbers")),
            (b'O', _) => return Err(unsupported("Python objects, which only numpy's pickle can read")),
            (b'U' | b'S' | b'a', _) => return Err(unsupported("strings")),
            (b'M' | b'm', _) => return Err(unsupported("dates and times")),
            (b'V', _) => return Err(unsupported("raw or structured records")),
            (b'f', 16 | 12 | 10) => return Err(unsupported("long double")),
            _ => return Err(unsupported("expected bool b1, integer i1..i8 / u1..u8 or float f2 / f4 / f8")),
        };
        Ok(Descr { kind, size, big_endian: big_endian && size > 1 })
    }
}

/// numpy's spelling: `<f4`, `>i2`, `|u1`.
impl fmt::Display for Descr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = match (self.size, self.big_endian) {
            (1, _) => '|',
            (_, true) => '>',
            (_, false) => '<',
        };
        let code = match self.kind {
            Kind::Bool => 'b',
            Kind::Int => 'i',
            Kind::UInt => 'u',
            Kind::Float => 'f',
        };
        write!(f, "{order}{code}{}", self.size)
    }
}

/// A checked header: its element type, order and shape, and the size of the data after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) descr: Descr,
    pub(super) fortran_order: bool,
    pub(super) shape: Vec<usize>,
    /// The number of data bytes the shape declares: elements times `descr.size`.
    pub(super) data_len: u64,
}

/// Reads and checks the header at the start of `r`, an `.npy` of `len` bytes in all (the file's
/// size, or an `.npz` member's declared size): the magic, a version of 1.0, 2.0 or 3.0, a header
/// length within [`MAX_HEADER_LEN`] and `len`, the dict, and a shape whose data is exactly the
/// `len` bytes that follow the header. Allocates at most the header's length.
pub(super) fn read(r: &mut impl Read, src: &Source<'_>, len: u64) -> Result<Header> {
    let mut preamble = [0u8; 8];
    read_exact(r, src, &mut preamble, "the 8-byte preamble (magic and version)")?;
    if preamble[..6] != MAGIC[..] {
        return Err(src.error(format!(
            "not an .npy file: it starts with bytes {}, expected \\x93NUMPY",
            preamble[..6].iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
        )));
    }
    let (major, minor) = (preamble[6], preamble[7]);
    let len_bytes = match (major, minor) {
        (1, 0) => 2,
        (2 | 3, 0) => 4,
        _ => return Err(src.error(format!("unsupported .npy version {major}.{minor} (1.0, 2.0 and 3.0 are)"))),
    };
    let mut raw_len = [0u8; 4];
    read_exact(r, src, &mut raw_len[..len_bytes], "the header length")?;
    let header_len = u32::from_le_bytes(raw_len) as usize;
    let start = 8 + len_bytes as u64;
    if header_len > MAX_HEADER_LEN {
        return Err(src.error(format!(
            "the header length {header_len} is above the limit of {MAX_HEADER_LEN} bytes (numpy's own)"
        )));
    }
    let header_end = start + header_len as u64;
    if header_end > len {
        return Err(
            src.error(format!("truncated: the header length {header_len} runs past the end ({len} bytes in all)"))
        );
    }
    let mut text = vec![0u8; header_len];
    read_exact(r, src, &mut text, "the header")?;
    // Version 3.0 allows UTF-8 (in field names numpy does not read here); 1.0 and 2.0 are latin-1.
    let text =
        String::from_utf8(text).map_err(|_| src.error("the header is not text: the dict holds bytes outside UTF-8"))?;
    let header = parse(&text).map_err(|reason| src.error(format!("invalid header {:?}: {reason}", text.trim_end())))?;
    let available = len - header_end;
    if header.data_len != available {
        let what = if header.data_len > available { "truncated" } else { "bytes past the data" };
        return Err(src.error(format!(
            "{what}: shape {:?} of {} declares {} data bytes, {available} follow the header",
            header.shape, header.descr, header.data_len
        )));
    }
    Ok(header)
}

/// Fills `buf` from `r`, or says that the input ended inside `what`.
fn read_exact(r: &mut impl Read, src: &Source<'_>, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => src.error(format!("truncated: the input ends inside {what}")),
        _ => src.read_error(e),
    })
}

/// The header of an array of `descr` with `shape` (at most [`MAX_DIMS`] dims), in the given
/// order, as numpy writes it: version 1.0, padded with spaces to a multiple of 64 bytes so that
/// the data after it is aligned.
pub(super) fn to_bytes(descr: Descr, fortran_order: bool, shape: &[usize]) -> Vec<u8> {
    debug_assert!(shape.len() <= MAX_DIMS);
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let order = if fortran_order { "True" } else { "False" };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
    // The 10-byte preamble, the dict and its newline, padded to 64; at most 64 dims of at most
    // 20 digits keep it far below version 1.0's limit of 65535 bytes.
    let header_len = (10 + dict.len() + 1).div_ceil(64) * 64 - 10;
    let mut out = Vec::with_capacity(10 + header_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(10 + header_len - 1, b' ');
    out.push(b'\n');
    out
}

// ─── the dict ──────────────────────────────────────────────────────────────────

/// A Python literal, as far as an `.npy` header uses them.
#[derive(Debug)]
enum Literal {
    Str(String),
    Bool(bool),
    Int(u64),
    Tuple(Vec<Literal>),
}

/// Parses the dict and checks its keys, types and shape; the reason when it is not valid.
fn parse(text: &str) -> std::result::Result<Header, String> {
    let mut p = Parser { s: text.as_bytes(), pos: 0 };
    let entries = p.dict()?;
    p.skip_space();
    if p.pos != p.s.len() {
        return Err(format!("unexpected {:?} after the dict", char::from(p.s[p.pos])));
    }
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    for (key, value) in entries {
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran_order,
            "shape" => &mut shape,
            _ => return Err(format!("unexpected key {key:?} (expected descr, fortran_order and shape)")),
        };
        if slot.replace(value).is_some() {
            return Err(format!("key {key:?} appears twice"));
        }
    }
    let missing = |key: &str| format!("missing key {key:?}");
    let descr = match descr.ok_or_else(|| missing("descr"))? {
        Literal::Str(s) => Descr::parse(&s)?,
        Literal::Tuple(_) => return Err("dtypes with a sub-array shape are not supported".into()),
        other => return Err(format!("descr must be a string, found {other:?}")),
    };
    let fortran_order = match fortran_order.ok_or_else(|| missing("fortran_order"))? {
        Literal::Bool(b) => b,
        other => return Err(format!("fortran_order must be True or False, found {other:?}")),
    };
    let shape = match shape.ok_or_else(|| missing("shape"))? {
        Literal::Tuple(dims) => dims
            .into_iter()
            .map(|d| match d {
                Literal::Int(n) => usize::try_from(n).map_err(|_| format!("dim {n} does not fit in a usize")),
                other => Err(format!("the shape's dims must be integers, found {other:?}")),
            })
            .collect::<std::result::Result<Vec<usize>, String>>()?,
        other => return Err(format!("shape must be a tuple, found {other:?}")),
    };
    let numel = checked_numel("read_npy", &shape).map_err(|e| e.to_string())?;
    let data_len = (numel as u64)
        .checked_mul(descr.size as u64)
        .ok_or_else(|| format!("shape {shape:?} of {descr} declares more bytes than a u64 can count"))?;
    Ok(Header { descr, fortran_order, shape, data_len })
}

/// A recursive-descent parser over the header's bytes.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    /// Skips spaces, then takes `c` if it comes next.
    fn eat(&mut self, c: u8) -> bool {
        self.skip_space();
        let found = self.s.get(self.pos) == Some(&c);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            return Ok(());
        }
        Err(match self.s.get(self.pos) {
            Some(&found) => format!("expected {:?} at byte {}, found {:?}", char::from(c), self.pos, char::from(found)),
            None => format!("expected {:?}, found the end", char::from(c)),
        })
    }

    /// `{ 'key': value, ... }`, a trailing comma allowed.
    fn dict(&mut self) -> std::result::Result<Vec<(String, Literal)>, String> {
        self.expect(b'{')?;
        let mut entries = vec![];
        while !self.eat(b'}') {
            let Literal::Str(key) = self.literal(1)? else {
                return Err(format!("the dict's keys must be strings (at byte {})", self.pos));
            };
            self.expect(b':')?;
            entries.push((key, self.literal(1)?));
            if !self.eat(b',') {
                self.expect(b'}')?;
                break;
            }
        }
        Ok(entries)
    }

    /// A string, `True`, `False`, a non-negative integer or a tuple of those.
    fn literal(&mut self, depth: usize) -> std::result::Result<Literal, String> {
        self.skip_space();
        let at = self.pos;
        match self.s.get(at).copied() {
            Some(quote @ (b'\'' | b'"')) => {
                let len = self.s[at + 1..]
                    .iter()
                    .position(|&b| b == quote || b == b'\\')
                    .ok_or_else(|| format!("unterminated string at byte {at}"))?;
                let end = at + 1 + len;
                if self.s[end] == b'\\' {
                    return Err(format!("escapes in strings are not supported (byte {end})"));
                }
                self.pos = end + 1;
                Ok(Literal::Str(String::from_utf8_lossy(&self.s[at + 1..end]).into_owned()))
            }
            Some(b'0'..=b'9') => {
                let digits = self.s[at..].iter().take_while(|b| b.is_ascii_digit()).count();
                self.pos = at + digits;
                // Python 2 wrote long integers with an `L` suffix.
                if self.s.get(self.pos) == Some(&b'L') {
                    self.pos += 1;
                }
                let text = std::str::from_utf8(&self.s[at..at + digits]).map_err(|e| e.to_string())?;
                text.parse().map(Literal::Int).map_err(|_| format!("integer {text} is too large"))
            }
            Some(b'T') if self.s[at..].starts_with(b"True") => {
                self.pos += 4;
                Ok(Literal::Bool(true))
            }
            Some(b'F') if self.s[at..].starts_with(b"False") => {
                self.pos += 5;
                Ok(Literal::Bool(false))
            }
            Some(b'(') if depth < MAX_DEPTH => {
                self.pos += 1;
                let mut items = vec![];
                while !self.eat(b')') {
                    items.push(self.literal(depth + 1)?);
                    if !self.eat(b',') {
                        self.expect(b')')?;
                        break;
                    }
                }
                Ok(Literal::Tuple(items))
            }
            Some(b'(') => Err(format!("tuples nested too deeply (byte {at})")),
            Some(b'[') => Err("structured dtypes (a list of fields) are not supported".into()),
            Some(b'-') => Err(format!("negative number at byte {at}")),
            Some(c) => Err(format!("unexpected {:?} at byte {at}", char::from(c))),
            None => Err("unexpected end".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_headers_parse() {
        let h = parse("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }      \n").unwrap();
        assert_eq!(h, Header { descr: Descr::float(4), fortran_order: false, shape: vec![2, 3], data_len: 24 });
        let h = parse("{\"shape\":(7,),\"fortran_order\":True,\"descr\":\">i2\"}").unwrap();
        assert_eq!((h.descr.to_string(), h.fortran_order, h.shape, h.data_len), (">i2".into(), true, vec![7], 14));
        let h = parse("{'descr': '|b1', 'fortran_order': False, 'shape': (), }").unwrap();
        assert_eq!((h.shape, h.data_len), (vec![], 1));
        let h = parse("{'descr': '<u8', 'fortran_order': False, 'shape': (3L, 0L), }").unwrap();
        assert_eq!((h.shape, h.data_len), (vec![3, 0], 0));
    }

    #[test]
    fn bad_headers_say_why() {
        let why = |text: &str| parse(text).unwrap_err();
        assert!(why("{'descr': '<f4', 'fortran_order': False}").contains("missing key \"shape\""));
        assert!(why("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': ()}").contains("twice"));
        assert!(why("{'descr': '<c8', 'fortran_order': False, 'shape': ()}").contains("complex"));
        assert!(why("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': ()}").contains("structured"));
        assert!(why("{'descr': '<f4', 'fortran_order': 0, 'shape': ()}").contains("True or False"));
        assert!(why("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}").contains("negative"));
        assert!(why("{'descr': '<f4', 'fortran_order': False, 'shape': ((1,),)}").contains("nested"));
        assert!(why("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}").contains("too large"));
        assert!(
            why("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}").contains("overflows")
        );
        assert!(why("{'descr': '<f4', 'fortran_order': False, 'shape': (), 'x': 1}").contains("unexpected key"));
        assert!(why("{'descr': '<f4', 'fortran_order': False, 'shape': ()} x").contains("after the dict"));
        assert!(why("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2").contains("found the end"));
        assert!(why("{'descr': 'a\\'b'}").contains("escapes"));
    }

    #[test]
    fn written_headers_are_aligned_and_read_back() {
        // The longest header: 64 dims, one of them 19 digits long.
        let longest: Vec<usize> =
            std::iter::once(tapegrad_tensor::MAX_NUMEL).chain(std::iter::repeat_n(0, MAX_DIMS - 1)).collect();
        for shape in [vec![], vec![5], vec![2, 3, 4], longest] {
            let bytes = to_bytes(Descr::float(8), true, &shape);
            assert_eq!(bytes.len() % 64, 0);
            assert!(bytes.len() - 10 <= MAX_HEADER_LEN);
            assert_eq!(bytes.last(), Some(&b'\n'));
            let h = parse(std::str::from_utf8(&bytes[10..]).unwrap()).unwrap();
            assert_eq!((h.shape, h.fortran_order, h.descr), (shape, true, Descr::float(8)));
        }
    }
}
