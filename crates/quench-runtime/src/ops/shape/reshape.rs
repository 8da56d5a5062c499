//! Operators that change only the shape (Reshape, Flatten, Squeeze,
//! Unsqueeze, Identity, Dropout) or read it (Shape, Size). The buffer is kept
//! as is, so they work for every dtype, raw ones included.

use super::common::{attr_ints, ints_input_or_attr, norm_axes};
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::{Tensor, TensorData};

pub fn register(r: &mut Registry) {
    r.register("", "Reshape", build_reshape);
    r.register("", "Flatten", build_flatten);
    r.register("", "Squeeze", build_squeeze);
    r.register("", "Unsqueeze", build_unsqueeze);
    r.register("", "Identity", build_identity);
    r.register("", "Dropout", build_dropout);
    r.register("", "Shape", build_shape);
    r.register("", "Size", build_size);
}

fn same_data(t: &Tensor, shape: Vec<usize>) -> Result<Tensor, OpError> {
    Ok(Tensor::new(shape, t.data().clone())?)
}

#[derive(Debug)]
struct Reshape {
    allowzero: bool,
    /// Opset 1-4 keep the target shape in an attribute.
    attr_shape: Option<Vec<i64>>,
}

fn build_reshape(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Reshape {
        allowzero: ctx.node.attr_int_or("allowzero", 0)? != 0,
        attr_shape: attr_ints(ctx.node, "shape")?,
    }))
}

/// The output shape of Reshape: `0` copies the input dim (unless
/// `allowzero`), one `-1` is inferred from the element count.
pub(crate) fn reshape_dims(
    input: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, OpError> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_some() => bail_invalid!("shape {spec:?} has more than one -1"),
            -1 => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => match input.get(i) {
                Some(&d) => out.push(d),
                None => bail_invalid!(
                    "shape {spec:?} copies dim {i} (0) but the input {input:?} has rank {}",
                    input.len()
                ),
            },
            d if d < 0 => bail_invalid!("shape {spec:?} has negative dim {d}"),
            d => out.push(d as usize),
        }
    }
    let numel: usize = input.iter().product();
    let known = out.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match (infer, known) {
        (_, None) => bail_invalid!("shape {spec:?} is too large"),
        (Some(i), Some(k)) => {
            if allowzero && spec.contains(&0) {
                bail_invalid!("shape {spec:?} has both -1 and 0 with allowzero=1");
            }
            if k == 0 || !numel.is_multiple_of(k) {
                bail_invalid!("cannot reshape input of shape {input:?} to {spec:?}");
            }
            out[i] = numel / k;
        }
        (None, Some(k)) if k != numel => {
            bail_invalid!(
                "cannot reshape input of shape {input:?} ({numel} elements) to {out:?} ({k} elements)"
            )
        }
        _ => {}
    }
    Ok(out)
}

impl Op for Reshape {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let Some(spec) = ints_input_or_attr(inputs, 1, &self.attr_shape)? else {
            bail_invalid!("input 1 (shape) is missing");
        };
        if let Some(s) = optional(inputs, 1)
            && s.rank() != 1
        {
            bail_invalid!("input 1 (shape) has shape {:?}, expected rank 1", s.shape());
        }
        let dims = reshape_dims(x.shape(), &spec, self.allowzero)?;
        Ok(vec![same_data(x, dims)?])
    }
}

#[derive(Debug)]
struct Flatten {
    axis: i64,
}

fn build_flatten(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Flatten {
        axis: ctx.node.attr_int_or("axis", 1)?,
    }))
}

impl Op for Flatten {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let r = x.rank() as i64;
        if self.axis < -r || self.axis > r {
            bail_invalid!("axis {} is out of range for rank {r}", self.axis);
        }
        let axis = if self.axis < 0 {
            self.axis + r
        } else {
            self.axis
        } as usize;
        let outer: usize = x.shape()[..axis].iter().product();
        let inner: usize = x.shape()[axis..].iter().product();
        Ok(vec![same_data(x, vec![outer, inner])?])
    }
}

#[derive(Debug)]
struct Squeeze {
    attr_axes: Option<Vec<i64>>,
}

fn build_squeeze(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Squeeze {
        attr_axes: attr_ints(ctx.node, "axes")?,
    }))
}

impl Op for Squeeze {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let shape = x.shape();
        let dims = match ints_input_or_attr(inputs, 1, &self.attr_axes)? {
            None => shape.iter().copied().filter(|&d| d != 1).collect(),
            Some(axes) => {
                let axes = norm_axes(&axes, shape.len(), "axes")?;
                for &a in &axes {
                    if shape[a] != 1 {
                        bail_invalid!(
                            "cannot squeeze axis {a} of size {} (shape {shape:?})",
                            shape[a]
                        );
                    }
                }
                (0..shape.len())
                    .filter(|a| !axes.contains(a))
                    .map(|a| shape[a])
                    .collect()
            }
        };
        Ok(vec![same_data(x, dims)?])
    }
}

#[derive(Debug)]
struct Unsqueeze {
    attr_axes: Option<Vec<i64>>,
}

fn build_unsqueeze(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Unsqueeze {
        attr_axes: attr_ints(ctx.node, "axes")?,
    }))
}

impl Op for Unsqueeze {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let Some(axes) = ints_input_or_attr(inputs, 1, &self.attr_axes)? else {
            bail_invalid!("axes are missing (input 1 from opset 13, attribute before)");
        };
        let rank = x.rank() + axes.len();
        let axes = norm_axes(&axes, rank, "axes")?;
        let mut rest = x.shape().iter();
        let dims = (0..rank)
            .map(|a| {
                if axes.contains(&a) {
                    1
                } else {
                    rest.next().copied().unwrap_or(1)
                }
            })
            .collect();
        Ok(vec![same_data(x, dims)?])
    }
}

