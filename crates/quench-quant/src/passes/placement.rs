//! Which tensors become int8, following ONNX Runtime's QDQ quantizer
//! (`qdq_quantizer.py`, `registry.py`, `operators/*.py`).
//!
//! Compute ops (Conv, ConvTranspose, Gemm, MatMul, Add, Mul, Concat,
//! GlobalAveragePool, BatchNormalization) quantize their float inputs and
//! their output; constant weights become int8 initializers, biases int32.
//! Data-movement ops (Reshape, Transpose, MaxPool, Resize, ...) never
//! requantize: when their input is quantized, their outputs share its scale
//! and zero point. Relu/Clip/LeakyRelu after a quantized tensor get their own
//! parameters. Every other op stays float, reading DequantizeLinear outputs
//! (mixed precision). A fusion group is planned as its head op, with the
//! group's last output as the op's output.

use super::constant_f32;
use super::fuse::{FusionGroup, group_index};
use super::plan::{ActivationSpec, BiasSpec, QuantPlan, WeightSpec};
use crate::observer::default_weight_axis;
use crate::{NodeQuant, QParamsConfig, QuantConfig, QuantError};
use indexmap::IndexMap;
use quench_ir::{DType, Graph, Model, Node};
use std::collections::{HashMap, HashSet};

/// Ops whose outputs are rearranged (or selected) input values: they run on
/// int8 data with the input's parameters.
const SHARING_OPS: &[&str] = &[
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "MaxPool",
    "AveragePool",
    "Resize",
    "Gather",
    "Split",
    "Slice",
    "Identity",
    "DepthToSpace",
    "SpaceToDepth",
];

/// Activations quantized only when their input already is.
const FOLLOWING_OPS: &[&str] = &["Relu", "Clip", "LeakyRelu"];

struct Placer<'a> {
    graph: &'a Graph,
    dtypes: HashMap<String, DType>,
    acts: IndexMap<String, ActivationSpec>,
    weights: IndexMap<String, WeightSpec>,
    biases: Vec<BiasSpec>,
    bias_users: HashMap<String, usize>,
    quantized: Vec<String>,
    kept: Vec<(String, String)>,
    float_outputs: Vec<String>,
    no_q: HashSet<String>,
}

impl<'a> Placer<'a> {
    fn is_float_activation(&self, t: &str) -> bool {
        !t.is_empty()
            && !self.graph.initializers.contains_key(t)
            && self.dtypes.get(t) == Some(&DType::F32)
    }

    fn act(&mut self, t: &str, config: QParamsConfig) {
        if self.is_float_activation(t) && !self.acts.contains_key(t) {
            self.acts.insert(
                t.to_string(),
                ActivationSpec {
                    tensor: t.to_string(),
                    config,
                    shared_with: None,
                },
            );
        }
    }

    /// Plans a constant weight; false when `t` is not a float initializer.
    fn weight(&mut self, t: &str, axis: Option<usize>, config: QParamsConfig) -> bool {
        if constant_f32(self.graph, t).is_none() {
            return false;
        }
        self.weights.entry(t.to_string()).or_insert(WeightSpec {
            tensor: t.to_string(),
            axis,
            config,
        });
        true
    }

    /// Plans an int32 bias when it is a 1-D constant read only by `node`
    /// with one value per weight channel.
    fn bias(&mut self, b: &str, input: &str, weight: &str, node: &str) {
        let Some(t) = constant_f32(self.graph, b) else {
            return;
        };
        let Some(w) = self.weights.get(weight) else {
            return;
        };
        let Some(wt) = constant_f32(self.graph, weight) else {
            return;
        };
        let n = t.numel();
        let fits = match w.axis {
            Some(a) => wt.shape().get(a) == Some(&n),
            None => true,
        };
        let leading_ones = t.shape().iter().rev().skip(1).all(|&d| d == 1);
        if !fits
            || !leading_ones
            || n == 0
            || self.bias_users.get(b) != Some(&1)
            || self.biases.iter().any(|x| x.tensor == b)
        {
            return;
        }
        self.biases.push(BiasSpec {
            tensor: b.to_string(),
            input: input.to_string(),
            weight: weight.to_string(),
            node: node.to_string(),
        });
    }

