//! GRU backward: backpropagation through time (gate order z, r, h), both
//! `linear_before_reset` forms, forward/reverse/bidirectional, both layouts
//! and `sequence_lens`.
//!
//! All matrix work is GEMMs: the input projection of every step at once,
//! one `h·Rᵀ` (forward) and one `dg·R` (backward) per step, and the weight
//! gradients as single GEMMs over all steps. To make the last possible, the
//! per-step state (gates, previous h) is stored by row of X, and the gate
//! gradients of every step are kept until the end of the step loop.

use super::common::RnnAttrs;
use super::dims::{Dims, expect_shape};
use crate::op::{Ctx, Fwd, Grad, Op, Saved, arc_in, f32_in, f32_tensor, opt_in, req, saved};
use crate::{Result, invalid};
use quench_ir::{DType, Node, Tensor};
use quench_kernels::gemm::sgemm_strided;
use std::sync::Arc;

pub struct Gru {
    a: RnnAttrs,
    lbr: bool,
}

pub fn build(node: &Node) -> Result<Box<dyn Op>> {
    let a = RnnAttrs::parse(node, &["Sigmoid", "Tanh"])?;
    let lbr = match node.attr_int_or("linear_before_reset", 0)? {
        0 => false,
        1 => true,
        v => invalid!("attribute linear_before_reset is {v}, expected 0 or 1"),
    };
    if node.outputs.len() > 2 {
        invalid!(
            "{} outputs requested, GRU has at most 2",
            node.outputs.len()
        );
    }
    Ok(Box::new(Gru { a, lbr }))
}

impl Gru {
    fn dims(&self, x: &[Option<Arc<Tensor>>]) -> Result<Dims> {
        let (tx, tw, tr) = (req(x, 0)?, req(x, 1)?, req(x, 2)?);
        let &[d0, d1, input] = tx.shape() else {
            invalid!("input 0 (X) has shape {:?}, expected rank 3", tx.shape());
        };
        let batch_first = self.a.batch_first;
        let (seq, batch) = if batch_first { (d1, d0) } else { (d0, d1) };
        let dirs = self.a.reverse.len();
        let &[_, _, hidden] = tr.shape() else {
            invalid!("input 2 (R) has shape {:?}, expected rank 3", tr.shape());
        };
        if let Some(h) = self.a.hidden_size
            && h != hidden
        {
            invalid!(
                "attribute hidden_size is {h} but input 2 (R) has shape {:?}",
                tr.shape()
            );
        }
        expect_shape(tr, &[dirs, 3 * hidden, hidden], "input 2 (R)")?;
        expect_shape(tw, &[dirs, 3 * hidden, input], "input 1 (W)")?;
        if let Some(b) = opt_in(x, 3) {
            expect_shape(b, &[dirs, 6 * hidden], "input 3 (B)")?;
        }
        let lens = match opt_in(x, 4) {
            None => vec![seq; batch],
            Some(l) => {
                if !matches!(l.dtype(), DType::I32 | DType::I64) {
                    invalid!("input 4 (sequence_lens) is {:?}, expected int32", l.dtype());
                }
                expect_shape(l, &[batch], "input 4 (sequence_lens)")?;
                l.to_i64_vec()?
                    .into_iter()
                    .map(|v| match usize::try_from(v) {
                        Ok(v) if v <= seq => Ok(v),
                        _ => invalid!("input 4 (sequence_lens) holds {v}, expected 0..={seq}"),
                    })
                    .collect::<Result<_>>()?
            }
        };
        let d = Dims {
            seq,
            batch,
            input,
            hidden,
            dirs,
            batch_first,
            lens,
        };
        if let Some(h) = opt_in(x, 5) {
            expect_shape(h, &d.state_shape(), "input 5 (initial_h)")?;
        }
        Ok(d)
    }
}

/// What one direction's forward keeps, by row of X.
struct DirSaved {
    /// z, r, ĥ (after their activations): rows × 3H.
    gates: Vec<f32>,
    /// The hidden state each row's step started from: rows × H.
    hprev: Vec<f32>,
    /// `linear_before_reset`: h·R_hᵀ + Rb_h; otherwise r ⊙ h_prev. rows × H.
    extra: Vec<f32>,
}

