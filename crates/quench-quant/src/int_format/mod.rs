//! QDQ → integer-only ("QOperator") conversion.
//!
//! A QDQ model says *where* int8 is wanted (DequantizeLinear → float op →
//! QuantizeLinear); deploy runtimes want the integer op itself. [`to_int`]
//! rewrites each such group into the integer op ONNX Runtime would pick for it
//! (its QDQ selector/actions and its QOperator quantizer), so the result is
//! the model ORT's `quantize_static(quant_format=QOperator)` writes:
//!
//! | float op (DQ inputs, Q output)      | integer form                                   |
//! |--------------------------------------|------------------------------------------------|
//! | Conv                                 | QLinearConv (int32 bias, per-channel weights)  |
//! | Conv, output not quantized           | ConvInteger → Add(int32 bias) → DequantizeLinear |
//! | MatMul                               | QLinearMatMul, or com.microsoft MatMulIntegerToFloat without Q |
//! | Gemm                                 | com.microsoft QGemm (float output without Q)   |
//! | Add, Mul                             | com.microsoft QLinearAdd, QLinearMul           |
//! | Concat                               | com.microsoft QLinearConcat                    |
//! | GlobalAveragePool, AveragePool       | com.microsoft QLinearGlobalAveragePool, QLinearAveragePool |
//! | Sigmoid, LeakyRelu                   | com.microsoft QLinearSigmoid, QLinearLeakyRelu |
//! | MaxPool, Reshape, Transpose, ...     | the same op on the integer tensor (equal DQ/Q parameters) |
//!
//! A Relu or Clip whose range the following QuantizeLinear already enforces is
//! removed first. Everything else keeps its DQ → float op → Q (mixed
//! precision), and the report says why.

mod conv;
mod linear;
mod matmul;
mod passthrough;
mod qdq;

use crate::QuantError;
use qdq::{Ctx, Emit, Reason};
use quench_ir::{Model, Node, OpsetImport};
use std::collections::{BTreeMap, HashSet};

/// What [`to_int`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IntReport {
    /// Conversions by kind, e.g. `"Conv -> QLinearConv"` → 3.
    pub converted: BTreeMap<String, usize>,
    /// Relu/Clip nodes dropped because their QuantizeLinear clamps the same range.
    pub activations_absorbed: usize,
    /// Nodes left in float: (node label, op type, why).
    pub kept_float: Vec<(String, String, String)>,
    /// QuantizeLinear/DequantizeLinear nodes left (graph borders, float islands).
    pub qdq_left: usize,
}

impl IntReport {
    pub fn total_converted(&self) -> usize {
        self.converted.values().sum()
    }
}

impl std::fmt::Display for IntReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, v) in &self.converted {
            writeln!(f, "  {v:>4} × {k}")?;
        }
        if self.activations_absorbed > 0 {
            writeln!(
                f,
                "  {:>4} × Relu/Clip absorbed by the output range",
                self.activations_absorbed
            )?;
        }
        for (label, op, why) in &self.kept_float {
            writeln!(f, "  float: {label} ({op}): {why}")?;
        }
        write!(
            f,
            "  {} QuantizeLinear/DequantizeLinear left",
            self.qdq_left
        )
    }
}

/// One group's replacement.
pub(crate) struct Rewrite {
    pub nodes: Vec<Node>,
    /// The QuantizeLinear absorbed with the op, if any.
    pub q: Option<usize>,
    pub kind: String,
}

