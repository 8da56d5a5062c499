//! MatMul (numpy semantics) and Gemm, on `quench_kernels::gemm::sgemm` for fp32.

mod batch;
mod gemm;
mod generic;

use crate::op::required;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid, bail_unsupported};
use batch::BatchPlan;
use generic::LinElem;
use quench_ir::{DType, Tensor, TensorData};
use quench_kernels::gemm::sgemm;
use rayon::prelude::*;

pub fn register(r: &mut Registry) {
    r.register("", "MatMul", build_matmul);
    r.register("", "Gemm", gemm::build);
}

#[derive(Debug)]
struct MatMul;

fn build_matmul(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    // A constant weight is checked once here; at run time any B whose batch
    // collapses to one matrix (the usual [K, N] weight) takes the
    // single-GEMM path, so there is nothing more to keep.
    if let Some(b) = ctx.constant_input(1) {
        check_dtype(b.dtype(), "input 1 (B)")?;
        if b.rank() == 0 {
            bail_invalid!("input 1 (B) is a scalar, MatMul needs rank >= 1");
        }
    }
    Ok(Box::new(MatMul))
}

impl Op for MatMul {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let a = required(inputs, 0)?;
        let b = required(inputs, 1)?;
        if a.dtype() != b.dtype() {
            bail_invalid!(
                "input 0 (A) is {} but input 1 (B) is {}",
                a.dtype(),
                b.dtype()
            );
        }
        check_dtype(a.dtype(), "input 0 (A)")?;
        let p = BatchPlan::new(a.shape(), b.shape())?;
        let shape = p.out_shape.clone();
        let data = match (a.data(), b.data()) {
            (TensorData::F32(x), TensorData::F32(y)) => {
                TensorData::F32(matmul_f32(&p, x, y, ctx.threads))
            }
            (TensorData::F64(x), TensorData::F64(y)) => TensorData::F64(matmul_generic(&p, x, y)),
            (TensorData::I32(x), TensorData::I32(y)) => TensorData::I32(matmul_generic(&p, x, y)),
            (TensorData::I64(x), TensorData::I64(y)) => TensorData::I64(matmul_generic(&p, x, y)),
            (TensorData::U32(x), TensorData::U32(y)) => TensorData::U32(matmul_generic(&p, x, y)),
            (TensorData::U64(x), TensorData::U64(y)) => TensorData::U64(matmul_generic(&p, x, y)),
            _ => bail_invalid!("MatMul does not take {}", a.dtype()),
        };
        Ok(vec![Tensor::new(shape, data)?])
    }
}

/// The element types ONNX MatMul/Gemm allow, split into what Quench computes
/// and what it does not.
pub(super) fn check_dtype(dt: DType, what: &str) -> Result<(), OpError> {
    match dt {
        DType::F32 | DType::F64 | DType::I32 | DType::I64 | DType::U32 | DType::U64 => Ok(()),
        DType::F16 | DType::BF16 => bail_unsupported!(
            "{what} is {dt}: only float32/float64 and 32/64-bit integers are computed"
        ),
        _ => bail_invalid!("{what} is {dt}, which MatMul/Gemm do not take"),
    }
}

fn matmul_f32(p: &BatchPlan, a: &[f32], b: &[f32], threads: usize) -> Vec<f32> {
    let mut out = vec![0f32; p.out_len()];
    let (m, n, k) = (p.m, p.n, p.k);
    let batch = p.a_offs.len();
    if out.is_empty() {
        return out;
    }
    if p.b_shared {
        sgemm(batch * m, n, k, a, b, &mut out, 0.0, threads);
        return out;
    }
    let one = |i: usize, c: &mut [f32], t: usize| {
        sgemm(m, n, k, &a[p.a_offs[i]..], &b[p.b_offs[i]..], c, 0.0, t)
    };
    if threads > 1 {
        // Attention-sized products are too small to split well inside one
        // GEMM; spreading the batch over the pool keeps every core busy.
        let inner = (threads / batch).max(1);
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, c)| one(i, c, inner));
    } else {
        out.chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, c)| one(i, c, 1));
    }
    out
}

