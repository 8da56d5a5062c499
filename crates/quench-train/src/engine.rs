//! Reverse mode over an IR graph: a forward pass that records what each op
//! saved (a tape) and a backward pass that walks it in reverse.

use crate::op::{Ctx, Grad, Op, Saved};
use crate::rng::mix;
use crate::{Result, TrainError, invalid, ops};
use indexmap::IndexMap;
use quench_ir::{Graph, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

/// Named tensors: the weights, running statistics and other initializers.
pub type Weights = IndexMap<String, Arc<Tensor>>;

struct CNode {
    name: String,
    op_type: String,
    op: Box<dyn Op>,
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
}

/// A graph compiled for training.
pub struct Engine {
    nodes: Vec<CNode>,
    names: Vec<String>,
    ids: HashMap<String, usize>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    consts: Vec<(usize, Arc<Tensor>)>,
    /// Values a gradient is computed for (parameters, maybe inputs).
    wrt: Vec<usize>,
    /// Whether each value depends on something in `wrt`.
    requires_grad: Vec<bool>,
    uses: Vec<usize>,
}

/// What a forward pass recorded.
pub struct Tape {
    pub outputs: Vec<Arc<Tensor>>,
    saved: Vec<Option<Saved>>,
    need: Vec<Vec<bool>>,
    /// New values of stateful initializers (BatchNormalization running stats).
    pub updates: Vec<(String, Tensor)>,
}

fn value_id(names: &mut Vec<String>, ids: &mut HashMap<String, usize>, n: &str) -> usize {
    if let Some(&i) = ids.get(n) {
        return i;
    }
    names.push(n.to_string());
    ids.insert(n.to_string(), names.len() - 1);
    names.len() - 1
}

impl Engine {
    /// Compiles `graph` (ops of `opset`); gradients will be computed for the
    /// values named in `wrt` (initializers or graph inputs).
    pub fn new(graph: &Graph, opset: i64, wrt: &[String]) -> Result<Engine> {
        let order = graph.topo_order(&|_| false)?;
        let mut names = Vec::new();
        let mut ids = HashMap::new();
        for i in &graph.inputs {
            value_id(&mut names, &mut ids, &i.name);
        }
        for k in graph.initializers.keys() {
            value_id(&mut names, &mut ids, k);
        }
        let mut nodes = Vec::new();
        let mut consts = Vec::new();
        for &k in &order {
            let n = &graph.nodes[k];
            let wrap = |e: TrainError| TrainError::Node {
                node: n.label(),
                op: n.op_type.clone(),
                error: Box::new(e),
            };
            if !(n.domain.is_empty() || n.domain == "ai.onnx") {
                return Err(wrap(TrainError::Unsupported(format!(
                    "domain '{}'",
                    n.domain
                ))));
            }
            if n.op_type == "Constant" {
                let t = ops::shape::constant_value(n).map_err(wrap)?;
                let Some(out) = n.outputs.first() else {
                    return Err(wrap(TrainError::Invalid("Constant without output".into())));
                };
                consts.push((value_id(&mut names, &mut ids, out), Arc::new(t)));
                continue;
            }
            let op = ops::build(n, opset).map_err(wrap)?;
            let inputs = n
                .inputs
                .iter()
                .map(|s| (!s.is_empty()).then(|| value_id(&mut names, &mut ids, s)))
                .collect();
            let outputs = n
                .outputs
                .iter()
                .map(|s| value_id(&mut names, &mut ids, s))
                .collect();
            nodes.push(CNode {
                name: n.label(),
                op_type: n.op_type.clone(),
                op,
                inputs,
                outputs,
            });
        }
        let inputs = graph
            .runtime_inputs()
            .map(|i| ids[&i.name])
            .collect::<Vec<_>>();
        let mut outputs = Vec::new();
        for o in &graph.outputs {
            match ids.get(&o.name) {
                Some(&i) => outputs.push(i),
                None => invalid!("graph output '{}' is not computed", o.name),
            }
        }
        let mut wrt_ids = Vec::new();
        let mut requires_grad = vec![false; names.len()];
        for w in wrt {
            match ids.get(w) {
                Some(&i) => {
                    wrt_ids.push(i);
                    requires_grad[i] = true;
                }
                None => invalid!("no value named '{w}' to differentiate"),
            }
        }
        let mut uses = vec![0usize; names.len()];
        for n in &nodes {
            if n.op.blocked()
                && let Some(v) = n.inputs.iter().flatten().find(|&&v| requires_grad[v])
            {
                return Err(TrainError::Node {
                    node: n.name.clone(),
                    op: n.op_type.clone(),
                    error: Box::new(TrainError::Unsupported(format!(
                        "no backward rule for {}, and a gradient must flow into its input '{}'",
                        n.op_type, names[*v]
                    ))),
                });
            }
            let rg = n
                .inputs
                .iter()
                .enumerate()
                .any(|(i, v)| v.is_some_and(|v| requires_grad[v] && n.op.differentiable(i)));
            for &o in &n.outputs {
                requires_grad[o] |= rg;
            }
            for v in n.inputs.iter().flatten() {
                uses[*v] += 1;
            }
        }
        for &o in &outputs {
            uses[o] += 1;
        }
        Ok(Engine {
            nodes,
            names,
            ids,
            inputs,
            outputs,
            consts,
            wrt: wrt_ids,
            requires_grad,
            uses,
        })
    }

    /// Float initializers of `graph` that feed an input a gradient can flow
    /// into: the parameters to train (not running statistics, clip bounds,
    /// shapes...).
    pub fn trainable(&self, graph: &Graph) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for n in &self.nodes {
            for (i, v) in n.inputs.iter().enumerate() {
                let Some(v) = v else { continue };
                let name = &self.names[*v];
                let is_float = graph
                    .initializers
                    .get(name)
                    .is_some_and(|t| t.dtype() == quench_ir::DType::F32);
                if is_float && n.op.differentiable(i) && seen.insert(name.clone()) {
                    out.push(name.clone());
                }
            }
        }
        out
    }

    /// Names of the runtime inputs, in graph order.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs
            .iter()
            .map(|&i| self.names[i].as_str())
            .collect()
    }

    /// Names of the values gradients are computed for.
    pub fn wrt_names(&self) -> Vec<&str> {
        self.wrt.iter().map(|&i| self.names[i].as_str()).collect()
    }

    /// Runs the graph. `feeds` are the runtime inputs in graph order. With
    /// `grad`, ops save what backward needs.
    pub fn forward(
        &self,
        weights: &Weights,
        feeds: Vec<Tensor>,
        train: bool,
        grad: bool,
        seed: u64,
        threads: usize,
    ) -> Result<Tape> {
        if feeds.len() != self.inputs.len() {
            invalid!(
                "the model has {} runtime inputs, {} were given",
                self.inputs.len(),
                feeds.len()
            );
        }
        let mut env: Vec<Option<Arc<Tensor>>> = vec![None; self.names.len()];
        for (name, t) in weights {
            if let Some(&i) = self.ids.get(name) {
                env[i] = Some(t.clone());
            }
        }
        for (i, t) in &self.consts {
            env[*i] = Some(t.clone());
        }
        for (&i, t) in self.inputs.iter().zip(feeds) {
            env[i] = Some(Arc::new(t));
        }
        let mut uses = self.uses.clone();
        let mut saved = Vec::with_capacity(self.nodes.len());
        let mut needs = Vec::with_capacity(self.nodes.len());
        let mut updates = Vec::new();
        for (k, n) in self.nodes.iter().enumerate() {
            let wrap = |e: TrainError| TrainError::Node {
                node: n.name.clone(),
                op: n.op_type.clone(),
                error: Box::new(e),
            };
            let mut xs = Vec::with_capacity(n.inputs.len());
            for v in &n.inputs {
                match v {
                    None => xs.push(None),
                    Some(v) => match &env[*v] {
                        Some(t) => xs.push(Some(t.clone())),
                        None => {
                            return Err(wrap(TrainError::Invalid(format!(
                                "input '{}' has no value (missing initializer or feed)",
                                self.names[*v]
                            ))));
                        }
                    },
                }
            }
            let need: Vec<bool> = n
                .inputs
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    grad && v.is_some_and(|v| self.requires_grad[v]) && n.op.differentiable(i)
                })
                .collect();
            let cx = Ctx {
                threads,
                train,
                seed: mix(seed ^ mix(k as u64)),
            };
            let fwd = n.op.forward(&cx, &xs, &need).map_err(wrap)?;
            if fwd.outputs.len() < n.outputs.len() {
                return Err(wrap(TrainError::Invalid(format!(
                    "produced {} outputs, the node has {}",
                    fwd.outputs.len(),
                    n.outputs.len()
                ))));
            }
            for (i, t) in fwd.updates {
                if let Some(Some(v)) = n.inputs.get(i)
                    && weights.contains_key(&self.names[*v])
                {
                    updates.push((self.names[*v].clone(), t));
                }
            }
            drop(xs);
            for v in n.inputs.iter().flatten() {
                uses[*v] -= 1;
                if uses[*v] == 0 {
                    env[*v] = None;
                }
            }
            for (&o, t) in n.outputs.iter().zip(fwd.outputs) {
                if uses[o] > 0 {
                    env[o] = Some(Arc::new(t));
                }
            }
            let any = need.iter().any(|&b| b);
            saved.push(if any { fwd.saved } else { None });
            needs.push(need);
        }
        let mut outputs = Vec::new();
        for &o in &self.outputs {
            match &env[o] {
                Some(t) => outputs.push(t.clone()),
                None => invalid!("graph output '{}' was not computed", self.names[o]),
            }
        }
        Ok(Tape {
            outputs,
            saved,
            need: needs,
            updates,
        })
    }

    /// Back-propagates `gout` (one gradient per graph output, `None` = zero)
    /// through the tape; returns the gradients of the `wrt` values in order
    /// (`None` when nothing reached one).
    pub fn backward(
        &self,
        tape: Tape,
        gout: Vec<Option<Grad>>,
        threads: usize,
    ) -> Result<Vec<Option<Grad>>> {
        let Tape {
            outputs,
            mut saved,
            need,
            ..
        } = tape;
        let mut grads: Vec<Option<Grad>> = vec![None; self.names.len()];
        for ((&o, g), t) in self.outputs.iter().zip(gout).zip(&outputs) {
            if let Some(g) = g {
                if g.len() != t.numel() {
                    invalid!(
                        "gradient of output '{}' has {} elements, expected {}",
                        self.names[o],
                        g.len(),
                        t.numel()
                    );
                }
                accumulate(&mut grads[o], g)?;
            }
        }
        drop(outputs);
        for (k, n) in self.nodes.iter().enumerate().rev() {
            let Some(s) = saved[k].take() else { continue };
            let gy: Vec<Option<Grad>> = n.outputs.iter().map(|&o| grads[o].take()).collect();
            if gy.iter().all(|g| g.is_none()) {
                continue;
            }
            let cx = Ctx {
                threads,
                train: true,
                seed: 0,
            };
            let gx =
                n.op.backward(&cx, &s, &gy, &need[k])
                    .map_err(|e| TrainError::Node {
                        node: n.name.clone(),
                        op: n.op_type.clone(),
                        error: Box::new(e),
                    })?;
            drop(s);
            for (i, g) in gx.into_iter().enumerate() {
                if let (Some(g), Some(Some(v)), Some(true)) = (g, n.inputs.get(i), need[k].get(i)) {
                    accumulate(&mut grads[*v], g)?;
                }
            }
        }
        Ok(self.wrt.iter().map(|&i| grads[i].take()).collect())
    }
}

fn accumulate(slot: &mut Option<Grad>, g: Grad) -> Result<()> {
    match slot {
        None => *slot = Some(g),
        Some(a) => {
            if a.len() != g.len() {
                invalid!("gradients of {} and {} elements meet", a.len(), g.len());
            }
            crate::op::add_into(a, &g);
        }
    }
    Ok(())
}
