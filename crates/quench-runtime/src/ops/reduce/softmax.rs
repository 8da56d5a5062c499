//! Softmax and LogSoftmax, numerically stable (the row maximum is subtracted
//! before exponentiating).

use super::normalize_axis;
use crate::op::required;
use crate::ops::elementwise::broadcast::PAR_THRESHOLD;
use crate::ops::elementwise::fastmath::exp_f32;
use crate::ops::elementwise::num::Float;
use crate::ops::elementwise::unsupported_dtype;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx};
use quench_ir::{Tensor, TensorData};
use rayon::prelude::*;

pub fn register(r: &mut Registry) {
    r.register("", "Softmax", build);
    r.register("", "LogSoftmax", build);
}

#[derive(Debug)]
struct Softmax {
    log: bool,
    axis: i64,
    /// Before opset 13 the input is coerced to 2-D at `axis` and the softmax
    /// runs over the whole trailing block.
    coerce_2d: bool,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let coerce_2d = ctx.opset < 13;
    Ok(Box::new(Softmax {
        log: ctx.node.op_type == "LogSoftmax",
        axis: ctx
            .node
            .attr_int_or("axis", if coerce_2d { 1 } else { -1 })?,
        coerce_2d,
    }))
}

/// Sum with 8 independent partial sums, so the loop vectorises.
pub(crate) fn sum_lanes<T: Float>(v: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = *a + x;
        }
    }
    let mut s = acc.iter().fold(T::zero(), |a, &b| a + b);
    for &x in rest {
        s = s + x;
    }
    s
}

fn row<T: Float>(x: &[T], y: &mut [T], log: bool, exp: impl Fn(T) -> T) {
    let m = x
        .iter()
        .fold(T::lowest(), |a, &b| if b > a { b } else { a });
    for (o, &v) in y.iter_mut().zip(x) {
        *o = exp(v.sub(m));
    }
    let s = sum_lanes(y);
    if log {
        let shift = m + s.ln();
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v.sub(shift);
        }
    } else {
        let r = s.recip();
        for o in y.iter_mut() {
            *o = *o * r;
        }
    }
}

/// Softmax over the middle axis of `[outer, n, inner]` with `inner > 1`.
fn strided<T: Float>(
    x: &[T],
    y: &mut [T],
    n: usize,
    inner: usize,
    log: bool,
    exp: impl Fn(T) -> T,
) {
    let block = n * inner;
    let mut m = vec![T::zero(); inner];
    let mut s = vec![T::zero(); inner];
    for (xb, yb) in x.chunks_exact(block).zip(y.chunks_exact_mut(block)) {
        m.fill(T::lowest());
        s.fill(T::zero());
        for xr in xb.chunks_exact(inner) {
            for (a, &v) in m.iter_mut().zip(xr) {
                if v > *a {
                    *a = v;
                }
            }
        }
        for (xr, yr) in xb.chunks_exact(inner).zip(yb.chunks_exact_mut(inner)) {
            for (((o, &v), &mx), acc) in yr.iter_mut().zip(xr).zip(&m).zip(s.iter_mut()) {
                *o = exp(v.sub(mx));
                *acc = *acc + *o;
            }
        }
        if log {
            let shift: Vec<T> = m.iter().zip(&s).map(|(&a, &b)| a + b.ln()).collect();
            for (xr, yr) in xb.chunks_exact(inner).zip(yb.chunks_exact_mut(inner)) {
                for ((o, &v), &sh) in yr.iter_mut().zip(xr).zip(&shift) {
                    *o = v.sub(sh);
                }
            }
        } else {
            let r: Vec<T> = s.iter().map(|&b| b.recip()).collect();
            for yr in yb.chunks_exact_mut(inner) {
                for (o, &ri) in yr.iter_mut().zip(&r) {
                    *o = *o * ri;
                }
            }
        }
    }
}

fn softmax<T: Float>(
    x: &[T],
    n: usize,
    inner: usize,
    log: bool,
    threads: usize,
    exp: impl Fn(T) -> T + Sync + Copy,
) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    if n == 0 || x.is_empty() {
        return y;
    }
    let block = n * inner;
    let par = threads > 1 && x.len() > PAR_THRESHOLD;
    // Enough blocks per task to amortise scheduling.
    let per = (PAR_THRESHOLD / 4 / block).max(1) * block;
    if inner == 1 {
        if par {
            y.par_chunks_mut(per)
                .zip(x.par_chunks(per))
                .for_each(|(yc, xc)| {
                    for (yr, xr) in yc.chunks_exact_mut(n).zip(xc.chunks_exact(n)) {
                        row(xr, yr, log, exp);
                    }
                });
        } else {
            for (yr, xr) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                row(xr, yr, log, exp);
            }
        }
    } else if par {
        y.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .for_each(|(yc, xc)| strided(xc, yc, n, inner, log, exp));
    } else {
        strided(x, &mut y, n, inner, log, exp);
    }
    y
}

