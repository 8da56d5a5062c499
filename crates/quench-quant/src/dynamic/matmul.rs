//! MatMul and Gemm with a constant weight → int8 matrix products with
//! activations quantized at run time.

use super::weights::{self, QWeight};
use super::{Ctx, DynamicFormat, QuantizedNode, Rewrite};
use crate::QuantError;
use quench_ir::{Attr, DType, Graph, Node, Tensor};

fn bad(e: quench_ir::IrError) -> QuantError {
    QuantError::Graph(e.to_string())
}

/// What the rewrite of one MatMul/Gemm needs to know.
struct Plan {
    a: String,
    /// `[K, N]` float weight (Gemm's transB and alpha applied).
    w: Tensor,
    w_key: String,
    /// A bias `[N]` folded into the product.
    bias: Option<Vec<f32>>,
    /// A full-shape Gemm `C` (times beta), added after the product.
    post_add: Option<Tensor>,
    /// The node's final output (a folded Add's output when one was absorbed).
    out: String,
    absorbed: Option<usize>,
}

pub(super) fn rewrite(ctx: &mut Ctx, graph: &Graph, node: &Node) -> Result<Rewrite, QuantError> {
    let plan = match plan(ctx, graph, node)? {
        Ok(p) => p,
        Err(why) => return Ok(Rewrite::Skip(why)),
    };
    let (k, n) = (plan.w.shape()[0], plan.w.shape()[1]);
    let axis = ctx.cfg.per_channel.then_some(1);
    let w = match ctx.weights.get(&plan.w_key) {
        Some(w) => w,
        None => {
            let (q, scales) = weights::symmetric_i8(&plan.w, axis)?;
            let pshape = if axis.is_some() { vec![n] } else { vec![] };
            let base = node_base(node);
            let float_bytes = plan.w.byte_size();
            let new = weights::Quantized {
                q,
                scales,
                pshape,
                float_bytes,
            };
            ctx.weights
                .insert(&mut ctx.names, &plan.w_key, &base, new)?
        }
    };
    let (nodes, as_ops) = if ctx.cfg.per_token {
        (
            per_token(ctx, node, &plan, &w, k, n)?,
            "per-token MatMulInteger",
        )
    } else {
        match ctx.cfg.format {
            DynamicFormat::Contrib => (contrib(ctx, node, &plan, &w)?, "DynamicQuantizeMatMul"),
            DynamicFormat::Onnx => (
                onnx(ctx, node, &plan, &w)?,
                "DynamicQuantizeLinear+MatMulInteger",
            ),
        }
    };
    Ok(Rewrite::Done {
        nodes,
        absorbed: plan.absorbed,
        report: QuantizedNode {
            name: node.name.clone(),
            op_type: node.op_type.clone(),
            float_bytes: w.float_bytes,
            quant_bytes: w.quant_bytes,
            as_ops: as_ops.into(),
        },
    })
}

fn node_base(node: &Node) -> String {
    node.name.replace(['/', ':'], "_")
}

