//! Lending a borrowed job to the pool's threads without waiting for the ones that never start.
//!
//! [`run`] is what `crate::parallel` builds its loops on for a caller outside every rayon pool:
//! the calling thread runs a job (which takes pieces of a loop until none is left) while helper
//! threads may run the same job too. The helpers are a pool of this crate's own with
//! `threads - 1` threads, so that with the caller they make the `threads` busy threads the user
//! asked for (rayon's global pool of `threads` workers plus the caller would be one too many).
//! Rayon's own scopes wait for every job they spawned, including one still queued behind a
//! sleeping worker: from a thread outside the pool that wait is a worker's wake-up (tens of
//! microseconds on a virtual machine), paid on every op even when the caller has done all the
//! work itself. Here the caller closes its job when it is done and waits only for helpers that
//! had already joined it.
//!
//! Helpers are `'static` jobs that, when a helper thread starts one, join whichever job is open
//! at that moment (not necessarily the one whose call spawned them), so a helper that starts
//! late serves the next op instead of waking in vain; a call spawns only as many helpers as are
//! not already queued. The open jobs are pointers to the callers' borrowed closures, so this is
//! the one place where the scheduler needs `unsafe`: a pointer is dereferenced only by a helper
//! that registered itself as running while the job was open, and the caller (also when it
//! unwinds) closes the job and waits for every registered helper before the borrow ends.
//! The reference behaviour is the plain call `job()` on the calling thread, which is what `run`
//! does when `helpers == 0`; the tests check that every piece of a loop runs exactly once
//! either way.

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// A job as the helpers see it: the caller's `&(dyn Fn() + Sync)` with its lifetime erased.
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn() + Sync + 'static));

// SAFETY: the pointee is `Sync` (shared calls from any thread are fine), and the pointer is only
// dereferenced while the caller keeps the job alive (see `run`).
unsafe impl Send for JobPtr {}

/// One caller's job and the helpers inside it.
struct Shared {
    state: Mutex<State>,
    /// Signalled when the last running helper finishes.
    idle: Condvar,
}

