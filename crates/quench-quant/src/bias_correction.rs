//! Empirical bias correction (OpenVINO/NNCF's FastBiasCorrection, AIMET's
//! empirical bias correction): rounding a layer's weights to int8 shifts
//! the mean of its output, `E[W·x] − E[Wq·x] = (W − Wq)·E[x]` per output
//! channel, and that error is systematic, so later layers amplify it. Adding
//! it to the float bias (before the bias is quantized to int32) cancels it.
//!
//! `E[x]` is the per-input-channel mean of the layer's input over the
//! calibration data (batch and spatial positions). For a convolution this
//! stands in for the mean of each im2col column, which differs only where
//! padding brings in zeros.

use crate::passes::{QuantPlan, WeightSpec};
use crate::{QuantError, dequantize, quantize};
use quench_ir::{Graph, Node, Tensor};
use std::collections::BTreeMap;

/// Which axis of a layer's input holds its input channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelAxis {
    /// NC... (Conv).
    Second,
    /// ...K (Gemm, MatMul).
    Last,
}

impl ChannelAxis {
    pub fn index(self, rank: usize) -> Option<usize> {
        match (self, rank) {
            (_, 0) | (ChannelAxis::Second, 1) => None,
            (ChannelAxis::Second, _) => Some(1),
            (ChannelAxis::Last, r) => Some(r - 1),
        }
    }
}

/// One layer whose bias can be corrected.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    node: String,
    input: String,
    weight: String,
    bias: String,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// W `[O, C/group, k...]`.
    Conv { group: usize },
    /// B `[K, N]` (`trans_b` = `[N, K]`), times `alpha`.
    Linear { trans_b: bool, alpha: f32 },
}

/// What [`correct_biases`] changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BiasCorrectionReport {
    /// `(node, largest |shift| of its bias)`.
    pub corrected: Vec<(String, f32)>,
}

/// The planned biases this pass can correct: Conv (not ConvTranspose), Gemm
/// with `transA = 0`, MatMul with a fused bias Add.
fn targets(graph: &Graph, plan: &QuantPlan) -> Vec<Target> {
    plan.biases
        .iter()
        .filter_map(|b| {
            let node: &Node = graph.nodes.iter().find(|n| {
                n.input(0) == Some(b.input.as_str())
                    && n.input(1) == Some(b.weight.as_str())
                    && matches!(n.op_type.as_str(), "Conv" | "Gemm" | "MatMul")
                    && (n.domain.is_empty() || n.domain == "ai.onnx")
            })?;
            let kind = match node.op_type.as_str() {
                "Conv" => Kind::Conv {
                    group: usize::try_from(node.attr_int_or("group", 1).ok()?).ok()?,
                },
                "Gemm" => {
                    if node.attr_int_or("transA", 0).ok()? != 0 {
                        return None;
                    }
                    Kind::Linear {
                        trans_b: node.attr_int_or("transB", 0).ok()? != 0,
                        alpha: node.attr_float_or("alpha", 1.0).ok()?,
                    }
                }
                _ => Kind::Linear {
                    trans_b: false,
                    alpha: 1.0,
                },
            };
            Some(Target {
                node: node.name.clone(),
                input: b.input.clone(),
                weight: b.weight.clone(),
                bias: b.tensor.clone(),
                kind,
            })
        })
        .collect()
}

