//! LSTM backward (not yet written).

use crate::op::Op;
use crate::{Result, unsupported};
use quench_ir::Node;

pub fn build(node: &Node) -> Result<Box<dyn Op>> {
    let _ = super::common::RnnAttrs::parse(node, &["Sigmoid", "Tanh", "Tanh"])?;
    unsupported!("no backward rule for {} yet", node.op_type)
}
