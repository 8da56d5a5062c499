//! QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear: the ops that
//! move values between float and integer grids.

use super::{QType, check_scales, f32_values, int_values, norm_axis};
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::Tensor;

pub fn register(r: &mut Registry) {
    r.register("", "QuantizeLinear", build_quantize);
    r.register("", "DequantizeLinear", build_dequantize);
    r.register("", "DynamicQuantizeLinear", build_dynamic);
}

/// How the scale/zero-point elements map onto the elements of `x`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    PerTensor,
    /// One parameter per index of the axis; `inner` = elements after it.
    PerAxis {
        dim: usize,
        inner: usize,
    },
    /// One parameter per `block` consecutive indices of the axis.
    Blocked {
        dim: usize,
        sdim: usize,
        inner: usize,
        block: usize,
    },
}

impl Layout {
    fn index(self, i: usize) -> usize {
        match self {
            Layout::PerTensor => 0,
            Layout::PerAxis { dim, inner } => (i / inner) % dim,
            Layout::Blocked {
                dim,
                sdim,
                inner,
                block,
            } => {
                let r = i % inner;
                let c = (i / inner) % dim;
                let o = i / (inner * dim);
                (o * sdim + c / block) * inner + r
            }
        }
    }
}

/// Quantization attributes shared by QuantizeLinear and DequantizeLinear.
#[derive(Clone, Copy, Debug)]
struct Params {
    axis: i64,
    block_size: i64,
    opset: i64,
}

impl Params {
    fn read(ctx: &BuildCtx) -> Result<Params, OpError> {
        let block_size = ctx.node.attr_int_or("block_size", 0)?;
        if block_size < 0 {
            bail_invalid!("attribute block_size is {block_size}, must be >= 0");
        }
        Ok(Params {
            axis: ctx.node.attr_int_or("axis", 1)?,
            block_size,
            opset: ctx.opset,
        })
    }

    /// Checks `scale` (and `zp`, which must share its shape) against `x`.
    fn layout(
        &self,
        x: &[usize],
        scale: &Tensor,
        zp: Option<&Tensor>,
        names: (&str, &str),
    ) -> Result<Layout, OpError> {
        let s = scale.shape();
        if let Some(z) = zp
            && z.shape() != s
            && !(z.numel() == 1 && scale.numel() == 1 && z.rank() <= 1 && s.len() <= 1)
        {
            bail_invalid!(
                "{} has shape {:?} but {} has shape {:?}; they must match",
                names.1,
                z.shape(),
                names.0,
                s
            );
        }
        if s.len() <= 1 && scale.numel() == 1 {
            return Ok(Layout::PerTensor);
        }
        if self.opset < 13 {
            bail_invalid!(
                "{} has shape {s:?}; opset {} allows only a per-tensor scale",
                names.0,
                self.opset
            );
        }
        let axis = norm_axis(self.axis, x.len(), "attribute axis")?;
        let dim = x[axis];
        let inner: usize = x[axis + 1..].iter().product();
        if self.block_size == 0 {
            if s.len() != 1 || s[0] != dim {
                bail_invalid!(
                    "{} has shape {s:?}; per-axis quantization along axis {axis} of input \
                     shape {x:?} needs a 1-D scale of length {dim}",
                    names.0
                );
            }
            return Ok(Layout::PerAxis {
                dim,
                inner: inner.max(1),
            });
        }
        if self.opset < 21 {
            bail_invalid!(
                "attribute block_size needs opset 21, model has {}",
                self.opset
            );
        }
        let block = self.block_size as usize;
        let sdim = dim.div_ceil(block);
        let mut want = x.to_vec();
        want[axis] = sdim;
        if s != want.as_slice() {
            bail_invalid!(
                "{} has shape {s:?}; blocked quantization (block_size {block}, axis {axis}) \
                 of input shape {x:?} needs shape {want:?}",
                names.0
            );
        }
        Ok(Layout::Blocked {
            dim,
            sdim,
            inner: inner.max(1),
            block,
        })
    }
}

#[derive(Debug)]
struct QuantizeLinear {
    p: Params,
    /// From `output_dtype` (opset 21) when set.
    out_type: Option<QType>,
}

fn build_quantize(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let code = ctx.node.attr_int_or("output_dtype", 0)?;
    let out_type = if code != 0 {
        Some(QType::from_onnx(code, "attribute output_dtype")?)
    } else {
        None
    };
    if let Some(zp) = ctx.constant_input(2) {
        QType::of(zp.dtype(), "input 2 (y_zero_point)")?;
    }
    Ok(Box::new(QuantizeLinear {
        p: Params::read(ctx)?,
        out_type,
    }))
}

