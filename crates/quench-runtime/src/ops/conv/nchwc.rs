//! The internal ops of the NCHWc rewrite ([`crate::optimize`]): a 2-D
//! convolution whose output (and residual) is in the blocked layout
//! `[N, ceil(C/16), H, W, 16]`, and the two reorders at the edges of a
//! chain of them. See `quench_kernels::conv::nchwc` for why.

use super::attrs::{Spatial, conv_dim, f32_input};
use super::forward::fused_activation;
use super::with_scratch;
use crate::op::required;
use crate::{BuildCtx, Op, OpError, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::Tensor;
use quench_kernels::conv::Act;
use quench_kernels::conv::nchwc::{self, Geom2, LANES, PackedConv, PackedDepthwise, blocks};
use std::mem::MaybeUninit;

#[derive(Debug)]
enum Packed {
    Dense(PackedConv),
    Depthwise(PackedDepthwise),
}

#[derive(Debug)]
struct NchwcConv {
    spatial: Spatial,
    packed: Packed,
    /// Input channels, and whether X arrives blocked (else NCHW).
    c: usize,
    m: usize,
    blocked_input: bool,
    act: Act,
    residual: bool,
}

/// Builds `NchwcConv`: Conv/FusedConv attributes and inputs (X, W, B, R)
/// plus `input_layout` (`NCHW` or `NCHWc`); W and B must be constants.
pub(super) fn build_conv(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let node = ctx.node;
    let spatial = Spatial::from_node(node)?;
    let group = node.attr_int_or("group", 1)?;
    let Some(w) = ctx.constant_input(1) else {
        bail_invalid!("input 1 (W) must be a constant for the NCHWc convolution");
    };
    let ws = f32_input(w, "input 1 (W)")?;
    let &[m, cg, kh, kw] = w.shape() else {
        bail_invalid!("input 1 (W) has shape {:?}, expected rank 4", w.shape());
    };
    if kh == 0 || kw == 0 {
        bail_invalid!("input 1 (W) has an empty kernel: shape {:?}", w.shape());
    }
    if let Some(k) = &spatial.kernel
        && k[..] != [kh, kw]
    {
        bail_invalid!(
            "attribute 'kernel_shape' {k:?} does not match input 1 (W) shape {:?}",
            w.shape()
        );
    }
    let bias = match node.input(2) {
        None => None,
        Some(_) => match ctx.constant_input(2) {
            Some(b) => Some(f32_input(b, "input 2 (B)")?),
            None => bail_invalid!("input 2 (B) must be a constant for the NCHWc convolution"),
        },
    };
    if let Some(b) = bias
        && b.len() != m
    {
        bail_invalid!("input 2 (B) has {} values, expected {m} (M)", b.len());
    }
    let (packed, c) = if group == 1 {
        (Packed::Dense(PackedConv::new(ws, bias, m, cg, kh, kw)), cg)
    } else if group > 1 && group as usize == m && cg == 1 {
        (
            Packed::Depthwise(PackedDepthwise::new(ws, bias, m, kh, kw)),
            m,
        )
    } else {
        bail_unsupported!(
            "NCHWc convolution with group {group} and W shape {:?}",
            w.shape()
        );
    };
    let blocked_input = match node.attr_string_or("input_layout", "NCHW")?.as_str() {
        "NCHW" => false,
        "NCHWc" => true,
        other => bail_invalid!("attribute 'input_layout' is '{other}', expected NCHW or NCHWc"),
    };
    if blocked_input && matches!(&packed, Packed::Dense(p) if p.small_input) {
        bail_invalid!("a convolution of {c} input channels reads NCHW input");
    }
    Ok(Box::new(NchwcConv {
        spatial,
        packed,
        c,
        m,
        blocked_input,
        act: fused_activation(node)?,
        residual: node.input(3).is_some(),
    }))
}

impl NchwcConv {
    /// Batch and geometry of one call from X's shape.
    fn geometry(&self, x: &[usize]) -> Result<(usize, Geom2), OpError> {
        let (n, c, h, w) = match (self.blocked_input, x) {
            (false, &[n, c, h, w]) => (n, c, h, w),
            (true, &[n, cb, h, w, l]) if l == LANES && cb == blocks(self.c) => (n, self.c, h, w),
            _ => bail_invalid!(
                "input 0 (X) has shape {x:?}, expected {} with {} channels",
                if self.blocked_input {
                    "[N, C/16, H, W, 16]"
                } else {
                    "[N, C, H, W]"
                },
                self.c
            ),
        };
        if c != self.c {
            bail_invalid!("input 0 (X) has {c} channels, W expects {}", self.c);
        }
        let (kh, kw) = match &self.packed {
            Packed::Dense(p) => (p.kh, p.kw),
            Packed::Depthwise(p) => (p.kh, p.kw),
        };
        let r = self.spatial.resolve(2)?;
        let (oh, ph, _) = conv_dim(
            self.spatial.auto_pad,
            h,
            kh,
            r.strides[0],
            r.dilations[0],
            (r.pads[0], r.pads[2]),
        )?;
        let (ow, pw, _) = conv_dim(
            self.spatial.auto_pad,
            w,
            kw,
            r.strides[1],
            r.dilations[1],
            (r.pads[1], r.pads[3]),
        )?;
        Ok((
            n,
            Geom2 {
                in_h: h,
                in_w: w,
                out_h: oh,
                out_w: ow,
                kh,
                kw,
                sh: r.strides[0],
                sw: r.strides[1],
                dh: r.dilations[0],
                dw: r.dilations[1],
                ph,
                pw,
            },
        ))
    }
}

impl Op for NchwcConv {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let xs = f32_input(x, "input 0 (X)")?;
        let (n, g) = self.geometry(x.shape())?;
        let out_shape = vec![n, blocks(self.m), g.out_h, g.out_w, LANES];
        let numel = quench_ir::tensor::checked_numel(&out_shape)?;
        let residual = if self.residual {
            let r = required(inputs, 3)?;
            if r.shape() != out_shape {
                bail_invalid!(
                    "fused residual has shape {:?}, expected {out_shape:?}",
                    r.shape()
                );
            }
            Some(f32_input(r, "fused residual")?)
        } else {
            None
        };
        // The kernels write every output float: no zeroing pass.
        let mut y: Vec<f32> = Vec::with_capacity(numel);
        let (hw, ohw) = (g.in_h * g.in_w, g.out_h * g.out_w);
        let img_out = blocks(self.m) * LANES * ohw;
        if img_out > 0 {
            let img_in = if self.blocked_input {
                blocks(self.c) * LANES * hw
            } else {
                self.c * hw
            };
            let spare = &mut y.spare_capacity_mut()[..numel];
            for i in 0..n {
                let xb = &xs[i * img_in..(i + 1) * img_in];
                let yb = &mut spare[i * img_out..(i + 1) * img_out];
                let rb = residual.map(|r| &r[i * img_out..(i + 1) * img_out]);
                self.run_image(ctx, &g, xb, rb, yb);
            }
        }
        // Safety: numel = n · img_out floats, all written above (none when 0).
        unsafe { y.set_len(numel) };
        Ok(vec![Tensor::from_vec(out_shape, y)?])
    }
}

