//! Graph passes of static quantization, each a small `Model → Model` step
//! with a report.
//!
//! [`prepare`] turns a float model into the float model that calibration
//! runs (Constant nodes become initializers, BatchNormalization is folded
//! into the preceding Conv/Gemm) and decides, following ONNX Runtime's QDQ
//! quantizer, which tensors become int8 ([`QuantPlan`]). Fusion groups
//! (Conv+Relu, Add+Relu, ...) do not change the graph: they only keep Q/DQ
//! out of their interior. After calibration, [`convert_qdq`] writes the
//! QuantizeLinear/DequantizeLinear model.

pub mod constants;
pub mod fold_bn;
pub mod fuse;
pub mod opset;
pub mod placement;
pub mod plan;
pub mod qdq;

pub use fold_bn::FoldedBn;
pub use fuse::{Fusion, FusionGroup};
pub use plan::{ActivationSpec, BiasSpec, QuantPlan, WeightSpec};
pub use qdq::{ConvertReport, convert_qdq};

use crate::{QuantConfig, QuantError};
use quench_ir::{Graph, Model, Tensor};
use std::collections::{HashMap, HashSet};

/// What [`prepare`] did to the graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PrepareReport {
    /// Constant nodes turned into initializers.
    pub constants: usize,
    /// Nodes that had no name and were given one (plans refer to nodes by name).
    pub named_nodes: usize,
    pub folded_bn: Vec<FoldedBn>,
    pub fusions: Vec<Fusion>,
}

/// The float model calibration runs, and what will become int8.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub model: Model,
    pub plan: QuantPlan,
    pub groups: Vec<FusionGroup>,
    pub report: PrepareReport,
}

/// Runs the float-preserving rewrites, finds fusion groups and plans which
/// tensors are quantized under `cfg`.
pub fn prepare(model: &Model, cfg: &QuantConfig) -> Result<Prepared, QuantError> {
    let mut model = model.clone();
    let named_nodes = name_nodes(&mut model.graph);
    let constants = constants::constants_to_initializers(&mut model.graph)?;
    let folded_bn = fold_bn::fold_batch_norms(&mut model.graph)?;
    let groups = fuse::find_groups(&model.graph);
    let plan = placement::plan_quantization(&model, &groups, cfg)?;
    let fusions = groups
        .iter()
        .filter(|g| g.nodes.iter().all(|n| plan.quantized_nodes.contains(n)))
        .map(FusionGroup::report)
        .collect();
    Ok(Prepared {
        model,
        plan,
        groups,
        report: PrepareReport {
            constants,
            named_nodes,
            folded_bn,
            fusions,
        },
    })
}

/// Gives every unnamed node a unique name (`{op_type}_{index}`), since
/// plans, configs and reports refer to nodes by name.
pub fn name_nodes(graph: &mut Graph) -> usize {
    let mut taken: HashSet<String> = graph
        .nodes
        .iter()
        .filter(|n| !n.name.is_empty())
        .map(|n| n.name.clone())
        .collect();
    let mut count = 0;
    for (i, node) in graph.nodes.iter_mut().enumerate() {
        if node.name.is_empty() {
            node.name = unique(&mut taken, &format!("{}_{i}", node.op_type));
            count += 1;
        }
    }
    count
}

/// `base`, or `base_2`, `base_3`... whichever is not taken yet; marks it taken.
pub(crate) fn unique(taken: &mut HashSet<String>, base: &str) -> String {
    let mut name = base.to_string();
    let mut k = 2;
    while taken.contains(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    taken.insert(name.clone());
    name
}

/// Every name used in a graph: values, initializers, nodes.
pub(crate) fn all_names(graph: &Graph) -> HashSet<String> {
    let mut s: HashSet<String> = graph.initializers.keys().cloned().collect();
    s.extend(graph.inputs.iter().map(|v| v.name.clone()));
    s.extend(graph.outputs.iter().map(|v| v.name.clone()));
    s.extend(graph.value_info.iter().map(|v| v.name.clone()));
    for n in &graph.nodes {
        s.insert(n.name.clone());
        s.extend(n.inputs.iter().cloned());
        s.extend(n.outputs.iter().cloned());
    }
    s
}

/// For each value, the indices of the nodes reading it (directly, or from
/// inside a subgraph).
pub(crate) fn consumers(graph: &Graph) -> HashMap<String, Vec<usize>> {
    let mut m: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        let mut seen = HashSet::new();
        for name in n
            .inputs
            .iter()
            .map(String::as_str)
            .chain(quench_ir::graph::subgraph_free_names(n))
        {
            if !name.is_empty() && seen.insert(name) {
                m.entry(name.to_string()).or_default().push(i);
            }
        }
    }
    m
}

pub(crate) fn is_graph_output(graph: &Graph, name: &str) -> bool {
    graph.outputs.iter().any(|o| o.name == name)
}

/// A float32 initializer that a caller cannot override through a graph input.
pub(crate) fn constant_f32<'g>(graph: &'g Graph, name: &str) -> Option<&'g Tensor> {
    let t = graph.initializers.get(name)?;
    if t.dtype() != quench_ir::DType::F32 || graph.inputs.iter().any(|i| i.name == name) {
        return None;
    }
    Some(t)
}

/// Reorders nodes so that producers precede consumers (ONNX requires it).
pub(crate) fn sort_nodes(graph: &mut Graph) -> Result<(), QuantError> {
    let order = graph
        .topo_order(&|_| false)
        .map_err(|e| QuantError::Graph(e.to_string()))?;
    let mut old: Vec<Option<quench_ir::Node>> = std::mem::take(&mut graph.nodes)
        .into_iter()
        .map(Some)
        .collect();
    graph.nodes = order.into_iter().filter_map(|i| old[i].take()).collect();
    Ok(())
}

#[cfg(test)]
mod e2e_tests;
#[cfg(test)]
pub(crate) mod test_util;
#[cfg(test)]
mod tests;
