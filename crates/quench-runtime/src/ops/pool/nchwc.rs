//! MaxPool on a blocked NCHWc value (`[N, C/16, H, W, 16]`), inserted by
//! the NCHWc rewrite ([`crate::optimize`]) where a 2-D MaxPool reads the
//! output of an NCHWc convolution: the pool then needs no reorder to NCHW
//! and back.

use super::{Kind, Pool, max_attrs};
use crate::op::required;
use crate::{BuildCtx, Op, OpError, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::Tensor;
use quench_kernels::conv::nchwc::LANES;
use quench_kernels::pool::max_pool_nchwc;

#[derive(Debug)]
pub(super) struct NchwcMaxPool(Pool);

/// MaxPool's attributes; only 2-D pooling without the Indices output.
pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let pool = max_attrs(ctx)?;
    if matches!(pool.kind, Kind::Max { indices: true, .. }) {
        bail_unsupported!("NCHWc MaxPool with the Indices output");
    }
    if pool.spatial.kernel.as_ref().is_some_and(|k| k.len() != 2) {
        bail_invalid!("NCHWc MaxPool needs a 2-D 'kernel_shape'");
    }
    Ok(Box::new(NchwcMaxPool(pool)))
}

impl Op for NchwcMaxPool {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let &[n, cb, h, w, LANES] = x.shape() else {
            bail_invalid!(
                "input 0 (X) has shape {:?}, expected [N, C/16, H, W, 16]",
                x.shape()
            );
        };
        let Some(xs) = x.as_slice::<f32>().ok() else {
            bail_invalid!("input 0 (X) is {}, expected float32", x.dtype());
        };
        let pg = self.0.geometry(&[h, w])?;
        let [_, oh, ow] = pg.g.output;
        let shape = vec![n, cb, oh, ow, LANES];
        let mut y = vec![0.0f32; quench_ir::tensor::checked_numel(&shape)?];
        let (img_in, img_out) = (cb * h * w * LANES, cb * oh * ow * LANES);
        if img_in > 0 && img_out > 0 {
            for (xb, yb) in xs.chunks_exact(img_in).zip(y.chunks_exact_mut(img_out)) {
                max_pool_nchwc(&pg.g, cb, xb, yb);
            }
        }
        Ok(vec![Tensor::from_vec(shape, y)?])
    }
}

#[cfg(test)]
mod tests {
    use quench_ir::{Attr, DType, Dim, Graph, Model, Node, OpsetImport, Tensor, ValueInfo};

