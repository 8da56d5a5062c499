//! The NCHWc rewrite: chains of 2-D convolutions with constant weights run
//! in the blocked layout `[N, C/16, H, W, 16]` (see
//! `quench_kernels::conv::nchwc`), converted back to NCHW only where
//! something other than such a convolution reads a value.
//!
//! A convolution joins when it is linked to another one by a blocked edge:
//! its X comes from one (and it has more than
//! [`SMALL_INPUT`](quench_kernels::conv::nchwc::SMALL_INPUT) input
//! channels: the first layers read NCHW), or its output is such an X or
//! any one's fused residual (a residual must itself come from one). A
//! lone Conv keeps the im2col + GEMM path,
//! except a first layer (few input channels), where im2col is slow.
//! Only on CPUs with AVX-512, where the kernels are faster.

use super::index::Index;
use super::{DOMAIN, FUSED_CONV, is_onnx};
use quench_ir::{Attr, DType, Graph, Node};
use quench_kernels::conv::nchwc::SMALL_INPUT;
use std::collections::{HashMap, HashSet};

/// A Conv/FusedConv in NCHWc form: inputs X, W, B, R like FusedConv, its
/// attributes, and `input_layout` (`NCHW` or `NCHWc`); output NCHWc.
pub const NCHWC_CONV: &str = "NchwcConv";
/// MaxPool (2-D, no Indices) with X and Y NCHWc.
pub const NCHWC_MAX_POOL: &str = "NchwcMaxPool";
/// `[N, C, H, W]` → `[N, C/16, H, W, 16]`.
pub const TO_NCHWC: &str = "NchwToNchwc";
/// `[N, C/16, H, W, 16]` → `[N, C, H, W]`; attribute `channels` = C.
pub const FROM_NCHWC: &str = "NchwcToNchw";

/// What the rewrite needs to know of a convertible convolution.
struct Cand {
    /// Output channels.
    m: usize,
    /// Reads NCHW even when its X is blocked (few input channels).
    small: bool,
}

/// A convolution the NCHWc kernels can run, from its constant weights.
fn candidate(n: &Node, consts: &Index) -> Option<Cand> {
    let fused = n.domain == DOMAIN && n.op_type == FUSED_CONV;
    if !(fused || is_onnx(n, "Conv")) || n.outputs.len() != 1 || n.input(0).is_none() {
        return None;
    }
    let w = consts.constant(n.input(1)?)?;
    if w.dtype() != DType::F32 {
        return None;
    }
    if let Some(b) = n.input(2)
        && consts.constant(b)?.dtype() != DType::F32
    {
        return None;
    }
    let &[m, cg, kh, kw] = w.shape() else {
        return None;
    };
    if kh == 0 || kw == 0 || m == 0 {
        return None;
    }
    if let Ok(Some(k)) = n.attr_ints("kernel_shape")
        && k.len() != 2
    {
        return None;
    }
    let group = n.attr_int_or("group", 1).ok()?;
    let dense = group == 1;
    let depthwise = group > 1 && group as usize == m && cg == 1;
    if !dense && !depthwise {
        return None;
    }
    Some(Cand {
        m,
        small: dense && cg <= SMALL_INPUT,
    })
}

