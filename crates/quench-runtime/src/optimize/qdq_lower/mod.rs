//! QDQ lowering: `DequantizeLinear -> float op -> QuantizeLinear` groups of a
//! QDQ model become the integer op a QOperator model would hold (QLinearConv,
//! QLinearMatMul, QGemm, QLinearAdd, ...), following the selectors of ONNX
//! Runtime's QDQ transformer, so a QDQ file runs as fast as, and computes
//! exactly what, the QOperator file does.
//!
//! Rules (ORT's): every DQ/Q scale and zero-point is a constant (activations
//! per tensor, given zero-point), Q writes u8 or s8, inputs and output share
//! that type, and the float intermediate has the Q as its only reader. A
//! Relu or Clip between the op and the Q is dropped when the Q's saturation
//! already applies it (ORT's ReluQuantFusion / ClipQuantFusion). DQ nodes
//! stay while anything else reads them, and the Q's output keeps its name
//! and type, so graph outputs and other readers are untouched. Anything that
//! does not match stays float with Q/DQ at its border.

use super::index::Index;
use super::is_onnx;
use crate::Registry;
use quench_ir::{DType, Graph, Node, Tensor};
use std::collections::{HashMap, HashSet};

const MS: &str = "com.microsoft";

/// A constant DequantizeLinear: x, scale and zero-point names.
struct Dq<'a> {
    x: &'a str,
    scale: &'a str,
    zp: &'a str,
    scale_t: &'a Tensor,
    zp_t: &'a Tensor,
    axis: i64,
}

struct Ctx<'a> {
    nodes: &'a [Node],
    index: Index<'a>,
    registry: &'a Registry,
}

impl<'a> Ctx<'a> {
    /// The DQ producing `value`, with constant scale and zero-point.
    fn dq(&self, value: &str) -> Option<Dq<'a>> {
        let n = &self.nodes[self.index.producer(value)?];
        if !is_onnx(n, "DequantizeLinear") || n.inputs.len() != 3 || n.inputs[2].is_empty() {
            return None;
        }
        let scale_t = self.index.constant(&n.inputs[1])?;
        let zp_t = self.index.constant(&n.inputs[2])?;
        // Blocked quantization (opset 21 block_size) has no integer op here.
        if scale_t.dtype() != DType::F32
            || scale_t.shape() != zp_t.shape()
            || n.attr_int_or("block_size", 0).ok()? != 0
        {
            return None;
        }
        Some(Dq {
            x: &n.inputs[0],
            scale: &n.inputs[1],
            zp: &n.inputs[2],
            scale_t,
            zp_t,
            axis: n.attr_int_or("axis", 1).ok()?,
        })
    }

    /// A DQ of an activation: per-tensor, u8 or s8.
    fn act_dq(&self, value: &str) -> Option<Dq<'a>> {
        let d = self.dq(value)?;
        (d.scale_t.numel() == 1 && is_8bit(d.zp_t.dtype())).then_some(d)
    }

    fn has(&self, domain: &str, op: &str) -> bool {
        self.registry.get(domain, op).is_some()
    }
}

fn is_8bit(t: DType) -> bool {
    matches!(t, DType::U8 | DType::I8)
}

/// The Q's (scale, zp) names and values when both are constant scalars of a
/// supported type.
fn q_params<'a>(c: &Ctx<'a>, q: &'a Node) -> Option<(&'a str, &'a str, f32, &'a Tensor)> {
    if q.inputs.len() != 3 || q.inputs[2].is_empty() || q.outputs.len() != 1 {
        return None;
    }
    let s = c.index.constant(&q.inputs[1])?;
    let z = c.index.constant(&q.inputs[2])?;
    if s.numel() != 1 || z.numel() != 1 || !is_8bit(z.dtype()) || s.dtype() != DType::F32 {
        return None;
    }
    if q.attr_int_or("saturate", 1).ok()? != 1 {
        return None;
    }
    let scale = s.as_slice::<f32>().ok()?[0];
    Some((&q.inputs[1], &q.inputs[2], scale, z))
}

