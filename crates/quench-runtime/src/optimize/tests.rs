use super::*;
use quench_ir::ValueInfo;

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
