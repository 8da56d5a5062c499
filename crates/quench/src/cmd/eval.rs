//! `quench eval`: top-1/top-5 accuracy on labelled data, and agreement with a float reference.

use anyhow::{Context, Result, bail};
use quench_data::{Dataset, InputSpec};
use quench_ir::{Dim, Model, Tensor};
use quench_runtime::Session;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The model to evaluate (float, QDQ or integer-only).
    model: PathBuf,
    /// An .npz with arrays named after the model inputs (first axis = samples) and the labels.
    #[arg(long)]
    data: PathBuf,
    /// Name of the label array in DATA (integer class ids).
    #[arg(long, default_value = "label")]
    labels: String,
    /// Float model to compare with: agreement of top-1 and output SQNR.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Evaluate only the first N samples.
    #[arg(long)]
    samples: Option<usize>,
    /// Samples per run.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The model's inputs as dataset specs (symbolic dims are free).
pub fn input_specs(model: &Model) -> Vec<InputSpec> {
    model
        .graph
        .runtime_inputs()
        .map(|v| InputSpec {
            name: v.name.clone(),
            dtype: v.dtype(),
            shape: v.shape().map(|s| {
                s.iter()
                    .map(|d| {
                        if let Dim::Fixed(n) = d {
                            Some(*n as usize)
                        } else {
                            None
                        }
                    })
                    .collect()
            }),
        })
        .collect()
}

/// Rows of the first output as class scores: `[N, C]` (or `[N, C, 1, ...]`).
fn rows(t: &Tensor) -> Result<(usize, Vec<f32>)> {
    let v = t
        .to_f32_vec()
        .context("the model's first output is not float scores")?;
    let n = *t
        .shape()
        .first()
        .context("the model's first output is a scalar")?;
    if n == 0 || v.len() % n != 0 {
        bail!(
            "cannot read class scores from an output of shape {:?}",
            t.shape()
        );
    }
    Ok((v.len() / n, v))
}

fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn read_labels(path: &Path, key: &str) -> Result<Vec<i64>> {
    let arrays = quench_data::read_npz(path)?;
    let names: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
    let (_, t) = arrays.iter().find(|(k, _)| k == key).with_context(|| {
        format!(
            "{}: no label array '{key}' (arrays: {})",
            path.display(),
            names.join(", ")
        )
    })?;
    t.to_i64_vec()
        .with_context(|| format!("{}: labels '{key}' must be integers", path.display()))
}

pub fn run(args: Args) -> Result<()> {
    let model = super::load_model(&args.model)?;
    let session = Session::new(&model, args.threads)
        .with_context(|| format!("cannot prepare {}", args.model.display()))?;
    let reference = match &args.reference {
        Some(p) => {
            let m = super::load_model(p)?;
            Some(
                Session::from_model(m, args.threads)
                    .with_context(|| format!("cannot prepare {}", p.display()))?,
            )
        }
        None => None,
    };
    let data = Dataset::open(&args.data, &input_specs(&model), None)?;
    let labels = read_labels(&args.data, &args.labels)?;
    let n = args.samples.unwrap_or(data.len()).min(data.len());
    if labels.len() < n {
        bail!(
            "{}: {} labels for {n} samples",
            args.data.display(),
            labels.len()
        );
    }
    let (mut top1, mut top5, mut agree, mut sig, mut noise) = (0usize, 0usize, 0usize, 0f64, 0f64);
    let mut classes = 0;
    let mut start = 0;
    let mut run_times = Vec::new();
    while start < n {
        let b = args.batch.max(1).min(n - start);
        let batch = data.batch(start, b)?;
        let t0 = std::time::Instant::now();
        let out = session
            .run(batch.clone())
            .with_context(|| format!("running {}", args.model.display()))?;
        run_times.push(t0.elapsed().as_secs_f64() * 1e3 / b as f64);
        let (c, scores) = rows(&out[0].1)?;
        classes = c;
        let ref_scores = match &reference {
            Some(r) => Some(rows(&r.run(batch).context("running the reference model")?[0].1)?.1),
            None => None,
        };
        for i in 0..b {
            let row = &scores[i * c..(i + 1) * c];
            let label = labels[start + i];
            let best = top_k(row, 5.min(c));
            top1 += (best[0] as i64 == label) as usize;
            top5 += best.iter().any(|&k| k as i64 == label) as usize;
            if let Some(rs) = &ref_scores {
                let rrow = &rs[i * c..(i + 1) * c];
                agree += (top_k(rrow, 1)[0] == best[0]) as usize;
                for (q, f) in row.iter().zip(rrow) {
                    sig += (*f as f64).powi(2);
                    noise += (*q as f64 - *f as f64).powi(2);
                }
            }
        }
        start += b;
    }
    let pct = |k: usize| 100.0 * k as f64 / n as f64;
    run_times.sort_by(f64::total_cmp);
    let latency = run_times.get(run_times.len() / 2).copied().unwrap_or(0.0);
    let sqnr = if noise > 0.0 {
        10.0 * (sig / noise).log10()
    } else {
        f64::INFINITY
    };
    if args.json {
        let mut j = json!({"model": args.model.display().to_string(), "samples": n, "classes": classes,
            "top1": pct(top1), "top5": pct(top5), "ms_per_sample_median": latency, "batch": args.batch});
        if reference.is_some() {
            j["agreement"] = json!(pct(agree));
            j["output_sqnr_db"] = json!(if sqnr.is_finite() {
                json!(sqnr)
            } else {
                json!("inf")
            });
        }
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("{}: {n} samples, {classes} classes", args.model.display());
        println!(
            "top-1 {:.2}%  top-5 {:.2}%  ({latency:.3} ms per sample, median over runs of {})",
            pct(top1),
            pct(top5),
            args.batch
        );
        if reference.is_some() {
            println!(
                "agreement with reference (top-1) {:.2}%  output SQNR {sqnr:.2} dB",
                pct(agree)
            );
        }
    }
    Ok(())
}
