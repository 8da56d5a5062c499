//! com.microsoft QLinearGlobalAveragePool and QLinearAveragePool, NCHW or
//! NHWC (`channels_last`), with ORT's arithmetic.

use super::contrib::QInput;
use super::{QType, int_values, scalar_scale, scalar_zero_point};
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::Tensor;

pub fn register(r: &mut Registry) {
    r.register("com.microsoft", "QLinearGlobalAveragePool", build_global);
    r.register("com.microsoft", "QLinearAveragePool", build_average);
}

/// Splits `[N, C, S...]` (or `[N, S..., C]`) into (N, C, spatial dims).
fn split(shape: &[usize], channels_last: bool) -> Result<(usize, usize, Vec<usize>), OpError> {
    if shape.len() < 3 {
        bail_invalid!("input 0 (X) has shape {shape:?}, expected rank >= 3");
    }
    let r = shape.len();
    Ok(if channels_last {
        (shape[0], shape[r - 1], shape[1..r - 1].to_vec())
    } else {
        (shape[0], shape[1], shape[2..].to_vec())
    })
}

fn join(n: usize, c: usize, spatial: &[usize], channels_last: bool) -> Vec<usize> {
    let mut s = vec![n];
    if !channels_last {
        s.push(c);
    }
    s.extend(spatial);
    if channels_last {
        s.push(c);
    }
    s
}

/// Flat offset of (n, c, spatial index `s`) in an image of `area` positions.
fn offset(
    n: usize,
    c: usize,
    s: usize,
    channels: usize,
    area: usize,
    channels_last: bool,
) -> usize {
    if channels_last {
        (n * area + s) * channels + c
    } else {
        (n * channels + c) * area + s
    }
}

#[derive(Debug)]
struct QLinearGlobalAveragePool {
    channels_last: bool,
}

fn build_global(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(QLinearGlobalAveragePool {
        channels_last: ctx.node.attr_int_or("channels_last", 0)? != 0,
    }))
}

