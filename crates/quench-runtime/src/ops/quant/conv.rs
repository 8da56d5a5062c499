//! QLinearConv and ConvInteger: convolution on zero-point-shifted integers
//! with i32 accumulators, then (QLinearConv) requantization.

use super::conv_fast::{self, FastW, OutKind};
use super::{QType, check_scales, f32_values, int_values, scalar_scale, scalar_zero_point};
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::{Node, Tensor};
use quench_kernels::int8::Post;

pub fn register(r: &mut Registry) {
    r.register("", "QLinearConv", build_qlinear);
    r.register(
        crate::optimize::DOMAIN,
        crate::optimize::NHWC_QLINEAR_CONV,
        build_nhwc_qlinear,
    );
    r.register("", "ConvInteger", build_integer);
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Conv attributes, as written; checked against shapes at run time.
#[derive(Clone, Debug)]
pub(crate) struct ConvAttrs {
    pub(crate) group: usize,
    pub(crate) auto_pad: AutoPad,
    pub(crate) kernel_shape: Option<Vec<i64>>,
    pub(crate) strides: Option<Vec<i64>>,
    pub(crate) dilations: Option<Vec<i64>>,
    pub(crate) pads: Option<Vec<i64>>,
}

impl ConvAttrs {
    pub fn read(node: &Node) -> Result<ConvAttrs, OpError> {
        let group = node.attr_int_or("group", 1)?;
        if group < 1 {
            bail_invalid!("attribute group is {group}, must be >= 1");
        }
        let auto_pad = match node.attr_string_or("auto_pad", "NOTSET")?.as_str() {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            other => bail_invalid!("attribute auto_pad is '{other}'"),
        };
        let own = |n: &str| -> Result<Option<Vec<i64>>, OpError> {
            Ok(node.attr_ints(n)?.map(<[i64]>::to_vec))
        };
        Ok(ConvAttrs {
            group: group as usize,
            auto_pad,
            kernel_shape: own("kernel_shape")?,
            strides: own("strides")?,
            dilations: own("dilations")?,
            pads: own("pads")?,
        })
    }
}

/// Bound on strides, dilations and pads, so geometry arithmetic cannot overflow.
pub(crate) const MAX_ATTR: i64 = 1 << 31;

/// Spatial geometry of one convolution, resolved against real shapes.
struct Geom {
    out: Vec<usize>,
    /// For each (output position, kernel position), the input offset or
    /// `usize::MAX` where the kernel reads padding.
    offsets: Vec<usize>,
    kernel_len: usize,
}

fn geometry(a: &ConvAttrs, input: &[usize], kernel: &[usize]) -> Result<Geom, OpError> {
    let nd = input.len();
    let list =
        |v: &Option<Vec<i64>>, name: &str, len: usize, min: i64| -> Result<Vec<i64>, OpError> {
            match v {
                None => Ok(vec![if min == 0 { 0 } else { 1 }; len]),
                Some(v) if v.len() != len => {
                    bail_invalid!("attribute {name} has {} values, expected {len}", v.len())
                }
                Some(v) => {
                    if let Some(bad) = v.iter().find(|&&x| x < min || x > MAX_ATTR) {
                        bail_invalid!(
                            "attribute {name} holds {bad}, must be in {min}..={MAX_ATTR}"
                        );
                    }
                    Ok(v.clone())
                }
            }
        };
    if let Some(ks) = &a.kernel_shape
        && (ks.len() != nd || ks.iter().zip(kernel).any(|(&k, &w)| k != w as i64))
    {
        bail_invalid!(
            "attribute kernel_shape {ks:?} disagrees with the weight's spatial shape {kernel:?}"
        );
    }
    if kernel.contains(&0) {
        bail_invalid!("weight has an empty spatial shape {kernel:?}");
    }
    let strides = list(&a.strides, "strides", nd, 1)?;
    let dil = list(&a.dilations, "dilations", nd, 1)?;
    let mut pads = list(&a.pads, "pads", 2 * nd, 0)?;
    let mut out = Vec::with_capacity(nd);
    for d in 0..nd {
        let (i, s) = (input[d] as i64, strides[d]);
        let dk = (kernel[d] as i64 - 1) * dil[d] + 1;
        match a.auto_pad {
            AutoPad::NotSet => {}
            AutoPad::Valid => {
                pads[d] = 0;
                pads[d + nd] = 0;
            }
            AutoPad::SameUpper | AutoPad::SameLower => {
                let o = (i + s - 1) / s;
                let total = ((o - 1) * s + dk - i).max(0);
                let small = total / 2;
                let (b, e) = if a.auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                pads[d] = b;
                pads[d + nd] = e;
            }
        }
        let span = i + pads[d] + pads[d + nd];
        if span < dk {
            bail_invalid!(
                "spatial dim {d}: input {i} with pads ({}, {}) is smaller than the dilated kernel {dk}",
                pads[d],
                pads[d + nd]
            );
        }
        out.push(((span - dk) / s + 1) as usize);
    }
    let n_out = quench_ir::tensor::checked_numel(&out)?;
    let kernel_len: usize = kernel.iter().product();
    let table = quench_ir::tensor::checked_numel(&[n_out, kernel_len])?;
    let mut offsets = Vec::with_capacity(table);
    let mut oc = vec![0usize; nd];
    for _ in 0..n_out {
        let mut kc = vec![0usize; nd];
        for _ in 0..kernel_len {
            let mut off = 0usize;
            let mut inside = true;
            for d in 0..nd {
                let p = oc[d] as i64 * strides[d] + kc[d] as i64 * dil[d] - pads[d];
                if p < 0 || p >= input[d] as i64 {
                    inside = false;
                    break;
                }
                off = off * input[d] + p as usize;
            }
            offsets.push(if inside { off } else { usize::MAX });
            step(&mut kc, kernel);
        }
        step(&mut oc, &out);
    }
    Ok(Geom {
        out,
        offsets,
        kernel_len,
    })
}

/// Advances a row-major multi-index.
fn step(idx: &mut [usize], shape: &[usize]) {
    for d in (0..idx.len()).rev() {
        idx[d] += 1;
        if idx[d] < shape[d] {
            return;
        }
        idx[d] = 0;
    }
}

/// Integer convolution of already zero-point-shifted `x` and `w`, in i32
/// (wrapping, as ONNX allows), starting each output channel from `bias`.
pub(crate) fn conv_i32(
    a: &ConvAttrs,
    x: &[i32],
    xs: &[usize],
    w: &[i32],
    ws: &[usize],
    bias: Option<&[i32]>,
) -> Result<(Vec<i32>, Vec<usize>), OpError> {
    if xs.len() < 3 {
        bail_invalid!("input 0 (X) has shape {xs:?}, expected rank >= 3 (N, C, spatial...)");
    }
    if ws.len() != xs.len() {
        bail_invalid!(
            "weight has shape {ws:?}, expected rank {} like X {xs:?}",
            xs.len()
        );
    }
    let (n, c, m, cg) = (xs[0], xs[1], ws[0], ws[1]);
    let g = a.group;
    if cg * g != c || m % g != 0 {
        bail_invalid!(
            "weight shape {ws:?} does not fit X channels {c} with group {g} (need W[1]*group == C and W[0] divisible by group)"
        );
    }
    if let Some(b) = bias
        && b.len() != m
    {
        bail_invalid!(
            "bias has {} values, expected {m} (one per output channel)",
            b.len()
        );
    }
    let geo = geometry(a, &xs[2..], &ws[2..])?;
    let in_len: usize = xs[2..].iter().product();
    let out_len: usize = geo.out.iter().product();
    let kl = geo.kernel_len;
    let mut shape = vec![n, m];
    shape.extend(&geo.out);
    let mut y = vec![0i32; quench_ir::tensor::checked_numel(&shape)?];
    let mg = m / g;
    for b in 0..n {
        for oc in 0..m {
            let grp = oc / mg;
            let init = bias.map_or(0, |bv| bv[oc]);
            let yrow = &mut y[(b * m + oc) * out_len..][..out_len];
            for (p, yv) in yrow.iter_mut().enumerate() {
                let offs = &geo.offsets[p * kl..][..kl];
                let mut acc = init;
                for ic in 0..cg {
                    let xplane = &x[(b * c + grp * cg + ic) * in_len..][..in_len];
                    let wk = &w[(oc * cg + ic) * kl..][..kl];
                    for (&o, &wv) in offs.iter().zip(wk) {
                        if o != usize::MAX {
                            acc = acc.wrapping_add(xplane[o].wrapping_mul(wv));
                        }
                    }
                }
                *yv = acc;
            }
        }
    }
    Ok((y, shape))
}

/// `x - zp` for a scalar zero point.
fn shift(v: Vec<i32>, zp: i32) -> Vec<i32> {
    v.into_iter().map(|x| x.wrapping_sub(zp)).collect()
}

/// `w - zp[m]` for a scalar or per-output-channel zero point.
fn shift_weights(
    mut w: Vec<i32>,
    ws: &[usize],
    zp: &[i32],
    what: &str,
) -> Result<Vec<i32>, OpError> {
    let m = ws.first().copied().unwrap_or(0);
    if zp.len() != 1 && zp.len() != m {
        bail_invalid!(
            "{what} has {} values, expected 1 or {m} (one per output channel)",
            zp.len()
        );
    }
    let per = w.len().checked_div(m).unwrap_or(0);
    for (i, v) in w.iter_mut().enumerate() {
        let k = if zp.len() == 1 { 0 } else { i / per };
        *v = v.wrapping_sub(zp[k]);
    }
    Ok(w)
}

/// Weights (input `w`) prepared at build when they and their zero point (input `zp`) are constant.
fn fast_weights(ctx: &BuildCtx, attrs: &ConvAttrs, w: usize, zp: usize) -> Option<FastW> {
    FastW::new(
        ctx.constant_input(w)?,
        super::fast::const_or_absent(ctx, zp)?,
        attrs.group,
    )
}

/// QLinearConv's bias, which must be int32.
fn bias_of(b: &Tensor) -> Result<&[i32], OpError> {
    b.as_slice::<i32>().map_err(|_| {
        OpError::Invalid(format!(
            "input 8 (B) has type {}, expected int32",
            b.dtype()
        ))
    })
}

#[derive(Debug)]
struct QLinearConv {
    attrs: ConvAttrs,
    fast: Option<FastW>,
    /// X and Y are `[N, H, W, C]` (the NHWC rewrite's `NhwcQLinearConv`).
    nhwc: bool,
}

fn build_qlinear(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let attrs = ConvAttrs::read(ctx.node)?;
    let fast = fast_weights(ctx, &attrs, 3, 5);
    Ok(Box::new(QLinearConv {
        attrs,
        fast,
        nhwc: false,
    }))
}

fn build_nhwc_qlinear(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let attrs = ConvAttrs::read(ctx.node)?;
    let fast = fast_weights(ctx, &attrs, 3, 5);
    Ok(Box::new(QLinearConv {
        attrs,
        fast,
        nhwc: true,
    }))
}

impl Op for QLinearConv {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        if let Some(y) = self.run_fast(ctx, inputs)? {
            return Ok(vec![y]);
        }
        if !self.nhwc {
            return Ok(vec![self.reference(inputs)?]);
        }
        // A case the packed kernels do not take: the reference on NCHW copies.
        let x = super::nhwc::nhwc_to_nchw(required(inputs, 0)?, "input 0 (x)")?;
        let mut nchw = inputs.to_vec();
        nchw[0] = Some(&x);
        let y = self.reference(&nchw)?;
        Ok(vec![super::nhwc::nchw_to_nhwc(&y, "output 0 (y)")?])
    }
}

