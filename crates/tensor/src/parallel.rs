//! Who runs a parallel loop's pieces: rayon's pool, or the calling thread.
//!
//! Every parallel loop in this crate cuts its work into pieces fixed by the shape (never by the
//! thread count), so its results are the same bits whoever runs the pieces; this module decides
//! only that. Called from a thread outside the pool, as a user's plain training loop is, a
//! parallel loop hands its work to the pool and sleeps until a worker has finished it: two
//! context switches per op, which cost more than a small op itself. So a loop runs on the calling
//! thread when the pool has one thread (it could only wait for that thread), and when the caller
//! is outside the pool and the loop is too small to repay the hand-off. Inside the pool (a
//! worker issues the op) the calling thread works on the first piece at once while another
//! worker takes the rest, so any loop of two or more pieces is worth splitting.
//!
//! Public for crates that run their own loops over tensors' data (the optimisers of
//! `tapegrad-nn`), so that they follow the same rule.

/// Elements a loop must touch before a caller outside the pool hands it over. Splitting saves
/// about half the loop's time at two threads, the hand-off costs tens of microseconds: below
/// this (two of the elementwise ops' chunks, some 50-150 µs of work on one core) the calling
/// thread finishes about as soon on its own. (2^17 kept the transformer's `[64, 28, 64]`
/// activations, 114,688 elements, on one thread at two; 2^16 splits them, and measured no
/// slower on the Zen 1 of docs/benchmarks.md.)
pub const OUTSIDE_POOL_MIN: usize = 1 << 16;

/// Whether a parallel loop touching `work` elements in all should be split across the pool.
pub fn split(work: usize) -> bool {
    rayon::current_num_threads() > 1 && (rayon::current_thread_index().is_some() || work >= OUTSIDE_POOL_MIN)
}

/// The `with_min_len` of a parallel loop touching `work` elements: 1 (split freely) when it
/// should be split, else `usize::MAX`, which makes rayon run every piece in order on the calling
/// thread without touching the pool.
pub fn min_len(work: usize) -> usize {
    if split(work) {
        1
    } else {
        usize::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_never_splits_and_the_pool_splits_what_outsiders_keep() {
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        one.install(|| {
            assert!(!split(usize::MAX));
            assert_eq!(min_len(usize::MAX), usize::MAX);
        });
        let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        // Inside the pool: any loop of two pieces is split.
        two.install(|| assert!(split(2) && min_len(2) == 1));
        // Outside it (this test's own thread), a small loop stays; a large one goes when the
        // global pool has two threads or more.
        assert!(!split(OUTSIDE_POOL_MIN - 1));
        assert_eq!(split(OUTSIDE_POOL_MIN), rayon::current_num_threads() > 1);
    }

    #[test]
    fn a_loop_that_is_not_split_runs_on_the_calling_thread() {
        use rayon::prelude::*;
        let caller = std::thread::current().id();
        let mut data = [0u8; 64];
        data.par_chunks_mut(8).with_min_len(usize::MAX).for_each(|c| {
            assert_eq!(std::thread::current().id(), caller);
            c.fill(1);
        });
        assert!(data.iter().all(|&b| b == 1));
    }
}
