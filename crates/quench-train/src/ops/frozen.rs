//! Ops whose forward is quench-runtime's own implementation of the node, run
//! as a one-node plan, so training computes exactly what inference does:
//! shape arithmetic and masks PyTorch exports around RNNs and elsewhere
//! (ConstantOfShape, Range, Equal, Where...), with the gradient rules the
//! few float-carrying ones need (Cast, Expand, Where). Any other op the
//! runtime knows runs here too, as long as no gradient has to cross it.

use super::binary::{bstrides, for_each2, reduce_to};
use crate::op::{Ctx, Fwd, Grad, Op, Saved, check_len, saved};
use crate::{Result, TrainError, unsupported};
use quench_ir::{DType, Graph, Model, Node, OpsetImport, Tensor, ValueInfo};
use quench_runtime::{Plan, PlanOptions, Registry, RunCtx, RunHooks};
use std::sync::{Arc, LazyLock};

/// Ops with no gradient into any input: integer or boolean results, or
/// piecewise-constant float ones (zero gradient almost everywhere, as in
/// PyTorch).
const NO_GRAD: &[&str] = &[
    "ConstantOfShape",
    "Range",
    "Size",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "ArgMax",
    "ArgMin",
    "NonZero",
    "EyeLike",
    "IsNaN",
    "IsInf",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
];

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::standard);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    /// Zero gradient into every input.
    None,
    /// Float32 to float32 passes the gradient through; other casts block it.
    Cast,
    /// Sums the gradient over the broadcast axes.
    Expand,
    /// Routes the gradient to X or Y by the condition.
    Where,
    /// No rule: a gradient that has to cross this node is an error.
    Blocked,
}

/// A node run by quench-runtime, with one of a few gradient rules.
pub struct Frozen {
    op_type: String,
    rule: Rule,
    plan: Plan,
    /// Input names of the one-node graph, by node input (`None`: omitted).
    names: Vec<Option<String>>,
}

/// The op for `node`, or `None` when neither a rule here nor the runtime
/// knows its type.
pub fn build(node: &Node, opset: i64) -> Result<Option<Box<dyn Op>>> {
    let rule = match node.op_type.as_str() {
        "Cast" => Rule::Cast,
        "Expand" => Rule::Expand,
        "Where" => Rule::Where,
        o if NO_GRAD.contains(&o) => Rule::None,
        o if REGISTRY.supports("", o) => Rule::Blocked,
        _ => return Ok(None),
    };
    if node
        .attrs
        .values()
        .any(|a| matches!(a, quench_ir::Attr::Graph(_) | quench_ir::Attr::Graphs(_)))
    {
        unsupported!("{} with a subgraph in a training graph", node.op_type);
    }
    // Inputs become graph inputs under positional names, so a name used
    // twice, or one that is also an output, cannot confuse the plan.
    let names: Vec<Option<String>> = node
        .inputs
        .iter()
        .enumerate()
        .map(|(i, s)| (!s.is_empty()).then(|| format!("in{i}")))
        .collect();
    let outputs: Vec<String> = (0..node.outputs.len()).map(|i| format!("out{i}")).collect();
    let mut n = node.clone();
    n.domain = String::new();
    n.inputs = names
        .iter()
        .map(|s| s.clone().unwrap_or_default())
        .collect();
    n.outputs = outputs.clone();
    let vi = |name: &str| ValueInfo {
        name: name.to_string(),
        ty: None,
        doc_string: String::new(),
    };
    let graph = Graph {
        inputs: names.iter().flatten().map(|s| vi(s)).collect(),
        outputs: outputs.iter().map(|s| vi(s)).collect(),
        nodes: vec![n],
        ..Default::default()
    };
    let model = Model {
        opset_imports: vec![OpsetImport {
            domain: String::new(),
            version: opset,
        }],
        graph,
        ..Default::default()
    };
    let plan = Plan::with_options(
        &model,
        &REGISTRY,
        PlanOptions {
            fuse: false,
            ..PlanOptions::default()
        },
    )
    .map_err(|e| TrainError::Invalid(e.to_string()))?;
    Ok(Some(Box::new(Frozen {
        op_type: node.op_type.clone(),
        rule,
        plan,
        names,
    })))
}

struct SavedFrozen {
    in_shapes: Vec<Vec<usize>>,
    out_shape: Vec<usize>,
    /// Where's condition.
    cond: Option<Arc<Tensor>>,
    /// Whether the output carries a float32 gradient.
    float: bool,
}

impl Op for Frozen {
    fn differentiable(&self, i: usize) -> bool {
        match self.rule {
            Rule::Cast | Rule::Expand => i == 0,
            Rule::Where => i == 1 || i == 2,
            Rule::None | Rule::Blocked => false,
        }
    }

    fn blocked(&self) -> bool {
        self.rule == Rule::Blocked
    }

