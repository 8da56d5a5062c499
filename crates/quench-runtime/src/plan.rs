//! Planning and running a graph.

use crate::registry::{Registry, normalize_domain};
use crate::{BuildCtx, Op, RunCtx, RuntimeError};
use quench_ir::graph::subgraph_free_names;
use quench_ir::{DType, Dim, Graph, Model, Node, Tensor, ValueInfo};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// One node, ready to run.
#[derive(Debug)]
struct Step {
    op: Box<dyn Op>,
    node: quench_ir::Node,
    /// Value slots of the explicit inputs (`None` = omitted) then implicit ones.
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
    /// Slots whose last reader is this step: freed after it runs.
    release: Vec<usize>,
}

/// Receives every value a node produces (observers, debuggers).
pub type ValueHook<'h> = &'h mut (dyn FnMut(&str, &Tensor) + Send);
/// Receives each node's wall time (profilers).
pub type TimeHook<'h> = &'h mut (dyn FnMut(&quench_ir::Node, std::time::Duration) + Send);

/// Callbacks into a run, for observers, profilers and debuggers.
#[derive(Default)]
pub struct RunHooks<'h> {
    /// Called with every value a node produces, right after the node runs.
    pub on_value: Option<ValueHook<'h>>,
    /// Called with each node's wall time.
    pub on_node_time: Option<TimeHook<'h>>,
    /// Keep every intermediate value instead of freeing it after its last use.
    pub keep_all: bool,
}

/// A graph compiled for execution.
#[derive(Debug)]
pub struct Plan {
    names: Vec<String>,
    constants: Vec<(usize, Arc<Tensor>)>,
    /// Runtime inputs: slot, name and declared type (for checks).
    inputs: Vec<(usize, quench_ir::ValueInfo)>,
    /// Values bound by an enclosing graph (subgraph free variables).
    outer: Vec<(usize, String)>,
    outputs: Vec<(usize, String)>,
    steps: Vec<Step>,
    n_slots: usize,
    /// When this plan fuses nodes: the plan without fusion, for runs that
    /// observe every intermediate value (fused-away values never exist).
    unfused: Option<Box<Plan>>,
    /// Values a hooked run of this (fused) plan still produces intact, so
    /// such runs need not fall back to `unfused` (see [`PlanOptions::observed`]).
    observed: Option<HashSet<String>>,
}

/// How a plan is built.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// Apply the fusion pass of [`crate::optimize`]. On by default; the
    /// environment variable `QUENCH_NO_FUSE` turns the default off (to run
    /// a test suite both ways).
    pub fuse: bool,
    /// Values a caller will watch through [`RunHooks::on_value`] (calibration).
    /// Fusion keeps them as it keeps graph outputs, and hooked runs then use
    /// the fused plan (fast layouts included) instead of the unfused one; the
    /// hook still sees every other value the fused plan makes, under its own
    /// name. Empty: hooked runs use the unfused plan and see every value.
    pub observed: Vec<String>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            fuse: std::env::var_os("QUENCH_NO_FUSE").is_none(),
            observed: Vec::new(),
        }
    }
}

impl PlanOptions {
    /// The default options, keeping `names` for a hook (see [`PlanOptions::observed`]).
    pub fn observing(names: impl IntoIterator<Item = String>) -> Self {
        PlanOptions {
            observed: names.into_iter().collect(),
            ..PlanOptions::default()
        }
    }
}

fn opset_map(model: &Model) -> HashMap<String, i64> {
    let mut m: HashMap<String, i64> = model
        .opset_imports
        .iter()
        .map(|o| (normalize_domain(&o.domain).to_string(), o.version))
        .collect();
    m.entry(String::new()).or_insert(21);
    m
}

impl Plan {
    /// Plans the main graph of `model`.
    pub fn new(model: &Model, registry: &Registry) -> Result<Plan, RuntimeError> {
        Plan::with_options(model, registry, PlanOptions::default())
    }

    /// Plans the main graph of `model` as `options` say.
    pub fn with_options(
        model: &Model,
        registry: &Registry,
        options: PlanOptions,
    ) -> Result<Plan, RuntimeError> {
        let opsets = opset_map(model);
        let nodes = Plan::fused_nodes(&model.graph, &opsets, registry, &options);
        let shared = model
            .graph
            .initializers
            .iter()
            .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
            .collect();
        Plan::assemble(&model.graph, shared, nodes, &opsets, registry, options)
    }

