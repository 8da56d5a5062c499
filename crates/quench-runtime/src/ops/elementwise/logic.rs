//! Comparisons, boolean logic, Where, IsNaN and IsInf.

use super::broadcast::{binary_map, ternary_map, unary_map};
use super::{dispatch_copy, dispatch_float, dispatch_num2, dtype_mismatch, unsupported_dtype};
use crate::op::required;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::{Tensor, TensorData};

pub fn register(r: &mut Registry) {
    for name in [
        "Equal",
        "Less",
        "LessOrEqual",
        "Greater",
        "GreaterOrEqual",
        "And",
        "Or",
        "Xor",
    ] {
        r.register("", name, build_binary);
    }
    r.register("", "Not", build_not);
    r.register("", "Where", build_where);
    r.register("", "IsNaN", build_isnan);
    r.register("", "IsInf", build_isinf);
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
}

#[derive(Debug)]
struct Compare {
    kind: Kind,
    name: String,
}

fn build_binary(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let kind = match ctx.node.op_type.as_str() {
        "Equal" => Kind::Equal,
        "Less" => Kind::Less,
        "LessOrEqual" => Kind::LessOrEqual,
        "Greater" => Kind::Greater,
        "GreaterOrEqual" => Kind::GreaterOrEqual,
        "And" => Kind::And,
        "Or" => Kind::Or,
        "Xor" => Kind::Xor,
        other => bail_invalid!("comparison builder called for {other}"),
    };
    Ok(Box::new(Compare {
        kind,
        name: ctx.node.op_type.clone(),
    }))
}

fn compare<T: Copy + PartialOrd + Sync>(
    kind: Kind,
    sa: &[usize],
    x: &[T],
    sb: &[usize],
    y: &[T],
    t: usize,
) -> Result<(Vec<usize>, Vec<bool>), OpError> {
    match kind {
        Kind::Equal => binary_map(sa, x, sb, y, t, |a, b| a == b),
        Kind::Less => binary_map(sa, x, sb, y, t, |a, b| a < b),
        Kind::LessOrEqual => binary_map(sa, x, sb, y, t, |a, b| a <= b),
        Kind::Greater => binary_map(sa, x, sb, y, t, |a, b| a > b),
        Kind::GreaterOrEqual => binary_map(sa, x, sb, y, t, |a, b| a >= b),
        Kind::And | Kind::Or | Kind::Xor => {
            bail_invalid!("{kind:?} takes bool inputs")
        }
    }
}

impl Op for Compare {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let a = required(inputs, 0)?;
        let b = required(inputs, 1)?;
        let t = ctx.threads;
        let (sa, sb) = (a.shape(), b.shape());
        let (shape, v) = match (a.data(), b.data()) {
            (TensorData::Bool(x), TensorData::Bool(y)) => match self.kind {
                Kind::And => binary_map(sa, x, sb, y, t, |p, q| p & q)?,
                Kind::Or => binary_map(sa, x, sb, y, t, |p, q| p | q)?,
                Kind::Xor => binary_map(sa, x, sb, y, t, |p, q| p ^ q)?,
                k => compare(k, sa, x, sb, y, t)?,
            },
            (TensorData::String(x), TensorData::String(y)) if self.kind == Kind::Equal => {
                let xi: Vec<usize> = (0..x.len()).collect();
                let yi: Vec<usize> = (0..y.len()).collect();
                binary_map(sa, &xi, sb, &yi, t, |i, j| x[i] == y[j])?
            }
            _ if matches!(self.kind, Kind::And | Kind::Or | Kind::Xor) => {
                bail_invalid!(
                    "{} takes bool inputs, got {} and {}",
                    self.name,
                    a.dtype(),
                    b.dtype()
                )
            }
            (da, db) => {
                dispatch_num2!(da, db, T, x, y => compare::<T>(self.kind, sa, x, sb, y, t)?,
                _ => return Err(if a.dtype() != b.dtype() {
                    dtype_mismatch(a.dtype(), b.dtype())
                } else {
                    unsupported_dtype(&self.name, a.dtype())
                }))
            }
        };
        Ok(vec![Tensor::from_vec(shape, v)?])
    }
}

#[derive(Debug)]
struct Not;

fn build_not(_ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Not))
}

impl Op for Not {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let v = match x.data() {
            TensorData::Bool(v) => unary_map(v, ctx.threads, |b: bool| !b),
            _ => bail_invalid!("Not takes a bool input, got {}", x.dtype()),
        };
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), v)?])
    }
}

