//! Shape-moving ops: Reshape, Transpose, Concat, Flatten, Gather, (Un)Squeeze,
//! Shape, Range, Expand, Constant and ConstantOfShape.

use super::dims::{self, axes, broadcast, fixed, fmt_shape, product, unify};
use super::{Fact, OpCx, Outs, SymInt, need};
use crate::{Attr, DType, Dim, Tensor};

/// The rule for an ONNX op type, if this family has one.
pub(super) fn rule(op: &str) -> Option<fn(&OpCx) -> Outs> {
    Some(match op {
        "Reshape" => reshape,
        "Transpose" => transpose,
        "Concat" => concat,
        "Flatten" => flatten,
        "Gather" => gather,
        "GatherElements" => |cx| {
            let d = need!(cx.dtype(0));
            cx.one(Fact::new(d, cx.shape(1).map(<[Dim]>::to_vec)))
        },
        "ScatterND" | "ScatterElements" | "Trilu" => |cx| {
            let x = need!(cx.fact(0));
            cx.one(Fact::new(x.dtype, x.shape.clone()))
        },
        "Squeeze" => squeeze,
        "Unsqueeze" => unsqueeze,
        "Shape" => shape_op,
        "Size" => |cx| cx.one(Fact::shaped(DType::I64, vec![])),
        "NonZero" => |cx| {
            cx.one(Fact::shaped(
                DType::I64,
                vec![
                    cx.shape(0)
                        .map_or(Dim::Unknown, |s| Dim::Fixed(s.len() as u64)),
                    Dim::Unknown,
                ],
            ))
        },
        "Range" => range,
        "Expand" => expand,
        "ConstantOfShape" => constant_of_shape,
        "Constant" => constant,
        _ => return None,
    })
}

/// Known contents of input `i` as target dims, or `None`.
pub(super) fn target(cx: &OpCx, i: usize) -> Option<Vec<SymInt>> {
    cx.fact(i).and_then(|f| f.value.clone())
}

/// The length of 1-D input `i`, when fixed (its contents may be unknown).
pub(super) fn len_of(cx: &OpCx, i: usize) -> Option<usize> {
    match cx.shape(i) {
        Some([Dim::Fixed(n)]) => Some(*n as usize),
        _ => None,
    }
}

fn reshape(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let Some(t) = target(cx, 1) else {
        return cx.one(Fact::new(
            x.dtype,
            len_of(cx, 1).map(|n| vec![Dim::Unknown; n]),
        ));
    };
    let allow_zero = cx.opset >= 14 && cx.attr_int("allowzero", 0)? != 0;
    let xs = cx.shape(0);
    let mut out = Vec::with_capacity(t.len());
    let mut infer_at = None;
    for (i, v) in t.iter().enumerate() {
        out.push(match v {
            SymInt::Int(0) if !allow_zero => match xs {
                Some(xs) => xs.get(i).cloned().ok_or_else(|| {
                    format!(
                        "target {t:?} copies dim {i} (0) of input {}, which has no such dim",
                        fmt_shape(xs)
                    )
                })?,
                None => Dim::Unknown,
            },
            SymInt::Int(-1) => {
                if infer_at.replace(i).is_some() {
                    return Err(format!("target {t:?} has more than one -1"));
                }
                Dim::Unknown
            }
            SymInt::Int(n) if *n < 0 => return Err(format!("target {t:?} has dim {n}")),
            v => v.to_dim(),
        });
    }
    if let Some(xs) = xs {
        let others: Vec<Dim> = out
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != infer_at)
            .map(|(_, d)| d.clone())
            .collect();
        let bad = || {
            format!(
                "cannot reshape {} into {:?} (resolved {})",
                fmt_shape(xs),
                t,
                fmt_shape(&out)
            )
        };
        match infer_at {
            Some(at) => out[at] = quotient(xs, &others).map_err(|_| bad())?,
            None => {
                if let (Some(a), Some(b)) = (dims::all_fixed(xs), dims::all_fixed(&out))
                    && a.iter().fold(1u128, |p, &v| p.saturating_mul(v as u128))
                        != b.iter().fold(1u128, |p, &v| p.saturating_mul(v as u128))
                {
                    return Err(bad());
                }
            }
        }
    }
    cx.one(Fact::shaped(x.dtype, out))
}

