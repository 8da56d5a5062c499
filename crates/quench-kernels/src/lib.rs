//! Compute kernels on plain slices. Nothing here knows about graphs or ONNX.

pub mod activation;
pub mod conv;
pub mod gemm;
pub mod gemv;
pub mod int8;
pub mod pool;
pub mod stats;
pub mod vmath;
