//! com.microsoft QGemm: the integer Gemm ORT writes for a quantized Gemm
//! (its QOperator format, and its QDQ→QOperator rewrite). The int32 bias C is
//! added to the accumulator, then the sum is scaled by
//! `alpha * a_scale * b_scale[n]` and either requantized (when y_scale is
//! given) or returned as float, as ORT's kernel does, in f32.

use super::fast::{FastB, a_rows, const_or_absent, pack_b, row_zero_points};
use super::{QType, check_scales, f32_values, int_values, matmul::matmul_i32, scalar_scale};
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::Tensor;
use quench_kernels::int8::{self, AMat, Out, Post};

pub fn register(r: &mut Registry) {
    r.register("com.microsoft", "QGemm", build);
}

#[derive(Debug)]
struct QGemm {
    alpha: f32,
    trans_a: bool,
    trans_b: bool,
    /// B packed at build when it and its zero point are constant.
    fast: Option<FastB>,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let n = ctx.node;
    let trans_b = n.attr_int_or("transB", 0)? != 0;
    let fast = ctx
        .constant_input(3)
        .zip(const_or_absent(ctx, 5))
        .and_then(|(b, zp)| pack_b(b, zp, trans_b));
    Ok(Box::new(QGemm {
        alpha: n.attr_float_or("alpha", 1.0)?,
        trans_a: n.attr_int_or("transA", 0)? != 0,
        trans_b,
        fast,
    }))
}

impl QGemm {
    /// The packed path: A `[M, K]` not transposed, C absent or one value
    /// per column. `Ok(None)` sends the node to the reference.
    fn run_fast(
        &self,
        f: &FastB,
        inputs: &[Option<&Tensor>],
        threads: usize,
    ) -> Result<Option<Tensor>, OpError> {
        let a = required(inputs, 0)?;
        let (k, n) = (f.k(), f.n());
        if self.trans_a || a.rank() != 2 {
            return Ok(None);
        }
        let (Some((data, m)), Some(za)) =
            (a_rows(a, k), row_zero_points(optional(inputs, 2), a, false))
        else {
            return Ok(None);
        };
        let c = match optional(inputs, 6) {
            None => None,
            Some(c) => match (c.as_slice::<i32>(), c.shape()) {
                (Ok(v), [1] | []) => Some(vec![v[0]; n]),
                (Ok(v), [nn] | [1, nn]) if *nn == n => Some(v.to_vec()),
                _ => return Ok(None),
            },
        };
        let a_scale = scalar_scale(required(inputs, 1)?, "input 1 (a_scale)")?;
        let bs_t = required(inputs, 4)?;
        let bs = f32_values(bs_t, "input 4 (b_scale)")?;
        check_scales(bs, "input 4 (b_scale)")?;
        if bs_t.rank() > 1 || (bs.len() != 1 && bs.len() != n) {
            return Ok(None);
        }
        let scales: Vec<f32> = bs.iter().map(|&s| self.alpha * a_scale * s).collect();
        let am = AMat {
            data,
            m,
            k,
            lda: k,
            zero_points: &za,
        };
        let shape = vec![m, n];
        match (optional(inputs, 7), optional(inputs, 8)) {
            (None, _) => {
                let mut acc = vec![0i32; m * n];
                let post = Post::Raw { bias: c.as_deref() };
                int8::gemm(&am, &f.packed, &post, Out::I32(&mut acc), n, false, threads);
                let y = acc
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v as f32 * scales[if scales.len() == 1 { 0 } else { i % n }])
                    .collect();
                Ok(Some(Tensor::from_vec(shape, y)?))
            }
            (Some(ys), Some(zt)) => {
                let ys = scalar_scale(ys, "input 7 (y_scale)")?;
                let q = QType::of(zt.dtype(), "input 8 (y_zero_point)")?;
                if !matches!(q, QType::U8 | QType::I8) {
                    return Ok(None);
                }
                let zp = super::scalar_zero_point(Some(zt), "input 8 (y_zero_point)")?;
                let mult: Vec<f32> = scales.iter().map(|s| s / ys).collect();
                let (lo, hi) = q.range();
                let post = Post::Requant {
                    bias: c.as_deref(),
                    mult: &mult,
                    zp,
                    lo,
                    hi,
                };
                let y = super::matmul_fast::requant_out(q, shape, m * n, |out| {
                    int8::gemm(&am, &f.packed, &post, out, n, false, threads)
                })?;
                Ok(Some(y))
            }
            _ => Ok(None),
        }
    }
}

