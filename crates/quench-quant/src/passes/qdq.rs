//! The QDQ model: QuantizeLinear → DequantizeLinear around float ops.
//!
//! Laid out as ONNX Runtime's `QDQQuantizer` writes it, so that ORT,
//! TensorRT and OpenVINO recognise the patterns: one Q/DQ pair per planned
//! activation shared by all its consumers (a graph output keeps its name on
//! the DQ side), weights stored as int8 initializers behind a
//! DequantizeLinear (per-axis when per-channel), biases as int32 with scale
//! `s_input × s_weight` and zero point 0.

use super::plan::QuantPlan;
use super::{all_names, is_graph_output, sort_nodes, unique};
use crate::observer::{MinMax, Observer, PerChannelMinMax};
use crate::{QParams, QuantDType, QuantError, quantize, quantize_bias};
use quench_ir::{Attr, Graph, Model, Node, Tensor};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What [`convert_qdq`] inserted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConvertReport {
    /// QuantizeLinear/DequantizeLinear pairs on activations.
    pub activations: usize,
    pub weights: usize,
    pub biases: usize,
    /// `(bias, reason)` for planned biases left in float.
    pub float_biases: Vec<(String, String)>,
    /// Float bytes of the quantized weights and biases, and their size now.
    pub bytes_before: usize,
    pub bytes_after: usize,
    /// The default-domain opset before it was raised, if it was.
    pub opset_raised_from: Option<i64>,
}

/// The minimum default-domain opset of a QDQ model (per-axis DequantizeLinear).
pub const MIN_OPSET: i64 = 13;

fn graph_err(msg: String) -> QuantError {
    QuantError::Graph(msg)
}

/// Scale and zero-point initializers for `qp`, named after `base`.
fn qparam_initializers(
    graph: &mut Graph,
    names: &mut HashSet<String>,
    base: &str,
    qp: &QParams,
) -> Result<(String, String), QuantError> {
    let per_channel = qp.axis.is_some();
    let shape = if per_channel { vec![qp.len()] } else { vec![] };
    let ir = |e: quench_ir::IrError| graph_err(e.to_string());
    let scale = Tensor::from_vec(shape.clone(), qp.scale.clone()).map_err(ir)?;
    let zp = &qp.zero_point;
    let zero_point = match qp.dtype {
        QuantDType::U8 => Tensor::from_vec(shape, zp.iter().map(|&z| z as u8).collect::<Vec<_>>()),
        QuantDType::I8 => Tensor::from_vec(shape, zp.iter().map(|&z| z as i8).collect::<Vec<_>>()),
        QuantDType::I32 => Tensor::from_vec(shape, zp.clone()),
    }
    .map_err(ir)?;
    let s = unique(names, &format!("{base}_scale"));
    let z = unique(names, &format!("{base}_zero_point"));
    graph.initializers.insert(s.clone(), scale);
    graph.initializers.insert(z.clone(), zero_point);
    Ok((s, z))
}

fn qdq_node(op: &str, name: String, inputs: [&str; 3], output: &str, axis: Option<usize>) -> Node {
    let node = Node::new(op, &name, &inputs, &[output]);
    match axis {
        Some(a) => node.with_attr("axis", Attr::Int(a as i64)),
        None => node,
    }
}

/// Points every top-level node input `from` at `to`.
fn rewire(graph: &mut Graph, from: &str, to: &str) {
    for n in &mut graph.nodes {
        for i in n.inputs.iter_mut().filter(|i| *i == from) {
            *i = to.to_string();
        }
    }
}

/// Weight parameters as ORT computes them: min/max of the data (per channel
/// of `axis`), then the weight config (symmetric int8 by default).
pub(crate) fn weight_qparams(
    name: &str,
    t: &Tensor,
    axis: Option<usize>,
    cfg: &crate::QParamsConfig,
) -> Result<QParams, QuantError> {
    let mut obs: Box<dyn Observer> = match axis {
        Some(a) => Box::new(PerChannelMinMax::new(name, a)),
        None => Box::new(MinMax::new(name)),
    };
    obs.observe_tensor(t)?;
    obs.qparams(cfg)
}

