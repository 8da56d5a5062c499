//! Numpy-style multidirectional broadcasting, shared by every op that
//! combines tensors of different shapes (arithmetic, comparisons, Where,
//! Expand, PRelu, and later anything else that needs it).
//!
//! Shapes are reduced to a few "collapsed" dimensions (adjacent dimensions
//! that every operand treats alike are merged), and the output is walked in
//! contiguous runs. Inside a run each operand is either a contiguous slice or
//! one repeated value, so the per-element loops are plain slice loops that the
//! compiler vectorises; index arithmetic happens once per run, not per element.

use crate::OpError;
use quench_ir::tensor::checked_numel;
use rayon::prelude::*;

/// Output elements above which element-wise ops split work across threads.
pub const PAR_THRESHOLD: usize = 64 * 1024;

/// The broadcast shape of `a` and `b`, or an error naming both shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    broadcast_all(&[a, b])
}

/// The broadcast shape of any number of shapes.
pub fn broadcast_all(shapes: &[&[usize]]) -> Result<Vec<usize>, OpError> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let pad = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[pad + i];
            if *o == d || d == 1 {
                continue;
            }
            if *o == 1 {
                *o = d;
            } else {
                return Err(OpError::Invalid(format!(
                    "shapes {:?} cannot be broadcast together",
                    shapes
                )));
            }
        }
    }
    checked_numel(&out)?;
    Ok(out)
}

/// How `N` operands map onto a broadcast output, in collapsed dimensions.
#[derive(Clone, Debug)]
pub struct BroadcastPlan<const N: usize> {
    out_shape: Vec<usize>,
    numel: usize,
    /// Collapsed output dimensions (never empty unless the output is empty).
    dims: Vec<usize>,
    /// Element strides of each operand over `dims` (0 where it is broadcast).
    strides: [Vec<usize>; N],
}

/// One contiguous run of output elements.
#[derive(Clone, Copy, Debug)]
pub struct Run<const N: usize> {
    /// Offset of the run's first element in the output.
    pub out: usize,
    pub len: usize,
    /// Offset of the run's first element in each operand.
    pub offsets: [usize; N],
    /// Whether each operand advances along the run (else it repeats one value).
    pub contiguous: [bool; N],
}

impl<const N: usize> BroadcastPlan<N> {
    /// Plans broadcasting `shapes` against each other.
    pub fn new(shapes: [&[usize]; N]) -> Result<Self, OpError> {
        let out = broadcast_all(&shapes)?;
        Ok(Self::to_shape(shapes, out))
    }

    /// Plans broadcasting `shapes` to `out`, which must already be their
    /// broadcast shape (or one they broadcast to unidirectionally).
    pub fn to_shape(shapes: [&[usize]; N], out: Vec<usize>) -> Self {
        let rank = out.len();
        let numel = out.iter().product();
        // Per kept output dim: its size and, per operand, whether it is broadcast.
        let mut dims: Vec<usize> = Vec::new();
        let mut flags: Vec<[bool; N]> = Vec::new();
        for (i, &d) in out.iter().enumerate() {
            if d == 1 {
                continue;
            }
            let mut f = [false; N];
            for (k, s) in shapes.iter().enumerate() {
                let pad = rank - s.len();
                f[k] = i < pad || s[i - pad] == 1;
            }
            match flags.last() {
                Some(last) if *last == f => {
                    if let Some(l) = dims.last_mut() {
                        *l *= d;
                    }
                }
                _ => {
                    dims.push(d);
                    flags.push(f);
                }
            }
        }
        if dims.is_empty() {
            dims.push(if numel == 0 { 0 } else { 1 });
            flags.push([false; N]);
        }
        let strides = std::array::from_fn(|k| {
            let mut st = vec![0usize; dims.len()];
            let mut acc = 1usize;
            for j in (0..dims.len()).rev() {
                if !flags[j][k] {
                    st[j] = acc;
                    acc *= dims[j];
                }
            }
            st
        });
        BroadcastPlan {
            out_shape: out,
            numel,
            dims,
            strides,
        }
    }

