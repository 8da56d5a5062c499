//! Resize (opsets 10-19) and the older Upsample. Nearest mode is a per-axis
//! index gather, generic over the element type; linear and cubic are
//! separable weighted passes, one per resized axis, computed in f32 for f32
//! data and in f64 otherwise (integers are rounded and saturated back).

mod kernels;
mod taps;

use crate::op::{optional, required};
use crate::ops::shape::common::{FILL, Movable, elems, gather_axes, norm_axes, with_movable, wrap};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid, bail_unsupported};
use kernels::Real;
use quench_ir::{DType, Tensor, TensorData};
use taps::{Axis, Coord, Interp, Nearest};

pub fn register(r: &mut Registry) {
    r.register("", "Resize", build_resize);
    r.register("", "Upsample", build_upsample);
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Nearest(Nearest),
    Interp(Interp),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Policy {
    Stretch,
    NotLarger,
    NotSmaller,
}

#[derive(Debug)]
struct Resize {
    mode: Mode,
    coord: Coord,
    exclude_outside: bool,
    extrapolation: f32,
    antialias: bool,
    axes: Option<Vec<i64>>,
    policy: Policy,
    /// Input positions of roi, scales and sizes (they moved across opsets).
    roi_input: Option<usize>,
    scales_input: Option<usize>,
    sizes_input: Option<usize>,
    /// Upsample-7 keeps its scales in an attribute.
    attr_scales: Option<Vec<f32>>,
}

fn parse_mode(ctx: &BuildCtx, modern: bool) -> Result<Mode, OpError> {
    let n = ctx.node;
    let nearest = if modern {
        match n
            .attr_string_or("nearest_mode", "round_prefer_floor")?
            .as_str()
        {
            "round_prefer_floor" => Nearest::RoundPreferFloor,
            "round_prefer_ceil" => Nearest::RoundPreferCeil,
            "floor" => Nearest::Floor,
            "ceil" => Nearest::Ceil,
            m => bail_invalid!("unknown nearest_mode '{m}'"),
        }
    } else {
        Nearest::Simple
    };
    Ok(match n.attr_string_or("mode", "nearest")?.as_str() {
        "nearest" => Mode::Nearest(nearest),
        "linear" | "bilinear" => Mode::Interp(Interp::Linear),
        "cubic" if modern => Mode::Interp(Interp::Cubic(
            n.attr_float_or("cubic_coeff_a", -0.75)? as f64
        )),
        m => bail_invalid!("unknown mode '{m}'"),
    })
}

fn build_resize(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let n = ctx.node;
    let modern = ctx.opset >= 11;
    let coord = if modern {
        match n
            .attr_string_or("coordinate_transformation_mode", "half_pixel")?
            .as_str()
        {
            "half_pixel" => Coord::HalfPixel,
            "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
            "pytorch_half_pixel" => Coord::PytorchHalfPixel,
            "align_corners" => Coord::AlignCorners,
            "asymmetric" => Coord::Asymmetric,
            "tf_half_pixel_for_nn" => Coord::TfHalfPixelForNn,
            "tf_crop_and_resize" => Coord::TfCropAndResize,
            m => bail_invalid!("unknown coordinate_transformation_mode '{m}'"),
        }
    } else {
        Coord::Asymmetric
    };
    let policy = match n
        .attr_string_or("keep_aspect_ratio_policy", "stretch")?
        .as_str()
    {
        "stretch" => Policy::Stretch,
        "not_larger" => Policy::NotLarger,
        "not_smaller" => Policy::NotSmaller,
        p => bail_invalid!("unknown keep_aspect_ratio_policy '{p}'"),
    };
    let mode = parse_mode(ctx, modern)?;
    let antialias = n.attr_int_or("antialias", 0)? != 0;
    if antialias && matches!(mode, Mode::Nearest(_)) {
        bail_invalid!("antialias is not defined for nearest mode");
    }
    Ok(Box::new(Resize {
        mode,
        coord,
        exclude_outside: n.attr_int_or("exclude_outside", 0)? != 0,
        extrapolation: n.attr_float_or("extrapolation_value", 0.0)?,
        antialias,
        axes: n.attr_ints("axes")?.map(<[i64]>::to_vec),
        policy,
        roi_input: modern.then_some(1),
        scales_input: Some(if modern { 2 } else { 1 }),
        sizes_input: modern.then_some(3),
        attr_scales: None,
    }))
}

fn build_upsample(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let attr_scales = ctx.node.attr_floats("scales")?.map(<[f32]>::to_vec);
    Ok(Box::new(Resize {
        mode: parse_mode(ctx, false)?,
        coord: Coord::Asymmetric,
        exclude_outside: false,
        extrapolation: 0.0,
        antialias: false,
        axes: None,
        policy: Policy::Stretch,
        roi_input: None,
        scales_input: attr_scales.is_none().then_some(1),
        sizes_input: None,
        attr_scales,
    }))
}

/// A non-empty optional input.
fn present<'a>(inputs: &[Option<&'a Tensor>], i: Option<usize>) -> Option<&'a Tensor> {
    i.and_then(|i| optional(inputs, i))
        .filter(|t| t.numel() > 0)
}

