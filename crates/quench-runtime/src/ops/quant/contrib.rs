//! com.microsoft element-wise quantized ops (QLinearAdd, QLinearMul,
//! QLinearSigmoid, QLinearLeakyRelu, QLinearConcat), with ORT's semantics:
//! dequantize, compute in f32, requantize with `nearbyint(v / scale) + zp`.

use super::{
    QType, broadcast_index, broadcast_shapes, int_values, norm_axis, quantize_f32, scalar_scale,
    scalar_zero_point,
};
use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid};
use quench_ir::{Tensor, TensorData};
use quench_kernels::int8::add;
use quench_kernels::int8::round_half_even;

pub fn register(r: &mut Registry) {
    r.register("com.microsoft", "QLinearAdd", build_add);
    r.register("com.microsoft", "QLinearMul", build_mul);
    r.register("com.microsoft", "QLinearSigmoid", build_sigmoid);
    r.register("com.microsoft", "QLinearLeakyRelu", build_leaky);
    r.register("com.microsoft", "QLinearConcat", build_concat);
}

/// An 8-bit quantized input with its per-tensor parameters.
pub(crate) struct QInput<'a> {
    pub t: &'a Tensor,
    pub scale: f32,
    pub zp: i32,
}

impl<'a> QInput<'a> {
    /// Input `i` with its scale at `i + 1` and optional zero point at `i + 2`.
    pub fn read(
        inputs: &[Option<&'a Tensor>],
        i: usize,
        name: &str,
    ) -> Result<QInput<'a>, OpError> {
        let t = required(inputs, i)?;
        QType::of(t.dtype(), &format!("input {i} ({name})"))?;
        let zp_t = optional(inputs, i + 2);
        if let Some(z) = zp_t
            && z.dtype() != t.dtype()
        {
            bail_invalid!(
                "input {} ({name}_zero_point) has type {}, input {i} ({name}) has type {}",
                i + 2,
                z.dtype(),
                t.dtype()
            );
        }
        Ok(QInput {
            t,
            scale: scalar_scale(
                required(inputs, i + 1)?,
                &format!("input {} ({name}_scale)", i + 1),
            )?,
            zp: scalar_zero_point(zp_t, &format!("input {} ({name}_zero_point)", i + 2))?,
        })
    }

    pub fn dequantized(&self, what: &str) -> Result<Vec<f32>, OpError> {
        Ok(int_values(self.t, what)?
            .into_iter()
            .map(|v| self.scale * (v - self.zp) as f32)
            .collect())
    }
}

#[derive(Debug, Clone, Copy)]
enum Binary {
    Add,
    Mul,
}

#[derive(Debug)]
struct QLinearBinary(Binary);

fn build_add(_: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(QLinearBinary(Binary::Add)))
}

fn build_mul(_: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(QLinearBinary(Binary::Mul)))
}

impl QLinearBinary {
    /// Equal shapes, 8-bit: the same f32 arithmetic as the general path in
    /// flat, vectorizable loops (the residual Adds of CNNs).
    fn same_shape(
        &self,
        a: &QInput,
        b: &QInput,
        c_scale: f32,
        c_zp: i32,
        q: QType,
    ) -> Result<Tensor, OpError> {
        let (av, bv) = (
            int_values(a.t, "input 0 (A)")?,
            int_values(b.t, "input 3 (B)")?,
        );
        let v: Vec<f32> = av
            .iter()
            .zip(&bv)
            .map(|(&x, &y)| {
                let (x, y) = (a.scale * (x - a.zp) as f32, b.scale * (y - b.zp) as f32);
                match self.0 {
                    Binary::Add => x + y,
                    Binary::Mul => x * y,
                }
            })
            .collect();
        let shape = a.t.shape().to_vec();
        use super::linear::quantize_8bit;
        Ok(if q == QType::U8 {
            Tensor::from_vec(shape, quantize_8bit(&v, c_scale, c_zp, q, |x| x as u8))?
        } else {
            Tensor::from_vec(shape, quantize_8bit(&v, c_scale, c_zp, q, |x| x as i8))?
        })
    }
}

