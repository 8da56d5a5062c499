use super::*;
use quench_ir::{Tensor, ValueInfo};

fn graph(nodes: Vec<Node>, outputs: &[&str]) -> Graph {
    Graph {
        nodes,
        outputs: outputs
            .iter()
            .map(|o| ValueInfo::tensor(*o, quench_ir::DType::F32, None))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn fuses_conv_add_relu() {
    let g = graph(
        vec![
            Node::new("Conv", "c", &["x", "w", "b"], &["y"]),
            Node::new("Add", "a", &["s", "y"], &["z"]),
            Node::new("Relu", "r", &["z"], &["out"]),
        ],
        &["out"],
    );
    let nodes = fuse_conv_chains(&g, 17).unwrap();
    assert_eq!(nodes.len(), 1);
    let f = &nodes[0];
    assert_eq!(
        (f.domain.as_str(), f.op_type.as_str()),
        (DOMAIN, FUSED_CONV)
    );
    assert_eq!(f.inputs, ["x", "w", "b", "s"]);
    assert_eq!(f.outputs, ["out"]);
    assert_eq!(f.attr_string_or("activation", "").unwrap(), "Relu");
}

#[test]
fn leaves_observed_or_shared_values_alone() {
    // y is a graph output: nothing may swallow it.
    let g = graph(
        vec![
            Node::new("Conv", "c", &["x", "w"], &["y"]),
            Node::new("Relu", "r", &["y"], &["out"]),
        ],
        &["y", "out"],
    );
    assert!(fuse_conv_chains(&g, 17).is_none());
    // Clip with a runtime bound cannot fuse.
    let g = graph(
        vec![
            Node::new("Conv", "c", &["x", "w"], &["y"]),
            Node::new("Clip", "r", &["y", "lo"], &["out"]),
        ],
        &["out"],
    );
    assert!(fuse_conv_chains(&g, 17).is_none());
}

fn scalar_inits(g: &mut Graph, vals: &[(&str, f32)]) {
    for (n, v) in vals {
        g.initializers.insert(n.to_string(), Tensor::scalar(*v));
    }
}

#[test]
fn fuses_both_gelu_orders_and_keeps_results() {
    use crate::Session;
    // Hugging Face order: (x · (1 + erf(x/√2))) · ½, and the (x·½)·(...) one
    // with Mul by 1/√2, side by side.
    let mut g = graph(
        vec![
            Node::new("Div", "d", &["x", "sqrt2"], &["xd"]),
            Node::new("Erf", "e", &["xd"], &["ex"]),
            Node::new("Add", "a", &["ex", "one"], &["ea"]),
            Node::new("Mul", "m", &["x", "ea"], &["xm"]),
            Node::new("Mul", "h", &["xm", "half"], &["y1"]),
            Node::new("Mul", "d2", &["x", "rsqrt2"], &["xs"]),
            Node::new("Erf", "e2", &["xs"], &["ex2"]),
            Node::new("Add", "a2", &["one", "ex2"], &["ea2"]),
            Node::new("Mul", "h2", &["half", "x"], &["xh"]),
            Node::new("Mul", "m2", &["xh", "ea2"], &["y2"]),
        ],
        &["y1", "y2"],
    );
    scalar_inits(
        &mut g,
        &[
            ("sqrt2", std::f32::consts::SQRT_2),
            ("rsqrt2", std::f32::consts::FRAC_1_SQRT_2),
            ("one", 1.0),
            ("half", 0.5),
        ],
    );
    let nodes = fuse_gelu(&g.nodes, &g).unwrap();
    let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, ["Gelu", "Gelu"]);
    assert_eq!(nodes[0].inputs, ["x"]);
    assert_eq!(nodes[0].outputs, ["y1"]);
    assert_eq!(nodes[1].outputs, ["y2"]);

    g.inputs = vec![ValueInfo::tensor("x", quench_ir::DType::F32, None)];
    let model = quench_ir::Model {
        ir_version: 8,
        opset_imports: vec![quench_ir::OpsetImport {
            domain: String::new(),
            version: 17,
        }],
        graph: g,
        ..Default::default()
    };
    let xs: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) * 0.3).collect();
    let x = Tensor::from_vec(vec![40], xs.clone()).unwrap();
    let s = Session::new(&model, 1).unwrap();
    let out = s.run(vec![("x".to_string(), x)]).unwrap();
    for y in &out {
        let y = y.1.as_slice::<f32>().unwrap();
        for (&v, &got) in xs.iter().zip(y) {
            let want = 0.5 * v as f64 * (1.0 + libm_erf(v as f64 / std::f64::consts::SQRT_2));
            assert!(
                (got as f64 - want).abs() < 1e-5,
                "gelu({v}) = {got}, want {want}"
            );
        }
    }
}

