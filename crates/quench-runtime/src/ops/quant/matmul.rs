//! Integer matrix products: QLinearMatMul, MatMulInteger and the ORT contrib
//! ops DynamicQuantizeMatMul and MatMulIntegerToFloat. All share one batched,
//! broadcasting i32 matmul on zero-point-shifted values.

use super::fast::{FastB, const_or_absent, pack_b};
use super::matmul_fast;
use super::{
    QType, broadcast_index, broadcast_shapes, check_scales, f32_values, int_values, scalar_scale,
    scalar_zero_point,
};
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::Tensor;

pub fn register(r: &mut Registry) {
    r.register("", "QLinearMatMul", build_qlinear);
    r.register("", "MatMulInteger", build_integer);
    r.register("com.microsoft", "DynamicQuantizeMatMul", build_dynamic);
    r.register("com.microsoft", "MatMulIntegerToFloat", build_to_float);
}

/// `a @ b` with numpy matmul semantics (1-D promotion, broadcast batch
/// dims), accumulating in wrapping i32. Returns the values and shape.
pub(crate) fn matmul_i32(
    a: &[i32],
    ashape: &[usize],
    b: &[i32],
    bshape: &[usize],
) -> Result<(Vec<i32>, Vec<usize>), OpError> {
    if ashape.is_empty() || bshape.is_empty() {
        bail_invalid!("matmul inputs must have rank >= 1, got {ashape:?} and {bshape:?}");
    }
    let a2: Vec<usize> = if ashape.len() == 1 {
        vec![1, ashape[0]]
    } else {
        ashape.to_vec()
    };
    let b2: Vec<usize> = if bshape.len() == 1 {
        vec![bshape[0], 1]
    } else {
        bshape.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        bail_invalid!("matmul shapes {ashape:?} and {bshape:?} disagree on K ({k} vs {kb})");
    }
    let (abatch, bbatch) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let batch = broadcast_shapes(abatch, bbatch)?;
    let ai = broadcast_index(abatch, &batch)?;
    let bi = broadcast_index(bbatch, &batch)?;
    let mut shape = batch.clone();
    if ashape.len() > 1 {
        shape.push(m);
    }
    if bshape.len() > 1 {
        shape.push(n);
    }
    let mut y = vec![0i32; quench_ir::tensor::checked_numel(&shape)?];
    for (bt, (&ia, &ib)) in ai.iter().zip(&bi).enumerate() {
        let am = &a[ia * m * k..][..m * k];
        let bm = &b[ib * k * n..][..k * n];
        let ym = &mut y[bt * m * n..][..m * n];
        for i in 0..m {
            for kk in 0..k {
                let av = am[i * k + kk];
                for j in 0..n {
                    ym[i * n + j] = ym[i * n + j].wrapping_add(av.wrapping_mul(bm[kk * n + j]));
                }
            }
        }
    }
    Ok((y, shape))
}

/// `x - zp` where `zp` is a scalar, a per-row (`rows`) or per-column
/// (`!rows`) vector, or any tensor broadcastable to `x`.
fn shift(
    x: &Tensor,
    zp: Option<&Tensor>,
    rows: bool,
    what: (&str, &str),
) -> Result<Vec<i32>, OpError> {
    let mut v = int_values(x, what.0)?;
    let Some(zp) = zp else { return Ok(v) };
    if zp.dtype() != x.dtype() {
        bail_invalid!(
            "{} has type {}, {} has type {}; they must match",
            what.1,
            zp.dtype(),
            what.0,
            x.dtype()
        );
    }
    let z = int_values(zp, what.1)?;
    if z.len() == 1 {
        return Ok(v.into_iter().map(|a| a.wrapping_sub(z[0])).collect());
    }
    let xs = x.shape();
    let mut zs = zp.shape().to_vec();
    if rows && zs.len() == 1 && xs.len() >= 2 {
        zs.push(1);
    }
    let idx = broadcast_index(&zs, xs).map_err(|_| {
        OpError::Invalid(format!(
            "{} has shape {:?}, which does not fit {} of shape {xs:?} (expected a scalar or one value per {})",
            what.1,
            zp.shape(),
            what.0,
            if rows { "row" } else { "column" }
        ))
    })?;
    for (a, i) in v.iter_mut().zip(idx) {
        *a = a.wrapping_sub(z[i]);
    }
    Ok(v)
}