struct SavedGru {
    d: Dims,
    x: Arc<Tensor>,
    w: Arc<Tensor>,
    r: Arc<Tensor>,
    has_b: bool,
    has_h0: bool,
    dirs: Vec<DirSaved>,
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// `out (m × n) = a (m × k) · bᵀ` with `b` row-major `n × k`.
#[allow(clippy::too_many_arguments)]
fn times_t(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    out: &mut [f32],
    th: usize,
) {
    sgemm_strided(m, n, k, a, a_rs as isize, 1, b, 1, k as isize, out, 0.0, th);
}

struct DirIn<'a> {
    x: &'a [f32],
    w: &'a [f32],
    r: &'a [f32],
    b: Option<&'a [f32]>,
    h0: Option<&'a [f32]>,
}

impl Gru {
    /// One direction's forward: writes Y and Y_h slots of direction `dir`
    /// and returns the saved state (empty buffers when `save` is false).
    #[allow(clippy::too_many_arguments)]
    fn dir_forward(
        &self,
        dm: &Dims,
        inp: &DirIn,
        dir: usize,
        save: bool,
        y: &mut [f32],
        yh: &mut [f32],
        th: usize,
    ) -> DirSaved {
        let (batch, hid, rows) = (dm.batch, dm.hidden, dm.rows());
        let gh = 3 * hid;
        let rev = self.a.reverse[dir];
        let lbr = self.lbr;
        let w = &inp.w[dir * gh * dm.input..(dir + 1) * gh * dm.input];
        let r = &inp.r[dir * gh * hid..(dir + 1) * gh * hid];
        // xw = X·Wᵀ + Wb (+ Rb for z and r, which sit outside the reset gate).
        let mut xw = vec![0f32; rows * gh];
        times_t(rows, gh, dm.input, inp.x, dm.input, w, &mut xw, th);
        let mut rb_h = vec![0f32; hid];
        if let Some(b) = inp.b {
            let bd = &b[dir * 2 * gh..(dir + 1) * 2 * gh];
            let bias: Vec<f32> = (0..gh)
                .map(|j| bd[j] + if j < 2 * hid { bd[gh + j] } else { 0.0 })
                .collect();
            for row in xw.chunks_mut(gh) {
                row.iter_mut().zip(&bias).for_each(|(x, b)| *x += b);
            }
            rb_h.copy_from_slice(&bd[gh + 2 * hid..2 * gh]);
        }
        let mut h = vec![0f32; batch * hid];
        if let Some(h0) = inp.h0 {
            for (b, hb) in h.chunks_mut(hid).enumerate() {
                let o = dm.state_at(dir, b);
                hb.copy_from_slice(&h0[o..o + hid]);
            }
        }
        let n = if save { rows } else { 0 };
        let mut sv = DirSaved {
            gates: vec![0f32; n * gh],
            hprev: vec![0f32; n * hid],
            extra: vec![0f32; n * hid],
        };
        // Per batch entry: h·Rᵀ (all three gates with lbr, else z and r).
        let gw = if lbr { gh } else { 2 * hid };
        let mut hr = vec![0f32; batch * gw];
        let mut rh = vec![0f32; batch * hid];
        let mut rhr = vec![0f32; batch * hid];
        let mut zrh = vec![0f32; batch * gh];
        for s in 0..dm.max_len() {
            times_t(batch, gw, hid, &h, hid, &r[..gw * hid], &mut hr, th);
            for b in 0..batch {
                let Some(t) = dm.step_time(s, b, rev) else {
                    continue;
                };
                let row = dm.x_row(t, b);
                let xr = &xw[row * gh..(row + 1) * gh];
                let hrb = &hr[b * gw..(b + 1) * gw];
                let g = &mut zrh[b * gh..(b + 1) * gh];
                for j in 0..2 * hid {
                    g[j] = sigmoid(xr[j] + hrb[j]);
                }
                let hb = &h[b * hid..(b + 1) * hid];
                if lbr {
                    for j in 0..hid {
                        let lin = hrb[2 * hid + j] + rb_h[j];
                        g[2 * hid + j] = (xr[2 * hid + j] + g[hid + j] * lin).tanh();
                        if save {
                            sv.extra[row * hid + j] = lin;
                        }
                    }
                } else {
                    for j in 0..hid {
                        rh[b * hid + j] = g[hid + j] * hb[j];
                    }
                }
            }
            if !lbr {
                times_t(batch, hid, hid, &rh, hid, &r[2 * hid * hid..], &mut rhr, th);
            }
            for b in 0..batch {
                let Some(t) = dm.step_time(s, b, rev) else {
                    continue;
                };
                let row = dm.x_row(t, b);
                let g = &mut zrh[b * gh..(b + 1) * gh];
                if !lbr {
                    let xr = &xw[row * gh + 2 * hid..(row + 1) * gh];
                    for j in 0..hid {
                        g[2 * hid + j] = (xr[j] + rhr[b * hid + j] + rb_h[j]).tanh();
                    }
                }
                let hb = &mut h[b * hid..(b + 1) * hid];
                if save {
                    sv.gates[row * gh..(row + 1) * gh].copy_from_slice(g);
                    sv.hprev[row * hid..(row + 1) * hid].copy_from_slice(hb);
                    if !lbr {
                        sv.extra[row * hid..(row + 1) * hid]
                            .copy_from_slice(&rh[b * hid..(b + 1) * hid]);
                    }
                }
                for j in 0..hid {
                    let z = g[j];
                    hb[j] = (1.0 - z) * g[2 * hid + j] + z * hb[j];
                }
                let o = dm.y_at(t, dir, b);
                y[o..o + hid].copy_from_slice(hb);
            }
        }
        for (b, hb) in h.chunks(hid).enumerate() {
            let o = dm.state_at(dir, b);
            yh[o..o + hid].copy_from_slice(hb);
        }
        sv
    }
}