#[derive(Debug)]
struct Identity;

fn build_identity(_: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Identity))
}

impl Op for Identity {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![required(inputs, 0)?.clone()])
    }
}

/// Dropout at inference: the identity, with an all-true mask. Training mode
/// is random, so only `ratio == 0` (again the identity) is supported.
#[derive(Debug)]
struct Dropout {
    opset: i64,
    /// Opset < 12: ratio attribute; opset < 7: is_test attribute.
    attr_ratio: f32,
    is_test: bool,
}

fn build_dropout(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Dropout {
        opset: ctx.opset,
        attr_ratio: ctx.node.attr_float_or("ratio", 0.5)?,
        is_test: ctx.node.attr_int_or("is_test", 0)? != 0,
    }))
}

impl Op for Dropout {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let (training, ratio) = if self.opset >= 12 {
            let training = match optional(inputs, 2) {
                Some(t) => match t.data() {
                    TensorData::Bool(v) if v.len() == 1 => v[0],
                    _ => bail_invalid!("input 2 (training_mode) must be one bool"),
                },
                None => false,
            };
            let ratio = match optional(inputs, 1) {
                Some(t) => match t.to_f32_vec() {
                    Ok(v) if v.len() == 1 => v[0],
                    _ => bail_invalid!("input 1 (ratio) must be one float"),
                },
                None => 0.5,
            };
            (training, ratio)
        } else {
            (self.opset < 7 && !self.is_test, self.attr_ratio)
        };
        if training && ratio != 0.0 {
            bail_unsupported!("Dropout in training mode with ratio {ratio} (random)");
        }
        let mask = if self.opset >= 10 {
            TensorData::Bool(vec![true; x.numel()])
        } else {
            TensorData::zeros(x.dtype(), x.numel())?
        };
        let mask = Tensor::new(x.shape().to_vec(), mask)?;
        Ok(vec![x.clone(), mask])
    }
}

#[derive(Debug)]
struct ShapeOp {
    start: i64,
    end: Option<i64>,
}

fn build_shape(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(ShapeOp {
        start: ctx.node.attr_int_or("start", 0)?,
        end: ctx.node.attr_int("end")?,
    }))
}

impl Op for ShapeOp {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let r = x.rank() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clamp(self.start);
        let end = clamp(self.end.unwrap_or(r)).max(start);
        let dims: Vec<i64> = x.shape()[start..end].iter().map(|&d| d as i64).collect();
        Ok(vec![Tensor::from_vec(vec![dims.len()], dims)?])
    }
}

#[derive(Debug)]
struct Size;

fn build_size(_: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Size))
}

impl Op for Size {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![Tensor::scalar(required(inputs, 0)?.numel() as i64)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(op: &dyn Op, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        op.run(&RunCtx { threads: 1 }, inputs)
    }

    #[test]
    fn reshape_dims_follow_onnx() {
        assert_eq!(
            reshape_dims(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert_eq!(
            reshape_dims(&[0, 3, 4], &[3, 4, 0], true).unwrap(),
            vec![3, 4, 0]
        );
        assert!(reshape_dims(&[2, 3], &[], false).is_err());
        assert_eq!(reshape_dims(&[1], &[], false).unwrap(), Vec::<usize>::new());
        assert!(reshape_dims(&[2, 3], &[4, -1], false).is_err());
        assert!(reshape_dims(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_dims(&[2, 3], &[5], false).is_err());
    }

    #[test]
    fn squeeze_and_unsqueeze() {
        let x = Tensor::from_vec(vec![1, 3, 1], vec![1i64, 2, 3]).unwrap();
        let sq = Squeeze { attr_axes: None };
        assert_eq!(run(&sq, &[Some(&x)]).unwrap()[0].shape(), &[3]);
        let axes = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        assert!(run(&sq, &[Some(&x), Some(&axes)]).is_err());
        let un = Unsqueeze {
            attr_axes: Some(vec![-1, 0]),
        };
        assert_eq!(run(&un, &[Some(&x)]).unwrap()[0].shape(), &[1, 1, 3, 1, 1]);
    }

    #[test]
    fn shape_slices_and_flatten() {
        let x = Tensor::zeros(quench_ir::DType::F16, vec![2, 3, 4]).unwrap();
        let s = ShapeOp {
            start: -2,
            end: None,
        };
        assert_eq!(
            run(&s, &[Some(&x)]).unwrap()[0].as_slice::<i64>().unwrap(),
            &[3, 4]
        );
        let f = Flatten { axis: -1 };
        assert_eq!(run(&f, &[Some(&x)]).unwrap()[0].shape(), &[6, 4]);
    }

    #[test]
    fn dropout_training_is_refused() {
        let x = Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap();
        let ratio = Tensor::scalar(0.5f32);
        let yes = Tensor::scalar(true);
        let d = Dropout {
            opset: 13,
            attr_ratio: 0.5,
            is_test: false,
        };
        assert!(matches!(
            run(&d, &[Some(&x), Some(&ratio), Some(&yes)]),
            Err(OpError::Unsupported(_))
        ));
        let out = run(&d, &[Some(&x), Some(&ratio)]).unwrap();
        assert_eq!(out[0], x);
        assert_eq!(out[1].as_slice::<bool>().unwrap(), &[true, true]);
    }
}
