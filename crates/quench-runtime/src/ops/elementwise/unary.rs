//! Unary element-wise maths (activations, rounding, transcendental functions)
//! and Clip.

use super::broadcast::{fill_chunks, unary_map};
use super::num::{Float, Num};
use super::{dispatch_float, dispatch_num, unsupported_dtype};
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::{Elem, Tensor, TensorData};
use quench_kernels::vmath;

pub fn register(r: &mut Registry) {
    for name in [
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "HardSigmoid",
        "HardSwish",
        "Erf",
        "Gelu",
        "Sqrt",
        "Exp",
        "Log",
        "Neg",
        "Abs",
        "Reciprocal",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Softplus",
        "Softsign",
        "Elu",
        "Selu",
        "Celu",
        "ThresholdedRelu",
        "Sin",
        "Cos",
        "Tan",
        "Asin",
        "Acos",
        "Atan",
        "Sinh",
        "Cosh",
        "Asinh",
        "Acosh",
        "Atanh",
        "Mish",
    ] {
        r.register("", name, build);
    }
    r.register("", "Clip", build_clip);
}

/// One unary function with its attributes resolved.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    HardSigmoid { alpha: f32, beta: f32 },
    HardSwish,
    Erf,
    Gelu { tanh: bool },
    Sqrt,
    Exp,
    Log,
    Neg,
    Abs,
    Reciprocal,
    Floor,
    Ceil,
    Round,
    Sign,
    Softplus,
    Softsign,
    Elu(f32),
    Selu { alpha: f32, gamma: f32 },
    Celu(f32),
    ThresholdedRelu(f32),
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Mish,
}

#[derive(Debug)]
struct Unary {
    kind: Kind,
    name: &'static str,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let n = ctx.node;
    let (kind, name) = match n.op_type.as_str() {
        "Relu" => (Kind::Relu, "Relu"),
        "LeakyRelu" => (
            Kind::LeakyRelu(n.attr_float_or("alpha", 0.01)?),
            "LeakyRelu",
        ),
        "Sigmoid" => (Kind::Sigmoid, "Sigmoid"),
        "Tanh" => (Kind::Tanh, "Tanh"),
        "HardSigmoid" => (
            Kind::HardSigmoid {
                alpha: n.attr_float_or("alpha", 0.2)?,
                beta: n.attr_float_or("beta", 0.5)?,
            },
            "HardSigmoid",
        ),
        "HardSwish" => (Kind::HardSwish, "HardSwish"),
        "Erf" => (Kind::Erf, "Erf"),
        "Gelu" => {
            let tanh = match n.attr_string_or("approximate", "none")?.as_str() {
                "none" => false,
                "tanh" => true,
                other => bail_invalid!("attribute approximate is '{other}', expected none or tanh"),
            };
            (Kind::Gelu { tanh }, "Gelu")
        }
        "Sqrt" => (Kind::Sqrt, "Sqrt"),
        "Exp" => (Kind::Exp, "Exp"),
        "Log" => (Kind::Log, "Log"),
        "Neg" => (Kind::Neg, "Neg"),
        "Abs" => (Kind::Abs, "Abs"),
        "Reciprocal" => (Kind::Reciprocal, "Reciprocal"),
        "Floor" => (Kind::Floor, "Floor"),
        "Ceil" => (Kind::Ceil, "Ceil"),
        "Round" => (Kind::Round, "Round"),
        "Sign" => (Kind::Sign, "Sign"),
        "Softplus" => (Kind::Softplus, "Softplus"),
        "Softsign" => (Kind::Softsign, "Softsign"),
        "Elu" => (Kind::Elu(n.attr_float_or("alpha", 1.0)?), "Elu"),
        "Selu" => (
            Kind::Selu {
                alpha: n.attr_float_or("alpha", 1.673_263_2)?,
                gamma: n.attr_float_or("gamma", 1.050_701)?,
            },
            "Selu",
        ),
        "Celu" => (Kind::Celu(n.attr_float_or("alpha", 1.0)?), "Celu"),
        "ThresholdedRelu" => (
            Kind::ThresholdedRelu(n.attr_float_or("alpha", 1.0)?),
            "ThresholdedRelu",
        ),
        "Sin" => (Kind::Sin, "Sin"),
        "Cos" => (Kind::Cos, "Cos"),
        "Tan" => (Kind::Tan, "Tan"),
        "Asin" => (Kind::Asin, "Asin"),
        "Acos" => (Kind::Acos, "Acos"),
        "Atan" => (Kind::Atan, "Atan"),
        "Sinh" => (Kind::Sinh, "Sinh"),
        "Cosh" => (Kind::Cosh, "Cosh"),
        "Asinh" => (Kind::Asinh, "Asinh"),
        "Acosh" => (Kind::Acosh, "Acosh"),
        "Atanh" => (Kind::Atanh, "Atanh"),
        "Mish" => (Kind::Mish, "Mish"),
        other => bail_invalid!("unary builder called for {other}"),
    };
    if kind == Kind::Celu(0.0) {
        bail_invalid!("attribute alpha of Celu must be non-zero");
    }
    Ok(Box::new(Unary { kind, name }))
}

