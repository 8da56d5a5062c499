//! fp32 pooling kernels.
