//! Hand-built QDQ graphs: the rewrite picked, and (where Quench's runtime has
//! every op) the integer model's output against the QDQ model's, within one
//! output step. The ONNX Runtime comparison is `tests/int_format_ort.rs`.

use super::*;
use quench_ir::{Attr, DType, Dim, Graph, Model, Node, OpsetImport, Tensor, ValueInfo};
use quench_runtime::Session;

struct B {
    g: Graph,
}

impl B {
    fn new(input: &str, shape: &[u64]) -> B {
        let dims = shape.iter().map(|&d| Dim::Fixed(d)).collect();
        let g = Graph {
            inputs: vec![ValueInfo::tensor(input, DType::F32, Some(dims))],
            ..Default::default()
        };
        B { g }
    }

    fn init(&mut self, name: &str, t: Tensor) -> String {
        self.g.initializers.insert(name.into(), t);
        name.into()
    }

    fn node(&mut self, op: &str, inputs: &[&str], out: &str) -> &mut Node {
        let n = Node::new(op, &format!("{op}_{out}"), inputs, &[out]);
        self.g.nodes.push(n);
        self.g.nodes.last_mut().unwrap()
    }

    /// Q then DQ of `x` with a per-tensor u8 scale/zero point.
    fn qdq(&mut self, x: &str, scale: f32, zp: u8) -> String {
        let s = self.init(&format!("{x}_s"), Tensor::scalar(scale));
        let z = self.init(&format!("{x}_z"), Tensor::scalar(zp));
        self.node("QuantizeLinear", &[x, &s, &z], &format!("{x}_q"));
        self.node(
            "DequantizeLinear",
            &[&format!("{x}_q"), &s, &z],
            &format!("{x}_dq"),
        );
        format!("{x}_dq")
    }

    /// DQ of an int8 weight quantized per channel along `axis`.
    fn weight(&mut self, name: &str, shape: &[usize], axis: i64, scales: Vec<f32>) -> String {
        let n: usize = shape.iter().product();
        let q: Vec<i8> = (0..n).map(|i| ((i * 37 + 11) % 255) as i8).collect();
        let c = scales.len();
        self.init(
            &format!("{name}_q"),
            Tensor::from_vec(shape.to_vec(), q).unwrap(),
        );
        self.init(
            &format!("{name}_s"),
            Tensor::from_vec(vec![c], scales).unwrap(),
        );
        self.init(
            &format!("{name}_z"),
            Tensor::from_vec(vec![c], vec![0i8; c]).unwrap(),
        );
        let dq = format!("{name}_dq");
        let ins = [
            format!("{name}_q"),
            format!("{name}_s"),
            format!("{name}_z"),
        ];
        self.node("DequantizeLinear", &[&ins[0], &ins[1], &ins[2]], &dq)
            .attrs
            .insert("axis".into(), Attr::Int(axis));
        dq
    }

    fn model(mut self, out: &str) -> Model {
        self.g.outputs = vec![ValueInfo::tensor(out, DType::F32, None)];
        Model {
            ir_version: 8,
            opset_imports: vec![OpsetImport {
                domain: String::new(),
                version: 13,
            }],
            graph: self.g,
            ..Default::default()
        }
    }
}

fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| ((i * 7919) % 200) as f32 / 50.0 - 2.0)
        .collect();
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

/// Runs both models and checks the outputs differ by at most `step`.
fn agree(qdq: &Model, int: &Model, x: Tensor, step: f32) {
    let run = |m: &Model| {
        let s = Session::new(m, 1).unwrap();
        let out = s.run(vec![("x".into(), x.clone())]).unwrap();
        out[0].1.as_slice::<f32>().unwrap().to_vec()
    };
    let (a, b) = (run(qdq), run(int));
    assert_eq!(a.len(), b.len());
    for (i, (p, q)) in a.iter().zip(&b).enumerate() {
        assert!((p - q).abs() <= step * 1.001, "element {i}: {p} vs {q}");
    }
}

fn ops(m: &Model) -> Vec<&str> {
    m.graph.nodes.iter().map(|n| n.op_type.as_str()).collect()
}

