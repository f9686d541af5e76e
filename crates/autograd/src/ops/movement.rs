//! Views and the ops that assemble or pick pieces. Each backward routes the gradient back to
//! where the elements came from (views invert their layout change; selections scatter-add).

use smallvec::SmallVec;
use tapegrad_tensor::TensorNew;
use tapegrad_tensor::{Float, Result, Tensor};

use super::one;
use crate::var::{Backward, Grads, Var, VarGrads};

// ─── Reshape ─────────────────────  dx = dz reshaped back
struct Reshape {
    in_shape: Vec<usize>,
}
impl<T: Float> Backward<T> for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(dz.reshape(&self.in_shape)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        Ok(vec![Some(dz.reshape(&self.in_shape)?)])
    }
}

// ─── Transpose ───────────────────  dx = dz with the same dims swapped back
struct Transpose {
    a: usize,
    b: usize,
}
impl<T: Float> Backward<T> for Transpose {
    fn name(&self) -> &'static str {
        "transpose"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(dz.transpose(self.a, self.b)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        Ok(vec![Some(dz.transpose(self.a, self.b)?)])
    }
}

// ─── Permute ─────────────────────  dx = dz permuted by the inverse permutation
struct Permute {
    inverse: Vec<usize>,
}
impl<T: Float> Backward<T> for Permute {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(dz.permute(&self.inverse)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        Ok(vec![Some(dz.permute(&self.inverse)?)])
    }
}

// ─── Narrow ──────────────────────  dx = zeros with dz added at start..start+len of dim
struct Narrow {
    in_shape: Vec<usize>,
    dim: usize,
    start: usize,
}
impl<T: Float> Backward<T> for Narrow {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        let index: Vec<usize> = (self.start..self.start + dz.shape()[self.dim]).collect();
        Ok(one(Tensor::<T>::zeros(&self.in_shape).index_add(self.dim, &index, dz)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        // dz between zero blocks, through `cat`, whose backward narrows again.
        let len = dz.value().shape()[self.dim];
        let block = |n: usize| {
            let mut shape = self.in_shape.clone();
            shape[self.dim] = n;
            Var::new(Tensor::<T>::zeros(&shape))
        };
        let (before, after) = (block(self.start), block(self.in_shape[self.dim] - self.start - len));
        Ok(vec![Some(Var::cat(&[&before, dz, &after], self.dim)?)])
    }
}

// ─── Expand ──────────────────────  dx = dz summed over the broadcast dims
struct Expand {
    in_shape: Vec<usize>,
}
impl<T: Float> Backward<T> for Expand {
    fn name(&self) -> &'static str {
        "expand"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(dz.sum_to(&self.in_shape)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        Ok(vec![Some(dz.sum_to(&self.in_shape)?)])
    }
}

// ─── Unsqueeze / Squeeze ─────────  each is the other's backward
struct Unsqueeze {
    dim: usize,
}
impl<T: Float> Backward<T> for Unsqueeze {
    fn name(&self) -> &'static str {
        "unsqueeze"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(dz.squeeze(self.dim)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        Ok(vec![Some(dz.squeeze(self.dim)?)])
    }
}

struct Squeeze {
    dim: usize,
}
impl<T: Float> Backward<T> for Squeeze {
    fn name(&self) -> &'static str {
        "squeeze"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(dz.unsqueeze(self.dim)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        Ok(vec![Some(dz.unsqueeze(self.dim)?)])
    }
}

// ─── Contiguous ──────────────────  a copy: the gradient passes through
struct Contiguous;
impl<T: Float> Backward<T> for Contiguous {
    fn name(&self) -> &'static str {
        "contiguous"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(dz.clone()))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        Ok(vec![Some(dz.clone())])
    }
}

// ─── Cat ─────────────────────────  input i gets its slice of dz along dim
struct Cat {
    dim: usize,
    sizes: Vec<usize>,
}
impl<T: Float> Backward<T> for Cat {
    fn name(&self) -> &'static str {
        "cat"
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        let mut start = 0;
        let mut grads = Grads::new();
        for (i, &len) in self.sizes.iter().enumerate() {
            grads.push(if needs[i] { Some(dz.narrow(self.dim, start, len)?) } else { None });
            start += len;
        }
        Ok(grads)
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        let mut start = 0;
        let mut grads = vec![];
        for (i, &len) in self.sizes.iter().enumerate() {
            grads.push(if needs[i] { Some(dz.narrow(self.dim, start, len)?) } else { None });
            start += len;
        }
        Ok(grads)
    }
}

