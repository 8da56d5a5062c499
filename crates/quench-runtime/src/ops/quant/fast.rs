//! Shared pieces of the packed int8 fast paths: weights packed once at
//! build (from constant inputs), and the checks that decide, per run,
//! whether an input fits them. Whatever does not fit (non-constant weights,
//! 16-bit types, unusual zero-point shapes) goes to the scalar reference,
//! which also owns the error messages for malformed inputs.

use crate::BuildCtx;
use quench_ir::{DType, Tensor, TensorData};
use quench_kernels::int8::{AData, PackedB};

#[cfg(test)]
thread_local! {
    /// How many times a packed path ran on this thread (tests check it is taken).
    pub(crate) static HITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts one packed-path run (tests only).
pub(crate) fn hit() {
    #[cfg(test)]
    HITS.with(|h| h.set(h.get() + 1));
}

/// Weights packed at build.
#[derive(Debug)]
pub(crate) struct FastB {
    pub packed: PackedB,
}

impl FastB {
    pub fn k(&self) -> usize {
        self.packed.k()
    }

    pub fn n(&self) -> usize {
        self.packed.n()
    }
}

/// Input `i` when omitted (`Some(None)`) or constant (`Some(Some(t))`);
/// `None` when it is computed at run time.
pub(crate) fn const_or_absent<'a>(ctx: &BuildCtx<'a>, i: usize) -> Option<Option<&'a Tensor>> {
    match ctx.node.input(i) {
        None => Some(None),
        Some(_) => ctx.constant_input(i).map(Some),
    }
}

/// Zero points as i32, when `zp` has `b`'s dtype and one value or `n`
/// values along its last axis (all other dims 1).
pub(crate) fn column_zero_points(zp: Option<&Tensor>, b: DType, n: usize) -> Option<Vec<i32>> {
    let Some(z) = zp else {
        return Some(vec![0]);
    };
    if z.dtype() != b {
        return None;
    }
    let v = ints(z)?;
    let per_column = v.len() == n && z.shape().iter().rev().skip(1).all(|&d| d == 1);
    (v.len() == 1 || per_column).then_some(v)
}

/// u8/i8 contents widened to i32.
pub(crate) fn ints(t: &Tensor) -> Option<Vec<i32>> {
    match t.data() {
        TensorData::U8(v) => Some(v.iter().map(|&x| x as i32).collect()),
        TensorData::I8(v) => Some(v.iter().map(|&x| x as i32).collect()),
        _ => None,
    }
}

/// Packs a constant 2-D u8/i8 `b` (`[K, N]`, or `[N, K]` when `trans`)
/// with its zero points (`zp` as given by [`column_zero_points`]).
pub(crate) fn pack_b(b: &Tensor, zp: Option<&Tensor>, trans: bool) -> Option<FastB> {
    let &[r, c] = b.shape() else { return None };
    let (k, n) = if trans { (c, r) } else { (r, c) };
    if k == 0 || n == 0 {
        return None;
    }
    let zps = column_zero_points(zp, b.dtype(), n)?;
    let at = move |kk: usize, nn: usize| if trans { nn * c + kk } else { kk * c + nn };
    let packed = match b.data() {
        TensorData::I8(v) => PackedB::from_fn(k, n, |kk, nn| v[at(kk, nn)], &zps),
        TensorData::U8(v) => {
            let z: Vec<i32> = zps.iter().map(|z| z - 128).collect();
            PackedB::from_fn(k, n, |kk, nn| (v[at(kk, nn)] as i32 - 128) as i8, &z)
        }
        _ => return None,
    };
    Some(FastB { packed })
}

/// `a` as rows of `k` u8/i8 values: (data, rows), when its last dim is `k`.
pub(crate) fn a_rows(a: &Tensor, k: usize) -> Option<(AData<'_>, usize)> {
    if a.rank() == 0 || a.shape().last() != Some(&k) || k == 0 {
        return None;
    }
    let rows = a.numel() / k;
    let data = match a.data() {
        TensorData::U8(v) => AData::U8(v),
        TensorData::I8(v) => AData::I8(v),
        _ => return None,
    };
    Some((data, rows))
}

/// A's zero points: one value, or (`per_row`) a 1-D `[M]` for A of shape
/// `[..., M, K]`, expanded over the batch rows. `None` when it fits neither.
pub(crate) fn row_zero_points(zp: Option<&Tensor>, a: &Tensor, per_row: bool) -> Option<Vec<i32>> {
    let Some(z) = zp else {
        return Some(vec![0]);
    };
    if z.dtype() != a.dtype() {
        return None;
    }
    let v = ints(z)?;
    if v.len() == 1 {
        return Some(v);
    }
    let r = a.rank();
    if !per_row || z.rank() != 1 || r < 2 || a.shape()[r - 2] != v.len() {
        return None;
    }
    let rows = a.numel() / a.shape()[r - 1].max(1);
    Some((0..rows).map(|i| v[i % v.len()]).collect())
}

/// numpy matmul's output shape for `a[..., K] @ b[K, N]`.
pub(crate) fn out_shape(a: &Tensor, n: usize) -> Vec<usize> {
    let mut s = a.shape()[..a.rank() - 1].to_vec();
    s.push(n);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_point_shapes_decide_the_fast_path() {
        let b = Tensor::from_vec(vec![2, 3], vec![1i8; 6]).unwrap();
        assert!(pack_b(&b, None, false).is_some());
        let per_col = Tensor::from_vec(vec![3], vec![0i8, 1, 2]).unwrap();
        assert!(pack_b(&b, Some(&per_col), false).is_some());
        // Per-column zero points of the wrong length, or of another dtype: not packed.
        assert!(pack_b(&b, Some(&per_col), true).is_none());
        assert!(pack_b(&b, Some(&Tensor::scalar(0u8)), false).is_none());
        let a = Tensor::from_vec(vec![2, 4, 3], vec![0u8; 24]).unwrap();
        let zr = Tensor::from_vec(vec![4], vec![1u8, 2, 3, 4]).unwrap();
        assert_eq!(row_zero_points(Some(&zr), &a, true).unwrap().len(), 8);
        assert!(row_zero_points(Some(&zr), &a, false).is_none());
        assert_eq!(out_shape(&a, 5), vec![2, 4, 5]);
    }
}
