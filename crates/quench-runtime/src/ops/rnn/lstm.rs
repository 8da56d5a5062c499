//! LSTM (gate order i, o, f, c), with peepholes, input_forget, clip,
//! custom activations, sequence_lens and both layouts.

use super::{Common, DirOut, Io, clip, expect_shape, f32_input, times_transposed};
use crate::op::optional;
use crate::{BuildCtx, Op, OpError, RunCtx, bail_invalid};
use quench_ir::Tensor;

#[derive(Debug)]
struct Lstm {
    c: Common,
    input_forget: bool,
}

pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let c = Common::parse(ctx.node, &["Sigmoid", "Tanh", "Tanh"], 3)?;
    let input_forget = match ctx.node.attr_int_or("input_forget", 0)? {
        0 => false,
        1 => true,
        v => bail_invalid!("attribute input_forget is {v}, expected 0 or 1"),
    };
    Ok(Box::new(Lstm { c, input_forget }))
}

impl Op for Lstm {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let io = Io::new(&self.c, 4, inputs)?;
        let (hid, dirs) = (io.hidden, io.dirs);
        let c0 = match optional(inputs, 6) {
            Some(t) => {
                expect_shape(t, &io.state_shape(), "input 6 (initial_c)")?;
                Some(f32_input(t, "input 6 (initial_c)")?)
            }
            None => None,
        };
        let p = match optional(inputs, 7) {
            Some(t) => {
                expect_shape(t, &[dirs, 3 * hid], "input 7 (P)")?;
                Some(f32_input(t, "input 7 (P)")?)
            }
            None => None,
        };
        let outs = super::run_directions(&io, &self.c.reverse, ctx.threads, |d, rev, threads| {
            self.direction(&io, d, rev, c0, p, threads)
        });
        let (y, states) = super::assemble(&io, outs);
        let mut outs = vec![Tensor::from_vec(io.y_shape(), y)?];
        for s in states {
            outs.push(Tensor::from_vec(io.state_shape(), s)?);
        }
        Ok(outs.into_iter().take(self.c.outputs).collect())
    }
}

impl Lstm {
    fn direction(
        &self,
        io: &Io,
        d: usize,
        rev: bool,
        c0: Option<&[f32]>,
        p: Option<&[f32]>,
        threads: usize,
    ) -> DirOut {
        let (batch, hid) = (io.batch, io.hidden);
        let gh = 4 * hid;
        let mut y = vec![0f32; io.seq * batch * hid];
        let mut xw = io.project(d, 4, threads);
        if let Some(b) = io.b {
            let bd = &b[d * 2 * gh..(d + 1) * 2 * gh];
            let bias: Vec<f32> = (0..gh).map(|j| bd[j] + bd[gh + j]).collect();
            for row in xw.chunks_mut(gh.max(1)) {
                row.iter_mut().zip(&bias).for_each(|(x, b)| *x += b);
            }
        }
        let r = &io.r[d * gh * hid..(d + 1) * gh * hid];
        let peep = p.map(|p| &p[d * 3 * hid..(d + 1) * 3 * hid]);
        let acts = &self.c.acts[d];
        let (f, g, h_act) = (acts[0], acts[1], acts[2]);
        let mut h = io.initial(io.h0, d);
        let mut c = io.initial(c0, d);
        let mut gates = vec![0f32; batch * gh];
        for s in 0..io.max_len() {
            times_transposed(&h, batch, hid, r, gh, &mut gates, threads);
            for b in 0..batch {
                let Some(t) = io.step_time(s, b, rev) else {
                    continue;
                };
                let row = io.x_row(t, b);
                let gb = &mut gates[b * gh..(b + 1) * gh];
                gb.iter_mut()
                    .zip(&xw[row * gh..(row + 1) * gh])
                    .for_each(|(x, w)| *x += w);
                let (gi, rest) = gb.split_at_mut(hid);
                let (go, rest) = rest.split_at_mut(hid);
                let (gf, gc) = rest.split_at_mut(hid);
                let cb = &mut c[b * hid..(b + 1) * hid];
                if let Some(p) = peep {
                    for j in 0..hid {
                        gi[j] += p[j] * cb[j];
                        gf[j] += p[2 * hid + j] * cb[j];
                    }
                }
                clip(gi, self.c.clip);
                f.apply(gi);
                if self.input_forget {
                    gf.iter_mut().zip(gi.iter()).for_each(|(f, i)| *f = 1.0 - i);
                } else {
                    clip(gf, self.c.clip);
                    f.apply(gf);
                }
                clip(gc, self.c.clip);
                g.apply(gc);
                for j in 0..hid {
                    cb[j] = gf[j] * cb[j] + gi[j] * gc[j];
                }
                if let Some(p) = peep {
                    for j in 0..hid {
                        go[j] += p[hid + j] * cb[j];
                    }
                }
                clip(go, self.c.clip);
                f.apply(go);
                gc.copy_from_slice(cb);
                h_act.apply(gc);
                let hb = &mut h[b * hid..(b + 1) * hid];
                for j in 0..hid {
                    hb[j] = go[j] * gc[j];
                }
                y[row * hid..(row + 1) * hid].copy_from_slice(hb);
            }
        }
        DirOut {
            y,
            states: vec![h, c],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{run_op, values};
    use quench_ir::{Attr, Node, Tensor};

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Scalar forward LSTM with bias and peepholes, batch 1, on f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f32],
        w: &[f32],
        r: &[f32],
        b: &[f32],
        p: &[f32],
        s: usize,
        i: usize,
        h: usize,
    ) -> Vec<f64> {
        let (mut hs, mut cs) = (vec![0f64; h], vec![0f64; h]);
        let mut y = Vec::new();
        for t in 0..s {
            let gate = |g: usize, j: usize, hs: &[f64]| {
                let row = g * h + j;
                let mut v = (b[row] + b[4 * h + row]) as f64;
                v += (0..i)
                    .map(|k| w[row * i + k] as f64 * x[t * i + k] as f64)
                    .sum::<f64>();
                v + (0..h).map(|k| r[row * h + k] as f64 * hs[k]).sum::<f64>()
            };
            let pre: Vec<[f64; 4]> = (0..h)
                .map(|j| {
                    [
                        gate(0, j, &hs),
                        gate(1, j, &hs),
                        gate(2, j, &hs),
                        gate(3, j, &hs),
                    ]
                })
                .collect();
            for j in 0..h {
                let [gi, go, gf, gc] = pre[j];
                let ig = sig(gi + p[j] as f64 * cs[j]);
                let fg = sig(gf + p[2 * h + j] as f64 * cs[j]);
                cs[j] = fg * cs[j] + ig * gc.tanh();
                let og = sig(go + p[h + j] as f64 * cs[j]);
                hs[j] = og * cs[j].tanh();
            }
            y.extend_from_slice(&hs);
        }
        y
    }