    /// Plans `model`, taking its weights instead of copying them: the
    /// caller that no longer needs the model holds them once, not twice.
    pub fn from_model(
        mut model: Model,
        registry: &Registry,
        options: PlanOptions,
    ) -> Result<Plan, RuntimeError> {
        let opsets = opset_map(&model);
        let nodes = Plan::fused_nodes(&model.graph, &opsets, registry, &options);
        let shared = std::mem::take(&mut model.graph.initializers)
            .into_iter()
            .map(|(k, v)| (k, Arc::new(v)))
            .collect();
        Plan::assemble(&model.graph, shared, nodes, &opsets, registry, options)
    }

    /// The nodes of `g` after the fusion passes, or None when nothing fused.
    fn fused_nodes(
        g: &Graph,
        opsets: &HashMap<String, i64>,
        registry: &Registry,
        options: &PlanOptions,
    ) -> Option<Vec<Node>> {
        if !options.fuse {
            return None;
        }
        let opset = opsets.get("").copied().unwrap_or(21);
        // Observed values count as graph outputs for the passes, so none is
        // fused away (the copy holding them is dropped once the passes ran).
        let watched;
        let g = if options.observed.is_empty() {
            g
        } else {
            let mut w = g.clone();
            let have: HashSet<&str> = w.outputs.iter().map(|o| o.name.as_str()).collect();
            let extra: Vec<ValueInfo> = options
                .observed
                .iter()
                .filter(|n| !have.contains(n.as_str()))
                .map(|n| ValueInfo::tensor(n, DType::F32, None))
                .collect();
            w.outputs.extend(extra);
            watched = w;
            &watched
        };
        // QDQ groups become integer ops first; the fp32 fusions see the result.
        let lowered = crate::optimize::lower_qdq(g, opset, registry)
            .map(|nodes| Graph { nodes, ..g.clone() });
        // Integer convolution chains keep their activations NHWC.
        let nhwc = {
            let g = lowered.as_ref().unwrap_or(g);
            crate::optimize::int8_nhwc(g, &g.nodes).map(|nodes| Graph { nodes, ..g.clone() })
        };
        let lowered = nhwc.or(lowered);
        let g = lowered.as_ref().unwrap_or(g);
        let conv = registry
            .get(crate::optimize::DOMAIN, crate::optimize::FUSED_CONV)
            .and_then(|_| crate::optimize::fuse_conv_chains(g, opset));
        let gelu = registry
            .get("", "Gelu")
            .and_then(|_| crate::optimize::fuse_gelu(conv.as_deref().unwrap_or(&g.nodes), g));
        gelu.or(conv).or(lowered.map(|g| g.nodes))
    }

    /// The plain plan of `g` and, given fused `nodes`, the fused plan that
    /// falls back to it for hooked runs; both read the weights in `shared`.
    fn assemble(
        g: &Graph,
        shared: HashMap<String, Arc<Tensor>>,
        nodes: Option<Vec<Node>>,
        opsets: &HashMap<String, i64>,
        registry: &Registry,
        options: PlanOptions,
    ) -> Result<Plan, RuntimeError> {
        let plain = Plan::compile(g, &shared, registry, opsets, &[])?;
        let Some(nodes) = nodes else {
            return Ok(plain);
        };
        let fused_graph = Graph {
            name: g.name.clone(),
            doc_string: g.doc_string.clone(),
            inputs: g.inputs.clone(),
            outputs: g.outputs.clone(),
            initializers: Default::default(), // in `shared`
            value_info: g.value_info.clone(),
            nodes,
            sparse_initializers: g.sparse_initializers.clone(),
        };
        let mut fused = Plan::compile(&fused_graph, &shared, registry, opsets, &[])?;
        fused.unfused = Some(Box::new(plain));
        if !options.observed.is_empty() {
            fused.observed = Some(options.observed.into_iter().collect());
        }
        Ok(fused)
    }

