//! Scales and zero points, and the QuantizeLinear / DequantizeLinear maths.
//!
//! [`compute_scale_zp`] reproduces ONNX Runtime's `quant_utils.compute_scale_zp`
//! operation by operation (same f32/f64 promotions, same half-to-even rounding)
//! so that parameters are bit-identical to ORT's for the same range.

use crate::QuantError;
use quench_ir::{DType, Tensor};

/// Integer types a tensor is quantized to. `I32` is only for biases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantDType {
    U8,
    I8,
    I32,
}

impl QuantDType {
    /// `(qmin, qmax)` as ORT's `get_qmin_qmax_for_qType`: `reduce_range` wins
    /// over `symmetric`, and only int8 has a narrowed symmetric range
    /// (`[-127, 127]`, so that the range is centred on zero point 0).
    pub fn qrange(self, symmetric: bool, reduce_range: bool) -> (i32, i32) {
        match (self, reduce_range, symmetric) {
            (QuantDType::U8, true, _) => (0, 127),
            (QuantDType::U8, false, _) => (0, 255),
            (QuantDType::I8, true, _) => (-64, 64),
            (QuantDType::I8, false, true) => (-127, 127),
            (QuantDType::I8, false, false) => (-128, 127),
            (QuantDType::I32, _, _) => (i32::MIN, i32::MAX),
        }
    }

    /// The full storage range, used for saturation.
    pub fn storage_range(self) -> (i32, i32) {
        self.qrange(false, false)
    }

    pub fn dtype(self) -> DType {
        match self {
            QuantDType::U8 => DType::U8,
            QuantDType::I8 => DType::I8,
            QuantDType::I32 => DType::I32,
        }
    }
}

/// How a float range becomes quantization parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParamsConfig {
    pub dtype: QuantDType,
    /// Make the range `[-absmax, absmax]`; zero point is the middle of the
    /// integer range (0 for int8, 128 for uint8).
    pub symmetric: bool,
    /// Use 7-bit ranges, for CPUs whose u8×s8 dot products can overflow.
    pub reduce_range: bool,
    /// Smallest `rmax - rmin` allowed, so near-constant tensors keep a sane scale.
    pub min_real_range: Option<f32>,
    /// Round the scale up to a power of two (fixed-point NPUs shift instead of
    /// multiplying); the range still fits.
    pub power_of_two: bool,
}

impl QParamsConfig {
    pub fn new(dtype: QuantDType, symmetric: bool) -> QParamsConfig {
        QParamsConfig {
            dtype,
            symmetric,
            reduce_range: false,
            min_real_range: None,
            power_of_two: false,
        }
    }

    /// ORT's default for activations: asymmetric uint8.
    pub fn activation_u8() -> QParamsConfig {
        QParamsConfig::new(QuantDType::U8, false)
    }

    /// ORT's usual weight setting: symmetric int8, zero point 0.
    pub fn weight_i8() -> QParamsConfig {
        QParamsConfig::new(QuantDType::I8, true)
    }

    /// Fixed-point NPU preset: symmetric int8 with power-of-two scales.
    pub fn npu_i8() -> QParamsConfig {
        QParamsConfig {
            power_of_two: true,
            ..QParamsConfig::new(QuantDType::I8, true)
        }
    }

    pub fn qrange(&self) -> (i32, i32) {
        self.dtype.qrange(self.symmetric, self.reduce_range)
    }
}

/// Scales and zero points of one tensor: one pair, or one per channel of `axis`.
#[derive(Clone, Debug, PartialEq)]
pub struct QParams {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
    pub axis: Option<usize>,
    pub dtype: QuantDType,
}

impl QParams {
    pub fn per_tensor(scale: f32, zero_point: i32, dtype: QuantDType) -> QParams {
        QParams {
            scale: vec![scale],
            zero_point: vec![zero_point],
            axis: None,
            dtype,
        }
    }

