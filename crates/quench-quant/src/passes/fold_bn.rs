//! BatchNormalization folding into the preceding Conv, ConvTranspose or Gemm.
//!
//! In inference BN is a per-channel affine map `y = f·(x − mean) + beta` with
//! `f = gamma / sqrt(var + eps)`; applied to a linear layer's output it is the
//! same layer with weights scaled by `f` per output channel and bias
//! `f·(b − mean) + beta`. Folding removes a tensor that would otherwise need
//! its own Q/DQ pair, and lets the weight scales absorb `f`.

use super::{constant_f32, consumers, is_graph_output, unique};
use crate::QuantError;
use quench_ir::{Attr, Graph, Tensor};
use std::collections::HashSet;

/// One BatchNormalization folded into its producer.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedBn {
    pub bn: String,
    pub into: String,
    pub op_type: String,
}

/// Per-channel factor and shift of a BN node whose parameters are constant.
fn bn_affine(graph: &Graph, bn: &quench_ir::Node) -> Option<(Vec<f32>, Vec<f32>)> {
    if bn.outputs.iter().filter(|o| !o.is_empty()).count() != 1
        || bn.attr_int_or("training_mode", 0).ok()? != 0
        || bn.attr_int_or("spatial", 1).ok()? != 1
    {
        return None;
    }
    let eps = bn.attr_float_or("epsilon", 1e-5).ok()?;
    let param = |i: usize| -> Option<&[f32]> {
        let t = constant_f32(graph, bn.input(i)?)?;
        (t.rank() == 1).then(|| t.as_slice::<f32>().ok()).flatten()
    };
    let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
    let c = gamma.len();
    if [beta.len(), mean.len(), var.len()].iter().any(|&l| l != c) {
        return None;
    }
    let f: Vec<f32> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
    let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * f[i]).collect();
    f.iter().all(|v| v.is_finite()).then_some((f, shift))
}

/// The folded weight, and for each output channel the factor index, or None
/// when the producer's weight layout does not match the BN channel count.
fn scale_weight(node: &quench_ir::Node, w: &Tensor, f: &[f32]) -> Option<Tensor> {
    let data = w.as_slice::<f32>().ok()?;
    let shape = w.shape();
    let c = f.len();
    let channel_of: Box<dyn Fn(usize) -> usize> = match node.op_type.as_str() {
        "Conv" => {
            if shape.len() < 3 || shape[0] != c {
                return None;
            }
            let inner: usize = shape[1..].iter().product();
            Box::new(move |i| i / inner)
        }
        "ConvTranspose" => {
            let group = usize::try_from(node.attr_int_or("group", 1).ok()?).ok()?;
            if shape.len() < 3
                || group == 0
                || !shape[0].is_multiple_of(group)
                || shape[1] * group != c
            {
                return None;
            }
            let (cin_g, m_g) = (shape[0] / group, shape[1]);
            let inner: usize = shape[2..].iter().product();
            Box::new(move |i| {
                let (ci, j) = (i / (m_g * inner), (i / inner) % m_g);
                (ci / cin_g) * m_g + j
            })
        }
        "Gemm" => {
            let trans_b = node.attr_int_or("transB", 0).ok()? != 0;
            if shape.len() != 2 {
                return None;
            }
            let n = if trans_b { shape[0] } else { shape[1] };
            if n != c {
                return None;
            }
            let cols = shape[1];
            if trans_b {
                Box::new(move |i| i / cols)
            } else {
                Box::new(move |i| i % cols)
            }
        }
        _ => return None,
    };
    let out: Vec<f32> = data
        .iter()
        .enumerate()
        .map(|(i, &v)| v * f[channel_of(i)])
        .collect();
    Tensor::from_vec(shape.to_vec(), out).ok()
}

