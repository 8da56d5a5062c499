//! The NHWC rewrite for integer graphs: chains of QLinearConv with
//! constant weights (the packed GEMM / depthwise kernels work on NHWC
//! rows) keep their u8/s8 activations NHWC between layers, as ONNX
//! Runtime's NhwcTransformer does, instead of transposing to NHWC and back
//! around every convolution. Element-wise quantized ops whose tensor
//! inputs are all NHWC values (QLinearAdd/Mul, QLinearSigmoid/LeakyRelu:
//! the same permutation on every input commutes with broadcasting) and
//! QLinearGlobalAveragePool (`channels_last`) run on them unchanged, and a
//! 2-D MaxPool reading one becomes [`NHWC_MAX_POOL`].
//! A value goes back to NCHW only where something else reads it.

use super::index::Index;
use super::{DOMAIN, is_onnx};
use quench_ir::{Attr, DType, Graph, Node};
use std::collections::HashSet;

/// QLinearConv reading X as `[N, H, W, C]` and writing `[N, OH, OW, M]`;
/// inputs and attributes as QLinearConv.
pub const NHWC_QLINEAR_CONV: &str = "NhwcQLinearConv";
/// 2-D MaxPool (no Indices output) of an 8-bit `[N, H, W, C]` value;
/// attributes as MaxPool.
pub const NHWC_MAX_POOL: &str = "NhwcMaxPool";
/// 8-bit `[N, C, H, W]` → `[N, H, W, C]`.
pub const NCHW_TO_NHWC: &str = "NchwToNhwc";
/// 8-bit `[N, H, W, C]` → `[N, C, H, W]`.
pub const NHWC_TO_NCHW: &str = "NhwcToNchw";

/// A QLinearConv the NHWC kernels take: 2-D, constant u8/s8 weights,
/// group 1 or depthwise.
fn is_candidate(n: &Node, consts: &Index) -> bool {
    if !is_onnx(n, "QLinearConv") || n.outputs.len() != 1 || n.input(0).is_none() {
        return false;
    }
    let Some(w) = n.input(3).and_then(|w| consts.constant(w)) else {
        return false;
    };
    if !matches!(w.dtype(), DType::U8 | DType::I8) {
        return false;
    }
    let &[m, cg, kh, kw] = w.shape() else {
        return false;
    };
    if m == 0 || cg == 0 || kh == 0 || kw == 0 {
        return false;
    }
    let group = n.attr_int_or("group", 1).unwrap_or(0);
    group == 1 || (group as usize == m && cg == 1)
}

/// Which inputs of an element-wise quantized op are tensors (the rest are
/// scales and zero points), or None for ops this rewrite leaves alone.
fn elementwise_tensors(n: &Node) -> Option<&'static [usize]> {
    if n.domain != "com.microsoft" || n.outputs.len() != 1 {
        return None;
    }
    match n.op_type.as_str() {
        "QLinearAdd" | "QLinearMul" => Some(&[0, 3]),
        "QLinearSigmoid" | "QLinearLeakyRelu" => Some(&[0]),
        _ => None,
    }
}

fn is_nchw_gap(n: &Node) -> bool {
    n.domain == "com.microsoft"
        && n.op_type == "QLinearGlobalAveragePool"
        && n.outputs.len() == 1
        && n.attr_int_or("channels_last", 0).unwrap_or(1) == 0
}

/// A MaxPool the NHWC kernel takes, once its input is NHWC (and so 8-bit:
/// every NHWC value is made by an integer op).
fn is_pool(n: &Node) -> bool {
    is_onnx(n, "MaxPool")
        && n.outputs.len() == 1
        && matches!(n.attr_ints("kernel_shape"), Ok(Some(k)) if k.len() == 2)
}

fn internal(name: String, op: &str, input: &str, output: String) -> Node {
    Node {
        name,
        op_type: op.into(),
        domain: DOMAIN.into(),
        inputs: vec![input.to_string()],
        outputs: vec![output],
        ..Default::default()
    }
}

