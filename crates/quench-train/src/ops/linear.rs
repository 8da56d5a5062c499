//! Gemm and MatMul. Backward is two more GEMMs, reading transposed operands
//! through strides instead of copying them.

use super::binary::{broadcast_shape, bstrides, for_each2, reduce_to};
use crate::op::{
    Ctx, Fwd, Grad, Op, Saved, arc_in, check_len, f32_in, f32_tensor, opt_in, req, saved,
};
use crate::{Result, invalid};
use quench_ir::{Node, Tensor};
use quench_kernels::gemm::sgemm_strided;
use std::sync::Arc;

pub struct Gemm {
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
}

pub fn build_gemm(node: &Node) -> Result<Box<dyn Op>> {
    Ok(Box::new(Gemm {
        alpha: node.attr_float_or("alpha", 1.0)?,
        beta: node.attr_float_or("beta", 1.0)?,
        trans_a: node.attr_int_or("transA", 0)? != 0,
        trans_b: node.attr_int_or("transB", 0)? != 0,
    }))
}

struct SavedGemm {
    a: Arc<Tensor>,
    b: Arc<Tensor>,
    c_shape: Option<Vec<usize>>,
    m: usize,
    k: usize,
    n: usize,
}

/// Row/column strides of op(X) for a row-major `rows × cols` X.
fn strides(trans: bool, rows: usize, cols: usize) -> (isize, isize) {
    let _ = rows;
    if trans {
        (1, cols as isize)
    } else {
        (cols as isize, 1)
    }
}

impl Gemm {
    fn dims(&self, a: &Tensor, b: &Tensor) -> Result<(usize, usize, usize)> {
        let (&[ar, ac], &[br, bc]) = (a.shape(), b.shape()) else {
            invalid!(
                "Gemm needs 2-D A and B, got {:?} and {:?}",
                a.shape(),
                b.shape()
            );
        };
        let (m, k) = if self.trans_a { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if self.trans_b { (bc, br) } else { (br, bc) };
        if k != k2 {
            invalid!(
                "Gemm inner dims differ: A {:?} and B {:?}",
                a.shape(),
                b.shape()
            );
        }
        Ok((m, k, n))
    }
}

impl Op for Gemm {
    fn differentiable(&self, i: usize) -> bool {
        i < 3
    }

    fn forward(&self, cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let (ta, tb) = (req(x, 0)?, req(x, 1)?);
        let (m, k, n) = self.dims(ta, tb)?;
        let (a, b) = (f32_in(x, 0)?, f32_in(x, 1)?);
        let mut y = vec![0.0; m * n];
        let (ars, acs) = strides(self.trans_a, ta.shape()[0], ta.shape()[1]);
        let (brs, bcs) = strides(self.trans_b, tb.shape()[0], tb.shape()[1]);
        sgemm_strided(m, n, k, a, ars, acs, b, brs, bcs, &mut y, 0.0, cx.threads);
        if self.alpha != 1.0 {
            y.iter_mut().for_each(|v| *v *= self.alpha);
        }
        let c_shape = match opt_in(x, 2) {
            Some(tc) => {
                let c = tc.as_slice::<f32>()?;
                let out = [m, n];
                if broadcast_shape(tc.shape(), &out)? != out {
                    invalid!(
                        "C of shape {:?} does not broadcast to [{m}, {n}]",
                        tc.shape()
                    );
                }
                let sc = bstrides(tc.shape(), &out);
                let beta = self.beta;
                for_each2(&out, &sc, &[0, 0], |i, q, _| y[i] += beta * c[q]);
                Some(tc.shape().to_vec())
            }
            None => None,
        };
        let any = need.iter().any(|&b| b);
        let s = any.then(|| -> Result<Saved> {
            Ok(Box::new(SavedGemm {
                a: arc_in(x, 0)?,
                b: arc_in(x, 1)?,
                c_shape,
                m,
                k,
                n,
            }))
        });
        Ok(Fwd::new(vec![f32_tensor(vec![m, n], y)?], s.transpose()?))
    }

