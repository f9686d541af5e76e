//! Gradient hooks (`Var::register_hook`) and `retain_grad` for intermediate values.
//!
//! The hooks live in one table keyed by node id, outside the nodes, so that a node without a
//! hook costs nothing: a walk looks the table up only while some hook is registered (one atomic
//! load per walk otherwise), and a node's drop removes its entries only then.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tapegrad_tensor::{Float, Tensor};

use crate::var::{lock, Node, Var};

/// A hook on the gradients of element type `T`.
type HookFn<T> = Arc<dyn Fn(&Tensor<T>) -> Option<Tensor<T>> + Send + Sync>;

/// The hooks of each node (by node id), in registration order, each with its own id; a hook is
/// a [`HookFn`] of the node's element type.
type Table = HashMap<u64, Vec<(u64, Box<dyn Any + Send + Sync>)>>;

static HOOKS: Mutex<Option<Table>> = Mutex::new(None);
/// How many hooks are registered in the process: zero lets walks and drops skip the table.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static NEXT_HOOK: AtomicU64 = AtomicU64::new(1);

/// Removes a hook registered by [`Var::register_hook`] (dropping the handle keeps the hook).
#[derive(Debug)]
#[must_use = "the handle is the only way to remove the hook"]
pub struct HookHandle {
    node: u64,
    hook: u64,
}

impl HookHandle {
    /// Removes the hook; later backward passes no longer call it. Removing twice does nothing.
    pub fn remove(self) {
        let mut table = lock(&HOOKS);
        if let Some(hooks) = table.as_mut().and_then(|t| t.get_mut(&self.node)) {
            let before = hooks.len();
            hooks.retain(|(id, _)| *id != self.hook);
            ACTIVE.fetch_sub(before - hooks.len(), Ordering::Relaxed);
            if hooks.is_empty() {
                table.as_mut().map(|t| t.remove(&self.node));
            }
        }
    }
}

/// True when some hook is registered (what a walk checks once).
pub(crate) fn any_hooks() -> bool {
    ACTIVE.load(Ordering::Relaxed) > 0
}

/// Runs the hooks of node `id` on `g` in registration order, each seeing the previous one's
/// result: the replacement, or `None` when no hook replaced `g`.
pub(crate) fn run_hooks<T: Float>(id: u64, g: &Tensor<T>) -> Option<Tensor<T>> {
    let hooks: Vec<HookFn<T>> = {
        let table = lock(&HOOKS);
        let hooks = table.as_ref()?.get(&id)?;
        hooks.iter().filter_map(|(_, h)| h.downcast_ref::<HookFn<T>>().cloned()).collect()
    };
    // The table is unlocked while hooks run: a hook may register or remove hooks.
    let mut current: Option<Tensor<T>> = None;
    for hook in hooks {
        if let Some(replaced) = hook(current.as_ref().unwrap_or(g)) {
            current = Some(replaced);
        }
    }
    current
}

/// Forgets the hooks of a dropped node.
pub(crate) fn forget(id: u64) {
    if !any_hooks() {
        return;
    }
    if let Some(hooks) = lock(&HOOKS).as_mut().and_then(|t| t.remove(&id)) {
        ACTIVE.fetch_sub(hooks.len(), Ordering::Relaxed);
    }
}

impl<T: Float> Var<T> {
    /// Registers `hook` on the gradient flowing into this value, as PyTorch's
    /// `Tensor.register_hook`: each backward pass ([`Var::backward`], [`grad`](crate::grad))
    /// that reaches this value calls `hook` with its total gradient (of this value's shape)
    /// before passing it on; returning `Some(g)` replaces the gradient with `g` (which must keep
    /// the shape), `None` leaves it. Hooks run in registration order. On a parameter the hook
    /// sees the gradient before it is accumulated into [`Var::grad`]. Under `create_graph` a
    /// hook sees the value of the recorded gradient, and a replacement is a constant.
    ///
    /// Returns the handle that removes the hook ([`HookHandle::remove`]); the hook is also
    /// dropped with the value's node.
    ///
    /// ```
    /// use tapegrad_autograd::Var;
    /// use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::parameter(Tensor::<f32>::ones(&[2]));
    /// let h = x.mul_scalar(3.0);
    /// let handle = h.register_hook(|g| Some(g.mul_scalar(10.0))); // scales the gradient
    /// h.sum_all().backward()?;
    /// assert_eq!(x.grad().unwrap().to_vec(), vec![30.0, 30.0]);
    /// handle.remove();
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn register_hook(&self, hook: impl Fn(&Tensor<T>) -> Option<Tensor<T>> + Send + Sync + 'static) -> HookHandle {
        let id = NEXT_HOOK.fetch_add(1, Ordering::Relaxed);
        let f: HookFn<T> = Arc::new(hook);
        lock(&HOOKS).get_or_insert_with(HashMap::new).entry(self.id()).or_default().push((id, Box::new(f)));
        ACTIVE.fetch_add(1, Ordering::Relaxed);
        HookHandle { node: self.id(), hook: id }
    }

    /// Keeps the gradient of this intermediate value in [`Var::grad`] on each backward pass
    /// (accumulating, as for a parameter), as PyTorch's `Tensor.retain_grad`. For a leaf it does
    /// nothing: a parameter keeps its gradient anyway.
    ///
    /// ```
    /// use tapegrad_autograd::Var;
    /// use tapegrad_tensor::{Tensor, TensorNew};
    /// let x = Var::parameter(Tensor::<f32>::ones(&[2]));
    /// let h = x.mul_scalar(3.0);
    /// h.retain_grad();
    /// h.mul(&h)?.sum_all().backward()?;
    /// assert_eq!(h.grad().unwrap().to_vec(), vec![6.0, 6.0]); // 2h
    /// # Ok::<(), tapegrad_autograd::Error>(())
    /// ```
    pub fn retain_grad(&self) {
        if self.is_leaf() {
            return;
        }
        let node: Weak<Node<T>> = Arc::downgrade(&self.0);
        let _kept_until_the_node_drops = self.register_hook(move |g| {
            if let Some(node) = node.upgrade() {
                let mut acc = lock(&node.grad);
                *acc = Some(match acc.take() {
                    Some(old) => old.add(g).unwrap_or_else(|_| g.contiguous()),
                    None => g.contiguous(),
                });
            }
            None
        });
    }
}
