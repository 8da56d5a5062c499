//! ConvTranspose (1-3 spatial dims, groups, strides, pads, dilations,
//! output_padding, output_shape, auto_pad), with the runtime's semantics.
//!
//! ConvTranspose is the adjoint of a convolution from Y's grid to X's, so
//! its backward is that convolution: dcol = im2col(dY), dX = W·dcol and
//! dW = X·dcolᵀ, GEMMs per image and group. Like Conv, the im2col buffer is
//! recomputed rather than stored: the tape keeps only X and W.

use crate::op::{
    Ctx, Fwd, Grad, Op, Saved, add_into, arc_in, check_len, f32_in, f32_tensor, opt_in, par_ranges,
    req, saved, usize_attr,
};
use crate::{Result, TrainError, invalid, unsupported};
use quench_ir::{Node, Tensor};
use quench_kernels::conv::{Geom3, col2im, im2col};
use quench_kernels::gemm::sgemm_strided;
use rayon::prelude::*;
use std::sync::Arc;

pub struct ConvTranspose {
    group: usize,
    kernel: Option<Vec<usize>>,
    strides: Option<Vec<usize>>,
    dilations: Option<Vec<usize>>,
    pads: Option<Vec<usize>>,
    auto_pad: String,
    output_padding: Option<Vec<usize>>,
    output_shape: Option<Vec<usize>>,
}

pub fn build(node: &Node) -> Result<Box<dyn Op>> {
    let group = node.attr_int_or("group", 1)?;
    if group < 1 {
        invalid!("attribute group is {group}, must be >= 1");
    }
    let auto_pad = match node.attr_string_or("auto_pad", "NOTSET")?.as_str() {
        "" | "NOTSET" => "NOTSET".to_string(),
        a @ ("SAME_UPPER" | "SAME_LOWER" | "VALID") => a.to_string(),
        a => invalid!(
            "attribute auto_pad is '{a}', expected NOTSET, SAME_UPPER, SAME_LOWER or VALID"
        ),
    };
    let positive = |name: &str| -> Result<Option<Vec<usize>>> {
        let v = usize_attr(node, name)?;
        if let Some(v) = &v
            && v.contains(&0)
        {
            invalid!("attribute {name} = {v:?} has a 0, expected >= 1");
        }
        Ok(v)
    };
    Ok(Box::new(ConvTranspose {
        group: group as usize,
        kernel: positive("kernel_shape")?,
        strides: positive("strides")?,
        dilations: positive("dilations")?,
        pads: usize_attr(node, "pads")?,
        auto_pad,
        output_padding: usize_attr(node, "output_padding")?,
        output_shape: usize_attr(node, "output_shape")?,
    }))
}

/// Everything about one transposed convolution's shapes.
#[derive(Clone, Debug)]
struct Shape {
    n: usize,
    c: usize,
    m: usize,
    /// The convolution Y → X: `input` is Y's grid, `output` X's.
    g: Geom3,
    out_spatial: Vec<usize>,
    group: usize,
}

impl Shape {
    fn cg(&self) -> usize {
        self.c / self.group
    }
    fn mg(&self) -> usize {
        self.m / self.group
    }
    /// Rows of the col buffer of one group: mg · kernel size.
    fn rows(&self) -> usize {
        self.mg() * self.g.kernel_size()
    }
}

/// `v` with `rank` values, or `rank + 2` of which the first two are dropped
/// (older exporters wrote them for N and C).
fn per_dim(v: &Option<Vec<usize>>, name: &str, rank: usize) -> Result<Option<Vec<usize>>> {
    match v {
        None => Ok(None),
        Some(v) if v.len() == rank => Ok(Some(v.clone())),
        Some(v) if v.len() == rank + 2 => Ok(Some(v[2..].to_vec())),
        Some(v) => invalid!("attribute {name} {v:?} does not have {rank} values"),
    }
}

