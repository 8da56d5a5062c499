use crate::{BuildCtx, OpError, RunCtx};
use quench_ir::{Attr, Node, Tensor};

/// Builds `node` (constants: inputs named "const:*" take their value from
/// `consts`) and runs it.
pub(crate) fn run_node(
    node: &Node,
    opset: i64,
    inputs: &[Option<&Tensor>],
    threads: usize,
) -> Result<Vec<Tensor>, OpError> {
    let lookup = |name: &str| {
        node.inputs
            .iter()
            .position(|n| n == name && n.starts_with("const:"))
            .and_then(|i| inputs.get(i).copied().flatten())
    };
    let compile = |_: &quench_ir::Graph| Err(crate::RuntimeError::Invalid("no subgraphs".into()));
    let ctx = BuildCtx {
        node,
        opset,
        constants: &lookup,
        compile: &compile,
    };
    let registry = crate::Registry::standard();
    let build = registry
        .get("", &node.op_type)
        .ok_or_else(|| OpError::Unsupported(node.op_type.clone()))?;
    let op = build(&ctx)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| op.run(&RunCtx { threads }, inputs))
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

fn t(shape: &[usize], f: impl Fn(usize) -> f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape.to_vec(), (0..n).map(f).collect()).unwrap()
}

/// Naive 2-D grouped convolution, pads symmetric per dim given as (top, left).
#[allow(clippy::too_many_arguments)]
fn conv_ref(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    group: usize,
    s: [usize; 2],
    d: [usize; 2],
    p: [usize; 2],
    out: [usize; 2],
) -> Vec<f32> {
    let (xs, ws) = (x.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
    let [n, c, h, wd] = x.shape().try_into().unwrap();
    let [m, cg, kh, kw] = w.shape().try_into().unwrap();
    let mg = m / group;
    let mut y = vec![0.0; n * m * out[0] * out[1]];
    for bi in 0..n {
        for mo in 0..m {
            let grp = mo / mg;
            for oy in 0..out[0] {
                for ox in 0..out[1] {
                    let mut acc = b.map_or(0.0, |b| b.as_slice::<f32>().unwrap()[mo]);
                    for ci in 0..cg {
                        for a in 0..kh {
                            for e in 0..kw {
                                let iy = (oy * s[0] + a * d[0]) as isize - p[0] as isize;
                                let ix = (ox * s[1] + e * d[1]) as isize - p[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xc = grp * cg + ci;
                                acc += xs[((bi * c + xc) * h + iy as usize) * wd + ix as usize]
                                    * ws[((mo * cg + ci) * kh + a) * kw + e];
                            }
                        }
                    }
                    y[((bi * m + mo) * out[0] + oy) * out[1] + ox] = acc;
                }
            }
        }
    }
    y
}

fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-3 * (1.0 + y.abs()),
            "at {i}: {x} vs {y}"
        );
    }
}

#[test]
fn grouped_strided_dilated_conv_matches_reference() {
    let x = t(&[2, 4, 9, 8], |i| ((i * 7) % 13) as f32 - 6.0);
    let w = t(&[6, 2, 3, 2], |i| ((i * 3) % 5) as f32 * 0.5 - 1.0);
    let b = t(&[6], |i| i as f32);
    let node = Node::new("Conv", "c", &["x", "const:w", "b"], &["y"])
        .with_attr("group", Attr::Int(2))
        .with_attr("strides", ints(&[2, 1]))
        .with_attr("dilations", ints(&[1, 2]))
        .with_attr("pads", ints(&[1, 2, 1, 2]));
    for threads in [1, 2] {
        let y = run_node(&node, 17, &[Some(&x), Some(&w), Some(&b)], threads).unwrap();
        // out h: (9+2-3)/2+1 = 5; w: (8+4-3)/1+1 = 10
        assert_eq!(y[0].shape(), &[2, 6, 5, 10]);
        let want = conv_ref(&x, &w, Some(&b), 2, [2, 1], [1, 2], [1, 2], [5, 10]);
        assert_close(y[0].as_slice().unwrap(), &want);
    }
}

#[test]
fn pointwise_and_depthwise_paths_match_reference() {
    let x = t(&[1, 8, 7, 6], |i| ((i * 5) % 11) as f32 - 5.0);
    let w1 = t(&[3, 8, 1, 1], |i| (i % 4) as f32 - 1.5);
    let node = Node::new("Conv", "pw", &["x", "w"], &["y"]);
    let y = run_node(&node, 11, &[Some(&x), Some(&w1)], 1).unwrap();
    assert_close(
        y[0].as_slice().unwrap(),
        &conv_ref(&x, &w1, None, 1, [1, 1], [1, 1], [0, 0], [7, 6]),
    );

    let wd = t(&[8, 1, 3, 3], |i| (i % 7) as f32 * 0.25 - 0.5);
    let b = t(&[8], |i| i as f32 * 0.1);
    for (s, out) in [(1, [7, 6]), (2, [4, 3])] {
        let node = Node::new("Conv", "dw", &["x", "const:w", "const:b"], &["y"])
            .with_attr("group", Attr::Int(8))
            .with_attr("strides", ints(&[s as i64, s as i64]))
            .with_attr("pads", ints(&[1, 1, 1, 1]));
        let y = run_node(&node, 17, &[Some(&x), Some(&wd), Some(&b)], 1).unwrap();
        let want = conv_ref(&x, &wd, Some(&b), 8, [s, s], [1, 1], [1, 1], out);
        assert_close(y[0].as_slice().unwrap(), &want);
    }
}

