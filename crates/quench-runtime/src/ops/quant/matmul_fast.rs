//! Packed-weight paths of QLinearMatMul, MatMulInteger, MatMulIntegerToFloat
//! and DynamicQuantizeMatMul: A's rows (batch dims flattened, as B is 2-D)
//! times B packed at build, with the epilogue each op needs. `Ok(None)`
//! means "does not fit, use the reference", which then reports any error.

use super::fast::{FastB, a_rows, out_shape, row_zero_points};
use super::{QType, f32_values, scalar_scale, scalar_zero_point};
use crate::op::{optional, required};
use crate::{OpError, bail_invalid};
use quench_ir::{DType, Tensor};
use quench_kernels::int8::{self, AData, AMat, Out, Post};

type Fast = Result<Option<Tensor>, OpError>;

/// The shape of every fast path here: packed B, the node's inputs, threads.
pub(crate) type FastFn = fn(&FastB, &[Option<&Tensor>], usize) -> Fast;

/// B's scale as one value per column, or None when it is neither per-tensor nor per-column.
fn column_scales(t: &Tensor, n: usize, what: &str) -> Result<Option<Vec<f32>>, OpError> {
    let v = f32_values(t, what)?;
    super::check_scales(v, what)?;
    Ok(if v.len() == 1 {
        Some(vec![v[0]; n])
    } else if v.len() == n && t.shape().iter().rev().skip(1).all(|&d| d == 1) {
        Some(v.to_vec())
    } else {
        None
    })
}

/// An f32 bias of exactly `n` values, or None.
fn f32_bias(t: Option<&Tensor>, n: usize) -> Result<Option<Option<&[f32]>>, OpError> {
    match t {
        None => Ok(Some(None)),
        Some(t) => {
            let v = f32_values(t, "bias")?;
            if v.len() != n {
                bail_invalid!("bias has {} values, expected {n} (B's last dim)", v.len());
            }
            Ok(Some(Some(v)))
        }
    }
}

/// MatMulInteger: raw i32.
pub(crate) fn integer(f: &FastB, inputs: &[Option<&Tensor>], threads: usize) -> Fast {
    let a = required(inputs, 0)?;
    let (k, n) = (f.k(), f.n());
    let Some((data, m)) = a_rows(a, k) else {
        return Ok(None);
    };
    let Some(za) = row_zero_points(optional(inputs, 2), a, true) else {
        return Ok(None);
    };
    let shape = out_shape(a, n);
    let mut y = vec![0i32; quench_ir::tensor::checked_numel(&shape)?];
    let am = AMat {
        data,
        m,
        k,
        lda: k,
        zero_points: &za,
    };
    int8::gemm(
        &am,
        &f.packed,
        &Post::Raw { bias: None },
        Out::I32(&mut y),
        n,
        false,
        threads,
    );
    Ok(Some(Tensor::from_vec(shape, y)?))
}

/// QLinearMatMul: requantized with `a_scale * b_scale[n] / y_scale`, in f32 as ORT does.
pub(crate) fn qlinear(f: &FastB, inputs: &[Option<&Tensor>], threads: usize) -> Fast {
    let a = required(inputs, 0)?;
    let (k, n) = (f.k(), f.n());
    let Some((data, m)) = a_rows(a, k) else {
        return Ok(None);
    };
    let a_zp = optional(inputs, 2);
    let Some(za) = row_zero_points(a_zp, a, false) else {
        return Ok(None);
    };
    let a_scale = scalar_scale(required(inputs, 1)?, "input 1 (a_scale)")?;
    let Some(bs) = column_scales(required(inputs, 4)?, n, "input 4 (b_scale)")? else {
        return Ok(None);
    };
    let y_scale = scalar_scale(required(inputs, 6)?, "input 6 (y_scale)")?;
    let y_zp_t = optional(inputs, 7);
    let q = QType::of(y_zp_t.unwrap_or(a).dtype(), "output type")?;
    if !matches!(q, QType::U8 | QType::I8) {
        return Ok(None);
    }
    let y_zp = scalar_zero_point(y_zp_t, "input 7 (y_zero_point)")?;
    let mult: Vec<f32> = bs.iter().map(|&b| a_scale * b / y_scale).collect();
    let (lo, hi) = q.range();
    let post = Post::Requant {
        bias: None,
        mult: &mult,
        zp: y_zp,
        lo,
        hi,
    };
    let am = AMat {
        data,
        m,
        k,
        lda: k,
        zero_points: &za,
    };
    let shape = out_shape(a, n);
    let len = quench_ir::tensor::checked_numel(&shape)?;
    Ok(Some(requant_out(q, shape, len, |out| {
        int8::gemm(&am, &f.packed, &post, out, n, false, threads)
    })?))
}

