//! `Tensor<T>`: a layout over shared storage. Constructors, inspection and `Display` live here;
//! the ops live in `ops/`, one file per family.

use std::fmt;

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::layout::{checked_numel, Layout};
use crate::random::Generator;
use crate::storage::Storage;
use crate::strided::gather_contiguous;

/// An n-dimensional array of `f32` (the default) or `f64`.
///
/// Cloning is cheap: the clone shares the storage. Views (`transpose`, `narrow`, `expand`, ...)
/// also share it and differ only in shape, strides and offset. Every op returns a new tensor;
/// none writes into its inputs.
///
/// ```
/// use tapegrad_tensor::Tensor;
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// assert_eq!(x.shape(), &[2, 3]);
/// assert_eq!(x.t()?.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// # Ok::<(), tapegrad_tensor::Error>(())
/// ```
pub struct Tensor<T: Float = f32> {
    pub(crate) storage: Storage<T>,
    layout: Layout,
}

impl<T: Float> Clone for Tensor<T> {
    fn clone(&self) -> Self {
        Tensor { storage: self.storage.clone(), layout: self.layout.clone() }
    }
}

impl<T: Float> Tensor<T> {
    // ─── construction ───────────────────────────────────────────────────────────

    /// A tensor over existing storage: element `index` is
    /// `storage[offset + Σ index[i] · strides[i]]` for the layout's offset and strides. The
    /// layout itself is valid by construction ([`Layout::new`] checks its parts); this checks
    /// that it fits the storage.
    ///
    /// # Errors
    /// `from_storage` naming the shape when the layout reaches an element at or past the end of
    /// the storage, or, for an empty tensor, when its offset is past the end.
    ///
    /// ```
    /// use tapegrad_tensor::{Layout, Storage, Tensor};
    /// let storage = Storage::new(vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0]);
    /// let t = Tensor::from_storage(storage.clone(), Layout::new(&[3, 2], &[1, 3], 0)?)?;
    /// assert_eq!(t.to_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    /// assert!(Tensor::from_storage(storage, Layout::new(&[3, 2], &[2, 1], 1)?).is_err());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn from_storage(storage: Storage<T>, layout: Layout) -> Result<Tensor<T>> {
        let len = storage.len();
        match layout.max_offset() {
            Some(max) if max >= len => Err(Error::shape(
                "from_storage",
                layout.shape(),
                format!(
                    "strides {:?} and offset {} reach element {max} of a storage of {len}",
                    layout.strides(),
                    layout.offset()
                ),
            )),
            None if layout.offset() > len => Err(Error::shape(
                "from_storage",
                layout.shape(),
                format!("offset {} is past the end of a storage of {len}", layout.offset()),
            )),
            _ => Ok(Tensor { storage, layout }),
        }
    }

    /// A view of this tensor's storage with another layout, already known to be in bounds.
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor<T> {
        debug_assert!(layout.max_offset().is_none_or(|m| m < self.storage.len()));
        Tensor { storage: self.storage.clone(), layout }
    }

    /// A contiguous tensor that owns `data`, with a shape whose numel is `data.len()` (and that
    /// is valid: [`checked_numel`]); the internal constructor for op outputs.
    pub(crate) fn from_contiguous(data: Vec<T>, shape: &[usize]) -> Tensor<T> {
        debug_assert_eq!(checked_numel("from_contiguous", shape).ok(), Some(data.len()));
        Tensor { storage: Storage::new(data), layout: Layout::contiguous_valid(shape) }
    }

    /// A contiguous tensor over `storage`, whose length is `shape`'s numel; the internal
    /// constructor for small op outputs built in a [`Storage::filled`] buffer.
    pub(crate) fn from_contiguous_storage(storage: Storage<T>, shape: &[usize]) -> Tensor<T> {
        debug_assert_eq!(checked_numel("from_contiguous", shape).ok(), Some(storage.len()));
        Tensor { storage, layout: Layout::contiguous_valid(shape) }
    }

    /// A tensor of `shape` holding `data` in row-major order.
    ///
    /// # Errors
    /// `from_vec` names the shape and both counts when `data.len()` is not the shape's numel,
    /// and the shape when it is too large ([`checked_numel`]).
    ///
    /// ```
    /// use tapegrad_tensor::Tensor;
    /// assert!(Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[2, 2]).is_err());
    /// assert!(Tensor::<f32>::from_vec(vec![], &[0, 1 << 40, 1 << 40]).is_err());
    /// ```
    pub fn from_vec(data: Vec<T>, shape: &[usize]) -> Result<Tensor<T>> {
        let n = checked_numel("from_vec", shape)?;
        if n != data.len() {
            return Err(Error::shape("from_vec", shape, format!("needs {n} elements, got {}", data.len())));
        }
        Ok(Tensor::from_contiguous(data, shape))
    }

    // ─── inspection ─────────────────────────────────────────────────────────────

    /// The dims.
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// The strides, in elements (0 along an expanded dim).
    pub fn strides(&self) -> &[usize] {
        self.layout.strides()
    }

    /// The storage index of the first element.
    pub fn offset(&self) -> usize {
        self.layout.offset()
    }

    /// The number of dims.
    pub fn ndim(&self) -> usize {
        self.layout.ndim()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }

    /// Shape, strides and offset.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The shared storage.
    pub fn storage(&self) -> &Storage<T> {
        &self.storage
    }

    /// True when the elements are row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// True when both tensors view the same storage (no copy between them).
    pub fn shares_storage(&self, other: &Tensor<T>) -> bool {
        self.storage.ptr_eq(&other.storage)
    }

    /// The elements in row-major order, when they are contiguous in storage.
    pub fn as_slice(&self) -> Option<&[T]> {
        if self.is_contiguous() {
            let start = self.layout.offset();
            Some(&self.storage.as_slice()[start..start + self.numel()])
        } else {
            None
        }
    }

    /// The elements in logical row-major order, copied out.
    pub fn to_vec(&self) -> Vec<T> {
        gather_contiguous(self.storage.as_slice(), &self.layout)
    }

    /// The single element of a one-element tensor (any shape with numel 1).
    ///
    /// # Errors
    /// `item` names the shape when the tensor does not have exactly one element.
    pub fn item(&self) -> Result<T> {
        if self.numel() != 1 {
            return Err(Error::shape("item", self.shape(), format!("has {} elements, not 1", self.numel())));
        }
        Ok(self.storage.as_slice()[self.layout.offset()])
    }

    /// The element at a multi-index.
    ///
    /// # Errors
    /// `get` names the shape when the index has the wrong length or is out of range.
    pub fn get(&self, index: &[usize]) -> Result<T> {
        if index.len() != self.ndim() || index.iter().zip(self.shape()).any(|(i, d)| i >= d) {
            return Err(Error::shape("get", self.shape(), format!("index {index:?} is out of range")));
        }
        Ok(self.storage.as_slice()[self.layout.index_offset(index)])
    }

    /// This tensor if contiguous (sharing storage), otherwise a contiguous copy.
    pub fn contiguous(&self) -> Tensor<T> {
        if self.is_contiguous() {
            self.clone()
        } else {
            self.gather_runs()
        }
    }

    /// The elements, mutably and without a copy, when this tensor is the only handle on its
    /// storage and its layout is the plain contiguous one over all of it; otherwise `None`.
    pub(crate) fn unique_mut(&mut self) -> Option<&mut [T]> {
        if self.is_plain() {
            self.storage.get_mut()
        } else {
            None
        }
    }

    /// Whether the layout is the plain contiguous one over all of the storage, from offset 0.
    fn is_plain(&self) -> bool {
        self.is_contiguous() && self.layout.offset() == 0 && self.storage.len() == self.numel()
    }

    /// The elements, mutably, copying first when the storage is shared or the layout is not a
    /// plain contiguous one from offset 0 (afterwards it is).
    pub fn make_mut(&mut self) -> &mut [T] {
        if !self.is_plain() {
            *self = self.gather_runs();
        }
        self.storage.make_mut()
    }

    /// Converts every element to another float type.
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor::from_contiguous(self.to_vec().into_iter().map(|v| U::from_f64(v.to_f64())).collect(), self.shape())
    }
}

