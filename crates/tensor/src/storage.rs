//! Reference-counted element buffers. Cloning a tensor or taking a view clones the `Arc`, never the
//! elements; two tensors share storage exactly when their `Storage`s point at the same buffer.

use std::sync::Arc;

/// A shared, immutable buffer of elements. Writes go through [`Storage::make_mut`], which copies
/// only when another tensor still shares the buffer (copy-on-write).
#[derive(Debug)]
pub struct Storage<T>(Arc<Vec<T>>);

impl<T> Clone for Storage<T> {
    fn clone(&self) -> Self {
        Storage(Arc::clone(&self.0))
    }
}

impl<T> Storage<T> {
    /// Takes ownership of `data`.
    pub fn new(data: Vec<T>) -> Storage<T> {
        Storage(Arc::new(data))
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    /// The number of elements in the buffer (not the tensor's numel: a view may use fewer).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty buffer.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when both point at the same buffer.
    pub fn ptr_eq(&self, other: &Storage<T>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// How many tensors (and views) hold this buffer.
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// A weak handle, to observe when the buffer is freed.
    pub fn downgrade(&self) -> std::sync::Weak<Vec<T>> {
        Arc::downgrade(&self.0)
    }
}

impl<T: Clone> Storage<T> {
    /// Mutable access, copying the buffer first if anything else shares it.
    pub fn make_mut(&mut self) -> &mut Vec<T> {
        Arc::make_mut(&mut self.0)
    }
}
