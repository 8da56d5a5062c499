//! Graph rewrites applied when a plan is built. Erf-based Gelu chains become
//! one Gelu (gelu.rs); and a Conv whose only
//! reader is an activation (Relu, Clip with constant bounds, LeakyRelu), or a
//! residual Add optionally followed by one, becomes a single `FusedConv`
//! node that applies them to its output while it is hot in cache, instead of
//! three passes over three fresh tensors.
//!
//! Then, on CPUs where it pays, chains of convolutions switch to the
//! blocked NCHWc layout ([`nchwc`]).
//!
//! Fused-away values are never materialised, so a plan keeps an unfused twin
//! for runs that observe every value (see [`crate::Plan`]).

mod gelu;
mod index;
mod qdq_lower;
pub use qdq_lower::lower_qdq;

pub use gelu::fuse_gelu;
use index::Index;
use quench_ir::{Attr, Graph, Node};
use std::collections::{HashMap, HashSet};

mod nchwc;
pub use nchwc::{FROM_NCHWC, NCHWC_CONV, NCHWC_MAX_POOL, TO_NCHWC};
mod int8_nhwc;
pub use int8_nhwc::{
    NCHW_TO_NHWC, NHWC_MAX_POOL, NHWC_QLINEAR_CONV, NHWC_TO_NCHW, rewrite as int8_nhwc,
};

/// Domain of the internal ops this pass emits (never in a model file).
pub const DOMAIN: &str = "quench.internal";
/// A Conv (inputs X, W, B, then the residual R) with attributes
/// `activation` (`Relu`, `Clip`, `LeakyRelu` or absent) and
/// `activation_params` (Clip: min, max; LeakyRelu: alpha).
pub const FUSED_CONV: &str = "FusedConv";

/// The activation a Conv can absorb, with its parameters.
fn activation(n: &Node, opset: i64, index: &Index) -> Option<(String, Vec<f32>)> {
    if !n.domain.is_empty() && n.domain != "ai.onnx" {
        return None;
    }
    match n.op_type.as_str() {
        "Relu" => Some(("Relu".into(), vec![])),
        "LeakyRelu" => Some((
            "LeakyRelu".into(),
            vec![n.attr_float_or("alpha", 0.01).ok()?],
        )),
        "Clip" if opset < 11 => Some((
            "Clip".into(),
            vec![
                n.attr_float_or("min", f32::MIN).ok()?,
                n.attr_float_or("max", f32::MAX).ok()?,
            ],
        )),
        "Clip" => {
            let bound = |i: usize, default: f32| -> Option<f32> {
                match n.input(i) {
                    None => Some(default),
                    Some(name) => index.scalar(name),
                }
            };
            Some((
                "Clip".into(),
                vec![bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?],
            ))
        }
        _ => None,
    }
}

fn is_onnx(n: &Node, op: &str) -> bool {
    n.op_type == op && (n.domain.is_empty() || n.domain == "ai.onnx")
}

/// The graph's nodes with Conv chains fused (and in NCHWc form where that
/// applies), or `None` when nothing changes.
/// `opset` is the default domain's version (Clip's bounds moved from
/// attributes to inputs in opset 11).
pub fn fuse_conv_chains(graph: &Graph, opset: i64) -> Option<Vec<Node>> {
    let index = Index::new(&graph.nodes, graph);
    let only_reader = |name: &str| index.only_reader(name);

    let mut removed: HashSet<usize> = HashSet::new();
    let mut replaced: HashMap<usize, Node> = HashMap::new();
    for (i, conv) in graph.nodes.iter().enumerate() {
        if !is_onnx(conv, "Conv") || conv.outputs.len() != 1 || conv.inputs.len() < 2 {
            continue;
        }
        let mut out = conv.outputs[0].as_str();
        let mut residual: Option<&str> = None;
        let mut absorbed = Vec::new();
        let mut act = None;
        let mut next = only_reader(out).filter(|j| !removed.contains(j));
        if let Some(j) = next {
            let add = &graph.nodes[j];
            if is_onnx(add, "Add") && add.inputs.len() == 2 && add.outputs.len() == 1 {
                let other = if add.inputs[0] == out {
                    &add.inputs[1]
                } else {
                    &add.inputs[0]
                };
                if !other.is_empty() && other != out {
                    residual = Some(other);
                    absorbed.push(j);
                    out = &add.outputs[0];
                    next = only_reader(out).filter(|j| !removed.contains(j));
                }
            }
        }
        if let Some(j) = next {
            let n = &graph.nodes[j];
            if n.outputs.len() == 1
                && let Some(a) = activation(n, opset, &index)
            {
                act = Some(a);
                absorbed.push(j);
                out = &n.outputs[0];
            }
        }
        if absorbed.is_empty() {
            continue;
        }
        let mut fused = conv.clone();
        fused.domain = DOMAIN.into();
        fused.op_type = FUSED_CONV.into();
        fused.inputs.resize(3, String::new());
        if let Some(r) = residual {
            fused.inputs.push(r.to_string());
        }
        fused.outputs = vec![out.to_string()];
        if let Some((name, params)) = act {
            fused
                .attrs
                .insert("activation".into(), Attr::String(name.into_bytes()));
            fused
                .attrs
                .insert("activation_params".into(), Attr::Floats(params));
        }
        removed.extend(absorbed);
        replaced.insert(i, fused);
    }
    let fused: Option<Vec<Node>> = (!replaced.is_empty()).then(|| {
        graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !removed.contains(i))
            .map(|(i, n)| replaced.remove(&i).unwrap_or_else(|| n.clone()))
            .collect()
    });
    let base = fused.as_deref().unwrap_or(&graph.nodes);
    nchwc::rewrite(graph, base, &index).or(fused)
}

#[cfg(test)]
mod tests;