fn zp_value(z: &Tensor) -> Option<i32> {
    match z.dtype() {
        DType::U8 => Some(i32::from(z.as_slice::<u8>().ok()?[0])),
        DType::I8 => Some(i32::from(z.as_slice::<i8>().ok()?[0])),
        _ => None,
    }
}

/// Whether a Relu/Clip before a Q with these parameters changes nothing
/// (ORT: Relu when the zero-point is the type's minimum; Clip when its range
/// covers the Q's to within f32 epsilon, scalar scale and zero-point).
fn removable_activation(c: &Ctx, n: &Node, opset: i64, scale: f32, z: &Tensor) -> bool {
    let Some(zp) = zp_value(z) else {
        return false;
    };
    let qmin = if z.dtype() == DType::U8 { 0 } else { -128 };
    if is_onnx(n, "Relu") {
        return zp == qmin;
    }
    if !is_onnx(n, "Clip") || !z.shape().is_empty() {
        return false;
    }
    let bounds = if opset < 11 {
        (
            n.attr_float_or("min", f32::MIN).ok(),
            n.attr_float_or("max", f32::MAX).ok(),
        )
    } else {
        let b = |i: usize, d: f32| match n.input(i) {
            None => Some(d),
            Some(name) => c.index.scalar(name),
        };
        (b(1, f32::MIN), b(2, f32::MAX))
    };
    let (Some(min), Some(max)) = bounds else {
        return false;
    };
    let lower = scale * (qmin - zp) as f32;
    let upper = scale * (qmin + 255 - zp) as f32;
    !(f32::EPSILON < min - lower || f32::EPSILON < upper - max)
}

/// The graph's nodes with QDQ groups lowered to integer ops, or `None` when
/// nothing matched. `opset` is the default domain's version.
pub fn lower_qdq(g: &Graph, opset: i64, registry: &Registry) -> Option<Vec<Node>> {
    let nodes = &g.nodes;
    if !nodes.iter().any(|n| is_onnx(n, "DequantizeLinear")) {
        return None;
    }
    let c = Ctx {
        nodes,
        index: Index::new(nodes, g),
        registry,
    };
    let mut removed: HashSet<usize> = HashSet::new();
    let mut replaced: HashMap<usize, Node> = HashMap::new();
    for (qi, q) in nodes.iter().enumerate() {
        if !is_onnx(q, "QuantizeLinear") {
            continue;
        }
        let Some((ys, yz, scale, z)) = q_params(&c, q) else {
            continue;
        };
        let Some(mut pi) = c.index.producer(&q.inputs[0]) else {
            continue;
        };
        if c.index.only_reader(&q.inputs[0]) != Some(qi) || removed.contains(&pi) {
            continue;
        }
        let mut absorbed = vec![pi];
        let act = &nodes[pi];
        if act.outputs.len() == 1 && removable_activation(&c, act, opset, scale, z) {
            let Some(p) = act.input(0).and_then(|v| c.index.producer(v)) else {
                continue;
            };
            if c.index.only_reader(&act.inputs[0]) != Some(pi) || removed.contains(&p) {
                continue;
            }
            pi = p;
            absorbed.push(p);
        }
        let op = &nodes[pi];
        if op.outputs.len() != 1 || !(op.domain.is_empty() || op.domain == "ai.onnx") {
            continue;
        }
        if let Some(mut lowered) = lower_one(&c, op, (ys, yz), z.dtype(), &q.outputs[0]) {
            lowered.name = format!("{}_lowered", op.name);
            removed.extend(absorbed);
            replaced.insert(qi, lowered);
        }
    }
    if replaced.is_empty() {
        return None;
    }
    let kept: Vec<Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !removed.contains(i))
        .map(|(i, n)| replaced.remove(&i).unwrap_or_else(|| n.clone()))
        .collect();
    Some(drop_dead_dq(g, kept))
}