// ─── Display, like PyTorch's ────────────────────────────────────────────────────

/// Elements per dim shown at each end when a tensor is summarised.
const EDGE_ITEMS: usize = 3;
/// Tensors with more elements than this are summarised with `...`.
const SUMMARY_THRESHOLD: usize = 1000;

/// The indices of a dim of size `n` that a print shows, in order, with `None` where the `...`
/// goes: the first and last [`EDGE_ITEMS`] when summarising a dim longer than twice that.
fn shown(n: usize, summarise: bool) -> impl Iterator<Item = Option<usize>> {
    let cut = summarise && n > 2 * EDGE_ITEMS;
    let (head, tail) = if cut { (0..EDGE_ITEMS, n - EDGE_ITEMS..n) } else { (0..n, n..n) };
    head.map(Some).chain(cut.then_some(None)).chain(tail.map(Some))
}

/// Calls `f` with the storage index of every element a print shows, in row-major order: only
/// those are read, so printing a huge (or hugely expanded) tensor copies nothing.
fn for_each_shown(shape: &[usize], strides: &[usize], base: usize, summarise: bool, f: &mut impl FnMut(usize)) {
    match shape.split_first() {
        None => f(base),
        Some((&n, rest)) => {
            for i in shown(n, summarise).flatten() {
                for_each_shown(rest, &strides[1..], base + i * strides[0], summarise, f);
            }
        }
    }
}