/// `nodes` (topologically sorted) with QLinearConv chains in NHWC form, or
/// `None` when there is none.
pub fn rewrite(graph: &Graph, nodes: &[Node]) -> Option<Vec<Node>> {
    let consts = Index::new(nodes, graph);
    let nhwc_name = |name: &str| format!("{name}__nhwc");
    // Values that exist in NHWC form, and the nodes that make them so.
    let mut nhwc: HashSet<&str> = HashSet::new();
    let mut member: HashSet<usize> = HashSet::new();
    for (i, n) in nodes.iter().enumerate() {
        let joins = if is_candidate(n, &consts) {
            true
        } else if let Some(ts) = elementwise_tensors(n) {
            ts.iter()
                .all(|&t| n.input(t).is_some_and(|x| nhwc.contains(x)))
        } else if is_nchw_gap(n) || is_pool(n) {
            n.input(0).is_some_and(|x| nhwc.contains(x))
        } else {
            false
        };
        if joins {
            member.insert(i);
            nhwc.insert(n.outputs[0].as_str());
        }
    }
    if !member.iter().any(|&i| is_onnx(&nodes[i], "QLinearConv")) {
        return None;
    }
    // NHWC values that something outside the chain reads as NCHW.
    let mut nchw_wanted: HashSet<&str> = HashSet::new();
    for (j, n) in nodes.iter().enumerate() {
        for (slot, name) in n.inputs.iter().enumerate() {
            if !nhwc.contains(name.as_str()) {
                continue;
            }
            let reads_nhwc = member.contains(&j)
                && (is_onnx(n, "QLinearConv") && slot == 0
                    || elementwise_tensors(n).is_some_and(|ts| ts.contains(&slot))
                    || (is_nchw_gap(n) || is_pool(n)) && slot == 0);
            if !reads_nhwc {
                nchw_wanted.insert(name);
            }
        }
        for name in quench_ir::graph::subgraph_free_names(n) {
            if nhwc.contains(name) {
                nchw_wanted.insert(name);
            }
        }
    }
    for o in &graph.outputs {
        if nhwc.contains(o.name.as_str()) {
            nchw_wanted.insert(&o.name);
        }
    }

    let mut out = Vec::with_capacity(nodes.len() + 8);
    let mut converted: HashSet<&str> = HashSet::new();
    for (j, n) in nodes.iter().enumerate() {
        if !member.contains(&j) {
            out.push(n.clone());
            continue;
        }
        let mut m = n.clone();
        if is_onnx(n, "QLinearConv") {
            m.domain = DOMAIN.into();
            m.op_type = NHWC_QLINEAR_CONV.into();
            let x = &n.inputs[0];
            if nhwc.contains(x.as_str()) {
                m.inputs[0] = nhwc_name(x);
            } else {
                // Chain entry: one conversion per value, however many convolutions read it.
                if converted.insert(x) {
                    out.push(internal(
                        format!("{}__to_nhwc", n.name),
                        NCHW_TO_NHWC,
                        x,
                        nhwc_name(x),
                    ));
                }
                m.inputs[0] = nhwc_name(x);
            }
        } else if let Some(ts) = elementwise_tensors(n) {
            for &t in ts {
                m.inputs[t] = nhwc_name(&n.inputs[t]);
            }
        } else if is_pool(n) {
            m.domain = DOMAIN.into();
            m.op_type = NHWC_MAX_POOL.into();
            m.inputs[0] = nhwc_name(&n.inputs[0]);
        } else {
            m.inputs[0] = nhwc_name(&n.inputs[0]);
            m.attrs.insert("channels_last".into(), Attr::Int(1));
        }
        let y = &n.outputs[0];
        m.outputs[0] = nhwc_name(y);
        out.push(m);
        if nchw_wanted.contains(y.as_str()) {
            out.push(internal(
                format!("{}__to_nchw", n.name),
                NHWC_TO_NCHW,
                &nhwc_name(y),
                y.clone(),
            ));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PlanOptions, Registry, Session};
    use quench_ir::{Model, OpsetImport, Tensor, ValueInfo};

    const MS: &str = "com.microsoft";

    fn ms(mut n: Node) -> Node {
        n.domain = MS.into();
        n
    }

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 9) as u8)
            .collect()
    }

    /// QLinearConv `name`: `x` (scale xs, zp xz) with `m` output channels
    /// of `cg` inputs each, `k`×`k`, into `y` (scale ys, zp yz).
    #[allow(clippy::too_many_arguments)]
    fn conv(
        inits: &mut Vec<(String, Tensor)>,
        name: &str,
        x: &str,
        xq: (&str, &str),
        y: &str,
        m: usize,
        cg: usize,
        k: usize,
        attrs: &[(&str, Attr)],
    ) -> Node {
        let w: Vec<i8> = bytes(m * cg * k * k, name.len() as u32 * 7)
            .into_iter()
            .map(|v| v as i8)
            .collect();
        let p = |s: &str| format!("{name}_{s}");
        inits.push((p("w"), Tensor::from_vec(vec![m, cg, k, k], w).unwrap()));
        let ws: Vec<f32> = (0..m).map(|i| 0.002 + i as f32 * 1e-4).collect();
        inits.push((p("ws"), Tensor::from_vec(vec![m], ws).unwrap()));
        let b: Vec<i32> = (0..m as i32).map(|i| i * 50 - 400).collect();
        inits.push((p("b"), Tensor::from_vec(vec![m], b).unwrap()));
        inits.push((p("ys"), Tensor::scalar(0.07f32)));
        inits.push((p("yz"), Tensor::scalar(20u8)));
        let (ws, yz, ys, w, b) = (p("ws"), p("yz"), p("ys"), p("w"), p("b"));
        let mut n = Node::new(
            "QLinearConv",
            name,
            &[x, xq.0, xq.1, &w, &ws, "wz0", &ys, &yz, &b],
            &[y],
        );
        for (k, v) in attrs {
            n = n.with_attr(k, v.clone());
        }
        n
    }

    fn model() -> Model {
        let mut inits: Vec<(String, Tensor)> = vec![
            ("xs".into(), Tensor::scalar(0.05f32)),
            ("xz".into(), Tensor::scalar(128u8)),
            ("wz0".into(), Tensor::scalar(0i8)),
            ("as".into(), Tensor::scalar(0.09f32)),
            ("az".into(), Tensor::scalar(7u8)),
        ];
        let pad1 = ("pads", Attr::Ints(vec![1, 1, 1, 1]));
        let nodes = vec![
            conv(
                &mut inits,
                "c1",
                "x",
                ("xs", "xz"),
                "y1",
                16,
                3,
                3,
                std::slice::from_ref(&pad1),
            ),
            // Asymmetric pads: windows past the right and bottom edges.
            Node::new("MaxPool", "pool", &["y1"], &["y1p"])
                .with_attr("kernel_shape", Attr::Ints(vec![2, 3]))
                .with_attr("pads", Attr::Ints(vec![0, 1, 1, 1])),
            conv(
                &mut inits,
                "dw",
                "y1p",
                ("c1_ys", "c1_yz"),
                "y2",
                16,
                1,
                3,
                &[
                    pad1,
                    ("group", Attr::Int(16)),
                    ("strides", Attr::Ints(vec![2, 2])),
                ],
            ),
            conv(
                &mut inits,
                "pw",
                "y2",
                ("dw_ys", "dw_yz"),
                "y3",
                16,
                16,
                1,
                &[],
            ),
            ms(Node::new(
                "QLinearAdd",
                "add",
                &["y2", "dw_ys", "dw_yz", "y3", "pw_ys", "pw_yz", "as", "az"],
                &["y4"],
            )),
            ms(Node::new(
                "QLinearGlobalAveragePool",
                "gap",
                &["y4", "as", "az", "as", "az"],
                &["y5"],
            )),
            // An NCHW reader of a chain value outside the chain.
            Node::new("DequantizeLinear", "dq", &["y1", "c1_ys", "c1_yz"], &["f1"]),
        ];
        let mut g = Graph {
            nodes,
            inputs: vec![ValueInfo::tensor("x", DType::U8, None)],
            outputs: ["y3", "y5", "f1"]
                .iter()
                .map(|o| ValueInfo::tensor(*o, DType::U8, None))
                .collect(),
            ..Default::default()
        };
        for (k, v) in inits {
            g.initializers.insert(k, v);
        }
        Model {
            ir_version: 8,
            opset_imports: vec![
                OpsetImport {
                    domain: String::new(),
                    version: 17,
                },
                OpsetImport {
                    domain: MS.into(),
                    version: 1,
                },
            ],
            graph: g,
            ..Default::default()
        }
    }

    fn run(m: &Model, fuse: bool) -> Vec<(String, Tensor)> {
        let opts = PlanOptions {
            fuse,
            ..Default::default()
        };
        let s = Session::with_plan_options(m, &Registry::standard(), 1, opts).unwrap();
        let x = Tensor::from_vec(vec![2, 3, 11, 9], bytes(2 * 3 * 11 * 9, 5)).unwrap();
        s.run(vec![("x".to_string(), x)]).unwrap()
    }

    #[test]
    fn chains_go_nhwc_and_give_the_same_bytes() {
        let m = model();
        let nodes = rewrite(&m.graph, &m.graph.nodes).expect("rewrites");
        let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                NCHW_TO_NHWC,
                NHWC_QLINEAR_CONV,
                NHWC_TO_NCHW, // y1 for the DequantizeLinear
                NHWC_MAX_POOL,
                NHWC_QLINEAR_CONV,
                NHWC_QLINEAR_CONV,
                NHWC_TO_NCHW, // y3, a graph output
                "QLinearAdd",
                "QLinearGlobalAveragePool",
                NHWC_TO_NCHW, // y5
                "DequantizeLinear",
            ]
        );
        assert_eq!(nodes[8].attr_int_or("channels_last", 0).unwrap(), 1);
        let (a, b) = (run(&m, true), run(&m, false));
        assert_eq!(a.len(), 3);
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert_eq!(ta.shape(), tb.shape(), "{na}");
            assert_eq!(ta.data(), tb.data(), "{na}");
        }
    }

    #[test]
    fn graphs_without_integer_convolutions_are_left_alone() {
        let mut m = model();
        m.graph.nodes.retain(|n| n.op_type != "QLinearConv");
        assert!(rewrite(&m.graph, &m.graph.nodes).is_none());
    }
}
