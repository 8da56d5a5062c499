//! Quantization operators: ONNX (QuantizeLinear, DequantizeLinear,
//! DynamicQuantizeLinear, QLinearConv, QLinearMatMul, MatMulInteger,
//! ConvInteger) and the com.microsoft contrib ops (QGemm among them) ORT writes into quantized
//! models. Each has a scalar reference kernel; the matmuls, QGemm and the
//! 2-D convolutions also have a packed int8 path (quench_kernels::int8) for
//! constant u8/s8 weights, which falls back to the reference for anything else.

use crate::{OpError, Registry};
use quench_ir::{DType, Tensor, TensorData};

mod contrib;
mod conv;
mod conv_fast;
mod fast;
#[cfg(test)]
mod fast_tests;
mod linear;
mod matmul;
mod matmul_fast;
mod nhwc;
mod pool;
mod qgemm;

pub fn register(r: &mut Registry) {
    linear::register(r);
    conv::register(r);
    matmul::register(r);
    contrib::register(r);
    pool::register(r);
    qgemm::register(r);
    nhwc::register(r);
}

/// An integer type a quantized tensor can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QType {
    U8,
    I8,
    U16,
    I16,
    I32,
}

impl QType {
    /// The quantized type of `dtype`; float8/int4 and friends are valid ONNX
    /// that Quench does not compute, so they are `Unsupported` by name.
    pub fn of(dtype: DType, what: &str) -> Result<QType, OpError> {
        Ok(match dtype {
            DType::U8 => QType::U8,
            DType::I8 => QType::I8,
            DType::U16 => QType::U16,
            DType::I16 => QType::I16,
            DType::I32 => QType::I32,
            DType::Other(_) | DType::F16 | DType::BF16 => {
                crate::bail_unsupported!("{what} of type {dtype}")
            }
            other => crate::bail_invalid!("{what} has type {other}, expected an integer type"),
        })
    }

    /// From an ONNX `output_dtype`/`to` attribute code.
    pub fn from_onnx(code: i64, what: &str) -> Result<QType, OpError> {
        match DType::from_onnx(code as i32) {
            Some(d) => QType::of(d, what),
            None => crate::bail_invalid!("{what}: unknown ONNX type code {code}"),
        }
    }

    pub fn range(self) -> (i32, i32) {
        match self {
            QType::U8 => (0, 255),
            QType::I8 => (-128, 127),
            QType::U16 => (0, 65535),
            QType::I16 => (-32768, 32767),
            QType::I32 => (i32::MIN, i32::MAX),
        }
    }

    /// Clamps a rounded real value into range.
    pub fn saturate(self, v: f64) -> i32 {
        let (lo, hi) = self.range();
        if v.is_nan() {
            return 0;
        }
        v.clamp(lo as f64, hi as f64) as i32
    }

    /// A tensor of this type from values already within range.
    pub fn tensor(self, shape: Vec<usize>, v: Vec<i32>) -> Result<Tensor, OpError> {
        let data = match self {
            QType::U8 => TensorData::U8(v.into_iter().map(|x| x as u8).collect()),
            QType::I8 => TensorData::I8(v.into_iter().map(|x| x as i8).collect()),
            QType::U16 => TensorData::U16(v.into_iter().map(|x| x as u16).collect()),
            QType::I16 => TensorData::I16(v.into_iter().map(|x| x as i16).collect()),
            QType::I32 => TensorData::I32(v),
        };
        Ok(Tensor::new(shape, data)?)
    }
}

/// Integer contents of a quantized tensor, widened to i32.
pub(crate) fn int_values(t: &Tensor, what: &str) -> Result<Vec<i32>, OpError> {
    Ok(match t.data() {
        TensorData::U8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::U16(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I16(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I32(v) => v.clone(),
        _ => {
            QType::of(t.dtype(), what)?;
            crate::bail_invalid!("{what} has type {}", t.dtype())
        }
    })
}

/// Checks that `t` is float32, naming float16 and friends as unsupported.
pub(crate) fn f32_values<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], OpError> {
    match t.data() {
        TensorData::F32(v) => Ok(v),
        _ if matches!(t.dtype(), DType::F16 | DType::BF16 | DType::Other(_)) => {
            crate::bail_unsupported!("{what} of type {}", t.dtype())
        }
        _ => crate::bail_invalid!("{what} has type {}, expected float32", t.dtype()),
    }
}

/// Scales must be positive and finite: anything else is a broken model.
pub(crate) fn check_scales(v: &[f32], what: &str) -> Result<(), OpError> {
    if let Some(bad) = v.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        crate::bail_invalid!("{what} holds {bad}; scales must be positive and finite");
    }
    Ok(())
}

/// The single value of a per-tensor scale.
pub(crate) fn scalar_scale(t: &Tensor, what: &str) -> Result<f32, OpError> {
    let v = f32_values(t, what)?;
    if v.len() != 1 {
        crate::bail_invalid!(
            "{what} has shape {:?}; only a per-tensor (one element) scale is allowed",
            t.shape()
        );
    }
    check_scales(v, what)?;
    Ok(v[0])
}

