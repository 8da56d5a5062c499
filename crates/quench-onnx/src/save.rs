//! Model -> ModelProto, written atomically.

use crate::proto::{self, attribute_proto::AttributeType, tensor_shape_proto::dimension};
use crate::{OnnxError, tensor_to_proto};
use prost::Message;
use quench_ir::{Attr, Dim, Graph, Model, Node, ValueInfo, ValueType};
use std::path::Path;

fn some_str(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Encodes a model as ONNX protobuf bytes (all weights inline).
pub fn model_to_bytes(model: &Model) -> Result<Vec<u8>, OnnxError> {
    let p = model_proto(model, &mut |_, t| Ok(t))?;
    Ok(p.encode_to_vec())
}

/// Writes `model` to `path` via a temporary file and a rename, so a crash
/// never leaves a half-written model.
pub fn save_model(model: &Model, path: impl AsRef<Path>) -> Result<(), OnnxError> {
    write_atomic(path.as_ref(), &model_to_bytes(model)?)
}

/// Like [`save_model`], but tensors of at least `threshold` bytes go to
/// `<file name>.data` beside the model (needed past protobuf's 2 GiB limit).
pub fn save_model_with_external_data(
    model: &Model,
    path: impl AsRef<Path>,
    threshold: usize,
) -> Result<(), OnnxError> {
    let path = path.as_ref();
    let file_name = path
        .file_name()
        .ok_or_else(|| OnnxError::Invalid(format!("{}: not a file path", path.display())))?
        .to_string_lossy()
        .into_owned();
    let data_name = format!("{file_name}.data");
    let mut blob: Vec<u8> = Vec::new();
    let p = model_proto(model, &mut |_, mut t| {
        let raw = t.raw_data.take().unwrap_or_default();
        if raw.len() < threshold {
            t.raw_data = Some(raw);
            return Ok(t);
        }
        // ONNX Runtime maps external data with 4 KiB-aligned offsets where it can.
        blob.resize(blob.len().next_multiple_of(4096), 0);
        let entry = |k: &str, v: String| proto::StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.external_data = vec![
            entry("location", data_name.clone()),
            entry("offset", blob.len().to_string()),
            entry("length", raw.len().to_string()),
        ];
        t.data_location = Some(1);
        blob.extend_from_slice(&raw);
        Ok(t)
    })?;
    write_atomic(&path.with_file_name(&data_name), &blob)?;
    write_atomic(path, &p.encode_to_vec())
}

/// Writes bytes atomically (temp file + rename), naming the path in errors.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OnnxError> {
    quench_ir::fs::write_atomic(path, bytes).map_err(|e| OnnxError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

type TensorSink<'a> =
    dyn FnMut(&str, proto::TensorProto) -> Result<proto::TensorProto, OnnxError> + 'a;

fn model_proto(m: &Model, sink: &mut TensorSink) -> Result<proto::ModelProto, OnnxError> {
    let functions = m
        .functions
        .iter()
        .map(|f| proto::FunctionProto::decode(f.as_slice()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(proto::ModelProto {
        ir_version: Some(m.ir_version),
        opset_import: m
            .opset_imports
            .iter()
            .map(|o| proto::OperatorSetIdProto {
                domain: Some(o.domain.clone()),
                version: Some(o.version),
            })
            .collect(),
        producer_name: some_str(&m.producer_name),
        producer_version: some_str(&m.producer_version),
        domain: some_str(&m.domain),
        model_version: (m.model_version != 0).then_some(m.model_version),
        doc_string: some_str(&m.doc_string),
        graph: Some(graph_proto(&m.graph, sink)?),
        metadata_props: m
            .metadata_props
            .iter()
            .map(|(k, v)| proto::StringStringEntryProto {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect(),
        functions,
        ..Default::default()
    })
}

fn graph_proto(g: &Graph, sink: &mut TensorSink) -> Result<proto::GraphProto, OnnxError> {
    let mut initializer = Vec::with_capacity(g.initializers.len());
    for (name, t) in &g.initializers {
        initializer.push(sink(name, tensor_to_proto(name, t))?);
    }
    Ok(proto::GraphProto {
        node: g
            .nodes
            .iter()
            .map(|n| node_proto(n, sink))
            .collect::<Result<_, _>>()?,
        name: Some(if g.name.is_empty() {
            "graph".into()
        } else {
            g.name.clone()
        }),
        initializer,
        sparse_initializer: g
            .sparse_initializers
            .iter()
            .map(|s| proto::SparseTensorProto::decode(s.as_slice()))
            .collect::<Result<_, _>>()?,
        doc_string: some_str(&g.doc_string),
        input: g
            .inputs
            .iter()
            .map(value_info_proto)
            .collect::<Result<_, _>>()?,
        output: g
            .outputs
            .iter()
            .map(value_info_proto)
            .collect::<Result<_, _>>()?,
        value_info: g
            .value_info
            .iter()
            .map(value_info_proto)
            .collect::<Result<_, _>>()?,
        ..Default::default()
    })
}

fn node_proto(n: &Node, sink: &mut TensorSink) -> Result<proto::NodeProto, OnnxError> {
    let mut attribute = Vec::with_capacity(n.attrs.len());
    for (name, a) in &n.attrs {
        attribute.push(attr_proto(name, a, sink)?);
    }
    Ok(proto::NodeProto {
        input: n.inputs.clone(),
        output: n.outputs.clone(),
        name: some_str(&n.name),
        op_type: Some(n.op_type.clone()),
        domain: some_str(&n.domain),
        attribute,
        doc_string: some_str(&n.doc_string),
        ..Default::default()
    })
}

fn attr_proto(
    name: &str,
    a: &Attr,
    sink: &mut TensorSink,
) -> Result<proto::AttributeProto, OnnxError> {
    let mut p = proto::AttributeProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let ty = match a {
        Attr::Float(v) => {
            p.f = Some(*v);
            AttributeType::Float
        }
        Attr::Int(v) => {
            p.i = Some(*v);
            AttributeType::Int
        }
        Attr::String(s) => {
            p.s = Some(s.clone());
            AttributeType::String
        }
        Attr::Tensor(t) => {
            p.t = Some(tensor_to_proto("", t));
            AttributeType::Tensor
        }
        Attr::Graph(g) => {
            p.g = Some(graph_proto(g, sink)?);
            AttributeType::Graph
        }
        Attr::Floats(v) => {
            p.floats = v.clone();
            AttributeType::Floats
        }
        Attr::Ints(v) => {
            p.ints = v.clone();
            AttributeType::Ints
        }
        Attr::Strings(v) => {
            p.strings = v.clone();
            AttributeType::Strings
        }
        Attr::Tensors(ts) => {
            p.tensors = ts.iter().map(|t| tensor_to_proto("", t)).collect();
            AttributeType::Tensors
        }
        Attr::Graphs(gs) => {
            p.graphs = gs
                .iter()
                .map(|g| graph_proto(g, sink))
                .collect::<Result<_, _>>()?;
            AttributeType::Graphs
        }
        Attr::Opaque(bytes) => return Ok(proto::AttributeProto::decode(bytes.as_slice())?),
    };
    p.r#type = Some(ty as i32);
    Ok(p)
}

fn value_info_proto(v: &ValueInfo) -> Result<proto::ValueInfoProto, OnnxError> {
    let ty = match &v.ty {
        None => None,
        Some(ValueType::Opaque(bytes)) => Some(proto::TypeProto::decode(bytes.as_slice())?),
        Some(ValueType::Tensor { dtype, shape }) => Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(dtype.to_onnx()),
                    shape: shape.as_ref().map(|dims| proto::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| proto::tensor_shape_proto::Dimension {
                                value: match d {
                                    Dim::Fixed(v) => Some(dimension::Value::DimValue(*v as i64)),
                                    Dim::Symbol(s) => Some(dimension::Value::DimParam(s.clone())),
                                    Dim::Unknown => None,
                                },
                                ..Default::default()
                            })
                            .collect(),
                    }),
                },
            )),
            ..Default::default()
        }),
    };
    Ok(proto::ValueInfoProto {
        name: Some(v.name.clone()),
        r#type: ty,
        doc_string: some_str(&v.doc_string),
        ..Default::default()
    })
}
