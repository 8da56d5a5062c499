//! MaxPool (the forward records each maximum's index; backward scatters to
//! it), AveragePool and GlobalAveragePool.

use crate::op::{Ctx, Fwd, Grad, Op, Saved, check_len, f32_in, f32_tensor, req, saved, usize_attr};
use crate::{Result, invalid, unsupported};
use quench_ir::{Node, Tensor};
use quench_kernels::conv::Geom3;
use quench_kernels::pool::max_pool;
use std::sync::Arc;

pub struct Pool {
    max: bool,
    kernel: Vec<usize>,
    strides: Option<Vec<usize>>,
    dilations: Option<Vec<usize>>,
    pads: Option<Vec<usize>>,
    auto_pad: String,
    ceil: bool,
    count_include_pad: bool,
}

pub fn build(node: &Node) -> Result<Box<dyn Op>> {
    let Some(kernel) = usize_attr(node, "kernel_shape")? else {
        invalid!("attribute kernel_shape is required");
    };
    if node.attr_int_or("storage_order", 0)? != 0 {
        unsupported!("MaxPool storage_order 1");
    }
    Ok(Box::new(Pool {
        max: node.op_type == "MaxPool",
        kernel,
        strides: usize_attr(node, "strides")?,
        dilations: usize_attr(node, "dilations")?,
        pads: usize_attr(node, "pads")?,
        auto_pad: node.attr_string_or("auto_pad", "NOTSET")?,
        ceil: node.attr_int_or("ceil_mode", 0)? != 0,
        count_include_pad: node.attr_int_or("count_include_pad", 0)? != 0,
    }))
}

struct Geo {
    g: Geom3,
    pads_end: [usize; 3],
    planes: usize,
    out_shape: Vec<usize>,
}

impl Pool {
    fn geo(&self, x: &[usize]) -> Result<Geo> {
        let r = self.kernel.len();
        if x.len() != r + 2 || r == 0 {
            invalid!("X {x:?} does not match kernel_shape {:?}", self.kernel);
        }
        let ins = &x[2..];
        let st = self.strides.clone().unwrap_or(vec![1; r]);
        let di = self.dilations.clone().unwrap_or(vec![1; r]);
        if st.len() != r
            || di.len() != r
            || st.contains(&0)
            || di.contains(&0)
            || self.kernel.contains(&0)
        {
            invalid!(
                "strides {st:?} / dilations {di:?} / kernel_shape must be {r} positive values"
            );
        }
        let mut pb = vec![0; r];
        let mut pe = vec![0; r];
        let mut out = vec![0; r];
        for i in 0..r {
            let ek = di[i] * (self.kernel[i] - 1) + 1;
            match self.auto_pad.as_str() {
                "NOTSET" | "VALID" => {
                    if self.auto_pad == "NOTSET" {
                        let p = self.pads.clone().unwrap_or(vec![0; 2 * r]);
                        if p.len() != 2 * r {
                            invalid!("pads {p:?} must have {} values", 2 * r);
                        }
                        pb[i] = p[i];
                        pe[i] = p[i + r];
                    }
                    let total = ins[i] + pb[i] + pe[i];
                    if total < ek {
                        invalid!("kernel larger than the padded input {x:?}");
                    }
                    let span = total - ek;
                    out[i] = if self.ceil {
                        let mut o = span.div_ceil(st[i]) + 1;
                        if (o - 1) * st[i] >= ins[i] + pb[i] {
                            o -= 1;
                        }
                        o
                    } else {
                        span / st[i] + 1
                    };
                }
                "SAME_UPPER" | "SAME_LOWER" => {
                    out[i] = ins[i].div_ceil(st[i]);
                    let total = ((out[i] - 1) * st[i] + ek).saturating_sub(ins[i]);
                    pb[i] = if self.auto_pad == "SAME_UPPER" {
                        total / 2
                    } else {
                        total - total / 2
                    };
                    pe[i] = total - pb[i];
                }
                a => invalid!("auto_pad '{a}' is not valid"),
            }
        }
        let Some(g) = Geom3::lift(ins, &self.kernel, &out, &st, &di, &pb) else {
            unsupported!("pooling with {r} spatial dims");
        };
        let mut pads_end = [0; 3];
        pads_end[3 - r..].copy_from_slice(&pe);
        let mut out_shape = x[..2].to_vec();
        out_shape.extend(&out);
        Ok(Geo {
            g,
            pads_end,
            planes: x[0] * x[1],
            out_shape,
        })
    }
}