/// B's per-tensor or per-column (last dim) float scale, as one value per column.
fn column_scales(t: &Tensor, n: usize, what: &str) -> Result<Vec<f32>, OpError> {
    let v = f32_values(t, what)?;
    check_scales(v, what)?;
    if v.len() == 1 {
        return Ok(vec![v[0]; n]);
    }
    if v.len() == n && t.shape().iter().rev().skip(1).all(|&d| d == 1) {
        return Ok(v.to_vec());
    }
    bail_unsupported!(
        "{what} of shape {:?}: only per-tensor or per-column ({n} values) scales",
        t.shape()
    )
}

fn last_dim(t: &Tensor) -> usize {
    if t.rank() == 1 {
        1
    } else {
        t.shape().last().copied().unwrap_or(1)
    }
}

/// B (input `b`) packed at build when it and its zero point (input `zp`) are constant.
fn packed(ctx: &BuildCtx, b: usize, zp: usize) -> Option<FastB> {
    pack_b(ctx.constant_input(b)?, const_or_absent(ctx, zp)?, false)
}

/// Runs the packed path when it applies.
fn try_fast(
    fast: &Option<FastB>,
    ctx: &RunCtx,
    inputs: &[Option<&Tensor>],
    f: matmul_fast::FastFn,
) -> Result<Option<Vec<Tensor>>, OpError> {
    match fast {
        Some(fb) => Ok(f(fb, inputs, ctx.threads)?.map(|t| {
            super::fast::hit();
            vec![t]
        })),
        None => Ok(None),
    }
}

#[derive(Debug)]
struct QLinearMatMul {
    fast: Option<FastB>,
}

fn build_qlinear(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(QLinearMatMul {
        fast: packed(ctx, 3, 5),
    }))
}

impl Op for QLinearMatMul {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        if let Some(y) = try_fast(&self.fast, ctx, inputs, matmul_fast::qlinear)? {
            return Ok(y);
        }
        let a = required(inputs, 0)?;
        let b = required(inputs, 3)?;
        let a_scale = scalar_scale(required(inputs, 1)?, "input 1 (a_scale)")?;
        let a_zp = optional(inputs, 2);
        if a_zp.is_some_and(|z| z.numel() != 1) {
            bail_unsupported!("QLinearMatMul with a per-row a_zero_point");
        }
        let n = last_dim(b);
        let b_scales = column_scales(required(inputs, 4)?, n, "input 4 (b_scale)")?;
        let y_scale = scalar_scale(required(inputs, 6)?, "input 6 (y_scale)")?;
        let y_zp_t = optional(inputs, 7);
        let y_zp = scalar_zero_point(y_zp_t, "input 7 (y_zero_point)")?;
        let q = QType::of(y_zp_t.unwrap_or(a).dtype(), "output type")?;
        let av = shift(a, a_zp, true, ("input 0 (a)", "input 2 (a_zero_point)"))?;
        let bv = shift(
            b,
            optional(inputs, 5),
            false,
            ("input 3 (b)", "input 5 (b_zero_point)"),
        )?;
        let (acc, shape) = matmul_i32(&av, a.shape(), &bv, b.shape())?;
        let mult: Vec<f64> = b_scales
            .iter()
            .map(|&bs| ((a_scale * bs) / y_scale) as f64)
            .collect();
        let y = acc
            .iter()
            .enumerate()
            .map(|(i, &v)| q.saturate((v as f64 * mult[i % n]).round_ties_even() + y_zp as f64))
            .collect();
        Ok(vec![q.tensor(shape, y)?])
    }
}