impl Op for Unary {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let t = ctx.threads;
        let shape = x.shape().to_vec();
        let out = match (self.kind, x.data()) {
            (Kind::Sigmoid, TensorData::F32(v)) => {
                Tensor::from_vec(shape, vmap(v, t, vmath::sigmoid))?
            }
            (Kind::Erf, TensorData::F32(v)) => Tensor::from_vec(shape, vmap(v, t, vmath::erf))?,
            (Kind::Exp, TensorData::F32(v)) => Tensor::from_vec(shape, vmap(v, t, vmath::exp))?,
            (Kind::Gelu { tanh: false }, TensorData::F32(v)) => {
                Tensor::from_vec(shape, vmap(v, t, vmath::gelu))?
            }
            (k, d) => {
                dispatch_float!(d, T, v => Tensor::from_vec(shape, float_kernel::<T>(k, v, t))?,
                _ => dispatch_num!(d, T, v => Tensor::from_vec(shape, int_kernel::<T>(k, v, t).ok_or_else(|| unsupported_dtype(self.name, x.dtype()))?)?,
                    _ => return Err(unsupported_dtype(self.name, x.dtype()))))
            }
        };
        Ok(vec![out])
    }
}

/// A vectorised slice kernel over `x`, in parallel chunks when large.
fn vmap(x: &[f32], threads: usize, kernel: fn(&[f32], &mut [f32])) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    fill_chunks(&mut out, threads, |start, o| {
        kernel(&x[start..start + o.len()], o)
    });
    out
}

/// Integer forms of the unary ops defined on integers (None for the rest).
fn int_kernel<T: Num>(k: Kind, x: &[T], t: usize) -> Option<Vec<T>> {
    let zero = T::zero();
    Some(match k {
        Kind::Relu => unary_map(x, t, |v| if v < zero { zero } else { v }),
        Kind::Neg => unary_map(x, t, Num::neg),
        Kind::Abs => unary_map(x, t, Num::abs),
        Kind::Sign => unary_map(x, t, Num::sign),
        _ => return None,
    })
}

