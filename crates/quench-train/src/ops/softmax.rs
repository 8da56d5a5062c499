//! Softmax and LogSoftmax along one axis (opset >= 13), or over the
//! flattened trailing dims (opset < 13).

use crate::Result;
use crate::op::{Ctx, Fwd, Grad, Op, Saved, axis, check_len, f32_in, f32_tensor, req, saved};
use quench_ir::{Node, Tensor};
use std::sync::Arc;

pub struct Softmax {
    log: bool,
    axis: i64,
    legacy: bool,
}

pub fn build(node: &Node, opset: i64) -> Result<Box<dyn Op>> {
    let legacy = opset < 13;
    Ok(Box::new(Softmax {
        log: node.op_type == "LogSoftmax",
        axis: node.attr_int_or("axis", if legacy { 1 } else { -1 })?,
        legacy,
    }))
}

struct SavedSm {
    y: Vec<f32>,
    outer: usize,
    len: usize,
    inner: usize,
}

impl Softmax {
    fn dims(&self, shape: &[usize]) -> Result<(usize, usize, usize)> {
        let a = axis(self.axis, shape.len())?;
        let outer = shape[..a].iter().product();
        if self.legacy {
            Ok((outer, shape[a..].iter().product(), 1))
        } else {
            Ok((
                outer,
                shape.get(a).copied().unwrap_or(1),
                shape[a + 1..].iter().product(),
            ))
        }
    }
}

impl Op for Softmax {
    fn forward(&self, _cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let tx = req(x, 0)?;
        let (outer, len, inner) = self.dims(tx.shape())?;
        let xs = f32_in(x, 0)?;
        let mut y = vec![0.0; xs.len()];
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| (o * len + j) * inner + i;
                let m = (0..len)
                    .map(|j| xs[at(j)])
                    .fold(f32::NEG_INFINITY, f32::max);
                let s: f32 = (0..len).map(|j| (xs[at(j)] - m).exp()).sum();
                for j in 0..len {
                    y[at(j)] = if self.log {
                        xs[at(j)] - m - s.ln()
                    } else {
                        (xs[at(j)] - m).exp() / s
                    };
                }
            }
        }
        let sv = (need.first() == Some(&true)).then(|| {
            Box::new(SavedSm {
                y: y.clone(),
                outer,
                len,
                inner,
            }) as Saved
        });
        Ok(Fwd::new(vec![f32_tensor(tx.shape().to_vec(), y)?], sv))
    }

    fn backward(
        &self,
        _cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        _need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let sv: &SavedSm = saved(sv)?;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None]);
        };
        check_len(g, sv.y.len())?;
        let (len, inner) = (sv.len, sv.inner);
        let mut dx = vec![0.0; g.len()];
        for o in 0..sv.outer {
            for i in 0..inner {
                let at = |j: usize| (o * len + j) * inner + i;
                if self.log {
                    let s: f32 = (0..len).map(|j| g[at(j)]).sum();
                    for j in 0..len {
                        dx[at(j)] = g[at(j)] - sv.y[at(j)].exp() * s;
                    }
                } else {
                    let s: f32 = (0..len).map(|j| g[at(j)] * sv.y[at(j)]).sum();
                    for j in 0..len {
                        dx[at(j)] = sv.y[at(j)] * (g[at(j)] - s);
                    }
                }
            }
        }
        Ok(vec![Some(dx)])
    }
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_node, rand_input, run_node};
    use quench_ir::{Attr, Node};

    #[test]
    fn softmaxes_match_finite_differences() {
        for op in ["Softmax", "LogSoftmax"] {
            for (ax, opset) in [(-1, 13), (1, 13), (1, 11)] {
                let n = Node::new(op, "s", &["x"], &["y"]).with_attr("axis", Attr::Int(ax));
                check_node(&n, &[("x", rand_input(&[2, 3, 4], 1))], &[], opset);
            }
        }
    }

    #[test]
    fn bad_axis_is_an_error() {
        let n = Node::new("Softmax", "s", &["x"], &["y"]).with_attr("axis", Attr::Int(5));
        assert!(
            run_node(&n, &[("x", rand_input(&[2, 3], 1))], &[])
                .unwrap_err()
                .to_string()
                .contains("axis")
        );
    }
}
