//! A small graph builder: named parameters with PyTorch's default init
//! (U(±1/√fan_in) for conv and linear weights and biases; BN γ=1, β=0).

use super::Act;
use crate::rng::Rng;
use quench_ir::{Attr, DType, Dim, Graph, Model, Node, OpsetImport, Tensor, ValueInfo};

pub struct Builder {
    g: Graph,
    rng: Rng,
    count: usize,
    chw: [usize; 3],
}

impl Builder {
    pub fn new(chw: [usize; 3], seed: u64) -> Builder {
        Builder {
            g: Graph::default(),
            rng: Rng::new(seed),
            count: 0,
            chw,
        }
    }

    /// The graph input `input` [batch, c, h, w].
    pub fn input(&mut self) -> String {
        let [c, h, w] = self.chw;
        let dims = vec![
            Dim::Symbol("batch".into()),
            Dim::Fixed(c as u64),
            Dim::Fixed(h as u64),
            Dim::Fixed(w as u64),
        ];
        self.g
            .inputs
            .push(ValueInfo::tensor("input", DType::F32, Some(dims)));
        "input".into()
    }

    pub(super) fn name(&mut self, op: &str) -> String {
        self.count += 1;
        format!("{op}_{}", self.count)
    }

    pub(super) fn param(&mut self, name: String, shape: Vec<usize>, v: Vec<f32>) -> String {
        // Shapes built here always match their buffers.
        if let Ok(t) = Tensor::from_vec(shape, v) {
            self.g.initializers.insert(name.clone(), t);
        }
        name
    }

