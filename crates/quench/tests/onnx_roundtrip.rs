//! Real models survive load -> save -> load unchanged (inline and with external data);
//! the saved files pass `onnx.checker` (full check) and give ONNX Runtime identical outputs.

mod common;

use common::{cache_dir, python, temp_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

fn models(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for sub in std::fs::read_dir(dir).unwrap().flatten() {
        for f in std::fs::read_dir(sub.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().extension().is_some_and(|e| e == "onnx") {
                v.push(f.path());
            }
        }
    }
    v.sort();
    v
}

fn inputs_for(cache: &Path, model: &Path) -> Option<PathBuf> {
    let manifest = std::fs::read_to_string(cache.join("inputs/manifest.tsv")).ok()?;
    manifest
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find_map(|r| {
            (r.len() >= 3 && cache.join("models").join(r[1]) == model)
                .then(|| cache.join("inputs").join(r[2]))
        })
}

#[test]
fn real_models_round_trip() {
    let Some(cache) = cache_dir("inputs/manifest.tsv") else {
        return;
    };
    let out = temp_dir("roundtrip");
    let all = models(&cache.join("models"));
    assert!(
        all.len() >= 5,
        "expected the real models under {}",
        cache.join("models").display()
    );
    for (i, path) in all.iter().enumerate() {
        let model =
            quench_onnx::load_model(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let inline = out.join(format!("m{i}.onnx"));
        quench_onnx::save_model(&model, &inline).unwrap();
        assert_eq!(
            quench_onnx::load_model(&inline).unwrap(),
            model,
            "{}: inline round trip",
            path.display()
        );
        let external = out.join(format!("m{i}_ext.onnx"));
        quench_onnx::save_model_with_external_data(&model, &external, 1024).unwrap();
        assert!(out.join(format!("m{i}_ext.onnx.data")).exists());
        assert_eq!(
            quench_onnx::load_model(&external).unwrap(),
            model,
            "{}: external-data round trip",
            path.display()
        );

        for saved in [&inline, &external] {
            let mut cmd = Command::new(python(&cache));
            cmd.arg(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check_saved_models.py"),
            )
            .arg(path)
            .arg(saved);
            if let Some(npz) = inputs_for(&cache, path) {
                cmd.arg(npz);
            }
            let res = cmd.output().expect("cannot run the venv python");
            assert!(
                res.status.success(),
                "{} saved as {}: {}{}",
                path.display(),
                saved.display(),
                String::from_utf8_lossy(&res.stdout),
                String::from_utf8_lossy(&res.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}
