//! The data caches this CPU reports, and the GEMM blocking derived from them.
//!
//! The sizes come from the kernel's description of CPU 0 (`/sys/devices/system/cpu/cpu0/cache`,
//! on Linux for x86_64 and aarch64 alike: the same numbers as CPUID leaf 4 / `0x8000001D`); a
//! level it does not describe keeps a conservative default.
//!
//! What is derived, per microkernel (its `mr x nr` tile and `kc` stay those of its instruction
//! set, chosen by measurement; `kc` also fixes how each element's sum over `K` is grouped, so
//! results stay the same on every CPU of one instruction set):
//! - `mc`: a packed `mc x kc` block of `A` takes a quarter of the L2 (the rest holds the streamed
//!   micro-panels of `B` and the tiles of `C`), rounded down to whole `mr`-row micro-panels;
//! - `nc`: a packed `kc x nc` panel of `B` takes this core's share of the L3 (its size over the
//!   CPUs that share it, times the hardware threads of a core), rounded down to whole
//!   `nr`-column micro-panels and capped by the thread's kept packing buffer.
//!
//! On the CPU the AVX-512 kernel was tuned on (Zen 5: 1 MiB L2, 32 MiB L3 over 8 cores) these
//! give the tuned f32 values back (`mc` 56, `nc` 1024 at `kc = 1024`); AVX2 at `kc = 256` on a
//! 512 KiB L2 gets `mc` 126, against the 144 first chosen by hand. `docs/benchmarks.md` records
//! what each CPU measured.

use std::path::Path;
use std::sync::OnceLock;

/// The data cache sizes, in bytes, that the blocking reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    /// The level-1 data cache of one core.
    pub l1d: usize,
    /// The level-2 cache of one core.
    pub l2: usize,
    /// This core's share of the level-3 cache: its size over the CPUs sharing it, times the
    /// hardware threads of one core.
    pub l3_per_core: usize,
}

impl CacheSizes {
    /// What is assumed of a level the system does not describe: 32 KiB, 512 KiB, 2 MiB a core.
    pub const DEFAULT: CacheSizes = CacheSizes { l1d: 32 << 10, l2: 512 << 10, l3_per_core: 2 << 20 };

    /// This machine's caches, read once.
    pub fn get() -> CacheSizes {
        static CACHES: OnceLock<CacheSizes> = OnceLock::new();
        *CACHES.get_or_init(|| CacheSizes::from_sysfs(Path::new("/sys/devices/system/cpu/cpu0/cache")))
    }

    /// The caches `dir` (a `cpu0/cache` directory of sysfs: `index*/{level,type,size,
    /// shared_cpu_list}`, beside `../topology/thread_siblings_list`) describes, each missing or
    /// unreadable level taken from [`DEFAULT`](CacheSizes::DEFAULT).
    pub fn from_sysfs(dir: &Path) -> CacheSizes {
        let mut caches = CacheSizes::DEFAULT;
        let siblings = dir
            .parent()
            .and_then(|cpu| std::fs::read_to_string(cpu.join("topology/thread_siblings_list")).ok())
            .map_or(1, |list| count_cpus(&list))
            .max(1);
        let Ok(entries) = std::fs::read_dir(dir) else { return caches };
        for entry in entries.flatten() {
            let path = entry.path();
            let read = |name: &str| std::fs::read_to_string(path.join(name)).map(|s| s.trim().to_string()).ok();
            let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else { continue };
            let Some(bytes) = parse_size(&size) else { continue };
            match (level.as_str(), kind.as_str()) {
                ("1", "Data" | "Unified") => caches.l1d = bytes,
                ("2", "Data" | "Unified") => caches.l2 = bytes,
                ("3", "Data" | "Unified") => {
                    let sharing = read("shared_cpu_list").map_or(1, |list| count_cpus(&list)).max(1);
                    caches.l3_per_core = bytes / sharing * siblings.min(sharing);
                }
                _ => {}
            }
        }
        caches
    }
}

/// `"32K"`, `"1024K"`, `"8M"` or a plain byte count, in bytes.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale).filter(|&b| b > 0)
}

/// The number of CPUs in a list such as `"0-3,8-11"` or `"0"` (0 when it cannot be read).
fn count_cpus(list: &str) -> usize {
    list.trim()
        .split(',')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => usize::from(part.trim().parse::<usize>().is_ok()),
        })
        .sum()
}

