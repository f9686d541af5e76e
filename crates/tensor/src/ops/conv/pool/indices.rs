//! [`MaxPoolIndices`]: which input element each output of a max pooling took, what its backward
//! routes the gradient by.

use crate::error::{Error, Result};
use crate::kernels::pool::{code_at, words_per_row};
use crate::layout::checked_numel;

/// Which input element each output of [`Tensor::max_pool2d_with_indices`] took, with the input
/// and output shapes it belongs to: what [`Tensor::max_pool2d_backward`] needs.
///
/// For the common 2 x 2 window with stride 2 and no padding it holds two bits per output (the
/// position in the window); otherwise the flat index `h * W + w` within each `(n, c)` plane, as
/// PyTorch's `return_indices=True` gives. [`MaxPoolIndices::to_flat`] gives PyTorch's form in
/// either case; [`MaxPoolIndices::from_flat`] builds indices from it.
///
/// [`Tensor::max_pool2d_with_indices`]: crate::Tensor::max_pool2d_with_indices
/// [`Tensor::max_pool2d_backward`]: crate::Tensor::max_pool2d_backward
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxPoolIndices {
    /// `[N, C, H, W]` of the pooled input.
    input: [usize; 4],
    /// `[N, C, OH, OW]` of the output.
    output: [usize; 4],
    pub(in crate::ops::conv) kind: Kind,
}

/// How the chosen positions are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::ops::conv) enum Kind {
    /// 2 x 2 windows with stride 2 and no padding: output `(i, j)` took input row
    /// `2i + code / 2`, column `2j + code % 2`, the codes in bit planes
    /// (`kernels::pool::words_per_row(OW)` words per output row).
    Window2x2(Vec<u64>),
    /// The flat index `h * W + w` within the plane.
    Flat(Vec<usize>),
}

impl Drop for MaxPoolIndices {
    /// Gives the 2 x 2 codes back to the buffer cache (`crate::memory`): the next step's
    /// pooling takes the same words instead of faulting in fresh pages.
    fn drop(&mut self) {
        if let Kind::Window2x2(codes) = &mut self.kind {
            crate::memory::recycle(std::mem::take(codes));
        }
    }
}

impl MaxPoolIndices {
    /// Indices as the forward made them (shapes and lengths already consistent).
    pub(in crate::ops::conv) fn new(input: [usize; 4], output: [usize; 4], kind: Kind) -> MaxPoolIndices {
        MaxPoolIndices { input, output, kind }
    }

    /// Indices in PyTorch's form: for every output element of an `output_shape` `[N, C, OH,
    /// OW]` pooling (row-major), the flat index `h * W + w` of the input element it took within
    /// its `(n, c)` plane of `input_shape` `[N, C, H, W]`.
    ///
    /// # Errors
    /// `max_pool2d_backward` when the shapes are not 4-D, their `N` or `C` differ, the number of
    /// indices is not the output's element count, or an index is `>= H * W`.
    ///
    /// ```
    /// # use tapegrad_tensor::ops::conv::MaxPoolIndices;
    /// let idx = MaxPoolIndices::from_flat(vec![3], &[1, 1, 2, 2], &[1, 1, 1, 1])?;
    /// assert_eq!(idx.to_flat(), vec![3]);
    /// assert!(MaxPoolIndices::from_flat(vec![4], &[1, 1, 2, 2], &[1, 1, 1, 1]).is_err());
    /// # Ok::<(), tapegrad_tensor::Error>(())
    /// ```
    pub fn from_flat(indices: Vec<usize>, input_shape: &[usize], output_shape: &[usize]) -> Result<MaxPoolIndices> {
        const OP: &str = "max_pool2d_backward";
        let (Ok(input), Ok(output)) = (<[usize; 4]>::try_from(input_shape), <[usize; 4]>::try_from(output_shape))
        else {
            return Err(Error::mismatch(
                OP,
                input_shape,
                output_shape,
                "expects an input [N, C, H, W] and an output [N, C, OH, OW]",
            ));
        };
        if input[..2] != output[..2] {
            return Err(Error::mismatch(OP, input_shape, output_shape, "the input and output differ in N or C"));
        }
        checked_numel(OP, input_shape)?;
        let count = checked_numel(OP, output_shape)?;
        if indices.len() != count {
            return Err(Error::shape(
                OP,
                output_shape,
                format!("needs one index per output element, got {}", indices.len()),
            ));
        }
        let image = input[2] * input[3];
        if let Some(&bad) = indices.iter().find(|&&i| i >= image) {
            return Err(Error::arg(OP, format!("index {bad} is outside the {}x{} plane", input[2], input[3])));
        }
        Ok(MaxPoolIndices { input, output, kind: Kind::Flat(indices) })
    }

    /// The flat index `h * W + w` within its plane of the input element each output element
    /// took, row-major over the output: PyTorch's `return_indices=True` form.
    pub fn to_flat(&self) -> Vec<usize> {
        match &self.kind {
            Kind::Flat(v) => v.clone(),
            Kind::Window2x2(words) => {
                let [_, _, oh, ow] = self.output;
                let w = self.input[3];
                let row_words = words_per_row(ow);
                (0..self.len())
                    .map(|e| {
                        let (row, i, j) = (e / ow, e / ow % oh, e % ow);
                        let code = code_at(&words[row * row_words..], j);
                        (2 * i + code / 2) * w + 2 * j + code % 2
                    })
                    .collect()
            }
        }
    }

    /// The number of output elements (one index each).
    pub fn len(&self) -> usize {
        self.output.iter().product()
    }

    /// True when the pooling had no output element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pooled input's shape, `[N, C, H, W]`.
    pub fn input_shape(&self) -> &[usize] {
        &self.input
    }

    /// The pooling's output shape, `[N, C, OH, OW]`.
    pub fn output_shape(&self) -> &[usize] {
        &self.output
    }

    /// Bytes held for the indices (what a tape entry keeps alive).
    pub fn bytes(&self) -> usize {
        match &self.kind {
            Kind::Flat(v) => std::mem::size_of_val(v.as_slice()),
            Kind::Window2x2(words) => std::mem::size_of_val(words.as_slice()),
        }
    }
}
