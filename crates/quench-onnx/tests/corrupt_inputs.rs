//! Corrupted model files must fail cleanly: thousands of deterministic
//! mutations of a small but feature-rich model (initializers of several
//! dtypes, Constant nodes, an If with subgraphs) are loaded, and whatever
//! loads is saved, reloaded and planned. Any panic fails the test; errors are
//! the expected outcome. The same idea, open-ended, lives in `fuzz/`.

use quench_ir::{Attr, DType, Dim, Graph, Model, Node, OpsetImport, Tensor, TensorData, ValueInfo};
use quench_runtime::{Plan, Registry};

/// Marsaglia's xorshift64: deterministic, dependency-free.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        // Bias towards values that matter to protobuf: tags, varint ends, extremes.
        const SPECIAL: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x08, 0x0a, 0x12];
        if self.next().is_multiple_of(4) {
            SPECIAL[self.below(SPECIAL.len())]
        } else {
            self.next() as u8
        }
    }
}

fn f32_tensor(shape: Vec<usize>) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|i| i as f32 * 0.5 - 1.0).collect()).unwrap()
}

fn branch(name: &str, value: f32) -> Graph {
    Graph {
        name: name.into(),
        outputs: vec![ValueInfo::tensor(
            format!("{name}_out"),
            DType::F32,
            Some(vec![Dim::Fixed(1)]),
        )],
        nodes: vec![
            Node::new(
                "Constant",
                &format!("{name}_c"),
                &[],
                &[&format!("{name}_out")],
            )
            .with_attr("value_floats", Attr::Floats(vec![value])),
        ],
        ..Default::default()
    }
}

