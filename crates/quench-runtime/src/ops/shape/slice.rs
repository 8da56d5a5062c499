//! Slice: starts/ends/axes as attributes before opset 10, then inputs with
//! steps (negative steps walk backwards). Bounds are clamped as ONNX says.

use super::common::{attr_ints, elems, gather_axes, norm_axes, with_movable, wrap};
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::Tensor;

pub fn register(r: &mut Registry) {
    r.register("", "Slice", build);
}

/// Starts, ends and optional axes, as attributes before opset 10.
type SliceAttrs = (Vec<i64>, Vec<i64>, Option<Vec<i64>>);

#[derive(Debug)]
struct Slice {
    attrs: Option<SliceAttrs>,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let attrs = if ctx.opset < 10 {
        let (Some(starts), Some(ends)) =
            (attr_ints(ctx.node, "starts")?, attr_ints(ctx.node, "ends")?)
        else {
            bail_invalid!("attributes 'starts' and 'ends' are required before opset 10");
        };
        Some((starts, ends, attr_ints(ctx.node, "axes")?))
    } else {
        None
    };
    Ok(Box::new(Slice { attrs }))
}

/// Input indices taken along one axis of size `dim`.
pub(crate) fn slice_indices(dim: usize, start: i64, end: i64, step: i64) -> Vec<usize> {
    let d = dim as i64;
    let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (start, end) = (fix(start), fix(end));
    if step > 0 {
        let (s, e) = (start.clamp(0, d), end.clamp(0, d));
        (s..e).step_by(step as usize).map(|i| i as usize).collect()
    } else {
        let (s, e) = (start.max(0).min(d - 1), end.max(-1).min(d - 1));
        let mut v = Vec::new();
        let mut i = s;
        while i > e {
            v.push(i as usize);
            i = i.saturating_add(step);
        }
        v
    }
}

impl Op for Slice {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let (starts, ends, axes, steps) = match &self.attrs {
            Some((s, e, a)) => (s.clone(), e.clone(), a.clone(), None),
            None => (
                required(inputs, 1)?.to_i64_vec()?,
                required(inputs, 2)?.to_i64_vec()?,
                optional(inputs, 3).map(|t| t.to_i64_vec()).transpose()?,
                optional(inputs, 4).map(|t| t.to_i64_vec()).transpose()?,
            ),
        };
        let n = starts.len();
        let axes = match axes {
            Some(a) => a,
            None => (0..n as i64).collect(),
        };
        let steps = steps.unwrap_or_else(|| vec![1; n]);
        if ends.len() != n || axes.len() != n || steps.len() != n {
            bail_invalid!(
                "starts ({n}), ends ({}), axes ({}) and steps ({}) must have the same length",
                ends.len(),
                axes.len(),
                steps.len()
            );
        }
        let axes = norm_axes(&axes, x.rank(), "axes")?;
        let mut maps: Vec<Vec<usize>> = x.shape().iter().map(|&d| (0..d).collect()).collect();
        for i in 0..n {
            if steps[i] == 0 {
                bail_invalid!("steps[{i}] is 0");
            }
            maps[axes[i]] = slice_indices(x.shape()[axes[i]], starts[i], ends[i], steps[i]);
        }
        let out_shape: Vec<usize> = maps.iter().map(Vec::len).collect();
        let y = with_movable!(x.dtype(), T => {
            let v = gather_axes(elems::<T>(x, "input 0")?, x.shape(), &maps, &T::default());
            wrap(out_shape, v, x.dtype())
        })?;
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_clamp_like_onnx() {
        assert_eq!(slice_indices(5, 1, 3, 1), vec![1, 2]);
        assert_eq!(slice_indices(5, -1, i64::MIN, -1), vec![4, 3, 2, 1, 0]);
        assert_eq!(slice_indices(5, 20, -100, -2), vec![4, 2, 0]);
        assert_eq!(slice_indices(5, 0, i64::MAX, 3), vec![0, 3]);
        assert_eq!(slice_indices(5, 10, 1000, 1), Vec::<usize>::new());
        assert_eq!(slice_indices(0, -1, -5, -1), Vec::<usize>::new());
    }

    #[test]
    fn slice_2d_and_zero_step() {
        let x = Tensor::from_vec(vec![3, 4], (0..12).collect::<Vec<i32>>()).unwrap();
        let s = Slice { attrs: None };
        let t = |v: Vec<i64>| Tensor::from_vec(vec![v.len()], v).unwrap();
        let (st, en, ax, sp) = (t(vec![0, 3]), t(vec![-1, 0]), t(vec![0, 1]), t(vec![2, -2]));
        let y = s
            .run(
                &RunCtx { threads: 1 },
                &[Some(&x), Some(&st), Some(&en), Some(&ax), Some(&sp)],
            )
            .unwrap();
        assert_eq!(y[0].shape(), &[1, 2]);
        assert_eq!(y[0].as_slice::<i32>().unwrap(), &[3, 1]);
        let zero = t(vec![0, 0]);
        let ctx = RunCtx { threads: 1 };
        assert!(
            s.run(
                &ctx,
                &[Some(&x), Some(&st), Some(&en), Some(&ax), Some(&zero)]
            )
            .is_err()
        );
    }
}
