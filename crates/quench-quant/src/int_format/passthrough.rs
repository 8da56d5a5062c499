//! Ops that move or select values without computing new ones run directly on
//! the integer tensor when their DequantizeLinear and QuantizeLinear agree
//! (ORT's "drop QDQ" rules); and a Relu/Clip in front of a QuantizeLinear
//! that clamps the same range anyway is removed (ORT's Relu/Clip-Quant fusion).

use super::Rewrite;
use super::qdq::{Ctx, Reason, is_8bit};
use quench_ir::{Graph, Node};

/// Ops that keep input 0's quantization: ORT drops their DQ/Q when equal.
pub(crate) const DIRECT: [&str; 13] = [
    "MaxPool",
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Resize",
    "Gather",
    "GatherElements",
    "Slice",
    "Expand",
    "Tile",
    "Identity",
];

pub(crate) fn direct(ctx: &Ctx, n: &Node) -> Result<Rewrite, Reason> {
    let d = ctx.dq_input(n, 0)?;
    let q = ctx.q_output(n)?;
    if !d.p.per_tensor() || !is_8bit(d.p.dtype) {
        return Err("input 0 is not per-tensor 8-bit".into());
    }
    if !d.p.same_as(&q.p) {
        return Err("input and output quantization differ".into());
    }
    if n.op_type == "MaxPool" && ctx.opset < 12 {
        return Err("MaxPool before opset 12 has no 8-bit form".into());
    }
    let mut m = n.clone();
    m.inputs[0] = d.x.clone();
    m.outputs[0] = q.y.clone();
    Ok(Rewrite {
        kind: format!("{0} -> {0} on the integer tensor", n.op_type),
        nodes: vec![m],
        q: Some(q.node),
    })
}

/// The constant float bounds of a Relu or Clip, if it is one.
fn bounds(ctx: &Ctx, n: &Node) -> Option<(f32, f32)> {
    if !n.domain.is_empty() {
        return None;
    }
    match n.op_type.as_str() {
        "Relu" => Some((0.0, f32::INFINITY)),
        "Clip" => {
            let scalar = |i: usize| -> Option<Option<f32>> {
                match n.input(i) {
                    None => Some(None),
                    Some(name) => {
                        let t = ctx.constant(name)?;
                        let v = t.as_slice::<f32>().ok()?;
                        (v.len() == 1).then(|| Some(v[0]))
                    }
                }
            };
            let lo = match scalar(1)? {
                Some(v) => v,
                None => n.attr_float_or("min", f32::NEG_INFINITY).ok()?,
            };
            let hi = match scalar(2)? {
                Some(v) => v,
                None => n.attr_float_or("max", f32::INFINITY).ok()?,
            };
            Some((lo, hi))
        }
        _ => None,
    }
}

/// Removes each Relu/Clip whose only reader is a per-tensor QuantizeLinear
/// that saturates at (within a quarter step of) the same bounds, so the
/// clamp changes no quantized value. Returns how many were removed.
pub(crate) fn absorb_activations(g: &mut Graph, opset: i64) -> usize {
    let mut edits: Vec<(usize, usize)> = Vec::new();
    {
        let ctx = Ctx::new(g, opset);
        for (i, n) in g.nodes.iter().enumerate() {
            let Some((lo, hi)) = bounds(&ctx, n) else {
                continue;
            };
            let Ok(q) = ctx.q_output(n) else { continue };
            if n.input(0).is_none() || !is_8bit(q.p.dtype) {
                continue;
            }
            let (qmin, qmax) = q.p.qmin_max();
            let (s, zp) = (q.p.scales[0], q.p.zps[0]);
            let (qlo, qhi) = ((qmin - zp) as f32 * s, (qmax - zp) as f32 * s);
            if lo <= qlo + 0.25 * s && hi >= qhi - 0.25 * s {
                edits.push((i, q.node));
            }
        }
    }
    for &(relu, q) in &edits {
        let x = g.nodes[relu].inputs[0].clone();
        g.nodes[q].inputs[0] = x;
    }
    let dead: std::collections::HashSet<usize> = edits.iter().map(|e| e.0).collect();
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !dead.contains(&(i - 1))
    });
    edits.len()
}
