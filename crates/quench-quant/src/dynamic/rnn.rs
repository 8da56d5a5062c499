//! LSTM → `com.microsoft.DynamicQuantizeLSTM`, as ORT's `LSTMQuant`: W and
//! R symmetric int8, transposed to `[dirs, in, 4·hidden]`, with one scale
//! per gate row (per channel) or per direction (per tensor).

use super::weights::{self, QWeight};
use super::{Ctx, QuantizedNode, Rewrite};
use crate::QuantError;
use quench_ir::{DType, Graph, Node, Tensor};

fn bad(e: quench_ir::IrError) -> QuantError {
    QuantError::Graph(e.to_string())
}

pub(super) fn rewrite_lstm(
    ctx: &mut Ctx,
    graph: &Graph,
    node: &Node,
) -> Result<Rewrite, QuantError> {
    if node.attr_int_or("layout", 0).map_err(bad)? != 0 {
        return Ok(Rewrite::Skip(
            "LSTM with layout=1 (batch first): DynamicQuantizeLSTM has no layout attribute".into(),
        ));
    }
    if let Some(x) = node.input(0)
        && let Some(dt) = ctx.dtypes.get(x)
        && *dt != DType::F32
    {
        return Ok(Rewrite::Skip(format!(
            "input X is {dt}; only float32 is quantized"
        )));
    }
    let mut qs: Vec<QWeight> = Vec::new();
    for (i, what) in [(1, "W"), (2, "R")] {
        let Some(name) = node.input(i) else {
            return Ok(Rewrite::Skip(format!("input {i} ({what}) is missing")));
        };
        let Some(t) = weights::resolve(graph, name)? else {
            return Ok(Rewrite::Skip(format!(
                "{what} (input {i}) is computed at run time, not a constant"
            )));
        };
        if t.dtype() != DType::F32 {
            return Ok(Rewrite::Skip(format!(
                "{what} is {}; only float32 weights are quantized",
                t.dtype()
            )));
        }
        let &[dirs, gh, cols] = t.shape() else {
            return Ok(Rewrite::Skip(format!(
                "{what} has shape {:?}, expected rank 3",
                t.shape()
            )));
        };
        if gh % 4 != 0 || t.numel() == 0 {
            return Ok(Rewrite::Skip(format!(
                "{what} has shape {:?}: not 4 gates",
                t.shape()
            )));
        }
        let key = format!("{name}#lstm");
        if let Some(w) = ctx.weights.get(&key) {
            qs.push(w);
            continue;
        }
        let (q, scales, pshape) = if ctx.cfg.per_channel {
            let flat = t.clone().reshape(vec![dirs * gh, cols]).map_err(bad)?;
            let (q, s) = weights::symmetric_i8(&flat, Some(0))?;
            (q, s, vec![dirs, gh])
        } else {
            let (q, s) = weights::symmetric_i8(&t, Some(0))?;
            (q, s, vec![dirs])
        };
        // [dirs, 4h, cols] → [dirs, cols, 4h]
        let qt = q
            .reshape(vec![dirs, gh, cols])
            .map_err(bad)?
            .view::<i8>()
            .map_err(bad)?
            .permuted_axes(vec![0, 2, 1])
            .to_owned();
        let base = format!("{}_{what}", node.name.replace(['/', ':'], "_"));
        let new = weights::Quantized {
            q: Tensor::from_array(qt),
            scales,
            pshape,
            float_bytes: t.byte_size(),
        };
        qs.push(ctx.weights.insert(&mut ctx.names, &key, &base, new)?);
    }
    let [w, r] = [&qs[0], &qs[1]];
    let mut inputs: Vec<&str> = vec![node.inputs[0].as_str(), &w.q, &r.q];
    for i in 3..8 {
        inputs.push(node.inputs.get(i).map(String::as_str).unwrap_or(""));
    }
    inputs.extend([w.scale.as_str(), &w.zero_point, &r.scale, &r.zero_point]);
    let outs: Vec<&str> = node.outputs.iter().map(String::as_str).collect();
    let name = ctx.unique(&format!("{}_quant", node.name));
    let mut q = Node::new("DynamicQuantizeLSTM", &name, &inputs, &outs);
    q.domain = "com.microsoft".into();
    for (k, v) in &node.attrs {
        if k != "layout" {
            q.attrs.insert(k.clone(), v.clone());
        }
    }
    Ok(Rewrite::Done {
        nodes: vec![q],
        absorbed: None,
        report: QuantizedNode {
            name: node.name.clone(),
            op_type: "LSTM".into(),
            float_bytes: w.float_bytes + r.float_bytes,
            quant_bytes: w.quant_bytes + r.quant_bytes,
            as_ops: "DynamicQuantizeLSTM".into(),
        },
    })
}