/// The rewrite's inputs, or why the node stays float.
fn plan(ctx: &Ctx, graph: &Graph, node: &Node) -> Result<Result<Plan, String>, QuantError> {
    let gemm = node.op_type == "Gemm";
    let (Some(a), Some(b)) = (node.input(0), node.input(1)) else {
        return Ok(Err("an input is missing".into()));
    };
    let [out] = node.outputs.as_slice() else {
        return Ok(Err("expected one output".into()));
    };
    if let Some(dt) = ctx.dtypes.get(a)
        && *dt != DType::F32
    {
        return Ok(Err(format!("input A is {dt}; only float32 is quantized")));
    }
    let Some(mut w) = weights::resolve(graph, b)? else {
        return Ok(Err(
            "weight (input 1) is computed at run time, not a constant".into(),
        ));
    };
    if w.dtype() != DType::F32 {
        return Ok(Err(format!(
            "weight is {}; only float32 weights are quantized",
            w.dtype()
        )));
    }
    if w.rank() != 2 {
        return Ok(Err(format!(
            "weight has shape {:?}; only 2-D [K, N] weights are quantized",
            w.shape()
        )));
    }
    let mut key = b.to_string();
    let mut plan = Plan {
        a: a.to_string(),
        w: Tensor::scalar(0f32),
        w_key: String::new(),
        bias: None,
        post_add: None,
        out: out.clone(),
        absorbed: None,
    };
    if gemm {
        if node.attr_int_or("transA", 0).map_err(bad)? != 0 {
            return Ok(Err(
                "Gemm with transA=1 (A transposed) is not quantized".into()
            ));
        }
        let alpha = node.attr_float_or("alpha", 1.0).map_err(bad)?;
        let beta = node.attr_float_or("beta", 1.0).map_err(bad)?;
        if node.attr_int_or("transB", 0).map_err(bad)? != 0 {
            let t = w.view::<f32>().map_err(bad)?.t().to_owned();
            w = Tensor::from_array(t);
            key.push_str("^T");
        }
        if alpha != 1.0 {
            let v: Vec<f32> = w
                .as_slice::<f32>()
                .map_err(bad)?
                .iter()
                .map(|x| x * alpha)
                .collect();
            w = Tensor::from_vec(w.shape().to_vec(), v).map_err(bad)?;
            key.push_str(&format!("*{alpha}"));
        }
        let n = w.shape()[1];
        if let Some(c) = node.input(2) {
            let Some(c) = weights::resolve(graph, c)? else {
                return Ok(Err("Gemm input C is computed at run time".into()));
            };
            let Ok(cv) = c.as_slice::<f32>() else {
                return Ok(Err(format!("Gemm input C is {}", c.dtype())));
            };
            let cv: Vec<f32> = cv.iter().map(|x| x * beta).collect();
            let lead_ones = c.shape().iter().rev().skip(1).all(|&d| d == 1);
            if cv.len() == 1 {
                plan.bias = Some(vec![cv[0]; n]);
            } else if cv.len() == n && lead_ones && c.shape().last() == Some(&n) {
                plan.bias = Some(cv);
            } else {
                plan.post_add = Some(Tensor::from_vec(c.shape().to_vec(), cv).map_err(bad)?);
            }
        }
    } else if ctx.cfg.format == DynamicFormat::Contrib || ctx.cfg.per_token {
        fold_bias(ctx, graph, &mut plan, w.shape()[1])?;
    }
    if w.shape().contains(&0) {
        return Ok(Err(format!("weight has an empty shape {:?}", w.shape())));
    }
    plan.w = w;
    plan.w_key = key;
    Ok(Ok(plan))
}

/// Absorbs `MatMul → Add(const [N])` into the product's bias, as ORT's
/// MatMul+Add fusion does, when the MatMul output has no other reader.
fn fold_bias(ctx: &Ctx, graph: &Graph, plan: &mut Plan, n: usize) -> Result<(), QuantError> {
    let y = plan.out.clone();
    if ctx.graph_outputs.contains(&y) {
        return Ok(());
    }
    let Some([i]) = ctx.consumers.get(&y).map(Vec::as_slice) else {
        return Ok(());
    };
    let add = &graph.nodes[*i];
    if add.op_type != "Add"
        || !(add.domain.is_empty() || add.domain == "ai.onnx")
        || add.inputs.len() != 2
        || add.outputs.len() != 1
    {
        return Ok(());
    }
    let other = if add.inputs[0] == y {
        &add.inputs[1]
    } else {
        &add.inputs[0]
    };
    if other == &y {
        return Ok(());
    }
    let Some(c) = weights::resolve(graph, other)? else {
        return Ok(());
    };
    let Ok(cv) = c.as_slice::<f32>() else {
        return Ok(());
    };
    let lead_ones = c.shape().iter().rev().skip(1).all(|&d| d == 1);
    if cv.len() == n && lead_ones && c.shape().last() == Some(&n) && c.rank() <= 1 {
        plan.bias = Some(cv.to_vec());
        plan.out = add.outputs[0].clone();
        plan.absorbed = Some(*i);
    }
    Ok(())
}

