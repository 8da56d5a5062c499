//! LSTM backward: backpropagation through time over ONNX's LSTM (gate order
//! i, o, f, c; B = [Wb, Rb]; peepholes P = [Pi, Po, Pf]; sequence_lens;
//! initial_h/c; both layouts; forward, reverse and bidirectional).
//!
//! Forward projects every step's input with one GEMM, then runs one `h · Rᵀ`
//! GEMM per step; it saves the activated gates, the cell state after and the
//! hidden state before each step (6·hidden floats a step and entry). Backward walks the steps in reverse with one `dgates · R`
//! GEMM per step, then gets dX, dW and dR as single GEMMs over all steps.

mod cell;
#[cfg(test)]
mod tests;

use super::common::RnnAttrs;
use super::dims::{Dims, expect_shape};
use crate::op::{Ctx, Fwd, Grad, Op, Saved, arc_in, check_len, f32_in, f32_tensor, opt_in, saved};
use crate::{Result, TrainError, invalid, unsupported};
use cell::{DirFwd, DirGrad};
use quench_ir::{DType, Node, Tensor};
use quench_kernels::gemm::{sgemm, sgemm_strided};
use std::sync::Arc;

pub struct Lstm {
    attrs: RnnAttrs,
}

pub fn build(node: &Node) -> Result<Box<dyn Op>> {
    let attrs = RnnAttrs::parse(node, &["Sigmoid", "Tanh", "Tanh"])?;
    if node.attr_int_or("input_forget", 0)? != 0 {
        unsupported!("LSTM attribute input_forget = 1: training does not support coupled gates");
    }
    if node.outputs.len() > 3 {
        invalid!(
            "{} outputs requested, LSTM has at most 3",
            node.outputs.len()
        );
    }
    Ok(Box::new(Lstm { attrs }))
}

/// The validated inputs of one call.
pub(super) struct Io<'a> {
    pub dims: Dims,
    pub x: &'a [f32],
    pub w: &'a [f32],
    pub r: &'a [f32],
    pub b: Option<&'a [f32]>,
    pub h0: Option<&'a [f32]>,
    pub c0: Option<&'a [f32]>,
    pub p: Option<&'a [f32]>,
}

/// An optional float input of shape `want`.
fn opt_f32<'a>(
    x: &'a [Option<Arc<Tensor>>],
    i: usize,
    want: &[usize],
    what: &str,
) -> Result<Option<&'a [f32]>> {
    match opt_in(x, i) {
        None => Ok(None),
        Some(t) => {
            expect_shape(t, want, what)?;
            Ok(Some(f32_in(x, i)?))
        }
    }
}

impl Lstm {
    fn io<'a>(&self, x: &'a [Option<Arc<Tensor>>]) -> Result<Io<'a>> {
        let (tx, tr) = (crate::op::req(x, 0)?, crate::op::req(x, 2)?);
        let tw = crate::op::req(x, 1)?;
        let &[d0, d1, input] = tx.shape() else {
            invalid!("input 0 (X) has shape {:?}, expected rank 3", tx.shape());
        };
        let (seq, batch) = if self.attrs.batch_first {
            (d1, d0)
        } else {
            (d0, d1)
        };
        let dirs = self.attrs.reverse.len();
        let &[_, _, hidden] = tr.shape() else {
            invalid!("input 2 (R) has shape {:?}, expected rank 3", tr.shape());
        };
        if hidden == 0 {
            invalid!("input 2 (R) has shape {:?}: hidden size 0", tr.shape());
        }
        if let Some(h) = self.attrs.hidden_size
            && h != hidden
        {
            invalid!(
                "attribute hidden_size is {h} but input 2 (R) has shape {:?}",
                tr.shape()
            );
        }
        let gh = 4 * hidden;
        expect_shape(tr, &[dirs, gh, hidden], "input 2 (R)")?;
        expect_shape(tw, &[dirs, gh, input], "input 1 (W)")?;
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
                        _ => Err(TrainError::Invalid(format!(
                            "input 4 (sequence_lens) holds {v}, expected 0..={seq}"
                        ))),
                    })
                    .collect::<Result<_>>()?
            }
        };
        let dims = Dims {
            seq,
            batch,
            input,
            hidden,
            dirs,
            batch_first: self.attrs.batch_first,
            lens,
        };
        let state = dims.state_shape();
        Ok(Io {
            x: f32_in(x, 0)?,
            w: f32_in(x, 1)?,
            r: f32_in(x, 2)?,
            b: opt_f32(x, 3, &[dirs, 2 * gh], "input 3 (B)")?,
            h0: opt_f32(x, 5, &state, "input 5 (initial_h)")?,
            c0: opt_f32(x, 6, &state, "input 6 (initial_c)")?,
            p: opt_f32(x, 7, &[dirs, 3 * hidden], "input 7 (P)")?,
            dims,
        })
    }
}

