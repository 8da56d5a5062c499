//! Element-wise activations: Relu, LeakyRelu, Clip, Sigmoid, Tanh, HardSwish,
//! HardSigmoid, Gelu. Each saves its input (shared, not copied) and
//! recomputes what the derivative needs.

use crate::op::{Ctx, Fwd, Grad, Op, Saved, arc_in, check_len, f32_in, f32_tensor, opt_in, saved};
use crate::{Result, invalid};
use quench_ir::{Node, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Elements per parallel task of the element-wise loops.
const CHUNK: usize = 1 << 14;

/// `f` over `xs`; one monomorphic loop per activation so the common ones
/// (Relu, Clip = ReLU6) vectorise, split over the pool for large tensors.
fn map1(xs: &[f32], threads: usize, f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0.0; xs.len()];
    let run = |(o, i): (&mut [f32], &[f32])| o.iter_mut().zip(i).for_each(|(a, &b)| *a = f(b));
    if threads > 1 && xs.len() >= 2 * CHUNK {
        y.par_chunks_mut(CHUNK)
            .zip(xs.par_chunks(CHUNK))
            .for_each(run);
    } else {
        run((&mut y, xs));
    }
    y
}

/// `f(g, x)` over the gradient and the saved input, like [`map1`].
fn map2(g: &[f32], xs: &[f32], threads: usize, f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0.0; xs.len()];
    let run = |((o, gc), xc): ((&mut [f32], &[f32]), &[f32])| {
        for ((a, &gv), &v) in o.iter_mut().zip(gc).zip(xc) {
            *a = f(gv, v);
        }
    };
    if threads > 1 && xs.len() >= 2 * CHUNK {
        y.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(xs.par_chunks(CHUNK))
            .for_each(run);
    } else {
        run(((&mut y, g), xs));
    }
    y
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    HardSwish,
    HardSigmoid(f32, f32),
    Gelu {
        tanh: bool,
    },
    /// Bounds from attributes (opset < 11); otherwise read from inputs 1 and 2.
    Clip(Option<(f32, f32)>),
}

pub struct Unary {
    kind: Kind,
}

pub fn build(node: &Node, opset: i64) -> Result<Box<dyn Op>> {
    let kind = match node.op_type.as_str() {
        "Relu" => Kind::Relu,
        "LeakyRelu" => Kind::LeakyRelu(node.attr_float_or("alpha", 0.01)?),
        "Sigmoid" => Kind::Sigmoid,
        "Tanh" => Kind::Tanh,
        "HardSwish" => Kind::HardSwish,
        "HardSigmoid" => Kind::HardSigmoid(
            node.attr_float_or("alpha", 0.2)?,
            node.attr_float_or("beta", 0.5)?,
        ),
        "Gelu" => match node.attr_string_or("approximate", "none")?.as_str() {
            "none" => Kind::Gelu { tanh: false },
            "tanh" => Kind::Gelu { tanh: true },
            a => invalid!("attribute approximate is '{a}', expected none or tanh"),
        },
        "Clip" if opset < 11 => Kind::Clip(Some((
            node.attr_float_or("min", f32::MIN)?,
            node.attr_float_or("max", f32::MAX)?,
        ))),
        "Clip" => Kind::Clip(None),
        other => invalid!("not an activation: {other}"),
    };
    Ok(Box::new(Unary { kind }))
}

/// erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit).
pub fn erf(x: f32) -> f32 {
    let x = x as f64;
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    (if x >= 0.0 { 1.0 - r } else { r - 1.0 }) as f32
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

fn bounds(x: &[Option<Arc<Tensor>>], fixed: Option<(f32, f32)>) -> Result<(f32, f32)> {
    if let Some(b) = fixed {
        return Ok(b);
    }
    let scalar = |i: usize, default: f32| -> Result<f32> {
        match opt_in(x, i) {
            None => Ok(default),
            Some(t) => match t.as_slice::<f32>()? {
                [v] => Ok(*v),
                _ => invalid!(
                    "input {i} of Clip must be a scalar, has shape {:?}",
                    t.shape()
                ),
            },
        }
    };
    Ok((scalar(1, f32::MIN)?, scalar(2, f32::MAX)?))
}

struct SavedAct {
    x: Arc<Tensor>,
    lo: f32,
    hi: f32,
}

impl Kind {
    fn f(self, v: f32, lo: f32, hi: f32) -> f32 {
        match self {
            Kind::Relu => v.max(0.0),
            Kind::LeakyRelu(a) => {
                if v >= 0.0 {
                    v
                } else {
                    a * v
                }
            }
            Kind::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            Kind::Tanh => v.tanh(),
            Kind::HardSwish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
            Kind::HardSigmoid(a, b) => (a * v + b).clamp(0.0, 1.0),
            Kind::Gelu { tanh: false } => 0.5 * v * (1.0 + erf(v / std::f32::consts::SQRT_2)),
            Kind::Gelu { tanh: true } => {
                0.5 * v * (1.0 + (SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)).tanh())
            }
            Kind::Clip(_) => v.max(lo).min(hi),
        }
    }

    /// dy/dx at x = v.
    fn df(self, v: f32, lo: f32, hi: f32) -> f32 {
        match self {
            Kind::Relu => (v > 0.0) as u8 as f32,
            Kind::LeakyRelu(a) => {
                if v >= 0.0 {
                    1.0
                } else {
                    a
                }
            }
            Kind::Sigmoid => {
                let s = 1.0 / (1.0 + (-v).exp());
                s * (1.0 - s)
            }
            Kind::Tanh => {
                let t = v.tanh();
                1.0 - t * t
            }
            Kind::HardSwish => {
                if v < -3.0 {
                    0.0
                } else if v > 3.0 {
                    1.0
                } else {
                    (2.0 * v + 3.0) / 6.0
                }
            }
            Kind::HardSigmoid(a, b) => {
                let u = a * v + b;
                if u > 0.0 && u < 1.0 { a } else { 0.0 }
            }
            Kind::Gelu { tanh: false } => {
                let cdf = 0.5 * (1.0 + erf(v / std::f32::consts::SQRT_2));
                let pdf = (-0.5 * v * v).exp() / (2.0 * std::f32::consts::PI).sqrt();
                cdf + v * pdf
            }
            Kind::Gelu { tanh: true } => {
                let u = SQRT_2_OVER_PI * (v + 0.044715 * v * v * v);
                let t = u.tanh();
                let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * v * v);
                0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du
            }
            // Like PyTorch's hardtanh: no gradient at the bounds themselves.
            Kind::Clip(_) => (v > lo && v < hi) as u8 as f32,
        }
    }
}

