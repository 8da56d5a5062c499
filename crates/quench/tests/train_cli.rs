//! `quench train` end to end on the bundled digits set.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("quench-train-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn train(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quench"));
    c.arg("train")
        .arg("--data")
        .arg(root().join("data/digits/digits.csv.gz"))
        .args(["--val", "split:30", "--threads", "2", "--seed", "1"])
        .args(args);
    c
}

#[test]
fn trains_a_zoo_model_and_writes_onnx_and_log() {
    let d = tmp("zoo");
    let (out, log) = (d.join("m.onnx"), d.join("log.json"));
    let o = train(&[
        "--zoo",
        "lenet",
        "--width",
        "0.5",
        "--epochs",
        "2",
        "--crop-pad",
        "1",
    ])
    .arg("-o")
    .arg(&out)
    .arg("--log")
    .arg(&log)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    let epochs = v["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    let val = |e: usize, k: &str| epochs[e][k].as_f64().unwrap();
    assert!(
        val(1, "val_loss") < val(0, "val_loss") && val(1, "val_acc") > 0.6,
        "{v}"
    );
    let m = quench_onnx::load_model(&out).unwrap();
    assert!(
        m.graph
            .nodes
            .iter()
            .any(|n| n.op_type == "BatchNormalization")
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn kill_then_resume_ends_like_an_uninterrupted_run() {
    let d = tmp("resume");
    let args = [
        "--zoo", "resnet8", "--width", "0.5", "--epochs", "2", "--batch", "16",
    ];
    let full = d.join("full.onnx");
    let o = train(&args).arg("-o").arg(&full).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let ck = d.join("ck");
    let part = d.join("part.onnx");
    let mut child = train(&args)
        .arg("-o")
        .arg(&part)
        .arg("--checkpoint-dir")
        .arg(&ck)
        .args(["--checkpoint-every", "7"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let file = ck.join("checkpoint.safetensors");
    let t0 = std::time::Instant::now();
    while !file.exists() && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(file.exists());
    let o = train(&args)
        .arg("-o")
        .arg(&part)
        .arg("--checkpoint-dir")
        .arg(&ck)
        .arg("--resume")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming at epoch"), "{err}");
    assert_eq!(std::fs::read(&full).unwrap(), std::fs::read(&part).unwrap());
    // No temp file is left next to the checkpoint (the resumed run removes one
    // the kill may have left mid-write).
    assert_eq!(std::fs::read_dir(&ck).unwrap().count(), 1);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn fine_tunes_a_pytorch_export_and_its_loss_falls() {
    let d = tmp("ft");
    let log = d.join("log.json");
    let o = train(&[
        "--epochs",
        "1",
        "--input-size",
        "28",
        "--lr",
        "1e-3",
        "--crop-pad",
        "0",
    ])
    .arg("--model")
    .arg(root().join("examples/mnist/bn_cnn.onnx"))
    .arg("-o")
    .arg(d.join("ft.onnx"))
    .arg("--log")
    .arg(&log)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    let before = v["initial"]["val_loss"].as_f64().unwrap();
    let after = v["epochs"][0]["val_loss"].as_f64().unwrap();
    assert!(after < before * 0.5, "{before} -> {after}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn nan_loss_stops_with_the_step() {
    let d = tmp("nan");
    let o = train(&[
        "--zoo",
        "mlp",
        "--epochs",
        "1",
        "--optimizer",
        "sgd",
        "--lr",
        "1e30",
        "--schedule",
        "constant",
    ])
    .arg("-o")
    .arg(d.join("m.onnx"))
    .output()
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("at step") && err.contains("loss is"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn trains_the_row_lstm_and_quench_and_onnxruntime_run_it() {
    let d = tmp("lstm");
    let (out, log) = (d.join("lstm.onnx"), d.join("log.json"));
    let o = train(&[
        "--zoo", "lstm", "--width", "0.25", "--epochs", "2", "--batch", "32", "--lr", "1e-2",
    ])
    .arg("-o")
    .arg(&out)
    .arg("--log")
    .arg(&log)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    assert_eq!(v["config"]["crop_pad"], 0, "{v}");
    let val = |e: usize, k: &str| v["epochs"][e][k].as_f64().unwrap();
    // Chance is ln 10 = 2.30.
    assert!(
        val(1, "val_loss") < val(0, "val_loss") && val(1, "val_loss") < 1.5,
        "{v}"
    );
    let m = quench_onnx::load_model(&out).unwrap();
    assert!(m.graph.nodes.iter().any(|n| n.op_type == "LSTM"));

    // `quench run` runs the saved model, and ONNX Runtime agrees with it.
    let x: Vec<f32> = (0..3 * 64)
        .map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0)
        .collect();
    let x = quench_ir::Tensor::from_vec(vec![3, 1, 8, 8], x).unwrap();
    let inputs = d.join("x.npz");
    quench_data::write_npz(&inputs, &[("input".into(), x)]).unwrap();
    let res = d.join("res");
    let o = common::quench(&[
        "run",
        out.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "-o",
        res.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let logits = quench_data::read_npy(&res.join("logits.npy")).unwrap();
    assert_eq!(logits.shape(), &[3, 10]);
    if let Some(cache) = common::cache_dir("venv/bin/python") {
        let check = Command::new(common::python(&cache))
            .arg(root().join("scripts/dynamic/check_ort_run.py"))
            .args([&out, &inputs, &res])
            .args(["--atol", "1e-4"])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn fine_tunes_the_pytorch_row_lstm_export_and_runtimes_run_it() {
    let d = tmp("lstm-export");
    let (out, log) = (d.join("ft.onnx"), d.join("log.json"));
    // The export takes [N, 28, 28] and builds its initial states with
    // Shape/Gather/Concat/ConstantOfShape; the data is NCHW [N, 1, 28, 28].
    let o = Command::new(env!("CARGO_BIN_EXE_quench"))
        .arg("train")
        .arg("--model")
        .arg(root().join("examples/mnist/lstm_rows.onnx"))
        .arg("--data")
        .arg(root().join("data/mnist5k/mnist_5k.csv.gz"))
        .args(["--val", "split:100", "--threads", "2", "--seed", "1"])
        .args(["--epochs", "1", "--batch", "64", "--lr", "1e-3"])
        .args(["--norm", "0.1307,0.3081"])
        .arg("-o")
        .arg(&out)
        .arg("--log")
        .arg(&log)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.matches("reshaped to [N, 28, 28]").count(), 1, "{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    let before = v["initial"]["val_loss"].as_f64().unwrap();
    let after = v["epochs"][0]["val_loss"].as_f64().unwrap();
    assert!(after < before, "{before} -> {after}");
    let m = quench_onnx::load_model(&out).unwrap();
    assert!(m.graph.nodes.iter().any(|n| n.op_type == "ConstantOfShape"));

    let x: Vec<f32> = (0..3 * 28 * 28)
        .map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0)
        .collect();
    let x = quench_ir::Tensor::from_vec(vec![3, 28, 28], x).unwrap();
    let inputs = d.join("x.npz");
    quench_data::write_npz(&inputs, &[("input".into(), x)]).unwrap();
    let res = d.join("res");
    let o = common::quench(&[
        "run",
        out.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "-o",
        res.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let logits = quench_data::read_npy(&res.join("logits.npy")).unwrap();
    assert_eq!(logits.shape(), &[3, 10]);
    if let Some(cache) = common::cache_dir("venv/bin/python") {
        let check = Command::new(common::python(&cache))
            .arg(root().join("scripts/dynamic/check_ort_run.py"))
            .args([&out, &inputs, &res])
            .args(["--atol", "1e-4"])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_batch_that_cannot_fit_the_model_input_names_both_shapes() {
    let d = tmp("lstm-shape");
    let o = train(&["--epochs", "1"])
        .arg("--model")
        .arg(root().join("examples/mnist/lstm_rows.onnx"))
        .arg("-o")
        .arg(d.join("ft.onnx"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("input 'input' is declared [batch, 28, 28]") && err.contains("[N, 1, 8, 8]"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}