impl Op for QLinearBinary {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let a = QInput::read(inputs, 0, "A")?;
        let b = QInput::read(inputs, 3, "B")?;
        let c_scale = scalar_scale(required(inputs, 6)?, "input 6 (C_scale)")?;
        let c_zp = scalar_zero_point(optional(inputs, 7), "input 7 (C_zero_point)")?;
        if b.t.dtype() != a.t.dtype() {
            bail_invalid!(
                "input 3 (B) has type {}, input 0 (A) has type {}",
                b.t.dtype(),
                a.t.dtype()
            );
        }
        let q = QType::of(a.t.dtype(), "input 0 (A)")?;
        if let Binary::Add = self.0 {
            return Ok(vec![ort_add(&a, &b, c_scale, c_zp, q)?]);
        }
        if a.t.shape() == b.t.shape() && matches!(q, QType::U8 | QType::I8) {
            return Ok(vec![self.same_shape(&a, &b, c_scale, c_zp, q)?]);
        }
        let shape = broadcast_shapes(a.t.shape(), b.t.shape())?;
        let (av, bv) = (a.dequantized("input 0 (A)")?, b.dequantized("input 3 (B)")?);
        let ai = broadcast_index(a.t.shape(), &shape)?;
        let bi = broadcast_index(b.t.shape(), &shape)?;
        let y = ai
            .iter()
            .zip(&bi)
            .map(|(&i, &j)| {
                let v = match self.0 {
                    Binary::Add => av[i] + bv[j],
                    Binary::Mul => av[i] * bv[j],
                };
                quantize_f32(v, c_scale, c_zp, q)
            })
            .collect();
        Ok(vec![q.tensor(shape, y)?])
    }
}

/// QLinearAdd with ONNX Runtime's x86 arithmetic, so that residual chains
/// give ORT's integers bit for bit (the plain dequantize-add-requantize
/// rounds a few ties per layer the other way, and the differences grow
/// through the following layers): with `ra = sa / sc`, `rb = sb / sc` and
/// `fixed = zc - fma(ra, za, rb * zb)`, each output is
/// `round_half_even(fma(a, ra, fma(b, rb, fixed)))`, saturated; a scalar
/// input is folded into `fixed` first with a separate multiply and add.
fn ort_add(a: &QInput, b: &QInput, c_scale: f32, c_zp: i32, q: QType) -> Result<Tensor, OpError> {
    let (ra, rb) = (a.scale / c_scale, b.scale / c_scale);
    let fixed = add::add_fixed(ra, a.zp, rb, b.zp, c_zp);
    // 8-bit (every CNN's residual Add): the vectorised kernels on the bytes.
    match (a.t.data(), b.t.data()) {
        (TensorData::U8(x), TensorData::U8(y)) => {
            if let Some(t) = add_bytes(a.t, x, ra, b.t, y, rb, fixed)? {
                return Ok(t);
            }
        }
        (TensorData::I8(x), TensorData::I8(y)) => {
            if let Some(t) = add_bytes(a.t, x, ra, b.t, y, rb, fixed)? {
                return Ok(t);
            }
        }
        _ => {}
    }
    let (av, bv) = (
        int_values(a.t, "input 0 (A)")?,
        int_values(b.t, "input 3 (B)")?,
    );
    let (lo, hi) = q.range();
    let (lo, hi) = (lo as f32, hi as f32);
    let finish = |t: f32| round_half_even(t).clamp(lo, hi) as i32;
    let shape = broadcast_shapes(a.t.shape(), b.t.shape())?;
    let ai = broadcast_index(a.t.shape(), &shape)?;
    let bi = broadcast_index(b.t.shape(), &shape)?;
    let y = ai
        .iter()
        .zip(&bi)
        .map(|(&i, &j)| finish((av[i] as f32).mul_add(ra, (bv[j] as f32).mul_add(rb, fixed))))
        .collect();
    q.tensor(shape, y)
}

/// [`ort_add`] on 8-bit data of equal shapes or with one scalar operand;
/// `None` for other broadcasts (the general loop).
fn add_bytes<T: add::QByte + quench_ir::tensor::Elem>(
    at: &Tensor,
    a: &[T],
    ra: f32,
    bt: &Tensor,
    b: &[T],
    rb: f32,
    fixed: f32,
) -> Result<Option<Tensor>, OpError> {
    let (shape, y) = if at.shape() == bt.shape() {
        let mut y = vec![T::default(); a.len()];
        add::qadd(a, ra, b, rb, fixed, &mut y);
        (at.shape().to_vec(), y)
    } else if b.len() == 1 && broadcast_shapes(at.shape(), bt.shape())? == at.shape() {
        // A scalar is folded into `fixed` with a separate multiply and add, as ORT does.
        let mut y = vec![T::default(); a.len()];
        add::qaffine(a, ra, fixed + b[0].to_f32() * rb, &mut y);
        (at.shape().to_vec(), y)
    } else if a.len() == 1 && broadcast_shapes(at.shape(), bt.shape())? == bt.shape() {
        let mut y = vec![T::default(); b.len()];
        add::qaffine(b, rb, fixed + a[0].to_f32() * ra, &mut y);
        (bt.shape().to_vec(), y)
    } else {
        return Ok(None);
    };
    Ok(Some(Tensor::from_vec(shape, y)?))
}

