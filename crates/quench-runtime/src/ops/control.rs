//! Control flow: If and Loop. Branches and bodies are planned once at build
//! time; values they read from enclosing scopes arrive after the explicit
//! inputs, in the order of [`subgraph_free_names`].

use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, Plan, Registry, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::graph::subgraph_free_names;
use quench_ir::{DType, Dim, Graph, Tensor, TensorData};

pub fn register(r: &mut Registry) {
    r.register("", "If", build_if);
    r.register("", "Loop", build_loop);
}

/// Names the node's subgraphs read from outside, computed once at build.
fn free_names(ctx: &BuildCtx) -> Vec<String> {
    subgraph_free_names(ctx.node).map(str::to_string).collect()
}

/// Pairs each free name with the tensor the executor passed for it.
fn outer_bindings<'a>(
    names: &'a [String],
    inputs: &[Option<&'a Tensor>],
    n_explicit: usize,
) -> Vec<(&'a str, &'a Tensor)> {
    names
        .iter()
        .zip(inputs.iter().skip(n_explicit))
        .filter_map(|(n, t)| t.map(|t| (n.as_str(), t)))
        .collect()
}

fn graph_attr<'a>(ctx: &BuildCtx<'a>, name: &str) -> Result<&'a Graph, OpError> {
    ctx.node
        .attr_graph(name)?
        .ok_or_else(|| OpError::Invalid(format!("attribute {name} (a graph) is required")))
}

/// The value of a one-element bool tensor.
fn single_bool(t: &Tensor, what: &str) -> Result<bool, OpError> {
    match t.data() {
        TensorData::Bool(v) if v.len() == 1 => Ok(v[0]),
        TensorData::Bool(v) => {
            bail_invalid!("{what} has {} elements, expected exactly one", v.len())
        }
        _ => bail_invalid!("{what} has type {}, expected bool", t.dtype()),
    }
}

fn subgraph_err(e: crate::RuntimeError) -> OpError {
    OpError::Subgraph(Box::new(e))
}

#[derive(Debug)]
struct If {
    then_plan: Plan,
    else_plan: Plan,
    free: Vec<String>,
    n_explicit: usize,
    n_outputs: usize,
}

fn build_if(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let then_g = graph_attr(ctx, "then_branch")?;
    let else_g = graph_attr(ctx, "else_branch")?;
    let n_outputs = ctx.node.outputs.len();
    for (name, g) in [("then_branch", then_g), ("else_branch", else_g)] {
        if g.outputs.len() != n_outputs {
            bail_invalid!(
                "{name} has {} outputs but the node has {n_outputs}",
                g.outputs.len()
            );
        }
    }
    Ok(Box::new(If {
        then_plan: ctx.compile_subgraph(then_g)?,
        else_plan: ctx.compile_subgraph(else_g)?,
        free: free_names(ctx),
        n_explicit: ctx.node.inputs.len(),
        n_outputs,
    }))
}

impl Op for If {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let cond = single_bool(required(inputs, 0)?, "input 0 (cond)")?;
        let plan = if cond {
            &self.then_plan
        } else {
            &self.else_plan
        };
        let outer = outer_bindings(&self.free, inputs, self.n_explicit);
        let outs = plan
            .run_subgraph(ctx, vec![], &outer)
            .map_err(subgraph_err)?;
        if outs.len() != self.n_outputs {
            bail_invalid!(
                "branch produced {} outputs, {} expected",
                outs.len(),
                self.n_outputs
            );
        }
        Ok(outs.into_iter().map(|(_, t)| t).collect())
    }
}

#[derive(Debug)]
struct Loop {
    body: Plan,
    /// Body input names: iteration number, condition, then carried values.
    body_inputs: Vec<String>,
    /// Declared dtype and shape of each scan output, for empty results.
    scan_types: Vec<(Option<DType>, Option<Vec<Dim>>)>,
    n_carried: usize,
    free: Vec<String>,
    n_explicit: usize,
}

