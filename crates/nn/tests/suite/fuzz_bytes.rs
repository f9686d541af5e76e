//! Byte-mutation tests of the readers of untrusted files, the proptest sibling of the
//! cargo-fuzz targets in `fuzz/`: valid checkpoints and IDX files (plain and gzipped) go through
//! random sequences of byte flips, overwrites with edge bytes, truncations, insertions and
//! deletions, and so do numpy's `.npy` files and `.npz` archives (the fixtures numpy wrote). Every result must be `Ok` or a `Format` / `Checkpoint` error, never a panic; what
//! loads must be consistent (a model holds exactly the file's values, an `Idx` holds as many bytes
//! as its dims say and no more than the limit); a failed load changes nothing; and a plain IDX
//! file and its gzipped copy read the same.
//!
//! `checkpoint.rs` already flips and truncates single checkpoints; this file adds
//! insertions, deletions and sequences of mixed mutations, the f64 reader, and IDX files.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use tapegrad_golden::Scratch;
use tapegrad_nn::data::{read_idx_with_limit, read_npy, read_npy_labels, Idx, Npz};
use tapegrad_nn::{load, load_tensors, save, Error, Linear, LinearNew, Module};
use tapegrad_tensor::{Float, Generator, Tensor};

/// A position in a byte string, taken modulo the string's length at the time of the edit.
#[derive(Clone, Copy, Debug)]
struct Pos(usize);

impl Pos {
    /// The position in a string of `len` bytes (`len` > 0).
    fn index(self, len: usize) -> usize {
        self.0 % len
    }
}

