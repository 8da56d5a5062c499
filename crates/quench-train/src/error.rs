//! Errors of the training engine.

/// What went wrong while building, running or differentiating a graph, or
/// reading data and checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model or the data is malformed (bad shape, attribute, dtype...).
    #[error("{0}")]
    Invalid(String),
    /// Valid ONNX that the trainer does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An error inside one node, with its name and op type. The inner error
    /// is part of the message and not a `source`, so a chain printer
    /// (`{:#}`) does not say it twice.
    #[error("node '{node}' ({op}): {error}")]
    Node {
        node: String,
        op: String,
        error: Box<TrainError>,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ir(#[from] quench_ir::IrError),
    #[error(transparent)]
    Data(#[from] quench_data::DataError),
    #[error(transparent)]
    Onnx(#[from] quench_onnx::OnnxError),
}

pub type Result<T> = std::result::Result<T, TrainError>;

/// Returns `TrainError::Invalid` with a formatted message.
#[macro_export]
macro_rules! invalid {
    ($($t:tt)*) => { return Err($crate::TrainError::Invalid(format!($($t)*))) };
}

/// Returns `TrainError::Unsupported` with a formatted message.
#[macro_export]
macro_rules! unsupported {
    ($($t:tt)*) => { return Err($crate::TrainError::Unsupported(format!($($t)*))) };
}
