//! numpy's `.npy` and `.npz` files: the fixtures numpy wrote (`crates/golden/data/npy.py`, in
//! C and Fortran order, every element type, 0-d and empty arrays, archives stored and deflated)
//! read as numpy shows them; files tapegrad writes byte for byte equal to numpy's; round trips
//! over random shapes and layouts; and hostile headers and archives refused with an error that
//! names the file and what is wrong.

use std::io::{Read, Write};
use std::path::PathBuf;

use proptest::prelude::*;

use crate::data::{assert_contains, format_error};
use tapegrad_golden::Scratch;
use tapegrad_nn::data::{
    read_npy, read_npy_labels, read_npz, write_npy, write_npy_labels, write_npz, write_npz_compressed, NpyArray, Npz,
    NpzWriter, DEFAULT_MAX_NPZ_BYTES,
};
use tapegrad_nn::Error;
use tapegrad_tensor::{Float, Tensor, TensorNew};

// ─── helpers ───────────────────────────────────────────────────────────────────

/// A fixture that `npy.py` wrote.
fn fixture(name: &str) -> PathBuf {
    tapegrad_golden::data_path("npy").join(name)
}

/// `npy.py`'s `pattern`: element `i` of `n` is `(i * 37 % 101 - 50) / 8`, row-major.
fn pattern(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 37 % 101) as f64 - 50.0) / 8.0).collect()
}

/// An `.npy` file of version 1.0 with header dict `dict` (padded as numpy pads it) and `data`.
fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
    let header_len = (10 + dict.len() + 1).div_ceil(64) * 64 - 10;
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(10 + header_len - 1, b' ');
    out.push(b'\n');
    out.extend_from_slice(data);
    out
}

fn dict(descr: &str, shape: &str) -> String {
    format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
}