impl Op for QLinearGlobalAveragePool {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = QInput::read(inputs, 0, "x")?;
        let y_scale = scalar_scale(required(inputs, 3)?, "input 3 (y_scale)")?;
        let y_zp = scalar_zero_point(optional(inputs, 4), "input 4 (y_zero_point)")?;
        let q = QType::of(x.t.dtype(), "input 0 (X)")?;
        let cl = self.channels_last;
        let (n, c, spatial) = split(x.t.shape(), cl)?;
        let area: usize = spatial.iter().product();
        if area == 0 {
            bail_invalid!("input 0 (X) has an empty spatial extent {spatial:?}");
        }
        let xv = int_values(x.t, "input 0 (X)")?;
        // ORT: requantize the i32 sum with scale x_scale / (y_scale * area).
        let scale = x.scale / (y_scale * area as f32);
        let bias = -(x.zp as i64) * area as i64;
        // Sums over contiguous runs: pixel rows of C when channels_last,
        // planes of `area` otherwise (the output is [N, C] in both layouts).
        let mut sums = vec![0i64; n * c];
        if c > 0 {
            for (img, acc) in xv.chunks_exact(c * area).zip(sums.chunks_exact_mut(c)) {
                if cl {
                    for px in img.chunks_exact(c) {
                        for (a, &v) in acc.iter_mut().zip(px) {
                            *a += v as i64;
                        }
                    }
                } else {
                    for (a, plane) in acc.iter_mut().zip(img.chunks_exact(area)) {
                        *a = plane.iter().map(|&v| v as i64).sum();
                    }
                }
            }
        }
        let y: Vec<i32> = sums
            .iter()
            .map(|&sum| {
                let acc = (sum + bias) as f32;
                q.saturate((acc * scale).round_ties_even() as f64 + y_zp as f64)
            })
            .collect();
        let ones = vec![1; spatial.len()];
        Ok(vec![q.tensor(join(n, c, &ones, cl), y)?])
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

#[derive(Debug)]
struct QLinearAveragePool {
    channels_last: bool,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    pads: Vec<usize>,
    auto_pad: AutoPad,
    ceil_mode: bool,
    count_include_pad: bool,
}

fn build_average(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let node = ctx.node;
    let kernel = node
        .attr_ints("kernel_shape")?
        .ok_or_else(|| OpError::Invalid("attribute kernel_shape is required".into()))?;
    let nd = kernel.len();
    let positive = |v: &[i64], name: &str, min: i64| -> Result<Vec<usize>, OpError> {
        if let Some(bad) = v.iter().find(|&&x| x < min || x > super::conv::MAX_ATTR) {
            bail_invalid!(
                "attribute {name} holds {bad}, must be in {min}..={}",
                super::conv::MAX_ATTR
            );
        }
        Ok(v.iter().map(|&x| x as usize).collect())
    };
    let strides = match node.attr_ints("strides")? {
        Some(s) if s.len() != nd => {
            bail_invalid!("attribute strides has {} values, expected {nd}", s.len())
        }
        Some(s) => positive(s, "strides", 1)?,
        None => vec![1; nd],
    };
    let pads = match node.attr_ints("pads")? {
        Some(p) if p.len() != 2 * nd => {
            bail_invalid!("attribute pads has {} values, expected {}", p.len(), 2 * nd)
        }
        Some(p) => positive(p, "pads", 0)?,
        None => vec![0; 2 * nd],
    };
    let auto_pad = match node.attr_string_or("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => bail_invalid!("attribute auto_pad is '{other}'"),
    };
    Ok(Box::new(QLinearAveragePool {
        channels_last: node.attr_int_or("channels_last", 0)? != 0,
        kernel: positive(kernel, "kernel_shape", 1)?,
        strides,
        pads,
        auto_pad,
        ceil_mode: node.attr_int_or("ceil_mode", 0)? != 0,
        count_include_pad: node.attr_int_or("count_include_pad", 0)? != 0,
    }))
}

/// Output sizes and (pad begin, pad end) per spatial dim.
type Geometry = (Vec<usize>, Vec<(usize, usize)>);

impl QLinearAveragePool {
    /// Output size and (pad begin, pad end) of each spatial dim.
    fn geometry(&self, input: &[usize]) -> Result<Geometry, OpError> {
        let nd = self.kernel.len();
        if input.len() != nd {
            bail_invalid!(
                "kernel_shape has {nd} dims but X has {} spatial dims",
                input.len()
            );
        }
        let mut out = Vec::new();
        let mut pads = Vec::new();
        for (d, &i) in input.iter().enumerate() {
            let (k, s) = (self.kernel[d], self.strides[d]);
            let (pb, pe) = match self.auto_pad {
                AutoPad::NotSet => (self.pads[d], self.pads[d + nd]),
                AutoPad::Valid => (0, 0),
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let o = i.div_ceil(s);
                    let total = ((o.max(1) - 1) * s + k).saturating_sub(i);
                    if self.auto_pad == AutoPad::SameUpper {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    }
                }
            };
            if i + pb + pe < k {
                bail_invalid!(
                    "spatial dim {d}: input {i} with pads ({pb}, {pe}) is smaller than the kernel {k}"
                );
            }
            let span = i + pb + pe - k;
            let mut o = if self.ceil_mode {
                span.div_ceil(s) + 1
            } else {
                span / s + 1
            };
            if self.ceil_mode && (o - 1) * s >= i + pb {
                o -= 1;
            }
            out.push(o);
            pads.push((pb, pe));
        }
        Ok((out, pads))
    }
}

impl Op for QLinearAveragePool {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = QInput::read(inputs, 0, "x")?;
        let y_scale = scalar_scale(required(inputs, 3)?, "input 3 (y_scale)")?;
        let y_zp = scalar_zero_point(optional(inputs, 4), "input 4 (y_zero_point)")?;
        let q = QType::of(x.t.dtype(), "input 0 (X)")?;
        let cl = self.channels_last;
        let (n, c, spatial) = split(x.t.shape(), cl)?;
        let (out, pads) = self.geometry(&spatial)?;
        let xv = x.dequantized("input 0 (X)")?;
        let area: usize = spatial.iter().product();
        let out_area: usize = quench_ir::tensor::checked_numel(&out)?;
        let nd = out.len();
        let mut y = vec![0i32; n * c * out_area];
        let mut oc = vec![0usize; nd];
        for op in 0..out_area {
            let mut lo = vec![0usize; nd];
            let mut hi = vec![0usize; nd];
            let mut with_pad = 1usize;
            for d in 0..nd {
                let start = (oc[d] * self.strides[d]) as i64 - pads[d].0 as i64;
                let end_pad = (start + self.kernel[d] as i64).min((spatial[d] + pads[d].1) as i64);
                with_pad *= (end_pad - start) as usize;
                lo[d] = start.max(0) as usize;
                hi[d] = (end_pad.min(spatial[d] as i64)).max(lo[d] as i64) as usize;
            }
            let window: Vec<usize> = window_offsets(&lo, &hi, &spatial);
            let count = if self.count_include_pad {
                with_pad
            } else {
                window.len()
            };
            for b in 0..n {
                for ch in 0..c {
                    let sum: f32 = window
                        .iter()
                        .map(|&s| xv[offset(b, ch, s, c, area, cl)])
                        .sum();
                    let v = if count == 0 { 0.0 } else { sum / count as f32 };
                    // ORT adds the zero point before rounding (nearbyintf(v / s + zp)),
                    // which moves ties with an odd zero point.
                    y[offset(b, ch, op, c, out_area, cl)] =
                        q.saturate((v / y_scale + y_zp as f32).round_ties_even() as f64);
                }
            }
            for d in (0..nd).rev() {
                oc[d] += 1;
                if oc[d] < out[d] {
                    break;
                }
                oc[d] = 0;
            }
        }
        Ok(vec![q.tensor(join(n, c, &out, cl), y)?])
    }
}

