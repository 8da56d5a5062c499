//! fp32 convolution kernels (im2col + GEMM, direct depthwise).
