//! BatchNormalization (batch statistics and running-statistic updates in
//! training mode, ONNX semantics) and LayerNormalization.

use crate::op::{
    Ctx, Fwd, Grad, Op, Saved, arc_in, axis, check_len, f32_in, f32_tensor, opt_in, req, saved,
};
use crate::{Result, invalid};
use quench_ir::{Node, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

pub struct BatchNorm {
    eps: f32,
    momentum: f32,
}

pub fn build_bn(node: &Node) -> Result<Box<dyn Op>> {
    Ok(Box::new(BatchNorm {
        eps: node.attr_float_or("epsilon", 1e-5)?,
        momentum: node.attr_float_or("momentum", 0.9)?,
    }))
}

struct SavedBn {
    /// Normalised input (training) or the input itself (inference).
    xhat: Vec<f32>,
    x: Option<Arc<Tensor>>,
    mean: Vec<f32>,
    invstd: Vec<f32>,
    scale: Arc<Tensor>,
    c: usize,
    s: usize,
    train: bool,
}

/// Per-channel sums over the batch of per-plane values `f(p)` (plane
/// `p = image · c + channel`). Images run in parallel; their per-channel
/// results are added in image order, so the sums do not depend on threads.
fn plane_sums<const K: usize>(
    n: usize,
    c: usize,
    threads: usize,
    f: impl Fn(usize) -> [f32; K] + Sync,
) -> Vec<[f64; K]> {
    let image = |i: usize| -> Vec<[f32; K]> { (0..c).map(|ch| f(i * c + ch)).collect() };
    let parts: Vec<Vec<[f32; K]>> = if threads > 1 {
        (0..n).into_par_iter().map(image).collect()
    } else {
        (0..n).map(image).collect()
    };
    let mut acc = vec![[0.0f64; K]; c];
    for p in parts {
        for (a, v) in acc.iter_mut().zip(p) {
            for k in 0..K {
                a[k] += v[k] as f64;
            }
        }
    }
    acc
}

/// Lanes of the vectorised plane reductions.
const L: usize = 16;

/// Σ f(a_j, b_j) over a plane with `L` independent accumulators (so the
/// loop vectorises; f32 within a plane, f64 across planes).
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0.0f32; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..L {
            acc[k] += f(x[k], y[k]);
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(&x, &y)| f(x, y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// Runs `f(plane, out_plane)` over every plane of `y` (planes of `s`
/// elements), in parallel by image (`c` planes each).
fn per_plane(
    y: &mut [f32],
    c: usize,
    s: usize,
    threads: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if s == 0 || c == 0 {
        return;
    }
    let image = |(i, yi): (usize, &mut [f32])| {
        for (ch, yp) in yi.chunks_mut(s).enumerate() {
            f(i * c + ch, yp);
        }
    };
    if threads > 1 {
        y.par_chunks_mut(c * s).enumerate().for_each(image);
    } else {
        y.chunks_mut(c * s).enumerate().for_each(image);
    }
}

impl Op for BatchNorm {
    fn differentiable(&self, i: usize) -> bool {
        i < 3
    }

    fn forward(&self, cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let tx = req(x, 0)?;
        if tx.rank() < 2 {
            invalid!("X must have rank >= 2, has shape {:?}", tx.shape());
        }
        let (n, c) = (tx.shape()[0], tx.shape()[1]);
        let s: usize = tx.shape()[2..].iter().product();
        let xs = f32_in(x, 0)?;
        let (scale, bias, rm, rv) = (f32_in(x, 1)?, f32_in(x, 2)?, f32_in(x, 3)?, f32_in(x, 4)?);
        for (i, v) in [scale, bias, rm, rv].iter().enumerate() {
            if v.len() != c {
                invalid!("input {} has {} values, X has {c} channels", i + 1, v.len());
            }
        }
        let m = (n * s) as f64;
        let (mean, var): (Vec<f32>, Vec<f32>) = if cx.train {
            if n * s == 0 {
                invalid!("batch statistics of an empty batch");
            }
            let plane = |p: usize| &xs[p * s..(p + 1) * s];
            let sum = plane_sums(n, c, cx.threads, |p| {
                [lane_sum(plane(p), plane(p), |x, _| x)]
            });
            let mean: Vec<f32> = sum.iter().map(|v| (v[0] / m) as f32).collect();
            let sq = plane_sums(n, c, cx.threads, |p| {
                let mu = mean[p % c];
                [lane_sum(plane(p), plane(p), |x, _| (x - mu) * (x - mu))]
            });
            (mean, sq.iter().map(|v| (v[0] / m) as f32).collect())
        } else {
            (rm.to_vec(), rv.to_vec())
        };
        let invstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let grad = need.iter().any(|&b| b);
        let mut y = vec![0.0; xs.len()];
        let mut xhat = if grad && cx.train {
            vec![0.0; xs.len()]
        } else {
            Vec::new()
        };
        per_plane(&mut y, c, s, cx.threads, |p, yp| {
            let ch = p % c;
            let a = invstd[ch] * scale[ch];
            let b = bias[ch] - mean[ch] * a;
            for (o, &v) in yp.iter_mut().zip(&xs[p * s..(p + 1) * s]) {
                *o = v * a + b;
            }
        });
        if !xhat.is_empty() {
            per_plane(&mut xhat, c, s, cx.threads, |p, hp| {
                let ch = p % c;
                let (mu, is) = (mean[ch], invstd[ch]);
                for (o, &v) in hp.iter_mut().zip(&xs[p * s..(p + 1) * s]) {
                    *o = (v - mu) * is;
                }
            });
        }
        let mut outputs = vec![f32_tensor(tx.shape().to_vec(), y)?];
        let mut updates = Vec::new();
        if cx.train {
            let mom = self.momentum;
            let nm: Vec<f32> = rm
                .iter()
                .zip(&mean)
                .map(|(r, b)| r * mom + b * (1.0 - mom))
                .collect();
            let nv: Vec<f32> = rv
                .iter()
                .zip(&var)
                .map(|(r, b)| r * mom + b * (1.0 - mom))
                .collect();
            let (tm, tv) = (f32_tensor(vec![c], nm)?, f32_tensor(vec![c], nv)?);
            outputs.push(tm.clone());
            outputs.push(tv.clone());
            updates.push((3, tm));
            updates.push((4, tv));
        } else {
            outputs.push(f32_tensor(vec![c], rm.to_vec())?);
            outputs.push(f32_tensor(vec![c], rv.to_vec())?);
        }
        let sv = grad.then(|| -> Result<Saved> {
            Ok(Box::new(SavedBn {
                xhat,
                x: if cx.train { None } else { Some(arc_in(x, 0)?) },
                mean,
                invstd,
                scale: arc_in(x, 1)?,
                c,
                s,
                train: cx.train,
            }))
        });
        Ok(Fwd {
            outputs,
            saved: sv.transpose()?,
            updates,
        })
    }

    fn backward(
        &self,
        cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let sv: &SavedBn = saved(sv)?;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None; 5]);
        };
        let (c, s) = (sv.c, sv.s);
        let scale = sv.scale.as_slice::<f32>()?;
        let total = g.len();
        let n = total.checked_div(c * s).unwrap_or(0);
        // Eval mode recomputes x̂ plane by plane from the saved input.
        let xs = if sv.train {
            check_len(g, sv.xhat.len())?;
            &sv.xhat[..]
        } else {
            let xs = match &sv.x {
                Some(t) => t.as_slice::<f32>()?,
                None => invalid!("input was not saved"),
            };
            check_len(g, xs.len())?;
            xs
        };
        let (mean, invstd) = (&sv.mean, &sv.invstd);
        let sums = plane_sums(n, c, cx.threads, |p| {
            let (gp, xp) = (&g[p * s..(p + 1) * s], &xs[p * s..(p + 1) * s]);
            let db = lane_sum(gp, gp, |a, _| a);
            let ds = if sv.train {
                lane_sum(gp, xp, |a, b| a * b)
            } else {
                let (mu, is) = (mean[p % c], invstd[p % c]);
                lane_sum(gp, xp, |a, b| a * (b - mu) * is)
            };
            [db, ds]
        });
        let db: Vec<f64> = sums.iter().map(|v| v[0]).collect();
        let dscale: Vec<f64> = sums.iter().map(|v| v[1]).collect();
        let mut out: Vec<Option<Grad>> = vec![None; 5];
        if need.first() == Some(&true) {
            let mut dx = vec![0.0; total];
            let m = (n * s) as f32;
            per_plane(&mut dx, c, s, cx.threads, |p, dp| {
                let ch = p % c;
                let k = scale[ch] * sv.invstd[ch];
                let gp = &g[p * s..(p + 1) * s];
                if sv.train {
                    let (b, sc) = (db[ch] as f32 / m, dscale[ch] as f32 / m);
                    let xh = &sv.xhat[p * s..(p + 1) * s];
                    for ((o, &gv), &h) in dp.iter_mut().zip(gp).zip(xh) {
                        *o = k * (gv - b - h * sc);
                    }
                } else {
                    for (o, &gv) in dp.iter_mut().zip(gp) {
                        *o = k * gv;
                    }
                }
            });
            out[0] = Some(dx);
        }
        if need.get(1) == Some(&true) {
            out[1] = Some(dscale.iter().map(|&v| v as f32).collect());
        }
        if need.get(2) == Some(&true) {
            out[2] = Some(db.iter().map(|&v| v as f32).collect());
        }
        Ok(out)
    }
}