impl QLinearConv {
    /// The packed-weight kernels, when they take this case.
    fn run_fast(
        &self,
        ctx: &RunCtx,
        inputs: &[Option<&Tensor>],
    ) -> Result<Option<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let w = required(inputs, 3)?;
        let x_scale = scalar_scale(required(inputs, 1)?, "input 1 (x_scale)")?;
        let x_zp = scalar_zero_point(optional(inputs, 2), "input 2 (x_zero_point)")?;
        let w_scale_t = required(inputs, 4)?;
        let w_scales = f32_values(w_scale_t, "input 4 (w_scale)")?;
        check_scales(w_scales, "input 4 (w_scale)")?;
        let y_scale = scalar_scale(required(inputs, 6)?, "input 6 (y_scale)")?;
        let y_zp_t = optional(inputs, 7);
        let y_zp = scalar_zero_point(y_zp_t, "input 7 (y_zero_point)")?;
        let q = QType::of(y_zp_t.unwrap_or(x).dtype(), "output type")?;
        let m = w.shape().first().copied().unwrap_or(0);
        if w_scales.len() != 1 && w_scales.len() != m {
            bail_invalid!(
                "input 4 (w_scale) has {} values, expected 1 or {m} (one per output channel)",
                w_scales.len()
            );
        }
        if let Some(fw) = &self.fast
            && matches!(q, QType::U8 | QType::I8)
        {
            let bias = optional(inputs, 8).map(bias_of).transpose()?;
            if bias.is_none_or(|b| b.len() == m) {
                let mult: Vec<f32> = w_scales.iter().map(|&ws| x_scale * ws / y_scale).collect();
                let (lo, hi) = q.range();
                let post = Post::Requant {
                    bias,
                    mult: &mult,
                    zp: y_zp,
                    lo,
                    hi,
                };
                let kind = if q == QType::U8 {
                    OutKind::U8
                } else {
                    OutKind::I8
                };
                return Ok(conv_fast::run(
                    fw,
                    &self.attrs,
                    x,
                    x_zp,
                    &post,
                    kind,
                    ctx.threads,
                    self.nhwc,
                )?);
            }
        }
        Ok(None)
    }

    /// The scalar reference on NCHW tensors (also what reports malformed inputs).
    fn reference(&self, inputs: &[Option<&Tensor>]) -> Result<Tensor, OpError> {
        let x = required(inputs, 0)?;
        let w = required(inputs, 3)?;
        let x_scale = scalar_scale(required(inputs, 1)?, "input 1 (x_scale)")?;
        let x_zp = scalar_zero_point(optional(inputs, 2), "input 2 (x_zero_point)")?;
        let w_scales = f32_values(required(inputs, 4)?, "input 4 (w_scale)")?;
        let y_scale = scalar_scale(required(inputs, 6)?, "input 6 (y_scale)")?;
        let y_zp_t = optional(inputs, 7);
        let y_zp = scalar_zero_point(y_zp_t, "input 7 (y_zero_point)")?;
        let q = QType::of(y_zp_t.unwrap_or(x).dtype(), "output type")?;
        let m = w.shape().first().copied().unwrap_or(0);
        let xv = shift(int_values(x, "input 0 (x)")?, x_zp);
        let w_zp = match optional(inputs, 5) {
            Some(t) => int_values(t, "input 5 (w_zero_point)")?,
            None => vec![0],
        };
        let wv = shift_weights(
            int_values(w, "input 3 (w)")?,
            w.shape(),
            &w_zp,
            "input 5 (w_zero_point)",
        )?;
        let bias = optional(inputs, 8).map(bias_of).transpose()?;
        let (acc, shape) = conv_i32(&self.attrs, &xv, x.shape(), &wv, w.shape(), bias)?;
        let mult: Vec<f64> = w_scales
            .iter()
            .map(|&ws| ((x_scale * ws) / y_scale) as f64)
            .collect();
        let plane: usize = shape[2..].iter().product();
        let y = acc
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                let k = if mult.len() == 1 {
                    0
                } else {
                    (i / plane.max(1)) % m
                };
                q.saturate((a as f64 * mult[k]).round_ties_even() + y_zp as f64)
            })
            .collect();
        q.tensor(shape, y)
    }
}