/// One edit of a byte string.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(Pos, u8),
    Set(Pos, u8),
    Truncate(Pos),
    Insert(Pos, Vec<u8>),
    Delete(Pos, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = || any::<usize>().prop_map(Pos);
    // Bytes that change meaning: JSON syntax, digits, zero, all-ones, the gzip magic.
    let edge = prop::sample::select(vec![
        0u8, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'}', b'[', b']', b',', b':', b'9', 0x1f, 0x8b,
    ]);
    prop_oneof![
        3 => (index(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        2 => (index(), edge.clone()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => index().prop_map(Mutation::Truncate),
        2 => (index(), prop::collection::vec(prop_oneof![edge, any::<u8>()], 1..9)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (index(), 1usize..9).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in mutations {
        match m {
            Mutation::Flip(i, x) if !out.is_empty() => {
                let at = i.index(out.len());
                out[at] ^= x;
            }
            Mutation::Set(i, b) if !out.is_empty() => {
                let at = i.index(out.len());
                out[at] = *b;
            }
            Mutation::Truncate(i) => out.truncate(i.index(out.len() + 1)),
            Mutation::Insert(i, b) => {
                let at = i.index(out.len() + 1);
                out.splice(at..at, b.iter().copied());
            }
            Mutation::Delete(i, n) if !out.is_empty() => {
                let at = i.index(out.len());
                out.drain(at..(at + n).min(out.len()));
            }
            _ => {}
        }
    }
    out
}

// ─── checkpoints ───────────────────────────────────────────────────────────────

fn model<T: Float>(seed: u64) -> Linear<T> {
    Linear::<T>::new(3, 2, &mut Generator::new(seed))
}

fn bits<T: Float>(t: &Tensor<T>) -> Vec<u64> {
    t.cast::<f64>().to_vec().iter().map(|x| x.to_bits()).collect()
}

fn snapshot<T: Float>(m: &Linear<T>) -> Vec<(String, Vec<usize>, Vec<u64>)> {
    m.named_parameters().into_iter().map(|(n, v)| (n, v.shape(), bits(&v.value()))).collect()
}

/// A valid checkpoint of a `Linear(3, 2)` of `T`, made once per element type.
fn checkpoint<T: Float>() -> &'static [u8] {
    static F32: OnceLock<Vec<u8>> = OnceLock::new();
    static F64: OnceLock<Vec<u8>> = OnceLock::new();
    let cell = if T::NAME == "f64" { &F64 } else { &F32 };
    cell.get_or_init(|| {
        let dir = Scratch::new("nn-fuzz-bytes", &format!("valid-{}", T::NAME));
        let path = dir.path("v.safetensors");
        save(&model::<T>(0), &path).unwrap();
        std::fs::read(&path).unwrap()
    })
}

/// The tensors of the file at `path`, read as `f32` or else as `f64`, converted to `T` as `load`
/// converts them.
fn converted<T: Float>(path: &Path) -> Option<Vec<(String, Tensor<T>)>> {
    fn cast<S: Float, T: Float>(v: Vec<(String, Tensor<S>)>) -> Vec<(String, Tensor<T>)> {
        v.into_iter().map(|(n, t)| (n, t.cast::<T>())).collect()
    }
    load_tensors::<f32>(path).ok().map(cast).or_else(|| load_tensors::<f64>(path).ok().map(cast))
}

/// `load_tensors` and `load` on `bytes`: `Ok` and consistent, or a format / fit error that
/// leaves the model unchanged. Returns whether the model loaded.
fn check_checkpoint<T: Float>(dir: &Path, bytes: &[u8]) -> bool {
    let path = dir.join("c.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let tensors = match load_tensors::<T>(&path) {
        Ok(t) => Some(t),
        Err(e) => {
            assert!(matches!(e, Error::Format { .. }), "{e:?}");
            None
        }
    };
    if let Some(tensors) = &tensors {
        for pair in tensors.windows(2) {
            assert!(pair[0].0 < pair[1].0, "names sorted and unique");
        }
        for (name, t) in tensors {
            assert_eq!(t.to_vec().len(), t.shape().iter().product::<usize>(), "{name}");
        }
    }
    let mut m = model::<T>(7);
    let before = snapshot(&m);
    match load(&mut m, &path) {
        Ok(()) => {
            // `load` converts floats (an F32 file into an f64 model), `load_tensors` reads one dtype.
            let tensors =
                tensors.or_else(|| converted::<T>(&path)).expect("load succeeded, so the file reads as f32 or f64");
            let after = snapshot(&m);
            assert_eq!(tensors.len(), after.len());
            for ((name, shape, values), (_, old_shape, _)) in after.iter().zip(&before) {
                assert_eq!(shape, old_shape, "{name}");
                let (_, t) = tensors.iter().find(|(n, _)| n == name).expect("every loaded name is in the file");
                assert_eq!(values, &bits(t), "{name}");
            }
            true
        }
        Err(e) => {
            assert!(matches!(e, Error::Format { .. } | Error::Checkpoint { .. }), "{e:?}");
            assert_eq!(snapshot(&m), before, "a failed load changes nothing");
            false
        }
    }
}

// ─── IDX ───────────────────────────────────────────────────────────────────────

/// The limit on the data the IDX reader may load here: a mutated dim that asks for more is
/// refused before anything is read.
const IDX_LIMIT: u64 = 4096;

/// A valid IDX file of 2 x 3 x 4 bytes.
fn idx_file() -> Vec<u8> {
    let mut out = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4];
    out.extend((0..24u8).map(|i| i.wrapping_mul(37)));
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn read_idx(dir: &Path, name: &str, bytes: &[u8]) -> Result<Idx, Error> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let result = read_idx_with_limit(&path, IDX_LIMIT);
    match &result {
        Ok(idx) => {
            let numel = idx.dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            assert_eq!(numel, Some(idx.data.len()), "dims {:?}", idx.dims);
            assert!(idx.data.len() as u64 <= IDX_LIMIT);
        }
        Err(e) => assert!(matches!(e, Error::Format { .. }), "{e:?}"),
    }
    result
}

/// Reads `content` as a plain file and gzipped: both must agree (unless `content` itself starts
/// with the gzip magic, which the plain reader then inflates). Returns whether it read.
fn check_idx(dir: &Path, content: &[u8]) -> bool {
    let plain = read_idx(dir, "plain", content);
    let zipped = read_idx(dir, "zipped", &gzip(content));
    if content.starts_with(&[0x1f, 0x8b]) {
        return plain.is_ok();
    }
    match (&plain, &zipped) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "plain and gzipped reads of the same content differ"),
        (Err(_), Err(_)) => {}
        _ => panic!("plain and gzipped reads disagree: {plain:?} vs {zipped:?}"),
    }
    plain.is_ok()
}

// ─── numpy ─────────────────────────────────────────────────────────────────────

/// The limit on each array an archive may load here.
const NPZ_LIMIT: u64 = 4096;

/// A fixture numpy wrote (`crates/golden/data/npy.py`).
fn numpy_file(name: &str) -> Vec<u8> {
    std::fs::read(tapegrad_golden::data_path("npy").join(name)).unwrap()
}

/// Checks that a tensor read from a file holds as many elements as its shape says.
fn check_read<T: Float>(result: Result<Tensor<T>, Error>) -> bool {
    match result {
        Ok(t) => {
            assert_eq!(t.to_vec().len(), t.shape().iter().product::<usize>(), "{:?}", t.shape());
            true
        }
        Err(e) => {
            assert!(matches!(e, Error::Format { .. }), "{e:?}");
            false
        }
    }
}

/// `read_npy` (f32 and f64) and `read_npy_labels` on `bytes`: `Ok` and consistent, or a format
/// error. Returns whether it read.
fn check_npy(dir: &Path, bytes: &[u8]) -> bool {
    let path = dir.join("m.npy");
    std::fs::write(&path, bytes).unwrap();
    let read = check_read(read_npy::<f64>(&path));
    check_read(read_npy::<f32>(&path));
    if let Err(e) = read_npy_labels(&path) {
        assert!(matches!(e, Error::Format { .. }), "{e:?}");
    }
    read
}

/// Every array of the archive `bytes`, with [`NPZ_LIMIT`]: `Ok` and consistent, or a format
/// error. Returns how many arrays read.
fn check_npz(dir: &Path, bytes: &[u8]) -> usize {
    let path = dir.join("m.npz");
    std::fs::write(&path, bytes).unwrap();
    let mut npz = match Npz::open(&path) {
        Ok(npz) => npz,
        Err(e) => {
            assert!(matches!(e, Error::Format { .. }), "{e:?}");
            return 0;
        }
    };
    npz.set_max_bytes(NPZ_LIMIT);
    let names: Vec<String> = npz.names().into_iter().map(str::to_owned).collect();
    let mut read = 0;
    for name in &names {
        let tensor = npz.tensor::<f64>(name);
        if let Ok(t) = &tensor {
            assert!(t.numel() as u64 <= NPZ_LIMIT, "{name}: {:?}", t.shape());
        }
        read += usize::from(check_read(tensor));
        if let Err(e) = npz.labels(name) {
            assert!(matches!(e, Error::Format { .. }), "{e:?}");
        }
    }
    read
}

// ─── the tests ─────────────────────────────────────────────────────────────────

#[test]
fn the_unmutated_files_read() {
    let dir = Scratch::new("nn-fuzz-bytes", "unmutated");
    assert!(check_checkpoint::<f32>(dir.dir(), checkpoint::<f32>()));
    assert!(check_checkpoint::<f64>(dir.dir(), checkpoint::<f64>()));
    assert!(check_checkpoint::<f64>(dir.dir(), checkpoint::<f32>()), "an F32 file converts into an f64 model");
    assert!(check_checkpoint::<f32>(dir.dir(), checkpoint::<f64>()), "an F64 file rounds into an f32 model");
    assert!(check_idx(dir.dir(), &idx_file()));
    assert!(read_idx(dir.dir(), "gz", &gzip(&idx_file())).is_ok());
    assert!(check_npy(dir.dir(), &numpy_file("f64_f_2x3x4.npy")));
    assert_eq!(check_npz(dir.dir(), &numpy_file("compressed.npz")), 4);
    assert_eq!(check_npz(dir.dir(), &numpy_file("several.npz")), 3);
    // The mutations do what they say.
    let i = Pos;
    assert_eq!(mutate(b"abcd", &[Mutation::Insert(i(0), b"xy".to_vec())]), b"xyabcd");
    assert_eq!(mutate(b"abcd", &[Mutation::Delete(i(0), 2), Mutation::Set(i(0), b'z')]), b"zd");
    assert_eq!(mutate(b"abcd", &[Mutation::Truncate(i(0)), Mutation::Flip(i(0), 1)]), b"");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutated_checkpoints_load_or_fail_cleanly_f32(mutations in prop::collection::vec(mutation(), 1..5)) {
        let dir = Scratch::new("nn-fuzz-bytes", "ckpt-f32");
        check_checkpoint::<f32>(dir.dir(), &mutate(checkpoint::<f32>(), &mutations));
    }

    #[test]
    fn mutated_checkpoints_load_or_fail_cleanly_f64(mutations in prop::collection::vec(mutation(), 1..5)) {
        let dir = Scratch::new("nn-fuzz-bytes", "ckpt-f64");
        check_checkpoint::<f64>(dir.dir(), &mutate(checkpoint::<f64>(), &mutations));
    }

    #[test]
    fn mutated_idx_files_read_the_same_plain_and_gzipped(mutations in prop::collection::vec(mutation(), 1..5)) {
        let dir = Scratch::new("nn-fuzz-bytes", "idx");
        check_idx(dir.dir(), &mutate(&idx_file(), &mutations));
    }

    #[test]
    fn mutated_gzip_streams_read_or_fail_cleanly(mutations in prop::collection::vec(mutation(), 1..4)) {
        let dir = Scratch::new("nn-fuzz-bytes", "gz");
        read_idx(dir.dir(), "gz", &mutate(&gzip(&idx_file()), &mutations)).ok();
    }

    #[test]
    fn mutated_npy_files_read_or_fail_cleanly(mutations in prop::collection::vec(mutation(), 1..5)) {
        let dir = Scratch::new("nn-fuzz-bytes", "npy");
        check_npy(dir.dir(), &mutate(&numpy_file("f64_f_2x3x4.npy"), &mutations));
    }

    #[test]
    fn mutated_npz_archives_read_or_fail_cleanly(
        mutations in prop::collection::vec(mutation(), 1..5),
        compressed in any::<bool>(),
    ) {
        let dir = Scratch::new("nn-fuzz-bytes", "npz");
        let file = numpy_file(if compressed { "compressed.npz" } else { "several.npz" });
        check_npz(dir.dir(), &mutate(&file, &mutations));
    }
}
