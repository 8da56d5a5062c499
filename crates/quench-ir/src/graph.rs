//! Models, graphs, nodes and attributes.

use crate::{DType, IrError, Tensor};
use indexmap::IndexMap;

/// A dimension of a value's static shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(u64),
    /// A named dimension such as `batch`, kept through inference.
    Symbol(String),
    Unknown,
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(d) => write!(f, "{d}"),
            Dim::Symbol(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// The type of a graph value.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueType {
    /// A tensor; `shape` is `None` when even the rank is unknown.
    Tensor {
        dtype: DType,
        shape: Option<Vec<Dim>>,
    },
    /// Sequence, map, optional and other non-tensor types, kept as encoded
    /// `onnx.TypeProto` bytes so they round-trip.
    Opaque(Vec<u8>),
}

/// A named, typed value: a graph input or output, or an annotated intermediate.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub ty: Option<ValueType>,
    pub doc_string: String,
}

impl ValueInfo {
    pub fn tensor(name: impl Into<String>, dtype: DType, shape: Option<Vec<Dim>>) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            ty: Some(ValueType::Tensor { dtype, shape }),
            doc_string: String::new(),
        }
    }

    pub fn dtype(&self) -> Option<DType> {
        match &self.ty {
            Some(ValueType::Tensor { dtype, .. }) => Some(*dtype),
            _ => None,
        }
    }

    pub fn shape(&self) -> Option<&[Dim]> {
        match &self.ty {
            Some(ValueType::Tensor { shape: Some(s), .. }) => Some(s),
            _ => None,
        }
    }
}

/// A node attribute.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Float(f32),
    Int(i64),
    String(Vec<u8>),
    Tensor(Tensor),
    Graph(Graph),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Vec<u8>>),
    Tensors(Vec<Tensor>),
    Graphs(Vec<Graph>),
    /// Sparse tensors, type protos and function references: the whole encoded
    /// `onnx.AttributeProto`, kept so the model round-trips.
    Opaque(Vec<u8>),
}

impl Attr {
    fn kind(&self) -> &'static str {
        match self {
            Attr::Float(_) => "float",
            Attr::Int(_) => "int",
            Attr::String(_) => "string",
            Attr::Tensor(_) => "tensor",
            Attr::Graph(_) => "graph",
            Attr::Floats(_) => "floats",
            Attr::Ints(_) => "ints",
            Attr::Strings(_) => "strings",
            Attr::Tensors(_) => "tensors",
            Attr::Graphs(_) => "graphs",
            Attr::Opaque(_) => "opaque",
        }
    }
}

/// One operator application.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    /// Operator domain; `""` (or `ai.onnx`) is the default ONNX domain.
    pub domain: String,
    /// Input value names; `""` marks an omitted optional input.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: IndexMap<String, Attr>,
    pub doc_string: String,
}

impl Node {
    pub fn new(op_type: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            name: name.into(),
            op_type: op_type.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn with_attr(mut self, name: &str, attr: Attr) -> Node {
        self.attrs.insert(name.into(), attr);
        self
    }

    /// The name used in messages: the node name, or its first output.
    pub fn label(&self) -> String {
        if !self.name.is_empty() {
            self.name.clone()
        } else {
            format!(
                "{} -> {}",
                self.op_type,
                self.outputs.first().map(String::as_str).unwrap_or("?")
            )
        }
    }

    /// The input at `i`, unless it is absent or omitted.
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn wrong(&self, name: &str, attr: &Attr, want: &str) -> IrError {
        IrError::Attribute {
            node: self.label(),
            name: name.into(),
            reason: format!("is {}, expected {want}", attr.kind()),
        }
    }

    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.get(name)
    }

