//! ArgMax and ArgMin along one axis.

use super::normalize_axis;
use crate::op::required;
use crate::ops::elementwise::num::Num;
use crate::ops::elementwise::{dispatch_num, unsupported_dtype};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::Tensor;

pub fn register(r: &mut Registry) {
    r.register("", "ArgMax", build);
    r.register("", "ArgMin", build);
}

#[derive(Debug)]
struct Arg {
    max: bool,
    axis: i64,
    keepdims: bool,
    last: bool,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let n = ctx.node;
    Ok(Box::new(Arg {
        max: n.op_type == "ArgMax",
        axis: n.attr_int_or("axis", 0)?,
        keepdims: n.attr_int_or("keepdims", 1)? != 0,
        last: n.attr_int_or("select_last_index", 0)? != 0,
    }))
}

/// Index of the extreme along the middle axis of `[outer, n, inner]`; the
/// first NaN wins, as in numpy.
fn arg<T: Num>(x: &[T], outer: usize, n: usize, inner: usize, max: bool, last: bool) -> Vec<i64> {
    let mut out = vec![0i64; outer * inner];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| x[(o * n + k) * inner + i];
            let (mut best, mut bi) = (at(0), 0usize);
            for k in 1..n {
                let v = at(k);
                if best.is_nan() {
                    break;
                }
                let better = if v.is_nan() {
                    true
                } else if max {
                    v > best || (last && v == best)
                } else {
                    v < best || (last && v == best)
                };
                if better {
                    best = v;
                    bi = k;
                }
            }
            out[o * inner + i] = bi as i64;
        }
    }
    out
}

impl Op for Arg {
    fn run(&self, _ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let shape = x.shape();
        let axis = normalize_axis(self.axis, shape.len(), "attribute axis")?;
        let (outer, n, inner) = if shape.is_empty() {
            (1, 1, 1)
        } else {
            (
                shape[..axis].iter().product(),
                shape[axis],
                shape[axis + 1..].iter().product(),
            )
        };
        if n == 0 {
            bail_invalid!("cannot take ArgMax/ArgMin over axis {axis} of size 0");
        }
        let mut out_shape = shape.to_vec();
        if !out_shape.is_empty() {
            if self.keepdims {
                out_shape[axis] = 1;
            } else {
                out_shape.remove(axis);
            }
        }
        let v = dispatch_num!(x.data(), T, v => arg::<T>(v, outer, n, inner, self.max, self.last),
            _ => return Err(unsupported_dtype("ArgMax/ArgMin", x.dtype())));
        Ok(vec![Tensor::from_vec(out_shape, v)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::elementwise::tests::run_node;
    use quench_ir::{Attr, Node, Tensor};

    #[test]
    fn argmax_first_and_last() {
        let x = Tensor::from_vec(vec![2, 3], vec![1i32, 5, 5, 7, 2, 7]).unwrap();
        let n = Node::new("ArgMax", "n", &["x"], &["y"]).with_attr("axis", Attr::Int(1));
        let y = run_node(n.clone(), 13, &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[2, 1]);
        assert_eq!(y.as_slice::<i64>().unwrap(), &[1, 0]);
        let n = n.with_attr("select_last_index", Attr::Int(1));
        let y = run_node(n, 13, &[Some(&x)]).unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[2, 2]);
        let n = Node::new("ArgMin", "n", &["x"], &["y"]).with_attr("keepdims", Attr::Int(0));
        let y = run_node(n, 13, &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[3]);
        assert_eq!(y.as_slice::<i64>().unwrap(), &[0, 1, 0]);
        let n = Node::new("ArgMin", "n", &["x"], &["y"]).with_attr("axis", Attr::Int(2));
        assert!(run_node(n, 13, &[Some(&x)]).is_err());
    }
}
