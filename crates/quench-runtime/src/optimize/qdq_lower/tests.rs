//! Each pattern on a small graph: what it lowers to, and the lowered run
//! against the unlowered (float between Q/DQ) run of the same model.

use super::*;
use crate::{PlanOptions, Session};
use quench_ir::{Attr, Model, OpsetImport, ValueInfo};

/// A model reading u8 `x` (and `x2`), with `inits`, whose outputs are `outs`.
fn model(nodes: Vec<Node>, inits: Vec<(&str, Tensor)>, inputs: &[&str], outs: &[&str]) -> Model {
    let mut g = Graph {
        nodes,
        inputs: inputs
            .iter()
            .map(|n| ValueInfo::tensor(*n, DType::U8, None))
            .collect(),
        outputs: outs
            .iter()
            .map(|o| ValueInfo::tensor(*o, DType::U8, None))
            .collect(),
        ..Default::default()
    };
    for (k, v) in inits {
        g.initializers.insert(k.to_string(), v);
    }
    Model {
        ir_version: 8,
        opset_imports: vec![
            OpsetImport {
                domain: String::new(),
                version: 17,
            },
            OpsetImport {
                domain: MS.into(),
                version: 1,
            },
        ],
        graph: g,
        ..Default::default()
    }
}

fn dq(x: &str, s: &str, z: &str, out: &str) -> Node {
    Node::new("DequantizeLinear", out, &[x, s, z], &[out])
}

fn q(x: &str, out: &str) -> Node {
    Node::new("QuantizeLinear", out, &[x, "ys", "yz"], &[out])
}

/// Scales and zero-points shared by the tests: x (0.05, 128), y (0.1, yz).
fn params(yz: u8) -> Vec<(&'static str, Tensor)> {
    vec![
        ("xs", Tensor::scalar(0.05f32)),
        ("xz", Tensor::scalar(128u8)),
        ("ys", Tensor::scalar(0.1f32)),
        ("yz", Tensor::scalar(yz)),
    ]
}

fn input(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<u8> = (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) as u8)
        .collect();
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

fn run(m: &Model, fuse: bool, feeds: &[(&str, Tensor)]) -> Vec<Tensor> {
    let opts = PlanOptions {
        fuse,
        ..Default::default()
    };
    let s = Session::with_plan_options(m, &Registry::standard(), 1, opts).unwrap();
    let feeds = feeds
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    s.run(feeds).unwrap().into_iter().map(|(_, t)| t).collect()
}

/// Lowers `m`, checks the op types left, and that the lowered run is within
/// `tol` quantization steps of the unlowered one.
fn check(m: &Model, want_ops: &[&str], feeds: &[(&str, Tensor)], tol: i32) {
    let nodes = lower_qdq(&m.graph, 17, &Registry::standard()).expect("lowers");
    let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, want_ops);
    let (a, b) = (run(m, true, feeds), run(m, false, feeds));
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a.shape(), b.shape());
        let (a, b) = (a.as_slice::<u8>().unwrap(), b.as_slice::<u8>().unwrap());
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            assert!(
                (i32::from(x) - i32::from(y)).abs() <= tol,
                "element {i}: lowered {x}, unlowered {y}"
            );
        }
    }
}

