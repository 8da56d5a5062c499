//! ModelProto -> Model.

use crate::proto::{self, attribute_proto::AttributeType, type_proto};
use crate::{OnnxError, tensor_from_proto};
use prost::Message;
use quench_ir::{Attr, DType, Dim, Graph, Model, Node, OpsetImport, Tensor, ValueInfo, ValueType};
use std::path::Path;

/// Subgraphs deeper than this are refused (a crafted file could recurse forever).
const MAX_GRAPH_DEPTH: usize = 64;

/// Reads an `.onnx` file; external-data files are resolved next to it.
pub fn load_model(path: impl AsRef<Path>) -> Result<Model, OnnxError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| OnnxError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let p = proto::ModelProto::decode(bytes.as_slice())?;
    drop(bytes); // the decoded copy is all that is needed from here
    model_from_proto(p, path.parent())
}

/// Decodes a model from memory; `base_dir` resolves external data.
pub fn model_from_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Model, OnnxError> {
    model_from_proto(proto::ModelProto::decode(bytes)?, base_dir)
}

/// Converts a decoded model, freeing each weight's encoded bytes once it is
/// converted, so a model is held about once in memory rather than three times.
fn model_from_proto(mut p: proto::ModelProto, base_dir: Option<&Path>) -> Result<Model, OnnxError> {
    let mut g = p
        .graph
        .take()
        .ok_or_else(|| OnnxError::Invalid("model has no graph".into()))?;
    let ctx = Ctx { base_dir };
    if p.ir_version.unwrap_or(0) <= 0 && p.opset_import.is_empty() {
        return Err(OnnxError::Invalid(
            "model has no ir_version and no opset_import: not an ONNX model?".into(),
        ));
    }
    Ok(Model {
        ir_version: p.ir_version.unwrap_or(0),
        opset_imports: p
            .opset_import
            .iter()
            .map(|o| OpsetImport {
                domain: o.domain.clone().unwrap_or_default(),
                version: o.version.unwrap_or(0),
            })
            .collect(),
        producer_name: p.producer_name.clone().unwrap_or_default(),
        producer_version: p.producer_version.clone().unwrap_or_default(),
        domain: p.domain.clone().unwrap_or_default(),
        model_version: p.model_version.unwrap_or(0),
        doc_string: p.doc_string.clone().unwrap_or_default(),
        metadata_props: p
            .metadata_props
            .iter()
            .map(|e| {
                (
                    e.key.clone().unwrap_or_default(),
                    e.value.clone().unwrap_or_default(),
                )
            })
            .collect(),
        graph: {
            let mut initializers = indexmap::IndexMap::new();
            for t in std::mem::take(&mut g.initializer) {
                let (name, t) = ctx.initializer(&t)?;
                initializers.insert(name, t);
            }
            let mut graph = ctx.graph(&g, 0)?;
            graph.initializers = initializers;
            graph
        },
        functions: p.functions.iter().map(|f| f.encode_to_vec()).collect(),
    })
}

struct Ctx<'a> {
    base_dir: Option<&'a Path>,
}