/// The dim `d` with `product(num) == d * product(den)`, cancelling equal
/// symbols; unknown when it cannot be decided, `Err` when fixed sizes clash.
fn quotient(num: &[Dim], den: &[Dim]) -> Result<Dim, ()> {
    let mut syms: Vec<&str> = Vec::new();
    let (mut pn, mut pd) = (1u64, 1u64);
    for d in num {
        match d {
            Dim::Fixed(v) => pn = pn.saturating_mul(*v),
            Dim::Symbol(s) => syms.push(s),
            Dim::Unknown => return Ok(Dim::Unknown),
        }
    }
    for d in den {
        match d {
            Dim::Fixed(v) => pd = pd.saturating_mul(*v),
            Dim::Symbol(s) => match syms.iter().position(|x| x == s) {
                Some(p) => {
                    syms.remove(p);
                }
                None => return Ok(Dim::Unknown),
            },
            Dim::Unknown => return Ok(Dim::Unknown),
        }
    }
    match syms.as_slice() {
        [] if pd == 0 => Ok(Dim::Unknown),
        [] if pn % pd == 0 => Ok(Dim::Fixed(pn / pd)),
        [] => Err(()),
        [s] if pn == pd => Ok(Dim::Symbol(s.to_string())),
        _ => Ok(Dim::Unknown),
    }
}

fn transpose(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let Some(xs) = cx.shape(0) else {
        let r = cx.attr_ints("perm")?.map(|p| vec![Dim::Unknown; p.len()]);
        return cx.one(Fact::new(x.dtype, r));
    };
    let perm = match cx.attr_ints("perm")? {
        Some(p) => p,
        None => (0..xs.len() as i64).rev().collect(),
    };
    let p = axes(&perm, xs.len())?;
    if p.len() != xs.len() {
        return Err(format!(
            "perm {perm:?} does not fit input {}",
            fmt_shape(xs)
        ));
    }
    cx.one(Fact::shaped(
        x.dtype,
        p.iter().map(|&i| xs[i].clone()).collect(),
    ))
}

fn concat(cx: &OpCx) -> Outs {
    let dtype = need!(cx.dtype(0));
    let shapes: Vec<Option<&[Dim]>> = (0..cx.node.inputs.len()).map(|i| cx.shape(i)).collect();
    let Some(rank) = shapes.iter().flatten().map(|s| s.len()).next() else {
        return cx.one(Fact::new(dtype, None));
    };
    let a = dims::axis(cx.attr_int("axis", 0)?, rank)?;
    let mut out: Option<Vec<Dim>> = None;
    let mut total = Dim::Fixed(0);
    for s in &shapes {
        let Some(s) = s else {
            total = Dim::Unknown;
            continue;
        };
        let all: Vec<String> = shapes.iter().map(|s| dims::fmt_opt(*s)).collect();
        if s.len() != rank {
            return Err(format!("inputs {} differ in rank", all.join(", ")));
        }
        total = dims::add(&total, &s[a]);
        out = Some(match out {
            None => s.to_vec(),
            Some(o) => o
                .iter()
                .zip(s.iter())
                .enumerate()
                .map(|(i, (p, q))| {
                    if i == a {
                        Ok(Dim::Unknown)
                    } else {
                        unify(p, q).map_err(|_| {
                            format!("inputs {} differ outside axis {a}", all.join(", "))
                        })
                    }
                })
                .collect::<Result<_, _>>()?,
        });
    }
    let mut out = out.unwrap_or_default();
    if let Some(d) = out.get_mut(a) {
        *d = total;
    }
    cx.one(Fact::shaped(dtype, out))
}