impl Op for Unary {
    fn forward(&self, cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let xs = f32_in(x, 0)?;
        let (lo, hi) = match self.kind {
            Kind::Clip(b) => bounds(x, b)?,
            _ => (0.0, 0.0),
        };
        let k = self.kind;
        let th = cx.threads;
        let y = match k {
            Kind::Relu => map1(xs, th, |v| v.max(0.0)),
            Kind::Clip(_) => map1(xs, th, |v| v.max(lo).min(hi)),
            _ => map1(xs, th, |v| k.f(v, lo, hi)),
        };
        let shape = x[0]
            .as_ref()
            .map(|t| t.shape().to_vec())
            .unwrap_or_default();
        let saved = match need.first() {
            Some(true) => Some(Box::new(SavedAct {
                x: arc_in(x, 0)?,
                lo,
                hi,
            }) as Saved),
            _ => None,
        };
        Ok(Fwd::new(vec![f32_tensor(shape, y)?], saved))
    }

    fn backward(
        &self,
        cx: &Ctx,
        s: &Saved,
        gy: &[Option<Grad>],
        _need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let s: &SavedAct = saved(s)?;
        let xs = s.x.as_slice::<f32>()?;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None]);
        };
        check_len(g, xs.len())?;
        let k = self.kind;
        let (th, lo, hi) = (cx.threads, s.lo, s.hi);
        let dx = match k {
            Kind::Relu => map2(g, xs, th, |g, v| if v > 0.0 { g } else { 0.0 }),
            Kind::Clip(_) => map2(g, xs, th, |g, v| if v > lo && v < hi { g } else { 0.0 }),
            _ => map2(g, xs, th, |g, v| g * k.df(v, lo, hi)),
        };
        Ok(vec![Some(dx)])
    }
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_node, rand_input};
    use quench_ir::{Attr, Node};

    #[test]
    fn activations_match_finite_differences() {
        for op in [
            "Relu",
            "Sigmoid",
            "Tanh",
            "HardSwish",
            "Gelu",
            "LeakyRelu",
            "HardSigmoid",
        ] {
            let node = Node::new(op, "n", &["x"], &["y"]);
            check_node(&node, &[("x", rand_input(&[2, 3, 4], 1))], &[], 13);
        }
        let node = Node::new("Gelu", "n", &["x"], &["y"])
            .with_attr("approximate", Attr::String(b"tanh".to_vec()));
        check_node(&node, &[("x", rand_input(&[3, 5], 2))], &[], 20);
    }

    #[test]
    fn clip_matches_finite_differences_and_reads_bounds() {
        let node = Node::new("Clip", "n", &["x", "lo", "hi"], &["y"]);
        let lo = quench_ir::Tensor::scalar(-0.5f32);
        let hi = quench_ir::Tensor::scalar(0.7f32);
        check_node(
            &node,
            &[("x", rand_input(&[4, 6], 3))],
            &[("lo", lo), ("hi", hi)],
            13,
        );
    }

    #[test]
    fn erf_is_accurate() {
        assert!((super::erf(0.5) - 0.520_499_9).abs() < 1e-6);
        assert!((super::erf(-1.5) + 0.966_105_1).abs() < 1e-6);
    }

    #[test]
    fn clip_with_non_scalar_bound_is_an_error() {
        let node = Node::new("Clip", "n", &["x", "lo"], &["y"]);
        let lo = quench_ir::Tensor::from_vec(vec![2], vec![0f32, 1.0]).unwrap();
        let err = crate::gradcheck::run_node(&node, &[("x", rand_input(&[2], 1))], &[("lo", lo)]);
        assert!(err.unwrap_err().to_string().contains("scalar"));
    }
}