/// Calls `f(out_index, in_index)` for every in-image tap of every window of
/// one plane, and `count(out_index, n)` with the window's divisor.
fn windows(
    geo: &Geo,
    include_pad: bool,
    mut f: impl FnMut(usize, usize),
    mut count: impl FnMut(usize, usize),
) {
    let g = &geo.g;
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let mut o = 0;
    for z in 0..od {
        for y in 0..oh {
            for x in 0..ow {
                let mut n = 0;
                for a in 0..g.kernel[0] {
                    let pz = (z * g.strides[0] + a * g.dilations[0]) as isize - g.pads[0] as isize;
                    for b in 0..g.kernel[1] {
                        let py =
                            (y * g.strides[1] + b * g.dilations[1]) as isize - g.pads[1] as isize;
                        for c in 0..g.kernel[2] {
                            let px = (x * g.strides[2] + c * g.dilations[2]) as isize
                                - g.pads[2] as isize;
                            let inside = pz >= 0
                                && py >= 0
                                && px >= 0
                                && pz < id as isize
                                && py < ih as isize
                                && px < iw as isize;
                            if inside {
                                f(o, (pz as usize * ih + py as usize) * iw + px as usize);
                                n += 1;
                            } else if include_pad {
                                // Taps in the declared padding count; ceil_mode's extra room does not.
                                let lim = |p: isize, d: usize| {
                                    p < (geo.g.input[d] + geo.pads_end[d]) as isize
                                        && p >= -(geo.g.pads[d] as isize)
                                };
                                if lim(pz, 0) && lim(py, 1) && lim(px, 2) {
                                    n += 1;
                                }
                            }
                        }
                    }
                }
                count(o, n);
                o += 1;
            }
        }
    }
}

enum SavedPool {
    Max { idx: Vec<i64>, in_len: usize },
    Avg { geo_x: Vec<usize>, div: Vec<f32> },
}

impl Op for Pool {
    fn forward(&self, cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let tx = req(x, 0)?;
        let geo = self.geo(tx.shape())?;
        let xs = f32_in(x, 0)?;
        let (is, os) = (geo.g.in_size(), geo.g.out_size());
        let mut y = vec![0.0; geo.planes * os];
        let grad = need.first() == Some(&true);
        let sv: Option<Saved> = if self.max {
            let mut idx = vec![0i64; y.len()];
            max_pool(
                &geo.g,
                geo.planes,
                xs,
                &mut y,
                Some(&mut idx),
                false,
                f32::MIN,
                cx.threads,
            );
            grad.then(|| {
                Box::new(SavedPool::Max {
                    idx,
                    in_len: xs.len(),
                }) as Saved
            })
        } else {
            let mut div = vec![0.0f32; os];
            let mut first = true;
            for p in 0..geo.planes {
                let (xp, yp) = (&xs[p * is..(p + 1) * is], &mut y[p * os..(p + 1) * os]);
                windows(
                    &geo,
                    self.count_include_pad,
                    |o, i| yp[o] += xp[i],
                    |o, n| {
                        if first {
                            div[o] = if n == 0 { 0.0 } else { 1.0 / n as f32 };
                        }
                    },
                );
                first = false;
                for (v, d) in yp.iter_mut().zip(&div) {
                    *v *= d;
                }
            }
            grad.then(|| {
                Box::new(SavedPool::Avg {
                    geo_x: tx.shape().to_vec(),
                    div,
                }) as Saved
            })
        };
        Ok(Fwd::new(vec![f32_tensor(geo.out_shape, y)?], sv))
    }

    fn backward(
        &self,
        _cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        _need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let sv: &SavedPool = saved(sv)?;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None]);
        };
        match sv {
            SavedPool::Max { idx, in_len } => {
                check_len(g, idx.len())?;
                let mut dx = vec![0.0; *in_len];
                for (&i, &gv) in idx.iter().zip(g) {
                    if let Some(d) = usize::try_from(i).ok().and_then(|i| dx.get_mut(i)) {
                        *d += gv;
                    }
                }
                Ok(vec![Some(dx)])
            }
            SavedPool::Avg { geo_x, div } => {
                let geo = self.geo(geo_x)?;
                let (is, os) = (geo.g.in_size(), geo.g.out_size());
                check_len(g, geo.planes * os)?;
                let mut dx = vec![0.0; geo.planes * is];
                for p in 0..geo.planes {
                    let (gp, dp) = (&g[p * os..(p + 1) * os], &mut dx[p * is..(p + 1) * is]);
                    windows(
                        &geo,
                        self.count_include_pad,
                        |o, i| dp[i] += gp[o] * div[o],
                        |_, _| {},
                    );
                }
                Ok(vec![Some(dx)])
            }
        }
    }
}

