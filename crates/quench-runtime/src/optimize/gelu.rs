//! `x · ½ · (1 + erf(x / √2))`, as PyTorch and Hugging Face export Gelu
//! (Div or Mul by a constant, Erf, Add 1, two Muls in either order), becomes
//! one Gelu node: one vectorised pass instead of five over fresh tensors.

use super::index::Index;
use super::is_onnx;
use quench_ir::{Graph, Node};
use std::collections::HashSet;

fn near(v: Option<f32>, want: f32) -> bool {
    v.is_some_and(|v| (v - want).abs() <= 1e-4 * want.abs())
}

/// For a two-input node, the input that is not `name` (`None` if neither
/// or both are `name`).
fn other<'n>(n: &'n Node, name: &str) -> Option<&'n str> {
    match n.inputs.as_slice() {
        [a, b] if a == name && b != name => Some(b),
        [a, b] if b == name && a != name => Some(a),
        _ => None,
    }
}

/// The one-output ONNX node `op` that alone reads `name`.
fn single<'g>(nodes: &'g [Node], ix: &Index, name: &str, op: &str) -> Option<(usize, &'g Node)> {
    let j = ix.only_reader(name)?;
    let n = &nodes[j];
    (is_onnx(n, op) && n.outputs.len() == 1).then_some((j, n))
}

/// Matches the chain around the Erf node `e`: `(x, output, nodes absorbed)`.
fn chain<'g>(nodes: &'g [Node], ix: &Index, e: usize) -> Option<(&'g str, &'g str, Vec<usize>)> {
    let erf = &nodes[e];
    if !is_onnx(erf, "Erf") || erf.inputs.len() != 1 || erf.outputs.len() != 1 {
        return None;
    }
    // x / √2 or x · (1/√2), read only by the Erf.
    let d = ix.producer(&erf.inputs[0])?;
    let scale = &nodes[d];
    if scale.outputs.len() != 1 || ix.only_reader(&scale.outputs[0]) != Some(e) {
        return None;
    }
    let [x, c] = scale.inputs.as_slice() else {
        return None;
    };
    let ok = (is_onnx(scale, "Div") && near(ix.scalar(c), std::f32::consts::SQRT_2))
        || (is_onnx(scale, "Mul") && near(ix.scalar(c), std::f32::consts::FRAC_1_SQRT_2));
    if !ok || x == c {
        return None;
    }
    // 1 + erf.
    let (a, add) = single(nodes, ix, &erf.outputs[0], "Add")?;
    if !near(ix.scalar(other(add, &erf.outputs[0])?), 1.0) {
        return None;
    }
    let (m1, mul1) = single(nodes, ix, &add.outputs[0], "Mul")?;
    let partner = other(mul1, &add.outputs[0])?;
    if partner == x {
        // (x · (1 + erf)) · ½
        let (m2, mul2) = single(nodes, ix, &mul1.outputs[0], "Mul")?;
        if !near(ix.scalar(other(mul2, &mul1.outputs[0])?), 0.5) {
            return None;
        }
        return Some((x, &mul2.outputs[0], vec![d, e, a, m1, m2]));
    }
    // (x · ½) · (1 + erf), the half product read only here.
    let h = ix.producer(partner)?;
    let half = &nodes[h];
    if !is_onnx(half, "Mul") || ix.only_reader(partner) != Some(m1) {
        return None;
    }
    if other(half, x).is_none_or(|c| !near(ix.scalar(c), 0.5)) {
        return None;
    }
    Some((x, &mul1.outputs[0], vec![d, e, a, h, m1]))
}

/// `nodes` (the graph's, possibly already rewritten) with every Erf Gelu
/// chain replaced by a Gelu node, or `None` when there is none.
pub fn fuse_gelu(nodes: &[Node], graph: &Graph) -> Option<Vec<Node>> {
    let ix = Index::new(nodes, graph);
    let mut removed: HashSet<usize> = HashSet::new();
    let mut placed = Vec::new();
    for e in 0..nodes.len() {
        let Some((x, out, absorbed)) = chain(nodes, &ix, e) else {
            continue;
        };
        if absorbed.iter().any(|j| removed.contains(j)) {
            continue;
        }
        let last = *absorbed.iter().max()?;
        let name = format!("{}_gelu", nodes[e].name);
        placed.push((last, Node::new("Gelu", &name, &[x], &[out])));
        removed.extend(absorbed);
    }
    if placed.is_empty() {
        return None;
    }
    // Each Gelu takes the place of the last node of its chain, so every
    // reader of its output still comes after it.
    let mut at: std::collections::HashMap<usize, Node> = placed.into_iter().collect();
    Some(
        nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match at.remove(&i) {
                Some(g) => Some(g),
                None => (!removed.contains(&i)).then(|| n.clone()),
            })
            .collect(),
    )
}