    /// Compiles `graph`, whose initializers are `graph.initializers` plus
    /// `shared` (taken as they are, not copied).
    fn compile(
        graph: &Graph,
        shared: &HashMap<String, Arc<Tensor>>,
        registry: &Registry,
        opsets: &HashMap<String, i64>,
        outer_names: &[String],
    ) -> Result<Plan, RuntimeError> {
        let order =
            graph.topo_order(&|n| shared.contains_key(n) || outer_names.iter().any(|o| o == n))?;
        let mut slots: HashMap<String, usize> = HashMap::new();
        let mut names: Vec<String> = Vec::new();
        let mut slot_of = |name: &str, slots: &mut HashMap<String, usize>| -> usize {
            *slots.entry(name.to_string()).or_insert_with(|| {
                names.push(name.to_string());
                names.len() - 1
            })
        };

        // Constants: initializers and Constant nodes without inputs are folded
        // into shared tensors so builders can pack weights.
        let mut constants: HashMap<String, Arc<Tensor>> = shared.clone();
        for (k, v) in &graph.initializers {
            if !constants.contains_key(k) {
                constants.insert(k.clone(), Arc::new(v.clone()));
            }
        }
        // Inputs that are not also initializers: what a caller must feed.
        let runtime_inputs: Vec<_> = graph
            .inputs
            .iter()
            .filter(|i| !constants.contains_key(&i.name))
            .cloned()
            .collect();
        for &i in &order {
            let n = &graph.nodes[i];
            if n.op_type == "Constant"
                && normalize_domain(&n.domain).is_empty()
                && let Some(out) = n.outputs.first()
            {
                let t = constant_node_value(n).map_err(|e| RuntimeError::at_node(n, e))?;
                constants.insert(out.clone(), Arc::new(t));
            }
        }

        let mut inputs = Vec::new();
        for vi in &runtime_inputs {
            inputs.push((slot_of(&vi.name, &mut slots), vi.clone()));
        }
        let mut outer = Vec::new();
        for name in outer_names {
            if !constants.contains_key(name) {
                outer.push((slot_of(name, &mut slots), name.clone()));
            }
        }
        let mut const_slots = Vec::new();
        for (name, t) in &constants {
            const_slots.push((slot_of(name, &mut slots), t.clone()));
        }

        let mut steps = Vec::new();
        for &i in &order {
            let node = &graph.nodes[i];
            if node.op_type == "Constant" && normalize_domain(&node.domain).is_empty() {
                continue;
            }
            let domain = normalize_domain(&node.domain);
            let opset = opsets.get(domain).copied().unwrap_or(1);
            let build =
                registry
                    .get(domain, &node.op_type)
                    .ok_or_else(|| RuntimeError::UnknownOp {
                        node: node.label(),
                        op: node.op_type.clone(),
                        domain: domain.to_string(),
                        opset,
                    })?;
            let lookup = |name: &str| constants.get(name).map(|t| t.as_ref());
            let implicit: Vec<String> = subgraph_free_names(node).map(str::to_string).collect();
            let compile = |g: &Graph| {
                let visible: Vec<String> = implicit.clone();
                Plan::compile(g, &HashMap::new(), registry, opsets, &visible)
            };
            let ctx = BuildCtx {
                node,
                opset,
                constants: &lookup,
                compile: &compile,
            };
            let op = build(&ctx).map_err(|e| RuntimeError::at_node(node, e))?;
            let mut ins: Vec<Option<usize>> = node
                .inputs
                .iter()
                .map(|n| (!n.is_empty()).then(|| slot_of(n, &mut slots)))
                .collect();
            ins.extend(implicit.iter().map(|n| Some(slot_of(n, &mut slots))));
            let outs = node
                .outputs
                .iter()
                .map(|n| slot_of(if n.is_empty() { "" } else { n }, &mut slots))
                .collect();
            steps.push(Step {
                op,
                node: node.clone(),
                inputs: ins,
                outputs: outs,
                release: Vec::new(),
            });
        }

        let mut outputs = Vec::new();
        for o in &graph.outputs {
            if !slots.contains_key(&o.name) && !outer_names.contains(&o.name) {
                return Err(RuntimeError::Invalid(format!(
                    "graph output '{}' is never computed",
                    o.name
                )));
            }
            outputs.push((slot_of(&o.name, &mut slots), o.name.clone()));
        }

        // Free each non-constant, non-output value after its last reader.
        let pinned: std::collections::HashSet<usize> = outputs
            .iter()
            .map(|(s, _)| *s)
            .chain(const_slots.iter().map(|(s, _)| *s))
            .collect();
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (si, st) in steps.iter().enumerate() {
            for s in st.inputs.iter().flatten().chain(st.outputs.iter()) {
                last_use.insert(*s, si);
            }
        }
        for (slot, si) in last_use {
            if !pinned.contains(&slot) {
                steps[si].release.push(slot);
            }
        }
        let n_slots = names.len();
        Ok(Plan {
            names,
            constants: const_slots,
            inputs,
            outer,
            outputs,
            steps,
            n_slots,
            unfused: None,
            observed: None,
        })
    }

