//! A cache of large element buffers, so that a training loop reuses the same memory step after
//! step instead of returning it to the system allocator and taking it back.
//!
//! A training step allocates the same large buffers every time (activations, their gradients,
//! the weight gradients) and frees them all by the end of the step. The system allocator may give
//! such memory back to the kernel between steps (glibc trims the top of its heap once more than
//! twice its mmap threshold is free there), and the next step then pays a page fault and a page
//! clear for every 4 KiB it writes: measured on the MLP of `examples/bench_mlp.rs` at 2 threads,
//! about 2,000 faults per step and a step twice as slow (docs/benchmarks.md).
//!
//! So when the last tensor holding a buffer of at least [`MIN_BYTES`] lets it go, the buffer goes
//! into this cache, and the ops that allocate large outputs take a buffer of the same length
//! from here first. Only lengths the ops ask for are kept, and of each only as many as were
//! ever asked for at once (what the next step takes back). The cache holds at most [`cache_limit`] bytes (256 MiB unless
//! [`set_cache_limit`] says otherwise; 0 turns it off), dropping its oldest buffers first, and
//! [`clear_cache`] empties it, like PyTorch's `empty_cache`. Contents are never observable: a
//! reused buffer is zeroed or overwritten in full before any tensor shows it.
//!
//! ```
//! use tapegrad_tensor::{memory, Tensor};
//! let t = Tensor::<f32>::zeros(&[512, 512]); // 1 MiB
//! drop(t);
//! assert!(memory::cached_bytes() >= 1 << 20);
//! let u = Tensor::<f32>::zeros(&[512, 512]); // reuses it, zeroed
//! assert_eq!(u.sum_all().item()?, 0.0);
//! memory::clear_cache();
//! # Ok::<(), tapegrad_tensor::Error>(())
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::dtype::Float;

/// An element type with a buffer cache of its own: the float types, and `u64` for the bit
/// masks and pooling codes a step makes as often as its activations.
pub(crate) trait Cached: Copy + Default + Send + 'static {
    /// This type's cache.
    fn buffer_cache() -> &'static Cache<Self>;
}

impl<T: Float> Cached for T {
    fn buffer_cache() -> &'static Cache<T> {
        <T as Float>::buffer_cache()
    }
}

impl Cached for u64 {
    fn buffer_cache() -> &'static Cache<u64> {
        static CACHE: Cache<u64> = Cache::new();
        &CACHE
    }
}

/// Buffers smaller than this (in bytes, four pages) are left to the system allocator.
///
/// It was 128 KiB (glibc's default mmap threshold), on the view that the allocator recycles
/// smaller blocks well on its own. It does not across a training step: the step frees its
/// smaller buffers together, glibc then trims the top of its heap (more than 128 KiB free there)
/// and the next step faults the same pages back in. Measured on the CNN of
/// `examples/bench_models.rs` (docs/benchmarks.md, session 17): about 130 page faults per step
/// from buffers of 16 to 128 KiB (a convolution's per-image scratch, ReLU's outputs) and from
/// the pooling's code words, 6-8% of the step.
pub const MIN_BYTES: usize = 16 << 10;

static LIMIT: AtomicUsize = AtomicUsize::new(256 << 20);
static CACHED: AtomicUsize = AtomicUsize::new(0);
/// Held while a buffer goes into the cache or the cache shrinks, so that the check against the
/// limit and the change of [`CACHED`] happen together for every element type.
static ADMIT: Mutex<()> = Mutex::new(());

fn admit() -> std::sync::MutexGuard<'static, ()> {
    ADMIT.lock().unwrap_or_else(|e| e.into_inner())
}

/// The most bytes the cache keeps (all element types together).
pub fn cache_limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Sets the most bytes the cache keeps; `0` turns caching off. Buffers already cached beyond a
/// lowered limit are released.
pub fn set_cache_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
    <f32 as Cached>::buffer_cache().shrink_to(bytes);
    <f64 as Cached>::buffer_cache().shrink_to(bytes);
    <u64 as Cached>::buffer_cache().shrink_to(bytes);
}

/// The bytes the cache holds now.
pub fn cached_bytes() -> usize {
    CACHED.load(Ordering::Relaxed)
}

