//! `quench compare`: per-tensor float vs quantized error, worst first — the tool
//! for finding where accuracy is lost (ORT's qdq_loss_debug, PyTorch's numeric suite).
//!
//! A float tensor `t` is matched in the quantized model with the output of the
//! DequantizeLinear that reads `QuantizeLinear(t)` (what the int8 model really
//! carries), or with a tensor of the same name.

use anyhow::{Context, Result};
use quench_data::Dataset;
use quench_ir::{Model, Tensor};
use quench_runtime::{RunHooks, Session};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(clap::Args)]
pub struct Args {
    /// The float model.
    float: PathBuf,
    /// The quantized model (QDQ or integer-only) made from it.
    quant: PathBuf,
    /// Samples: an .npz named after the model inputs, or a folder of samples.
    #[arg(long)]
    data: PathBuf,
    /// Use only the first N samples.
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// Rows to print (worst first).
    #[arg(long, default_value_t = 25)]
    top: usize,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Running sums for SQNR, cosine and max abs error of one tensor.
#[derive(Default, Clone)]
struct Stats {
    signal: f64,
    noise: f64,
    dot: f64,
    q_norm: f64,
    max_abs: f64,
    elements: usize,
}

impl Stats {
    fn add(&mut self, f: &[f32], q: &[f32]) {
        for (&a, &b) in f.iter().zip(q) {
            let (a, b) = (a as f64, b as f64);
            self.signal += a * a;
            self.noise += (a - b) * (a - b);
            self.dot += a * b;
            self.q_norm += b * b;
            self.max_abs = self.max_abs.max((a - b).abs());
        }
        self.elements += f.len();
    }

    fn sqnr(&self) -> f64 {
        if self.noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.noise).log10()
        }
    }

    fn cosine(&self) -> f64 {
        let d = (self.signal * self.q_norm).sqrt();
        if d == 0.0 { 1.0 } else { self.dot / d }
    }
}

/// Float tensor name → tensor in the quantized model that represents it.
fn matches(float: &Model, quant: &Model) -> BTreeMap<String, String> {
    let mut q_of: HashMap<&str, &str> = HashMap::new();
    for n in &quant.graph.nodes {
        if n.op_type == "QuantizeLinear"
            && let (Some(i), Some(o)) = (n.input(0), n.outputs.first())
        {
            q_of.insert(o.as_str(), i);
        }
    }
    let mut dq_of: HashMap<&str, &str> = HashMap::new();
    for n in &quant.graph.nodes {
        if n.op_type == "DequantizeLinear"
            && let (Some(i), Some(o)) = (n.input(0), n.outputs.first())
            && let Some(src) = q_of.get(i)
        {
            dq_of.entry(src).or_insert(o.as_str());
        }
    }
    let q_values: std::collections::HashSet<&str> = quant
        .graph
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().map(String::as_str))
        .collect();
    let mut out = BTreeMap::new();
    for n in &float.graph.nodes {
        for o in &n.outputs {
            if let Some(dq) = dq_of.get(o.as_str()) {
                out.insert(o.clone(), dq.to_string());
            } else if q_values.contains(o.as_str()) {
                out.insert(o.clone(), o.clone());
            }
        }
    }
    out
}

/// Runs `session` and keeps the float values named in `wanted`.
fn capture(
    session: &Session,
    batch: Vec<(String, Tensor)>,
    wanted: &HashMap<&str, ()>,
) -> Result<HashMap<String, Vec<f32>>> {
    let seen = Mutex::new(HashMap::new());
    let mut hook = |name: &str, t: &Tensor| {
        if wanted.contains_key(name)
            && let Ok(v) = t.to_f32_vec()
            && let Ok(mut s) = seen.lock()
        {
            s.insert(name.to_string(), v);
        }
    };
    let mut hooks = RunHooks {
        on_value: Some(&mut hook),
        ..Default::default()
    };
    session.run_with(batch, &mut hooks)?;
    Ok(seen.into_inner().unwrap_or_default())
}

pub fn run(args: Args) -> Result<()> {
    let float = super::load_model(&args.float)?;
    let quant = super::load_model(&args.quant)?;
    let fs = Session::new(&float, args.threads)
        .with_context(|| format!("cannot prepare {}", args.float.display()))?;
    let qs = Session::new(&quant, args.threads)
        .with_context(|| format!("cannot prepare {}", args.quant.display()))?;
    let pairs = matches(&float, &quant);
    let f_wanted: HashMap<&str, ()> = pairs.keys().map(|k| (k.as_str(), ())).collect();
    let q_wanted: HashMap<&str, ()> = pairs.values().map(|k| (k.as_str(), ())).collect();
    let data = Dataset::open(&args.data, &super::eval::input_specs(&float), None)?;
    let n = args.samples.min(data.len());
    let mut stats: BTreeMap<String, Stats> = BTreeMap::new();
    for i in 0..n {
        let batch = data.batch(i, 1)?;
        let fv = capture(&fs, batch.clone(), &f_wanted)?;
        let qv = capture(&qs, batch, &q_wanted)?;
        for (f_name, q_name) in &pairs {
            if let (Some(a), Some(b)) = (fv.get(f_name), qv.get(q_name))
                && a.len() == b.len()
            {
                stats.entry(f_name.clone()).or_default().add(a, b);
            }
        }
    }
    let mut rows: Vec<(String, Stats)> = stats.into_iter().collect();
    rows.sort_by(|a, b| a.1.sqnr().total_cmp(&b.1.sqnr()));
    let producer: HashMap<&str, String> = float
        .graph
        .nodes
        .iter()
        .flat_map(|n| {
            n.outputs
                .iter()
                .map(move |o| (o.as_str(), format!("{} ({})", n.label(), n.op_type)))
        })
        .collect();
    if args.json {
        let j: Vec<_> = rows
            .iter()
            .map(|(name, s)| {
                json!({"tensor": name, "node": producer.get(name.as_str()), "quantized_tensor": pairs[name],
                    "sqnr_db": if s.sqnr().is_finite() { json!(s.sqnr()) } else { json!("inf") },
                    "cosine": s.cosine(), "max_abs": s.max_abs, "elements": s.elements})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"samples": n, "tensors": j}))?
        );
        return Ok(());
    }
    println!(
        "{} matched tensors over {n} sample(s), worst first:",
        rows.len()
    );
    println!(
        "{:>9} {:>9} {:>11}  tensor  <- node",
        "SQNR dB", "cosine", "max |err|"
    );
    for (name, s) in rows.iter().take(args.top) {
        println!(
            "{:>9.2} {:>9.5} {:>11.4e}  {name}  <- {}",
            s.sqnr(),
            s.cosine(),
            s.max_abs,
            producer
                .get(name.as_str())
                .map(String::as_str)
                .unwrap_or("?")
        );
    }
    Ok(())
}
