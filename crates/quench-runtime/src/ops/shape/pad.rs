//! Pad (constant, reflect, edge, wrap). Each output index along an axis maps
//! to one input index (or the constant), so padding is a per-axis gather;
//! negative pads crop.

use super::common::{FILL, Movable, attr_ints, elems, gather_axes, norm_axes, with_movable, wrap};
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::{DType, Tensor};

pub fn register(r: &mut Registry) {
    r.register("", "Pad", build);
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Debug)]
struct Pad {
    mode: Mode,
    /// Opset < 11: pads and value are attributes.
    attr_pads: Option<Vec<i64>>,
    attr_value: f32,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let mode = match ctx.node.attr_string_or("mode", "constant")?.as_str() {
        "constant" => Mode::Constant,
        "reflect" => Mode::Reflect,
        "edge" => Mode::Edge,
        "wrap" => Mode::Wrap,
        m => bail_invalid!("unknown mode '{m}'"),
    };
    let attr_pads = if ctx.opset < 11 {
        match attr_ints(ctx.node, "pads")? {
            Some(p) => Some(p),
            None => attr_ints(ctx.node, "paddings")?,
        }
    } else {
        None
    };
    Ok(Box::new(Pad {
        mode,
        attr_pads,
        attr_value: ctx.node.attr_float_or("value", 0.0)?,
    }))
}

/// Input index for output index `o` of an axis of size `dim` padded by `begin`.
fn source_index(o: usize, dim: usize, begin: i64, mode: Mode) -> usize {
    let i = o as i128 - begin as i128;
    let d = dim as i128;
    if (0..d).contains(&i) {
        return i as usize;
    }
    match mode {
        Mode::Constant => FILL,
        Mode::Edge => i.clamp(0, d - 1) as usize,
        Mode::Wrap => i.rem_euclid(d) as usize,
        Mode::Reflect if d == 1 => 0,
        Mode::Reflect => {
            let period = 2 * (d - 1);
            let m = i.rem_euclid(period);
            (if m >= d { period - m } else { m }) as usize
        }
    }
}

fn pad_typed<T: Movable>(
    x: &Tensor,
    maps: &[Vec<usize>],
    fill: &Tensor,
) -> Result<Tensor, OpError> {
    let fill = elems::<T>(fill, "constant_value")?
        .first()
        .cloned()
        .unwrap_or_default();
    let out_shape = maps.iter().map(Vec::len).collect();
    let v = gather_axes(elems::<T>(x, "input 0")?, x.shape(), maps, &fill);
    wrap(out_shape, v, x.dtype())
}

impl Op for Pad {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let r = x.rank();
        let pads = match &self.attr_pads {
            Some(p) => p.clone(),
            None => required(inputs, 1)?.to_i64_vec()?,
        };
        let axes = match optional(inputs, 3) {
            Some(a) if self.attr_pads.is_none() => norm_axes(&a.to_i64_vec()?, r, "axes")?,
            _ => (0..r).collect(),
        };
        let n = axes.len();
        if pads.len() != 2 * n {
            bail_invalid!("pads {pads:?} must have 2 x {n} values");
        }
        let mut maps: Vec<Vec<usize>> = x.shape().iter().map(|&d| (0..d).collect()).collect();
        let mut out_shape = x.shape().to_vec();
        let mut sides = Vec::with_capacity(n);
        for (i, &a) in axes.iter().enumerate() {
            let dim = x.shape()[a];
            let (b, e) = (pads[i], pads[n + i]);
            let out = dim as i128 + b as i128 + e as i128;
            if out < 0 {
                bail_invalid!("pads {pads:?} remove more than the {dim} elements of axis {a}");
            }
            if out > 1 << 40 {
                bail_invalid!("pads {pads:?} make axis {a} too large");
            }
            if dim == 0 && out > 0 && self.mode != Mode::Constant {
                bail_invalid!("cannot pad empty axis {a} in {:?} mode", self.mode);
            }
            out_shape[a] = out as usize;
            sides.push((a, dim, b));
        }
        quench_ir::tensor::checked_numel(&out_shape)?;
        for (a, dim, b) in sides {
            maps[a] = (0..out_shape[a])
                .map(|o| source_index(o, dim, b, self.mode))
                .collect();
        }
        let fill = match (optional(inputs, 2), &self.attr_pads) {
            (Some(v), None) => {
                if v.dtype() != x.dtype() || v.numel() > 1 {
                    bail_invalid!(
                        "constant_value must be a scalar of dtype {}, got {} of shape {:?}",
                        x.dtype(),
                        v.dtype(),
                        v.shape()
                    );
                }
                v.clone()
            }
            (None, None) => Tensor::zeros(x.dtype(), vec![])?,
            (_, Some(_)) => match x.dtype() {
                DType::F32 => Tensor::scalar(self.attr_value),
                DType::F64 => Tensor::scalar(self.attr_value as f64),
                _ if self.attr_value == 0.0 => Tensor::zeros(x.dtype(), vec![])?,
                d => bail_unsupported!("Pad value {} for {d} before opset 11", self.attr_value),
            },
        };
        let y = with_movable!(x.dtype(), T => pad_typed::<T>(x, &maps, &fill))?;
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: Mode, x: &Tensor, pads: Vec<i64>) -> Result<Vec<Tensor>, OpError> {
        let op = Pad {
            mode,
            attr_pads: None,
            attr_value: 0.0,
        };
        let p = Tensor::from_vec(vec![pads.len()], pads).unwrap();
        op.run(&RunCtx { threads: 1 }, &[Some(x), Some(&p)])
    }

    #[test]
    fn modes_match_numpy() {
        let x = Tensor::from_vec(vec![3], vec![1i32, 2, 3]).unwrap();
        let get = |m, p: Vec<i64>| {
            run(m, &x, p).unwrap()[0]
                .as_slice::<i32>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(get(Mode::Constant, vec![1, 2]), vec![0, 1, 2, 3, 0, 0]);
        assert_eq!(get(Mode::Reflect, vec![2, 2]), vec![3, 2, 1, 2, 3, 2, 1]);
        assert_eq!(get(Mode::Edge, vec![2, 1]), vec![1, 1, 1, 2, 3, 3]);
        assert_eq!(get(Mode::Wrap, vec![2, 1]), vec![2, 3, 1, 2, 3, 1]);
        assert_eq!(get(Mode::Constant, vec![-1, 0]), vec![2, 3]);
        assert!(run(Mode::Constant, &x, vec![-4, 0]).is_err());
        assert!(run(Mode::Constant, &x, vec![1]).is_err());
        assert!(run(Mode::Edge, &x, vec![i64::MAX / 2, 0]).is_err());
        assert!(run(Mode::Edge, &x, vec![i64::MAX, i64::MAX]).is_err());
        assert_eq!(get(Mode::Edge, vec![i64::MIN + 10, i64::MAX]).len(), 12);
    }
}
