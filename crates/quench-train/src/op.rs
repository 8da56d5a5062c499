//! The contract of a differentiable op: a forward that saves only what its
//! backward needs, and a backward that maps output gradients to input ones.

use crate::{Result, TrainError, invalid};
use quench_ir::{Node, Tensor};
use std::any::Any;
use std::sync::Arc;

/// What an op's forward keeps for its backward.
pub type Saved = Box<dyn Any + Send + Sync>;

/// A gradient: a flat f32 buffer with the shape of the value it belongs to.
pub type Grad = Vec<f32>;

/// Per-call settings.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// Size of the rayon pool the call runs in; > 1 enables parallel loops.
    pub threads: usize,
    /// Training mode: BatchNormalization uses batch statistics, Dropout drops.
    pub train: bool,
    /// Seed of this node in this step (Dropout masks).
    pub seed: u64,
}

/// Result of a forward call.
pub struct Fwd {
    pub outputs: Vec<Tensor>,
    /// `None` when no input needs a gradient.
    pub saved: Option<Saved>,
    /// New values for stateful inputs, by input index (BatchNormalization's
    /// running mean and variance in training mode).
    pub updates: Vec<(usize, Tensor)>,
}

impl Fwd {
    pub fn new(outputs: Vec<Tensor>, saved: Option<Saved>) -> Fwd {
        Fwd {
            outputs,
            saved,
            updates: Vec::new(),
        }
    }
}

/// A differentiable operator built from one IR node.
pub trait Op: Send + Sync {
    /// Whether a gradient can flow into input `i` (false for shapes, indices,
    /// clip bounds, running statistics...).
    fn differentiable(&self, i: usize) -> bool {
        i == 0
    }

    /// Whether a gradient reaching an input is an error (ops that run
    /// without a backward rule).
    fn blocked(&self) -> bool {
        false
    }

    /// Computes the outputs. `need[i]` says whether input `i`'s gradient will
    /// be asked for; when none is, nothing needs saving.
    fn forward(&self, cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd>;

    /// Gradients of the inputs flagged in `need` (others may be `None`), given
    /// the gradients of the outputs (`None`: no gradient reached that output).
    fn backward(
        &self,
        cx: &Ctx,
        saved: &Saved,
        gy: &[Option<Grad>],
        need: &[bool],
    ) -> Result<Vec<Option<Grad>>>;
}

/// Input `i`, which must be present.
pub fn req(x: &[Option<Arc<Tensor>>], i: usize) -> Result<&Tensor> {
    match x.get(i) {
        Some(Some(t)) => Ok(t),
        _ => invalid!("missing input {i}"),
    }
}

/// Input `i` as an f32 slice.
pub fn f32_in(x: &[Option<Arc<Tensor>>], i: usize) -> Result<&[f32]> {
    let t = req(x, i)?;
    t.as_slice::<f32>().map_err(|_| {
        TrainError::Unsupported(format!(
            "input {i} has dtype {:?}; only float32 is trained",
            t.dtype()
        ))
    })
}

/// Input `i` kept alive for backward.
pub fn arc_in(x: &[Option<Arc<Tensor>>], i: usize) -> Result<Arc<Tensor>> {
    match x.get(i) {
        Some(Some(t)) => Ok(t.clone()),
        _ => invalid!("missing input {i}"),
    }
}

/// Optional input `i`.
pub fn opt_in(x: &[Option<Arc<Tensor>>], i: usize) -> Option<&Tensor> {
    x.get(i).and_then(|t| t.as_deref())
}

/// Downcasts saved state, which the engine always pairs with its own op.
pub fn saved<T: 'static>(s: &Saved) -> Result<&T> {
    s.downcast_ref::<T>()
        .ok_or_else(|| TrainError::Invalid("backward got another op's saved state".into()))
}

/// The gradient of output `i`, or zeros.
pub fn grad_or_zeros(gy: &[Option<Grad>], i: usize, n: usize) -> std::borrow::Cow<'_, [f32]> {
    match gy.get(i) {
        Some(Some(g)) => std::borrow::Cow::Borrowed(g.as_slice()),
        _ => std::borrow::Cow::Owned(vec![0.0; n]),
    }
}

/// Checks that a gradient has `n` elements.
pub fn check_len(g: &[f32], n: usize) -> Result<()> {
    if g.len() != n {
        invalid!("gradient has {} elements, expected {n}", g.len());
    }
    Ok(())
}

/// Normalises a possibly negative axis against `rank`.
pub fn axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if a < -r || a >= r.max(1) {
        invalid!("axis {a} is out of range for rank {rank}");
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// An f32 tensor from a shape and a buffer of matching length.
pub fn f32_tensor(shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor> {
    Ok(Tensor::from_vec(shape, v)?)
}

/// Integer attribute list converted to usize, refusing negatives.
pub fn usize_attr(node: &Node, name: &str) -> Result<Option<Vec<usize>>> {
    match node.attr_ints(name)? {
        None => Ok(None),
        Some(v) => v
            .iter()
            .map(|&x| {
                usize::try_from(x).map_err(|_| {
                    TrainError::Invalid(format!("attribute {name} has negative value {x}"))
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
    }
}

/// Runs `f` over `n` items split in `chunks` contiguous ranges, in parallel
/// when `threads > 1`, returning the per-range results in order (so sums of
/// them are deterministic).
pub fn par_ranges<R: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(std::ops::Range<usize>) -> R + Sync + Send,
) -> Vec<R> {
    use rayon::prelude::*;
    let chunks = threads.max(1).min(n.max(1));
    let per = n.div_ceil(chunks).max(1);
    let ranges: Vec<_> = (0..chunks)
        .map(|c| (c * per).min(n)..((c + 1) * per).min(n))
        .collect();
    if threads > 1 && chunks > 1 {
        ranges.into_par_iter().map(f).collect()
    } else {
        ranges.into_iter().map(f).collect()
    }
}

/// Element-wise `a += b`.
pub fn add_into(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}