    fn backward(
        &self,
        cx: &Ctx,
        s: &Saved,
        gy: &[Option<Grad>],
        need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let s: &SavedGemm = saved(s)?;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None, None, None]);
        };
        let (m, k, n) = (s.m, s.k, s.n);
        check_len(g, m * n)?;
        let ga: Vec<f32>;
        let g = if self.alpha != 1.0 {
            ga = g.iter().map(|v| v * self.alpha).collect();
            &ga
        } else {
            g
        };
        let (a, b) = (s.a.as_slice::<f32>()?, s.b.as_slice::<f32>()?);
        let (ars, acs) = strides(self.trans_a, 0, s.a.shape()[1]);
        let (brs, bcs) = strides(self.trans_b, 0, s.b.shape()[1]);
        let mut out = vec![None, None, None];
        if need.first() == Some(&true) {
            let mut da = vec![0.0; m * k];
            if self.trans_a {
                sgemm_strided(
                    k, m, n, b, brs, bcs, g, 1, n as isize, &mut da, 0.0, cx.threads,
                );
            } else {
                sgemm_strided(
                    m, k, n, g, n as isize, 1, b, bcs, brs, &mut da, 0.0, cx.threads,
                );
            }
            out[0] = Some(da);
        }
        if need.get(1) == Some(&true) {
            let mut db = vec![0.0; k * n];
            if self.trans_b {
                sgemm_strided(
                    n, k, m, g, 1, n as isize, a, ars, acs, &mut db, 0.0, cx.threads,
                );
            } else {
                sgemm_strided(
                    k, n, m, a, acs, ars, g, n as isize, 1, &mut db, 0.0, cx.threads,
                );
            }
            out[1] = Some(db);
        }
        if let (Some(true), Some(cs)) = (need.get(2), &s.c_shape) {
            let gy = gy[0].as_deref().unwrap_or_default();
            let mut dc = reduce_to(gy, &[m, n], cs);
            dc.iter_mut().for_each(|v| *v *= self.beta);
            out[2] = Some(dc);
        }
        Ok(out)
    }
}

pub struct MatMul;

struct SavedMm {
    a: Arc<Tensor>,
    b: Arc<Tensor>,
}

/// Shapes of a MatMul: batch dims of A and B padded to the output batch rank,
/// the output shape, and m, k, n.
struct MmDims {
    batch: Vec<usize>,
    sa: Vec<usize>,
    sb: Vec<usize>,
    out: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
}

fn mm_dims(a: &[usize], b: &[usize]) -> Result<MmDims> {
    if a.is_empty() || b.is_empty() {
        invalid!("MatMul operands must have rank >= 1, got {a:?} and {b:?}");
    }
    let (a2, b2) = (
        if a.len() == 1 {
            vec![1, a[0]]
        } else {
            a.to_vec()
        },
        if b.len() == 1 {
            vec![b[0], 1]
        } else {
            b.to_vec()
        },
    );
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        invalid!("MatMul inner dims differ: {a:?} and {b:?}");
    }
    let (ba, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let batch = broadcast_shape(ba, bb)?;
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(MmDims {
        sa: bstrides(ba, &batch),
        sb: bstrides(bb, &batch),
        batch,
        out,
        m,
        k,
        n,
    })
}

impl Op for MatMul {
    fn differentiable(&self, i: usize) -> bool {
        i < 2
    }

    fn forward(&self, cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let (ta, tb) = (req(x, 0)?, req(x, 1)?);
        let d = mm_dims(ta.shape(), tb.shape())?;
        let (a, b) = (f32_in(x, 0)?, f32_in(x, 1)?);
        let (m, k, n) = (d.m, d.k, d.n);
        let nb: usize = d.batch.iter().product();
        let mut y = vec![0.0; nb * m * n];
        let zero = vec![0; d.batch.len()];
        let mut jobs = Vec::new();
        for_each2(&d.batch, &d.sa, &d.sb, |i, p, q| jobs.push((i, p, q)));
        let _ = zero;
        for (i, p, q) in jobs {
            sgemm_strided(
                m,
                n,
                k,
                &a[p * m * k..],
                k as isize,
                1,
                &b[q * k * n..],
                n as isize,
                1,
                &mut y[i * m * n..(i + 1) * m * n],
                0.0,
                cx.threads,
            );
        }
        let s = need.iter().any(|&v| v).then(|| -> Result<Saved> {
            Ok(Box::new(SavedMm {
                a: arc_in(x, 0)?,
                b: arc_in(x, 1)?,
            }))
        });
        Ok(Fwd::new(vec![f32_tensor(d.out, y)?], s.transpose()?))
    }

