//! `quench bench`: latency and throughput of a model on random inputs,
//! optionally per node.

use anyhow::{Context, Result, bail};
use quench_ir::{DType, Dim, Tensor, ValueType};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Threads to use (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Size of a symbolic leading (batch) dimension.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// A whole input shape as NAME=1x3x224x224 (repeatable), for symbolic dims.
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    shape: Vec<String>,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed runs first (caches, lazy allocations).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also report the median time of each node, slowest first.
    #[arg(long = "per-layer")]
    per_layer: bool,
}

/// `NAME=AxBxC` → (name, dims).
fn parse_shape(spec: &str) -> Result<(String, Vec<usize>)> {
    let (name, dims) = spec
        .split_once('=')
        .with_context(|| format!("--shape '{spec}': expected NAME=DIMS such as x=1x3x224x224"))?;
    let dims = dims
        .split(['x', 'X', ','])
        .map(|d| d.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--shape '{spec}': dims must be numbers separated by 'x'"))?;
    Ok((name.to_string(), dims))
}

/// The concrete shape of one input: `--shape` if given, else its declared
/// dims with a symbolic first dim taken as `batch`.
fn input_shape(name: &str, declared: Option<&[Dim]>, batch: usize) -> Result<Vec<usize>> {
    let Some(dims) = declared else {
        bail!("input '{name}' has no declared shape; give it with --shape {name}=DIMS");
    };
    dims.iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Fixed(v) => Ok(*v as usize),
            _ if i == 0 => Ok(batch),
            other => bail!(
                "input '{name}' has symbolic dimension {i} ('{other}'); give the whole shape with --shape {name}=DIMS"
            ),
        })
        .collect()
}