    fn weight_axis(&self, node: &Node, w: &str, nq: &NodeQuant) -> Option<usize> {
        let rank = self.graph.initializers.get(w)?.rank();
        if !nq.per_channel || (node.op_type == "MatMul" && rank < 2) {
            return None;
        }
        let trans_b = node.attr_int_or("transB", 0).unwrap_or(0) != 0;
        default_weight_axis(&node.op_type, rank, trans_b)
    }

    /// Plans a compute op (or fusion group headed by it); `Err(reason)` keeps it float.
    fn compute(
        &mut self,
        node: &Node,
        nq: &NodeQuant,
        group: Option<&FusionGroup>,
    ) -> Result<(), String> {
        let x = node.input(0).unwrap_or("");
        let a = nq.activation;
        match node.op_type.as_str() {
            "Conv" | "ConvTranspose" => {
                let w = node.input(1).unwrap_or("");
                let axis = self.weight_axis(node, w, nq);
                if !self.weight(w, axis, nq.weight) {
                    return Err("the weight is not a constant float32 tensor".into());
                }
                self.act(x, a);
                if let Some(b) = node.input(2) {
                    self.bias(b, x, w, &node.name);
                }
            }
            "Gemm" | "MatMul" => {
                let w = node.input(1).unwrap_or("");
                if !self.is_float_activation(x) {
                    return Err("input A is not a float32 activation".into());
                }
                self.act(x, a);
                let axis = self.weight_axis(node, w, nq);
                let weight_const = self.weight(w, axis, nq.weight);
                if !weight_const {
                    if !self.is_float_activation(w) {
                        return Err("input B is neither a float32 constant nor activation".into());
                    }
                    self.act(w, a);
                }
                let beta = node.attr_float_or("beta", 1.0).unwrap_or(0.0);
                if weight_const
                    && node.op_type == "Gemm"
                    && beta == 1.0
                    && let Some(c) = node.input(2)
                {
                    self.bias(c, x, w, &node.name);
                }
                if weight_const && let Some((add, b)) = group.and_then(|g| g.bias.as_ref()) {
                    self.bias(b, x, w, add);
                }
            }
            "Add" | "Mul" | "Concat" => {
                let inputs: Vec<&str> = node.inputs.iter().map(String::as_str).collect();
                for t in &inputs {
                    let float =
                        self.is_float_activation(t) || constant_f32(self.graph, t).is_some();
                    if !float {
                        return Err(format!("input '{t}' is not float32"));
                    }
                }
                for t in inputs {
                    if !self.weight(t, None, nq.weight) {
                        self.act(t, a);
                    }
                }
            }
            "GlobalAveragePool" | "BatchNormalization" => {
                if !self.is_float_activation(x) {
                    return Err("input is not a float32 activation".into());
                }
                self.act(x, a);
            }
            _ => {
                return Err(
                    "no int8 form: runs in float between DequantizeLinear and QuantizeLinear"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

fn is_onnx(n: &Node) -> bool {
    n.domain.is_empty() || n.domain == "ai.onnx"
}

/// Declared and inferred dtypes of every value.
fn value_dtypes(model: &Model) -> HashMap<String, DType> {
    let g = &model.graph;
    let mut m: HashMap<String, DType> = HashMap::new();
    for v in g.inputs.iter().chain(&g.outputs).chain(&g.value_info) {
        if let Some(d) = v.dtype() {
            m.insert(v.name.clone(), d);
        }
    }
    if let Ok(facts) = quench_ir::shape_inference::infer(model) {
        for (k, f) in facts {
            m.entry(k).or_insert(f.dtype);
        }
    }
    m
}

/// Plans the quantization of `model` under `cfg`, with `groups` from
/// [`super::fuse::find_groups`].
pub fn plan_quantization(
    model: &Model,
    groups: &[FusionGroup],
    cfg: &QuantConfig,
) -> Result<QuantPlan, QuantError> {
    let graph = &model.graph;
    let order = graph
        .topo_order(&|_| false)
        .map_err(|e| QuantError::Graph(e.to_string()))?;
    let mut settings: HashMap<&str, NodeQuant> = HashMap::new();
    for n in &graph.nodes {
        if let Some(nq) = cfg.for_node(n)? {
            settings.insert(n.name.as_str(), nq);
        }
    }
    // A group is only fused when every member is quantized.
    let active: Vec<&FusionGroup> = groups
        .iter()
        .filter(|g| g.nodes.iter().all(|n| settings.contains_key(n.as_str())))
        .collect();
    let active_owned: Vec<FusionGroup> = active.iter().map(|g| (*g).clone()).collect();
    let member_of = group_index(&active_owned);
    let users = super::consumers(graph);
    let mut p = Placer {
        graph,
        dtypes: value_dtypes(model),
        acts: IndexMap::new(),
        weights: IndexMap::new(),
        biases: Vec::new(),
        bias_users: users.iter().map(|(k, v)| (k.clone(), v.len())).collect(),
        quantized: Vec::new(),
        kept: Vec::new(),
        float_outputs: Vec::new(),
        no_q: HashSet::new(),
    };
    let mut following: Vec<(&Node, &NodeQuant)> = Vec::new();
    for &i in &order {
        let node = &graph.nodes[i];
        let group = member_of.get(&node.name).map(|&gi| &active_owned[gi]);
        if group.is_some_and(|g| g.head() != node.name) {
            continue;
        }
        let Some(nq) = settings.get(node.name.as_str()) else {
            p.kept
                .push((node.name.clone(), "excluded by the config".into()));
            continue;
        };
        if !is_onnx(node) {
            p.kept.push((
                node.name.clone(),
                format!("domain '{}' has no int8 form", node.domain),
            ));
            continue;
        }
        let op = node.op_type.as_str();
        if SHARING_OPS.contains(&op) || FOLLOWING_OPS.contains(&op) {
            following.push((node, nq));
            continue;
        }
        if let Err(reason) = p.compute(node, nq, group) {
            p.kept.push((node.name.clone(), reason));
            continue;
        }
        let members: Vec<String> = match group {
            Some(g) => g.nodes.clone(),
            None => vec![node.name.clone()],
        };
        let out = match group {
            Some(g) => g.output.clone(),
            None => node.outputs.first().cloned().unwrap_or_default(),
        };
        let int32_out = members
            .iter()
            .any(|m| settings.get(m.as_str()).is_some_and(|s| s.int32_output));
        if int32_out {
            p.float_outputs.push(node.name.clone());
            p.no_q.insert(out);
        } else {
            p.act(&out, nq.activation);
        }
        p.quantized.extend(members);
    }
    for (node, nq) in following {
        let x = node.input(0).unwrap_or("");
        if !p.acts.contains_key(x) || p.no_q.contains(x) {
            p.kept
                .push((node.name.clone(), "its input is not quantized".into()));
            continue;
        }
        if SHARING_OPS.contains(&node.op_type.as_str()) {
            let root = p.acts[x]
                .shared_with
                .clone()
                .unwrap_or_else(|| x.to_string());
            let config = p.acts[x].config;
            for o in &node.outputs {
                if p.is_float_activation(o) {
                    p.acts.insert(
                        o.clone(),
                        ActivationSpec {
                            tensor: o.clone(),
                            config,
                            shared_with: Some(root.clone()),
                        },
                    );
                }
            }
        } else if let Some(o) = node.outputs.first() {
            p.act(o, nq.activation);
        }
        p.quantized.push(node.name.clone());
    }
    for t in &p.no_q {
        p.acts.shift_remove(t);
    }
    // Graph order: inputs first, then by producing node.
    let position: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .flat_map(|(pos, &i)| {
            graph.nodes[i]
                .outputs
                .iter()
                .map(move |o| (o.as_str(), pos + 1))
        })
        .collect();
    p.acts
        .sort_by_cached_key(|t, _| position.get(t.as_str()).copied().unwrap_or(0));
    Ok(QuantPlan {
        activations: p.acts.into_values().collect(),
        weights: p.weights.into_values().collect(),
        biases: p.biases,
        quantized_nodes: p.quantized,
        kept_float: p.kept,
        float_outputs: p.float_outputs,
    })
}
