//! Backward rules, one family per file, built from IR nodes.

pub mod act;
pub mod binary;
pub mod conv;
pub mod conv_transpose;
pub mod dropout;
pub mod frozen;
pub mod linear;
pub mod norm;
pub mod pool;
pub mod rnn;
pub mod shape;
pub mod softmax;

use crate::op::Op;
use crate::{Result, unsupported};
use quench_ir::Node;

/// The differentiable op for `node` (default ONNX domain, opset `opset`).
pub fn build(node: &Node, opset: i64) -> Result<Box<dyn Op>> {
    match node.op_type.as_str() {
        "Conv" => conv::build(node),
        "ConvTranspose" => conv_transpose::build(node),
        "Gemm" => linear::build_gemm(node),
        "MatMul" => Ok(Box::new(linear::MatMul)),
        "BatchNormalization" => norm::build_bn(node),
        "LayerNormalization" => norm::build_ln(node),
        "Relu" | "LeakyRelu" | "Clip" | "Sigmoid" | "Tanh" | "HardSwish" | "HardSigmoid"
        | "Gelu" => act::build(node, opset),
        "Add" | "Sub" | "Mul" | "Div" => binary::build(node),
        "MaxPool" | "AveragePool" => pool::build(node),
        "GlobalAveragePool" => Ok(Box::new(pool::GlobalAvgPool)),
        "Softmax" | "LogSoftmax" => softmax::build(node, opset),
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" | "Identity" => {
            shape::build_view(node, opset)
        }
        "Transpose" | "Slice" | "Gather" => shape::build_gatherish(node),
        "Concat" => shape::build_concat(node),
        "Shape" => shape::build_shape(node),
        "Dropout" => dropout::build(node),
        "LSTM" | "GRU" => rnn::build(node),
        o => match frozen::build(node, opset)? {
            Some(op) => Ok(op),
            None => unsupported!("no backward rule for {o}, and the runtime does not know it"),
        },
    }
}
