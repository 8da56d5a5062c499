//! One direction of an LSTM: the forward recurrence that records the gates
//! and states, and its reverse walk producing the gate pre-activation
//! gradients. Buffers are `[rows, features]` with rows in X's order, so the
//! weight gradients are single GEMMs over all steps.

use super::{Dims, Io};
use quench_kernels::activation::{sigmoid, tanh};
use quench_kernels::gemm::{sgemm, sgemm_strided};

/// What backward needs of one direction, by X row: the activated gates
/// (i, o, f, c), the cell state after the step and the hidden state before
/// it (a GEMM operand of dR). The cell state before a step is the previous
/// step's row, or `c0`.
pub(super) struct DirSaved {
    pub acts: Vec<f32>,
    pub c: Vec<f32>,
    pub hprev: Vec<f32>,
    /// Initial cell state, `[batch, hidden]`.
    pub c0: Vec<f32>,
}

pub(super) struct DirFwd {
    /// Hidden states by X row (zero past each entry's length).
    pub y: Vec<f32>,
    /// Final hidden and cell states, `[batch, hidden]`.
    pub h: Vec<f32>,
    pub c: Vec<f32>,
    pub saved: Option<DirSaved>,
}

pub(super) struct DirGrad {
    /// Gradients of the gate pre-activations by X row (zero past lengths).
    pub dpre: Vec<f32>,
    /// Gradients of the initial states, `[batch, hidden]`.
    pub dh0: Vec<f32>,
    pub dc0: Vec<f32>,
    /// Gradient of this direction's peepholes (empty without them).
    pub dp: Vec<f32>,
}

/// Runs direction `d` (backwards in time when `rev`).
pub(super) fn forward(io: &Io, d: usize, rev: bool, threads: usize, save: bool) -> DirFwd {
    let dims = &io.dims;
    let (batch, hid, input, rows) = (dims.batch, dims.hidden, dims.input, dims.rows());
    let gh = 4 * hid;
    // X · W_dᵀ for every step at once, plus both biases.
    let w = &io.w[d * gh * input..(d + 1) * gh * input];
    let mut xw = vec![0f32; rows * gh];
    sgemm_strided(
        rows,
        gh,
        input,
        io.x,
        input as isize,
        1,
        w,
        1,
        input as isize,
        &mut xw,
        0.0,
        threads,
    );
    if let Some(b) = io.b {
        let bd = &b[d * 2 * gh..(d + 1) * 2 * gh];
        let bias: Vec<f32> = (0..gh).map(|j| bd[j] + bd[gh + j]).collect();
        for row in xw.chunks_mut(gh) {
            crate::op::add_into(row, &bias);
        }
    }
    let r = &io.r[d * gh * hid..(d + 1) * gh * hid];
    let p = io.p.map(|p| &p[d * 3 * hid..(d + 1) * 3 * hid]);
    let mut h = dims.gather_state(io.h0, d);
    let mut c = dims.gather_state(io.c0, d);
    let mut y = vec![0f32; rows * hid];
    let mut sv = save.then(|| DirSaved {
        acts: vec![0f32; rows * gh],
        c: vec![0f32; rows * hid],
        hprev: vec![0f32; rows * hid],
        c0: c.clone(),
    });
    let mut gates = vec![0f32; batch * gh];
    for s in 0..dims.max_len() {
        sgemm_strided(
            batch,
            gh,
            hid,
            &h,
            hid as isize,
            1,
            r,
            1,
            hid as isize,
            &mut gates,
            0.0,
            threads,
        );
        for b in 0..batch {
            let Some(t) = dims.step_time(s, b, rev) else {
                continue;
            };
            let row = dims.x_row(t, b);
            let (hr, gr) = (row * hid..(row + 1) * hid, row * gh..(row + 1) * gh);
            let g = &mut gates[b * gh..(b + 1) * gh];
            crate::op::add_into(g, &xw[gr.clone()]);
            let hb = &mut h[b * hid..(b + 1) * hid];
            let cb = &mut c[b * hid..(b + 1) * hid];
            if let Some(sv) = sv.as_mut() {
                sv.hprev[hr.clone()].copy_from_slice(hb);
            }
            step(g, cb, hb, p, hid);
            y[hr.clone()].copy_from_slice(hb);
            if let Some(sv) = sv.as_mut() {
                sv.acts[gr].copy_from_slice(g);
                sv.c[hr].copy_from_slice(cb);
            }
        }
    }
    DirFwd { y, h, c, saved: sv }
}

/// One cell update in the runtime's order: `g` holds the pre-activations
/// (i, o, f, c) and leaves with the activated gates; `c` and `h` are updated.
fn step(g: &mut [f32], c: &mut [f32], h: &mut [f32], p: Option<&[f32]>, hid: usize) {
    let (gi, rest) = g.split_at_mut(hid);
    let (go, rest) = rest.split_at_mut(hid);
    let (gf, gc) = rest.split_at_mut(hid);
    if let Some(p) = p {
        for j in 0..hid {
            gi[j] += p[j] * c[j];
            gf[j] += p[2 * hid + j] * c[j];
        }
    }
    sigmoid(gi);
    sigmoid(gf);
    tanh(gc);
    for j in 0..hid {
        c[j] = gf[j] * c[j] + gi[j] * gc[j];
    }
    if let Some(p) = p {
        for j in 0..hid {
            go[j] += p[hid + j] * c[j];
        }
    }
    sigmoid(go);
    h.copy_from_slice(c);
    tanh(h);
    for j in 0..hid {
        h[j] *= go[j];
    }
}

