//! The default generator that `Var::dropout` and the dropout layers without a generator of their
//! own draw from, and [`manual_seed`], which seeds it for the whole process as
//! `torch.manual_seed` does.
//!
//! What is reproducible is described on [`manual_seed`].

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tapegrad_tensor::Generator;

/// The process-wide seed until [`manual_seed`] is called (fixed, so that a program that never
/// seeds is still reproducible): the main thread's default generator starts as
/// `Generator::new(DEFAULT_SEED)`.
pub const DEFAULT_SEED: u64 = 0x5EED_DA7A;

/// The process-wide seeding state, changed only under its lock.
struct Seeding {
    seed: u64,
    /// Incremented by every `manual_seed`; 0 before the first.
    epoch: u64,
    /// The stream index the next thread to (re)derive its generator in this epoch gets.
    next_stream: u64,
}

static SEEDING: Mutex<Seeding> = Mutex::new(Seeding { seed: DEFAULT_SEED, epoch: 0, next_stream: 1 });

/// A copy of `SEEDING.epoch`, so that a draw takes no lock unless a seed came since the
/// thread's last draw.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// The epoch of a thread that never used its default generator.
const NEVER: u64 = u64::MAX;

/// SplitMix64's increment (the golden ratio in 64-bit fixed point).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Mixed into a thread's seed to derive the generators of nested calls (see
/// [`with_default_generator`]), so that they never coincide with another thread's stream.
const NESTED: u64 = 0x6E65_7374_6564_2121;

/// This thread's default generators.
struct Local {
    /// The epoch they derive from ([`NEVER`] before the thread's first use).
    epoch: u64,
    /// The seed of this thread's stream: `thread_stream_seed(seed, index)`.
    seed: u64,
    /// `gens[0]` is the default generator; `gens[d]` the one that calls nested `d` deep inside
    /// [`with_default_generator`] draw from. `None` while lent to a running call, or not yet made.
    gens: Vec<Option<Generator>>,
    /// How many `with_default_generator` calls are running on this thread.
    depth: usize,
}

thread_local! {
    static LOCAL: RefCell<Local> = const { RefCell::new(Local { epoch: NEVER, seed: 0, gens: Vec::new(), depth: 0 }) };
}

fn seeding() -> MutexGuard<'static, Seeding> {
    // Nothing panics while the lock is held, but a poisoned lock still holds consistent state.
    SEEDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// SplitMix64's output function (Steele, Lea and Flood, 2014): a bijective 64-bit mixer.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of the default generator of the thread with stream index `stream` after
/// `manual_seed(seed)` (see [`manual_seed`]): `seed` itself for index 0, else the
/// `stream`-th output of SplitMix64 started at `seed`. With it a thread's masks can be
/// reproduced with an explicit generator.
///
/// ```
/// use tapegrad_autograd::{dropout, manual_seed, thread_stream_seed, Generator, Tensor, Var};
/// let x = || Var::new(Tensor::<f32>::ones(&[64]));
/// let draw = move || x().dropout(0.5).map(|y| y.value().to_vec());
/// manual_seed(5);
/// let mine = draw()?; // the seeding thread: index 0
/// let theirs = std::thread::spawn(draw).join().unwrap()?; // the first other thread: index 1
/// let expect = |seed| dropout(&x(), 0.5, &mut Generator::new(seed)).map(|y| y.value().to_vec());
/// assert_eq!(mine, expect(thread_stream_seed(5, 0))?);
/// assert_eq!(theirs, expect(thread_stream_seed(5, 1))?);
/// assert_ne!(mine, theirs);
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn thread_stream_seed(seed: u64, stream: u64) -> u64 {
    if stream == 0 {
        seed
    } else {
        splitmix64(seed.wrapping_add(stream.wrapping_mul(GAMMA)))
    }
}

impl Local {
    /// Re-derives this thread's stream when a seed came since its last use (or at its first).
    fn refresh(&mut self) {
        if self.epoch == EPOCH.load(Ordering::Acquire) {
            return;
        }
        let mut s = seeding();
        let stream = if s.epoch == 0 && std::thread::current().name() == Some("main") {
            0
        } else {
            s.next_stream += 1;
            s.next_stream - 1
        };
        self.epoch = s.epoch;
        self.seed = thread_stream_seed(s.seed, stream);
        // Generators lent to running calls are discarded when they come back (their epoch is old).
        self.gens.clear();
    }

    /// Lends the generator for a call at the current depth: `(generator, depth, epoch)`.
    fn lend(&mut self) -> (Generator, usize, u64) {
        self.refresh();
        let depth = self.depth;
        if self.gens.len() <= depth {
            self.gens.resize(depth + 1, None);
        }
        let seed = if depth == 0 { self.seed } else { thread_stream_seed(self.seed ^ NESTED, depth as u64) };
        let gen = self.gens[depth].take().unwrap_or_else(|| Generator::new(seed));
        self.depth += 1;
        (gen, depth, self.epoch)
    }

    /// Takes back a lent generator, unless a seed came meanwhile (then the fresh one stays).
    fn give_back(&mut self, gen: Generator, depth: usize, epoch: u64) {
        self.depth = depth;
        if self.epoch == epoch {
            if let Some(slot) = self.gens.get_mut(depth) {
                *slot = Some(gen);
            }
        }
    }
}