/// The single value of an optional per-tensor zero point (0 when absent).
pub(crate) fn scalar_zero_point(t: Option<&Tensor>, what: &str) -> Result<i32, OpError> {
    let Some(t) = t else { return Ok(0) };
    let v = int_values(t, what)?;
    if v.len() != 1 {
        crate::bail_invalid!(
            "{what} has shape {:?}; only a per-tensor (one element) zero point is allowed",
            t.shape()
        );
    }
    Ok(v[0])
}

/// `nearbyint(v / scale) + zero_point`, saturated: ORT's `MlasQuantizeLinear`.
pub(crate) fn quantize_f32(v: f32, scale: f32, zp: i32, q: QType) -> i32 {
    q.saturate((v / scale).round_ties_even() as f64 + zp as f64)
}

/// Resolves a possibly negative axis against `rank`.
pub(crate) fn norm_axis(axis: i64, rank: usize, what: &str) -> Result<usize, OpError> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        crate::bail_invalid!("{what} {axis} is out of range for rank {rank}");
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// For each element of `dst`, the flat index of the element of `src` it
/// reads under numpy broadcasting.
pub(crate) fn broadcast_index(src: &[usize], dst: &[usize]) -> Result<Vec<usize>, OpError> {
    if src.len() > dst.len() {
        crate::bail_invalid!("cannot broadcast shape {src:?} to {dst:?}");
    }
    let off = dst.len() - src.len();
    let mut strides = vec![0usize; dst.len()];
    let mut s = 1usize;
    for i in (0..src.len()).rev() {
        let (a, b) = (src[i], dst[i + off]);
        if a != b && a != 1 {
            crate::bail_invalid!("cannot broadcast shape {src:?} to {dst:?}");
        }
        strides[i + off] = if a == 1 { 0 } else { s };
        s *= a;
    }
    let n = quench_ir::tensor::checked_numel(dst)?;
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; dst.len()];
    let mut cur = 0usize;
    for _ in 0..n {
        out.push(cur);
        for d in (0..dst.len()).rev() {
            idx[d] += 1;
            cur += strides[d];
            if idx[d] < dst[d] {
                break;
            }
            cur -= strides[d] * idx[d];
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// The numpy broadcast of two shapes.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => crate::bail_invalid!("shapes {a:?} and {b:?} do not broadcast"),
        };
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod test_util {
    use crate::{BuildCtx, OpError, Registry, RunCtx};
    use quench_ir::{Node, Tensor};

    /// Builds `node` with no constant inputs and runs it once.
    pub fn run(node: Node, opset: i64, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        run_const(node, opset, inputs, &[])
    }

    /// Builds `node` with the inputs at `constant` indices known at build
    /// (so packed fast paths are taken) and runs it once.
    pub fn run_const(
        node: Node,
        opset: i64,
        inputs: &[Option<&Tensor>],
        constant: &[usize],
    ) -> Result<Vec<Tensor>, OpError> {
        let names: Vec<(String, &Tensor)> = constant
            .iter()
            .filter_map(|&i| {
                Some((
                    node.input(i)?.to_string(),
                    inputs.get(i).copied().flatten()?,
                ))
            })
            .collect();
        let none = |name: &str| names.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
        let compile = |_: &quench_ir::Graph| -> Result<crate::Plan, crate::RuntimeError> {
            Err(crate::RuntimeError::Invalid("no subgraphs".into()))
        };
        let ctx = BuildCtx {
            node: &node,
            opset,
            constants: &none,
            compile: &compile,
        };
        let registry = Registry::standard();
        let build = registry
            .get(&node.domain, &node.op_type)
            .ok_or_else(|| OpError::Invalid(format!("{} is not registered", node.op_type)))?;
        build(&ctx)?.run(&RunCtx { threads: 1 }, inputs)
    }

    pub fn t<T: quench_ir::Elem>(shape: &[usize], v: Vec<T>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_index_repeats_size_one_dims() {
        let idx = broadcast_index(&[2, 1], &[3, 2, 2]).unwrap();
        assert_eq!(idx, vec![0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1]);
        assert!(broadcast_index(&[3], &[2]).is_err());
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        assert_eq!(quantize_f32(2.5, 1.0, 0, QType::U8), 2);
        assert_eq!(quantize_f32(3.5, 1.0, 0, QType::U8), 4);
        assert_eq!(quantize_f32(-2.5, 1.0, 0, QType::I8), -2);
        assert_eq!(quantize_f32(1000.0, 1.0, 0, QType::I8), 127);
        assert_eq!(quantize_f32(-1.0, 1.0, 0, QType::U8), 0);
    }

    #[test]
    fn bad_scales_are_rejected() {
        assert!(check_scales(&[1.0, 0.0], "input 1 (y_scale)").is_err());
        assert!(check_scales(&[f32::NAN], "s").is_err());
        assert!(check_scales(&[-1.0], "s").is_err());
        assert!(matches!(
            QType::of(DType::Other(17), "zero point"),
            Err(OpError::Unsupported(_))
        ));
    }
}
