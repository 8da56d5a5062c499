//! `quench quantize` / `eval` / `compare` on the bundled MNIST model and data: accuracy holds,
//! ONNX Runtime runs both output formats and agrees with Quench within one quantization step,
//! and bad calibration data or configs get clear errors.

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

fn top1(text: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with("top-1"))
        .expect("top-1 line");
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap()
}

#[test]
fn resnet8_keeps_its_accuracy_and_runs_in_onnxruntime() {
    let ex = repo().join("examples/mnist");
    let dir = temp_dir("quantize-resnet8");
    let float = ex.join("resnet8.onnx");
    let float_top1 = top1(&ok(&[
        "eval",
        p(&float),
        "--data",
        p(&ex.join("test.npz")),
        "--threads",
        "1",
    ]));
    for format in ["qdq", "int"] {
        let q = dir.join(format!("resnet8.{format}.onnx"));
        let summary = ok(&[
            "quantize",
            p(&float),
            "-o",
            p(&q),
            "--calib",
            p(&ex.join("calib.npz")),
            "--samples",
            "100",
            "--format",
            format,
            "--threads",
            "1",
        ]);
        assert!(summary.contains("Add+Relu"), "{summary}");
        let t = top1(&ok(&[
            "eval",
            p(&q),
            "--data",
            p(&ex.join("test.npz")),
            "--threads",
            "1",
        ]));
        assert!(
            t >= float_top1 - 0.3,
            "{format}: top-1 {t} vs float {float_top1}"
        );

        let Some(cache) = cache_dir("venv/bin/python") else {
            continue;
        };
        let sample = dir.join("sample.npz");
        let data = quench_data::read_npz(&ex.join("test.npz")).unwrap();
        let x = data.iter().find(|(k, _)| k == "input").unwrap().1.clone();
        let row = 28 * 28;
        let first4 = Tensor::from_vec(
            vec![4, 1, 28, 28],
            x.as_slice::<f32>().unwrap()[..4 * row].to_vec(),
        )
        .unwrap();
        quench_data::write_npz(&sample, &[("input".into(), first4)]).unwrap();
        let out = dir.join(format!("out-{format}"));
        ok(&[
            "run",
            p(&q),
            "--inputs",
            p(&sample),
            "-o",
            p(&out),
            "--threads",
            "1",
        ]);
        let check = std::process::Command::new(python(&cache))
            .arg(repo().join("scripts/check_quant_vs_ort.py"))
            .args([&q, &sample, &out])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{format}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let cmp = ok(&[
        "compare",
        p(&float),
        p(&dir.join("resnet8.qdq.onnx")),
        "--data",
        p(&ex.join("calib.npz")),
        "--samples",
        "3",
        "--threads",
        "1",
    ]);
    assert!(cmp.contains("worst first"), "{cmp}");
}

fn assert_error(args: &[&str], needles: &[&str]) {
    let out = quench(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && !stderr.contains("panicked"),
        "{args:?}: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: error lacks '{n}': {stderr}");
    }
}

#[test]
fn bad_calibration_data_and_configs_are_named() {
    let ex = repo().join("examples/mnist");
    let model = ex.join("bn_cnn.onnx");
    let dir = temp_dir("quantize-bad");
    let out = dir.join("q.onnx");
    let calib = |name: &str, t: Tensor| {
        let f = dir.join(format!("{name}.npz"));
        quench_data::write_npz(&f, &[(name.to_string(), t)]).unwrap();
        f
    };
    let base = ["quantize", p(&model), "-o", p(&out), "--calib"];
    let run = |data: &Path, extra: &[&str], needles: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.push(p(data));
        args.extend_from_slice(extra);
        assert_error(&args, needles);
    };
    run(
        &calib(
            "image",
            Tensor::zeros(quench_ir::DType::F32, vec![2, 1, 28, 28]).unwrap(),
        ),
        &[],
        &["'input'"],
    );
    let wrong_shape = dir.join("shape.npz");
    quench_data::write_npz(
        &wrong_shape,
        &[(
            "input".into(),
            Tensor::zeros(quench_ir::DType::F32, vec![2, 3, 28, 28]).unwrap(),
        )],
    )
    .unwrap();
    run(&wrong_shape, &[], &["'input'", "shape"]);
    let wrong_dtype = dir.join("dtype.npz");
    quench_data::write_npz(
        &wrong_dtype,
        &[(
            "input".into(),
            Tensor::zeros(quench_ir::DType::I64, vec![2, 1, 28, 28]).unwrap(),
        )],
    )
    .unwrap();
    run(&wrong_dtype, &[], &["'input'", "int64"]);
    let mut v = vec![0f32; 2 * 28 * 28];
    v[5] = f32::NAN;
    let nan = dir.join("nan.npz");
    quench_data::write_npz(
        &nan,
        &[(
            "input".into(),
            Tensor::from_vec(vec![2, 1, 28, 28], v).unwrap(),
        )],
    )
    .unwrap();
    run(&nan, &[], &["NaN"]);
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    run(&empty, &[], &["no .npy/.npz samples"]);
    let good = ex.join("calib.npz");
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "calibrater = \"entropy\"\n").unwrap();
    run(&good, &["--config", p(&cfg)], &["calibrater"]);
    std::fs::write(&cfg, "skip = [\"no_such_node\"]\n").unwrap();
    run(&good, &["--config", p(&cfg)], &["no_such_node"]);
    run(&good, &["--calibrator", "kl"], &["kl"]);
    assert_error(
        &["quantize", p(&model), "-o", p(&model), "--calib", p(&good)],
        &["refusing"],
    );
}