/// x → Q/DQ → Conv(per-channel W, int32 bias) → Relu → Q/DQ.
fn conv_relu(relu: bool, out_q: bool) -> Model {
    let mut b = B::new("x", &[1, 2, 5, 5]);
    let x = b.qdq("x", 0.02, 100);
    let w = b.weight("w", &[3, 2, 3, 3], 0, vec![0.01, 0.02, 0.015]);
    let bias: Vec<i32> = vec![500, -300, 20];
    b.init("b_q", Tensor::from_vec(vec![3], bias).unwrap());
    let bs: Vec<f32> = [0.01f32, 0.02, 0.015].iter().map(|s| s * 0.02).collect();
    b.init("b_s", Tensor::from_vec(vec![3], bs).unwrap());
    b.node("DequantizeLinear", &["b_q", "b_s"], "b_dq")
        .attrs
        .insert("axis".into(), Attr::Int(0));
    let c = b.node("Conv", &[&x, &w, "b_dq"], "c");
    c.attrs.insert("pads".into(), Attr::Ints(vec![1; 4]));
    let mut y = "c".to_string();
    if relu {
        b.node("Relu", &["c"], "r");
        y = "r".into();
    }
    if out_q {
        y = b.qdq(&y, 0.03, 0);
    }
    b.model(&y)
}

#[test]
fn conv_relu_becomes_qlinearconv_and_matches_qdq() {
    let m = conv_relu(true, true);
    let (int, report) = to_int(&m).unwrap();
    assert_eq!(report.converted["Conv -> QLinearConv"], 1);
    assert_eq!(report.activations_absorbed, 1);
    assert_eq!(
        ops(&int),
        ["QuantizeLinear", "QLinearConv", "DequantizeLinear"]
    );
    let conv = &int.graph.nodes[1];
    // The model's int32 bias is reused as is: its scale is x_scale * w_scale.
    assert_eq!(conv.inputs[8], "b_q");
    assert_eq!(conv.attrs["pads"], Attr::Ints(vec![1; 4]));
    // Quench's runtime has no float Relu yet: compare with the QDQ model
    // without it, the same function since the Q clamps at 0 anyway.
    agree(&conv_relu(false, true), &int, input(&[1, 2, 5, 5]), 0.03);
}

#[test]
fn conv_without_output_q_uses_conv_integer() {
    let m = conv_relu(false, false);
    let (int, report) = to_int(&m).unwrap();
    assert_eq!(report.total_converted(), 1, "{report}");
    assert_eq!(
        ops(&int),
        ["QuantizeLinear", "ConvInteger", "Add", "DequantizeLinear"]
    );
    let dq = &int.graph.nodes[3];
    assert_eq!(dq.outputs[0], "c");
    let scale = &int.graph.initializers[&dq.inputs[1]];
    let want = [0.0002f32, 0.0004, 0.0003];
    for (a, b) in scale.as_slice::<f32>().unwrap().iter().zip(want) {
        assert!((a - b).abs() < 1e-9);
    }
    let bias = &int.graph.initializers[&int.graph.nodes[2].inputs[1]];
    assert_eq!(bias.shape(), &[3, 1, 1]);
    // ORT's ConvInteger wants one weight zero point.
    let wz = &int.graph.initializers[&int.graph.nodes[1].inputs[3]];
    assert_eq!(wz.shape(), &[] as &[usize]);
}

#[test]
fn relu_is_kept_when_the_q_range_goes_below_zero() {
    let mut m = conv_relu(true, true);
    // zero point 10: the Q can represent negatives, so Relu still matters.
    m.graph
        .initializers
        .insert("r_z".into(), Tensor::scalar(10u8));
    let (int, report) = to_int(&m).unwrap();
    assert_eq!(report.activations_absorbed, 0);
    // The Conv's output is not quantized: it becomes the int32 form.
    assert_eq!(
        ops(&int),
        [
            "QuantizeLinear",
            "ConvInteger",
            "Add",
            "DequantizeLinear",
            "Relu",
            "QuantizeLinear",
            "DequantizeLinear"
        ]
    );
}

