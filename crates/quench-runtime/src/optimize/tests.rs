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