fn ms(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> Node {
    Node {
        domain: "com.microsoft".into(),
        ..Node::new(op, name, inputs, outputs)
    }
}

/// Adds a bias initializer and returns its name.
fn bias_init(ctx: &mut Ctx, node: &Node, bias: &[f32]) -> Result<String, QuantError> {
    let name = ctx.unique(&format!("{}_bias", node_base(node)));
    let t = Tensor::from_vec(vec![bias.len()], bias.to_vec()).map_err(bad)?;
    ctx.weights.constant(name.clone(), t);
    Ok(name)
}

/// The last node adds a full-shape Gemm C, when there is one.
fn finish(
    ctx: &mut Ctx,
    node: &Node,
    plan: &Plan,
    mut nodes: Vec<Node>,
    product: &str,
) -> Result<Vec<Node>, QuantError> {
    if let Some(c) = &plan.post_add {
        let cname = ctx.unique(&format!("{}_C", node_base(node)));
        ctx.weights.constant(cname.clone(), c.clone());
        let add = ctx.unique(&format!("{}_add_C", node.name));
        nodes.push(Node::new("Add", &add, &[product, &cname], &[&plan.out]));
    }
    Ok(nodes)
}

fn product_name(ctx: &mut Ctx, plan: &Plan) -> String {
    if plan.post_add.is_some() {
        ctx.unique(&format!("{}_product", plan.out))
    } else {
        plan.out.clone()
    }
}

fn contrib(ctx: &mut Ctx, node: &Node, plan: &Plan, w: &QWeight) -> Result<Vec<Node>, QuantError> {
    let bias = match &plan.bias {
        Some(b) => bias_init(ctx, node, b)?,
        None => String::new(),
    };
    let y = product_name(ctx, plan);
    let name = ctx.unique(&format!("{}_quant", node.name));
    let mut inputs = vec![
        plan.a.as_str(),
        w.q.as_str(),
        w.scale.as_str(),
        w.zero_point.as_str(),
    ];
    if !bias.is_empty() {
        inputs.push(&bias);
    }
    let n = ms("DynamicQuantizeMatMul", &name, &inputs, &[&y]);
    finish(ctx, node, plan, vec![n], &y)
}

/// `Cast(x) -> y` to float32: the int32 accumulator on its way to the scale Mul.
pub(super) fn cast_float(name: &str, x: &str, y: &str) -> Node {
    Node::new("Cast", name, &[x], &[y]).with_attr("to", Attr::Int(DType::F32.to_onnx() as i64))
}

/// ORT's IntegerOps graph: DynamicQuantizeLinear, MatMulInteger, Cast, Mul.
fn onnx(ctx: &mut Ctx, node: &Node, plan: &Plan, w: &QWeight) -> Result<Vec<Node>, QuantError> {
    let b = node.name.clone();
    let [aq, a_s, a_zp, acc, accf, s] = [
        "a_quantized",
        "a_scale",
        "a_zero_point",
        "int32",
        "float",
        "scales",
    ]
    .map(|x| ctx.unique(&format!("{}_{x}", plan.out)));
    let y = if plan.bias.is_some() {
        ctx.unique(&format!("{}_unbiased", plan.out))
    } else {
        product_name(ctx, plan)
    };
    let mut nodes = vec![
        Node::new(
            "DynamicQuantizeLinear",
            &ctx.unique(&format!("{b}_quantize_input")),
            &[&plan.a],
            &[&aq, &a_s, &a_zp],
        ),
        Node::new(
            "MatMulInteger",
            &ctx.unique(&format!("{b}_quant")),
            &[&aq, &w.q, &a_zp, &w.zero_point],
            &[&acc],
        ),
        cast_float(&ctx.unique(&format!("{b}_cast")), &acc, &accf),
        Node::new(
            "Mul",
            &ctx.unique(&format!("{b}_scales_mul")),
            &[&a_s, &w.scale],
            &[&s],
        ),
        Node::new(
            "Mul",
            &ctx.unique(&format!("{b}_output_scale_mul")),
            &[&accf, &s],
            &[&y],
        ),
    ];
    if let Some(bias) = &plan.bias {
        let bn = bias_init(ctx, node, bias)?;
        let out = product_name(ctx, plan);
        nodes.push(Node::new(
            "Add",
            &ctx.unique(&format!("{b}_bias_add")),
            &[&y, &bn],
            &[&out],
        ));
        return finish(ctx, node, plan, nodes, &out);
    }
    finish(ctx, node, plan, nodes, &y)
}

/// Per-row (per-token) asymmetric uint8 activations in standard ONNX.
///
/// ORT's MatMulInteger takes only a scalar `a_zero_point`, so the product
/// runs without one and the zero point is taken out afterwards:
/// `Σ (q − z) w = Σ q w − z · colsum(w)`. A is flattened to `[M, K]` so that
/// QuantizeLinear's per-axis form (axis 0) applies the row scales.
fn per_token(
    ctx: &mut Ctx,
    node: &Node,
    plan: &Plan,
    w: &QWeight,
    k: usize,
    n: usize,
) -> Result<Vec<Node>, QuantError> {
    let b = node.name.clone();
    let opset = ctx.opset;
    let cst = |ctx: &mut Ctx, what: &str, t: Tensor| {
        let name = ctx.unique(&format!("{b}_{what}"));
        ctx.weights.constant(name.clone(), t);
        name
    };
    let flat = cst(
        ctx,
        "flat_shape",
        Tensor::from_vec(vec![2], vec![-1i64, k as i64]).map_err(bad)?,
    );
    let row1d = cst(
        ctx,
        "row_shape",
        Tensor::from_vec(vec![1], vec![-1i64]).map_err(bad)?,
    );
    let zero = cst(ctx, "zero", Tensor::scalar(0f32));
    let q255 = cst(ctx, "qmax", Tensor::scalar(255f32));
    let tiny = cst(ctx, "min_scale", Tensor::scalar(1e-20f32));
    let sums: Vec<f32> = w.col_sums.iter().map(|&v| v as f32).collect();
    let colsum = cst(
        ctx,
        "col_sums",
        Tensor::from_vec(vec![n], sums).map_err(bad)?,
    );
    let ncols = cst(
        ctx,
        "cols",
        Tensor::from_vec(vec![1], vec![n as i64]).map_err(bad)?,
    );
    let v = |ctx: &mut Ctx, x: &str| ctx.unique(&format!("{}_{x}", plan.out));
    let nm = |ctx: &mut Ctx, x: &str| ctx.unique(&format!("{b}_{x}"));
    let [
        a2,
        mn,
        mx,
        mn0,
        mx0,
        rng,
        s0,
        s,
        t,
        t2,
        zpf,
        zpq,
        s1,
        zp1,
        aq,
        acc,
        accf,
        corr,
        d,
        e,
        f,
    ] = [
        "a_2d",
        "row_min",
        "row_max",
        "row_min0",
        "row_max0",
        "row_range",
        "row_scale0",
        "row_scale",
        "neg_zp",
        "zp_float0",
        "zp_float",
        "zp",
        "row_scale_1d",
        "zp_1d",
        "a_quantized",
        "int32",
        "float",
        "zp_correction",
        "centred",
        "row_scaled",
        "scaled",
    ]
    .map(|x| v(ctx, x));
    let mut nodes = Vec::new();
    nodes.push(Node::new(
        "Reshape",
        &nm(ctx, "flatten"),
        &[&plan.a, &flat],
        &[&a2],
    ));
    for (op, out) in [("ReduceMin", &mn), ("ReduceMax", &mx)] {
        let name = nm(ctx, op);
        let node = if opset >= 18 {
            let axes = cst(
                ctx,
                "axes",
                Tensor::from_vec(vec![1], vec![1i64]).map_err(bad)?,
            );
            Node::new(op, &name, &[&a2, &axes], &[out])
        } else {
            Node::new(op, &name, &[&a2], &[out]).with_attr("axes", Attr::Ints(vec![1]))
        };
        nodes.push(node.with_attr("keepdims", Attr::Int(1)));
    }
    let mut push = |ctx: &mut Ctx, op: &str, ins: &[&str], out: &str| {
        let name = nm(ctx, op);
        nodes.push(Node::new(op, &name, ins, &[out]));
    };
    push(ctx, "Min", &[&mn, &zero], &mn0);
    push(ctx, "Max", &[&mx, &zero], &mx0);
    push(ctx, "Sub", &[&mx0, &mn0], &rng);
    push(ctx, "Div", &[&rng, &q255], &s0);
    push(ctx, "Max", &[&s0, &tiny], &s);
    push(ctx, "Div", &[&mn0, &s], &t);
    push(ctx, "Neg", &[&t], &t2);
    push(ctx, "Round", &[&t2], &zpf);
    let cast = nm(ctx, "zp_cast");
    nodes.push(
        Node::new("Cast", &cast, &[&zpf], &[&zpq])
            .with_attr("to", Attr::Int(DType::U8.to_onnx() as i64)),
    );
    for (x, y) in [(&s, &s1), (&zpq, &zp1)] {
        let name = nm(ctx, "Reshape");
        nodes.push(Node::new("Reshape", &name, &[x, &row1d], &[y]));
    }
    let ql = nm(ctx, "quantize_input");
    nodes.push(
        Node::new("QuantizeLinear", &ql, &[&a2, &s1, &zp1], &[&aq]).with_attr("axis", Attr::Int(0)),
    );
    let mmi = nm(ctx, "quant");
    nodes.push(Node::new("MatMulInteger", &mmi, &[&aq, &w.q], &[&acc]));
    nodes.push(cast_float(&nm(ctx, "cast"), &acc, &accf));
    let mut push = |ctx: &mut Ctx, op: &str, ins: &[&str], out: &str| {
        let name = nm(ctx, op);
        nodes.push(Node::new(op, &name, ins, &[out]));
    };
    push(ctx, "Mul", &[&zpf, &colsum], &corr);
    push(ctx, "Sub", &[&accf, &corr], &d);
    push(ctx, "Mul", &[&d, &s], &e);
    push(ctx, "Mul", &[&e, &w.scale], &f);
    let mut last = f.clone();
    if let Some(bias) = &plan.bias {
        let bn = bias_init(ctx, node, bias)?;
        let g = v(ctx, "biased");
        push(ctx, "Add", &[&f, &bn], &g);
        last = g;
    }
    let [shp, lead, oshape] = ["in_shape", "lead_shape", "out_shape"].map(|x| v(ctx, x));
    let starts = cst(
        ctx,
        "starts",
        Tensor::from_vec(vec![1], vec![0i64]).map_err(bad)?,
    );
    let ends = cst(
        ctx,
        "ends",
        Tensor::from_vec(vec![1], vec![-1i64]).map_err(bad)?,
    );
    push(ctx, "Shape", &[&plan.a], &shp);
    push(ctx, "Slice", &[&shp, &starts, &ends], &lead);
    let concat = nm(ctx, "Concat");
    nodes.push(
        Node::new("Concat", &concat, &[&lead, &ncols], &[&oshape]).with_attr("axis", Attr::Int(0)),
    );
    let y = product_name(ctx, plan);
    let rs = nm(ctx, "unflatten");
    nodes.push(Node::new("Reshape", &rs, &[&last, &oshape], &[&y]));
    finish(ctx, node, plan, nodes, &y)
}
