//! The layout conversions of the int8 NHWC rewrite
//! (`crate::optimize::int8_nhwc`): 8-bit `[N, C, H, W]` ↔ `[N, H, W, C]`,
//! one 16×16-block byte transpose per image.

use crate::op::required;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::{Tensor, TensorData};
use quench_kernels::int8::conv::{Byte, transpose};

pub fn register(r: &mut Registry) {
    use crate::optimize::{DOMAIN, NCHW_TO_NHWC, NHWC_TO_NCHW};
    r.register(DOMAIN, NCHW_TO_NHWC, |_: &BuildCtx| Ok(Box::new(ToNhwc)));
    r.register(DOMAIN, NHWC_TO_NCHW, |_: &BuildCtx| Ok(Box::new(ToNchw)));
}

#[derive(Debug)]
struct ToNhwc;

#[derive(Debug)]
struct ToNchw;

impl Op for ToNhwc {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![nchw_to_nhwc(required(inputs, 0)?, "input 0")?])
    }
}

impl Op for ToNchw {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![nhwc_to_nchw(required(inputs, 0)?, "input 0")?])
    }
}

/// `[N, C, H, W]` → `[N, H, W, C]`.
pub(crate) fn nchw_to_nhwc(x: &Tensor, what: &str) -> Result<Tensor, OpError> {
    let &[n, c, h, w] = x.shape() else {
        bail_invalid!("{what} has shape {:?}, expected 4-D NCHW", x.shape());
    };
    relayout(x, n, c, h * w, vec![n, h, w, c], what)
}

/// `[N, H, W, C]` → `[N, C, H, W]`.
pub(crate) fn nhwc_to_nchw(x: &Tensor, what: &str) -> Result<Tensor, OpError> {
    let &[n, h, w, c] = x.shape() else {
        bail_invalid!("{what} has shape {:?}, expected 4-D NHWC", x.shape());
    };
    relayout(x, n, h * w, c, vec![n, c, h, w], what)
}

/// Each of `n` images `[rows][cols]` → `[cols][rows]`.
fn relayout(
    x: &Tensor,
    n: usize,
    rows: usize,
    cols: usize,
    shape: Vec<usize>,
    what: &str,
) -> Result<Tensor, OpError> {
    fn each<T: Byte + quench_ir::Elem>(v: &[T], n: usize, rows: usize, cols: usize) -> Vec<T> {
        let per = rows * cols;
        let mut out = vec![T::default(); v.len()];
        if per > 0 {
            for (s, d) in v.chunks_exact(per).zip(out.chunks_exact_mut(per)).take(n) {
                transpose(s, rows, cols, d, false);
            }
        }
        out
    }
    Ok(match x.data() {
        TensorData::U8(v) => Tensor::from_vec(shape, each(v, n, rows, cols))?,
        TensorData::I8(v) => Tensor::from_vec(shape, each(v, n, rows, cols))?,
        _ => bail_invalid!("{what} has type {}, expected uint8 or int8", x.dtype()),
    })
}
