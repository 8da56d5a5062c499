//! End-to-end tests: prepare → calibrate (MinMax, Quench runtime) →
//! convert_qdq → run, and the real-model conversion check.

use super::test_util::*;
use super::tests::{cnn, fake_params};
use super::*;
use crate::{CalibrationMethod, Calibrator, QParams, QuantConfig};
use quench_ir::{Attr, Model, Tensor};
use std::collections::BTreeMap;

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
