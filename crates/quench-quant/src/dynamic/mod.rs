//! Dynamic quantization: int8 weights ahead of time, activations quantized
//! on the fly at run time, no calibration data.
//!
//! Follows ONNX Runtime's `quantize_dynamic` (`operators/matmul.py`,
//! `operators/gemm.py`, `operators/lstm.py`): weights are symmetric int8
//! (zero point 0, range `[-127, 127]`), activations asymmetric uint8 as
//! `DynamicQuantizeLinear` computes them. MatMul/Gemm with constant weights
//! become `com.microsoft.DynamicQuantizeMatMul` (one node, bias folded in)
//! or, with [`DynamicFormat::Onnx`], standard `DynamicQuantizeLinear +
//! MatMulInteger + Cast + Mul`; `per_token` writes a per-row activation
//! quantization in standard ONNX ops; LSTM becomes
//! `com.microsoft.DynamicQuantizeLSTM`; Conv (opt-in) becomes
//! `DynamicQuantizeLinear + ConvInteger`. What cannot be quantized is kept
//! float and listed with the reason in [`DynamicReport::skipped`].

mod conv;
mod matmul;
mod rnn;
mod weights;

#[cfg(test)]
mod tests;

use crate::QuantError;
use crate::passes::{all_names, constants::constants_to_initializers, name_nodes};
use quench_ir::{Graph, Model, Node, OpsetImport};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// Op types quantized when none are named: PyTorch's and ORT's dynamic set
/// (Linear/MatMul/Gemm and the recurrent cells). Conv is opt-in, as in PyTorch.
pub const DEFAULT_OP_TYPES: &[&str] = &["MatMul", "Gemm", "LSTM", "GRU"];

/// Op types the pass knows (others named in `op_types` are an error).
pub const KNOWN_OP_TYPES: &[&str] = &["MatMul", "Gemm", "LSTM", "GRU", "Conv"];

/// Which operators carry the int8 matrix products of MatMul/Gemm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DynamicFormat {
    /// `com.microsoft.DynamicQuantizeMatMul`: one node with the bias folded
    /// in; what ORT's optimizer fuses its own output into, and Quench's
    /// fast int8 path.
    Contrib,
    /// Standard ONNX: `DynamicQuantizeLinear → MatMulInteger → Cast → Mul`,
    /// exactly the graph ORT's `quantize_dynamic` writes.
    Onnx,
}

/// Settings of [`quantize_dynamic`]; defaults follow ORT's `quantize_dynamic`
/// except that weights are per output channel (more accurate, same speed).
#[derive(Clone, Debug, PartialEq)]
pub struct DynamicConfig {
    /// One weight scale per output channel (`true`) or per tensor.
    pub per_channel: bool,
    /// Quantize activations per row (token) rather than per tensor.
    pub per_token: bool,
    pub format: DynamicFormat,
    /// Op types to quantize ([`DEFAULT_OP_TYPES`] when empty).
    pub op_types: Vec<String>,
    /// Node names to keep float.
    pub exclude: Vec<String>,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            per_channel: true,
            per_token: false,
            format: DynamicFormat::Contrib,
            op_types: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

impl DynamicConfig {
    fn op_types(&self) -> Result<HashSet<String>, QuantError> {
        if self.op_types.is_empty() {
            return Ok(DEFAULT_OP_TYPES.iter().map(|s| s.to_string()).collect());
        }
        for t in &self.op_types {
            if !KNOWN_OP_TYPES.contains(&t.as_str()) {
                return Err(QuantError::Config(format!(
                    "op type '{t}' cannot be quantized dynamically; expected some of {}",
                    KNOWN_OP_TYPES.join(", ")
                )));
            }
        }
        Ok(self.op_types.iter().cloned().collect())
    }
}

/// One node whose weights became int8.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedNode {
    pub name: String,
    pub op_type: String,
    /// Bytes of the float weights replaced (0 when shared with an earlier node).
    pub float_bytes: usize,
    /// Bytes of the int8 weights, scales and zero points written for it.
    pub quant_bytes: usize,
    /// The operator(s) that now compute it.
    pub as_ops: String,
}

/// A candidate node kept float.
#[derive(Clone, Debug, PartialEq)]
pub struct SkippedNode {
    pub name: String,
    pub op_type: String,
    pub reason: String,
}

/// What [`quantize_dynamic`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DynamicReport {
    pub quantized: Vec<QuantizedNode>,
    pub skipped: Vec<SkippedNode>,
    /// Constant nodes turned into initializers first.
    pub constants: usize,
    /// Bytes of all initializers before and after.
    pub model_bytes_before: usize,
    pub model_bytes_after: usize,
    /// Default-domain opset raised from this version, if it was.
    pub opset_raised_from: Option<i64>,
}

