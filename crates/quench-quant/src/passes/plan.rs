//! The quantization plan: which tensors become int8, and how.

use crate::QParamsConfig;

/// An activation (graph input or node output) that gets a Q/DQ pair.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationSpec {
    pub tensor: String,
    pub config: QParamsConfig,
    /// Data-movement outputs (Reshape, MaxPool, ...) reuse the scale and
    /// zero point of this tensor (the root of the chain, never itself
    /// shared), as ORT does: no requantization. Calibrating them is optional.
    pub shared_with: Option<String>,
}

/// A constant float weight quantized ahead of time.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightSpec {
    pub tensor: String,
    /// Per-channel axis, or `None` for one scale per tensor.
    pub axis: Option<usize>,
    pub config: QParamsConfig,
}

/// A bias quantized to int32 with scale `s_input × s_weight`.
#[derive(Clone, Debug, PartialEq)]
pub struct BiasSpec {
    pub tensor: String,
    /// The activation feeding the linear op.
    pub input: String,
    /// The linear op's weight (a [`WeightSpec`] tensor).
    pub weight: String,
    /// The node reading the bias (the linear op, or its fused bias Add).
    pub node: String,
}

/// Everything placement decided; activations are in graph order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantPlan {
    pub activations: Vec<ActivationSpec>,
    pub weights: Vec<WeightSpec>,
    pub biases: Vec<BiasSpec>,
    /// Nodes that run on int8 data (fusion group members included).
    pub quantized_nodes: Vec<String>,
    /// `(node name, reason)` for nodes that stay float.
    pub kept_float: Vec<(String, String)>,
    /// Nodes whose output stays float (`int32_output`).
    pub float_outputs: Vec<String>,
}

impl QuantPlan {
    pub fn activation(&self, tensor: &str) -> Option<&ActivationSpec> {
        self.activations.iter().find(|a| a.tensor == tensor)
    }

    /// The tensor whose parameters `tensor` uses: itself, or its share root.
    pub fn params_source<'a>(&'a self, tensor: &'a str) -> &'a str {
        match self
            .activation(tensor)
            .and_then(|a| a.shared_with.as_deref())
        {
            Some(root) => root,
            None => tensor,
        }
    }

    /// Activations that need their own calibrated parameters.
    pub fn calibrated(&self) -> impl Iterator<Item = &ActivationSpec> {
        self.activations.iter().filter(|a| a.shared_with.is_none())
    }
}
