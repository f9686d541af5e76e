//! The default generator is seeded for the whole process by `manual_seed`: the seeding thread
//! draws exactly `Generator::new(seed)`, every other thread a distinct stream derived from the
//! seed in the order threads first draw after it (also one that drew before the seed), and
//! nested use from inside `with_default_generator` works.
//!
//! The seed is process-wide state, so this binary runs without the test harness (no parallel
//! tests in it; see `[[test]]` in Cargo.toml): its `main` is the process's main thread, which is
//! also what lets it check the unseeded main thread's stream.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread;

use tapegrad_autograd::{
    dropout, manual_seed, thread_stream_seed, with_default_generator, Generator, Result, Tensor, Var, DEFAULT_SEED,
};

const N: usize = 4096;

fn ones() -> Var {
    Var::new(Tensor::ones(&[N]))
}

/// A mask from the thread's default generator (as the output of dropout on ones: 0 or 2).
fn draw() -> Vec<f32> {
    ones().dropout(0.5).unwrap().value().to_vec()
}

/// A mask from an explicit generator.
fn draw_from(gen: &mut Generator) -> Vec<f32> {
    dropout(&ones(), 0.5, gen).unwrap().value().to_vec()
}

/// The first `k` masks of `Generator::new(seed)`.
fn stream(seed: u64, k: usize) -> Vec<Vec<f32>> {
    let mut gen = Generator::new(seed);
    (0..k).map(|_| draw_from(&mut gen)).collect()
}

fn on_new_thread(f: impl FnOnce() -> Vec<f32> + Send + 'static) -> Vec<f32> {
    thread::spawn(f).join().unwrap()
}

/// Before any `manual_seed`: the main thread draws `Generator::new(DEFAULT_SEED)` as before,
/// and other threads no longer all draw that same stream.
fn unseeded() {
    assert_eq!(thread::current().name(), Some("main"));
    let spawned = [on_new_thread(draw), on_new_thread(draw)];
    let main = [draw(), draw()];
    assert_eq!(main.to_vec(), stream(DEFAULT_SEED, 2), "the main thread's unseeded stream is unchanged");
    assert_ne!(spawned[0], spawned[1], "two threads do not draw identical masks");
    assert_ne!(spawned[0], main[0]);
    assert_eq!(spawned[0], stream(thread_stream_seed(DEFAULT_SEED, 1), 1)[0]);
    assert_eq!(spawned[1], stream(thread_stream_seed(DEFAULT_SEED, 2), 1)[0]);
}

/// The seeding thread's draws are those of `Generator::new(seed)`.
fn seeding_thread_draws_generator_new() {
    for seed in [0, 1, 42, u64::MAX] {
        manual_seed(seed);
        let got: Vec<Vec<f32>> = (0..3).map(|_| draw()).collect();
        assert_eq!(got, stream(seed, 3), "seed {seed}");
    }
    // Also on a thread other than main.
    let got = on_new_thread(|| {
        manual_seed(9);
        draw()
    });
    assert_eq!(got, stream(9, 1)[0]);
}

/// A thread spawned after the seed is reproducible, distinct from the seeding thread, and
/// distinct from a second thread spawned after it.
fn spawned_threads_are_reproducible_and_distinct() {
    let run = || {
        manual_seed(1);
        let main = draw();
        let first = on_new_thread(draw);
        let second = on_new_thread(|| [draw(), draw()].concat());
        (main, first, second)
    };
    let (main, first, second) = run();
    assert_eq!(run(), (main.clone(), first.clone(), second.clone()), "the same masks in a second run");
    assert_ne!(first, main);
    assert_ne!(first, second[..N]);
    assert_eq!(first, stream(thread_stream_seed(1, 1), 1)[0]);
    assert_eq!(second, stream(thread_stream_seed(1, 2), 2).concat());
    // A thread's first draw after the seed decides its index, not the order of spawning.
    manual_seed(1);
    let (go, wait) = mpsc::channel::<()>();
    let late = thread::spawn(move || {
        wait.recv().unwrap();
        draw()
    });
    let early = on_new_thread(draw);
    go.send(()).unwrap();
    assert_eq!(early, first);
    assert_eq!(late.join().unwrap(), stream(thread_stream_seed(1, 2), 1)[0]);
}

