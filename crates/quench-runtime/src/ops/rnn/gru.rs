//! GRU (gate order z, r, h), both `linear_before_reset` forms, clip, custom
//! activations, sequence_lens and both layouts.

use super::{Common, DirOut, Io, clip, times_transposed};
use crate::{BuildCtx, Op, OpError, RunCtx, bail_invalid};
use quench_ir::Tensor;

#[derive(Debug)]
struct Gru {
    c: Common,
    linear_before_reset: bool,
}

pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let c = Common::parse(ctx.node, &["Sigmoid", "Tanh"], 2)?;
    let linear_before_reset = match ctx.node.attr_int_or("linear_before_reset", 0)? {
        0 => false,
        1 => true,
        v => bail_invalid!("attribute linear_before_reset is {v}, expected 0 or 1"),
    };
    Ok(Box::new(Gru {
        c,
        linear_before_reset,
    }))
}

impl Op for Gru {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let io = Io::new(&self.c, 3, inputs)?;
        let outs = super::run_directions(&io, &self.c.reverse, ctx.threads, |d, rev, threads| {
            self.direction(&io, d, rev, threads)
        });
        let (y, states) = super::assemble(&io, outs);
        let mut outs = vec![Tensor::from_vec(io.y_shape(), y)?];
        for s in states {
            outs.push(Tensor::from_vec(io.state_shape(), s)?);
        }
        Ok(outs.into_iter().take(self.c.outputs).collect())
    }
}