#[derive(Debug)]
struct MatMulInteger {
    fast: Option<FastB>,
}

fn build_integer(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(MatMulInteger {
        fast: packed(ctx, 1, 3),
    }))
}

impl Op for MatMulInteger {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        if let Some(y) = try_fast(&self.fast, ctx, inputs, matmul_fast::integer)? {
            return Ok(y);
        }
        let a = required(inputs, 0)?;
        let b = required(inputs, 1)?;
        let av = shift(
            a,
            optional(inputs, 2),
            true,
            ("input 0 (A)", "input 2 (a_zero_point)"),
        )?;
        let bv = shift(
            b,
            optional(inputs, 3),
            false,
            ("input 1 (B)", "input 3 (b_zero_point)"),
        )?;
        let (y, shape) = matmul_i32(&av, a.shape(), &bv, b.shape())?;
        Ok(vec![Tensor::from_vec(shape, y)?])
    }
}

/// `acc * a_scale * b_scale[col] + bias[col]`, ORT's float epilogue.
fn scale_bias(
    acc: &[i32],
    a_scale: f32,
    b_scales: &[f32],
    bias: Option<&Tensor>,
) -> Result<Vec<f32>, OpError> {
    let n = b_scales.len();
    let bias = match bias {
        Some(t) => {
            let v = f32_values(t, "bias")?;
            if v.len() != n {
                bail_invalid!("bias has {} values, expected {n} (B's last dim)", v.len());
            }
            Some(v)
        }
        None => None,
    };
    Ok(acc
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let y = v as f32 * (a_scale * b_scales[i % n]);
            bias.map_or(y, |bv| y + bv[i % n])
        })
        .collect())
}

#[derive(Debug)]
struct DynamicQuantizeMatMul {
    fast: Option<FastB>,
}

fn build_dynamic(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(DynamicQuantizeMatMul {
        fast: packed(ctx, 1, 3),
    }))
}

impl Op for DynamicQuantizeMatMul {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        if let Some(y) = try_fast(&self.fast, ctx, inputs, matmul_fast::dynamic)? {
            return Ok(y);
        }
        let a = required(inputs, 0)?;
        let b = required(inputs, 1)?;
        let xs = f32_values(a, "input 0 (A)")?;
        let (a_scale, a_zp) = super::linear::dynamic_params(xs)?;
        let av: Vec<i32> = xs
            .iter()
            .map(|&v| super::quantize_f32(v, a_scale, a_zp as i32, QType::U8) - a_zp as i32)
            .collect();
        let n = last_dim(b);
        let b_scales = column_scales(required(inputs, 2)?, n, "input 2 (b_scale)")?;
        let bv = shift(
            b,
            optional(inputs, 3),
            false,
            ("input 1 (B)", "input 3 (b_zero_point)"),
        )?;
        let (acc, shape) = matmul_i32(&av, a.shape(), &bv, b.shape())?;
        let y = scale_bias(&acc, a_scale, &b_scales, optional(inputs, 4))?;
        Ok(vec![Tensor::from_vec(shape, y)?])
    }
}

#[derive(Debug)]
struct MatMulIntegerToFloat {
    fast: Option<FastB>,
}

fn build_to_float(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(MatMulIntegerToFloat {
        fast: packed(ctx, 1, 5),
    }))
}

