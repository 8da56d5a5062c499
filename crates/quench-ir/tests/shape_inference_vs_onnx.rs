//! Compares Quench's shape inference with ONNX's on the real models.
//!
//! Needs the dump written by `scripts/check_shape_inference.py` (default
//! `~/.cache/quench/shape-inference/onnx_shapes.json`, or `$QUENCH_SHAPES_JSON`)
//! and the models it names; without them the test says so and passes.
//! `cargo test -p quench-ir --test shape_inference_vs_onnx -- --nocapture` prints the table.

use quench_ir::shape_inference::{Fact, infer};

use quench_ir::{Attr, Dim, Graph};
use serde_json::Value;
use std::path::PathBuf;

fn cache() -> PathBuf {
    std::env::var_os("QUENCH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/quench")
        })
}

fn strip(g: &mut Graph) {
    g.value_info.clear();
    for n in &mut g.nodes {
        for a in n.attrs.values_mut() {
            match a {
                Attr::Graph(sg) => strip(sg),
                Attr::Graphs(gs) => gs.iter_mut().for_each(strip),
                _ => {}
            }
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    agree: usize,
    quench_more: usize,
    onnx_more: usize,
    mixed: usize,
    conflict: usize,
    quench_unknown: usize,
    onnx_unknown: usize,
}

enum Cmp {
    Same,
    QuenchMore,
    OnnxMore,
    Mixed,
    Conflict,
}

/// How specific a dim is: unknown < symbol < fixed.
fn rank_of(d: &Dim) -> u8 {
    match d {
        Dim::Unknown => 0,
        Dim::Symbol(_) => 1,
        Dim::Fixed(_) => 2,
    }
}

fn compare(ours: &Fact, theirs: &Value) -> Cmp {
    if ours.dtype.name() != theirs["dtype"].as_str().unwrap_or("") {
        return Cmp::Conflict;
    }
    let their_shape: Option<Vec<Dim>> = theirs["shape"].as_array().map(|a| {
        a.iter()
            .map(|d| match d {
                // Some exporters write -1 for a dynamic dim.
                Value::Number(n) => n.as_u64().map_or(Dim::Unknown, Dim::Fixed),
                Value::String(s) => Dim::Symbol(s.clone()),
                _ => Dim::Unknown,
            })
            .collect()
    });
    let (a, b) = match (&ours.shape, &their_shape) {
        (None, None) => return Cmp::Same,
        (Some(_), None) => return Cmp::QuenchMore,
        (None, Some(_)) => return Cmp::OnnxMore,
        (Some(a), Some(b)) if a.len() != b.len() => return Cmp::Conflict,
        (Some(a), Some(b)) => (a, b),
    };
    let (mut more, mut less) = (false, false);
    for (x, y) in a.iter().zip(b) {
        // ONNX names dims it cannot know (`unk__3`); Quench leaves them unknown.
        let generated = Dim::Unknown;
        let y = match y {
            Dim::Symbol(s) if s.starts_with("unk__") && x != y => &generated,
            _ => y,
        };
        match (x, y) {
            _ if x == y => {}
            (Dim::Fixed(_), Dim::Fixed(_)) => return Cmp::Conflict,
            // Two different names for one dim are both right; count it as a tie.
            (Dim::Symbol(_), Dim::Symbol(_)) => {}
            _ if rank_of(x) > rank_of(y) => more = true,
            _ => less = true,
        }
    }
    match (more, less) {
        (false, false) => Cmp::Same,
        (true, false) => Cmp::QuenchMore,
        (false, true) => Cmp::OnnxMore,
        (true, true) => Cmp::Mixed,
    }
}

fn show(f: Option<&Fact>) -> String {
    match f {
        None => "-".into(),
        Some(f) => format!(
            "{} {}",
            f.dtype,
            f.shape
                .as_deref()
                .map(quench_ir::shape_inference::fmt_shape)
                .unwrap_or("[..]".into())
        ),
    }
}

#[test]
fn agrees_with_onnx_on_real_models() {
    let json = std::env::var_os("QUENCH_SHAPES_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("shape-inference/onnx_shapes.json"));
    let Ok(text) = std::fs::read_to_string(&json) else {
        let msg = format!(
            "{} not found (run scripts/check_shape_inference.py; scripts/test.sh does)",
            json.display()
        );
        // In CI this comparison must run, never pass by skipping.
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let dump: Value = serde_json::from_str(&text).expect("valid JSON dump");
    let models = dump["models"].as_object().expect("models object");
    let mut total = Tally::default();
    let mut conflicts = Vec::new();
    let (mut wrong, mut checked) = (Vec::new(), 0usize);
    println!(
        "{:<45} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>9}",
        "model", "agree", "q+", "onnx+", "mixed", "CONFL", "q?", "onnx?", "complete"
    );
    for (rel, entry) in models {
        let path = cache().join("models").join(rel);
        let Ok(mut model) = quench_onnx::load_model(&path) else {
            eprintln!("skipped {rel}: cannot load {}", path.display());
            continue;
        };
        strip(&mut model.graph);
        let facts = match infer(&model) {
            Ok(f) => f,
            Err(e) => panic!("{rel}: inference failed: {e}"),
        };
        let mut filled = model.clone();
        let report = quench_ir::shape_inference::infer_shapes(&mut filled)
            .unwrap_or_else(|e| panic!("{rel}: infer_shapes failed: {e}"));
        assert_eq!(report.untyped, 0, "{rel}: {report:?}");
        assert!(!filled.graph.value_info.is_empty());
        let theirs = entry["values"].as_object().expect("values object");
        let mut t = Tally::default();
        for (name, v) in theirs {
            let Some(ours) = facts.get(name) else {
                t.quench_unknown += 1;
                continue;
            };
            match compare(ours, v) {
                Cmp::Same => t.agree += 1,
                Cmp::QuenchMore => {
                    t.quench_more += 1;
                    if std::env::var_os("QUENCH_SHAPES_VERBOSE").is_some() {
                        println!("  q+ {name}: ours {} onnx {v}", show(Some(ours)));
                    }
                }
                Cmp::OnnxMore => {
                    t.onnx_more += 1;
                    if std::env::var_os("QUENCH_SHAPES_VERBOSE").is_some() {
                        println!("  onnx+ {name}: ours {} onnx {v}", show(Some(ours)));
                    }
                }
                Cmp::Mixed => t.mixed += 1,
                Cmp::Conflict => {
                    t.conflict += 1;
                    conflicts.push(format!("{rel}: {name}: ours {} onnx {v}", show(Some(ours))));
                }
            }
        }
        if let Some(actual) = entry["actual"].as_object() {
            check_actual(rel, &facts, actual, &mut wrong, &mut checked);
        }
        let ours_only = model_outputs_of_nodes(&model.graph)
            .into_iter()
            .filter(|n| facts.contains_key(n) && !theirs.contains_key(n))
            .count();
        t.onnx_unknown = ours_only;
        let nodes = model_outputs_of_nodes(&model.graph);
        let complete = nodes
            .iter()
            .filter(|n| {
                facts
                    .get(*n)
                    .and_then(|f| f.shape.as_ref())
                    .is_some_and(|s| !s.contains(&Dim::Unknown))
            })
            .count();
        println!(
            "{:<45} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>4}/{:<4}",
            rel,
            t.agree,
            t.quench_more,
            t.onnx_more,
            t.mixed,
            t.conflict,
            t.quench_unknown,
            t.onnx_unknown,
            complete,
            nodes.len()
        );
        total.agree += t.agree;
        total.quench_more += t.quench_more;
        total.onnx_more += t.onnx_more;
        total.mixed += t.mixed;
        total.conflict += t.conflict;
        total.quench_unknown += t.quench_unknown;
        total.onnx_unknown += t.onnx_unknown;
    }
    println!("total: {total:?}");
    println!(
        "(agree: same dtype and dims, different symbol names counted as equal, onnx's generated unk__N = unknown; q+/onnx+: one side \
         knows more dims; q?/onnx?: untyped on that side; complete: Quench values with every dim known; graph outputs not compared)"
    );
    for c in conflicts.iter().take(30) {
        println!("CONFLICT {c}");
    }
    println!(
        "checked against onnxruntime's actual shapes: {checked} values, {} wrong",
        wrong.len()
    );
    for w in wrong.iter().take(30) {
        println!("WRONG {w}");
    }
    assert!(
        conflicts.is_empty(),
        "{} conflicts with onnx",
        conflicts.len()
    );
    assert!(
        wrong.is_empty(),
        "{} values contradict actual shapes",
        wrong.len()
    );
}

/// Checks inferred facts against shapes seen at run time: ranks and fixed
/// dims must match, and each symbol must stand for one size throughout a model.
fn check_actual(
    rel: &str,
    facts: &std::collections::HashMap<String, Fact>,
    actual: &serde_json::Map<String, Value>,
    wrong: &mut Vec<String>,
    checked: &mut usize,
) {
    let mut sizes: std::collections::HashMap<&str, (u64, &str)> = std::collections::HashMap::new();
    for (name, dims) in actual {
        let (Some(f), Some(dims)) = (facts.get(name), dims.as_array()) else {
            continue;
        };
        let Some(shape) = &f.shape else { continue };
        *checked += 1;
        let real: Vec<u64> = dims.iter().filter_map(Value::as_u64).collect();
        if real.len() != shape.len() {
            wrong.push(format!(
                "{rel}: {name}: ours {} actual {real:?}",
                show(Some(f))
            ));
            continue;
        }
        for (d, &r) in shape.iter().zip(&real) {
            let ok = match d {
                Dim::Fixed(v) => *v == r,
                Dim::Symbol(s) => match sizes.get(s.as_str()) {
                    Some((v, _)) => *v == r,
                    None => {
                        sizes.insert(s, (r, name));
                        true
                    }
                },
                Dim::Unknown => true,
            };
            if !ok {
                let first = match d {
                    Dim::Symbol(s) => format!(
                        " ({s} was {:?} at {:?})",
                        sizes[s.as_str()].0,
                        sizes[s.as_str()].1
                    ),
                    _ => String::new(),
                };
                wrong.push(format!(
                    "{rel}: {name}: ours {} actual {real:?}{first}",
                    show(Some(f))
                ));
                break;
            }
        }
    }
}

/// Node outputs of a graph and its subgraphs that are not graph outputs.
fn model_outputs_of_nodes(g: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for n in &g.nodes {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            if !g.outputs.iter().any(|v| &v.name == o) {
                out.push(o.clone());
            }
        }
        for sg in n.subgraphs() {
            out.extend(model_outputs_of_nodes(sg));
        }
    }
    out
}