fn flatten(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let Some(xs) = cx.shape(0) else {
        return cx.one(Fact::new(x.dtype, Some(vec![Dim::Unknown; 2])));
    };
    let mut a = cx.attr_int("axis", 1)?;
    if a < 0 {
        a += xs.len() as i64;
    }
    if a < 0 || a > xs.len() as i64 {
        return Err(format!(
            "axis {a} is out of range for input {}",
            fmt_shape(xs)
        ));
    }
    let a = a as usize;
    cx.one(Fact::shaped(
        x.dtype,
        vec![product(&xs[..a]), product(&xs[a..])],
    ))
}

fn gather(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let (Some(xs), Some(is)) = (cx.shape(0), cx.shape(1)) else {
        return cx.one(Fact::new(x.dtype, None));
    };
    let a = dims::axis(cx.attr_int("axis", 0)?, xs.len())?;
    if let (Some(d), Some(idx)) = (fixed(&xs[a]), cx.ints(1))
        && let Some(bad) = idx.iter().find(|&&i| i < -(d as i64) || i >= d as i64)
    {
        return Err(format!(
            "index {bad} is out of range for axis {a} of input {}",
            fmt_shape(xs)
        ));
    }
    let mut s = xs[..a].to_vec();
    s.extend_from_slice(is);
    s.extend_from_slice(&xs[a + 1..]);
    cx.one(Fact::shaped(x.dtype, s))
}

fn squeeze(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let Some(xs) = cx.shape(0) else {
        return cx.one(Fact::new(x.dtype, None));
    };
    let list = if cx.opset < 13 {
        cx.attr_ints("axes")?
    } else if cx.has(1) {
        match cx.ints(1) {
            Some(v) => Some(v),
            None => return cx.one(Fact::new(x.dtype, None)),
        }
    } else {
        None
    };
    let ax = match list {
        Some(l) => axes(&l, xs.len())?,
        None => {
            if xs.iter().any(|d| fixed(d).is_none()) {
                return cx.one(Fact::new(x.dtype, None));
            }
            (0..xs.len()).filter(|&i| xs[i] == Dim::Fixed(1)).collect()
        }
    };
    if let Some(&a) = ax.iter().find(|&&a| fixed(&xs[a]).is_some_and(|v| v != 1)) {
        return Err(format!(
            "cannot squeeze axis {a} of input {}: it is not 1",
            fmt_shape(xs)
        ));
    }
    let s = (0..xs.len())
        .filter(|i| !ax.contains(i))
        .map(|i| xs[i].clone())
        .collect();
    cx.one(Fact::shaped(x.dtype, s))
}

fn unsqueeze(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let list = if cx.opset < 13 {
        cx.attr_ints("axes")?
    } else {
        cx.ints(1)
    };
    let (Some(xs), Some(list)) = (cx.shape(0), list) else {
        let rank = match (cx.shape(0), len_of(cx, 1)) {
            (Some(xs), Some(n)) if cx.opset >= 13 => Some(vec![Dim::Unknown; xs.len() + n]),
            _ => None,
        };
        return cx.one(Fact::new(x.dtype, rank));
    };
    let out_rank = xs.len() + list.len();
    let ax = axes(&list, out_rank)?;
    let mut src = xs.iter();
    let s = (0..out_rank)
        .map(|i| {
            if ax.contains(&i) {
                Dim::Fixed(1)
            } else {
                src.next().cloned().unwrap_or(Dim::Unknown)
            }
        })
        .collect();
    cx.one(Fact::shaped(x.dtype, s))
}

/// The dims Shape reports: `start..end` (opset 15) of the input's shape.
pub(super) fn shape_window(cx: &OpCx, rank: usize) -> Result<(usize, usize), String> {
    let (mut start, mut end) = (0, rank as i64);
    if cx.opset >= 15 {
        start = cx.attr_int("start", 0)?;
        end = cx.attr_int("end", rank as i64)?;
    }
    let clamp = |v: i64| {
        let v = if v < 0 { v + rank as i64 } else { v };
        v.clamp(0, rank as i64) as usize
    };
    let (s, e) = (clamp(start), clamp(end));
    Ok((s, e.max(s)))
}