impl Op for QuantizeLinear {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let scale_t = required(inputs, 1)?;
        let zp_t = optional(inputs, 2);
        let xs = f32_values(x, "input 0 (x)")?;
        let scales = f32_values(scale_t, "input 1 (y_scale)")?;
        check_scales(scales, "input 1 (y_scale)")?;
        let q = match (zp_t, self.out_type) {
            (Some(z), attr) => {
                let q = QType::of(z.dtype(), "input 2 (y_zero_point)")?;
                if attr.is_some_and(|a| a != q) {
                    bail_invalid!(
                        "attribute output_dtype disagrees with input 2 (y_zero_point) of type {}",
                        z.dtype()
                    );
                }
                q
            }
            (None, Some(a)) => a,
            (None, None) => QType::U8,
        };
        if q == QType::I32 {
            bail_invalid!("int32 is not a quantized output type of QuantizeLinear");
        }
        let zps = match zp_t {
            Some(z) => int_values(z, "input 2 (y_zero_point)")?,
            None => vec![0; scales.len()],
        };
        let layout = self.p.layout(
            x.shape(),
            scale_t,
            zp_t,
            ("input 1 (y_scale)", "input 2 (y_zero_point)"),
        )?;
        if layout == Layout::PerTensor && matches!(q, QType::U8 | QType::I8) {
            let (scale, zp) = (scales[0], zps[0]);
            let shape = x.shape().to_vec();
            return Ok(vec![if q == QType::U8 {
                Tensor::from_vec(shape, quantize_8bit(xs, scale, zp, q, |v| v as u8))?
            } else {
                Tensor::from_vec(shape, quantize_8bit(xs, scale, zp, q, |v| v as i8))?
            }]);
        }
        let y = xs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let k = layout.index(i);
                super::quantize_f32(v, scales[k], zps[k], q)
            })
            .collect();
        Ok(vec![q.tensor(x.shape().to_vec(), y)?])
    }
}

/// Per-tensor quantization to an 8-bit type, equal to
/// [`super::quantize_f32`] but vectorizable: clamp in the float domain,
/// then round half to even by adding and removing 1.5·2^23 (exact for
/// |f| < 2^22, which the clamp guarantees); NaN maps to 0 as there.
pub(super) fn quantize_8bit<T>(
    xs: &[f32],
    scale: f32,
    zp: i32,
    q: QType,
    cast: impl Fn(i32) -> T,
) -> Vec<T> {
    const ROUND: f32 = 12_582_912.0;
    let (lo, hi) = q.range();
    let (flo, fhi) = ((lo - zp) as f32, (hi - zp) as f32);
    let rbits = ROUND.to_bits() as i32;
    xs.iter()
        .map(|&v| {
            let f = v / scale;
            let c = f.max(flo).min(fhi);
            let r = ((c + ROUND).to_bits() as i32 - rbits) + zp;
            cast(if f.is_nan() { 0 } else { r })
        })
        .collect()
}

#[derive(Debug)]
struct DequantizeLinear {
    p: Params,
}

fn build_dequantize(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    if ctx.node.attr_int_or("output_dtype", 0)? > 1 {
        bail_unsupported!("DequantizeLinear output_dtype other than float32");
    }
    Ok(Box::new(DequantizeLinear {
        p: Params::read(ctx)?,
    }))
}

impl Op for DequantizeLinear {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let scale_t = required(inputs, 1)?;
        let zp_t = optional(inputs, 2);
        let xs = int_values(x, "input 0 (x)")?;
        let scales = f32_values(scale_t, "input 1 (x_scale)")?;
        check_scales(scales, "input 1 (x_scale)")?;
        let zps = match zp_t {
            Some(z) => {
                if z.dtype() != x.dtype() {
                    bail_invalid!(
                        "input 2 (x_zero_point) has type {}, input 0 (x) has type {}; they must match",
                        z.dtype(),
                        x.dtype()
                    );
                }
                int_values(z, "input 2 (x_zero_point)")?
            }
            None => vec![0; scales.len()],
        };
        let layout = self.p.layout(
            x.shape(),
            scale_t,
            zp_t,
            ("input 1 (x_scale)", "input 2 (x_zero_point)"),
        )?;
        let y = xs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let k = layout.index(i);
                (v as f32 - zps[k] as f32) * scales[k]
            })
            .collect();
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), y)?])
    }
}

#[derive(Debug)]
struct DynamicQuantizeLinear;

fn build_dynamic(_: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(DynamicQuantizeLinear))
}

/// ONNX's uint8 scale and zero point for `x`: the range always contains 0.
pub(crate) fn dynamic_params(xs: &[f32]) -> Result<(f32, u8), OpError> {
    if xs.is_empty() {
        bail_invalid!("input 0 (x) is empty; its range is undefined");
    }
    let Some((lo, hi)) = quench_kernels::int8::min_max(xs) else {
        bail_invalid!("input 0 (x) holds NaN; its range is undefined");
    };
    // The range always includes 0, so that 0 is exactly representable.
    let (min, max) = (lo.min(0.0), hi.max(0.0));
    if !(max.is_finite() && min.is_finite()) {
        bail_invalid!("input 0 (x) holds non-finite values; its range is undefined");
    }
    let scale = (if max == min { 1.0 } else { max - min }) / 255.0;
    let zp = (0.0 - min / scale).clamp(0.0, 255.0).round_ties_even();
    Ok((scale, zp as u8))
}

