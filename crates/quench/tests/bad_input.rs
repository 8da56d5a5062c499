//! Bad input gets one clear error line naming the problem and a non-zero exit, never a panic.

mod common;

use common::{quench, temp_dir};
use quench_ir::{DType, Dim, Graph, Model, Node, OpsetImport, Tensor, ValueInfo};
use std::path::Path;

fn relu_model(inputs: &[&str], nodes: Vec<Node>) -> Model {
    Model {
        ir_version: 8,
        opset_imports: vec![OpsetImport {
            domain: String::new(),
            version: 17,
        }],
        graph: Graph {
            name: "g".into(),
            inputs: inputs
                .iter()
                .map(|n| {
                    ValueInfo::tensor(*n, DType::F32, Some(vec![Dim::Fixed(1), Dim::Fixed(4)]))
                })
                .collect(),
            outputs: vec![ValueInfo::tensor("y", DType::F32, None)],
            nodes,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Runs quench and checks: failure exit, an `error:` line containing every `needle`, no panic.
fn assert_clean_error(args: &[&str], needles: &[&str]) {
    let out = quench(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure for {args:?}, stderr: {stderr}"
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "quench panicked for {args:?}: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "quench panicked for {args:?}: {stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    for n in needles {
        assert!(line.contains(n), "error line lacks '{n}': {line}");
    }
}

fn save(m: &Model, path: &Path) {
    quench_onnx::save_model(m, path).unwrap();
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn truncated_and_random_files_are_refused() {
    let dir = temp_dir("bad-files");
    let good = dir.join("good.onnx");
    save(
        &relu_model(&["x"], vec![Node::new("Relu", "r", &["x"], &["y"])]),
        &good,
    );
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(&["inspect", p(&cut)], &["cut.onnx"]);
    let noise = dir.join("noise.onnx");
    let mut state = 0x2545f4914f6cdd1du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&noise, random).unwrap();
    assert_clean_error(&["inspect", p(&noise)], &["noise.onnx"]);
    assert_clean_error(
        &["inspect", p(&dir.join("missing.onnx"))],
        &["missing.onnx"],
    );
}

#[test]
fn cycles_undefined_names_and_unknown_ops_are_named() {
    let dir = temp_dir("bad-graphs");
    let x = dir.join("x.npy");
    quench_data::write_npy(
        &x,
        &Tensor::from_vec(vec![1, 4], vec![1f32, -2.0, 3.0, -4.0]).unwrap(),
    )
    .unwrap();
    let out = dir.join("out");
    let input = format!("x={}", p(&x));

    let cycle = dir.join("cycle.onnx");
    save(
        &relu_model(
            &["x"],
            vec![
                Node::new("Add", "a", &["x", "b"], &["a"]),
                Node::new("Relu", "b", &["a"], &["b"]),
            ],
        ),
        &cycle,
    );
    assert_clean_error(
        &["run", p(&cycle), "--input", &input, "-o", p(&out)],
        &["cycle"],
    );

    let undefined = dir.join("undefined.onnx");
    save(
        &relu_model(&["x"], vec![Node::new("Relu", "r", &["nowhere"], &["y"])]),
        &undefined,
    );
    assert_clean_error(
        &["run", p(&undefined), "--input", &input, "-o", p(&out)],
        &["'nowhere'"],
    );

    let unknown = dir.join("unknown.onnx");
    save(
        &relu_model(&["x"], vec![Node::new("FrobnicateV9", "f", &["x"], &["y"])]),
        &unknown,
    );
    assert_clean_error(
        &["run", p(&unknown), "--input", &input, "-o", p(&out)],
        &["FrobnicateV9"],
    );
}

#[test]
fn huge_dimensions_are_refused() {
    let dir = temp_dir("bad-huge");
    let mut m = relu_model(&["x"], vec![Node::new("Relu", "r", &["x"], &["y"])]);
    let mut proto =
        quench_onnx::tensor_to_proto("w", &Tensor::from_vec(vec![1], vec![0f32]).unwrap());
    proto.dims = vec![1 << 40];
    m.graph
        .initializers
        .insert("placeholder".into(), Tensor::scalar(0f32));
    save(&m, &dir.join("base.onnx"));
    // Splice the oversized tensor in at the protobuf level: the IR cannot even hold it.
    let mut mp = <quench_onnx::proto::ModelProto as prost::Message>::decode(
        std::fs::read(dir.join("base.onnx")).unwrap().as_slice(),
    )
    .unwrap();
    mp.graph.as_mut().unwrap().initializer = vec![proto];
    let huge = dir.join("huge.onnx");
    std::fs::write(&huge, prost::Message::encode_to_vec(&mp)).unwrap();
    assert_clean_error(&["inspect", p(&huge)], &["'w'", "too large"]);
}

#[test]
fn inputs_of_wrong_shape_dtype_or_name_are_named() {
    let dir = temp_dir("bad-inputs");
    let model = dir.join("m.onnx");
    save(
        &relu_model(&["x"], vec![Node::new("Relu", "r", &["x"], &["y"])]),
        &model,
    );
    let out = dir.join("out");
    let wrong_shape = dir.join("shape.npy");
    quench_data::write_npy(
        &wrong_shape,
        &Tensor::from_vec(vec![2, 3], vec![0f32; 6]).unwrap(),
    )
    .unwrap();
    assert_clean_error(
        &[
            "run",
            p(&model),
            "--input",
            &format!("x={}", p(&wrong_shape)),
            "-o",
            p(&out),
        ],
        &["'x'", "shape"],
    );
    let wrong_dtype = dir.join("dtype.npy");
    quench_data::write_npy(
        &wrong_dtype,
        &Tensor::from_vec(vec![1, 4], vec![0i64; 4]).unwrap(),
    )
    .unwrap();
    assert_clean_error(
        &[
            "run",
            p(&model),
            "--input",
            &format!("x={}", p(&wrong_dtype)),
            "-o",
            p(&out),
        ],
        &["'x'", "int64"],
    );
    assert_clean_error(
        &[
            "run",
            p(&model),
            "--input",
            &format!("z={}", p(&wrong_dtype)),
            "-o",
            p(&out),
        ],
        &["'z'"],
    );
    assert_clean_error(&["run", p(&model), "-o", p(&out)], &["missing", "x"]);
    assert_clean_error(
        &["run", p(&model), "--input", "x=/no/such.npy", "-o", p(&out)],
        &["/no/such.npy"],
    );
    let truncated = dir.join("trunc.npy");
    let bytes = std::fs::read(&wrong_shape).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 5]).unwrap();
    assert_clean_error(
        &[
            "run",
            p(&model),
            "--input",
            &format!("x={}", p(&truncated)),
            "-o",
            p(&out),
        ],
        &["trunc.npy"],
    );
}
