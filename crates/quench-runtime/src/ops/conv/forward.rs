//! ONNX Conv (opsets 1–22), float32.

use super::attrs::{Spatial, conv_dim, f32_input, geom, split_nc};
use super::with_scratch;
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, RunCtx, bail_invalid};
use quench_ir::Tensor;
use quench_kernels::conv::{Act, Geom3, depthwise2d, epilogue, im2col};
use quench_kernels::gemm::sgemm;
use rayon::prelude::*;

#[derive(Debug)]
struct Conv {
    spatial: Spatial,
    group: usize,
    /// W when it is a constant: checked and copied once at build time.
    weights: Option<(Vec<usize>, Vec<f32>)>,
    /// B when it is a constant.
    bias: Option<Vec<f32>>,
    /// Fused epilogue (FusedConv only): input 3 added, then this activation.
    act: Act,
    residual: bool,
}

/// The activation attributes of a fused convolution node.
pub(super) fn fused_activation(node: &quench_ir::Node) -> Result<Act, OpError> {
    let params = node.attr_floats("activation_params")?.unwrap_or_default();
    let param = |i: usize| {
        params
            .get(i)
            .copied()
            .ok_or_else(|| OpError::Invalid(format!("activation_params {params:?} too short")))
    };
    Ok(match node.attr_string_or("activation", "")?.as_str() {
        "" => Act::None,
        "Relu" => Act::Relu,
        "Clip" => Act::Clip(param(0)?, param(1)?),
        "LeakyRelu" => Act::LeakyRelu(param(0)?),
        other => bail_invalid!("FusedConv activation '{other}' is unknown"),
    })
}

/// The internal FusedConv of [`crate::optimize`]: a Conv plus its epilogue.
pub(super) fn build_fused(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let mut op = build_conv(ctx)?;
    op.act = fused_activation(ctx.node)?;
    op.residual = ctx.node.input(3).is_some();
    Ok(Box::new(op))
}

pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(build_conv(ctx)?))
}

fn build_conv(ctx: &BuildCtx) -> Result<Conv, OpError> {
    let node = ctx.node;
    let group = node.attr_int_or("group", 1)?;
    if group < 1 {
        bail_invalid!("attribute 'group' is {group}, expected >= 1");
    }
    let spatial = Spatial::from_node(node)?;
    let weights = match ctx.constant_input(1) {
        Some(w) => Some((w.shape().to_vec(), f32_input(w, "input 1 (W)")?.to_vec())),
        None => None,
    };
    let bias = match ctx.constant_input(2) {
        Some(b) => Some(f32_input(b, "input 2 (B)")?.to_vec()),
        None => None,
    };
    let op = Conv {
        spatial,
        group: group as usize,
        weights,
        bias,
        act: Act::None,
        residual: false,
    };
    if let Some((shape, _)) = &op.weights {
        check_weight_shape(shape, &op.spatial, op.group)?;
    }
    Ok(op)
}

/// Checks W = [M, C/group, k...] against the attributes (not yet against X).
fn check_weight_shape(w: &[usize], spatial: &Spatial, group: usize) -> Result<(), OpError> {
    let (m, _, k) = split_nc(w, "input 1 (W)")?;
    if m % group != 0 {
        bail_invalid!("input 1 (W) has {m} output channels, not divisible by group {group}");
    }
    if let Some(ks) = &spatial.kernel
        && ks != k
    {
        bail_invalid!("attribute 'kernel_shape' {ks:?} does not match input 1 (W) shape {w:?}");
    }
    if k.contains(&0) {
        bail_invalid!("input 1 (W) has an empty kernel: shape {w:?}");
    }
    Ok(())
}

/// Everything about one call's shapes.
struct Shapes {
    c: usize,
    m: usize,
    out_shape: Vec<usize>,
    g: Geom3,
}

impl Conv {
    fn shapes(&self, x: &[usize], w: &[usize]) -> Result<Shapes, OpError> {
        let (n, c, sp) = split_nc(x, "input 0 (X)")?;
        check_weight_shape(w, &self.spatial, self.group)?;
        if w.len() != x.len() {
            bail_invalid!(
                "input 1 (W) has shape {w:?}, expected rank {} like X {x:?}",
                x.len()
            );
        }
        let (m, cg, k) = (w[0], w[1], &w[2..]);
        if cg * self.group != c {
            bail_invalid!(
                "input 0 (X) has {c} channels but W {w:?} with group {} expects {}",
                self.group,
                cg * self.group
            );
        }
        let r = self.spatial.resolve(sp.len())?;
        let rank = sp.len();
        let (mut out, mut begin) = (Vec::new(), Vec::new());
        for i in 0..rank {
            let (o, b, _) = conv_dim(
                self.spatial.auto_pad,
                sp[i],
                k[i],
                r.strides[i],
                r.dilations[i],
                (r.pads[i], r.pads[rank + i]),
            )?;
            out.push(o);
            begin.push(b);
        }
        let g = geom(sp, k, &out, &r, &begin)?;
        let mut out_shape = vec![n, m];
        out_shape.extend(&out);
        Ok(Shapes { c, m, out_shape, g })
    }
}

