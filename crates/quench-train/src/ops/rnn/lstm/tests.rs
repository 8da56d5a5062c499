use crate::engine::{Engine, Weights};
use crate::gradcheck::{graph_for_tests, rand_input};
use quench_ir::{Attr, DType, Node, Tensor, ValueInfo};
use std::sync::Arc;

const OUTS: [&str; 3] = ["y", "yh", "yc"];

type Named = Vec<(&'static str, Tensor)>;

/// Sizes of a test case.
#[derive(Clone, Copy)]
struct Case {
    s: usize,
    b: usize,
    i: usize,
    h: usize,
    dir: &'static str,
    layout: i64,
    /// Which optional inputs are given: B, initial_h, initial_c, P.
    bias: bool,
    h0: bool,
    c0: bool,
    peep: bool,
    lens: Option<&'static [i32]>,
}

const BASE: Case = Case {
    s: 3,
    b: 2,
    i: 3,
    h: 2,
    dir: "forward",
    layout: 0,
    bias: true,
    h0: true,
    c0: true,
    peep: true,
    lens: None,
};

impl Case {
    fn dirs(&self) -> usize {
        if self.dir == "bidirectional" { 2 } else { 1 }
    }

    fn node(&self) -> Node {
        let opt = |on: bool, n: &'static str| if on { n } else { "" };
        let ins = [
            "x",
            "w",
            "r",
            opt(self.bias, "bias"),
            opt(self.lens.is_some(), "lens"),
            opt(self.h0, "h0"),
            opt(self.c0, "c0"),
            opt(self.peep, "p"),
        ];
        Node::new("LSTM", "lstm", &ins, &OUTS)
            .with_attr("hidden_size", Attr::Int(self.h as i64))
            .with_attr("direction", Attr::String(self.dir.as_bytes().to_vec()))
            .with_attr("layout", Attr::Int(self.layout))
    }

    /// Differentiable inputs (name, tensor) and constants.
    fn inputs(&self) -> (Named, Named) {
        let (d, h) = (self.dirs(), self.h);
        let xs = if self.layout == 1 {
            [self.b, self.s, self.i]
        } else {
            [self.s, self.b, self.i]
        };
        let st = if self.layout == 1 {
            [self.b, d, h]
        } else {
            [d, self.b, h]
        };
        let mut v = vec![
            ("x", rand_input(&xs, 1)),
            ("w", rand_input(&[d, 4 * h, self.i], 2)),
            ("r", rand_input(&[d, 4 * h, h], 3)),
        ];
        if self.bias {
            v.push(("bias", rand_input(&[d, 8 * h], 4)));
        }
        if self.h0 {
            v.push(("h0", rand_input(&st, 5)));
        }
        if self.c0 {
            v.push(("c0", rand_input(&st, 6)));
        }
        if self.peep {
            v.push(("p", rand_input(&[d, 3 * h], 7)));
        }
        let consts = match self.lens {
            Some(l) => vec![("lens", Tensor::from_vec(vec![l.len()], l.to_vec()).unwrap())],
            None => vec![],
        };
        (v, consts)
    }
}

fn engine(case: &Case, wrt: &[String]) -> (Engine, Weights) {
    let (ins, consts) = case.inputs();
    let (mut g, w) = graph_for_tests(&case.node(), &ins, &consts);
    g.outputs = OUTS
        .iter()
        .map(|o| ValueInfo::tensor(*o, DType::F32, None))
        .collect();
    (Engine::new(&g, 17, wrt).unwrap(), w)
}

/// Checks the gradients of `Σ_k picked sum(y_k * r_k)` with respect to every
/// float input against central differences.
fn check(case: &Case, pick: [bool; 3]) {
    let (ins, _) = case.inputs();
    let wrt: Vec<String> = ins.iter().map(|(n, _)| n.to_string()).collect();
    let (e, w) = engine(case, &wrt);
    for threads in [1, 2] {
        let tape = e.forward(&w, vec![], true, true, 0, threads).unwrap();
        let rs: Vec<Vec<f32>> = tape
            .outputs
            .iter()
            .enumerate()
            .map(|(k, t)| rand_input(&[t.numel()], 90 + k as u64).into_vec().unwrap())
            .collect();
        let gout = (0..3).map(|k| pick[k].then(|| rs[k].clone())).collect();
        let grads = e.backward(tape, gout, threads).unwrap();
        let loss = |w: &Weights| -> f64 {
            let t = e.forward(w, vec![], true, false, 0, 1).unwrap();
            (0..3)
                .filter(|&k| pick[k])
                .map(|k| {
                    let y = t.outputs[k].as_slice::<f32>().unwrap();
                    y.iter()
                        .zip(&rs[k])
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                })
                .sum()
        };
        for (k, (name, t)) in ins.iter().enumerate() {
            let analytic = grads[k].clone().unwrap_or_else(|| vec![0.0; t.numel()]);
            assert_eq!(analytic.len(), t.numel(), "grad of {name}");
            let eps = 1e-2f32;
            for (i, &a) in analytic.iter().enumerate() {
                let mut wp = w.clone();
                let nudged = |delta: f32| {
                    let mut tp = t.clone();
                    tp.as_slice_mut::<f32>().unwrap()[i] += delta;
                    Arc::new(tp)
                };
                wp.insert(name.to_string(), nudged(eps));
                let lp = loss(&wp);
                wp.insert(name.to_string(), nudged(-eps));
                let lm = loss(&wp);
                let num = (lp - lm) / (2.0 * eps as f64);
                let a = a as f64;
                let err = (a - num).abs() / (1.0f64).max(a.abs() + num.abs());
                assert!(
                    err < 1e-2,
                    "{} layout {} outputs {pick:?}: d/d{name}[{i}] analytic {a}, numeric {num} (threads {threads})",
                    case.dir,
                    case.layout
                );
            }
        }
    }
}

#[test]
fn gradients_forward_all_outputs() {
    check(&BASE, [true, true, true]);
}

#[test]
fn gradients_reverse_only_y_h() {
    check(
        &Case {
            dir: "reverse",
            ..BASE
        },
        [false, true, false],
    );
}

#[test]
fn gradients_bidirectional_only_y() {
    check(
        &Case {
            dir: "bidirectional",
            ..BASE
        },
        [true, false, false],
    );
}

#[test]
fn gradients_layout_1_bidirectional_with_lengths() {
    let case = Case {
        dir: "bidirectional",
        layout: 1,
        b: 3,
        lens: Some(&[3, 1, 0]),
        ..BASE
    };
    check(&case, [true, true, true]);
    check(&case, [false, false, true]);
}

#[test]
fn gradients_without_optional_inputs() {
    let case = Case {
        bias: false,
        h0: false,
        c0: false,
        peep: false,
        ..BASE
    };
    check(&case, [true, true, false]);
    check(
        &Case {
            dir: "reverse",
            layout: 1,
            ..case
        },
        [true, false, false],
    );
}

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Scalar ONNX LSTM on f64: Y, Y_h, Y_c in the case's layout.
fn reference(case: &Case, ins: &[(&str, Tensor)]) -> [Vec<f64>; 3] {
    let get = |n: &str| -> Option<Vec<f64>> {
        ins.iter().find(|(k, _)| *k == n).map(|(_, t)| {
            t.as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
    };
    let (s, nb, ni, h, nd) = (case.s, case.b, case.i, case.h, case.dirs());
    let bf = case.layout == 1;
    let (x, w, r) = (get("x").unwrap(), get("w").unwrap(), get("r").unwrap());
    let zeros = |n| vec![0f64; n];
    let bias = get("bias").unwrap_or_else(|| zeros(nd * 8 * h));
    let p = get("p").unwrap_or_else(|| zeros(nd * 3 * h));
    let h0 = get("h0").unwrap_or_else(|| zeros(nd * nb * h));
    let c0 = get("c0").unwrap_or_else(|| zeros(nd * nb * h));
    let st = |d: usize, b: usize| if bf { b * nd + d } else { d * nb + b } * h;
    let yat = |t: usize, d: usize, b: usize| {
        if bf {
            ((b * s + t) * nd + d) * h
        } else {
            ((t * nd + d) * nb + b) * h
        }
    };
    let xat = |t: usize, b: usize| if bf { b * s + t } else { t * nb + b } * ni;
    let mut y = zeros(s * nd * nb * h);
    let (mut yh, mut yc) = (zeros(nd * nb * h), zeros(nd * nb * h));
    for d in 0..nd {
        let rev = case.dir == "reverse" || d == 1;
        for b in 0..nb {
            let len = case.lens.map_or(s, |l| l[b] as usize);
            let mut hs = h0[st(d, b)..st(d, b) + h].to_vec();
            let mut cs = c0[st(d, b)..st(d, b) + h].to_vec();
            for k in 0..len {
                let t = if rev { len - 1 - k } else { k };
                let pre = |g: usize, j: usize| {
                    let row = (d * 4 + g) * h + j;
                    let mut v = bias[d * 8 * h + g * h + j] + bias[d * 8 * h + 4 * h + g * h + j];
                    v += (0..ni)
                        .map(|q| w[row * ni + q] * x[xat(t, b) + q])
                        .sum::<f64>();
                    v + (0..h).map(|q| r[row * h + q] * hs[q]).sum::<f64>()
                };
                let gates: Vec<[f64; 4]> = (0..h)
                    .map(|j| [pre(0, j), pre(1, j), pre(2, j), pre(3, j)])
                    .collect();
                let pd = &p[d * 3 * h..];
                for j in 0..h {
                    let [gi, go, gf, gc] = gates[j];
                    let i = sig(gi + pd[j] * cs[j]);
                    let f = sig(gf + pd[2 * h + j] * cs[j]);
                    cs[j] = f * cs[j] + i * gc.tanh();
                    let o = sig(go + pd[h + j] * cs[j]);
                    hs[j] = o * cs[j].tanh();
                }
                y[yat(t, d, b)..yat(t, d, b) + h].copy_from_slice(&hs);
            }
            yh[st(d, b)..st(d, b) + h].copy_from_slice(&hs);
            yc[st(d, b)..st(d, b) + h].copy_from_slice(&cs);
        }
    }
    [y, yh, yc]
}

#[test]
fn forward_matches_scalar_reference() {
    let cases = [
        BASE,
        Case {
            dir: "bidirectional",
            layout: 1,
            b: 3,
            lens: Some(&[3, 1, 0]),
            ..BASE
        },
        Case {
            dir: "reverse",
            s: 5,
            b: 4,
            i: 7,
            h: 9,
            bias: false,
            peep: false,
            c0: false,
            lens: Some(&[2, 5, 4, 1]),
            ..BASE
        },
    ];
    for case in cases {
        let (ins, _) = case.inputs();
        let want = reference(&case, &ins);
        let (e, w) = engine(&case, &[]);
        for threads in [1, 2] {
            let t = e.forward(&w, vec![], false, false, 0, threads).unwrap();
            for (k, want) in want.iter().enumerate() {
                let got = t.outputs[k].as_slice::<f32>().unwrap();
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(want) {
                    assert!((*g as f64 - w).abs() < 1e-5, "{} output {k}", case.dir);
                }
            }
        }
    }
}

fn build_err(node: &Node) -> String {
    match super::build(node) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_models_are_errors_not_panics() {
    let node = BASE.node();
    let e = build_err(&node.clone().with_attr("input_forget", Attr::Int(1)));
    assert!(e.contains("input_forget"), "{e}");
    let e = build_err(&node.clone().with_attr(
        "activations",
        Attr::Strings(vec![b"Relu".to_vec(), b"Tanh".to_vec(), b"Tanh".to_vec()]),
    ));
    assert!(e.contains("unsupported"), "{e}");
    let e = build_err(&node.clone().with_attr("clip", Attr::Float(3.0)));
    assert!(e.contains("clip"), "{e}");

    let run = |case: &Case, edit: &dyn Fn(&mut Named)| {
        let (mut ins, consts) = case.inputs();
        edit(&mut ins);
        crate::gradcheck::run_node(&case.node(), &ins, &consts)
            .unwrap_err()
            .to_string()
    };
    let e = run(&BASE, &|v| v[1].1 = rand_input(&[1, 8, 4], 1));
    assert!(e.contains("input 1 (W)"), "{e}");
    let e = run(&BASE, &|v| v[6].1 = rand_input(&[1, 5], 1));
    assert!(e.contains("input 7 (P)"), "{e}");
    let e = run(&BASE, &|v| v[0].1 = rand_input(&[3, 2], 1));
    assert!(e.contains("rank 3"), "{e}");
    let long = Case {
        lens: Some(&[4, 1]),
        ..BASE
    };
    let e = run(&long, &|_| {});
    assert!(e.contains("sequence_lens"), "{e}");
}