/// `nodes` with convolution chains in NCHWc form, or `None` when none.
pub(super) fn rewrite(graph: &Graph, nodes: &[Node], consts: &Index) -> Option<Vec<Node>> {
    if !quench_kernels::conv::nchwc::fast() {
        return None;
    }
    let mut cands: HashMap<usize, Cand> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| Some((i, candidate(n, consts)?)))
        .collect();
    // A fused residual joins only when another such convolution makes it:
    // one from elsewhere may broadcast (the NCHW FusedConv handles that),
    // the blocked one does not.
    loop {
        let outs: HashSet<&str> = cands
            .keys()
            .map(|&i| nodes[i].outputs[0].as_str())
            .collect();
        let before = cands.len();
        cands.retain(|&i, _| nodes[i].input(3).is_none_or(|r| outs.contains(r)));
        if cands.len() == before {
            break;
        }
    }
    let producer: HashMap<&str, usize> = cands
        .keys()
        .map(|&i| (nodes[i].outputs[0].as_str(), i))
        .collect();
    // Blocked edges: (producer, reader) where the reader takes the value
    // blocked, as its X or its residual.
    let blocked_read = |j: usize, slot: usize| -> bool {
        cands
            .get(&j)
            .is_some_and(|c| (slot == 0 && !c.small) || slot == 3)
    };
    // A first layer (few input channels) joins even alone: im2col makes a
    // poor GEMM of it (K = 27 or 147).
    let mut kept: HashSet<usize> = cands
        .iter()
        .filter(|(_, c)| c.small)
        .map(|(&i, _)| i)
        .collect();
    for (&j, _) in cands.iter() {
        for (slot, name) in nodes[j].inputs.iter().enumerate() {
            if let Some(&i) = producer.get(name.as_str())
                && i != j
                && blocked_read(j, slot)
            {
                kept.insert(i);
                kept.insert(j);
            }
        }
    }
    if kept.is_empty() {
        return None;
    }
    let blocked_name = |name: &str| format!("{name}__nchwc");
    let conv_blocked = |name: &str| producer.get(name).is_some_and(|i| kept.contains(i));
    // A 2-D MaxPool (no Indices) of a kept convolution's output pools in
    // the blocked layout: node index → channels.
    let pools: HashMap<usize, usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            is_onnx(n, "MaxPool")
                && n.outputs.len() <= 2
                && n.outputs.iter().skip(1).all(|o| o.is_empty())
                && matches!(n.attr_ints("kernel_shape"), Ok(Some(k)) if k.len() == 2)
        })
        .filter_map(|(j, n)| {
            let x = n.input(0)?;
            conv_blocked(x).then(|| (j, cands[&producer[x]].m))
        })
        .collect();
    let pool_out: HashSet<&str> = pools
        .keys()
        .map(|&j| nodes[j].outputs[0].as_str())
        .collect();
    let is_blocked_value = |name: &str| conv_blocked(name) || pool_out.contains(name);

    // Values of kept convolutions that something reads as NCHW.
    let mut nchw_wanted: HashSet<&str> = HashSet::new();
    for (j, n) in nodes.iter().enumerate() {
        for (slot, name) in n.inputs.iter().enumerate() {
            let reads_blocked = (kept.contains(&j) && blocked_read(j, slot))
                || (slot == 0 && pools.contains_key(&j));
            if is_blocked_value(name) && !reads_blocked {
                nchw_wanted.insert(name);
            }
        }
        for name in quench_ir::graph::subgraph_free_names(n) {
            if is_blocked_value(name) {
                nchw_wanted.insert(name);
            }
        }
    }
    for o in &graph.outputs {
        if is_blocked_value(&o.name) {
            nchw_wanted.insert(&o.name);
        }
    }

    let mut out = Vec::with_capacity(nodes.len() + 4);
    let mut converted: HashSet<String> = HashSet::new();
    let to_nchw = |n: &Node, y: &str, channels: usize| {
        let mut back = Node {
            name: format!("{}__to_nchw", n.name),
            op_type: FROM_NCHWC.into(),
            domain: DOMAIN.into(),
            inputs: vec![blocked_name(y)],
            outputs: vec![y.to_string()],
            ..Default::default()
        };
        back.attrs
            .insert("channels".into(), Attr::Int(channels as i64));
        back
    };
    for (j, n) in nodes.iter().enumerate() {
        if let Some(&channels) = pools.get(&j) {
            let mut pool = n.clone();
            pool.domain = DOMAIN.into();
            pool.op_type = NCHWC_MAX_POOL.into();
            pool.inputs = vec![blocked_name(&n.inputs[0])];
            let y = &n.outputs[0];
            pool.outputs = vec![blocked_name(y)];
            out.push(pool);
            if nchw_wanted.contains(y.as_str()) {
                out.push(to_nchw(n, y, channels));
            }
            continue;
        }
        if !kept.contains(&j) {
            out.push(n.clone());
            continue;
        }
        let c = &cands[&j];
        let mut conv = n.clone();
        conv.domain = DOMAIN.into();
        conv.op_type = NCHWC_CONV.into();
        let x = &n.inputs[0];
        let x_blocked = !c.small && is_blocked_value(x);
        if x_blocked {
            conv.inputs[0] = blocked_name(x);
        }
        conv.attrs.insert(
            "input_layout".into(),
            Attr::String(if x_blocked { "NCHWc" } else { "NCHW" }.into()),
        );
        if let Some(r) = n.input(3) {
            conv.inputs[3] = blocked_name(r);
            if !is_blocked_value(r) && converted.insert(r.to_string()) {
                out.push(Node {
                    name: format!("{}__to_nchwc", n.name),
                    op_type: TO_NCHWC.into(),
                    domain: DOMAIN.into(),
                    inputs: vec![r.to_string()],
                    outputs: vec![blocked_name(r)],
                    ..Default::default()
                });
            }
        }
        let y = &n.outputs[0];
        conv.outputs[0] = blocked_name(y);
        out.push(conv);
        if nchw_wanted.contains(y.as_str()) {
            out.push(to_nchw(n, y, c.m));
        }
    }
    Some(out)
}