/// Deterministic pseudo-random contents for a dtype.
fn random_tensor(name: &str, dtype: DType, shape: Vec<usize>, seed: u64) -> Result<Tensor> {
    let n = quench_ir::tensor::checked_numel(&shape)?;
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    Ok(match dtype {
        DType::F32 => {
            let v = (0..n).map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0);
            Tensor::from_vec(shape, v.collect::<Vec<f32>>())?
        }
        DType::F64 => {
            let v = (0..n).map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0);
            Tensor::from_vec(shape, v.collect::<Vec<f64>>())?
        }
        DType::U8 => Tensor::from_vec(shape, (0..n).map(|_| next() as u8).collect::<Vec<_>>())?,
        DType::I8 => Tensor::from_vec(shape, (0..n).map(|_| next() as i8).collect::<Vec<_>>())?,
        // Integer inputs are often indices or lengths: zeros are valid for most.
        DType::I32 => Tensor::from_vec(shape, vec![0i32; n])?,
        DType::I64 => Tensor::from_vec(shape, vec![0i64; n])?,
        DType::Bool => Tensor::from_vec(shape, vec![false; n])?,
        other => bail!("input '{name}' has type {other}, which bench cannot generate"),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

pub fn run(args: Args) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let model = super::load_model(&args.model)?;
    let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
    for spec in &args.shape {
        let (n, d) = parse_shape(spec)?;
        shapes.insert(n, d);
    }
    let mut feeds = Vec::new();
    for (i, vi) in model.graph.runtime_inputs().enumerate() {
        let Some(ValueType::Tensor { dtype, shape }) = &vi.ty else {
            bail!(
                "input '{}' is not a tensor; bench feeds tensors only",
                vi.name
            );
        };
        let dims = match shapes.remove(&vi.name) {
            Some(d) => d,
            None => input_shape(&vi.name, shape.as_deref(), args.batch)?,
        };
        feeds.push((
            vi.name.clone(),
            random_tensor(&vi.name, *dtype, dims, 0x5eed + i as u64)?,
        ));
    }
    if let Some(name) = shapes.keys().next() {
        bail!("--shape names '{name}', which is not an input of the model");
    }
    let session = quench_runtime::Session::from_model(model, args.threads)
        .with_context(|| format!("cannot prepare {}", args.model.display()))?;
    for _ in 0..args.warmup {
        session
            .run(feeds.clone())
            .with_context(|| format!("running {}", args.model.display()))?;
    }
    let mut times = Vec::with_capacity(args.runs);
    let mut cpu_times = Vec::with_capacity(args.runs);
    // Per node (in first-seen order): op type and one time per run.
    let mut nodes: Vec<(String, String, Vec<Duration>)> = Vec::new();
    // Keyed by the node's address in the plan: names may be empty or repeated.
    let mut index: HashMap<usize, usize> = HashMap::new();
    for _ in 0..args.runs {
        let mut record = |node: &quench_ir::Node, d: Duration| {
            let key = node as *const quench_ir::Node as usize;
            let i = *index.entry(key).or_insert_with(|| {
                let name = if node.name.is_empty() {
                    format!("(unnamed #{})", nodes.len())
                } else {
                    node.name.clone()
                };
                nodes.push((name, node.op_type.clone(), Vec::new()));
                nodes.len() - 1
            });
            nodes[i].2.push(d);
        };
        let mut hooks = quench_runtime::RunHooks::default();
        if args.per_layer {
            hooks.on_node_time = Some(&mut record);
        }
        let feed = feeds.clone();
        let (start, cpu_start) = (Instant::now(), process_cpu_ms());
        session
            .run_with(feed, &mut hooks)
            .with_context(|| format!("running {}", args.model.display()))?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        if let (Some(a), Some(b)) = (cpu_start, process_cpu_ms()) {
            cpu_times.push(b - a);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    cpu_times.sort_by(|a, b| a.total_cmp(b));
    let cpu_median = (!cpu_times.is_empty()).then(|| percentile(&cpu_times, 50.0));
    let median = percentile(&times, 50.0);
    let p90 = percentile(&times, 90.0);
    let throughput = args.batch as f64 * 1e3 / median;
    let mut layers: Vec<(String, String, f64)> = nodes
        .into_iter()
        .map(|(name, op, mut ds)| {
            ds.sort();
            (name, op, ds[ds.len() / 2].as_secs_f64() * 1e3)
        })
        .collect();
    layers.sort_by(|a, b| b.2.total_cmp(&a.2));
    if args.json {
        let mut j = serde_json::json!({
            "model": args.model.display().to_string(),
            "threads": session.threads(),
            "batch": args.batch,
            "runs": args.runs,
            "warmup": args.warmup,
            "median_ms": median,
            "p90_ms": p90,
            "min_ms": times[0],
            "max_ms": times[times.len() - 1],
            "throughput_per_s": throughput,
            "cpu_median_ms": cpu_median,
        });
        if args.per_layer {
            j["layers"] = layers
                .iter()
                .map(|(n, op, ms)| serde_json::json!({"name": n, "op_type": op, "median_ms": ms}))
                .collect();
        }
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!(
        "{}: {} run(s) after {} warm-up, {} thread(s), batch {}",
        args.model.display(),
        args.runs,
        args.warmup,
        session.threads(),
        args.batch
    );
    println!(
        "latency: median {median:.3} ms, p90 {p90:.3} ms (min {:.3}, max {:.3})",
        times[0],
        times[times.len() - 1]
    );
    if let Some(c) = cpu_median {
        println!(
            "process CPU time per run: median {c:.3} ms (steadier than wall time on a shared machine)"
        );
    }
    println!("throughput: {throughput:.1} inferences/s");
    if args.per_layer {
        let total: f64 = layers.iter().map(|l| l.2).sum();
        println!("\n{:>10} {:>6}  {:<22} node", "median ms", "%", "op");
        for (name, op, ms) in &layers {
            println!(
                "{ms:>10.3} {:>5.1}%  {op:<22} {name}",
                100.0 * ms / total.max(1e-12)
            );
        }
    }
    Ok(())
}

/// CPU time of the whole process (all threads) in ms: unlike wall time, it
/// does not count the time other processes hold the cores.
fn process_cpu_ms() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // Safety: clock_gettime writes one timespec we own.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        (rc == 0).then(|| ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6)
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_symbolic_dims_need_a_shape() {
        assert_eq!(parse_shape("x=1x3x2").unwrap(), ("x".into(), vec![1, 3, 2]));
        assert!(parse_shape("x=1xq").is_err());
        let dims = [Dim::Symbol("n".into()), Dim::Fixed(3)];
        assert_eq!(input_shape("x", Some(&dims), 4).unwrap(), vec![4, 3]);
        let dims = [Dim::Fixed(1), Dim::Symbol("h".into())];
        let err = input_shape("x", Some(&dims), 1).unwrap_err().to_string();
        assert!(err.contains("--shape x="), "{err}");
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
    }
}
