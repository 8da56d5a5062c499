//! Reductions (ReduceSum, ReduceMean, ...), ArgMax/ArgMin, Softmax/LogSoftmax
//! and LayerNormalization: the ops that combine values along axes.

use crate::op::{optional, required};
use crate::ops::elementwise::broadcast::{BroadcastPlan, binary_map};
use crate::ops::elementwise::num::Num;
use crate::ops::elementwise::{dispatch_num, unsupported_dtype};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::{Tensor, TensorData};

mod arg;
mod layernorm;
mod softmax;

pub fn register(r: &mut Registry) {
    for name in [
        "ReduceSum",
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceSumSquare",
        "ReduceLogSum",
        "ReduceLogSumExp",
    ] {
        r.register("", name, build);
    }
    arg::register(r);
    softmax::register(r);
    layernorm::register(r);
}

/// `axis` in `-rank..rank` as an index, or an error naming the attribute.
pub(crate) fn normalize_axis(axis: i64, rank: usize, what: &str) -> Result<usize, OpError> {
    let r = rank as i64;
    if axis < -r || axis >= r.max(1) {
        bail_invalid!("{what} = {axis} is out of range for rank {rank}");
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    SumSquare,
    LogSum,
    LogSumExp,
}

#[derive(Debug)]
struct Reduce {
    kind: Kind,
    name: String,
    keepdims: bool,
    noop_with_empty_axes: bool,
    /// Axes from the attribute (older opsets); `None` when they come as input 1.
    attr_axes: Option<Vec<i64>>,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let n = ctx.node;
    let kind = match n.op_type.as_str() {
        "ReduceSum" => Kind::Sum,
        "ReduceMean" => Kind::Mean,
        "ReduceMax" => Kind::Max,
        "ReduceMin" => Kind::Min,
        "ReduceProd" => Kind::Prod,
        "ReduceL1" => Kind::L1,
        "ReduceL2" => Kind::L2,
        "ReduceSumSquare" => Kind::SumSquare,
        "ReduceLogSum" => Kind::LogSum,
        "ReduceLogSumExp" => Kind::LogSumExp,
        other => bail_invalid!("reduce builder called for {other}"),
    };
    // Axes moved from attribute to input in opset 13 (ReduceSum) / 18 (the rest).
    let axes_as_input = ctx.opset >= if kind == Kind::Sum { 13 } else { 18 };
    let attr_axes = if axes_as_input {
        None
    } else {
        Some(
            n.attr_ints("axes")?
                .map(<[i64]>::to_vec)
                .unwrap_or_default(),
        )
    };
    Ok(Box::new(Reduce {
        kind,
        name: n.op_type.clone(),
        keepdims: n.attr_int_or("keepdims", 1)? != 0,
        noop_with_empty_axes: n.attr_int_or("noop_with_empty_axes", 0)? != 0,
        attr_axes,
    }))
}

/// Which axes of a rank-`rank` tensor are reduced.
fn axes_mask(axes: &[i64], rank: usize, noop_if_empty: bool) -> Result<Vec<bool>, OpError> {
    if axes.is_empty() {
        return Ok(vec![!noop_if_empty; rank]);
    }
    let mut mask = vec![false; rank];
    for &a in axes {
        let i = normalize_axis(a, rank, "axes")?;
        // A scalar has no axis to reduce; axis 0 / -1 are accepted as a no-op.
        if let Some(m) = mask.get_mut(i) {
            *m = true;
        }
    }
    Ok(mask)
}

/// Folds `x` (shape `shape`) into one accumulator per output element, where
/// the output keeps the input's rank with reduced axes set to 1.
pub(crate) fn fold<T: Copy, A: Copy>(
    x: &[T],
    shape: &[usize],
    mask: &[bool],
    init: A,
    f: impl Fn(A, T) -> A,
) -> Vec<A> {
    let keep: Vec<usize> = shape
        .iter()
        .zip(mask)
        .map(|(&d, &m)| if m { 1 } else { d })
        .collect();
    let mut acc = vec![init; keep.iter().product()];
    let plan = BroadcastPlan::to_shape([&keep], shape.to_vec());
    plan.for_each_run(0, x.len(), |r| {
        let xs = &x[r.out..r.out + r.len];
        let o = r.offsets[0];
        if r.contiguous[0] {
            for (a, &v) in acc[o..o + r.len].iter_mut().zip(xs) {
                *a = f(*a, v);
            }
        } else {
            let mut a = acc[o];
            for &v in xs {
                a = f(a, v);
            }
            acc[o] = a;
        }
    });
    acc
}

fn reduce_typed<T: Num>(
    kind: Kind,
    x: &[T],
    shape: &[usize],
    mask: &[bool],
) -> Result<Vec<T>, OpError> {
    let count: usize = shape
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(d, _)| d)
        .product();
    let f64s = |acc: Vec<f64>, post: &dyn Fn(f64) -> f64| -> Vec<T> {
        acc.into_iter().map(|a| T::from_f64(post(a))).collect()
    };
    Ok(match kind {
        Kind::Max => fold(x, shape, mask, T::lowest(), Num::max_nan),
        Kind::Min => fold(x, shape, mask, T::highest(), Num::min_nan),
        Kind::Sum if !T::IS_FLOAT => fold(x, shape, mask, T::zero(), Num::add),
        Kind::Prod if !T::IS_FLOAT => fold(x, shape, mask, T::one(), Num::mul),
        Kind::Sum => f64s(fold(x, shape, mask, 0.0, |a, v| a + v.to_f64()), &|a| a),
        Kind::Prod => f64s(fold(x, shape, mask, 1.0, |a, v| a * v.to_f64()), &|a| a),
        Kind::Mean => {
            let n = count as f64;
            f64s(fold(x, shape, mask, 0.0, |a, v| a + v.to_f64()), &|a| a / n)
        }
        Kind::L1 => f64s(
            fold(x, shape, mask, 0.0, |a, v| a + v.to_f64().abs()),
            &|a| a,
        ),
        Kind::L2 | Kind::SumSquare => {
            let acc = fold(x, shape, mask, 0.0, |a, v| {
                let v = v.to_f64();
                a + v * v
            });
            if kind == Kind::L2 {
                f64s(acc, &f64::sqrt)
            } else {
                f64s(acc, &|a| a)
            }
        }
        Kind::LogSum => f64s(fold(x, shape, mask, 0.0, |a, v| a + v.to_f64()), &f64::ln),
        Kind::LogSumExp => {
            let max = fold(x, shape, mask, f64::NEG_INFINITY, |a, v| a.max(v.to_f64()));
            let shift: Vec<f64> = max
                .iter()
                .map(|&m| if m.is_finite() { m } else { 0.0 })
                .collect();
            let keep: Vec<usize> = shape
                .iter()
                .zip(mask)
                .map(|(&d, &m)| if m { 1 } else { d })
                .collect();
            let (_, e) = binary_map(shape, x, &keep, &shift, 1, |v: T, m| (v.to_f64() - m).exp())?;
            let sums = fold(&e, shape, mask, 0.0, |a, v| a + v);
            sums.into_iter()
                .zip(shift)
                .map(|(s, m)| T::from_f64(m + s.ln()))
                .collect()
        }
    })
}

