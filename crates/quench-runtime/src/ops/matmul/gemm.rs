//! Gemm: `Y = alpha * A' · B' + beta * C`, A'/B' optionally transposed
//! (read through strides, never copied), C broadcast to `[M, N]`.

use super::generic::{self, LinElem};
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, RunCtx, bail_invalid};
use quench_ir::{Tensor, TensorData};
use quench_kernels::gemm::sgemm_strided;

#[derive(Debug)]
struct Gemm {
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
}

pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let n = ctx.node;
    let flag = |name: &str| -> Result<bool, OpError> {
        match n.attr_int_or(name, 0)? {
            0 => Ok(false),
            1 => Ok(true),
            v => bail_invalid!("attribute {name} is {v}, expected 0 or 1"),
        }
    };
    let g = Gemm {
        alpha: n.attr_float_or("alpha", 1.0)?,
        beta: n.attr_float_or("beta", 1.0)?,
        trans_a: flag("transA")?,
        trans_b: flag("transB")?,
    };
    if let Some(b) = ctx.constant_input(1) {
        super::check_dtype(b.dtype(), "input 1 (B)")?;
        if b.rank() != 2 {
            bail_invalid!("input 1 (B) has shape {:?}, expected rank 2", b.shape());
        }
    }
    Ok(Box::new(g))
}

/// Problem sizes and strides after applying transA/transB.
struct Dims {
    m: usize,
    n: usize,
    k: usize,
    a_rs: usize,
    a_cs: usize,
    b_rs: usize,
    b_cs: usize,
}

impl Gemm {
    fn dims(&self, a: &[usize], b: &[usize]) -> Result<Dims, OpError> {
        let (&[a0, a1], &[b0, b1]) = (a, b) else {
            bail_invalid!("inputs A {a:?} and B {b:?} must both have rank 2");
        };
        let (m, k, a_rs, a_cs) = if self.trans_a {
            (a1, a0, 1, a1)
        } else {
            (a0, a1, a1, 1)
        };
        let (kb, n, b_rs, b_cs) = if self.trans_b {
            (b1, b0, 1, b1)
        } else {
            (b0, b1, b1, 1)
        };
        if k != kb {
            bail_invalid!(
                "inner dimensions differ: A {a:?} (transA={}) gives K = {k}, B {b:?} (transB={}) gives K = {kb}",
                self.trans_a as u8,
                self.trans_b as u8
            );
        }
        Ok(Dims {
            m,
            n,
            k,
            a_rs,
            a_cs,
            b_rs,
            b_cs,
        })
    }
}

/// Index map from `[m, n]` into C, broadcast unidirectionally.
fn c_index(c: &[usize], m: usize, n: usize) -> Result<impl Fn(usize, usize) -> usize, OpError> {
    let (cm, cn) = match *c {
        [] => (1, 1),
        [x] => (1, x),
        [x, y] => (x, y),
        _ => bail_invalid!("input 2 (C) has shape {c:?}, expected rank <= 2"),
    };
    if !(cm == 1 || cm == m) || !(cn == 1 || cn == n) {
        bail_invalid!("input 2 (C) of shape {c:?} does not broadcast to [{m}, {n}]");
    }
    let (rs, cs) = (if cm == 1 { 0 } else { cn }, usize::from(cn != 1));
    Ok(move |i, j| i * rs + j * cs)
}

