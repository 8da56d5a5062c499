//! The operator interface every kernel wrapper implements.

use crate::{OpError, Plan, RuntimeError};
use quench_ir::{Graph, Node, Tensor};

/// A ready-to-run operator, built once per node by its [`crate::registry::BuildFn`].
pub trait Op: Send + Sync + std::fmt::Debug {
    /// Computes the node's outputs. `inputs[i]` is `None` for an omitted
    /// optional input; nodes with subgraphs also receive the values their
    /// subgraphs read from enclosing scopes, after the explicit inputs, in
    /// the order of [`quench_ir::graph::subgraph_free_names`].
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError>;
}

/// What a builder knows about the node it builds.
pub struct BuildCtx<'a> {
    pub node: &'a Node,
    /// Version of the operator set of the node's domain.
    pub opset: i64,
    pub(crate) constants: &'a dyn Fn(&str) -> Option<&'a Tensor>,
    pub(crate) compile: &'a dyn Fn(&Graph) -> Result<Plan, RuntimeError>,
}

impl<'a> BuildCtx<'a> {
    /// The value of input `i` when it is a constant (initializer or folded
    /// Constant), so weights can be checked and packed once at build time.
    pub fn constant_input(&self, i: usize) -> Option<&'a Tensor> {
        self.node.input(i).and_then(|name| (self.constants)(name))
    }

    /// Plans a subgraph (If branch, Loop body) with the same registry and opsets.
    /// Names it reads from enclosing scopes become its outer bindings.
    pub fn compile_subgraph(&self, g: &Graph) -> Result<Plan, OpError> {
        (self.compile)(g).map_err(|e| OpError::Subgraph(Box::new(e)))
    }
}

/// Per-run context handed to every op.
pub struct RunCtx {
    /// Threads the op may use (it runs inside a rayon pool of this size).
    pub threads: usize,
}

/// Input `i`, or an error naming it when a required input is absent.
pub fn required<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor, OpError> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| OpError::Invalid(format!("required input {i} is missing")))
}

/// Input `i` if present.
pub fn optional<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}