    /// Parameters for each `(min, max)` of `ranges`; per-channel when `axis` is set.
    pub fn from_ranges(
        mins: &[f32],
        maxs: &[f32],
        axis: Option<usize>,
        cfg: &QParamsConfig,
    ) -> Result<QParams, QuantError> {
        if mins.len() != maxs.len() || mins.is_empty() {
            return Err(QuantError::Config(format!(
                "{} minimums and {} maximums given",
                mins.len(),
                maxs.len()
            )));
        }
        if axis.is_none() && mins.len() != 1 {
            return Err(QuantError::Config(format!(
                "{} ranges given for a per-tensor quantization",
                mins.len()
            )));
        }
        let mut scale = Vec::with_capacity(mins.len());
        let mut zero_point = Vec::with_capacity(mins.len());
        for (&lo, &hi) in mins.iter().zip(maxs) {
            let (s, z) = qparams_for_range(lo, hi, cfg)?;
            scale.push(s);
            zero_point.push(z);
        }
        Ok(QParams {
            scale,
            zero_point,
            axis,
            dtype: cfg.dtype,
        })
    }

    pub fn len(&self) -> usize {
        self.scale.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scale.is_empty()
    }
}

/// Scale and zero point for `[rmin, rmax]` under `cfg` (ORT's rules, then the
/// optional power-of-two rounding).
pub fn qparams_for_range(
    rmin: f32,
    rmax: f32,
    cfg: &QParamsConfig,
) -> Result<(f32, i32), QuantError> {
    if cfg.dtype == QuantDType::I32 {
        return Err(QuantError::Config(
            "int32 is only for biases: use quantize_bias".into(),
        ));
    }
    let (qmin, qmax) = cfg.qrange();
    let (scale, zp) = compute_scale_zp(rmin, rmax, qmin, qmax, cfg.symmetric, cfg.min_real_range)?;
    if !cfg.power_of_two {
        return Ok((scale, zp));
    }
    let pot = next_power_of_two(scale);
    if cfg.symmetric || pot == scale {
        return Ok((pot, zp));
    }
    // Asymmetric: re-centre the zero point for the wider step, keeping both
    // ends of the (zero-including) range representable when the slack allows.
    let (lo, hi) = adjusted_range(rmin, rmax, false, cfg.min_real_range);
    let (lo, hi, s) = (lo as f64, hi as f64, pot as f64);
    let mut z = (qmin as f64 - lo / s).round_ties_even();
    let fit_lo = (qmin as f64 - lo / s).ceil();
    let fit_hi = (qmax as f64 - hi / s).floor();
    if fit_lo <= fit_hi {
        z = z.clamp(fit_lo, fit_hi);
    }
    Ok((pot, z.clamp(qmin as f64, qmax as f64) as i32))
}

/// The smallest power of two `>= x` (for positive, finite `x`).
fn next_power_of_two(x: f32) -> f32 {
    let bits = x.to_bits();
    let exp = (bits >> 23) & 0xff;
    if bits & 0x7f_ffff == 0 && exp != 0 {
        return x;
    }
    let p = (x as f64).log2().ceil();
    let mut r = 2f64.powi(p as i32);
    if r < x as f64 {
        r *= 2.0;
    }
    r as f32
}

/// ORT's range adjustment: include 0, enforce `min_real_range`, symmetrise.
fn adjusted_range(
    rmin: f32,
    rmax: f32,
    symmetric: bool,
    min_real_range: Option<f32>,
) -> (f32, f32) {
    let mut lo = rmin.min(0.0);
    let mut hi = rmax.max(0.0);
    if let Some(r) = min_real_range {
        hi = hi.max(lo + r);
    }
    if symmetric {
        let absmax = lo.abs().max(hi.abs());
        lo = -absmax;
        hi = absmax;
    }
    (lo, hi)
}

/// ONNX Runtime's `compute_scale_zp`: `r = s·(q − z)` with every value of
/// `[rmin, rmax] ∪ {0}` representable in `[qmin, qmax]`.
///
/// The difference `rmax − rmin` and the zero point are computed in f64 and the
/// scale rounded to f32 last, as ORT does; a range too small for an f32 scale
/// gives `(1.0, 0)`.
pub fn compute_scale_zp(
    rmin: f32,
    rmax: f32,
    qmin: i32,
    qmax: i32,
    symmetric: bool,
    min_real_range: Option<f32>,
) -> Result<(f32, i32), QuantError> {
    if !rmin.is_finite() || !rmax.is_finite() {
        return Err(QuantError::InvalidRange {
            min: rmin,
            max: rmax,
            reason: "range must be finite",
        });
    }
    if qmin > 0 || qmax < 0 || qmin > qmax {
        return Err(QuantError::Config(format!(
            "integer range [{qmin}, {qmax}] must contain 0"
        )));
    }
    let (lo, hi) = adjusted_range(rmin, rmax, symmetric, min_real_range);
    if !hi.is_finite() || !lo.is_finite() {
        return Err(QuantError::InvalidRange {
            min: rmin,
            max: rmax,
            reason: "min_real_range overflows",
        });
    }
    let dr = hi as f64 - lo as f64;
    let dq = qmax as f64 - qmin as f64;
    let scale = dr / dq;
    if scale < f32::MIN_POSITIVE as f64 {
        return Ok((1.0, 0));
    }
    let zp = if symmetric {
        ((qmin as f64 + qmax as f64) / 2.0).round_ties_even()
    } else {
        (qmin as f64 - lo as f64 / scale).round_ties_even()
    };
    Ok((scale as f32, zp as i32))
}

