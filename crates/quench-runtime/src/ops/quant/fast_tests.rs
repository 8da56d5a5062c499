//! The packed int8 paths (weights constant at build) against the scalar
//! reference (the same nodes built without constants) on random inputs.

use super::test_util::{run, run_const, t};
use quench_ir::{Attr, Node, Tensor};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn u8s(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as i8).collect()
    }
}

/// Largest element difference of two integer tensors of the same type.
fn max_diff(a: &Tensor, b: &Tensor) -> i64 {
    assert_eq!(a.shape(), b.shape());
    assert_eq!(a.dtype(), b.dtype());
    let (x, y) = (a.to_i64_vec().unwrap(), b.to_i64_vec().unwrap());
    x.iter()
        .zip(&y)
        .map(|(p, q)| (p - q).abs())
        .max()
        .unwrap_or(0)
}

fn both(node: &Node, inputs: &[Option<&Tensor>], constant: &[usize]) -> (Tensor, Tensor) {
    let before = super::fast::HITS.with(|h| h.get());
    let fast = run_const(node.clone(), 21, inputs, constant).unwrap();
    assert_eq!(
        super::fast::HITS.with(|h| h.get()),
        before + 1,
        "{} took the reference path",
        node.op_type
    );
    let reference = run(node.clone(), 21, inputs).unwrap();
    (
        fast.into_iter().next().unwrap(),
        reference.into_iter().next().unwrap(),
    )
}

fn ms(mut n: Node) -> Node {
    n.domain = "com.microsoft".into();
    n
}

#[test]
fn matmul_integer_batched_per_row_and_per_column_zero_points() {
    let mut r = Rng(1);
    let (m, k, n) = (5, 19, 70);
    let a = t(&[3, m, k], r.u8s(3 * m * k));
    let az = t(&[m], r.u8s(m));
    for b in [t(&[k, n], r.i8s(k * n)), t(&[k, n], r.u8s(k * n))] {
        let bz = if b.dtype() == quench_ir::DType::I8 {
            t(&[n], r.i8s(n))
        } else {
            t(&[n], r.u8s(n))
        };
        let node = Node::new("MatMulInteger", "m", &["a", "b", "az", "bz"], &["y"]);
        let (f, rf) = both(&node, &[Some(&a), Some(&b), Some(&az), Some(&bz)], &[1, 3]);
        assert_eq!(f, rf);
    }
    // s8 activations, 1-D A.
    let a = t(&[k], r.i8s(k));
    let b = t(&[k, n], r.i8s(k * n));
    let node = Node::new("MatMulInteger", "m", &["a", "b"], &["y"]);
    let (f, rf) = both(&node, &[Some(&a), Some(&b)], &[1]);
    assert_eq!(f, rf);
}

#[test]
fn qlinear_matmul_and_qgemm_requantize_like_the_reference() {
    let mut r = Rng(2);
    let (m, k, n) = (7, 33, 40);
    let a = t(&[m, k], r.u8s(m * k));
    let b = t(&[k, n], r.i8s(k * n));
    let bs = t(&[n], (0..n).map(|j| 0.002 + j as f32 * 1e-4).collect());
    let (a_s, a_z, bz, y_s, y_z) = (
        Tensor::scalar(0.03f32),
        Tensor::scalar(120u8),
        t(&[n], vec![0i8; n]),
        Tensor::scalar(0.05f32),
        Tensor::scalar(100u8),
    );
    let names = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"];
    let node = Node::new("QLinearMatMul", "q", &names, &["y"]);
    let inputs = [&a, &a_s, &a_z, &b, &bs, &bz, &y_s, &y_z].map(Some);
    let (f, rf) = both(&node, &inputs, &[3, 5]);
    assert!(max_diff(&f, &rf) <= 1);

    // QGemm, transB, C per column, requantized to s8 and as float.
    let bt = t(&[n, k], r.i8s(k * n));
    let c = t(&[n], (0..n as i32).map(|j| j * 50 - 900).collect());
    let yz8 = Tensor::scalar(-5i8);
    let names = ["a", "as", "az", "b", "bs", "bz", "c", "ys", "yz"];
    let node = ms(Node::new("QGemm", "g", &names, &["y"]))
        .with_attr("transB", Attr::Int(1))
        .with_attr("alpha", Attr::Float(0.5));
    let inputs = [&a, &a_s, &a_z, &bt, &bs, &bz, &c, &y_s, &yz8].map(Some);
    let (f, rf) = both(&node, &inputs, &[3, 5]);
    assert_eq!(f, rf);
    let node = ms(Node::new("QGemm", "g", &names[..7], &["y"])).with_attr("transB", Attr::Int(1));
    let (f, rf) = both(&node, &inputs[..7], &[3, 5]);
    assert_eq!(f, rf);
}

