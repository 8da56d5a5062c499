//! Conv (1-3 spatial dims, groups, depthwise, stride, padding, dilation).
//!
//! Forward and backward run image by image, in parallel over the batch: each
//! image's im2col buffer is recomputed in backward rather than stored, so the
//! tape holds only the input and the weights. dW = dY·colᵀ and
//! dcol = Wᵀ·dY (then col2im) are GEMMs; depthwise layers use direct loops.

use crate::op::{
    Ctx, Fwd, Grad, Op, Saved, arc_in, check_len, f32_in, f32_tensor, opt_in, par_ranges, req,
    saved, usize_attr,
};
use crate::{Result, invalid, unsupported};
use quench_ir::{Node, Tensor};
use quench_kernels::conv::{Geom3, col2im, depthwise2d, im2col, valid_range};
use quench_kernels::gemm::sgemm_strided;
use rayon::prelude::*;
use std::sync::Arc;

pub struct Conv {
    group: usize,
    strides: Option<Vec<usize>>,
    dilations: Option<Vec<usize>>,
    pads: Option<Vec<usize>>,
    auto_pad: String,
}

pub fn build(node: &Node) -> Result<Box<dyn Op>> {
    let group = node.attr_int_or("group", 1)?;
    if group < 1 {
        invalid!("attribute group is {group}, must be >= 1");
    }
    Ok(Box::new(Conv {
        group: group as usize,
        strides: usize_attr(node, "strides")?,
        dilations: usize_attr(node, "dilations")?,
        pads: usize_attr(node, "pads")?,
        auto_pad: node.attr_string_or("auto_pad", "NOTSET")?,
    }))
}

/// Everything about one convolution's shapes.
#[derive(Clone, Debug)]
struct Shape {
    n: usize,
    c: usize,
    m: usize,
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
    fn depthwise(&self) -> bool {
        self.cg() == 1 && self.mg() == 1 && self.g.input[0] == 1 && self.g.kernel[0] == 1
    }
}

impl Conv {
    fn shape(&self, x: &[usize], w: &[usize]) -> Result<Shape> {
        if x.len() < 3 || x.len() > 5 || w.len() != x.len() {
            invalid!("X {x:?} and W {w:?} must both have rank 3, 4 or 5");
        }
        let r = x.len() - 2;
        let (n, c, m) = (x[0], x[1], w[0]);
        if c % self.group != 0 || m % self.group != 0 || w[1] * self.group != c {
            invalid!("W {w:?} does not match X {x:?} with group {}", self.group);
        }
        let ins = &x[2..];
        let ks = &w[2..];
        let st = self.strides.clone().unwrap_or(vec![1; r]);
        let di = self.dilations.clone().unwrap_or(vec![1; r]);
        if st.len() != r || di.len() != r || st.contains(&0) || di.contains(&0) {
            invalid!("strides {st:?} / dilations {di:?} must be {r} positive values");
        }
        let mut begin = vec![0; r];
        let mut out = vec![0; r];
        for i in 0..r {
            let ek = di[i] * (ks[i].max(1) - 1) + 1;
            match self.auto_pad.as_str() {
                "NOTSET" => {
                    let p = self.pads.clone().unwrap_or(vec![0; 2 * r]);
                    if p.len() != 2 * r {
                        invalid!("pads {p:?} must have {} values", 2 * r);
                    }
                    begin[i] = p[i];
                    let total = ins[i] + p[i] + p[i + r];
                    if total < ek {
                        invalid!("kernel {ks:?} is larger than the padded input {x:?}");
                    }
                    out[i] = (total - ek) / st[i] + 1;
                }
                "VALID" => {
                    if ins[i] < ek {
                        invalid!("kernel {ks:?} is larger than the input {x:?}");
                    }
                    out[i] = (ins[i] - ek) / st[i] + 1;
                }
                "SAME_UPPER" | "SAME_LOWER" => {
                    out[i] = ins[i].div_ceil(st[i]);
                    let total = ((out[i] - 1) * st[i] + ek).saturating_sub(ins[i]);
                    begin[i] = if self.auto_pad == "SAME_UPPER" {
                        total / 2
                    } else {
                        total - total / 2
                    };
                }
                a => invalid!("auto_pad '{a}' is not valid"),
            }
        }
        let Some(g) = Geom3::lift(ins, ks, &out, &st, &di, &begin) else {
            unsupported!("Conv with {r} spatial dims");
        };
        Ok(Shape {
            n,
            c,
            m,
            g,
            out_spatial: out,
            group: self.group,
        })
    }
}

