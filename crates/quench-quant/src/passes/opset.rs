//! Raising the default-domain opset, for per-axis DequantizeLinear (13).
//!
//! Between opsets 9 and 13 several operators moved attributes to inputs
//! (Squeeze/Unsqueeze/Split/ReduceSum axes, Clip bounds, Slice, Pad, TopK)
//! and Softmax changed from "flatten to 2-D" to "one axis". Each node is
//! rewritten to the new form with the same result; ops whose upgrade is not
//! implemented make the raise fail, naming the node, rather than silently
//! change meaning.

use super::unique;
use crate::QuantError;
use quench_ir::{Attr, Graph, Model, Node, OpsetImport, Tensor};
use std::collections::{HashMap, HashSet};

/// Raises the default-domain opset of `model` to `target` (at most 13: the
/// rewrites cover the changes up to 13) when it is lower; returns the old
/// version if it changed. Nodes may be left out of topological order.
pub fn raise_default_opset(model: &mut Model, target: i64) -> Result<Option<i64>, QuantError> {
    let from = model.opset("").unwrap_or(1);
    if target > 13 {
        return Err(QuantError::Config(format!(
            "opset upgrades stop at 13, not {target}"
        )));
    }
    if from >= target {
        return Ok(None);
    }
    let ranks: HashMap<String, usize> = quench_ir::shape_inference::infer(model)
        .map(|f| {
            f.into_iter()
                .filter_map(|(k, v)| Some((k, v.rank()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut names = super::all_names(&model.graph);
    upgrade_graph(&mut model.graph, from, &ranks, &mut names)?;
    model
        .opset_imports
        .retain(|o| !(o.domain.is_empty() || o.domain == "ai.onnx"));
    model.opset_imports.insert(
        0,
        OpsetImport {
            domain: String::new(),
            version: target,
        },
    );
    Ok(Some(from))
}

fn err(node: &Node, what: &str) -> QuantError {
    QuantError::Graph(format!(
        "cannot raise the opset to 13 for QDQ: node '{}' ({}) {what}",
        node.label(),
        node.op_type
    ))
}

/// Moves attribute `attr` (ints) into a new i64 initializer input at `pos`.
fn attr_to_input(
    graph: &mut Graph,
    names: &mut HashSet<String>,
    node: &mut Node,
    attr: &str,
    pos: usize,
) -> Result<(), QuantError> {
    let Some(Attr::Ints(v)) = node.attrs.shift_remove(attr) else {
        return Ok(());
    };
    let t = Tensor::from_vec(vec![v.len()], v).map_err(|e| QuantError::Graph(e.to_string()))?;
    set_input(graph, names, node, pos, &format!("{}_{attr}", node.name), t);
    Ok(())
}

fn set_input(
    graph: &mut Graph,
    names: &mut HashSet<String>,
    node: &mut Node,
    pos: usize,
    base: &str,
    t: Tensor,
) {
    let name = unique(names, base);
    graph.initializers.insert(name.clone(), t);
    if node.inputs.len() <= pos {
        node.inputs.resize(pos + 1, String::new());
    }
    node.inputs[pos] = name;
}

fn upgrade_graph(
    graph: &mut Graph,
    from: i64,
    ranks: &HashMap<String, usize>,
    names: &mut HashSet<String>,
) -> Result<(), QuantError> {
    let mut nodes = std::mem::take(&mut graph.nodes);
    let mut extra: Vec<(usize, Vec<Node>)> = Vec::new();
    for (idx, node) in nodes.iter_mut().enumerate() {
        for a in node.attrs.values_mut() {
            match a {
                Attr::Graph(g) => upgrade_graph(g, from, ranks, names)?,
                Attr::Graphs(gs) => {
                    for g in gs {
                        upgrade_graph(g, from, ranks, names)?;
                    }
                }
                _ => {}
            }
        }
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            continue;
        }
        match node.op_type.as_str() {
            "Squeeze" | "Unsqueeze" | "ReduceSum" => attr_to_input(graph, names, node, "axes", 1)?,
            "Split" => attr_to_input(graph, names, node, "split", 1)?,
            "Slice" if from < 10 => {
                for (i, a) in ["starts", "ends", "axes"].into_iter().enumerate() {
                    attr_to_input(graph, names, node, a, i + 1)?;
                }
            }
            "TopK" if from < 10 => {
                let k = node
                    .attr_int("k")
                    .map_err(|e| QuantError::Graph(e.to_string()))?;
                node.attrs.shift_remove("k");
                let t = Tensor::from_vec(vec![1], vec![k.unwrap_or(0)])
                    .map_err(|e| QuantError::Graph(e.to_string()))?;
                set_input(graph, names, node, 1, &format!("{}_k", node.name), t);
            }
            "Clip" if from < 11 => {
                for (i, a) in ["min", "max"].into_iter().enumerate() {
                    if let Some(Attr::Float(v)) = node.attrs.shift_remove(a) {
                        set_input(
                            graph,
                            names,
                            node,
                            i + 1,
                            &format!("{}_{a}", node.name),
                            Tensor::scalar(v),
                        );
                    }
                }
            }
            "Pad" if from < 11 => {
                let Some(Attr::Ints(pads)) = node.attrs.shift_remove("pads") else {
                    return Err(err(node, "has no pads"));
                };
                let t = Tensor::from_vec(vec![pads.len()], pads)
                    .map_err(|e| QuantError::Graph(e.to_string()))?;
                set_input(graph, names, node, 1, &format!("{}_pads", node.name), t);
                if let Some(Attr::Float(v)) = node.attrs.shift_remove("value")
                    && v != 0.0
                {
                    set_input(
                        graph,
                        names,
                        node,
                        2,
                        &format!("{}_value", node.name),
                        Tensor::scalar(v),
                    );
                }
            }
            "Dropout" if from < 12 => {
                if node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(err(node, "uses its mask output"));
                }
                node.op_type = "Identity".into();
                node.attrs.clear();
                node.inputs.truncate(1);
                node.outputs.truncate(1);
            }
            "Softmax" | "LogSoftmax" | "Hardmax" => {
                let x = node.input(0).unwrap_or("").to_string();
                let axis = node
                    .attr_int_or("axis", 1)
                    .map_err(|e| QuantError::Graph(e.to_string()))?;
                let Some(&rank) = ranks.get(&x) else {
                    return Err(err(node, "reads a tensor of unknown rank"));
                };
                let a = if axis < 0 { axis + rank as i64 } else { axis };
                if a == rank as i64 - 1 {
                    continue;
                }
                // Old semantics: flatten to [prod(dims[..a]), prod(dims[a..])], normalize rows.
                let base = node.name.clone();
                let shape = unique(names, &format!("{base}_shape"));
                let flat = unique(names, &format!("{base}_flat"));
                let y = unique(names, &format!("{base}_flat_out"));
                let out = node.outputs.first().cloned().unwrap_or_default();
                let pre = vec![
                    Node::new(
                        "Shape",
                        &unique(names, &format!("{base}_Shape")),
                        &[&x],
                        &[&shape],
                    ),
                    Node::new(
                        "Flatten",
                        &unique(names, &format!("{base}_Flatten")),
                        &[&x],
                        &[&flat],
                    )
                    .with_attr("axis", Attr::Int(a)),
                ];
                node.inputs = vec![flat];
                node.outputs = vec![y.clone()];
                node.attrs.insert("axis".into(), Attr::Int(1));
                let post = Node::new(
                    "Reshape",
                    &unique(names, &format!("{base}_Reshape")),
                    &[&y, &shape],
                    &[&out],
                );
                extra.push((idx, pre.into_iter().chain([post]).collect()));
            }
            "Upsample" => return Err(err(node, "is deprecated; use Resize")),
            "Resize" if from < 11 => return Err(err(node, "uses the opset-10 Resize")),
            "BatchNormalization" if from < 9 => return Err(err(node, "uses the pre-opset-9 form")),
            _ => {}
        }
    }
    for (idx, new) in extra.into_iter().rev() {
        nodes.splice(idx..idx, new);
    }
    graph.nodes = nodes;
    Ok(())
}
