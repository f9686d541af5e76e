//! Training does not leak: 2,000 steps of a small MLP with dropout (forward, cross-entropy,
//! `zero_grad`, `backward`, Adam's `step`) under a global allocator that counts live bytes, and
//! the live bytes after step 100 and after every later step stay within a small tolerance of
//! each other. A leak of anything per step (a tape entry, a dropout mask, a gradient, a saved
//! tensor) grows without bound and is caught; the test checks its own power by running the same
//! loop with two deliberate leaks, which must be caught.
//!
//! A binary of its own without the test harness (`harness = false` in Cargo.toml): the count is
//! process-wide, so nothing else may run beside it (the harness's threads and other tests would
//! be counted). Run it with `cargo test --release -p tapegrad-nn --test memory`; it prints the
//! figures that docs/reliability.md quotes.
//!
//! Why there is a tolerance at all, and why it is small: everything a step allocates is freed by
//! the end of the step (the tape entries when the loss's graph is released, the activations and
//! masks with them, the gradients when the next `zero_grad` drops them), and what lives across
//! steps has a fixed size after the first steps (the parameters, Adam's two moments, the default
//! generator, the kernels' thread-local pack buffers, capacity the allocator-facing `Vec`s keep).
//! The only legitimate variation is capacity that a few long-lived collections round up to when
//! they happen to grow; `TOLERANCE` (4 KiB) bounds that, while a leak of even 8 bytes per step
//! adds 15 KiB over the 1,900 steps measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use tapegrad_nn::loss::cross_entropy;
use tapegrad_nn::optim::{Adam, Optimizer};
use tapegrad_nn::{Dropout, Linear, Module, Var};
use tapegrad_tensor::{Generator, Tensor};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments unchanged; the counter
// has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const STEPS: usize = 2000;
/// Steps before the live bytes are expected to be flat: Adam allocates its moments at the first
/// step, the kernels their thread-local buffers at their first call, the default generator its
/// state at its first draw.
const WARMUP: usize = 100;
/// The allowed spread of the live bytes over the steps after the warm-up (see the file's doc).
const TOLERANCE: isize = 4096;

#[derive(tapegrad_nn::Module)]
struct Mlp {
    fc1: Linear,
    drop: Dropout,
    fc2: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &Var) -> tapegrad_nn::Result<Var> {
        let h = self.fc1.forward(x)?.relu();
        self.fc2.forward(&self.drop.forward(&h)?)
    }
}

/// What a training loop may hold on to by mistake, to check that the test catches it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Leak {
    None,
    /// A clone of every step's loss `Var`, as a loop collecting losses for a plot might.
    Losses,
    /// Every step's logits, with the graph behind them, from a forward pass never backpropagated
    /// (a validation pass written without `no_grad`).
    Forwards,
}

/// The live bytes after each step of `steps` training steps, and the final loss.
fn train(steps: usize, leak: Leak) -> (Vec<isize>, f32) {
    tapegrad_autograd::manual_seed(13);
    let mut gen = Generator::new(5);
    let mut model =
        Mlp { fc1: Linear::new(16, 32, &mut gen), drop: Dropout::new(0.5).unwrap(), fc2: Linear::new(32, 4, &mut gen) };
    model.train();
    let x = Var::new(Tensor::randn(&[16, 16], &mut gen));
    let targets: Vec<usize> = (0..16).map(|i| (i * 7) % 4).collect();
    let mut opt = Adam::new(model.parameters(), 1e-3);
    // Reserved up front, so that only what the kept `Var`s hold counts as the leak.
    let mut kept: Vec<Var> = Vec::with_capacity(steps);
    let mut trace = Vec::with_capacity(steps);
    let mut last = f32::NAN;
    for _ in 0..steps {
        let loss = cross_entropy(&model.forward(&x).unwrap(), &targets).unwrap();
        opt.zero_grad();
        loss.backward().unwrap();
        opt.step().unwrap();
        last = loss.value().item().unwrap();
        match leak {
            Leak::None => {}
            Leak::Losses => kept.push(loss.clone()),
            Leak::Forwards => kept.push(model.forward(&x).unwrap()),
        }
        drop(loss);
        trace.push(live());
    }
    (trace, last)
}

/// The largest spread of the live bytes after the warm-up, and where it reached its maximum.
fn spread(trace: &[isize]) -> (isize, isize) {
    let after = &trace[WARMUP - 1..];
    let (lo, hi) = (after.iter().min().unwrap(), after.iter().max().unwrap());
    (hi - lo, *hi)
}

fn main() {
    // Start rayon's global pool and wait until every worker has run: a worker allocates its own
    // structures when it first runs, which on a loaded machine can be long after the pool was
    // created (a run once saw 10 KiB appear between steps 100 and 2000 that way).
    rayon::broadcast(|_| ());
    let start = Instant::now();
    let baseline = live();
    let (trace, loss) = train(STEPS, Leak::None);
    let elapsed = start.elapsed();
    let (drift, peak) = spread(&trace);
    let rel = |b: isize| b - baseline;
    println!(
        "memory: {STEPS} steps in {:.2} s; live bytes above the start after step 1: {}, after step {WARMUP}: {}, \
         after step {STEPS}: {}; spread over steps {WARMUP}..={STEPS}: {drift} bytes (peak {}); final loss {loss:.4}",
        elapsed.as_secs_f64(),
        rel(trace[0]),
        rel(trace[WARMUP - 1]),
        rel(trace[STEPS - 1]),
        rel(peak),
    );
    assert!(loss.is_finite(), "training diverged: loss {loss}");
    assert!(
        drift <= TOLERANCE,
        "live memory grew during training: a spread of {drift} bytes over steps {WARMUP}..={STEPS} (tolerance {TOLERANCE})"
    );

    // The check has teeth: either leak, over fewer steps, breaks the tolerance.
    for leak in [Leak::Losses, Leak::Forwards] {
        let (trace, _) = train(WARMUP + 300, leak);
        let (drift, _) = spread(&trace);
        println!("memory: with the leak {leak:?}, the spread over 300 steps is {drift} bytes");
        assert!(drift > TOLERANCE, "the leak {leak:?} went unnoticed: a spread of {drift} bytes");
    }
    println!("test memory ... ok");
}
