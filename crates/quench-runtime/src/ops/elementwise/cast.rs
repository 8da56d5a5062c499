//! Cast, CastLike and Expand.

use super::broadcast::{broadcast_shapes, broadcast_to, unary_map};
use super::{dispatch_copy, unsupported_dtype};
use crate::op::required;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::{DType, Elem, Tensor};

pub fn register(r: &mut Registry) {
    r.register("", "Cast", build_cast);
    r.register("", "CastLike", build_castlike);
    r.register("", "Expand", build_expand);
}

/// A scalar on its way between dtypes: floats travel as f64, integers and
/// bools as i128, so that every integer value survives exactly.
#[derive(Clone, Copy)]
enum Sv {
    F(f64),
    I(i128),
}

trait CastElem: Elem {
    fn get(self) -> Sv;
    fn put(v: Sv) -> Self;
}

macro_rules! cast_int {
    ($($t:ty),*) => {$(
        impl CastElem for $t {
            fn get(self) -> Sv {
                Sv::I(self as i128)
            }
            fn put(v: Sv) -> Self {
                match v {
                    // In-range floats truncate toward zero (ONNX/numpy); NaN gives 0.
                    Sv::F(f) => (f as i128) as $t,
                    Sv::I(i) => i as $t,
                }
            }
        }
    )*};
}
cast_int!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! cast_float {
    ($($t:ty),*) => {$(
        impl CastElem for $t {
            fn get(self) -> Sv {
                Sv::F(self as f64)
            }
            fn put(v: Sv) -> Self {
                match v {
                    Sv::F(f) => f as $t,
                    Sv::I(i) => i as $t,
                }
            }
        }
    )*};
}
cast_float!(f32, f64);

impl CastElem for bool {
    fn get(self) -> Sv {
        Sv::I(self as i128)
    }
    fn put(v: Sv) -> Self {
        match v {
            Sv::F(f) => f != 0.0,
            Sv::I(i) => i != 0,
        }
    }
}

/// `x` converted to `to`, element by element.
pub fn cast_tensor(x: &Tensor, to: DType, threads: usize) -> Result<Tensor, OpError> {
    if x.dtype() == to {
        return Ok(x.clone());
    }
    let shape = x.shape().to_vec();
    dispatch_copy!(x.data(), S, v => {
        let out = match to {
            DType::F32 => Tensor::from_vec(shape, convert::<S, f32>(v, threads))?,
            DType::F64 => Tensor::from_vec(shape, convert::<S, f64>(v, threads))?,
            DType::I8 => Tensor::from_vec(shape, convert::<S, i8>(v, threads))?,
            DType::U8 => Tensor::from_vec(shape, convert::<S, u8>(v, threads))?,
            DType::I16 => Tensor::from_vec(shape, convert::<S, i16>(v, threads))?,
            DType::U16 => Tensor::from_vec(shape, convert::<S, u16>(v, threads))?,
            DType::I32 => Tensor::from_vec(shape, convert::<S, i32>(v, threads))?,
            DType::U32 => Tensor::from_vec(shape, convert::<S, u32>(v, threads))?,
            DType::I64 => Tensor::from_vec(shape, convert::<S, i64>(v, threads))?,
            DType::U64 => Tensor::from_vec(shape, convert::<S, u64>(v, threads))?,
            DType::Bool => Tensor::from_vec(shape, convert::<S, bool>(v, threads))?,
            other => return Err(unsupported_dtype("Cast to", other)),
        };
        Ok(out)
    }, _ => Err(unsupported_dtype("Cast from", x.dtype())))
}

fn convert<S: CastElem, D: CastElem>(v: &[S], threads: usize) -> Vec<D> {
    unary_map(v, threads, |e: S| D::put(e.get()))
}

#[derive(Debug)]
struct Cast {
    to: DType,
}