    pub fn out_shape(&self) -> &[usize] {
        &self.out_shape
    }

    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Calls `f` for each run covering output elements `start..end`, in order.
    pub fn for_each_run(&self, start: usize, end: usize, mut f: impl FnMut(Run<N>)) {
        if start >= end || self.numel == 0 {
            return;
        }
        let k = self.dims.len();
        let last = k - 1;
        let mut idx = vec![0usize; k];
        let mut rem = start;
        for j in (0..k).rev() {
            idx[j] = rem % self.dims[j];
            rem /= self.dims[j];
        }
        let contiguous = std::array::from_fn(|n| self.strides[n][last] != 0);
        let mut pos = start;
        while pos < end {
            let offsets = std::array::from_fn(|n| {
                idx.iter()
                    .zip(&self.strides[n])
                    .map(|(i, s)| i * s)
                    .sum::<usize>()
            });
            let len = (self.dims[last] - idx[last]).min(end - pos);
            f(Run {
                out: pos,
                len,
                offsets,
                contiguous,
            });
            pos += len;
            idx[last] += len;
            if idx[last] == self.dims[last] {
                idx[last] = 0;
                for j in (0..last).rev() {
                    idx[j] += 1;
                    if idx[j] < self.dims[j] {
                        break;
                    }
                    idx[j] = 0;
                }
            }
        }
    }
}

/// Fills `out` (the whole output) chunk by chunk, in parallel when it is large
/// and `threads > 1`; `fill(start, chunk)` writes output elements `start..`.
pub fn fill_chunks<O: Send>(
    out: &mut [O],
    threads: usize,
    fill: impl Fn(usize, &mut [O]) + Sync + Send,
) {
    let n = out.len();
    if threads > 1 && n > PAR_THRESHOLD {
        let chunk = (n / (threads * 4)).max(16 * 1024);
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| fill(i * chunk, c));
    } else {
        fill(0, out);
    }
}

/// `f(x)` for every element, in parallel when large.
pub fn unary_map<T, O, F>(x: &[T], threads: usize, f: F) -> Vec<O>
where
    T: Copy + Sync,
    O: Copy + Default + Send,
    F: Fn(T) -> O + Sync + Send,
{
    let mut out = vec![O::default(); x.len()];
    fill_chunks(&mut out, threads, |start, o| {
        let x = &x[start..start + o.len()];
        for (o, &v) in o.iter_mut().zip(x) {
            *o = f(v);
        }
    });
    out
}

/// `f(a, b)` over the broadcast of `a` (shape `sa`) and `b` (shape `sb`).
pub fn binary_map<A, B, O, F>(
    sa: &[usize],
    a: &[A],
    sb: &[usize],
    b: &[B],
    threads: usize,
    f: F,
) -> Result<(Vec<usize>, Vec<O>), OpError>
where
    A: Copy + Sync,
    B: Copy + Sync,
    O: Copy + Default + Send,
    F: Fn(A, B) -> O + Sync + Send,
{
    let plan = BroadcastPlan::new([sa, sb])?;
    let mut out = vec![O::default(); plan.numel()];
    if sa == sb {
        fill_chunks(&mut out, threads, |start, o| {
            let a = &a[start..start + o.len()];
            let b = &b[start..start + o.len()];
            for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        });
    } else {
        fill_chunks(&mut out, threads, |start, o| {
            plan.for_each_run(start, start + o.len(), |r| {
                let o = &mut o[r.out - start..r.out - start + r.len];
                let [oa, ob] = r.offsets;
                match r.contiguous {
                    [true, true] => {
                        let (a, b) = (&a[oa..oa + r.len], &b[ob..ob + r.len]);
                        for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                            *o = f(x, y);
                        }
                    }
                    [true, false] => {
                        let (a, y) = (&a[oa..oa + r.len], b[ob]);
                        for (o, &x) in o.iter_mut().zip(a) {
                            *o = f(x, y);
                        }
                    }
                    [false, true] => {
                        let (x, b) = (a[oa], &b[ob..ob + r.len]);
                        for (o, &y) in o.iter_mut().zip(b) {
                            *o = f(x, y);
                        }
                    }
                    [false, false] => o.fill(f(a[oa], b[ob])),
                }
            });
        });
    }
    Ok((plan.out_shape().to_vec(), out))
}

