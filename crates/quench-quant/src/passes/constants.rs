//! Constant nodes → initializers.
//!
//! Exporters such as Paddle2ONNX emit every weight as a `Constant` node and
//! no initializers; the weight and bias rules of the later passes look for
//! initializers, so constants are moved there first.

use crate::QuantError;
use quench_ir::{Attr, Graph, Node, Tensor};

/// The tensor a `Constant` node produces, when it is a plain dense tensor.
fn constant_value(node: &Node) -> Result<Option<Tensor>, QuantError> {
    let bad = |e: quench_ir::IrError| QuantError::Graph(e.to_string());
    let Some((key, attr)) = node.attrs.iter().next() else {
        return Ok(None);
    };
    if node.attrs.len() != 1 {
        return Ok(None);
    }
    Ok(match (key.as_str(), attr) {
        ("value", Attr::Tensor(t)) => Some(t.clone()),
        ("value_float", Attr::Float(v)) => Some(Tensor::scalar(*v)),
        ("value_floats", Attr::Floats(v)) => {
            Some(Tensor::from_vec(vec![v.len()], v.clone()).map_err(bad)?)
        }
        ("value_int", Attr::Int(v)) => Some(Tensor::scalar(*v)),
        ("value_ints", Attr::Ints(v)) => {
            Some(Tensor::from_vec(vec![v.len()], v.clone()).map_err(bad)?)
        }
        _ => None,
    })
}

/// Moves every default-domain `Constant` node of `graph` (not subgraphs)
/// into the initializers; returns how many were moved. Constants whose
/// output is a graph output, or that hold strings or sparse tensors, stay.
pub fn constants_to_initializers(graph: &mut Graph) -> Result<usize, QuantError> {
    let mut moved = 0;
    let mut kept = Vec::with_capacity(graph.nodes.len());
    for node in std::mem::take(&mut graph.nodes) {
        let is_const = node.op_type == "Constant"
            && (node.domain.is_empty() || node.domain == "ai.onnx")
            && node.outputs.len() == 1;
        let out = node.outputs.first().cloned().unwrap_or_default();
        let movable = is_const
            && !out.is_empty()
            && !graph.initializers.contains_key(&out)
            && !super::is_graph_output(graph, &out);
        match movable.then(|| constant_value(&node)).transpose()? {
            Some(Some(t)) if !matches!(t.data(), quench_ir::TensorData::String(_)) => {
                graph.initializers.insert(out, t);
                moved += 1;
            }
            _ => kept.push(node),
        }
    }
    graph.nodes = kept;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quench_ir::{DType, ValueInfo};

    #[test]
    fn constants_become_initializers() {
        let w = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
        let mut g = Graph {
            inputs: vec![ValueInfo::tensor("x", DType::F32, None)],
            outputs: vec![
                ValueInfo::tensor("y", DType::F32, None),
                ValueInfo::tensor("k", DType::F32, None),
            ],
            nodes: vec![
                Node::new("Constant", "c", &[], &["w"]).with_attr("value", Attr::Tensor(w.clone())),
                Node::new("Constant", "c2", &[], &["s"])
                    .with_attr("value_ints", Attr::Ints(vec![3, 4])),
                Node::new("Constant", "c3", &[], &["k"]).with_attr("value_float", Attr::Float(1.0)),
                Node::new("Constant", "c4", &[], &["z"])
                    .with_attr("sparse_value", Attr::Opaque(vec![])),
                Node::new("Mul", "m", &["x", "w"], &["y"]),
            ],
            ..Default::default()
        };
        assert_eq!(constants_to_initializers(&mut g).unwrap(), 2);
        assert_eq!(g.initializers["w"], w);
        assert_eq!(g.initializers["s"].to_i64_vec().unwrap(), vec![3, 4]);
        // Graph outputs and sparse constants stay nodes.
        let left: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(left, ["c3", "c4", "m"]);
    }
}