    pub fn attr_int(&self, name: &str) -> Result<Option<i64>, IrError> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(a) => Err(self.wrong(name, a, "int")),
        }
    }

    pub fn attr_int_or(&self, name: &str, default: i64) -> Result<i64, IrError> {
        Ok(self.attr_int(name)?.unwrap_or(default))
    }

    pub fn attr_float(&self, name: &str) -> Result<Option<f32>, IrError> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(*v)),
            Some(Attr::Int(v)) => Ok(Some(*v as f32)),
            Some(a) => Err(self.wrong(name, a, "float")),
        }
    }

    pub fn attr_float_or(&self, name: &str, default: f32) -> Result<f32, IrError> {
        Ok(self.attr_float(name)?.unwrap_or(default))
    }

    pub fn attr_ints(&self, name: &str) -> Result<Option<&[i64]>, IrError> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(a) => Err(self.wrong(name, a, "ints")),
        }
    }

    pub fn attr_floats(&self, name: &str) -> Result<Option<&[f32]>, IrError> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v)),
            Some(a) => Err(self.wrong(name, a, "floats")),
        }
    }

    pub fn attr_string(&self, name: &str) -> Result<Option<String>, IrError> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::String(v)) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            Some(a) => Err(self.wrong(name, a, "string")),
        }
    }

    pub fn attr_string_or(&self, name: &str, default: &str) -> Result<String, IrError> {
        Ok(self
            .attr_string(name)?
            .unwrap_or_else(|| default.to_string()))
    }

    pub fn attr_strings(&self, name: &str) -> Result<Option<Vec<String>>, IrError> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Strings(v)) => Ok(Some(
                v.iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            )),
            Some(a) => Err(self.wrong(name, a, "strings")),
        }
    }

    pub fn attr_tensor(&self, name: &str) -> Result<Option<&Tensor>, IrError> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Tensor(t)) => Ok(Some(t)),
            Some(a) => Err(self.wrong(name, a, "tensor")),
        }
    }

    pub fn attr_graph(&self, name: &str) -> Result<Option<&Graph>, IrError> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Graph(g)) => Ok(Some(g)),
            Some(a) => Err(self.wrong(name, a, "graph")),
        }
    }

    /// Subgraphs held in attributes (If branches, Loop bodies).
    pub fn subgraphs(&self) -> impl Iterator<Item = &Graph> {
        self.attrs.values().flat_map(|a| match a {
            Attr::Graph(g) => std::slice::from_ref(g).iter(),
            Attr::Graphs(gs) => gs.iter(),
            _ => [].iter(),
        })
    }
}

/// A computation graph: the body of a model or of a subgraph attribute.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    pub doc_string: String,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// Constant weights by name, in file order.
    pub initializers: IndexMap<String, Tensor>,
    /// Known types of intermediate values.
    pub value_info: Vec<ValueInfo>,
    pub nodes: Vec<Node>,
    /// Sparse initializers, kept as encoded `onnx.SparseTensorProto`.
    pub sparse_initializers: Vec<Vec<u8>>,
}

impl Graph {
    /// Graph inputs that are not also initializers: what a caller must feed.
    pub fn runtime_inputs(&self) -> impl Iterator<Item = &ValueInfo> {
        self.inputs
            .iter()
            .filter(|i| !self.initializers.contains_key(&i.name))
    }

    /// The node producing each value.
    pub fn producers(&self) -> std::collections::HashMap<&str, usize> {
        let mut m = std::collections::HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                m.insert(o.as_str(), i);
            }
        }
        m
    }

    /// Node indices in an order where every producer precedes its consumers.
    ///
    /// Names defined by `outer` (an enclosing graph's values) count as available.
    /// Fails on a cycle or on an input that nothing defines.
    pub fn topo_order(&self, outer: &dyn Fn(&str) -> bool) -> Result<Vec<usize>, IrError> {
        use std::collections::{HashMap, HashSet};
        let mut available: HashSet<&str> = self.inputs.iter().map(|v| v.name.as_str()).collect();
        available.extend(self.initializers.keys().map(String::as_str));
        let producers = self.producers();
        let mut waiting: Vec<usize> = vec![0; self.nodes.len()];
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let mut deps: HashSet<&str> = HashSet::new();
            for name in n
                .inputs
                .iter()
                .map(String::as_str)
                .chain(subgraph_free_names(n))
            {
                if name.is_empty() || available.contains(name) {
                    continue;
                }
                if producers.contains_key(name) {
                    deps.insert(name);
                } else if !outer(name) {
                    return Err(IrError::Invalid(format!(
                        "node '{}' ({}) reads '{name}', which no node, input or initializer defines",
                        n.label(),
                        n.op_type
                    )));
                }
            }
            waiting[i] = deps.len();
            for d in deps {
                consumers.entry(d).or_default().push(i);
            }
        }
        let mut ready: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| waiting[i] == 0)
            .rev()
            .collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(i) = ready.pop() {
            order.push(i);
            for o in &self.nodes[i].outputs {
                if let Some(cs) = consumers.get(o.as_str()) {
                    for &c in cs {
                        waiting[c] -= 1;
                        if waiting[c] == 0 {
                            ready.push(c);
                        }
                    }
                }
            }
        }
        if order.len() != self.nodes.len() {
            let stuck: Vec<String> = (0..self.nodes.len())
                .filter(|i| waiting[*i] > 0)
                .take(3)
                .map(|i| self.nodes[i].label())
                .collect();
            return Err(IrError::Invalid(format!(
                "graph has a cycle through node(s) {}",
                stuck.join(", ")
            )));
        }
        Ok(order)
    }
}