/// Gradients of one direction, in the layouts of W, R, B and the state.
struct DirGrads {
    dw: Vec<f32>,
    dr: Vec<f32>,
    db: Vec<f32>,
    dh0: Vec<f32>,
}

impl Gru {
    /// One direction's BPTT. Adds its dX into `dx` (when given).
    #[allow(clippy::too_many_arguments)]
    fn dir_backward(
        &self,
        sv: &SavedGru,
        dir: usize,
        gy: Option<&[f32]>,
        gyh: Option<&[f32]>,
        dx: Option<&mut [f32]>,
        need_w: bool,
        th: usize,
    ) -> Result<DirGrads> {
        let dm = &sv.d;
        let ds = &sv.dirs[dir];
        let (batch, hid, rows, inp) = (dm.batch, dm.hidden, dm.rows(), dm.input);
        let gh = 3 * hid;
        let rev = self.a.reverse[dir];
        let lbr = self.lbr;
        let r = &sv.r.as_slice::<f32>()?[dir * gh * hid..(dir + 1) * gh * hid];
        let w = &sv.w.as_slice::<f32>()?[dir * gh * inp..(dir + 1) * gh * inp];
        // Pre-activation gradients by row of X: z, r, ĥ (what W, Wb and X see).
        let mut gx = vec![0f32; rows * gh];
        // The ĥ block as R_h and Rb_h see it: with lbr, dĥ ⊙ r.
        let mut gxh = if lbr {
            vec![0f32; rows * hid]
        } else {
            Vec::new()
        };
        let mut dh = vec![0f32; batch * hid];
        if let Some(g) = gyh {
            for (b, d) in dh.chunks_mut(hid).enumerate() {
                let o = dm.state_at(dir, b);
                d.copy_from_slice(&g[o..o + hid]);
            }
        }
        let mut dhp = vec![0f32; batch * hid];
        let mut gstep = vec![0f32; batch * gh];
        let mut drh = vec![0f32; batch * hid];
        for s in (0..dm.max_len()).rev() {
            gstep.iter_mut().for_each(|v| *v = 0.0);
            for b in 0..batch {
                let dhb = &mut dh[b * hid..(b + 1) * hid];
                let Some(t) = dm.step_time(s, b, rev) else {
                    dhp[b * hid..(b + 1) * hid].copy_from_slice(dhb);
                    continue;
                };
                let row = dm.x_row(t, b);
                if let Some(g) = gy {
                    let o = dm.y_at(t, dir, b);
                    crate::op::add_into(dhb, &g[o..o + hid]);
                }
                let g = &ds.gates[row * gh..(row + 1) * gh];
                let hp = &ds.hprev[row * hid..(row + 1) * hid];
                let gr = &mut gx[row * gh..(row + 1) * gh];
                let gs = &mut gstep[b * gh..(b + 1) * gh];
                let dp = &mut dhp[b * hid..(b + 1) * hid];
                for j in 0..hid {
                    let (z, rg, hh) = (g[j], g[hid + j], g[2 * hid + j]);
                    let d = dhb[j];
                    let dz = d * (hp[j] - hh) * z * (1.0 - z);
                    let dhh = d * (1.0 - z) * (1.0 - hh * hh);
                    gr[j] = dz;
                    gs[j] = dz;
                    gr[2 * hid + j] = dhh;
                    dp[j] = d * z;
                    if lbr {
                        let lin = ds.extra[row * hid + j];
                        let dr = dhh * lin * rg * (1.0 - rg);
                        gr[hid + j] = dr;
                        gs[hid + j] = dr;
                        gs[2 * hid + j] = dhh * rg;
                        gxh[row * hid + j] = dhh * rg;
                    } else {
                        gs[2 * hid + j] = dhh;
                    }
                }
            }
            if !lbr {
                // d(r ⊙ h_prev) = dĥ · R_h, then r's gradient and h_prev's share.
                sgemm_strided(
                    batch,
                    hid,
                    hid,
                    &gstep[2 * hid..],
                    gh as isize,
                    1,
                    &r[2 * hid * hid..],
                    hid as isize,
                    1,
                    &mut drh,
                    0.0,
                    th,
                );
                for b in 0..batch {
                    let Some(t) = dm.step_time(s, b, rev) else {
                        continue;
                    };
                    let row = dm.x_row(t, b);
                    let g = &ds.gates[row * gh..(row + 1) * gh];
                    let hp = &ds.hprev[row * hid..(row + 1) * hid];
                    for j in 0..hid {
                        let rg = g[hid + j];
                        let d = drh[b * hid + j];
                        let dr = d * hp[j] * rg * (1.0 - rg);
                        gx[row * gh + hid + j] = dr;
                        gstep[b * gh + hid + j] = dr;
                        dhp[b * hid + j] += d * rg;
                    }
                }
            }
            // dh_prev += [dz, dr (, dĥ⊙r)] · R
            let k = if lbr { gh } else { 2 * hid };
            sgemm_strided(
                batch,
                hid,
                k,
                &gstep,
                gh as isize,
                1,
                r,
                hid as isize,
                1,
                &mut dhp,
                1.0,
                th,
            );
            std::mem::swap(&mut dh, &mut dhp);
        }
        let mut dh0 = vec![0f32; dm.dirs * batch * hid];
        for (b, d) in dh.chunks(hid).enumerate() {
            let o = dm.state_at(dir, b);
            dh0[o..o + hid].copy_from_slice(d);
        }
        let (mut dw, mut dr, mut db) = (Vec::new(), Vec::new(), Vec::new());
        if need_w {
            let xs = sv.x.as_slice::<f32>()?;
            // dW (3H × I) = gxᵀ · X; dR_zr (2H × H) = gx_zrᵀ · h_prev.
            dw = vec![0f32; gh * inp];
            sgemm_strided(
                gh,
                inp,
                rows,
                &gx,
                1,
                gh as isize,
                xs,
                inp as isize,
                1,
                &mut dw,
                0.0,
                th,
            );
            dr = vec![0f32; gh * hid];
            sgemm_strided(
                2 * hid,
                hid,
                rows,
                &gx,
                1,
                gh as isize,
                &ds.hprev,
                hid as isize,
                1,
                &mut dr,
                0.0,
                th,
            );
            // dR_h = (dĥ-as-R-sees-it)ᵀ · (r ⊙ h_prev, or h_prev with lbr).
            let (gsrc, gstride, op) = if lbr {
                (&gxh[..], hid, &ds.hprev)
            } else {
                (&gx[2 * hid..], gh, &ds.extra)
            };
            sgemm_strided(
                hid,
                hid,
                rows,
                gsrc,
                1,
                gstride as isize,
                op,
                hid as isize,
                1,
                &mut dr[2 * hid * hid..],
                0.0,
                th,
            );
            if sv.has_b {
                db = vec![0f32; 2 * gh];
                for row in gx.chunks(gh) {
                    crate::op::add_into(&mut db[..gh], row);
                }
                let (wb, rb) = db.split_at_mut(gh);
                rb[..2 * hid].copy_from_slice(&wb[..2 * hid]);
                if lbr {
                    for row in gxh.chunks(hid) {
                        crate::op::add_into(&mut rb[2 * hid..], row);
                    }
                } else {
                    rb[2 * hid..].copy_from_slice(&wb[2 * hid..]);
                }
            }
        }
        if let Some(dx) = dx {
            // dX (rows × I) += gx · W
            sgemm_strided(
                rows,
                inp,
                gh,
                &gx,
                gh as isize,
                1,
                w,
                inp as isize,
                1,
                dx,
                1.0,
                th,
            );
        }
        Ok(DirGrads { dw, dr, db, dh0 })
    }
}

