//! `quench quantize --mode dynamic`: the bundled MNIST row-LSTM keeps its accuracy and shrinks,
//! MiniLM keeps its sentence embeddings, ONNX Runtime runs what Quench writes and computes the
//! same numbers, and misused flags get clear errors.

mod common;

use common::{cache_dir, python, quench, temp_dir};
use quench_ir::Tensor;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = quench(args);
    assert!(
        out.status.success(),
        "quench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = quench(args);
    assert!(!out.status.success(), "quench {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ops(model: &Path) -> Vec<String> {
    let m = quench_onnx::load_model(model).unwrap();
    m.graph.nodes.iter().map(|n| n.op_type.clone()).collect()
}

/// The first `n` test images as `[n, 28, 28]` rows, and their labels.
fn mnist_rows(n: usize) -> (Tensor, Vec<i64>) {
    let data = quench_data::read_npz(&repo().join("examples/mnist/test.npz")).unwrap();
    let get = |k: &str| data.iter().find(|(name, _)| name == k).unwrap().1.clone();
    let x = get("input").as_slice::<f32>().unwrap()[..n * 784].to_vec();
    let y = get("label").as_slice::<i64>().unwrap()[..n].to_vec();
    (Tensor::from_vec(vec![n, 28, 28], x).unwrap(), y)
}

fn run_model(model: &Path, inputs: &Path, out: &Path, name: &str) -> Tensor {
    ok(&[
        "run",
        p(model),
        "--inputs",
        p(inputs),
        "-o",
        p(out),
        "--threads",
        "1",
    ]);
    quench_data::read_npy(&out.join(format!("{name}.npy"))).unwrap()
}

fn argmax_rows(t: &Tensor) -> Vec<usize> {
    let n = *t.shape().last().unwrap();
    t.as_slice::<f32>()
        .unwrap()
        .chunks(n)
        .map(|r| (0..n).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
        .collect()
}

/// ORT must load `model` and give Quench's numbers (`scripts/dynamic/check_ort_run.py`).
fn ort_agrees(model: &Path, inputs: &Path, outdir: &Path, atol: &str) {
    let Some(cache) = cache_dir("venv/bin/python") else {
        return;
    };
    let check = std::process::Command::new(python(&cache))
        .arg(repo().join("scripts/dynamic/check_ort_run.py"))
        .args([p(model), p(inputs), p(outdir), "--atol", atol])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}: {}{}",
        model.display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn mnist_lstm_keeps_accuracy_shrinks_and_runs_in_onnxruntime() {
    let dir = temp_dir("dynamic-lstm");
    let float = repo().join("examples/mnist/lstm_rows.onnx");
    let (x, y) = mnist_rows(300);
    let inputs = dir.join("rows.npz");
    quench_data::write_npz(&inputs, &[("input".into(), x)]).unwrap();
    let want = argmax_rows(&run_model(&float, &inputs, &dir.join("float"), "logits"));
    let float_hits = want
        .iter()
        .zip(&y)
        .filter(|(a, b)| **a as i64 == **b)
        .count();
    for flags in [&[][..], &["--per-tensor"][..]] {
        let q = dir.join(format!("q{}.onnx", flags.len()));
        let mut args = vec!["quantize", p(&float), "-o", p(&q), "--mode", "dynamic"];
        args.extend(flags);
        let summary = ok(&args);
        assert!(summary.contains("LSTM "), "{summary}");
        assert!(summary.contains("Gemm "), "{summary}");
        let ops = ops(&q);
        assert!(ops.contains(&"DynamicQuantizeLSTM".to_string()), "{ops:?}");
        assert!(
            ops.contains(&"DynamicQuantizeMatMul".to_string()),
            "{ops:?}"
        );
        // "weights  N  0.33 MB  0.09 MB  3.64x": LSTM + Linear at least 3.5x smaller.
        let line = summary.lines().find(|l| l.starts_with("weights")).unwrap();
        let ratio: f64 = line
            .split_whitespace()
            .last()
            .unwrap()
            .trim_end_matches('x')
            .parse()
            .unwrap();
        assert!(ratio >= 3.5, "{line}");
        let outdir = dir.join(format!("out{}", flags.len()));
        let got = argmax_rows(&run_model(&q, &inputs, &outdir, "logits"));
        let hits = got
            .iter()
            .zip(&y)
            .filter(|(a, b)| **a as i64 == **b)
            .count();
        let agree = got.iter().zip(&want).filter(|(a, b)| a == b).count();
        assert!(
            hits + 3 >= float_hits,
            "{hits} vs float {float_hits} of 300"
        );
        assert!(agree >= 294, "{agree} of 300 agree with float");
        // ORT rounds X and h to uint8 inside DynamicQuantizeLSTM; Quench keeps them float.
        ort_agrees(&q, &inputs, &outdir, "0.3");
    }
}

#[test]
fn onnx_format_and_per_token_are_standard_onnx() {
    let dir = temp_dir("dynamic-formats");
    let float = repo().join("examples/mnist/lstm_rows.onnx");
    let (x, _) = mnist_rows(20);
    let inputs = dir.join("rows.npz");
    quench_data::write_npz(&inputs, &[("input".into(), x)]).unwrap();
    for (tag, flags) in [
        ("onnx", &["--format", "onnx"][..]),
        ("token", &["--per-token"][..]),
    ] {
        let q = dir.join(format!("{tag}.onnx"));
        let mut args = vec![
            "quantize",
            p(&float),
            "-o",
            p(&q),
            "--mode",
            "dynamic",
            "--op-types",
            "Gemm",
        ];
        args.extend(flags);
        let summary = ok(&args);
        assert!(summary.contains("1 quantized"), "{summary}");
        let ops = ops(&q);
        assert!(ops.contains(&"MatMulInteger".to_string()), "{ops:?}");
        assert!(
            ops.contains(&"LSTM".to_string()),
            "--op-types Gemm keeps the LSTM float"
        );
        let out = dir.join(format!("out-{tag}"));
        run_model(&q, &inputs, &out, "logits");
        ort_agrees(&q, &inputs, &out, "1e-4");
    }
}

#[test]
fn minilm_embeddings_stay_close_and_match_onnxruntime() {
    let Some(cache) = cache_dir("models/minilm/minilm.onnx") else {
        return;
    };
    let Some(_) = cache_dir("inputs/minilm.npz") else {
        return;
    };
    let dir = temp_dir("dynamic-minilm");
    let float = cache.join("models/minilm/minilm.onnx");
    let inputs = cache.join("inputs/minilm.npz");
    let want = run_model(&float, &inputs, &dir.join("float"), "sentence_embedding");
    for (tag, flags, min_cos) in [
        ("contrib", &[][..], 0.98),
        ("token", &["--per-token"][..], 0.995),
    ] {
        let q = dir.join(format!("{tag}.onnx"));
        let mut args = vec!["quantize", p(&float), "-o", p(&q), "--mode", "dynamic"];
        args.extend(flags);
        let summary = ok(&args);
        assert!(summary.contains("36 quantized"), "{summary}");
        assert!(summary.contains("computed at run time"), "{summary}");
        let out = dir.join(format!("out-{tag}"));
        let got = run_model(&q, &inputs, &out, "sentence_embedding");
        let (a, b) = (
            want.as_slice::<f32>().unwrap(),
            got.as_slice::<f32>().unwrap(),
        );
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos = dot / norm(a) / norm(b);
        assert!(cos >= min_cos, "{tag}: cosine {cos}");
        ort_agrees(&q, &inputs, &out, "1e-4");
    }
}

#[test]
fn misused_flags_get_clear_errors() {
    let dir = temp_dir("dynamic-errors");
    let float = repo().join("examples/mnist/lstm_rows.onnx");
    let out = dir.join("q.onnx");
    let calib = repo().join("examples/mnist/calib.npz");
    let base = ["quantize", p(&float), "-o", p(&out)];
    let with = |extra: &[&str]| {
        let mut v = base.to_vec();
        v.extend(extra);
        fails(&v)
    };
    assert!(with(&[]).contains("--calib"));
    assert!(with(&["--mode", "sideways"]).contains("static or dynamic"));
    assert!(with(&["--mode", "dynamic", "--calib", p(&calib)]).contains("--calib"));
    assert!(with(&["--per-token", "--calib", p(&calib)]).contains("--mode dynamic"));
    assert!(with(&["--mode", "dynamic", "--op-types", "Relu"]).contains("Relu"));
    assert!(with(&["--mode", "dynamic", "--exclude", "nope"]).contains("nope"));
    assert!(with(&["--mode", "dynamic", "--format", "qdq"]).contains("contrib or onnx"));
    assert!(!out.exists());
}

#[test]
fn conv_is_opt_in_and_runs_in_onnxruntime() {
    let dir = temp_dir("dynamic-conv");
    let ex = repo().join("examples/mnist");
    let float = ex.join("resnet8.onnx");
    let q = dir.join("conv.onnx");
    let summary = ok(&[
        "quantize",
        p(&float),
        "-o",
        p(&q),
        "--mode",
        "dynamic",
        "--op-types",
        "Conv,Gemm",
    ]);
    assert!(summary.contains("Conv "), "{summary}");
    assert!(ops(&q).contains(&"ConvInteger".to_string()));
    let data = quench_data::read_npz(&ex.join("test.npz")).unwrap();
    let x = data.iter().find(|(k, _)| k == "input").unwrap().1.clone();
    let first4 = Tensor::from_vec(
        vec![4, 1, 28, 28],
        x.as_slice::<f32>().unwrap()[..4 * 784].to_vec(),
    )
    .unwrap();
    let inputs = dir.join("x.npz");
    quench_data::write_npz(&inputs, &[("input".into(), first4)]).unwrap();
    let out = dir.join("out");
    let want = run_model(&float, &inputs, &dir.join("float"), "logits");
    let got = run_model(&q, &inputs, &out, "logits");
    assert_eq!(argmax_rows(&want), argmax_rows(&got));
    ort_agrees(&q, &inputs, &out, "0.05");
}
