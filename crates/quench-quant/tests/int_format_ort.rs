//! `to_int` on models quantized by ONNX Runtime's `quantize_static` (QDQ
//! format), checked against ORT's own QOperator model of the same float model
//! and calibration data.
//!
//! `scripts/make_ort_quantized.py` (run by `scripts/test.sh`) writes the
//! models into `$QUENCH_CACHE/int-format`; `scripts/check_int_model.py` runs
//! ORT. For each model this checks that
//! (a) Quench's integer model passes `onnx.checker` (full check) and ORT runs it,
//! (b) ORT's output on it is within one output step of ORT's output on ORT's
//!     QOperator model (where ORT's two formats chose the same parameters) and
//!     on ORT's own QDQ → QLinear rewrite of the QDQ model, and
//! (c) Quench's runtime on it is within one step of ORT on it.

use quench_ir::Tensor;
use quench_quant::to_int;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cache filled by `scripts/test.sh`. Missing: a failure under `CI=true`,
/// else the test says it skipped and returns (crates/quench/tests/common).
fn cache_dir(need: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("QUENCH_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/quench")))?;
    if dir.join(need).exists() {
        return Some(dir);
    }
    let msg = format!(
        "{} is missing: run scripts/test.sh (it quantizes the test models with ONNX Runtime)",
        dir.join(need).display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The scale of the DequantizeLinear producing `output`: one output step.
fn output_step(m: &quench_ir::Model, output: &str) -> f32 {
    let g = &m.graph;
    let dq = g
        .nodes
        .iter()
        .find(|n| n.outputs.iter().any(|o| o == output))
        .filter(|n| n.op_type == "DequantizeLinear")
        .unwrap_or_else(|| panic!("output {output} does not come from a DequantizeLinear"));
    let s = &g.initializers[&dq.inputs[1]];
    s.as_slice::<f32>()
        .unwrap()
        .iter()
        .cloned()
        .fold(0.0, f32::max)
}

fn check(cache: &Path, name: &str) -> String {
    let dir = cache.join("int-format");
    let qdq = quench_onnx::load_model(dir.join(format!("{name}.qdq.onnx"))).unwrap();
    let (int, report) = to_int(&qdq).unwrap();
    assert!(
        report.total_converted() > 0,
        "{name}: nothing converted\n{report}"
    );
    let tmp = std::env::temp_dir().join(format!("quench-int-format-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let int_path = tmp.join(format!("{name}.int.onnx"));
    quench_onnx::save_model(&int, &int_path).unwrap();
    let ort_out = tmp.join(format!("{name}.ort.npz"));
    let py = cache.join("venv/bin/python");
    let out = Command::new(&py)
        .arg(repo_root().join("scripts/check_int_model.py"))
        .arg(&int_path)
        .arg(dir.join(format!("{name}.qdq.onnx")))
        .arg(dir.join(format!("{name}.qop.onnx")))
        .arg(dir.join(format!("{name}.inputs.npz")))
        .arg(&ort_out)
        .output()
        .expect("cannot start the venv's python");
    let summary = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{name}: ORT check failed: {summary}\n{}\n{report}",
        String::from_utf8_lossy(&out.stderr)
    );

    // (c) Quench's runtime on Quench's integer model vs ORT on it.
    let session = quench_runtime::Session::new(&int, 1).unwrap();
    let input = int.graph.runtime_inputs().next().unwrap().name.clone();
    let feeds = quench_data::npz::read_npz(&dir.join(format!("{name}.inputs.npz"))).unwrap();
    let refs: std::collections::HashMap<String, Tensor> = quench_data::npz::read_npz(&ort_out)
        .unwrap()
        .into_iter()
        .collect();
    let mut worst = 0.0f32;
    for (key, x) in feeds {
        let outs = session.run(vec![(input.clone(), x)]).unwrap();
        for (oname, t) in outs {
            let want = &refs[&format!("{key}/{oname}")];
            let step = output_step(&int, &oname);
            let (a, b) = (
                t.as_slice::<f32>().unwrap(),
                want.as_slice::<f32>().unwrap(),
            );
            assert_eq!(a.len(), b.len());
            for (p, q) in a.iter().zip(b) {
                worst = worst.max((p - q).abs() / step);
            }
        }
    }
    assert!(
        worst <= 1.0 + 1e-4,
        "{name}: Quench's runtime is {worst} steps from ORT"
    );
    let _ = std::fs::remove_dir_all(&tmp);
    format!("{name}: {summary}; quench runtime vs ORT: {worst:.3} steps\n{report}")
}

#[test]
fn ort_qdq_models_convert_to_ort_equivalent_integer_models() {
    let Some(cache) = cache_dir("int-format/DONE") else {
        return;
    };
    let names = std::fs::read_to_string(cache.join("int-format/DONE")).unwrap();
    for name in names.lines().filter(|l| !l.is_empty()) {
        println!("{}", check(&cache, name));
    }
}
