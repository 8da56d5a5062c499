//! Compute kernels on plain slices. Nothing here knows about graphs or ONNX.

pub mod conv;
pub mod gemm;
pub mod pool;