/// X_scale, X_zero_point, Y_scale, Y_zero_point around `X`.
fn unary(inputs: &[Option<&Tensor>], f: impl Fn(f32) -> f32) -> Result<Vec<Tensor>, OpError> {
    let x = QInput::read(inputs, 0, "X")?;
    let y_scale = scalar_scale(required(inputs, 3)?, "input 3 (Y_scale)")?;
    let y_zp = scalar_zero_point(optional(inputs, 4), "input 4 (Y_zero_point)")?;
    let q = QType::of(x.t.dtype(), "input 0 (X)")?;
    let y = x
        .dequantized("input 0 (X)")?
        .into_iter()
        .map(|v| quantize_f32(f(v), y_scale, y_zp, q))
        .collect();
    Ok(vec![q.tensor(x.t.shape().to_vec(), y)?])
}

#[derive(Debug)]
struct QLinearSigmoid;

fn build_sigmoid(_: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(QLinearSigmoid))
}

impl Op for QLinearSigmoid {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        unary(inputs, |v| 1.0 / (1.0 + (-v).exp()))
    }
}

#[derive(Debug)]
struct QLinearLeakyRelu {
    alpha: f32,
}

fn build_leaky(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(QLinearLeakyRelu {
        alpha: ctx.node.attr_float_or("alpha", 0.01)?,
    }))
}

impl Op for QLinearLeakyRelu {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let alpha = self.alpha;
        unary(inputs, |v| if v >= 0.0 { v } else { alpha * v })
    }
}

#[derive(Debug)]
struct QLinearConcat {
    axis: i64,
}

fn build_concat(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let axis = ctx
        .node
        .attr_int("axis")?
        .ok_or_else(|| OpError::Invalid("attribute axis is required".into()))?;
    let n = ctx.node.inputs.len();
    if n < 5 || !(n - 2).is_multiple_of(3) {
        bail_invalid!(
            "has {n} inputs; expected Y_scale, Y_zero_point, then (X, scale, zero_point) triples"
        );
    }
    Ok(Box::new(QLinearConcat { axis }))
}

