//! Pass tests: graph structure (no runtime needed) and end-to-end QDQ runs.

use super::test_util::*;
use super::*;
use crate::{QParams, QuantConfig};
use quench_ir::{Attr, Model, Tensor};
use std::collections::BTreeMap;

/// x → Conv+Relu → MaxPool → Conv+Clip(0,6) → GAP → Flatten → Gemm → Softmax.
pub(super) fn cnn() -> Model {
    let mut b = Builder::new(&[("x", &[1, 3, 8, 8])]);
    let w1 = b.weight("w1", &[4, 3, 3, 3]);
    let b1 = b.weight("b1", &[4]);
    b.node("Conv", "conv1", &["x", &w1, &b1], &["c1"]);
    b.attr("pads", Attr::Ints(vec![1, 1, 1, 1]));
    b.node("Relu", "relu1", &["c1"], &["r1"]);
    b.node("MaxPool", "pool", &["r1"], &["p"]);
    b.attr("kernel_shape", Attr::Ints(vec![2, 2]));
    b.attr("strides", Attr::Ints(vec![2, 2]));
    let w2 = b.weight("w2", &[6, 4, 3, 3]);
    b.node("Conv", "conv2", &["p", &w2], &["c2"]);
    let lo = b.init("zero", Tensor::scalar(0f32));
    let hi = b.init("six", Tensor::scalar(6f32));
    b.node("Clip", "clip", &["c2", &lo, &hi], &["r2"]);
    b.node("GlobalAveragePool", "gap", &["r2"], &["g"]);
    b.node("Flatten", "flat", &["g"], &["f"]);
    let w3 = b.weight("w3", &[5, 6]);
    let c3 = b.weight("c3", &[5]);
    b.node("Gemm", "fc", &["f", &w3, &c3], &["logits"]);
    b.attr("transB", Attr::Int(1));
    b.node("Softmax", "softmax", &["logits"], &["y"]);
    b.build(&["y"])
}

fn act_names(plan: &QuantPlan) -> Vec<(&str, Option<&str>)> {
    plan.activations
        .iter()
        .map(|a| (a.tensor.as_str(), a.shared_with.as_deref()))
        .collect()
}

#[test]
fn fusion_groups_are_found() {
    let groups = fuse::find_groups(&cnn().graph);
    let kinds: Vec<(&str, &str)> = groups
        .iter()
        .map(|g| (g.kind.as_str(), g.output.as_str()))
        .collect();
    assert_eq!(kinds, [("Conv+Relu", "r1"), ("Conv+Clip", "r2")]);

    // MatMul + bias Add + LeakyRelu, BN + Relu, Add + Relu; a tensor read
    // twice ends a chain.
    let mut b = Builder::new(&[("x", &[2, 8]), ("z", &[2, 4])]);
    let w = b.weight("w", &[8, 4]);
    let bias = b.weight("bias", &[4]);
    b.node("MatMul", "mm", &["x", &w], &["m"]);
    b.node("Add", "badd", &["m", &bias], &["ma"]);
    b.node("LeakyRelu", "lrelu", &["ma"], &["l"]);
    b.node("Add", "add", &["l", "z"], &["s"]);
    b.node("Relu", "relu", &["s"], &["r"]);
    let (sc, bb, mm, vv) = (
        b.weight("bn_s", &[2]),
        b.weight("b", &[2]),
        b.weight("mu", &[2]),
        b.weight("v", &[2]),
    );
    b.node(
        "BatchNormalization",
        "bn",
        &["r", &sc, &bb, &mm, &vv],
        &["n"],
    );
    b.node("Relu", "relu2", &["n"], &["y"]);
    b.node("MatMul", "mm2", &["y", &w], &["q"]);
    b.node("Relu", "relu3", &["q"], &["y2"]);
    let m = b.build(&["y2", "q"]);
    let groups = fuse::find_groups(&m.graph);
    let got: Vec<(&str, Option<&str>)> = groups
        .iter()
        .map(|g| (g.kind.as_str(), g.bias.as_ref().map(|b| b.1.as_str())))
        .collect();
    assert_eq!(
        got,
        [
            ("MatMul+Add+LeakyRelu", Some("bias")),
            ("Add+Relu", None),
            ("BatchNormalization+Relu", None)
        ]
    );
}

