//! `checkpoint`: exact recomputation (activation checkpointing, `torch.utils.checkpoint`).
//!
//! A checkpointed segment keeps only its inputs and its output on the tape; backward runs the
//! segment again to rebuild its graph, then walks it. The replay must draw the same dropout
//! masks as the forward pass did: every dropout op takes its `(seed, offset)` through
//! [`reserve`], which, while a checkpoint's forward runs, notes each draw, and while its replay
//! runs, hands the noted draws back in order without touching any generator. Masks are a pure
//! function of `(seed, offset, p)` (counter-based ChaCha), so the replayed graph is the forward
//! pass's, bit for bit.

use std::cell::RefCell;
use std::sync::Arc;

use tapegrad_tensor::{Error, Float, Generator, Result, Tensor};

use crate::no_grad::{enable_grad, is_grad_enabled, no_grad};
use crate::tape::{reachable_above, walk};
use crate::var::{next_id, Backward, Grads, Var};

/// The op name of checkpoint errors and of its tape entry.
const OP: &str = "checkpoint";

/// One dropout draw: where it starts in which stream, how many words, at which `p`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Draw {
    seed: u64,
    offset: u64,
    words: u64,
    p: f64,
}

/// What a running checkpoint does with this thread's dropout draws.
enum Frame {
    /// A forward pass: draw from the generator (or from a replay below) and note the draw.
    Record(Vec<Draw>),
    /// A recomputation: hand back these draws in order.
    Replay { draws: Arc<[Draw]>, next: usize },
}

