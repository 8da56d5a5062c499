//! Runs ONNX backend node test cases (`model.onnx` + `test_data_set_*/{input,output}_N.pb`)
//! through Quench and compares with ONNX's expected outputs at ONNX's tolerances.
//!
//! Cases whose ops Quench does not implement are not run; cases whose tensors use a dtype
//! Quench does not compute with (float16, bfloat16, float8, int4, ...) are skipped with that
//! reason. Prints `N passed, M failed, K skipped` and exits non-zero on any failure that is
//! not listed in `--known-failures`.

use anyhow::{Context, Result, bail};
use clap::Parser;
use prost::Message;
use quench_ir::{DType, Graph, Model, Tensor, TensorData};
use quench_onnx::proto::TensorProto;
use quench_runtime::{Registry, Session};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(about = "Run the ONNX backend node tests through Quench")]
struct Args {
    /// Folder holding one sub-folder per test case (e.g. from scripts/gen-node-tests.sh).
    cases: PathBuf,
    /// Only cases whose graph uses this op type (repeatable).
    #[arg(long)]
    op: Vec<String>,
    /// Only cases whose folder name contains this text.
    #[arg(long)]
    case: Option<String>,
    /// File of case names expected to fail, one per line (`# reason` comments allowed).
    #[arg(long)]
    known_failures: Option<PathBuf>,
    /// Print every case, not just failures.
    #[arg(long, short)]
    verbose: bool,
    /// Relative tolerance (ONNX's default).
    #[arg(long, default_value_t = 1e-3)]
    rtol: f64,
    /// Absolute tolerance (ONNX's default).
    #[arg(long, default_value_t = 1e-7)]
    atol: f64,
}

enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
    NotSupported,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let registry = Registry::standard();
    let known: BTreeSet<String> = match &args.known_failures {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        None => BTreeSet::new(),
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&args.cases)
        .with_context(|| format!("reading {}", args.cases.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "{}: no test cases (folders with model.onnx) found",
            args.cases.display()
        );
    }

    let (mut passed, mut failed, mut skipped, mut expected_fail) = (0, 0, 0, 0);
    let mut unexpected_pass = Vec::new();
    let mut per_op: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut skip_reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if args
            .case
            .as_ref()
            .is_some_and(|c| !name.contains(c.as_str()))
        {
            continue;
        }
        let model = match quench_onnx::load_model(dir.join("model.onnx")) {
            Ok(m) => m,
            Err(e) => {
                if args.op.is_empty() {
                    println!("FAIL {name}: load: {e}");
                    failed += 1;
                }
                continue;
            }
        };
        let mut ops = BTreeSet::new();
        collect_ops(&model.graph, &mut ops);
        if !args.op.is_empty() && !args.op.iter().any(|o| ops.iter().any(|(_, t)| t == o)) {
            continue;
        }
        let main_op = {
            let non_const: Vec<_> = ops.iter().filter(|(_, t)| t != "Constant").collect();
            if non_const.len() == 1 {
                non_const[0].1.clone()
            } else {
                "(composite)".into()
            }
        };
        let outcome = if ops.iter().any(|(d, t)| !registry.supports(d, t)) {
            Outcome::NotSupported
        } else {
            run_case(dir, &model, &args)
        };
        let stats = per_op.entry(main_op).or_default();
        match outcome {
            Outcome::NotSupported => {}
            Outcome::Pass => {
                stats[0] += 1;
                passed += 1;
                if known.contains(&name) {
                    unexpected_pass.push(name.clone());
                }
                if args.verbose {
                    println!("ok   {name}");
                }
            }
            Outcome::Fail(why) => {
                stats[1] += 1;
                if known.contains(&name) {
                    expected_fail += 1;
                    if args.verbose {
                        println!("xfail {name}: {why}");
                    }
                } else {
                    failed += 1;
                    println!("FAIL {name}: {why}");
                }
            }
            Outcome::Skip(why) => {
                stats[2] += 1;
                skipped += 1;
                if args.verbose {
                    println!("skip {name}: {why}");
                }
                skip_reasons.entry(why).or_default().push(name);
            }
        }
    }
    println!("\nper op (passed/failed/skipped):");
    for (op, [p, f, s]) in &per_op {
        if p + f + s > 0 {
            println!("  {op:<28} {p:>4} {f:>4} {s:>4}");
        }
    }
    if !skip_reasons.is_empty() {
        println!("skipped, by reason:");
        for (why, cases) in &skip_reasons {
            println!("  {why}: {} case(s), e.g. {}", cases.len(), cases[0]);
        }
    }
    if !unexpected_pass.is_empty() {
        println!(
            "listed as known failures but passed (remove them): {}",
            unexpected_pass.join(", ")
        );
    }
    if expected_fail > 0 {
        println!("{expected_fail} known failure(s) from the list");
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn collect_ops(g: &Graph, out: &mut BTreeSet<(String, String)>) {
    for n in &g.nodes {
        out.insert((n.domain.clone(), n.op_type.clone()));
        for sg in n.subgraphs() {
            collect_ops(sg, out);
        }
    }
}

fn unsupported_dtype(d: DType) -> bool {
    !matches!(
        d,
        DType::F32
            | DType::F64
            | DType::I8
            | DType::U8
            | DType::I16
            | DType::U16
            | DType::I32
            | DType::U32
            | DType::I64
            | DType::U64
            | DType::Bool
    )
}

fn read_tensor(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let p =
        TensorProto::decode(bytes.as_slice()).map_err(|e| format!("{}: {e}", path.display()))?;
    quench_onnx::tensor_from_proto(&p, path.parent()).map_err(|e| e.to_string())
}

fn run_case(dir: &Path, model: &Model, args: &Args) -> Outcome {
    let io_dtypes = model
        .graph
        .inputs
        .iter()
        .chain(&model.graph.outputs)
        .filter_map(|v| v.dtype());
    if let Some(d) = io_dtypes.clone().find(|&d| unsupported_dtype(d)) {
        return Outcome::Skip(format!("dtype {d} not supported"));
    }
    if model
        .graph
        .inputs
        .iter()
        .chain(&model.graph.outputs)
        .any(|v| v.ty.is_some() && v.dtype().is_none())
    {
        return Outcome::Skip("sequence/optional values not supported".into());
    }
    let session = match Session::new(model, 1) {
        Ok(s) => s,
        Err(e) => return Outcome::Fail(format!("plan: {e}")),
    };
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    sets.sort();
    if sets.is_empty() {
        return Outcome::Skip("no test data".into());
    }
    let fed: Vec<String> = model
        .graph
        .runtime_inputs()
        .map(|v| v.name.clone())
        .collect();
    for set in sets {
        let mut inputs = Vec::new();
        for (i, vi) in model.graph.inputs.iter().enumerate() {
            let p = set.join(format!("input_{i}.pb"));
            if !p.exists() {
                continue;
            }
            match read_tensor(&p) {
                Ok(t) if fed.contains(&vi.name) => inputs.push((vi.name.clone(), t)),
                Ok(_) => {}
                Err(e) => return Outcome::Skip(format!("input not a tensor ({e})")),
            }
        }
        let outputs = match session.run(inputs) {
            Ok(o) => o,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        for (i, (name, got)) in outputs.iter().enumerate() {
            let want = match read_tensor(&set.join(format!("output_{i}.pb"))) {
                Ok(t) => t,
                Err(e) => return Outcome::Skip(format!("expected output not a tensor ({e})")),
            };
            if let Err(e) = compare(got, &want, args.rtol, args.atol) {
                return Outcome::Fail(format!("output '{name}': {e}"));
            }
        }
    }
    Outcome::Pass
}

fn as_f64(t: &Tensor) -> Option<Vec<f64>> {
    Some(match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::F64(v) => v.clone(),
        _ => return None,
    })
}

fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!(
            "dtype {} but expected {}",
            got.dtype(),
            want.dtype()
        ));
    }
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?} but expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    match (as_f64(got), as_f64(want)) {
        (Some(g), Some(w)) => {
            for (i, (a, b)) in g.iter().zip(&w).enumerate() {
                let ok =
                    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= atol + rtol * b.abs();
                if !ok {
                    return Err(format!("element {i}: got {a}, expected {b}"));
                }
            }
            Ok(())
        }
        _ if got.data() == want.data() => Ok(()),
        _ => Err("values differ".into()),
    }
}
