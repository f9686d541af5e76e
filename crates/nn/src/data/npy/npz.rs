//! `.npz` archives: a zip file of `.npy` members named `<key>.npy`, stored by `np.savez` and
//! deflated by `np.savez_compressed`. The zip container is the `zip` crate's; every member is
//! checked as an `.npy` file is, plus its declared size and a limit before anything is inflated.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Cursor, Write};
use std::path::{Path, PathBuf};

use tapegrad_tensor::{Error, Float, Result, Tensor};
use zip::result::ZipError;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::header::{self, Header};
use super::{npy_bytes, read_data, to_labels, to_tensor, NpyArray, Source};

/// The most data bytes that one array of an `.npz` may declare when read: 1 GiB (256 Mi `f32`
/// elements). A member whose header declares more is refused before anything is inflated or
/// allocated for it; [`Npz::set_max_bytes`] sets another limit.
pub const DEFAULT_MAX_NPZ_BYTES: u64 = 1 << 30;

/// Deflate's largest compression ratio (a run of zeros: 258 bytes per 2-bit code, about 1032 to
/// 1): a member's data is never more than this many times its compressed size, so that bounds
/// the first allocation for it as well.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The suffix numpy gives each array's member in the archive.
const SUFFIX: &str = ".npy";

/// An open `.npz` archive, read one array at a time, like the `NpzFile` that `np.load` returns:
/// [`Npz::names`] lists the arrays in the archive's order and [`Npz::tensor`] or [`Npz::labels`]
/// reads one by its name (its member's name without `.npy`, as numpy's keys).
///
/// ```
/// use tapegrad_nn::data::{write_npz_compressed, Npz};
/// use tapegrad_tensor::Tensor;
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-npz-{}.npz", std::process::id()));
/// let x = Tensor::<f32>::arange(6).reshape(&[3, 2])?;
/// let y = Tensor::from_vec(vec![2.0f32, 0.0, 1.0], &[3])?;
/// write_npz_compressed(&[("x".to_string(), x), ("y".to_string(), y)], &path)?;
/// let mut npz = Npz::open(&path)?;
/// assert_eq!(npz.names(), ["x", "y"]);
/// let x = npz.tensor::<f32>("x")?;
/// let y = npz.labels("y").unwrap_err(); // written as f4: labels must be an integer array
/// assert_eq!(x.shape(), &[3, 2]);
/// assert!(y.to_string().contains("integer"), "{y}");
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub struct Npz {
    path: PathBuf,
    archive: ZipArchive<BufReader<File>>,
    /// The arrays' names, in the archive's order.
    names: Vec<String>,
    max_bytes: u64,
}

impl std::fmt::Debug for Npz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Npz").field("path", &self.path).field("names", &self.names).finish_non_exhaustive()
    }
}

