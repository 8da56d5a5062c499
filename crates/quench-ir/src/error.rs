use crate::DType;

/// Errors raised while building or inspecting IR values.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    #[error("expected dtype {expected:?}, found {found:?}")]
    DType { expected: DType, found: DType },
    #[error("shape {shape:?} holds {expected} elements but {found} were given")]
    ElementCount {
        shape: Vec<usize>,
        expected: usize,
        found: usize,
    },
    #[error("tensor of {0} elements is too large (limit 2^32)")]
    TooLarge(u128),
    #[error("node '{node}': attribute '{name}' {reason}")]
    Attribute {
        node: String,
        name: String,
        reason: String,
    },
    #[error("dtype {0:?} has no in-memory representation in Quench yet")]
    UnsupportedDType(DType),
    #[error("{0}")]
    Invalid(String),
}