impl Resize {
    /// Per-axis geometry of the whole tensor.
    fn geometry(&self, x: &Tensor, inputs: &[Option<&Tensor>]) -> Result<Vec<Axis>, OpError> {
        let r = x.rank();
        let axes = match &self.axes {
            Some(a) => norm_axes(a, r, "axes")?,
            None => (0..r).collect(),
        };
        let k = axes.len();
        let mut geo: Vec<Axis> = x
            .shape()
            .iter()
            .map(|&d| Axis {
                in_w: d,
                out_w: d,
                scale: 1.0,
                roi: (0.0, 1.0),
            })
            .collect();
        if let Some(roi) = present(inputs, self.roi_input)
            && self.coord == Coord::TfCropAndResize
        {
            let roi = roi.to_f32_vec()?;
            if roi.len() != 2 * k {
                bail_invalid!("input 1 (roi) has {} values, expected {}", roi.len(), 2 * k);
            }
            for (i, &a) in axes.iter().enumerate() {
                geo[a].roi = (roi[i] as f64, roi[k + i] as f64);
            }
        }
        let scales = match &self.attr_scales {
            Some(s) => Some(s.clone()),
            None => present(inputs, self.scales_input)
                .map(|t| t.to_f32_vec())
                .transpose()?,
        };
        let sizes = present(inputs, self.sizes_input)
            .map(|t| t.to_i64_vec())
            .transpose()?;
        match (scales, sizes) {
            (Some(_), Some(_)) => bail_invalid!("only one of scales and sizes may be given"),
            (None, None) => bail_invalid!("one of scales and sizes must be given"),
            (Some(s), None) => {
                if s.len() != k || s.iter().any(|&v| !(v > 0.0 && v.is_finite())) {
                    bail_invalid!("scales {s:?} must hold {k} positive values");
                }
                for (i, &a) in axes.iter().enumerate() {
                    let g = &mut geo[a];
                    g.scale = s[i] as f64;
                    g.out_w = (g.scale * g.in_w as f64).floor() as usize;
                }
            }
            (None, Some(s)) => {
                if s.len() != k || s.iter().any(|&v| v < 0) {
                    bail_invalid!("sizes {s:?} must hold {k} non-negative values");
                }
                let in_dims: Vec<usize> = geo.iter().map(|g| g.in_w).collect();
                let ratio = |i: usize| s[i] as f64 / in_dims[axes[i]] as f64;
                let common = match self.policy {
                    Policy::Stretch => None,
                    Policy::NotLarger => Some((0..k).map(ratio).fold(f64::INFINITY, f64::min)),
                    Policy::NotSmaller => Some((0..k).map(ratio).fold(0.0, f64::max)),
                };
                for (i, &a) in axes.iter().enumerate() {
                    let g = &mut geo[a];
                    match common {
                        None => {
                            g.scale = ratio(i);
                            g.out_w = s[i] as usize;
                        }
                        Some(c) => {
                            g.scale = c;
                            g.out_w = (c * g.in_w as f64 + 0.5) as usize;
                        }
                    }
                }
            }
        }
        let out: Vec<usize> = geo.iter().map(|g| g.out_w).collect();
        quench_ir::tensor::checked_numel(&out)?;
        Ok(geo)
    }

    fn is_identity(&self, g: &Axis) -> bool {
        (g.scale - 1.0).abs() <= 1e-9
            && g.out_w == g.in_w
            && (self.coord != Coord::TfCropAndResize || g.roi == (0.0, 1.0))
    }
}

impl Op for Resize {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let geo = self.geometry(x, inputs)?;
        let out_shape: Vec<usize> = geo.iter().map(|g| g.out_w).collect();
        if x.numel() == 0 || out_shape.contains(&0) {
            return Ok(vec![Tensor::zeros(x.dtype(), out_shape)?]);
        }
        let y = match self.mode {
            Mode::Nearest(nm) => {
                let maps: Vec<Vec<usize>> = geo
                    .iter()
                    .map(|g| {
                        if self.is_identity(g) {
                            (0..g.in_w).collect()
                        } else {
                            g.nearest_map(self.coord, nm)
                        }
                    })
                    .collect();
                let fill = scalar_of(x.dtype(), self.extrapolation as f64)?;
                with_movable!(x.dtype(), T => nearest::<T>(x, &maps, &fill, ctx.threads))?
            }
            Mode::Interp(interp) => self.interpolate(x, &geo, interp, ctx.threads)?,
        };
        Ok(vec![y])
    }
}