#[test]
fn float_output_matmuls_match_the_reference() {
    let mut r = Rng(3);
    let (m, k, n) = (4, 50, 33);
    let b = t(&[k, n], r.i8s(k * n));
    let bs = t(&[n], (0..n).map(|j| 0.01 + j as f32 * 1e-3).collect());
    let bz = t(&[n], r.i8s(n));
    let bias = t(&[n], (0..n).map(|j| j as f32 - 3.0).collect());
    let a = t(&[2, m, k], r.u8s(2 * m * k));
    let (a_s, a_z) = (Tensor::scalar(0.02f32), Tensor::scalar(7u8));
    let names = ["a", "b", "as", "bs", "az", "bz", "bias"];
    let node = ms(Node::new("MatMulIntegerToFloat", "f", &names, &["y"]));
    let inputs = [&a, &b, &a_s, &bs, &a_z, &bz, &bias].map(Some);
    let (f, rf) = both(&node, &inputs, &[1, 5]);
    assert_eq!(f, rf);

    let x = t(
        &[m, k],
        (0..m * k).map(|i| (i as f32 * 0.37).sin() * 3.0).collect(),
    );
    let node = ms(Node::new(
        "DynamicQuantizeMatMul",
        "d",
        &["x", "b", "bs", "bz", "bias"],
        &["y"],
    ));
    let inputs = [&x, &b, &bs, &bz, &bias].map(Some);
    let (f, rf) = both(&node, &inputs, &[1, 3]);
    assert_eq!(f, rf);
}

fn qconv(r: &mut Rng, x: &Tensor, w: &Tensor, group: i64, attrs: &[(&str, Attr)]) {
    let m = w.shape()[0];
    let ws = t(&[m], (0..m).map(|j| 0.004 + j as f32 * 1e-4).collect());
    let wz = t(&[m], vec![0i8; m]);
    let bias = t(&[m], (0..m as i32).map(|j| j * 37 - 400).collect());
    let (xs, ys) = (Tensor::scalar(0.05f32), Tensor::scalar(0.08f32));
    let (xz, yz): (Tensor, Tensor) = if x.dtype() == quench_ir::DType::U8 {
        (Tensor::scalar(r.next() as u8), Tensor::scalar(128u8))
    } else {
        (Tensor::scalar(r.next() as i8), Tensor::scalar(-3i8))
    };
    let names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"];
    let mut node =
        Node::new("QLinearConv", "c", &names, &["y"]).with_attr("group", Attr::Int(group));
    for (k, v) in attrs {
        node = node.with_attr(k, v.clone());
    }
    let inputs = [x, &xs, &xz, w, &ws, &wz, &ys, &yz, &bias].map(Some);
    let (f, rf) = both(&node, &inputs, &[3, 5]);
    assert!(max_diff(&f, &rf) <= 1, "QLinearConv {attrs:?}");
    // ConvInteger on the same data.
    let mut node = Node::new("ConvInteger", "c", &["x", "w", "xz"], &["y"])
        .with_attr("group", Attr::Int(group));
    for (k, v) in attrs {
        node = node.with_attr(k, v.clone());
    }
    let (f, rf) = both(&node, &[Some(x), Some(w), Some(&xz)], &[1]);
    assert_eq!(f, rf, "ConvInteger {attrs:?}");
}

#[test]
fn convolutions_match_the_reference() {
    let mut r = Rng(4);
    let (c, h, w) = (6, 9, 7);
    let xu = t(&[2, c, h, w], r.u8s(2 * c * h * w));
    let xi = t(&[1, c, h, w], r.i8s(c * h * w));
    let w1 = t(&[10, c, 1, 1], r.i8s(10 * c));
    let w3 = t(&[5, c, 3, 3], r.i8s(5 * c * 9));
    let wd = t(&[c, 1, 3, 3], r.i8s(c * 9));
    for x in [&xu, &xi] {
        qconv(&mut r, x, &w1, 1, &[]);
        qconv(&mut r, x, &w1, 1, &[("strides", Attr::Ints(vec![2, 2]))]);
        qconv(&mut r, x, &w3, 1, &[("pads", Attr::Ints(vec![1, 1, 1, 1]))]);
        qconv(
            &mut r,
            x,
            &w3,
            1,
            &[
                ("strides", Attr::Ints(vec![2, 1])),
                ("dilations", Attr::Ints(vec![1, 2])),
                ("auto_pad", Attr::String(b"SAME_UPPER".to_vec())),
            ],
        );
        qconv(
            &mut r,
            x,
            &wd,
            c as i64,
            &[("pads", Attr::Ints(vec![1, 0, 1, 2]))],
        );
    }
}