fn float_kernel<T: Float>(k: Kind, x: &[T], t: usize) -> Vec<T> {
    let c = T::from_f32;
    let (zero, one) = (T::zero(), T::one());
    match k {
        Kind::Relu => unary_map(x, t, |v| if v < zero { zero } else { v }),
        Kind::LeakyRelu(a) => {
            let a = c(a);
            unary_map(x, t, |v| if v < zero { v * a } else { v })
        }
        Kind::Sigmoid => unary_map(x, t, |v| {
            if v >= zero {
                one.div(one + (v.neg()).exp())
            } else {
                let e = v.exp();
                e.div(one + e)
            }
        }),
        Kind::Tanh => unary_map(x, t, Float::tanh),
        Kind::HardSigmoid { alpha, beta } => {
            let (a, b) = (c(alpha), c(beta));
            unary_map(x, t, |v| clamp01(a * v + b))
        }
        Kind::HardSwish => {
            let (a, b) = (T::from_f64(1.0 / 6.0), c(0.5));
            unary_map(x, t, |v| v * clamp01(a * v + b))
        }
        Kind::Erf => unary_map(x, t, Float::erf),
        Kind::Gelu { tanh: false } => {
            let r = T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
            let h = c(0.5);
            unary_map(x, t, |v| h * v * (one + (v * r).erf()))
        }
        Kind::Gelu { tanh: true } => {
            let k0 = T::from_f64((2.0 / std::f64::consts::PI).sqrt());
            let (k1, h) = (c(0.044_715), c(0.5));
            unary_map(x, t, |v| h * v * (one + (k0 * (v + k1 * v * v * v)).tanh()))
        }
        Kind::Sqrt => unary_map(x, t, Float::sqrt),
        Kind::Exp => unary_map(x, t, Float::exp),
        Kind::Log => unary_map(x, t, Float::ln),
        Kind::Neg => unary_map(x, t, Num::neg),
        Kind::Abs => unary_map(x, t, Num::abs),
        Kind::Reciprocal => unary_map(x, t, Float::recip),
        Kind::Floor => unary_map(x, t, Float::floor),
        Kind::Ceil => unary_map(x, t, Float::ceil),
        Kind::Round => unary_map(x, t, Float::round_even),
        Kind::Sign => unary_map(x, t, Num::sign),
        Kind::Softplus => unary_map(x, t, softplus),
        Kind::Softsign => unary_map(x, t, |v| v.div(one + v.abs())),
        Kind::Elu(a) => {
            let a = c(a);
            unary_map(x, t, |v| if v < zero { a * (v.exp().sub(one)) } else { v })
        }
        Kind::Selu { alpha, gamma } => {
            let (a, g) = (c(alpha), c(gamma));
            unary_map(x, t, |v| {
                if v > zero {
                    g * v
                } else {
                    let t = a * v.exp();
                    g * t.sub(a)
                }
            })
        }
        Kind::Celu(alpha) => {
            let a = c(alpha);
            unary_map(x, t, |v| {
                let neg = a * (v.div(a).exp().sub(one));
                (if v > zero { v } else { zero }) + (if neg < zero { neg } else { zero })
            })
        }
        Kind::ThresholdedRelu(alpha) => {
            let a = c(alpha);
            unary_map(x, t, |v| if v > a { v } else { zero })
        }
        Kind::Sin => unary_map(x, t, Float::sin),
        Kind::Cos => unary_map(x, t, Float::cos),
        Kind::Tan => unary_map(x, t, |v| T::from_f64(v.to_f64().tan())),
        Kind::Asin => unary_map(x, t, |v| T::from_f64(v.to_f64().asin())),
        Kind::Acos => unary_map(x, t, |v| T::from_f64(v.to_f64().acos())),
        Kind::Atan => unary_map(x, t, |v| T::from_f64(v.to_f64().atan())),
        Kind::Sinh => unary_map(x, t, |v| T::from_f64(v.to_f64().sinh())),
        Kind::Cosh => unary_map(x, t, |v| T::from_f64(v.to_f64().cosh())),
        Kind::Asinh => unary_map(x, t, |v| T::from_f64(v.to_f64().asinh())),
        Kind::Acosh => unary_map(x, t, |v| T::from_f64(v.to_f64().acosh())),
        Kind::Atanh => unary_map(x, t, |v| T::from_f64(v.to_f64().atanh())),
        Kind::Mish => unary_map(x, t, |v| v * softplus(v).tanh()),
    }
}

fn clamp01<T: Float>(v: T) -> T {
    let (zero, one) = (T::zero(), T::one());
    if v < zero {
        zero
    } else if v > one {
        one
    } else {
        v
    }
}

/// `ln(1 + e^x)` without overflow for large x.
fn softplus<T: Float>(v: T) -> T {
    if v > T::from_f32(30.0) {
        v
    } else {
        v.exp().ln_1p()
    }
}

/// Clip: bounds are attributes before opset 11 and optional scalar inputs after.
#[derive(Debug)]
struct Clip {
    attr_bounds: Option<(f32, f32)>,
}

fn build_clip(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let attr_bounds = if ctx.opset < 11 {
        Some((
            ctx.node.attr_float_or("min", f32::MIN)?,
            ctx.node.attr_float_or("max", f32::MAX)?,
        ))
    } else {
        None
    };
    Ok(Box::new(Clip { attr_bounds }))
}