#[test]
fn matmul_and_gemm_become_qlinearmatmul_and_qgemm() {
    let mut b = B::new("x", &[3, 4]);
    let x = b.qdq("x", 0.02, 128);
    let w = b.weight("w", &[4, 5], 1, vec![0.01, 0.02, 0.03, 0.01, 0.02]);
    b.node("MatMul", &[&x, &w], "h");
    let h = b.qdq("h", 0.05, 120);
    let w2 = b.weight("w2", &[2, 5], 0, vec![0.02, 0.01]);
    b.init("c", Tensor::from_vec(vec![2], vec![0.3f32, -0.2]).unwrap());
    let g = b.node("Gemm", &[&h, &w2, "c"], "g");
    g.attrs.insert("transB".into(), Attr::Int(1));
    g.attrs.insert("alpha".into(), Attr::Float(0.5));
    let y = b.qdq("g", 0.04, 128);
    let m = b.model(&y);
    let (int, report) = to_int(&m).unwrap();
    assert_eq!(report.converted["MatMul -> QLinearMatMul"], 1, "{report}");
    assert_eq!(report.converted["Gemm -> QGemm"], 1);
    assert_eq!(
        ops(&int),
        [
            "QuantizeLinear",
            "QLinearMatMul",
            "QGemm",
            "DequantizeLinear"
        ]
    );
    assert!(int.opset("com.microsoft").is_some());
    // The float bias became int32 with scale alpha * a_scale * b_scale[n].
    let c = &int.graph.initializers[&int.graph.nodes[2].inputs[6]];
    assert_eq!(
        c.as_slice::<i32>().unwrap(),
        &[
            (0.3f64 / (0.5 * 0.05 * 0.02f64)).round() as i32,
            (-0.2f64 / (0.5 * 0.05 * 0.01f64)).round() as i32
        ]
    );
    agree(&m, &int, input(&[3, 4]), 0.04);
}

#[test]
fn gemm_without_output_q_gives_float_qgemm() {
    let mut b = B::new("x", &[2, 3]);
    let x = b.qdq("x", 0.02, 128);
    let w = b.weight("w", &[3, 4], 1, vec![0.01; 4]);
    b.node("Gemm", &[&x, &w], "y");
    let m = b.model("y");
    let (int, report) = to_int(&m).unwrap();
    assert_eq!(report.converted["Gemm -> QGemm (float output)"], 1);
    let g = &int.graph.nodes[1];
    assert_eq!(g.inputs.len(), 6);
    assert_eq!(g.outputs[0], "y");
    agree(&m, &int, input(&[2, 3]), 1e-5);
}

#[test]
fn maxpool_runs_on_the_integer_tensor_only_when_params_match() {
    let build = |out_scale: f32| {
        let mut b = B::new("x", &[1, 1, 4, 4]);
        let x = b.qdq("x", 0.02, 100);
        let p = b.node("MaxPool", &[&x], "p");
        p.attrs
            .insert("kernel_shape".into(), Attr::Ints(vec![2, 2]));
        let y = b.qdq("p", out_scale, 100);
        b.model(&y)
    };
    let m = build(0.02);
    let (int, report) = to_int(&m).unwrap();
    assert_eq!(report.total_converted(), 1);
    assert_eq!(ops(&int), ["QuantizeLinear", "MaxPool", "DequantizeLinear"]);
    agree(&m, &int, input(&[1, 1, 4, 4]), 0.0);

    let (int, report) = to_int(&build(0.03)).unwrap();
    assert_eq!(report.total_converted(), 0);
    assert!(report.kept_float[0].2.contains("differ"), "{report}");
    assert_eq!(ops(&int).len(), 5);
}

#[test]
fn unquantized_and_malformed_groups_stay_float() {
    let mut b = B::new("x", &[1, 4]);
    // A DQ whose scale is computed at run time: nothing to fold.
    b.node("Abs", &["x"], "s");
    b.init("z", Tensor::scalar(0u8));
    b.node("QuantizeLinear", &["x", "s", "z"], "q");
    b.node("DequantizeLinear", &["q", "s", "z"], "dq");
    b.node("Sigmoid", &["dq"], "y");
    let m = b.model("y");
    let (int, report) = to_int(&m).unwrap();
    assert_eq!(report.total_converted(), 0);
    assert_eq!(int.graph.nodes.len(), 4);
    let why: Vec<&str> = report.kept_float.iter().map(|k| k.2.as_str()).collect();
    assert!(why.contains(&"no integer form"), "{why:?}");
    assert!(why.iter().any(|w| w.contains("graph output")), "{why:?}");
}

#[test]
fn a_cycle_is_an_error() {
    let mut b = B::new("x", &[1]);
    b.node("Relu", &["b"], "a");
    b.node("Relu", &["a"], "b");
    assert!(to_int(&b.model("b")).is_err());
}
