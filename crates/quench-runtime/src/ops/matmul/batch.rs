//! numpy `matmul` shape rules: 1-D operands and broadcast batch dimensions,
//! reduced to a list of 2-D products.

use crate::{OpError, bail_invalid};
use quench_ir::tensor::checked_numel;

/// A batched product `out[i] = a[a_offs[i]] (m×k) · b[b_offs[i]] (k×n)`.
#[derive(Debug)]
pub(super) struct BatchPlan {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub out_shape: Vec<usize>,
    /// Element offset of each product's A and B matrices.
    pub a_offs: Vec<usize>,
    pub b_offs: Vec<usize>,
    /// B has a single matrix and A's are contiguous: the whole product is
    /// one `(batch*m)×k · k×n` GEMM.
    pub b_shared: bool,
}

impl BatchPlan {
    pub fn new(a: &[usize], b: &[usize]) -> Result<BatchPlan, OpError> {
        if a.is_empty() || b.is_empty() {
            bail_invalid!("MatMul operands must have rank >= 1, got shapes {a:?} and {b:?}");
        }
        let a2: Vec<usize> = if a.len() == 1 {
            vec![1, a[0]]
        } else {
            a.to_vec()
        };
        let b2: Vec<usize> = if b.len() == 1 {
            vec![b[0], 1]
        } else {
            b.to_vec()
        };
        let (a_batch, a_mat) = a2.split_at(a2.len() - 2);
        let (b_batch, b_mat) = b2.split_at(b2.len() - 2);
        let (m, k) = (a_mat[0], a_mat[1]);
        let (kb, n) = (b_mat[0], b_mat[1]);
        if k != kb {
            bail_invalid!(
                "MatMul inner dimensions differ: A has shape {a:?} (K = {k}), B has shape {b:?} (K = {kb})"
            );
        }
        let rank = a_batch.len().max(b_batch.len());
        let pad = |s: &[usize]| {
            let mut v = vec![1; rank - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (pa, pb) = (pad(a_batch), pad(b_batch));
        let mut batch = Vec::with_capacity(rank);
        for (&x, &y) in pa.iter().zip(&pb) {
            batch.push(match (x, y) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => bail_invalid!(
                    "MatMul batch dimensions of shapes {a:?} and {b:?} do not broadcast"
                ),
            });
        }
        let mut out_shape = batch.clone();
        if a.len() > 1 {
            out_shape.push(m);
        }
        if b.len() > 1 {
            out_shape.push(n);
        }
        checked_numel(&out_shape)?;
        let count = checked_numel(&batch)?;
        let b_count: usize = b_batch.iter().product();
        let a_offs = offsets(&batch, &pa, m * k, count);
        let b_offs = offsets(&batch, &pb, k * n, count);
        Ok(BatchPlan {
            m,
            k,
            n,
            out_shape,
            a_offs,
            b_offs,
            b_shared: b_count == 1,
        })
    }

    pub fn out_len(&self) -> usize {
        self.a_offs.len() * self.m * self.n
    }
}

/// Offsets of each operand matrix when iterating the broadcast batch `out`
/// in row-major order; size-1 dimensions of `dims` repeat.
fn offsets(out: &[usize], dims: &[usize], mat: usize, count: usize) -> Vec<usize> {
    let mut strides = vec![0; dims.len()];
    let mut s = mat;
    for i in (0..dims.len()).rev() {
        strides[i] = if dims[i] == 1 { 0 } else { s };
        s *= dims[i];
    }
    let mut idx = vec![0; out.len()];
    let mut v = Vec::with_capacity(count);
    for _ in 0..count {
        v.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for d in (0..out.len()).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_batches_and_vectors() {
        let p = BatchPlan::new(&[2, 1, 3, 4], &[5, 4, 6]).unwrap();
        assert_eq!(p.out_shape, vec![2, 5, 3, 6]);
        assert_eq!(p.a_offs, vec![0, 0, 0, 0, 0, 12, 12, 12, 12, 12]);
        assert_eq!(p.b_offs[..6], [0, 24, 48, 72, 96, 0]);
        let p = BatchPlan::new(&[4], &[4]).unwrap();
        assert_eq!(p.out_shape, Vec::<usize>::new());
        let p = BatchPlan::new(&[2, 3, 4], &[4]).unwrap();
        assert_eq!(p.out_shape, vec![2, 3]);
        assert!(p.b_shared);
    }

    #[test]
    fn rejects_mismatches() {
        assert!(BatchPlan::new(&[3, 4], &[5, 6]).is_err());
        assert!(BatchPlan::new(&[2, 3, 4], &[3, 4, 6]).is_err());
        assert!(BatchPlan::new(&[], &[3]).is_err());
    }
}
