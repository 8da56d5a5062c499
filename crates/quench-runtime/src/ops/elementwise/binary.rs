//! Broadcasting arithmetic: Add, Sub, Mul, Div, Mod, Pow, PRelu and the
//! variadic Max, Min, Sum, Mean.

use super::broadcast::binary_map;
use super::num::Num;
use super::{dispatch_float, dispatch_num, dispatch_num2, dtype_mismatch, unsupported_dtype};
use crate::op::required;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::{Tensor, TensorData};

pub fn register(r: &mut Registry) {
    for name in [
        "Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Sum", "Mean", "PRelu",
    ] {
        r.register("", name, build);
    }
    r.register("", "Pow", build_pow);
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Add,
    Sub,
    Mul,
    Div,
    /// numpy `mod` (sign of divisor).
    ModFloor,
    /// C `fmod` (sign of dividend).
    ModTrunc,
    Max,
    Min,
    PRelu,
}

#[derive(Debug)]
struct Binary {
    kind: Kind,
    name: String,
    /// Sum/Max/Min/Mean take any number of inputs; Mean divides at the end.
    variadic: bool,
    mean: bool,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let n = ctx.node;
    let (kind, variadic, mean) = match n.op_type.as_str() {
        "Add" => (Kind::Add, false, false),
        "Sub" => (Kind::Sub, false, false),
        "Mul" => (Kind::Mul, false, false),
        "Div" => (Kind::Div, false, false),
        "Mod" => match n.attr_int_or("fmod", 0)? {
            0 => (Kind::ModFloor, false, false),
            1 => (Kind::ModTrunc, false, false),
            v => bail_invalid!("attribute fmod is {v}, expected 0 or 1"),
        },
        "PRelu" => (Kind::PRelu, false, false),
        "Max" => (Kind::Max, true, false),
        "Min" => (Kind::Min, true, false),
        "Sum" => (Kind::Add, true, false),
        "Mean" => (Kind::Add, true, true),
        other => bail_invalid!("binary builder called for {other}"),
    };
    Ok(Box::new(Binary {
        kind,
        name: n.op_type.clone(),
        variadic,
        mean,
    }))
}

/// `a op b` with broadcasting, for two tensors of one numeric dtype.
fn apply(kind: Kind, name: &str, a: &Tensor, b: &Tensor, t: usize) -> Result<Tensor, OpError> {
    let (sa, sb) = (a.shape(), b.shape());
    dispatch_num2!(a.data(), b.data(), T, x, y => {
        let (shape, v) = typed::<T>(kind, sa, x, sb, y, t)?;
        Ok(Tensor::from_vec(shape, v)?)
    }, _ => Err(if a.dtype() != b.dtype() {
        dtype_mismatch(a.dtype(), b.dtype())
    } else {
        unsupported_dtype(name, a.dtype())
    }))
}

fn typed<T: Num>(
    kind: Kind,
    sa: &[usize],
    x: &[T],
    sb: &[usize],
    y: &[T],
    t: usize,
) -> Result<(Vec<usize>, Vec<T>), OpError> {
    match kind {
        Kind::Add => binary_map(sa, x, sb, y, t, Num::add),
        Kind::Sub => binary_map(sa, x, sb, y, t, Num::sub),
        Kind::Mul => binary_map(sa, x, sb, y, t, Num::mul),
        Kind::Div => binary_map(sa, x, sb, y, t, Num::div),
        Kind::ModFloor => binary_map(sa, x, sb, y, t, Num::rem_floor),
        Kind::ModTrunc => binary_map(sa, x, sb, y, t, Num::rem_trunc),
        Kind::Max => binary_map(sa, x, sb, y, t, Num::max_nan),
        Kind::Min => binary_map(sa, x, sb, y, t, Num::min_nan),
        Kind::PRelu => {
            let zero = T::zero();
            binary_map(sa, x, sb, y, t, |v, s| if v < zero { v.mul(s) } else { v })
        }
    }
}

impl Op for Binary {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let t = ctx.threads;
        if !self.variadic {
            let a = required(inputs, 0)?;
            let b = required(inputs, 1)?;
            let out = apply(self.kind, &self.name, a, b, t)?;
            if self.kind == Kind::PRelu && out.shape() != a.shape() {
                bail_invalid!(
                    "slope of shape {:?} does not broadcast to X of shape {:?}",
                    b.shape(),
                    a.shape()
                );
            }
            return Ok(vec![out]);
        }
        let first = required(inputs, 0)?;
        let mut acc: Option<Tensor> = None;
        for i in 1..inputs.len() {
            let b = required(inputs, i)?;
            let a = acc.as_ref().unwrap_or(first);
            acc = Some(apply(self.kind, &self.name, a, b, t)?);
        }
        let mut out = match acc {
            Some(v) => v,
            None => {
                dispatch_num!(first.data(), _T, _v => first.clone(),
                    _ => return Err(unsupported_dtype(&self.name, first.dtype())))
            }
        };
        if self.mean {
            let n = inputs.len() as f64;
            let shape = out.shape().to_vec();
            out = dispatch_float!(out.data(), T, v => Tensor::from_vec(shape,
                v.iter().map(|&e| e / (n as T)).collect::<Vec<T>>())?,
                _ => return Err(unsupported_dtype("Mean", out.dtype())));
        }
        Ok(vec![out])
    }
}

