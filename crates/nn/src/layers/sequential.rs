//! `Sequential`: a chain of modules applied in order.

use std::fmt;

use tapegrad_autograd::Var;
use tapegrad_tensor::{Float, Result};

use crate::module::{join, Counter, GeneratorSlot, Mode, ModeChange, Module, PoolOrder, Visit};

/// Modules applied one after the other: `y = m_k(... m_1(m_0(x)))`. Children are named `"0"`,
/// `"1"`, ... (so parameters are `"0.weight"`, `"2.bias"`, as in PyTorch), and `train()` /
/// `eval()` reach each of them.
///
/// ```
/// use tapegrad_nn::{Linear, Module, ReLU, Sequential, Var};
/// use tapegrad_tensor::{Generator, Tensor};
/// let mut gen = Generator::new(0);
/// let model: Sequential = Sequential::new()
///     .add(Linear::new(4, 8, &mut gen))
///     .add(ReLU::new())
///     .add(Linear::new(8, 2, &mut gen));
/// assert_eq!(model.forward(&Var::new(Tensor::ones(&[3, 4])))?.shape(), vec![3, 2]);
/// assert_eq!(model.named_parameters()[2].0, "2.weight");
/// # Ok::<(), tapegrad_nn::Error>(())
/// ```
pub struct Sequential<T: Float = f32> {
    layers: Vec<Box<dyn Module<T>>>,
}

impl<T: Float> Default for Sequential<T> {
    fn default() -> Self {
        Sequential::<T>::new()
    }
}

impl<T: Float> Sequential<T> {
    /// Appends a module (builder form).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, module: impl Module<T> + 'static) -> Sequential<T> {
        self.push(module);
        self
    }

    /// Appends a module.
    pub fn push(&mut self, module: impl Module<T> + 'static) {
        self.layers.push(Box::new(module));
    }

    /// Appends an already boxed module.
    pub fn push_boxed(&mut self, module: Box<dyn Module<T>>) {
        self.layers.push(module);
    }

    /// The number of modules.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when the chain is empty.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The `i`-th module, if any.
    pub fn get(&self, i: usize) -> Option<&dyn Module<T>> {
        self.layers.get(i).map(|m| &**m)
    }
}

tapegrad_tensor::f32_default! {
    /// The constructors of [`Sequential`] for every element type: `Sequential::<f64>::new(..)`, or
    /// `Sequential::<T>::new(..)` in generic code. `Sequential::new(..)` without a type means `f32`.
    SequentialNew for Sequential {
        /// An empty chain (the identity).
        fn new() -> Self {
            Sequential { layers: Vec::new() }
        }
    }
}

// Hand-written: the derive cannot print one `Vec` field's elements as `Sequential`'s own `(0): ...` lines.
impl<T: Float> Visit<T> for Sequential<T> {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<T>)) {
        for (i, m) in self.layers.iter().enumerate() {
            m.visit_parameters(&join(prefix, &i.to_string()), f);
        }
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(&str, &Var<T>)) {
        for (i, m) in self.layers.iter().enumerate() {
            m.visit_buffers(&join(prefix, &i.to_string()), f);
        }
    }
    fn visit_counters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Counter)) {
        for (i, m) in self.layers.iter().enumerate() {
            m.visit_counters(&join(prefix, &i.to_string()), f);
        }
    }
    fn visit_generators(&self, prefix: &str, f: &mut dyn FnMut(&str, &GeneratorSlot)) {
        for (i, m) in self.layers.iter().enumerate() {
            m.visit_generators(&join(prefix, &i.to_string()), f);
        }
    }
    fn set_mode(&mut self, change: ModeChange) {
        for m in &mut self.layers {
            m.set_mode(change);
        }
    }
    fn visit_modes(&self, f: &mut dyn FnMut(Mode)) {
        for m in &self.layers {
            m.visit_modes(f);
        }
    }
    fn fmt_module(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        writeln!(f, "Sequential(")?;
        for (i, m) in self.layers.iter().enumerate() {
            write!(f, "{}({i}): ", "  ".repeat(indent + 1))?;
            m.fmt_module(f, indent + 1)?;
            writeln!(f)?;
        }
        write!(f, "{})", "  ".repeat(indent))
    }
}

impl<T: Float> Sequential<T> {
    /// The max pool that follows a run of layers commuting with it from layer `from` (the run
    /// possibly empty): the run's length and the pool's `[kernel, stride, padding]`.
    fn pool_after(&self, from: usize) -> Option<(usize, [usize; 3])> {
        let rest = self.layers.get(from..)?;
        let run = rest.iter().take_while(|m| m.pool_order() == PoolOrder::Commutes).count();
        match rest.get(run)?.pool_order() {
            PoolOrder::MaxPool(pool) => Some((run, pool)),
            _ => None,
        }
    }
}

impl<T: Float> Module<T> for Sequential<T> {
    /// Applies each module in turn.
    ///
    /// # Errors
    /// The first error a module returns.
    /// The layers in order, except that a run of layers that commute with max pooling (ReLU,
    /// Dropout2d) followed by a `MaxPool2d` runs the pool first: the run then works on the
    /// pooled tensor, a quarter of the elements for 2 x 2 windows, with the same values and
    /// gradients (`PoolOrder`). A layer with a fused form with the pool (a `Conv2d`:
    /// `Var::conv2d_max_pool2d`) before such a run, or directly before a `MaxPool2d`, runs
    /// fused with it, again with the same values and gradients.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let mut y = x.clone();
        let mut i = 0;
        while i < self.layers.len() {
            let fused =
                self.pool_after(i + 1).and_then(|(run, pool)| Some((run, self.layers[i].forward_max_pool(&y, pool)?)));
            if let Some((run, fused)) = fused {
                y = fused?;
                for m in &self.layers[i + 1..i + 1 + run] {
                    y = m.forward(&y)?;
                }
                i += run + 2;
                continue;
            }
            match self.pool_after(i) {
                Some((run, _)) if run > 0 => {
                    y = self.layers[i + run].forward(&y)?;
                    for m in &self.layers[i..i + run] {
                        y = m.forward(&y)?;
                    }
                    i += run + 1;
                }
                _ => {
                    y = self.layers[i].forward(&y)?;
                    i += 1;
                }
            }
        }
        Ok(y)
    }
}

impl<T: Float> fmt::Display for Sequential<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_module(f, 0)
    }
}