/// Seeds the default generator of every thread, like `torch.manual_seed`: the calling thread's
/// becomes exactly `Generator::new(seed)`, and every other thread's (also one that already
/// drew) is re-derived from `seed` at its next use, distinct per thread and reproducible as
/// described below. Layers with a generator of their own are not affected.
///
/// # What is reproducible
///
/// Each thread has its own default generator, so threads never contend for it; which stream a
/// thread gets is fixed by a process-wide seed and the thread's *stream index*:
///
/// - `manual_seed(s)` sets the process-wide seed to `s` and starts a new *epoch*. The calling
///   thread gets stream index 0: its default generator becomes exactly `Generator::new(s)`.
/// - Every other thread is re-derived at its next use of the default generator after the seed
///   (also a thread that drew before it): it gets the next stream index, 1, 2, ... in the order
///   in which threads first use their default generator after the seed, and its generator is
///   `Generator::new(thread_stream_seed(s, index))` (see [`thread_stream_seed`]); a thread that
///   never draws takes no index. So a program that spawns and uses its
///   threads in a fixed order (each thread's first dropout happening before the next thread's)
///   draws the same masks in every run, and no two threads draw the same masks; threads that
///   race for their first draw get their indices in the order they win.
/// - Before any `manual_seed` the seed is [`DEFAULT_SEED`]: the main thread (the one named
///   `"main"`) starts with `Generator::new(DEFAULT_SEED)`, and the other threads take indices
///   1, 2, ... in order of first use, as above.
///
/// Threads that draw with explicit generators (`dropout(&x, p, &mut gen)`,
/// `Dropout::with_generator`) are unaffected by all of this and reproducible whatever the
/// threads do.
///
/// Called inside a closure given to [`with_default_generator`], it seeds as usual; the closure
/// keeps drawing from the generator it was given, which is then discarded.
pub fn manual_seed(seed: u64) {
    let epoch = {
        let mut s = seeding();
        s.seed = seed;
        s.epoch += 1;
        s.next_stream = 1;
        EPOCH.store(s.epoch, Ordering::Release);
        s.epoch
    };
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        l.epoch = epoch;
        l.seed = seed;
        l.gens.clear();
    });
}

/// A generator lent by [`with_default_generator`], given back when dropped (also on a panic).
struct Lent {
    gen: Generator,
    depth: usize,
    epoch: u64,
}

impl Drop for Lent {
    fn drop(&mut self) {
        let gen = self.gen.clone();
        // During thread teardown the thread-local may be gone: then there is nothing to keep.
        let _ = LOCAL.try_with(|l| l.borrow_mut().give_back(gen, self.depth, self.epoch));
    }
}

/// Runs `f` with this thread's default generator (the one `Var::dropout` draws from).
///
/// The generator is lent to `f` for its duration, so `f` may itself call `Var::dropout`, a
/// dropout layer, `manual_seed` or `with_default_generator`. Such a nested call draws from a
/// generator of its own (one per nesting depth, seeded from this thread's stream and kept
/// across calls, so nested draws are reproducible too and never repeat the outer stream); the
/// outer generator continues where `f` left it.
pub fn with_default_generator<R>(f: impl FnOnce(&mut Generator) -> R) -> R {
    let (gen, depth, epoch) = LOCAL.with(|l| l.borrow_mut().lend());
    let mut lent = Lent { gen, depth, epoch };
    f(&mut lent.gen)
}

/// The name of the state functions' op in their errors.
const STATE_OP: &str = "default_generator_state";

/// A copy of this thread's default generator as it stands now (the one [`Var::dropout`] and
/// dropout layers without a generator of their own draw from next): PyTorch's
/// `torch.get_rng_state`. Save its [`seed`](Generator::seed) and [`offset`](Generator::offset)
/// in a checkpoint and give it back with [`set_default_generator_state`] to resume the same
/// masks.
///
/// The generators of calls nested inside [`with_default_generator`] are not part of it.
///
/// # Errors
/// An invalid-argument error when called inside [`with_default_generator`] (the default
/// generator is then lent to the running call, and its state is not settled).
///
/// [`Var::dropout`]: crate::Var::dropout
///
/// ```
/// use tapegrad_autograd::{default_generator_state, manual_seed, set_default_generator_state, Tensor, Var};
/// let draw = || Var::new(Tensor::<f32>::ones(&[32])).dropout(0.5).map(|y| y.value().to_vec());
/// manual_seed(1);
/// let saved = default_generator_state()?;
/// let first = draw()?;
/// set_default_generator_state(saved)?;
/// assert_eq!(draw()?, first);
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn default_generator_state() -> crate::Result<Generator> {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        if l.depth > 0 {
            return Err(lent_error());
        }
        l.refresh();
        Ok(match l.gens.first() {
            Some(Some(gen)) => gen.clone(),
            _ => Generator::new(l.seed),
        })
    })
}

/// Makes `gen` this thread's default generator: the next [`Var::dropout`] (and dropout layer
/// without a generator of its own) on this thread draws what `gen` draws next. PyTorch's
/// `torch.set_rng_state`. Other threads, and a later [`manual_seed`], are unaffected by it and
/// override it as usual.
///
/// # Errors
/// An invalid-argument error when called inside [`with_default_generator`].
///
/// [`Var::dropout`]: crate::Var::dropout
pub fn set_default_generator_state(gen: Generator) -> crate::Result<()> {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        if l.depth > 0 {
            return Err(lent_error());
        }
        l.refresh();
        match l.gens.first_mut() {
            Some(slot) => *slot = Some(gen),
            None => l.gens.push(Some(gen)),
        }
        Ok(())
    })
}

fn lent_error() -> tapegrad_tensor::Error {
    tapegrad_tensor::Error::arg(
        STATE_OP,
        "called inside with_default_generator, while the default generator is lent to the running call",
    )
}