#[test]
fn placement_follows_ort() {
    let p = prepare(&cnn(), &QuantConfig::default()).unwrap();
    assert_eq!(
        act_names(&p.plan),
        [
            ("x", None),
            ("r1", None),
            ("p", Some("r1")),
            ("r2", None),
            ("g", None),
            ("f", Some("g")),
            ("logits", None),
        ]
    );
    let w: Vec<(&str, Option<usize>)> = p
        .plan
        .weights
        .iter()
        .map(|w| (w.tensor.as_str(), w.axis))
        .collect();
    assert_eq!(w, [("w1", Some(0)), ("w2", Some(0)), ("w3", Some(0))]);
    let b: Vec<(&str, &str, &str)> = p
        .plan
        .biases
        .iter()
        .map(|b| (b.tensor.as_str(), b.input.as_str(), b.weight.as_str()))
        .collect();
    assert_eq!(b, [("b1", "x", "w1"), ("c3", "f", "w3")]);
    assert_eq!(
        p.plan.kept_float,
        [(
            "softmax".to_string(),
            "no int8 form: runs in float between DequantizeLinear and QuantizeLinear".to_string()
        )]
    );
    assert_eq!(p.report.fusions.len(), 2);
    assert!(p.plan.quantized_nodes.contains(&"relu1".to_string()));
}

#[test]
fn placement_honours_skip_per_tensor_and_int32_output() {
    let cfg =
        QuantConfig::from_toml("skip = [\"conv2\"]\nint32_output = [\"fc\"]\nper_channel = false")
            .unwrap();
    let p = prepare(&cnn(), &cfg).unwrap();
    // conv2 stays float, which breaks the Conv+Clip group: Clip has no
    // quantized input, GAP quantizes its own input.
    assert_eq!(
        act_names(&p.plan),
        [
            ("x", None),
            ("r1", None),
            ("p", Some("r1")),
            ("r2", None),
            ("g", None),
            ("f", Some("g"))
        ]
    );
    assert!(
        p.plan
            .kept_float
            .iter()
            .any(|(n, r)| n == "conv2" && r.contains("config"))
    );
    assert!(p.plan.kept_float.iter().any(|(n, _)| n == "clip"));
    assert_eq!(p.plan.float_outputs, ["fc"]);
    assert!(p.plan.weights.iter().all(|w| w.axis.is_none()));
    assert_eq!(p.report.fusions.len(), 1);
}

#[test]
fn constant_nodes_feed_weights() {
    let mut m = cnn();
    let w1 = m.graph.initializers.shift_remove("w1").unwrap();
    m.graph.nodes.insert(
        0,
        quench_ir::Node::new("Constant", "", &[], &["w1"]).with_attr("value", Attr::Tensor(w1)),
    );
    let p = prepare(&m, &QuantConfig::default()).unwrap();
    assert_eq!(p.report.constants, 1);
    assert_eq!(p.report.named_nodes, 1);
    assert_eq!(p.plan.weights[0].tensor, "w1");
}

/// Fixed parameters: every calibrated activation gets [-4, 4].
pub(super) fn fake_params(plan: &QuantPlan) -> BTreeMap<String, QParams> {
    plan.calibrated()
        .map(|a| {
            (
                a.tensor.clone(),
                QParams::from_ranges(&[-4.0], &[4.0], None, &a.config).unwrap(),
            )
        })
        .collect()
}

