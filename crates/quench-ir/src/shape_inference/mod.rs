//! Static shape and type inference over the IR.
//!
//! Walks a graph in topological order and derives, for every value, its dtype
//! and as much of its shape as can be known before running: fixed dims where
//! they follow from the inputs and constants, named symbols (`batch`, `seq`)
//! where they flow through unchanged, and [`Dim::Unknown`] elsewhere. Small
//! integer tensors that describe shapes (the `Shape → Gather → Unsqueeze →
//! Concat → Reshape` chains of PyTorch exports) are folded symbolically so
//! that Reshape, Expand, Slice, ConstantOfShape, Range and Resize targets
//! resolve. Ops without a rule leave their outputs untyped; shapes that
//! contradict each other are an error naming the node.

mod dims;
mod elementwise;
mod fold;
mod nn;
mod slicing;
mod tensor_ops;
#[cfg(test)]
mod tests;

pub use dims::fmt_shape;

use crate::{DType, Dim, Graph, IrError, Model, Node, Tensor, ValueInfo, ValueType};
use std::collections::{BTreeMap, HashMap};

/// One element of a small integer tensor whose contents are (partly) known.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SymInt {
    Int(i64),
    /// Equal to the named dimension.
    Sym(String),
    Unknown,
}

impl SymInt {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            SymInt::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The dimension this element describes when used as a target size.
    pub fn to_dim(&self) -> Dim {
        match self {
            SymInt::Int(v) => dims::dim_from_i64(*v),
            SymInt::Sym(s) => Dim::Symbol(s.clone()),
            SymInt::Unknown => Dim::Unknown,
        }
    }

    pub fn from_dim(d: &Dim) -> SymInt {
        match d {
            Dim::Fixed(v) => SymInt::Int(*v as i64),
            Dim::Symbol(s) => SymInt::Sym(s.clone()),
            Dim::Unknown => SymInt::Unknown,
        }
    }
}

/// What inference knows about one value.
#[derive(Clone, Debug, PartialEq)]
pub struct Fact {
    pub dtype: DType,
    /// `None` when even the rank is unknown.
    pub shape: Option<Vec<Dim>>,
    /// Row-major contents of a small integer tensor of rank 0 or 1, where
    /// known (constants, or folded shape arithmetic).
    pub value: Option<Vec<SymInt>>,
    /// A small constant tensor of any dtype (Resize scales, Clip bounds).
    pub konst: Option<Tensor>,
}

/// Largest constant kept in a [`Fact`]; bigger ones are weights, not shapes.
const MAX_CONST_ELEMS: usize = 4096;

impl Fact {
    pub fn new(dtype: DType, shape: Option<Vec<Dim>>) -> Fact {
        Fact {
            dtype,
            shape,
            value: None,
            konst: None,
        }
    }

    pub fn shaped(dtype: DType, shape: Vec<Dim>) -> Fact {
        Fact::new(dtype, Some(shape))
    }

    /// The fact for a known tensor: exact shape, plus its contents if small.
    pub fn of_tensor(t: &Tensor) -> Fact {
        let shape = t.shape().iter().map(|&d| Dim::Fixed(d as u64)).collect();
        let mut f = Fact::shaped(t.dtype(), shape);
        if t.numel() <= MAX_CONST_ELEMS {
            if t.rank() <= 1
                && let Ok(v) = t.to_i64_vec()
            {
                f.value = Some(v.into_iter().map(SymInt::Int).collect());
            }
            f.konst = Some(t.clone());
        }
        f
    }

    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }

    /// Every element's integer value, when all are known.
    pub fn ints(&self) -> Option<Vec<i64>> {
        self.value.as_ref()?.iter().map(SymInt::as_int).collect()
    }

    fn value_type(&self) -> ValueType {
        ValueType::Tensor {
            dtype: self.dtype,
            shape: self.shape.clone(),
        }
    }
}

/// Summary of a [`infer_shapes`] run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShapeReport {
    /// Values (node outputs, subgraphs included) given a type.
    pub typed: usize,
    /// Node outputs left untyped because their op has no rule or its inputs were unknown.
    pub untyped: usize,
    /// Typed values whose rank and every dim are known (fixed or symbolic).
    pub complete: usize,
    /// Op types without an inference rule, with how many nodes use them.
    pub unknown_ops: BTreeMap<String, usize>,
}