/// One row of [`DynamicReport::size_table`].
#[derive(Clone, Debug, PartialEq)]
pub struct SizeRow {
    pub op_type: String,
    pub nodes: usize,
    pub float_bytes: usize,
    pub quant_bytes: usize,
}

impl DynamicReport {
    /// Weight bytes per op type, float → quantized (PyTorch users print this
    /// after `quantize_dynamic`).
    pub fn size_table(&self) -> Vec<SizeRow> {
        let mut rows: BTreeMap<&str, SizeRow> = BTreeMap::new();
        for q in &self.quantized {
            let r = rows.entry(q.op_type.as_str()).or_insert_with(|| SizeRow {
                op_type: q.op_type.clone(),
                nodes: 0,
                float_bytes: 0,
                quant_bytes: 0,
            });
            r.nodes += 1;
            r.float_bytes += q.float_bytes;
            r.quant_bytes += q.quant_bytes;
        }
        rows.into_values().collect()
    }
}

fn mb(b: usize) -> String {
    format!("{:.2} MB", b as f64 / 1e6)
}

fn ratio(a: usize, b: usize) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.2}x", a as f64 / b as f64)
    }
}

impl fmt::Display for DynamicReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<10} {:>6} {:>12} {:>12} {:>8}",
            "op type", "nodes", "float", "int8", "smaller"
        )?;
        let (mut tf, mut tq, mut tn) = (0, 0, 0);
        for r in self.size_table() {
            writeln!(
                f,
                "{:<10} {:>6} {:>12} {:>12} {:>8}",
                r.op_type,
                r.nodes,
                mb(r.float_bytes),
                mb(r.quant_bytes),
                ratio(r.float_bytes, r.quant_bytes)
            )?;
            tf += r.float_bytes;
            tq += r.quant_bytes;
            tn += r.nodes;
        }
        writeln!(
            f,
            "{:<10} {:>6} {:>12} {:>12} {:>8}",
            "weights",
            tn,
            mb(tf),
            mb(tq),
            ratio(tf, tq)
        )?;
        write!(
            f,
            "{:<10} {:>6} {:>12} {:>12} {:>8}",
            "model",
            "",
            mb(self.model_bytes_before),
            mb(self.model_bytes_after),
            ratio(self.model_bytes_before, self.model_bytes_after)
        )?;
        let mut reasons: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for s in &self.skipped {
            reasons.entry(s.reason.as_str()).or_default().push(&s.name);
        }
        for (why, nodes) in reasons {
            let shown: Vec<&str> = nodes.iter().take(4).copied().collect();
            let more = if nodes.len() > 4 {
                format!(", … ({} in all)", nodes.len())
            } else {
                String::new()
            };
            write!(f, "\n  kept float: {}{more} — {why}", shown.join(", "))?;
        }
        Ok(())
    }
}

/// What a rewrite of one node produces.
pub(crate) enum Rewrite {
    /// Replacement nodes (placed where the original was), plus the index of
    /// a following node folded in (a bias Add), dropped from the graph.
    Done {
        nodes: Vec<Node>,
        absorbed: Option<usize>,
        report: QuantizedNode,
    },
    Skip(String),
}

/// Shared state of one pass: names in use, quantized-weight cache, consumers.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a DynamicConfig,
    pub names: HashSet<String>,
    pub opset: i64,
    /// Consumers of each value (node indices), and graph outputs.
    pub consumers: HashMap<String, Vec<usize>>,
    pub graph_outputs: HashSet<String>,
    pub weights: weights::Cache,
    /// Float facts (dtype) from shape inference.
    pub dtypes: HashMap<String, quench_ir::DType>,
}

impl Ctx<'_> {
    pub fn unique(&mut self, base: &str) -> String {
        crate::passes::unique(&mut self.names, base)
    }
}