fn build_loop(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let body = graph_attr(ctx, "body")?;
    let n_explicit = ctx.node.inputs.len();
    if n_explicit < 2 {
        bail_invalid!("has {n_explicit} inputs, expected at least 2 (M, cond)");
    }
    let n_carried = n_explicit - 2;
    if body.inputs.len() != n_carried + 2 {
        bail_invalid!(
            "body has {} inputs, expected {} (iteration, cond, {n_carried} carried values)",
            body.inputs.len(),
            n_carried + 2
        );
    }
    if body.outputs.len() < n_carried + 1 {
        bail_invalid!(
            "body has {} outputs, expected at least {} (cond, {n_carried} carried values)",
            body.outputs.len(),
            n_carried + 1
        );
    }
    let n_scan = body.outputs.len() - 1 - n_carried;
    if ctx.node.outputs.len() > n_carried + n_scan {
        bail_invalid!(
            "has {} outputs but the body yields only {n_carried} carried values and {n_scan} scan outputs",
            ctx.node.outputs.len()
        );
    }
    Ok(Box::new(Loop {
        body: ctx.compile_subgraph(body)?,
        body_inputs: body.inputs.iter().map(|v| v.name.clone()).collect(),
        scan_types: body.outputs[1 + n_carried..]
            .iter()
            .map(|v| (v.dtype(), v.shape().map(<[Dim]>::to_vec)))
            .collect(),
        n_carried,
        free: free_names(ctx),
        n_explicit,
    }))
}

impl Op for Loop {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let max = match optional(inputs, 0) {
            Some(t) => match t.to_i64_vec()?.as_slice() {
                [m] => Some(*m),
                _ => bail_invalid!(
                    "input 0 (M) has shape {:?}, expected one element",
                    t.shape()
                ),
            },
            None => None,
        };
        // Without a cond input the body's cond output is ignored (a for loop).
        let has_cond = optional(inputs, 1).is_some();
        let mut cond = match optional(inputs, 1) {
            Some(t) => single_bool(t, "input 1 (cond)")?,
            None => true,
        };
        if max.is_none() && !has_cond {
            bail_unsupported!("Loop with neither M nor cond (it would never end)");
        }
        let mut carried: Vec<Tensor> = (0..self.n_carried)
            .map(|i| required(inputs, 2 + i).cloned())
            .collect::<Result<_, _>>()?;
        let outer = outer_bindings(&self.free, inputs, self.n_explicit);
        let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); self.scan_types.len()];
        let mut i = 0i64;
        while cond && max.is_none_or(|m| i < m) {
            let mut feeds = vec![
                (self.body_inputs[0].clone(), Tensor::scalar(i)),
                (self.body_inputs[1].clone(), Tensor::scalar(cond)),
            ];
            feeds.extend(self.body_inputs[2..].iter().cloned().zip(carried));
            let mut outs = self
                .body
                .run_subgraph(ctx, feeds, &outer)
                .map_err(subgraph_err)?
                .into_iter()
                .map(|(_, t)| t);
            let cond_out = match outs.next() {
                Some(t) => single_bool(&t, "body output 0 (cond)")?,
                None => bail_invalid!("body produced no outputs"),
            };
            if has_cond {
                cond = cond_out;
            }
            carried = outs.by_ref().take(self.n_carried).collect();
            for (s, t) in scans.iter_mut().zip(outs) {
                s.push(t);
            }
            if carried.len() != self.n_carried {
                bail_invalid!("body produced too few outputs");
            }
            i += 1;
        }
        let mut result = carried;
        for (parts, (dtype, shape)) in scans.into_iter().zip(&self.scan_types) {
            result.push(stack(parts, *dtype, shape.as_deref())?);
        }
        Ok(result)
    }
}

