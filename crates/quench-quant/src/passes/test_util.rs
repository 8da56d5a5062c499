//! Small graph builders and a runtime harness for the pass tests.

use quench_ir::{Attr, DType, Dim, Graph, Model, Node, OpsetImport, Tensor, ValueInfo};

/// Deterministic pseudo-random values in `[-1, 1)` (a 64-bit LCG).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape.to_vec(), rand_vec(n, seed)).unwrap()
}

/// Positive values in `[0.5, 1.5)` (BN variances and scales).
pub fn rand_positive(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    let v = rand_vec(n, seed)
        .into_iter()
        .map(|x| 1.0 + 0.5 * x)
        .collect();
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

/// Builds a model step by step.
pub struct Builder {
    pub graph: Graph,
    seed: u64,
    opset: i64,
}

impl Builder {
    pub fn new(inputs: &[(&str, &[usize])]) -> Builder {
        Builder {
            graph: Graph {
                name: "test".into(),
                inputs: inputs
                    .iter()
                    .map(|(n, s)| {
                        let dims = s.iter().map(|&d| Dim::Fixed(d as u64)).collect();
                        ValueInfo::tensor(*n, DType::F32, Some(dims))
                    })
                    .collect(),
                ..Default::default()
            },
            seed: 1,
            opset: 17,
        }
    }

    pub fn opset(mut self, v: i64) -> Builder {
        self.opset = v;
        self
    }

    /// Adds a random float initializer.
    pub fn weight(&mut self, name: &str, shape: &[usize]) -> String {
        self.seed += 1;
        self.graph
            .initializers
            .insert(name.into(), rand_tensor(shape, self.seed));
        name.into()
    }

    pub fn init(&mut self, name: &str, t: Tensor) -> String {
        self.graph.initializers.insert(name.into(), t);
        name.into()
    }

    pub fn node(&mut self, op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> &mut Node {
        self.graph.nodes.push(Node::new(op, name, inputs, outputs));
        self.graph.nodes.last_mut().unwrap()
    }

    pub fn attr(&mut self, name: &str, attr: Attr) {
        let n = self.graph.nodes.last_mut().unwrap();
        n.attrs.insert(name.into(), attr);
    }

    pub fn build(mut self, outputs: &[&str]) -> Model {
        self.graph.outputs = outputs
            .iter()
            .map(|o| ValueInfo::tensor(*o, DType::F32, None))
            .collect();
        let mut m = Model {
            ir_version: 8,
            opset_imports: vec![OpsetImport {
                domain: String::new(),
                version: self.opset,
            }],
            producer_name: "quench-test".into(),
            graph: self.graph,
            ..Default::default()
        };
        // Output shapes, which onnx.checker's full check wants.
        let _ = quench_ir::shape_inference::infer_shapes(&mut m);
        m.graph.value_info.clear();
        m
    }
}

/// Whether Quench's runtime implements every op of `model` (the elementwise
/// ops landed later than these tests).
pub fn runtime_supports(model: &Model) -> bool {
    let r = quench_runtime::Registry::standard();
    let missing: std::collections::BTreeSet<&str> = model
        .graph
        .nodes
        .iter()
        .filter(|n| !r.supports(&n.domain, &n.op_type))
        .map(|n| n.op_type.as_str())
        .collect();
    if !missing.is_empty() {
        eprintln!("skipping runtime check: runtime lacks {missing:?}");
    }
    missing.is_empty()
}

/// Runs `model` on `inputs`, returning the outputs in graph order.
pub fn run(model: &Model, inputs: &[(&str, Tensor)]) -> Vec<Tensor> {
    let s = quench_runtime::Session::new(model, 1).unwrap();
    s.run(
        inputs
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect(),
    )
    .unwrap()
    .into_iter()
    .map(|(_, t)| t)
    .collect()
}

/// Max |a − b| relative to max |a|.
pub fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Signal-to-quantization-noise ratio in dB.
pub fn sqnr(reference: &Tensor, test: &Tensor) -> f64 {
    let (a, b) = (
        reference.as_slice::<f32>().unwrap(),
        test.as_slice::<f32>().unwrap(),
    );
    let sig: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum();
    let noise: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    10.0 * (sig / noise.max(1e-30)).log10()
}
