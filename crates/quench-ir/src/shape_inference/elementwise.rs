//! Element-wise ops: unary maps, broadcasting binaries, comparisons, Where,
//! Cast and the quantize/dequantize family.

use super::dims::{broadcast, fmt_opt};
use super::{Fact, OpCx, Outs, need};
use crate::DType;

/// The rule for an ONNX op type, if this family has one.
pub(super) fn rule(op: &str) -> Option<fn(&OpCx) -> Outs> {
    Some(match op {
        "Relu"
        | "LeakyRelu"
        | "Sigmoid"
        | "Tanh"
        | "HardSigmoid"
        | "HardSwish"
        | "Erf"
        | "Gelu"
        | "Sqrt"
        | "Exp"
        | "Log"
        | "Neg"
        | "Abs"
        | "Reciprocal"
        | "Clip"
        | "Elu"
        | "Selu"
        | "Celu"
        | "Softplus"
        | "Softsign"
        | "Mish"
        | "ThresholdedRelu"
        | "Floor"
        | "Ceil"
        | "Round"
        | "Sign"
        | "Sin"
        | "Cos"
        | "Tan"
        | "Asin"
        | "Acos"
        | "Atan"
        | "Sinh"
        | "Cosh"
        | "Asinh"
        | "Acosh"
        | "Atanh"
        | "Not"
        | "BitwiseNot"
        | "Identity"
        | "Softmax"
        | "LogSoftmax"
        | "Hardmax"
        | "LRN"
        | "InstanceNormalization"
        | "MeanVarianceNormalization"
        | "Shrink"
        | "CumSum"
        | "PRelu" => same_as_input,
        "IsNaN" | "IsInf" => |cx| map_dtype(cx, DType::Bool),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean" | "Mod"
        | "BitShift" | "And" | "Or" | "Xor" | "BitwiseAnd" | "BitwiseOr" | "BitwiseXor" => {
            |cx| variadic(cx, None)
        }
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" => {
            |cx| variadic(cx, Some(DType::Bool))
        }
        "Where" => where_,
        "Cast" => cast,
        "CastLike" => |cx| {
            let to = need!(cx.dtype(1));
            Ok(vec![Some(Fact::new(to, need!(cx.fact(0)).shape.clone()))])
        },
        "Dropout" => dropout,
        "QuantizeLinear" => quantize,
        "DequantizeLinear" => dequantize,
        "DynamicQuantizeLinear" => |cx| {
            let x = need!(cx.fact(0));
            Ok(vec![
                Some(Fact::new(DType::U8, x.shape.clone())),
                Some(Fact::shaped(DType::F32, vec![])),
                Some(Fact::shaped(DType::U8, vec![])),
            ])
        },
        _ => return None,
    })
}

/// Output 0 has input 0's dtype and shape.
fn same_as_input(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    cx.one(Fact::new(x.dtype, x.shape.clone()))
}

fn map_dtype(cx: &OpCx, dtype: DType) -> Outs {
    let x = need!(cx.fact(0));
    cx.one(Fact::new(dtype, x.shape.clone()))
}

/// Broadcast of all present inputs; the dtype is input 0's unless `out` is given.
fn variadic(cx: &OpCx, out: Option<DType>) -> Outs {
    let first = need!(cx.fact(0));
    let dtype = out.unwrap_or(first.dtype);
    let present: Vec<usize> = (0..cx.node.inputs.len()).filter(|&i| cx.has(i)).collect();
    let mut shapes = Vec::with_capacity(present.len());
    for &i in &present {
        match cx.shape(i) {
            Some(s) => shapes.push(s),
            None => return cx.one(Fact::new(dtype, None)),
        }
    }
    if cx.node.op_type != "Pow" && cx.node.op_type != "BitShift" {
        check_same_dtype(cx, &present)?;
    }
    cx.one(Fact::shaped(dtype, broadcast(&shapes)?))
}

fn check_same_dtype(cx: &OpCx, present: &[usize]) -> Result<(), String> {
    let dts: Vec<_> = present.iter().filter_map(|&i| cx.dtype(i)).collect();
    if let Some(d) = dts.iter().find(|d| **d != dts[0]) {
        return Err(format!(
            "inputs have different dtypes ({} and {d}) but this op needs one type",
            dts[0]
        ));
    }
    Ok(())
}

fn where_(cx: &OpCx) -> Outs {
    let dtype = need!(cx.dtype(1).or(cx.dtype(2)));
    let shapes: Option<Vec<_>> = (0..3).map(|i| cx.shape(i)).collect();
    match shapes {
        Some(s) => cx.one(Fact::shaped(dtype, broadcast(&s)?)),
        None => cx.one(Fact::new(dtype, None)),
    }
}

fn cast(cx: &OpCx) -> Outs {
    let to = cx.attr_int("to", 0)?;
    let dtype = DType::from_onnx(to as i32).ok_or("attribute 'to' is missing or 0")?;
    let x = need!(cx.fact(0));
    cx.one(Fact::new(dtype, x.shape.clone()))
}

fn dropout(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    Ok(vec![
        Some(Fact::new(x.dtype, x.shape.clone())),
        Some(Fact::new(DType::Bool, x.shape.clone())),
    ])
}

/// QuantizeLinear's output type: `output_dtype` (opset 21), else the zero
/// point's, else uint8.
fn quantize(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let attr = if cx.opset >= 21 {
        cx.attr_int("output_dtype", 0)?
    } else {
        0
    };
    let dtype = match DType::from_onnx(attr as i32) {
        Some(d) => d,
        None if cx.has(2) => need!(cx.dtype(2)),
        None => DType::U8,
    };
    check_scale(cx)?;
    cx.one(Fact::new(dtype, x.shape.clone()))
}

/// DequantizeLinear yields float32 until opset 19, then the scale's type.
fn dequantize(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let attr = if cx.opset >= 23 {
        cx.attr_int("output_dtype", 0)?
    } else {
        0
    };
    let dtype = match DType::from_onnx(attr as i32) {
        Some(d) => d,
        None if cx.opset >= 19 => cx.dtype(1).unwrap_or(DType::F32),
        None => DType::F32,
    };
    check_scale(cx)?;
    cx.one(Fact::new(dtype, x.shape.clone()))
}

/// Per-tensor scales are scalars (or [1]); per-axis ones are 1-D; blocked ones match x's rank.
fn check_scale(cx: &OpCx) -> Result<(), String> {
    if let (Some(x), Some(s)) = (cx.shape(0), cx.shape(1))
        && s.len() > 1
        && s.len() != x.len()
    {
        return Err(format!(
            "scale has shape {}, which fits neither per-tensor, per-axis nor blocked quantization of {}",
            fmt_opt(Some(s)),
            fmt_opt(Some(x))
        ));
    }
    Ok(())
}