/// Stacks per-iteration scan values along a new leading axis.
fn stack(
    parts: Vec<Tensor>,
    dtype: Option<DType>,
    declared: Option<&[Dim]>,
) -> Result<Tensor, OpError> {
    let Some(first) = parts.first() else {
        // No iteration ran: an empty tensor of the declared type.
        let mut shape = vec![0usize];
        if let Some(dims) = declared {
            for d in dims {
                match d {
                    Dim::Fixed(v) => shape.push(*v as usize),
                    _ => shape.push(0),
                }
            }
        }
        return Ok(Tensor::zeros(dtype.unwrap_or(DType::F32), shape)?);
    };
    let inner = first.shape().to_vec();
    if let Some(p) = parts
        .iter()
        .find(|p| p.shape() != inner.as_slice() || p.dtype() != first.dtype())
    {
        bail_invalid!(
            "scan output changes between iterations ({} {:?} vs {} {inner:?})",
            p.dtype(),
            p.shape(),
            first.dtype()
        );
    }
    let mut shape = vec![parts.len()];
    shape.extend(&inner);
    macro_rules! cat {
        ($($v:ident),*) => {
            match first.data() {
                $(TensorData::$v(_) => {
                    let mut out = Vec::new();
                    for p in &parts {
                        if let TensorData::$v(x) = p.data() {
                            out.extend_from_slice(x);
                        }
                    }
                    TensorData::$v(out)
                })*
                _ => bail_unsupported!("scan outputs of type {}", first.dtype()),
            }
        };
    }
    let data = cat!(F32, F64, I8, U8, I16, U16, I32, U32, I64, U64, Bool);
    Ok(Tensor::new(shape, data)?)
}

#[cfg(test)]
mod tests {
    use crate::{BuildCtx, Op, OpError, Registry, RunCtx, Session};
    use quench_ir::{Attr, DType, Graph, Model, Node, OpsetImport, Tensor, ValueInfo};

    /// A test-only elementwise f32 Add, so bodies can compute without
    /// depending on the elementwise family.
    #[derive(Debug)]
    struct TestAdd;
    impl Op for TestAdd {
        fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
            let a = crate::op::required(inputs, 0)?;
            let b = crate::op::required(inputs, 1)?;
            let (x, y) = (a.as_slice::<f32>()?, b.as_slice::<f32>()?);
            let v = if y.len() == 1 {
                x.iter().map(|p| p + y[0]).collect()
            } else {
                x.iter().zip(y).map(|(p, q)| p + q).collect()
            };
            Ok(vec![Tensor::from_vec(a.shape().to_vec(), v)?])
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::standard();
        r.register("", "TestAdd", |_: &BuildCtx| Ok(Box::new(TestAdd)));
        r
    }

    fn f32_info(name: &str) -> ValueInfo {
        ValueInfo::tensor(name, DType::F32, None)
    }

    fn constant(out: &str, v: f32) -> Node {
        Node::new("Constant", "", &[], &[out]).with_attr("value", Attr::Tensor(Tensor::scalar(v)))
    }

    /// A branch `out = TestAdd(read, k)` reading `read` from outside.
    fn add_branch(read: &str, k: f32, out: &str) -> Graph {
        Graph {
            nodes: vec![
                constant(&format!("{out}_k"), k),
                Node::new("TestAdd", "", &[read, &format!("{out}_k")], &[out]),
            ],
            outputs: vec![f32_info(out)],
            ..Default::default()
        }
    }

    fn model(graph: Graph) -> Model {
        Model {
            ir_version: 8,
            opset_imports: vec![OpsetImport {
                domain: String::new(),
                version: 17,
            }],
            graph,
            ..Default::default()
        }
    }

    fn run(m: &Model, feeds: Vec<(&str, Tensor)>) -> Result<Vec<Tensor>, crate::RuntimeError> {
        let s = Session::with_registry(m, &registry(), 1)?;
        let out = s.run(feeds.into_iter().map(|(n, t)| (n.to_string(), t)).collect())?;
        Ok(out.into_iter().map(|(_, t)| t).collect())
    }