struct State {
    /// The job while it is open; `None` once the caller has closed it.
    job: Option<JobPtr>,
    /// Helpers inside the job right now.
    running: usize,
    /// The first panic of a helper, resumed on the caller.
    panic: Option<Box<dyn Any + Send>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing runs under these locks that can panic, so they are never poisoned in practice.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The jobs open now, oldest first: where a starting helper looks for work.
static OPEN: Mutex<Vec<Arc<Shared>>> = Mutex::new(Vec::new());

/// Helpers spawned on the pool and not started yet.
static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// Closes the job and waits for the running helpers: on the normal path and on unwinding alike,
/// so the borrowed job outlives every use of it.
struct CloseOnDrop<'a>(&'a Arc<Shared>);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        lock(&OPEN).retain(|open| !Arc::ptr_eq(open, self.0));
        let mut state = lock(&self.0.state);
        state.job = None;
        // A helper still running has usually one piece left: yield a while before sleeping,
        // since a sleep costs a wake-up of tens of microseconds (and a yield lets a helper
        // queued on this CPU run).
        let mut rounds = 0u32;
        while state.running > 0 && rounds < YIELDS {
            drop(state);
            std::thread::yield_now();
            rounds += 1;
            state = lock(&self.0.state);
        }
        while state.running > 0 {
            state = self.0.idle.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Yields the caller makes while running helpers finish, before it sleeps.
const YIELDS: u32 = 200;

/// A helper, as a worker runs it: joins the oldest open job and runs it, and goes on doing so
/// for every job opened within [`LINGER`] of its last one, yielding its CPU while it waits.
/// Ops come back to back in a training step, so a helper that stays a moment is there at the
/// start of the next op instead of waking into its middle.
fn help() {
    QUEUED.fetch_sub(1, Ordering::AcqRel);
    LINGERING.fetch_add(1, Ordering::AcqRel);
    let mut last = std::time::Instant::now();
    loop {
        if let Some((shared, ptr)) = join_open() {
            LINGERING.fetch_sub(1, Ordering::AcqRel);
            run_joined(&shared, ptr);
            LINGERING.fetch_add(1, Ordering::AcqRel);
            last = std::time::Instant::now();
        } else if last.elapsed() > LINGER {
            break;
        } else {
            std::thread::yield_now();
        }
    }
    LINGERING.fetch_sub(1, Ordering::AcqRel);
}

/// How long a helper waits for the next job before it returns to the pool.
const LINGER: std::time::Duration = std::time::Duration::from_micros(1000);

/// Helpers waiting for a job to open.
static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Registers this thread as running in the oldest open job.
fn join_open() -> Option<(Arc<Shared>, JobPtr)> {
    lock(&OPEN).iter().find_map(|shared| {
        let mut state = lock(&shared.state);
        let ptr = state.job?;
        state.running += 1;
        Some((Arc::clone(shared), ptr))
    })
}

/// Runs a job joined by [`join_open`] and deregisters.
fn run_joined(shared: &Shared, ptr: JobPtr) {
    // SAFETY: registered as running while the job was open, so its caller is blocked in
    // `CloseOnDrop` (or has not reached it) until this helper deregisters below.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*ptr.0)() }));
    let mut state = lock(&shared.state);
    if let Err(payload) = result {
        state.panic.get_or_insert(payload);
    }
    state.running -= 1;
    if state.running == 0 {
        shared.idle.notify_all();
    }
}

/// The threads that help callers outside every rayon pool: `threads - 1` of them for a pool of
/// `threads`, made at the first call (from the pool size of that call), so that with the caller
/// they make as many busy threads as the user asked for, not one more.
/// `None` if the operating system refused to start them: then callers work alone, which gives
/// the same results (pieces are fixed by the shape), only later.
fn helper_pool(helpers: usize) -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(helpers.max(1))
            .thread_name(|i| format!("tapegrad-helper-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Runs `job` on the calling thread and offers it to up to `helpers` of the current rayon
/// pool's threads; returns when the caller's call has returned and every helper that joined
/// the job has finished it. A helper that panics has its panic resumed here.
pub(crate) fn run(helpers: usize, job: &(dyn Fn() + Sync)) {
    if helpers == 0 {
        return job();
    }
    let Some(pool) = helper_pool(helpers) else { return job() };
    // SAFETY: only the lifetime is erased (same pointer, same vtable). Every dereference happens
    // in a helper between registering under the lock while `job` is `Some` and deregistering;
    // `CloseOnDrop` below clears `job` and waits for `running == 0` before this function
    // returns or unwinds past `job`'s borrow.
    let ptr = JobPtr(unsafe {
        std::mem::transmute::<*const (dyn Fn() + Sync + '_), *const (dyn Fn() + Sync + 'static)>(job)
    });
    let shared =
        Arc::new(Shared { state: Mutex::new(State { job: Some(ptr), running: 0, panic: None }), idle: Condvar::new() });
    lock(&OPEN).push(Arc::clone(&shared));
    let close = CloseOnDrop(&shared);
    let waiting = QUEUED.load(Ordering::Acquire) + LINGERING.load(Ordering::Acquire);
    for _ in waiting.min(helpers)..helpers.min(pool.current_num_threads()) {
        QUEUED.fetch_add(1, Ordering::AcqRel);
        pool.spawn(help);
    }
    job();
    drop(close);
    let panic = lock(&shared.state).panic.take();
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_piece_runs_once_and_the_caller_waits_for_started_helpers() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for helpers in 0..4 {
            let next = AtomicUsize::new(0);
            let counts: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
            let job = || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= counts.len() {
                    break;
                }
                std::hint::black_box((0..200).sum::<usize>());
                counts[i].fetch_add(1, Ordering::Relaxed);
            };
            pool.install(|| run(helpers, &job));
            next.store(0, Ordering::Relaxed);
            // Outside the pool too (the global pool's helpers).
            run(helpers, &job);
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 2), "helpers {helpers}");
        }
    }

    #[test]
    fn a_helpers_panic_reaches_the_caller_after_the_job_is_closed() {
        let caller = std::thread::current().id();
        let job = || {
            if std::thread::current().id() != caller {
                panic!("helper");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // The caller sleeps in its call while a helper, if one joins in time, panics.
        let result = std::panic::catch_unwind(|| run(1, &job));
        // The helper may start after the caller closed the job (then nothing panics): both are
        // fine, but a panic must come out as the helper's.
        if let Err(payload) = result {
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"helper"));
        }
    }
}