fn conv_model(act: Option<Node>, yz: u8, extra: Vec<(&'static str, Tensor)>) -> Model {
    let w: Vec<i8> = (0..4 * 3 * 3 * 3)
        .map(|i| ((i * 37) % 255 - 127) as i8)
        .collect();
    let mut inits = params(yz);
    inits.extend([
        ("w", Tensor::from_vec(vec![4, 3, 3, 3], w).unwrap()),
        (
            "ws",
            Tensor::from_vec(vec![4], vec![0.01f32, 0.02, 0.005, 0.03]).unwrap(),
        ),
        ("wz", Tensor::from_vec(vec![4], vec![0i8; 4]).unwrap()),
        (
            "b",
            Tensor::from_vec(vec![4], vec![100i32, -2000, 0, 50]).unwrap(),
        ),
        (
            "bs",
            Tensor::from_vec(vec![4], vec![0.0005f32, 0.001, 0.00025, 0.0015]).unwrap(),
        ),
        ("bz", Tensor::from_vec(vec![4], vec![0i32; 4]).unwrap()),
    ]);
    inits.extend(extra);
    let mut nodes = vec![
        dq("x", "xs", "xz", "xf"),
        Node::new("DequantizeLinear", "wd", &["w", "ws", "wz"], &["wf"])
            .with_attr("axis", Attr::Int(0)),
        Node::new("DequantizeLinear", "bd", &["b", "bs", "bz"], &["bf"])
            .with_attr("axis", Attr::Int(0)),
        Node::new("Conv", "c", &["xf", "wf", "bf"], &["cf"])
            .with_attr("pads", Attr::Ints(vec![1, 1, 1, 1])),
    ];
    let qin = match act {
        Some(a) => {
            let o = a.outputs[0].clone();
            nodes.push(a);
            o
        }
        None => "cf".into(),
    };
    nodes.push(q(&qin, "y"));
    model(nodes, inits, &["x"], &["y"])
}

#[test]
fn conv_with_bias_lowers_to_qlinearconv() {
    let m = conv_model(None, 128, vec![]);
    check(&m, &["QLinearConv"], &[("x", input(&[1, 3, 6, 5], 1))], 1);
}

#[test]
fn relu_before_q_with_minimum_zero_point_is_absorbed() {
    let relu = Node::new("Relu", "r", &["cf"], &["rf"]);
    let m = conv_model(Some(relu), 0, vec![]);
    check(&m, &["QLinearConv"], &[("x", input(&[1, 3, 6, 5], 2))], 1);
    // A Relu that the Q's range does not make redundant stays float.
    let relu = Node::new("Relu", "r", &["cf"], &["rf"]);
    let m = conv_model(Some(relu), 128, vec![]);
    assert!(lower_qdq(&m.graph, 17, &Registry::standard()).is_none());
}

#[test]
fn clip_lowers_only_when_it_covers_the_q_range() {
    // Q range with scale 0.1, zp 0: [0, 25.5]; Clip(0, 25.5) is a no-op.
    let clip = Node::new("Clip", "k", &["cf", "lo", "hi"], &["kf"]);
    let bounds = |hi: f32| vec![("lo", Tensor::scalar(0f32)), ("hi", Tensor::scalar(hi))];
    let m = conv_model(Some(clip.clone()), 0, bounds(25.5));
    check(&m, &["QLinearConv"], &[("x", input(&[1, 3, 6, 5], 3))], 1);
    // Clip(0, 6) cuts inside the range: not lowered.
    let m = conv_model(Some(clip), 0, bounds(6.0));
    assert!(lower_qdq(&m.graph, 17, &Registry::standard()).is_none());
}

#[test]
fn matmul_and_gemm_lower() {
    let b: Vec<i8> = (0..5 * 4).map(|i| ((i * 53) % 200 - 100) as i8).collect();
    let mut inits = params(100);
    inits.extend([
        ("b", Tensor::from_vec(vec![5, 4], b).unwrap()),
        ("bs", Tensor::scalar(0.02f32)),
        ("bz", Tensor::scalar(0i8)),
    ]);
    let nodes = vec![
        dq("x", "xs", "xz", "xf"),
        dq("b", "bs", "bz", "bf"),
        Node::new("MatMul", "m", &["xf", "bf"], &["mf"]),
        q("mf", "y"),
    ];
    let m = model(nodes, inits.clone(), &["x"], &["y"]);
    check(&m, &["QLinearMatMul"], &[("x", input(&[3, 5], 4))], 1);

    inits.push((
        "c",
        Tensor::from_vec(vec![5], vec![7i32, -90, 300, 0, 11]).unwrap(),
    ));
    inits.push(("cs", Tensor::scalar(0.001f32)));
    inits.push(("cz", Tensor::scalar(0i32)));
    let nodes = vec![
        dq("x", "xs", "xz", "xf"),
        dq("b", "bs", "bz", "bf"),
        dq("c", "cs", "cz", "cf"),
        Node::new("Gemm", "g", &["xf", "bf", "cf"], &["gf"]).with_attr("transB", Attr::Int(1)),
        q("gf", "y"),
    ];
    let m = model(nodes, inits, &["x"], &["y"]);
    check(&m, &["QGemm"], &[("x", input(&[2, 4], 5))], 1);
}

#[test]
fn binary_pool_and_concat_lower_to_contrib_ops() {
    let mut inits = params(128);
    inits.extend([
        ("x2s", Tensor::scalar(0.07f32)),
        ("x2z", Tensor::scalar(120u8)),
    ]);
    let feeds = [
        ("x", input(&[1, 2, 4, 4], 6)),
        ("x2", input(&[1, 2, 4, 4], 7)),
    ];
    for (op, want) in [("Add", "QLinearAdd"), ("Mul", "QLinearMul")] {
        let nodes = vec![
            dq("x", "xs", "xz", "a"),
            dq("x2", "x2s", "x2z", "b"),
            Node::new(op, "o", &["a", "b"], &["f"]),
            q("f", "y"),
        ];
        let m = model(nodes, inits.clone(), &["x", "x2"], &["y"]);
        check(&m, &[want], &feeds, 1);
    }
    let nodes = vec![
        dq("x", "xs", "xz", "a"),
        dq("x2", "x2s", "x2z", "b"),
        Node::new("Concat", "o", &["a", "b"], &["f"]).with_attr("axis", Attr::Int(1)),
        q("f", "y"),
    ];
    let m = model(nodes, inits.clone(), &["x", "x2"], &["y"]);
    check(&m, &["QLinearConcat"], &feeds, 1);
    for (op, want) in [
        ("GlobalAveragePool", "QLinearGlobalAveragePool"),
        ("AveragePool", "QLinearAveragePool"),
    ] {
        let mut n = Node::new(op, "p", &["a"], &["f"]);
        if op == "AveragePool" {
            n = n.with_attr("kernel_shape", Attr::Ints(vec![2, 2]));
        }
        let nodes = vec![dq("x", "xs", "xz", "a"), n, q("f", "y")];
        let m = model(nodes, inits.clone(), &["x"], &["y"]);
        check(&m, &[want], &feeds[..1], 1);
    }
}

#[test]
fn pass_through_ops_run_on_the_integers_when_scales_match() {
    let mut inits = params(128);
    inits.push(("ys2", Tensor::scalar(0.05f32)));
    inits.push(("shape", Tensor::from_vec(vec![2], vec![2i64, 16]).unwrap()));
    let same = |op: Node| {
        vec![
            dq("x", "xs", "xz", "a"),
            op,
            Node::new("QuantizeLinear", "q", &["f", "xs", "xz"], &["y"]),
        ]
    };
    let feeds = [("x", input(&[1, 2, 4, 4], 8))];
    let pool =
        Node::new("MaxPool", "p", &["a"], &["f"]).with_attr("kernel_shape", Attr::Ints(vec![2, 2]));
    let m = model(same(pool), inits.clone(), &["x"], &["y"]);
    check(&m, &["MaxPool"], &feeds, 0);
    let reshape = Node::new("Reshape", "r", &["a", "shape"], &["f"]);
    let m = model(same(reshape.clone()), inits.clone(), &["x"], &["y"]);
    check(&m, &["Reshape"], &feeds, 0);
    // A Q with another scale requantizes: not a pure data move.
    let nodes = vec![dq("x", "xs", "xz", "a"), reshape, q("f", "y")];
    let m = model(nodes, inits, &["x"], &["y"]);
    assert!(lower_qdq(&m.graph, 17, &Registry::standard()).is_none());
}

#[test]
fn must_not_lower_cases() {
    // Conv output also a graph output: the float value must stay.
    let mut m = conv_model(None, 128, vec![]);
    m.graph
        .outputs
        .push(ValueInfo::tensor("cf", DType::F32, None));
    assert!(lower_qdq(&m.graph, 17, &Registry::standard()).is_none());
    // A scale fed at run time is not constant.
    let mut m = conv_model(None, 128, vec![]);
    m.graph
        .inputs
        .push(ValueInfo::tensor("xs", DType::F32, None));
    assert!(lower_qdq(&m.graph, 17, &Registry::standard()).is_none());
    // A bias whose scale is not x_scale * w_scale (later entries win).
    let bad = Tensor::from_vec(vec![4], vec![0.001f32; 4]).unwrap();
    let m = conv_model(None, 128, vec![("bs", bad)]);
    assert!(lower_qdq(&m.graph, 17, &Registry::standard()).is_none());
}

#[test]
fn shared_dq_and_q_outputs_keep_their_other_readers() {
    // x's DQ also feeds a float Sigmoid; the Q output is a graph output and
    // feeds another DQ.
    let mut m = conv_model(None, 128, vec![]);
    m.graph
        .nodes
        .push(Node::new("Sigmoid", "s", &["xf"], &["sig"]));
    m.graph.nodes.push(dq("y", "ys", "yz", "yf"));
    m.graph
        .outputs
        .push(ValueInfo::tensor("sig", DType::F32, None));
    m.graph
        .outputs
        .push(ValueInfo::tensor("yf", DType::F32, None));
    let nodes = lower_qdq(&m.graph, 17, &Registry::standard()).unwrap();
    let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        [
            "DequantizeLinear",
            "QLinearConv",
            "Sigmoid",
            "DequantizeLinear"
        ]
    );
    let feeds = [("x".to_string(), input(&[1, 3, 6, 5], 9))];
    let s = Session::new(&m, 1).unwrap();
    let out = s.run(feeds.to_vec()).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].1.dtype(), DType::U8);
}
