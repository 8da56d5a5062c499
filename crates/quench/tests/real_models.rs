//! `quench run` on real third-party models matches ONNX Runtime:
//! max |quench - ort| <= 1e-4 * max |ort| and identical argmax along the last axis.

mod common;

use common::{cache_dir, quench, temp_dir};
use quench_data::{read_npy, read_npz};

fn check_model(key: &str) {
    let Some(cache) = cache_dir("inputs/manifest.tsv") else {
        return;
    };
    let manifest = std::fs::read_to_string(cache.join("inputs/manifest.tsv")).unwrap();
    let row: Vec<&str> = manifest
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|r| r[0] == key)
        .unwrap_or_else(|| panic!("{key} not in manifest"));
    let model = cache.join("models").join(row[1]);
    let inputs = cache.join("inputs").join(row[2]);
    let reference = read_npz(&cache.join("inputs").join(row[3])).unwrap();
    let out = temp_dir(key);
    let res = quench(&[
        "run",
        model.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert!(
        res.status.success(),
        "quench run {key} failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    for (name, want) in &reference {
        let file = out.join(format!("{}.npy", quench_data::npy::file_stem_for(name)));
        let got = read_npy(&file).unwrap_or_else(|e| panic!("{key}: output '{name}': {e}"));
        assert_eq!(got.shape(), want.shape(), "{key}: output '{name}' shape");
        let (Ok(g), Ok(w)) = (got.to_f32_vec(), want.to_f32_vec()) else {
            assert_eq!(got, *want, "{key}: output '{name}'");
            continue;
        };
        let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = g
            .iter()
            .zip(&w)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("{key}: {name}: max abs err {err:.3e} (max |ref| {scale:.3e})");
        assert!(
            err <= 1e-4 * scale.max(1e-6),
            "{key}: output '{name}': max abs err {err} > 1e-4 × {scale}"
        );
        // Argmax along the last axis must agree; where the reference itself has
        // a tie (saturated probability maps), either tied position is right.
        let last = *want.shape().last().unwrap_or(&1);
        let tol = 1e-4 * scale.max(1e-6);
        if last > 1 {
            for (row, (gr, wr)) in g.chunks(last).zip(w.chunks(last)).enumerate() {
                let (ga, wa) = (argmax(gr), argmax(wr));
                assert!(
                    ga == wa || (wr[wa] - wr[ga]).abs() <= tol,
                    "{key}: output '{name}' row {row}: argmax {ga} vs reference {wa} ({} vs {})",
                    wr[ga],
                    wr[wa]
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv { (i, x) } else { (bi, bv) }
        })
        .0
}

macro_rules! real_model_tests {
    ($($test:ident => $key:literal),* $(,)?) => {
        $( #[test] fn $test() { check_model($key); } )*
    };
}

real_model_tests! {
    rapidocr_det => "rapidocr_det",
    rapidocr_rec => "rapidocr_rec",
    rapidocr_cls => "rapidocr_cls",
    silero_vad => "silero_vad",
    silero_vad_16k_op15 => "silero_vad_16k_op15",
    silero_vad_16k_sequence => "silero_vad_16k_sequence",
    silero_vad_half => "silero_vad_half",
    silero_vad_op18_ifless => "silero_vad_op18_ifless",
    silero_vad_openvino_16k => "silero_vad_openvino_16k",
    magika => "magika",
    minilm => "minilm",
}
