//! The IDX reader and the MNIST loaders, on small well-formed and hostile files written to a
//! scratch directory (the shipped `mnist-10k` lies outside this crate: the facade package's
//! `tests/suite/mnist.rs` reads it).

use std::io::Write;
use std::path::Path;

use tapegrad_golden::Scratch;
use tapegrad_nn::data::{
    load_dataset, load_labels, load_mnist_images, read_idx, read_idx_with_limit, Dataset, Idx, Mnist,
    DEFAULT_MAX_IDX_BYTES,
};
use tapegrad_nn::Error;
use tapegrad_tensor::Tensor;

// ─── helpers ───────────────────────────────────────────────────────────────────

/// An IDX file: magic `00 00 type ndims`, big-endian dims, then `data`.
fn idx_bytes(type_code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, type_code, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The error's message, after checking that it is a `Format` error naming `path` (also used by
/// the `npy` tests).
pub(crate) fn format_error(result: Result<impl std::fmt::Debug, Error>, path: &Path) -> String {
    let err = result.expect_err("expected an error");
    assert!(matches!(err, Error::Format { .. }), "expected a Format error, got {err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "message does not name {}: {msg}", path.display());
    msg
}

/// Checks that `msg` contains every one of `parts`.
pub(crate) fn assert_contains(msg: &str, parts: &[&str]) {
    for part in parts {
        assert!(msg.contains(part), "message lacks {part:?}: {msg}");
    }
}

// ─── directories in the standard layout ────────────────────────────────────────

/// Writes a tiny standard release: 3 training and 2 test images of 2 x 2, some files gzipped.
fn write_standard(dir: &Scratch, skip: Option<&str>) {
    let files = [
        ("train-images-idx3-ubyte.gz", gzip(&idx_bytes(8, &[3, 2, 2], &[0, 51, 102, 255, 1, 2, 3, 4, 5, 6, 7, 8]))),
        ("train-labels-idx1-ubyte", idx_bytes(8, &[3], &[2, 0, 9])),
        ("t10k-images-idx3-ubyte", idx_bytes(8, &[2, 2, 2], &[9, 9, 9, 9, 0, 0, 0, 0])),
        ("t10k-labels-idx1-ubyte.gz", gzip(&idx_bytes(8, &[2], &[1, 1]))),
    ];
    for (name, bytes) in files {
        if Some(name) != skip {
            dir.write(name, &bytes);
        }
    }
}

#[test]
fn a_standard_directory_loads_train_and_test() {
    let dir = Scratch::new("nn-data", "standard");
    write_standard(&dir, None);
    let Mnist::TrainTest { train, test } = load_dataset(dir.dir()).unwrap() else {
        panic!("the four standard files make a train/test pair");
    };
    assert_eq!(train.images().shape(), &[3, 4]);
    assert_eq!(train.labels(), &[2, 0, 9]);
    assert_eq!(&train.images().to_vec()[..4], &[0.0, 0.2, 0.4, 1.0]);
    assert_eq!(test.images().shape(), &[2, 4]);
    assert_eq!(test.labels(), &[1, 1]);
}

#[test]
fn an_incomplete_directory_names_the_missing_file() {
    let dir = Scratch::new("nn-data", "incomplete");
    write_standard(&dir, Some("t10k-labels-idx1-ubyte.gz"));
    let msg = format_error(load_dataset(dir.dir()), dir.dir());
    assert_contains(&msg, &["incomplete", "t10k-labels-idx1-ubyte"]);
    assert!(!msg.contains("train-images"), "only the missing file is listed: {msg}");
}

#[test]
fn an_empty_or_missing_directory_is_an_error() {
    let dir = Scratch::new("nn-data", "empty");
    let msg = format_error(load_dataset(dir.dir()), dir.dir());
    assert_contains(&msg, &["no MNIST-style IDX files", "train-images-idx3-ubyte", "images-idx3-ubyte"]);

    let missing = dir.dir().join("nowhere");
    let err = load_dataset(&missing).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nowhere"), "{err}");
}

#[test]
fn images_and_labels_must_agree_on_the_count() {
    let dir = Scratch::new("nn-data", "count");
    let images = dir.write("images-idx3-ubyte", &idx_bytes(8, &[3, 1, 1], &[1, 2, 3]));
    dir.write("labels-idx1-ubyte.gz", &gzip(&idx_bytes(8, &[2], &[0, 1])));
    let msg = format_error(load_dataset(dir.dir()), &images);
    assert_contains(&msg, &["3 images", "2 labels", "labels-idx1-ubyte.gz"]);
}

// ─── hostile and broken files ──────────────────────────────────────────────────

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = Scratch::new("nn-data", "missing-file");
    let path = dir.dir().join("absent-idx1-ubyte");
    let err = read_idx(&path).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("absent-idx1-ubyte"), "{err}");
}

