//! Transpose. Unit dims are dropped and input axes that stay adjacent are
//! merged first, so NCHW<->NHWC becomes a batched 2-D transpose, done in
//! cache-friendly tiles; other permutations walk the output with an odometer
//! (no per-element division).

use super::common::{Movable, elems, with_movable, wrap};
use crate::op::required;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::Tensor;

pub fn register(r: &mut Registry) {
    r.register("", "Transpose", build);
}

#[derive(Debug)]
struct Transpose {
    perm: Option<Vec<i64>>,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Transpose {
        perm: ctx.node.attr_ints("perm")?.map(<[i64]>::to_vec),
    }))
}

impl Op for Transpose {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let r = x.rank();
        let perm: Vec<usize> = match &self.perm {
            None => (0..r).rev().collect(),
            Some(p) => {
                let mut seen = vec![false; r];
                let mut out = Vec::with_capacity(r);
                for &a in p {
                    match usize::try_from(a).ok().filter(|&a| a < r) {
                        Some(a) if !seen[a] => {
                            seen[a] = true;
                            out.push(a);
                        }
                        _ => bail_invalid!("perm {p:?} is not a permutation of 0..{r}"),
                    }
                }
                if out.len() != r {
                    bail_invalid!("perm {p:?} is not a permutation of 0..{r}");
                }
                out
            }
        };
        let out_shape: Vec<usize> = perm.iter().map(|&a| x.shape()[a]).collect();
        let v = with_movable!(x.dtype(), T => {
            let v = transpose(elems::<T>(x, "input 0")?, x.shape(), &perm, ctx.threads);
            wrap(out_shape, v, x.dtype())
        })?;
        Ok(vec![v])
    }
}

/// Drops unit dims and merges input axes that stay adjacent under `perm`.
fn simplify(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let keep: Vec<usize> = (0..shape.len()).filter(|&a| shape[a] != 1).collect();
    let rank_of = |a: usize| keep.iter().position(|&k| k == a);
    let perm: Vec<usize> = perm.iter().filter_map(|&a| rank_of(a)).collect();
    let shape: Vec<usize> = keep.iter().map(|&a| shape[a]).collect();
    // Groups of output axes whose input axes are consecutive.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &a in &perm {
        match groups.last_mut() {
            Some(g) if g.last() == Some(&(a.wrapping_sub(1))) && a > 0 => g.push(a),
            _ => groups.push(vec![a]),
        }
    }
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| groups[g][0]);
    let new_shape: Vec<usize> = order
        .iter()
        .map(|&g| groups[g].iter().map(|&a| shape[a]).product())
        .collect();
    let mut new_perm = vec![0; groups.len()];
    for (in_axis, &g) in order.iter().enumerate() {
        new_perm[g] = in_axis;
    }
    (new_shape, new_perm)
}

pub(crate) fn transpose<T: Movable>(
    src: &[T],
    shape: &[usize],
    perm: &[usize],
    threads: usize,
) -> Vec<T> {
    let (shape, perm) = simplify(shape, perm);
    let r = shape.len();
    if src.is_empty() || perm.iter().enumerate().all(|(i, &p)| i == p) {
        return src.to_vec();
    }
    if r == 2 {
        return batched_2d(src, 1, shape[0], shape[1], threads);
    }
    if r == 3 && perm == [0, 2, 1] {
        return batched_2d(src, shape[0], shape[1], shape[2], threads);
    }
    let in_strides = super::common::strides(&shape);
    let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
    let st: Vec<usize> = perm.iter().map(|&a| in_strides[a]).collect();
    let n = src.len();
    let mut out = Vec::with_capacity(n);
    let (last_n, last_s) = (out_shape[r - 1], st[r - 1]);
    let mut idx = vec![0usize; r - 1];
    let mut base = 0usize;
    while out.len() < n {
        if last_s == 1 {
            out.extend_from_slice(&src[base..base + last_n]);
        } else {
            out.extend(src[base..].iter().step_by(last_s).take(last_n).cloned());
        }
        let mut a = r - 1;
        while a > 0 {
            a -= 1;
            idx[a] += 1;
            base += st[a];
            if idx[a] < out_shape[a] {
                break;
            }
            base -= st[a] * out_shape[a];
            idx[a] = 0;
        }
    }
    out
}