/// The single value of a bound input, checked against the data's dtype.
fn bound<T: Elem>(t: Option<&Tensor>, which: &str) -> Result<Option<T>, OpError> {
    let Some(t) = t else { return Ok(None) };
    let v = t.as_slice::<T>().map_err(|_| {
        OpError::Invalid(format!(
            "input {which} has dtype {}, expected {}",
            t.dtype(),
            T::DTYPE
        ))
    })?;
    match v {
        [x] => Ok(Some(*x)),
        _ => bail_invalid!("input {which} must be a scalar, has shape {:?}", t.shape()),
    }
}

impl Op for Clip {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let shape = x.shape().to_vec();
        let out = dispatch_num!(x.data(), T, v => {
            let (lo, hi) = match self.attr_bounds {
                Some((lo, hi)) => (T::from_f64(lo as f64), T::from_f64(hi as f64)),
                None => (
                    bound::<T>(optional(inputs, 1), "1 (min)")?.unwrap_or(T::lowest()),
                    bound::<T>(optional(inputs, 2), "2 (max)")?.unwrap_or(T::highest()),
                ),
            };
            let y = unary_map(v, ctx.threads, |e| {
                let e = if e < lo { lo } else { e };
                if e > hi { hi } else { e }
            });
            Tensor::from_vec(shape, y)?
        }, _ => return Err(unsupported_dtype("Clip", x.dtype())));
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run_node;
    use super::*;
    use quench_ir::Node;

    #[test]
    fn activations_match_scalar_reference() {
        let xs: Vec<f32> = (-40..40).map(|i| i as f32 * 0.37).collect();
        let x = Tensor::from_vec(vec![xs.len()], xs.clone()).unwrap();
        let check = |op: &str, f: &dyn Fn(f64) -> f64| {
            let y = run_node(Node::new(op, "n", &["x"], &["y"]), 21, &[Some(&x)]).unwrap();
            for (a, &v) in y.as_slice::<f32>().unwrap().iter().zip(&xs) {
                let want = f(v as f64);
                assert!(
                    (*a as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{op}({v}) = {a}, want {want}"
                );
            }
        };
        check("Relu", &|v| v.max(0.0));
        check("Sigmoid", &|v| 1.0 / (1.0 + (-v).exp()));
        check("Tanh", &|v| v.tanh());
        check("Softplus", &|v| (1.0 + v.exp()).ln());
        check("HardSwish", &|v| v * (v / 6.0 + 0.5).clamp(0.0, 1.0));
        check("Gelu", &|v| 0.5 * v * (1.0 + libm::erf(v / 2f64.sqrt())));
        check("Round", &|v| v.round_ties_even());
        check("Elu", &|v| if v < 0.0 { v.exp() - 1.0 } else { v });
    }

    #[test]
    fn integer_abs_and_unsupported_float_only_op() {
        let x = Tensor::from_vec(vec![3], vec![-3i32, 0, 5]).unwrap();
        let y = run_node(Node::new("Abs", "n", &["x"], &["y"]), 13, &[Some(&x)]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[3, 0, 5]);
        let e = run_node(Node::new("Exp", "n", &["x"], &["y"]), 13, &[Some(&x)]);
        assert!(matches!(e, Err(OpError::Unsupported(_))));
    }

    #[test]
    fn clip_inputs_and_attributes() {
        let x = Tensor::from_vec(vec![4], vec![-5i8, -1, 2, 9]).unwrap();
        let lo = Tensor::scalar(-2i8);
        let y = run_node(
            Node::new("Clip", "n", &["x", "lo"], &["y"]),
            13,
            &[Some(&x), Some(&lo)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[-2, -1, 2, 9]);
        let xf = Tensor::from_vec(vec![3], vec![-5f32, 0.5, 9.0]).unwrap();
        let node = Node::new("Clip", "n", &["x"], &["y"])
            .with_attr("min", quench_ir::Attr::Float(0.0))
            .with_attr("max", quench_ir::Attr::Float(1.0));
        let y = run_node(node, 6, &[Some(&xf)]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.0, 0.5, 1.0]);
        let bad = Tensor::from_vec(vec![2], vec![0i8, 1]).unwrap();
        let e = run_node(
            Node::new("Clip", "n", &["x", "lo"], &["y"]),
            13,
            &[Some(&x), Some(&bad)],
        );
        assert!(matches!(e, Err(OpError::Invalid(_))));
    }
}