#[derive(Debug)]
struct ConvInteger {
    attrs: ConvAttrs,
    fast: Option<FastW>,
}

fn build_integer(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let attrs = ConvAttrs::read(ctx.node)?;
    let fast = fast_weights(ctx, &attrs, 1, 3);
    Ok(Box::new(ConvInteger { attrs, fast }))
}

impl Op for ConvInteger {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let w = required(inputs, 1)?;
        let x_zp = scalar_zero_point(optional(inputs, 2), "input 2 (x_zero_point)")?;
        if let Some(fw) = &self.fast
            && optional(inputs, 2).is_none_or(|z| z.dtype() == x.dtype())
        {
            let post = Post::Raw { bias: None };
            if let Some(y) = conv_fast::run(
                fw,
                &self.attrs,
                x,
                x_zp,
                &post,
                OutKind::I32,
                ctx.threads,
                false,
            )? {
                return Ok(vec![y]);
            }
        }
        let w_zp = match optional(inputs, 3) {
            Some(t) => int_values(t, "input 3 (w_zero_point)")?,
            None => vec![0],
        };
        let xv = shift(int_values(x, "input 0 (x)")?, x_zp);
        let wv = shift_weights(
            int_values(w, "input 1 (w)")?,
            w.shape(),
            &w_zp,
            "input 3 (w_zero_point)",
        )?;
        let (y, shape) = conv_i32(&self.attrs, &xv, x.shape(), &wv, w.shape(), None)?;
        Ok(vec![Tensor::from_vec(shape, y)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::quant::test_util::{run, t};
    use quench_ir::{Attr, Node, Tensor};

    #[test]
    fn conv_integer_with_padding_matches_onnx_example() {
        // test_convinteger_with_padding: x = 2..11 (3x3), w = ones (2x2), x_zp = 1, pads 1.
        let x = t(&[1, 1, 3, 3], (2u8..11).collect());
        let w = t(&[1, 1, 2, 2], vec![1u8; 4]);
        let n = Node::new("ConvInteger", "c", &["x", "w", "xz"], &["y"])
            .with_attr("pads", Attr::Ints(vec![1, 1, 1, 1]));
        let out = run(n, 10, &[Some(&x), Some(&w), Some(&Tensor::scalar(1u8))]).unwrap();
        assert_eq!(out[0].shape(), &[1, 1, 4, 4]);
        assert_eq!(
            out[0].as_slice::<i32>().unwrap(),
            &[1, 3, 5, 3, 5, 12, 16, 9, 11, 24, 28, 15, 7, 15, 17, 9]
        );
    }

    #[test]
    fn qlinear_conv_per_channel_groups_strides() {
        // Values computed with onnxruntime 1.31 (QLinearConv, int8, group 2, stride 2, SAME_UPPER).
        // The last one is a tie (20 * 0.125 = 2.5): ORT and the ONNX spec round before
        // adding the zero point (2 - 3 = -1); onnx's reference rounds after (0).
        let x = t(
            &[1, 2, 3, 3],
            (0..18).map(|v| (v * 7 % 23 - 11) as i8).collect(),
        );
        let w = t(&[2, 1, 2, 2], vec![1i8, -2, 3, 4, -5, 6, 7, -8]);
        let ws = t(&[2], vec![0.5f32, 0.25]);
        let bias = t(&[2], vec![10i32, -20]);
        let n = Node::new(
            "QLinearConv",
            "q",
            &["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
            &["y"],
        )
        .with_attr("group", Attr::Int(2))
        .with_attr("strides", Attr::Ints(vec![2, 2]))
        .with_attr("auto_pad", Attr::String(b"SAME_UPPER".to_vec()));
        let (xs, xz, wz, ys, yz) = (
            Tensor::scalar(0.1f32),
            Tensor::scalar(1i8),
            t(&[2], vec![0i8, 0]),
            Tensor::scalar(0.2f32),
            Tensor::scalar(-3i8),
        );
        let out = run(
            n,
            10,
            &[
                Some(&x),
                Some(&xs),
                Some(&xz),
                Some(&w),
                Some(&ws),
                Some(&wz),
                Some(&ys),
                Some(&yz),
                Some(&bias),
            ],
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[1, 2, 2, 2]);
        assert_eq!(
            out[0].as_slice::<i8>().unwrap(),
            &[-1, 0, 6, -1, -24, -8, 0, -1]
        );
    }

    #[test]
    fn mismatched_channels_are_invalid() {
        let x = t(&[1, 3, 2, 2], vec![0u8; 12]);
        let w = t(&[1, 2, 1, 1], vec![0u8; 2]);
        let n = Node::new("ConvInteger", "c", &["x", "w"], &["y"]);
        let err = run(n, 10, &[Some(&x), Some(&w)]).unwrap_err();
        assert!(err.to_string().contains("group"), "{err}");
    }
}