/// A zip archive of `members` (name, bytes), each compressed with `method`.
fn zip_bytes(members: &[(&str, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in members {
        zip.start_file(*name, zip::write::SimpleFileOptions::default().compression_method(method)).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

// ─── numpy's files ─────────────────────────────────────────────────────────────

/// Reads a float fixture of `shape` as `T` and checks it holds `pattern` in row-major order.
fn check_pattern<T: Float>(name: &str, shape: &[usize]) -> Tensor<T> {
    let x: Tensor<T> = read_npy(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(x.shape(), shape, "{name}");
    let expected: Vec<f64> = pattern(shape.iter().product());
    assert_eq!(x.to_vec().iter().map(|v| v.to_f64()).collect::<Vec<_>>(), expected, "{name} as {}", T::NAME);
    x
}

#[test]
fn numpy_float_arrays_read_as_numpy_shows_them() {
    check_pattern::<f32>("f32_c_2x3.npy", &[2, 3]);
    check_pattern::<f64>("f32_c_2x3.npy", &[2, 3]);
    check_pattern::<f64>("f64_c_4x5x6.npy", &[4, 5, 6]);
    check_pattern::<f32>("f64_c_4x5x6.npy", &[4, 5, 6]);
    check_pattern::<f32>("f32_be_2x3.npy", &[2, 3]);
    // Fortran order: the same logical array, as a column-major view of the data (no copy).
    for x in [check_pattern::<f32>("f32_f_3x4.npy", &[3, 4]), check_pattern::<f32>("f64_be_f_3x2.npy", &[3, 2])] {
        assert!(!x.is_contiguous());
        assert_eq!(x.strides()[0], 1);
    }
    let x = check_pattern::<f64>("f64_f_2x3x4.npy", &[2, 3, 4]);
    assert_eq!(x.strides(), &[1, 2, 6]);
    assert_eq!(x.contiguous().to_vec(), x.to_vec());
}

#[test]
fn f64_into_f32_rounds_to_nearest_as_astype_does() {
    let dir = Scratch::new("nn-npy", "rounding");
    let third = 1.0f64 / 3.0;
    let path = dir.write("third.npy", &npy_bytes(&dict("<f8", "(1,)"), &third.to_le_bytes()));
    assert_eq!(read_npy::<f32>(&path).unwrap().to_vec(), [third as f32]);
    assert_eq!(read_npy::<f64>(&path).unwrap().to_vec(), [third]);
    // Half floats convert exactly: 1.0, -2.0, 65504 (the largest) and the smallest subnormal.
    let halves: Vec<u8> = [0x3c00u16, 0xc000, 0x7bff, 0x0001].iter().flat_map(|h| h.to_le_bytes()).collect();
    let path = dir.write("halves.npy", &npy_bytes(&dict("<f2", "(4,)"), &halves));
    assert_eq!(read_npy::<f64>(&path).unwrap().to_vec(), [1.0, -2.0, 65504.0, 2f64.powi(-24)]);
}

#[test]
fn zero_dimensional_and_empty_arrays_keep_their_shapes() {
    let x: Tensor<f64> = read_npy(fixture("f64_0d.npy")).unwrap();
    assert_eq!((x.shape(), x.item().unwrap()), (&[][..], 3.5));
    let x: Tensor<f32> = read_npy(fixture("f32_empty_0x3.npy")).unwrap();
    assert_eq!((x.shape(), x.numel()), (&[0, 3][..], 0));
    let x: Tensor<f64> = read_npy(fixture("f32_empty_1d.npy")).unwrap();
    assert_eq!(x.shape(), &[0]);
}

#[test]
fn integer_and_bool_arrays_convert_exactly_or_not_at_all() {
    let x: Tensor<f32> = read_npy(fixture("i64_labels.npy")).unwrap();
    assert_eq!(x.to_vec(), [3.0, 0.0, 9.0, 1.0, 1.0, 7.0]);
    assert_eq!(read_npy_labels(fixture("i64_labels.npy")).unwrap(), [3, 0, 9, 1, 1, 7]);

    let x: Tensor<f64> = read_npy(fixture("i32_2x3.npy")).unwrap();
    assert_eq!(x.to_vec(), [-5.0, 0.0, 2147483647.0, -2147483648.0, 1.0, 16777216.0]);
    // 2^31 - 1 needs 31 significant bits; f32 has 24.
    let path = fixture("i32_2x3.npy");
    assert_contains(&format_error(read_npy::<f32>(&path), &path), &["element 2", "2147483647", "f32 cannot represent"]);

    // A Fortran-order u8 array: the logical [[0, 1, 255], [128, 7, 64]].
    let x: Tensor<f32> = read_npy(fixture("u8_f_2x3.npy")).unwrap();
    assert_eq!((x.shape(), x.to_vec()), (&[2, 3][..], vec![0.0, 1.0, 255.0, 128.0, 7.0, 64.0]));
    let path = fixture("u8_f_2x3.npy");
    assert_contains(&format_error(read_npy_labels(&path), &path), &["1-D", "[2, 3]"]);

    let x: Tensor<f32> = read_npy(fixture("bool_2x2.npy")).unwrap();
    assert_eq!(x.to_vec(), [1.0, 0.0, 0.0, 1.0]);

    let x: Tensor<f32> = read_npy(fixture("i16_be.npy")).unwrap();
    assert_eq!(x.to_vec(), [-300.0, 300.0, 0.0]);
    let path = fixture("i16_be.npy");
    assert_contains(&format_error(read_npy_labels(&path), &path), &["element 0", "-300", "not a label"]);

    // 2^53 + 1 is the first integer f64 cannot hold: an error, not 2^53.
    let path = fixture("u64_big.npy");
    assert_contains(&format_error(read_npy::<f64>(&path), &path), &["element 1", "9007199254740993", "f64"]);
    assert_eq!(read_npy_labels(&path).unwrap(), [1, (1 << 53) + 1]);

    let path = fixture("f32_empty_1d.npy");
    assert_contains(&format_error(read_npy_labels(&path), &path), &["integer array", "<f4"]);
}

#[test]
fn bool_bytes_other_than_0_and_1_are_refused() {
    let dir = Scratch::new("nn-npy", "bool");
    let path = dir.write("b.npy", &npy_bytes(&dict("|b1", "(3,)"), &[1, 0, 2]));
    assert_contains(&format_error(read_npy::<f32>(&path), &path), &["element 2", "byte 2"]);
}

#[test]
fn unsupported_dtypes_are_named() {
    let path = fixture("c64.npy");
    assert_contains(&format_error(read_npy::<f32>(&path), &path), &["\"<c8\"", "complex"]);
    let path = fixture("object.npy");
    assert_contains(&format_error(read_npy::<f64>(&path), &path), &["\"|O\"", "Python objects"]);
    let dir = Scratch::new("nn-npy", "dtypes");
    for (descr, why) in [("<U3", "strings"), ("<M8[s]", "dates"), ("<f16", "long double"), ("<i3", "expected")] {
        let path = dir.write("d.npy", &npy_bytes(&dict(descr, "(1,)"), &[0; 16]));
        assert_contains(&format_error(read_npy::<f32>(&path), &path), &[descr, why]);
    }
    let structured = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }";
    let path = dir.write("s.npy", &npy_bytes(structured, &[0; 4]));
    assert_contains(&format_error(read_npy::<f32>(&path), &path), &["structured"]);
}

#[test]
fn numpy_archives_read_in_order_stored_and_deflated() {
    for name in ["several.npz", "compressed.npz"] {
        let mut npz = Npz::open(fixture(name)).unwrap();
        assert_eq!(&npz.names()[..3], ["x", "y", "w"], "{name}");
        let x = npz.tensor::<f32>("x").unwrap();
        assert_eq!((x.shape(), x.to_vec()), (&[4, 3][..], pattern(12).iter().map(|&v| v as f32).collect()));
        assert_eq!(npz.labels("y").unwrap(), [2, 0, 1, 2]);
        let w = npz.tensor::<f64>("w").unwrap();
        assert_eq!((w.shape(), w.to_vec(), w.is_contiguous()), (&[3, 2][..], pattern(6), false));
        let path = fixture(name);
        assert_contains(&format_error(npz.tensor::<f32>("z"), &path), &["no array named \"z\"", "\"x\""]);
        assert_contains(&format_error(npz.labels("x"), &path), &["array \"x\"", "1-D"]);

        let all = read_npz::<f64>(fixture(name)).unwrap();
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(&names[..3], ["x", "y", "w"]);
        assert_eq!(all[1].1.to_vec(), [2.0, 0.0, 1.0, 2.0]);
    }
    let all = read_npz::<f32>(fixture("compressed.npz")).unwrap();
    assert_eq!((all[3].0.as_str(), all[3].1.shape()), ("empty", &[0][..]));
}

// ─── what tapegrad writes ──────────────────────────────────────────────────────

#[test]
fn written_files_are_byte_for_byte_numpys() {
    let dir = Scratch::new("nn-npy", "bytes");
    let values: Vec<f32> = pattern(6).iter().map(|&v| v as f32).collect();
    let path = dir.path("c.npy");
    write_npy(&Tensor::from_vec(values, &[2, 3]).unwrap(), &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(fixture("f32_c_2x3.npy")).unwrap());

    // A column-major view is written in Fortran order, as np.save writes np.asfortranarray.
    let logical = Tensor::from_vec(pattern(24), &[2, 3, 4]).unwrap();
    let view = logical.permute(&[2, 1, 0]).unwrap().contiguous().permute(&[2, 1, 0]).unwrap();
    assert!(!view.is_contiguous());
    assert_eq!(view.to_vec(), logical.to_vec());
    let path = dir.path("f.npy");
    write_npy(&view, &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(fixture("f64_f_2x3x4.npy")).unwrap());

    let path = dir.path("0d.npy");
    write_npy(&Tensor::<f64>::scalar(3.5), &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(fixture("f64_0d.npy")).unwrap());

    // Labels as numpy's int64, as np.save writes np.array([3, 0, 9, 1, 1, 7], dtype=np.int64).
    let path = dir.path("labels.npy");
    write_npy_labels(&[3, 0, 9, 1, 1, 7], &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(fixture("i64_labels.npy")).unwrap());
    assert_eq!(read_npy_labels(&path).unwrap(), [3, 0, 9, 1, 1, 7]);
    write_npy_labels(&[], &path).unwrap();
    assert!(read_npy_labels(&path).unwrap().is_empty());
}

#[test]
#[cfg(target_pointer_width = "64")]
fn a_label_past_int64_is_refused_before_anything_is_written() {
    let dir = Scratch::new("nn-npy", "labels");
    let path = dir.path("big.npy");
    let big = i64::MAX as usize + 1;
    let err = write_npy_labels(&[1, big], &path).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_contains(&err.to_string(), &["write_npy_labels", "label 1", &big.to_string(), "int64"]);
    assert!(!path.exists());
}

#[test]
fn written_archives_read_back_and_names_must_be_unique() {
    let dir = Scratch::new("nn-npy", "npz");
    let x = Tensor::from_vec(pattern(12), &[4, 3]).unwrap();
    let tensors = vec![("x".to_string(), x.t().unwrap()), ("b".to_string(), Tensor::<f64>::zeros(&[0, 2]))];
    for compressed in [false, true] {
        let path = dir.path(if compressed { "c.npz" } else { "s.npz" });
        if compressed {
            write_npz_compressed(&tensors, &path).unwrap();
        } else {
            write_npz(&tensors, &path).unwrap();
        }
        let back = read_npz::<f64>(&path).unwrap();
        assert_eq!(back.len(), 2);
        for ((n, t), (m, u)) in tensors.iter().zip(&back) {
            assert_eq!((n, t.shape(), t.to_vec()), (m, u.shape(), u.to_vec()));
        }
    }
    let twice = vec![("x".to_string(), x.clone()), ("x".to_string(), x)];
    let path = dir.path("twice.npz");
    assert_contains(&format_error(write_npz(&twice, &path), &path), &["two arrays are named \"x\""]);
    assert!(!path.exists());

    let deep = Tensor::<f32>::zeros(&[1; 65]);
    let err = write_npy(&deep, dir.path("deep.npy")).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "write_npy", .. }), "{err:?}");
    assert!(err.to_string().contains("at most 64"), "{err}");
}

/// The bytes of member `name` of the archive at `path`, and whether it was deflated.
fn member_bytes(path: &std::path::Path, name: &str) -> (Vec<u8>, bool) {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut member = zip.by_name(name).unwrap();
    let deflated = member.compression() == zip::CompressionMethod::Deflated;
    let mut bytes = vec![];
    member.read_to_end(&mut bytes).unwrap();
    (bytes, deflated)
}

#[test]
fn mixed_archives_hold_numpys_own_members_and_read_back() {
    let dir = Scratch::new("nn-npy", "mixed");
    let x = Tensor::from_vec(pattern(6).iter().map(|&v| v as f32).collect(), &[2, 3]).unwrap();
    let w = Tensor::from_vec(pattern(24), &[2, 3, 4]).unwrap().permute(&[2, 1, 0]).unwrap().contiguous();
    let w = w.permute(&[2, 1, 0]).unwrap(); // column-major: written in Fortran order
    for compressed in [false, true] {
        let path = dir.path(if compressed { "c.npz" } else { "s.npz" });
        let mut writer = NpzWriter::new();
        writer
            .add("x", x.clone())
            .add("y", NpyArray::labels(&[3, 0, 9, 1, 1, 7]).unwrap())
            .add("mask", NpyArray::bool(vec![true, false, false, true], &[2, 2]).unwrap())
            .add("w", w.clone());
        if compressed {
            writer.compressed();
        }
        assert_eq!(writer.names(), ["x", "y", "mask", "w"]);
        writer.write(&path).unwrap();
        // For a check by hand that numpy reads the archive: `TAPEGRAD_NPY_EXPORT=DIR cargo test
        // ... npy::mixed`, then `np.load("DIR/mixed_stored.npz")` in Python.
        if let Some(dir) = std::env::var_os("TAPEGRAD_NPY_EXPORT") {
            let name = if compressed { "mixed_deflated.npz" } else { "mixed_stored.npz" };
            std::fs::copy(&path, PathBuf::from(dir).join(name)).unwrap();
        }
        // Every member is byte for byte the .npy file numpy wrote for the same array (np.save of
        // float32 pattern, int64 labels, a bool mask, a Fortran-order float64), as np.savez
        // stores it.
        for (member, numpys) in [
            ("x.npy", "f32_c_2x3.npy"),
            ("y.npy", "i64_labels.npy"),
            ("mask.npy", "bool_2x2.npy"),
            ("w.npy", "f64_f_2x3x4.npy"),
        ] {
            let (bytes, deflated) = member_bytes(&path, member);
            assert_eq!(bytes, std::fs::read(fixture(numpys)).unwrap(), "{member}");
            assert_eq!(deflated, compressed, "{member}");
        }
        let mut npz = Npz::open(&path).unwrap();
        assert_eq!(npz.names(), ["x", "y", "mask", "w"]);
        assert_eq!(npz.tensor::<f32>("x").unwrap().to_vec(), x.to_vec());
        assert_eq!(npz.labels("y").unwrap(), [3, 0, 9, 1, 1, 7]);
        let mask = npz.tensor::<f64>("mask").unwrap();
        assert_eq!((mask.shape(), mask.to_vec()), (&[2, 2][..], vec![1.0, 0.0, 0.0, 1.0]));
        assert_eq!(npz.tensor::<f64>("w").unwrap().to_vec(), pattern(24));
    }
}

#[test]
fn integer_arrays_keep_their_shape_and_sign() {
    let dir = Scratch::new("nn-npy", "int64");
    let path = dir.path("ids.npz");
    // Token ids with padding -1, and the largest integers f64 holds exactly.
    let ids = vec![5, 2, -1, 0, -(1 << 53), 1 << 53];
    let array = NpyArray::int64(ids.clone(), &[2, 3]).unwrap();
    assert_eq!((array.shape(), array.dtype()), (&[2, 3][..], "<i8"));
    NpzWriter::new().add("ids", array).write(&path).unwrap();
    let (bytes, _) = member_bytes(&path, "ids.npy");
    assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"));
    let header = String::from_utf8_lossy(&bytes[10..128]);
    assert!(header.contains("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }"), "{header}");
    assert_eq!(bytes.len(), 128 + 6 * 8);
    let mut npz = Npz::open(&path).unwrap();
    let back = npz.tensor::<f64>("ids").unwrap();
    assert_eq!((back.shape(), back.to_vec()), (&[2, 3][..], ids.iter().map(|&v| v as f64).collect::<Vec<_>>()));
    assert_contains(&format_error(npz.labels("ids"), &path), &["1-D", "[2, 3]"]);
    // ±2^53 are powers of two, exact in f32 as well; an odd integer past 2^24 is not.
    assert_eq!(npz.tensor::<f32>("ids").unwrap().to_vec()[2], -1.0);
    NpzWriter::new().add("odd", NpyArray::int64(vec![(1 << 24) + 1], &[1]).unwrap()).write(&path).unwrap();
    let err = Npz::open(&path).unwrap().tensor::<f32>("odd").unwrap_err();
    assert_contains(&err.to_string(), &["16777217", "f32"]);
}

#[test]
fn bad_arrays_are_errors_before_anything_is_written() {
    let dir = Scratch::new("nn-npy", "bad-arrays");
    let err = NpyArray::int64(vec![1, 2, 3], &[2, 2]).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "NpyArray::int64", .. }), "{err:?}");
    assert_contains(&err.to_string(), &["[2, 2]", "needs 4 values, given 3"]);
    let err = NpyArray::bool(vec![true], &[usize::MAX, 2]).unwrap_err();
    assert_contains(&err.to_string(), &["NpyArray::bool", "too many"]);
    let err = NpyArray::bool(vec![true], &[1; 65]).unwrap_err();
    assert_contains(&err.to_string(), &["NpyArray::bool", "at most 64"]);
    #[cfg(target_pointer_width = "64")]
    {
        let err = NpyArray::labels(&[0, i64::MAX as usize + 1]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { op: "NpyArray::labels", .. }), "{err:?}");
        assert_contains(&err.to_string(), &["label 1", "int64"]);
    }
    // Two arrays of one name: nothing is written.
    let path = dir.path("twice.npz");
    let mut writer = NpzWriter::new();
    writer.add("y", NpyArray::labels(&[1]).unwrap()).add("y", Tensor::<f32>::zeros(&[1]));
    assert_contains(&format_error(writer.write(&path), &path), &["two arrays are named \"y\""]);
    assert!(!path.exists());
    let path = dir.path("deep.npz");
    let err = NpzWriter::new().add("deep", Tensor::<f64>::zeros(&[1; 65])).write(&path).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { op: "NpzWriter::write", .. }), "{err:?}");
    assert!(!path.exists());
}