/// A small model touching most of what the loader decodes.
fn sample_model() -> Model {
    let mut initializers = indexmap::IndexMap::new();
    initializers.insert("W".to_string(), f32_tensor(vec![3, 2]));
    initializers.insert(
        "shape".to_string(),
        Tensor::from_vec(vec![2], vec![1i64, -1]).unwrap(),
    );
    initializers.insert(
        "mask".to_string(),
        Tensor::from_vec(vec![3], vec![true, false, true]).unwrap(),
    );
    initializers.insert(
        "q".to_string(),
        Tensor::from_vec(vec![2, 2], vec![-3i8, 7, 0, 127]).unwrap(),
    );
    initializers.insert(
        "half".to_string(),
        Tensor::new(
            vec![2],
            TensorData::Raw {
                dtype: DType::F16,
                bytes: vec![0, 0x3c, 0, 0xc0],
            },
        )
        .unwrap(),
    );
    initializers.insert(
        "nibbles".to_string(),
        Tensor::new(
            vec![3],
            TensorData::Raw {
                dtype: DType::Other(22),
                bytes: vec![0x21, 0x03],
            },
        )
        .unwrap(),
    );
    initializers.insert(
        "labels".to_string(),
        Tensor::new(
            vec![2],
            TensorData::String(vec![b"cat".to_vec(), b"dog".to_vec()]),
        )
        .unwrap(),
    );
    let nodes = vec![
        Node::new("Constant", "c_tensor", &[], &["c"])
            .with_attr("value", Attr::Tensor(f32_tensor(vec![2]))),
        Node::new("Constant", "c_ints", &[], &["axes"])
            .with_attr("value_ints", Attr::Ints(vec![0, 1])),
        Node::new("Constant", "c_flag", &[], &["flag"]).with_attr(
            "value",
            Attr::Tensor(Tensor::from_vec(vec![], vec![true]).unwrap()),
        ),
        Node::new("MatMul", "mm", &["x", "W"], &["y"]),
        Node::new("If", "branchy", &["flag"], &["z"])
            .with_attr("then_branch", Attr::Graph(branch("then", 1.0)))
            .with_attr("else_branch", Attr::Graph(branch("else", -1.0))),
        Node::new("Add", "add", &["y", "z"], &["out"])
            .with_attr("alpha", Attr::Float(0.25))
            .with_attr("mode", Attr::String(b"constant".to_vec()))
            .with_attr("names", Attr::Strings(vec![b"a".to_vec(), b"".to_vec()]))
            .with_attr("scales", Attr::Floats(vec![1.0, 2.5])),
    ];
    Model {
        ir_version: 9,
        opset_imports: vec![
            OpsetImport {
                domain: String::new(),
                version: 17,
            },
            OpsetImport {
                domain: "com.microsoft".into(),
                version: 1,
            },
        ],
        producer_name: "corrupt_inputs".into(),
        metadata_props: vec![("k".into(), "v".into())],
        graph: Graph {
            name: "g".into(),
            inputs: vec![ValueInfo::tensor(
                "x",
                DType::F32,
                Some(vec![Dim::Symbol("batch".into()), Dim::Fixed(3)]),
            )],
            outputs: vec![ValueInfo::tensor("out", DType::F32, None)],
            value_info: vec![ValueInfo::tensor(
                "y",
                DType::F32,
                Some(vec![Dim::Unknown, Dim::Fixed(2)]),
            )],
            initializers,
            nodes,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Loads `bytes`; if that works, the model must save, reload and plan without
/// panicking. Returns whether it loaded.
fn exercise(bytes: &[u8]) -> bool {
    let Ok(model) = quench_onnx::model_from_bytes(bytes, None) else {
        return false;
    };
    let saved = quench_onnx::model_to_bytes(&model).expect("a loaded model must save");
    let again = quench_onnx::model_from_bytes(&saved, None).expect("a saved model must reload");
    assert_eq!(
        quench_onnx::model_to_bytes(&again).unwrap(),
        saved,
        "save -> load -> save changed the bytes"
    );
    let _ = Plan::new(&model, &Registry::standard());
    true
}

/// Writes `v` as a protobuf varint at `at` (overwriting), to forge lengths and dims.
fn overwrite_varint(bytes: &mut Vec<u8>, at: usize, mut v: u64) {
    let mut enc = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            enc.push(b);
            break;
        }
        enc.push(b | 0x80);
    }
    let end = (at + enc.len()).min(bytes.len());
    bytes.splice(at..end, enc);
}

#[test]
fn sample_model_round_trips_and_plans() {
    let bytes = quench_onnx::model_to_bytes(&sample_model()).unwrap();
    assert!(exercise(&bytes));
    assert_eq!(
        quench_onnx::model_from_bytes(&bytes, None).unwrap(),
        sample_model()
    );
}

#[test]
fn corrupted_models_never_panic() {
    let seed = quench_onnx::model_to_bytes(&sample_model()).unwrap();
    let len = seed.len();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut tried = 0usize;
    let mut loaded = 0usize;
    let mut run = |bytes: &[u8]| {
        tried += 1;
        loaded += exercise(bytes) as usize;
    };

    // Truncation at every 3rd offset.
    for end in (0..len).step_by(3) {
        run(&seed[..end]);
    }
    // Single bit flips.
    for _ in 0..1500 {
        let mut b = seed.clone();
        let i = rng.below(len);
        b[i] ^= 1 << rng.below(8);
        run(&b);
    }
    // Byte overwrites.
    for _ in 0..1500 {
        let mut b = seed.clone();
        let i = rng.below(len);
        b[i] = rng.byte();
        run(&b);
    }
    // Inserted bytes (shift every later field and length).
    for _ in 0..800 {
        let mut b = seed.clone();
        let i = rng.below(len + 1);
        for _ in 0..1 + rng.below(4) {
            b.insert(i, rng.byte());
        }
        run(&b);
    }
    // Forged varints: huge lengths, dims and counts, negative numbers.
    const BIG: [u64; 6] = [
        1 << 31,
        1 << 32,
        1 << 40,
        u64::MAX,
        0x7fff_ffff_ffff_ffff,
        300,
    ];
    for _ in 0..800 {
        let mut b = seed.clone();
        let at = rng.below(len);
        overwrite_varint(&mut b, at, BIG[rng.below(BIG.len())]);
        run(&b);
    }
    // Stacked mutations, then a cut.
    for _ in 0..1500 {
        let mut b = seed.clone();
        for _ in 0..2 + rng.below(6) {
            let i = rng.below(b.len());
            match rng.below(4) {
                0 => b[i] ^= 1 << rng.below(8),
                1 => b[i] = rng.byte(),
                2 => b.insert(i, rng.byte()),
                _ => {
                    b.remove(i);
                }
            }
            if b.is_empty() {
                break;
            }
        }
        if rng.below(4) == 0 {
            b.truncate(rng.below(b.len() + 1));
        }
        run(&b);
    }
    assert!(tried > 6000, "only {tried} mutations ran");
    // Some corruptions (e.g. in names or float values) still load: make sure
    // the saving and planning paths were exercised too.
    assert!(loaded > 100, "only {loaded} of {tried} mutants loaded");
}