fn format_value<T: Float>(v: T, sci: bool) -> String {
    let x = v.to_f64();
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if sci {
        format!("{x:.4e}")
    } else {
        format!("{x:.4}")
    }
}

impl<T: Float> fmt::Display for Tensor<T> {
    /// Prints like PyTorch: `tensor([[1.0000, 2.0000],\n        [3.0000, 4.0000]])`, with four
    /// decimals (scientific when magnitudes span more than 1e8 or exceed 1e8), and `...` past
    /// 1000 elements, where only the first and last three entries of each dim are shown (and
    /// only those are read: the column width and notation come from them, as in PyTorch).
    /// f64 tensors add `, dtype=f64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summarise = self.numel() > SUMMARY_THRESHOLD;
        let data = self.storage.as_slice();
        let (shape, strides, offset) = (self.shape(), self.strides(), self.offset());
        let (mut lo, mut hi, mut any_finite) = (f64::INFINITY, 0f64, false);
        // An empty tensor shows no element: its dims are not walked (one may be 2^40 long).
        let empty = self.numel() == 0;
        if !empty {
            for_each_shown(shape, strides, offset, summarise, &mut |i| {
                let v = data[i].to_f64().abs();
                if v.is_finite() && v > 0.0 {
                    (lo, hi, any_finite) = (lo.min(v), hi.max(v), true);
                }
            });
        }
        let sci = any_finite && (hi >= 1e8 || (lo > 0.0 && hi / lo > 1e8) || hi < 1e-4);
        let mut width = 1;
        if !empty {
            for_each_shown(shape, strides, offset, summarise, &mut |i| {
                width = width.max(format_value(data[i], sci).len())
            });
        }
        let mut out = String::from("tensor(");
        /// How every element is printed: summarised or not, the column width, scientific or not.
        #[derive(Clone, Copy)]
        struct Style {
            summarise: bool,
            width: usize,
            sci: bool,
        }
        let style = Style { summarise, width, sci };
        fn rec<T: Float>(
            out: &mut String,
            data: &[T],
            shape: &[usize],
            strides: &[usize],
            base: usize,
            depth: usize,
            style: Style,
        ) {
            let Style { summarise, width, sci } = style;
            if shape.is_empty() {
                out.push_str(&format!("{:>width$}", format_value(data[base], sci)));
                return;
            }
            out.push('[');
            for (j, i) in shown(shape[0], summarise).enumerate() {
                if j > 0 {
                    if shape.len() == 1 {
                        out.push_str(", ");
                    } else {
                        out.push(',');
                        out.push_str(&"\n".repeat(shape.len() - 1));
                        out.push_str(&" ".repeat(depth + 8));
                    }
                }
                match i {
                    Some(i) => rec(out, data, &shape[1..], &strides[1..], base + i * strides[0], depth + 1, style),
                    None => out.push_str("..."),
                }
            }
            out.push(']');
        }
        if empty {
            out.push_str("[]");
            if self.ndim() > 1 {
                out.push_str(&format!(", size={:?}", shape));
            }
        } else {
            rec(&mut out, data, shape, strides, offset, 0, style);
        }
        if T::NAME == "f64" {
            out.push_str(", dtype=f64");
        }
        out.push(')');
        f.write_str(&out)
    }
}

