//! numpy's `.npy` and `.npz` files: arrays saved with `np.save`, `np.savez` and
//! `np.savez_compressed` read into tensors, and tensors written for `np.load`.
//!
//! A tensor holds `f32` or `f64`, so every array is read into one of them: float arrays
//! (`f2`, `f4`, `f8`) convert as numpy's `astype` does (exactly, except `f8` into `f32`, which
//! rounds to nearest), integer and bool arrays convert exactly or not at all (an integer that the
//! float type cannot represent, such as 2^53 + 1 into `f64` or 2^24 + 1 into `f32`, is an error
//! naming it, not a silent rounding). Class labels stored as an integer array, a dataset's `y`,
//! are read as `Vec<usize>` by [`read_npy_labels`] and [`Npz::labels`], and written as `int64`
//! by [`write_npy_labels`]. Both byte orders are
//! read. An array in Fortran order (`fortran_order: True`, from `np.asfortranarray` or a
//! transposed array) is the same logical array as in numpy, returned without a copy as a
//! column-major view, as numpy returns it (`is_contiguous()` is false; `contiguous()` copies it
//! into row-major order). Written tensors are little-endian `<f4` or `<f8`, in Fortran order when
//! the tensor is a column-major view and not row-major, as `np.save` does; integers are written
//! as `<i8` and bools as `|b1` ([`NpyArray`]), and [`NpzWriter`] puts arrays of different types
//! in one archive (a dataset's images beside its labels).
//!
//! Reading trusts nothing in the file. The header's length is limited to numpy's 10,000 bytes and
//! to the file; its dict is parsed by hand as the few Python literals numpy writes; the shape's
//! element count and byte size are computed with overflow checks and must equal the bytes that
//! follow the header; only then is the data read, at most one byte past what the header declares.
//! An `.npz` is a zip archive (read with the `zip` crate): each member's declared data must also
//! fit the member's declared size and a limit ([`DEFAULT_MAX_NPZ_BYTES`], 1 GiB, unless
//! [`Npz::set_max_bytes`] sets another), and inflating stops one byte past it, so a small member
//! that inflates a thousandfold or lies about its size costs at most the limit.
//!
//! ```
//! use tapegrad_nn::data::{read_npy, write_npy};
//! use tapegrad_tensor::Tensor;
//! let path = std::env::temp_dir().join(format!("tapegrad-doc-npy-{}.npy", std::process::id()));
//! let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
//! write_npy(&x.t()?, &path)?; // a column-major view: written in Fortran order
//! let y: Tensor<f32> = read_npy(&path)?;
//! assert_eq!((y.shape(), y.to_vec()), (&[3, 2][..], vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), tapegrad_nn::Error>(())
//! ```

mod elements;
mod header;
mod npz;

pub use npz::{read_npz, write_npz, write_npz_compressed, Npz, NpzWriter, DEFAULT_MAX_NPZ_BYTES};

use std::fmt::Display;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use tapegrad_tensor::{Error, Float, Result, Tensor};

use header::{Descr, Header};

/// Reads an `.npy` file (`np.save`) into a tensor of `T`, with the array's shape (a 0-d array
/// gives a 0-d tensor, an empty one an empty tensor).
///
/// Any float, integer or bool array is read; see the [module docs](self) for how each converts
/// and how Fortran order is returned.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or read; [`Error::Format`] naming the file when
/// it is not an `.npy` file (the magic, an unknown version), its header is longer than numpy's
/// limit or than the file, is not a valid dict or declares an unsupported dtype (complex,
/// object, strings, structured: the message names it), its shape's size overflows or differs
/// from the bytes that follow the header (truncated, or bytes past the data), or an integer
/// cannot be represented exactly in `T` (the message names the element and its value).
///
/// ```
/// use tapegrad_nn::data::{read_npy, write_npy};
/// use tapegrad_tensor::Tensor;
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-read-npy-{}.npy", std::process::id()));
/// write_npy(&Tensor::<f32>::arange(6).reshape(&[2, 3])?, &path)?;
/// let x: Tensor<f64> = read_npy(&path)?; // an f4 file read as f64, exactly
/// assert_eq!(x.to_vec(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn read_npy<T: Float>(path: impl AsRef<Path>) -> Result<Tensor<T>> {
    let path = path.as_ref();
    let src = Source { path, member: None };
    let (header, data) = read_file(&src)?;
    to_tensor(&header, &data, &src)
}