    pub(super) fn uniform(&mut self, n: usize, bound: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (self.rng.uniform() * 2.0 - 1.0) * bound)
            .collect()
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let name = self.name(op);
        let out = format!("{name}_out");
        let mut n = Node::new(op, &name, inputs, &[&out]);
        for (k, a) in attrs {
            n = n.with_attr(k, a);
        }
        self.g.nodes.push(n);
        out
    }

    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        bias: bool,
    ) -> String {
        let base = self.name("conv");
        let fan_in = cin / groups * k * k;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let wv = self.uniform(cout * fan_in, bound);
        let w = self.param(format!("{base}.weight"), vec![cout, cin / groups, k, k], wv);
        let mut ins = vec![x.to_string(), w];
        if bias {
            let bv = self.uniform(cout, bound);
            ins.push(self.param(format!("{base}.bias"), vec![cout], bv));
        }
        let p = (k / 2) as i64;
        let refs: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
        self.node(
            "Conv",
            &refs,
            vec![
                ("kernel_shape", Attr::Ints(vec![k as i64, k as i64])),
                ("strides", Attr::Ints(vec![stride as i64; 2])),
                ("pads", Attr::Ints(vec![p; 4])),
                ("group", Attr::Int(groups as i64)),
            ],
        )
    }

    pub fn bn(&mut self, x: &str, c: usize) -> String {
        let base = self.name("bn");
        let s = self.param(format!("{base}.weight"), vec![c], vec![1.0; c]);
        let b = self.param(format!("{base}.bias"), vec![c], vec![0.0; c]);
        let m = self.param(format!("{base}.running_mean"), vec![c], vec![0.0; c]);
        let v = self.param(format!("{base}.running_var"), vec![c], vec![1.0; c]);
        self.node(
            "BatchNormalization",
            &[x, &s, &b, &m, &v],
            vec![
                ("epsilon", Attr::Float(1e-5)),
                ("momentum", Attr::Float(0.9)),
            ],
        )
    }

    pub fn act(&mut self, x: &str, a: Act) -> String {
        match a {
            Act::None => x.to_string(),
            Act::Relu => self.relu(x),
            Act::Relu6 => {
                let lo = format!("{}_min", self.name("clip"));
                let hi = format!("{lo}_max");
                self.g.initializers.insert(lo.clone(), Tensor::scalar(0f32));
                self.g.initializers.insert(hi.clone(), Tensor::scalar(6f32));
                self.node("Clip", &[x, &lo, &hi], vec![])
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn conv_bn(
        &mut self,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        a: Act,
    ) -> String {
        let y = self.conv(x, cin, cout, k, stride, groups, false);
        let y = self.bn(&y, cout);
        self.act(&y, a)
    }

    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], vec![])
    }

    pub fn max_pool(&mut self, x: &str, k: usize) -> String {
        self.node(
            "MaxPool",
            &[x],
            vec![
                ("kernel_shape", Attr::Ints(vec![k as i64; 2])),
                ("strides", Attr::Ints(vec![k as i64; 2])),
            ],
        )
    }

    pub fn gap(&mut self, x: &str) -> String {
        self.node("GlobalAveragePool", &[x], vec![])
    }

    pub fn flatten(&mut self, x: &str) -> String {
        self.node("Flatten", &[x], vec![("axis", Attr::Int(1))])
    }

    /// Adds a node built elsewhere in the zoo (several outputs, say).
    pub(super) fn push(&mut self, n: Node) {
        self.g.nodes.push(n);
    }

    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.node("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
    }

    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = format!("{}_shape", self.name("reshape"));
        if let Ok(t) = Tensor::from_vec(vec![shape.len()], shape.to_vec()) {
            self.g.initializers.insert(s.clone(), t);
        }
        self.node("Reshape", &[x, &s], vec![])
    }

    pub fn dropout(&mut self, x: &str, ratio: f32) -> String {
        self.node("Dropout", &[x], vec![("ratio", Attr::Float(ratio))])
    }

    pub fn linear(&mut self, x: &str, fin: usize, fout: usize) -> String {
        let base = self.name("fc");
        let bound = 1.0 / (fin as f32).sqrt();
        let wv = self.uniform(fout * fin, bound);
        let w = self.param(format!("{base}.weight"), vec![fout, fin], wv);
        let bv = self.uniform(fout, bound);
        let b = self.param(format!("{base}.bias"), vec![fout], bv);
        self.node("Gemm", &[x, &w, &b], vec![("transB", Attr::Int(1))])
    }

    /// ResNet BasicBlock: conv-bn-relu, conv-bn, + shortcut (1×1 conv-bn when
    /// the shape changes), relu.
    pub fn basic_block(&mut self, x: &str, cin: usize, cout: usize, stride: usize) -> String {
        let y = self.conv_bn(x, cin, cout, 3, stride, 1, Act::Relu);
        let y = self.conv_bn(&y, cout, cout, 3, 1, 1, Act::None);
        let sc = if stride == 1 && cin == cout {
            x.to_string()
        } else {
            self.conv_bn(x, cin, cout, 1, stride, 1, Act::None)
        };
        let s = self.add(&y, &sc);
        self.relu(&s)
    }

    /// MobileNetV2 inverted residual: 1×1 expand, 3×3 depthwise, 1×1 project.
    pub fn inverted_residual(
        &mut self,
        x: &str,
        cin: usize,
        cout: usize,
        stride: usize,
        expand: usize,
    ) -> String {
        let hidden = cin * expand;
        let mut y = x.to_string();
        if expand != 1 {
            y = self.conv_bn(&y, cin, hidden, 1, 1, 1, Act::Relu6);
        }
        y = self.conv_bn(&y, hidden, hidden, 3, stride, hidden, Act::Relu6);
        y = self.conv_bn(&y, hidden, cout, 1, 1, 1, Act::None);
        if stride == 1 && cin == cout {
            self.add(x, &y)
        } else {
            y
        }
    }

    /// The model, with `out` renamed to the graph output `logits`.
    pub fn finish(mut self, out: &str, name: &str) -> Model {
        for n in self.g.nodes.iter_mut() {
            for o in n.outputs.iter_mut().chain(n.inputs.iter_mut()) {
                if o == out {
                    *o = "logits".into();
                }
            }
        }
        self.g.name = name.to_string();
        self.g.outputs.push(ValueInfo::tensor(
            "logits",
            DType::F32,
            Some(vec![Dim::Symbol("batch".into()), Dim::Unknown]),
        ));
        Model {
            ir_version: 8,
            opset_imports: vec![OpsetImport {
                domain: String::new(),
                version: 17,
            }],
            producer_name: "quench-train".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: self.g,
            ..Default::default()
        }
    }
}