/// A rank-2 integer matrix as i32, transposed when asked, minus `zp[col]`.
fn matrix(
    t: &Tensor,
    trans: bool,
    zp: &[i32],
    what: &str,
) -> Result<(Vec<i32>, usize, usize), OpError> {
    let &[r, c] = t.shape() else {
        bail_invalid!("{what} has shape {:?}, expected rank 2", t.shape());
    };
    let v = int_values(t, what)?;
    let (rows, cols) = if trans { (c, r) } else { (r, c) };
    if zp.len() != 1 && zp.len() != cols {
        bail_invalid!(
            "zero point of {what} has {} values, expected 1 or {cols}",
            zp.len()
        );
    }
    let mut out = Vec::with_capacity(v.len());
    for i in 0..rows {
        for j in 0..cols {
            let x = if trans { v[j * c + i] } else { v[i * c + j] };
            out.push(x.wrapping_sub(zp[if zp.len() == 1 { 0 } else { j }]));
        }
    }
    Ok((out, rows, cols))
}

fn zero_point(t: Option<&Tensor>, of: &Tensor, what: &str) -> Result<Vec<i32>, OpError> {
    match t {
        None => Ok(vec![0]),
        Some(z) if z.dtype() != of.dtype() => {
            bail_invalid!("{what} has type {}, expected {}", z.dtype(), of.dtype())
        }
        Some(z) if z.rank() > 1 => {
            bail_invalid!("{what} has shape {:?}, expected a scalar or 1-D", z.shape())
        }
        Some(z) => int_values(z, what),
    }
}