impl<T: Float> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor<{}>{{shape: {:?}, strides: {:?}, offset: {}}} {}",
            T::NAME,
            self.shape(),
            self.strides(),
            self.offset(),
            self
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_pytorch_layout() {
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        assert_eq!(x.to_string(), "tensor([[1.0000, 2.0000],\n        [3.0000, 4.0000]])");
        assert_eq!(Tensor::<f64>::scalar(-0.5).to_string(), "tensor(-0.5000, dtype=f64)");
        let big = Tensor::<f32>::zeros(&[2000]);
        assert_eq!(big.to_string(), "tensor([0.0000, 0.0000, 0.0000, ..., 0.0000, 0.0000, 0.0000])");
    }

    #[test]
    fn a_summarised_print_is_formatted_from_the_shown_elements_only() {
        // As PyTorch's formatter, which sees only the summarised data: a huge value in the
        // hidden middle neither widens the columns nor switches to scientific notation.
        let mut v = vec![0.5f64; 2000];
        v[1000] = 1e12;
        let x = Tensor::from_vec(v, &[2000]).unwrap();
        assert_eq!(x.to_string(), "tensor([0.5000, 0.5000, 0.5000, ..., 0.5000, 0.5000, 0.5000], dtype=f64)");
        // A strided view prints as its contiguous copy, summarised or not.
        for n in [6, 40] {
            let x = Tensor::<f32>::arange(n * n).reshape(&[n, n]).unwrap();
            let t = x.t().unwrap().narrow(0, 1, n - 1).unwrap();
            assert_eq!(t.to_string(), t.contiguous().to_string());
            assert_eq!(format!("{t:?}").split_once("} ").unwrap().1, t.contiguous().to_string());
        }
    }

    #[test]
    fn from_vec_checks_the_length() {
        let e = Tensor::from_vec(vec![1.0f32; 5], &[2, 3]).unwrap_err();
        assert_eq!(e.to_string(), "from_vec: shape [2, 3]: needs 6 elements, got 5");
    }

    #[test]
    fn item_needs_one_element() {
        assert_eq!(Tensor::<f32>::full(&[1, 1], 2.5).item().unwrap(), 2.5);
        assert!(Tensor::<f32>::zeros(&[2]).item().is_err());
    }
}

