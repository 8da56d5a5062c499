//! Static post-training quantization numerics.
//!
//! This crate holds the parts of PTQ that know nothing about graphs: how a
//! float range becomes a scale and zero point ([`qparams`]), and how ranges
//! are gathered from calibration data ([`observer`]). The rules follow ONNX
//! Runtime's `quantize_static` (`quant_utils.py`, `calibrate.py`) so that a
//! model quantized by Quench and by ORT from the same data gets the same
//! parameters; `scripts/check_calibrators.py` produces the fixture that the
//! `ort_agreement` test checks this against.
//!
//! [`dynamic`] is the calibration-free path: int8 weights, activations
//! quantized at run time (ORT's and PyTorch's `quantize_dynamic`).
//!
//! The graph side lives in [`passes`]: [`passes::prepare`] (Constant →
//! initializer, BatchNormalization folding, fusion groups, ORT-style
//! placement into a [`passes::QuantPlan`]) and [`passes::convert_qdq`] (the
//! QuantizeLinear/DequantizeLinear model, checked in ONNX Runtime by
//! `scripts/check_qdq_models.py`).

pub mod bias_correction;
pub mod calibrate;
pub mod config;
pub mod dynamic;
pub mod error;
pub mod fallback;
pub mod int_format;
pub mod observer;
pub mod passes;
pub mod qparams;
pub mod quantize;

pub use bias_correction::BiasCorrectionReport;
pub use config::{Backend, CalibrationKind, Format, NodeQuant, Override, QuantConfig};
pub use dynamic::{DynamicConfig, DynamicFormat, DynamicReport, quantize_dynamic};
pub use error::QuantError;
pub use fallback::{FallbackReport, FallbackStep};
pub use int_format::{IntReport, to_int};
pub use observer::{
    CalibrationMethod, Calibrator, Entropy, Histogram, HistogramConfig, HistogramMode,
    HistogramObserver, MinMax, MovingAverageMinMax, Mse, ObservedRange, Observer, PerChannelMinMax,
    Percentile, RangeChooser,
};
pub use qparams::{
    QParams, QParamsConfig, QuantDType, compute_scale_zp, dequantize, quantize, quantize_bias,
};