/// Removes the DequantizeLinear nodes nothing reads any more.
fn drop_dead_dq(g: &Graph, nodes: Vec<Node>) -> Vec<Node> {
    let mut read: HashSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    for n in &nodes {
        read.extend(n.inputs.iter().map(String::as_str));
        read.extend(quench_ir::graph::subgraph_free_names(n));
    }
    let dead: Vec<bool> = nodes
        .iter()
        .map(|n| {
            is_onnx(n, "DequantizeLinear") && n.outputs.iter().all(|o| !read.contains(o.as_str()))
        })
        .collect();
    nodes
        .into_iter()
        .zip(dead)
        .filter(|(_, d)| !d)
        .map(|(n, _)| n)
        .collect()
}

fn node(op: &str, domain: &str, inputs: Vec<&str>, out: &str) -> Node {
    let mut n = Node::new(op, "", &inputs, &[out]);
    n.domain = domain.into();
    n
}

/// The integer node computing `op` followed by the Q (scale, zp names),
/// writing `out`, or `None` if the group does not qualify.
fn lower_one(c: &Ctx, op: &Node, y: (&str, &str), ty: DType, out: &str) -> Option<Node> {
    let same = |d: &Dq| d.zp_t.dtype() == ty;
    let (ys, yz) = y;
    match op.op_type.as_str() {
        "Conv" => {
            let x = c.act_dq(op.input(0)?).filter(same)?;
            let w = c.dq(op.input(1)?)?;
            let wt = c.index.constant(w.x)?;
            if !is_8bit(wt.dtype()) || !c.has("", "QLinearConv") {
                return None;
            }
            if w.scale_t.numel() != 1
                && (w.axis != 0 || wt.shape().first().is_none_or(|&m| w.scale_t.shape() != [m]))
            {
                return None;
            }
            let mut inputs = vec![x.x, x.scale, x.zp, w.x, w.scale, w.zp, ys, yz];
            if let Some(b) = op.input(2) {
                inputs.push(int32_bias(c, b, &x, &w)?);
            }
            let mut n = node("QLinearConv", "", inputs, out);
            n.attrs = op.attrs.clone();
            Some(n)
        }
        "MatMul" => {
            let a = c.act_dq(op.input(0)?).filter(same)?;
            let b = c.dq(op.input(1)?)?;
            let per_col = b.scale_t.numel() != 1;
            if !is_8bit(b.zp_t.dtype()) || !c.has("", "QLinearMatMul") {
                return None;
            }
            if per_col {
                // QLinearMatMul takes per-column scales of a 2-D B only.
                let bt = c.index.constant(b.x)?;
                if bt.shape().len() != 2
                    || !(b.axis == 1 || b.axis == -1)
                    || b.scale_t.shape() != [bt.shape()[1]]
                {
                    return None;
                }
            }
            let inputs = vec![a.x, a.scale, a.zp, b.x, b.scale, b.zp, ys, yz];
            Some(node("QLinearMatMul", "", inputs, out))
        }
        "Gemm" => {
            let a = c.act_dq(op.input(0)?).filter(same)?;
            let b = c.dq(op.input(1)?)?;
            let bt = c.index.constant(b.x)?;
            if !is_8bit(bt.dtype()) || !c.has(MS, "QGemm") {
                return None;
            }
            if op.attr_float_or("beta", 1.0).ok()? != 1.0 || op.attr_int_or("transA", 0).ok()? != 0
            {
                return None;
            }
            let trans_b = op.attr_int_or("transB", 0).ok()? != 0;
            // Per-column scales: 1-D, one per output column (not blocked).
            let n_axis = if trans_b { 0 } else { 1 };
            if b.scale_t.numel() != 1
                && (bt.shape().len() != 2
                    || b.axis != n_axis as i64
                    || b.scale_t.shape() != [bt.shape()[n_axis]])
            {
                return None;
            }
            let bias = match op.input(2) {
                Some(v) => int32_bias(c, v, &a, &b)?,
                None => "",
            };
            let inputs = vec![a.x, a.scale, a.zp, b.x, b.scale, b.zp, bias, ys, yz];
            let mut n = node("QGemm", MS, inputs, out);
            for k in ["alpha", "transB"] {
                if let Some(v) = op.attrs.get(k) {
                    n.attrs.insert(k.into(), v.clone());
                }
            }
            Some(n)
        }
        "Add" | "Mul" => {
            let name = if op.op_type == "Add" {
                "QLinearAdd"
            } else {
                "QLinearMul"
            };
            let a = c.act_dq(op.input(0)?).filter(same)?;
            let b = c.act_dq(op.input(1)?).filter(same)?;
            if !c.has(MS, name) {
                return None;
            }
            let inputs = vec![a.x, a.scale, a.zp, b.x, b.scale, b.zp, ys, yz];
            Some(node(name, MS, inputs, out))
        }
        "GlobalAveragePool" | "AveragePool" | "Sigmoid" | "LeakyRelu" => {
            let name = format!("QLinear{}", op.op_type);
            let x = c.act_dq(op.input(0)?).filter(same)?;
            if !c.has(MS, &name) {
                return None;
            }
            let mut n = node(&name, MS, vec![x.x, x.scale, x.zp, ys, yz], out);
            n.attrs = op.attrs.clone();
            Some(n)
        }
        "Concat" => {
            if !c.has(MS, "QLinearConcat") || op.inputs.is_empty() {
                return None;
            }
            let mut inputs = vec![ys, yz];
            for v in &op.inputs {
                let d = c.act_dq(v).filter(same)?;
                inputs.extend([d.x, d.scale, d.zp]);
            }
            let mut n = node("QLinearConcat", MS, inputs, out);
            n.attrs = op.attrs.clone();
            Some(n)
        }
        "MaxPool" | "Reshape" | "Flatten" | "Transpose" | "Squeeze" | "Unsqueeze" => {
            let x = c.act_dq(op.input(0)?).filter(same)?;
            let (s, z) = (x.scale_t.as_slice::<f32>().ok()?[0], zp_value(x.zp_t)?);
            let ys_v = c.index.scalar(ys)?;
            let yz_v = zp_value(c.index.constant(yz)?)?;
            // Only a pure data move is exact on the integers; MaxPool's
            // Indices output is float-free but must not be requested.
            if s != ys_v || z != yz_v || (op.op_type == "MaxPool" && op.outputs.len() != 1) {
                return None;
            }
            let mut n = op.clone();
            n.inputs[0] = x.x.to_string();
            n.outputs = vec![out.to_string()];
            Some(n)
        }
        _ => None,
    }
}