impl Op for Gemm {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let a = required(inputs, 0)?;
        let b = required(inputs, 1)?;
        let c = optional(inputs, 2).filter(|_| self.beta != 0.0);
        for (i, t) in [(1, Some(b)), (2, c)] {
            if let Some(t) = t
                && t.dtype() != a.dtype()
            {
                bail_invalid!(
                    "input {i} is {} but input 0 (A) is {}",
                    t.dtype(),
                    a.dtype()
                );
            }
        }
        super::check_dtype(a.dtype(), "input 0 (A)")?;
        let d = self.dims(a.shape(), b.shape())?;
        let ci = match c {
            Some(c) => Some(c_index(c.shape(), d.m, d.n)?),
            None => None,
        };
        let shape = vec![d.m, d.n];
        let data = match a.data() {
            TensorData::F32(av) => {
                let mut out = vec![0f32; d.m * d.n];
                let cv = c.map(|c| c.as_slice::<f32>()).transpose()?;
                let prefill = self.alpha == 1.0 && cv.is_some();
                if let (true, Some(cv), Some(ci)) = (prefill, cv, &ci) {
                    fill_c(&mut out, d.n, |i, j| self.beta * cv[ci(i, j)]);
                }
                sgemm_strided(
                    d.m,
                    d.n,
                    d.k,
                    av,
                    d.a_rs as isize,
                    d.a_cs as isize,
                    b.as_slice::<f32>()?,
                    d.b_rs as isize,
                    d.b_cs as isize,
                    &mut out,
                    if prefill { 1.0 } else { 0.0 },
                    ctx.threads,
                );
                if !prefill {
                    let (alpha, beta) = (self.alpha, self.beta);
                    match (cv, &ci) {
                        (Some(cv), Some(ci)) => {
                            for (r, row) in out.chunks_mut(d.n.max(1)).enumerate() {
                                for (j, y) in row.iter_mut().enumerate() {
                                    *y = alpha * *y + beta * cv[ci(r, j)];
                                }
                            }
                        }
                        _ if alpha != 1.0 => out.iter_mut().for_each(|y| *y *= alpha),
                        _ => {}
                    }
                }
                TensorData::F32(out)
            }
            TensorData::F64(_) => TensorData::F64(self.generic::<f64>(&d, a, b, c, &ci)?),
            TensorData::I32(_) => TensorData::I32(self.generic::<i32>(&d, a, b, c, &ci)?),
            TensorData::I64(_) => TensorData::I64(self.generic::<i64>(&d, a, b, c, &ci)?),
            TensorData::U32(_) => TensorData::U32(self.generic::<u32>(&d, a, b, c, &ci)?),
            TensorData::U64(_) => TensorData::U64(self.generic::<u64>(&d, a, b, c, &ci)?),
            _ => bail_invalid!("Gemm does not take {}", a.dtype()),
        };
        Ok(vec![Tensor::new(shape, data)?])
    }
}

fn fill_c(out: &mut [f32], n: usize, f: impl Fn(usize, usize) -> f32) {
    for (r, row) in out.chunks_mut(n.max(1)).enumerate() {
        for (j, y) in row.iter_mut().enumerate() {
            *y = f(r, j);
        }
    }
}