impl Npz {
    /// Opens an `.npz` archive and reads its directory (no array yet), with
    /// [`DEFAULT_MAX_NPZ_BYTES`] as the limit of each array's data.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or read; [`Error::Format`] naming the file
    /// when it is not a valid zip archive or two members give the same name.
    pub fn open(path: impl AsRef<Path>) -> Result<Npz> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let archive = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_error(&path, e))?;
        let mut names = Vec::with_capacity(archive.len());
        let mut seen = HashSet::with_capacity(archive.len());
        for i in 0..archive.len() {
            let member = archive.name_for_index(i).transpose().map_err(|e| zip_error(&path, e))?.unwrap_or_default();
            let name = member.strip_suffix(SUFFIX).unwrap_or(&member).to_string();
            if !seen.insert(name.clone()) {
                return Err(Error::format(&path, format!("two members of the archive are named {name:?}")));
            }
            names.push(name);
        }
        Ok(Npz { path, archive, names, max_bytes: DEFAULT_MAX_NPZ_BYTES })
    }

    /// Sets the most data bytes one array may declare (its shape's elements times its element
    /// size), instead of [`DEFAULT_MAX_NPZ_BYTES`]: for larger arrays, or to hold untrusted
    /// files to less.
    pub fn set_max_bytes(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
    }

    /// The limit of each array's data bytes ([`Npz::set_max_bytes`]).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The arrays' names in the archive's order: the members' names without their `.npy` suffix
    /// (numpy's keys, `np.savez`'s keyword arguments or `arr_0`, `arr_1`, ...).
    pub fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// The number of arrays.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the archive holds no array.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Reads the array `name` into a tensor of `T`, as [`read_npy`](super::read_npy) reads a
    /// file.
    ///
    /// # Errors
    /// [`Error::Format`] naming the file and the array when the archive has no such array, its
    /// member is corrupt (bad deflate data, a wrong CRC, shorter or longer than its declared
    /// size), its data is larger than the limit, and everything [`read_npy`](super::read_npy)
    /// reports.
    pub fn tensor<T: Float>(&mut self, name: &str) -> Result<Tensor<T>> {
        let index = self.index(name)?;
        self.read(index, to_tensor)
    }

    /// Reads the array `name`, a 1-D array of non-negative integers, as class labels, as
    /// [`read_npy_labels`](super::read_npy_labels) reads a file.
    ///
    /// # Errors
    /// Everything [`Npz::tensor`] and [`read_npy_labels`](super::read_npy_labels) report.
    pub fn labels(&mut self, name: &str) -> Result<Vec<usize>> {
        let index = self.index(name)?;
        self.read(index, to_labels)
    }

    /// Reads every array, in the archive's order, into tensors of `T`.
    ///
    /// # Errors
    /// The first error [`Npz::tensor`] reports.
    pub fn tensors<T: Float>(&mut self) -> Result<Vec<(String, Tensor<T>)>> {
        (0..self.names.len()).map(|i| Ok((self.names[i].clone(), self.read(i, to_tensor)?))).collect()
    }

    /// The index of the array `name`.
    fn index(&self, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).ok_or_else(|| {
            Error::format(&self.path, format!("no array named {name:?}; the archive holds {:?}", self.names))
        })
    }

    /// Reads member `index` (checking its header, its declared size and the limit before
    /// inflating its data) and converts it with `convert`.
    fn read<V>(&mut self, index: usize, convert: impl Fn(&Header, &[u8], &Source<'_>) -> Result<V>) -> Result<V> {
        let src = Source { path: &self.path, member: Some(&self.names[index]) };
        let mut member = self.archive.by_index(index).map_err(|e| src.error(format!("cannot read the member: {e}")))?;
        let size = member.size();
        let header = header::read(&mut member, &src, size)?;
        if header.data_len > self.max_bytes {
            return Err(src.error(format!(
                "shape {:?} of {} declares {} data bytes, above the limit of {} bytes (Npz::set_max_bytes sets \
                 a higher one)",
                header.shape, header.descr, header.data_len, self.max_bytes
            )));
        }
        let capacity = match member.compression() {
            CompressionMethod::Stored => member.compressed_size(),
            _ => member.compressed_size().saturating_mul(MAX_DEFLATE_RATIO),
        };
        let data = read_data(&mut member, &src, &header, capacity)?;
        convert(&header, &data, &src)
    }
}

/// Reads every array of an `.npz` archive (`np.savez`, `np.savez_compressed`) into tensors of
/// `T`, in the archive's order, named by their keys (member names without `.npy`):
/// [`Npz::open`] then [`Npz::tensors`], with [`DEFAULT_MAX_NPZ_BYTES`] as the limit of each
/// array's data.
///
/// # Errors
/// Everything [`Npz::open`] and [`Npz::tensor`] report.
///
/// ```
/// use tapegrad_nn::data::{read_npz, write_npz};
/// use tapegrad_tensor::{Tensor, TensorNew};
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-read-npz-{}.npz", std::process::id()));
/// let w = Tensor::<f64>::ones(&[2, 3]);
/// write_npz(&[("weight".to_string(), w.clone()), ("bias".to_string(), Tensor::<f64>::zeros(&[2]))], &path)?;
/// let arrays = read_npz::<f64>(&path)?;
/// assert_eq!((arrays[0].0.as_str(), arrays[0].1.to_vec()), ("weight", w.to_vec()));
/// assert_eq!(arrays[1].0, "bias");
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub fn read_npz<T: Float>(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor<T>)>> {
    Npz::open(path)?.tensors()
}

/// Writes `tensors` to `path` as an uncompressed `.npz` archive, as `np.savez(path, **tensors)`:
/// each tensor an `.npy` member (see [`write_npy`](super::write_npy)) named `<name>.npy`, in
/// order. The file is replaced atomically, as [`save`](crate::save) does. [`NpzWriter`] writes
/// arrays of different types (labels beside images, say) in one archive.
///
/// # Errors
/// [`Error::Format`] when two tensors have the same name or `path` does not name a file;
/// [`Error::InvalidShape`] when a tensor has more than 64 dims; [`Error::Io`] when the file
/// cannot be written.
pub fn write_npz<T: Float>(tensors: &[(String, Tensor<T>)], path: impl AsRef<Path>) -> Result<()> {
    write(tensors, path.as_ref(), CompressionMethod::Stored, "write_npz")
}

/// [`write_npz`] with every member deflated, as `np.savez_compressed` (smaller, slower to read
/// and write).
///
/// # Errors
/// Everything [`write_npz`] reports.
pub fn write_npz_compressed<T: Float>(tensors: &[(String, Tensor<T>)], path: impl AsRef<Path>) -> Result<()> {
    write(tensors, path.as_ref(), CompressionMethod::Deflated, "write_npz_compressed")
}