#[test]
fn qdq_layout() {
    let p = prepare(&cnn(), &QuantConfig::default()).unwrap();
    let (q, r) = convert_qdq(&p.model, &p.plan, &fake_params(&p.plan)).unwrap();
    assert_eq!((r.activations, r.weights, r.biases), (7, 3, 2));
    let count = |op: &str| q.graph.nodes.iter().filter(|n| n.op_type == op).count();
    assert_eq!(count("QuantizeLinear"), 7);
    assert_eq!(count("DequantizeLinear"), 7 + 3 + 2);
    // Conv reads dequantized x, weight and bias; Relu's output is quantized
    // but not Conv's.
    let conv = q.graph.nodes.iter().find(|n| n.name == "conv1").unwrap();
    assert_eq!(
        conv.inputs,
        [
            "x_DequantizeLinear_Output",
            "w1_DequantizeLinear_Output",
            "b1_DequantizeLinear_Output"
        ]
    );
    assert_eq!(conv.outputs, ["c1"]);
    assert!(
        q.graph
            .nodes
            .iter()
            .all(|n| n.inputs.iter().all(|i| i != "c1") || n.op_type == "Relu")
    );
    // Shared parameters reuse the root's initializers.
    let qp = q
        .graph
        .nodes
        .iter()
        .find(|n| n.name == "p_QuantizeLinear")
        .unwrap();
    assert_eq!(qp.inputs[1], "r1_scale");
    assert_eq!(
        q.graph.initializers["w1_quantized"].dtype(),
        quench_ir::DType::I8
    );
    assert_eq!(
        q.graph.initializers["b1_quantized"].dtype(),
        quench_ir::DType::I32
    );
    assert_eq!(
        q.graph.initializers["x_zero_point"].dtype(),
        quench_ir::DType::U8
    );
    assert!(!q.graph.initializers.contains_key("w1"));
    assert!(
        q.graph
            .topo_order(&|_| false)
            .unwrap()
            .windows(2)
            .all(|w| w[0] < w[1])
    );
    // Missing parameters are an error naming the tensor.
    let mut params = fake_params(&p.plan);
    params.remove("g");
    let e = convert_qdq(&p.model, &p.plan, &params)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'g'"), "{e}");
}

#[test]
fn graph_output_keeps_its_name_and_opset_is_raised() {
    let mut b = Builder::new(&[("x", &[1, 2, 4, 4])]).opset(11);
    let w = b.weight("w", &[3, 2, 1, 1]);
    b.node("Conv", "conv", &["x", &w], &["c"]);
    let axes = b.init("ax", Tensor::from_vec(vec![1], vec![0i64]).unwrap());
    b.node("Unsqueeze", "unsq", &["c"], &["u"]);
    b.attr("axes", Attr::Ints(vec![0]));
    let _ = axes;
    let m = b.build(&["c", "u"]);
    let p = prepare(&m, &QuantConfig::default()).unwrap();
    let (q, r) = convert_qdq(&p.model, &p.plan, &fake_params(&p.plan)).unwrap();
    assert_eq!(r.opset_raised_from, Some(11));
    assert_eq!(q.opset(""), Some(13));
    let conv = q.graph.nodes.iter().find(|n| n.name == "conv").unwrap();
    assert_eq!(conv.outputs, ["c_QuantizeLinear_Input"]);
    let unsq = q.graph.nodes.iter().find(|n| n.name == "unsq").unwrap();
    assert_eq!(unsq.inputs.len(), 2);
    assert!(
        q.graph
            .nodes
            .iter()
            .any(|n| n.op_type == "DequantizeLinear" && n.outputs == ["c"])
    );
}

#[test]
fn malformed_graphs_and_plans_are_errors() {
    // A cycle is reported, not looped on.
    let mut b = Builder::new(&[("x", &[1, 2])]);
    b.node("Relu", "a", &["z"], &["y"]);
    b.node("Relu", "b", &["y"], &["z"]);
    let e = prepare(&b.build(&["y"]), &QuantConfig::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cycle"), "{e}");
    // Weights of the wrong rank or shape are left alone rather than folded.
    let mut b = Builder::new(&[("x", &[1, 2, 4, 4])]);
    let w = b.weight("w", &[3]);
    b.node("Conv", "conv", &["x", &w], &["c"]);
    let s = b.weight("s", &[5]);
    b.node("BatchNormalization", "bn", &["c", &s, &s, &s, &s], &["y"]);
    let p = prepare(&b.build(&["y"]), &QuantConfig::default()).unwrap();
    assert!(p.report.folded_bn.is_empty());
    // A plan naming a weight that is not an initializer.
    let p = prepare(&cnn(), &QuantConfig::default()).unwrap();
    let mut plan = p.plan.clone();
    plan.weights[0].tensor = "nope".into();
    let e = convert_qdq(&p.model, &plan, &fake_params(&p.plan))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'nope'"), "{e}");
    // Per-channel parameters for an activation.
    let mut params = fake_params(&p.plan);
    params.insert(
        "x".into(),
        QParams::from_ranges(
            &[-1.0, -1.0],
            &[1.0, 1.0],
            Some(1),
            &p.plan.activations[0].config,
        )
        .unwrap(),
    );
    let e = convert_qdq(&p.model, &p.plan, &params)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'x'"), "{e}");
}