/// `[b, m, n] -> [b, n, m]` in square tiles; bands of output rows go to
/// separate threads when the tensor is large.
fn batched_2d<T: Movable>(src: &[T], b: usize, m: usize, n: usize, threads: usize) -> Vec<T> {
    const TILE: usize = 32;
    let mut out = vec![T::default(); b * m * n];
    // One band: output rows j0..j0 + TILE of one matrix.
    let band = |s: &[T], j0: usize, d: &mut [T]| {
        let j1 = (j0 + TILE).min(n);
        for i0 in (0..m).step_by(TILE) {
            let i1 = (i0 + TILE).min(m);
            for (dj, j) in (j0..j1).enumerate() {
                let col = s[i0 * n + j..].iter().step_by(n);
                for (dv, sv) in d[dj * m + i0..dj * m + i1].iter_mut().zip(col) {
                    *dv = sv.clone();
                }
            }
        }
    };
    if threads > 1 && out.len() >= 1 << 16 {
        use rayon::prelude::*;
        out.par_chunks_mut(m * n).enumerate().for_each(|(bi, d)| {
            let s = &src[bi * m * n..(bi + 1) * m * n];
            d.par_chunks_mut(TILE * m)
                .enumerate()
                .for_each(|(k, d)| band(s, k * TILE, d));
        });
    } else {
        for (s, d) in src.chunks_exact(m * n).zip(out.chunks_exact_mut(m * n)) {
            for (k, d) in d.chunks_mut(TILE * m).enumerate() {
                band(s, k * TILE, d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scalar reference: per-element index arithmetic.
    fn reference(src: &[i32], shape: &[usize], perm: &[usize]) -> Vec<i32> {
        let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
        let st = super::super::common::strides(shape);
        (0..src.len())
            .map(|mut flat| {
                let mut off = 0;
                for a in (0..out_shape.len()).rev() {
                    off += (flat % out_shape[a]) * st[perm[a]];
                    flat /= out_shape[a];
                }
                src[off]
            })
            .collect()
    }

    #[test]
    fn matches_reference_on_all_4d_perms() {
        let shape = [2, 3, 1, 5];
        let src: Vec<i32> = (0..30).collect();
        let mut perms = Vec::new();
        for a in 0..4 {
            for b in 0..4 {
                for c in 0..4 {
                    for d in 0..4 {
                        let p = vec![a, b, c, d];
                        let mut s = p.clone();
                        s.sort();
                        if s == [0, 1, 2, 3] {
                            perms.push(p);
                        }
                    }
                }
            }
        }
        for p in perms {
            assert_eq!(
                transpose(&src, &shape, &p, 1),
                reference(&src, &shape, &p),
                "{p:?}"
            );
        }
        let src: Vec<i32> = (0..(40 * 37)).collect();
        assert_eq!(
            transpose(&src, &[40, 37], &[1, 0], 2),
            reference(&src, &[40, 37], &[1, 0])
        );
        let src: Vec<i32> = (0..120).collect();
        let p = [2, 0, 3, 1];
        assert_eq!(
            transpose(&src, &[2, 3, 4, 5], &p, 1),
            reference(&src, &[2, 3, 4, 5], &p)
        );
    }

    #[test]
    fn bad_perm_is_an_error() {
        let x = Tensor::from_vec(vec![2, 2], vec![1f32, 2.0, 3.0, 4.0]).unwrap();
        let t = Transpose {
            perm: Some(vec![0, 0]),
        };
        assert!(t.run(&RunCtx { threads: 1 }, &[Some(&x)]).is_err());
        let t = Transpose { perm: None };
        let y = t.run(&RunCtx { threads: 1 }, &[Some(&x)]).unwrap();
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[1.0, 3.0, 2.0, 4.0]);
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    /// Timing of NCHW -> NHWC and a general permutation; run with `--ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_transpose() {
        let shape = [1, 64, 160, 160];
        let src: Vec<f32> = (0..64 * 160 * 160).map(|i| i as f32).collect();
        for perm in [[0, 2, 3, 1], [0, 3, 1, 2], [0, 2, 1, 3], [3, 1, 2, 0]] {
            let t0 = std::time::Instant::now();
            for _ in 0..10 {
                std::hint::black_box(transpose(&src, &shape, &perm, 1));
            }
            eprintln!("{perm:?}: {:?} per run", t0.elapsed() / 10);
        }
        let t0 = std::time::Instant::now();
        for _ in 0..10 {
            std::hint::black_box(src.clone());
        }
        eprintln!("copy: {:?} per run", t0.elapsed() / 10);
    }
}