#[test]
fn truncated_files_say_what_was_expected_and_found() {
    let dir = Scratch::new("nn-data", "truncated");
    let full = idx_bytes(8, &[4, 3], &[7; 12]);

    let path = dir.write("payload", &full[..full.len() - 5]);
    let msg = format_error(read_idx(&path), &path);
    assert_contains(&msg, &["truncated", "[4, 3]", "promise 12 data bytes", "found 7"]);

    let path = dir.write("payload.gz", &gzip(&full[..full.len() - 5]));
    let msg = format_error(read_idx(&path), &path);
    assert_contains(&msg, &["truncated", "promise 12 data bytes (decompressed)", "found 7"]);

    let path = dir.write("dims", &full[..9]);
    let msg = format_error(read_idx(&path), &path);
    assert_contains(&msg, &["truncated", "2 dims", "found 5 bytes"]);

    for len in [0, 1, 3] {
        let path = dir.write(&format!("magic-{len}"), &full[..len]);
        let msg = format_error(read_idx(&path), &path);
        assert_contains(&msg, &["truncated", "4-byte IDX magic", &format!("found {len} bytes")]);
    }
}

#[test]
fn a_gzip_stream_cut_short_or_damaged_is_an_error() {
    let dir = Scratch::new("nn-data", "bad-gz");
    let gz = gzip(&idx_bytes(8, &[100], &(0..100).collect::<Vec<u8>>()));

    let path = dir.write("cut.gz", &gz[..gz.len() / 2]);
    let msg = format_error(read_idx(&path), &path);
    assert!(msg.contains("gzip") || msg.contains("truncated"), "{msg}");

    // A wrong checksum is only noticed at the end of the stream, which the reader always reaches.
    let mut bad_crc = gz.clone();
    let crc_at = gz.len() - 8;
    bad_crc[crc_at] ^= 0xff;
    let path = dir.write("bad-crc.gz", &bad_crc);
    let msg = format_error(read_idx(&path), &path);
    assert_contains(&msg, &["corrupt or truncated gzip stream", "promise"]);

    // Scrambled deflate data decodes to garbage or fails: either way an error naming the file.
    let mut scrambled = gz.clone();
    for b in &mut scrambled[10..crc_at] {
        *b ^= 0x5a;
    }
    let path = dir.write("scrambled.gz", &scrambled);
    format_error(read_idx(&path), &path);
}

#[test]
fn headers_claiming_huge_dims_allocate_nothing_huge() {
    let dir = Scratch::new("nn-data", "huge");
    // About 1.8e19 elements: any attempt to reserve them up front would abort the test. Past the
    // default limit, so refused before the data is read; without a limit, found to be truncated.
    let lying = idx_bytes(8, &[u32::MAX, u32::MAX], &[1, 2, 3]);
    for (name, bytes) in [("lying", lying.clone()), ("lying.gz", gzip(&lying))] {
        let path = dir.write(name, &bytes);
        let msg = format_error(read_idx(&path), &path);
        assert_contains(&msg, &["[4294967295, 4294967295]", "above the limit of 1073741824 bytes"]);
        let msg = format_error(read_idx_with_limit(&path, u64::MAX), &path);
        assert_contains(&msg, &["truncated", "[4294967295, 4294967295]", "found 3"]);
    }

    // A product past usize is reported as such, without reading further.
    let path = dir.write("overflow", &idx_bytes(8, &[u32::MAX, u32::MAX, u32::MAX], &[0; 16]));
    let msg = format_error(read_idx(&path), &path);
    assert_contains(&msg, &["[4294967295, 4294967295, 4294967295]", "more elements than a usize can count"]);
}

#[test]
fn a_small_gzip_stream_declaring_huge_dims_is_refused_by_the_limit() {
    let dir = Scratch::new("nn-data", "limit-dims");
    assert_eq!(DEFAULT_MAX_IDX_BYTES, 1 << 30);
    // 2^48 declared bytes in a stream of a few dozen bytes; one byte over the default limit.
    for (name, dims) in [("huge.gz", vec![65536, 65536, 65536]), ("one-over.gz", vec![(1 << 30) + 1])] {
        let path = dir.write(name, &gzip(&idx_bytes(8, &dims, &[0; 64])));
        let msg = format_error(read_idx(&path), &path);
        assert_contains(&msg, &[&format!("{dims:?}"), "above the limit of 1073741824 bytes"]);
    }
    // The limit counts data bytes: a file of exactly the limit loads, one more is refused.
    let path = dir.write("exact.gz", &gzip(&idx_bytes(8, &[4, 4], &[7; 16])));
    assert_eq!(read_idx_with_limit(&path, 16).unwrap().data, [7; 16]);
    let msg = format_error(read_idx_with_limit(&path, 15), &path);
    assert_contains(&msg, &["[4, 4]", "declare 16 data bytes", "above the limit of 15 bytes"]);
    // And plain files too.
    let path = dir.write("plain", &idx_bytes(8, &[4, 4], &[7; 16]));
    format_error(read_idx_with_limit(&path, 15), &path);
}