impl Op for DynamicQuantizeLinear {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let xs = f32_values(x, "input 0 (x)")?;
        let (scale, zp) = dynamic_params(xs)?;
        let mut y = vec![0u8; xs.len()];
        quench_kernels::int8::quantize_u8(xs, scale, zp, &mut y);
        Ok(vec![
            Tensor::from_vec(x.shape().to_vec(), y)?,
            Tensor::scalar(scale),
            Tensor::scalar(zp),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::quant::test_util::{run, t};
    use quench_ir::Node;

    #[test]
    fn quantize_per_tensor_matches_onnx_example() {
        // test_quantizelinear: x / 2 + 128, ties to even.
        let x = t(&[6], vec![0f32, 2., 3., 1000., -254., -1000.]);
        let n = Node::new("QuantizeLinear", "q", &["x", "s", "z"], &["y"]);
        let out = run(
            n,
            21,
            &[
                Some(&x),
                Some(&Tensor::scalar(2f32)),
                Some(&Tensor::scalar(128u8)),
            ],
        )
        .unwrap();
        assert_eq!(
            out[0].as_slice::<u8>().unwrap(),
            &[128, 129, 130, 255, 1, 0]
        );
    }

    #[test]
    fn quantize_per_axis_and_negative_axis() {
        let x = t(&[1, 3, 2], vec![-162f32, 10., -100., 232., -20., -50.]);
        let s = t(&[3], vec![2f32, 4., 5.]);
        let z = t(&[3], vec![84u8, 24, 196]);
        for axis in [1i64, -2] {
            let n = Node::new("QuantizeLinear", "q", &["x", "s", "z"], &["y"])
                .with_attr("axis", quench_ir::Attr::Int(axis));
            let out = run(n, 13, &[Some(&x), Some(&s), Some(&z)]).unwrap();
            assert_eq!(out[0].as_slice::<u8>().unwrap(), &[3, 89, 0, 82, 192, 186]);
        }
        let bad = t(&[2], vec![1f32, 1.]);
        let n = Node::new("QuantizeLinear", "q", &["x", "s"], &["y"]);
        let err = run(n, 13, &[Some(&x), Some(&bad)]).unwrap_err();
        assert!(err.to_string().contains("length 3"), "{err}");
    }

    #[test]
    fn quantize_blocked_int16() {
        // Two blocks of 2 along axis 1.
        let x = t(&[1, 4], vec![1f32, 2., 30., 40.]);
        let s = t(&[1, 2], vec![1f32, 10.]);
        let z = t(&[1, 2], vec![0i16, -1]);
        let n = Node::new("QuantizeLinear", "q", &["x", "s", "z"], &["y"])
            .with_attr("block_size", quench_ir::Attr::Int(2));
        let out = run(n, 21, &[Some(&x), Some(&s), Some(&z)]).unwrap();
        assert_eq!(out[0].as_slice::<i16>().unwrap(), &[1, 2, 2, 3]);
    }

    #[test]
    fn per_axis_scale_on_a_scalar_is_invalid() {
        let n = Node::new("QuantizeLinear", "q", &["x", "s"], &["y"]);
        let s = t(&[2], vec![1f32, 1.]);
        assert!(run(n, 13, &[Some(&Tensor::scalar(1f32)), Some(&s)]).is_err());
    }

    #[test]
    fn zero_scale_is_rejected_by_name() {
        let x = t(&[2], vec![1f32, 2.]);
        let n = Node::new("QuantizeLinear", "q", &["x", "s"], &["y"]);
        let err = run(n, 13, &[Some(&x), Some(&Tensor::scalar(0f32))]).unwrap_err();
        assert!(err.to_string().contains("y_scale"), "{err}");
    }

    #[test]
    fn dequantize_per_axis() {
        let x = t(&[1, 3, 2], vec![3u8, 89, 34, 200, 74, 59]);
        let s = t(&[3], vec![2f32, 4., 5.]);
        let z = t(&[3], vec![84u8, 24, 196]);
        let n = Node::new("DequantizeLinear", "d", &["x", "s", "z"], &["y"]);
        let out = run(n, 13, &[Some(&x), Some(&s), Some(&z)]).unwrap();
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            &[-162., 10., 40., 704., -610., -685.]
        );
    }

    #[test]
    fn dynamic_quantize_matches_onnx_example() {
        let x = t(&[6], vec![0f32, 2., -3., -2.5, 1.34, 0.5]);
        let n = Node::new("DynamicQuantizeLinear", "d", &["x"], &["y", "s", "z"]);
        let out = run(n, 11, &[Some(&x)]).unwrap();
        assert_eq!(
            out[0].as_slice::<u8>().unwrap(),
            &[153, 255, 0, 26, 221, 179]
        );
        assert_eq!(out[1].as_slice::<f32>().unwrap(), &[0.019_607_844]);
        assert_eq!(out[2].as_slice::<u8>().unwrap(), &[153]);
    }
}