impl Op for Conv {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let xs = f32_input(x, "input 0 (X)")?;
        let (wshape, w) = match &self.weights {
            Some((s, w)) => (&s[..], &w[..]),
            None => {
                let w = required(inputs, 1)?;
                (w.shape(), f32_input(w, "input 1 (W)")?)
            }
        };
        let s = self.shapes(x.shape(), wshape)?;
        let bias = match (&self.bias, optional(inputs, 2)) {
            (Some(b), _) => Some(&b[..]),
            (None, Some(b)) => Some(f32_input(b, "input 2 (B)")?),
            (None, None) => None,
        };
        if let Some(b) = bias
            && b.len() != s.m
        {
            bail_invalid!("input 2 (B) has {} values, expected {} (M)", b.len(), s.m);
        }
        let numel = quench_ir::tensor::checked_numel(&s.out_shape)?;
        let residual = if self.residual {
            let r = required(inputs, 3)?;
            let rs = f32_input(r, "fused residual")?;
            Some(residual_to(r.shape(), rs, &s.out_shape)?)
        } else {
            None
        };
        let (is, os) = (s.g.in_size(), s.g.out_size());
        // The GEMM accumulates onto an output that starts as bias (+ residual):
        // one write pass instead of zeroing, filling and adding.
        let depthwise = self.is_depthwise(&s) && s.c * is > 0;
        let prefilled = !depthwise && (bias.is_some() || residual.is_some());
        let mut y = if prefilled && os > 0 {
            let mut y = Vec::with_capacity(numel);
            for row in 0..numel / os {
                let b = bias.map_or(0.0, |b| b[row % s.m]);
                match residual.as_deref() {
                    Some(r) => y.extend(r[row * os..(row + 1) * os].iter().map(|v| v + b)),
                    None => y.extend(std::iter::repeat_n(b, os)),
                }
            }
            y
        } else {
            vec![0.0f32; numel]
        };
        if os > 0 && s.m > 0 {
            if s.c * is == 0 {
                // Nothing to convolve: every output is its bias (+ residual).
                epilogue(&mut y, None, self.act);
            } else {
                let img = s.m * os;
                for (i, (xb, yb)) in xs
                    .chunks_exact(s.c * is)
                    .zip(y.chunks_exact_mut(img))
                    .enumerate()
                {
                    self.run_image(ctx, &s, xb, w, bias, prefilled, yb);
                    let r = residual.as_deref().filter(|_| !prefilled);
                    epilogue(yb, r.map(|r| &r[i * img..(i + 1) * img]), self.act);
                }
            }
        }
        Ok(vec![Tensor::from_vec(s.out_shape, y)?])
    }
}

/// The residual of a fused Add as a buffer of the output's shape: borrowed
/// when the shapes match, else broadcast (numpy rules, towards the output).
fn residual_to<'a>(
    shape: &[usize],
    r: &'a [f32],
    out: &[usize],
) -> Result<std::borrow::Cow<'a, [f32]>, OpError> {
    if shape == out {
        return Ok(std::borrow::Cow::Borrowed(r));
    }
    let fits = shape.len() <= out.len()
        && shape
            .iter()
            .rev()
            .zip(out.iter().rev())
            .all(|(&a, &b)| a == b || a == 1);
    if !fits {
        return Err(OpError::Unsupported(format!(
            "fused Add of a {shape:?} operand to a Conv output {out:?} (result shape differs)"
        )));
    }
    // Strides of r over the output's dims; 0 where r broadcasts.
    let lead = out.len() - shape.len();
    let mut strides = vec![0usize; out.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        strides[lead + i] = if shape[i] == 1 { 0 } else { acc };
        acc *= shape[i];
    }
    let numel: usize = out.iter().product();
    let mut v = Vec::with_capacity(numel);
    let mut idx = vec![0usize; out.len()];
    for _ in 0..numel {
        let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        v.push(r[off]);
        for d in (0..out.len()).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(std::borrow::Cow::Owned(v))
}

impl Conv {
    /// True when the direct depthwise kernel computes this convolution.
    fn is_depthwise(&self, s: &Shapes) -> bool {
        let g = &s.g;
        s.c == self.group && s.m == self.group && g.input[0] == 1 && g.kernel[0] == 1
    }

    /// One image: `xb` is `C × in`, `yb` is `M × out`. When `prefilled`,
    /// `yb` already holds the bias (the GEMM adds onto it).
    #[allow(clippy::too_many_arguments)]
    fn run_image(
        &self,
        ctx: &RunCtx,
        s: &Shapes,
        xb: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        prefilled: bool,
        yb: &mut [f32],
    ) {
        let g = &s.g;
        let (is, os, ks) = (g.in_size(), g.out_size(), g.kernel_size());
        let groups = self.group;
        let (cg, mg) = (s.c / groups, s.m / groups);
        if self.is_depthwise(s) {
            depthwise2d(g, s.c, xb, w, bias, yb, ctx.threads);
            return;
        }
        let beta = if prefilled { 1.0 } else { 0.0 };
        let kg = cg * ks;
        let pointwise = g.is_pointwise();
        let one_group = |grp: usize, yg: &mut [f32], threads: usize, col: &mut [f32]| {
            let xg = &xb[grp * cg * is..(grp + 1) * cg * is];
            let wg = &w[grp * mg * kg..(grp + 1) * mg * kg];
            if pointwise {
                sgemm(mg, os, kg, wg, xg, yg, beta, threads);
            } else {
                im2col(g, cg, xg, col);
                sgemm(mg, os, kg, wg, col, yg, beta, threads);
            }
        };
        let col_len = if pointwise { 0 } else { kg * os };
        if ctx.threads > 1 && groups > 1 {
            yb.par_chunks_mut(mg * os).enumerate().for_each_init(
                Vec::new,
                |col: &mut Vec<f32>, (grp, yg)| {
                    col.resize(col_len, 0.0);
                    one_group(grp, yg, 1, col)
                },
            );
        } else {
            with_scratch(col_len, |col| {
                for (grp, yg) in yb.chunks_exact_mut(mg * os).enumerate() {
                    one_group(grp, yg, ctx.threads, col);
                }
            });
        }
    }
}
