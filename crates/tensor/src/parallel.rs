//! Who runs a parallel loop's pieces: the calling thread, and helper threads.
//!
//! Every parallel loop in this crate cuts its work into pieces fixed by the shape (never by the
//! thread count), so its results are the same bits whoever runs the pieces; this module decides
//! only that, in one function, [`for_each`] (and [`for_each_init`], which gives each thread that
//! takes part a scratch state of its own).
//!
//! The calling thread always works. A loop's pieces are cut into one contiguous share per
//! thread: the caller runs its share (the first), each helper the next share as it arrives, and a
//! thread done with its own share takes what is left of the others from their ends. Two things
//! follow:
//! - no hand-off: a sleeping worker takes tens of microseconds to wake on a virtual machine; by
//!   then the caller has done a small loop alone, and a helper that arrives late finds its share
//!   taken and nothing to wait for (the caller waits at the end only for pieces a helper has
//!   already begun);
//! - locality: the same thread runs the same part of consecutive loops over a tensor, so that
//!   part is still in its core's cache (a shared queue handing out pieces in turn mixed the
//!   parts up: the CNN of `docs/benchmarks.md` was 12% slower at two threads that way).
//!
//! Outside every pool (a user's plain training loop) the helpers are `threads - 1` threads of
//! this crate's own, next to the caller, for a pool of `threads` (`kernels::fork`); inside a pool
//! they are its other workers. Handed to the pool the usual way (rayon's parallel iterators), a
//! plain loop's every op would put the caller to sleep until a worker has finished: two context
//! switches per op, which cost more than many ops themselves.
//!
//! Loops too small to repay waking a worker (fewer than [`SPLIT_MIN`] elements touched) run on
//! the calling thread alone, as does everything when the pool has one thread.
//!
//! Public for crates that run their own loops over tensors' data (the optimisers of
//! `tapegrad-nn`), so that they follow the same rule.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// Elements a loop must touch before helpers are woken for it: below this (under about 10 µs of
/// work on one core for the elementwise ops) the helpers' jobs cost more than they could take.
pub const SPLIT_MIN: usize = 1 << 16;

