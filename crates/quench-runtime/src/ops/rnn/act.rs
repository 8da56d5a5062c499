//! The activation functions LSTM/GRU accept in their `activations` attribute.

use crate::{OpError, bail_invalid};
use quench_ir::Node;
use quench_kernels::activation;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Act {
    Sigmoid,
    Tanh,
    Relu,
    Affine(f32, f32),
    LeakyRelu(f32),
    ThresholdedRelu(f32),
    ScaledTanh(f32, f32),
    HardSigmoid(f32, f32),
    Elu(f32),
    Softsign,
    Softplus,
}

impl Act {
    /// Parses one name (case-insensitive, as onnxruntime does), taking alpha
    /// and beta from the shared lists only when the function uses them.
    fn parse(
        name: &str,
        alphas: &mut impl Iterator<Item = f32>,
        betas: &mut impl Iterator<Item = f32>,
    ) -> Result<Act, OpError> {
        let mut a = |d: f32| alphas.next().unwrap_or(d);
        Ok(match name.to_ascii_lowercase().as_str() {
            "sigmoid" => Act::Sigmoid,
            "tanh" => Act::Tanh,
            "relu" => Act::Relu,
            "affine" => Act::Affine(a(1.0), betas.next().unwrap_or(0.0)),
            "leakyrelu" => Act::LeakyRelu(a(0.01)),
            "thresholdedrelu" => Act::ThresholdedRelu(a(1.0)),
            "scaledtanh" => Act::ScaledTanh(a(1.0), betas.next().unwrap_or(1.0)),
            "hardsigmoid" => Act::HardSigmoid(a(0.2), betas.next().unwrap_or(0.5)),
            "elu" => Act::Elu(a(1.0)),
            "softsign" => Act::Softsign,
            "softplus" => Act::Softplus,
            _ => bail_invalid!("attribute activations: unknown activation function '{name}'"),
        })
    }

    pub fn apply(self, x: &mut [f32]) {
        match self {
            Act::Sigmoid => activation::sigmoid(x),
            Act::Tanh => activation::tanh(x),
            _ => x.iter_mut().for_each(|v| *v = self.scalar(*v)),
        }
    }

    fn scalar(self, x: f32) -> f32 {
        match self {
            Act::Sigmoid => activation::sigmoid_scalar(x),
            Act::Tanh => x.tanh(),
            Act::Relu => x.max(0.0),
            Act::Affine(a, b) => a * x + b,
            Act::LeakyRelu(a) => {
                if x < 0.0 {
                    a * x
                } else {
                    x
                }
            }
            Act::ThresholdedRelu(a) => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
            Act::ScaledTanh(a, b) => a * (b * x).tanh(),
            Act::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Act::Elu(a) => {
                if x < 0.0 {
                    a * (x.exp() - 1.0)
                } else {
                    x
                }
            }
            Act::Softsign => x / (1.0 + x.abs()),
            Act::Softplus => {
                // ln(1 + e^x) without overflow for large x.
                if x > 20.0 { x } else { x.exp().ln_1p() }
            }
        }
    }
}

/// The activation functions of each direction: `per_dir` of them, from the
/// attribute (one list for every direction or one per direction) or `defaults`.
pub(super) fn parse_activations(
    node: &Node,
    dirs: usize,
    defaults: &[&str],
) -> Result<Vec<Vec<Act>>, OpError> {
    let per_dir = defaults.len();
    let names: Vec<String> = match node.attr_strings("activations")? {
        Some(v) => v,
        None => defaults.iter().map(|s| s.to_string()).collect(),
    };
    if names.len() != per_dir && names.len() != per_dir * dirs {
        bail_invalid!(
            "attribute activations has {} entries, expected {} ({} per direction)",
            names.len(),
            per_dir * dirs,
            per_dir
        );
    }
    let alphas = node.attr_floats("activation_alpha")?.unwrap_or(&[]);
    let betas = node.attr_floats("activation_beta")?.unwrap_or(&[]);
    let (mut ai, mut bi) = (alphas.iter().copied(), betas.iter().copied());
    let acts = names
        .iter()
        .map(|n| Act::parse(n, &mut ai, &mut bi))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..dirs)
        .map(|d| {
            let start = if acts.len() == per_dir {
                0
            } else {
                d * per_dir
            };
            acts[start..start + per_dir].to_vec()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quench_ir::Attr;

    #[test]
    fn alphas_are_consumed_only_by_functions_that_use_them() {
        let node = Node::new("LSTM", "l", &[], &[])
            .with_attr(
                "activations",
                Attr::Strings(vec![
                    b"Tanh".to_vec(),
                    b"LeakyRelu".to_vec(),
                    b"HardSigmoid".to_vec(),
                ]),
            )
            .with_attr("activation_alpha", Attr::Floats(vec![0.1, 0.3]))
            .with_attr("activation_beta", Attr::Floats(vec![0.6]));
        let a = parse_activations(&node, 2, &["Sigmoid", "Tanh", "Tanh"]).unwrap();
        assert_eq!(
            a[1],
            vec![Act::Tanh, Act::LeakyRelu(0.1), Act::HardSigmoid(0.3, 0.6)]
        );
        let mut x = [-1.0, 4.0];
        Act::HardSigmoid(0.2, 0.5).apply(&mut x);
        assert_eq!(x, [0.3, 1.0]);
        let bad = Node::new("GRU", "g", &[], &[])
            .with_attr("activations", Attr::Strings(vec![b"Gelu".to_vec(); 2]));
        assert!(parse_activations(&bad, 1, &["Sigmoid", "Tanh"]).is_err());
    }
}
