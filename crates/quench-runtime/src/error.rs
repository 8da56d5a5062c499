use quench_ir::IrError;

/// What an op reports; the executor adds the node's name and type.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Inputs or attributes the op cannot take (wrong shape, dtype, value).
    #[error("{0}")]
    Invalid(String),
    /// A valid ONNX construct Quench does not implement (yet).
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Ir(#[from] IrError),
    /// A failure inside a subgraph (If/Loop branch).
    #[error("in subgraph: {0}")]
    Subgraph(Box<RuntimeError>),
}

/// Errors from planning or running a graph.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("node '{node}' ({op_type}): {message}")]
    Node {
        node: String,
        op_type: String,
        message: String,
    },
    #[error("node '{node}': operator '{op}' (domain '{domain}', opset {opset}) is not supported")]
    UnknownOp {
        node: String,
        op: String,
        domain: String,
        opset: i64,
    },
    #[error("input '{name}': {message}")]
    Input { name: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Ir(#[from] IrError),
}

impl RuntimeError {
    pub(crate) fn at_node(node: &quench_ir::Node, e: OpError) -> RuntimeError {
        RuntimeError::Node {
            node: node.label(),
            op_type: node.op_type.clone(),
            message: e.to_string(),
        }
    }
}

/// `return Err(OpError::Invalid(format!(...)))`.
#[macro_export]
macro_rules! bail_invalid {
    ($($arg:tt)*) => { return Err($crate::OpError::Invalid(format!($($arg)*))) };
}

/// `return Err(OpError::Unsupported(format!(...)))`.
#[macro_export]
macro_rules! bail_unsupported {
    ($($arg:tt)*) => { return Err($crate::OpError::Unsupported(format!($($arg)*))) };
}
