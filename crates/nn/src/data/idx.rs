//! The IDX file format of MNIST and Fashion-MNIST, plain or gzip-compressed.
//!
//! Layout: a 4-byte magic `00 00 TT NN` (`TT` the element type, `NN` the number of dims), `NN`
//! big-endian `u32` dims, then the elements in row-major order. The reader trusts nothing in
//! the header: the dims' product (computed with overflow checks) must not exceed a limit on the
//! data's size ([`DEFAULT_MAX_IDX_BYTES`] unless the caller sets another with
//! [`read_idx_with_limit`]), it allocates no more up front than the file's size on disk, reads
//! (and for gzip, inflates) at most one byte more than the dims promise, and reports any
//! difference as an error. So a small gzip file that inflates a thousandfold or declares 2^64
//! elements costs at most the limit, and only when its dims declare that much.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use tapegrad_tensor::{Error, Result};

/// The first two bytes of every gzip stream (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The IDX type code for unsigned bytes, the only element type MNIST uses.
const UBYTE: u8 = 0x08;

/// The most data bytes (the product of the dims) that [`read_idx`] loads: 1 GiB, twenty times
/// MNIST's or Fashion-MNIST's largest file (60000 images of 28 x 28, 47 MB) and above EMNIST's
/// (about 550 MB). A file whose dims declare more is refused before anything is read or
/// allocated for its data; [`read_idx_with_limit`] sets another limit.
pub const DEFAULT_MAX_IDX_BYTES: u64 = 1 << 30;

/// The contents of an IDX file of unsigned bytes: its dims and its elements in row-major order.
///
/// `data.len()` is always the product of `dims` when it comes from [`read_idx`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// The dims from the header, e.g. `[10000, 28, 28]` for MNIST images, `[10000]` for labels.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (type code `0x08`), plain or gzip-compressed, of at most
/// [`DEFAULT_MAX_IDX_BYTES`] (1 GiB) of data: [`read_idx_with_limit`] with that limit.
///
/// Compression is detected from the content (the gzip magic `1f 8b`), not from the file name.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or read; [`Error::Format`], naming the file,
/// when it is not IDX (wrong magic), holds another element type, declares dims whose product
/// exceeds the limit (the message names the limit), is truncated (the message says how many
/// bytes the header promises and how many were found), holds bytes past the data, or is corrupt
/// gzip. A header that claims huge dims costs no more memory than the file's size.
///
/// ```no_run
/// use tapegrad_nn::data::read_idx;
/// let labels = read_idx("data/mnist-10k/labels-idx1-ubyte.gz")?;
/// assert_eq!(labels.dims, vec![10000]);
/// assert_eq!(&labels.data[..3], &[6, 1, 0]);
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn read_idx(path: impl AsRef<Path>) -> Result<Idx> {
    read_idx_with_limit(path, DEFAULT_MAX_IDX_BYTES)
}

