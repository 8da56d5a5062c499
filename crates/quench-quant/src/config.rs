//! What to quantize and how: PyTorch's qconfig / QConfigMapping and ORT's
//! quantize_static arguments, as one TOML file (`quench config init`).
//!
//! Resolution order for a node, most specific first: `skip` list, `[nodes.NAME]`,
//! `[op_types.TYPE]`, then the global settings and the backend preset.

use crate::{CalibrationMethod, QParamsConfig, QuantDType, QuantError};
use quench_ir::Node;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Target backends: how activations and weights are represented.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// u8 asymmetric activations, s8 symmetric weights (fbgemm / ORT on x86).
    #[default]
    X86,
    /// s8 symmetric activations and weights, zero point 0 (TensorRT, XNNPACK).
    Symmetric,
    /// s8 symmetric with power-of-two scales (fixed-point NPUs).
    Npu,
}

impl Backend {
    pub fn activation(self) -> QParamsConfig {
        match self {
            Backend::X86 => QParamsConfig::activation_u8(),
            Backend::Symmetric => QParamsConfig::new(QuantDType::I8, true),
            Backend::Npu => QParamsConfig::npu_i8(),
        }
    }

    pub fn weight(self) -> QParamsConfig {
        match self {
            Backend::X86 | Backend::Symmetric => QParamsConfig::weight_i8(),
            Backend::Npu => QParamsConfig::npu_i8(),
        }
    }

    pub fn parse(s: &str) -> Result<Backend, QuantError> {
        Ok(match s {
            "x86" => Backend::X86,
            "symmetric" => Backend::Symmetric,
            "npu" => Backend::Npu,
            other => {
                return Err(QuantError::Config(format!(
                    "unknown backend '{other}' (x86, symmetric, npu)"
                )));
            }
        })
    }
}

/// Activation range calibration methods, by the names users know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibrationKind {
    #[default]
    MinMax,
    Entropy,
    Percentile,
    Mse,
}

impl CalibrationKind {
    pub fn parse(s: &str) -> Result<CalibrationKind, QuantError> {
        Ok(match s {
            "minmax" => CalibrationKind::MinMax,
            "entropy" => CalibrationKind::Entropy,
            "percentile" => CalibrationKind::Percentile,
            "mse" => CalibrationKind::Mse,
            other => {
                return Err(QuantError::Config(format!(
                    "unknown calibrator '{other}' (minmax, entropy, percentile, mse)"
                )));
            }
        })
    }
}

/// Output model formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// QuantizeLinear/DequantizeLinear around float ops (ORT, TensorRT, OpenVINO).
    #[default]
    Qdq,
    /// Integer-only operators (QLinearConv, QLinearMatMul, com.microsoft QLinear*).
    Int,
}

/// Per-op-type or per-node settings; unset fields inherit.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// `false` keeps the node float.
    pub quantize: Option<bool>,
    pub per_channel: Option<bool>,
    /// `u8` or `s8` activations for this node's outputs.
    pub activation: Option<String>,
    pub symmetric_activation: Option<bool>,
    /// Dequantize the accumulator straight to float (high-precision output).
    pub int32_output: Option<bool>,
}

/// The whole quantization configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuantConfig {
    pub backend: Backend,
    pub calibrator: CalibrationKind,
    /// Percentile for the percentile calibrator.
    pub percentile: f64,
    /// Histogram bins for entropy/percentile/MSE.
    pub bins: usize,
    /// Calibration samples to use (first N of the data).
    pub samples: usize,
    /// Samples per calibration batch.
    pub batch_size: usize,
    /// Per-output-channel weight scales.
    pub per_channel: bool,
    /// 7-bit activations for CPUs without VNNI (ORT's reduce_range).
    pub reduce_range: bool,
    pub format: Format,
    /// Node names kept float.
    pub skip: Vec<String>,
    /// Node names whose int32 accumulator is dequantized straight to float.
    pub int32_output: Vec<String>,
    /// Accuracy-driven fallback target: output SQNR in dB (unset = off).
    pub fallback_sqnr_db: Option<f64>,
    /// Most nodes (or fusion groups) the fallback keeps float.
    pub fallback_max_nodes: usize,
    /// Calibration samples the fallback measures the output SQNR on.
    pub fallback_samples: usize,
    /// Shift each Conv/Gemm/MatMul bias by the mean output error its int8
    /// weights cause over the calibration data (`bias_correction` module).
    /// On by default (as in OpenVINO): it raised MNIST int8 top-1 more
    /// often than it lowered it (ACCURACY.md).
    pub bias_correction: bool,
    pub op_types: BTreeMap<String, Override>,
    pub nodes: BTreeMap<String, Override>,
}

impl Default for QuantConfig {
    fn default() -> QuantConfig {
        QuantConfig {
            backend: Backend::X86,
            calibrator: CalibrationKind::MinMax,
            percentile: 99.999,
            bins: 2048,
            samples: 100,
            batch_size: 1,
            per_channel: true,
            reduce_range: false,
            format: Format::Qdq,
            skip: Vec::new(),
            int32_output: Vec::new(),
            fallback_sqnr_db: None,
            fallback_max_nodes: 8,
            fallback_samples: 8,
            bias_correction: true,
            op_types: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }
}

/// The resolved settings of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeQuant {
    pub activation: QParamsConfig,
    pub weight: QParamsConfig,
    pub per_channel: bool,
    pub int32_output: bool,
}