/// `f(c, x, y)` over the broadcast of three operands (Where, Clip with tensors).
pub fn ternary_map<A, B, C, O, F>(
    shapes: [&[usize]; 3],
    a: &[A],
    b: &[B],
    c: &[C],
    threads: usize,
    f: F,
) -> Result<(Vec<usize>, Vec<O>), OpError>
where
    A: Copy + Sync,
    B: Copy + Sync,
    C: Copy + Sync,
    O: Copy + Default + Send,
    F: Fn(A, B, C) -> O + Sync + Send,
{
    let plan = BroadcastPlan::new(shapes)?;
    let mut out = vec![O::default(); plan.numel()];
    fill_chunks(&mut out, threads, |start, o| {
        plan.for_each_run(start, start + o.len(), |r| {
            let o = &mut o[r.out - start..r.out - start + r.len];
            let step = r.contiguous.map(usize::from);
            let [oa, ob, oc] = r.offsets;
            for (i, o) in o.iter_mut().enumerate() {
                *o = f(
                    a[oa + i * step[0]],
                    b[ob + i * step[1]],
                    c[oc + i * step[2]],
                );
            }
        });
    });
    Ok((plan.out_shape().to_vec(), out))
}

/// Copies `x` (shape `sx`) broadcast to `out_shape` (Expand, broadcast weights).
pub fn broadcast_to<T: Copy + Default + Send + Sync>(
    sx: &[usize],
    x: &[T],
    out_shape: &[usize],
    threads: usize,
) -> Result<Vec<T>, OpError> {
    let full = broadcast_shapes(sx, out_shape)?;
    if full != out_shape {
        return Err(OpError::Invalid(format!(
            "shape {sx:?} cannot be broadcast to {out_shape:?}"
        )));
    }
    let plan = BroadcastPlan::to_shape([sx], full);
    let mut out = vec![T::default(); plan.numel()];
    fill_chunks(&mut out, threads, |start, o| {
        plan.for_each_run(start, start + o.len(), |r| {
            let o = &mut o[r.out - start..r.out - start + r.len];
            let off = r.offsets[0];
            if r.contiguous[0] {
                o.copy_from_slice(&x[off..off + r.len]);
            } else {
                o.fill(x[off]);
            }
        });
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scalar reference: per-element index arithmetic.
    fn reference(sa: &[usize], a: &[i64], sb: &[usize], b: &[i64]) -> (Vec<usize>, Vec<i64>) {
        let out = broadcast_shapes(sa, sb).unwrap();
        let n: usize = out.iter().product();
        let offset = |s: &[usize], mut lin: usize| {
            let pad = out.len() - s.len();
            let mut off = 0;
            let mut stride = 1;
            for j in (0..out.len()).rev() {
                let i = lin % out[j];
                lin /= out[j];
                if j >= pad {
                    let d = s[j - pad];
                    off += if d == 1 { 0 } else { i * stride };
                    stride *= d;
                }
            }
            off
        };
        let v = (0..n)
            .map(|l| a[offset(sa, l)] * 1000 + b[offset(sb, l)])
            .collect();
        (out, v)
    }

    #[test]
    fn matches_reference_on_many_shapes() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 3], &[2, 3]),
            (&[2, 3], &[]),
            (&[], &[4]),
            (&[2, 3, 4], &[4]),
            (&[2, 3, 4], &[3, 1]),
            (&[2, 1, 4], &[1, 3, 1]),
            (&[5, 1], &[1, 6]),
            (&[1, 3, 1, 2], &[4, 1, 5, 1]),
            (&[2, 0, 3], &[1, 3]),
            (&[1], &[1, 1, 1]),
        ];
        for &(sa, sb) in cases {
            let a: Vec<i64> = (0..sa.iter().product::<usize>() as i64).collect();
            let b: Vec<i64> = (0..sb.iter().product::<usize>() as i64).collect();
            let want = reference(sa, &a, sb, &b);
            for threads in [1, 3] {
                let got = binary_map(sa, &a, sb, &b, threads, |x, y| x * 1000 + y).unwrap();
                assert_eq!(got, want, "{sa:?} {sb:?}");
            }
        }
    }

    #[test]
    fn large_parallel_bias_add() {
        let (rows, cols) = (700, 130);
        let a: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..cols).map(|i| -(i as f32)).collect();
        let (shape, out) = binary_map(&[rows, cols], &a, &[cols], &b, 4, |x, y| x + y).unwrap();
        assert_eq!(shape, vec![rows, cols]);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(out[r * cols + c], (r * cols) as f32);
            }
        }
    }

    #[test]
    fn incompatible_shapes_are_an_error() {
        assert!(broadcast_shapes(&[2, 3], &[4]).is_err());
        assert!(broadcast_to(&[3], &[1, 2, 3], &[2, 1], 1).is_err());
    }

    #[test]
    fn broadcast_to_repeats() {
        let v = broadcast_to(&[3, 1], &[1, 2, 3], &[2, 3, 2], 1).unwrap();
        assert_eq!(v, vec![1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]);
    }
}