pub struct LayerNorm {
    axis: i64,
    eps: f32,
}

pub fn build_ln(node: &Node) -> Result<Box<dyn Op>> {
    Ok(Box::new(LayerNorm {
        axis: node.attr_int_or("axis", -1)?,
        eps: node.attr_float_or("epsilon", 1e-5)?,
    }))
}

struct SavedLn {
    xhat: Vec<f32>,
    invstd: Vec<f32>,
    scale: Arc<Tensor>,
    has_bias: bool,
    cols: usize,
}

impl Op for LayerNorm {
    fn differentiable(&self, i: usize) -> bool {
        i < 3
    }

    fn forward(&self, _cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let tx = req(x, 0)?;
        let a = axis(self.axis, tx.rank())?;
        let cols: usize = tx.shape()[a..].iter().product();
        let rows: usize = tx.shape()[..a].iter().product();
        let xs = f32_in(x, 0)?;
        let scale = f32_in(x, 1)?;
        let bias = match opt_in(x, 2) {
            Some(b) => Some(b.as_slice::<f32>()?),
            None => None,
        };
        if scale.len() != cols || bias.is_some_and(|b| b.len() != cols) {
            invalid!(
                "Scale/B must have {cols} values (the normalised shape {:?})",
                &tx.shape()[a..]
            );
        }
        let mut y = vec![0.0; xs.len()];
        let mut xhat = vec![0.0; xs.len()];
        let mut means = vec![0.0; rows];
        let mut invstd = vec![0.0; rows];
        for r in 0..rows {
            let row = &xs[r * cols..(r + 1) * cols];
            let mu = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
            let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / cols as f64;
            let is = 1.0 / (var as f32 + self.eps).sqrt();
            means[r] = mu as f32;
            invstd[r] = is;
            for j in 0..cols {
                let h = (row[j] - mu as f32) * is;
                xhat[r * cols + j] = h;
                y[r * cols + j] = h * scale[j] + bias.map_or(0.0, |b| b[j]);
            }
        }
        let mut stat_shape = tx.shape()[..a].to_vec();
        stat_shape.extend(std::iter::repeat_n(1, tx.rank() - a));
        let outputs = vec![
            f32_tensor(tx.shape().to_vec(), y)?,
            f32_tensor(stat_shape.clone(), means)?,
            f32_tensor(stat_shape, invstd.clone())?,
        ];
        let sv = need.iter().any(|&b| b).then(|| -> Result<Saved> {
            Ok(Box::new(SavedLn {
                xhat,
                invstd,
                scale: arc_in(x, 1)?,
                has_bias: bias.is_some(),
                cols,
            }))
        });
        Ok(Fwd::new(outputs, sv.transpose()?))
    }