crate::f32_default! {
    /// The constructors of [`Tensor`] whose arguments do not name the element type, for every
    /// element type: `Tensor::<f64>::zeros(&[2, 3])`, or `Tensor::<T>::zeros` in generic code.
    /// `Tensor::zeros(&[2, 3])` without a type means `f32` (the inherent functions of
    /// `Tensor<f32>` call these).
    ///
    /// ```
    /// use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Tensor::ones(&[2, 3]); // f32
    /// let y = Tensor::<f64>::ones(&[2, 3]);
    /// assert_eq!((x.shape(), y.shape()), (&[2, 3][..], &[2, 3][..]));
    /// ```
    TensorNew for Tensor {
    /// A tensor of `shape` with every element `value`.
    ///
    /// # Panics
    /// With [`TensorNew::try_full`]'s message when the shape is too large
    /// ([`checked_numel`](crate::checked_numel): more than [`MAX_NUMEL`](crate::MAX_NUMEL)
    /// elements); call `try_full` to get the `Err` instead.
    fn full(shape: &[usize], value: T => f32) -> Self {
        Self::try_full(shape, value).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A tensor of `shape` with every element `value`.
    ///
    /// # Errors
    /// `full` naming the shape when it is too large ([`checked_numel`](crate::checked_numel)).
    ///
    /// ```
    /// use tapegrad_tensor::Tensor;
    /// assert_eq!(Tensor::try_full(&[2], 0.5)?.to_vec(), vec![0.5, 0.5]);
    /// assert!(Tensor::try_full(&[1 << 32, 1 << 32], 0.5).is_err());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    fn try_full(shape: &[usize], value: T => f32) -> Result<Self> {
        let n = checked_numel("full", shape)?;
        Ok(Tensor::from_contiguous(crate::memory::filled(n, value), shape))
    }

    /// Zeros of `shape`.
    ///
    /// # Panics
    /// As [`TensorNew::full`]; [`TensorNew::try_zeros`] returns the `Err` instead.
    fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, T::ZERO)
    }

    /// Zeros of `shape`.
    ///
    /// # Errors
    /// `full` naming the shape when it is too large ([`checked_numel`](crate::checked_numel)).
    fn try_zeros(shape: &[usize]) -> Result<Self> {
        Self::try_full(shape, T::ZERO)
    }

    /// Ones of `shape`.
    ///
    /// # Panics
    /// As [`TensorNew::full`]; [`TensorNew::try_ones`] returns the `Err` instead.
    fn ones(shape: &[usize]) -> Self {
        Self::full(shape, T::ONE)
    }

    /// Ones of `shape`.
    ///
    /// # Errors
    /// `full` naming the shape when it is too large ([`checked_numel`](crate::checked_numel)).
    fn try_ones(shape: &[usize]) -> Result<Self> {
        Self::try_full(shape, T::ONE)
    }

    /// A 0-dimensional tensor holding `value`.
    fn scalar(value: T => f32) -> Self {
        Tensor::from_contiguous(vec![value], &[])
    }

    /// `[0, 1, ..., n - 1]`, shape `[n]`.
    ///
    /// # Panics
    /// With [`TensorNew::try_arange`]'s message when `n` is more than
    /// [`MAX_NUMEL`](crate::MAX_NUMEL).
    fn arange(n: usize) -> Self {
        Self::try_arange(n).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `[0, 1, ..., n - 1]`, shape `[n]`.
    ///
    /// # Errors
    /// `arange` naming the shape `[n]` when `n` is more than [`MAX_NUMEL`](crate::MAX_NUMEL).
    fn try_arange(n: usize) -> Result<Self> {
        checked_numel("arange", &[n])?;
        Ok(Tensor::from_contiguous((0..n).map(T::from_usize).collect(), &[n]))
    }

    /// Uniform samples in [0, 1) from `gen` (the same seed gives the same tensor everywhere).
    ///
    /// # Panics
    /// As [`TensorNew::full`]; [`TensorNew::try_rand`] returns the `Err` instead.
    fn rand(shape: &[usize], gen: &mut Generator) -> Self {
        Self::try_rand(shape, gen).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Uniform samples in [0, 1) from `gen`; nothing is drawn when the shape is rejected.
    ///
    /// # Errors
    /// `rand` naming the shape when it is too large ([`checked_numel`](crate::checked_numel)).
    fn try_rand(shape: &[usize], gen: &mut Generator) -> Result<Self> {
        checked_numel("rand", shape)?;
        let mut t = Self::zeros(shape);
        gen.fill_uniform(t.storage.make_mut());
        Ok(t)
    }

    /// Standard-normal samples from `gen`.
    ///
    /// # Panics
    /// As [`TensorNew::full`]; [`TensorNew::try_randn`] returns the `Err` instead.
    fn randn(shape: &[usize], gen: &mut Generator) -> Self {
        Self::try_randn(shape, gen).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Standard-normal samples from `gen`; nothing is drawn when the shape is rejected.
    ///
    /// # Errors
    /// `randn` naming the shape when it is too large ([`checked_numel`](crate::checked_numel)).
    fn try_randn(shape: &[usize], gen: &mut Generator) -> Result<Self> {
        checked_numel("randn", shape)?;
        let mut t = Self::zeros(shape);
        gen.fill_normal(t.storage.make_mut());
        Ok(t)
    }

    }
}