/// Reads an `.npy` file of class labels: a 1-D array of non-negative integers of any integer
/// dtype (`u1` for MNIST-style labels, `i8` for numpy's default), as `Vec<usize>` for
/// [`cross_entropy`](crate::loss::cross_entropy) and [`Dataset::new`](super::Dataset::new).
///
/// # Errors
/// Everything [`read_npy`] reports, and [`Error::Format`] when the array is not 1-D, not of an
/// integer dtype, or holds a negative value (the message names it).
///
/// ```
/// use tapegrad_nn::data::read_npy_labels;
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-labels-{}.npy", std::process::id()));
/// // np.save(path, np.array([3, 0, 9], dtype=np.uint8)): a header padded to 128 bytes, 3 bytes.
/// let mut file = b"\x93NUMPY\x01\x00\x76\x00{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }".to_vec();
/// file.resize(127, b' ');
/// file.extend_from_slice(b"\n\x03\x00\x09");
/// std::fs::write(&path, file).unwrap();
/// assert_eq!(read_npy_labels(&path)?, [3, 0, 9]);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn read_npy_labels(path: impl AsRef<Path>) -> Result<Vec<usize>> {
    let path = path.as_ref();
    let src = Source { path, member: None };
    let (header, data) = read_file(&src)?;
    to_labels(&header, &data, &src)
}

/// Writes `tensor` to `path` as an `.npy` file that `np.load` reads: `<f4` for `f32`, `<f8` for
/// `f64`, with the tensor's shape; in Fortran order when the tensor is a column-major view (a
/// transposed matrix, say) and not row-major, else in row-major order. The file is replaced
/// atomically, as [`save`](crate::save) does.
///
/// # Errors
/// [`Error::InvalidShape`] when the tensor has more than 64 dims (numpy's limit);
/// [`Error::Io`] when the file cannot be written; [`Error::Format`] when `path` does not name a
/// file.
///
/// See the [module docs](self) for an example.
pub fn write_npy<T: Float>(tensor: &Tensor<T>, path: impl AsRef<Path>) -> Result<()> {
    crate::checkpoint::write_atomic(path.as_ref(), &npy_bytes(tensor, "write_npy")?)
}

/// Writes class labels to `path` as a 1-D `.npy` array of numpy's `int64` (`<i8`), the form a
/// dataset's `y` usually takes: `np.load` gives an integer array and [`read_npy_labels`] reads
/// it back. The file is replaced atomically, as [`save`](crate::save) does.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the label when one does not fit an `int64` (possible only
/// on a 64-bit `usize` above 2^63 - 1), before anything is written; [`Error::Io`] when the file
/// cannot be written; [`Error::Format`] when `path` does not name a file.
///
/// ```
/// use tapegrad_nn::data::{read_npy_labels, write_npy_labels};
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-labels-{}.npy", std::process::id()));
/// write_npy_labels(&[3, 0, 9, 9], &path)?;
/// assert_eq!(read_npy_labels(&path)?, [3, 0, 9, 9]);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn write_npy_labels(labels: &[usize], path: impl AsRef<Path>) -> Result<()> {
    let array = NpyArray::labels_for(labels, "write_npy_labels")?;
    crate::checkpoint::write_atomic(path.as_ref(), &array.npy_bytes("write_npy_labels")?)
}

/// One array to write for numpy, of any element type it is read back as: a tensor (`f32` or
/// `f64`), integers (numpy's `int64`: class labels, token ids) or bools (masks). An
/// [`NpzWriter`] puts arrays of different types in one `.npz`, such as images beside their
/// labels.
///
/// ```
/// use tapegrad_nn::data::NpyArray;
/// use tapegrad_tensor::{Tensor, TensorNew};
/// let images: NpyArray = Tensor::<f32>::zeros(&[4, 784]).into();
/// let labels = NpyArray::labels(&[3, 0, 9, 9])?;
/// let ids = NpyArray::int64(vec![5, 2, -1, 0, 7, 1], &[2, 3])?;
/// let mask = NpyArray::bool(vec![true, false, true], &[3])?;
/// assert_eq!((images.dtype(), images.shape()), ("<f4", &[4, 784][..]));
/// assert_eq!((labels.dtype(), ids.dtype(), mask.dtype()), ("<i8", "<i8", "|b1"));
/// assert!(NpyArray::int64(vec![1, 2, 3], &[2, 2]).is_err()); // 3 values for 4 elements
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct NpyArray(Elements);

/// What an [`NpyArray`] holds; integer and bool arrays carry their shape, checked against the
/// number of values when made.
#[derive(Clone, Debug)]
enum Elements {
    F32(Tensor<f32>),
    F64(Tensor<f64>),
    I64(Vec<i64>, Vec<usize>),
    Bool(Vec<bool>, Vec<usize>),
}