/// A thread that drew before `manual_seed` draws the seed's stream afterwards (here as the
/// first thread after the seed: index 1), and the seeding thread's own earlier stream is
/// replaced too.
fn a_thread_that_drew_is_reseeded() {
    let run = || {
        let (to_worker, worker_rx) = mpsc::channel::<()>();
        let (to_main, main_rx) = mpsc::channel::<Vec<f32>>();
        let worker = thread::spawn(move || {
            to_main.send(draw()).unwrap();
            worker_rx.recv().unwrap();
            to_main.send(draw()).unwrap();
        });
        let before = main_rx.recv().unwrap();
        manual_seed(4);
        let main = draw();
        to_worker.send(()).unwrap();
        let after = main_rx.recv().unwrap();
        worker.join().unwrap();
        (before, main, after)
    };
    let (before, main, after) = run();
    assert_eq!(main, stream(4, 1)[0]);
    assert_eq!(after, stream(thread_stream_seed(4, 1), 1)[0], "reseeded, not its old stream");
    assert_ne!(after, before);
    let (_, main2, after2) = run();
    assert_eq!((main2, after2), (main, after), "reproducible");
}

/// `Var::dropout`, `manual_seed` and `with_default_generator` inside the closure of
/// `with_default_generator`: no panic, reproducible nested draws, the outer stream untouched.
fn nested_use() -> Result<()> {
    let nested_run = || -> Result<[Vec<f32>; 4]> {
        manual_seed(6);
        let (outer, inner, deeper) = with_default_generator(|gen| -> Result<_> {
            let inner = ones().dropout(0.5)?.value().to_vec();
            let deeper = with_default_generator(|g2| {
                let deeper = with_default_generator(draw_from);
                (draw_from(g2), deeper)
            });
            let outer = draw_from(gen);
            Ok((outer, inner, deeper))
        })?;
        // The outer generator continues where the closure left it.
        let next = draw();
        Ok([outer, inner, [deeper.0, deeper.1].concat(), next])
    };
    let [outer, inner, deeper, next] = nested_run()?;
    assert_eq!([outer.clone(), next.clone()].to_vec(), stream(6, 2), "the outer stream is not disturbed");
    assert_ne!(inner, outer);
    assert_ne!(inner, deeper[..N]);
    assert_ne!(deeper[..N], deeper[N..]);
    assert_eq!(nested_run()?, [outer, inner.clone(), deeper, next], "nested draws are reproducible");

    // Nested calls at one depth continue one stream: a second nested draw is a fresh mask.
    manual_seed(6);
    let second_inner = with_default_generator(|_| [draw(), draw()]);
    assert_eq!(second_inner[0], inner);
    assert_ne!(second_inner[1], inner);

    // manual_seed inside: it takes effect; the closure's generator is discarded afterwards.
    manual_seed(6);
    let stale = with_default_generator(|gen| {
        manual_seed(7);
        draw_from(gen)
    });
    assert_eq!(stale, stream(6, 1)[0]);
    assert_eq!(draw(), stream(7, 1)[0], "the new seed, from its start");

    // A panic inside the closure gives the generator back, advanced by what it drew.
    manual_seed(8);
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let caught = catch_unwind(AssertUnwindSafe(|| {
        with_default_generator(|gen| {
            draw_from(gen);
            panic!("inside with_default_generator");
        })
    }));
    std::panic::set_hook(quiet);
    assert!(caught.is_err());
    assert_eq!(draw(), stream(8, 2)[1]);
    let x = ones();
    assert_eq!(with_default_generator(|_| x.dropout(0.5))?.value().to_vec().len(), N, "depth restored");
    Ok(())
}

fn main() -> Result<()> {
    unseeded();
    seeding_thread_draws_generator_new();
    spawned_threads_are_reproducible_and_distinct();
    a_thread_that_drew_is_reseeded();
    nested_use()?;
    println!("default_generator: all checks passed");
    Ok(())
}