impl Op for QGemm {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        if let Some(f) = &self.fast
            && let Some(y) = self.run_fast(f, inputs, ctx.threads)?
        {
            super::fast::hit();
            return Ok(vec![y]);
        }
        let a = required(inputs, 0)?;
        let b = required(inputs, 3)?;
        let a_scale = scalar_scale(required(inputs, 1)?, "input 1 (a_scale)")?;
        let a_zp = zero_point(optional(inputs, 2), a, "input 2 (a_zero_point)")?;
        if a_zp.len() != 1 {
            bail_invalid!("input 2 (a_zero_point) must hold one value");
        }
        let b_zp = zero_point(optional(inputs, 5), b, "input 5 (b_zero_point)")?;
        let (av, m, k) = matrix(a, self.trans_a, &a_zp, "input 0 (A)")?;
        let (bv, kb, n) = matrix(b, self.trans_b, &b_zp, "input 3 (B)")?;
        if k != kb {
            bail_invalid!(
                "A {:?} and B {:?} disagree on K ({k} vs {kb}) with transA={} transB={}",
                a.shape(),
                b.shape(),
                self.trans_a as u8,
                self.trans_b as u8
            );
        }
        let bs_t = required(inputs, 4)?;
        let bs = f32_values(bs_t, "input 4 (b_scale)")?;
        check_scales(bs, "input 4 (b_scale)")?;
        if bs_t.rank() > 1 || (bs.len() != 1 && bs.len() != n) {
            bail_invalid!(
                "input 4 (b_scale) has shape {:?}, expected a scalar or [{n}]",
                bs_t.shape()
            );
        }
        let (mut acc, _) = matmul_i32(&av, &[m, k], &bv, &[k, n])?;
        if let Some(c) = optional(inputs, 6) {
            let cv = match c.as_slice::<i32>() {
                Ok(v) => v,
                Err(_) => bail_invalid!("input 6 (C) has type {}, expected int32", c.dtype()),
            };
            let idx = super::broadcast_index(c.shape(), &[m, n]).map_err(|_| {
                OpError::Invalid(format!(
                    "input 6 (C) has shape {:?}, which does not broadcast to [{m}, {n}]",
                    c.shape()
                ))
            })?;
            for (y, i) in acc.iter_mut().zip(idx) {
                *y = y.wrapping_add(cv[i]);
            }
        }
        let y_scale = match optional(inputs, 7) {
            Some(t) => Some(scalar_scale(t, "input 7 (y_scale)")?),
            None => None,
        };
        let scales: Vec<f32> = bs
            .iter()
            .map(|&s| {
                let s = self.alpha * a_scale * s;
                y_scale.map_or(s, |ys| s / ys)
            })
            .collect();
        let scale = |i: usize| scales[if scales.len() == 1 { 0 } else { i % n }];
        let shape = vec![m, n];
        match (y_scale, optional(inputs, 8)) {
            (None, _) => {
                let y = acc
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v as f32 * scale(i))
                    .collect();
                Ok(vec![Tensor::from_vec(shape, y)?])
            }
            (Some(_), None) => bail_unsupported!("QGemm with y_scale but no y_zero_point"),
            (Some(_), Some(zt)) => {
                let q = QType::of(zt.dtype(), "input 8 (y_zero_point)")?;
                let zp = super::scalar_zero_point(Some(zt), "input 8 (y_zero_point)")?;
                let y = acc
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        q.saturate((v as f32 * scale(i)).round_ties_even() as f64 + zp as f64)
                    })
                    .collect();
                Ok(vec![q.tensor(shape, y)?])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::quant::test_util::{run, t};
    use quench_ir::{Attr, Node, Tensor};

    fn node(n_inputs: usize) -> Node {
        let names = ["a", "as", "az", "b", "bs", "bz", "c", "ys", "yz"];
        let mut n =
            Node::new("QGemm", "g", &names[..n_inputs], &["y"]).with_attr("transB", Attr::Int(1));
        n.domain = "com.microsoft".into();
        n
    }

    /// Scalar reference: dequantize, float gemm, quantize.
    #[test]
    fn requantized_output_matches_float_reference() {
        let a = t(&[2, 3], vec![10u8, 20, 30, 40, 50, 60]);
        let b = t(&[2, 3], vec![1i8, -2, 3, -4, 5, -6]); // [N=2, K=3], transB
        let (a_s, a_z) = (Tensor::scalar(0.1f32), Tensor::scalar(20u8));
        let b_s = t(&[2], vec![0.5f32, 0.25]);
        let b_z = t(&[2], vec![0i8, 0]);
        let c = t(&[2], vec![10i32, -20]);
        let (y_s, y_z) = (Tensor::scalar(0.2f32), Tensor::scalar(128u8));
        let inputs = [&a, &a_s, &a_z, &b, &b_s, &b_z, &c, &y_s, &y_z].map(Some);
        let out = run(node(9), 1, &inputs).unwrap();
        let av = [10.0f32, 20., 30., 40., 50., 60.];
        let bv = [[1.0f32, -2., 3.], [-4., 5., -6.]];
        let mut want = vec![];
        for m in 0..2 {
            for nn in 0..2 {
                let sb = [0.5f32, 0.25][nn];
                let mut acc = [10.0f32, -20.][nn] * 0.1 * sb;
                for k in 0..3 {
                    acc += (av[m * 3 + k] - 20.) * 0.1 * bv[nn][k] * sb;
                }
                want.push(((acc / 0.2).round_ties_even() + 128.).clamp(0., 255.) as u8);
            }
        }
        assert_eq!(out[0].as_slice::<u8>().unwrap(), &want[..]);
        // Without y_scale/y_zero_point the output is the float accumulator.
        let out = run(node(7), 1, &inputs[..7]).unwrap();
        let f = out[0].as_slice::<f32>().unwrap();
        assert!((f[0] - (10. * 0.05 + (-10. + 0. + 30.) * 0.05)).abs() < 1e-5);
    }

    #[test]
    fn mismatched_k_is_invalid() {
        let a = t(&[2, 3], vec![0u8; 6]);
        let b = t(&[2, 2], vec![0i8; 4]);
        let (s, z, bz) = (
            Tensor::scalar(1.0f32),
            Tensor::scalar(0u8),
            Tensor::scalar(0i8),
        );
        let inputs = [&a, &s, &z, &b, &s, &bz].map(Some);
        assert!(run(node(6), 1, &inputs).is_err());
    }
}
