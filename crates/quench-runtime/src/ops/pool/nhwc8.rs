//! MaxPool on an 8-bit NHWC value (`[N, H, W, C]`), inserted by the integer
//! NHWC rewrite ([`crate::optimize::int8_nhwc`]) where a 2-D MaxPool reads
//! the output of an NHWC integer op: the pool then needs no transposes to
//! NCHW and back (ResNet's stem pool sits between two such convolutions).

use super::{Kind, Pool, max_attrs};
use crate::op::required;
use crate::{BuildCtx, Op, OpError, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::{Tensor, TensorData};
use quench_kernels::pool::{PoolByte, max_pool_nhwc8};

#[derive(Debug)]
pub(super) struct NhwcMaxPool(Pool);

/// MaxPool's attributes; only 2-D pooling without the Indices output.
pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let pool = max_attrs(ctx)?;
    if matches!(pool.kind, Kind::Max { indices: true, .. }) {
        bail_unsupported!("NHWC MaxPool with the Indices output");
    }
    if pool.spatial.kernel.as_ref().is_some_and(|k| k.len() != 2) {
        bail_invalid!("NHWC MaxPool needs a 2-D 'kernel_shape'");
    }
    Ok(Box::new(NhwcMaxPool(pool)))
}

impl NhwcMaxPool {
    fn pool<T: PoolByte + Default + quench_ir::tensor::Elem>(
        &self,
        x: &[T],
        [n, h, w, c]: [usize; 4],
        threads: usize,
    ) -> Result<Tensor, OpError> {
        let pg = self.0.geometry(&[h, w])?;
        let [_, oh, ow] = pg.g.output;
        let shape = vec![n, oh, ow, c];
        let mut y = vec![T::default(); quench_ir::tensor::checked_numel(&shape)?];
        let (img_in, img_out) = (h * w * c, oh * ow * c);
        if img_in > 0 && img_out > 0 {
            for (xb, yb) in x.chunks_exact(img_in).zip(y.chunks_exact_mut(img_out)) {
                max_pool_nhwc8(&pg.g, c, xb, yb, threads);
            }
        }
        Ok(Tensor::from_vec(shape, y)?)
    }
}

impl Op for NhwcMaxPool {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let &[n, h, w, c] = x.shape() else {
            bail_invalid!(
                "input 0 (X) has shape {:?}, expected [N, H, W, C]",
                x.shape()
            );
        };
        let dims = [n, h, w, c];
        let y = match x.data() {
            TensorData::U8(v) => self.pool(v, dims, ctx.threads)?,
            TensorData::I8(v) => self.pool(v, dims, ctx.threads)?,
            _ => bail_invalid!("input 0 (X) is {}, expected uint8 or int8", x.dtype()),
        };
        Ok(vec![y])
    }
}