/// QuantizeLinear on one value: `saturate(round_half_even(x / scale) + zp)`,
/// the division in f32 as the ONNX reference. NaN maps to `zp`.
#[inline]
pub fn quantize_value(x: f32, scale: f32, zp: i32, qmin: i32, qmax: i32) -> i32 {
    let r = (x / scale).round_ties_even();
    if r.is_nan() {
        return zp.clamp(qmin, qmax);
    }
    let q = r as f64 + zp as f64;
    q.clamp(qmin as f64, qmax as f64) as i32
}

/// DequantizeLinear on one value: `(q − zp) · scale`.
#[inline]
pub fn dequantize_value(q: i32, scale: f32, zp: i32) -> f32 {
    (q as i64 - zp as i64) as f32 * scale
}

/// Channel count, and elements per channel step, of `shape` along `axis`.
fn axis_layout(shape: &[usize], qp: &QParams) -> Result<(usize, usize), QuantError> {
    match qp.axis {
        None => {
            if qp.len() != 1 {
                return Err(QuantError::Config(format!(
                    "per-tensor parameters hold {} scales",
                    qp.len()
                )));
            }
            Ok((1, 1))
        }
        Some(axis) => {
            let Some(&c) = shape.get(axis) else {
                return Err(QuantError::Config(format!(
                    "axis {axis} is out of range for shape {shape:?}"
                )));
            };
            if c != qp.len() || qp.zero_point.len() != c {
                return Err(QuantError::Config(format!(
                    "axis {axis} of shape {shape:?} has {c} channels but {} scales and {} zero points were given",
                    qp.len(),
                    qp.zero_point.len()
                )));
            }
            Ok((c, shape[axis + 1..].iter().product()))
        }
    }
}

/// Quantizes a float32 tensor to `qp.dtype` (uint8, int8 or int32), per
/// tensor or per channel, bit-exact with ONNX QuantizeLinear.
pub fn quantize(x: &Tensor, qp: &QParams) -> Result<Tensor, QuantError> {
    let data = x.as_slice::<f32>().map_err(|_| QuantError::DType {
        tensor: String::new(),
        dtype: x.dtype(),
    })?;
    let (channels, inner) = axis_layout(x.shape(), qp)?;
    let (qmin, qmax) = qp.dtype.storage_range();
    let q = data.iter().enumerate().map(|(i, &v)| {
        let c = (i / inner) % channels;
        quantize_value(v, qp.scale[c], qp.zero_point[c], qmin, qmax)
    });
    let shape = x.shape().to_vec();
    let t = match qp.dtype {
        QuantDType::U8 => Tensor::from_vec(shape, q.map(|v| v as u8).collect::<Vec<u8>>()),
        QuantDType::I8 => Tensor::from_vec(shape, q.map(|v| v as i8).collect::<Vec<i8>>()),
        QuantDType::I32 => Tensor::from_vec(shape, q.collect::<Vec<i32>>()),
    };
    t.map_err(|e| QuantError::Config(e.to_string()))
}