impl Op for Reduce {
    fn run(&self, _ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let axes = match &self.attr_axes {
            Some(a) => a.clone(),
            None => match optional(inputs, 1) {
                Some(t) => t.to_i64_vec().map_err(|_| {
                    OpError::Invalid(format!(
                        "input 1 (axes) has dtype {}, expected int64",
                        t.dtype()
                    ))
                })?,
                None => Vec::new(),
            },
        };
        let shape = x.shape();
        let mask = axes_mask(&axes, shape.len(), self.noop_with_empty_axes)?;
        let out_shape: Vec<usize> = shape
            .iter()
            .zip(&mask)
            .filter_map(|(&d, &m)| match (m, self.keepdims) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let out = match x.data() {
            TensorData::Bool(v) => match self.kind {
                Kind::Max => {
                    Tensor::from_vec(out_shape, fold(v, shape, &mask, false, |a, b| a | b))?
                }
                Kind::Min => {
                    Tensor::from_vec(out_shape, fold(v, shape, &mask, true, |a, b| a & b))?
                }
                _ => return Err(unsupported_dtype(&self.name, x.dtype())),
            },
            d => {
                dispatch_num!(d, T, v => Tensor::from_vec(out_shape, reduce_typed::<T>(self.kind, v, shape, &mask)?)?,
                _ => return Err(unsupported_dtype(&self.name, x.dtype())))
            }
        };
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::elementwise::tests::run_node;
    use quench_ir::{Attr, Node, Tensor};

    fn x() -> Tensor {
        Tensor::from_vec(vec![2, 3, 2], (0..12).map(|i| i as f32).collect()).unwrap()
    }

    #[test]
    fn sum_over_middle_axis_with_input_axes() {
        let axes = Tensor::from_vec(vec![1], vec![-2i64]).unwrap();
        let n =
            Node::new("ReduceSum", "n", &["x", "a"], &["y"]).with_attr("keepdims", Attr::Int(0));
        let y = run_node(n, 13, &[Some(&x()), Some(&axes)]).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[6.0, 9.0, 24.0, 27.0]);
    }

    #[test]
    fn mean_and_max_with_attribute_axes() {
        let n =
            Node::new("ReduceMean", "n", &["x"], &["y"]).with_attr("axes", Attr::Ints(vec![0, 2]));
        let y = run_node(n, 13, &[Some(&x())]).unwrap();
        assert_eq!(y.shape(), &[1, 3, 1]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[3.5, 5.5, 7.5]);
        let n = Node::new("ReduceMax", "n", &["x"], &["y"]);
        let y = run_node(n, 18, &[Some(&x())]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[11.0]);
    }

    #[test]
    fn empty_set_and_noop() {
        let e = Tensor::from_vec(vec![2, 0, 4], Vec::<f32>::new()).unwrap();
        let axes = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        let n = Node::new("ReduceLogSumExp", "n", &["x", "a"], &["y"]);
        let y = run_node(n, 18, &[Some(&e), Some(&axes)]).unwrap();
        assert_eq!(y.shape(), &[2, 1, 4]);
        assert!(
            y.as_slice::<f32>()
                .unwrap()
                .iter()
                .all(|v| *v == f32::NEG_INFINITY)
        );
        let n = Node::new("ReduceSumSquare", "n", &["x"], &["y"])
            .with_attr("noop_with_empty_axes", Attr::Int(1));
        let y = run_node(n, 18, &[Some(&x())]).unwrap();
        assert_eq!(y.shape(), &[2, 3, 2]);
        assert_eq!(y.as_slice::<f32>().unwrap()[3], 9.0);
    }

    #[test]
    fn bad_axis_is_an_error() {
        let axes = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
        let n = Node::new("ReduceL2", "n", &["x", "a"], &["y"]);
        assert!(run_node(n, 18, &[Some(&x()), Some(&axes)]).is_err());
    }
}
