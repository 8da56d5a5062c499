//! Spatial attributes shared by Conv, ConvTranspose and the pools:
//! `auto_pad`, `kernel_shape`, `strides`, `dilations`, `pads`.

use crate::{OpError, bail_invalid, bail_unsupported};
use quench_ir::{DType, Node, Tensor};
use quench_kernels::conv::Geom3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Attributes as written on the node; lengths are checked against the
/// input's spatial rank once it is known.
#[derive(Clone, Debug)]
pub(crate) struct Spatial {
    pub auto_pad: AutoPad,
    pub kernel: Option<Vec<usize>>,
    strides: Option<Vec<usize>>,
    dilations: Option<Vec<usize>>,
    pads: Option<Vec<usize>>,
}

/// Per-dim values resolved for one spatial rank.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Explicit pads: `rank` begins then `rank` ends (zeros when absent).
    pub pads: Vec<usize>,
}

fn positive(node: &Node, name: &str) -> Result<Option<Vec<usize>>, OpError> {
    let Some(v) = node.attr_ints(name)? else {
        return Ok(None);
    };
    if let Some(bad) = v.iter().find(|&&x| x < 1) {
        bail_invalid!("attribute '{name}' = {v:?} has value {bad}, expected >= 1");
    }
    Ok(Some(v.iter().map(|&x| x as usize).collect()))
}

impl Spatial {
    pub fn from_node(node: &Node) -> Result<Spatial, OpError> {
        let auto_pad = match node.attr_string_or("auto_pad", "NOTSET")?.as_str() {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            other => bail_invalid!(
                "attribute 'auto_pad' is '{other}', expected NOTSET, SAME_UPPER, SAME_LOWER or VALID"
            ),
        };
        let pads = match node.attr_ints("pads")? {
            None => None,
            Some(p) => {
                if p.len() % 2 != 0 {
                    bail_invalid!("attribute 'pads' has odd length {}", p.len());
                }
                if p.iter().any(|&x| x < 0) {
                    bail_unsupported!("negative pads {p:?}");
                }
                Some(p.iter().map(|&x| x as usize).collect())
            }
        };
        Ok(Spatial {
            auto_pad,
            kernel: positive(node, "kernel_shape")?,
            strides: positive(node, "strides")?,
            dilations: positive(node, "dilations")?,
            pads,
        })
    }

    /// Strides, dilations and explicit pads for `rank` spatial dims.
    pub fn resolve(&self, rank: usize) -> Result<Resolved, OpError> {
        let get = |v: &Option<Vec<usize>>, name: &str, len: usize, fill: usize| match v {
            None => Ok(vec![fill; len]),
            Some(v) if v.len() == len => Ok(v.clone()),
            Some(v) => Err(OpError::Invalid(format!(
                "attribute '{name}' has {} values, expected {len} for {rank} spatial dims",
                v.len()
            ))),
        };
        if let Some(k) = &self.kernel
            && k.len() != rank
        {
            bail_invalid!(
                "attribute 'kernel_shape' {k:?} has {} dims, the input has {rank} spatial dims",
                k.len()
            );
        }
        Ok(Resolved {
            strides: get(&self.strides, "strides", rank, 1)?,
            dilations: get(&self.dilations, "dilations", rank, 1)?,
            pads: get(&self.pads, "pads", 2 * rank, 0)?,
        })
    }
}

/// Output extent and (begin, end) pads of one dim of a convolution-like
/// window: floor mode, `auto_pad` as ONNX Conv defines it.
pub(crate) fn conv_dim(
    auto_pad: AutoPad,
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pads: (usize, usize),
) -> Result<(usize, usize, usize), OpError> {
    let dk = dilation * (kernel - 1) + 1;
    match auto_pad {
        AutoPad::SameUpper | AutoPad::SameLower => {
            let out = input.div_ceil(stride);
            let total = ((out.max(1) - 1) * stride + dk).saturating_sub(input);
            let small = total / 2;
            Ok(if auto_pad == AutoPad::SameUpper {
                (out, small, total - small)
            } else {
                (out, total - small, small)
            })
        }
        AutoPad::Valid => {
            if input < dk {
                bail_invalid!("input extent {input} is smaller than the dilated kernel {dk}");
            }
            Ok(((input - dk) / stride + 1, 0, 0))
        }
        AutoPad::NotSet => {
            let padded = input + pads.0 + pads.1;
            if padded < dk {
                bail_invalid!(
                    "padded input extent {padded} is smaller than the dilated kernel {dk}"
                );
            }
            Ok(((padded - dk) / stride + 1, pads.0, pads.1))
        }
    }
}

/// Lifts resolved per-dim values to the kernels' 3-D geometry.
pub(crate) fn geom(
    input: &[usize],
    kernel: &[usize],
    output: &[usize],
    r: &Resolved,
    pads_begin: &[usize],
) -> Result<Geom3, OpError> {
    Geom3::lift(input, kernel, output, &r.strides, &r.dilations, pads_begin).ok_or_else(|| {
        OpError::Unsupported(format!(
            "{} spatial dims (1 to 3 are supported)",
            input.len()
        ))
    })
}

/// The f32 data of `t`, or an error naming the input and its dtype.
pub(crate) fn f32_input<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], OpError> {
    match t.dtype() {
        DType::F32 => Ok(t.as_slice::<f32>()?),
        d => bail_unsupported!("{what} of dtype {d} (only float32 is implemented)"),
    }
}

/// Splits `[N, C, spatial...]`, requiring rank >= 3.
pub(crate) fn split_nc<'a>(
    shape: &'a [usize],
    what: &str,
) -> Result<(usize, usize, &'a [usize]), OpError> {
    match shape {
        [n, c, s @ ..] if !s.is_empty() => Ok((*n, *c, s)),
        _ => bail_invalid!("{what} has shape {shape:?}, expected [N, C, spatial...] of rank >= 3"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_where_asked() {
        assert_eq!(
            conv_dim(AutoPad::SameUpper, 5, 2, 1, 1, (0, 0)).unwrap(),
            (5, 0, 1)
        );
        assert_eq!(
            conv_dim(AutoPad::SameLower, 5, 2, 1, 1, (0, 0)).unwrap(),
            (5, 1, 0)
        );
        assert_eq!(
            conv_dim(AutoPad::SameUpper, 7, 3, 2, 1, (0, 0)).unwrap(),
            (4, 1, 1)
        );
    }

    #[test]
    fn too_small_inputs_are_refused() {
        assert!(conv_dim(AutoPad::NotSet, 2, 5, 1, 1, (1, 1)).is_err());
        assert!(conv_dim(AutoPad::Valid, 2, 2, 1, 2, (0, 0)).is_err());
        assert_eq!(
            conv_dim(AutoPad::NotSet, 5, 3, 2, 1, (1, 1)).unwrap(),
            (3, 1, 1)
        );
    }
}