thread_local! {
    /// The running checkpoints of this thread, innermost last.
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// Reserves `words` words for a dropout op with drop probability `p`: what every dropout op
/// calls instead of [`Generator::reserve`].
///
/// Outside a checkpoint it is `gen.reserve(words)`. Inside the replay of a checkpointed segment
/// (the innermost replay running on this thread) it returns the next draw the forward pass made,
/// leaving `gen` where it is; and every checkpoint forward running above that replay (or above
/// nothing) notes the draw, so nested checkpoints replay too.
///
/// # Errors
/// `checkpoint` when a replay draws more often than the forward pass did, or a draw of another
/// size or `p`: the segment did not compute the same thing twice.
pub(crate) fn reserve(gen: &mut Generator, words: u64, p: f64) -> Result<(u64, u64)> {
    FRAMES.with(|frames| {
        let mut frames = frames.borrow_mut();
        if frames.is_empty() {
            return Ok(gen.reserve(words));
        }
        let replay = frames.iter().rposition(|f| matches!(f, Frame::Replay { .. }));
        let (seed, offset) = match replay.map(|i| &mut frames[i]) {
            Some(Frame::Replay { draws, next }) => {
                let Some(&draw) = draws.get(*next) else {
                    return Err(Error::arg(
                        OP,
                        format!(
                            "the recomputation draws more dropout masks than the forward pass did ({}): the \
                             segment must compute the same ops both times",
                            draws.len()
                        ),
                    ));
                };
                if draw.words != words || draw.p != p {
                    return Err(Error::arg(
                        OP,
                        format!(
                            "dropout draw {} of the recomputation differs from the forward pass's: {words} words \
                             at p = {p}, against {} words at p = {}",
                            *next, draw.words, draw.p
                        ),
                    ));
                }
                *next += 1;
                (draw.seed, draw.offset)
            }
            _ => gen.reserve(words),
        };
        for frame in &mut frames[replay.map_or(0, |i| i + 1)..] {
            if let Frame::Record(draws) = frame {
                draws.push(Draw { seed, offset, words, p });
            }
        }
        Ok((seed, offset))
    })
}

/// Pops this thread's innermost frame when dropped (also on an error or a panic inside).
struct FrameGuard;

impl Drop for FrameGuard {
    fn drop(&mut self) {
        // During thread teardown the thread-local may be gone: then there is nothing to pop.
        let _ = FRAMES.try_with(|f| f.borrow_mut().pop());
    }
}

/// Runs `f` with `frame` as this thread's innermost checkpoint frame; returns `f`'s result and
/// the frame as `f` left it.
fn with_frame<R>(frame: Frame, f: impl FnOnce() -> R) -> (R, Frame) {
    FRAMES.with(|frames| frames.borrow_mut().push(frame));
    let guard = FrameGuard;
    let out = f();
    let frame = FRAMES.with(|frames| frames.borrow_mut().pop());
    std::mem::forget(guard);
    (out, frame.unwrap_or(Frame::Record(Vec::new())))
}

/// The segment a checkpoint runs: the user's closure, shared by the op.
type Segment<T> = Arc<dyn Fn(&[Var<T>]) -> Result<Var<T>> + Send + Sync>;

/// A leaf standing in for a segment input: the same value, and a gradient slot when the input
/// wants one. The segment runs on stand-ins, so that the walk stops at them.
fn stand_in<T: Float>(value: Tensor<T>, requires_grad: bool) -> Var<T> {
    if requires_grad {
        Var::parameter(value)
    } else {
        Var::new(value)
    }
}

// ─── Checkpoint ──────────────────  y = f(x, θ) kept without its graph;  backward: recompute f, walk it
struct Checkpoint<T: Float> {
    segment: Segment<T>,
    /// The explicit inputs' values and whether each wants a gradient.
    inputs: Vec<(Tensor<T>, bool)>,
    /// The ids of the values made before the segment that it reached (captured parameters and
    /// other `Var`s), the op's inputs after the explicit ones.
    captured: Vec<u64>,
    /// The forward pass's dropout draws, in order.
    draws: Arc<[Draw]>,
}

impl<T: Float> Backward<T> for Checkpoint<T> {
    fn name(&self) -> &'static str {
        OP
    }

    fn backward(&self, dy: &Tensor<T>, needs: &[bool]) -> Result<Grads<T>> {
        let floor = next_id();
        let stand_ins: Vec<Var<T>> = self
            .inputs
            .iter()
            .zip(needs)
            .map(|((value, requires_grad), &need)| stand_in(value.clone(), *requires_grad && need))
            .collect();
        let replay = Frame::Replay { draws: Arc::clone(&self.draws), next: 0 };
        let (y, frame) = with_frame(replay, || enable_grad(|| (self.segment)(&stand_ins)));
        let y = y?;
        if let Frame::Replay { draws, next } = frame {
            if next != draws.len() {
                return Err(Error::arg(
                    OP,
                    format!(
                        "the recomputation drew {next} dropout masks, the forward pass {}: the segment must \
                         compute the same ops both times",
                        draws.len()
                    ),
                ));
            }
        }
        let mut grads: Grads<T> = needs.iter().map(|_| None).collect();
        if y.value().shape() != dy.shape() {
            return Err(Error::mismatch(
                OP,
                dy.shape(),
                y.value().shape(),
                "the recomputed output's shape differs from the forward pass's",
            ));
        }
        if !y.requires_grad() {
            return Ok(grads);
        }
        let mut nodes = reachable_above(&[&y], true, floor)?;
        drop(y);
        let ids: Vec<u64> = nodes.iter().map(|v| v.var.id()).collect();
        let mut flowing: Vec<Option<Tensor<T>>> = Vec::with_capacity(nodes.len());
        flowing.resize_with(nodes.len(), || None);
        flowing[0] = Some(dy.clone());
        let explicit = stand_ins.len();
        no_grad(|| {
            walk(
                &mut nodes,
                &ids,
                &mut flowing,
                None,
                |_, _, _| Ok(()),
                |var, g| {
                    let id = var.id();
                    let slot = match stand_ins.iter().position(|s| s.id() == id) {
                        Some(i) => i,
                        None => match self.captured.iter().position(|&c| c == id) {
                            Some(j) => explicit + j,
                            // A parameter made inside the segment: a new one at every call.
                            None if id >= floor => return Ok(()),
                            None => {
                                return Err(Error::arg(
                                    OP,
                                    "the recomputation reached a value the forward pass did not: the segment \
                                     must compute the same ops both times",
                                ))
                            }
                        },
                    };
                    grads[slot] = Some(g);
                    Ok(())
                },
            )
        })?;
        Ok(grads)
    }

    fn saved(&self) -> Vec<&Tensor<T>> {
        self.inputs.iter().map(|(value, _)| value).collect()
    }
}