// ─── Stack ───────────────────────  input i gets entry i of dz along dim
struct Stack {
    dim: usize,
}
impl<T: Float> Backward<T> for Stack {
    fn name(&self) -> &'static str {
        "stack"
    }
    fn backward(&self, dz: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        let mut grads = Grads::new();
        for (i, &need) in needs.iter().enumerate() {
            grads.push(if need { Some(dz.narrow(self.dim, i, 1)?.squeeze(self.dim)?) } else { None });
        }
        Ok(grads)
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        let mut grads = vec![];
        for (i, &need) in needs.iter().enumerate() {
            grads.push(if need { Some(dz.narrow(self.dim, i, 1)?.squeeze(self.dim)?) } else { None });
        }
        Ok(grads)
    }
}

// ─── IndexSelect ─────────────────  dx = zeros with dz index-added along dim
struct IndexSelect {
    in_shape: Vec<usize>,
    dim: usize,
    index: Vec<usize>,
}
impl<T: Float> Backward<T> for IndexSelect {
    fn name(&self) -> &'static str {
        "index_select"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(Tensor::<T>::zeros(&self.in_shape).index_add(self.dim, &self.index, dz)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        // The recorded adjoint: `index_add`, whose own backward is `index_select` again.
        let zeros = Var::new(Tensor::<T>::zeros(&self.in_shape));
        Ok(vec![Some(zeros.index_add(self.dim, &self.index, dz)?)])
    }
    fn extra_bytes(&self) -> usize {
        self.index.len() * std::mem::size_of::<usize>()
    }
}

// ─── Gather ──────────────────────  dx = zeros with dz scatter-added along dim
struct Gather {
    in_shape: Vec<usize>,
    dim: usize,
    index: Vec<usize>,
    index_shape: Vec<usize>,
}
impl<T: Float> Backward<T> for Gather {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn backward(&self, dz: &Tensor<T>, _: &[bool]) -> Result<Grads<T>> {
        Ok(one(Tensor::<T>::zeros(&self.in_shape).scatter_add(self.dim, &self.index, &self.index_shape, dz)?))
    }
    fn backward_var(&self, dz: &Var<T>, _: &[Var<T>], _: &Var<T>, _: &[bool]) -> Result<VarGrads<T>> {
        // The recorded adjoint: `scatter_add`, whose own backward is `gather` again.
        let zeros = Var::new(Tensor::<T>::zeros(&self.in_shape));
        Ok(vec![Some(zeros.scatter_add(self.dim, &self.index, &self.index_shape, dz)?)])
    }
    fn extra_bytes(&self) -> usize {
        self.index.len() * std::mem::size_of::<usize>()
    }
}

impl<T: Float> Var<T> {
    /// The same elements in a new shape (a view when the layout allows).
    ///
    /// # Errors
    /// `reshape` when the element counts differ.
    pub fn reshape(&self, shape: &[usize]) -> Result<Var<T>> {
        let x = self.value();
        let z = x.reshape(shape)?;
        Ok(Var::from_op(z, &[self], || Reshape { in_shape: x.shape().to_vec() }))
    }

