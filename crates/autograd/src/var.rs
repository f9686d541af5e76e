//! `Var<T>`: a tensor recorded on the tape, and the `Backward` trait every op implements.
//!
//! A `Var` is a cheap handle (`Arc`) to a node: its value, its gradient (for parameters), and for
//! an op's output the *edge*: the op's saved tensors and the input `Var`s. The graph lives exactly
//! as long as something can reach it: dropping the last handle to an output frees its edge, so a
//! forward pass that never gets a backward leaks nothing, and two independent graphs never share
//! state. Node ids grow in execution order, so sorting reachable nodes by id gives a topological
//! order for backward.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use smallvec::SmallVec;
use tapegrad_tensor::{Float, Result, Tensor};

use crate::no_grad::is_grad_enabled;
use crate::ops::dropout::DropoutRecord;

/// The gradients an op's backward returns, one per input in the order `Var::from_op` was given
/// them (`None` where no gradient is needed).
///
/// Built from an array or a `Vec` (`Grads::from([Some(dx), None])`), from an iterator, or with
/// [`push`](Grads::push); read as a slice. Up to two gradients are stored inline, without an
/// allocation.
pub struct Grads<T: Float>(SmallVec<[Option<Tensor<T>>; 2]>);

impl<T: Float> Grads<T> {
    /// No gradients yet.
    pub fn new() -> Grads<T> {
        Grads(SmallVec::new())
    }

    /// One gradient, for a one-input op.
    pub fn one(g: Tensor<T>) -> Grads<T> {
        let mut grads = Grads::new();
        grads.push(Some(g));
        grads
    }

    /// Appends the next input's gradient.
    pub fn push(&mut self, g: Option<Tensor<T>>) {
        self.0.push(g);
    }
}

impl<T: Float> Default for Grads<T> {
    fn default() -> Self {
        Grads::new()
    }
}

impl<T: Float> std::ops::Deref for Grads<T> {
    type Target = [Option<Tensor<T>>];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<T: Float> std::ops::DerefMut for Grads<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<T: Float, const N: usize> From<[Option<Tensor<T>>; N]> for Grads<T> {
    fn from(grads: [Option<Tensor<T>>; N]) -> Self {
        grads.into_iter().collect()
    }
}

impl<T: Float> From<Vec<Option<Tensor<T>>>> for Grads<T> {
    fn from(grads: Vec<Option<Tensor<T>>>) -> Self {
        Grads(SmallVec::from_vec(grads))
    }
}

impl<T: Float> FromIterator<Option<Tensor<T>>> for Grads<T> {
    fn from_iter<I: IntoIterator<Item = Option<Tensor<T>>>>(iter: I) -> Self {
        Grads(iter.into_iter().collect())
    }
}

impl<T: Float> IntoIterator for Grads<T> {
    type Item = Option<Tensor<T>>;
    type IntoIter = smallvec::IntoIter<[Option<Tensor<T>>; 2]>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<T: Float> fmt::Debug for Grads<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|g| g.as_ref().map(|t| t.shape().to_vec()))).finish()
    }
}

/// The backward half of an op: what it saved in forward, and how to turn the output's gradient
/// into its inputs' gradients.
pub trait Backward<T: Float>: Send + Sync {
    /// The op's name, as listed in `docs/derivatives.md`.
    fn name(&self) -> &'static str;