impl From<Tensor<f32>> for NpyArray {
    /// The tensor, written as numpy's `float32` (`<f4`).
    fn from(tensor: Tensor<f32>) -> NpyArray {
        NpyArray(Elements::F32(tensor))
    }
}

impl From<Tensor<f64>> for NpyArray {
    /// The tensor, written as numpy's `float64` (`<f8`).
    fn from(tensor: Tensor<f64>) -> NpyArray {
        NpyArray(Elements::F64(tensor))
    }
}

impl NpyArray {
    /// Class labels as a 1-D array of numpy's `int64` (what [`write_npy_labels`] writes, and
    /// [`read_npy_labels`] or [`Npz::labels`] read back).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the label when one does not fit an `int64` (possible
    /// only on a 64-bit `usize` above 2^63 - 1).
    pub fn labels(labels: &[usize]) -> Result<NpyArray> {
        NpyArray::labels_for(labels, "NpyArray::labels")
    }

    /// Integers of numpy's `int64` with `shape`, in row-major (C) order: token ids, labels with
    /// a shape, counts.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] when `values` does not hold one value per element of `shape`, or
    /// `shape` has more than 64 dims (numpy's limit).
    pub fn int64(values: Vec<i64>, shape: &[usize]) -> Result<NpyArray> {
        check_len("NpyArray::int64", values.len(), shape)?;
        Ok(NpyArray(Elements::I64(values, shape.to_vec())))
    }

    /// Bools (numpy's `bool`, one byte each) with `shape`, in row-major (C) order: masks.
    ///
    /// # Errors
    /// As [`NpyArray::int64`].
    pub fn bool(values: Vec<bool>, shape: &[usize]) -> Result<NpyArray> {
        check_len("NpyArray::bool", values.len(), shape)?;
        Ok(NpyArray(Elements::Bool(values, shape.to_vec())))
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        match &self.0 {
            Elements::F32(t) => t.shape(),
            Elements::F64(t) => t.shape(),
            Elements::I64(_, shape) | Elements::Bool(_, shape) => shape,
        }
    }

    /// numpy's name of the element type written: `<f4`, `<f8`, `<i8` or `|b1`.
    pub fn dtype(&self) -> &'static str {
        match self.0 {
            Elements::F32(_) => "<f4",
            Elements::F64(_) => "<f8",
            Elements::I64(..) => "<i8",
            Elements::Bool(..) => "|b1",
        }
    }

    /// [`NpyArray::labels`], with errors naming `op`.
    fn labels_for(labels: &[usize], op: &'static str) -> Result<NpyArray> {
        let values = labels
            .iter()
            .enumerate()
            .map(|(i, &label)| {
                i64::try_from(label)
                    .map_err(|_| Error::arg(op, format!("label {i} is {label}, which numpy's int64 cannot hold")))
            })
            .collect::<Result<Vec<i64>>>()?;
        Ok(NpyArray(Elements::I64(values, vec![labels.len()])))
    }

    /// The bytes of an `.npy` file holding the array, for `op`.
    fn npy_bytes(&self, op: &'static str) -> Result<Vec<u8>> {
        let int_like = |kind, size, shape: &[usize], len: usize| {
            let mut bytes = header::to_bytes(Descr { kind, size, big_endian: false }, false, shape);
            bytes.reserve(len.saturating_mul(size));
            bytes
        };
        match &self.0 {
            Elements::F32(t) => npy_bytes(t, op),
            Elements::F64(t) => npy_bytes(t, op),
            Elements::I64(values, shape) => {
                let mut bytes = int_like(header::Kind::Int, 8, shape, values.len());
                values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
                Ok(bytes)
            }
            Elements::Bool(values, shape) => {
                let mut bytes = int_like(header::Kind::Bool, 1, shape, values.len());
                bytes.extend(values.iter().map(|&b| u8::from(b)));
                Ok(bytes)
            }
        }
    }
}

/// Checks that `len` values fill `shape`, and that numpy can hold its dims, for `op`.
fn check_len(op: &'static str, len: usize, shape: &[usize]) -> Result<()> {
    check_dims(op, shape)?;
    let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if numel != Some(len) {
        return Err(Error::shape(
            op,
            shape,
            format!("needs {} values, given {len}", numel.map_or("too many".to_string(), |n| n.to_string())),
        ));
    }
    Ok(())
}

/// Checks that an array of `shape` has at most numpy's 64 dims, for `op`.
fn check_dims(op: &'static str, shape: &[usize]) -> Result<()> {
    if shape.len() > header::MAX_DIMS {
        return Err(Error::shape(
            op,
            shape,
            format!("has {} dims; numpy arrays have at most {}", shape.len(), header::MAX_DIMS),
        ));
    }
    Ok(())
}