/// The int32 bias feeding a lowered Conv/Gemm: a DQ of an int32 constant
/// whose scale is x_scale * w_scale (what the integer op assumes).
fn int32_bias<'a>(c: &Ctx<'a>, value: &str, x: &Dq, w: &Dq) -> Option<&'a str> {
    let n: &'a Node = &c.nodes[c.index.producer(value)?];
    if !is_onnx(n, "DequantizeLinear") {
        return None;
    }
    let b = c.index.constant(n.input(0)?)?;
    if b.dtype() != DType::I32 {
        return None;
    }
    let bs = c.index.constant(n.input(1)?)?.as_slice::<f32>().ok()?;
    if let Some(z) = n.input(2) {
        let zt = c.index.constant(z)?;
        if zt.to_i64_vec().ok()?.iter().any(|&v| v != 0) {
            return None;
        }
    }
    let xs = x.scale_t.as_slice::<f32>().ok()?[0];
    let ws = w.scale_t.as_slice::<f32>().ok()?;
    let ok = |i: usize| {
        let want = xs * ws[if ws.len() == 1 { 0 } else { i }];
        let have = bs[if bs.len() == 1 { 0 } else { i }];
        (want - have).abs() <= 1e-5 * want.abs().max(f32::MIN_POSITIVE)
    };
    let len = ws.len().max(bs.len());
    if (bs.len() != 1 && bs.len() != len) || !(0..len).all(ok) {
        return None;
    }
    n.input(0)
}

#[cfg(test)]
mod tests;