#[test]
fn auto_pad_same_lower_pads_the_front() {
    let x = t(&[1, 1, 4, 4], |i| i as f32);
    let w = t(&[1, 1, 2, 2], |_| 1.0);
    let node = Node::new("Conv", "c", &["x", "w"], &["y"])
        .with_attr("auto_pad", Attr::String(b"SAME_LOWER".to_vec()));
    let y = run_node(&node, 17, &[Some(&x), Some(&w)], 1).unwrap();
    assert_eq!(y[0].shape(), &[1, 1, 4, 4]);
    // Padding goes before: y[0,0] = x[0,0] alone.
    let ys = y[0].as_slice::<f32>().unwrap();
    assert_eq!(ys[0], 0.0);
    assert_eq!(ys[5], 0.0 + 1.0 + 4.0 + 5.0);
}

#[test]
fn conv_1d_and_3d_match_lifted_2d() {
    let x = t(&[1, 2, 10], |i| i as f32 - 7.0);
    let w = t(&[3, 2, 3], |i| (i % 3) as f32);
    let node = Node::new("Conv", "c", &["x", "w"], &["y"]).with_attr("pads", ints(&[1, 0]));
    let y = run_node(&node, 17, &[Some(&x), Some(&w)], 1).unwrap();
    let x2 = x.clone().reshape(vec![1, 2, 1, 10]).unwrap();
    let w2 = w.clone().reshape(vec![3, 2, 1, 3]).unwrap();
    let want = conv_ref(&x2, &w2, None, 1, [1, 1], [1, 1], [0, 1], [1, 9]);
    assert_close(y[0].as_slice().unwrap(), &want);

    let x3 = t(&[1, 1, 3, 4, 4], |i| (i % 9) as f32);
    let w3 = t(&[1, 1, 1, 3, 3], |i| i as f32);
    let node = Node::new("Conv", "c", &["x", "w"], &["y"]);
    let y = run_node(&node, 17, &[Some(&x3), Some(&w3)], 1).unwrap();
    assert_eq!(y[0].shape(), &[1, 1, 3, 2, 2]);
}

#[test]
fn conv_rejects_mismatched_channels() {
    let x = t(&[1, 3, 5, 5], |_| 1.0);
    let w = t(&[2, 2, 3, 3], |_| 1.0);
    let node = Node::new("Conv", "c", &["x", "w"], &["y"]);
    let err = run_node(&node, 17, &[Some(&x), Some(&w)], 1).unwrap_err();
    assert!(matches!(err, OpError::Invalid(_)), "{err}");
    let node = Node::new("Conv", "c", &["x", "w"], &["y"]).with_attr("strides", ints(&[0, 1]));
    assert!(run_node(&node, 17, &[Some(&x), Some(&w)], 1).is_err());
    let xf = Tensor::from_vec(vec![1, 2, 3, 3], vec![0.0f64; 18]).unwrap();
    let err = run_node(&node, 17, &[Some(&xf), Some(&w)], 1).unwrap_err();
    assert!(err.to_string().contains("stride") || err.to_string().contains("f64"));
}

/// Naive 2-D transposed convolution: every input pixel scatters its kernel.
fn conv_transpose_ref(
    x: &Tensor,
    w: &Tensor,
    group: usize,
    s: [usize; 2],
    p: [usize; 2],
    out: [usize; 2],
) -> Vec<f32> {
    let (xs, ws) = (x.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
    let [n, c, h, wd] = x.shape().try_into().unwrap();
    let [_, mg, kh, kw] = w.shape().try_into().unwrap();
    let (cg, m) = (c / group, mg * group);
    let mut y = vec![0.0; n * m * out[0] * out[1]];
    for bi in 0..n {
        for ci in 0..c {
            let grp = ci / cg;
            for mo in 0..mg {
                for iy in 0..h {
                    for ix in 0..wd {
                        for a in 0..kh {
                            for e in 0..kw {
                                let oy = (iy * s[0] + a) as isize - p[0] as isize;
                                let ox = (ix * s[1] + e) as isize - p[1] as isize;
                                if oy < 0
                                    || ox < 0
                                    || oy >= out[0] as isize
                                    || ox >= out[1] as isize
                                {
                                    continue;
                                }
                                let mm = grp * mg + mo;
                                y[((bi * m + mm) * out[0] + oy as usize) * out[1] + ox as usize] +=
                                    xs[((bi * c + ci) * h + iy) * wd + ix]
                                        * ws[((ci * mg + mo) * kh + a) * kw + e];
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

#[test]
fn conv_transpose_matches_scatter_reference() {
    let x = t(&[2, 4, 3, 4], |i| ((i * 7) % 9) as f32 - 4.0);
    let w = t(&[4, 3, 3, 2], |i| (i % 5) as f32 * 0.5);
    let node = Node::new("ConvTranspose", "ct", &["x", "w"], &["y"])
        .with_attr("group", Attr::Int(2))
        .with_attr("strides", ints(&[2, 3]))
        .with_attr("pads", ints(&[1, 0, 0, 1]))
        .with_attr("output_padding", ints(&[1, 0]));
    let y = run_node(&node, 17, &[Some(&x), Some(&w)], 1).unwrap();
    // h: 2*2+1+3-1 = 7; w: 3*3+0+2-1 = 10
    assert_eq!(y[0].shape(), &[2, 6, 7, 10]);
    let want = conv_transpose_ref(&x, &w, 2, [2, 3], [1, 0], [7, 10]);
    assert_close(y[0].as_slice().unwrap(), &want);

    let bad = t(&[3, 3, 3, 2], |_| 1.0);
    assert!(run_node(&node, 17, &[Some(&x), Some(&bad)], 1).is_err());
}
