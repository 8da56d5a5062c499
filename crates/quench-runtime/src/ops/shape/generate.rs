//! Operators that create tensors: Range and ConstantOfShape.

use super::common::{Movable, elems, with_movable, wrap};
use crate::op::required;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::tensor::checked_numel;
use quench_ir::{Tensor, TensorData};

pub fn register(r: &mut Registry) {
    r.register("", "Range", build_range);
    r.register("", "ConstantOfShape", build_constant_of_shape);
}

#[derive(Debug)]
struct Range;

fn build_range(_: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Range))
}

fn check_len(n: i128) -> Result<usize, OpError> {
    let n = n.max(0);
    if n > (1i128 << 40) {
        bail_invalid!("Range would produce {n} elements");
    }
    Ok(checked_numel(&[n as usize])?)
}

fn range_int<T: Copy + Into<i128> + TryFrom<i128>>(s: T, l: T, d: T) -> Result<Vec<T>, OpError> {
    let (s, l, d): (i128, i128, i128) = (s.into(), l.into(), d.into());
    if d == 0 {
        bail_invalid!("delta is 0");
    }
    // ceil((l - s) / d) for either sign of d.
    let diff = l - s;
    let n = if (diff > 0) == (d > 0) && diff != 0 {
        (diff.abs() + d.abs() - 1) / d.abs()
    } else {
        0
    };
    let n = check_len(n)?;
    (0..n as i128)
        .map(|i| {
            T::try_from(s + i * d).map_err(|_| OpError::Invalid("Range overflows its type".into()))
        })
        .collect()
}

fn range_float(s: f64, l: f64, d: f64) -> Result<Vec<f64>, OpError> {
    if d == 0.0 || !(s.is_finite() && l.is_finite() && d.is_finite()) {
        bail_invalid!("Range needs finite start/limit and a non-zero delta (got {s}, {l}, {d})");
    }
    let n = check_len(((l - s) / d).ceil() as i128)?;
    Ok((0..n).map(|i| s + i as f64 * d).collect())
}

impl Op for Range {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (s, l, d) = (
            required(inputs, 0)?,
            required(inputs, 1)?,
            required(inputs, 2)?,
        );
        for (i, t) in [s, l, d].iter().enumerate() {
            if t.numel() != 1 || t.dtype() != s.dtype() {
                bail_invalid!(
                    "input {i} must be a scalar of dtype {} (got {} of shape {:?})",
                    s.dtype(),
                    t.dtype(),
                    t.shape()
                );
            }
        }
        macro_rules! ints {
            ($($v:ident),*) => {
                match (s.data(), l.data(), d.data()) {
                    $( (TensorData::$v(a), TensorData::$v(b), TensorData::$v(c)) => {
                        TensorData::$v(range_int(a[0], b[0], c[0])?)
                    } )*
                    (TensorData::F32(a), TensorData::F32(b), TensorData::F32(c)) => TensorData::F32(
                        range_float(a[0] as f64, b[0] as f64, c[0] as f64)?
                            .into_iter()
                            .map(|v| v as f32)
                            .collect(),
                    ),
                    (TensorData::F64(a), TensorData::F64(b), TensorData::F64(c)) => {
                        TensorData::F64(range_float(a[0], b[0], c[0])?)
                    }
                    _ => bail_unsupported!("Range of {}", s.dtype()),
                }
            };
        }
        let data = ints!(I8, U8, I16, U16, I32, U32, I64, U64);
        let n = data.len().unwrap_or(0);
        Ok(vec![Tensor::new(vec![n], data)?])
    }
}

fn fill<T: Movable>(value: &Tensor, shape: Vec<usize>, n: usize) -> Result<Tensor, OpError> {
    let v = elems::<T>(value, "attribute 'value'")?[0].clone();
    wrap(shape, vec![v; n], value.dtype())
}

#[derive(Debug)]
struct ConstantOfShape {
    value: Tensor,
}

fn build_constant_of_shape(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let value = match ctx.node.attr_tensor("value")? {
        Some(t) if t.numel() == 1 => t.clone(),
        Some(t) => bail_invalid!(
            "attribute 'value' must hold one element, has shape {:?}",
            t.shape()
        ),
        None => Tensor::scalar(0f32),
    };
    Ok(Box::new(ConstantOfShape { value }))
}

impl Op for ConstantOfShape {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let dims = required(inputs, 0)?.to_i64_vec()?;
        if let Some(d) = dims.iter().find(|&&d| d < 0) {
            bail_invalid!("input 0 (shape) {dims:?} has negative dim {d}");
        }
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let n = checked_numel(&shape)?;
        let v = &self.value;
        let y = with_movable!(v.dtype(), T => fill::<T>(v, shape, n))?;
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_and_float_ranges() {
        assert_eq!(range_int(10i32, 4, -3).unwrap(), vec![10, 7]);
        assert_eq!(range_int(0u8, 5, 2).unwrap(), vec![0, 2, 4]);
        assert_eq!(range_int(5i64, 0, 1).unwrap(), Vec::<i64>::new());
        assert!(range_int(0i64, 5, 0).is_err());
        assert_eq!(
            range_float(1.0, 2.0, 0.25).unwrap(),
            vec![1.0, 1.25, 1.5, 1.75]
        );
    }

    #[test]
    fn constant_of_shape_fills() {
        let op = ConstantOfShape {
            value: Tensor::scalar(7i32),
        };
        let shape = Tensor::from_vec(vec![2], vec![2i64, 1]).unwrap();
        let y = op.run(&RunCtx { threads: 1 }, &[Some(&shape)]).unwrap();
        assert_eq!(y[0].as_slice::<i32>().unwrap(), &[7, 7]);
        let bad = Tensor::from_vec(vec![1], vec![-2i64]).unwrap();
        assert!(op.run(&RunCtx { threads: 1 }, &[Some(&bad)]).is_err());
    }
}
