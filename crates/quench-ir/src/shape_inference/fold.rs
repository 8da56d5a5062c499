//! Symbolic folding of small integer tensors that describe shapes.
//!
//! Exporters compute Reshape/Expand targets at run time from `Shape`; folding
//! those chains element by element (a dim may stay a symbol such as `batch`)
//! lets the consumers' shapes resolve statically.

use super::slicing::{slice_params, slice_range};
use super::tensor_ops::shape_window;
use super::{Fact, OpCx, SymInt};
use crate::{DType, Dim};

/// Longest integer tensor folded; longer ones are data, not shapes.
const MAX_FOLD: u64 = 64;

/// Folds output 0 of `cx.node`, whose inferred fact is `out`.
pub(super) fn fold(cx: &OpCx, out: &Fact) -> Option<Vec<SymInt>> {
    if !is_int(out.dtype) {
        return None;
    }
    let len = match out.shape.as_deref()? {
        [] => 1,
        [Dim::Fixed(n)] if *n <= MAX_FOLD => *n as usize,
        _ => return None,
    };
    let v = match cx.node.op_type.as_str() {
        "Shape" => {
            let xs = cx.shape(0)?;
            let (s, e) = shape_window(cx, xs.len()).ok()?;
            xs[s..e].iter().map(SymInt::from_dim).collect()
        }
        "Size" => {
            let xs = cx.shape(0)?;
            match super::dims::product(xs) {
                Dim::Fixed(n) => vec![SymInt::Int(n as i64)],
                _ => return None,
            }
        }
        "Identity" | "Squeeze" | "Unsqueeze" | "Reshape" | "Flatten" => value(cx, 0)?,
        "Cast" | "CastLike" => cast(cx)?,
        "Gather" => gather(cx)?,
        "Concat" => {
            let mut v = Vec::new();
            for i in 0..cx.node.inputs.len() {
                v.extend(value(cx, i)?);
            }
            v
        }
        "Slice" => {
            let data = value(cx, 0)?;
            if cx.shape(0)?.len() != 1 {
                return None;
            }
            let spec = slice_params(cx, 1).ok()??;
            let (&step, &start, &end) = (
                spec.steps.first()?,
                spec.starts.first()?,
                spec.ends.first()?,
            );
            let (first, n) = slice_range(data.len() as i64, start, end, step);
            (0..n)
                .map(|k| data.get((first + k * step) as usize).cloned())
                .collect::<Option<Vec<_>>>()?
        }
        "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" => binary(cx, len)?,
        "ConstantOfShape" => {
            let t = cx.node.attr_tensor("value").ok()??;
            let v = *t.to_i64_vec().ok()?.first()?;
            vec![SymInt::Int(v); len]
        }
        "Range" => {
            let one = |i| match value(cx, i)?.as_slice() {
                [SymInt::Int(v)] => Some(*v),
                _ => None,
            };
            let (s, d) = (one(0)?, one(2)?);
            (0..len as i64)
                .map(|k| {
                    k.checked_mul(d)
                        .and_then(|x| x.checked_add(s))
                        .map_or(SymInt::Unknown, SymInt::Int)
                })
                .collect()
        }
        _ => return None,
    };
    (v.len() == len).then_some(v)
}

fn is_int(d: DType) -> bool {
    matches!(
        d,
        DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U8 | DType::U16 | DType::U32
    )
}

fn value(cx: &OpCx, i: usize) -> Option<Vec<SymInt>> {
    cx.fact(i)?.value.clone()
}

/// Casts between integer types keep the value; float constants truncate.
fn cast(cx: &OpCx) -> Option<Vec<SymInt>> {
    let f = cx.fact(0)?;
    if let Some(v) = &f.value {
        return Some(v.clone());
    }
    let t = f.konst.as_ref()?;
    if t.rank() > 1 {
        return None;
    }
    let v = t.to_f32_vec().ok()?;
    Some(v.into_iter().map(|x| SymInt::Int(x as i64)).collect())
}

fn gather(cx: &OpCx) -> Option<Vec<SymInt>> {
    let data = value(cx, 0)?;
    if cx.shape(0)?.len() != 1 {
        return None;
    }
    let n = data.len() as i64;
    cx.ints(1)?
        .into_iter()
        .map(|i| {
            let i = if i < 0 { i + n } else { i };
            data.get(usize::try_from(i).ok()?).cloned()
        })
        .collect()
}

/// Element-wise arithmetic with scalar broadcasting. Symbols survive only
/// identities (`b * 1`, `b + 0`, `max(b, b)`).
fn binary(cx: &OpCx, len: usize) -> Option<Vec<SymInt>> {
    let (a, b) = (value(cx, 0)?, value(cx, 1)?);
    let at = |v: &[SymInt], k: usize| -> Option<SymInt> {
        if v.len() == 1 {
            v.first().cloned()
        } else {
            v.get(k).cloned()
        }
    };
    let op = cx.node.op_type.as_str();
    (0..len)
        .map(|k| {
            let (x, y) = (at(&a, k)?, at(&b, k)?);
            Some(match (&x, &y) {
                (SymInt::Int(p), SymInt::Int(q)) => {
                    let (p, q) = (*p, *q);
                    match op {
                        "Add" => p.checked_add(q).map_or(SymInt::Unknown, SymInt::Int),
                        "Sub" => p.checked_sub(q).map_or(SymInt::Unknown, SymInt::Int),
                        "Mul" => p.checked_mul(q).map_or(SymInt::Unknown, SymInt::Int),
                        "Div" => p.checked_div(q).map_or(SymInt::Unknown, SymInt::Int),
                        "Max" => SymInt::Int(p.max(q)),
                        "Min" => SymInt::Int(p.min(q)),
                        _ => SymInt::Unknown,
                    }
                }
                (s @ SymInt::Sym(_), SymInt::Int(1)) if op == "Mul" || op == "Div" => s.clone(),
                (SymInt::Int(1), s @ SymInt::Sym(_)) if op == "Mul" => s.clone(),
                (s @ SymInt::Sym(_), SymInt::Int(0)) if op == "Add" || op == "Sub" => s.clone(),
                (SymInt::Int(0), s @ SymInt::Sym(_)) if op == "Add" => s.clone(),
                (s @ SymInt::Sym(p), SymInt::Sym(q)) if p == q && (op == "Max" || op == "Min") => {
                    s.clone()
                }
                _ => SymInt::Unknown,
            })
        })
        .collect()
}