impl Gru {
    fn direction(&self, io: &Io, d: usize, rev: bool, threads: usize) -> DirOut {
        let (batch, hid) = (io.batch, io.hidden);
        let gh = 3 * hid;
        let lbr = self.linear_before_reset;
        let mut y = vec![0f32; io.seq * batch * hid];
        let mut xw = io.project(d, 3, threads);
        // Wb for every gate and Rb for z and r add straight to the
        // projection; Rb_h sits inside the reset gate's reach.
        let mut rb_h = vec![0f32; hid];
        if let Some(b) = io.b {
            let bd = &b[d * 2 * gh..(d + 1) * 2 * gh];
            let bias: Vec<f32> = (0..gh)
                .map(|j| bd[j] + if j < 2 * hid { bd[gh + j] } else { 0.0 })
                .collect();
            for row in xw.chunks_mut(gh.max(1)) {
                row.iter_mut().zip(&bias).for_each(|(x, b)| *x += b);
            }
            rb_h.copy_from_slice(&bd[gh + 2 * hid..2 * gh]);
        }
        let r = &io.r[d * gh * hid..(d + 1) * gh * hid];
        let (r_zr, r_h) = r.split_at(2 * hid * hid);
        let (f, g) = (self.c.acts[d][0], self.c.acts[d][1]);
        let mut h = io.initial(io.h0, d);
        // Per entry: z, r, then (linear_before_reset) h · R_hᵀ.
        let gw = if lbr { gh } else { 2 * hid };
        let mut gates = vec![0f32; batch * gw];
        let mut rh = vec![0f32; batch * hid];
        let mut hr = vec![0f32; batch * hid];
        for s in 0..io.max_len() {
            if lbr {
                times_transposed(&h, batch, hid, r, gh, &mut gates, threads);
            } else {
                times_transposed(&h, batch, hid, r_zr, 2 * hid, &mut gates, threads);
            }
            for b in 0..batch {
                let Some(t) = io.step_time(s, b, rev) else {
                    continue;
                };
                let row = io.x_row(t, b);
                let xr = &xw[row * gh..(row + 1) * gh];
                let gb = &mut gates[b * gw..(b + 1) * gw];
                let (zr, hh) = gb.split_at_mut(2 * hid);
                zr.iter_mut().zip(xr).for_each(|(x, w)| *x += w);
                clip(zr, self.c.clip);
                f.apply(zr);
                let rg = &zr[hid..];
                if lbr {
                    for j in 0..hid {
                        hh[j] = xr[2 * hid + j] + rg[j] * (hh[j] + rb_h[j]);
                    }
                } else {
                    let hb = &h[b * hid..(b + 1) * hid];
                    for j in 0..hid {
                        rh[b * hid + j] = rg[j] * hb[j];
                    }
                }
            }
            if !lbr {
                times_transposed(&rh, batch, hid, r_h, hid, &mut hr, threads);
            }
            for b in 0..batch {
                let Some(t) = io.step_time(s, b, rev) else {
                    continue;
                };
                let row = io.x_row(t, b);
                let xr = &xw[row * gh..(row + 1) * gh];
                let gb = &mut gates[b * gw..(b + 1) * gw];
                let (zr, rest) = gb.split_at_mut(2 * hid);
                let hh: &mut [f32] = if lbr {
                    rest
                } else {
                    let hh = &mut hr[b * hid..(b + 1) * hid];
                    for j in 0..hid {
                        hh[j] += xr[2 * hid + j] + rb_h[j];
                    }
                    hh
                };
                clip(hh, self.c.clip);
                g.apply(hh);
                let hb = &mut h[b * hid..(b + 1) * hid];
                for j in 0..hid {
                    let z = zr[j];
                    hb[j] = (1.0 - z) * hh[j] + z * hb[j];
                }
                y[row * hid..(row + 1) * hid].copy_from_slice(hb);
            }
        }
        DirOut { y, states: vec![h] }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{run_op, values};
    use quench_ir::{Attr, Node, Tensor};

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Scalar forward GRU with bias, batch 1, on f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f32],
        w: &[f32],
        r: &[f32],
        b: &[f32],
        s: usize,
        i: usize,
        h: usize,
        lbr: bool,
    ) -> Vec<f64> {
        let mut hs = vec![0f64; h];
        let mut y = Vec::new();
        let wx = |row: usize, t: usize| {
            (0..i)
                .map(|k| w[row * i + k] as f64 * x[t * i + k] as f64)
                .sum::<f64>()
        };
        let rv = |row: usize, v: &[f64]| (0..h).map(|k| r[row * h + k] as f64 * v[k]).sum::<f64>();
        for t in 0..s {
            let z: Vec<f64> = (0..h)
                .map(|j| sig(wx(j, t) + rv(j, &hs) + (b[j] + b[3 * h + j]) as f64))
                .collect();
            let rg: Vec<f64> = (0..h)
                .map(|j| sig(wx(h + j, t) + rv(h + j, &hs) + (b[h + j] + b[4 * h + j]) as f64))
                .collect();
            let rh: Vec<f64> = (0..h).map(|j| rg[j] * hs[j]).collect();
            let hh: Vec<f64> = (0..h)
                .map(|j| {
                    let row = 2 * h + j;
                    let (wb, rb) = (b[row] as f64, b[3 * h + row] as f64);
                    let v = if lbr {
                        wx(row, t) + wb + rg[j] * (rv(row, &hs) + rb)
                    } else {
                        wx(row, t) + wb + rv(row, &rh) + rb
                    };
                    v.tanh()
                })
                .collect();
            for j in 0..h {
                hs[j] = (1.0 - z[j]) * hh[j] + z[j] * hs[j];
            }
            y.extend_from_slice(&hs);
        }
        y
    }

    #[test]
    fn matches_scalar_reference_both_reset_forms() {
        let (s, i, h) = (4, 3, 5);
        let t = |shape: Vec<usize>, seed| {
            let n = shape.iter().product();
            Tensor::from_vec(shape, values(n, seed)).unwrap()
        };
        let (x, w, r, b) = (
            t(vec![s, 1, i], 7),
            t(vec![1, 3 * h, i], 8),
            t(vec![1, 3 * h, h], 9),
            t(vec![1, 6 * h], 10),
        );
        let sl = |t: &Tensor| t.as_slice::<f32>().unwrap().to_vec();
        for lbr in [false, true] {
            let node = Node::new("GRU", "g", &["x", "w", "r", "b"], &["y", "yh"])
                .with_attr("linear_before_reset", Attr::Int(lbr as i64));
            let out = run_op(&node, &[Some(&x), Some(&w), Some(&r), Some(&b)]).unwrap();
            let want = reference(&sl(&x), &sl(&w), &sl(&r), &sl(&b), s, i, h, lbr);
            for (g, w) in sl(&out[0]).iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-5, "lbr={lbr}");
            }
            assert_eq!(out[1].shape(), &[1, 1, h]);
        }
    }

    #[test]
    fn rejects_bad_attributes() {
        let x = Tensor::from_vec(vec![1, 1, 2], vec![0f32; 2]).unwrap();
        let w = Tensor::from_vec(vec![1, 3, 2], vec![0f32; 6]).unwrap();
        let r = Tensor::from_vec(vec![1, 3, 1], vec![0f32; 3]).unwrap();
        let ok = Node::new("GRU", "g", &["x", "w", "r"], &["y"]);
        assert!(run_op(&ok, &[Some(&x), Some(&w), Some(&r)]).is_ok());
        let bad = ok.clone().with_attr("linear_before_reset", Attr::Int(3));
        assert!(run_op(&bad, &[Some(&x), Some(&w), Some(&r)]).is_err());
        let bad = ok.clone().with_attr("hidden_size", Attr::Int(2));
        let e = run_op(&bad, &[Some(&x), Some(&w), Some(&r)]).unwrap_err();
        assert!(e.to_string().contains("hidden_size"), "{e}");
        let bad = ok.with_attr("clip", Attr::Float(-1.0));
        assert!(run_op(&bad, &[Some(&x), Some(&w), Some(&r)]).is_err());
    }
}