/// Quantizes `model` dynamically under `cfg`; see the module docs.
pub fn quantize_dynamic(
    model: &Model,
    cfg: &DynamicConfig,
) -> Result<(Model, DynamicReport), QuantError> {
    let op_types = cfg.op_types()?;
    let names: HashSet<&str> = model.graph.nodes.iter().map(|n| n.name.as_str()).collect();
    if let Some(bad) = cfg.exclude.iter().find(|n| !names.contains(n.as_str())) {
        return Err(QuantError::Config(format!(
            "--exclude names node '{bad}', which the model does not have"
        )));
    }
    let mut model = model.clone();
    let mut report = DynamicReport {
        model_bytes_before: init_bytes(&model.graph),
        ..Default::default()
    };
    name_nodes(&mut model.graph);
    report.constants = constants_to_initializers(&mut model.graph)?;
    let needed = if cfg.per_token { 13 } else { 11 };
    if model.opset("").unwrap_or(1) < needed {
        report.opset_raised_from = crate::passes::opset::raise_default_opset(&mut model, 13)?;
        let order = model
            .graph
            .topo_order(&|_| false)
            .map_err(|e| QuantError::Graph(e.to_string()))?;
        let nodes = std::mem::take(&mut model.graph.nodes);
        let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
        model.graph.nodes = order.into_iter().filter_map(|i| slots[i].take()).collect();
    }
    let dtypes = quench_ir::shape_inference::infer(&model)
        .map(|f| f.into_iter().map(|(k, v)| (k, v.dtype)).collect())
        .unwrap_or_default();
    let graph = &model.graph;
    let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for inp in n
            .inputs
            .iter()
            .map(String::as_str)
            .chain(quench_ir::graph::subgraph_free_names(n))
        {
            consumers.entry(inp.to_string()).or_default().push(i);
        }
    }
    let mut ctx = Ctx {
        cfg,
        names: all_names(graph),
        opset: model.opset("").unwrap_or(1),
        consumers,
        graph_outputs: graph.outputs.iter().map(|o| o.name.clone()).collect(),
        weights: weights::Cache::default(),
        dtypes,
    };
    let mut groups: HashMap<usize, Vec<Node>> = HashMap::new();
    let mut dropped: HashSet<usize> = HashSet::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
        if !default_domain || !op_types.contains(&node.op_type) || dropped.contains(&i) {
            continue;
        }
        let skip = |reason: String| SkippedNode {
            name: node.name.clone(),
            op_type: node.op_type.clone(),
            reason,
        };
        if cfg.exclude.contains(&node.name) {
            report.skipped.push(skip("excluded by name".into()));
            continue;
        }
        let rw = match node.op_type.as_str() {
            "MatMul" | "Gemm" => matmul::rewrite(&mut ctx, graph, node)?,
            "LSTM" => rnn::rewrite_lstm(&mut ctx, graph, node)?,
            "Conv" => conv::rewrite(&mut ctx, graph, node)?,
            "GRU" => Rewrite::Skip(
                "ONNX Runtime has no dynamically quantized GRU operator; kept float so the model still runs there"
                    .into(),
            ),
            _ => Rewrite::Skip(format!(
                "dynamic {} is not implemented; kept float",
                node.op_type
            )),
        };
        match rw {
            Rewrite::Done {
                nodes,
                absorbed,
                report: r,
            } => {
                dropped.extend(absorbed);
                report.quantized.push(r);
                groups.insert(i, nodes);
            }
            Rewrite::Skip(reason) => report.skipped.push(skip(reason)),
        }
    }
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        if dropped.contains(&i) {
            continue;
        }
        match groups.remove(&i) {
            Some(g) => nodes.extend(g),
            None => nodes.push(node.clone()),
        }
    }
    let new_inits = ctx.weights.take_initializers();
    let uses_ms = nodes.iter().any(|n| n.domain == "com.microsoft");
    model.graph.nodes = nodes;
    model.graph.initializers.extend(new_inits);
    remove_unused(&mut model.graph);
    if uses_ms && model.opset("com.microsoft").is_none() {
        model.opset_imports.push(OpsetImport {
            domain: "com.microsoft".into(),
            version: 1,
        });
    }
    report.model_bytes_after = init_bytes(&model.graph);
    Ok((model, report))
}

fn init_bytes(g: &Graph) -> usize {
    g.initializers.values().map(|t| t.byte_size()).sum()
}

/// Drops initializers and Transpose/Identity nodes left without readers
/// (the float weights the pass replaced, and the transposes in front of them).
fn remove_unused(g: &mut Graph) {
    loop {
        let mut used: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
        for n in &g.nodes {
            used.extend(n.inputs.iter().cloned());
            used.extend(quench_ir::graph::subgraph_free_names(n).map(str::to_string));
        }
        let before = g.nodes.len();
        g.nodes.retain(|n| {
            !(matches!(n.op_type.as_str(), "Transpose" | "Identity")
                && n.outputs.iter().all(|o| !used.contains(o)))
        });
        if g.nodes.len() == before {
            let inputs: HashSet<&str> = g.inputs.iter().map(|v| v.name.as_str()).collect();
            g.initializers
                .retain(|k, _| used.contains(k) || inputs.contains(k.as_str()));
            return;
        }
    }
}