/// A u8/i8 tensor of `len` elements filled by `fill`.
pub(crate) fn requant_out(
    q: QType,
    shape: Vec<usize>,
    len: usize,
    fill: impl FnOnce(Out),
) -> Result<Tensor, OpError> {
    Ok(match q {
        QType::U8 => {
            let mut y = vec![0u8; len];
            fill(Out::U8(&mut y));
            Tensor::from_vec(shape, y)?
        }
        _ => {
            let mut y = vec![0i8; len];
            fill(Out::I8(&mut y));
            Tensor::from_vec(shape, y)?
        }
    })
}

/// MatMulIntegerToFloat and the second half of DynamicQuantizeMatMul:
/// `acc * (a_scale * b_scale[n]) + bias[n]`.
#[allow(clippy::too_many_arguments)]
fn dequant(
    f: &FastB,
    a: &Tensor,
    data: AData,
    m: usize,
    za: &[i32],
    a_scale: f32,
    b_scale: &Tensor,
    b_what: &str,
    bias: Option<&Tensor>,
    threads: usize,
) -> Fast {
    let (k, n) = (f.k(), f.n());
    let Some(bs) = column_scales(b_scale, n, b_what)? else {
        return Ok(None);
    };
    let Some(bias) = f32_bias(bias, n)? else {
        return Ok(None);
    };
    let shape = out_shape(a, n);
    let mut y = vec![0f32; quench_ir::tensor::checked_numel(&shape)?];
    let post = Post::Dequant {
        a_scale: &[a_scale],
        b_scale: &bs,
        bias,
    };
    let am = AMat {
        data,
        m,
        k,
        lda: k,
        zero_points: za,
    };
    int8::gemm(&am, &f.packed, &post, Out::F32(&mut y), n, false, threads);
    Ok(Some(Tensor::from_vec(shape, y)?))
}

/// com.microsoft MatMulIntegerToFloat.
pub(crate) fn to_float(f: &FastB, inputs: &[Option<&Tensor>], threads: usize) -> Fast {
    let a = required(inputs, 0)?;
    let Some((data, m)) = a_rows(a, f.k()) else {
        return Ok(None);
    };
    let Some(za) = row_zero_points(optional(inputs, 4), a, false) else {
        return Ok(None);
    };
    let a_scale = scalar_scale(required(inputs, 2)?, "input 2 (a_scale)")?;
    let (b_scale, bias) = (required(inputs, 3)?, optional(inputs, 6));
    dequant(
        f,
        a,
        data,
        m,
        &za,
        a_scale,
        b_scale,
        "input 3 (b_scale)",
        bias,
        threads,
    )
}

/// com.microsoft DynamicQuantizeMatMul: A quantized to u8 with
/// DynamicQuantizeLinear's parameters, then as MatMulIntegerToFloat.
pub(crate) fn dynamic(f: &FastB, inputs: &[Option<&Tensor>], threads: usize) -> Fast {
    let a = required(inputs, 0)?;
    if a.dtype() != DType::F32 || a.rank() == 0 || a.shape().last() != Some(&f.k()) {
        return Ok(None);
    }
    let xs = f32_values(a, "input 0 (A)")?;
    let (scale, zp) = super::linear::dynamic_params(xs)?;
    let mut q = vec![0u8; xs.len()];
    quench_kernels::int8::quantize_u8(xs, scale, zp, &mut q);
    let m = q.len() / f.k();
    let (b_scale, bias) = (required(inputs, 2)?, optional(inputs, 4));
    let za = [zp as i32];
    let data = AData::U8(&q);
    dequant(
        f,
        a,
        data,
        m,
        &za,
        scale,
        b_scale,
        "input 2 (b_scale)",
        bias,
        threads,
    )
}