/// Gradients of Y, Y_h and Y_c (`None`: zero).
pub(super) type OutGrads<'a> = (Option<&'a [f32]>, Option<&'a [f32]>, Option<&'a [f32]>);

/// Backpropagates direction `d` through time. `g` holds the gradients of Y,
/// Y_h and Y_c (`None`: zero); `r` and `p` are this direction's R and P.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    dims: &Dims,
    d: usize,
    rev: bool,
    sv: &DirSaved,
    g: OutGrads,
    r: &[f32],
    p: Option<&[f32]>,
    threads: usize,
) -> DirGrad {
    let (batch, hid, rows) = (dims.batch, dims.hidden, dims.rows());
    let gh = 4 * hid;
    let (gy, gyh, gyc) = g;
    let mut dh = dims.gather_state(gyh, d);
    let mut dc = dims.gather_state(gyc, d);
    let mut dpre = vec![0f32; rows * gh];
    let mut dstep = vec![0f32; batch * gh];
    let mut dhn = vec![0f32; batch * hid];
    let mut dp = vec![0f32; if p.is_some() { 3 * hid } else { 0 }];
    for s in (0..dims.max_len()).rev() {
        dstep.fill(0.0);
        for b in 0..batch {
            let Some(t) = dims.step_time(s, b, rev) else {
                continue;
            };
            let row = dims.x_row(t, b);
            let (hr, gr) = (row * hid..(row + 1) * hid, row * gh..(row + 1) * gh);
            let dhb = &mut dh[b * hid..(b + 1) * hid];
            if let Some(gy) = gy {
                let at = dims.y_at(t, d, b);
                crate::op::add_into(dhb, &gy[at..at + hid]);
            }
            let out = &mut dstep[b * gh..(b + 1) * gh];
            let cp = match prev_row(dims, t, b, rev) {
                Some(q) => &sv.c[q * hid..(q + 1) * hid],
                None => &sv.c0[b * hid..(b + 1) * hid],
            };
            cell_grad(
                Cell {
                    a: &sv.acts[gr.clone()],
                    c: &sv.c[hr],
                    cp,
                    p,
                },
                dhb,
                &mut dc[b * hid..(b + 1) * hid],
                &mut dp,
                out,
            );
            dpre[gr].copy_from_slice(out);
        }
        // dh_{t-1} = dgates · R.
        sgemm(batch, hid, gh, &dstep, r, &mut dhn, 0.0, threads);
        for b in 0..batch {
            if dims.step_time(s, b, rev).is_some() {
                dh[b * hid..(b + 1) * hid].copy_from_slice(&dhn[b * hid..(b + 1) * hid]);
            }
        }
    }
    DirGrad {
        dpre,
        dh0: dh,
        dc0: dc,
        dp,
    }
}

/// The row entry `b` processed just before step `t` (`None`: the first step).
fn prev_row(dims: &Dims, t: usize, b: usize, rev: bool) -> Option<usize> {
    let len = dims.lens.get(b).copied().unwrap_or(0);
    let q = if rev {
        (t + 1 < len).then_some(t + 1)
    } else {
        t.checked_sub(1)
    };
    q.map(|q| dims.x_row(q, b))
}

/// The saved values of one cell update.
struct Cell<'a> {
    /// Activated gates i, o, f, c.
    a: &'a [f32],
    c: &'a [f32],
    cp: &'a [f32],
    p: Option<&'a [f32]>,
}

/// Gradients of one cell update: writes the gate pre-activation gradients to
/// `out`, turns `dc` into the gradient of the previous cell state and adds
/// the peephole gradients to `dp`.
fn cell_grad(k: Cell, dh: &[f32], dc: &mut [f32], dp: &mut [f32], out: &mut [f32]) {
    let hid = dh.len();
    for j in 0..hid {
        let (i, o, f, g) = (k.a[j], k.a[hid + j], k.a[2 * hid + j], k.a[3 * hid + j]);
        let tc = k.c[j].tanh();
        let d_o = dh[j] * tc * o * (1.0 - o);
        let mut dcj = dc[j] + dh[j] * o * (1.0 - tc * tc);
        if let Some(p) = k.p {
            dcj += d_o * p[hid + j];
            dp[hid + j] += d_o * k.c[j];
        }
        let d_i = dcj * g * i * (1.0 - i);
        let d_f = dcj * k.cp[j] * f * (1.0 - f);
        let d_g = dcj * i * (1.0 - g * g);
        let mut dcp = dcj * f;
        if let Some(p) = k.p {
            dcp += d_i * p[j] + d_f * p[2 * hid + j];
            dp[j] += d_i * k.cp[j];
            dp[2 * hid + j] += d_f * k.cp[j];
        }
        dc[j] = dcp;
        out[j] = d_i;
        out[hid + j] = d_o;
        out[2 * hid + j] = d_f;
        out[3 * hid + j] = d_g;
    }
}