pub struct GlobalAvgPool;

struct SavedGap {
    shape: Vec<usize>,
}

impl Op for GlobalAvgPool {
    fn forward(&self, _cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let tx = req(x, 0)?;
        if tx.rank() < 3 {
            invalid!("X must have rank >= 3, has shape {:?}", tx.shape());
        }
        let s: usize = tx.shape()[2..].iter().product();
        let xs = f32_in(x, 0)?;
        let y: Vec<f32> = if s == 0 {
            vec![0.0; tx.shape()[0] * tx.shape()[1]]
        } else {
            xs.chunks(s)
                .map(|p| p.iter().sum::<f32>() / s as f32)
                .collect()
        };
        let mut shape = tx.shape().to_vec();
        shape[2..].iter_mut().for_each(|d| *d = 1);
        let sv = (need.first() == Some(&true)).then(|| {
            Box::new(SavedGap {
                shape: tx.shape().to_vec(),
            }) as Saved
        });
        Ok(Fwd::new(vec![f32_tensor(shape, y)?], sv))
    }

    fn backward(
        &self,
        _cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        _need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let sv: &SavedGap = saved(sv)?;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None]);
        };
        let s: usize = sv.shape[2..].iter().product();
        check_len(g, sv.shape[0] * sv.shape[1])?;
        let mut dx = vec![0.0; g.len() * s];
        if s > 0 {
            for (d, &gv) in dx.chunks_mut(s).zip(g) {
                d.fill(gv / s as f32);
            }
        }
        Ok(vec![Some(dx)])
    }
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_node, rand_input, run_node};
    use quench_ir::{Attr, Node};

    fn pool(op: &str, attrs: &[(&str, Vec<i64>)]) -> Node {
        let mut n = Node::new(op, "p", &["x"], &["y"]);
        for (k, v) in attrs {
            n = n.with_attr(k, Attr::Ints(v.clone()));
        }
        n
    }

    #[test]
    fn pools_match_finite_differences() {
        let x = || rand_input(&[2, 2, 5, 6], 1);
        // Max pooling needs values far apart, or the differences swap maxima.
        let spaced = || {
            let mut v: Vec<f32> = (0..120).map(|i| i as f32 * 0.05 - 3.0).collect();
            crate::rng::Rng::new(5).shuffle(&mut v);
            quench_ir::Tensor::from_vec(vec![2, 2, 5, 6], v).unwrap()
        };
        check_node(
            &pool(
                "MaxPool",
                &[("kernel_shape", vec![2, 2]), ("strides", vec![2, 2])],
            ),
            &[("x", spaced())],
            &[],
            17,
        );
        check_node(
            &pool(
                "MaxPool",
                &[
                    ("kernel_shape", vec![3, 3]),
                    ("pads", vec![1, 1, 1, 1]),
                    ("strides", vec![2, 2]),
                ],
            ),
            &[("x", spaced())],
            &[],
            17,
        );
        check_node(
            &pool(
                "AveragePool",
                &[
                    ("kernel_shape", vec![3, 2]),
                    ("pads", vec![1, 0, 1, 1]),
                    ("strides", vec![2, 1]),
                ],
            ),
            &[("x", x())],
            &[],
            17,
        );
        let inc = pool(
            "AveragePool",
            &[("kernel_shape", vec![3, 3]), ("pads", vec![1, 1, 1, 1])],
        )
        .with_attr("count_include_pad", Attr::Int(1));
        check_node(&inc, &[("x", x())], &[], 17);
        check_node(
            &Node::new("GlobalAveragePool", "g", &["x"], &["y"]),
            &[("x", x())],
            &[],
            17,
        );
    }

    #[test]
    fn avg_pool_counts_padding_only_when_asked() {
        let x = quench_ir::Tensor::from_vec(vec![1, 1, 2, 2], vec![1f32, 2.0, 3.0, 4.0]).unwrap();
        let n = pool(
            "AveragePool",
            &[("kernel_shape", vec![2, 2]), ("pads", vec![1, 1, 0, 0])],
        );
        let y = run_node(&n, &[("x", x.clone())], &[]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 1.5, 2.0, 2.5]);
        let n = n.with_attr("count_include_pad", Attr::Int(1));
        let y = run_node(&n, &[("x", x)], &[]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.25, 0.75, 1.0, 2.5]);
    }

    #[test]
    fn missing_kernel_shape_is_an_error() {
        let r = run_node(
            &pool("MaxPool", &[]),
            &[("x", rand_input(&[1, 1, 2, 2], 1))],
            &[],
        );
        assert!(r.unwrap_err().to_string().contains("kernel_shape"));
    }
}
