//! Writing a checkpoint atomically and durably.
//!
//! The bytes go to a fresh temporary file in the target's directory, named
//! `.<file name>.tmp-<process id>-<counter>`, which is synced to disk and then renamed over the
//! target; the directory is synced after the rename (on Unix), so the new name survives a power
//! loss too. A reader of the target sees the old file or the new one, never a mix. On any error
//! the temporary file is removed.
//!
//! A process that dies mid-save leaves its temporary file behind. The next save of the same
//! target removes such files: those whose name has that exact pattern, whose process id is not
//! this process's and whose last change is more than a minute old, when that process is no longer
//! running (on Linux, no `/proc/<pid>`) or, where that cannot be checked, when the file has not
//! changed for a day. Anything else in the directory is left alone.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tapegrad_tensor::{Error, Result};

/// A temporary file changed more recently than this is never taken for a stale one: it may
/// belong to a save still running in a process this one cannot see.
const MIN_STALE_AGE: Duration = Duration::from_secs(60);

/// Where running processes cannot be listed, a temporary file is stale after this long.
const STALE_AGE_UNCHECKED: Duration = Duration::from_secs(24 * 60 * 60);

/// How many temporary names to try before giving up (each taken one is a leftover of another
/// process that had the same id).
const ATTEMPTS: u32 = 64;

/// Writes `bytes` to `path` atomically and durably (see the module docs).
///
/// # Errors
/// [`Error::Format`] when `path` does not name a file; [`Error::Io`] naming `path` when the
/// temporary file cannot be created, written or synced or the rename fails, or naming the
/// directory when it cannot be synced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Some(name) = path.file_name() else {
        return Err(Error::format(path, "the path must name a file"));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prefix = temp_prefix(name);
    if let Some(prefix) = prefix.to_str() {
        remove_stale(&dir, prefix);
    }

    let pid = std::process::id();
    let mut attempt = 0;
    let (tmp, mut file) = loop {
        let mut tmp_name = prefix.clone();
        tmp_name.push(format!("{pid}-{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt + 1 < ATTEMPTS => attempt += 1,
            Err(e) => return Err(Error::io(path, e)),
        }
    };
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_dir(&dir)
}

/// The start of the temporary names for a target named `name`: `.<name>.tmp-`.
fn temp_prefix(name: &OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    prefix
}

/// Makes the rename durable: fsyncs the directory (on Unix; elsewhere a directory cannot be
/// opened as a file, and the rename is left to the file system).
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        // Some file systems cannot sync a directory: nothing more can be done there.
        Err(e) if e.kind() != std::io::ErrorKind::InvalidInput && e.kind() != std::io::ErrorKind::Unsupported => {
            Err(Error::io(dir, e))
        }
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> Result<()> {
    Ok(())
}

/// Removes the temporary files that crashed saves of the same target left in `dir` (see the
/// module docs); best effort, since a leftover is only untidy.
fn remove_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| temp_pid(n, prefix)) else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok());
        if meta.is_file() && pid != std::process::id() && age.is_some_and(|age| is_stale(pid, age)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The process id in `name` when it is `<prefix><pid>-<counter>`.
fn temp_pid(name: &str, prefix: &str) -> Option<u32> {
    let (pid, counter) = name.strip_prefix(prefix)?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(counter) || !digits(pid) {
        return None;
    }
    pid.parse().ok()
}

/// Whether a temporary file of process `pid`, last changed `age` ago, is a leftover.
fn is_stale(pid: u32, age: Duration) -> bool {
    if age < MIN_STALE_AGE {
        return false;
    }
    let proc = Path::new("/proc");
    if proc.join("self").exists() {
        !proc.join(pid.to_string()).exists()
    } else {
        age >= STALE_AGE_UNCHECKED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised_exactly() {
        let prefix = temp_prefix(OsStr::new("m.safetensors"));
        let prefix = prefix.to_str().unwrap();
        assert_eq!(temp_pid(".m.safetensors.tmp-123-4", prefix), Some(123));
        for other in [
            "m.safetensors",
            ".m.safetensors.tmp-",
            ".m.safetensors.tmp-123",
            ".m.safetensors.tmp-123-",
            ".m.safetensors.tmp-12a-4",
            ".m.safetensors.tmp-123-4x",
            ".n.safetensors.tmp-123-4",
            ".m.safetensors.tmp-99999999999-4",
        ] {
            assert_eq!(temp_pid(other, prefix), None, "{other}");
        }
    }

    #[test]
    fn only_old_files_of_processes_that_are_gone_are_stale() {
        let old = Duration::from_secs(3600);
        assert!(!is_stale(u32::MAX - 1, Duration::from_secs(1)), "too recent");
        if Path::new("/proc/self").exists() {
            assert!(is_stale(u32::MAX - 1, old), "no such process");
            assert!(!is_stale(1, old), "init is running");
        } else {
            assert!(!is_stale(u32::MAX - 1, old));
            assert!(is_stale(u32::MAX - 1, STALE_AGE_UNCHECKED));
        }
    }
}
