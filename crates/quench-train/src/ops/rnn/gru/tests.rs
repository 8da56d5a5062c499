//! GRU rule checks: finite differences for every input and option, and
//! the forward against the runtime's GRU.

use crate::engine::Engine;
use crate::gradcheck::{graph_for_tests, rand_input};
use quench_ir::{Attr, Graph, Model, Node, OpsetImport, Tensor};
use std::sync::Arc;

/// Named test tensors.
type Named = Vec<(&'static str, Tensor)>;

struct Case {
    dirs: usize,
    direction: &'static str,
    lbr: i64,
    layout: i64,
    lens: Option<Vec<i32>>,
    bias: bool,
    h0: bool,
}

impl Case {
    fn new(direction: &'static str, lbr: i64) -> Case {
        Case {
            dirs: if direction == "bidirectional" { 2 } else { 1 },
            direction,
            lbr,
            layout: 0,
            lens: None,
            bias: true,
            h0: true,
        }
    }
    /// The node and its inputs (differentiable ones, then sequence_lens).
    fn build(&self) -> (Node, Named, Named) {
        let (s, b, i, h, d) = (3, 2, 3, 4, self.dirs);
        let xs = if self.layout == 1 {
            [b, s, i]
        } else {
            [s, b, i]
        };
        let hs = if self.layout == 1 {
            [b, d, h]
        } else {
            [d, b, h]
        };
        let mut ins = vec![
            ("x", rand_input(&xs, 1)),
            ("w", rand_input(&[d, 3 * h, i], 2)),
            ("r", rand_input(&[d, 3 * h, h], 3)),
        ];
        if self.bias {
            ins.push(("b", rand_input(&[d, 6 * h], 4)));
        }
        if self.h0 {
            ins.push(("h0", rand_input(&hs, 5)));
        }
        let mut consts = Vec::new();
        if let Some(l) = &self.lens {
            consts.push(("sl", Tensor::from_vec(vec![b], l.clone()).unwrap()));
        }
        let name = |n: &str, on: bool| if on { n.to_string() } else { String::new() };
        let inputs = [
            "x".to_string(),
            "w".into(),
            "r".into(),
            name("b", self.bias),
            name("sl", self.lens.is_some()),
            name("h0", self.h0),
        ];
        let refs: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
        let node = Node::new("GRU", "g", &refs, &["y", "yh"])
            .with_attr("hidden_size", Attr::Int(h as i64))
            .with_attr("direction", Attr::String(self.direction.into()))
            .with_attr("linear_before_reset", Attr::Int(self.lbr))
            .with_attr("layout", Attr::Int(self.layout));
        (node, ins, consts)
    }
}

fn graph(case: &Case, outs: &[&str]) -> (Graph, crate::engine::Weights, Vec<String>) {
    let (node, ins, consts) = case.build();
    let (mut g, w) = graph_for_tests(&node, &ins, &consts);
    g.outputs = outs
        .iter()
        .map(|o| quench_ir::ValueInfo::tensor(*o, quench_ir::DType::F32, None))
        .collect();
    let wrt = ins.iter().map(|(n, _)| n.to_string()).collect();
    (g, w, wrt)
}

/// Gradients of `Σ out·rand` for the outputs marked in `at` (Y, Y_h)
/// against central differences, for every float input.
fn check(case: &Case, at: [bool; 2]) {
    let (g, w, wrt) = graph(case, &["y", "yh"]);
    let e = Engine::new(&g, 17, &wrt).unwrap();
    for threads in [1, 2] {
        let tape = e.forward(&w, vec![], true, true, 7, threads).unwrap();
        let rs: Vec<Vec<f32>> = tape
            .outputs
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let r = rand_input(&[t.numel()], 90 + k as u64);
                let r = r.into_vec::<f32>().unwrap();
                if at[k] { r } else { vec![0.0; r.len()] }
            })
            .collect();
        let gout = rs
            .iter()
            .zip(at)
            .map(|(r, on)| on.then(|| r.clone()))
            .collect();
        let grads = e.backward(tape, gout, threads).unwrap();
        let loss = |w: &crate::engine::Weights| -> f64 {
            let t = e.forward(w, vec![], true, false, 7, 1).unwrap();
            t.outputs
                .iter()
                .zip(&rs)
                .map(|(y, r)| {
                    let y = y.as_slice::<f32>().unwrap();
                    y.iter()
                        .zip(r)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                })
                .sum()
        };
        for (k, name) in wrt.iter().enumerate() {
            let t = w[name].clone();
            let analytic = grads[k].clone().unwrap_or_else(|| vec![0.0; t.numel()]);
            assert_eq!(analytic.len(), t.numel(), "grad of {name}");
            let eps = 1e-2f32;
            for (i, &a) in analytic.iter().enumerate() {
                let mut wp = w.clone();
                let mut tp = (*t).clone();
                tp.as_slice_mut::<f32>().unwrap()[i] += eps;
                wp.insert(name.clone(), Arc::new(tp));
                let lp = loss(&wp);
                let mut tm = (*t).clone();
                tm.as_slice_mut::<f32>().unwrap()[i] -= eps;
                wp.insert(name.clone(), Arc::new(tm));
                let num = (lp - loss(&wp)) / (2.0 * eps as f64);
                let a = a as f64;
                let err = (a - num).abs() / 1f64.max(a.abs() + num.abs());
                assert!(
                    err < 5e-3,
                    "d/d{name}[{i}]: analytic {a}, numeric {num} ({} lbr {} layout {} at {at:?}, threads {threads})",
                    case.direction,
                    case.lbr,
                    case.layout
                );
            }
        }
    }
}