/// What forward keeps: the inputs backward multiplies by, and each
/// direction's gates and states.
struct SavedLstm {
    dims: Dims,
    x: Arc<Tensor>,
    w: Arc<Tensor>,
    r: Arc<Tensor>,
    p: Option<Arc<Tensor>>,
    dirs: Vec<cell::DirSaved>,
}

/// Runs `f(d)` for each direction; the two halves of a bidirectional op are
/// independent, so they share the pool.
fn per_direction<T: Send>(
    dirs: usize,
    threads: usize,
    f: impl Fn(usize, usize) -> T + Sync,
) -> Vec<T> {
    if dirs == 2 && threads > 1 {
        let t = (threads / 2).max(1);
        let (a, b) = rayon::join(|| f(0, t), || f(1, t));
        vec![a, b]
    } else {
        (0..dirs).map(|d| f(d, threads)).collect()
    }
}

impl Op for Lstm {
    fn differentiable(&self, i: usize) -> bool {
        matches!(i, 0..=3 | 5..=7)
    }

    fn forward(&self, cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let io = self.io(x)?;
        let save = need.iter().any(|&b| b);
        let outs: Vec<DirFwd> = per_direction(io.dims.dirs, cx.threads, |d, t| {
            cell::forward(&io, d, self.attrs.reverse[d], t, save)
        });
        let dims = &io.dims;
        let h = dims.hidden;
        let state_len = dims.dirs * dims.batch * h;
        let mut y = vec![0f32; dims.seq * state_len];
        let (mut yh, mut yc) = (vec![0f32; state_len], vec![0f32; state_len]);
        for (d, o) in outs.iter().enumerate() {
            for t in 0..dims.seq {
                for b in 0..dims.batch {
                    let (at, row) = (dims.y_at(t, d, b), dims.x_row(t, b));
                    y[at..at + h].copy_from_slice(&o.y[row * h..(row + 1) * h]);
                }
            }
            dims.scatter_state(&o.h, d, &mut yh);
            dims.scatter_state(&o.c, d, &mut yc);
        }
        let outputs = vec![
            f32_tensor(dims.y_shape(), y)?,
            f32_tensor(dims.state_shape(), yh)?,
            f32_tensor(dims.state_shape(), yc)?,
        ];
        let s = if save {
            let dirs = outs.into_iter().filter_map(|o| o.saved).collect();
            Some(Box::new(SavedLstm {
                dims: io.dims.clone(),
                x: arc_in(x, 0)?,
                w: arc_in(x, 1)?,
                r: arc_in(x, 2)?,
                p: x.get(7).cloned().flatten(),
                dirs,
            }) as Saved)
        } else {
            None
        };
        Ok(Fwd::new(outputs, s))
    }