// ─── shared by .npy and .npz ───────────────────────────────────────────────────

/// Where an array comes from: a file, or a member of an `.npz` archive. Every error names it.
#[derive(Clone, Copy)]
struct Source<'a> {
    path: &'a Path,
    /// The array's name in an `.npz`.
    member: Option<&'a str>,
}

impl Source<'_> {
    /// An [`Error::Format`] naming the file (and the array in an archive).
    fn error(&self, reason: impl Display) -> Error {
        match self.member {
            Some(name) => Error::format(self.path, format!("array {name:?}: {reason}")),
            None => Error::format(self.path, reason.to_string()),
        }
    }

    /// A failed read: the operating system's error for a file; for an archive's member, whose
    /// reader inflates and checks the CRC, a corrupt member.
    fn read_error(&self, e: std::io::Error) -> Error {
        match self.member {
            Some(_) => self.error(format!("corrupt or truncated member: {e}")),
            None => Error::io(self.path, e),
        }
    }
}

/// The header and the data of an `.npy` file.
fn read_file(src: &Source<'_>) -> Result<(Header, Vec<u8>)> {
    let file = File::open(src.path).map_err(|e| Error::io(src.path, e))?;
    let len = file.metadata().map_err(|e| Error::io(src.path, e))?.len();
    let mut reader = BufReader::new(file);
    let header = header::read(&mut reader, src, len)?;
    // The header checked that its data is exactly what the file holds after it.
    let data = read_data(&mut reader, src, &header, header.data_len)?;
    Ok((header, data))
}

/// The `header.data_len` bytes of data from `r`, with `capacity` (at most the data's length) as
/// the first allocation; reads at most one byte more, to tell a longer input from an exact one.
fn read_data(r: &mut impl Read, src: &Source<'_>, header: &Header, capacity: u64) -> Result<Vec<u8>> {
    let capacity = usize::try_from(capacity.min(header.data_len))
        .map_err(|_| src.error(format!("{} data bytes do not fit in memory", header.data_len)))?;
    let mut data = Vec::with_capacity(capacity);
    r.take(header.data_len.saturating_add(1)).read_to_end(&mut data).map_err(|e| src.read_error(e))?;
    if data.len() as u64 != header.data_len {
        let what = if (data.len() as u64) < header.data_len { "truncated" } else { "bytes past the data" };
        return Err(src.error(format!(
            "{what}: shape {:?} of {} declares {} data bytes, found {}{}",
            header.shape,
            header.descr,
            header.data_len,
            data.len(),
            if data.len() as u64 > header.data_len { " or more" } else { "" }
        )));
    }
    Ok(data)
}

/// The tensor of an array: row-major as it is, or for Fortran order a column-major view of the
/// same elements (the reversed shape, row-major, with its dims reversed: no copy).
fn to_tensor<T: Float>(header: &Header, data: &[u8], src: &Source<'_>) -> Result<Tensor<T>> {
    let values = elements::to_floats::<T>(data, header.descr, src)?;
    let shape = &header.shape;
    if !header.fortran_order || shape.len() < 2 {
        return Tensor::from_vec(values, shape);
    }
    let reversed: Vec<usize> = shape.iter().rev().copied().collect();
    let axes: Vec<usize> = (0..shape.len()).rev().collect();
    Tensor::from_vec(values, &reversed)?.permute(&axes)
}

/// The labels of a 1-D integer array.
fn to_labels(header: &Header, data: &[u8], src: &Source<'_>) -> Result<Vec<usize>> {
    if header.shape.len() != 1 {
        return Err(src.error(format!("labels must be a 1-D array, found shape {:?}", header.shape)));
    }
    elements::to_labels(data, header.descr, src)
}

/// The bytes of an `.npy` file holding `tensor`, for `op`.
fn npy_bytes<T: Float>(tensor: &Tensor<T>, op: &'static str) -> Result<Vec<u8>> {
    let shape = tensor.shape();
    check_dims(op, shape)?;
    // As np.save: Fortran order for an array that is column-major and not row-major.
    let axes: Vec<usize> = (0..shape.len()).rev().collect();
    let column_major = tensor.permute(&axes)?;
    let fortran_order = !tensor.is_contiguous() && column_major.is_contiguous();
    let values = if fortran_order { column_major.to_vec() } else { tensor.to_vec() };
    let mut bytes = header::to_bytes(Descr::float(std::mem::size_of::<T>()), fortran_order, shape);
    bytes.extend_from_slice(&crate::checkpoint::to_le_bytes(values));
    Ok(bytes)
}
