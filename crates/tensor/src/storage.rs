//! Reference-counted element buffers. Cloning a tensor or taking a view clones the `Arc`, never the
//! elements; two tensors share storage exactly when their `Storage`s point at the same buffer.
//!
//! A buffer is either a `Vec` taken over as it is (no copy, whatever its size), or, for the small
//! op outputs that dominate a tape of tiny ops, an `Arc<[T]>` allocated together with its
//! reference counts: one allocation per tensor instead of two.

use std::sync::{Arc, Weak};

use crate::dtype::Float;

/// The two ways a buffer is held.
#[derive(Debug)]
enum Buf<T> {
    /// A vector handed over by its owner (`Storage::new`).
    Vec(Arc<Vec<T>>),
    /// Elements stored inline after the reference counts (`Storage::filled`).
    Slice(Arc<[T]>),
}

/// A shared, immutable buffer of elements. Writes go through [`Storage::make_mut`], which copies
/// only when another tensor still shares the buffer (copy-on-write).
#[derive(Debug)]
pub struct Storage<T: Float>(Buf<T>);

/// A large buffer whose last handle goes away is kept for reuse ([`crate::memory`]).
impl<T: Float> Drop for Storage<T> {
    fn drop(&mut self) {
        if let Buf::Vec(v) = &mut self.0 {
            if let Some(v) = Arc::get_mut(v) {
                crate::memory::recycle(std::mem::take(v));
            }
        }
    }
}

impl<T: Float> Clone for Storage<T> {
    fn clone(&self) -> Self {
        Storage(match &self.0 {
            Buf::Vec(v) => Buf::Vec(Arc::clone(v)),
            Buf::Slice(s) => Buf::Slice(Arc::clone(s)),
        })
    }
}

/// A weak handle to a [`Storage`], to observe when the buffer is freed.
#[derive(Debug)]
pub struct WeakStorage<T>(WeakBuf<T>);

#[derive(Debug)]
enum WeakBuf<T> {
    Vec(Weak<Vec<T>>),
    Slice(Weak<[T]>),
}

impl<T: Float> WeakStorage<T> {
    /// The storage, if some tensor still holds it.
    pub fn upgrade(&self) -> Option<Storage<T>> {
        Some(Storage(match &self.0 {
            WeakBuf::Vec(w) => Buf::Vec(w.upgrade()?),
            WeakBuf::Slice(w) => Buf::Slice(w.upgrade()?),
        }))
    }
}

impl<T: Float> Storage<T> {
    /// Takes ownership of `data` (no copy).
    pub fn new(data: Vec<T>) -> Storage<T> {
        Storage(Buf::Vec(Arc::new(data)))
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        match &self.0 {
            Buf::Vec(v) => v,
            Buf::Slice(s) => s,
        }
    }

    /// The number of elements in the buffer (not the tensor's numel: a view may use fewer).
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True for an empty buffer.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// True when both point at the same buffer.
    pub fn ptr_eq(&self, other: &Storage<T>) -> bool {
        match (&self.0, &other.0) {
            (Buf::Vec(a), Buf::Vec(b)) => Arc::ptr_eq(a, b),
            (Buf::Slice(a), Buf::Slice(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// How many tensors (and views) hold this buffer.
    pub fn ref_count(&self) -> usize {
        match &self.0 {
            Buf::Vec(v) => Arc::strong_count(v),
            Buf::Slice(s) => Arc::strong_count(s),
        }
    }

    /// A weak handle, to observe when the buffer is freed.
    pub fn downgrade(&self) -> WeakStorage<T> {
        WeakStorage(match &self.0 {
            Buf::Vec(v) => WeakBuf::Vec(Arc::downgrade(v)),
            Buf::Slice(s) => WeakBuf::Slice(Arc::downgrade(s)),
        })
    }
}

impl<T: Float> Storage<T> {
    /// A new buffer of `len` copies of `value` in a single allocation (counts and elements
    /// together); [`Storage::make_mut`] then fills it without copying, as nothing shares it yet.
    pub fn filled(len: usize, value: T) -> Storage<T> {
        Storage(Buf::Slice(std::iter::repeat_n(value, len).collect()))
    }

    /// A new buffer holding a copy of `data`, in a single allocation (counts and elements
    /// together).
    pub fn copied(data: &[T]) -> Storage<T> {
        Storage(Buf::Slice(Arc::from(data)))
    }

    /// Mutable access without a copy, when this is the only handle on the buffer (and nothing
    /// observes it through a weak handle).
    pub fn get_mut(&mut self) -> Option<&mut [T]> {
        match &mut self.0 {
            Buf::Vec(v) => Arc::get_mut(v).map(Vec::as_mut_slice),
            Buf::Slice(s) => Arc::get_mut(s),
        }
    }

    /// The buffer as the `Vec` it was made from, without a copy, when this is the only handle on
    /// it (and nothing observes it through a weak handle); otherwise the storage, unchanged.
    #[cfg(feature = "ndarray")]
    pub(crate) fn try_into_vec(mut self) -> Result<Vec<T>, Storage<T>> {
        if let Buf::Vec(v) = &mut self.0 {
            if let Some(v) = Arc::get_mut(v) {
                // `Drop` then finds an empty vector, which the buffer cache does not keep.
                return Ok(std::mem::take(v));
            }
        }
        Err(self)
    }

    /// Mutable access, copying the buffer first if anything else shares it.
    pub fn make_mut(&mut self) -> &mut [T] {
        match &mut self.0 {
            Buf::Vec(v) => Arc::make_mut(v).as_mut_slice(),
            Buf::Slice(s) => Arc::make_mut(s),
        }
    }
}