    #[test]
    fn matches_scalar_reference_with_peepholes() {
        let (s, i, h) = (3, 4, 5);
        let t = |shape: Vec<usize>, seed| {
            let n = shape.iter().product();
            Tensor::from_vec(shape, values(n, seed)).unwrap()
        };
        let (x, w, r) = (
            t(vec![s, 1, i], 1),
            t(vec![1, 4 * h, i], 2),
            t(vec![1, 4 * h, h], 3),
        );
        let (b, p) = (t(vec![1, 8 * h], 4), t(vec![1, 3 * h], 5));
        let node = Node::new(
            "LSTM",
            "l",
            &["x", "w", "r", "b", "", "", "", "p"],
            &["y", "yh", "yc"],
        )
        .with_attr("hidden_size", Attr::Int(h as i64));
        let ins = [
            Some(&x),
            Some(&w),
            Some(&r),
            Some(&b),
            None,
            None,
            None,
            Some(&p),
        ];
        let out = run_op(&node, &ins).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].shape(), &[s, 1, 1, h]);
        let sl = |t: &Tensor| t.as_slice::<f32>().unwrap().to_vec();
        let want = reference(&sl(&x), &sl(&w), &sl(&r), &sl(&b), &sl(&p), s, i, h);
        for (g, w) in sl(&out[0]).iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5);
        }
        assert_eq!(sl(&out[1]), sl(&out[0])[(s - 1) * h..]);
    }

    #[test]
    fn rejects_bad_shapes_and_attributes() {
        let x = Tensor::from_vec(vec![2, 1, 3], vec![0f32; 6]).unwrap();
        let w = Tensor::from_vec(vec![1, 8, 3], vec![0f32; 24]).unwrap();
        let r = Tensor::from_vec(vec![1, 8, 3], vec![0f32; 24]).unwrap();
        let node = Node::new("LSTM", "l", &["x", "w", "r"], &["y"]);
        let e = run_op(&node, &[Some(&x), Some(&w), Some(&r)]).unwrap_err();
        assert!(e.to_string().contains("input 2 (R)"), "{e}");
        let bad = node
            .clone()
            .with_attr("direction", Attr::String(b"sideways".to_vec()));
        assert!(run_op(&bad, &[Some(&x), Some(&w), Some(&r)]).is_err());
        let x64 = Tensor::from_vec(vec![2, 1, 3], vec![0f64; 6]).unwrap();
        let r = Tensor::from_vec(vec![1, 8, 2], vec![0f32; 16]).unwrap();
        let w = Tensor::from_vec(vec![1, 8, 3], vec![0f32; 24]).unwrap();
        assert!(matches!(
            run_op(&node, &[Some(&x64), Some(&w), Some(&r)]),
            Err(crate::OpError::Unsupported(_))
        ));
        let lens = Tensor::from_vec(vec![1], vec![3i32]).unwrap();
        let node = Node::new("LSTM", "l", &["x", "w", "r", "", "s"], &["y"]);
        let e = run_op(&node, &[Some(&x), Some(&w), Some(&r), None, Some(&lens)]).unwrap_err();
        assert!(e.to_string().contains("sequence_lens"), "{e}");
    }
}