/// [`read_idx`] with `max_bytes` as the most data bytes (the product of the dims, after
/// decompression) to load instead of [`DEFAULT_MAX_IDX_BYTES`]: for larger data sets, or to
/// hold untrusted files to less.
///
/// The dims are checked against the limit before any data is read, and no more than one byte
/// past what they declare is ever read or inflated, so a gzip bomb stops at the limit.
///
/// # Errors
/// Everything [`read_idx`] reports; the limit's message names `max_bytes`.
///
/// ```
/// use tapegrad_nn::data::read_idx_with_limit;
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-idx-{}", std::process::id()));
/// // Labels [3]: magic 00 00 08 01, one big-endian dim, then the 3 bytes.
/// std::fs::write(&path, [0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]).unwrap();
/// assert_eq!(read_idx_with_limit(&path, 3)?.data, [7, 8, 9]);
/// let err = read_idx_with_limit(&path, 2).unwrap_err();
/// assert!(err.to_string().contains("above the limit of 2 bytes"), "{err}");
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn read_idx_with_limit(path: impl AsRef<Path>, max_bytes: u64) -> Result<Idx> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // Only a hint for the first allocation: never more than what is really on disk.
    let file_len = file.metadata().map_or(0, |m| usize::try_from(m.len()).unwrap_or(usize::MAX));
    let mut file = BufReader::new(file);

    let mut magic = Vec::with_capacity(GZIP_MAGIC.len());
    (&mut file).take(GZIP_MAGIC.len() as u64).read_to_end(&mut magic).map_err(|e| Error::io(path, e))?;
    let gzip = magic == GZIP_MAGIC;
    // The two bytes already read go back in front of the rest of the file.
    let raw = magic.as_slice().chain(file);
    let inner: Box<dyn Read + '_> = if gzip { Box::new(flate2::read::MultiGzDecoder::new(raw)) } else { Box::new(raw) };
    let mut reader = IdxReader { path, inner, gzip };

    let magic = reader.read_part("the 4-byte IDX magic", 4)?;
    if magic[..2] != [0, 0] {
        return Err(Error::format(
            path,
            format!(
                "not an IDX file: it starts with bytes {:02x} {:02x} {:02x} {:02x}, expected 00 00 <type> <ndims>",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    if magic[2] != UBYTE {
        return Err(Error::format(
            path,
            format!(
                "IDX element type 0x{:02x} ({}) is not supported: only 0x08 (unsigned byte) is",
                magic[2],
                type_name(magic[2])
            ),
        ));
    }
    let ndims = usize::from(magic[3]);
    let header = reader.read_part(&format!("{ndims} dims of 4 bytes each"), 4 * ndims)?;
    let dims: Vec<usize> =
        header.chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let numel = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::format(path, format!("dims {dims:?} hold more elements than a usize can count")))?;
    if numel as u64 > max_bytes {
        return Err(Error::format(
            path,
            format!(
                "dims {dims:?} declare {numel} data bytes, above the limit of {max_bytes} bytes \
                 (read_idx_with_limit sets a higher one)"
            ),
        ));
    }

    // One byte past the promised data tells a file with trailing bytes from an exact one; `take`
    // stops the reading (and a gzip stream's inflating) there, within the limit plus one byte.
    let what = format!("the {numel} data bytes that dims {dims:?} promise");
    let data = reader.read_at_most(&what, (numel as u64).saturating_add(1), numel.min(file_len))?;
    if data.len() < numel {
        return Err(Error::format(
            path,
            format!(
                "truncated: dims {dims:?} promise {numel} data bytes{}, found {}",
                if gzip { " (decompressed)" } else { "" },
                data.len()
            ),
        ));
    }
    if data.len() > numel {
        return Err(Error::format(path, format!("dims {dims:?} promise {numel} data bytes, but more bytes follow")));
    }
    Ok(Idx { dims, data })
}

/// The name of an IDX type code, for error messages.
fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0b => "i16",
        0x0c => "i32",
        0x0d => "f32",
        0x0e => "f64",
        _ => "unknown",
    }
}

/// The byte source of one IDX file, which turns every short or failed read into an error that
/// names the file.
struct IdxReader<'a> {
    path: &'a Path,
    inner: Box<dyn Read + 'a>,
    gzip: bool,
}

impl IdxReader<'_> {
    /// Exactly `len` bytes, described as `what` if fewer are left.
    fn read_part(&mut self, what: &str, len: usize) -> Result<Vec<u8>> {
        let buf = self.read_at_most(what, len as u64, len)?;
        if buf.len() < len {
            return Err(Error::format(self.path, format!("truncated: expected {what}, found {} bytes", buf.len())));
        }
        Ok(buf)
    }

    /// Up to `limit` bytes of `what`, fewer if the input ends first; `capacity` is the first
    /// allocation.
    fn read_at_most(&mut self, what: &str, limit: u64, capacity: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(capacity);
        match (&mut self.inner).take(limit).read_to_end(&mut buf) {
            Ok(_) => Ok(buf),
            // A gzip stream cut short or damaged fails inside the decoder, not at a clean end.
            Err(e) if self.gzip => Err(Error::format(
                self.path,
                format!("corrupt or truncated gzip stream: expected {what}, found {} bytes, then: {e}", buf.len()),
            )),
            Err(e) => Err(Error::io(self.path, e)),
        }
    }
}
