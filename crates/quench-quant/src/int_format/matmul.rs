//! MatMul → QLinearMatMul (or com.microsoft MatMulIntegerToFloat when the
//! output stays float) and Gemm → com.microsoft QGemm, as ORT's QDQ
//! transformer rewrites them.

use super::Rewrite;
use super::conv::{bias_i32, q_name};
use super::qdq::{Ctx, DqIn, Emit, Reason, is_8bit, node};
use quench_ir::{Attr, DType, Node};

/// The number of columns of B (rank 2, maybe transposed), where known.
fn columns(ctx: &Ctx, b: &DqIn, trans: bool) -> Option<usize> {
    match ctx.constant(&b.x) {
        Some(t) if t.rank() == 2 => Some(t.shape()[if trans { 0 } else { 1 }]),
        _ => b.p.axis.map(|_| b.p.scales.len()),
    }
}

/// A is per-tensor 8-bit; B is 8-bit, per-tensor or per-column (`col_axis`).
fn check_operands(a: &DqIn, b: &DqIn, col_axis: usize) -> Result<(), Reason> {
    if !a.p.per_tensor() || !is_8bit(a.p.dtype) {
        return Err("input 0 is not per-tensor 8-bit".into());
    }
    if !is_8bit(b.p.dtype) || b.p.axis.is_some_and(|x| x != col_axis) {
        return Err("input 1 is not 8-bit per-tensor or per-column".into());
    }
    if a.p.dtype == DType::I8 && b.p.dtype == DType::U8 {
        return Err("int8 × uint8 has no ORT kernel".into());
    }
    Ok(())
}

pub(crate) fn matmul(ctx: &Ctx, emit: &mut Emit, n: &Node) -> Result<Rewrite, Reason> {
    let a = ctx.dq_input(n, 0)?;
    let b = ctx.dq_input(n, 1)?;
    if b.p.axis.is_some() {
        // Per-column scales only make sense for a 2-D B (ORT's limit too).
        match ctx.constant(&b.x) {
            Some(t) if t.rank() == 2 => {}
            _ => return Err("per-column B is not a 2-D constant".into()),
        }
    }
    check_operands(&a, &b, 1)?;
    let (az, bz) = (emit.zp(&a.p), emit.zp(&b.p));
    match ctx.q_output(n) {
        Ok(q) => {
            if q.p.dtype != a.p.dtype {
                return Err("output type differs from input 0's".into());
            }
            let inputs = vec![
                a.x.clone(),
                a.p.scale_name.clone(),
                az,
                b.x.clone(),
                b.p.scale_name.clone(),
                bz,
                q.p.scale_name.clone(),
                emit.zp(&q.p),
            ];
            Ok(Rewrite {
                nodes: vec![node(
                    "QLinearMatMul",
                    "",
                    &q_name(n),
                    inputs,
                    vec![q.y.clone()],
                )],
                q: Some(q.node),
                kind: "MatMul -> QLinearMatMul".into(),
            })
        }
        Err(_) => {
            let inputs = vec![
                a.x.clone(),
                b.x.clone(),
                a.p.scale_name.clone(),
                b.p.scale_name.clone(),
                az,
                bz,
            ];
            let y = n.outputs.first().ok_or("it has no output")?.clone();
            Ok(Rewrite {
                nodes: vec![node(
                    "MatMulIntegerToFloat",
                    "com.microsoft",
                    &q_name(n),
                    inputs,
                    vec![y],
                )],
                q: None,
                kind: "MatMul -> MatMulIntegerToFloat (float output)".into(),
            })
        }
    }
}

pub(crate) fn gemm(ctx: &Ctx, emit: &mut Emit, n: &Node) -> Result<Rewrite, Reason> {
    let err = |e: quench_ir::IrError| e.to_string();
    let alpha = n.attr_float_or("alpha", 1.0).map_err(err)?;
    let beta = n.attr_float_or("beta", 1.0).map_err(err)?;
    let trans_a = n.attr_int_or("transA", 0).map_err(err)?;
    let trans_b = n.attr_int_or("transB", 0).map_err(err)?;
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(format!("alpha {alpha} is not positive"));
    }
    let a = ctx.dq_input(n, 0)?;
    let b = ctx.dq_input(n, 1)?;
    check_operands(&a, &b, if trans_b != 0 { 0 } else { 1 })?;
    let cols = columns(ctx, &b, trans_b != 0);
    let acc: Vec<f32> =
        b.p.scales
            .iter()
            .map(|&s| alpha * a.p.scales[0] * s)
            .collect();
    let bias = match n.input(2) {
        Some(c) if beta != 0.0 => {
            let cols = cols.ok_or("B's shape is unknown")?;
            bias_i32(ctx, emit, c, &acc, beta, cols)?
        }
        _ => String::new(),
    };
    let mut inputs = vec![a.x.clone(), a.p.scale_name.clone(), emit.zp(&a.p)];
    inputs.extend([b.x.clone(), b.p.scale_name.clone(), emit.zp(&b.p), bias]);
    let (outputs, q, kind) = match ctx.q_output(n) {
        Ok(q) => {
            if q.p.dtype != a.p.dtype {
                return Err("output type differs from input 0's".into());
            }
            inputs.extend([q.p.scale_name.clone(), emit.zp(&q.p)]);
            (vec![q.y.clone()], Some(q.node), "Gemm -> QGemm")
        }
        Err(_) => {
            while inputs.last().is_some_and(String::is_empty) {
                inputs.pop();
            }
            let y = n.outputs.first().ok_or("it has no output")?.clone();
            (vec![y], None, "Gemm -> QGemm (float output)")
        }
    };
    let mut g = node("QGemm", "com.microsoft", &q_name(n), inputs, outputs);
    g.attrs.insert("alpha".into(), Attr::Float(alpha));
    g.attrs.insert("transA".into(), Attr::Int(trans_a));
    g.attrs.insert("transB".into(), Attr::Int(trans_b));
    Ok(Rewrite {
        nodes: vec![g],
        q,
        kind: kind.into(),
    })
}