fn build_cast(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let Some(code) = ctx.node.attr_int("to")? else {
        bail_invalid!("attribute 'to' is missing");
    };
    let to = i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx)
        .ok_or_else(|| OpError::Invalid(format!("attribute 'to' = {code} is not an ONNX dtype")))?;
    Ok(Box::new(Cast { to }))
}

impl Op for Cast {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![cast_tensor(
            required(inputs, 0)?,
            self.to,
            ctx.threads,
        )?])
    }
}

#[derive(Debug)]
struct CastLike;

fn build_castlike(_ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(CastLike))
}

impl Op for CastLike {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let to = required(inputs, 1)?.dtype();
        Ok(vec![cast_tensor(required(inputs, 0)?, to, ctx.threads)?])
    }
}

/// Expand: bidirectional broadcast of the input to a shape given as input 1.
#[derive(Debug)]
struct Expand;

fn build_expand(_ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Expand))
}

impl Op for Expand {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let s = required(inputs, 1)?;
        if s.rank() != 1 {
            bail_invalid!("input 1 (shape) must be 1-D, has shape {:?}", s.shape());
        }
        let dims = s
            .to_i64_vec()
            .map_err(|_| OpError::Invalid(format!("input 1 (shape) has dtype {}", s.dtype())))?
            .into_iter()
            .map(|d| {
                usize::try_from(d)
                    .map_err(|_| OpError::Invalid(format!("input 1 (shape) has negative dim {d}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out_shape = broadcast_shapes(x.shape(), &dims)?;
        let out = dispatch_copy!(x.data(), T, v => {
            Tensor::from_vec(out_shape.clone(), broadcast_to::<T>(x.shape(), v, &out_shape, ctx.threads)?)?
        }, _ => return Err(unsupported_dtype("Expand", x.dtype())));
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run_node;
    use super::*;
    use quench_ir::{Attr, Node};

    #[test]
    fn cast_truncates_and_wraps_like_onnx() {
        let x = Tensor::from_vec(vec![4], vec![-1.7f32, 2.9, 300.0, f32::NAN]).unwrap();
        let y = cast_tensor(&x, DType::I32, 1).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[-1, 2, 300, 0]);
        let y = cast_tensor(&x, DType::Bool, 1).unwrap();
        assert_eq!(y.as_slice::<bool>().unwrap(), &[true, true, true, true]);
        let big = Tensor::from_vec(vec![1], vec![i64::MAX]).unwrap();
        let y = cast_tensor(&big, DType::U64, 1).unwrap();
        assert_eq!(y.as_slice::<u64>().unwrap(), &[i64::MAX as u64]);
        assert!(matches!(
            cast_tensor(&x, DType::F16, 1),
            Err(OpError::Unsupported(_))
        ));
    }

    #[test]
    fn cast_node_reads_to() {
        let x = Tensor::from_vec(vec![2], vec![1u8, 2]).unwrap();
        let n = Node::new("Cast", "n", &["x"], &["y"]).with_attr("to", Attr::Int(11));
        let y = run_node(n, 21, &[Some(&x)]).unwrap();
        assert_eq!(y.as_slice::<f64>().unwrap(), &[1.0, 2.0]);
        let n = Node::new("Cast", "n", &["x"], &["y"]).with_attr("to", Attr::Int(0));
        assert!(run_node(n, 21, &[Some(&x)]).is_err());
    }

    #[test]
    fn expand_is_bidirectional() {
        let x = Tensor::from_vec(vec![3, 1], vec![1f32, 2.0, 3.0]).unwrap();
        let s = Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap();
        let n = Node::new("Expand", "n", &["x", "s"], &["y"]);
        let y = run_node(n.clone(), 13, &[Some(&x), Some(&s)]).unwrap();
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
        );
        let s = Tensor::from_vec(vec![1], vec![-2i64]).unwrap();
        assert!(run_node(n, 13, &[Some(&x), Some(&s)]).is_err());
    }
}