/// Writes the QDQ model of `model` (the float model [`super::prepare`]
/// returned) for `plan`, with calibrated per-tensor parameters for every
/// activation of [`QuantPlan::calibrated`]. Shared activations use their
/// root's parameters; an entry for them is ignored.
pub fn convert_qdq(
    model: &Model,
    plan: &QuantPlan,
    act_qparams: &BTreeMap<String, QParams>,
) -> Result<(Model, ConvertReport), QuantError> {
    let mut model = model.clone();
    let mut report = ConvertReport::default();
    let graph = &mut model.graph;
    let mut names = all_names(graph);
    let mut replaced: Vec<String> = Vec::new();

    let mut weight_qp: HashMap<String, QParams> = HashMap::new();
    for spec in &plan.weights {
        let t = super::constant_f32(graph, &spec.tensor)
            .ok_or_else(|| {
                graph_err(format!(
                    "weight '{}' is not a float32 initializer",
                    spec.tensor
                ))
            })?
            .clone();
        let qp = weight_qparams(&spec.tensor, &t, spec.axis, &spec.config)?;
        let q = quantize(&t, &qp)?;
        report.bytes_before += t.byte_size();
        report.bytes_after += q.byte_size();
        let q_name = unique(&mut names, &format!("{}_quantized", spec.tensor));
        graph.initializers.insert(q_name.clone(), q);
        let (s, z) = qparam_initializers(graph, &mut names, &spec.tensor, &qp)?;
        let out = unique(
            &mut names,
            &format!("{}_DequantizeLinear_Output", spec.tensor),
        );
        rewire(graph, &spec.tensor, &out);
        let dq = unique(&mut names, &format!("{}_DequantizeLinear", spec.tensor));
        graph.nodes.push(qdq_node(
            "DequantizeLinear",
            dq,
            [&q_name, &s, &z],
            &out,
            qp.axis,
        ));
        replaced.push(spec.tensor.clone());
        weight_qp.insert(spec.tensor.clone(), qp);
        report.weights += 1;
    }

    // Activation parameters, resolved through sharing, one initializer pair per root.
    let mut act_inits: HashMap<String, (String, String, QParams)> = HashMap::new();
    for spec in &plan.activations {
        let src = plan.params_source(&spec.tensor).to_string();
        if act_inits.contains_key(&src) {
            continue;
        }
        let qp = act_qparams.get(&src).ok_or_else(|| {
            QuantError::Config(format!(
                "no quantization parameters for activation '{src}': calibrate every tensor of plan.calibrated()"
            ))
        })?;
        if qp.len() != 1 || qp.axis.is_some() || qp.dtype == QuantDType::I32 {
            return Err(QuantError::Config(format!(
                "activation '{src}' needs per-tensor uint8/int8 parameters, got {qp:?}"
            )));
        }
        let (s, z) = qparam_initializers(graph, &mut names, &src, qp)?;
        act_inits.insert(src, (s, z, qp.clone()));
    }
    for spec in &plan.activations {
        let t = spec.tensor.as_str();
        let (s, z, _) = &act_inits[plan.params_source(t)];
        let (s, z) = (s.clone(), z.clone());
        let q_out = unique(&mut names, &format!("{t}_QuantizeLinear_Output"));
        let producer = graph
            .nodes
            .iter()
            .position(|n| n.outputs.iter().any(|o| o == t));
        let (q_in, dq_out) = match producer {
            Some(pi) if is_graph_output(graph, t) => {
                let q_in = unique(&mut names, &format!("{t}_QuantizeLinear_Input"));
                for o in graph.nodes[pi].outputs.iter_mut().filter(|o| *o == t) {
                    *o = q_in.clone();
                }
                (q_in, t.to_string())
            }
            _ => {
                let dq_out = unique(&mut names, &format!("{t}_DequantizeLinear_Output"));
                rewire(graph, t, &dq_out);
                (t.to_string(), dq_out)
            }
        };
        let q_name = unique(&mut names, &format!("{t}_QuantizeLinear"));
        let dq_name = unique(&mut names, &format!("{t}_DequantizeLinear"));
        graph.nodes.push(qdq_node(
            "QuantizeLinear",
            q_name,
            [&q_in, &s, &z],
            &q_out,
            None,
        ));
        graph.nodes.push(qdq_node(
            "DequantizeLinear",
            dq_name,
            [&q_out, &s, &z],
            &dq_out,
            None,
        ));
        report.activations += 1;
    }

    for spec in &plan.biases {
        let input_qp = plan
            .activation(&spec.input)
            .map(|_| &act_inits[plan.params_source(&spec.input)].2);
        let (Some(input_qp), Some(w_qp)) = (input_qp, weight_qp.get(&spec.weight)) else {
            report.float_biases.push((
                spec.tensor.clone(),
                "its input or weight is not quantized".into(),
            ));
            continue;
        };
        let Some(b) = super::constant_f32(graph, &spec.tensor) else {
            report
                .float_biases
                .push((spec.tensor.clone(), "not a float32 initializer".into()));
            continue;
        };
        let data = b.as_slice::<f32>().map_err(|e| graph_err(e.to_string()))?;
        let (q, qp) = match quantize_bias(data, input_qp.scale[0], &w_qp.scale) {
            Ok(r) => r,
            Err(e) => {
                report
                    .float_biases
                    .push((spec.tensor.clone(), e.to_string()));
                continue;
            }
        };
        report.bytes_before += b.byte_size();
        let q = Tensor::from_vec(vec![q.len()], q).map_err(|e| graph_err(e.to_string()))?;
        report.bytes_after += q.byte_size();
        let q_name = unique(&mut names, &format!("{}_quantized", spec.tensor));
        graph.initializers.insert(q_name.clone(), q);
        let (s, z) = qparam_initializers(graph, &mut names, &q_name, &qp)?;
        let out = unique(
            &mut names,
            &format!("{}_DequantizeLinear_Output", spec.tensor),
        );
        let Some(node) = graph.nodes.iter_mut().find(|n| n.name == spec.node) else {
            return Err(graph_err(format!(
                "bias '{}' names node '{}', which is not in the graph",
                spec.tensor, spec.node
            )));
        };
        for i in node.inputs.iter_mut().filter(|i| **i == spec.tensor) {
            *i = out.clone();
        }
        let dq = unique(&mut names, &format!("{}_DequantizeLinear", spec.tensor));
        graph.nodes.push(qdq_node(
            "DequantizeLinear",
            dq,
            [&q_name, &s, &z],
            &out,
            qp.axis,
        ));
        replaced.push(spec.tensor.clone());
        report.biases += 1;
    }

    let used = super::consumers(graph);
    for r in replaced {
        if !used.contains_key(&r)
            && !is_graph_output(graph, &r)
            && !graph.inputs.iter().any(|i| i.name == r)
        {
            graph.initializers.shift_remove(&r);
        }
    }
    report.opset_raised_from = super::opset::raise_default_opset(&mut model, MIN_OPSET)?;
    sort_nodes(&mut model.graph)?;
    model.ir_version = model.ir_version.max(7);
    Ok((model, report))
}
