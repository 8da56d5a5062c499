//! `quench inspect`: what is in a model file.

use anyhow::Result;
use quench_ir::{Attr, Graph, Model, Tensor};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Counts of ops and weights, main graph and subgraphs together.
#[derive(Default)]
struct Census {
    ops: BTreeMap<String, usize>,
    params: usize,
    bytes_by_dtype: BTreeMap<String, usize>,
}

impl Census {
    fn tensor(&mut self, t: &Tensor) {
        self.params += t.numel();
        *self.bytes_by_dtype.entry(t.dtype().name()).or_default() += t.byte_size();
    }

    fn graph(&mut self, g: &Graph) {
        g.initializers.values().for_each(|t| self.tensor(t));
        for n in &g.nodes {
            let key = if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            };
            *self.ops.entry(key).or_default() += 1;
            for a in n.attrs.values() {
                if let (true, Attr::Tensor(t)) = (n.op_type == "Constant", a) {
                    self.tensor(t);
                }
            }
            n.subgraphs().for_each(|sg| self.graph(sg));
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let model = super::load_model(&args.model)?;
    let mut census = Census::default();
    census.graph(&model.graph);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&args, &model, &census))?
        );
        return Ok(());
    }
    let g = &model.graph;
    println!("model     {}", args.model.display());
    println!("ir        {}", model.ir_version);
    let opsets: Vec<String> = model
        .opset_imports
        .iter()
        .map(|o| {
            format!(
                "{}{}",
                if o.domain.is_empty() {
                    "ai.onnx".into()
                } else {
                    o.domain.clone()
                },
                format_args!(" v{}", o.version)
            )
        })
        .collect();
    println!("opsets    {}", opsets.join(", "));
    println!(
        "producer  {} {}",
        model.producer_name, model.producer_version
    );
    println!("inputs");
    for v in g.runtime_inputs() {
        println!(
            "  {:<24} {:<8} {}",
            v.name,
            v.dtype().map(|d| d.name()).unwrap_or("?".into()),
            super::show_dims(v.shape())
        );
    }
    println!("outputs");
    for v in &g.outputs {
        println!(
            "  {:<24} {:<8} {}",
            v.name,
            v.dtype().map(|d| d.name()).unwrap_or("?".into()),
            super::show_dims(v.shape())
        );
    }
    let total: usize = census.ops.values().sum();
    println!("ops ({total} nodes, {} types)", census.ops.len());
    let mut ops: Vec<_> = census.ops.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, n) in ops {
        println!("  {op:<24} {n}");
    }
    println!(
        "parameters {} ({:.2} MB)",
        census.params,
        census.bytes_by_dtype.values().sum::<usize>() as f64 / 1e6
    );
    for (dt, b) in &census.bytes_by_dtype {
        println!("  {dt:<24} {b} bytes");
    }
    Ok(())
}

fn to_json(args: &Args, model: &Model, c: &Census) -> serde_json::Value {
    let io = |v: &quench_ir::ValueInfo| {
        json!({
            "name": v.name,
            "dtype": v.dtype().map(|d| d.name()),
            "shape": v.shape().map(|s| s.iter().map(|d| match d {
                quench_ir::Dim::Fixed(n) => json!(n),
                quench_ir::Dim::Symbol(s) => json!(s),
                quench_ir::Dim::Unknown => json!(null),
            }).collect::<Vec<_>>()),
        })
    };
    json!({
        "model": args.model.display().to_string(),
        "ir_version": model.ir_version,
        "opsets": model.opset_imports.iter().map(|o| json!({"domain": o.domain, "version": o.version})).collect::<Vec<_>>(),
        "producer": {"name": model.producer_name, "version": model.producer_version},
        "inputs": model.graph.runtime_inputs().map(io).collect::<Vec<_>>(),
        "outputs": model.graph.outputs.iter().map(io).collect::<Vec<_>>(),
        "ops": c.ops,
        "parameters": c.params,
        "bytes_by_dtype": c.bytes_by_dtype,
    })
}