/// Flat spatial offsets of the box `lo..hi` in an image of shape `dims`.
fn window_offsets(lo: &[usize], hi: &[usize], dims: &[usize]) -> Vec<usize> {
    let mut offs = vec![0usize];
    for d in 0..dims.len() {
        offs = offs
            .iter()
            .flat_map(|&o| (lo[d]..hi[d]).map(move |i| o * dims[d] + i))
            .collect();
    }
    offs
}

#[cfg(test)]
mod tests {
    use crate::ops::quant::test_util::{run, t};
    use quench_ir::{Attr, Node, Tensor};

    fn ms(op: &str, inputs: &[&str]) -> Node {
        let mut n = Node::new(op, "n", inputs, &["y"]);
        n.domain = "com.microsoft".into();
        n
    }

    #[test]
    fn global_average_pool_nchw_and_nhwc() {
        let (s, z) = (Tensor::scalar(0.5f32), Tensor::scalar(2u8));
        let x = t(&[1, 2, 2, 2], vec![2u8, 4, 6, 8, 10, 10, 10, 11]);
        let n = ms("QLinearGlobalAveragePool", &["x", "xs", "xz", "ys", "yz"]);
        let out = run(n, 1, &[Some(&x), Some(&s), Some(&z), Some(&s), Some(&z)]).unwrap();
        assert_eq!(out[0].shape(), &[1, 2, 1, 1]);
        // means 5 and 10.25 -> 5 and 10 (10.25 rounds down)
        assert_eq!(out[0].as_slice::<u8>().unwrap(), &[5, 10]);
        let x = t(&[1, 2, 2, 2], vec![2u8, 10, 4, 10, 6, 10, 8, 11]);
        let n = ms("QLinearGlobalAveragePool", &["x", "xs", "xz", "ys", "yz"])
            .with_attr("channels_last", Attr::Int(1));
        let out = run(n, 1, &[Some(&x), Some(&s), Some(&z), Some(&s), Some(&z)]).unwrap();
        assert_eq!(out[0].shape(), &[1, 1, 1, 2]);
        assert_eq!(out[0].as_slice::<u8>().unwrap(), &[5, 10]);
    }

    #[test]
    fn average_pool_excludes_pads_by_default() {
        let (s, z) = (Tensor::scalar(1f32), Tensor::scalar(0u8));
        let x = t(&[1, 1, 2, 2], vec![4u8, 8, 12, 16]);
        let n = ms("QLinearAveragePool", &["x", "xs", "xz", "ys", "yz"])
            .with_attr("kernel_shape", Attr::Ints(vec![2, 2]))
            .with_attr("pads", Attr::Ints(vec![1, 1, 0, 0]));
        let out = run(n, 1, &[Some(&x), Some(&s), Some(&z), Some(&s), Some(&z)]).unwrap();
        assert_eq!(out[0].shape(), &[1, 1, 2, 2]);
        assert_eq!(out[0].as_slice::<u8>().unwrap(), &[4, 6, 8, 10]);
        let missing = ms("QLinearAveragePool", &["x", "xs"]);
        assert!(run(missing, 1, &[Some(&x), Some(&s)]).is_err());
    }

    #[test]
    fn average_pool_adds_the_zero_point_before_rounding_as_ort_does() {
        // Mean 0.5 with y_zero_point 1: nearbyint(0.5 + 1) = 2, not round(0.5) + 1 = 1.
        let (s, xz, yz) = (
            Tensor::scalar(1f32),
            Tensor::scalar(0u8),
            Tensor::scalar(1u8),
        );
        let x = t(&[1, 1, 1, 2], vec![0u8, 1]);
        let n = ms("QLinearAveragePool", &["x", "xs", "xz", "ys", "yz"])
            .with_attr("kernel_shape", Attr::Ints(vec![1, 2]));
        let out = run(n, 1, &[Some(&x), Some(&s), Some(&xz), Some(&s), Some(&yz)]).unwrap();
        assert_eq!(out[0].as_slice::<u8>().unwrap(), &[2]);
    }
}