/// Releases every cached buffer to the system allocator.
pub fn clear_cache() {
    <f32 as Cached>::buffer_cache().shrink_to(0);
    <f64 as Cached>::buffer_cache().shrink_to(0);
    <u64 as Cached>::buffer_cache().shrink_to(0);
}

/// How many buffers of one length the ops have asked the cache for.
#[derive(Clone, Copy, Debug, Default)]
struct Demand {
    /// Asked for and not yet come back (as far as the cache can tell: a buffer of the same
    /// length made elsewhere also counts as a return).
    out: usize,
    /// The most ever out at once: how many of this length a step holds together.
    peak: usize,
}

/// The cached buffers of one element type, oldest first, and the demand for each length.
struct Pool<T> {
    free: Vec<Vec<T>>,
    demand: Vec<(usize, Demand)>,
}

impl<T> Pool<T> {
    fn demand(&mut self, len: usize) -> Option<&mut Demand> {
        self.demand.iter_mut().find(|(l, _)| *l == len).map(|(_, d)| d)
    }
}

/// The cached buffers of one element type.
///
/// Only lengths that the ops ask for are kept, and of each length only as many as were ever
/// asked for at once: a step that allocates K activations of one shape finds K buffers waiting
/// in the next step, while buffers that ops made elsewhere (and would never take back) are freed
/// instead of piling up to the limit.
#[doc(hidden)]
pub struct Cache<T> {
    free: Mutex<Pool<T>>,
}

