//! `quench quantize`: static post-training quantization of an ONNX model,
//! or dynamic quantization (`--mode dynamic`: int8 weights, activations
//! quantized at run time, no calibration data).

use anyhow::{Context, Result, bail};
use quench_data::{Dataset, Preprocess};
use quench_quant::{
    Backend, CalibrationKind, DynamicConfig, DynamicFormat, Format, QuantConfig, QuantError,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The float ONNX model.
    model: PathBuf,
    /// Where to write the quantized model (never the input).
    #[arg(short = 'o', long = "output")]
    out: PathBuf,
    /// static (calibrated, needs --calib) or dynamic (weights only ahead of time,
    /// activations quantized at run time; MatMul/Gemm/LSTM; no --calib).
    #[arg(long, default_value = "static")]
    mode: String,
    /// Calibration data: an .npz named after the model inputs (first axis = samples),
    /// a folder of .npy/.npz samples, or an image folder (with --preprocess).
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Dynamic mode: quantize activations per row (token) instead of per tensor.
    #[arg(long)]
    per_token: bool,
    /// Dynamic mode: op types to quantize (default MatMul,Gemm,LSTM,GRU; Conv is opt-in).
    #[arg(long, value_delimiter = ',')]
    op_types: Vec<String>,
    /// TOML config (`quench config init` prints a template); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// x86 (u8/s8), symmetric (s8/s8) or npu (s8, power-of-two scales).
    #[arg(long)]
    backend: Option<String>,
    /// minmax, entropy, percentile or mse.
    #[arg(long)]
    calibrator: Option<String>,
    /// One weight scale per tensor instead of per output channel.
    #[arg(long)]
    per_tensor: bool,
    /// Node names to keep float (comma-separated).
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Static: qdq (QuantizeLinear/DequantizeLinear) or int (integer-only operators).
    /// Dynamic: contrib (com.microsoft DynamicQuantizeMatMul, default) or onnx
    /// (DynamicQuantizeLinear + MatMulInteger, as ONNX Runtime writes it).
    #[arg(long)]
    format: Option<String>,
    /// Calibration samples to use.
    #[arg(long)]
    samples: Option<usize>,
    /// Samples per calibration run.
    #[arg(long)]
    batch: Option<usize>,
    /// Image preprocessing, e.g. `resize=224x224,channels=rgb,scale=1/255,mean=0.485/0.456/0.406,std=0.229/0.224/0.225`.
    #[arg(long)]
    preprocess: Option<String>,
    /// Accuracy-driven fallback: keep float the nodes whose quantization costs the most
    /// output SQNR until the model's output reaches this many dB vs float (off by default).
    #[arg(long, value_name = "DB")]
    fallback_sqnr: Option<f64>,
    /// Shift each Conv/Gemm/MatMul bias by the mean output error its int8 weights
    /// cause on the calibration data (config key `bias_correction`).
    #[arg(long, overrides_with = "no_bias_correction")]
    bias_correction: bool,
    /// Turn bias correction off (overrides the config).
    #[arg(long, overrides_with = "bias_correction")]
    no_bias_correction: bool,
    /// Most nodes (or fusion groups) the fallback may keep float.
    #[arg(long, value_name = "N")]
    fallback_max_nodes: Option<usize>,
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn config(args: &Args) -> Result<QuantConfig> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            QuantConfig::from_toml(&text).with_context(|| format!("{}", p.display()))?
        }
        None => QuantConfig::default(),
    };
    if let Some(b) = &args.backend {
        cfg.backend = Backend::parse(b)?;
    }
    if let Some(c) = &args.calibrator {
        cfg.calibrator = CalibrationKind::parse(c)?;
    }
    if args.per_tensor {
        cfg.per_channel = false;
    }
    cfg.skip
        .extend(args.exclude.iter().filter(|s| !s.is_empty()).cloned());
    if let Some(f) = &args.format {
        cfg.format = match f.as_str() {
            "qdq" => Format::Qdq,
            "int" => Format::Int,
            o => bail!("--format '{o}': expected qdq or int"),
        };
    }
    if let Some(n) = args.samples {
        cfg.samples = n;
    }
    if let Some(b) = args.batch {
        cfg.batch_size = b;
    }
    if let Some(db) = args.fallback_sqnr {
        if !db.is_finite() {
            bail!("--fallback-sqnr {db}: expected a finite number of dB");
        }
        cfg.fallback_sqnr_db = Some(db);
    }
    if let Some(n) = args.fallback_max_nodes {
        cfg.fallback_max_nodes = n;
    }
    if args.bias_correction {
        cfg.bias_correction = true;
    }
    if args.no_bias_correction {
        cfg.bias_correction = false;
    }
    if cfg.samples == 0 || cfg.batch_size == 0 {
        bail!("samples and batch size must be at least 1");
    }
    Ok(cfg)
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