impl Op for Gru {
    fn differentiable(&self, i: usize) -> bool {
        matches!(i, 0 | 1 | 2 | 3 | 5)
    }

    fn forward(&self, cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let dm = self.dims(x)?;
        let inp = DirIn {
            x: f32_in(x, 0)?,
            w: f32_in(x, 1)?,
            r: f32_in(x, 2)?,
            b: opt_in(x, 3).map(|_| f32_in(x, 3)).transpose()?,
            h0: opt_in(x, 5).map(|_| f32_in(x, 5)).transpose()?,
        };
        let save = need.iter().any(|&b| b);
        let mut y = vec![0f32; dm.rows() * dm.dirs * dm.hidden];
        let mut yh = vec![0f32; dm.dirs * dm.batch * dm.hidden];
        let dirs: Vec<DirSaved> = (0..dm.dirs)
            .map(|d| self.dir_forward(&dm, &inp, d, save, &mut y, &mut yh, cx.threads))
            .collect();
        let outs = vec![
            f32_tensor(dm.y_shape(), y)?,
            f32_tensor(dm.state_shape(), yh)?,
        ];
        let sv = save
            .then(|| -> Result<Saved> {
                Ok(Box::new(SavedGru {
                    d: dm.clone(),
                    x: arc_in(x, 0)?,
                    w: arc_in(x, 1)?,
                    r: arc_in(x, 2)?,
                    has_b: opt_in(x, 3).is_some(),
                    has_h0: opt_in(x, 5).is_some(),
                    dirs,
                }))
            })
            .transpose()?;
        Ok(Fwd::new(outs, sv))
    }