impl Ctx<'_> {
    fn graph(&self, g: &proto::GraphProto, depth: usize) -> Result<Graph, OnnxError> {
        if depth > MAX_GRAPH_DEPTH {
            return Err(OnnxError::Invalid(format!(
                "subgraphs nested deeper than {MAX_GRAPH_DEPTH}"
            )));
        }
        let mut initializers = indexmap::IndexMap::new();
        for t in &g.initializer {
            let (name, t) = self.initializer(t)?;
            initializers.insert(name, t);
        }
        let nodes = g
            .node
            .iter()
            .map(|n| self.node(n, depth))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Graph {
            name: g.name.clone().unwrap_or_default(),
            doc_string: g.doc_string.clone().unwrap_or_default(),
            inputs: g.input.iter().map(value_info).collect(),
            outputs: g.output.iter().map(value_info).collect(),
            initializers,
            value_info: g.value_info.iter().map(value_info).collect(),
            nodes,
            sparse_initializers: g
                .sparse_initializer
                .iter()
                .map(|s| s.encode_to_vec())
                .collect(),
        })
    }

    fn initializer(&self, t: &proto::TensorProto) -> Result<(String, Tensor), OnnxError> {
        let name = t.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(OnnxError::Invalid("an initializer has no name".into()));
        }
        Ok((name, tensor_from_proto(t, self.base_dir)?))
    }

    fn node(&self, n: &proto::NodeProto, depth: usize) -> Result<Node, OnnxError> {
        let op_type = n.op_type.clone().unwrap_or_default();
        let name = n.name.clone().unwrap_or_default();
        if op_type.is_empty() {
            return Err(OnnxError::Invalid(format!("node '{name}' has no op_type")));
        }
        let mut attrs = indexmap::IndexMap::new();
        for a in &n.attribute {
            let an = a.name.clone().unwrap_or_default();
            let v = self.attr(a, depth).map_err(|e| {
                OnnxError::Invalid(format!("node '{name}' ({op_type}): attribute '{an}': {e}"))
            })?;
            attrs.insert(an, v);
        }
        Ok(Node {
            name,
            op_type,
            domain: n.domain.clone().unwrap_or_default(),
            inputs: n.input.clone(),
            outputs: n.output.clone(),
            attrs,
            doc_string: n.doc_string.clone().unwrap_or_default(),
        })
    }

    fn attr(&self, a: &proto::AttributeProto, depth: usize) -> Result<Attr, OnnxError> {
        if a.ref_attr_name.is_some() {
            return Ok(Attr::Opaque(a.encode_to_vec()));
        }
        let ty = match a.r#type.and_then(|t| AttributeType::try_from(t).ok()) {
            Some(t) if t != AttributeType::Undefined => t,
            // IR < 0.0.2 files leave the type unset: infer it from the field used.
            _ => guess_type(a),
        };
        Ok(match ty {
            AttributeType::Float => Attr::Float(a.f.unwrap_or(0.0)),
            AttributeType::Int => Attr::Int(a.i.unwrap_or(0)),
            AttributeType::String => Attr::String(a.s.clone().unwrap_or_default()),
            AttributeType::Tensor => {
                let t = a.t.as_ref().ok_or_else(|| {
                    OnnxError::Invalid("tensor attribute without a tensor".into())
                })?;
                Attr::Tensor(tensor_from_proto(t, self.base_dir)?)
            }
            AttributeType::Graph => {
                let g = a
                    .g
                    .as_ref()
                    .ok_or_else(|| OnnxError::Invalid("graph attribute without a graph".into()))?;
                Attr::Graph(self.graph(g, depth + 1)?)
            }
            AttributeType::Floats => Attr::Floats(a.floats.clone()),
            AttributeType::Ints => Attr::Ints(a.ints.clone()),
            AttributeType::Strings => Attr::Strings(a.strings.clone()),
            AttributeType::Tensors => Attr::Tensors(
                a.tensors
                    .iter()
                    .map(|t| tensor_from_proto(t, self.base_dir))
                    .collect::<Result<_, _>>()?,
            ),
            AttributeType::Graphs => Attr::Graphs(
                a.graphs
                    .iter()
                    .map(|g| self.graph(g, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            _ => Attr::Opaque(a.encode_to_vec()),
        })
    }
}

fn guess_type(a: &proto::AttributeProto) -> AttributeType {
    if a.f.is_some() {
        AttributeType::Float
    } else if a.i.is_some() {
        AttributeType::Int
    } else if a.s.is_some() {
        AttributeType::String
    } else if a.t.is_some() {
        AttributeType::Tensor
    } else if a.g.is_some() {
        AttributeType::Graph
    } else if !a.floats.is_empty() {
        AttributeType::Floats
    } else if !a.ints.is_empty() {
        AttributeType::Ints
    } else if !a.strings.is_empty() {
        AttributeType::Strings
    } else if !a.tensors.is_empty() {
        AttributeType::Tensors
    } else if !a.graphs.is_empty() {
        AttributeType::Graphs
    } else {
        AttributeType::Undefined
    }
}

fn value_info(v: &proto::ValueInfoProto) -> ValueInfo {
    let ty = v.r#type.as_ref().map(|t| match &t.value {
        Some(type_proto::Value::TensorType(tt))
            if tt.elem_type.and_then(DType::from_onnx).is_some() =>
        {
            ValueType::Tensor {
                dtype: tt
                    .elem_type
                    .and_then(DType::from_onnx)
                    .unwrap_or(DType::F32),
                shape: tt.shape.as_ref().map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(proto::tensor_shape_proto::dimension::Value::DimValue(v))
                                if *v >= 0 =>
                            {
                                Dim::Fixed(*v as u64)
                            }
                            Some(proto::tensor_shape_proto::dimension::Value::DimParam(p))
                                if !p.is_empty() =>
                            {
                                Dim::Symbol(p.clone())
                            }
                            _ => Dim::Unknown,
                        })
                        .collect()
                }),
            }
        }
        _ => ValueType::Opaque(t.encode_to_vec()),
    });
    ValueInfo {
        name: v.name.clone().unwrap_or_default(),
        ty,
        doc_string: v.doc_string.clone().unwrap_or_default(),
    }
}
