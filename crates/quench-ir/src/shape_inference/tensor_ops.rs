//! Shape-moving ops: Reshape, Transpose, Concat, Split, Slice, Gather,
//! (Un)Squeeze, Shape, Expand, Pad, Resize, Constant and friends.

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
        "Split" => split,
        "Slice" => slice,
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
        "Tile" => tile,
        "TopK" => topk,
        "ConstantOfShape" => constant_of_shape,
        "Constant" => constant,
        "Pad" => pad,
        "Resize" | "Upsample" => resize,
        _ => return None,
    })
}

/// Known contents of input `i` as target dims, or `None`.
fn target(cx: &OpCx, i: usize) -> Option<Vec<SymInt>> {
    cx.fact(i).and_then(|f| f.value.clone())
}

/// The length of 1-D input `i`, when fixed (its contents may be unknown).
fn len_of(cx: &OpCx, i: usize) -> Option<usize> {
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
                    && a.iter().product::<u64>() != b.iter().product::<u64>()
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

fn split(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let n_out = cx.node.outputs.len();
    let Some(xs) = cx.shape(0) else {
        return Ok(vec![Some(Fact::new(x.dtype, None)); n_out]);
    };
    let a = dims::axis(cx.attr_int("axis", 0)?, xs.len())?;
    let sizes: Option<Vec<i64>> = if cx.opset < 13 {
        cx.attr_ints("split")?
    } else if cx.has(1) {
        match cx.ints(1) {
            Some(v) => Some(v),
            None => {
                let mut s = xs.to_vec();
                s[a] = Dim::Unknown;
                return Ok(vec![Some(Fact::shaped(x.dtype, s)); n_out]);
            }
        }
    } else {
        None
    };
    let d = &xs[a];
    let parts: Vec<Dim> = match (sizes, fixed(d)) {
        (Some(sz), v) => {
            if sz.len() != n_out || sz.iter().any(|&s| s < 0) {
                return Err(format!("split {sz:?} does not give {n_out} outputs"));
            }
            if let Some(v) = v
                && sz.iter().sum::<i64>() != v as i64
            {
                return Err(format!(
                    "split {sz:?} does not sum to dim {a} of input {}",
                    fmt_shape(xs)
                ));
            }
            sz.iter().map(|&s| Dim::Fixed(s as u64)).collect()
        }
        (None, Some(v)) => {
            let n = n_out.max(1) as u64;
            if cx.opset >= 18 {
                let chunk = v.div_ceil(n);
                (0..n)
                    .map(|i| Dim::Fixed(chunk.min(v.saturating_sub(i * chunk))))
                    .collect()
            } else if v % n != 0 {
                return Err(format!(
                    "dim {a} of input {} does not split evenly into {n}",
                    fmt_shape(xs)
                ));
            } else {
                vec![Dim::Fixed(v / n); n_out]
            }
        }
        (None, None) => vec![Dim::Unknown; n_out],
    };
    Ok(parts
        .into_iter()
        .map(|p| {
            let mut s = xs.to_vec();
            s[a] = p;
            Some(Fact::shaped(x.dtype, s))
        })
        .collect())
}

/// Slice parameters: starts, ends, axes, steps (attributes before opset 10).
pub(super) fn slice_params(cx: &OpCx, rank: usize) -> Result<Option<SliceSpec>, String> {
    let (starts, ends, ax, steps) = if cx.opset < 10 {
        (
            cx.attr_ints("starts")?,
            cx.attr_ints("ends")?,
            cx.attr_ints("axes")?,
            None,
        )
    } else {
        (
            cx.ints(1),
            cx.ints(2),
            if cx.has(3) {
                Some(cx.ints(3).ok_or(())).transpose().ok().flatten()
            } else {
                None
            },
            if cx.has(4) {
                Some(cx.ints(4).ok_or(())).transpose().ok().flatten()
            } else {
                None
            },
        )
    };
    let (Some(starts), Some(ends)) = (starts, ends) else {
        return Ok(None);
    };
    if cx.opset >= 10 && ((cx.has(3) && ax.is_none()) || (cx.has(4) && steps.is_none())) {
        return Ok(None);
    }
    let n = starts.len();
    let ax = ax.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || ax.len() != n || steps.len() != n {
        return Err(format!(
            "starts {starts:?}, ends {ends:?}, axes {ax:?} and steps {steps:?} differ in length"
        ));
    }
    if steps.contains(&0) {
        return Err(format!("steps {steps:?} contain 0"));
    }
    Ok(Some(SliceSpec {
        starts,
        ends,
        axes: axes(&ax, rank)?,
        steps,
    }))
}

pub(super) struct SliceSpec {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub axes: Vec<usize>,
    pub steps: Vec<i64>,
}

/// ONNX Slice clamping: (first index, element count) along a dim of size `d`.
pub(super) fn slice_range(d: i64, start: i64, end: i64, step: i64) -> (i64, i64) {
    let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (fix(start), fix(end));
    if step > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        (s, if e > s { (e - s + step - 1) / step } else { 0 })
    } else {
        let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
        (s, if s > e { (s - e - step - 1) / -step } else { 0 })
    }
}