    /// Names and declared types of the inputs a caller must feed.
    pub fn input_infos(&self) -> impl Iterator<Item = &quench_ir::ValueInfo> {
        self.inputs.iter().map(|(_, vi)| vi)
    }

    pub fn output_names(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().map(|(_, n)| n.as_str())
    }

    /// Runs the plan on named inputs, returning the graph outputs in order.
    pub fn run(
        &self,
        ctx: &RunCtx,
        inputs: Vec<(String, Tensor)>,
        hooks: &mut RunHooks,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        if let Some(plain) = &self.unfused
            && (hooks.keep_all || (hooks.on_value.is_some() && self.observed.is_none()))
        {
            return plain.run(ctx, inputs, hooks);
        }
        let mut values: Vec<Option<Arc<Tensor>>> = vec![None; self.n_slots];
        for (name, t) in inputs {
            let Some((slot, vi)) = self.inputs.iter().find(|(_, vi)| vi.name == name) else {
                let known: Vec<&str> = self.inputs.iter().map(|(_, v)| v.name.as_str()).collect();
                return Err(RuntimeError::Input {
                    name,
                    message: format!("the model has no such input (inputs: {})", known.join(", ")),
                });
            };
            check_input(vi, &t)?;
            values[*slot] = Some(Arc::new(t));
        }
        self.run_slots(ctx, values, &[], hooks)
    }

    /// Runs a subgraph with its outer-scope values bound by name.
    pub fn run_subgraph(
        &self,
        ctx: &RunCtx,
        inputs: Vec<(String, Tensor)>,
        outer: &[(&str, &Tensor)],
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let mut values: Vec<Option<Arc<Tensor>>> = vec![None; self.n_slots];
        for (name, t) in inputs {
            if let Some((slot, _)) = self.inputs.iter().find(|(_, vi)| vi.name == name) {
                values[*slot] = Some(Arc::new(t));
            }
        }
        self.run_slots(ctx, values, outer, &mut RunHooks::default())
    }

    fn run_slots(
        &self,
        ctx: &RunCtx,
        mut values: Vec<Option<Arc<Tensor>>>,
        outer: &[(&str, &Tensor)],
        hooks: &mut RunHooks,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        for (slot, vi) in &self.inputs {
            if values[*slot].is_none() {
                return Err(RuntimeError::Input {
                    name: vi.name.clone(),
                    message: "not given".into(),
                });
            }
        }
        for (slot, name) in &self.outer {
            let t = outer.iter().find(|(n, _)| n == name).ok_or_else(|| {
                RuntimeError::Invalid(format!("subgraph reads '{name}', which is not bound"))
            })?;
            values[*slot] = Some(Arc::new(t.1.clone()));
        }
        for (slot, t) in &self.constants {
            values[*slot] = Some(t.clone());
        }
        for step in &self.steps {
            let args: Vec<Option<&Tensor>> = step
                .inputs
                .iter()
                .map(|s| match s {
                    None => Ok(None),
                    Some(s) => values[*s].as_deref().map(Some).ok_or_else(|| {
                        RuntimeError::Invalid(format!(
                            "node '{}' reads '{}' before it is computed",
                            step.node.label(),
                            self.names[*s]
                        ))
                    }),
                })
                .collect::<Result<_, _>>()?;
            let start = std::time::Instant::now();
            let outs = step
                .op
                .run(ctx, &args)
                .map_err(|e| RuntimeError::at_node(&step.node, e))?;
            if let Some(f) = hooks.on_node_time.as_mut() {
                f(&step.node, start.elapsed());
            }
            if outs.len()
                < step
                    .outputs
                    .iter()
                    .filter(|&&s| !self.names[s].is_empty())
                    .count()
            {
                return Err(RuntimeError::at_node(
                    &step.node,
                    crate::OpError::Invalid(format!(
                        "produced {} outputs, {} expected",
                        outs.len(),
                        step.outputs.len()
                    )),
                ));
            }
            drop(args);
            for (slot, t) in step.outputs.iter().zip(outs) {
                if self.names[*slot].is_empty() {
                    continue;
                }
                if let Some(f) = hooks.on_value.as_mut() {
                    f(&self.names[*slot], &t);
                }
                values[*slot] = Some(Arc::new(t));
            }
            if !hooks.keep_all {
                for s in &step.release {
                    values[*s] = None;
                }
            }
        }
        self.outputs
            .iter()
            .map(|(slot, name)| {
                let v = values[*slot]
                    .take()
                    .or_else(|| {
                        outer
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, t)| Arc::new((*t).clone()))
                    })
                    .ok_or_else(|| {
                        RuntimeError::Invalid(format!("output '{name}' was not computed"))
                    })?;
                // Two outputs may name one value: keep the slot filled for the next.
                values[*slot] = Some(v.clone());
                Ok((
                    name.clone(),
                    Arc::try_unwrap(v).unwrap_or_else(|a| (*a).clone()),
                ))
            })
            .collect()
    }
}