    fn backward(
        &self,
        cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let sv: &SavedGru = saved(sv)?;
        let dm = &sv.d;
        let ny = dm.rows() * dm.dirs * dm.hidden;
        let nh = dm.dirs * dm.batch * dm.hidden;
        let gy0 = gy.first().and_then(|g| g.as_deref());
        let gy1 = gy.get(1).and_then(|g| g.as_deref());
        if let Some(g) = gy0 {
            crate::op::check_len(g, ny)?;
        }
        if let Some(g) = gy1 {
            crate::op::check_len(g, nh)?;
        }
        let want = |i: usize| need.get(i) == Some(&true);
        let need_w = want(1) || want(2) || want(3);
        let mut dx = want(0).then(|| vec![0f32; dm.rows() * dm.input]);
        let (gh, hid, inp) = (3 * dm.hidden, dm.hidden, dm.input);
        let mut dw = vec![0f32; if need_w { dm.dirs * gh * inp } else { 0 }];
        let mut dr = vec![0f32; if need_w { dm.dirs * gh * hid } else { 0 }];
        let mut db = vec![
            0f32;
            if need_w && sv.has_b {
                dm.dirs * 2 * gh
            } else {
                0
            }
        ];
        let mut dh0 = vec![0f32; nh];
        for d in 0..dm.dirs {
            let g = self.dir_backward(sv, d, gy0, gy1, dx.as_deref_mut(), need_w, cx.threads)?;
            if need_w {
                dw[d * gh * inp..(d + 1) * gh * inp].copy_from_slice(&g.dw);
                dr[d * gh * hid..(d + 1) * gh * hid].copy_from_slice(&g.dr);
                if sv.has_b {
                    db[d * 2 * gh..(d + 1) * 2 * gh].copy_from_slice(&g.db);
                }
            }
            crate::op::add_into(&mut dh0, &g.dh0);
        }
        Ok(vec![
            dx,
            want(1).then_some(dw),
            want(2).then_some(dr),
            (want(3) && sv.has_b).then_some(db),
            None,
            (want(5) && sv.has_h0).then_some(dh0),
        ])
    }
}

#[cfg(test)]
mod tests;