    /// Conv (3 channels) → Relu → MaxPool → Conv → Relu → Conv, with the
    /// pooled value also a graph output (so it comes back to NCHW too).
    fn model() -> Model {
        let vals = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 37 + seed * 101) % 23) as f32 - 11.0) / 17.0)
                .collect()
        };
        let mut g = Graph::default();
        for (name, shape, seed) in [
            ("w0", vec![20, 3, 3, 3], 1),
            ("b0", vec![20], 2),
            ("w1", vec![24, 20, 1, 1], 3),
            ("w2", vec![16, 24, 1, 1], 4),
        ] {
            let n = shape.iter().product();
            let t = Tensor::from_vec(shape, vals(n, seed)).unwrap();
            g.initializers.insert(name.into(), t);
        }
        let mut c0 = Node::new("Conv", "c0", &["x", "w0", "b0"], &["y0"]);
        c0.attrs.insert("pads".into(), Attr::Ints(vec![1, 1, 1, 1]));
        let mut pool = Node::new("MaxPool", "p", &["a0"], &["m"]);
        pool.attrs
            .insert("kernel_shape".into(), Attr::Ints(vec![3, 3]));
        pool.attrs.insert("strides".into(), Attr::Ints(vec![2, 2]));
        pool.attrs
            .insert("pads".into(), Attr::Ints(vec![1, 1, 1, 1]));
        g.nodes = vec![
            c0,
            Node::new("Relu", "r0", &["y0"], &["a0"]),
            pool,
            Node::new("Conv", "c1", &["m", "w1"], &["y1"]),
            Node::new("Relu", "r1", &["y1"], &["a1"]),
            Node::new("Conv", "c2", &["a1", "w2"], &["out"]),
        ];
        let shape = vec![Dim::Fixed(2), Dim::Fixed(3), Dim::Fixed(11), Dim::Fixed(9)];
        g.inputs = vec![ValueInfo::tensor("x", DType::F32, Some(shape))];
        g.outputs = ["out", "m"]
            .iter()
            .map(|o| ValueInfo::tensor(*o, DType::F32, None))
            .collect();
        Model {
            ir_version: 8,
            opset_imports: vec![OpsetImport {
                domain: String::new(),
                version: 17,
            }],
            graph: g,
            ..Default::default()
        }
    }

    #[test]
    fn blocked_max_pool_matches_the_plain_graph() {
        let m = model();
        if quench_kernels::conv::nchwc::fast() {
            let nodes = crate::optimize::fuse_conv_chains(&m.graph, 17).unwrap();
            let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
            // The pool reads and writes blocked values; c1 reads its output
            // blocked; m goes back to NCHW for the graph output only.
            assert_eq!(
                ops,
                [
                    crate::optimize::NCHWC_CONV,
                    crate::optimize::NCHWC_MAX_POOL,
                    crate::optimize::FROM_NCHWC,
                    crate::optimize::NCHWC_CONV,
                    crate::optimize::NCHWC_CONV,
                    crate::optimize::FROM_NCHWC,
                ],
                "{nodes:#?}"
            );
            assert_eq!(
                nodes[3].attr_string_or("input_layout", "").unwrap(),
                "NCHWc"
            );
        }
        let x = Tensor::from_vec(
            vec![2, 3, 11, 9],
            (0..2 * 3 * 11 * 9)
                .map(|i| ((i * 7) % 19) as f32 / 9.0 - 1.0)
                .collect(),
        )
        .unwrap();
        let s = crate::Session::new(&m, 1).unwrap();
        let fast = s.run(vec![("x".into(), x.clone())]).unwrap();
        // keep_all runs the plan without any rewrite.
        let mut hooks = crate::RunHooks {
            keep_all: true,
            ..Default::default()
        };
        let plain = s.run_with(vec![("x".into(), x)], &mut hooks).unwrap();
        for (name, shape) in [("out", [2, 16, 6, 5]), ("m", [2, 20, 6, 5])] {
            let get = |v: &[(String, Tensor)]| {
                let t = &v.iter().find(|(n, _)| n == name).unwrap().1;
                (t.shape().to_vec(), t.as_slice::<f32>().unwrap().to_vec())
            };
            let (a, b) = (get(&fast), get(&plain));
            assert_eq!(a.0, shape, "{name} shape");
            assert_eq!(b.0, shape, "{name} shape");
            for (u, v) in a.1.iter().zip(&b.1) {
                assert!((u - v).abs() < 1e-4 * (1.0 + v.abs()), "{name}: {u} vs {v}");
            }
        }
    }

    #[test]
    fn rejects_unblocked_input() {
        let mut m = model();
        let mut n = Node::new(crate::optimize::NCHWC_MAX_POOL, "p", &["x"], &["y"]);
        n.domain = crate::optimize::DOMAIN.into();
        n.attrs
            .insert("kernel_shape".into(), Attr::Ints(vec![2, 2]));
        m.graph.nodes = vec![n];
        m.graph.outputs = vec![ValueInfo::tensor("y", DType::F32, None)];
        let s = crate::Session::new(&m, 1).unwrap();
        let x = Tensor::from_vec(vec![2, 3, 11, 9], vec![0.0f32; 2 * 3 * 11 * 9]).unwrap();
        let err = s.run(vec![("x".into(), x)]).unwrap_err().to_string();
        assert!(err.contains("expected [N, C/16, H, W, 16]"), "{err}");
        // Indices output: not in the blocked form.
        let mut n = Node::new(crate::optimize::NCHWC_MAX_POOL, "p", &["x"], &["y", "i"]);
        n.domain = crate::optimize::DOMAIN.into();
        n.attrs
            .insert("kernel_shape".into(), Attr::Ints(vec![2, 2]));
        m.graph.nodes = vec![n];
        assert!(crate::Session::new(&m, 1).is_err());
    }
}