    fn backward(
        &self,
        cx: &Ctx,
        s: &Saved,
        gy: &[Option<Grad>],
        need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let s: &SavedLstm = saved(s)?;
        let dims = &s.dims;
        let (rows, h, i) = (dims.rows(), dims.hidden, dims.input);
        let gh = 4 * h;
        let state_len = dims.dirs * dims.batch * h;
        let g = |k: usize, n: usize| -> Result<Option<&[f32]>> {
            match gy.get(k) {
                Some(Some(g)) => {
                    check_len(g, n)?;
                    Ok(Some(g.as_slice()))
                }
                _ => Ok(None),
            }
        };
        let (g_y, g_h, g_c) = (
            g(0, dims.seq * state_len)?,
            g(1, state_len)?,
            g(2, state_len)?,
        );
        if s.dirs.len() != dims.dirs {
            invalid!("backward without saved state for every direction");
        }
        let (w, r) = (s.w.as_slice::<f32>()?, s.r.as_slice::<f32>()?);
        let p = s.p.as_deref().map(|p| p.as_slice::<f32>()).transpose()?;
        let grads: Vec<DirGrad> = per_direction(dims.dirs, cx.threads, |d, t| {
            let r_d = &r[d * gh * h..(d + 1) * gh * h];
            let p_d = p.map(|p| &p[d * 3 * h..(d + 1) * 3 * h]);
            cell::backward(
                dims,
                d,
                self.attrs.reverse[d],
                &s.dirs[d],
                (g_y, g_h, g_c),
                r_d,
                p_d,
                t,
            )
        });
        let want = |k: usize| need.get(k) == Some(&true);
        let mut out: Vec<Option<Grad>> = vec![None; 8];
        if want(0) {
            let mut dx = vec![0f32; rows * i];
            for (d, dg) in grads.iter().enumerate() {
                let w_d = &w[d * gh * i..(d + 1) * gh * i];
                let beta = if d == 0 { 0.0 } else { 1.0 };
                sgemm(rows, i, gh, &dg.dpre, w_d, &mut dx, beta, cx.threads);
            }
            out[0] = Some(dx);
        }
        if want(1) {
            let x = s.x.as_slice::<f32>()?;
            let mut dw = vec![0f32; dims.dirs * gh * i];
            for (d, dg) in grads.iter().enumerate() {
                let dst = &mut dw[d * gh * i..(d + 1) * gh * i];
                // dW = dgatesᵀ · X over all steps at once.
                sgemm_strided(
                    gh,
                    i,
                    rows,
                    &dg.dpre,
                    1,
                    gh as isize,
                    x,
                    i as isize,
                    1,
                    dst,
                    0.0,
                    cx.threads,
                );
            }
            out[1] = Some(dw);
        }
        if want(2) {
            let mut dr = vec![0f32; dims.dirs * gh * h];
            for (d, dg) in grads.iter().enumerate() {
                let dst = &mut dr[d * gh * h..(d + 1) * gh * h];
                // dR = dgatesᵀ · h_{t-1} over all steps at once.
                sgemm_strided(
                    gh,
                    h,
                    rows,
                    &dg.dpre,
                    1,
                    gh as isize,
                    &s.dirs[d].hprev,
                    h as isize,
                    1,
                    dst,
                    0.0,
                    cx.threads,
                );
            }
            out[2] = Some(dr);
        }
        if want(3) {
            let mut db = vec![0f32; dims.dirs * 2 * gh];
            for (d, dg) in grads.iter().enumerate() {
                let dst = &mut db[d * 2 * gh..(d + 1) * 2 * gh];
                for row in dg.dpre.chunks(gh) {
                    crate::op::add_into(&mut dst[..gh], row);
                }
                let (wb, rb) = dst.split_at_mut(gh);
                rb.copy_from_slice(wb);
            }
            out[3] = Some(db);
        }
        for (k, pick) in [(5usize, 0usize), (6, 1)] {
            if want(k) {
                let mut v = vec![0f32; state_len];
                for (d, dg) in grads.iter().enumerate() {
                    let src = if pick == 0 { &dg.dh0 } else { &dg.dc0 };
                    dims.scatter_state(src, d, &mut v);
                }
                out[k] = Some(v);
            }
        }
        if want(7) && s.p.is_some() {
            let mut dp = Vec::with_capacity(dims.dirs * 3 * h);
            for dg in &grads {
                dp.extend_from_slice(&dg.dp);
            }
            out[7] = Some(dp);
        }
        Ok(out)
    }
}
