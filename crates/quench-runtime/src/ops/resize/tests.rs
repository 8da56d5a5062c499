use super::*;
use quench_ir::{Attr, Node};

fn build(node: &Node, opset: i64) -> Box<dyn Op> {
    let constants = |_: &str| None;
    let compile = |_: &quench_ir::Graph| Err(crate::RuntimeError::Invalid("no subgraphs".into()));
    let ctx = BuildCtx {
        node,
        opset,
        constants: &constants,
        compile: &compile,
    };
    build_resize(&ctx).unwrap()
}

fn node(attrs: &[(&str, &str)]) -> Node {
    let mut n = Node::new("Resize", "r", &["x", "roi", "scales", "sizes"], &["y"]);
    for (k, v) in attrs {
        n = n.with_attr(k, Attr::String(v.as_bytes().to_vec()));
    }
    n
}

fn run(
    op: &dyn Op,
    x: &Tensor,
    scales: Option<Vec<f32>>,
    sizes: Option<Vec<i64>>,
) -> Result<Tensor, OpError> {
    let s = scales.map(|s| Tensor::from_vec(vec![s.len()], s).unwrap());
    let z = sizes.map(|s| Tensor::from_vec(vec![s.len()], s).unwrap());
    let mut out = op.run(
        &RunCtx { threads: 1 },
        &[Some(x), None, s.as_ref(), z.as_ref()],
    )?;
    Ok(out.remove(0))
}

#[test]
fn linear_half_pixel_matches_onnx_example() {
    let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![1f32, 2., 3., 4.]).unwrap();
    let op = build(&node(&[("mode", "linear")]), 13);
    let y = run(op.as_ref(), &x, Some(vec![1., 1., 2., 2.]), None).unwrap();
    assert_eq!(y.shape(), &[1, 1, 4, 4]);
    #[rustfmt::skip]
    let want = [1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0];
    assert_eq!(y.as_slice::<f32>().unwrap(), &want);
}

#[test]
fn nearest_works_for_integers_and_sizes() {
    let x = Tensor::from_vec(vec![1, 1, 2, 2], vec![1i64, 2, 3, 4]).unwrap();
    let op = build(
        &node(&[("coordinate_transformation_mode", "asymmetric")]),
        19,
    );
    let y = run(op.as_ref(), &x, None, Some(vec![1, 1, 2, 6])).unwrap();
    // x_ori = 0, 1/3, 2/3, 1, ...: rounded, ties to the floor.
    assert_eq!(
        y.as_slice::<i64>().unwrap(),
        &[1, 1, 2, 2, 2, 2, 3, 3, 4, 4, 4, 4]
    );
}

/// Bilinear upsample by 2 against a direct (non-separable) formula.
#[test]
fn bilinear_2x_matches_direct_formula() {
    let (n, c, h, w) = (1, 3, 5, 7);
    let data: Vec<f32> = (0..n * c * h * w)
        .map(|i| ((i * 37) % 11) as f32 - 4.0)
        .collect();
    let x = Tensor::from_vec(vec![n, c, h, w], data.clone()).unwrap();
    let op = build(&node(&[("mode", "linear")]), 13);
    let y = run(op.as_ref(), &x, Some(vec![1., 1., 2., 2.]), None).unwrap();
    let y = y.as_slice::<f32>().unwrap();
    let src = |len: usize, o: usize| {
        let s = ((o as f64 + 0.5) / 2.0 - 0.5).max(0.0);
        let i0 = s.floor() as usize;
        let i1 = (i0 + 1).min(len - 1);
        (i0, i1, s - i0 as f64)
    };
    for ch in 0..c {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                let (y0, y1, fy) = src(h, oy);
                let (x0, x1, fx) = src(w, ox);
                let at = |yy: usize, xx: usize| data[(ch * h + yy) * w + xx] as f64;
                let want = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x1))
                    + fy * ((1.0 - fx) * at(y1, x0) + fx * at(y1, x1));
                let got = y[(ch * 2 * h + oy) * 2 * w + ox] as f64;
                assert!(
                    (got - want).abs() < 1e-5,
                    "({ch},{oy},{ox}): {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn scales_and_sizes_together_are_refused() {
    let x = Tensor::from_vec(vec![1, 2], vec![1f32, 2.]).unwrap();
    let op = build(&node(&[]), 13);
    assert!(run(op.as_ref(), &x, Some(vec![1., 2.]), Some(vec![1, 4])).is_err());
    assert!(run(op.as_ref(), &x, Some(vec![2.]), None).is_err());
    let f16 = Tensor::zeros(DType::F16, vec![1, 2]).unwrap();
    let lin = build(&node(&[("mode", "linear")]), 13);
    assert!(matches!(
        run(lin.as_ref(), &f16, Some(vec![1., 2.]), None),
        Err(OpError::Unsupported(_))
    ));
}

/// Timing of the detector's common case; run with `--ignored --nocapture`.
#[test]
#[ignore]
fn bench_upsample_2x() {
    let shape = vec![1, 64, 160, 160];
    let n: usize = shape.iter().product();
    let x = Tensor::from_vec(shape, (0..n).map(|i| (i % 97) as f32).collect()).unwrap();
    for mode in ["nearest", "linear"] {
        let op = build(&node(&[("mode", mode)]), 13);
        for threads in [1, 2] {
            let s = Tensor::from_vec(vec![4], vec![1f32, 1., 2., 2.]).unwrap();
            let t0 = std::time::Instant::now();
            for _ in 0..10 {
                op.run(&RunCtx { threads }, &[Some(&x), None, Some(&s), None])
                    .unwrap();
            }
            eprintln!("{mode} x{threads}: {:?} per run", t0.elapsed() / 10);
        }
    }
}