fn shape_op(cx: &OpCx) -> Outs {
    let len = match cx.shape(0) {
        Some(xs) => {
            let (s, e) = shape_window(cx, xs.len())?;
            Dim::Fixed((e - s) as u64)
        }
        None => Dim::Unknown,
    };
    cx.one(Fact::shaped(DType::I64, vec![len]))
}

fn range(cx: &OpCx) -> Outs {
    let dtype = need!(cx.dtype(0));
    let scalar = |i: usize| -> Option<f64> {
        let f = cx.fact(i)?;
        if let Some([v]) = f.ints().as_deref() {
            return Some(*v as f64);
        }
        match f.konst.as_ref()?.to_f32_vec().ok()?.as_slice() {
            [v] => Some(*v as f64),
            _ => None,
        }
    };
    let n = match (scalar(0), scalar(1), scalar(2)) {
        (Some(_), Some(_), Some(0.0)) => return Err("delta is 0".into()),
        (Some(s), Some(l), Some(d)) => Dim::Fixed(((l - s) / d).ceil().max(0.0) as u64),
        // range(0, n, 1) over a symbolic n (position ids) has n elements.
        (Some(0.0), None, Some(1.0)) => match cx.fact(1).and_then(|f| f.value.as_deref()) {
            Some([SymInt::Sym(n)]) => Dim::Symbol(n.clone()),
            _ => Dim::Unknown,
        },
        _ => Dim::Unknown,
    };
    cx.one(Fact::shaped(dtype, vec![n]))
}

fn expand(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let Some(t) = target(cx, 1) else {
        let r = match (cx.shape(0), len_of(cx, 1)) {
            (Some(xs), Some(n)) => Some(vec![Dim::Unknown; xs.len().max(n)]),
            _ => None,
        };
        return cx.one(Fact::new(x.dtype, r));
    };
    let t: Vec<Dim> = t.iter().map(SymInt::to_dim).collect();
    let Some(xs) = cx.shape(0) else {
        return cx.one(Fact::new(x.dtype, None));
    };
    cx.one(Fact::shaped(x.dtype, broadcast(&[xs, &t])?))
}

fn constant_of_shape(cx: &OpCx) -> Outs {
    let dtype = match cx.node.attr_tensor("value").map_err(|e| e.to_string())? {
        Some(t) => t.dtype(),
        None => DType::F32,
    };
    let s = match target(cx, 0) {
        Some(t) => Some(t.iter().map(SymInt::to_dim).collect()),
        None => len_of(cx, 0).map(|n| vec![Dim::Unknown; n]),
    };
    cx.one(Fact::new(dtype, s))
}

fn constant(cx: &OpCx) -> Outs {
    let n = cx.node;
    let t = match n.attrs.iter().next() {
        Some((name, a)) => match (name.as_str(), a) {
            ("value", Attr::Tensor(t)) => t.clone(),
            ("value_float", Attr::Float(v)) => Tensor::scalar(*v),
            ("value_int", Attr::Int(v)) => Tensor::scalar(*v),
            ("value_floats", Attr::Floats(v)) => {
                Tensor::from_vec(vec![v.len()], v.clone()).map_err(|e| e.to_string())?
            }
            ("value_ints", Attr::Ints(v)) => {
                Tensor::from_vec(vec![v.len()], v.clone()).map_err(|e| e.to_string())?
            }
            ("value_string", _) => return cx.one(Fact::shaped(DType::String, vec![])),
            ("value_strings", Attr::Strings(v)) => {
                return cx.one(Fact::shaped(
                    DType::String,
                    vec![Dim::Fixed(v.len() as u64)],
                ));
            }
            _ => return Ok(vec![]),
        },
        None => return Err("has no value attribute".into()),
    };
    cx.one(Fact::of_tensor(&t))
}
