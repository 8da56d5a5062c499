//! Pass tests: graph structure (no runtime needed) and end-to-end QDQ runs.

use super::test_util::*;
use super::*;
use crate::{CalibrationMethod, Calibrator, QParams, QuantConfig};
use quench_ir::{Attr, Model, Tensor};
use std::collections::BTreeMap;

/// x → Conv+Relu → MaxPool → Conv+Clip(0,6) → GAP → Flatten → Gemm → Softmax.
fn cnn() -> Model {
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
fn fake_params(plan: &QuantPlan) -> BTreeMap<String, QParams> {
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

/// Calibrates `prepared` with MinMax on `samples`, exactly as the CLI will.
fn calibrate(prepared: &Prepared, samples: &[Vec<(&str, Tensor)>]) -> BTreeMap<String, QParams> {
    let session = quench_runtime::Session::new(&prepared.model, 1).unwrap();
    let wanted: std::collections::HashSet<String> = prepared
        .plan
        .activations
        .iter()
        .map(|a| a.tensor.clone())
        .collect();
    let mut cal = Calibrator::new(CalibrationMethod::min_max());
    for inputs in samples {
        for (n, t) in inputs {
            if wanted.contains(*n) {
                cal.observe(n, t).unwrap();
            }
        }
        let mut seen: Vec<(String, Tensor)> = Vec::new();
        let mut hook = |name: &str, t: &Tensor| {
            if wanted.contains(name) {
                seen.push((name.to_string(), t.clone()));
            }
        };
        let mut hooks = quench_runtime::RunHooks {
            on_value: Some(&mut hook),
            ..Default::default()
        };
        session
            .run_with(
                inputs
                    .iter()
                    .map(|(n, t)| (n.to_string(), t.clone()))
                    .collect(),
                &mut hooks,
            )
            .unwrap();
        for (n, t) in &seen {
            cal.observe(n, t).unwrap();
        }
    }
    prepared
        .plan
        .activations
        .iter()
        .map(|a| {
            let range = cal.range(&a.tensor).unwrap().unwrap();
            (a.tensor.clone(), range.qparams(&a.config).unwrap())
        })
        .collect()
}

/// prepare → calibrate → convert → run, checking SQNR vs float; saves the
/// models for `scripts/check_qdq_models.py` when `QUENCH_QDQ_DIR` is set.
fn end_to_end(
    name: &str,
    model: &Model,
    input: (&str, &[usize]),
    cfg: &QuantConfig,
    min_sqnr: f64,
) {
    let prepared = prepare(model, cfg).unwrap();
    // Without the runtime (elementwise ops not there yet) the model is still
    // converted with fixed parameters, for the ORT script to check.
    let runnable = runtime_supports(model);
    let params = if runnable {
        let samples: Vec<Vec<(&str, Tensor)>> = (0..8)
            .map(|s| vec![(input.0, rand_tensor(input.1, 1000 + s))])
            .collect();
        calibrate(&prepared, &samples)
    } else {
        fake_params(&prepared.plan)
    };
    let (qdq, report) = convert_qdq(&prepared.model, &prepared.plan, &params).unwrap();
    assert!(report.activations > 0 && report.weights > 0);
    let test = vec![(input.0, rand_tensor(input.1, 7))];
    let mut quant = Vec::new();
    if runnable {
        let float = run(model, &test);
        quant = run(&qdq, &test);
        for (f, q) in float.iter().zip(&quant) {
            let s = sqnr(f, q);
            eprintln!("{name}: SQNR {s:.1} dB");
            assert!(s >= min_sqnr, "{name}: SQNR {s:.1} dB < {min_sqnr}");
        }
    }
    if let Ok(dir) = std::env::var("QUENCH_QDQ_DIR") {
        let dir = std::path::Path::new(&dir).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        quench_onnx::save_model(model, dir.join("float.onnx")).unwrap();
        quench_onnx::save_model(&qdq, dir.join("qdq.onnx")).unwrap();
        let inputs: Vec<(String, Tensor)> = test
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        quench_data::npz::write_npz(&dir.join("inputs.npz"), &inputs).unwrap();
        let out = dir.join("quench_qdq_outputs.npz");
        let _ = std::fs::remove_file(&out);
        if runnable {
            let named: Vec<(String, Tensor)> = qdq
                .graph
                .outputs
                .iter()
                .map(|o| o.name.clone())
                .zip(quant)
                .collect();
            quench_data::npz::write_npz(&out, &named).unwrap();
        }
    }
}

#[test]
fn end_to_end_conv_net_without_elementwise_ops() {
    // Conv+BN (folded), pooling, a Concat of two branches, GAP, Flatten, Gemm.
    let mut b = Builder::new(&[("x", &[1, 3, 16, 16])]);
    let w1 = b.weight("w1", &[8, 3, 3, 3]);
    b.node("Conv", "conv1", &["x", &w1], &["c1"]);
    b.attr("pads", Attr::Ints(vec![1, 1, 1, 1]));
    let (s, o, m, v) = (
        b.init("bn_s", rand_positive(&[8], 3)),
        b.weight("bn_b", &[8]),
        b.weight("bn_m", &[8]),
        b.init("bn_v", rand_positive(&[8], 4)),
    );
    b.node("BatchNormalization", "bn", &["c1", &s, &o, &m, &v], &["n1"]);
    b.node("MaxPool", "pool", &["n1"], &["p"]);
    b.attr("kernel_shape", Attr::Ints(vec![2, 2]));
    b.attr("strides", Attr::Ints(vec![2, 2]));
    let w2 = b.weight("w2", &[4, 8, 3, 3]);
    let b2 = b.weight("b2", &[4]);
    b.node("Conv", "conv2", &["p", &w2, &b2], &["c2"]);
    b.attr("pads", Attr::Ints(vec![1, 1, 1, 1]));
    let w3 = b.weight("w3", &[4, 8, 1, 1]);
    b.node("Conv", "conv3", &["p", &w3], &["c3"]);
    b.node("Concat", "cat", &["c2", "c3"], &["cat"]);
    b.attr("axis", Attr::Int(1));
    b.node("GlobalAveragePool", "gap", &["cat"], &["g"]);
    b.node("Flatten", "flat", &["g"], &["f"]);
    let w4 = b.weight("w4", &[8, 10]);
    let c4 = b.weight("c4", &[10]);
    b.node("Gemm", "fc", &["f", &w4, &c4], &["y"]);
    let model = b.build(&["y"]);
    end_to_end(
        "convnet",
        &model,
        ("x", &[1, 3, 16, 16]),
        &QuantConfig::default(),
        25.0,
    );
    let sym = QuantConfig::from_toml("backend = \"symmetric\"").unwrap();
    end_to_end(
        "convnet_symmetric",
        &model,
        ("x", &[1, 3, 16, 16]),
        &sym,
        25.0,
    );
    let int32 = QuantConfig::from_toml("int32_output = [\"fc\"]\nper_channel = false").unwrap();
    end_to_end(
        "convnet_int32_output",
        &model,
        ("x", &[1, 3, 16, 16]),
        &int32,
        25.0,
    );
}

#[test]
fn end_to_end_with_fusions_and_mixed_precision() {
    // Needs Relu/Clip/Add/Softmax in the runtime; skipped until they exist.
    end_to_end(
        "cnn_fused",
        &cnn(),
        ("x", &[1, 3, 8, 8]),
        &QuantConfig::default(),
        20.0,
    );
    let mut b = Builder::new(&[("x", &[4, 16])]);
    let w = b.weight("w", &[16, 12]);
    let bias = b.weight("bias", &[12]);
    b.node("MatMul", "mm", &["x", &w], &["m"]);
    b.node("Add", "badd", &["m", &bias], &["ma"]);
    b.node("Relu", "relu", &["ma"], &["r"]);
    let w2 = b.weight("w2", &[12, 12]);
    b.node("MatMul", "mm2", &["r", &w2], &["m2"]);
    b.node("Add", "res", &["m2", "r"], &["s"]);
    b.node("Relu", "relu2", &["s"], &["s2"]);
    b.node("Sigmoid", "sig", &["s2"], &["sg"]);
    b.node("Mul", "mul", &["sg", "s2"], &["y"]);
    let model = b.build(&["y"]);
    end_to_end(
        "mlp_fused",
        &model,
        ("x", &[4, 16]),
        &QuantConfig::default(),
        20.0,
    );
}

#[test]
fn end_to_end_opset_11_model_is_raised_to_13() {
    // Softmax over axis 1 of a rank-4 tensor meant "flatten to 2-D" before
    // opset 13; Squeeze/Unsqueeze took axes as attributes.
    let mut b = Builder::new(&[("x", &[1, 3, 6, 6])]).opset(11);
    let w = b.weight("w", &[4, 3, 3, 3]);
    b.node("Conv", "conv", &["x", &w], &["c"]);
    b.node("Softmax", "softmax", &["c"], &["s"]);
    b.node("Unsqueeze", "unsq", &["s"], &["u"]);
    b.attr("axes", Attr::Ints(vec![0]));
    b.node("Squeeze", "sq", &["u"], &["y"]);
    b.attr("axes", Attr::Ints(vec![0]));
    let model = b.build(&["y"]);
    end_to_end(
        "opset11",
        &model,
        ("x", &[1, 3, 6, 6]),
        &QuantConfig::default(),
        20.0,
    );
    let mut raised = model.clone();
    assert_eq!(
        opset::raise_default_opset(&mut raised, 13).unwrap(),
        Some(11)
    );
    sort_nodes(&mut raised.graph).unwrap();
    let mut ops: Vec<&str> = raised
        .graph
        .nodes
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    ops.sort();
    assert_eq!(
        ops,
        [
            "Conv",
            "Flatten",
            "Reshape",
            "Shape",
            "Softmax",
            "Squeeze",
            "Unsqueeze"
        ]
    );
    if let Ok(dir) = std::env::var("QUENCH_QDQ_DIR") {
        // The script compares every extra model with float.onnx.
        quench_onnx::save_model(
            &raised,
            std::path::Path::new(&dir).join("opset11/raised.onnx"),
        )
        .unwrap();
    }
}

/// Real models from `scripts/fetch-models.sh` (run with `--ignored`):
/// prints what prepare decided and writes the QDQ model for
/// `scripts/check_qdq_models.py`. Calibrated on the stored inputs when the
/// runtime has every op, with fixed [-4, 4] ranges otherwise.
#[test]
#[ignore]
fn real_models_convert() {
    let Some(home) = std::env::var_os("HOME") else {
        return;
    };
    let cache = std::path::Path::new(&home).join(".cache/quench");
    for (name, model, inputs) in [
        (
            "rapidocr_cls",
            "models/rapidocr/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "inputs/rapidocr_cls.npz",
        ),
        (
            "rapidocr_det",
            "models/rapidocr/ch_PP-OCRv4_det_infer.onnx",
            "inputs/rapidocr_det.npz",
        ),
        (
            "rapidocr_rec",
            "models/rapidocr/ch_PP-OCRv4_rec_infer.onnx",
            "inputs/rapidocr_rec.npz",
        ),
        ("magika", "models/magika/model.onnx", "inputs/magika.npz"),
        ("minilm", "models/minilm/minilm.onnx", "inputs/minilm.npz"),
    ] {
        let (path, inputs) = (cache.join(model), cache.join(inputs));
        if !path.exists() || !inputs.exists() {
            eprintln!("{name}: not fetched");
            continue;
        }
        let float = quench_onnx::load_model(&path).unwrap();
        let p = prepare(&float, &QuantConfig::default()).unwrap();
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &p.report.fusions {
            *kinds.entry(f.kind.as_str()).or_default() += 1;
        }
        let by_op = |names: &mut dyn Iterator<Item = &String>| {
            let mut m: BTreeMap<String, usize> = BTreeMap::new();
            for n in names {
                if let Some(node) = p.model.graph.nodes.iter().find(|x| &x.name == n) {
                    *m.entry(node.op_type.clone()).or_default() += 1;
                }
            }
            m
        };
        eprintln!(
            "{name}: {} constants, {} BN folded, fusions {kinds:?}\n  quantized {:?}\n  float {:?}\n  {} activations ({} shared), {} weights, {} biases",
            p.report.constants,
            p.report.folded_bn.len(),
            by_op(&mut p.plan.quantized_nodes.iter()),
            by_op(&mut p.plan.kept_float.iter().map(|(n, _)| n)),
            p.plan.activations.len(),
            p.plan.activations.len() - p.plan.calibrated().count(),
            p.plan.weights.len(),
            p.plan.biases.len(),
        );
        let data = quench_data::npz::read_npz(&inputs).unwrap();
        let runnable = runtime_supports(&p.model);
        let params = if runnable {
            let sample: Vec<(&str, Tensor)> =
                data.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
            calibrate(&p, &[sample])
        } else {
            fake_params(&p.plan)
        };
        let (qdq, r) = convert_qdq(&p.model, &p.plan, &params).unwrap();
        eprintln!("  {r:?}");
        if let Ok(dir) = std::env::var("QUENCH_QDQ_DIR") {
            let dir = std::path::Path::new(&dir).join(format!("real_{name}"));
            std::fs::create_dir_all(&dir).unwrap();
            quench_onnx::save_model(&float, dir.join("float.onnx")).unwrap();
            quench_onnx::save_model(&qdq, dir.join("qdq.onnx")).unwrap();
            quench_data::npz::write_npz(&dir.join("inputs.npz"), &data).unwrap();
        }
    }
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