/// Dequantizes a uint8/int8/int32 tensor to float32.
pub fn dequantize(q: &Tensor, qp: &QParams) -> Result<Tensor, QuantError> {
    let (channels, inner) = axis_layout(q.shape(), qp)?;
    let values: Vec<i32> = match (qp.dtype, q.dtype()) {
        (QuantDType::U8, DType::U8) => q
            .as_slice::<u8>()
            .map(|s| s.iter().map(|&v| v as i32).collect()),
        (QuantDType::I8, DType::I8) => q
            .as_slice::<i8>()
            .map(|s| s.iter().map(|&v| v as i32).collect()),
        (QuantDType::I32, DType::I32) => q.as_slice::<i32>().map(|s| s.to_vec()),
        (_, dtype) => {
            return Err(QuantError::DType {
                tensor: String::new(),
                dtype,
            });
        }
    }
    .map_err(|e| QuantError::Config(e.to_string()))?;
    let out: Vec<f32> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / inner) % channels;
            dequantize_value(v, qp.scale[c], qp.zero_point[c])
        })
        .collect();
    Tensor::from_vec(q.shape().to_vec(), out).map_err(|e| QuantError::Config(e.to_string()))
}

/// Quantizes a bias to int32 with scale `input_scale × weight_scale[c]` and
/// zero point 0, as ORT's `quantize_bias_static_impl`: the scale product in
/// f32, the division and rounding in f64, saturation to int32. One weight
/// scale means per-tensor; otherwise `bias.len()` must equal their count.
pub fn quantize_bias(
    bias: &[f32],
    input_scale: f32,
    weight_scales: &[f32],
) -> Result<(Vec<i32>, QParams), QuantError> {
    let per_channel = weight_scales.len() != 1;
    if per_channel && weight_scales.len() != bias.len() {
        return Err(QuantError::Config(format!(
            "bias has {} elements but {} weight scales were given",
            bias.len(),
            weight_scales.len()
        )));
    }
    let scales: Vec<f32> = weight_scales.iter().map(|&w| input_scale * w).collect();
    let q = bias
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let s = scales[if per_channel { i } else { 0 }] as f64;
            let r = (b as f64 / s).round_ties_even();
            if r.is_nan() {
                0
            } else {
                r.clamp(i32::MIN as f64, i32::MAX as f64) as i32
            }
        })
        .collect();
    let n = scales.len();
    Ok((
        q,
        QParams {
            scale: scales,
            zero_point: vec![0; n],
            axis: per_channel.then_some(0),
            dtype: QuantDType::I32,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qranges_follow_ort() {
        assert_eq!(QuantDType::U8.qrange(false, false), (0, 255));
        assert_eq!(QuantDType::U8.qrange(true, false), (0, 255));
        assert_eq!(QuantDType::U8.qrange(true, true), (0, 127));
        assert_eq!(QuantDType::I8.qrange(false, false), (-128, 127));
        assert_eq!(QuantDType::I8.qrange(true, false), (-127, 127));
        assert_eq!(QuantDType::I8.qrange(true, true), (-64, 64));
    }

    #[test]
    fn scale_zp_reference_cases() {
        // u8 asymmetric: [-1, 3] -> scale 4/255, zp round(1/(4/255)) = round(63.75) = 64.
        let (s, z) = compute_scale_zp(-1.0, 3.0, 0, 255, false, None).unwrap();
        assert_eq!(s, (4.0f64 / 255.0) as f32);
        assert_eq!(z, 64);
        // The range is widened to include 0.
        let (s, z) = compute_scale_zp(2.0, 4.0, 0, 255, false, None).unwrap();
        assert_eq!((s, z), ((4.0f64 / 255.0) as f32, 0));
        // Symmetric int8: zp 0, scale absmax/127.
        let (s, z) = compute_scale_zp(-0.5, 2.54, -127, 127, true, None).unwrap();
        assert_eq!((s, z), ((5.08f32 as f64 / 254.0) as f32, 0));
        // Symmetric uint8: zp = round_half_even(127.5) = 128.
        assert_eq!(
            compute_scale_zp(-1.0, 1.0, 0, 255, true, None).unwrap().1,
            128
        );
        // Empty range.
        assert_eq!(
            compute_scale_zp(0.0, 0.0, 0, 255, false, None).unwrap(),
            (1.0, 0)
        );
        // min_real_range widens a constant range.
        let (s, _) = compute_scale_zp(0.0, 0.0, 0, 255, false, Some(1e-4)).unwrap();
        assert_eq!(s, (1e-4f32 as f64 / 255.0) as f32);
        assert!(compute_scale_zp(f32::NAN, 1.0, 0, 255, false, None).is_err());
        assert!(compute_scale_zp(-1.0, 1.0, 1, 255, false, None).is_err());
    }

    #[test]
    fn power_of_two_scale_covers_range() {
        let cfg = QParamsConfig::npu_i8();
        let (s, z) = qparams_for_range(-0.3, 1.7, &cfg).unwrap();
        assert_eq!(z, 0);
        assert_eq!(s, 1.0 / 64.0); // 1.7/127 = 0.01339 -> 2^-6
        assert!(1.7 / s <= 127.0);
        let exact = qparams_for_range(-1.27, 1.27, &cfg).unwrap().0;
        assert_eq!(exact, 1.0 / 64.0);
        assert_eq!(next_power_of_two(0.25), 0.25);
        assert_eq!(next_power_of_two(0.2500001), 0.5);
        let asym = QParamsConfig {
            power_of_two: true,
            ..QParamsConfig::activation_u8()
        };
        for (lo, hi) in [(-1.0f32, 3.0f32), (-0.01, 5.0), (0.0, 0.9), (-7.0, 0.1)] {
            let (s, z) = qparams_for_range(lo, hi, &asym).unwrap();
            assert_eq!(next_power_of_two(s), s);
            assert!((0..=255).contains(&z));
            let q = |x: f32| quantize_value(x, s, z, 0, 255);
            assert!((dequantize_value(q(lo.min(0.0)), s, z) - lo.min(0.0)).abs() <= s / 2.0);
            assert!((dequantize_value(q(hi.max(0.0)), s, z) - hi.max(0.0)).abs() <= s / 2.0);
        }
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let s = 0.5;
        let q = |x| quantize_value(x, s, 10, 0, 255);
        assert_eq!(q(0.25), 10); // 0.5 -> 0
        assert_eq!(q(0.75), 12); // 1.5 -> 2
        assert_eq!(q(-0.25), 10); // -0.5 -> -0
        assert_eq!(q(-0.75), 8); // -1.5 -> -2
        assert_eq!(q(1000.0), 255);
        assert_eq!(q(-1000.0), 0);
        assert_eq!(q(f32::NAN), 10);
        assert_eq!(quantize_value(f32::INFINITY, 1.0, 0, -128, 127), 127);
    }

    #[test]
    fn per_channel_round_trip() {
        let x = Tensor::from_vec(vec![2, 3], vec![0.1f32, -0.2, 0.3, 10.0, -20.0, 5.0]).unwrap();
        let qp = QParams::from_ranges(
            &[-0.3, -20.0],
            &[0.3, 10.0],
            Some(0),
            &QParamsConfig::weight_i8(),
        )
        .unwrap();
        assert_eq!(qp.zero_point, vec![0, 0]);
        let q = quantize(&x, &qp).unwrap();
        assert_eq!(q.as_slice::<i8>().unwrap(), &[42, -85, 127, 64, -127, 32]);
        let d = dequantize(&q, &qp).unwrap();
        for (a, b) in d
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .zip(x.as_slice::<f32>().unwrap())
        {
            assert!((a - b).abs() <= 20.0 / 127.0 / 2.0 + 1e-6);
        }
        let bad = QParams::per_tensor(1.0, 0, QuantDType::I8);
        let wrong_axis = QParams {
            axis: Some(1),
            ..qp.clone()
        };
        assert!(quantize(&x, &wrong_axis).is_err());
        assert!(
            dequantize(
                &q,
                &QParams {
                    dtype: QuantDType::U8,
                    ..bad
                }
            )
            .is_err()
        );
    }

    #[test]
    fn bias_uses_product_of_scales() {
        let (q, qp) = quantize_bias(&[0.5, -0.25, 1e9], 0.1, &[0.01, 0.02, 0.01]).unwrap();
        assert_eq!(qp.scale[0], 0.1f32 * 0.01f32);
        assert_eq!(
            q[0],
            (0.5f64 / (0.1f32 * 0.01f32) as f64).round_ties_even() as i32
        );
        assert_eq!(q[2], i32::MAX);
        assert_eq!(qp.axis, Some(0));
        let (q, qp) = quantize_bias(&[0.5, -0.5], 0.5, &[0.5]).unwrap();
        assert_eq!((q, qp.axis), (vec![2, -2], None));
        assert!(quantize_bias(&[1.0, 2.0], 0.1, &[0.1, 0.2, 0.3]).is_err());
    }
}