impl NchwcConv {
    /// One image; `xb` in this op's input layout.
    fn run_image(
        &self,
        ctx: &RunCtx,
        g: &Geom2,
        xb: &[f32],
        rb: Option<&[f32]>,
        yb: &mut [MaybeUninit<f32>],
    ) {
        let hw = g.in_h * g.in_w;
        let t = ctx.threads;
        match (&self.packed, self.blocked_input) {
            (Packed::Dense(p), true) => nchwc::conv_into(p, g, xb, rb, self.act, yb, t),
            (Packed::Depthwise(p), true) => nchwc::depthwise_into(p, g, xb, rb, self.act, yb, t),
            (Packed::Dense(p), false) => with_scratch(p.input_len(g), |s| {
                if p.small_input {
                    nchwc::nchw_to_nhwc(xb, self.c, hw, s);
                } else {
                    nchwc::nchw_to_nchwc(xb, self.c, hw, s);
                }
                nchwc::conv_into(p, g, s, rb, self.act, yb, t)
            }),
            (Packed::Depthwise(p), false) => with_scratch(blocks(self.c) * LANES * hw, |s| {
                nchwc::nchw_to_nchwc(xb, self.c, hw, s);
                nchwc::depthwise_into(p, g, s, rb, self.act, yb, t)
            }),
        }
    }
}

/// `[N, C, H, W]` → `[N, C/16, H, W, 16]`.
#[derive(Debug)]
struct ToNchwc;

pub(super) fn build_to_nchwc(_: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(ToNchwc))
}

impl Op for ToNchwc {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let &[n, c, h, w] = x.shape() else {
            bail_invalid!("input 0 has shape {:?}, expected [N, C, H, W]", x.shape());
        };
        let xs = f32_input(x, "input 0")?;
        let shape = vec![n, blocks(c), h, w, LANES];
        let mut y = vec![0.0f32; quench_ir::tensor::checked_numel(&shape)?];
        let (hw, img) = (h * w, blocks(c) * LANES * h * w);
        if img > 0 {
            for (xb, yb) in xs.chunks_exact(c * hw).zip(y.chunks_exact_mut(img)) {
                nchwc::nchw_to_nchwc(xb, c, hw, yb);
            }
        }
        Ok(vec![Tensor::from_vec(shape, y)?])
    }
}

/// `[N, C/16, H, W, 16]` → `[N, C, H, W]`, C from attribute `channels`.
#[derive(Debug)]
struct FromNchwc {
    c: usize,
}

pub(super) fn build_from_nchwc(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let c = ctx.node.attr_int_or("channels", -1)?;
    if c < 0 {
        bail_invalid!("attribute 'channels' is {c}, expected >= 0");
    }
    Ok(Box::new(FromNchwc { c: c as usize }))
}

impl Op for FromNchwc {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let c = self.c;
        let (n, h, w) = match x.shape() {
            &[n, cb, h, w, l] if l == LANES && cb == blocks(c) => (n, h, w),
            s => bail_invalid!(
                "input 0 has shape {s:?}, expected [N, {}, H, W, 16]",
                blocks(c)
            ),
        };
        let xs = f32_input(x, "input 0")?;
        let shape = vec![n, c, h, w];
        let mut y = vec![0.0f32; quench_ir::tensor::checked_numel(&shape)?];
        let (hw, img) = (h * w, blocks(c) * LANES * h * w);
        if c * hw > 0 {
            for (xb, yb) in xs.chunks_exact(img).zip(y.chunks_exact_mut(c * hw)) {
                nchwc::nchwc_to_nchw(xb, c, hw, yb);
            }
        }
        Ok(vec![Tensor::from_vec(shape, y)?])
    }
}
