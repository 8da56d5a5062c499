//! LSTM and GRU: backpropagation through time over the ONNX recurrent ops.

mod common;
mod dims;
mod gru;
mod lstm;

use crate::op::Op;
use crate::{Result, unsupported};
use quench_ir::Node;

pub fn build(node: &Node) -> Result<Box<dyn Op>> {
    match node.op_type.as_str() {
        "LSTM" => lstm::build(node),
        "GRU" => gru::build(node),
        o => unsupported!("no backward rule for {o}"),
    }
}