impl<T: Copy> Cache<T> {
    /// An empty cache (for the per-type statics of `Float`).
    pub(crate) const fn new() -> Cache<T> {
        Cache { free: Mutex::new(Pool { free: Vec::new(), demand: Vec::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool<T>> {
        // A panic while the lock is held cannot leave the pool inconsistent (every change is
        // one push, one remove or one counter), so a poisoned lock is still usable.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently cached buffer of exactly `len` elements, if any; either way the ask is
    /// counted in the demand for `len`.
    fn take(&self, len: usize) -> Option<Vec<T>> {
        if bytes::<T>(len) < MIN_BYTES || cache_limit() == 0 {
            return None;
        }
        let mut pool = self.lock();
        match pool.demand(len) {
            Some(d) => {
                d.out += 1;
                d.peak = d.peak.max(d.out);
            }
            None => pool.demand.push((len, Demand { out: 1, peak: 1 })),
        }
        let i = pool.free.iter().rposition(|v| v.len() == len)?;
        let v = pool.free.remove(i);
        CACHED.fetch_sub(bytes::<T>(v.capacity()), Ordering::Relaxed);
        Some(v)
    }

    /// Keeps `v` for reuse if it is large enough, its length is asked for and fewer of that
    /// length are cached than were ever out at once, and it fits under the limit (after
    /// dropping the oldest buffers of this type if need be); otherwise frees it.
    fn put(&self, v: Vec<T>) {
        let size = bytes::<T>(v.capacity());
        let limit = cache_limit();
        if bytes::<T>(v.len()) < MIN_BYTES || v.len() != v.capacity() || size > limit {
            return;
        }
        let _admit = admit();
        let mut pool = self.lock();
        let len = v.len();
        let Some(d) = pool.demand(len) else { return };
        d.out = d.out.saturating_sub(1);
        let peak = d.peak;
        if pool.free.iter().filter(|b| b.len() == len).count() >= peak {
            return;
        }
        let free = &mut pool.free;
        while CACHED.load(Ordering::Relaxed) + size > limit && !free.is_empty() {
            let old = free.remove(0);
            CACHED.fetch_sub(bytes::<T>(old.capacity()), Ordering::Relaxed);
        }
        if CACHED.load(Ordering::Relaxed) + size <= limit {
            CACHED.fetch_add(size, Ordering::Relaxed);
            free.push(v);
        }
    }

    /// Drops the oldest buffers of this type until the whole cache is within `bytes`.
    fn shrink_to(&self, bytes_left: usize) {
        let _admit = admit();
        let mut pool = self.lock();
        let free = &mut pool.free;
        while CACHED.load(Ordering::Relaxed) > bytes_left && !free.is_empty() {
            let old = free.remove(0);
            CACHED.fetch_sub(bytes::<T>(old.capacity()), Ordering::Relaxed);
        }
    }
}

fn bytes<T>(len: usize) -> usize {
    len.saturating_mul(std::mem::size_of::<T>())
}

/// Returns a buffer to the cache (what dropping a tensor's last handle does).
pub(crate) fn recycle<T: Cached>(v: Vec<T>) {
    T::buffer_cache().put(v);
}

/// `len` copies of `value`, in a cached buffer when there is one of that length.
pub(crate) fn filled<T: Cached>(len: usize, value: T) -> Vec<T> {
    match T::buffer_cache().take(len) {
        Some(mut v) => {
            v.fill(value);
            v
        }
        None => vec![value; len],
    }
}

/// `len` initialised elements of unspecified value: a cached buffer as it is, or fresh zeros.
///
/// Only for a caller in this crate that overwrites every element before any tensor shows the
/// buffer (a product into `C` with `accumulate = false`, a kernel that writes its whole output):
/// that is what keeps the module's promise that a reused buffer's old contents are never
/// observable. Every other caller takes [`filled`] or [`with_capacity`].
pub(crate) fn for_overwrite<T: Cached>(len: usize) -> Vec<T> {
    T::buffer_cache().take(len).unwrap_or_else(|| vec![T::default(); len])
}

/// An empty vector with room for at least `len` elements, to be filled by `push`, `extend` or
/// through its spare capacity: a cached buffer, cleared, when there is one of that length.
pub(crate) fn with_capacity<T: Cached>(len: usize) -> Vec<T> {
    match T::buffer_cache().take(len) {
        Some(mut v) => {
            v.clear();
            v
        }
        None => Vec::with_capacity(len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many buffers of exactly `len` elements the cache holds: what the test below checks
    /// instead of the total, which other tests' buffers change while it runs.
    fn cached_of<T: Cached>(len: usize) -> usize {
        T::buffer_cache().lock().free.iter().filter(|b| b.len() == len).count()
    }

    // One test changes the global cache's limit and clears it. Its lengths are its own (no
    // other test asks for them), and it counts buffers of those lengths only.
    #[test]
    fn buffers_are_reused_bounded_and_released() {
        let n = MIN_BYTES / 4 * 3 + 7; // about 48 KiB of f32
        clear_cache();
        // A length nobody asked for is not kept.
        recycle(vec![1.0f32; n + 1]);
        assert_eq!(cached_of::<f32>(n + 1), 0);
        let a = for_overwrite::<f32>(n);
        let ptr = a.as_ptr();
        recycle(a);
        assert!(cached_bytes() >= n * 4);
        let mut b = for_overwrite::<f32>(n);
        assert_eq!((b.as_ptr(), b.len()), (ptr, n), "the same buffer comes back");
        b.fill(7.0);
        recycle(b);
        assert!(filled::<f32>(n, 0.0).iter().all(|&v| v == 0.0), "filled clears a reused buffer");
        // Small buffers and other lengths are not cached or handed out.
        recycle(vec![1.0f32; 16]);
        assert!(for_overwrite::<f32>(16).iter().all(|&v| v == 0.0));
        recycle(vec![1.0f64; n]);
        assert_eq!(with_capacity::<f64>(n).len(), 0);
        // Of one length, no more than were ever out at once: two asked for together, three
        // returned (one made elsewhere), two kept.
        // (A length of its own: the demand for `n` counts the asks above.)
        clear_cache();
        let m = n + 64;
        let (x, y) = (for_overwrite::<f32>(m), for_overwrite::<f32>(m));
        recycle(x);
        recycle(y);
        recycle(vec![3.0f32; m]);
        assert_eq!(cached_of::<f32>(m), 2);
        // Words (masks, pooling codes) are cached alike.
        let w = filled(n, 1u64);
        let ptr = w.as_ptr();
        recycle(w);
        assert_eq!(cached_of::<u64>(n), 1);
        let w = filled(n, 0u64);
        assert_eq!(w.as_ptr(), ptr);
        assert!(w.iter().all(|&v| v == 0));
        recycle(w);
        // The limit bounds the cache; 0 turns it off.
        let limit = cache_limit();
        set_cache_limit(n * 4);
        recycle(vec![1.0f32; n]);
        recycle(vec![2.0f32; n]);
        assert!(cached_bytes() <= n * 4);
        set_cache_limit(0);
        assert_eq!(cached_bytes(), 0);
        recycle(vec![1.0f32; n]);
        assert_eq!(cached_bytes(), 0);
        set_cache_limit(limit);
        clear_cache();
    }
}
