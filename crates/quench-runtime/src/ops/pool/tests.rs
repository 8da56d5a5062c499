use crate::ops::conv::tests::run_node;
use quench_ir::{Attr, Node, Tensor};

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

fn x4x4() -> Tensor {
    Tensor::from_vec(vec![1, 1, 4, 4], (1..=16).map(|v| v as f32).collect()).unwrap()
}

#[test]
fn max_pool_ceil_mode_and_indices() {
    let node = Node::new("MaxPool", "p", &["x"], &["y", "i"])
        .with_attr("kernel_shape", ints(&[3, 3]))
        .with_attr("strides", ints(&[2, 2]))
        .with_attr("ceil_mode", Attr::Int(1));
    let out = run_node(&node, 12, &[Some(&x4x4())], 1).unwrap();
    assert_eq!(out[0].shape(), &[1, 1, 2, 2]);
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[11.0, 12.0, 15.0, 16.0]);
    assert_eq!(out[1].as_slice::<i64>().unwrap(), &[10, 11, 14, 15]);
}

#[test]
fn max_pool_same_upper_on_uint8() {
    let x = Tensor::from_vec(vec![1, 1, 2, 3], vec![1u8, 9, 3, 4, 5, 6]).unwrap();
    let node = Node::new("MaxPool", "p", &["x"], &["y"])
        .with_attr("kernel_shape", ints(&[2, 2]))
        .with_attr("auto_pad", Attr::String(b"SAME_UPPER".to_vec()));
    let out = run_node(&node, 12, &[Some(&x)], 1).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].as_slice::<u8>().unwrap(), &[9, 9, 6, 5, 6, 6]);
}

#[test]
fn average_pool_count_include_pad() {
    let node = |cip: i64| {
        Node::new("AveragePool", "p", &["x"], &["y"])
            .with_attr("kernel_shape", ints(&[2, 2]))
            .with_attr("pads", ints(&[1, 1, 1, 1]))
            .with_attr("strides", ints(&[3, 3]))
            .with_attr("count_include_pad", Attr::Int(cip))
    };
    let y = run_node(&node(0), 19, &[Some(&x4x4())], 2).unwrap();
    assert_eq!(y[0].shape(), &[1, 1, 2, 2]);
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[1.0, 3.5, 11.0, 13.5]);
    let y = run_node(&node(1), 19, &[Some(&x4x4())], 1).unwrap();
    assert_eq!(y[0].as_slice::<f32>().unwrap(), &[0.25, 1.75, 5.5, 13.5]);
}

#[test]
fn pools_reject_bad_attributes() {
    let no_kernel = Node::new("MaxPool", "p", &["x"], &["y"]);
    assert!(run_node(&no_kernel, 12, &[Some(&x4x4())], 1).is_err());
    let dil = Node::new("AveragePool", "p", &["x"], &["y"])
        .with_attr("kernel_shape", ints(&[2, 2]))
        .with_attr("dilations", ints(&[2, 2]));
    assert!(run_node(&dil, 11, &[Some(&x4x4())], 1).is_err());
    let big = Node::new("MaxPool", "p", &["x"], &["y"]).with_attr("kernel_shape", ints(&[5, 5]));
    assert!(run_node(&big, 12, &[Some(&x4x4())], 1).is_err());
}

#[test]
fn global_pools_keep_rank() {
    let x = x4x4();
    for (op, want) in [("GlobalAveragePool", 8.5f32), ("GlobalMaxPool", 16.0)] {
        let node = Node::new(op, "g", &["x"], &["y"]);
        let y = run_node(&node, 1, &[Some(&x)], 1).unwrap();
        assert_eq!(y[0].shape(), &[1, 1, 1, 1]);
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[want]);
    }
}