thread_local! {
    /// Set while this thread runs a piece of a parallel loop: a loop inside it runs on this
    /// thread alone.
    static IN_PIECE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a loop touching `work` elements in all is offered to the pool's other threads.
pub fn split(work: usize) -> bool {
    work >= SPLIT_MIN && rayon::current_num_threads() > 1
}

/// Runs `f` on every piece of `pieces`, on the calling thread and, when [`split`] says so for
/// `work` elements, on up to `threads - 1` of the pool's threads as well (see the module).
/// Pieces are taken in order, each by one thread; which thread runs which piece is left to
/// chance, so `f` must give the same result wherever it runs (it does in this crate: each piece
/// writes only its own output).
pub fn for_each<I, F>(pieces: I, work: usize, f: F)
where
    I: Iterator + Send,
    I::Item: Send,
    F: Fn(I::Item) + Sync,
{
    for_each_init(pieces, work, || (), |(), piece| f(piece));
}

/// [`for_each`] where each thread that takes a piece first makes a scratch state with `init`
/// (once per thread and loop, and only if it gets a piece), passed to `f` with every piece that
/// thread runs.
pub fn for_each_init<I, S, F>(pieces: I, work: usize, init: impl Fn() -> S + Sync, f: F)
where
    I: Iterator + Send,
    I::Item: Send,
    F: Fn(&mut S, I::Item) + Sync,
{
    // A loop inside a piece, or too small to split, runs here alone.
    if IN_PIECE.get() || !split(work) {
        let mut state = init();
        pieces.for_each(|piece| f(&mut state, piece));
        return;
    }
    let f = |state: &mut S, piece| {
        IN_PIECE.set(true);
        f(state, piece);
        IN_PIECE.set(false);
    };
    let helpers = rayon::current_num_threads() - 1;
    let shares = Shares::new(pieces, helpers + 1);
    // The caller claims its first piece before any helper can see the loop, so it always works
    // (a helper already awake from the last loop could otherwise take every piece while the
    // caller is descheduled) and there is a piece to run at once.
    let caller_first = shares.take(0);
    let drain = |me: usize, first: Option<I::Item>| {
        let Some(first) = first.or_else(|| shares.take(me)) else { return };
        let mut state = init();
        f(&mut state, first);
        while let Some(piece) = shares.take(me) {
            f(&mut state, piece);
        }
    };
    if rayon::current_thread_index().is_some() {
        // A worker of a pool: the pool's other workers help. The calling worker runs its share
        // and then whatever is left; a helper job it finds still queued at the end of the scope
        // it runs itself, finding nothing to do, instead of waiting for a sleeping worker.
        rayon::scope(|scope| {
            for _ in 0..helpers {
                scope.spawn(|_| drain(shares.join(), None));
            }
            drain(0, caller_first);
        });
    } else {
        let caller = std::thread::current().id();
        let caller_first = Mutex::new(caller_first);
        crate::kernels::fork::run(helpers, &|| {
            if std::thread::current().id() == caller {
                let first = caller_first.lock().unwrap_or_else(PoisonError::into_inner).take();
                drain(0, first);
            } else {
                drain(shares.join(), None);
            }
        });
    }
}

/// A loop's pieces cut into one contiguous share per thread that may take part: the caller
/// takes its share (the first) from the front, each helper the next share as it joins, and a
/// thread whose share is done takes what is left of the others from their backs. So the same
/// thread runs the same part of consecutive loops over a tensor (the part stays in its core's
/// caches), and a helper that is late to wake loses its share to the threads already working.
struct Shares<T> {
    pieces: Vec<Mutex<Option<T>>>,
    /// Per share: the next piece to take from the front (low 32 bits) and one past the last
    /// piece left (high 32 bits).
    bounds: Vec<AtomicU64>,
    /// Shares handed out so far (the caller's, share 0, is not handed out).
    joined: AtomicUsize,
}

impl<T> Shares<T> {
    fn new(pieces: impl Iterator<Item = T>, shares: usize) -> Shares<T> {
        let pieces: Vec<Mutex<Option<T>>> = pieces.map(|p| Mutex::new(Some(p))).collect();
        let n = pieces.len() as u64;
        let shares = shares as u64;
        // More pieces than `u32::MAX` would not fit the packed bounds: one share takes them all
        // and the others steal (never the case for this crate's loops, whose pieces are chunks
        // of at least a few thousand elements).
        let shares = if n > u64::from(u32::MAX) { 1 } else { shares };
        let bounds = (0..shares)
            .map(|j| {
                let (front, back) = (j * n / shares, (j + 1) * n / shares);
                AtomicU64::new(front | back << 32)
            })
            .collect();
        Shares { pieces, bounds, joined: AtomicUsize::new(1) }
    }

    /// The share of a helper joining now.
    fn join(&self) -> usize {
        self.joined.fetch_add(1, Ordering::Relaxed)
    }

    /// The next piece for the thread of share `me`: from the front of its own share, else from
    /// the back of another's; `None` when every piece is taken.
    fn take(&self, me: usize) -> Option<T> {
        let shares = self.bounds.len();
        let index = (0..shares).find_map(|k| {
            let j = (me + k) % shares;
            let own = k == 0 && me < shares;
            self.claim(&self.bounds[j], own)
        })?;
        let mut slot = self.pieces[index].lock().unwrap_or_else(PoisonError::into_inner);
        slot.take()
    }

    /// Claims a piece of one share: its front (`front == true`) or its back.
    fn claim(&self, bounds: &AtomicU64, front: bool) -> Option<usize> {
        let mut packed = bounds.load(Ordering::Relaxed);
        loop {
            let (lo, hi) = (packed & u64::from(u32::MAX), packed >> 32);
            if lo >= hi {
                return None;
            }
            let (next, index) = if front { (packed + 1, lo) } else { (packed - (1 << 32), hi - 1) };
            match bounds.compare_exchange_weak(packed, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(index as usize),
                Err(now) => packed = now,
            }
        }
    }
}

/// `f(i)` for `i` in `0..n`, in order, computed as [`for_each`] runs pieces.
pub(crate) fn map<U: Send>(n: usize, work: usize, f: impl Fn(usize) -> U + Sync) -> Vec<U> {
    let mut out: Vec<Option<U>> = (0..n).map(|_| None).collect();
    for_each(out.iter_mut().enumerate(), work, |(i, slot)| *slot = Some(f(i)));
    out.into_iter().map(|v| v.expect("every index was computed")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn one_thread_never_splits_and_small_loops_stay_on_the_caller() {
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        one.install(|| assert!(!split(usize::MAX)));
        let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        two.install(|| assert!(!split(SPLIT_MIN - 1) && split(SPLIT_MIN)));
        let caller = std::thread::current().id();
        two.install(|| {
            let caller = std::thread::current().id();
            for_each(0..64, SPLIT_MIN - 1, |_| assert_eq!(std::thread::current().id(), caller));
        });
        for_each(0..64, 0, |_| assert_eq!(std::thread::current().id(), caller));
    }

    #[test]
    fn every_piece_runs_once_from_inside_and_outside_the_pool() {
        let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let check = |max_inits: usize| {
            let mut data = vec![0u32; 1 << 12];
            let inits = AtomicUsize::new(0);
            for_each_init(
                data.chunks_mut(16).enumerate(),
                usize::MAX,
                || inits.fetch_add(1, Ordering::Relaxed),
                |_, (i, chunk)| chunk.iter_mut().for_each(|v| *v += i as u32 + 1),
            );
            assert!(data.chunks(16).enumerate().all(|(i, c)| c.iter().all(|&v| v == i as u32 + 1)));
            // Outside the pool, one state per thread that took part: the caller, and at most
            // one helper (rayon's own `for_each_init`, inside a pool, may make more).
            assert!((1..=max_inits).contains(&inits.load(Ordering::Relaxed)));
            assert_eq!(map(100, usize::MAX, |i| i * i), (0..100).map(|i| i * i).collect::<Vec<_>>());
        };
        two.install(|| check(usize::MAX));
        // From this test's own thread, outside every pool (the global one is the current pool).
        check(rayon::current_num_threads());
    }

    #[test]
    fn shares_are_taken_front_first_then_stolen_from_the_back_each_piece_once() {
        // Three shares of 10 pieces: [0, 3), [3, 6), [6, 10). Share 0 alone: its own front
        // first, then the others' backs, every piece once.
        let shares = Shares::new(0..10, 3);
        let order: Vec<usize> = std::iter::from_fn(|| shares.take(0)).collect();
        assert_eq!(order, [0, 1, 2, 5, 4, 3, 9, 8, 7, 6]);
        // Several threads at once, one per share and an extra one: still every piece once.
        let shares = Shares::new(0..10_000usize, 3);
        let seen: Vec<AtomicUsize> = (0..10_000).map(|_| AtomicUsize::new(0)).collect();
        std::thread::scope(|scope| {
            for me in [0, shares.join(), shares.join(), shares.join()] {
                let (shares, seen) = (&shares, &seen);
                scope.spawn(move || {
                    let mut last = None;
                    while let Some(i) = shares.take(me) {
                        seen[i].fetch_add(1, Ordering::Relaxed);
                        // The own share's pieces come in order.
                        if me == 0 && i < 3333 {
                            assert!(last.is_none_or(|l| l < i));
                            last = Some(i);
                        }
                    }
                });
            }
        });
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn the_calling_thread_takes_part_outside_the_pool() {
        let caller = std::thread::current().id();
        let ran_here = AtomicUsize::new(0);
        for_each(0..1000, usize::MAX, |_| {
            if std::thread::current().id() == caller {
                ran_here.fetch_add(1, Ordering::Relaxed);
            }
        });
        // At least the first piece, claimed before any helper sees the loop: also when a helper
        // is still awake from the loop before (the second call) and the caller is slow to run.
        assert!(ran_here.load(Ordering::Relaxed) > 0);
        let first_here = AtomicUsize::new(0);
        for_each(0..1000, usize::MAX, |i| {
            if i == 0 && std::thread::current().id() == caller {
                first_here.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert_eq!(first_here.load(Ordering::Relaxed), 1);
    }
}
