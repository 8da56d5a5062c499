//! Pooling: MaxPool (with optional Indices), AveragePool, GlobalAveragePool,
//! GlobalMaxPool.

use super::conv::attrs::{AutoPad, Resolved, Spatial, geom, split_nc};
use crate::op::required;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::{Tensor, TensorData};
use quench_kernels::pool::{PoolGeom, avg_pool, global_pool_f32, max_pool};

pub fn register(r: &mut Registry) {
    r.register("", "MaxPool", build_max);
    r.register("", "AveragePool", build_avg);
    r.register("", "GlobalAveragePool", |_| {
        Ok(Box::new(GlobalPool { max: false }))
    });
    r.register("", "GlobalMaxPool", |_| {
        Ok(Box::new(GlobalPool { max: true }))
    });
    r.register(
        crate::optimize::DOMAIN,
        crate::optimize::NCHWC_MAX_POOL,
        nchwc::build,
    );
    r.register(
        crate::optimize::DOMAIN,
        crate::optimize::NHWC_MAX_POOL,
        nhwc8::build,
    );
}

mod nchwc;
mod nhwc8;

#[derive(Debug)]
struct Pool {
    spatial: Spatial,
    ceil_mode: bool,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `indices`: the node asks for the Indices output.
    Max {
        col_major: bool,
        indices: bool,
    },
    Avg {
        count_include_pad: bool,
    },
}

fn common(ctx: &BuildCtx) -> Result<(Spatial, bool), OpError> {
    let spatial = Spatial::from_node(ctx.node)?;
    if spatial.kernel.is_none() {
        bail_invalid!("attribute 'kernel_shape' is required");
    }
    let ceil_mode = ctx.node.attr_int_or("ceil_mode", 0)? != 0;
    Ok((spatial, ceil_mode))
}

fn build_max(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(max_attrs(ctx)?))
}

/// MaxPool's attributes.
fn max_attrs(ctx: &BuildCtx) -> Result<Pool, OpError> {
    let (spatial, ceil_mode) = common(ctx)?;
    let col_major = match ctx.node.attr_int_or("storage_order", 0)? {
        0 => false,
        1 => true,
        o => bail_invalid!("attribute 'storage_order' is {o}, expected 0 or 1"),
    };
    Ok(Pool {
        spatial,
        ceil_mode,
        kind: Kind::Max {
            col_major,
            indices: ctx.node.outputs.get(1).is_some_and(|o| !o.is_empty()),
        },
    })
}

fn build_avg(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let (spatial, ceil_mode) = common(ctx)?;
    if ctx.opset < 19 && ctx.node.attr("dilations").is_some() {
        bail_invalid!(
            "attribute 'dilations' needs AveragePool opset 19 (model uses {})",
            ctx.opset
        );
    }
    let count_include_pad = ctx.node.attr_int_or("count_include_pad", 0)? != 0;
    Ok(Box::new(Pool {
        spatial,
        ceil_mode,
        kind: Kind::Avg { count_include_pad },
    }))
}

/// Output extent and (begin, end) pads of one pooled dim.
fn pool_dim(
    auto_pad: AutoPad,
    ceil_mode: bool,
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pads: (usize, usize),
) -> Result<(usize, usize, usize), OpError> {
    let dk = dilation * (kernel - 1) + 1;
    Ok(match auto_pad {
        AutoPad::SameUpper | AutoPad::SameLower => {
            let out = input.div_ceil(stride);
            let total = ((out.max(1) - 1) * stride + dk).saturating_sub(input);
            let small = total / 2;
            if auto_pad == AutoPad::SameUpper {
                (out, small, total - small)
            } else {
                (out, total - small, small)
            }
        }
        AutoPad::Valid => match input.checked_sub(dk) {
            Some(room) => (room / stride + 1, 0, 0),
            None => bail_invalid!("input extent {input} is smaller than the dilated kernel {dk}"),
        },
        AutoPad::NotSet => {
            let Some(room) = (input + pads.0 + pads.1).checked_sub(dk) else {
                bail_invalid!(
                    "padded input extent {} is smaller than the dilated kernel {dk}",
                    input + pads.0 + pads.1
                );
            };
            let mut out = if ceil_mode {
                room.div_ceil(stride) + 1
            } else {
                room / stride + 1
            };
            // The last window must start inside the image or its front padding.
            if ceil_mode && (out - 1) * stride >= input + pads.0 {
                out -= 1;
            }
            (out, pads.0, pads.1)
        }
    })
}