#[test]
fn every_direction_and_reset_form_matches_finite_differences() {
    for dir in ["forward", "reverse", "bidirectional"] {
        for lbr in [0, 1] {
            check(&Case::new(dir, lbr), [true, true]);
        }
    }
}

#[test]
fn grads_at_y_only_or_y_h_only_match_finite_differences() {
    for lbr in [0, 1] {
        check(&Case::new("bidirectional", lbr), [true, false]);
        check(&Case::new("forward", lbr), [false, true]);
    }
}

#[test]
fn layout_1_sequence_lens_and_no_bias_match_finite_differences() {
    for lbr in [0, 1] {
        let mut c = Case::new("bidirectional", lbr);
        c.layout = 1;
        check(&c, [true, true]);
        let mut c = Case::new("bidirectional", lbr);
        c.lens = Some(vec![2, 3]);
        check(&c, [true, true]);
        let mut c = Case::new("reverse", lbr);
        (c.layout, c.lens, c.bias, c.h0) = (1, Some(vec![3, 1]), false, false);
        check(&c, [true, true]);
    }
}

#[test]
fn forward_equals_the_runtime_gru() {
    let mut cases = Vec::new();
    for dir in ["forward", "reverse", "bidirectional"] {
        for lbr in [0, 1] {
            for layout in [0, 1] {
                let mut c = Case::new(dir, lbr);
                c.layout = layout;
                c.lens = (layout == 1).then(|| vec![1, 3]);
                c.h0 = lbr == 0;
                cases.push(c);
            }
        }
    }
    for c in &cases {
        let (g, w, _) = graph(c, &["y", "yh"]);
        let e = Engine::new(&g, 17, &[]).unwrap();
        let ours = e.forward(&w, vec![], true, false, 7, 1).unwrap().outputs;
        let mut rg = g.clone();
        rg.inputs.clear();
        let model = Model {
            opset_imports: vec![OpsetImport {
                domain: String::new(),
                version: 17,
            }],
            graph: rg,
            ..Default::default()
        };
        let s = quench_runtime::Session::new(&model, 1).unwrap();
        let theirs = s.run(vec![]).unwrap();
        assert_eq!(ours.len(), theirs.len());
        for (a, (_, b)) in ours.iter().zip(&theirs) {
            assert_eq!(a.shape(), b.shape());
            let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
            for (p, q) in a.iter().zip(b) {
                assert!(
                    (p - q).abs() < 1e-5,
                    "{} lbr {}: {p} vs {q}",
                    c.direction,
                    c.lbr
                );
            }
        }
    }
}

#[test]
fn bad_shapes_and_attributes_are_errors() {
    let (node, mut ins, consts) = Case::new("forward", 0).build();
    ins[2].1 = rand_input(&[1, 12, 3], 3);
    let r = crate::gradcheck::run_node(&node, &ins, &consts);
    assert!(r.unwrap_err().to_string().contains("input 2 (R)"));
    let (node, ins, _) = Case::new("forward", 0).build();
    let bad = node.clone().with_attr("linear_before_reset", Attr::Int(2));
    assert!(crate::gradcheck::run_node(&bad, &ins, &[]).is_err());
    let sl = [("sl", Tensor::from_vec(vec![2], vec![4i32, 1]).unwrap())];
    let mut n = node;
    n.inputs[4] = "sl".into();
    let e = crate::gradcheck::run_node(&n, &ins, &sl).unwrap_err();
    assert!(e.to_string().contains("sequence_lens"), "{e}");
}
