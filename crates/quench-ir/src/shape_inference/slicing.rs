//! Ops that cut, pad, repeat or rescale along axes: Split, Slice, Tile, TopK,
//! Pad and Resize.

use super::dims::{self, axes, fixed, fmt_shape};
use super::{Fact, OpCx, Outs, need};
use crate::{DType, Dim};

/// The rule for an ONNX op type, if this family has one.
pub(super) fn rule(op: &str) -> Option<fn(&OpCx) -> Outs> {
    Some(match op {
        "Split" => split,
        "Slice" => slice,
        "Tile" => tile,
        "TopK" => topk,
        "Pad" => pad,
        "Resize" | "Upsample" => resize,
        _ => return None,
    })
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
                && sz.iter().map(|&s| s as i128).sum::<i128>() != v as i128
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
    let (d, step) = (d as i128, step as i128);
    let fix = |v: i64| {
        let v = v as i128;
        if v < 0 { v + d } else { v }
    };
    let (s, e) = (fix(start), fix(end));
    let (first, n) = if step > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        (s, if e > s { (e - s + step - 1) / step } else { 0 })
    } else if d == 0 {
        (0, 0)
    } else {
        let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
        (s, if s > e { (s - e - step - 1) / -step } else { 0 })
    };
    (first as i64, n as i64)
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
            (Dim::Fixed(v), r) => Dim::Fixed(v.saturating_mul(r as u64)),
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
        let total = pads[k] as i128 + pads[k + ax.len()] as i128;
        s[a] = match &xs[a] {
            _ if total == 0 => xs[a].clone(),
            Dim::Fixed(v) => {
                let o = *v as i128 + total;
                if o < 0 {
                    return Err(format!(
                        "pads {pads:?} remove more than dim {a} of input {}",
                        fmt_shape(xs)
                    ));
                }
                u64::try_from(o).map_or(Dim::Unknown, Dim::Fixed)
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
