//! Conv → QLinearConv, or ConvInteger when the output stays float, and the
//! int32 bias both need (shared with Gemm).

use super::Rewrite;
use super::qdq::{Ctx, DqIn, Emit, QParam, Reason, int_vec, is_8bit, node};
use quench_ir::{DType, Node, Tensor, TensorData};

pub(crate) fn conv(ctx: &Ctx, emit: &mut Emit, n: &Node) -> Result<Rewrite, Reason> {
    let x = ctx.dq_input(n, 0)?;
    let w = ctx.dq_input(n, 1)?;
    if !x.p.per_tensor() || !is_8bit(x.p.dtype) {
        return Err("input 0 is not per-tensor 8-bit".into());
    }
    if !is_8bit(w.p.dtype) || w.p.axis.is_some_and(|a| a != 0) {
        return Err("weights are not 8-bit per-tensor or per-output-channel".into());
    }
    let wt = ctx.constant(&w.x);
    let channels = match (wt, w.p.axis) {
        (Some(t), _) if t.rank() >= 3 => t.shape()[0],
        (_, Some(_)) => w.p.scales.len(),
        _ => return Err("weights are not a constant".into()),
    };
    if w.p.axis.is_some() && w.p.scales.len() != channels {
        return Err("weight scales do not match the output channels".into());
    }
    let acc: Vec<f32> = w.p.scales.iter().map(|&s| x.p.scales[0] * s).collect();
    let bias = match n.input(2) {
        Some(b) => Some(bias_i32(ctx, emit, b, &acc, 1.0, channels)?),
        None => None,
    };
    let mut inputs = vec![x.x.clone(), x.p.scale_name.clone(), emit.zp(&x.p)];
    inputs.extend([w.x.clone(), w.p.scale_name.clone(), emit.zp(&w.p)]);
    match ctx.q_output(n) {
        Ok(q) => {
            if q.p.dtype != x.p.dtype {
                return Err("output type differs from input type".into());
            }
            inputs.extend([q.p.scale_name.clone(), emit.zp(&q.p)]);
            inputs.extend(bias);
            let mut c = node("QLinearConv", "", &q_name(n), inputs, vec![q.y.clone()]);
            c.attrs = n.attrs.clone();
            Ok(Rewrite {
                nodes: vec![c],
                q: Some(q.node),
                kind: "Conv -> QLinearConv".into(),
            })
        }
        Err(_) => conv_integer(ctx, emit, n, &x, &w, inputs, bias, &acc),
    }
}

/// ConvInteger, plus the int32 bias, then one DequantizeLinear by
/// `x_scale * w_scale[c]`: the high-precision (int32 output) Conv.
#[allow(clippy::too_many_arguments)]
fn conv_integer(
    ctx: &Ctx,
    emit: &mut Emit,
    n: &Node,
    x: &DqIn,
    w: &DqIn,
    inputs: Vec<String>,
    bias: Option<String>,
    acc: &[f32],
) -> Result<Rewrite, Reason> {
    let y = n.outputs.first().ok_or("it has no output")?;
    let rank = ctx
        .constant(&w.x)
        .map(|t| t.rank())
        .ok_or("weights are not a constant")?;
    if x.p.dtype != DType::U8 {
        // ORT's ConvInteger takes uint8 activations only.
        return Err("output not quantized and input is not uint8".into());
    }
    // ORT's ConvInteger takes one weight zero point: per-channel scales are
    // fine (they go into the DequantizeLinear), per-channel zero points not.
    let w_zp = match w.p.zps.as_slice() {
        [z, rest @ ..] if rest.iter().all(|r| r == z) && w.p.axis.is_some() => {
            let t = match w.p.dtype {
                DType::I8 => Tensor::from_vec(vec![], vec![*z as i8]),
                _ => Tensor::from_vec(vec![], vec![*z as u8]),
            };
            emit.init(
                &format!("{}_zero_point_scalar", w.x),
                t.map_err(|e| e.to_string())?,
            )
        }
        [_] => inputs[5].clone(),
        _ => return Err("output not quantized and weight zero points differ per channel".into()),
    };
    let base = q_name(n);
    let mut nodes = Vec::new();
    let acc_name = emit.fresh(&format!("{y}_int32"));
    let conv_inputs = vec![
        inputs[0].clone(),
        inputs[3].clone(),
        inputs[2].clone(),
        w_zp,
    ];
    let mut c = node(
        "ConvInteger",
        "",
        &base,
        conv_inputs,
        vec![acc_name.clone()],
    );
    c.attrs = n.attrs.clone();
    nodes.push(c);
    let mut sum = acc_name;
    if let Some(b) = bias {
        // [C] → [C, 1, ..., 1] so it broadcasts over the spatial dims.
        let bt = emit_bias_column(ctx, emit, &b, rank)?;
        let out = emit.fresh(&format!("{y}_int32_bias"));
        nodes.push(node(
            "Add",
            "",
            &format!("{base}_bias"),
            vec![sum, bt],
            vec![out.clone()],
        ));
        sum = out;
    }
    let (shape, axis) = if acc.len() == 1 {
        (vec![], None)
    } else {
        (vec![acc.len()], Some(1))
    };
    let scale = Tensor::from_vec(shape, acc.to_vec()).map_err(|e| e.to_string())?;
    let scale = emit.init(&format!("{y}_acc_scale"), scale);
    let mut dq = node(
        "DequantizeLinear",
        "",
        &format!("{base}_dequant"),
        vec![sum, scale],
        vec![y.clone()],
    );
    if let Some(a) = axis {
        dq.attrs.insert("axis".into(), quench_ir::Attr::Int(a));
    }
    nodes.push(dq);
    Ok(Rewrite {
        nodes,
        q: None,
        kind: "Conv -> ConvInteger + DequantizeLinear (float output)".into(),
    })
}