/// Rewrites every DQ → op → Q group of a QDQ model into its integer op.
pub fn to_int(model: &Model) -> Result<(Model, IntReport), QuantError> {
    let mut report = IntReport::default();
    let mut model = model.clone();
    let opset = model.opset("").unwrap_or(1);
    report.activations_absorbed = passthrough::absorb_activations(&mut model.graph, opset);
    let g = &model.graph;
    g.topo_order(&|_| false)
        .map_err(|e| QuantError::Config(format!("cannot convert: {e}")))?;
    let ctx = Ctx::new(g, opset);
    let mut emit = Emit::new(g);
    let mut replaced: Vec<Option<Rewrite>> = (0..g.nodes.len()).map(|_| None).collect();
    let mut absorbed: HashSet<usize> = HashSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if matches!(
            n.op_type.as_str(),
            "QuantizeLinear" | "DequantizeLinear" | "Constant"
        ) && n.domain.is_empty()
        {
            continue;
        }
        match convert(&ctx, &mut emit, n) {
            Ok(rw) => {
                *report.converted.entry(rw.kind.clone()).or_default() += 1;
                absorbed.extend(rw.q);
                replaced[i] = Some(rw);
            }
            Err(why) => report.kept_float.push((n.label(), n.op_type.clone(), why)),
        }
    }
    let mut nodes = Vec::with_capacity(g.nodes.len());
    for (i, n) in g.nodes.iter().enumerate() {
        if absorbed.contains(&i) {
            continue;
        }
        match replaced[i].take() {
            Some(rw) => nodes.extend(rw.nodes),
            None => nodes.push(n.clone()),
        }
    }
    let uses_ms = nodes.iter().any(|n| n.domain == "com.microsoft");
    let inits = emit.inits;
    let g = &mut model.graph;
    g.nodes = nodes;
    g.initializers.extend(inits);
    remove_dead(g);
    report.qdq_left = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear"))
        .count();
    if uses_ms && model.opset("com.microsoft").is_none() {
        model.opset_imports.push(OpsetImport {
            domain: "com.microsoft".into(),
            version: 1,
        });
    }
    Ok((model, report))
}

fn convert(ctx: &Ctx, emit: &mut Emit, n: &Node) -> Result<Rewrite, Reason> {
    if !n.domain.is_empty() && n.domain != "ai.onnx" {
        return Err(format!("domain {} has no integer form here", n.domain));
    }
    match n.op_type.as_str() {
        "Conv" => conv::conv(ctx, emit, n),
        "MatMul" => matmul::matmul(ctx, emit, n),
        "Gemm" => matmul::gemm(ctx, emit, n),
        "Add" | "Mul" => linear::binary(ctx, emit, n),
        "Concat" => linear::concat(ctx, emit, n),
        "GlobalAveragePool" | "AveragePool" | "Sigmoid" | "LeakyRelu" => {
            linear::unary(ctx, emit, n)
        }
        op if passthrough::DIRECT.contains(&op) => passthrough::direct(ctx, n),
        _ => Err("no integer form".into()),
    }
}

/// Drops QuantizeLinear/DequantizeLinear/Constant nodes nobody reads any
/// more, then initializers and value_info of names that are gone.
fn remove_dead(g: &mut quench_ir::Graph) {
    loop {
        let used: HashSet<String> = used_names(g).into_iter().map(String::from).collect();
        let before = g.nodes.len();
        g.nodes.retain(|n| {
            !(matches!(
                n.op_type.as_str(),
                "QuantizeLinear" | "DequantizeLinear" | "Constant"
            ) && n.domain.is_empty()
                && n.outputs.iter().all(|o| !used.contains(o)))
        });
        if g.nodes.len() == before {
            break;
        }
    }
    let used: HashSet<String> = used_names(g).into_iter().map(String::from).collect();
    let inputs: HashSet<String> = g.inputs.iter().map(|v| v.name.clone()).collect();
    g.initializers
        .retain(|k, _| used.contains(k) || inputs.contains(k));
    let defined: HashSet<String> = g
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().cloned())
        .collect();
    g.value_info.retain(|v| defined.contains(&v.name));
}

fn used_names(g: &quench_ir::Graph) -> HashSet<&str> {
    let mut used: HashSet<&str> = g.outputs.iter().map(|v| v.name.as_str()).collect();
    for n in &g.nodes {
        used.extend(n.inputs.iter().map(String::as_str));
        used.extend(quench_ir::graph::subgraph_free_names(n));
    }
    used
}

#[cfg(test)]
mod tests;