impl Pool {
    fn geometry(&self, sp: &[usize]) -> Result<PoolGeom, OpError> {
        let rank = sp.len();
        let r: Resolved = self.spatial.resolve(rank)?;
        let k = self.spatial.kernel.as_deref().unwrap_or_default();
        let (mut out, mut begin, mut end) = (vec![], vec![], vec![]);
        for i in 0..rank {
            let (o, b, e) = pool_dim(
                self.spatial.auto_pad,
                self.ceil_mode,
                sp[i],
                k[i],
                r.strides[i],
                r.dilations[i],
                (r.pads[i], r.pads[rank + i]),
            )?;
            out.push(o);
            begin.push(b);
            end.push(e);
        }
        let g = geom(sp, k, &out, &r, &begin)?;
        let mut pads_end = [0; 3];
        pads_end[3 - rank..].copy_from_slice(&end);
        Ok(PoolGeom { g, pads_end })
    }
}

impl Op for Pool {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let (n, c, sp) = split_nc(x.shape(), "input 0 (X)")?;
        let pg = self.geometry(sp)?;
        let planes = n * c;
        let mut shape = vec![n, c];
        shape.extend(&pg.g.output[3 - sp.len()..]);
        let os = pg.g.out_size();
        let th = ctx.threads;
        match self.kind {
            Kind::Max { col_major, indices } => {
                let mut idx = vec![0i64; if indices { planes * os } else { 0 }];
                let idx_out = indices.then_some(&mut idx[..]);
                macro_rules! max {
                    ($v:expr, $lowest:expr) => {{
                        let mut y = vec![$lowest; planes * os];
                        max_pool(&pg.g, planes, $v, &mut y, idx_out, col_major, $lowest, th);
                        Tensor::from_vec(shape.clone(), y)?
                    }};
                }
                let y = match x.data() {
                    TensorData::F32(v) => max!(v, f32::NEG_INFINITY),
                    TensorData::F64(v) => max!(v, f64::NEG_INFINITY),
                    TensorData::I8(v) => max!(v, i8::MIN),
                    TensorData::U8(v) => max!(v, u8::MIN),
                    _ => bail_unsupported!("MaxPool on {} tensors", x.dtype()),
                };
                if indices {
                    Ok(vec![y, Tensor::from_vec(shape, idx)?])
                } else {
                    Ok(vec![y])
                }
            }
            Kind::Avg { count_include_pad } => {
                let y = match x.data() {
                    TensorData::F32(v) => {
                        let mut y = vec![0.0f32; planes * os];
                        avg_pool(&pg, planes, v, &mut y, count_include_pad, th);
                        Tensor::from_vec(shape, y)?
                    }
                    TensorData::F64(v) => {
                        let mut y = vec![0.0f64; planes * os];
                        avg_pool(&pg, planes, v, &mut y, count_include_pad, th);
                        Tensor::from_vec(shape, y)?
                    }
                    _ => bail_unsupported!("AveragePool on {} tensors", x.dtype()),
                };
                Ok(vec![y])
            }
        }
    }
}

#[derive(Debug)]
struct GlobalPool {
    max: bool,
}

impl Op for GlobalPool {
    fn run(&self, _ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let (n, c, sp) = split_nc(x.shape(), "input 0 (X)")?;
        let size: usize = sp.iter().product();
        let mut shape = vec![n, c];
        shape.extend(sp.iter().map(|_| 1));
        if size == 0 {
            bail_invalid!("input 0 (X) has an empty spatial extent {sp:?}");
        }
        let y = match x.data() {
            TensorData::F32(v) => {
                let mut y = vec![0.0f32; n * c];
                global_pool_f32(n * c, size, v, &mut y, self.max);
                Tensor::from_vec(shape, y)?
            }
            TensorData::F64(v) => {
                let y: Vec<f64> = v
                    .chunks_exact(size)
                    .map(|p| {
                        if self.max {
                            p.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                        } else {
                            p.iter().sum::<f64>() / size as f64
                        }
                    })
                    .collect();
                Tensor::from_vec(shape, y)?
            }
            _ => bail_unsupported!("global pooling on {} tensors", x.dtype()),
        };
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests;