pub fn run(args: Args) -> Result<()> {
    if super::same_path(&args.model, &args.out) {
        bail!(
            "-o {} is the input model: refusing to overwrite it",
            args.out.display()
        );
    }
    match args.mode.as_str() {
        "static" => {}
        "dynamic" => return run_dynamic(&args),
        m => bail!("--mode '{m}': expected static or dynamic"),
    }
    for (set, flag) in [
        (args.per_token, "--per-token"),
        (!args.op_types.is_empty(), "--op-types"),
    ] {
        if set {
            bail!("{flag} is an option of --mode dynamic");
        }
    }
    let Some(calib) = &args.calib else {
        bail!("static quantization needs calibration data (--calib); --mode dynamic needs none");
    };
    let start = Instant::now();
    let cfg = config(&args)?;
    let model = super::load_model(&args.model)?;
    let preprocess = args
        .preprocess
        .as_deref()
        .map(Preprocess::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let data = Dataset::open(calib, &super::eval::input_specs(&model), preprocess)?;
    let n = cfg.samples.min(data.len());
    let batches = n.div_ceil(cfg.batch_size);
    let bar = indicatif::ProgressBar::new(batches as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "calibrating {bar:30} {pos}/{len} batches ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let feed = (0..batches).map(|b| {
        let first = b * cfg.batch_size;
        data.batch(first, cfg.batch_size.min(n - first))
            .map_err(|e| QuantError::Config(e.to_string()))
    });
    let calib_start = Instant::now();
    let q = quench_quant::quantize::quantize_static(&model, &cfg, feed, args.threads, &mut |i| {
        bar.set_position(i as u64)
    })
    .with_context(|| format!("quantizing {}", args.model.display()))?;
    bar.finish_and_clear();
    let calib_time = calib_start.elapsed();
    quench_onnx::save_model(&q.model, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;

    let size_in = std::fs::metadata(&args.model).map(|m| m.len()).unwrap_or(0);
    let size_out = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    println!(
        "quantized {} -> {} ({:?}, backend {:?}, calibrator {:?}, {n} samples in {} batches)",
        args.model.display(),
        args.out.display(),
        cfg.format,
        cfg.backend,
        cfg.calibrator,
        q.calibration.batches
    );
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &q.prepare.fusions {
        *kinds.entry(f.kind.as_str()).or_default() += 1;
    }
    let fused: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    println!(
        "fusions: {} ({}); BatchNormalization folded: {}; Constant nodes made initializers: {}",
        q.prepare.fusions.len(),
        if fused.is_empty() {
            "none".into()
        } else {
            fused.join(", ")
        },
        q.prepare.folded_bn.len(),
        q.prepare.constants
    );
    println!(
        "nodes: {} quantized, {} kept float",
        q.plan.quantized_nodes.len(),
        q.plan.kept_float.len()
    );
    let mut reasons: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (node, why) in &q.plan.kept_float {
        reasons.entry(why.as_str()).or_default().push(node.as_str());
    }
    for (why, nodes) in &reasons {
        let shown: Vec<&str> = nodes.iter().take(4).copied().collect();
        let more = if nodes.len() > 4 {
            format!(", … ({} in all)", nodes.len())
        } else {
            String::new()
        };
        println!("  float: {}{more} — {why}", shown.join(", "));
    }
    if let Some(f) = &q.fallback {
        let kept: Vec<String> = f
            .kept_float
            .iter()
            .map(|s| format!("{} ({:.1} dB alone)", s.nodes.join("+"), s.alone_db))
            .collect();
        println!(
            "fallback: output SQNR {:.1} dB -> {:.1} dB (target {:.1}) on {} samples, {} models tried; kept float: {}",
            f.before_db,
            f.after_db,
            f.target_db,
            f.samples,
            f.evaluations,
            if kept.is_empty() {
                "none".into()
            } else {
                kept.join(", ")
            }
        );
    }
    if let Some(b) = &q.bias_correction {
        let largest = b
            .corrected
            .iter()
            .max_by(|x, y| x.1.total_cmp(&y.1))
            .map(|(n, s)| format!(" (largest shift {s:.3e}, {n})"))
            .unwrap_or_default();
        println!(
            "bias correction: {} biases shifted{largest}",
            b.corrected.len()
        );
    }
    if let Some(r) = &q.int {
        println!("integer-only conversion:\n{r}");
    }
    println!(
        "weights: {} -> {} quantized; file: {} -> {}",
        mb(q.convert.bytes_before as u64),
        mb(q.convert.bytes_after as u64),
        mb(size_in),
        mb(size_out)
    );
    println!(
        "time: calibration {:.2} s, total {:.2} s",
        calib_time.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn dynamic_config(args: &Args) -> Result<DynamicConfig> {
    let given = [
        (args.config.is_some(), "--config"),
        (args.backend.is_some(), "--backend"),
        (args.calibrator.is_some(), "--calibrator"),
        (args.calib.is_some(), "--calib"),
        (args.samples.is_some(), "--samples"),
        (args.batch.is_some(), "--batch"),
        (args.preprocess.is_some(), "--preprocess"),
        (args.fallback_sqnr.is_some(), "--fallback-sqnr"),
        (args.fallback_max_nodes.is_some(), "--fallback-max-nodes"),
        (args.bias_correction, "--bias-correction"),
        (args.no_bias_correction, "--no-bias-correction"),
    ];
    if let Some((_, flag)) = given.iter().find(|(set, _)| *set) {
        bail!("{flag} is an option of static quantization; --mode dynamic needs no calibration");
    }
    let format = match args.format.as_deref() {
        None | Some("contrib") => DynamicFormat::Contrib,
        Some("onnx") => DynamicFormat::Onnx,
        Some(o) => bail!("--format '{o}' with --mode dynamic: expected contrib or onnx"),
    };
    if args.per_token && args.format.is_some() {
        bail!("--per-token writes standard ONNX operators of its own: leave out --format");
    }
    Ok(DynamicConfig {
        per_channel: !args.per_tensor,
        per_token: args.per_token,
        format,
        op_types: args
            .op_types
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
        exclude: args
            .exclude
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
    })
}

fn run_dynamic(args: &Args) -> Result<()> {
    let start = Instant::now();
    let cfg = dynamic_config(args)?;
    let model = super::load_model(&args.model)?;
    let (q, report) = quench_quant::quantize_dynamic(&model, &cfg)
        .with_context(|| format!("quantizing {}", args.model.display()))?;
    quench_onnx::save_model(&q, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let size_in = std::fs::metadata(&args.model).map(|m| m.len()).unwrap_or(0);
    let size_out = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    let acts = if cfg.per_token {
        "per-token uint8"
    } else {
        "per-tensor uint8"
    };
    let weights = if cfg.per_channel {
        "per-channel int8"
    } else {
        "per-tensor int8"
    };
    println!(
        "quantized {} -> {} (dynamic: weights {weights}, activations {acts} at run time{})",
        args.model.display(),
        args.out.display(),
        if cfg.per_token {
            String::new()
        } else {
            format!(", {:?} format", cfg.format)
        }
    );
    if let Some(v) = report.opset_raised_from {
        println!("default opset raised from {v} to 13");
    }
    println!(
        "nodes: {} quantized, {} kept float",
        report.quantized.len(),
        report.skipped.len()
    );
    println!("{report}");
    println!(
        "file: {} -> {}; time {:.2} s",
        mb(size_in),
        mb(size_out),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
