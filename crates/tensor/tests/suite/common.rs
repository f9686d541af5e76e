//! Helpers shared by the tensor crate's property tests (`elementwise.rs`, `reduce.rs`): test
//! data from a small deterministic generator, laid out contiguous, transposed, narrowed or
//! expanded, and f64 comparisons.

use proptest::prelude::*;
use tapegrad_tensor::{Float, Tensor};

/// A small deterministic generator for test data (proptest picks the seed).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-10, 10), or an integer in [-10, 10] when `integer` (so that every order of
    /// summation is exact and sums can be compared bit for bit).
    pub fn value(&mut self, integer: bool) -> f64 {
        let v = self.unit() * 20.0 - 10.0;
        if integer {
            v.round()
        } else {
            v
        }
    }
}

/// How a test tensor is laid out in memory.
#[derive(Clone, Copy, Debug)]
pub enum View {
    Contiguous,
    /// A permutation (dims reversed) of a contiguous tensor.
    Transposed,
    /// A window one element in from each edge of a larger tensor.
    Narrowed,
    /// Dims selected by a mask broadcast (stride 0) from size 1.
    Expanded(u32),
}

pub fn view_strategy() -> impl Strategy<Value = View> {
    prop_oneof![
        Just(View::Contiguous),
        Just(View::Transposed),
        Just(View::Narrowed),
        any::<u32>().prop_map(View::Expanded)
    ]
}

pub fn shape_strategy(max_ndim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1 => Just(0usize), 3 => Just(1usize), 8 => 2usize..=7], 0..=max_ndim)
}

pub fn fill<T: Float>(shape: &[usize], rng: &mut Lcg, integer: bool) -> Tensor<T> {
    let n = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| T::from_f64(rng.value(integer))).collect(), shape).unwrap()
}

/// A tensor of logical shape `shape` with the memory layout `view`.
pub fn make<T: Float>(shape: &[usize], view: View, rng: &mut Lcg, integer: bool) -> Tensor<T> {
    let nd = shape.len();
    match view {
        View::Contiguous => fill(shape, rng, integer),
        View::Transposed => {
            let rev: Vec<usize> = shape.iter().rev().copied().collect();
            let perm: Vec<usize> = (0..nd).rev().collect();
            fill::<T>(&rev, rng, integer).permute(&perm).unwrap()
        }
        View::Narrowed => {
            let big: Vec<usize> = shape.iter().map(|d| d + 2).collect();
            let mut t = fill::<T>(&big, rng, integer);
            for (d, &len) in shape.iter().enumerate() {
                t = t.narrow(d, 1, len).unwrap();
            }
            t
        }
        View::Expanded(mask) => {
            let small: Vec<usize> =
                shape.iter().enumerate().map(|(d, &n)| if mask >> d & 1 == 1 { 1 } else { n }).collect();
            fill::<T>(&small, rng, integer).expand(shape).unwrap()
        }
    }
}

pub fn f64s<T: Float>(t: &Tensor<T>) -> Vec<f64> {
    t.to_vec().into_iter().map(|v| v.to_f64()).collect()
}

/// Equal, or both NaN.
pub fn same(got: f64, want: f64) -> bool {
    (got.is_nan() && want.is_nan()) || got == want
}

pub fn close(got: f64, want: f64, rtol: f64, atol: f64) -> bool {
    same(got, want) || (got - want).abs() <= rtol * want.abs() + atol
}

pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
    index
}

/// Runs `f` on a fresh pool of `threads` threads (thread-count independence tests).
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// The bits of a tensor's values (as f64), for exact comparisons.
pub fn bits<T: Float>(t: &Tensor<T>) -> Vec<u64> {
    t.to_vec().iter().map(|v| v.to_f64().to_bits()).collect()
}

/// The number of cases a property test tries: `n`, or 3 under Miri, where each case is
/// interpreted (about a thousand times slower) and a few still exercise every branch of the
/// layouts.
pub const fn cases(n: u32) -> u32 {
    if cfg!(miri) {
        3
    } else {
        n
    }
}
