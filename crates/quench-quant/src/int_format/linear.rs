//! The com.microsoft QLinear* ops: Add/Mul (two DQ inputs), Concat (any
//! number), and the one-input GlobalAveragePool, AveragePool, Sigmoid,
//! LeakyRelu. All operands are per-tensor and share one 8-bit type, as
//! ORT's kernels require.

use super::Rewrite;
use super::conv::q_name;
use super::qdq::{Ctx, DqIn, Emit, QOut, Reason, is_8bit, node};
use quench_ir::{Attr, Node};

const MS: &str = "com.microsoft";

fn operands(ctx: &Ctx, n: &Node, count: usize) -> Result<(Vec<DqIn>, QOut), Reason> {
    let q = ctx.q_output(n)?;
    if !is_8bit(q.p.dtype) {
        return Err("output is not 8-bit".into());
    }
    let mut ins = Vec::with_capacity(count);
    for i in 0..count {
        let d = ctx.dq_input(n, i)?;
        if !d.p.per_tensor() {
            return Err(format!("input {i} is quantized per axis"));
        }
        if d.p.dtype != q.p.dtype {
            return Err(format!("input {i} and the output have different types"));
        }
        ins.push(d);
    }
    Ok((ins, q))
}

fn triple(emit: &mut Emit, d: &DqIn) -> [String; 3] {
    [d.x.clone(), d.p.scale_name.clone(), emit.zp(&d.p)]
}

pub(crate) fn binary(ctx: &Ctx, emit: &mut Emit, n: &Node) -> Result<Rewrite, Reason> {
    let (ins, q) = operands(ctx, n, 2)?;
    let mut inputs: Vec<String> = Vec::new();
    for d in &ins {
        inputs.extend(triple(emit, d));
    }
    inputs.extend([q.p.scale_name.clone(), emit.zp(&q.p)]);
    let op = format!("QLinear{}", n.op_type);
    Ok(Rewrite {
        kind: format!("{} -> {op}", n.op_type),
        nodes: vec![node(&op, MS, &q_name(n), inputs, vec![q.y.clone()])],
        q: Some(q.node),
    })
}

pub(crate) fn concat(ctx: &Ctx, emit: &mut Emit, n: &Node) -> Result<Rewrite, Reason> {
    let count = n.inputs.len();
    if count == 0 || n.inputs.iter().any(String::is_empty) {
        return Err("an input is missing".into());
    }
    let (ins, q) = operands(ctx, n, count)?;
    let mut inputs = vec![q.p.scale_name.clone(), emit.zp(&q.p)];
    for d in &ins {
        inputs.extend(triple(emit, d));
    }
    let mut c = node("QLinearConcat", MS, &q_name(n), inputs, vec![q.y.clone()]);
    c.attrs = n.attrs.clone();
    Ok(Rewrite {
        nodes: vec![c],
        q: Some(q.node),
        kind: "Concat -> QLinearConcat".into(),
    })
}

pub(crate) fn unary(ctx: &Ctx, emit: &mut Emit, n: &Node) -> Result<Rewrite, Reason> {
    let (ins, q) = operands(ctx, n, 1)?;
    let mut attrs = n.attrs.clone();
    if n.op_type.ends_with("AveragePool") {
        if let Some(Attr::Ints(d)) = attrs.get("dilations") {
            if d.iter().any(|&x| x != 1) {
                return Err("dilated AveragePool has no QLinear form".into());
            }
            attrs.shift_remove("dilations");
        }
        attrs.insert("channels_last".into(), Attr::Int(0));
    }
    let mut inputs = triple(emit, &ins[0]).to_vec();
    inputs.extend([q.p.scale_name.clone(), emit.zp(&q.p)]);
    let op = format!("QLinear{}", n.op_type);
    let mut u = node(&op, MS, &q_name(n), inputs, vec![q.y.clone()]);
    u.attrs = attrs;
    Ok(Rewrite {
        kind: format!("{} -> {op}", n.op_type),
        nodes: vec![u],
        q: Some(q.node),
    })
}