/// `mc` and `nc` for a kernel of tile `mr x nr` and depth `kc` over elements of `size` bytes,
/// from `caches` (see the module's rules), with a `kc x nc` panel of `B` at most `max_panel`
/// elements.
pub(super) fn derive_mc_nc(
    caches: &CacheSizes,
    (mr, nr, kc): (usize, usize, usize),
    size: usize,
    max_panel: usize,
) -> (usize, usize) {
    let row = kc * size;
    // At least one micro-panel, at most 4096 rows or columns whatever the cache claims.
    let mc = (caches.l2 / 4 / row / mr * mr).clamp(mr, 4096 / mr * mr);
    let nc = (caches.l3_per_core / row).min(max_panel / kc) / nr * nr;
    (mc, nc.clamp(nr, 8192 / nr * nr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpu_lists_parse() {
        assert_eq!(parse_size("32K"), Some(32 << 10));
        assert_eq!(parse_size("8192K"), Some(8 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("0K"), None);
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(count_cpus("0"), 1);
        assert_eq!(count_cpus("0-1\n"), 2);
        assert_eq!(count_cpus("0-7,64-71"), 16);
        assert_eq!(count_cpus("3,5"), 2);
        assert_eq!(count_cpus("x"), 0);
    }

    fn write_level(dir: &Path, index: usize, level: &str, kind: &str, size: &str, shared: &str) {
        let d = dir.join(format!("index{index}"));
        std::fs::create_dir_all(&d).unwrap();
        for (name, text) in [("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)] {
            std::fs::write(d.join(name), format!("{text}\n")).unwrap();
        }
    }

    #[test]
    fn a_sysfs_tree_is_read_and_missing_levels_default() {
        let dir = std::env::temp_dir().join(format!("tapegrad-caches-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A Zen 5 core with SMT: 48 KiB L1d, 1 MiB L2, 32 MiB L3 over 16 CPUs (8 cores).
        let cache = dir.join("cpu0/cache");
        write_level(&cache, 0, "1", "Data", "48K", "0,16");
        write_level(&cache, 1, "1", "Instruction", "32K", "0,16");
        write_level(&cache, 2, "2", "Unified", "1024K", "0,16");
        write_level(&cache, 3, "3", "Unified", "32768K", "0-7,16-23");
        std::fs::create_dir_all(dir.join("cpu0/topology")).unwrap();
        std::fs::write(dir.join("cpu0/topology/thread_siblings_list"), "0,16\n").unwrap();
        let zen5 = CacheSizes::from_sysfs(&cache);
        assert_eq!(zen5, CacheSizes { l1d: 48 << 10, l2: 1 << 20, l3_per_core: 4 << 20 });
        // Without SMT siblings, the share is per CPU.
        std::fs::write(dir.join("cpu0/topology/thread_siblings_list"), "0\n").unwrap();
        assert_eq!(CacheSizes::from_sysfs(&cache).l3_per_core, 2 << 20);
        let dir_root = dir.clone();
        let dir = cache;
        std::fs::remove_dir_all(dir.join("index3")).unwrap();
        std::fs::write(dir.join("index2/size"), "garbage\n").unwrap();
        let partial = CacheSizes::from_sysfs(&dir);
        assert_eq!(partial, CacheSizes { l1d: 48 << 10, ..CacheSizes::DEFAULT });
        std::fs::remove_dir_all(&dir_root).unwrap();
        assert_eq!(CacheSizes::from_sysfs(&dir), CacheSizes::DEFAULT);
    }

    #[test]
    fn the_tuned_blockings_come_back_from_their_caches() {
        let zen5 = CacheSizes { l1d: 48 << 10, l2: 1 << 20, l3_per_core: 4 << 20 };
        // AVX-512: 14 x 32 f32 and 14 x 16 f64 tiles at kc 1024, tuned on Zen 5 (f64's `nc` was
        // 1024 by hand: a panel twice the core's L3 share).
        assert_eq!(derive_mc_nc(&zen5, (14, 32, 1024), 4, 1 << 20), (56, 1024));
        assert_eq!(derive_mc_nc(&zen5, (14, 16, 1024), 8, 1 << 20), (28, 512));
        // AVX2 6 x 16 at kc 256 on this project's Zen 1 (512 KiB L2, 8 MiB L3 over 2 CPUs).
        let zen1 = CacheSizes { l1d: 32 << 10, l2: 512 << 10, l3_per_core: 4 << 20 };
        assert_eq!(derive_mc_nc(&zen1, (6, 16, 256), 4, 1 << 20), (126, 4096));
        // Absurd caches stay within bounds.
        let tiny = CacheSizes { l1d: 1, l2: 1, l3_per_core: 1 };
        assert_eq!(derive_mc_nc(&tiny, (6, 16, 256), 4, 1 << 20), (6, 16));
        let huge = CacheSizes { l1d: 1 << 40, l2: 1 << 40, l3_per_core: 1 << 40 };
        assert_eq!(derive_mc_nc(&huge, (6, 16, 256), 4, 1 << 20), (4092, 4096));
    }
}
