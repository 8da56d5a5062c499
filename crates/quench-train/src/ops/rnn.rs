//! LSTM and GRU (not yet differentiable).

use crate::op::Op;
use crate::{Result, unsupported};
use quench_ir::Node;

pub fn build(node: &Node) -> Result<Box<dyn Op>> {
    unsupported!("no backward rule for {} yet", node.op_type)
}
