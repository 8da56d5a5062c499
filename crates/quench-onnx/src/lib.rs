//! ONNX protobuf <-> [`quench_ir::Model`].

#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!("generated/onnx.rs");
}