/// An `.npz` archive of arrays of any types ([`NpyArray`]: `f32` and `f64` tensors, `int64`
/// integers, bools), added by name and written in that order, as `np.savez(path, x=x, y=y)`
/// writes a dataset's images and labels; [`NpzWriter::compressed`] deflates them, as
/// `np.savez_compressed`. numpy's `np.load` reads each member as the type it was given; so do
/// [`Npz::tensor`] and [`Npz::labels`].
///
/// ```
/// use tapegrad_nn::data::{Npz, NpyArray, NpzWriter};
/// use tapegrad_tensor::Tensor;
/// let path = std::env::temp_dir().join(format!("tapegrad-doc-npz-writer-{}.npz", std::process::id()));
/// let images = Tensor::<f32>::arange(6).reshape(&[3, 2])?;
/// NpzWriter::new()
///     .add("x", images)
///     .add("y", NpyArray::labels(&[2, 0, 1])?)
///     .add("valid", NpyArray::bool(vec![true, true, false], &[3])?)
///     .write(&path)?;
/// let mut npz = Npz::open(&path)?;
/// assert_eq!(npz.names(), ["x", "y", "valid"]);
/// assert_eq!(npz.labels("y")?, [2, 0, 1]);
/// assert_eq!(npz.tensor::<f32>("valid")?.to_vec(), [1.0, 1.0, 0.0]);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct NpzWriter {
    arrays: Vec<(String, NpyArray)>,
    compressed: bool,
}

impl NpzWriter {
    /// An empty archive, stored uncompressed (as `np.savez`).
    pub fn new() -> NpzWriter {
        NpzWriter::default()
    }

    /// Deflates every member when written (as `np.savez_compressed`).
    pub fn compressed(&mut self) -> &mut NpzWriter {
        self.compressed = true;
        self
    }

    /// Adds the array `name` (numpy's key; its member is `<name>.npy`) after those already
    /// added: a tensor, or an [`NpyArray`] of integers or bools.
    pub fn add(&mut self, name: impl Into<String>, array: impl Into<NpyArray>) -> &mut NpzWriter {
        self.arrays.push((name.into(), array.into()));
        self
    }

    /// The arrays' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.arrays.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// Writes the archive to `path`, replacing the file atomically, as [`save`](crate::save)
    /// does.
    ///
    /// # Errors
    /// [`Error::Format`] when two arrays have the same name or `path` does not name a file;
    /// [`Error::InvalidShape`] when a tensor has more than 64 dims; [`Error::Io`] when the file
    /// cannot be written. Nothing is written then.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let method = if self.compressed { CompressionMethod::Deflated } else { CompressionMethod::Stored };
        write(&self.arrays, path.as_ref(), method, "NpzWriter::write")
    }
}

/// An array an archive's member is written from.
trait Member {
    /// Its `.npy` bytes, for `op`.
    fn npy_bytes(&self, op: &'static str) -> Result<Vec<u8>>;
}

impl<T: Float> Member for Tensor<T> {
    fn npy_bytes(&self, op: &'static str) -> Result<Vec<u8>> {
        npy_bytes(self, op)
    }
}

impl Member for NpyArray {
    fn npy_bytes(&self, op: &'static str) -> Result<Vec<u8>> {
        NpyArray::npy_bytes(self, op)
    }
}

/// Writes the archive of `members` with `method`, for `op`.
fn write<M: Member>(members: &[(String, M)], path: &Path, method: CompressionMethod, op: &'static str) -> Result<()> {
    let mut seen = HashSet::with_capacity(members.len());
    if let Some((name, _)) = members.iter().find(|(name, _)| !seen.insert(name.as_str())) {
        return Err(Error::format(path, format!("two arrays are named {name:?}")));
    }
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, member) in members {
        let bytes = member.npy_bytes(op)?;
        let options = SimpleFileOptions::default()
            .compression_method(method)
            .large_file(bytes.len() as u64 >= u64::from(u32::MAX));
        zip.start_file(format!("{name}{SUFFIX}"), options).map_err(|e| zip_error(path, e))?;
        zip.write_all(&bytes).map_err(|e| Error::io(path, e))?;
    }
    let bytes = zip.finish().map_err(|e| zip_error(path, e))?.into_inner();
    crate::checkpoint::write_atomic(path, &bytes)
}

/// The error of a zip operation on `path`: the file opened, so whatever the zip reader or
/// writer reports (a directory cut short, an offset past the end) is the archive's fault.
fn zip_error(path: &Path, e: ZipError) -> Error {
    Error::format(path, format!("not a valid .npz (zip) archive: {e}"))
}