    fn backward(
        &self,
        _cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let sv: &SavedLn = saved(sv)?;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None; 3]);
        };
        check_len(g, sv.xhat.len())?;
        let scale = sv.scale.as_slice::<f32>()?;
        let cols = sv.cols;
        let mut dx = vec![0.0; g.len()];
        let mut dscale = vec![0.0; cols];
        let mut db = vec![0.0; cols];
        for (r, &is) in sv.invstd.iter().enumerate() {
            let gr = &g[r * cols..(r + 1) * cols];
            let hr = &sv.xhat[r * cols..(r + 1) * cols];
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            for j in 0..cols {
                let d = gr[j] * scale[j];
                s1 += d;
                s2 += d * hr[j];
                dscale[j] += gr[j] * hr[j];
                db[j] += gr[j];
            }
            let (s1, s2) = (s1 / cols as f32, s2 / cols as f32);
            for j in 0..cols {
                dx[r * cols + j] = is * (gr[j] * scale[j] - s1 - hr[j] * s2);
            }
        }
        Ok(vec![
            (need.first() == Some(&true)).then_some(dx),
            (need.get(1) == Some(&true)).then_some(dscale),
            (need.get(2) == Some(&true) && sv.has_bias).then_some(db),
        ])
    }
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_node, rand_input, run_node};
    use quench_ir::{Attr, Node, Tensor};

    fn stats(c: usize) -> [(&'static str, Tensor); 2] {
        [
            ("mean", Tensor::from_vec(vec![c], vec![0.1f32; c]).unwrap()),
            ("var", Tensor::from_vec(vec![c], vec![0.9f32; c]).unwrap()),
        ]
    }

    #[test]
    fn batchnorm_training_matches_finite_differences() {
        let node = Node::new(
            "BatchNormalization",
            "bn",
            &["x", "s", "b", "mean", "var"],
            &["y"],
        );
        check_node(
            &node,
            &[
                ("x", rand_input(&[3, 2, 2, 3], 1)),
                ("s", rand_input(&[2], 2)),
                ("b", rand_input(&[2], 3)),
            ],
            &stats(2),
            15,
        );
        check_node(
            &node,
            &[
                ("x", rand_input(&[4, 3], 1)),
                ("s", rand_input(&[3], 2)),
                ("b", rand_input(&[3], 3)),
            ],
            &stats(3),
            15,
        );
    }

    #[test]
    fn batchnorm_updates_running_stats_like_onnx() {
        // ONNX: running = running * momentum + batch * (1 - momentum), biased variance.
        let node = Node::new(
            "BatchNormalization",
            "bn",
            &["x", "s", "b", "mean", "var"],
            &["y", "rm", "rv"],
        )
        .with_attr("momentum", Attr::Float(0.8));
        let x = Tensor::from_vec(vec![2, 1], vec![1.0f32, 3.0]).unwrap();
        let g = crate::gradcheck::graph_for_tests(
            &node,
            &[("x", x)],
            &[
                ("s", Tensor::from_vec(vec![1], vec![1f32]).unwrap()),
                ("b", Tensor::from_vec(vec![1], vec![0f32]).unwrap()),
                ("mean", Tensor::from_vec(vec![1], vec![0.5f32]).unwrap()),
                ("var", Tensor::from_vec(vec![1], vec![2f32]).unwrap()),
            ],
        );
        let e = crate::engine::Engine::new(&g.0, 15, &[]).unwrap();
        let t = e.forward(&g.1, vec![], true, false, 0, 1).unwrap();
        let up: std::collections::HashMap<_, _> = t.updates.into_iter().collect();
        let m = up["mean"].as_slice::<f32>().unwrap()[0];
        let v = up["var"].as_slice::<f32>().unwrap()[0];
        assert!((m - (0.5 * 0.8 + 2.0 * 0.2)).abs() < 1e-6);
        assert!((v - (2.0 * 0.8 + 1.0 * 0.2)).abs() < 1e-6);
        let y = t.outputs[0].as_slice::<f32>().unwrap();
        assert!((y[0] + 1.0).abs() < 1e-3 && (y[1] - 1.0).abs() < 1e-3);
    }

    #[test]
    fn layernorm_matches_finite_differences() {
        let node = Node::new("LayerNormalization", "ln", &["x", "s", "b"], &["y"])
            .with_attr("axis", Attr::Int(-2));
        check_node(
            &node,
            &[
                ("x", rand_input(&[2, 3, 4], 1)),
                ("s", rand_input(&[3, 4], 2)),
                ("b", rand_input(&[3, 4], 3)),
            ],
            &[],
            17,
        );
    }

    #[test]
    fn batchnorm_with_wrong_scale_is_an_error() {
        let node = Node::new(
            "BatchNormalization",
            "bn",
            &["x", "s", "b", "mean", "var"],
            &["y"],
        );
        let r = run_node(
            &node,
            &[
                ("x", rand_input(&[2, 3, 2], 1)),
                ("s", rand_input(&[2], 2)),
                ("b", rand_input(&[3], 3)),
            ],
            &stats(3),
        );
        assert!(r.unwrap_err().to_string().contains("channels"));
    }
}
