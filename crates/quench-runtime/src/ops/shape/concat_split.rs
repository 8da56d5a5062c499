//! Concat and Split: copies of contiguous runs along one axis.

use super::common::{Movable, attr_ints, elems, ints_input_or_attr, norm_axis, with_movable, wrap};
use crate::op::required;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::Tensor;

pub fn register(r: &mut Registry) {
    r.register("", "Concat", build_concat);
    r.register("", "Split", build_split);
}

#[derive(Debug)]
struct Concat {
    axis: i64,
}

fn build_concat(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let Some(axis) = ctx.node.attr_int("axis")? else {
        bail_invalid!("attribute 'axis' is required");
    };
    Ok(Box::new(Concat { axis }))
}

impl Op for Concat {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let xs: Vec<&Tensor> = (0..inputs.len())
            .map(|i| required(inputs, i))
            .collect::<Result<_, _>>()?;
        let Some(first) = xs.first() else {
            bail_invalid!("Concat needs at least one input");
        };
        let rank = first.rank();
        let axis = norm_axis(self.axis, rank, "axis")?;
        let mut out_shape = first.shape().to_vec();
        out_shape[axis] = 0;
        for (i, x) in xs.iter().enumerate() {
            let same = x.rank() == rank
                && (0..rank).all(|a| a == axis || x.shape()[a] == first.shape()[a]);
            if !same {
                bail_invalid!(
                    "input {i} has shape {:?}, incompatible with input 0 {:?} along axis {axis}",
                    x.shape(),
                    first.shape()
                );
            }
            if x.dtype() != first.dtype() {
                bail_invalid!(
                    "input {i} has dtype {}, input 0 has {}",
                    x.dtype(),
                    first.dtype()
                );
            }
            out_shape[axis] += x.shape()[axis];
        }
        let outer: usize = first.shape()[..axis].iter().product();
        let inner: usize = first.shape()[axis + 1..].iter().product();
        let out = with_movable!(first.dtype(), T => {
            let parts: Vec<(&[T], usize)> = xs
                .iter()
                .enumerate()
                .map(|(i, x)| Ok((elems::<T>(x, &format!("input {i}"))?, x.shape()[axis] * inner)))
                .collect::<Result<_, OpError>>()?;
            wrap(out_shape, concat(&parts, outer), first.dtype())
        })?;
        Ok(vec![out])
    }
}

/// Interleaves `outer` runs of each part, each part's run of the given length.
fn concat<T: Movable>(parts: &[(&[T], usize)], outer: usize) -> Vec<T> {
    let total: usize = parts.iter().map(|(_, n)| n * outer).sum();
    let mut out = Vec::with_capacity(total);
    for o in 0..outer {
        for &(src, n) in parts {
            out.extend_from_slice(&src[o * n..(o + 1) * n]);
        }
    }
    out
}

#[derive(Debug)]
struct Split {
    axis: i64,
    opset: i64,
    attr_split: Option<Vec<i64>>,
    num_outputs: Option<i64>,
    n_outputs: usize,
}

fn build_split(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Split {
        axis: ctx.node.attr_int_or("axis", 0)?,
        opset: ctx.opset,
        attr_split: attr_ints(ctx.node, "split")?,
        num_outputs: ctx.node.attr_int("num_outputs")?,
        n_outputs: ctx.node.outputs.len(),
    }))
}

impl Split {
    fn sizes(&self, inputs: &[Option<&Tensor>], dim: usize) -> Result<Vec<usize>, OpError> {
        if let Some(split) = ints_input_or_attr(inputs, 1, &self.attr_split)? {
            if split.iter().any(|&s| s < 0) || split.iter().sum::<i64>() != dim as i64 {
                bail_invalid!("split {split:?} does not add up to the axis size {dim}");
            }
            if split.len() != self.n_outputs {
                bail_invalid!(
                    "split {split:?} has {} parts but the node has {} outputs",
                    split.len(),
                    self.n_outputs
                );
            }
            return Ok(split.iter().map(|&s| s as usize).collect());
        }
        let n = match self.num_outputs {
            Some(n) if n <= 0 => bail_invalid!("num_outputs {n} must be positive"),
            Some(n) => n as usize,
            None => self.n_outputs,
        };
        if n == 0 {
            bail_invalid!("Split has no outputs");
        }
        if dim.is_multiple_of(n) {
            return Ok(vec![dim / n; n]);
        }
        if self.opset < 18 {
            bail_invalid!("axis of size {dim} cannot be split into {n} equal parts");
        }
        // Opset 18: chunks of ceil(dim / n), the last one smaller.
        let chunk = dim.div_ceil(n);
        let mut sizes = vec![chunk; n];
        let rest = dim.checked_sub(chunk * (n - 1));
        match rest {
            Some(r) => sizes[n - 1] = r,
            None => bail_invalid!("axis of size {dim} cannot be split into {n} parts"),
        }
        Ok(sizes)
    }
}

impl Op for Split {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let axis = norm_axis(self.axis, x.rank(), "axis")?;
        let dim = x.shape()[axis];
        let sizes = self.sizes(inputs, dim)?;
        let outer: usize = x.shape()[..axis].iter().product();
        let inner: usize = x.shape()[axis + 1..].iter().product();
        with_movable!(x.dtype(), T => {
            let src = elems::<T>(x, "input 0")?;
            let mut start = 0;
            let mut outs = Vec::with_capacity(sizes.len());
            for &s in &sizes {
                let mut v = Vec::with_capacity(outer * s * inner);
                for o in 0..outer {
                    let base = (o * dim + start) * inner;
                    v.extend_from_slice(&src[base..base + s * inner]);
                }
                let mut shape = x.shape().to_vec();
                shape[axis] = s;
                outs.push(wrap(shape, v, x.dtype())?);
                start += s;
            }
            Ok(outs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RunCtx {
        RunCtx { threads: 1 }
    }

    #[test]
    fn concat_middle_axis() {
        let a = Tensor::from_vec(vec![2, 1], vec![1i64, 2]).unwrap();
        let b = Tensor::from_vec(vec![2, 2], vec![3i64, 4, 5, 6]).unwrap();
        let c = Concat { axis: -1 };
        let y = c.run(&ctx(), &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(y[0].shape(), &[2, 3]);
        assert_eq!(y[0].as_slice::<i64>().unwrap(), &[1, 3, 4, 2, 5, 6]);
        let bad = Tensor::from_vec(vec![3, 1], vec![1i64, 2, 3]).unwrap();
        assert!(c.run(&ctx(), &[Some(&a), Some(&bad)]).is_err());
    }

    #[test]
    fn split_uneven_opset18() {
        let x = Tensor::from_vec(vec![7], (0..7).map(|v| v as f32).collect()).unwrap();
        let s = Split {
            axis: 0,
            opset: 18,
            attr_split: None,
            num_outputs: Some(4),
            n_outputs: 4,
        };
        let y = s.run(&ctx(), &[Some(&x)]).unwrap();
        let shapes: Vec<_> = y.iter().map(|t| t.shape()[0]).collect();
        assert_eq!(shapes, vec![2, 2, 2, 1]);
        assert_eq!(y[3].as_slice::<f32>().unwrap(), &[6.0]);
        let s13 = Split { opset: 13, ..s };
        assert!(s13.run(&ctx(), &[Some(&x)]).is_err());
    }
}
