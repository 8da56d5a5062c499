//! Add, Sub, Mul, Div with multidirectional (numpy) broadcasting. Backward
//! sums each input's gradient over the dimensions it was broadcast along.

use crate::op::{Ctx, Fwd, Grad, Op, Saved, arc_in, check_len, f32_tensor, req, saved};
use crate::{Result, TrainError, invalid};
use quench_ir::{Node, Tensor};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Add,
    Sub,
    Mul,
    Div,
}

pub struct Binary {
    kind: Kind,
}

pub fn build(node: &Node) -> Result<Box<dyn Op>> {
    let kind = match node.op_type.as_str() {
        "Add" => Kind::Add,
        "Sub" => Kind::Sub,
        "Mul" => Kind::Mul,
        "Div" => Kind::Div,
        o => invalid!("not a binary op: {o}"),
    };
    Ok(Box::new(Binary { kind }))
}

/// The broadcast shape of `a` and `b`.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => invalid!("shapes {a:?} and {b:?} do not broadcast"),
        };
    }
    Ok(out)
}

/// Strides of `shape` read as `out` (right-aligned, 0 on broadcast dims).
pub fn bstrides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let mut st = vec![0; r];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        let oi = i + r - shape.len();
        st[oi] = if shape[i] == 1 { 0 } else { s };
        s *= shape[i];
    }
    st
}

/// Calls `f(out_index, offset_a, offset_b)` over every element of `out`.
pub fn for_each2(
    out: &[usize],
    sa: &[usize],
    sb: &[usize],
    mut f: impl FnMut(usize, usize, usize),
) {
    let n: usize = out.iter().product();
    if n == 0 {
        return;
    }
    let r = out.len();
    let mut idx = vec![0usize; r];
    let (mut oa, mut ob) = (0usize, 0usize);
    for i in 0..n {
        f(i, oa, ob);
        for d in (0..r).rev() {
            idx[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if idx[d] < out[d] {
                break;
            }
            oa -= sa[d] * out[d];
            ob -= sb[d] * out[d];
            idx[d] = 0;
        }
    }
}

/// Sums a gradient of shape `out` down to `shape` (which broadcast to `out`).
pub fn reduce_to(g: &[f32], out: &[usize], shape: &[usize]) -> Vec<f32> {
    if out == shape {
        return g.to_vec();
    }
    let n: usize = shape.iter().product();
    let mut r = vec![0.0; n];
    if n == 1 {
        r[0] = g.iter().sum();
        return r;
    }
    let st = bstrides(shape, out);
    let zero = vec![0; out.len()];
    for_each2(out, &st, &zero, |i, a, _| r[a] += g[i]);
    r
}

struct SavedBin {
    a: Option<Arc<Tensor>>,
    b: Option<Arc<Tensor>>,
    sa: Vec<usize>,
    sb: Vec<usize>,
    out: Vec<usize>,
}

impl Kind {
    #[inline(always)]
    fn f(self, a: f32, b: f32) -> f32 {
        match self {
            Kind::Add => a + b,
            Kind::Sub => a - b,
            Kind::Mul => a * b,
            Kind::Div => a / b,
        }
    }
}

impl Op for Binary {
    fn differentiable(&self, i: usize) -> bool {
        i < 2
    }

    fn forward(&self, _cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let (ta, tb) = (req(x, 0)?, req(x, 1)?);
        let out = broadcast_shape(ta.shape(), tb.shape())?;
        let k = self.kind;
        let y = match (ta.as_slice::<f32>(), tb.as_slice::<f32>()) {
            (Ok(a), Ok(b)) => {
                let y = if ta.shape() == tb.shape() {
                    a.iter().zip(b).map(|(&p, &q)| k.f(p, q)).collect()
                } else if b.len() == 1 {
                    a.iter().map(|&p| k.f(p, b[0])).collect()
                } else {
                    let mut y = vec![0.0; out.iter().product()];
                    let (sa, sb) = (bstrides(ta.shape(), &out), bstrides(tb.shape(), &out));
                    for_each2(&out, &sa, &sb, |i, p, q| y[i] = k.f(a[p], b[q]));
                    y
                };
                f32_tensor(out.clone(), y)?
            }
            _ => int_binary(k, ta, tb, &out)?,
        };
        let (na, nb) = (need.first() == Some(&true), need.get(1) == Some(&true));
        let saved = (na || nb).then(|| {
            // Add/Sub need no operand; Mul/Div need the other one (and Div b).
            let keep_a = matches!(k, Kind::Mul | Kind::Div) && nb;
            let keep_b = matches!(k, Kind::Mul | Kind::Div);
            Box::new(SavedBin {
                a: keep_a.then(|| arc_in(x, 0).ok()).flatten(),
                b: keep_b.then(|| arc_in(x, 1).ok()).flatten(),
                sa: ta.shape().to_vec(),
                sb: tb.shape().to_vec(),
                out: out.clone(),
            }) as Saved
        });
        Ok(Fwd::new(vec![y], saved))
    }

    fn backward(
        &self,
        _cx: &Ctx,
        s: &Saved,
        gy: &[Option<Grad>],
        need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let s: &SavedBin = saved(s)?;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None, None]);
        };
        check_len(g, s.out.iter().product())?;
        fn operand(t: &Option<Arc<Tensor>>) -> Result<&[f32]> {
            match t {
                Some(t) => Ok(t.as_slice::<f32>()?),
                None => Err(TrainError::Invalid("operand was not saved".into())),
            }
        }
        let (sa, sb) = (bstrides(&s.sa, &s.out), bstrides(&s.sb, &s.out));
        let mut ga = None;
        let mut gb = None;
        if need.first() == Some(&true) {
            let full = match self.kind {
                Kind::Add | Kind::Sub => None,
                Kind::Mul | Kind::Div => {
                    let b = operand(&s.b)?;
                    let mut v = vec![0.0; g.len()];
                    let div = self.kind == Kind::Div;
                    for_each2(&s.out, &sa, &sb, |i, _, q| {
                        v[i] = if div { g[i] / b[q] } else { g[i] * b[q] }
                    });
                    Some(v)
                }
            };
            ga = Some(reduce_to(full.as_deref().unwrap_or(g), &s.out, &s.sa));
        }
        if need.get(1) == Some(&true) {
            let full: Vec<f32> = match self.kind {
                Kind::Add => g.clone(),
                Kind::Sub => g.iter().map(|v| -v).collect(),
                Kind::Mul | Kind::Div => {
                    let a = operand(&s.a)?;
                    let b = operand(&s.b)?;
                    let mut v = vec![0.0; g.len()];
                    let div = self.kind == Kind::Div;
                    for_each2(&s.out, &sa, &sb, |i, p, q| {
                        v[i] = if div {
                            -g[i] * a[p] / (b[q] * b[q])
                        } else {
                            g[i] * a[p]
                        }
                    });
                    v
                }
            };
            gb = Some(reduce_to(&full, &s.out, &s.sb));
        }
        Ok(vec![ga, gb])
    }
}

