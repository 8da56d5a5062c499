//! Conv with a constant weight → `DynamicQuantizeLinear + ConvInteger +
//! Cast + Mul (+ Add bias)`, ORT's dynamic ConvInteger graph. Opt-in (not
//! in the default op types), as in PyTorch: convolutions usually gain more
//! from static quantization.

use super::weights::{self, Quantized};
use super::{Ctx, QuantizedNode, Rewrite};
use crate::QuantError;
use quench_ir::{DType, Graph, Node};

fn bad(e: quench_ir::IrError) -> QuantError {
    QuantError::Graph(e.to_string())
}

pub(super) fn rewrite(ctx: &mut Ctx, graph: &Graph, node: &Node) -> Result<Rewrite, QuantError> {
    let (Some(x), Some(wname)) = (node.input(0), node.input(1)) else {
        return Ok(Rewrite::Skip("an input is missing".into()));
    };
    let [out] = node.outputs.as_slice() else {
        return Ok(Rewrite::Skip("expected one output".into()));
    };
    if let Some(dt) = ctx.dtypes.get(x)
        && *dt != DType::F32
    {
        return Ok(Rewrite::Skip(format!(
            "input X is {dt}; only float32 is quantized"
        )));
    }
    let Some(w) = weights::resolve(graph, wname)? else {
        return Ok(Rewrite::Skip(
            "weight (input 1) is computed at run time, not a constant".into(),
        ));
    };
    if w.dtype() != DType::F32 || w.rank() < 3 || w.numel() == 0 {
        return Ok(Rewrite::Skip(format!(
            "weight is {} of shape {:?}; expected float32 [M, C/group, k...]",
            w.dtype(),
            w.shape()
        )));
    }
    let m = w.shape()[0];
    let bias = match node.input(2) {
        None => None,
        Some(b) => match weights::resolve(graph, b)? {
            Some(t) if t.dtype() == DType::F32 && t.numel() == m => Some(t),
            _ => {
                return Ok(Rewrite::Skip(
                    "bias (input 2) is not a constant float32 [M]".into(),
                ));
            }
        },
    };
    // Scales broadcast over the output [N, M, spatial...].
    let bshape: Vec<usize> = std::iter::once(m)
        .chain(std::iter::repeat_n(1, w.rank() - 2))
        .collect();
    let key = format!("{wname}#conv");
    let qw = match ctx.weights.get(&key) {
        Some(q) => q,
        None => {
            let per_channel = ctx.cfg.per_channel;
            let (q, scales) = weights::symmetric_i8(&w, per_channel.then_some(0))?;
            let pshape = if per_channel { bshape.clone() } else { vec![] };
            let base = node.name.replace(['/', ':'], "_");
            let new = Quantized {
                q,
                scales,
                pshape,
                float_bytes: w.byte_size(),
            };
            ctx.weights.insert(&mut ctx.names, &key, &base, new)?
        }
    };
    let b = node.name.clone();
    let [xq, xs, xzp, acc, accf, s] = [
        "x_quantized",
        "x_scale",
        "x_zero_point",
        "int32",
        "float",
        "scales",
    ]
    .map(|v| ctx.unique(&format!("{out}_{v}")));
    let y = if bias.is_some() {
        ctx.unique(&format!("{out}_unbiased"))
    } else {
        out.clone()
    };
    let mut conv = Node::new(
        "ConvInteger",
        &ctx.unique(&format!("{b}_quant")),
        &[x, &qw.q, &xzp],
        &[&acc],
    );
    for (k, v) in &node.attrs {
        conv.attrs.insert(k.clone(), v.clone());
    }
    let mut nodes = vec![
        Node::new(
            "DynamicQuantizeLinear",
            &ctx.unique(&format!("{b}_quantize_input")),
            &[x],
            &[&xq, &xs, &xzp],
        ),
        conv,
        super::matmul::cast_float(&ctx.unique(&format!("{b}_cast")), &acc, &accf),
        Node::new(
            "Mul",
            &ctx.unique(&format!("{b}_scales_mul")),
            &[&xs, &qw.scale],
            &[&s],
        ),
        Node::new(
            "Mul",
            &ctx.unique(&format!("{b}_output_scale_mul")),
            &[&accf, &s],
            &[&y],
        ),
    ];
    nodes[1].inputs[0] = xq.clone();
    if let Some(t) = bias {
        let name = ctx.unique(&format!("{b}_bias"));
        ctx.weights
            .constant(name.clone(), t.reshape(bshape).map_err(bad)?);
        nodes.push(Node::new(
            "Add",
            &ctx.unique(&format!("{b}_bias_add")),
            &[&y, &name],
            &[out],
        ));
    }
    Ok(Rewrite::Done {
        nodes,
        absorbed: None,
        report: QuantizedNode {
            name: node.name.clone(),
            op_type: "Conv".into(),
            float_bytes: qw.float_bytes,
            quant_bytes: qw.quant_bytes,
            as_ops: "DynamicQuantizeLinear+ConvInteger".into(),
        },
    })
}