/// The value of a `Constant` node from whichever attribute it uses.
pub(crate) fn constant_node_value(n: &quench_ir::Node) -> Result<Tensor, crate::OpError> {
    use quench_ir::Attr;
    let (name, attr) =
        n.attrs.iter().next().ok_or_else(|| {
            crate::OpError::Invalid("Constant node has no value attribute".into())
        })?;
    Ok(match (name.as_str(), attr) {
        ("value", Attr::Tensor(t)) => t.clone(),
        ("value_float", Attr::Float(v)) => Tensor::scalar(*v),
        ("value_floats", Attr::Floats(v)) => Tensor::from_vec(vec![v.len()], v.clone())?,
        ("value_int", Attr::Int(v)) => Tensor::scalar(*v),
        ("value_ints", Attr::Ints(v)) => Tensor::from_vec(vec![v.len()], v.clone())?,
        ("value_string", Attr::String(s)) => {
            Tensor::new(vec![], quench_ir::TensorData::String(vec![s.clone()]))?
        }
        ("value_strings", Attr::Strings(s)) => {
            Tensor::new(vec![s.len()], quench_ir::TensorData::String(s.clone()))?
        }
        (other, _) => {
            return Err(crate::OpError::Unsupported(format!(
                "Constant with attribute '{other}'"
            )));
        }
    })
}

/// Checks a fed tensor against the input's declared dtype and fixed dims.
fn check_input(vi: &quench_ir::ValueInfo, t: &Tensor) -> Result<(), RuntimeError> {
    let err = |message: String| {
        Err(RuntimeError::Input {
            name: vi.name.clone(),
            message,
        })
    };
    if let Some(dt) = vi.dtype()
        && dt != t.dtype()
    {
        return err(format!("expected dtype {dt}, got {}", t.dtype()));
    }
    if let Some(shape) = vi.shape() {
        let show = |s: &[Dim]| {
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("×")
        };
        if shape.len() != t.rank() {
            return err(format!(
                "expected shape [{}] (rank {}), got {:?}",
                show(shape),
                shape.len(),
                t.shape()
            ));
        }
        for (d, &actual) in shape.iter().zip(t.shape()) {
            if let Dim::Fixed(want) = d
                && *want != actual as u64
            {
                return err(format!(
                    "expected shape [{}], got {:?}",
                    show(shape),
                    t.shape()
                ));
            }
        }
    }
    Ok(())
}

/// A plan plus the thread pool it runs in: what the CLI and tests hold.
pub struct Session {
    plan: Plan,
    pool: rayon::ThreadPool,
    threads: usize,
}

impl Session {
    /// Plans `model` with every standard op, to run on `threads` threads
    /// (0 = one per core).
    pub fn new(model: &Model, threads: usize) -> Result<Session, RuntimeError> {
        Session::with_registry(model, &Registry::standard(), threads)
    }

    pub fn with_registry(
        model: &Model,
        registry: &Registry,
        threads: usize,
    ) -> Result<Session, RuntimeError> {
        Session::with_plan_options(model, registry, threads, PlanOptions::default())
    }

    /// Plans `model` as `options` say (e.g. values kept for a calibration hook).
    pub fn with_plan_options(
        model: &Model,
        registry: &Registry,
        threads: usize,
        options: PlanOptions,
    ) -> Result<Session, RuntimeError> {
        Session::with_plan(threads, || Plan::with_options(model, registry, options))
    }

    /// Plans `model` with every standard op, taking its weights rather than
    /// copying them (for callers that do not need the model afterwards).
    pub fn from_model(model: Model, threads: usize) -> Result<Session, RuntimeError> {
        Session::with_plan(threads, || {
            Plan::from_model(model, &Registry::standard(), PlanOptions::default())
        })
    }