/// The layer inputs whose per-channel means calibration must collect.
pub fn mean_inputs(graph: &Graph, plan: &QuantPlan) -> Vec<(String, ChannelAxis)> {
    let mut v: Vec<(String, ChannelAxis)> = targets(graph, plan)
        .into_iter()
        .map(|t| {
            let axis = match t.kind {
                Kind::Conv { .. } => ChannelAxis::Second,
                Kind::Linear { .. } => ChannelAxis::Last,
            };
            (t.input, axis)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.dedup_by(|a, b| a.0 == b.0);
    v
}

/// Adds `(W − Wq)·E[x]` to every correctable planned bias of `graph`, with
/// `Wq` the weight as `convert_qdq` will quantize it and `E[x]` from `means`
/// (per input channel). Layers whose shapes do not line up are left alone.
pub fn correct_biases(
    graph: &mut Graph,
    plan: &QuantPlan,
    means: &BTreeMap<String, Vec<f64>>,
) -> Result<BiasCorrectionReport, QuantError> {
    let mut report = BiasCorrectionReport::default();
    for t in targets(graph, plan) {
        let Some(mean) = means.get(&t.input) else {
            continue;
        };
        let Some(spec) = plan.weights.iter().find(|w| w.tensor == t.weight) else {
            continue;
        };
        let (Some(w), Some(b)) = (
            crate::passes::constant_f32(graph, &t.weight),
            crate::passes::constant_f32(graph, &t.bias),
        ) else {
            continue;
        };
        let Some(shift) = shift(w, spec, t.kind, mean)? else {
            continue;
        };
        let bias = b
            .as_slice::<f32>()
            .map_err(|e| QuantError::Graph(e.to_string()))?;
        if bias.len() != shift.len() {
            continue;
        }
        let largest = shift.iter().fold(0.0f32, |m, &s| m.max(s.abs()));
        let corrected: Vec<f32> = bias.iter().zip(&shift).map(|(&b, &s)| b + s).collect();
        let tensor = Tensor::from_vec(b.shape().to_vec(), corrected)
            .map_err(|e| QuantError::Graph(e.to_string()))?;
        graph.initializers.insert(t.bias.clone(), tensor);
        report.corrected.push((t.node, largest));
    }
    Ok(report)
}

/// `(W − Wq)·mean` per output channel, or `None` when shapes do not fit.
fn shift(
    wt: &Tensor,
    spec: &WeightSpec,
    kind: Kind,
    mean: &[f64],
) -> Result<Option<Vec<f32>>, QuantError> {
    let shape = wt.shape().to_vec();
    let qp = crate::passes::qdq::weight_qparams(&spec.tensor, wt, spec.axis, &spec.config)?;
    let wq = dequantize(&quantize(wt, &qp)?, &qp)?;
    let (w, wq) = (
        wt.as_slice::<f32>()
            .map_err(|e| QuantError::Graph(e.to_string()))?,
        wq.as_slice::<f32>()
            .map_err(|e| QuantError::Graph(e.to_string()))?,
    );
    if w.len() != wq.len() || mean.is_empty() {
        return Ok(None);
    }
    let err = |i: usize| f64::from(w[i]) - f64::from(wq[i]);
    let c = mean.len();
    Ok(match kind {
        Kind::Conv { group } => {
            let (Some(&o), true) = (shape.first(), shape.len() >= 3) else {
                return Ok(None);
            };
            if group == 0
                || o == 0
                || !o.is_multiple_of(group)
                || !c.is_multiple_of(group)
                || shape[1] != c / group
            {
                return Ok(None);
            }
            let per_out = w.len() / o;
            let (cg, og) = (c / group, o / group);
            let taps = per_out / cg;
            Some(
                (0..o)
                    .map(|oc| {
                        let base = (oc / og) * cg;
                        let s: f64 = (0..per_out)
                            .map(|j| err(oc * per_out + j) * mean[base + j / taps])
                            .sum();
                        s as f32
                    })
                    .collect(),
            )
        }
        Kind::Linear { trans_b, alpha } => {
            if shape.len() != 2 {
                return Ok(None);
            }
            let (k, n) = if trans_b {
                (shape[1], shape[0])
            } else {
                (shape[0], shape[1])
            };
            if k != c {
                return Ok(None);
            }
            Some(
                (0..n)
                    .map(|j| {
                        let s: f64 = (0..k)
                            .map(|i| {
                                let idx = if trans_b { j * k + i } else { i * n + j };
                                err(idx) * mean[i]
                            })
                            .sum();
                        (s * f64::from(alpha)) as f32
                    })
                    .collect(),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::test_util::{Builder, rand_positive, run};
    use crate::{QuantConfig, quantize::quantize_static};
    use quench_ir::Attr;

    /// A padded 3x3 conv whose weights all round the same way: one weight per
    /// output channel sets the scale, the others sit 0.4 step above a level.
    fn badly_rounding_conv() -> quench_ir::Model {
        let mut b = Builder::new(&[("x", &[4, 3, 6, 6])]);
        let step = 1.0 / 127.0;
        let w: Vec<f32> = (0..4 * 27)
            .map(|i| {
                if i % 27 == 0 {
                    1.0
                } else {
                    (1.4 + (i % 3) as f32) * step
                }
            })
            .collect();
        b.init("w", Tensor::from_vec(vec![4, 3, 3, 3], w).unwrap());
        b.init(
            "b",
            Tensor::from_vec(vec![4], vec![0.1f32, -0.2, 0.3, 0.0]).unwrap(),
        );
        b.node("Conv", "conv", &["x", "w", "b"], &["y"]);
        b.attr("pads", Attr::Ints(vec![1, 1, 1, 1]));
        b.build(&["y"])
    }

    /// Sum over output channels of |mean(quantized − float)|.
    fn mean_error(model: &quench_ir::Model, cfg: &QuantConfig, data: &[Tensor]) -> f64 {
        let batches = data.iter().map(|t| Ok(vec![("x".to_string(), t.clone())]));
        let q = quantize_static(model, cfg, batches, 1, &mut |_| {}).unwrap();
        let mut diff = [0.0f64; 4];
        let mut count = 0usize;
        for t in data {
            let f = run(model, &[("x", t.clone())]).remove(0);
            let y = run(&q.model, &[("x", t.clone())]).remove(0);
            let (f, y) = (f.as_slice::<f32>().unwrap(), y.as_slice::<f32>().unwrap());
            for (k, (a, b)) in y.iter().zip(f).enumerate() {
                diff[(k / 36) % 4] += f64::from(a - b);
            }
            count += f.len() / 4;
        }
        diff.iter().map(|d| (d / count as f64).abs()).sum()
    }

    #[test]
    fn corrected_biases_cancel_the_mean_rounding_error() {
        let model = badly_rounding_conv();
        let data: Vec<Tensor> = (0..4)
            .map(|s| rand_positive(&[4, 3, 6, 6], 10 + s))
            .collect();
        let mut cfg = QuantConfig {
            bias_correction: false,
            ..Default::default()
        };
        let plain = mean_error(&model, &cfg, &data);
        cfg.bias_correction = true;
        let corrected = mean_error(&model, &cfg, &data);
        assert!(
            corrected < plain / 3.0,
            "corrected {corrected} vs plain {plain}"
        );
    }

    #[test]
    fn mismatched_means_leave_biases_alone() {
        let model = badly_rounding_conv();
        let prepared = crate::passes::prepare(&model, &QuantConfig::default()).unwrap();
        let inputs = mean_inputs(&prepared.model.graph, &prepared.plan);
        assert_eq!(inputs, vec![("x".to_string(), ChannelAxis::Second)]);
        let mut graph = prepared.model.graph.clone();
        let means = BTreeMap::from([("x".to_string(), vec![1.0; 5])]);
        let r = correct_biases(&mut graph, &prepared.plan, &means).unwrap();
        assert!(r.corrected.is_empty());
        assert_eq!(
            graph.initializers["b"],
            prepared.model.graph.initializers["b"]
        );
        let means = BTreeMap::from([("x".to_string(), vec![1.0; 3])]);
        let r = correct_biases(&mut graph, &prepared.plan, &means).unwrap();
        assert_eq!(r.corrected.len(), 1);
        assert!(r.corrected[0].1 > 0.05, "{:?}", r.corrected);
    }
}
