//! LayerNormalization (opset 17): normalise over the trailing dimensions from
//! `axis`, then scale and shift; optionally output the mean and 1/stddev.

use super::normalize_axis;
use super::softmax::sum_lanes;
use crate::op::{optional, required};
use crate::ops::elementwise::broadcast::{PAR_THRESHOLD, broadcast_to};
use crate::ops::elementwise::num::Float;
use crate::ops::elementwise::unsupported_dtype;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::{Elem, Tensor, TensorData};
use rayon::prelude::*;

pub fn register(r: &mut Registry) {
    r.register("", "LayerNormalization", build);
}

#[derive(Debug)]
struct LayerNorm {
    axis: i64,
    epsilon: f32,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let n = ctx.node;
    let stash = n.attr_int_or("stash_type", 1)?;
    if stash != 1 && stash != 11 {
        bail_invalid!("attribute stash_type = {stash} is not float32 (1) or float64 (11)");
    }
    Ok(Box::new(LayerNorm {
        axis: n.attr_int_or("axis", -1)?,
        epsilon: n.attr_float_or("epsilon", 1e-5)?,
    }))
}

/// Scale or bias laid out over the normalised block (broadcast if needed).
fn per_block<T: Elem>(t: &Tensor, block_shape: &[usize], what: &str) -> Result<Vec<T>, OpError> {
    let v = t.as_slice::<T>().map_err(|_| {
        OpError::Invalid(format!(
            "input {what} has dtype {}, expected {}",
            t.dtype(),
            T::DTYPE
        ))
    })?;
    // Leading 1s beyond the block's rank (e.g. a [1, C] bias) carry no data.
    let full = t.shape();
    let extra = full.len().saturating_sub(block_shape.len());
    let shape = if full[..extra].iter().all(|&d| d == 1) {
        &full[extra..]
    } else {
        full
    };
    broadcast_to(shape, v, block_shape, 1).map_err(|_| {
        OpError::Invalid(format!(
            "input {what} has shape {:?}, which does not broadcast to {block_shape:?}",
            t.shape()
        ))
    })
}

/// Normalises one row; returns (mean, 1/stddev).
fn row<T: Float>(x: &[T], y: &mut [T], scale: &[T], bias: Option<&[T]>, eps: T) -> (T, T) {
    let n = T::from_f64(x.len() as f64);
    let mean = sum_lanes(x).div(n);
    for (o, &v) in y.iter_mut().zip(x) {
        let d = v.sub(mean);
        *o = d * d;
    }
    let var = sum_lanes(y).div(n);
    let inv = (var + eps).sqrt().recip();
    match bias {
        Some(b) => {
            for (((o, &v), &s), &b) in y.iter_mut().zip(x).zip(scale).zip(b) {
                *o = v.sub(mean) * inv * s + b;
            }
        }
        None => {
            for ((o, &v), &s) in y.iter_mut().zip(x).zip(scale) {
                *o = v.sub(mean) * inv * s;
            }
        }
    }
    (mean, inv)
}

fn typed<T: Float>(
    x: &[T],
    n: usize,
    scale: &[T],
    bias: Option<&[T]>,
    eps: f32,
    threads: usize,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let rows = x.len().checked_div(n).unwrap_or(0);
    let mut y = vec![T::zero(); x.len()];
    let mut stats = vec![(T::zero(), T::zero()); rows];
    let eps = T::from_f32(eps);
    if n > 0 {
        if threads > 1 && x.len() > PAR_THRESHOLD {
            y.par_chunks_mut(n)
                .zip(x.par_chunks(n))
                .zip(stats.par_iter_mut())
                .for_each(|((yr, xr), st)| *st = row(xr, yr, scale, bias, eps));
        } else {
            for ((yr, xr), st) in y.chunks_mut(n).zip(x.chunks(n)).zip(stats.iter_mut()) {
                *st = row(xr, yr, scale, bias, eps);
            }
        }
    }
    let (mean, inv) = stats.into_iter().unzip();
    (y, mean, inv)
}

fn run_typed<T: Float>(
    x: &Tensor,
    v: &[T],
    axis: usize,
    scale: &Tensor,
    bias: Option<&Tensor>,
    eps: f32,
    threads: usize,
) -> Result<Vec<Tensor>, OpError> {
    let shape = x.shape();
    let block_shape = &shape[axis..];
    let n: usize = block_shape.iter().product();
    let s = per_block::<T>(scale, block_shape, "1 (Scale)")?;
    let b = bias
        .map(|b| per_block::<T>(b, block_shape, "2 (B)"))
        .transpose()?;
    let (y, mean, inv) = typed(v, n, &s, b.as_deref(), eps, threads);
    let mut stat_shape = shape.to_vec();
    for d in &mut stat_shape[axis..] {
        *d = 1;
    }
    Ok(vec![
        Tensor::from_vec(shape.to_vec(), y)?,
        Tensor::from_vec(stat_shape.clone(), mean)?,
        Tensor::from_vec(stat_shape, inv)?,
    ])
}

impl Op for LayerNorm {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let scale = required(inputs, 1)?;
        let bias = optional(inputs, 2);
        if x.rank() == 0 {
            bail_invalid!("input 0 (X) must have rank >= 1");
        }
        let axis = normalize_axis(self.axis, x.rank(), "attribute axis")?;
        let t = ctx.threads;
        match x.data() {
            TensorData::F32(v) => run_typed::<f32>(x, v, axis, scale, bias, self.epsilon, t),
            TensorData::F64(v) => run_typed::<f64>(x, v, axis, scale, bias, self.epsilon, t),
            _ => Err(unsupported_dtype("LayerNormalization", x.dtype())),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::elementwise::tests::run_node_all;
    use quench_ir::{Attr, Node, Tensor};

    #[test]
    fn normalises_trailing_block() {
        let xs: Vec<f32> = (0..12).map(|i| (i * i) as f32 * 0.1).collect();
        let x = Tensor::from_vec(vec![2, 2, 3], xs.clone()).unwrap();
        let s = Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 0.5]).unwrap();
        let b = Tensor::from_vec(vec![1, 3], vec![0.0f32, 1.0, -1.0]).unwrap();
        let n = Node::new(
            "LayerNormalization",
            "n",
            &["x", "s", "b"],
            &["y", "m", "i"],
        )
        .with_attr("axis", Attr::Int(-1));
        let out = run_node_all(n, 17, &[Some(&x), Some(&s), Some(&b)]).unwrap();
        assert_eq!(out[1].shape(), &[2, 2, 1]);
        let y = out[0].as_slice::<f32>().unwrap();
        for r in 0..4 {
            let row: Vec<f64> = xs[r * 3..r * 3 + 3].iter().map(|&v| v as f64).collect();
            let mean = row.iter().sum::<f64>() / 3.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 3.0;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for k in 0..3 {
                let want = (row[k] - mean) * inv * [1.0, 2.0, 0.5][k] + [0.0, 1.0, -1.0][k];
                assert!(
                    (y[r * 3 + k] as f64 - want).abs() < 1e-4,
                    "{} vs {want}",
                    y[r * 3 + k]
                );
            }
        }
    }

    #[test]
    fn scale_of_wrong_shape_is_an_error() {
        let x = Tensor::from_vec(vec![2, 3], vec![0f32; 6]).unwrap();
        let s = Tensor::from_vec(vec![2], vec![1f32; 2]).unwrap();
        let n = Node::new("LayerNormalization", "n", &["x", "s"], &["y"]);
        assert!(run_node_all(n, 17, &[Some(&x), Some(&s)]).is_err());
    }
}
