//! Gather and GatherElements (negative indices count from the end).

use super::common::{Movable, elems, norm_axis, strides, with_movable, wrap};
use crate::op::required;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::Tensor;

pub fn register(r: &mut Registry) {
    r.register("", "Gather", build_gather);
    r.register("", "GatherElements", build_gather_elements);
}

/// Indices as positions along an axis of size `dim`.
fn positions(indices: &Tensor, dim: usize) -> Result<Vec<usize>, OpError> {
    let raw = indices.to_i64_vec().map_err(|_| {
        OpError::Invalid(format!(
            "input 1 (indices) has dtype {}, expected int32 or int64",
            indices.dtype()
        ))
    })?;
    raw.iter()
        .map(|&i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            if j < 0 || j >= dim as i64 {
                bail_invalid!("index {i} is out of range for an axis of size {dim}");
            }
            Ok(j as usize)
        })
        .collect()
}

#[derive(Debug)]
struct Gather {
    axis: i64,
}

fn build_gather(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Gather {
        axis: ctx.node.attr_int_or("axis", 0)?,
    }))
}

fn gather<T: Movable>(src: &[T], outer: usize, dim: usize, inner: usize, idx: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx {
            let b = (o * dim + i) * inner;
            out.extend_from_slice(&src[b..b + inner]);
        }
    }
    out
}

impl Op for Gather {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let indices = required(inputs, 1)?;
        let axis = norm_axis(self.axis, x.rank(), "axis")?;
        let dim = x.shape()[axis];
        let idx = positions(indices, dim)?;
        let outer: usize = x.shape()[..axis].iter().product();
        let inner: usize = x.shape()[axis + 1..].iter().product();
        let mut shape = x.shape()[..axis].to_vec();
        shape.extend_from_slice(indices.shape());
        shape.extend_from_slice(&x.shape()[axis + 1..]);
        let y = with_movable!(x.dtype(), T => {
            wrap(shape, gather(elems::<T>(x, "input 0")?, outer, dim, inner, &idx), x.dtype())
        })?;
        Ok(vec![y])
    }
}

#[derive(Debug)]
struct GatherElements {
    axis: i64,
}

fn build_gather_elements(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(GatherElements {
        axis: ctx.node.attr_int_or("axis", 0)?,
    }))
}

/// `out[i0.., ia, ..] = src[i0.., idx[i0.., ia, ..], ..]`, walking the
/// indices' shape with an odometer.
fn gather_elements<T: Movable>(
    src: &[T],
    in_shape: &[usize],
    idx_shape: &[usize],
    axis: usize,
    idx: &[usize],
) -> Vec<T> {
    let st = strides(in_shape);
    let r = idx_shape.len();
    let mut pos = vec![0usize; r];
    let mut out = Vec::with_capacity(idx.len());
    for &i in idx {
        let off: usize = (0..r)
            .map(|a| if a == axis { i * st[a] } else { pos[a] * st[a] })
            .sum();
        out.push(src[off].clone());
        for a in (0..r).rev() {
            pos[a] += 1;
            if pos[a] < idx_shape[a] {
                break;
            }
            pos[a] = 0;
        }
    }
    out
}

impl Op for GatherElements {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let indices = required(inputs, 1)?;
        let axis = norm_axis(self.axis, x.rank(), "axis")?;
        let fits = indices.rank() == x.rank()
            && (0..x.rank()).all(|a| a == axis || indices.shape()[a] <= x.shape()[a]);
        if !fits {
            bail_invalid!(
                "input 1 (indices) has shape {:?}, incompatible with data shape {:?} on axis {axis}",
                indices.shape(),
                x.shape()
            );
        }
        let idx = positions(indices, x.shape()[axis])?;
        let y = with_movable!(x.dtype(), T => {
            let v = gather_elements(elems::<T>(x, "input 0")?, x.shape(), indices.shape(), axis, &idx);
            wrap(indices.shape().to_vec(), v, x.dtype())
        })?;
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RunCtx {
        RunCtx { threads: 1 }
    }

    #[test]
    fn gather_axis1_negative() {
        let x = Tensor::from_vec(vec![2, 3], vec![1f32, 2., 3., 4., 5., 6.]).unwrap();
        let i = Tensor::from_vec(vec![2], vec![-1i64, 0]).unwrap();
        let y = Gather { axis: 1 }
            .run(&ctx(), &[Some(&x), Some(&i)])
            .unwrap();
        assert_eq!(y[0].shape(), &[2, 2]);
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[3., 1., 6., 4.]);
        let bad = Tensor::from_vec(vec![1], vec![3i32]).unwrap();
        assert!(
            Gather { axis: 1 }
                .run(&ctx(), &[Some(&x), Some(&bad)])
                .is_err()
        );
    }

    #[test]
    fn gather_elements_matches_onnx_example() {
        let x = Tensor::from_vec(vec![2, 2], vec![1i32, 2, 3, 4]).unwrap();
        let i = Tensor::from_vec(vec![2, 2], vec![0i64, 0, 1, 0]).unwrap();
        let y = GatherElements { axis: 1 }
            .run(&ctx(), &[Some(&x), Some(&i)])
            .unwrap();
        assert_eq!(y[0].as_slice::<i32>().unwrap(), &[1, 1, 4, 3]);
    }
}