    fn backward(
        &self,
        cx: &Ctx,
        s: &Saved,
        gy: &[Option<Grad>],
        need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let s: &SavedMm = saved(s)?;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None, None]);
        };
        let d = mm_dims(s.a.shape(), s.b.shape())?;
        let (m, k, n) = (d.m, d.k, d.n);
        check_len(g, d.batch.iter().product::<usize>() * m * n)?;
        let (a, b) = (s.a.as_slice::<f32>()?, s.b.as_slice::<f32>()?);
        let mut jobs = Vec::new();
        for_each2(&d.batch, &d.sa, &d.sb, |i, p, q| jobs.push((i, p, q)));
        let mut out = vec![None, None];
        if need.first() == Some(&true) {
            let mut da = vec![0.0; a.len()];
            for &(i, p, q) in &jobs {
                sgemm_strided(
                    m,
                    k,
                    n,
                    &g[i * m * n..],
                    n as isize,
                    1,
                    &b[q * k * n..],
                    1,
                    n as isize,
                    &mut da[p * m * k..(p + 1) * m * k],
                    1.0,
                    cx.threads,
                );
            }
            out[0] = Some(da);
        }
        if need.get(1) == Some(&true) {
            let mut db = vec![0.0; b.len()];
            for &(i, p, q) in &jobs {
                sgemm_strided(
                    k,
                    n,
                    m,
                    &a[p * m * k..],
                    1,
                    k as isize,
                    &g[i * m * n..],
                    n as isize,
                    1,
                    &mut db[q * k * n..(q + 1) * k * n],
                    1.0,
                    cx.threads,
                );
            }
            out[1] = Some(db);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_node, rand_input};
    use quench_ir::{Attr, Node};

    #[test]
    fn gemm_matches_finite_differences() {
        for (ta, tb) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let node = Node::new("Gemm", "n", &["a", "b", "c"], &["y"])
                .with_attr("transA", Attr::Int(ta))
                .with_attr("transB", Attr::Int(tb))
                .with_attr("alpha", Attr::Float(0.7))
                .with_attr("beta", Attr::Float(1.3));
            let sa = if ta == 1 { [4, 3] } else { [3, 4] };
            let sb = if tb == 1 { [5, 4] } else { [4, 5] };
            check_node(
                &node,
                &[
                    ("a", rand_input(&sa, 1)),
                    ("b", rand_input(&sb, 2)),
                    ("c", rand_input(&[5], 3)),
                ],
                &[],
                17,
            );
        }
    }

    #[test]
    fn matmul_matches_finite_differences() {
        let node = Node::new("MatMul", "n", &["a", "b"], &["y"]);
        for (sa, sb) in [
            (vec![3, 4], vec![4, 2]),
            (vec![2, 3, 4], vec![4, 2]),
            (vec![2, 1, 3, 4], vec![3, 4, 2]),
            (vec![4], vec![2, 4, 3]),
            (vec![2, 3, 4], vec![4]),
        ] {
            check_node(
                &node,
                &[("a", rand_input(&sa, 1)), ("b", rand_input(&sb, 2))],
                &[],
                17,
            );
        }
    }

    #[test]
    fn mismatched_inner_dims_are_an_error() {
        let node = Node::new("MatMul", "n", &["a", "b"], &["y"]);
        let r = crate::gradcheck::run_node(
            &node,
            &[("a", rand_input(&[2, 3], 1)), ("b", rand_input(&[4, 2], 2))],
            &[],
        );
        assert!(r.unwrap_err().to_string().contains("inner dims"));
    }
}