impl ConvTranspose {
    fn shape(&self, x: &[usize], w: &[usize]) -> Result<Shape> {
        if x.len() < 3 || x.len() > 5 || w.len() != x.len() {
            invalid!("X {x:?} and W {w:?} must both have rank 3, 4 or 5");
        }
        let r = x.len() - 2;
        let (n, c, mg) = (x[0], x[1], w[1]);
        if w[0] != c || c % self.group != 0 {
            invalid!(
                "W {w:?} does not match X {x:?} with group {} (expected [C, M/group, kernel...])",
                self.group
            );
        }
        let (sp, k) = (&x[2..], &w[2..]);
        if let Some(ks) = &self.kernel
            && ks.as_slice() != k
        {
            invalid!("attribute kernel_shape {ks:?} does not match W {w:?}");
        }
        if k.contains(&0) {
            invalid!("W {w:?} has an empty kernel");
        }
        let get = |v: &Option<Vec<usize>>, name: &str, len: usize, fill: usize| match v {
            None => Ok(vec![fill; len]),
            Some(v) if v.len() == len => Ok(v.clone()),
            Some(v) => Err(TrainError::Invalid(format!(
                "attribute {name} has {} values, expected {len}",
                v.len()
            ))),
        };
        let st = get(&self.strides, "strides", r, 1)?;
        let di = get(&self.dilations, "dilations", r, 1)?;
        let pads = get(&self.pads, "pads", 2 * r, 0)?;
        let op = per_dim(&self.output_padding, "output_padding", r)?.unwrap_or(vec![0; r]);
        let target = per_dim(&self.output_shape, "output_shape", r)?;
        let (mut out, mut begin) = (Vec::with_capacity(r), Vec::with_capacity(r));
        for i in 0..r {
            let full = st[i] * sp[i].saturating_sub(1) + op[i] + di[i] * (k[i] - 1) + 1;
            match self.auto_pad.as_str() {
                "SAME_UPPER" | "SAME_LOWER" => {
                    let want = target.as_ref().map_or(sp[i] * st[i], |t| t[i]);
                    let Some(total) = full.checked_sub(want) else {
                        unsupported!(
                            "output_shape {want} larger than the full output {full} with auto_pad SAME"
                        );
                    };
                    let small = total / 2;
                    begin.push(if self.auto_pad == "SAME_UPPER" {
                        small
                    } else {
                        total - small
                    });
                    out.push(want);
                }
                _ => {
                    let (pb, pe) = if self.auto_pad == "VALID" {
                        (0, 0)
                    } else {
                        (pads[i], pads[r + i])
                    };
                    begin.push(pb);
                    match &target {
                        Some(t) => out.push(t[i]),
                        None => match full.checked_sub(pb + pe) {
                            Some(o) => out.push(o),
                            None => invalid!("pads {pb}+{pe} exceed the full output extent {full}"),
                        },
                    }
                }
            }
        }
        let Some(g) = Geom3::lift(&out, k, sp, &st, &di, &begin) else {
            unsupported!("ConvTranspose with {r} spatial dims");
        };
        Ok(Shape {
            n,
            c,
            m: mg * self.group,
            g,
            out_spatial: out,
            group: self.group,
        })
    }
}

struct SavedCt {
    x: Arc<Tensor>,
    w: Arc<Tensor>,
    s: Shape,
    bias: bool,
}

/// One image: `y` (m × os), bias-initialised, from `x` (c × is).
fn image_fwd(
    s: &Shape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    col: &mut Vec<f32>,
) {
    let (is, os) = (s.g.out_size(), s.g.in_size());
    let (cg, mg, rows) = (s.cg(), s.mg(), s.rows());
    for (ch, yc) in y.chunks_mut(os).enumerate() {
        yc.fill(bias.map_or(0.0, |b| b[ch]));
    }
    col.resize(rows * is, 0.0);
    for gi in 0..s.group {
        // col (rows × is) = Wgᵀ · Xg, Wg stored cg × rows.
        sgemm_strided(
            rows,
            is,
            cg,
            &w[gi * cg * rows..(gi + 1) * cg * rows],
            1,
            rows as isize,
            &x[gi * cg * is..(gi + 1) * cg * is],
            is as isize,
            1,
            col,
            0.0,
            1,
        );
        col2im(&s.g, mg, col, &mut y[gi * mg * os..(gi + 1) * mg * os]);
    }
}