fn libm_erf(x: f64) -> f64 {
    unsafe extern "C" {
        fn erf(x: f64) -> f64;
    }
    // Safety: a pure libm function.
    unsafe { erf(x) }
}

#[test]
fn gelu_chain_with_a_shared_middle_value_is_left_alone() {
    let mut g = graph(
        vec![
            Node::new("Div", "d", &["x", "sqrt2"], &["xd"]),
            Node::new("Erf", "e", &["xd"], &["ex"]),
            Node::new("Add", "a", &["ex", "one"], &["ea"]),
            Node::new("Mul", "m", &["x", "ea"], &["xm"]),
            Node::new("Mul", "h", &["xm", "half"], &["y1"]),
        ],
        // ea is observed: the chain must stay.
        &["y1", "ea"],
    );
    scalar_inits(
        &mut g,
        &[
            ("sqrt2", std::f32::consts::SQRT_2),
            ("one", 1.0),
            ("half", 0.5),
        ],
    );
    assert!(fuse_gelu(&g.nodes, &g).is_none());
    // A wrong constant (x/2 instead of x/√2) is not Gelu.
    scalar_inits(&mut g, &[("sqrt2", 2.0)]);
    g.outputs.truncate(1);
    assert!(fuse_gelu(&g.nodes, &g).is_none());
}

/// A small CNN with every kind of NCHWc convolution: a first layer of 3
/// channels, depthwise + Clip, pointwise, 3×3 + residual + Relu, and a
/// pointwise value that is also a graph output.
fn cnn() -> quench_ir::Model {
    use quench_ir::{DType, Dim, Model, OpsetImport};
    let vals = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + seed * 101) % 23) as f32 - 11.0) / 17.0)
            .collect()
    };
    let mut g = graph(vec![], &["out", "y2"]);
    let mut init = |name: &str, shape: &[usize], seed: usize| {
        let n = shape.iter().product();
        let t = Tensor::from_vec(shape.to_vec(), vals(n, seed)).unwrap();
        g.initializers.insert(name.into(), t);
    };
    init("w0", &[24, 3, 3, 3], 1);
    init("b0", &[24], 2);
    init("w1", &[24, 1, 3, 3], 3);
    init("b1", &[24], 4);
    init("w2", &[40, 24, 1, 1], 5);
    init("w3", &[40, 40, 3, 3], 6);
    init("b3", &[40], 7);
    g.initializers
        .insert("lo".into(), Tensor::from_vec(vec![], vec![0.0f32]).unwrap());
    g.initializers
        .insert("hi".into(), Tensor::from_vec(vec![], vec![0.5f32]).unwrap());
    let conv = |name: &str, ins: &[&str], out: &str, k: i64, s: i64, group: i64| {
        let mut n = Node::new("Conv", name, ins, &[out]);
        n.attrs
            .insert("kernel_shape".into(), Attr::Ints(vec![k, k]));
        n.attrs.insert("strides".into(), Attr::Ints(vec![s, s]));
        let p = k / 2;
        n.attrs.insert("pads".into(), Attr::Ints(vec![p, p, p, p]));
        n.attrs.insert("group".into(), Attr::Int(group));
        n
    };
    g.nodes = vec![
        conv("c0", &["x", "w0", "b0"], "y0", 3, 2, 1),
        Node::new("Relu", "r0", &["y0"], &["a0"]),
        conv("c1", &["a0", "w1", "b1"], "y1", 3, 1, 24),
        Node::new("Clip", "k1", &["y1", "lo", "hi"], &["a1"]),
        conv("c2", &["a1", "w2"], "y2", 1, 1, 1),
        conv("c3", &["y2", "w3", "b3"], "y3", 3, 1, 1),
        Node::new("Add", "s3", &["y3", "y2"], &["z3"]),
        Node::new("Relu", "r3", &["z3"], &["out"]),
    ];
    let shape = vec![Dim::Fixed(2), Dim::Fixed(3), Dim::Fixed(15), Dim::Fixed(13)];
    g.inputs = vec![ValueInfo::tensor("x", DType::F32, Some(shape))];
    Model {
        ir_version: 8,
        opset_imports: vec![OpsetImport {
            domain: String::new(),
            version: 17,
        }],
        graph: g,
        ..Default::default()
    }
}