#[derive(Debug)]
struct Where;

fn build_where(_ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Where))
}

impl Op for Where {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let c = required(inputs, 0)?;
        let x = required(inputs, 1)?;
        let y = required(inputs, 2)?;
        let TensorData::Bool(cv) = c.data() else {
            bail_invalid!("input 0 (condition) has dtype {}, expected bool", c.dtype());
        };
        if x.dtype() != y.dtype() {
            return Err(dtype_mismatch(x.dtype(), y.dtype()));
        }
        let shapes = [c.shape(), x.shape(), y.shape()];
        let t = ctx.threads;
        let out = dispatch_copy!(x.data(), T, xv => {
            let yv: &[T] = y.as_slice::<T>()?;
            let (s, v) = ternary_map(shapes, cv, xv, yv, t, |c, a, b| if c { a } else { b })?;
            Tensor::from_vec(s, v)?
        }, _ => return Err(unsupported_dtype("Where", x.dtype())));
        Ok(vec![out])
    }
}

#[derive(Debug)]
struct IsNan;

fn build_isnan(_ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(IsNan))
}

impl Op for IsNan {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let v = dispatch_float!(x.data(), T, v => unary_map(v, ctx.threads, |e: T| e.is_nan()),
            _ => return Err(unsupported_dtype("IsNaN", x.dtype())));
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), v)?])
    }
}

#[derive(Debug)]
struct IsInf {
    negative: bool,
    positive: bool,
}

fn build_isinf(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(IsInf {
        negative: ctx.node.attr_int_or("detect_negative", 1)? != 0,
        positive: ctx.node.attr_int_or("detect_positive", 1)? != 0,
    }))
}

impl Op for IsInf {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let (neg, pos) = (self.negative, self.positive);
        let v = dispatch_float!(x.data(), T, v => unary_map(v, ctx.threads, |e: T| {
            e.is_infinite() && if e.is_sign_negative() { neg } else { pos }
        }), _ => return Err(unsupported_dtype("IsInf", x.dtype())));
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), v)?])
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run_node;
    use quench_ir::{Node, Tensor};

    #[test]
    fn where_broadcasts_three_ways() {
        let c = Tensor::from_vec(vec![2, 1], vec![true, false]).unwrap();
        let x = Tensor::from_vec(vec![1, 3], vec![1i64, 2, 3]).unwrap();
        let y = Tensor::scalar(0i64);
        let n = Node::new("Where", "n", &["c", "x", "y"], &["o"]);
        let o = run_node(n, 16, &[Some(&c), Some(&x), Some(&y)]).unwrap();
        assert_eq!(o.shape(), &[2, 3]);
        assert_eq!(o.as_slice::<i64>().unwrap(), &[1, 2, 3, 0, 0, 0]);
        let bad = Tensor::scalar(1i64);
        let n = Node::new("Where", "n", &["c", "x", "y"], &["o"]);
        assert!(run_node(n, 16, &[Some(&bad), Some(&x), Some(&y)]).is_err());
    }

    #[test]
    fn comparisons_and_logic() {
        let a = Tensor::from_vec(vec![3], vec![1u16, 5, 3]).unwrap();
        let b = Tensor::scalar(3u16);
        let n = Node::new("GreaterOrEqual", "n", &["a", "b"], &["o"]);
        let o = run_node(n, 16, &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(o.as_slice::<bool>().unwrap(), &[false, true, true]);
        let p = Tensor::from_vec(vec![2], vec![true, false]).unwrap();
        let n = Node::new("Xor", "n", &["a", "b"], &["o"]);
        let o = run_node(n.clone(), 7, &[Some(&p), Some(&p)]).unwrap();
        assert_eq!(o.as_slice::<bool>().unwrap(), &[false, false]);
        assert!(run_node(n, 7, &[Some(&a), Some(&b)]).is_err());
    }

    #[test]
    fn isinf_respects_sign_flags() {
        let x = Tensor::from_vec(vec![3], vec![f32::INFINITY, f32::NEG_INFINITY, 1.0]).unwrap();
        let n = Node::new("IsInf", "n", &["x"], &["o"])
            .with_attr("detect_positive", quench_ir::Attr::Int(0));
        let o = run_node(n, 20, &[Some(&x)]).unwrap();
        assert_eq!(o.as_slice::<bool>().unwrap(), &[false, true, false]);
    }
}
