//! `quench bench` end to end: a small int8 model with a symbolic batch.

mod common;

use common::{quench, temp_dir};
use quench_ir::{DType, Dim, Graph, Model, Node, OpsetImport, Tensor, ValueInfo};

/// `y = MatMulInteger(x[batch, 8], W[8, 16])` with W an initializer, plus a
/// second input whose spatial dim is symbolic.
fn model(extra_symbolic: bool) -> Model {
    let mut inputs = vec![ValueInfo::tensor(
        "x",
        DType::U8,
        Some(vec![Dim::Symbol("batch".into()), Dim::Fixed(8)]),
    )];
    if extra_symbolic {
        inputs.push(ValueInfo::tensor(
            "z",
            DType::F32,
            Some(vec![Dim::Fixed(1), Dim::Symbol("h".into())]),
        ));
    }
    let w = Tensor::from_vec(
        vec![8, 16],
        (0..128).map(|i| (i % 7) as i8 - 3).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut graph = Graph {
        name: "g".into(),
        inputs,
        outputs: vec![ValueInfo::tensor("y", DType::I32, None)],
        nodes: vec![Node::new("MatMulInteger", "mm", &["x", "w"], &["y"])],
        ..Default::default()
    };
    graph.initializers.insert("w".into(), w);
    Model {
        ir_version: 8,
        opset_imports: vec![OpsetImport {
            domain: String::new(),
            version: 17,
        }],
        graph,
        ..Default::default()
    }
}

#[test]
fn bench_reports_latency_json_and_per_layer() {
    let dir = temp_dir("bench");
    let path = dir.join("mm.onnx");
    quench_onnx::save_model(&model(false), &path).unwrap();
    let p = path.to_str().unwrap();
    let out = quench(&[
        "bench",
        p,
        "--runs",
        "3",
        "--warmup",
        "1",
        "--batch",
        "4",
        "--per-layer",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("latency: median"), "{stdout}");
    assert!(stdout.contains("MatMulInteger"), "{stdout}");
    let out = quench(&["bench", p, "--runs", "2", "--json", "--threads", "1"]);
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["runs"], 2);
    assert_eq!(j["threads"], 1);
    assert!(j["median_ms"].as_f64().unwrap() >= 0.0);
}

#[test]
fn symbolic_dims_other_than_batch_need_a_shape() {
    let dir = temp_dir("bench-shape");
    let path = dir.join("mm2.onnx");
    quench_onnx::save_model(&model(true), &path).unwrap();
    let p = path.to_str().unwrap();
    let out = quench(&["bench", p, "--runs", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--shape z="),
        "{stderr}"
    );
    let out = quench(&["bench", p, "--runs", "1", "--shape", "z=1x5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