impl QuantConfig {
    /// Parses TOML; unknown keys are errors naming the key.
    pub fn from_toml(text: &str) -> Result<QuantConfig, QuantError> {
        toml::from_str(text).map_err(|e| QuantError::Config(e.to_string().trim().to_string()))
    }

    /// Checks that every node named in the config exists in the graph.
    pub fn check_node_names<'a>(
        &self,
        names: impl Fn(&str) -> bool + 'a,
    ) -> Result<(), QuantError> {
        let listed = self
            .skip
            .iter()
            .chain(&self.int32_output)
            .chain(self.nodes.keys());
        for n in listed {
            if !names(n) {
                return Err(QuantError::Config(format!(
                    "the config names node '{n}', which is not in the model"
                )));
            }
        }
        Ok(())
    }

    /// The activation calibration method with this config's parameters.
    pub fn calibration_method(&self) -> CalibrationMethod {
        let symmetric = self.backend != Backend::X86;
        match self.calibrator {
            CalibrationKind::MinMax => CalibrationMethod::MinMax { symmetric },
            CalibrationKind::Entropy => match CalibrationMethod::entropy() {
                CalibrationMethod::Entropy {
                    num_quantized_bins, ..
                } => CalibrationMethod::Entropy {
                    num_bins: self.bins,
                    num_quantized_bins,
                },
                other => other,
            },
            CalibrationKind::Percentile => CalibrationMethod::Percentile {
                num_bins: self.bins,
                percentile: self.percentile,
                symmetric,
            },
            CalibrationKind::Mse => match CalibrationMethod::mse() {
                CalibrationMethod::Mse { levels, .. } => CalibrationMethod::Mse {
                    num_bins: self.bins,
                    levels,
                    symmetric,
                },
                other => other,
            },
        }
    }

    /// How `node` is quantized, or `None` to keep it float.
    pub fn for_node(&self, node: &Node) -> Result<Option<NodeQuant>, QuantError> {
        if self.skip.contains(&node.name) {
            return Ok(None);
        }
        let by_type = self.op_types.get(&node.op_type);
        let by_name = self.nodes.get(&node.name);
        let pick =
            |f: fn(&Override) -> Option<bool>| by_name.and_then(f).or_else(|| by_type.and_then(f));
        if pick(|o| o.quantize) == Some(false) {
            return Ok(None);
        }
        let mut activation = self.backend.activation();
        activation.reduce_range = self.reduce_range;
        let dtype = by_name
            .and_then(|o| o.activation.clone())
            .or_else(|| by_type.and_then(|o| o.activation.clone()));
        if let Some(d) = dtype {
            activation.dtype = match d.as_str() {
                "u8" | "uint8" => QuantDType::U8,
                "s8" | "i8" | "int8" => QuantDType::I8,
                other => {
                    return Err(QuantError::Config(format!(
                        "node '{}': activation '{other}' is not u8 or s8",
                        node.name
                    )));
                }
            };
        }
        if let Some(sym) = pick(|o| o.symmetric_activation) {
            activation.symmetric = sym;
        }
        Ok(Some(NodeQuant {
            activation,
            weight: self.backend.weight(),
            per_channel: pick(|o| o.per_channel).unwrap_or(self.per_channel),
            int32_output: pick(|o| o.int32_output).unwrap_or(false)
                || self.int32_output.contains(&node.name),
        }))
    }
}

/// The commented template `quench config init` prints.
pub const TEMPLATE: &str = include_str!("config_template.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_to_defaults() {
        assert_eq!(
            QuantConfig::from_toml(TEMPLATE).unwrap(),
            QuantConfig::default()
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = QuantConfig::from_toml("calibratr = \"minmax\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("calibratr"), "{e}");
        let e = QuantConfig::from_toml("[op_types.Conv]\nquantise = false")
            .unwrap_err()
            .to_string();
        assert!(e.contains("quantise"), "{e}");
    }

    #[test]
    fn node_overrides_beat_op_type_overrides() {
        let cfg = QuantConfig::from_toml(
            "skip = [\"head\"]\n[op_types.Conv]\nper_channel = false\n[nodes.c2]\nper_channel = true\nactivation = \"s8\"",
        )
        .unwrap();
        let conv = |name: &str| Node::new("Conv", name, &["x", "w"], &["y"]);
        assert!(!cfg.for_node(&conv("c1")).unwrap().unwrap().per_channel);
        let c2 = cfg.for_node(&conv("c2")).unwrap().unwrap();
        assert!(c2.per_channel);
        assert_eq!(c2.activation.dtype, QuantDType::I8);
        assert!(cfg.for_node(&conv("head")).unwrap().is_none());
        assert!(cfg.check_node_names(|n| n == "c1").is_err());
    }
}