/// Softmax over contiguous rows of `n`: the vectorised row kernel.
fn softmax_rows_f32(x: &[f32], n: usize, log: bool, threads: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    if n == 0 {
        return y;
    }
    let rows = |xc: &[f32], yc: &mut [f32]| {
        for (xr, yr) in xc.chunks_exact(n).zip(yc.chunks_exact_mut(n)) {
            quench_kernels::vmath::softmax_row(xr, yr, log);
        }
    };
    if threads > 1 && x.len() > PAR_THRESHOLD {
        let per = (PAR_THRESHOLD / 4 / n).max(1) * n;
        y.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .for_each(|(yc, xc)| rows(xc, yc));
    } else {
        rows(x, &mut y);
    }
    y
}

impl Op for Softmax {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let shape = x.shape();
        let axis = normalize_axis(self.axis, shape.len(), "attribute axis")?;
        let (n, inner) = if shape.is_empty() {
            (1, 1)
        } else if self.coerce_2d {
            (shape[axis..].iter().product(), 1)
        } else {
            (shape[axis], shape[axis + 1..].iter().product())
        };
        let t = ctx.threads;
        let out = match x.data() {
            TensorData::F32(v) if inner == 1 => softmax_rows_f32(v, n, self.log, t),
            TensorData::F32(v) => softmax(v, n, inner, self.log, t, exp_f32),
            TensorData::F64(v) => {
                let y = softmax(v, n, inner, self.log, t, f64::exp);
                return Ok(vec![Tensor::from_vec(shape.to_vec(), y)?]);
            }
            _ => {
                let what = if self.log { "LogSoftmax" } else { "Softmax" };
                return Err(unsupported_dtype(what, x.dtype()));
            }
        };
        Ok(vec![Tensor::from_vec(shape.to_vec(), out)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::elementwise::tests::run_node;
    use quench_ir::{Attr, Node, Tensor};

    fn reference(x: &[f32], log: bool) -> Vec<f64> {
        let m = x.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let s: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
        x.iter()
            .map(|&v| {
                if log {
                    v as f64 - m - s.ln()
                } else {
                    (v as f64 - m).exp() / s
                }
            })
            .collect()
    }

    #[test]
    fn softmax_axes_match_reference() {
        let data: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 * 30.0).collect();
        let x = Tensor::from_vec(vec![2, 3, 4], data.clone()).unwrap();
        for log in [false, true] {
            let op = if log { "LogSoftmax" } else { "Softmax" };
            // Axis 1 at opset 13: columns of stride 4.
            let n = Node::new(op, "n", &["x"], &["y"]).with_attr("axis", Attr::Int(1));
            let y = run_node(n.clone(), 13, &[Some(&x)]).unwrap();
            let y = y.as_slice::<f32>().unwrap();
            for b in 0..2 {
                for i in 0..4 {
                    let col: Vec<f32> = (0..3).map(|k| data[b * 12 + k * 4 + i]).collect();
                    let want = reference(&col, log);
                    for k in 0..3 {
                        let got = y[b * 12 + k * 4 + i] as f64;
                        assert!((got - want[k]).abs() < 1e-5 * (1.0 + want[k].abs()));
                    }
                }
            }
            // Opset 11 coerces to [2, 12].
            let y = run_node(n, 11, &[Some(&x)]).unwrap();
            let y = y.as_slice::<f32>().unwrap();
            for b in 0..2 {
                let want = reference(&data[b * 12..b * 12 + 12], log);
                for k in 0..12 {
                    assert!((y[b * 12 + k] as f64 - want[k]).abs() < 1e-5 * (1.0 + want[k].abs()));
                }
            }
        }
    }

    #[test]
    fn softmax_rejects_ints_and_bad_axis() {
        let x = Tensor::from_vec(vec![2], vec![1i32, 2]).unwrap();
        assert!(run_node(Node::new("Softmax", "n", &["x"], &["y"]), 13, &[Some(&x)]).is_err());
        let x = Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap();
        let n = Node::new("Softmax", "n", &["x"], &["y"]).with_attr("axis", Attr::Int(1));
        assert!(run_node(n, 13, &[Some(&x)]).is_err());
    }
}