#[test]
fn a_gzip_bomb_stops_at_the_limit() {
    let dir = Scratch::new("nn-data", "bomb");
    // 16 MiB of zeros inflate from about 16 KiB: declared honestly, they pass the default limit
    // but not a limit of 1 MiB.
    let n = 16 << 20;
    let zeros = vec![0u8; n];
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&idx_bytes(8, &[n as u32], &zeros)).unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < n / 500, "{} bytes", bomb.len());
    let path = dir.write("bomb.gz", &bomb);
    let msg = format_error(read_idx_with_limit(&path, 1 << 20), &path);
    assert_contains(&msg, &["[16777216]", "above the limit of 1048576 bytes"]);
    assert_eq!(read_idx(&path).unwrap().data.len(), n);
    // Declaring 16 bytes and hiding the 16 MiB after them: only one byte past the 16 is inflated
    // before the error.
    let mut hidden = idx_bytes(8, &[16], &[1; 16]);
    hidden.extend_from_slice(&zeros);
    let path = dir.write("hidden.gz", &gzip(&hidden));
    let msg = format_error(read_idx_with_limit(&path, 1 << 20), &path);
    assert_contains(&msg, &["[16]", "promise 16 data bytes", "more bytes follow"]);
    // A bomb cut short is an error, not a partial read.
    let path = dir.write("cut.gz", &bomb[..bomb.len() / 2]);
    let msg = format_error(read_idx(&path), &path);
    assert_contains(&msg, &["corrupt or truncated gzip stream"]);
}

#[test]
fn trailing_bytes_after_the_data_are_an_error() {
    let dir = Scratch::new("nn-data", "trailing");
    let path = dir.write("trailing", &idx_bytes(8, &[2, 2], &[1, 2, 3, 4, 5]));
    let msg = format_error(read_idx(&path), &path);
    assert_contains(&msg, &["[2, 2]", "promise 4 data bytes", "more bytes follow"]);
}

#[test]
fn a_wrong_magic_or_type_is_an_error() {
    let dir = Scratch::new("nn-data", "magic");
    let path = dir.write("zip", b"PK\x03\x04 not an idx file");
    let msg = format_error(read_idx(&path), &path);
    assert_contains(&msg, &["not an IDX file", "50 4b 03 04"]);

    let path = dir.write("floats", &idx_bytes(0x0d, &[1], &[0, 0, 128, 63]));
    let msg = format_error(read_idx(&path), &path);
    assert_contains(&msg, &["0x0d", "f32", "not supported", "0x08"]);
}

#[test]
fn zero_sized_and_zero_dim_files_are_valid() {
    let dir = Scratch::new("nn-data", "zero");
    let path = dir.write("empty-images", &idx_bytes(8, &[0, 28, 28], &[]));
    assert_eq!(read_idx(&path).unwrap(), Idx { dims: vec![0, 28, 28], data: vec![] });
    assert_eq!(load_mnist_images(&path).unwrap().shape(), &[0, 784]);

    // No dims: one element, like a 0-dim tensor.
    let path = dir.write("scalar", &idx_bytes(8, &[], &[42]));
    assert_eq!(read_idx(&path).unwrap(), Idx { dims: vec![], data: vec![42] });
}

#[test]
fn images_and_labels_need_their_number_of_dims() {
    let dir = Scratch::new("nn-data", "ndims");
    let labels = dir.write("labels", &idx_bytes(8, &[3], &[1, 2, 3]));
    let msg = format_error(load_mnist_images(&labels), &labels);
    assert_contains(&msg, &["3 dims", "[3]"]);

    let images = dir.write("images", &idx_bytes(8, &[1, 2, 2], &[1, 2, 3, 4]));
    let msg = format_error(load_labels(&images), &images);
    assert_contains(&msg, &["1 dim", "[1, 2, 2]"]);
}

// ─── Dataset ───────────────────────────────────────────────────────────────────

#[test]
fn dataset_checks_its_parts() {
    let err = Dataset::new(Tensor::zeros(&[3, 2]), vec![0, 1]).unwrap_err();
    assert_contains(&err.to_string(), &["Dataset::new", "[3, 2]", "[2]"]);
    assert!(Dataset::new(Tensor::scalar(1.0), vec![]).is_err());

    let ds =
        Dataset::new(Tensor::from_vec((0..6).map(|v| v as f32).collect(), &[3, 2]).unwrap(), vec![4, 0, 1]).unwrap();
    assert_eq!(ds.num_classes(), 5);
    let (head, tail) = ds.split_at(3).unwrap();
    assert_eq!((head.len(), tail.len(), tail.is_empty()), (3, 0, true));
    assert_eq!(tail.num_classes(), 0);
    let (head, tail) = ds.split_at(1).unwrap();
    assert_eq!(head.images().to_vec(), vec![0.0, 1.0]);
    assert_eq!(tail.images().to_vec(), vec![2.0, 3.0, 4.0, 5.0]);
    let err = ds.split_at(4).unwrap_err();
    assert_contains(&err.to_string(), &["split_at", "4", "3 samples"]);

    let (x, y) = ds.into_parts();
    assert_eq!((x.shape(), y.as_slice()), (&[3, 2][..], &[4, 0, 1][..]));
}
