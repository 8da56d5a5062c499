use quench_ir::IrError;
use std::path::PathBuf;

/// Errors reading or writing ONNX files.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "not a valid ONNX model (protobuf decode failed: {0}); is the file truncated or not an .onnx file?"
    )]
    Decode(#[from] prost::DecodeError),
    #[error("tensor '{name}': {message}")]
    Tensor { name: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Ir(#[from] IrError),
}

impl OnnxError {
    pub(crate) fn tensor(name: &str, message: impl Into<String>) -> OnnxError {
        OnnxError::Tensor {
            name: name.to_string(),
            message: message.into(),
        }
    }
}