/// One image's backward: accumulates into `dw`, writes `dx`.
fn image_bwd(
    s: &Shape,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    mut dw: Option<&mut [f32]>,
    mut dx: Option<&mut [f32]>,
    dcol: &mut Vec<f32>,
) {
    let (is, os) = (s.g.out_size(), s.g.in_size());
    let (cg, mg, rows) = (s.cg(), s.mg(), s.rows());
    dcol.resize(rows * is, 0.0);
    for gi in 0..s.group {
        im2col(&s.g, mg, &gy[gi * mg * os..(gi + 1) * mg * os], dcol);
        let wg = &w[gi * cg * rows..(gi + 1) * cg * rows];
        if let Some(dx) = dx.as_deref_mut() {
            // dXg (cg × is) = Wg (cg × rows) · dcol (rows × is)
            sgemm_strided(
                cg,
                is,
                rows,
                wg,
                rows as isize,
                1,
                dcol,
                is as isize,
                1,
                &mut dx[gi * cg * is..(gi + 1) * cg * is],
                0.0,
                1,
            );
        }
        if let Some(dw) = dw.as_deref_mut() {
            // dWg (cg × rows) += Xg (cg × is) · dcolᵀ (is × rows)
            sgemm_strided(
                cg,
                rows,
                is,
                &x[gi * cg * is..(gi + 1) * cg * is],
                is as isize,
                1,
                dcol,
                1,
                is as isize,
                &mut dw[gi * cg * rows..(gi + 1) * cg * rows],
                1.0,
                1,
            );
        }
    }
}

impl Op for ConvTranspose {
    fn differentiable(&self, i: usize) -> bool {
        i < 3
    }

    fn forward(&self, cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let s = self.shape(req(x, 0)?.shape(), req(x, 1)?.shape())?;
        let (xs, ws) = (f32_in(x, 0)?, f32_in(x, 1)?);
        let bias = match opt_in(x, 2) {
            Some(_) => {
                let b = f32_in(x, 2)?;
                if b.len() != s.m {
                    invalid!("B has {} values, expected {}", b.len(), s.m);
                }
                Some(b)
            }
            None => None,
        };
        let (ci, co) = (s.c * s.g.out_size(), s.m * s.g.in_size());
        let mut y = vec![0.0; s.n * co];
        if co > 0 {
            let run = |(i, yn): (usize, &mut [f32]), col: &mut Vec<f32>| {
                image_fwd(&s, &xs[i * ci..(i + 1) * ci], ws, bias, yn, col)
            };
            if cx.threads > 1 && s.n > 1 {
                y.par_chunks_mut(co)
                    .enumerate()
                    .for_each_init(Vec::new, |col, a| run(a, col));
            } else {
                let mut col = Vec::new();
                y.chunks_mut(co).enumerate().for_each(|a| run(a, &mut col));
            }
        }
        let mut shape = vec![s.n, s.m];
        shape.extend(&s.out_spatial);
        let sv = need
            .iter()
            .any(|&b| b)
            .then(|| -> Result<Saved> {
                Ok(Box::new(SavedCt {
                    x: arc_in(x, 0)?,
                    w: arc_in(x, 1)?,
                    s: s.clone(),
                    bias: bias.is_some(),
                }))
            })
            .transpose()?;
        Ok(Fwd::new(vec![f32_tensor(shape, y)?], sv))
    }