fn nearest<T: Movable>(
    x: &Tensor,
    maps: &[Vec<usize>],
    fill: &Tensor,
    threads: usize,
) -> Result<Tensor, OpError> {
    let src = elems::<T>(x, "input 0")?;
    let fill = elems::<T>(fill, "extrapolation_value")
        .map(|f| f[0].clone())
        .unwrap_or_default();
    let shape: Vec<usize> = maps.iter().map(Vec::len).collect();
    let r = x.rank();
    let leading_identity = maps[..r.saturating_sub(2)]
        .iter()
        .zip(x.shape())
        .all(|(m, &d)| m.len() == d && m.iter().enumerate().all(|(i, &v)| i == v));
    let no_fill = maps.iter().all(|m| !m.contains(&FILL));
    let v = if r >= 2 && leading_identity && no_fill {
        let planes = x.shape()[..r - 2].iter().product();
        let hw = (x.shape()[r - 2], x.shape()[r - 1]);
        kernels::nearest_2d(src, planes, hw, (&maps[r - 2], &maps[r - 1]), threads)
    } else {
        gather_axes(src, x.shape(), maps, &fill)
    };
    wrap(shape, v, x.dtype())
}

/// A scalar of `dtype` holding `v` (zero for types without a numeric form).
fn scalar_of(dtype: DType, v: f64) -> Result<Tensor, OpError> {
    Ok(match dtype {
        DType::F32 => Tensor::scalar(v as f32),
        DType::F64 => Tensor::scalar(v),
        DType::I8 => Tensor::scalar(v as i8),
        DType::U8 => Tensor::scalar(v as u8),
        DType::I16 => Tensor::scalar(v as i16),
        DType::U16 => Tensor::scalar(v as u16),
        DType::I32 => Tensor::scalar(v as i32),
        DType::U32 => Tensor::scalar(v as u32),
        DType::I64 => Tensor::scalar(v as i64),
        DType::U64 => Tensor::scalar(v as u64),
        d if d.size_of().is_some() || d == DType::String => Tensor::zeros(d, vec![])?,
        d => bail_unsupported!("Resize of {d}"),
    })
}

impl Resize {
    /// Runs one separable pass per resized axis.
    fn passes<F: Real>(
        &self,
        src: Vec<F>,
        shape: &[usize],
        geo: &[Axis],
        interp: Interp,
        threads: usize,
    ) -> Vec<F> {
        let mut cur = src;
        let mut dims = shape.to_vec();
        let fill = F::of(self.extrapolation as f64);
        // Shrinking axes first and growing ones last keeps the intermediate
        // small; among equal ratios the last axis (a gather) goes first so the
        // contiguous row passes do the bulk of the work.
        let mut order: Vec<usize> = (0..geo.len())
            .filter(|&a| !self.is_identity(&geo[a]))
            .collect();
        let ratio = |a: usize| geo[a].out_w as f64 / geo[a].in_w as f64;
        order.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)).then(b.cmp(&a)));
        for a in order {
            let g = &geo[a];
            let t = g.taps(self.coord, interp, self.antialias, self.exclude_outside);
            let outer: usize = dims[..a].iter().product();
            let inner: usize = dims[a + 1..].iter().product();
            cur = kernels::pass(&cur, outer, g.in_w, inner, &t, fill, threads);
            dims[a] = g.out_w;
        }
        cur
    }

    fn interpolate(
        &self,
        x: &Tensor,
        geo: &[Axis],
        interp: Interp,
        threads: usize,
    ) -> Result<Tensor, OpError> {
        let shape: Vec<usize> = geo.iter().map(|g| g.out_w).collect();
        macro_rules! via_f64 {
            ($($v:ident),*) => {
                match x.data() {
                    TensorData::F32(v) => TensorData::F32(self.passes(v.clone(), x.shape(), geo, interp, threads)),
                    TensorData::F64(v) => TensorData::F64(self.passes(v.clone(), x.shape(), geo, interp, threads)),
                    $( TensorData::$v(v) => {
                        let f: Vec<f64> = v.iter().map(|&e| e as f64).collect();
                        let out = self.passes(f, x.shape(), geo, interp, threads);
                        // Saturating float-to-int `as`, after rounding like numpy.
                        TensorData::$v(out.iter().map(|&e| e.round_ties_even() as _).collect())
                    } )*
                    _ => bail_unsupported!("linear/cubic Resize of {} tensors", x.dtype()),
                }
            };
        }
        let data = via_f64!(I8, U8, I16, U16, I32, U32, I64, U64);
        Ok(Tensor::new(shape, data)?)
    }
}

#[cfg(test)]
mod tests;