/// The int32 bias `b` (a [C] initializer we or the model made) reshaped to
/// `[C, 1, ...]` for a weight of rank `w_rank`.
fn emit_bias_column(ctx: &Ctx, emit: &mut Emit, b: &str, w_rank: usize) -> Result<String, Reason> {
    let t = emit
        .inits
        .iter()
        .find(|(k, _)| k == b)
        .map(|(_, t)| t.clone())
        .or_else(|| ctx.constant(b).cloned())
        .ok_or("bias is not a constant")?;
    let c = t.numel();
    let mut shape = vec![c];
    shape.resize(w_rank.saturating_sub(1).max(1), 1);
    let t = t.reshape(shape).map_err(|e| e.to_string())?;
    Ok(emit.init(&format!("{b}_column"), t))
}

pub(crate) fn q_name(n: &Node) -> String {
    if n.name.is_empty() {
        String::new()
    } else {
        format!("{}_quant", n.name)
    }
}

/// Float values of a DequantizeLinear of a constant.
pub(crate) fn dequant_const(t: &Tensor, p: &QParam) -> Option<Vec<f32>> {
    let q = int_vec(t)?;
    let shape = t.shape();
    let (inner, dim) = match p.axis {
        Some(a) if a < shape.len() => (shape[a + 1..].iter().product::<usize>(), shape[a]),
        Some(_) => return None,
        None => (1, 1),
    };
    if p.scales.len() != dim {
        return None;
    }
    Some(
        q.iter()
            .enumerate()
            .map(|(e, &v)| {
                let k = (e / inner.max(1)) % dim.max(1);
                (v - p.zps[k]) as f32 * p.scales[k]
            })
            .collect(),
    )
}

/// The bias as int32 with scale `acc[c] / beta` (`acc` has 1 or `channels`
/// values): the model's own int32 tensor when its DequantizeLinear already
/// has that scale (as ORT's quantizer writes it), else requantized from the
/// float values. The bias must be 1 value or `channels` values.
pub(crate) fn bias_i32(
    ctx: &Ctx,
    emit: &mut Emit,
    name: &str,
    acc: &[f32],
    beta: f32,
    channels: usize,
) -> Result<String, Reason> {
    let scale_at = |c: usize| acc[if acc.len() == 1 { 0 } else { c }];
    let (values, base) = match ctx.dq_input_named(name) {
        Some(dq) => {
            let t = ctx.constant(&dq.x).ok_or("bias is not a constant")?;
            if t.dtype() == DType::I32
                && t.rank() == 1
                && t.numel() == channels
                && dq.p.zps.iter().all(|&z| z == 0)
                && (0..channels).all(|c| {
                    let sb = beta * dq.p.scales[if dq.p.scales.len() == 1 { 0 } else { c }];
                    (sb - scale_at(c)).abs() <= 1e-6 * scale_at(c)
                })
            {
                return Ok(dq.x);
            }
            (
                dequant_const(t, &dq.p).ok_or("bias cannot be dequantized")?,
                dq.x,
            )
        }
        None => {
            let t = ctx.constant(name).ok_or("bias is not a constant")?;
            match t.data() {
                TensorData::F32(v) => (v.clone(), name.to_string()),
                _ => return Err("bias is not float32".into()),
            }
        }
    };
    let values = match values.len() {
        1 => vec![values[0]; channels],
        n if n == channels => values,
        _ => {
            return Err(format!(
                "bias has {} values, expected {channels}",
                values.len()
            ));
        }
    };
    let q: Vec<i32> = values
        .iter()
        .enumerate()
        .map(|(c, &b)| {
            let v = (beta as f64 * b as f64 / scale_at(c) as f64).round_ties_even();
            v.clamp(i32::MIN as f64, i32::MAX as f64) as i32
        })
        .collect();
    let t = Tensor::from_vec(vec![channels], q).map_err(|e| e.to_string())?;
    Ok(emit.init(&format!("{base}_int32"), t))
}
