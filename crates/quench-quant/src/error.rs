use quench_ir::DType;

/// Errors of calibration and quantization-parameter computation.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// A NaN or infinity in calibration data: it would poison every range, so
    /// it is reported with the tensor it came from rather than skipped.
    #[error("tensor '{tensor}': non-finite value {value} at element {index} in calibration data")]
    NonFinite {
        tensor: String,
        value: f32,
        index: usize,
    },
    #[error("tensor '{tensor}': no calibration data was observed")]
    NoData { tensor: String },
    #[error("tensor '{tensor}': {reason}")]
    Shape { tensor: String, reason: String },
    #[error("tensor '{tensor}' has dtype {dtype:?}; calibration needs float32")]
    DType { tensor: String, dtype: DType },
    #[error("invalid range [{min}, {max}]: {reason}")]
    InvalidRange {
        min: f32,
        max: f32,
        reason: &'static str,
    },
    #[error("invalid quantization configuration: {0}")]
    Config(String),
}