/// Integer arithmetic for shape computations (no gradient).
fn int_binary(k: Kind, ta: &Tensor, tb: &Tensor, out: &[usize]) -> Result<Tensor> {
    let (a, b) = (ta.to_i64_vec()?, tb.to_i64_vec()?);
    let mut y = vec![0i64; out.iter().product()];
    let (sa, sb) = (bstrides(ta.shape(), out), bstrides(tb.shape(), out));
    let mut bad = false;
    for_each2(out, &sa, &sb, |i, p, q| {
        y[i] = match k {
            Kind::Add => a[p].wrapping_add(b[q]),
            Kind::Sub => a[p].wrapping_sub(b[q]),
            Kind::Mul => a[p].wrapping_mul(b[q]),
            Kind::Div => a[p].checked_div(b[q]).unwrap_or_else(|| {
                bad = true;
                0
            }),
        }
    });
    if bad {
        invalid!("integer division by zero");
    }
    Ok(Tensor::from_vec(out.to_vec(), y)?)
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_node, rand_input};
    use quench_ir::Node;

    #[test]
    fn broadcasting_binaries_match_finite_differences() {
        for op in ["Add", "Sub", "Mul", "Div"] {
            let node = Node::new(op, "n", &["a", "b"], &["y"]);
            for (sa, sb) in [
                (vec![2, 3, 4], vec![2, 3, 4]),
                (vec![2, 3, 4], vec![3, 1]),
                (vec![1, 3, 1], vec![2, 1, 4]),
                (vec![2, 3], vec![1]),
            ] {
                check_node(
                    &node,
                    &[("a", rand_input(&sa, 1)), ("b", rand_input(&sb, 2))],
                    &[],
                    17,
                );
            }
        }
    }

    #[test]
    fn incompatible_shapes_are_an_error() {
        let node = Node::new("Add", "n", &["a", "b"], &["y"]);
        let r = crate::gradcheck::run_node(
            &node,
            &[("a", rand_input(&[2, 3], 1)), ("b", rand_input(&[4], 2))],
            &[],
        );
        assert!(r.unwrap_err().to_string().contains("broadcast"));
    }
}
