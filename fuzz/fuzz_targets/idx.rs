//! IDX reading on arbitrary bytes, plain and gzipped, with a decompressed-size limit of 64 KiB:
//! `Ok` or `Err`, never a panic, and never more data than the limit.
//!
//! The first input byte picks the mode; the rest is the content:
//! - even: the content is the file as is (a fuzzer-made gzip stream included, as the reader
//!   detects gzip from its magic);
//! - odd: the content is an IDX file that this target gzips, so the fuzzer explores IDX headers
//!   behind real compression. The plain file of the same content is read too, and both must
//!   agree: the same `Idx`, or both `Err` (unless the content itself starts with the gzip magic,
//!   which the plain reader then inflates).
//!
//! A successful read must be consistent: `data.len()` is the product of `dims` and at most the
//! limit. Each input is written to one file per process (in `/dev/shm` when it exists).
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tapegrad_nn::data::{read_idx_with_limit, Idx};
use tapegrad_nn::Error;

const LIMIT: u64 = 1 << 16;

fn scratch(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        }
    });
    dir.join(format!("tapegrad-fuzz-idx-{}-{name}", std::process::id()))
}

fn read(name: &str, bytes: &[u8]) -> Result<Idx, Error> {
    let path = scratch(name);
    std::fs::write(&path, bytes).expect("the scratch file can be written");
    let result = read_idx_with_limit(&path, LIMIT);
    match &result {
        Ok(idx) => {
            let numel = idx.dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            assert_eq!(numel, Some(idx.data.len()), "dims {:?} and data length agree", idx.dims);
            assert!(idx.data.len() as u64 <= LIMIT, "{} bytes above the limit", idx.data.len());
        }
        Err(e) => assert!(matches!(e, Error::Format { .. }), "unexpected error kind: {e:?}"),
    }
    result
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, content)) = data.split_first() else { return };
    if mode % 2 == 0 {
        read("plain", content).ok();
        return;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(content).expect("gzip into memory");
    let gz = gz.finish().expect("gzip into memory");
    let zipped = read("gz", &gz);
    let plain = read("plain", content);
    if !content.starts_with(&[0x1f, 0x8b]) {
        match (&zipped, &plain) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "gzipped and plain reads of the same content differ"),
            (Err(_), Err(_)) => {}
            _ => panic!("gzipped and plain reads disagree: {zipped:?} vs {plain:?}"),
        }
    }
});