/// The producer's bias (times `beta` for Gemm) as one value per channel.
fn bias_per_channel(graph: &Graph, node: &quench_ir::Node, c: usize) -> Option<Vec<f32>> {
    let Some(name) = node.input(2) else {
        return Some(vec![0.0; c]);
    };
    let b = constant_f32(graph, name)?;
    let beta = if node.op_type == "Gemm" {
        node.attr_float_or("beta", 1.0).ok()?
    } else {
        1.0
    };
    let v = b.as_slice::<f32>().ok()?;
    let leading_ones = b.shape().iter().rev().skip(1).all(|&d| d == 1);
    match v.len() {
        1 if node.op_type == "Gemm" => Some(vec![v[0] * beta; c]),
        n if n == c && leading_ones => Some(v.iter().map(|x| x * beta).collect()),
        _ => None,
    }
}

/// Folds every BatchNormalization whose input comes from a Conv,
/// ConvTranspose or Gemm with constant weights, read by nothing else.
pub fn fold_batch_norms(graph: &mut Graph) -> Result<Vec<FoldedBn>, QuantError> {
    let mut folded = Vec::new();
    let mut taken = super::all_names(graph);
    loop {
        let users = consumers(graph);
        let producers: std::collections::HashMap<String, usize> = graph
            .producers()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut done = false;
        for bi in 0..graph.nodes.len() {
            let bn = &graph.nodes[bi];
            if bn.op_type != "BatchNormalization" || !bn.domain.is_empty() {
                continue;
            }
            let Some(x) = bn.input(0) else { continue };
            let Some(&pi) = producers.get(x) else {
                continue;
            };
            let p = &graph.nodes[pi];
            if !matches!(p.op_type.as_str(), "Conv" | "ConvTranspose" | "Gemm")
                || !p.domain.is_empty()
                || p.outputs.len() != 1
                || users.get(x).map(Vec::len) != Some(1)
                || is_graph_output(graph, x)
            {
                continue;
            }
            let Some((f, shift)) = bn_affine(graph, bn) else {
                continue;
            };
            let Some(w) = p.input(1).and_then(|w| constant_f32(graph, w)) else {
                continue;
            };
            let Some(new_w) = scale_weight(p, w, &f) else {
                continue;
            };
            let Some(b) = bias_per_channel(graph, p, f.len()) else {
                continue;
            };
            let new_b: Vec<f32> = (0..f.len()).map(|i| b[i] * f[i] + shift[i]).collect();
            let new_b = Tensor::from_vec(vec![f.len()], new_b)
                .map_err(|e| QuantError::Graph(e.to_string()))?;
            let w_name = unique(&mut taken, &format!("{}_bn_folded", p.inputs[1]));
            let b_name = unique(&mut taken, &format!("{}_bn_folded_bias", p.name));
            let y = bn
                .outputs
                .iter()
                .find(|o| !o.is_empty())
                .cloned()
                .unwrap_or_default();
            folded.push(FoldedBn {
                bn: bn.name.clone(),
                into: p.name.clone(),
                op_type: p.op_type.clone(),
            });
            graph.initializers.insert(w_name.clone(), new_w);
            graph.initializers.insert(b_name.clone(), new_b);
            let p = &mut graph.nodes[pi];
            p.inputs.resize(3, String::new());
            p.inputs[1] = w_name;
            p.inputs[2] = b_name;
            p.outputs[0] = y;
            if p.op_type == "Gemm" {
                p.attrs.insert("beta".into(), Attr::Float(1.0));
            }
            graph.nodes.remove(bi);
            done = true;
            break;
        }
        if !done {
            break;
        }
    }
    drop_unused_initializers(graph);
    Ok(folded)
}

/// Removes initializers nothing reads any more (the pre-folding weights).
pub(crate) fn drop_unused_initializers(graph: &mut Graph) {
    let used = consumers(graph);
    let inputs: HashSet<&str> = graph.inputs.iter().map(|i| i.name.as_str()).collect();
    let outputs: HashSet<String> = graph.outputs.iter().map(|o| o.name.clone()).collect();
    graph
        .initializers
        .retain(|k, _| used.contains_key(k) || inputs.contains(k.as_str()) || outputs.contains(k));
}

#[cfg(test)]
mod tests;
