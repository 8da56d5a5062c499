use super::*;
use crate::{Attr, OpsetImport};

fn f(n: u64) -> Dim {
    Dim::Fixed(n)
}
fn s(n: &str) -> Dim {
    Dim::Symbol(n.into())
}
const U: Dim = Dim::Unknown;

/// A model under construction: inputs, constants and nodes at one opset.
struct G {
    model: Model,
}

impl G {
    fn new(opset: i64) -> G {
        let mut model = Model::default();
        model.opset_imports.push(OpsetImport {
            domain: String::new(),
            version: opset,
        });
        G { model }
    }
    fn input(mut self, name: &str, dtype: DType, shape: Vec<Dim>) -> G {
        self.model
            .graph
            .inputs
            .push(ValueInfo::tensor(name, dtype, Some(shape)));
        self
    }
    fn init(mut self, name: &str, t: Tensor) -> G {
        self.model.graph.initializers.insert(name.into(), t);
        self
    }
    fn ints(self, name: &str, v: &[i64]) -> G {
        let t = Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap();
        self.init(name, t)
    }
    fn weight(self, name: &str, shape: &[usize]) -> G {
        let t = Tensor::zeros(DType::F32, shape.to_vec()).unwrap();
        self.init(name, t)
    }
    fn node(mut self, n: Node) -> G {
        self.model.graph.nodes.push(n);
        self
    }
    fn op(self, op: &str, ins: &[&str], out: &str) -> G {
        self.node(Node::new(op, out, ins, &[out]))
    }
    fn infer(&self) -> HashMap<String, Fact> {
        infer(&self.model).unwrap()
    }
    fn shape(&self, name: &str) -> Option<Vec<Dim>> {
        self.infer().get(name).and_then(|f| f.shape.clone())
    }
    fn err(&self) -> String {
        infer(&self.model).unwrap_err().to_string()
    }
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

#[test]
fn unary_and_broadcast_keep_symbols() {
    let g = G::new(17)
        .input("x", DType::F32, vec![s("batch"), f(1), f(3)])
        .input("y", DType::F32, vec![f(4), f(1)])
        .op("Relu", &["x"], "r")
        .op("Add", &["r", "y"], "a")
        .op("Equal", &["a", "y"], "e");
    let facts = g.infer();
    assert_eq!(facts["r"].shape, Some(vec![s("batch"), f(1), f(3)]));
    assert_eq!(facts["a"].shape, Some(vec![s("batch"), f(4), f(3)]));
    assert_eq!(facts["e"].dtype, DType::Bool);
}

#[test]
fn inconsistent_shapes_name_the_node() {
    let g = G::new(17)
        .input("a", DType::F32, vec![f(2), f(3)])
        .input("b", DType::F32, vec![f(4)])
        .node(Node::new("Add", "bad_add", &["a", "b"], &["c"]));
    let e = g.err();
    assert!(e.contains("bad_add") && e.contains("[2, 3] and [4]"), "{e}");

    let g = G::new(17)
        .input("a", DType::F32, vec![s("b"), f(2), f(3)])
        .input("w", DType::F32, vec![f(4), f(5)])
        .node(Node::new("MatMul", "mm", &["a", "w"], &["c"]));
    let e = g.err();
    assert!(
        e.contains("'mm'") && e.contains("[b, 2, 3] x [4, 5]"),
        "{e}"
    );
}

#[test]
fn matmul_and_gemm() {
    let g = G::new(17)
        .input("a", DType::F32, vec![s("b"), s("seq"), f(384)])
        .weight("w", &[384, 1536])
        .weight("v", &[384])
        .weight("gw", &[10, 384])
        .input("m", DType::F32, vec![s("n"), f(384)])
        .op("MatMul", &["a", "w"], "y")
        .op("MatMul", &["a", "v"], "z")
        .node(Node::new("Gemm", "g", &["m", "gw"], &["g"]).with_attr("transB", Attr::Int(1)));
    let facts = g.infer();
    assert_eq!(facts["y"].shape, Some(vec![s("b"), s("seq"), f(1536)]));
    assert_eq!(facts["z"].shape, Some(vec![s("b"), s("seq")]));
    assert_eq!(facts["g"].shape, Some(vec![s("n"), f(10)]));
}

#[test]
fn conv_pool_and_friends() {
    let g = G::new(13)
        .input("x", DType::F32, vec![s("N"), f(3), f(224), f(224)])
        .weight("w", &[16, 3, 3, 3])
        .weight("wt", &[16, 8, 2, 2])
        .node(
            Node::new("Conv", "c", &["x", "w"], &["c"])
                .with_attr("strides", ints(&[2, 2]))
                .with_attr("pads", ints(&[1, 1, 1, 1])),
        )
        .node(
            Node::new("MaxPool", "p", &["c"], &["p"])
                .with_attr("kernel_shape", ints(&[3, 3]))
                .with_attr("strides", ints(&[2, 2]))
                .with_attr("ceil_mode", Attr::Int(1)),
        )
        .node(
            Node::new("ConvTranspose", "t", &["p", "wt"], &["t"])
                .with_attr("strides", ints(&[2, 2])),
        )
        .op("GlobalAveragePool", &["t"], "gap")
        .node(Node::new("Flatten", "fl", &["gap"], &["fl"]));
    let facts = g.infer();
    assert_eq!(facts["c"].shape, Some(vec![s("N"), f(16), f(112), f(112)]));
    assert_eq!(facts["p"].shape, Some(vec![s("N"), f(16), f(56), f(56)]));
    assert_eq!(facts["t"].shape, Some(vec![s("N"), f(8), f(112), f(112)]));
    assert_eq!(facts["gap"].shape, Some(vec![s("N"), f(8), f(1), f(1)]));
    assert_eq!(facts["fl"].shape, Some(vec![s("N"), f(8)]));

    let g = G::new(13)
        .input("x", DType::F32, vec![f(1), f(4), f(8), f(8)])
        .weight("w", &[16, 3, 3, 3])
        .op("Conv", &["x", "w"], "c");
    assert!(g.err().contains("4 channels"), "{}", g.err());
}

/// The PyTorch export pattern: Shape → Gather → Unsqueeze → Concat → Reshape.
#[test]
fn folded_shape_chains_resolve_reshape_targets() {
    let g = G::new(13)
        .input("x", DType::F32, vec![s("batch"), s("seq"), f(384)])
        .init("i0", Tensor::scalar(0i64))
        .init("i1", Tensor::scalar(1i64))
        .ints("ax", &[0])
        .ints("tail", &[12, 32])
        .op("Shape", &["x"], "sh")
        .op("Gather", &["sh", "i0"], "d0")
        .op("Gather", &["sh", "i1"], "d1")
        .op("Unsqueeze", &["d0", "ax"], "u0")
        .op("Unsqueeze", &["d1", "ax"], "u1")
        .node(
            Node::new("Concat", "cat", &["u0", "u1", "tail"], &["target"])
                .with_attr("axis", Attr::Int(0)),
        )
        .op("Reshape", &["x", "target"], "r")
        .ints("back", &[0, 0, -1])
        .op("Reshape", &["r", "back"], "r2")
        .ints("flat", &[-1, 384])
        .op("Reshape", &["x", "flat"], "r3");
    let facts = g.infer();
    assert_eq!(
        facts["target"].value,
        Some(vec![
            SymInt::Sym("batch".into()),
            SymInt::Sym("seq".into()),
            SymInt::Int(12),
            SymInt::Int(32)
        ])
    );
    assert_eq!(
        facts["r"].shape,
        Some(vec![s("batch"), s("seq"), f(12), f(32)])
    );
    assert_eq!(facts["r2"].shape, Some(vec![s("batch"), s("seq"), f(384)]));
    assert_eq!(facts["r3"].shape, Some(vec![U, f(384)]));

    let g = G::new(13)
        .input("x", DType::F32, vec![f(2), f(3)])
        .ints("t", &[4, -1])
        .op("Reshape", &["x", "t"], "r");
    assert!(g.err().contains("cannot reshape [2, 3]"), "{}", g.err());
}

#[test]
fn opset_decides_axes_attribute_or_input() {
    let squeeze11 = G::new(11)
        .input("x", DType::F32, vec![f(1), s("n"), f(1)])
        .node(Node::new("Squeeze", "q", &["x"], &["q"]).with_attr("axes", ints(&[0])))
        .node(Node::new("Unsqueeze", "u", &["q"], &["u"]).with_attr("axes", ints(&[-1])))
        .node(
            Node::new("ReduceSum", "r", &["x"], &["r"])
                .with_attr("axes", ints(&[1]))
                .with_attr("keepdims", Attr::Int(0)),
        );
    let facts = squeeze11.infer();
    assert_eq!(facts["q"].shape, Some(vec![s("n"), f(1)]));
    assert_eq!(facts["u"].shape, Some(vec![s("n"), f(1), f(1)]));
    assert_eq!(facts["r"].shape, Some(vec![f(1), f(1)]));

    let g13 = G::new(13)
        .input("x", DType::F32, vec![f(1), s("n"), f(1)])
        .ints("a", &[0, 2])
        .op("Squeeze", &["x", "a"], "q")
        .op("ReduceSum", &["x", "a"], "rs")
        .node(Node::new("ReduceMean", "rm", &["x"], &["rm"]).with_attr("axes", ints(&[1])));
    let facts = g13.infer();
    assert_eq!(facts["q"].shape, Some(vec![s("n")]));
    assert_eq!(facts["rs"].shape, Some(vec![f(1), s("n"), f(1)]));
    assert_eq!(facts["rm"].shape, Some(vec![f(1), f(1), f(1)]));

    let g = G::new(13)
        .input("x", DType::F32, vec![f(2), f(3)])
        .ints("a", &[0])
        .op("Squeeze", &["x", "a"], "q");
    assert!(g.err().contains("not 1"), "{}", g.err());
}

#[test]
fn slice_split_concat_transpose_gather() {
    let g = G::new(13)
        .input("x", DType::F32, vec![s("b"), f(10), f(6)])
        .ints("st", &[2, -1])
        .ints("en", &[i64::MAX, 0])
        .ints("ax", &[1, 2])
        .ints("sp", &[2, 4])
        .ints("sp_ax", &[0])
        .ints("sp_en", &[i64::MAX])
        .op("Slice", &["x", "st", "en", "ax"], "sl")
        .ints("step", &[1, -2])
        .op("Slice", &["x", "st", "en", "ax", "step"], "sl2")
        .ints("z0", &[0])
        .op("Slice", &["x", "z0", "sp_en", "sp_ax"], "sl3")
        .node(
            Node::new("Split", "spl", &["x", "sp"], &["p0", "p1"]).with_attr("axis", Attr::Int(2)),
        )
        .node(Node::new("Concat", "c", &["p1", "x"], &["c"]).with_attr("axis", Attr::Int(-1)))
        .node(Node::new("Transpose", "t", &["c"], &["t"]).with_attr("perm", ints(&[2, 0, 1])))
        .init(
            "idx",
            Tensor::from_vec(vec![2, 2], vec![0i64, 1, 2, 3]).unwrap(),
        )
        .node(Node::new("Gather", "g", &["x", "idx"], &["g"]).with_attr("axis", Attr::Int(1)));
    let facts = g.infer();
    assert_eq!(facts["sl"].shape, Some(vec![s("b"), f(8), f(0)]));
    assert_eq!(facts["sl2"].shape, Some(vec![s("b"), f(8), f(3)]));
    assert_eq!(facts["sl3"].shape, Some(vec![s("b"), f(10), f(6)]));
    assert_eq!(facts["p0"].shape, Some(vec![s("b"), f(10), f(2)]));
    assert_eq!(facts["p1"].shape, Some(vec![s("b"), f(10), f(4)]));
    assert_eq!(facts["c"].shape, Some(vec![s("b"), f(10), f(10)]));
    assert_eq!(facts["t"].shape, Some(vec![f(10), s("b"), f(10)]));
    assert_eq!(facts["g"].shape, Some(vec![s("b"), f(2), f(2), f(6)]));
}

#[test]
fn expand_constant_of_shape_range_pad_resize() {
    let g = G::new(13)
        .input("x", DType::F32, vec![s("b"), f(1), f(8), f(8)])
        .input("n", DType::I64, vec![])
        .ints("shape", &[1, 5, 1, 1])
        .op("Expand", &["x", "shape"], "e")
        .op("Shape", &["x"], "sh")
        .node(
            Node::new("ConstantOfShape", "cs", &["sh"], &["cs"]).with_attr(
                "value",
                Attr::Tensor(Tensor::from_vec(vec![1], vec![0i64]).unwrap()),
            ),
        )
        .init("zero", Tensor::scalar(0i64))
        .init("two", Tensor::scalar(2i64))
        .init("ten", Tensor::scalar(10i64))
        .op("Range", &["zero", "ten", "two"], "r")
        .op("Range", &["zero", "n", "two"], "r2")
        .init("one", Tensor::scalar(1i64))
        .init("i3", Tensor::scalar(3i64))
        .op("Gather", &["sh", "i3"], "w")
        .op("Range", &["zero", "w", "one"], "r3")
        .input("y", DType::F32, vec![s("b"), s("t")])
        .op("Shape", &["y"], "shy")
        .op("Gather", &["shy", "one"], "t")
        .op("Range", &["zero", "t", "one"], "r4")
        .ints("pads", &[0, 0, 1, 2, 0, 0, 1, 2])
        .op("Pad", &["x", "pads"], "p")
        .init(
            "scales",
            Tensor::from_vec(vec![4], vec![1f32, 1.0, 2.0, 0.5]).unwrap(),
        )
        .node(Node::new("Resize", "rs", &["x", "", "scales"], &["rs"]))
        .ints("sizes", &[1, 1, 3, 3])
        .node(Node::new("Resize", "rz", &["x", "", "", "sizes"], &["rz"]));
    let facts = g.infer();
    assert_eq!(facts["e"].shape, Some(vec![s("b"), f(5), f(8), f(8)]));
    assert_eq!(facts["cs"].shape, Some(vec![s("b"), f(1), f(8), f(8)]));
    assert_eq!(facts["cs"].dtype, DType::I64);
    assert_eq!(facts["r"].shape, Some(vec![f(5)]));
    assert_eq!(facts["r2"].shape, Some(vec![U]));
    assert_eq!(facts["r3"].shape, Some(vec![f(8)]));
    assert_eq!(facts["r4"].shape, Some(vec![s("t")]));
    assert_eq!(facts["p"].shape, Some(vec![s("b"), f(1), f(10), f(12)]));
    assert_eq!(facts["rs"].shape, Some(vec![s("b"), f(1), f(16), f(4)]));
    assert_eq!(facts["rz"].shape, Some(vec![f(1), f(1), f(3), f(3)]));
}

#[test]
fn recurrent_and_normalisation_layers() {
    let g = G::new(14)
        .input("x", DType::F32, vec![s("seq"), s("b"), f(64)])
        .weight("w", &[2, 512, 64])
        .weight("r", &[2, 512, 128])
        .node(
            Node::new("LSTM", "l", &["x", "w", "r"], &["y", "yh", "yc"])
                .with_attr("hidden_size", Attr::Int(128))
                .with_attr("direction", Attr::String(b"bidirectional".to_vec())),
        )
        .weight("gw", &[1, 96, 64])
        .weight("gr", &[1, 96, 32])
        .node(
            Node::new("GRU", "g", &["x", "gw", "gr"], &["gy", "gh"])
                .with_attr("layout", Attr::Int(1)),
        )
        .weight("sc", &[64])
        .node(Node::new(
            "LayerNormalization",
            "ln",
            &["x", "sc", "sc"],
            &["ln", "mean"],
        ))
        .node(Node::new("Softmax", "sm", &["x"], &["sm"]));
    let facts = g.infer();
    assert_eq!(facts["y"].shape, Some(vec![s("seq"), f(2), s("b"), f(128)]));
    assert_eq!(facts["yc"].shape, Some(vec![f(2), s("b"), f(128)]));
    // layout 1 reads x as [batch, seq, input]
    assert_eq!(facts["gy"].shape, Some(vec![s("seq"), s("b"), f(1), f(32)]));
    assert_eq!(facts["gh"].shape, Some(vec![s("seq"), f(1), f(32)]));
    assert_eq!(facts["mean"].shape, Some(vec![s("seq"), s("b"), f(1)]));
    assert_eq!(facts["sm"].shape, Some(vec![s("seq"), s("b"), f(64)]));
}

#[test]
fn quantized_ops_take_zero_point_types() {
    let g = G::new(13)
        .input("x", DType::F32, vec![s("b"), f(16)])
        .init("s", Tensor::scalar(0.1f32))
        .init("zp", Tensor::scalar(0i8))
        .init("uzp", Tensor::scalar(0u8))
        .init("w", Tensor::zeros(DType::I8, vec![16, 4]).unwrap())
        .op("QuantizeLinear", &["x", "s", "zp"], "q")
        .op("DequantizeLinear", &["q", "s", "zp"], "dq")
        .node(Node::new(
            "DynamicQuantizeLinear",
            "d",
            &["x"],
            &["dy", "ds", "dz"],
        ))
        .op("MatMulInteger", &["dy", "w", "dz"], "mi")
        .op(
            "QLinearMatMul",
            &["dy", "ds", "dz", "w", "s", "zp", "s", "uzp"],
            "qm",
        );
    let facts = g.infer();
    assert_eq!(facts["q"].dtype, DType::I8);
    assert_eq!(facts["dq"].dtype, DType::F32);
    assert_eq!(facts["dy"].dtype, DType::U8);
    assert_eq!(facts["ds"].shape, Some(vec![]));
    assert_eq!(facts["mi"].dtype, DType::I32);
    assert_eq!(facts["mi"].shape, Some(vec![s("b"), f(4)]));
    assert_eq!(facts["qm"].dtype, DType::U8);
}

#[test]
fn unknown_ops_leave_outputs_untyped() {
    let mut g = G::new(13)
        .input("x", DType::F32, vec![f(2)])
        .node(Node::new("Frobnicate", "fz", &["x"], &["y"]))
        .op("Relu", &["y"], "z")
        .op("Relu", &["x"], "w");
    let facts = g.infer();
    assert!(!facts.contains_key("y") && !facts.contains_key("z"));
    let report = infer_shapes(&mut g.model).unwrap();
    assert_eq!(report.unknown_ops.get("Frobnicate"), Some(&1));
    assert_eq!((report.typed, report.untyped), (1, 2));
    assert_eq!(g.model.graph.value_info.len(), 1);
    assert_eq!(g.model.graph.value_info[0].name, "w");
}

#[test]
fn if_branches_agree_or_condition_decides() {
    let branch = |out: &str, shape: Vec<Dim>| {
        Graph {
            nodes: vec![Node::new("Relu", out, &["x"], &[out])],
            outputs: vec![ValueInfo::tensor(out, DType::F32, None)],
            value_info: vec![],
            ..Default::default()
        }
        .tap(shape)
    };
    trait Tap {
        fn tap(self, s: Vec<Dim>) -> Self;
    }
    impl Tap for Graph {
        fn tap(mut self, s: Vec<Dim>) -> Graph {
            if !s.is_empty() {
                self.nodes.push(Node::new(
                    "Reshape",
                    "rs",
                    &[&self.outputs[0].name, "tgt"],
                    &["rsd"],
                ));
                self.outputs[0].name = "rsd".into();
                self.initializers.insert(
                    "tgt".into(),
                    Tensor::from_vec(
                        vec![s.len()],
                        s.iter()
                            .map(|d| match d {
                                Dim::Fixed(v) => *v as i64,
                                _ => -1,
                            })
                            .collect::<Vec<i64>>(),
                    )
                    .unwrap(),
                );
            }
            self
        }
    }
    let make = |cond: Option<bool>| {
        let mut g = G::new(16).input("x", DType::F32, vec![s("b"), f(6)]);
        g = match cond {
            Some(c) => g.init("c", Tensor::scalar(c)),
            None => g.input("c", DType::Bool, vec![]),
        };
        g.node(
            Node::new("If", "if", &["c"], &["o"])
                .with_attr("then_branch", Attr::Graph(branch("t", vec![])))
                .with_attr("else_branch", Attr::Graph(branch("e", vec![f(2), U]))),
        )
    };
    assert_eq!(make(None).shape("o"), Some(vec![U, U]));
    assert_eq!(make(Some(true)).shape("o"), Some(vec![s("b"), f(6)]));
    let mut m = make(Some(false));
    assert_eq!(m.shape("o"), Some(vec![f(2), U]));
    infer_shapes(&mut m.model).unwrap();
    let Some(Attr::Graph(eg)) = m.model.graph.nodes[0].attrs.get("else_branch") else {
        panic!()
    };
    assert_eq!(eg.value_info[0].shape(), Some(&[s("b"), f(6)][..]));
    assert_eq!(eg.outputs[0].shape(), Some(&[f(2), U][..]));
}

/// Values a malformed file may hold must give errors or unknowns, never panics.
#[test]
fn absurd_attributes_do_not_panic() {
    let big = i64::MAX;
    let conv = |attr: &str, v: Attr| {
        G::new(13)
            .input("x", DType::F32, vec![f(1), f(3), f(8), f(8)])
            .weight("w", &[4, 3, 3, 3])
            .node(Node::new("Conv", "c", &["x", "w"], &["c"]).with_attr(attr, v))
    };
    for (attr, v) in [
        ("strides", ints(&[big, big])),
        ("dilations", ints(&[big, 1])),
        ("pads", ints(&[big, big, big, big])),
        ("pads", ints(&[-big, 0, 0, 0])),
        ("group", Attr::Int(-1)),
        ("group", Attr::Int(big)),
        ("kernel_shape", ints(&[big, big])),
    ] {
        let _ = infer(&conv(attr, v).model);
    }
    let g = G::new(13)
        .input("x", DType::F32, vec![f(0), f(5)])
        .ints("st", &[big, i64::MIN])
        .ints("en", &[i64::MIN, big])
        .ints("step", &[i64::MIN, big])
        .op("Slice", &["x", "st", "en", "", "step"], "s")
        .ints("pads", &[big, big, big, big])
        .op("Pad", &["x", "pads"], "p")
        .ints("reps", &[big, big])
        .op("Tile", &["x", "reps"], "t")
        .ints("sp", &[big, big])
        .op("Split", &["x", "sp"], "sp")
        .init("min", Tensor::scalar(i64::MIN))
        .init("m1", Tensor::scalar(-1i64))
        .op("Div", &["min", "m1"], "d")
        .init("z", Tensor::scalar(0i64))
        .init("ten", Tensor::scalar(10i64))
        .op("Range", &["min", "ten", "min"], "r")
        .op("Range", &["z", "ten", "min"], "r2")
        .ints("huge", &[big, big, 2])
        .op("Reshape", &["x", "huge"], "rs");
    let _ = infer(&g.model);
    let g = G::new(13)
        .input("x", DType::F32, vec![f(0), f(5)])
        .ints("st", &[-1])
        .ints("en", &[i64::MIN])
        .ints("step", &[-1])
        .op("Slice", &["x", "st", "en", "", "step"], "s");
    assert_eq!(g.shape("s"), Some(vec![f(0), f(5)]));
}