struct SavedConv {
    x: Arc<Tensor>,
    w: Arc<Tensor>,
    s: Shape,
    bias: bool,
}

/// One image: `y` (m × os) from `x` (c × is).
fn conv_image(
    s: &Shape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    col: &mut Vec<f32>,
) {
    let (is, os, ks) = (s.g.in_size(), s.g.out_size(), s.g.kernel_size());
    if s.depthwise() {
        depthwise2d(&s.g, s.c, x, w, bias, y, 1);
        return;
    }
    let (cg, mg) = (s.cg(), s.mg());
    let kk = cg * ks;
    for gi in 0..s.group {
        let xg = &x[gi * cg * is..(gi + 1) * cg * is];
        let wg = &w[gi * mg * kk..(gi + 1) * mg * kk];
        let yg = &mut y[gi * mg * os..(gi + 1) * mg * os];
        let b: &[f32] = if s.g.is_pointwise() {
            xg
        } else {
            col.resize(kk * os, 0.0);
            im2col(&s.g, cg, xg, col);
            col
        };
        sgemm_strided(
            mg,
            os,
            kk,
            wg,
            kk as isize,
            1,
            b,
            os as isize,
            1,
            yg,
            0.0,
            1,
        );
    }
    if let Some(b) = bias {
        for (yc, &bv) in y.chunks_mut(os).zip(b) {
            yc.iter_mut().for_each(|v| *v += bv);
        }
    }
}