/// Infers the type of every value of `model`, subgraphs included.
///
/// Declared graph inputs and initializers seed the inference; the graph's
/// existing `value_info` is ignored (use [`infer_shapes`] to write results back).
pub fn infer(model: &Model) -> Result<HashMap<String, Fact>, IrError> {
    let mut cx = Engine::new(model);
    let mut all = HashMap::new();
    let facts = cx.graph(&model.graph, &Scope::root(), Some(&mut all))?;
    all.extend(facts);
    Ok(all)
}

/// Infers every intermediate value's type and writes it to the `value_info`
/// of the graph (and subgraph) that defines it, replacing earlier entries.
/// Graph outputs whose declared type is missing or less precise are refined.
pub fn infer_shapes(model: &mut Model) -> Result<ShapeReport, IrError> {
    let mut cx = Engine::new(model);
    let mut graph = std::mem::take(&mut model.graph);
    let res = cx.fill(&mut graph, &Scope::root());
    model.graph = graph;
    res?;
    Ok(cx.report)
}

/// Names visible to a graph: its own facts plus those of enclosing graphs.
struct Scope<'a> {
    local: &'a HashMap<String, Fact>,
    parent: Option<&'a Scope<'a>>,
}

static EMPTY: std::sync::LazyLock<HashMap<String, Fact>> = std::sync::LazyLock::new(HashMap::new);

impl<'a> Scope<'a> {
    fn root() -> Scope<'static> {
        Scope {
            local: &EMPTY,
            parent: None,
        }
    }

    fn get(&self, name: &str) -> Option<&Fact> {
        self.local
            .get(name)
            .or_else(|| self.parent.and_then(|p| p.get(name)))
    }
}

struct Engine {
    opset: i64,
    report: ShapeReport,
}

/// The inputs and attributes one op rule sees.
pub(crate) struct OpCx<'a> {
    pub node: &'a Node,
    pub opset: i64,
    pub inputs: Vec<Option<&'a Fact>>,
}

/// An op rule's result: one entry per output (`None` = unknown), or a reason
/// the inputs are inconsistent.
pub(crate) type Outs = Result<Vec<Option<Fact>>, String>;

impl<'a> OpCx<'a> {
    pub fn fact(&self, i: usize) -> Option<&'a Fact> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn dtype(&self, i: usize) -> Option<DType> {
        self.fact(i).map(|f| f.dtype)
    }

    pub fn shape(&self, i: usize) -> Option<&'a [Dim]> {
        self.fact(i).and_then(|f| f.shape.as_deref())
    }

    /// Whether input `i` is present in the node (not omitted).
    pub fn has(&self, i: usize) -> bool {
        self.node.input(i).is_some()
    }

    /// Known integer contents of input `i`.
    pub fn ints(&self, i: usize) -> Option<Vec<i64>> {
        self.fact(i).and_then(Fact::ints)
    }

    pub fn attr_int(&self, name: &str, default: i64) -> Result<i64, String> {
        self.node
            .attr_int_or(name, default)
            .map_err(|e| e.to_string())
    }

    pub fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        self.node
            .attr_ints(name)
            .map(|o| o.map(<[i64]>::to_vec))
            .map_err(|e| e.to_string())
    }

    pub fn attr_string(&self, name: &str, default: &str) -> Result<String, String> {
        self.node
            .attr_string_or(name, default)
            .map_err(|e| e.to_string())
    }

    /// One output fact, padded with unknowns for any further outputs.
    pub fn one(&self, f: Fact) -> Outs {
        Ok(vec![Some(f)])
    }
}

/// Input `i`'s dtype or return "unknown output" from the rule.
macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(vec![]),
        }
    };
}
pub(crate) use need;

impl Engine {
    fn new(model: &Model) -> Engine {
        Engine {
            opset: model.opset("").unwrap_or(21),
            report: ShapeReport::default(),
        }
    }