impl Op for MatMulIntegerToFloat {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        if let Some(y) = try_fast(&self.fast, ctx, inputs, matmul_fast::to_float)? {
            return Ok(y);
        }
        let a = required(inputs, 0)?;
        let b = required(inputs, 1)?;
        let a_scale = scalar_scale(required(inputs, 2)?, "input 2 (a_scale)")?;
        let n = last_dim(b);
        let b_scales = column_scales(required(inputs, 3)?, n, "input 3 (b_scale)")?;
        let a_zp = optional(inputs, 4);
        if a_zp.is_some_and(|z| z.numel() != 1) {
            bail_unsupported!("MatMulIntegerToFloat with a per-row a_zero_point");
        }
        let av = shift(a, a_zp, true, ("input 0 (A)", "input 4 (a_zero_point)"))?;
        let bv = shift(
            b,
            optional(inputs, 5),
            false,
            ("input 1 (B)", "input 5 (b_zero_point)"),
        )?;
        let (acc, shape) = matmul_i32(&av, a.shape(), &bv, b.shape())?;
        let y = scale_bias(&acc, a_scale, &b_scales, optional(inputs, 6))?;
        Ok(vec![Tensor::from_vec(shape, y)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::quant::test_util::{run, t};
    use quench_ir::{Node, Tensor};

    #[test]
    fn matmul_integer_matches_onnx_example() {
        let a = t(&[4, 3], vec![11u8, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0]);
        let b = t(&[3, 2], vec![1u8, 4, 2, 5, 3, 6]);
        let n = Node::new("MatMulInteger", "m", &["a", "b", "az", "bz"], &["y"]);
        let az = t(&[1], vec![12u8]);
        let bz = t(&[1], vec![0u8]);
        let out = run(n, 10, &[Some(&a), Some(&b), Some(&az), Some(&bz)]).unwrap();
        assert_eq!(
            out[0].as_slice::<i32>().unwrap(),
            &[-38, -83, -44, -98, -50, -113, -56, -128]
        );
    }

    #[test]
    fn matmul_integer_per_row_and_column_zero_points_broadcast_batches() {
        // a: [2, 2, 2] with per-row zp [2]; b: [2, 2] with per-column zp [2].
        let a = t(&[2, 2, 2], vec![1i8, 2, 3, 4, 5, 6, 7, 8]);
        let b = t(&[2, 2], vec![1i8, 0, 0, 1]);
        let az = t(&[2], vec![1i8, 2]);
        let bz = t(&[2], vec![0i8, 1]);
        let n = Node::new("MatMulInteger", "m", &["a", "b", "az", "bz"], &["y"]);
        let out = run(n, 10, &[Some(&a), Some(&b), Some(&az), Some(&bz)]).unwrap();
        // (a - [[1],[2]]) @ [[1,-1],[0,0]]
        assert_eq!(out[0].shape(), &[2, 2, 2]);
        assert_eq!(
            out[0].as_slice::<i32>().unwrap(),
            &[0, 0, 1, -1, 4, -4, 5, -5]
        );
    }

    #[test]
    fn qlinear_matmul_matches_onnx_example() {
        let a = t(&[2, 4], vec![208u8, 236, 0, 238, 3, 214, 255, 29]);
        let b = t(
            &[4, 3],
            vec![152u8, 51, 244, 60, 26, 255, 0, 127, 246, 127, 254, 247],
        );
        let n = Node::new(
            "QLinearMatMul",
            "m",
            &["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
            &["y"],
        );
        let (a_s, a_z, b_s, b_z, y_s, y_z) = (
            Tensor::scalar(0.0066f32),
            Tensor::scalar(113u8),
            Tensor::scalar(0.00705f32),
            Tensor::scalar(114u8),
            Tensor::scalar(0.0107f32),
            Tensor::scalar(118u8),
        );
        let out = run(
            n,
            21,
            &[
                Some(&a),
                Some(&a_s),
                Some(&a_z),
                Some(&b),
                Some(&b_s),
                Some(&b_z),
                Some(&y_s),
                Some(&y_z),
            ],
        )
        .unwrap();
        assert_eq!(
            out[0].as_slice::<u8>().unwrap(),
            &[168, 115, 255, 1, 66, 151]
        );
    }

    #[test]
    fn mismatched_k_is_invalid() {
        let a = t(&[2, 3], vec![0u8; 6]);
        let b = t(&[2, 2], vec![0u8; 4]);
        let n = Node::new("MatMulInteger", "m", &["a", "b"], &["y"]);
        assert!(run(n, 10, &[Some(&a), Some(&b)]).is_err());
    }
}