/// Names a node's subgraphs read from enclosing scopes (implicit inputs).
pub fn subgraph_free_names(node: &Node) -> impl Iterator<Item = &str> {
    let mut names: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for g in node.subgraphs() {
        collect_free_names(g, &mut names, &mut seen);
    }
    names.into_iter()
}

/// Appends `g`'s free names to `out` once each (`seen` keeps this linear:
/// a crafted subgraph may read hundreds of thousands of names).
fn collect_free_names<'a>(
    g: &'a Graph,
    out: &mut Vec<&'a str>,
    seen: &mut std::collections::HashSet<&'a str>,
) {
    use std::collections::HashSet;
    let mut defined: HashSet<&str> = g.inputs.iter().map(|v| v.name.as_str()).collect();
    defined.extend(g.initializers.keys().map(String::as_str));
    for n in &g.nodes {
        defined.extend(n.outputs.iter().map(String::as_str));
    }
    let mut inner = Vec::new();
    let mut inner_seen = HashSet::new();
    for n in &g.nodes {
        inner.extend(n.inputs.iter().map(String::as_str));
        for sg in n.subgraphs() {
            collect_free_names(sg, &mut inner, &mut inner_seen);
        }
    }
    inner.extend(g.outputs.iter().map(|v| v.name.as_str()));
    for name in inner {
        if !name.is_empty() && !defined.contains(name) && seen.insert(name) {
            out.push(name);
        }
    }
}

/// An operator set a model imports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpsetImport {
    pub domain: String,
    pub version: i64,
}

/// A whole model: the main graph plus file-level metadata.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Model {
    pub ir_version: i64,
    pub opset_imports: Vec<OpsetImport>,
    pub producer_name: String,
    pub producer_version: String,
    pub domain: String,
    pub model_version: i64,
    pub doc_string: String,
    pub metadata_props: Vec<(String, String)>,
    pub graph: Graph,
    /// Model-local functions, kept as encoded `onnx.FunctionProto`.
    pub functions: Vec<Vec<u8>>,
}

impl Model {
    /// The imported version of a domain (`""` and `ai.onnx` are the same).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let norm = |d: &str| if d == "ai.onnx" { "" } else { d }.to_string();
        self.opset_imports
            .iter()
            .find(|o| norm(&o.domain) == norm(domain))
            .map(|o| o.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(edges: &[(&str, &str)]) -> Graph {
        Graph {
            inputs: vec![ValueInfo::tensor("x", DType::F32, None)],
            nodes: edges
                .iter()
                .enumerate()
                .map(|(i, (a, b))| Node::new("Relu", &format!("n{i}"), &[a], &[b]))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn topo_order_sorts_out_of_order_nodes() {
        let g = chain(&[("b", "c"), ("x", "a"), ("a", "b")]);
        assert_eq!(g.topo_order(&|_| false).unwrap(), vec![1, 2, 0]);
    }

    #[test]
    fn topo_order_reports_cycles_and_undefined_inputs() {
        let g = chain(&[("x", "a"), ("c", "b"), ("b", "c")]);
        assert!(
            g.topo_order(&|_| false)
                .unwrap_err()
                .to_string()
                .contains("cycle")
        );
        let g = chain(&[("nope", "a")]);
        assert!(
            g.topo_order(&|_| false)
                .unwrap_err()
                .to_string()
                .contains("'nope'")
        );
    }

    #[test]
    fn many_free_names_are_collected_in_linear_time() {
        // A crafted If body reading 100k distinct outer names used to take
        // quadratic time (a Vec::contains per name); repeats still count once.
        let body = Graph {
            nodes: (0..100_000)
                .map(|i| {
                    let a = format!("outer{i}");
                    let b = format!("outer{}", i / 2);
                    Node::new("Add", "", &[&a, &b], &[&format!("t{i}")])
                })
                .collect(),
            outputs: vec![ValueInfo::tensor("t0", DType::F32, None)],
            ..Default::default()
        };
        let node = Node::new("If", "if", &["cond"], &["y"])
            .with_attr("then_branch", Attr::Graph(body))
            .with_attr("else_branch", Attr::Graph(Graph::default()));
        let names: Vec<&str> = subgraph_free_names(&node).collect();
        assert_eq!(names.len(), 100_000);
        assert_eq!(&names[..3], &["outer0", "outer1", "outer2"]);
    }
}