#[test]
fn config_template_is_valid_and_used() {
    let dir = temp_dir("quantize-config");
    let template = ok(&["config", "init"]);
    let cfg = dir.join("quench.toml");
    std::fs::write(
        &cfg,
        template.replace("calibrator = \"minmax\"", "calibrator = \"percentile\""),
    )
    .unwrap();
    let ex = repo().join("examples/mnist");
    let summary = ok(&[
        "quantize",
        p(&ex.join("bn_cnn.onnx")),
        "-o",
        p(&dir.join("q.onnx")),
        "--calib",
        p(&ex.join("calib.npz")),
        "--config",
        p(&cfg),
        "--samples",
        "20",
    ]);
    assert!(summary.contains("Percentile"), "{summary}");
}

#[test]
fn fallback_keeps_the_costliest_nodes_float_and_says_so() {
    let dir = temp_dir("quantize-fallback");
    let ex = repo().join("examples/mnist");
    let q = dir.join("q.onnx");
    // An unreachable target, 2 units at most; samples are counted in whole batches (8 -> 10).
    let summary = ok(&[
        "quantize",
        p(&ex.join("bn_cnn.onnx")),
        "-o",
        p(&q),
        "--calib",
        p(&ex.join("calib.npz")),
        "--samples",
        "20",
        "--batch",
        "10",
        "--fallback-sqnr",
        "200",
        "--fallback-max-nodes",
        "2",
        "--threads",
        "1",
    ]);
    let line = summary
        .lines()
        .find(|l| l.starts_with("fallback: output SQNR"))
        .unwrap_or_else(|| panic!("no fallback line: {summary}"));
    assert!(
        line.contains("target 200.0") && line.contains("on 10 samples"),
        "{line}"
    );
    let kept = line.split("kept float: ").nth(1).unwrap();
    assert!(kept.matches("dB alone").count() <= 2, "{line}");
    // The written model still evaluates at float accuracy within a point.
    let float_top1 = top1(&ok(&[
        "eval",
        p(&ex.join("bn_cnn.onnx")),
        "--data",
        p(&ex.join("test.npz")),
    ]));
    let q_top1 = top1(&ok(&["eval", p(&q), "--data", p(&ex.join("test.npz"))]));
    assert!(q_top1 >= float_top1 - 1.0, "{q_top1} vs {float_top1}");
    assert_error(
        &[
            "quantize",
            p(&ex.join("bn_cnn.onnx")),
            "-o",
            p(&dir.join("x.onnx")),
            "--calib",
            p(&ex.join("calib.npz")),
            "--fallback-sqnr",
            "NaN",
        ],
        &["--fallback-sqnr"],
    );
}

#[test]
fn bias_correction_is_on_by_default_and_can_be_turned_off() {
    let dir = temp_dir("quantize-bias-correction");
    let ex = repo().join("examples/mnist");
    let args = |out: &Path, extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "quantize",
            p(&ex.join("resnet8.onnx")),
            "-o",
            p(out),
            "--calib",
            p(&ex.join("calib.npz")),
            "--samples",
            "20",
            "--batch",
            "10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |out: &Path, extra: &[&'static str]| {
        let a = args(out, extra);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (on, off) = (dir.join("on.onnx"), dir.join("off.onnx"));
    let summary = run(&on, &[]);
    let line = summary
        .lines()
        .find(|l| l.starts_with("bias correction:"))
        .unwrap_or_else(|| panic!("no bias correction line: {summary}"));
    let shifted: usize = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(shifted >= 5, "{line}");
    let summary = run(&off, &["--no-bias-correction"]);
    assert!(!summary.contains("bias correction:"), "{summary}");
    // Only the int32 biases differ; the corrected model is as accurate.
    assert_ne!(std::fs::read(&on).unwrap(), std::fs::read(&off).unwrap());
    let t = |m: &Path| top1(&ok(&["eval", p(m), "--data", p(&ex.join("test.npz"))]));
    assert!(t(&on) >= t(&off) - 0.2, "{} vs {}", t(&on), t(&off));
    // The config key, overridden by the flag.
    let cfg = dir.join("q.toml");
    std::fs::write(&cfg, "bias_correction = false\n").unwrap();
    for (flag, expect) in [(None, false), (Some("--bias-correction"), true)] {
        let mut a = args(&dir.join("cfg.onnx"), &[]);
        a.extend(["--config".to_string(), p(&cfg).to_string()]);
        a.extend(flag.map(String::from));
        let summary = ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(summary.contains("bias correction:"), expect, "{summary}");
    }
    assert_error(
        &[
            "quantize",
            p(&ex.join("resnet8.onnx")),
            "-o",
            p(&dir.join("d.onnx")),
            "--mode",
            "dynamic",
            "--bias-correction",
        ],
        &["--bias-correction"],
    );
}