/// Pow: the exponent may have another numeric dtype than the base; the
/// result has the base's dtype (numpy `power(a, b).astype(a.dtype)`).
#[derive(Debug)]
struct Pow;

fn build_pow(_ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Pow))
}

impl Op for Pow {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let a = required(inputs, 0)?;
        let b = required(inputs, 1)?;
        let t = ctx.threads;
        let (sa, sb) = (a.shape(), b.shape());
        if let (TensorData::F32(x), TensorData::F32(y)) = (a.data(), b.data()) {
            let (s, v) = binary_map(sa, x, sb, y, t, f32::powf)?;
            return Ok(vec![Tensor::from_vec(s, v)?]);
        }
        // The exponent travels as f64 (exact for every integer below 2^53).
        let int_exponent = !b.dtype().is_float();
        let e: Vec<f64> = dispatch_num!(b.data(), B, y => y.iter().map(|&v: &B| v.to_f64()).collect(),
            _ => return Err(unsupported_dtype("Pow exponent", b.dtype())));
        let out = dispatch_num!(a.data(), A, x => {
            let (shape, v) = if !A::IS_FLOAT && int_exponent {
                binary_map(sa, x, sb, &e, t, |p: A, e| Num::powi(p, e as i64))?
            } else {
                // numpy computes in float64, then casts back to the base dtype.
                binary_map(sa, x, sb, &e, t, |p: A, e| A::from_f64(p.to_f64().powf(e)))?
            };
            Tensor::from_vec(shape, v)?
        }, _ => return Err(unsupported_dtype("Pow", a.dtype())));
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run_node;
    use quench_ir::{Attr, Node, Tensor};

    #[test]
    fn add_broadcasts_and_div_truncates() {
        let a = Tensor::from_vec(vec![2, 2], vec![7i32, -7, 8, 9]).unwrap();
        let b = Tensor::from_vec(vec![2], vec![2i32, 2]).unwrap();
        let n = Node::new("Div", "n", &["a", "b"], &["y"]);
        let y = run_node(n, 14, &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[3, -3, 4, 4]);
        let n = Node::new("Add", "n", &["a", "b"], &["y"]);
        let y = run_node(n, 14, &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[9, -5, 10, 11]);
    }

    #[test]
    fn mod_fmod_and_floor() {
        let a = Tensor::from_vec(vec![2], vec![-7i64, 7]).unwrap();
        let b = Tensor::from_vec(vec![2], vec![3i64, -3]).unwrap();
        let n = Node::new("Mod", "n", &["a", "b"], &["y"]);
        let y = run_node(n.clone(), 13, &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[2, -2]);
        let y = run_node(n.with_attr("fmod", Attr::Int(1)), 13, &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[-1, 1]);
    }

    #[test]
    fn variadic_mean_and_mixed_pow() {
        let a = Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap();
        let b = Tensor::from_vec(vec![1], vec![3f32]).unwrap();
        let n = Node::new("Mean", "n", &["a", "b", "a"], &["y"]);
        let y = run_node(n, 13, &[Some(&a), Some(&b), Some(&a)]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[5.0 / 3.0, 7.0 / 3.0]);
        let e = Tensor::from_vec(vec![2], vec![2i64, 3]).unwrap();
        let n = Node::new("Pow", "n", &["a", "e"], &["y"]);
        let y = run_node(n, 15, &[Some(&a), Some(&e)]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 8.0]);
    }

    #[test]
    fn mismatched_dtypes_and_shapes_are_errors() {
        let a = Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap();
        let b = Tensor::from_vec(vec![2], vec![1i32, 2]).unwrap();
        let c = Tensor::from_vec(vec![3], vec![1f32, 2.0, 3.0]).unwrap();
        let n = Node::new("Add", "n", &["a", "b"], &["y"]);
        assert!(run_node(n.clone(), 14, &[Some(&a), Some(&b)]).is_err());
        assert!(run_node(n, 14, &[Some(&a), Some(&c)]).is_err());
    }
}
