//! Printing a tensor reads only the elements it shows: a summarised print of a large or
//! broadcast tensor allocates no more than its text, never a copy of the tensor.
//!
//! A file of its own, with one test, because it counts the bytes the whole process allocates
//! through a counting global allocator (another test running beside it would be counted too).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tapegrad_tensor::Tensor;

/// The system allocator, counting the bytes asked for.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments unchanged; the counter
// has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The bytes allocated while printing `t` (Display and Debug), and the Display text.
fn print_cost(t: &Tensor) -> (usize, String) {
    let before = ALLOCATED.load(Ordering::Relaxed);
    let text = t.to_string();
    let debug = format!("{t:?}");
    let cost = ALLOCATED.load(Ordering::Relaxed) - before;
    assert!(debug.ends_with(&text), "{debug}");
    (cost, text)
}

#[test]
fn printing_reads_only_the_shown_elements() {
    // 2^40 elements through stride 0: a copy would need 4 TiB, and summing their widths would
    // take hours. Printed, it is seven numbers.
    let huge = Tensor::ones(&[1]).expand(&[1 << 40]).unwrap();
    let (cost, text) = print_cost(&huge);
    assert_eq!(text, "tensor([1.0000, 1.0000, 1.0000, ..., 1.0000, 1.0000, 1.0000])");
    assert!(cost < 16 << 10, "printing a 2^40-element broadcast allocated {cost} bytes");

    // A 2-D broadcast of 4 MB of f32 and a transposed view of a real 4 MB tensor: the print
    // allocates a few KiB of text and scratch, far from the 4 MB a gathered copy would take.
    let wide = Tensor::arange(1000).expand(&[1000, 1000]).unwrap();
    let (cost, text) = print_cost(&wide);
    assert!(cost < 64 << 10, "printing a [1000, 1000] broadcast allocated {cost} bytes");
    let row = "[  0.0000,   1.0000,   2.0000, ..., 997.0000, 998.0000, 999.0000]";
    let want = format!(
        "tensor([{row},\n        {row},\n        {row},\n        ...,\n        {row},\n        {row},\n        {row}])"
    );
    assert_eq!(text, want);

    let big = Tensor::arange(1 << 20).reshape(&[1024, 1024]).unwrap().t().unwrap();
    let (cost, text) = print_cost(&big);
    assert!(cost < 64 << 10, "printing a transposed [1024, 1024] tensor allocated {cost} bytes");
    assert_eq!(text, big.contiguous().to_string(), "a view prints as its contiguous copy");
}