    /// Swaps dims `a` and `b` (a view).
    ///
    /// # Errors
    /// `transpose` for a dim out of range.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Var<T>> {
        let z = self.value().transpose(a, b)?;
        Ok(Var::from_op(z, &[self], || Transpose { a, b }))
    }

    /// The transpose of a matrix (0-D and 1-D values are returned as they are).
    ///
    /// # Errors
    /// `t` for more than 2 dims.
    pub fn t(&self) -> Result<Var<T>> {
        let z = self.value().t()?;
        if z.ndim() < 2 {
            return Ok(self.clone());
        }
        Ok(Var::from_op(z, &[self], || Transpose { a: 0, b: 1 }))
    }

    /// Reorders the dims (a view).
    ///
    /// # Errors
    /// `permute` when `dims` is not a permutation.
    pub fn permute(&self, dims: &[usize]) -> Result<Var<T>> {
        let z = self.value().permute(dims)?;
        let mut inverse = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        Ok(Var::from_op(z, &[self], || Permute { inverse }))
    }

    /// Entries `start..start + len` of `dim` (a view).
    ///
    /// # Errors
    /// `narrow` for a dim or range out of bounds.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Var<T>> {
        let x = self.value();
        let z = x.narrow(dim, start, len)?;
        Ok(Var::from_op(z, &[self], || Narrow { in_shape: x.shape().to_vec(), dim, start }))
    }

    /// Broadcasts to `shape` (a view with stride 0 on repeated dims).
    ///
    /// # Errors
    /// `expand` when a dim that is not 1 would change.
    pub fn expand(&self, shape: &[usize]) -> Result<Var<T>> {
        let x = self.value();
        let z = x.expand(shape)?;
        Ok(Var::from_op(z, &[self], || Expand { in_shape: x.shape().to_vec() }))
    }

    /// Inserts a dim of size 1 (a view).
    ///
    /// # Errors
    /// `unsqueeze` when `dim > ndim`.
    pub fn unsqueeze(&self, dim: usize) -> Result<Var<T>> {
        let z = self.value().unsqueeze(dim)?;
        Ok(Var::from_op(z, &[self], || Unsqueeze { dim }))
    }

    /// Removes a dim of size 1 (a view).
    ///
    /// # Errors
    /// `squeeze` when the dim is out of range or not of size 1.
    pub fn squeeze(&self, dim: usize) -> Result<Var<T>> {
        let z = self.value().squeeze(dim)?;
        Ok(Var::from_op(z, &[self], || Squeeze { dim }))
    }

    /// A contiguous copy when the value is not contiguous (recorded; the gradient passes through).
    pub fn contiguous(&self) -> Var<T> {
        Var::from_op(self.value().contiguous(), &[self], || Contiguous)
    }

    /// Concatenates along `dim`.
    ///
    /// # Errors
    /// `cat` for an empty list or shapes that differ outside `dim`.
    pub fn cat(vars: &[&Var<T>], dim: usize) -> Result<Var<T>> {
        let values: Vec<Tensor<T>> = vars.iter().map(|v| v.value()).collect();
        let refs: Vec<&Tensor<T>> = values.iter().collect();
        let z = Tensor::cat(&refs, dim)?;
        let sizes = values.iter().map(|v| v.shape()[dim]).collect();
        Ok(Var::from_op(z, vars, || Cat { dim, sizes }))
    }

    /// Stacks equally shaped values along a new dim.
    ///
    /// # Errors
    /// `stack` for an empty list or differing shapes.
    pub fn stack(vars: &[&Var<T>], dim: usize) -> Result<Var<T>> {
        let values: SmallVec<[Tensor<T>; 4]> = vars.iter().map(|v| v.value()).collect();
        let refs: Vec<&Tensor<T>> = values.iter().collect();
        let z = Tensor::stack(&refs, dim)?;
        Ok(Var::from_op(z, vars, || Stack { dim }))
    }

    /// The entries `index` along `dim`.
    ///
    /// # Errors
    /// `index_select` for an index out of range.
    pub fn index_select(&self, dim: usize, index: &[usize]) -> Result<Var<T>> {
        let x = self.value();
        let z = x.index_select(dim, index)?;
        Ok(Var::from_op(z, &[self], || IndexSelect { in_shape: x.shape().to_vec(), dim, index: index.to_vec() }))
    }

    /// `torch.gather`: `out[i][j] = self[i][index[i][j]]` for `dim = 1`, and so on.
    ///
    /// # Errors
    /// `gather` for an index out of range or an index shape that does not fit.
    pub fn gather(&self, dim: usize, index: &[usize], index_shape: &[usize]) -> Result<Var<T>> {
        let x = self.value();
        let z = x.gather(dim, index, index_shape)?;
        Ok(Var::from_op(z, &[self], || Gather {
            in_shape: x.shape().to_vec(),
            dim,
            index: index.to_vec(),
            index_shape: index_shape.to_vec(),
        }))
    }
}
