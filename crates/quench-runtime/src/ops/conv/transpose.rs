//! ONNX ConvTranspose (opsets 1–22), float32: per group a GEMM
//! `col = Wᵀ·X` followed by col2im into the bias-initialised output.

use super::attrs::{AutoPad, Spatial, f32_input, geom, split_nc};
use super::with_scratch;
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::Tensor;
use quench_kernels::conv::col2im;
use quench_kernels::gemm::sgemm_strided;

#[derive(Debug)]
struct ConvTranspose {
    spatial: Spatial,
    group: usize,
    output_padding: Option<Vec<usize>>,
    output_shape: Option<Vec<usize>>,
}

pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let node = ctx.node;
    let group = node.attr_int_or("group", 1)?;
    if group < 1 {
        bail_invalid!("attribute 'group' is {group}, expected >= 1");
    }
    let non_negative = |name: &str| -> Result<Option<Vec<usize>>, OpError> {
        match node.attr_ints(name)? {
            None => Ok(None),
            Some(v) if v.iter().all(|&x| x >= 0) => {
                Ok(Some(v.iter().map(|&x| x as usize).collect()))
            }
            Some(v) => bail_invalid!("attribute '{name}' = {v:?} has negative values"),
        }
    };
    Ok(Box::new(ConvTranspose {
        spatial: Spatial::from_node(node)?,
        group: group as usize,
        output_padding: non_negative("output_padding")?,
        output_shape: non_negative("output_shape")?,
    }))
}

impl Op for ConvTranspose {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let w = required(inputs, 1)?;
        let (xs, ws) = (f32_input(x, "input 0 (X)")?, f32_input(w, "input 1 (W)")?);
        let (n, c, sp) = split_nc(x.shape(), "input 0 (X)")?;
        let (wc, mg, k) = split_nc(w.shape(), "input 1 (W)")?;
        let rank = sp.len();
        if k.len() != rank || wc != c {
            bail_invalid!(
                "input 1 (W) has shape {:?}, expected [{c}, M/group, kernel...] of rank {}",
                w.shape(),
                rank + 2
            );
        }
        if c % self.group != 0 {
            bail_invalid!(
                "input 0 (X) has {c} channels, not divisible by group {}",
                self.group
            );
        }
        if let Some(ks) = &self.spatial.kernel
            && ks != k
        {
            bail_invalid!(
                "attribute 'kernel_shape' {ks:?} does not match W {:?}",
                w.shape()
            );
        }
        let m = mg * self.group;
        let bias = optional(inputs, 2)
            .map(|b| f32_input(b, "input 2 (B)"))
            .transpose()?;
        if let Some(b) = bias
            && b.len() != m
        {
            bail_invalid!("input 2 (B) has {} values, expected {m}", b.len());
        }
        let (out, begin) = self.output_geometry(sp, k)?;
        let r = self.spatial.resolve(rank)?;
        // The adjoint of a convolution from the output image to X's grid.
        let g = geom(&out, k, sp, &r, &begin)?;
        let mut out_shape = vec![n, m];
        out_shape.extend(&out);
        let mut y = vec![0.0f32; quench_ir::tensor::checked_numel(&out_shape)?];
        let (is, os, ks) = (g.out_size(), g.in_size(), g.kernel_size());
        let cg = c / self.group;
        let rows = mg * ks;
        if os == 0 || m == 0 {
            return Ok(vec![Tensor::from_vec(out_shape, y)?]);
        }
        with_scratch(rows * is, |col| {
            for (b, yb) in y.chunks_exact_mut(m * os).enumerate() {
                for (row, ch) in yb.chunks_exact_mut(os).zip(0..) {
                    row.fill(bias.map_or(0.0, |bv| bv[ch]));
                }
                for (grp, yg) in yb.chunks_exact_mut(mg * os).enumerate() {
                    let xg = &xs[(b * c + grp * cg) * is..][..cg * is];
                    let wg = &ws[grp * cg * rows..][..cg * rows];
                    // col[rows × is] = Wgᵀ · Xg, with Wg stored [cg × rows].
                    sgemm_strided(
                        rows,
                        is,
                        cg,
                        wg,
                        1,
                        rows as isize,
                        xg,
                        is as isize,
                        1,
                        col,
                        0.0,
                        ctx.threads,
                    );
                    col2im(&g, mg, col, yg);
                }
            }
        });
        Ok(vec![Tensor::from_vec(out_shape, y)?])
    }
}

impl ConvTranspose {
    /// Output extents and begin pads, following the ONNX reference: explicit
    /// pads unless `auto_pad` is SAME_*, whose total padding comes from
    /// `output_shape` (default `in · stride`), the odd pixel at the end for
    /// SAME_UPPER.
    fn output_geometry(
        &self,
        sp: &[usize],
        k: &[usize],
    ) -> Result<(Vec<usize>, Vec<usize>), OpError> {
        let rank = sp.len();
        let r = self.spatial.resolve(rank)?;
        let op = match &self.output_padding {
            None => vec![0; rank],
            // Older exporters wrote one value per dim of [N, C, spatial...].
            Some(v) if v.len() == rank => v.clone(),
            Some(v) if v.len() == rank + 2 => v[2..].to_vec(),
            Some(v) => {
                bail_invalid!("attribute 'output_padding' {v:?} does not have {rank} values")
            }
        };
        let target = match &self.output_shape {
            None => None,
            Some(v) if v.len() == rank => Some(v.clone()),
            Some(v) if v.len() == rank + 2 => Some(v[2..].to_vec()),
            Some(v) => bail_invalid!("attribute 'output_shape' {v:?} does not have {rank} values"),
        };
        let mut out = Vec::with_capacity(rank);
        let mut begin = Vec::with_capacity(rank);
        for i in 0..rank {
            let full =
                r.strides[i] * sp[i].saturating_sub(1) + op[i] + r.dilations[i] * (k[i] - 1) + 1;
            match self.spatial.auto_pad {
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let want = target.as_ref().map_or(sp[i] * r.strides[i], |t| t[i]);
                    let Some(total) = full.checked_sub(want) else {
                        bail_unsupported!(
                            "output_shape {want} larger than the full output {full} with auto_pad SAME"
                        );
                    };
                    let small = total / 2;
                    begin.push(if self.spatial.auto_pad == AutoPad::SameUpper {
                        small
                    } else {
                        total - small
                    });
                    out.push(want);
                }
                AutoPad::NotSet | AutoPad::Valid => {
                    let (pb, pe) = if self.spatial.auto_pad == AutoPad::Valid {
                        (0, 0)
                    } else {
                        (r.pads[i], r.pads[rank + i])
                    };
                    begin.push(pb);
                    match &target {
                        Some(t) => out.push(t[i]),
                        None => match full.checked_sub(pb + pe) {
                            Some(o) => out.push(o),
                            None => {
                                bail_invalid!("pads {pb}+{pe} exceed the full output extent {full}")
                            }
                        },
                    }
                }
            }
        }
        Ok((out, begin))
    }
}