    fn with_plan(
        threads: usize,
        plan: impl FnOnce() -> Result<Plan, RuntimeError>,
    ) -> Result<Session, RuntimeError> {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| RuntimeError::Invalid(format!("cannot start {threads} threads: {e}")))?;
        Ok(Session {
            plan: plan()?,
            pool,
            threads,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` in this session's thread pool, so work around a run (e.g.
    /// choosing calibration ranges) honours the same thread count.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    pub fn run(
        &self,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        self.run_with(inputs, &mut RunHooks::default())
    }

    pub fn run_with(
        &self,
        inputs: Vec<(String, Tensor)>,
        hooks: &mut RunHooks,
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let ctx = RunCtx {
            threads: self.threads,
        };
        self.pool.install(|| self.plan.run(&ctx, inputs, hooks))
    }
}

#[cfg(test)]
mod observed_tests {
    use super::*;
    use quench_ir::{Node, OpsetImport};

    /// Conv → Relu → Conv on 32 channels, the first Conv's output watched.
    fn model() -> Model {
        let w = |seed: u32| {
            let v: Vec<f32> = (0..32 * 32 * 9)
                .map(|i| {
                    ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 97) as f32 / 97.0
                        - 0.5
                })
                .collect();
            Tensor::from_vec(vec![32, 32, 3, 3], v).unwrap()
        };
        let mut g = Graph {
            nodes: vec![
                Node::new("Conv", "c1", &["x", "w1"], &["y"]),
                Node::new("Relu", "r", &["y"], &["z"]),
                Node::new("Conv", "c2", &["z", "w2"], &["out"]),
            ],
            inputs: vec![ValueInfo::tensor("x", DType::F32, None)],
            outputs: vec![ValueInfo::tensor("out", DType::F32, None)],
            ..Default::default()
        };
        for n in &mut g.nodes {
            if n.op_type == "Conv" {
                n.attrs
                    .insert("pads".into(), quench_ir::Attr::Ints(vec![1; 4]));
            }
        }
        g.initializers.insert("w1".into(), w(1));
        g.initializers.insert("w2".into(), w(2));
        Model {
            ir_version: 8,
            opset_imports: vec![OpsetImport {
                domain: String::new(),
                version: 17,
            }],
            graph: g,
            ..Default::default()
        }
    }

    fn watched(session: &Session, x: &Tensor) -> HashMap<String, Tensor> {
        let mut seen = HashMap::new();
        let mut hook = |name: &str, t: &Tensor| {
            seen.insert(name.to_string(), t.clone());
        };
        let mut hooks = RunHooks {
            on_value: Some(&mut hook),
            ..Default::default()
        };
        session
            .run_with(vec![("x".into(), x.clone())], &mut hooks)
            .unwrap();
        seen
    }

    #[test]
    fn observed_values_survive_fusion_and_match_the_unfused_run() {
        let m = model();
        let x: Vec<f32> = (0..32 * 10 * 10)
            .map(|i| (i % 13) as f32 / 6.0 - 1.0)
            .collect();
        let x = Tensor::from_vec(vec![1, 32, 10, 10], x).unwrap();
        let registry = Registry::standard();
        let plain = Session::with_registry(&m, &registry, 1).unwrap();
        let want = watched(&plain, &x);
        // The plain session's hooked run is unfused: it sees every ONNX value.
        assert!(want.contains_key("y") && want.contains_key("z"));
        let observe = |names: &[&str]| {
            let names = names.iter().map(|n| n.to_string());
            Session::with_plan_options(&m, &registry, 1, PlanOptions::observing(names)).unwrap()
        };
        for names in [&["z"][..], &["y", "z"]] {
            let got = watched(&observe(names), &x);
            for &name in names {
                let (a, b) = (
                    want[name].as_slice::<f32>().unwrap(),
                    got[name].as_slice::<f32>().unwrap(),
                );
                assert_eq!(want[name].shape(), got[name].shape(), "{name}");
                let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (p, q) in a.iter().zip(b) {
                    assert!((p - q).abs() <= 1e-5 * scale, "{name}: {p} vs {q}");
                }
            }
        }
        // Watching z only: Conv+Relu fuse, so y is gone; where the blocked
        // NCHWc kernels are used (AVX-512) the chain runs blocked and the hook
        // also sees values the unfused plan has no name for.
        let got = watched(&observe(&["z"]), &x);
        assert!(!got.contains_key("y"), "{:?}", got.keys());
        if quench_kernels::conv::nchwc::fast() {
            assert!(
                got.keys().any(|k| !want.contains_key(k)),
                "{:?}",
                got.keys()
            );
        }
    }
}