    #[test]
    fn nested_if_reads_outer_values_at_every_depth() {
        // outer If(c1): then -> inner If(c2): then x+1 / else x+2 ; else -> x+10
        let inner = Node::new("If", "inner", &["c2"], &["r_inner"])
            .with_attr("then_branch", Attr::Graph(add_branch("x", 1.0, "t2")))
            .with_attr("else_branch", Attr::Graph(add_branch("x", 2.0, "e2")));
        let then_outer = Graph {
            nodes: vec![inner],
            outputs: vec![f32_info("r_inner")],
            ..Default::default()
        };
        let outer = Node::new("If", "outer", &["c1"], &["y"])
            .with_attr("then_branch", Attr::Graph(then_outer))
            .with_attr("else_branch", Attr::Graph(add_branch("x", 10.0, "e1")));
        let g = Graph {
            inputs: vec![
                ValueInfo::tensor("c1", DType::Bool, None),
                ValueInfo::tensor("c2", DType::Bool, None),
                f32_info("x"),
            ],
            outputs: vec![f32_info("y")],
            nodes: vec![outer],
            ..Default::default()
        };
        let m = model(g);
        for (c1, c2, want) in [(true, true, 6.0), (true, false, 7.0), (false, true, 15.0)] {
            let out = run(
                &m,
                vec![
                    ("c1", Tensor::scalar(c1)),
                    ("c2", Tensor::scalar(c2)),
                    ("x", Tensor::scalar(5f32)),
                ],
            )
            .unwrap();
            assert_eq!(out[0].as_slice::<f32>().unwrap(), &[want]);
        }
        let err = run(
            &m,
            vec![
                ("c1", Tensor::from_vec(vec![2], vec![true, false]).unwrap()),
                ("c2", Tensor::scalar(true)),
                ("x", Tensor::scalar(5f32)),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
    }

    #[test]
    fn loop_carries_values_and_stacks_scans() {
        // for i < 3: acc = acc + x ; scan acc
        let body = Graph {
            inputs: vec![
                ValueInfo::tensor("i", DType::I64, None),
                ValueInfo::tensor("c_in", DType::Bool, None),
                f32_info("acc_in"),
            ],
            nodes: vec![Node::new("TestAdd", "", &["acc_in", "x"], &["acc_out"])],
            outputs: vec![
                ValueInfo::tensor("c_in", DType::Bool, None),
                f32_info("acc_out"),
                f32_info("acc_out"),
            ],
            ..Default::default()
        };
        let node = Node::new("Loop", "loop", &["m", "", "acc0"], &["acc", "scan"])
            .with_attr("body", Attr::Graph(body));
        let g = Graph {
            inputs: vec![
                ValueInfo::tensor("m", DType::I64, None),
                f32_info("acc0"),
                f32_info("x"),
            ],
            outputs: vec![f32_info("acc"), f32_info("scan")],
            nodes: vec![node],
            ..Default::default()
        };
        let m = model(g);
        let x = Tensor::from_vec(vec![2], vec![1f32, 2.]).unwrap();
        let acc0 = Tensor::from_vec(vec![2], vec![0f32, 0.]).unwrap();
        let out = run(
            &m,
            vec![
                ("m", Tensor::scalar(3i64)),
                ("acc0", acc0.clone()),
                ("x", x.clone()),
            ],
        )
        .unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[3., 6.]);
        assert_eq!(out[1].shape(), &[3, 2]);
        assert_eq!(out[1].as_slice::<f32>().unwrap(), &[1., 2., 2., 4., 3., 6.]);
        let out = run(
            &m,
            vec![("m", Tensor::scalar(0i64)), ("acc0", acc0), ("x", x)],
        )
        .unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[0., 0.]);
        assert_eq!(out[1].shape(), &[0]);
    }

    #[test]
    fn loop_without_cond_input_ignores_body_cond() {
        // A for loop: the body says stop, but with no cond input that is ignored.
        let body = Graph {
            inputs: vec![
                ValueInfo::tensor("i", DType::I64, None),
                ValueInfo::tensor("c_in", DType::Bool, None),
                f32_info("acc_in"),
            ],
            nodes: vec![
                Node::new("Constant", "", &[], &["stop"])
                    .with_attr("value", Attr::Tensor(Tensor::scalar(false))),
                Node::new("TestAdd", "", &["acc_in", "one"], &["acc_out"]),
                constant("one", 1.0),
            ],
            outputs: vec![
                ValueInfo::tensor("stop", DType::Bool, None),
                f32_info("acc_out"),
            ],
            ..Default::default()
        };
        let node = Node::new("Loop", "loop", &["m", "", "acc0"], &["acc"])
            .with_attr("body", Attr::Graph(body));
        let g = Graph {
            inputs: vec![ValueInfo::tensor("m", DType::I64, None), f32_info("acc0")],
            outputs: vec![f32_info("acc")],
            nodes: vec![node],
            ..Default::default()
        };
        let out = run(
            &model(g),
            vec![("m", Tensor::scalar(4i64)), ("acc0", Tensor::scalar(0f32))],
        )
        .unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[4.]);
    }
}