    fn backward(
        &self,
        cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let sv: &SavedCt = saved(sv)?;
        let s = &sv.s;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None, None, None]);
        };
        let (ci, co, os) = (s.c * s.g.out_size(), s.m * s.g.in_size(), s.g.in_size());
        check_len(g, s.n * co)?;
        let (xs, ws) = (sv.x.as_slice::<f32>()?, sv.w.as_slice::<f32>()?);
        let (need_x, need_w) = (need.first() == Some(&true), need.get(1) == Some(&true));
        let nw = ws.len();
        let mut dx = need_x.then(|| vec![0.0f32; s.n * ci]);
        let dx_ptr = dx.as_mut().map(|d| SendPtr(d.as_mut_ptr()));
        let partial = par_ranges(s.n, cx.threads, |r| {
            let mut dw = if need_w { vec![0.0f32; nw] } else { Vec::new() };
            let mut dcol = Vec::new();
            for i in r {
                // Safety: the ranges are disjoint, so each image's dX slice is
                // written by exactly one task.
                let dxi = dx_ptr
                    .as_ref()
                    .map(|p| unsafe { std::slice::from_raw_parts_mut(p.0.add(i * ci), ci) });
                image_bwd(
                    s,
                    &xs[i * ci..(i + 1) * ci],
                    ws,
                    &g[i * co..(i + 1) * co],
                    need_w.then_some(dw.as_mut_slice()),
                    dxi,
                    &mut dcol,
                );
            }
            dw
        });
        let dw = need_w.then(|| {
            let mut it = partial.into_iter();
            let mut acc = it.next().unwrap_or_default();
            for p in it {
                add_into(&mut acc, &p);
            }
            acc
        });
        let db = (sv.bias && need.get(2) == Some(&true)).then(|| {
            let mut db = vec![0.0f32; s.m];
            for gn in g.chunks(co.max(1)) {
                for (d, gc) in db.iter_mut().zip(gn.chunks(os.max(1))) {
                    *d += gc.iter().sum::<f32>();
                }
            }
            db
        });
        Ok(vec![dx, dw, db])
    }
}