impl Gemm {
    fn generic<T: LinElem>(
        &self,
        d: &Dims,
        a: &Tensor,
        b: &Tensor,
        c: Option<&Tensor>,
        ci: &Option<impl Fn(usize, usize) -> usize>,
    ) -> Result<Vec<T>, OpError> {
        let mut out = vec![T::zero(); d.m * d.n];
        generic::gemm_naive(
            d.m,
            d.n,
            d.k,
            a.as_slice::<T>()?,
            d.a_rs,
            d.a_cs,
            b.as_slice::<T>()?,
            d.b_rs,
            d.b_cs,
            &mut out,
        );
        let cv = c.map(|c| c.as_slice::<T>()).transpose()?;
        for (r, row) in out.chunks_mut(d.n.max(1)).enumerate() {
            for (j, y) in row.iter_mut().enumerate() {
                *y = y.scale(self.alpha);
                if let (Some(cv), Some(ci)) = (cv, ci) {
                    *y = y.add(cv[ci(r, j)].scale(self.beta));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run_op;
    use quench_ir::{Attr, Node, Tensor};

    fn node(attrs: &[(&str, Attr)], with_c: bool) -> Node {
        let ins: &[&str] = if with_c {
            &["a", "b", "c"]
        } else {
            &["a", "b"]
        };
        let mut n = Node::new("Gemm", "g", ins, &["y"]);
        for (k, v) in attrs {
            n = n.with_attr(k, v.clone());
        }
        n
    }

    /// Scalar reference on f64 with explicit transposes.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        a: &[f32],
        b: &[f32],
        c: &[f32],
        csh: &[usize],
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        tb: bool,
        alpha: f64,
        beta: f64,
    ) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let x = if ta { a[p * m + i] } else { a[i * k + p] };
                    let y = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += x as f64 * y as f64;
                }
                let cv = match csh {
                    [] => c[0],
                    [x] => c[if *x == 1 { 0 } else { j }],
                    [x, y] => c[if *x == 1 { 0 } else { i * y } + if *y == 1 { 0 } else { j }],
                    _ => unreachable!(),
                };
                out[i * n + j] = alpha * s + beta * cv as f64;
            }
        }
        out
    }

    #[test]
    fn matches_reference_with_all_attributes() {
        let (m, n, k) = (3, 5, 4);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for (alpha, beta) in [(1.0f32, 1.0f32), (0.25, 0.35), (1.0, 0.0), (2.0, 1.0)] {
                for csh in [&[][..], &[1][..], &[5][..], &[3, 1][..], &[3, 5][..]] {
                    let ash = if ta { vec![k, m] } else { vec![m, k] };
                    let bsh = if tb { vec![n, k] } else { vec![k, n] };
                    let av: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
                    let bv: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.5).collect();
                    let cn: usize = csh.iter().product();
                    let cv: Vec<f32> = (0..cn).map(|i| i as f32 + 1.0).collect();
                    let nd = node(
                        &[
                            ("alpha", Attr::Float(alpha)),
                            ("beta", Attr::Float(beta)),
                            ("transA", Attr::Int(ta as i64)),
                            ("transB", Attr::Int(tb as i64)),
                        ],
                        true,
                    );
                    let a = Tensor::from_vec(ash, av.clone()).unwrap();
                    let b = Tensor::from_vec(bsh, bv.clone()).unwrap();
                    let c = Tensor::from_vec(csh.to_vec(), cv.clone()).unwrap();
                    let want = reference(
                        &av,
                        &bv,
                        &cv,
                        csh,
                        m,
                        n,
                        k,
                        ta,
                        tb,
                        alpha as f64,
                        beta as f64,
                    );
                    let y = &run_op(&nd, 13, &[Some(&a), Some(&b), Some(&c)], 2).unwrap()[0];
                    assert_eq!(y.shape(), &[m, n]);
                    for (g, w) in y.as_slice::<f32>().unwrap().iter().zip(&want) {
                        assert!(
                            (*g as f64 - w).abs() < 1e-4,
                            "{ta} {tb} {alpha} {beta} {csh:?}"
                        );
                    }
                    let to64 = |t: &Tensor| {
                        let v = t
                            .as_slice::<f32>()
                            .unwrap()
                            .iter()
                            .map(|&x| x as f64)
                            .collect();
                        Tensor::from_vec(t.shape().to_vec(), v).unwrap()
                    };
                    let y = &run_op(
                        &nd,
                        13,
                        &[Some(&to64(&a)), Some(&to64(&b)), Some(&to64(&c))],
                        1,
                    )
                    .unwrap()[0];
                    for (g, w) in y.as_slice::<f64>().unwrap().iter().zip(&want) {
                        assert!((g - w).abs() < 1e-9);
                    }
                }
            }
        }
    }

    #[test]
    fn optional_c_and_errors() {
        let a = Tensor::from_vec(vec![2, 3], vec![1f32; 6]).unwrap();
        let b = Tensor::from_vec(vec![3, 2], vec![2f32; 6]).unwrap();
        let y = &run_op(
            &node(&[("alpha", Attr::Float(0.5))], false),
            11,
            &[Some(&a), Some(&b)],
            1,
        )
        .unwrap()[0];
        assert_eq!(y.as_slice::<f32>().unwrap(), &[3.0; 4]);
        let bad_c = Tensor::from_vec(vec![3], vec![0f32; 3]).unwrap();
        let e = run_op(&node(&[], true), 13, &[Some(&a), Some(&b), Some(&bad_c)], 1).unwrap_err();
        assert!(e.to_string().contains("broadcast"), "{e}");
        let e = run_op(&node(&[], false), 13, &[Some(&a), Some(&a)], 1).unwrap_err();
        assert!(e.to_string().contains("inner dimensions"), "{e}");
        let bad = node(&[("transA", Attr::Int(2))], false);
        assert!(run_op(&bad, 13, &[Some(&a), Some(&b)], 1).is_err());
    }
}