    /// Infers one graph. Returns the facts of the names it defines; when
    /// `nested` is given, subgraph facts are added to it.
    fn graph(
        &mut self,
        g: &Graph,
        outer: &Scope,
        mut nested: Option<&mut HashMap<String, Fact>>,
    ) -> Result<HashMap<String, Fact>, IrError> {
        let mut facts: HashMap<String, Fact> = HashMap::new();
        for vi in &g.inputs {
            if let Some(t) = g.initializers.get(&vi.name) {
                // An initializer that is also an input is only a default: its shape holds, its value may not.
                let mut f = Fact::of_tensor(t);
                f.value = None;
                f.konst = None;
                facts.insert(vi.name.clone(), f);
            } else if let Some(ValueType::Tensor { dtype, shape }) = &vi.ty {
                facts.insert(vi.name.clone(), Fact::new(*dtype, shape.clone()));
            }
        }
        for (name, t) in &g.initializers {
            facts
                .entry(name.clone())
                .or_insert_with(|| Fact::of_tensor(t));
        }
        // A subgraph may read any outer name, typed or not.
        let order = g.topo_order(&|_| outer.parent.is_some())?;
        for i in order {
            let node = &g.nodes[i];
            let outs = {
                let scope = Scope {
                    local: &facts,
                    parent: Some(outer),
                };
                self.node(node, &scope, nested.as_deref_mut())?
            };
            for (k, name) in node.outputs.iter().enumerate() {
                if name.is_empty() {
                    continue;
                }
                match outs.get(k).cloned().flatten() {
                    Some(f) => {
                        facts.insert(name.clone(), f);
                    }
                    None => {
                        facts.remove(name);
                    }
                }
            }
        }
        Ok(facts)
    }

    fn node(
        &mut self,
        node: &Node,
        scope: &Scope,
        nested: Option<&mut HashMap<String, Fact>>,
    ) -> Result<Vec<Option<Fact>>, IrError> {
        let wrap = |msg: String| {
            IrError::Invalid(format!(
                "shape inference: node '{}' ({}): {msg}",
                node.label(),
                node.op_type
            ))
        };
        let inputs: Vec<Option<&Fact>> = node
            .inputs
            .iter()
            .map(|n| if n.is_empty() { None } else { scope.get(n) })
            .collect();
        let is_onnx = node.domain.is_empty() || node.domain == "ai.onnx";
        let cx = OpCx {
            node,
            opset: self.opset,
            inputs,
        };
        let mut outs = if is_onnx && node.op_type == "If" {
            Some(self.if_node(&cx, scope, nested)?)
        } else if is_onnx {
            let op = node.op_type.as_str();
            let rule = elementwise::rule(op)
                .or_else(|| nn::rule(op))
                .or_else(|| tensor_ops::rule(op))
                .or_else(|| slicing::rule(op));
            match rule {
                Some(rule) => Some(rule(&cx).map_err(wrap)?),
                None => None,
            }
        } else {
            None
        };
        if outs.is_none() {
            *self
                .report
                .unknown_ops
                .entry(if is_onnx {
                    node.op_type.clone()
                } else {
                    format!("{}:{}", node.domain, node.op_type)
                })
                .or_default() += 1;
        }
        if let Some(outs) = outs.as_mut()
            && let Some(Some(first)) = outs.first_mut()
            && first.value.is_none()
        {
            first.value = fold::fold(&cx, first);
        }
        let outs = outs.unwrap_or_default();
        for (k, name) in node.outputs.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            match outs.get(k).and_then(Option::as_ref) {
                Some(f) => {
                    self.report.typed += 1;
                    if f.shape.as_ref().is_some_and(|s| !s.contains(&Dim::Unknown)) {
                        self.report.complete += 1;
                    }
                }
                None => self.report.untyped += 1,
            }
        }
        Ok(outs)
    }

    /// If: when the condition is a known constant, the taken branch decides;
    /// otherwise each output is what both branches agree on.
    fn if_node(
        &mut self,
        cx: &OpCx,
        scope: &Scope,
        mut nested: Option<&mut HashMap<String, Fact>>,
    ) -> Result<Vec<Option<Fact>>, IrError> {
        let node = cx.node;
        let branch = |name: &str| {
            node.attr_graph(name)?.ok_or_else(|| IrError::Attribute {
                node: node.label(),
                name: name.into(),
                reason: "is missing".into(),
            })
        };
        let (then_g, else_g) = (branch("then_branch")?, branch("else_branch")?);
        let cond = cx
            .fact(0)
            .and_then(|f| f.konst.as_ref())
            .and_then(|t| match t.data() {
                crate::TensorData::Bool(v) if v.len() == 1 => Some(v[0]),
                _ => None,
            });
        let mut results = Vec::new();
        for g in [then_g, else_g] {
            let facts = self.graph(g, scope, nested.as_deref_mut())?;
            let outs: Vec<Option<Fact>> = g
                .outputs
                .iter()
                .map(|o| with_declared(facts.get(&o.name).cloned(), o))
                .collect();
            if let Some(n) = nested.as_deref_mut() {
                n.extend(facts);
            }
            results.push(outs);
        }
        let else_outs = results.pop().unwrap_or_default();
        let then_outs = results.pop().unwrap_or_default();
        if then_outs.len() != else_outs.len() {
            return Err(IrError::Invalid(format!(
                "shape inference: node '{}' (If): then_branch has {} outputs, else_branch {}",
                node.label(),
                then_outs.len(),
                else_outs.len()
            )));
        }
        Ok(match cond {
            Some(true) => then_outs,
            Some(false) => else_outs,
            None => then_outs
                .into_iter()
                .zip(else_outs)
                .map(|(a, b)| join_facts(a?, b?))
                .collect(),
        })
    }

    /// Infers `g` and writes its facts into `value_info` (and into every subgraph's).
    fn fill(&mut self, g: &mut Graph, outer: &Scope) -> Result<(), IrError> {
        let facts = self.graph(g, outer, None)?;
        let scope = Scope {
            local: &facts,
            parent: Some(outer),
        };
        let mut sub = Engine {
            opset: self.opset,
            report: ShapeReport::default(),
        };
        for node in &mut g.nodes {
            for attr in node.attrs.values_mut() {
                match attr {
                    crate::Attr::Graph(sg) => sub.fill(sg, &scope)?,
                    crate::Attr::Graphs(gs) => {
                        for sg in gs {
                            sub.fill(sg, &scope)?;
                        }
                    }
                    _ => {}
                }
            }
        }
        // Subgraph counts were already made while inferring the If nodes of this graph.
        for u in sub.report.unknown_ops.keys() {
            self.report.unknown_ops.entry(u.clone()).or_insert(0);
        }
        let outputs: HashMap<&str, usize> = g
            .outputs
            .iter()
            .enumerate()
            .map(|(i, o)| (o.name.as_str(), i))
            .collect();
        let mut value_info = Vec::new();
        let mut refined = Vec::new();
        for node in &g.nodes {
            for name in node.outputs.iter().filter(|n| !n.is_empty()) {
                let Some(f) = facts.get(name) else { continue };
                if let Some(&i) = outputs.get(name.as_str()) {
                    refined.push((i, f.value_type()));
                } else {
                    value_info.push(ValueInfo {
                        name: name.clone(),
                        ty: Some(f.value_type()),
                        doc_string: String::new(),
                    });
                }
            }
        }
        for (i, ty) in refined {
            if let Some(o) = g.outputs.get_mut(i) {
                o.ty = Some(refine(o.ty.take(), ty));
            }
        }
        g.value_info = value_info;
        Ok(())
    }
}

