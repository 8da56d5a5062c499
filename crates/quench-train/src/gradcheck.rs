//! Finite-difference checks of backward rules (tests only).

use crate::Result;
use crate::engine::{Engine, Weights};
use crate::rng::Rng;
use quench_ir::{DType, Graph, Node, Tensor, ValueInfo};
use std::sync::Arc;

/// Values in ±[0.1, 1): away from the kinks of Relu-like ops at 0.
pub fn rand_input(shape: &[usize], seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            let m = 0.1 + 0.9 * r.uniform();
            if r.uniform() < 0.5 { -m } else { m }
        })
        .collect();
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

pub fn graph_of(node: &Node, inputs: &[(&str, Tensor)], consts: &[(&str, Tensor)]) -> Graph {
    let mut g = Graph {
        nodes: vec![node.clone()],
        ..Default::default()
    };
    for (n, t) in inputs.iter().chain(consts) {
        g.inputs.push(ValueInfo::tensor(*n, t.dtype(), None));
        g.initializers.insert(n.to_string(), t.clone());
    }
    g.outputs
        .push(ValueInfo::tensor(&node.outputs[0], DType::F32, None));
    g
}

fn weights(inputs: &[(&str, Tensor)], consts: &[(&str, Tensor)]) -> Weights {
    inputs
        .iter()
        .chain(consts)
        .map(|(n, t)| (n.to_string(), Arc::new(t.clone())))
        .collect()
}

/// Runs one node in training mode and returns its first output.
pub fn run_node(
    node: &Node,
    inputs: &[(&str, Tensor)],
    consts: &[(&str, Tensor)],
) -> Result<Tensor> {
    let g = graph_of(node, inputs, consts);
    let e = Engine::new(&g, 17, &[])?;
    let tape = e.forward(&weights(inputs, consts), vec![], true, false, 7, 1)?;
    Ok((*tape.outputs[0]).clone())
}

/// Checks the gradients of `sum(y * r)` (r random, y the node's first output)
/// with respect to every tensor of `inputs` against central differences.
pub fn check_node(node: &Node, inputs: &[(&str, Tensor)], consts: &[(&str, Tensor)], opset: i64) {
    check_node_tol(node, inputs, consts, opset, 1e-2)
}

#[allow(clippy::needless_range_loop)]
pub fn check_node_tol(
    node: &Node,
    inputs: &[(&str, Tensor)],
    consts: &[(&str, Tensor)],
    opset: i64,
    tol: f64,
) {
    let g = graph_of(node, inputs, consts);
    let wrt: Vec<String> = inputs.iter().map(|(n, _)| n.to_string()).collect();
    let e = Engine::new(&g, opset, &wrt).unwrap();
    let w = weights(inputs, consts);
    for threads in [1, 2] {
        let tape = e.forward(&w, vec![], true, true, 7, threads).unwrap();
        let y = tape.outputs[0].as_slice::<f32>().unwrap().to_vec();
        let r = rand_input(&[y.len()], 99).into_vec::<f32>().unwrap();
        let grads = e.backward(tape, vec![Some(r.clone())], threads).unwrap();
        let loss = |w: &Weights| -> f64 {
            let t = e.forward(w, vec![], true, false, 7, 1).unwrap();
            let y = t.outputs[0].as_slice::<f32>().unwrap();
            y.iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        for (k, (name, t)) in inputs.iter().enumerate() {
            let analytic = grads[k].clone().unwrap_or_else(|| vec![0.0; t.numel()]);
            assert_eq!(analytic.len(), t.numel(), "{} grad of {name}", node.op_type);
            let eps = 1e-2f32;
            for i in 0..t.numel() {
                let mut wp = w.clone();
                let mut tp = t.clone();
                tp.as_slice_mut::<f32>().unwrap()[i] += eps;
                wp.insert(name.to_string(), Arc::new(tp));
                let lp = loss(&wp);
                let mut tm = t.clone();
                tm.as_slice_mut::<f32>().unwrap()[i] -= eps;
                wp.insert(name.to_string(), Arc::new(tm));
                let lm = loss(&wp);
                let num = (lp - lm) / (2.0 * eps as f64);
                let a = analytic[i] as f64;
                let err = (a - num).abs() / (1.0f64).max(a.abs() + num.abs());
                assert!(
                    err < tol,
                    "{} d/d{name}[{i}]: analytic {a}, numeric {num} (threads {threads})",
                    node.op_type
                );
            }
        }
    }
}

/// The one-node graph and weights the checks use.
pub fn graph_for_tests(
    node: &Node,
    inputs: &[(&str, Tensor)],
    consts: &[(&str, Tensor)],
) -> (Graph, Weights) {
    (graph_of(node, inputs, consts), weights(inputs, consts))
}
