//! Quench's calibration numerics against ONNX Runtime's quantizer.
//!
//! The fixture is written by `scripts/check_calibrators.py` (ORT's
//! `HistogramCollector`, `compute_scale_zp`, `quantize_nparray`); the data are
//! regenerated here from the same counter-based generator. Run with
//! `--nocapture` to see how many histogram bins each range is off by.

use quench_quant::observer::HistogramConfig;
use quench_quant::qparams::quantize_value;
use quench_quant::{
    Entropy, HistogramMode, HistogramObserver, MinMax, Observer, Percentile, QuantDType,
    compute_scale_zp, quantize_bias,
};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ort_calibration.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn f32_of(v: &Value) -> f32 {
    v.as_f64().expect("number") as f32
}

fn splitmix64(seed: u64, n: usize) -> impl Iterator<Item = u64> {
    (1..=n as u64).map(move |i| {
        let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn uniform(seed: u64, n: usize) -> Vec<f64> {
    splitmix64(seed, n)
        .map(|z| ((z >> 40) as f64 + 0.5) * 2f64.powi(-24))
        .collect()
}

fn gaussian(seed: u64, n: usize) -> Vec<f64> {
    let (u1, u2) = (uniform(seed, n), uniform(seed + 1, n));
    u1.iter()
        .zip(&u2)
        .map(|(&a, &b)| (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos())
        .collect()
}

const KINDS: [&str; 5] = ["gaussian", "laplace", "relu", "outliers", "lognormal"];

/// Mirror of `batch()` in scripts/check_calibrators.py.
fn batch(kind: &str, b: usize, mults: &[f64], n: usize) -> Vec<f32> {
    let k = KINDS.iter().position(|&x| x == kind).expect("known kind") as u64;
    let seed = 1000 * (k + 1) + 10 * b as u64;
    let m = mults[b];
    let x: Vec<f64> = match kind {
        "gaussian" => gaussian(seed, n).iter().map(|g| g * m).collect(),
        "laplace" => uniform(seed, n)
            .iter()
            .map(|&u| {
                let u = u - 0.5;
                let sign = if u > 0.0 { 1.0 } else { -1.0 };
                -sign * (1.0 - 2.0 * u.abs()).ln() * 0.5 * m
            })
            .collect(),
        "relu" => gaussian(seed, n)
            .iter()
            .map(|g| (g * 2.0 * m + 0.5).max(0.0))
            .collect(),
        "outliers" => {
            let mut x: Vec<f64> = gaussian(seed, n).iter().map(|g| g * 0.3 * m).collect();
            let idx: Vec<usize> = (0..n).step_by(1000).collect();
            let u = uniform(seed + 2, idx.len());
            for (j, &i) in idx.iter().enumerate() {
                let sign = if i % 2000 == 0 { 1.0 } else { -1.0 };
                x[i] = (8.0 + 12.0 * u[j]) * sign;
            }
            x
        }
        "lognormal" => gaussian(seed, n)
            .iter()
            .map(|g| (g * 0.5 * m).exp() - 1.0)
            .collect(),
        _ => panic!("unknown kind {kind}"),
    };
    x.iter().map(|&v| v as f32).collect()
}

#[test]
fn calibration_ranges_match_ort() {
    let fx = fixture();
    let n = fx["batch_len"].as_u64().unwrap() as usize;
    let mults: Vec<f64> = fx["mults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut worst: std::collections::BTreeMap<String, f32> = Default::default();
    let mut checked = 0;
    let mut near_ties = 0;
    for case in fx["calibration"].as_array().unwrap() {
        let kind = case["kind"].as_str().unwrap();
        let batches: Vec<Vec<f32>> = (0..mults.len())
            .map(|b| batch(kind, b, &mults, n))
            .collect();
        // The regenerated data are ORT's data.
        for (x, want) in batches.iter().zip(case["batches"].as_array().unwrap()) {
            let lo = x.iter().cloned().fold(f32::INFINITY, f32::min);
            let hi = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = x.iter().map(|&v| v as f64).sum();
            assert_eq!(
                (lo, hi),
                (f32_of(&want["min"]), f32_of(&want["max"])),
                "{kind}"
            );
            let want_sum = want["sum"].as_f64().unwrap();
            assert!(
                (sum - want_sum).abs() <= 1e-9 * want_sum.abs().max(1.0),
                "{kind}: {sum} vs {want_sum}"
            );
        }
        // MinMax: exact, streaming.
        let mut mm = MinMax::new(kind);
        for x in &batches {
            mm.observe(x, &[x.len()]).unwrap();
        }
        let r = mm.range().unwrap();
        let want = case["minmax"].as_array().unwrap();
        assert_eq!(
            (r.min[0], r.max[0]),
            (f32_of(&want[0]), f32_of(&want[1])),
            "{kind} minmax"
        );

        let all: Vec<f32> = batches.concat();
        for res in case["results"].as_array().unwrap() {
            let method = res["method"].as_str().unwrap();
            let symmetric = res["symmetric"].as_bool().unwrap();
            let num_bins = res["num_bins"].as_u64().unwrap() as usize;
            let pct = res["percentile"].as_f64().unwrap();
            let feed = res["feed"].as_str().unwrap();
            let (chooser, mode): (Box<dyn quench_quant::RangeChooser>, _) = match method {
                "entropy" => (Box::new(Entropy::new(128).unwrap()), HistogramMode::Signed),
                _ => {
                    let p = Percentile::new(pct, symmetric).unwrap();
                    let mode = quench_quant::RangeChooser::histogram_mode(&p);
                    (Box::new(p), mode)
                }
            };
            let mut obs =
                HistogramObserver::new(kind, HistogramConfig::new(num_bins, mode), chooser)
                    .unwrap();
            if feed == "streaming" {
                for x in &batches {
                    obs.observe(x, &[x.len()]).unwrap();
                }
            } else {
                obs.observe(&all, &[all.len()]).unwrap();
            }
            let r = obs.range().unwrap();
            let edges = obs.histogram().edges();
            let width = edges[1] - edges[0];
            let want = res["range"].as_array().unwrap();
            let (wlo, whi) = (f32_of(&want[0]), f32_of(&want[1]));
            let off = ((r.min[0] - wlo).abs().max((r.max[0] - whi).abs())) / width;
            let ort_bins = res["ort_bins"].as_u64().unwrap() as usize;
            let label = format!("{method} sym={symmetric} bins={num_bins} p={pct} {feed}");
            eprintln!(
                "{kind:>10} {label:<52} quench [{:.6}, {:.6}] ort [{wlo:.6}, {whi:.6}] off {off:.3} bins (bins {} / ort {ort_bins})",
                r.min[0],
                r.max[0],
                obs.histogram().counts().len(),
            );
            if mode == HistogramMode::Signed {
                assert_eq!(
                    obs.histogram().counts().len(),
                    ort_bins,
                    "{kind} {label}: histogram layout"
                );
            }
            // Entropy and percentile: within two histogram bins of ORT, or, for
            // entropy, a window whose divergence ORT (in f32) finds within
            // 1e-4 of its own minimum: a near-tie that f32 noise decides.
            if off > 2.0 {
                let div = Entropy::new(128)
                    .unwrap()
                    .divergences(obs.histogram())
                    .unwrap();
                let best = (0..div.len()).fold(0, |b, i| if div[i] < div[b] { i } else { b });
                let ties: Vec<u64> = res["near_ties"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                assert!(
                    method == "entropy" && ties.contains(&(best as u64)),
                    "{kind} {label}: off by {off} bins, candidate {best} not among ORT's near-ties {ties:?}"
                );
                near_ties += 1;
            }
            let w = worst.entry(label).or_default();
            *w = w.max(off);
            checked += 1;
        }
    }
    eprintln!("worst offsets (in ORT bins) over {checked} ranges ({near_ties} entropy near-ties):");
    for (k, v) in worst {
        eprintln!("  {k:<52} {v:.3}");
    }
}

#[test]
fn scale_and_zero_point_match_ort_exactly() {
    let fx = fixture();
    let q = &fx["qparams"];
    let pairs: Vec<(f32, f32)> = q["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (f32_of(&p[0]), f32_of(&p[1])))
        .collect();
    let mut n = 0;
    for cfg in q["configs"].as_array().unwrap() {
        let dtype = match cfg["dtype"].as_str().unwrap() {
            "u8" => QuantDType::U8,
            _ => QuantDType::I8,
        };
        let symmetric = cfg["symmetric"].as_bool().unwrap();
        let reduce = cfg["reduce_range"].as_bool().unwrap();
        let mrr = cfg["min_real_range"].as_f64().map(|v| v as f32);
        let (qmin, qmax) = dtype.qrange(symmetric, reduce);
        assert_eq!(
            (qmin as i64, qmax as i64),
            (cfg["qmin"].as_i64().unwrap(), cfg["qmax"].as_i64().unwrap())
        );
        for (&(lo, hi), want) in pairs.iter().zip(cfg["results"].as_array().unwrap()) {
            let (s, z) = compute_scale_zp(lo, hi, qmin, qmax, symmetric, mrr).unwrap();
            let (wz, ws) = (want[0].as_i64().unwrap(), f32_of(&want[1]));
            assert_eq!(
                (s.to_bits(), z as i64),
                (ws.to_bits(), wz),
                "[{lo}, {hi}] {cfg}: quench ({s}, {z}) ort ({ws}, {wz})"
            );
            n += 1;
        }
    }
    eprintln!("{n} (min, max, config) cases identical to ORT");
}

#[test]
fn quantize_and_bias_match_ort_exactly() {
    let fx = fixture();
    let qz = &fx["quantize"];
    let x: Vec<f32> = qz["x"].as_array().unwrap().iter().map(f32_of).collect();
    for case in qz["cases"].as_array().unwrap() {
        let dtype = match case["dtype"].as_str().unwrap() {
            "u8" => QuantDType::U8,
            _ => QuantDType::I8,
        };
        let (qmin, qmax) = dtype.storage_range();
        let scale = f32_of(&case["scale"]);
        let zp = case["zero_point"].as_i64().unwrap() as i32;
        for (v, want) in x.iter().zip(case["q"].as_array().unwrap()) {
            assert_eq!(
                quantize_value(*v, scale, zp, qmin, qmax) as i64,
                want.as_i64().unwrap(),
                "{v} {case}"
            );
        }
    }
    let b = &fx["bias"];
    let bias: Vec<f32> = b["bias"].as_array().unwrap().iter().map(f32_of).collect();
    let ws: Vec<f32> = b["weight_scales"]
        .as_array()
        .unwrap()
        .iter()
        .map(f32_of)
        .collect();
    let (q, qp) = quantize_bias(&bias, f32_of(&b["input_scale"]), &ws).unwrap();
    let want_q: Vec<i32> = b["q"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap() as i32)
        .collect();
    let want_s: Vec<f32> = b["scales"].as_array().unwrap().iter().map(f32_of).collect();
    assert_eq!(q, want_q);
    assert_eq!(qp.scale, want_s);
}

/// With `max_bins == num_bins` (a strictly fixed bin count) a growing range
/// merges bins instead of adding them as ORT does. Percentile stays within two
/// of the coarser bins of ORT; entropy depends on the bin layout (its windows
/// are counted in bins), so it is only reported.
#[test]
fn fixed_bin_count_stays_close_for_percentile() {
    let fx = fixture();
    let n = fx["batch_len"].as_u64().unwrap() as usize;
    let mults: Vec<f64> = fx["mults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for case in fx["calibration"].as_array().unwrap() {
        let kind = case["kind"].as_str().unwrap();
        let batches: Vec<Vec<f32>> = (0..mults.len())
            .map(|b| batch(kind, b, &mults, n))
            .collect();
        for res in case["results"].as_array().unwrap() {
            if res["feed"].as_str() != Some("streaming") {
                continue;
            }
            let method = res["method"].as_str().unwrap();
            let symmetric = res["symmetric"].as_bool().unwrap();
            let num_bins = res["num_bins"].as_u64().unwrap() as usize;
            let pct = res["percentile"].as_f64().unwrap();
            let (chooser, mode): (Box<dyn quench_quant::RangeChooser>, _) = match method {
                "entropy" => (Box::new(Entropy::new(128).unwrap()), HistogramMode::Signed),
                _ => {
                    let p = Percentile::new(pct, symmetric).unwrap();
                    let mode = quench_quant::RangeChooser::histogram_mode(&p);
                    (Box::new(p), mode)
                }
            };
            let cfg = HistogramConfig {
                max_bins: num_bins,
                ..HistogramConfig::new(num_bins, mode)
            };
            let mut obs = HistogramObserver::new(kind, cfg, chooser).unwrap();
            for x in &batches {
                obs.observe(x, &[x.len()]).unwrap();
            }
            assert!(obs.histogram().counts().len() <= num_bins);
            let r = obs.range().unwrap();
            let e = obs.histogram().edges();
            let width = e[1] - e[0];
            let want = res["range"].as_array().unwrap();
            let off = (r.min[0] - f32_of(&want[0]))
                .abs()
                .max((r.max[0] - f32_of(&want[1])).abs())
                / width;
            eprintln!(
                "{kind:>10} {method} sym={symmetric} bins={num_bins} p={pct}: fixed-bins [{:.5}, {:.5}] ort [{:.5}, {:.5}] off {off:.2} (own) bins",
                r.min[0],
                r.max[0],
                f32_of(&want[0]),
                f32_of(&want[1])
            );
            if method == "percentile" {
                assert!(off <= 2.0, "{kind} {method} {symmetric} {pct}: {off}");
            }
        }
    }
}
