//! `quench run`: execute a model on .npy/.npz inputs.

use anyhow::{Context, Result, bail};
use quench_ir::Tensor;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// An input as NAME=FILE.npy (repeatable).
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    input: Vec<String>,
    /// An .npz whose arrays are named after the model's inputs.
    #[arg(long, value_name = "FILE.npz")]
    inputs: Option<PathBuf>,
    /// Folder for the outputs, one NAME.npy per output (created if missing).
    #[arg(short = 'o', long = "output-dir", value_name = "OUTDIR")]
    out: PathBuf,
    /// Threads to use (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Also print up to this many values of each output.
    #[arg(long, value_name = "N", default_value_t = 0)]
    print: usize,
}

pub fn run(args: Args) -> Result<()> {
    let model = super::load_model(&args.model)?;
    let mut feeds: Vec<(String, Tensor)> = Vec::new();
    let mut input_files = Vec::new();
    if let Some(npz) = &args.inputs {
        feeds.extend(quench_data::read_npz(npz)?);
        input_files.push(npz.clone());
    }
    for spec in &args.input {
        let (name, file) = spec
            .split_once('=')
            .with_context(|| format!("--input '{spec}': expected NAME=FILE.npy"))?;
        let t = quench_data::read_npy(std::path::Path::new(file))?;
        feeds.retain(|(n, _)| n != name);
        feeds.push((name.to_string(), t));
        input_files.push(PathBuf::from(file));
    }
    let wanted: Vec<String> = model
        .graph
        .runtime_inputs()
        .map(|v| v.name.clone())
        .collect();
    if let Some((n, _)) = feeds.iter().find(|(n, _)| !wanted.contains(n)) {
        bail!(
            "'{n}' is not an input of the model (inputs: {})",
            wanted.join(", ")
        );
    }
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|w| !feeds.iter().any(|(n, _)| n == *w))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing model input(s): {} (give them with --input NAME=FILE.npy or --inputs FILE.npz)",
            missing.join(", ")
        );
    }
    for (name, t) in &feeds {
        if t.data().dtype().is_float()
            && let Ok(v) = t.to_f32_vec()
            && v.iter().any(|x| !x.is_finite())
        {
            eprintln!("warning: input '{name}' contains NaN or Inf values");
        }
    }

    let session = quench_runtime::Session::from_model(model, args.threads)
        .with_context(|| format!("cannot prepare {}", args.model.display()))?;
    let start = std::time::Instant::now();
    let outputs = session
        .run(feeds)
        .with_context(|| format!("running {}", args.model.display()))?;
    let elapsed = start.elapsed();

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (name, t) in &outputs {
        let path = args
            .out
            .join(format!("{}.npy", quench_data::npy::file_stem_for(name)));
        if input_files.iter().any(|f| super::same_path(f, &path)) {
            bail!(
                "refusing to overwrite input file {} with output '{name}'",
                path.display()
            );
        }
        quench_data::write_npy(&path, t)?;
        println!(
            "{name:<32} {:<8} {:?} -> {}",
            t.dtype().name(),
            t.shape(),
            path.display()
        );
        if args.print > 0 {
            println!("  {}", preview(t, args.print));
        }
    }
    println!(
        "ran in {:.2} ms on {} thread(s)",
        elapsed.as_secs_f64() * 1e3,
        session.threads()
    );
    Ok(())
}

/// The first `n` values of a tensor as text.
fn preview(t: &Tensor, n: usize) -> String {
    use quench_ir::TensorData;
    fn show<T: std::fmt::Debug>(v: &[T], n: usize) -> String {
        let head: Vec<String> = v.iter().take(n).map(|x| format!("{x:?}")).collect();
        format!(
            "[{}{}]",
            head.join(", "),
            if v.len() > n { ", ..." } else { "" }
        )
    }
    match t.data() {
        TensorData::F32(v) => show(v, n),
        TensorData::F64(v) => show(v, n),
        TensorData::I64(v) => show(v, n),
        TensorData::I32(v) => show(v, n),
        TensorData::I8(v) => show(v, n),
        TensorData::U8(v) => show(v, n),
        TensorData::Bool(v) => show(v, n),
        other => format!("({} values of {})", t.numel(), other.dtype()),
    }
}