/// A tensor of `shape` holding distinct values, then permuted by `axes` and narrowed along its
/// first dim by `skip` (when it has one): a C, Fortran or strided layout.
fn strided<T: Float>(shape: &[usize], axes: &[usize], skip: usize) -> Tensor<T> {
    let n = shape.iter().product();
    let values: Vec<T> = pattern(n).into_iter().map(T::from_f64).collect();
    let x = Tensor::from_vec(values, shape).unwrap().permute(axes).unwrap();
    match x.shape().first() {
        Some(&d) if d > skip => x.narrow(0, skip, d - skip).unwrap(),
        _ => x,
    }
}

fn layout() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, usize)> {
    prop::collection::vec(0usize..4, 0..5).prop_flat_map(|shape| {
        let axes = Just((0..shape.len()).collect::<Vec<_>>()).prop_shuffle();
        (Just(shape), axes, 0usize..2)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trips_keep_shape_and_values((shape, axes, skip) in layout(), double in any::<bool>()) {
        let dir = Scratch::new("nn-npy", "proptest");
        let path = dir.path("x.npy");
        if double {
            let x = strided::<f64>(&shape, &axes, skip);
            write_npy(&x, &path).unwrap();
            let y: Tensor<f64> = read_npy(&path).unwrap();
            prop_assert_eq!((x.shape(), x.to_vec()), (y.shape(), y.to_vec()));
        } else {
            let x = strided::<f32>(&shape, &axes, skip);
            let archive = dir.path("x.npz");
            write_npz_compressed(&[("x".to_string(), x.clone())], &archive).unwrap();
            let y = read_npz::<f32>(&archive).unwrap().remove(0).1;
            prop_assert_eq!((x.shape(), x.to_vec()), (y.shape(), y.to_vec()));
            write_npy(&x, &path).unwrap();
            let y: Tensor<f64> = read_npy(&path).unwrap();
            prop_assert_eq!(y.to_vec(), x.to_vec().iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn integer_and_bool_members_round_trip(
        (shape, ids, mask) in prop::collection::vec(0usize..4, 0..4).prop_flat_map(|shape| {
            let n: usize = shape.iter().product();
            let ids = prop::collection::vec(-(1i64 << 53)..=(1i64 << 53), n);
            (Just(shape), ids, prop::collection::vec(any::<bool>(), n))
        }),
        compressed in any::<bool>(),
    ) {
        let dir = Scratch::new("nn-npy", "proptest-int");
        let path = dir.path("a.npz");
        let mut writer = NpzWriter::new();
        writer.add("ids", NpyArray::int64(ids.clone(), &shape).unwrap());
        writer.add("mask", NpyArray::bool(mask.clone(), &shape).unwrap());
        if compressed {
            writer.compressed();
        }
        writer.write(&path).unwrap();
        let mut npz = Npz::open(&path).unwrap();
        let back = npz.tensor::<f64>("ids").unwrap();
        prop_assert_eq!(back.shape(), &shape[..]);
        prop_assert_eq!(back.to_vec(), ids.iter().map(|&v| v as f64).collect::<Vec<_>>());
        let back = npz.tensor::<f32>("mask").unwrap();
        prop_assert_eq!(back.shape(), &shape[..]);
        prop_assert_eq!(back.to_vec(), mask.iter().map(|&b| f32::from(u8::from(b))).collect::<Vec<_>>());
    }
}

// ─── hostile files ─────────────────────────────────────────────────────────────

#[test]
fn hostile_headers_are_errors_that_say_what_is_wrong() {
    let dir = Scratch::new("nn-npy", "hostile");
    let check = |name: &str, bytes: &[u8], parts: &[&str]| {
        let path = dir.write(name, bytes);
        assert_contains(&format_error(read_npy::<f32>(&path), &path), parts);
        assert_contains(&format_error(read_npy_labels(&path), &path), parts);
    };
    // The shape's element count overflows: nothing is allocated for it.
    check("overflow.npy", &npy_bytes(&dict("<i8", "(4294967296, 4294967296)"), &[]), &["overflows"]);
    check(
        "huge.npy",
        &npy_bytes(&dict("<i8", "(1152921504606846975,)"), &[]),
        &["truncated", "declares 9223372036854775800 data bytes, 0 follow"],
    );
    check(
        "claims.npy",
        &npy_bytes(&dict("<i8", "(1000000000000,)"), &[0; 16]),
        &["truncated", "[1000000000000]", "declares 8000000000000 data bytes, 16 follow"],
    );
    check("short.npy", &npy_bytes(&dict("<u2", "(3,)"), &[0; 5]), &["truncated", "6 data bytes, 5 follow"]);
    check("long.npy", &npy_bytes(&dict("<u2", "(3,)"), &[0; 7]), &["bytes past the data", "6 data bytes, 7 follow"]);
    // The header's length runs past the file, or past numpy's limit.
    let mut past = npy_bytes(&dict("<u2", "(3,)"), &[0; 6]);
    past[8..10].copy_from_slice(&9000u16.to_le_bytes());
    check("past.npy", &past, &["header length 9000 runs past the end"]);
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    v2.extend_from_slice(&u32::MAX.to_le_bytes());
    check("v2.npy", &v2, &["header length 4294967295 is above the limit of 10000"]);
    check("magic.npy", b"PK\x03\x04 not npy", &["not an .npy file", "50 4b 03 04"]);
    check("version.npy", b"\x93NUMPY\x09\x00", &["unsupported .npy version 9.0"]);
    check("empty.npy", b"", &["truncated", "preamble"]);
    check("cut.npy", &npy_bytes(&dict("<u2", "(3,)"), &[])[..40], &["truncated", "runs past the end"]);
    check("keys.npy", &npy_bytes("{'descr': '<f4', 'shape': (1,), }", &[0; 4]), &["missing key \"fortran_order\""]);
    check(
        "text.npy",
        &npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\u{ff}", &[0; 4]),
        &["after the dict"],
    );
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = Scratch::new("nn-npy", "missing");
    for err in [read_npy::<f32>(dir.path("absent.npy")).unwrap_err(), Npz::open(dir.path("absent.npz")).unwrap_err()] {
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("absent.np"), "{err}");
    }
}

#[test]
fn an_archive_member_larger_than_the_limit_is_refused_before_inflating() {
    let dir = Scratch::new("nn-npy", "bomb");
    // 16 MiB of zeros deflate to about 16 KiB.
    let zeros = npy_bytes(&dict("<f8", "(2097152,)"), &vec![0; 16 << 20]);
    let path = dir.write("bomb.npz", &zip_bytes(&[("x.npy", zeros)], zip::CompressionMethod::Deflated));
    assert!(std::fs::metadata(&path).unwrap().len() < 100_000);
    let mut npz = Npz::open(&path).unwrap();
    assert_eq!(npz.max_bytes(), DEFAULT_MAX_NPZ_BYTES);
    npz.set_max_bytes(1 << 20);
    assert_contains(
        &format_error(npz.tensor::<f64>("x"), &path),
        &["array \"x\"", "declares 16777216 data bytes", "above the limit of 1048576 bytes"],
    );
    npz.set_max_bytes(16 << 20);
    assert_eq!(npz.tensor::<f64>("x").unwrap().shape(), &[2097152]);

    // A header that declares less than its member holds.
    let lying = npy_bytes(&dict("<f8", "(2,)"), &vec![0; 1 << 20]);
    let path = dir.write("lying.npz", &zip_bytes(&[("x.npy", lying)], zip::CompressionMethod::Deflated));
    assert_contains(&format_error(read_npz::<f32>(&path), &path), &["array \"x\"", "bytes past the data"]);
}

#[test]
fn corrupt_archives_are_format_errors() {
    let dir = Scratch::new("nn-npy", "corrupt");
    let path = dir.write("text.npz", b"not a zip archive at all");
    assert_contains(&format_error(read_npz::<f32>(&path), &path), &["not a valid .npz (zip) archive"]);

    // A flipped byte in the deflated data: bad deflate data or a CRC mismatch, never a panic.
    let good = zip_bytes(&[("x.npy", npy_bytes(&dict("<f4", "(64,)"), &[7; 256]))], zip::CompressionMethod::Deflated);
    let mut bad = good.clone();
    bad[40] ^= 0x55; // inside the deflated data, which starts at byte 35
    let path = dir.write("flipped.npz", &bad);
    assert_contains(&format_error(read_npz::<f32>(&path), &path), &["array \"x\""]);
    // Cut short inside the central directory.
    let path = dir.write("cut.npz", &good[..good.len() - 10]);
    format_error(read_npz::<f32>(&path), &path);
    // Two members with one name.
    let twice = zip_bytes(&[("x.npy", vec![]), ("x", vec![])], zip::CompressionMethod::Stored);
    let path = dir.write("twice.npz", &twice);
    assert_contains(&format_error(Npz::open(&path), &path), &["two members", "\"x\""]);
    // A member that is no .npy file.
    let path = dir.write("other.npz", &zip_bytes(&[("readme.txt", b"hello".to_vec())], zip::CompressionMethod::Stored));
    let mut npz = Npz::open(&path).unwrap();
    assert_eq!(npz.names(), ["readme.txt"]);
    assert_contains(&format_error(npz.tensor::<f32>("readme.txt"), &path), &["array \"readme.txt\"", "truncated"]);
}
