//! Fusion groups: chains quantized as one unit, as fbgemm and ONNX Runtime do.
//!
//! A linear op followed by its bias Add and a ReLU-like activation runs as one
//! integer kernel whose requantization clamps to the activation's output
//! range, so the intermediate tensors never exist in int8. The graph is not
//! rewritten: a group only tells placement to put Q/DQ at the group's input(s)
//! and final output, never inside it.

use super::{constant_f32, consumers, is_graph_output};
use quench_ir::{Graph, Node};
use std::collections::{HashMap, HashSet};

/// Nodes quantized as one unit, head first.
#[derive(Clone, Debug, PartialEq)]
pub struct FusionGroup {
    /// Op types joined by `+`, e.g. `Conv+Relu`, `MatMul+Add+Relu`.
    pub kind: String,
    pub nodes: Vec<String>,
    /// The group's final output: the only tensor of the group that gets Q/DQ.
    pub output: String,
    /// `(Add node, bias tensor)` when a MatMul/Gemm's bias is a separate Add.
    pub bias: Option<(String, String)>,
}

/// A fusion as reported to the user.
pub type Fusion = FusionGroup;

impl FusionGroup {
    pub fn report(&self) -> Fusion {
        self.clone()
    }

    pub fn head(&self) -> &str {
        self.nodes.first().map(String::as_str).unwrap_or("")
    }
}

fn is_onnx(n: &Node) -> bool {
    n.domain.is_empty() || n.domain == "ai.onnx"
}

/// Relu, Clip with a constant lower bound of 0 (ReLU6 and friends), and,
/// when `leaky` is allowed, LeakyRelu.
fn is_relu_like(graph: &Graph, n: &Node, leaky: bool) -> bool {
    if !is_onnx(n) {
        return false;
    }
    match n.op_type.as_str() {
        "Relu" => true,
        "LeakyRelu" => leaky,
        "Clip" => match n.input(1) {
            Some(min) => constant_f32(graph, min)
                .and_then(|t| {
                    t.as_slice::<f32>()
                        .ok()
                        .map(|s| s.len() == 1 && s[0] == 0.0)
                })
                .unwrap_or(false),
            None => n.attr_float("min").ok().flatten() == Some(0.0),
        },
        _ => false,
    }
}

/// The output-channel count of a linear op's constant 2-D weight.
fn weight_columns(graph: &Graph, n: &Node) -> Option<usize> {
    let w = constant_f32(graph, n.input(1)?)?;
    if w.rank() != 2 {
        return None;
    }
    let trans_b = n.op_type == "Gemm" && n.attr_int_or("transB", 0).ok()? != 0;
    Some(if trans_b { w.shape()[0] } else { w.shape()[1] })
}

/// The constant operand of an `Add(x, b)` that is a bias over `columns`.
fn bias_operand(graph: &Graph, add: &Node, x: &str, columns: usize) -> Option<String> {
    if add.op_type != "Add" || !is_onnx(add) || add.inputs.len() != 2 {
        return None;
    }
    let other = if add.inputs[0] == x {
        &add.inputs[1]
    } else if add.inputs[1] == x {
        &add.inputs[0]
    } else {
        return None;
    };
    let b = constant_f32(graph, other)?;
    (b.rank() == 1 && b.shape()[0] == columns).then(|| other.clone())
}

/// Finds every fusion group of `graph`. A chain only continues through a
/// tensor read by exactly one node and not a graph output.
pub fn find_groups(graph: &Graph) -> Vec<FusionGroup> {
    let users = consumers(graph);
    let sole_user = |t: &str| -> Option<&Node> {
        let u = users.get(t)?;
        (u.len() == 1 && !is_graph_output(graph, t)).then(|| &graph.nodes[u[0]])
    };
    let mut in_group: HashSet<&str> = HashSet::new();
    let mut groups = Vec::new();
    let order = graph.topo_order(&|_| false).unwrap_or_default();
    for &i in &order {
        let head = &graph.nodes[i];
        if !is_onnx(head) || in_group.contains(head.name.as_str()) || head.outputs.len() != 1 {
            continue;
        }
        let linear = matches!(
            head.op_type.as_str(),
            "Conv" | "ConvTranspose" | "Gemm" | "MatMul"
        );
        if !linear && !matches!(head.op_type.as_str(), "BatchNormalization" | "Add") {
            continue;
        }
        let mut nodes = vec![head];
        let mut out = head.outputs[0].as_str();
        let mut bias = None;
        let may_take_bias =
            head.op_type == "MatMul" || (head.op_type == "Gemm" && head.input(2).is_none());
        if may_take_bias
            && let Some(cols) = weight_columns(graph, head)
            && let Some(add) = sole_user(out)
            && let Some(b) = bias_operand(graph, add, out, cols)
            && add.outputs.len() == 1
        {
            bias = Some((add.name.clone(), b));
            nodes.push(add);
            out = add.outputs[0].as_str();
        }
        if let Some(act) = sole_user(out)
            && is_relu_like(graph, act, linear)
            && act.outputs.len() == 1
        {
            nodes.push(act);
            out = act.outputs[0].as_str();
        }
        if nodes.len() < 2 {
            continue;
        }
        in_group.extend(nodes.iter().map(|n| n.name.as_str()));
        groups.push(FusionGroup {
            kind: nodes
                .iter()
                .map(|n| n.op_type.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            nodes: nodes.iter().map(|n| n.name.clone()).collect(),
            output: out.to_string(),
            bias,
        });
    }
    groups
}

/// Node name → index of its group.
pub(crate) fn group_index(groups: &[FusionGroup]) -> HashMap<String, usize> {
    groups
        .iter()
        .enumerate()
        .flat_map(|(gi, g)| g.nodes.iter().map(move |n| (n.clone(), gi)))
        .collect()
}