/// Depthwise backward of one plane: accumulates into `dw` (k) and `dx` (is).
///
/// Per kernel tap and output row, the valid output columns map to an input
/// run (contiguous at stride 1), so dW is a dot product and dX an axpy over
/// slices, loops that vectorise.
fn depthwise_plane_bwd(
    g: &Geom3,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    mut dw: Option<&mut [f32]>,
    mut dx: Option<&mut [f32]>,
) {
    let [_, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let [_, kh, kw] = g.kernel;
    let [_, sh, sw] = g.strides;
    let [_, dh, dwl] = g.dilations;
    let [_, ph, pw] = g.pads;
    for ky in 0..kh {
        for kx in 0..kw {
            let wv = w[ky * kw + kx];
            let offw = (kx * dwl) as isize - pw as isize;
            let (lo, hi) = valid_range(offw, sw, iw, ow);
            if lo >= hi {
                continue;
            }
            let mut acc = [0.0f32; 8];
            let mut tail = 0.0f32;
            for oy in 0..oh {
                let iy = (oy * sh + ky * dh) as isize - ph as isize;
                if iy < 0 || iy >= ih as isize {
                    continue;
                }
                // First input index of this row's run; in range by valid_range.
                let start = ((iy as usize * iw + lo * sw) as isize + offw) as usize;
                let gr = &gy[oy * ow + lo..oy * ow + hi];
                let len = hi - lo;
                if sw == 1 {
                    if dw.is_some() {
                        let xr = &x[start..start + len];
                        let (gc, xc) = (gr.chunks_exact(8), xr.chunks_exact(8));
                        tail += gc
                            .remainder()
                            .iter()
                            .zip(xc.remainder())
                            .map(|(a, b)| a * b)
                            .sum::<f32>();
                        for (a, b) in gc.zip(xc) {
                            for k in 0..8 {
                                acc[k] += a[k] * b[k];
                            }
                        }
                    }
                    if let Some(dx) = dx.as_deref_mut() {
                        for (d, &gv) in dx[start..start + len].iter_mut().zip(gr) {
                            *d += gv * wv;
                        }
                    }
                } else {
                    for (j, &gv) in gr.iter().enumerate() {
                        let ix = start + j * sw;
                        if dw.is_some() {
                            tail += gv * x[ix];
                        }
                        if let Some(dx) = dx.as_deref_mut() {
                            dx[ix] += gv * wv;
                        }
                    }
                }
            }
            if let Some(dw) = dw.as_deref_mut() {
                dw[ky * kw + kx] += acc.iter().sum::<f32>() + tail;
            }
        }
    }
}

/// One image's backward: accumulates into `dw` and writes `dx` (zeroed).
#[allow(clippy::too_many_arguments)]
fn conv_image_bwd(
    s: &Shape,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    mut dw: Option<&mut [f32]>,
    mut dx: Option<&mut [f32]>,
    col: &mut Vec<f32>,
    dcol: &mut Vec<f32>,
) {
    let (is, os, ks) = (s.g.in_size(), s.g.out_size(), s.g.kernel_size());
    if s.depthwise() {
        for c in 0..s.c {
            depthwise_plane_bwd(
                &s.g,
                &x[c * is..(c + 1) * is],
                &w[c * ks..(c + 1) * ks],
                &gy[c * os..(c + 1) * os],
                dw.as_deref_mut().map(|d| &mut d[c * ks..(c + 1) * ks]),
                dx.as_deref_mut().map(|d| &mut d[c * is..(c + 1) * is]),
            );
        }
        return;
    }
    let (cg, mg) = (s.cg(), s.mg());
    let kk = cg * ks;
    let pw = s.g.is_pointwise();
    for gi in 0..s.group {
        let xg = &x[gi * cg * is..(gi + 1) * cg * is];
        let wg = &w[gi * mg * kk..(gi + 1) * mg * kk];
        let gg = &gy[gi * mg * os..(gi + 1) * mg * os];
        if let Some(dw) = dw.as_deref_mut() {
            let b: &[f32] = if pw {
                xg
            } else {
                col.resize(kk * os, 0.0);
                im2col(&s.g, cg, xg, col);
                col
            };
            // dW (mg × kk) += dY (mg × os) · colᵀ (os × kk)
            sgemm_strided(
                mg,
                kk,
                os,
                gg,
                os as isize,
                1,
                b,
                1,
                os as isize,
                &mut dw[gi * mg * kk..(gi + 1) * mg * kk],
                1.0,
                1,
            );
        }
        if let Some(dx) = dx.as_deref_mut() {
            let dxg = &mut dx[gi * cg * is..(gi + 1) * cg * is];
            if pw {
                // dX (cg × os) = Wᵀ (cg × mg) · dY (mg × os)
                sgemm_strided(
                    cg,
                    os,
                    mg,
                    wg,
                    1,
                    kk as isize,
                    gg,
                    os as isize,
                    1,
                    dxg,
                    0.0,
                    1,
                );
            } else {
                dcol.resize(kk * os, 0.0);
                sgemm_strided(
                    kk,
                    os,
                    mg,
                    wg,
                    1,
                    kk as isize,
                    gg,
                    os as isize,
                    1,
                    dcol,
                    0.0,
                    1,
                );
                col2im(&s.g, cg, dcol, dxg);
            }
        }
    }
}

impl Op for Conv {
    fn differentiable(&self, i: usize) -> bool {
        i < 3
    }

    fn forward(&self, cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let (tx, tw) = (req(x, 0)?, req(x, 1)?);
        let s = self.shape(tx.shape(), tw.shape())?;
        let (xs, ws) = (f32_in(x, 0)?, f32_in(x, 1)?);
        let bias = match opt_in(x, 2) {
            Some(b) => {
                let b = b.as_slice::<f32>()?;
                if b.len() != s.m {
                    invalid!("B has {} values, W has {} output channels", b.len(), s.m);
                }
                Some(b)
            }
            None => None,
        };
        let (is, os) = (s.g.in_size(), s.g.out_size());
        let (ci, co) = (s.c * is, s.m * os);
        let mut y = vec![0.0; s.n * co];
        if co > 0 {
            let run = |(i, yn): (usize, &mut [f32]), col: &mut Vec<f32>| {
                conv_image(&s, &xs[i * ci..(i + 1) * ci], ws, bias, yn, col)
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
        let sv = need.iter().any(|&b| b).then(|| -> Result<Saved> {
            Ok(Box::new(SavedConv {
                x: arc_in(x, 0)?,
                w: arc_in(x, 1)?,
                s: s.clone(),
                bias: bias.is_some(),
            }))
        });
        Ok(Fwd::new(vec![f32_tensor(shape, y)?], sv.transpose()?))
    }

    fn backward(
        &self,
        cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let sv: &SavedConv = saved(sv)?;
        let s = &sv.s;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None, None, None]);
        };
        let (is, os) = (s.g.in_size(), s.g.out_size());
        let (ci, co) = (s.c * is, s.m * os);
        check_len(g, s.n * co)?;
        let (xs, ws) = (sv.x.as_slice::<f32>()?, sv.w.as_slice::<f32>()?);
        let (need_x, need_w) = (need.first() == Some(&true), need.get(1) == Some(&true));
        let mut dx = need_x.then(|| vec![0.0f32; s.n * ci]);
        let nw = ws.len();
        let dx_ptr = dx.as_mut().map(|d| SendPtr(d.as_mut_ptr()));
        let partial = par_ranges(s.n, cx.threads, |r| {
            let mut dw = if need_w { vec![0.0f32; nw] } else { Vec::new() };
            let (mut col, mut dcol) = (Vec::new(), Vec::new());
            for i in r {
                // Safety: ranges are disjoint, so each image's dX slice is
                // written by exactly one task.
                let dxi = dx_ptr
                    .as_ref()
                    .map(|p| unsafe { std::slice::from_raw_parts_mut(p.0.add(i * ci), ci) });
                conv_image_bwd(
                    s,
                    &xs[i * ci..(i + 1) * ci],
                    ws,
                    &g[i * co..(i + 1) * co],
                    need_w.then_some(dw.as_mut_slice()),
                    dxi,
                    &mut col,
                    &mut dcol,
                );
            }
            dw
        });
        let dw = need_w.then(|| {
            let mut it = partial.into_iter();
            let mut acc = it.next().unwrap_or_default();
            for p in it {
                crate::op::add_into(&mut acc, &p);
            }
            acc
        });
        let db = (sv.bias && need.get(2) == Some(&true)).then(|| {
            let mut db = vec![0.0f32; s.m];
            for gn in g.chunks(co) {
                for (d, gc) in db.iter_mut().zip(gn.chunks(os)) {
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
    use crate::gradcheck::{check_node, rand_input};
    use quench_ir::{Attr, Node};

    fn conv(attrs: &[(&str, Vec<i64>)], group: i64) -> Node {
        let mut n =
            Node::new("Conv", "c", &["x", "w", "b"], &["y"]).with_attr("group", Attr::Int(group));
        for (k, v) in attrs {
            n = n.with_attr(k, Attr::Ints(v.clone()));
        }
        n
    }

    #[test]
    fn conv2d_matches_finite_differences() {
        let node = conv(&[("pads", vec![1, 0, 1, 2]), ("strides", vec![2, 1])], 1);
        check_node(
            &node,
            &[
                ("x", rand_input(&[2, 3, 5, 4], 1)),
                ("w", rand_input(&[4, 3, 3, 2], 2)),
                ("b", rand_input(&[4], 3)),
            ],
            &[],
            17,
        );
    }

    #[test]
    fn grouped_dilated_and_pointwise_convs_match_finite_differences() {
        let node = conv(&[("pads", vec![2, 2, 2, 2]), ("dilations", vec![2, 2])], 2);
        check_node(
            &node,
            &[
                ("x", rand_input(&[2, 4, 5, 5], 1)),
                ("w", rand_input(&[6, 2, 3, 3], 2)),
                ("b", rand_input(&[6], 3)),
            ],
            &[],
            17,
        );
        let node = conv(&[], 1);
        check_node(
            &node,
            &[
                ("x", rand_input(&[3, 3, 2, 3], 4)),
                ("w", rand_input(&[2, 3, 1, 1], 5)),
                ("b", rand_input(&[2], 6)),
            ],
            &[],
            17,
        );
    }

    #[test]
    fn depthwise_and_1d_convs_match_finite_differences() {
        let node = conv(&[("pads", vec![1, 1, 1, 1]), ("strides", vec![2, 2])], 3);
        check_node(
            &node,
            &[
                ("x", rand_input(&[2, 3, 6, 5], 1)),
                ("w", rand_input(&[3, 1, 3, 3], 2)),
                ("b", rand_input(&[3], 3)),
            ],
            &[],
            17,
        );
        // Stride 1 takes the contiguous (vectorised) path of the backward.
        let node = conv(&[("pads", vec![1, 2, 1, 0]), ("dilations", vec![1, 2])], 2);
        check_node(
            &node,
            &[
                ("x", rand_input(&[2, 2, 5, 13], 1)),
                ("w", rand_input(&[2, 1, 3, 3], 2)),
                ("b", rand_input(&[2], 3)),
            ],
            &[],
            17,
        );
        let node = conv(&[("pads", vec![1, 1])], 1);
        check_node(
            &node,
            &[
                ("x", rand_input(&[2, 2, 6], 1)),
                ("w", rand_input(&[3, 2, 3], 2)),
                ("b", rand_input(&[3], 3)),
            ],
            &[],
            17,
        );
    }

    #[test]
    fn mismatched_channels_are_an_error() {
        let node = conv(&[], 1);
        let r = crate::gradcheck::run_node(
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