fn matmul_generic<T: LinElem>(p: &BatchPlan, a: &[T], b: &[T]) -> Vec<T> {
    let (m, n, k) = (p.m, p.n, p.k);
    let mut out = vec![T::zero(); p.out_len()];
    if out.is_empty() {
        return out;
    }
    for (i, c) in out.chunks_mut(m * n).enumerate() {
        generic::gemm_naive(m, n, k, &a[p.a_offs[i]..], k, 1, &b[p.b_offs[i]..], n, 1, c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quench_ir::Node;

    pub(super) fn run_op(
        node: &Node,
        opset: i64,
        inputs: &[Option<&Tensor>],
        threads: usize,
    ) -> Result<Vec<Tensor>, OpError> {
        let r = Registry::standard();
        let build = r.get("", &node.op_type).unwrap();
        let lookup = |_: &str| None;
        let compile = |_: &quench_ir::Graph| unreachable!();
        let ctx = BuildCtx {
            node,
            opset,
            constants: &lookup,
            compile: &compile,
        };
        let op = build(&ctx)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| op.run(&RunCtx { threads }, inputs))
    }

    /// Scalar numpy-matmul reference on f64.
    fn reference(a: &[f64], ash: &[usize], b: &[f64], bsh: &[usize]) -> Vec<f64> {
        let p = BatchPlan::new(ash, bsh).unwrap();
        let mut out = vec![0.0; p.out_len()];
        for i in 0..p.a_offs.len() {
            for r in 0..p.m {
                for c in 0..p.n {
                    let mut s = 0.0;
                    for q in 0..p.k {
                        s += a[p.a_offs[i] + r * p.k + q] * b[p.b_offs[i] + q * p.n + c];
                    }
                    out[(i * p.m + r) * p.n + c] = s;
                }
            }
        }
        out
    }

    fn filled(shape: &[usize], seed: usize) -> Vec<f32> {
        let n: usize = shape.iter().product();
        (0..n)
            .map(|i| (((i + seed) * 37) % 19) as f32 * 0.25 - 2.0)
            .collect()
    }

    #[test]
    fn matches_reference_for_all_shape_kinds() {
        let node = Node::new("MatMul", "mm", &["a", "b"], &["y"]);
        let cases: &[(&[usize], &[usize])] = &[
            (&[4], &[4]),
            (&[4], &[2, 4, 3]),
            (&[3, 4], &[4, 5]),
            (&[2, 3, 4], &[4, 5]),
            (&[2, 3, 3, 4], &[2, 3, 4, 2]),
            (&[2, 1, 3, 4], &[5, 4, 2]),
            (&[2, 3, 3, 4], &[4]),
            (&[3, 4], &[6, 4, 2]),
            (&[0, 3], &[3, 2]),
        ];
        for threads in [1, 3] {
            for &(ash, bsh) in cases {
                let (av, bv) = (filled(ash, 1), filled(bsh, 5));
                let a = Tensor::from_vec(ash.to_vec(), av.clone()).unwrap();
                let b = Tensor::from_vec(bsh.to_vec(), bv.clone()).unwrap();
                let y = &run_op(&node, 13, &[Some(&a), Some(&b)], threads).unwrap()[0];
                let a64: Vec<f64> = av.iter().map(|&x| x as f64).collect();
                let b64: Vec<f64> = bv.iter().map(|&x| x as f64).collect();
                let want = reference(&a64, ash, &b64, bsh);
                let got = y.as_slice::<f32>().unwrap();
                assert_eq!(got.len(), want.len(), "{ash:?}·{bsh:?}");
                for (g, w) in got.iter().zip(&want) {
                    assert!((*g as f64 - w).abs() < 1e-4, "{ash:?}·{bsh:?}");
                }
                // The generic path gives the same numbers in f64.
                let a = Tensor::from_vec(ash.to_vec(), a64).unwrap();
                let b = Tensor::from_vec(bsh.to_vec(), b64).unwrap();
                let y = &run_op(&node, 13, &[Some(&a), Some(&b)], 1).unwrap()[0];
                assert_eq!(y.as_slice::<f64>().unwrap(), &want[..]);
            }
        }
    }

    #[test]
    fn integer_matmul_and_errors() {
        let node = Node::new("MatMul", "mm", &["a", "b"], &["y"]);
        let a = Tensor::from_vec(vec![2, 2], vec![1i64, 2, 3, 4]).unwrap();
        let y = &run_op(&node, 13, &[Some(&a), Some(&a)], 1).unwrap()[0];
        assert_eq!(y.as_slice::<i64>().unwrap(), &[7, 10, 15, 22]);
        let b = Tensor::from_vec(vec![3, 2], vec![0i64; 6]).unwrap();
        let e = run_op(&node, 13, &[Some(&a), Some(&b)], 1).unwrap_err();
        assert!(e.to_string().contains("inner dimensions"), "{e}");
        let f = Tensor::from_vec(vec![2, 2], vec![0f32; 4]).unwrap();
        assert!(run_op(&node, 13, &[Some(&a), Some(&f)], 1).is_err());
        let s = Tensor::scalar(1f32);
        assert!(run_op(&node, 13, &[Some(&s), Some(&f)], 1).is_err());
    }
}