/// A declared output type refined by an inferred one, dim by dim.
fn refine(declared: Option<ValueType>, inferred: ValueType) -> ValueType {
    match (declared, &inferred) {
        (
            Some(ValueType::Tensor {
                dtype,
                shape: Some(d),
            }),
            ValueType::Tensor { shape: Some(s), .. },
        ) if d.len() == s.len() => ValueType::Tensor {
            dtype,
            shape: Some(
                d.iter()
                    .zip(s)
                    .map(|(a, b)| match a {
                        Dim::Unknown => b.clone(),
                        _ => a.clone(),
                    })
                    .collect(),
            ),
        },
        (Some(ValueType::Tensor { dtype, shape: None }), ValueType::Tensor { shape, .. }) => {
            ValueType::Tensor {
                dtype,
                shape: shape.clone(),
            }
        }
        (Some(d @ ValueType::Tensor { .. }), _) | (Some(d @ ValueType::Opaque(_)), _) => d,
        (None, _) => inferred,
    }
}

/// An inferred fact completed by a branch output's declared type, dim by dim.
fn with_declared(inferred: Option<Fact>, declared: &ValueInfo) -> Option<Fact> {
    let Some(ValueType::Tensor { dtype, shape }) = &declared.ty else {
        return inferred;
    };
    let Some(mut f) = inferred else {
        return Some(Fact::new(*dtype, shape.clone()));
    };
    match (&mut f.shape, shape) {
        (None, Some(d)) => f.shape = Some(d.clone()),
        (Some(s), Some(d)) if s.len() == d.len() => {
            for (a, b) in s.iter_mut().zip(d) {
                if let Ok(u) = dims::unify(a, b) {
                    *a = u;
                }
            }
        }
        _ => {}
    }
    Some(f)
}

/// What two possible facts for one value have in common.
fn join_facts(a: Fact, b: Fact) -> Option<Fact> {
    if a.dtype != b.dtype {
        return None;
    }
    let shape = match (a.shape, b.shape) {
        (Some(x), Some(y)) if x.len() == y.len() => {
            Some(x.iter().zip(&y).map(|(p, q)| dims::join(p, q)).collect())
        }
        _ => None,
    };
    Some(Fact::new(a.dtype, shape))
}
