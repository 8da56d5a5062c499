//! What the rewrites need to know about a node list: who reads each value,
//! who makes it, and which values are constants.

use super::is_onnx;
use quench_ir::{Attr, Graph, Node, Tensor};
use std::collections::HashMap;

pub(crate) struct Index<'a> {
    /// Readers of each value by node index; graph outputs and subgraph reads
    /// count as `None`, readers that cannot be fused into.
    readers: HashMap<&'a str, Vec<Option<usize>>>,
    producers: HashMap<&'a str, usize>,
    consts: HashMap<&'a str, &'a Tensor>,
}

impl<'a> Index<'a> {
    pub fn new(nodes: &'a [Node], graph: &'a Graph) -> Index<'a> {
        let mut readers: HashMap<&str, Vec<Option<usize>>> = HashMap::new();
        let mut producers = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for name in n.inputs.iter().filter(|s| !s.is_empty()) {
                readers.entry(name).or_default().push(Some(i));
            }
            for name in quench_ir::graph::subgraph_free_names(n) {
                readers.entry(name).or_default().push(None);
            }
            for o in n.outputs.iter().filter(|s| !s.is_empty()) {
                producers.insert(o.as_str(), i);
            }
        }
        for o in &graph.outputs {
            readers.entry(&o.name).or_default().push(None);
        }
        let mut consts: HashMap<&str, &Tensor> = graph
            .initializers
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        for n in nodes {
            if is_onnx(n, "Constant")
                && n.inputs.is_empty()
                && let (Some(out), Some((_, Attr::Tensor(t)))) =
                    (n.outputs.first(), n.attrs.first())
            {
                consts.insert(out, t);
            }
        }
        // An initializer that is also a graph input can be overridden at run time.
        for vi in &graph.inputs {
            consts.remove(vi.name.as_str());
        }
        Index {
            readers,
            producers,
            consts,
        }
    }

    /// The one node reading `name`, if it has exactly one reader and that
    /// reader is a node of this list.
    pub fn only_reader(&self, name: &str) -> Option<usize> {
        match self.readers.get(name).map(Vec::as_slice) {
            Some([Some(j)]) => Some(*j),
            _ => None,
        }
    }

    pub fn producer(&self, name: &str) -> Option<usize> {
        self.producers.get(name).copied()
    }

    pub fn constant(&self, name: &str) -> Option<&'a Tensor> {
        self.consts.get(name).copied()
    }

    /// The value of a one-element f32 constant.
    pub fn scalar(&self, name: &str) -> Option<f32> {
        let v = self.constant(name)?.as_slice::<f32>().ok()?;
        (v.len() == 1).then(|| v[0])
    }
}