    /// The gradient of each input given `dy`, the gradient of the output. `needs[i]` says
    /// whether input `i` wants one; return `None` for those that don't.
    fn backward(&self, dy: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>>;

    /// [`Backward::backward`] given ownership of `dy`, which the tape no longer needs, so that
    /// a formula may write its result into `dy`'s buffer when nothing else holds it (the small
    /// elementwise ops do, through [`Tensor::try_zip_map_in_place`]). The tape calls this one;
    /// the default borrows `dy` for [`Backward::backward`].
    fn backward_owned(&self, dy: Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        self.backward(&dy, needs)
    }

    /// The tensors saved for backward (for the tape listing's byte count).
    fn saved(&self) -> Vec<&Tensor<T>> {
        Vec::new()
    }

    /// Bytes held for backward besides [`Backward::saved`] tensors (a dropout's bit mask).
    fn extra_bytes(&self) -> usize {
        0
    }

    /// The dropout record, for a dropout op.
    fn dropout(&self) -> Option<&DropoutRecord> {
        None
    }

    /// The gradient of each input as a recorded [`Var`], for `create_graph`
    /// ([`grad`](crate::grad)): the same rule as [`Backward::backward`], written with `Var` ops
    /// that have derivatives of their own, so that the gradient can be differentiated again.
    /// `dy` is the output's gradient, `inputs` the op's inputs (in the order `Var::from_op` was
    /// given them) and `output` the op's output, for formulas written with it (tanh's
    /// `dy (1 - y²)`). `needs[i]` says whether input `i` wants a gradient.
    ///
    /// # Errors
    /// The default is an [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming the op:
    /// an op without this method cannot be differentiated twice, and says so rather than give a
    /// wrong zero.
    fn backward_var(&self, dy: &Var<T>, inputs: &[Var<T>], output: &Var<T>, needs: &[bool]) -> Result<VarGrads<T>> {
        let _ = (dy, inputs, output, needs);
        Err(no_double_backward(self.name()))
    }
}

/// The gradients [`Backward::backward_var`] returns: one per input, `None` where none is needed.
pub type VarGrads<T> = Vec<Option<Var<T>>>;

/// The error of an op whose backward cannot be recorded (see [`Backward::backward_var`]).
pub(crate) fn no_double_backward(op: &'static str) -> tapegrad_tensor::Error {
    tapegrad_tensor::Error::arg(
        op,
        "this op does not support create_graph (double backward) yet: its gradient cannot be differentiated again",
    )
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The id the next node will get: every node made from now on has an id at least this.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.load(Ordering::Relaxed)
}

pub(crate) struct Edge<T: Float> {
    pub(crate) op: Box<dyn Backward<T>>,
    pub(crate) inputs: SmallVec<[Var<T>; 2]>,
}

pub(crate) enum EdgeState<T: Float> {
    /// A leaf: a constant or a parameter.
    Leaf,
    /// An op output whose saved tensors are still held.
    Live(Edge<T>),
    /// An op output after a backward freed its saved tensors (the op's name is kept for errors).
    Freed(&'static str),
}

pub(crate) struct Node<T: Float> {
    pub(crate) id: u64,
    pub(crate) value: RwLock<Tensor<T>>,
    pub(crate) requires_grad: bool,
    pub(crate) grad: Mutex<Option<Tensor<T>>>,
    pub(crate) edge: Mutex<EdgeState<T>>,
}

impl<T: Float> Drop for Node<T> {
    /// Frees a long chain iteratively: the default recursive drop of `inputs` would overflow the
    /// stack on a graph of some hundred thousand ops.
    fn drop(&mut self) {
        crate::hooks::forget(self.id);
        let edge = self.edge.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut stack: Vec<Var<T>> = match std::mem::replace(edge, EdgeState::Leaf) {
            EdgeState::Live(edge) => edge.inputs.into_vec(),
            _ => return,
        };
        while let Some(var) = stack.pop() {
            if let Some(mut node) = Arc::into_inner(var.0) {
                let edge = node.edge.get_mut().unwrap_or_else(|e| e.into_inner());
                if let EdgeState::Live(edge) = std::mem::replace(edge, EdgeState::Leaf) {
                    stack.extend(edge.inputs);
                }
                // `node` drops here with a Leaf edge: no recursion.
            }
        }
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the values are plain
/// tensors: there is no invariant a panic could have broken half-way).
pub(crate) fn lock<M>(m: &Mutex<M>) -> MutexGuard<'_, M> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tensor on the tape. Cloning shares the node.
///
/// ```
/// use tapegrad_autograd::Var;
/// use tapegrad_tensor::Tensor;
/// let w = Var::parameter(Tensor::from_vec(vec![1.0f32, -2.0], &[2])?);
/// let loss = w.mul(&w)?.sum_all();
/// loss.backward()?;
/// assert_eq!(w.grad().unwrap().to_vec(), vec![2.0, -4.0]);
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub struct Var<T: Float = f32>(pub(crate) Arc<Node<T>>);

impl<T: Float> Clone for Var<T> {
    fn clone(&self) -> Self {
        Var(Arc::clone(&self.0))
    }
}

impl<T: Float> Var<T> {
    fn leaf(value: Tensor<T>, requires_grad: bool) -> Var<T> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        // A parameter made inside `gradcheck_per_op`'s function is numbered (and may be nudged).
        let value = if requires_grad { crate::gradcheck::observe(id, value) } else { value };
        Var(Arc::new(Node {
            id,
            value: RwLock::new(value),
            requires_grad,
            grad: Mutex::new(None),
            edge: Mutex::new(EdgeState::Leaf),
        }))
    }

    /// A constant leaf: no gradient flows into it.
    pub fn new(value: Tensor<T>) -> Var<T> {
        Var::leaf(value, false)
    }

    /// A leaf that requires a gradient and accumulates it across backward passes until
    /// [`Var::zero_grad`], like `nn.Parameter`.
    pub fn parameter(value: Tensor<T>) -> Var<T> {
        Var::leaf(value, true)
    }

    /// Records an op's output: the way to add a custom differentiable op (like PyTorch's
    /// `autograd.Function`). `make` builds the backward struct (what it saves) and is only called
    /// when recording is on and some input requires a gradient; otherwise the output is a
    /// constant and nothing is saved. `value` must already be the op's output.
    ///
    /// ```
    /// use tapegrad_autograd::{Backward, Grads, Result, Var};
    /// use tapegrad_tensor::Tensor;
    /// // y = 3 x, written as a custom op.
    /// struct Triple;
    /// impl Backward<f32> for Triple {
    ///     fn name(&self) -> &'static str { "triple" }
    ///     fn backward(&self, dy: &Tensor<f32>, _: &[bool]) -> Result<Grads<f32>> {
    ///         Ok(Grads::one(dy.mul_scalar(3.0)))
    ///     }
    /// }
    /// let x = Var::parameter(Tensor::<f32>::ones(&[2]));
    /// let y = Var::from_op(x.value().mul_scalar(3.0), &[&x], || Triple);
    /// y.sum_all().backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![3.0, 3.0]);
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn from_op<B: Backward<T> + 'static>(value: Tensor<T>, inputs: &[&Var<T>], make: impl FnOnce() -> B) -> Var<T> {
        if !is_grad_enabled() || !inputs.iter().any(|v| v.requires_grad()) {
            return Var::new(value);
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        // Inside `gradcheck_per_op`'s function, the node is numbered (and may be nudged or kept).
        let value = crate::gradcheck::observe(id, value);
        Var(Arc::new(Node {
            id,
            value: RwLock::new(value),
            requires_grad: true,
            grad: Mutex::new(None),
            edge: Mutex::new(EdgeState::Live(Edge {
                op: Box::new(make()),
                inputs: match inputs {
                    [a] => {
                        let mut one = SmallVec::new();
                        one.push((*a).clone());
                        one
                    }
                    [a, b] => SmallVec::from_buf([(*a).clone(), (*b).clone()]),
                    _ => inputs.iter().map(|v| (*v).clone()).collect(),
                },
            })),
        }))
    }

    /// The value (a cheap clone sharing storage).
    pub fn value(&self) -> Tensor<T> {
        self.0.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `f` on the value without cloning it (under the value's read lock, so `f` must not
    /// touch this or another `Var`'s value: ops take a second operand's value before calling this).
    pub(crate) fn with_value<R>(&self, f: impl FnOnce(&Tensor<T>) -> R) -> R {
        f(&self.0.value.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces a leaf's value (what optimisers do after a step). The shape may change only for
    /// constants; the gradient is kept.
    pub fn set_value(&self, value: Tensor<T>) {
        *self.0.value.write().unwrap_or_else(|e| e.into_inner()) = value;
    }

    /// Changes the value in place: `f` gets its elements in row-major order, copied first only
    /// when another tensor still shares the storage (so a tensor taken with [`Var::value`] before
    /// keeps its old elements). What optimisers use: no new buffer per step.
    ///
    /// ```
    /// use tapegrad_autograd::Var;
    /// use tapegrad_tensor::Tensor;
    /// let w = Var::parameter(Tensor::<f32>::ones(&[2]));
    /// let before = w.value();
    /// w.update_value(|x| x.iter_mut().for_each(|v| *v -= 0.5));
    /// assert_eq!((w.value().to_vec(), before.to_vec()), (vec![0.5, 0.5], vec![1.0, 1.0]));
    /// ```
    pub fn update_value(&self, f: impl FnOnce(&mut [T])) {
        f(self.0.value.write().unwrap_or_else(|e| e.into_inner()).make_mut());
    }

    /// The shape of the value.
    pub fn shape(&self) -> Vec<usize> {
        self.value().shape().to_vec()
    }

    /// The accumulated gradient of a parameter, if a backward reached it.
    pub fn grad(&self) -> Option<Tensor<T>> {
        lock(&self.0.grad).clone()
    }

    /// Sets or clears the gradient (optimisers and gradient clipping use this).
    pub fn set_grad(&self, grad: Option<Tensor<T>>) {
        *lock(&self.0.grad) = grad;
    }

    /// Clears the accumulated gradient.
    pub fn zero_grad(&self) {
        self.set_grad(None);
    }

    /// True for parameters and for every op output that depends on one (while recording).
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// True for leaves (constants and parameters).
    pub fn is_leaf(&self) -> bool {
        matches!(*lock(&self.0.edge), EdgeState::Leaf)
    }

    /// A constant sharing this value's storage: the graph stops here.
    pub fn detach(&self) -> Var<T> {
        Var::new(self.value())
    }

    /// True when both handles are the same node.
    pub fn same_node(&self, other: &Var<T>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The node's id: its position in execution order.
    pub fn id(&self) -> u64 {
        self.0.id
    }
}

impl<T: Float> std::fmt::Debug for Var<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match &*lock(&self.0.edge) {
            EdgeState::Leaf if self.requires_grad() => "parameter",
            EdgeState::Leaf => "constant",
            EdgeState::Live(e) => e.op.name(),
            EdgeState::Freed(name) => name,
        };
        write!(f, "Var({op}, {})", self.value())
    }
}

impl<T: Float> std::fmt::Display for Var<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.value(), f)
    }
}