impl Op for QLinearConcat {
    fn run(&self, _: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let y_scale = scalar_scale(required(inputs, 0)?, "input 0 (Y_scale)")?;
        let y_zp_t = required(inputs, 1)?;
        let y_zp = scalar_zero_point(Some(y_zp_t), "input 1 (Y_zero_point)")?;
        let q = QType::of(y_zp_t.dtype(), "input 1 (Y_zero_point)")?;
        let parts: Vec<QInput> = (2..inputs.len())
            .step_by(3)
            .map(|i| QInput::read(inputs, i, &format!("X{}", (i - 2) / 3)))
            .collect::<Result<_, _>>()?;
        let first = parts[0].t.shape();
        let axis = norm_axis(self.axis, first.len(), "attribute axis")?;
        let mut shape = first.to_vec();
        shape[axis] = 0;
        for p in &parts {
            let s = p.t.shape();
            if s.len() != first.len()
                || s.iter()
                    .zip(first)
                    .enumerate()
                    .any(|(d, (a, b))| d != axis && a != b)
            {
                bail_invalid!(
                    "inputs of shapes {first:?} and {s:?} cannot be concatenated on axis {axis}"
                );
            }
            if p.t.dtype() != y_zp_t.dtype() {
                bail_invalid!(
                    "input of type {} differs from Y's type {}",
                    p.t.dtype(),
                    y_zp_t.dtype()
                );
            }
            shape[axis] += s[axis];
        }
        let outer: usize = first[..axis].iter().product();
        let mut y = Vec::with_capacity(quench_ir::tensor::checked_numel(&shape)?);
        let vals: Vec<Vec<i32>> = parts
            .iter()
            .map(|p| {
                let v = int_values(p.t, "input")?;
                if p.scale == y_scale && p.zp == y_zp {
                    return Ok(v);
                }
                Ok(v.into_iter()
                    .map(|x| quantize_f32(p.scale * (x - p.zp) as f32, y_scale, y_zp, q))
                    .collect())
            })
            .collect::<Result<_, OpError>>()?;
        for o in 0..outer {
            for (p, v) in parts.iter().zip(&vals) {
                let chunk: usize = p.t.shape()[axis..].iter().product();
                y.extend_from_slice(&v[o * chunk..][..chunk]);
            }
        }
        Ok(vec![q.tensor(shape, y)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::quant::test_util::{run, t};
    use quench_ir::{Attr, Node, Tensor};

    fn ms(op: &str, inputs: &[&str]) -> Node {
        let mut n = Node::new(op, "n", inputs, &["y"]);
        n.domain = "com.microsoft".into();
        n
    }

    #[test]
    fn qlinear_add_broadcasts_and_matches_ort() {
        // onnxruntime 1.31: A [2,3] u8 (s .1, zp 10), B [3] (s .2, zp 5), C (s .15, zp 20).
        let a = t(&[2, 3], vec![0u8, 10, 20, 100, 200, 255]);
        let b = t(&[3], vec![5u8, 0, 250]);
        let n = ms(
            "QLinearAdd",
            &["a", "as", "az", "b", "bs", "bz", "cs", "cz"],
        );
        let out = run(
            n,
            1,
            &[
                Some(&a),
                Some(&Tensor::scalar(0.1f32)),
                Some(&Tensor::scalar(10u8)),
                Some(&b),
                Some(&Tensor::scalar(0.2f32)),
                Some(&Tensor::scalar(5u8)),
                Some(&Tensor::scalar(0.15f32)),
                Some(&Tensor::scalar(20u8)),
            ],
        )
        .unwrap();
        assert_eq!(
            out[0].as_slice::<u8>().unwrap(),
            &[13, 13, 255, 80, 140, 255]
        );
    }

    #[test]
    fn qlinear_add_rounds_ties_like_ort() {
        // A residual Add of ORT's MobileNetV2 (quantize_static): onnxruntime
        // 1.31 gives 61 and 150 where dequantize-add-requantize gives 62, 151.
        let (a, b) = (t(&[2], vec![46u8, 225]), t(&[2], vec![126u8, 34]));
        let n = ms(
            "QLinearAdd",
            &["a", "as", "az", "b", "bs", "bz", "cs", "cz"],
        );
        let q = |s: f32, z: u8| (Tensor::scalar(s), Tensor::scalar(z));
        let ((sa, za), (sb, zb), (sc, zc)) = (
            q(0.120_402_455, 110),
            q(0.088_424_3, 142),
            q(0.150_752_83, 122),
        );
        let ins = [&a, &sa, &za, &b, &sb, &zb, &sc, &zc].map(Some);
        let out = run(n, 1, &ins).unwrap();
        assert_eq!(out[0].as_slice::<u8>().unwrap(), &[61, 150]);
    }

    #[test]
    fn qlinear_leaky_relu_and_concat() {
        let x = t(&[4], vec![-100i8, -1, 0, 50]);
        let n = ms("QLinearLeakyRelu", &["x", "xs", "xz", "ys", "yz"])
            .with_attr("alpha", Attr::Float(0.1));
        let (s, z) = (Tensor::scalar(0.5f32), Tensor::scalar(0i8));
        let out = run(n, 1, &[Some(&x), Some(&s), Some(&z), Some(&s), Some(&z)]).unwrap();
        assert_eq!(out[0].as_slice::<i8>().unwrap(), &[-10, 0, 0, 50]);

        let a = t(&[1, 2], vec![10u8, 20]);
        let b = t(&[1, 1], vec![30u8]);
        let n = ms(
            "QLinearConcat",
            &["ys", "yz", "a", "as", "az", "b", "bs", "bz"],
        )
        .with_attr("axis", Attr::Int(-1));
        let (one, two, zero) = (
            Tensor::scalar(1f32),
            Tensor::scalar(2f32),
            Tensor::scalar(0u8),
        );
        let out = run(
            n,
            1,
            &[
                Some(&one),
                Some(&zero),
                Some(&a),
                Some(&one),
                Some(&zero),
                Some(&b),
                Some(&two),
                Some(&zero),
            ],
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[1, 3]);
        assert_eq!(out[0].as_slice::<u8>().unwrap(), &[10, 20, 60]);
    }

    #[test]
    fn mixed_types_are_invalid() {
        let a = t(&[1], vec![1u8]);
        let b = t(&[1], vec![1i8]);
        let s = Tensor::scalar(1f32);
        let n = ms("QLinearMul", &["a", "as", "", "b", "bs", "", "cs"]);
        assert!(
            run(
                n,
                1,
                &[Some(&a), Some(&s), None, Some(&b), Some(&s), None, Some(&s)]
            )
            .is_err()
        );
    }
}