#[test]
fn nchwc_chain_matches_the_plain_graph() {
    let m = cnn();
    let nodes = fuse_conv_chains(&m.graph, 17).unwrap();
    let count = |op: &str| nodes.iter().filter(|n| n.op_type == op).count();
    if quench_kernels::conv::nchwc::fast() {
        assert_eq!(count(NCHWC_CONV), 4, "{nodes:#?}");
        // y2 is a graph output and out is too: both come back to NCHW.
        assert_eq!(count(FROM_NCHWC), 2, "{nodes:#?}");
    }
    let x = Tensor::from_vec(
        vec![2, 3, 15, 13],
        (0..2 * 3 * 15 * 13)
            .map(|i| ((i * 7) % 19) as f32 / 9.0 - 1.0)
            .collect(),
    )
    .unwrap();
    let s = crate::Session::new(&m, 1).unwrap();
    let fast = s.run(vec![("x".into(), x.clone())]).unwrap();
    // keep_all runs the plan without any rewrite.
    let mut hooks = crate::RunHooks {
        keep_all: true,
        ..Default::default()
    };
    let plain = s.run_with(vec![("x".into(), x)], &mut hooks).unwrap();
    for name in ["out", "y2"] {
        let get = |v: &[(String, Tensor)]| {
            let t = &v.iter().find(|(n, _)| n == name).unwrap().1;
            (t.shape().to_vec(), t.as_slice::<f32>().unwrap().to_vec())
        };
        let (a, b) = (get(&fast), get(&plain));
        assert_eq!(a.0, b.0, "{name} shape");
        assert_eq!(a.0, [2, 40, 8, 7]);
        for (u, v) in a.1.iter().zip(&b.1) {
            assert!((u - v).abs() < 1e-4 * (1.0 + v.abs()), "{name}: {u} vs {v}");
        }
    }
}

#[test]
fn nchwc_ops_reject_bad_inputs() {
    let mut m = cnn();
    // W as a runtime input: the NCHWc convolution refuses to build.
    let mut n = Node::new("NchwcConv", "bad", &["x", "w"], &["y"]);
    n.domain = DOMAIN.into();
    m.graph.nodes = vec![n];
    m.graph.outputs = vec![ValueInfo::tensor("y", quench_ir::DType::F32, None)];
    m.graph
        .inputs
        .push(ValueInfo::tensor("w", quench_ir::DType::F32, None));
    let Err(err) = crate::Session::new(&m, 1) else {
        panic!("NchwcConv with runtime weights built");
    };
    let err = err.to_string();
    assert!(err.contains("constant"), "{err}");
    // A reorder back given a tensor that is not blocked.
    let mut n = Node::new(FROM_NCHWC, "back", &["x"], &["y"]);
    n.domain = DOMAIN.into();
    n.attrs.insert("channels".into(), Attr::Int(3));
    m.graph.nodes = vec![n];
    m.graph.inputs.pop();
    let s = crate::Session::new(&m, 1).unwrap();
    let x = Tensor::from_vec(vec![2, 3, 15, 13], vec![0.0f32; 2 * 3 * 15 * 13]).unwrap();
    let err = s.run(vec![("x".into(), x)]).unwrap_err().to_string();
    assert!(err.contains("expected [N, 1, H, W, 16]"), "{err}");
}