fn slice(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let Some(xs) = cx.shape(0) else {
        return cx.one(Fact::new(x.dtype, None));
    };
    let Some(spec) = slice_params(cx, xs.len())? else {
        let mut s = vec![Dim::Unknown; xs.len()];
        if let Some(Some(ax)) = (cx.opset >= 10 && cx.has(3)).then(|| cx.ints(3)) {
            s = xs.to_vec();
            for a in axes(&ax, xs.len())? {
                s[a] = Dim::Unknown;
            }
        }
        return cx.one(Fact::shaped(x.dtype, s));
    };
    let mut s = xs.to_vec();
    for (k, &a) in spec.axes.iter().enumerate() {
        let (start, end, step) = (spec.starts[k], spec.ends[k], spec.steps[k]);
        s[a] = match fixed(&xs[a]) {
            Some(d) => Dim::Fixed(slice_range(d as i64, start, end, step).1 as u64),
            None if start == 0 && step == 1 && end >= i32::MAX as i64 => xs[a].clone(),
            None => Dim::Unknown,
        };
    }
    cx.one(Fact::shaped(x.dtype, s))
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

fn tile(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let Some(xs) = cx.shape(0) else {
        return cx.one(Fact::new(x.dtype, None));
    };
    let Some(reps) = cx.ints(1) else {
        return cx.one(Fact::shaped(x.dtype, vec![Dim::Unknown; xs.len()]));
    };
    if reps.len() != xs.len() || reps.iter().any(|&r| r < 0) {
        return Err(format!(
            "repeats {reps:?} do not fit input {}",
            fmt_shape(xs)
        ));
    }
    let s = xs
        .iter()
        .zip(&reps)
        .map(|(d, &r)| match (d, r) {
            (_, 1) => d.clone(),
            (Dim::Fixed(v), r) => Dim::Fixed(v * r as u64),
            _ => Dim::Unknown,
        })
        .collect();
    cx.one(Fact::shaped(x.dtype, s))
}

fn topk(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let s = match cx.shape(0) {
        Some(xs) => {
            let a = dims::axis(cx.attr_int("axis", -1)?, xs.len())?;
            let k = if cx.opset < 10 {
                Some(cx.attr_int("k", -1)?)
            } else {
                cx.ints(1).and_then(|v| v.first().copied())
            };
            let mut s = xs.to_vec();
            s[a] = k.map_or(Dim::Unknown, dims::dim_from_i64);
            Some(s)
        }
        None => None,
    };
    Ok(vec![
        Some(Fact::new(x.dtype, s.clone())),
        Some(Fact::new(DType::I64, s)),
    ])
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

fn pad(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let Some(xs) = cx.shape(0) else {
        return cx.one(Fact::new(x.dtype, None));
    };
    let pads = if cx.opset < 11 {
        cx.attr_ints("pads")?
    } else {
        cx.ints(1)
    };
    let ax: Option<Vec<usize>> = if cx.opset >= 18 && cx.has(3) {
        match cx.ints(3) {
            Some(a) => Some(axes(&a, xs.len())?),
            None => None,
        }
    } else {
        Some((0..xs.len()).collect())
    };
    let (Some(pads), Some(ax)) = (pads, ax) else {
        return cx.one(Fact::shaped(x.dtype, vec![Dim::Unknown; xs.len()]));
    };
    if pads.len() != 2 * ax.len() {
        return Err(format!(
            "pads {pads:?} do not fit input {} ({} axes)",
            fmt_shape(xs),
            ax.len()
        ));
    }
    let mut s = xs.to_vec();
    for (k, &a) in ax.iter().enumerate() {
        let total = pads[k] + pads[k + ax.len()];
        s[a] = match &xs[a] {
            _ if total == 0 => xs[a].clone(),
            Dim::Fixed(v) => {
                let o = *v as i64 + total;
                if o < 0 {
                    return Err(format!(
                        "pads {pads:?} remove more than dim {a} of input {}",
                        fmt_shape(xs)
                    ));
                }
                Dim::Fixed(o as u64)
            }
            _ => Dim::Unknown,
        };
    }
    cx.one(Fact::shaped(x.dtype, s))
}

fn resize(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let Some(xs) = cx.shape(0) else {
        return cx.one(Fact::new(x.dtype, None));
    };
    let rank = xs.len();
    let upsample = cx.node.op_type == "Upsample";
    let (scales_at, sizes_at) = match (upsample, cx.opset) {
        (_, ..=10) | (true, _) => (1, None),
        _ => (2, Some(3)),
    };
    let ax: Vec<usize> = match cx.attr_ints("axes")? {
        Some(a) if cx.opset >= 18 => axes(&a, rank)?,
        _ => (0..rank).collect(),
    };
    let unknown = || cx.one(Fact::shaped(x.dtype, vec![Dim::Unknown; rank]));
    let mut s = xs.to_vec();
    if let Some(si) = sizes_at.filter(|&i| cx.has(i)) {
        let Some(sizes) = cx.ints(si) else {
            return unknown();
        };
        if sizes.len() != ax.len() {
            return Err(format!(
                "sizes {sizes:?} do not fit input {}",
                fmt_shape(xs)
            ));
        }
        let policy = if cx.opset >= 18 {
            cx.attr_string("keep_aspect_ratio_policy", "stretch")?
        } else {
            "stretch".into()
        };
        if policy == "stretch" {
            for (k, &a) in ax.iter().enumerate() {
                s[a] = dims::dim_from_i64(sizes[k]);
            }
        } else {
            let Some(d) = ax
                .iter()
                .map(|&a| fixed(&xs[a]))
                .collect::<Option<Vec<_>>>()
            else {
                return unknown();
            };
            let ratios = sizes.iter().zip(&d).map(|(&o, &i)| o as f32 / i as f32);
            let scale = if policy == "not_larger" {
                ratios.fold(f32::INFINITY, f32::min)
            } else {
                ratios.fold(f32::NEG_INFINITY, f32::max)
            };
            for (k, &a) in ax.iter().enumerate() {
                s[a] = Dim::Fixed((scale * d[k] as f32 + 0.5) as u64);
            }
        }
        return cx.one(Fact::shaped(x.dtype, s));
    }
    let scales = if upsample && cx.opset < 9 {
        cx.node
            .attr_floats("scales")
            .map_err(|e| e.to_string())?
            .map(<[f32]>::to_vec)
    } else {
        cx.fact(scales_at)
            .and_then(|f| f.konst.as_ref())
            .and_then(|t| t.to_f32_vec().ok())
    };
    let Some(scales) = scales.filter(|s| !s.is_empty()) else {
        return unknown();
    };
    if scales.len() != ax.len() {
        return Err(format!(
            "scales {scales:?} do not fit input {}",
            fmt_shape(xs)
        ));
    }
    for (k, &a) in ax.iter().enumerate() {
        s[a] = match &xs[a] {
            Dim::Fixed(v) => Dim::Fixed((*v as f32 * scales[k]).floor().max(0.0) as u64),
            d if scales[k] == 1.0 => d.clone(),
            _ => Dim::Unknown,
        };
    }
    cx.one(Fact::shaped(x.dtype, s))
}