/// Runs `f` on `inputs` without keeping its intermediate values for backward, and computes them
/// again during backward: `torch.utils.checkpoint.checkpoint` (with `use_reentrant=False`),
/// trading one more forward pass of the segment for its activations' memory.
///
/// The tape keeps one `checkpoint` entry holding the inputs' values and the output; the
/// segment's own graph is built while it runs (to find the parameters it reaches) and dropped
/// when `checkpoint` returns. Backward runs `f` again on stand-ins of the inputs and walks the
/// rebuilt graph: the inputs get their gradients through the entry, and so does every value the
/// closure captured that requires a gradient (the layer's parameters, or a `Var` made before),
/// as in PyTorch. Shapes: whatever `f` takes and returns.
///
/// **Dropout is replayed exactly.** Each dropout op inside `f` (any of the family, the fused
/// ones, a layer's) draws a `(seed, offset)` from its generator, the thread's default one or an
/// explicit one; the forward pass notes every draw in order, and the recomputation gets the
/// same draws back without advancing any generator again. So the gradients are bit-identical to
/// those of the same code run without `checkpoint` (up to rounding only for a value used both
/// inside and outside the segment, whose gradient is then summed in another order), and the
/// generators stand where the plain run leaves them. (PyTorch instead saves and restores the RNG state around the recomputation.)
/// Draws must happen on the calling thread, and only the dropout ops' draws are replayed: other
/// uses of a generator inside `f` (`Tensor::rand`) draw again.
///
/// `f` must compute the same ops both times: it is called once now and once per backward (a
/// retained graph recomputes at each). Checkpoints nest. Inside [`no_grad`] (or when nothing in
/// the segment requires a gradient) `checkpoint` is `f(inputs)` and records nothing. A `no_grad`
/// inside `f` holds in both runs. Double backward (`create_graph`) through a checkpoint is not
/// supported and says so.
///
/// `f` is kept by the tape until backward, so it must own what it uses (`'static`): capture
/// `Var`s (cheap handles), or a module behind an `Arc`, and an explicit generator as an
/// `Arc<Mutex<Generator>>`.
///
/// # Errors
/// Whatever `f` returns. In backward: `checkpoint` when the recomputation draws a different
/// number of dropout masks, a mask of another size or `p`, reaches a value the forward pass did
/// not, or returns another shape.
///
/// ```
/// use tapegrad_autograd::{checkpoint, manual_seed, Tensor, Var};
/// let w = Var::parameter(Tensor::<f32>::ones(&[4, 4]));
/// let x = Var::parameter(Tensor::<f32>::ones(&[2, 4]));
/// let segment = {
///     let w = w.clone();
///     move |xs: &[Var]| xs[0].matmul(&w)?.relu().dropout(0.5)?.matmul(&w)
/// };
/// manual_seed(0);
/// let y = checkpoint(segment, &[x.clone()])?;
/// assert_eq!(y.tape().iter().map(|e| e.name).collect::<Vec<_>>(), ["checkpoint"]);
/// y.sum_all().backward()?; // runs the segment again, with the same mask
/// assert!(w.grad().is_some() && x.grad().is_some());
/// # Ok::<(), tapegrad_autograd::Error>(())
/// ```
pub fn checkpoint<T, F>(f: F, inputs: &[Var<T>]) -> Result<Var<T>>
where
    T: Float,
    F: Fn(&[Var<T>]) -> Result<Var<T>> + Send + Sync + 'static,
{
    if !is_grad_enabled() {
        return f(inputs);
    }
    let floor = next_id();
    let stand_ins: Vec<Var<T>> = inputs.iter().map(|x| stand_in(x.value(), x.requires_grad())).collect();
    let (y, frame) = with_frame(Frame::Record(Vec::new()), || f(&stand_ins));
    let y = y?;
    let value = y.value();
    if !y.requires_grad() {
        return Ok(Var::new(value));
    }
    // The values made before the segment that it reached: what `f` captured.
    let captured: Vec<Var<T>> =
        reachable_above(&[&y], false, floor)?.into_iter().map(|v| v.var).filter(|v| v.id() < floor).collect();
    // The segment's graph goes here: only the inputs and the output stay.
    drop(y);
    drop(stand_ins);
    let draws: Arc<[Draw]> = match frame {
        Frame::Record(draws) => draws.into(),
        Frame::Replay { .. } => Arc::new([]),
    };
    let op = Checkpoint {
        segment: Arc::new(f),
        inputs: inputs.iter().map(|x| (x.value(), x.requires_grad())).collect(),
        captured: captured.iter().map(Var::id).collect(),
        draws,
    };
    let edges: Vec<&Var<T>> = inputs.iter().chain(&captured).collect();
    Ok(Var::from_op(value, &edges, || op))
}