    fn forward(&self, cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let mut feeds = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            if let Some(name) = name {
                match x.get(i) {
                    Some(Some(t)) => feeds.push((name.clone(), (**t).clone())),
                    _ => unsupported!("input {i} has no value"),
                }
            }
        }
        let rc = RunCtx {
            threads: cx.threads,
        };
        let outs = self
            .plan
            .run(&rc, feeds, &mut RunHooks::default())
            .map_err(|e| TrainError::Invalid(inner_message(e)))?;
        let outs: Vec<Tensor> = outs.into_iter().map(|(_, t)| t).collect();
        let sv = if need.iter().any(|&b| b) {
            let Some(y) = outs.first() else {
                unsupported!("{} produced no output", self.op_type);
            };
            let float = y.dtype() == DType::F32;
            if self.rule == Rule::Cast
                && float
                && x.first().and_then(|t| t.as_ref()).map(|t| t.dtype()) != Some(DType::F32)
            {
                unsupported!(
                    "gradient through Cast from {:?} to float32",
                    x.first().and_then(|t| t.as_ref()).map(|t| t.dtype())
                );
            }
            Some(Box::new(SavedFrozen {
                in_shapes: x
                    .iter()
                    .map(|t| t.as_ref().map_or(Vec::new(), |t| t.shape().to_vec()))
                    .collect(),
                out_shape: y.shape().to_vec(),
                cond: (self.rule == Rule::Where)
                    .then(|| x.first().cloned().flatten())
                    .flatten(),
                float,
            }) as Saved)
        } else {
            None
        };
        Ok(Fwd::new(outs, sv))
    }

    fn backward(
        &self,
        _cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let sv: &SavedFrozen = saved(sv)?;
        let mut gx = vec![None; sv.in_shapes.len()];
        let Some(Some(g)) = gy.first() else {
            return Ok(gx);
        };
        if !sv.float {
            return Ok(gx);
        }
        let out = &sv.out_shape;
        check_len(g, out.iter().product())?;
        let wants = |i: usize| need.get(i) == Some(&true);
        match self.rule {
            Rule::Cast if wants(0) => gx[0] = Some(g.clone()),
            Rule::Expand if wants(0) => gx[0] = Some(reduce_to(g, out, &sv.in_shapes[0])),
            Rule::Where => {
                let Some(cond) = &sv.cond else {
                    unsupported!("Where without its condition");
                };
                let c = cond.as_slice::<bool>().map_err(|_| {
                    TrainError::Invalid(format!(
                        "input 0 (condition) has dtype {:?}, expected bool",
                        cond.dtype()
                    ))
                })?;
                let mut gt = vec![0.0; g.len()];
                let mut gf = vec![0.0; g.len()];
                let zero = vec![0; out.len()];
                for_each2(out, &bstrides(cond.shape(), out), &zero, |i, k, _| {
                    if c[k] {
                        gt[i] = g[i];
                    } else {
                        gf[i] = g[i];
                    }
                });
                for (i, gi) in [(1, gt), (2, gf)] {
                    if wants(i) {
                        gx[i] = Some(reduce_to(&gi, out, &sv.in_shapes[i]));
                    }
                }
            }
            _ => {}
        }
        Ok(gx)
    }
}

/// The runtime's message without its own node prefix (the engine adds the
/// node's name once).
fn inner_message(e: quench_runtime::RuntimeError) -> String {
    match e {
        quench_runtime::RuntimeError::Node { message, .. } => message,
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_node, rand_input, run_node};
    use quench_ir::{Attr, Node, Tensor};

    fn ints(v: &[i64]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn constant_of_shape_and_range_match_the_runtime() {
        let n = Node::new("ConstantOfShape", "c", &["s"], &["y"]).with_attr(
            "value",
            Attr::Tensor(Tensor::from_vec(vec![1], vec![0.5f32]).unwrap()),
        );
        let y = run_node(&n, &[], &[("s", ints(&[2, 3]))]).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.5; 6]);
        let r = Node::new("Range", "r", &["a", "b", "d"], &["y"]);
        let sc = |v: i64| Tensor::scalar(v);
        let y = run_node(&r, &[], &[("a", sc(1)), ("b", sc(7)), ("d", sc(2))]).unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[1, 3, 5]);
    }

    #[test]
    fn expand_where_and_cast_match_finite_differences() {
        let e = Node::new("Expand", "e", &["x", "s"], &["y"]);
        check_node(
            &e,
            &[("x", rand_input(&[3, 1], 1))],
            &[("s", ints(&[2, 3, 4]))],
            17,
        );
        let w = Node::new("Where", "w", &["c", "a", "b"], &["y"]);
        let c = Tensor::from_vec(vec![1, 4], vec![true, false, false, true]).unwrap();
        check_node(
            &w,
            &[("a", rand_input(&[3, 4], 2)), ("b", rand_input(&[4], 3))],
            &[("c", c)],
            17,
        );
        let k = Node::new("Cast", "k", &["x"], &["y"]).with_attr("to", Attr::Int(1));
        check_node(&k, &[("x", rand_input(&[5], 4))], &[], 17);
    }

    #[test]
    fn runtime_errors_and_blocked_gradients_are_errors() {
        let n = Node::new("ConstantOfShape", "c", &["s"], &["y"]);
        let r = run_node(&n, &[], &[("s", ints(&[2, -3]))]);
        assert!(r.is_err());
        // Erf has no backward rule: fine off the gradient path, refused on it.
        let erf = Node::new("Erf", "f", &["x"], &["y"]);
        let y = run_node(&erf, &[], &[("x", rand_input(&[3], 1))]).unwrap();
        assert_eq!(y.shape(), &[3]);
        let g = crate::gradcheck::graph_of(&erf, &[("x", rand_input(&[3], 1))], &[]);
        let err = crate::Engine::new(&g, 17, &["x".to_string()])
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("no backward rule for Erf"), "{msg}");
        assert_eq!(msg.matches("unsupported").count(), 1, "{msg}");
    }
}