/// A raw pointer that may cross threads (disjoint writes only).
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_node, rand_input, run_node};
    use quench_ir::{Attr, Node, Tensor};

    fn ct(attrs: &[(&str, Vec<i64>)], group: i64) -> Node {
        let mut n = Node::new("ConvTranspose", "ct", &["x", "w", "b"], &["y"])
            .with_attr("group", Attr::Int(group));
        for (k, v) in attrs {
            n = n.with_attr(k, Attr::Ints(v.clone()));
        }
        n
    }

    fn check(node: &Node, x: &[usize], w: &[usize]) {
        let m = w[1] * node.attr_int_or("group", 1).unwrap() as usize;
        check_node(
            node,
            &[
                ("x", rand_input(x, 1)),
                ("w", rand_input(w, 2)),
                ("b", rand_input(&[m], 3)),
            ],
            &[],
            17,
        );
    }

    #[test]
    fn strided_padded_transposed_conv_matches_finite_differences() {
        let node = ct(
            &[
                ("strides", vec![2, 2]),
                ("pads", vec![1, 0, 0, 1]),
                ("output_padding", vec![1, 1]),
            ],
            1,
        );
        check(&node, &[2, 3, 3, 4], &[3, 2, 3, 3]);
    }

    #[test]
    fn grouped_dilated_and_1d_transposed_convs_match_finite_differences() {
        let node = ct(&[("dilations", vec![2, 1]), ("strides", vec![1, 2])], 2);
        check(&node, &[2, 4, 3, 3], &[4, 3, 2, 3]);
        let node = ct(&[("strides", vec![3]), ("pads", vec![1, 2])], 1);
        check(&node, &[2, 2, 4], &[2, 3, 4]);
    }

    #[test]
    fn output_shape_and_same_padding_match_finite_differences() {
        let node = ct(&[("strides", vec![2, 2]), ("output_shape", vec![7, 8])], 1);
        check(&node, &[1, 2, 3, 4], &[2, 2, 3, 3]);
        let node = ct(&[("strides", vec![2, 2])], 1)
            .with_attr("auto_pad", Attr::String("SAME_LOWER".into()));
        check(&node, &[2, 2, 3, 3], &[2, 3, 2, 2]);
    }

    #[test]
    fn forward_matches_a_scalar_reference() {
        // 1-D, stride 2, pad 1, output_padding 1: y[o] = Σ x[i] w[k] at o = 2i + k - 1.
        let node = ct(
            &[
                ("strides", vec![2]),
                ("pads", vec![1, 0]),
                ("output_padding", vec![1]),
            ],
            1,
        );
        let x = Tensor::from_vec(vec![1, 1, 3], vec![1.0f32, 2.0, 3.0]).unwrap();
        let w = Tensor::from_vec(vec![1, 1, 3], vec![0.5f32, -1.0, 2.0]).unwrap();
        let b = Tensor::from_vec(vec![1], vec![0.25f32]).unwrap();
        let y = run_node(&node, &[("x", x), ("w", w), ("b", b)], &[]).unwrap();
        let (xs, ws) = ([1.0f32, 2.0, 3.0], [0.5f32, -1.0, 2.0]);
        let full = 2 * 2 + 1 + 3;
        let mut want = vec![0.25f32; full - 1];
        for (i, xv) in xs.iter().enumerate() {
            for (k, wv) in ws.iter().enumerate() {
                if let Some(o) = (2 * i + k).checked_sub(1) {
                    want[o] += xv * wv;
                }
            }
        }
        assert_eq!(y.shape(), &[1, 1, want.len()]);
        assert_eq!(y.as_slice::<f32>().unwrap(), want.as_slice());
    }

    #[test]
    fn forward_equals_the_runtime_conv_transpose() {
        let same = |n: Node| n.with_attr("auto_pad", Attr::String("SAME_UPPER".into()));
        let cases = [
            (
                ct(&[("strides", vec![2, 2]), ("pads", vec![1, 0, 0, 1])], 1),
                [2, 4, 3, 4],
                [4, 3, 3, 3],
            ),
            (
                ct(
                    &[
                        ("dilations", vec![2, 1]),
                        ("output_padding", vec![1, 0]),
                        ("strides", vec![2, 1]),
                    ],
                    2,
                ),
                [1, 4, 3, 3],
                [4, 2, 2, 3],
            ),
            (
                ct(&[("output_shape", vec![8, 9]), ("strides", vec![2, 2])], 1),
                [1, 2, 4, 4],
                [2, 3, 3, 3],
            ),
            (
                same(ct(&[("strides", vec![2, 3])], 1)),
                [2, 2, 3, 3],
                [2, 2, 3, 4],
            ),
        ];
        for (node, xs, ws) in cases {
            let m = ws[1] * node.attr_int_or("group", 1).unwrap() as usize;
            let ins = [
                ("x", rand_input(&xs, 1)),
                ("w", rand_input(&ws, 2)),
                ("b", rand_input(&[m], 3)),
            ];
            let ours = run_node(&node, &ins, &[]).unwrap();
            let (mut g, _) = crate::gradcheck::graph_for_tests(&node, &ins, &[]);
            g.inputs.clear();
            let model = quench_ir::Model {
                opset_imports: vec![quench_ir::OpsetImport {
                    domain: String::new(),
                    version: 17,
                }],
                graph: g,
                ..Default::default()
            };
            let s = quench_runtime::Session::new(&model, 1).unwrap();
            let theirs = s.run(vec![]).unwrap().remove(0).1;
            assert_eq!(ours.shape(), theirs.shape(), "{node:?}");
            let (a, b) = (
                ours.as_slice::<f32>().unwrap(),
                theirs.as_slice::<f32>().unwrap(),
            );
            for (p, q) in a.iter().zip(b) {
                assert!((p - q).abs() < 1e-5, "{p} vs {q}");
            }
        }
    }

    #[test]
    fn mismatched_weights_are_an_error() {
        let node = ct(&[], 1);
        let r = run_node(
            &node,
            &[
                ("x", rand_input(&[1, 3, 4, 4], 1)),
                ("w", rand_input(&[2, 2, 1, 1], 2)),
                ("b", rand_input(&[2], 3)),
            ],
            &[],
        );
        assert!(r.unwrap_err().to_string().contains("does not match"));
    }
}
