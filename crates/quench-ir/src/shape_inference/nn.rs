//! Network layers: convolutions, pooling, normalisation, matrix products,
//! recurrent layers and reductions.

use super::dims::{self, axes, broadcast, fixed, fmt_opt, fmt_shape, unify};
use super::{Fact, OpCx, Outs, need};
use crate::{DType, Dim};

/// The rule for an ONNX op type, if this family has one.
pub(super) fn rule(op: &str) -> Option<fn(&OpCx) -> Outs> {
    Some(match op {
        "Conv" => |cx| conv(cx, 0, 1, None),
        "ConvInteger" => |cx| conv(cx, 0, 1, Some(DType::I32)),
        "QLinearConv" => |cx| {
            let out = cx.dtype(7).or(cx.dtype(0));
            match out {
                Some(d) => conv(cx, 0, 3, Some(d)),
                None => Ok(vec![]),
            }
        },
        "ConvTranspose" => conv_transpose,
        "MaxPool" | "AveragePool" | "LpPool" => pool,
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => global_pool,
        "BatchNormalization" => batch_norm,
        "LayerNormalization" => layer_norm,
        "GroupNormalization" => |cx| {
            let x = need!(cx.fact(0));
            cx.one(Fact::new(x.dtype, x.shape.clone()))
        },
        "MatMul" => |cx| matmul(cx, 0, 1, None),
        "MatMulInteger" => |cx| matmul(cx, 0, 1, Some(DType::I32)),
        "QLinearMatMul" => |cx| match cx.dtype(7).or(cx.dtype(0)) {
            Some(d) => matmul(cx, 0, 3, Some(d)),
            None => Ok(vec![]),
        },
        "Gemm" => gemm,
        "LSTM" | "GRU" | "RNN" => rnn,
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
        | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => reduce,
        "ArgMax" | "ArgMin" => arg_reduce,
        _ => return None,
    })
}

/// Spatial parameters shared by Conv and the pools.
struct Window {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    pads: Vec<i64>,
    auto_pad: String,
    ceil: bool,
}

impl Window {
    fn read(cx: &OpCx, kernel: Vec<i64>, ceil_ok: bool) -> Result<Window, String> {
        let n = kernel.len();
        let list = |name: &str, default: i64, len: usize| -> Result<Vec<i64>, String> {
            match cx.attr_ints(name)? {
                Some(v) if v.len() == len => Ok(v),
                Some(v) => Err(format!(
                    "attribute '{name}' has {} values, expected {len}",
                    v.len()
                )),
                None => Ok(vec![default; len]),
            }
        };
        let w = Window {
            strides: list("strides", 1, n)?,
            dilations: list("dilations", 1, n)?,
            pads: list("pads", 0, 2 * n)?,
            auto_pad: cx.attr_string("auto_pad", "NOTSET")?,
            ceil: ceil_ok && cx.attr_int("ceil_mode", 0)? != 0,
            kernel,
        };
        if w.strides.iter().chain(&w.dilations).any(|&v| v < 1) || w.kernel.iter().any(|&k| k < 1) {
            return Err(format!(
                "kernel {:?}, strides {:?} and dilations {:?} must be positive",
                w.kernel, w.strides, w.dilations
            ));
        }
        Ok(w)
    }

    /// Output size along spatial axis `i` of an input of size `d`.
    fn out(&self, i: usize, d: &Dim) -> Result<Dim, String> {
        let (k, s, dl) = (self.kernel[i], self.strides[i], self.dilations[i]);
        let window = (k as i128 - 1) * dl as i128 + 1;
        let (pb, pe) = match self.auto_pad.as_str() {
            "VALID" => (0, 0),
            "SAME_UPPER" | "SAME_LOWER" => {
                return Ok(match d {
                    Dim::Fixed(v) => Dim::Fixed(v.div_ceil(s as u64)),
                    _ if s == 1 => d.clone(),
                    _ => Dim::Unknown,
                });
            }
            _ => (self.pads[i], self.pads[i + self.kernel.len()]),
        };
        let Dim::Fixed(v) = d else {
            return Ok(if window == 1 && s == 1 && pb == 0 && pe == 0 {
                d.clone()
            } else {
                Dim::Unknown
            });
        };
        // i128: attribute values come from the file and may be absurd.
        let (v, pb, pe, window, s) = (*v as i128, pb as i128, pe as i128, window, s as i128);
        let span = v + pb + pe - window;
        if span < 0 {
            return Err(format!(
                "spatial dim {v} (padded by {pb}+{pe}) is smaller than the window {window}"
            ));
        }
        let mut o = if self.ceil {
            (span + s - 1) / s + 1
        } else {
            span / s + 1
        };
        if self.ceil && (o - 1) * s >= v + pb {
            o -= 1;
        }
        Ok(fixed_i128(o))
    }
}

/// A computed size as a dim; negative or absurd sizes are unknown.
fn fixed_i128(v: i128) -> Dim {
    u64::try_from(v).map_or(Dim::Unknown, Dim::Fixed)
}

/// Conv, ConvInteger and QLinearConv: x is input `xi`, weights input `wi`.
fn conv(cx: &OpCx, xi: usize, wi: usize, out: Option<DType>) -> Outs {
    let x = need!(cx.fact(xi));
    let dtype = out.unwrap_or(x.dtype);
    let (Some(xs), Some(ws)) = (cx.shape(xi), cx.shape(wi)) else {
        let rank = cx
            .shape(xi)
            .map(<[Dim]>::len)
            .or(cx.shape(wi).map(<[Dim]>::len));
        return cx.one(Fact::new(dtype, rank.map(|r| vec![Dim::Unknown; r])));
    };
    if xs.len() < 3 || xs.len() != ws.len() {
        return Err(format!(
            "input {} and weights {} must have the same rank, at least 3",
            fmt_shape(xs),
            fmt_shape(ws)
        ));
    }
    let group = positive_group(cx)?;
    if let (Some(c), Some(wc)) = (fixed(&xs[1]), fixed(&ws[1]))
        && c as u128 != wc as u128 * group as u128
    {
        return Err(format!(
            "input {} has {c} channels but weights {} with group {group} expect {}",
            fmt_shape(xs),
            fmt_shape(ws),
            wc as u128 * group as u128
        ));
    }
    let kernel = match cx.attr_ints("kernel_shape")? {
        Some(k) => k,
        None => match dims::all_fixed(&ws[2..]) {
            Some(k) => k.into_iter().map(|v| v as i64).collect(),
            None => {
                let mut s = vec![xs[0].clone(), ws[0].clone()];
                s.extend(std::iter::repeat_n(Dim::Unknown, xs.len() - 2));
                return cx.one(Fact::shaped(dtype, s));
            }
        },
    };
    if kernel.len() != xs.len() - 2 {
        return Err(format!(
            "kernel_shape {kernel:?} does not fit input {}",
            fmt_shape(xs)
        ));
    }
    let w = Window::read(cx, kernel, false)?;
    let mut s = vec![xs[0].clone(), ws[0].clone()];
    for (i, d) in xs[2..].iter().enumerate() {
        s.push(w.out(i, d)?);
    }
    cx.one(Fact::shaped(dtype, s))
}

fn positive_group(cx: &OpCx) -> Result<i64, String> {
    match cx.attr_int("group", 1)? {
        g if g >= 1 => Ok(g),
        g => Err(format!("attribute 'group' is {g}, expected >= 1")),
    }
}

fn conv_transpose(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let (Some(xs), Some(ws)) = (cx.shape(0), cx.shape(1)) else {
        return cx.one(Fact::new(x.dtype, x.rank().map(|r| vec![Dim::Unknown; r])));
    };
    if xs.len() < 3 || xs.len() != ws.len() {
        return Err(format!(
            "input {} and weights {} must have the same rank, at least 3",
            fmt_shape(xs),
            fmt_shape(ws)
        ));
    }
    let n = xs.len() - 2;
    let group = positive_group(cx)?;
    if let (Some(c), Some(wc)) = (fixed(&xs[1]), fixed(&ws[0]))
        && c != wc
    {
        return Err(format!(
            "input {} has {c} channels but weights {} expect {wc}",
            fmt_shape(xs),
            fmt_shape(ws)
        ));
    }
    let channels = match fixed(&ws[1]) {
        Some(c) => fixed_i128(c as i128 * group as i128),
        None => Dim::Unknown,
    };
    let mut s = vec![xs[0].clone(), channels];
    if let Some(os) = cx.attr_ints("output_shape")? {
        let os = if os.len() == xs.len() {
            &os[2..]
        } else {
            &os[..]
        };
        s.extend(os.iter().map(|&v| dims::dim_from_i64(v)));
        return cx.one(Fact::shaped(x.dtype, s));
    }
    let kernel = match cx.attr_ints("kernel_shape")? {
        Some(k) => Some(k),
        None => dims::all_fixed(&ws[2..]).map(|k| k.into_iter().map(|v| v as i64).collect()),
    };
    let Some(kernel) = kernel.filter(|k| k.len() == n) else {
        s.extend(std::iter::repeat_n(Dim::Unknown, n));
        return cx.one(Fact::shaped(x.dtype, s));
    };
    let w = Window::read(cx, kernel, false)?;
    let out_pad = cx.attr_ints("output_padding")?.unwrap_or(vec![0; n]);
    for (i, d) in xs[2..].iter().enumerate() {
        let Some(v) = fixed(d) else {
            s.push(Dim::Unknown);
            continue;
        };
        let st = w.strides[i] as i128;
        let o = match w.auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => v as i128 * st,
            _ => {
                let (pb, pe) = if w.auto_pad == "VALID" {
                    (0, 0)
                } else {
                    (w.pads[i] as i128, w.pads[i + n] as i128)
                };
                st * (v as i128 - 1)
                    + out_pad.get(i).copied().unwrap_or(0) as i128
                    + (w.kernel[i] as i128 - 1) * w.dilations[i] as i128
                    + 1
                    - pb
                    - pe
            }
        };
        s.push(fixed_i128(o));
    }
    cx.one(Fact::shaped(x.dtype, s))
}

fn pool(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let outs = |s: Option<Vec<Dim>>| {
        Ok(vec![
            Some(Fact::new(x.dtype, s.clone())),
            Some(Fact::new(DType::I64, s)),
        ])
    };
    let Some(xs) = cx.shape(0) else {
        return outs(None);
    };
    let kernel = cx
        .attr_ints("kernel_shape")?
        .ok_or("attribute 'kernel_shape' is missing")?;
    if xs.len() < 3 || kernel.len() != xs.len() - 2 {
        return Err(format!(
            "kernel_shape {kernel:?} does not fit input {}",
            fmt_shape(xs)
        ));
    }
    let w = Window::read(cx, kernel, true)?;
    let mut s = xs[..2].to_vec();
    for (i, d) in xs[2..].iter().enumerate() {
        s.push(w.out(i, d)?);
    }
    outs(Some(s))
}

fn global_pool(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let shape = match cx.shape(0) {
        Some(xs) if xs.len() < 2 => {
            return Err(format!("input {} needs rank >= 2", fmt_shape(xs)));
        }
        Some(xs) => {
            let mut s = xs[..2].to_vec();
            s.resize(xs.len(), Dim::Fixed(1));
            Some(s)
        }
        None => None,
    };
    cx.one(Fact::new(x.dtype, shape))
}

fn batch_norm(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    if let (Some(xs), Some(sc)) = (cx.shape(0), cx.shape(1))
        && let (Some(c), Some(Some(k))) = (xs.get(1), sc.first().map(fixed))
        && fixed(c).is_some_and(|c| c != k)
    {
        return Err(format!(
            "input {} has {c} channels but scale has shape {}",
            fmt_shape(xs),
            fmt_shape(sc)
        ));
    }
    let stat = cx.fact(3).map(|f| Fact::new(f.dtype, f.shape.clone()));
    Ok(vec![
        Some(Fact::new(x.dtype, x.shape.clone())),
        stat.clone(),
        stat.clone(),
        stat.clone(),
        stat,
    ])
}

fn layer_norm(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let stash = DType::from_onnx(cx.attr_int("stash_type", 1)? as i32).unwrap_or(DType::F32);
    let stat = match cx.shape(0) {
        Some(xs) => {
            let a = dims::axis(cx.attr_int("axis", -1)?, xs.len())?;
            let mut s = xs[..a].to_vec();
            s.resize(xs.len(), Dim::Fixed(1));
            Some(s)
        }
        None => None,
    };
    Ok(vec![
        Some(Fact::new(x.dtype, x.shape.clone())),
        Some(Fact::new(stash, stat.clone())),
        Some(Fact::new(stash, stat)),
    ])
}

/// numpy matmul of inputs `ai` and `bi`.
fn matmul(cx: &OpCx, ai: usize, bi: usize, out: Option<DType>) -> Outs {
    let a = need!(cx.fact(ai));
    let dtype = out.unwrap_or(a.dtype);
    let (Some(xa), Some(xb)) = (cx.shape(ai), cx.shape(bi)) else {
        return cx.one(Fact::new(dtype, None));
    };
    cx.one(Fact::shaped(dtype, matmul_shape(xa, xb)?))
}

pub(super) fn matmul_shape(xa: &[Dim], xb: &[Dim]) -> Result<Vec<Dim>, String> {
    if xa.is_empty() || xb.is_empty() {
        return Err(format!(
            "operands {} and {} must not be scalars",
            fmt_shape(xa),
            fmt_shape(xb)
        ));
    }
    let one = [Dim::Fixed(1)];
    let a2: Vec<Dim> = if xa.len() == 1 {
        [&one[..], xa].concat()
    } else {
        xa.to_vec()
    };
    let b2: Vec<Dim> = if xb.len() == 1 {
        [xb, &one[..]].concat()
    } else {
        xb.to_vec()
    };
    let (ra, rb) = (a2.len(), b2.len());
    unify(&a2[ra - 1], &b2[rb - 2]).map_err(|_| {
        format!(
            "inner dimensions differ: {} x {} ({} vs {})",
            fmt_shape(xa),
            fmt_shape(xb),
            a2[ra - 1],
            b2[rb - 2]
        )
    })?;
    let mut s = broadcast(&[&a2[..ra - 2], &b2[..rb - 2]])
        .map_err(|e| format!("batch dims of {} x {}: {e}", fmt_shape(xa), fmt_shape(xb)))?;
    if xa.len() > 1 {
        s.push(a2[ra - 2].clone());
    }
    if xb.len() > 1 {
        s.push(b2[rb - 1].clone());
    }
    Ok(s)
}

fn gemm(cx: &OpCx) -> Outs {
    let a = need!(cx.fact(0));
    let (Some(xa), Some(xb)) = (cx.shape(0), cx.shape(1)) else {
        return cx.one(Fact::new(a.dtype, Some(vec![Dim::Unknown; 2])));
    };
    if xa.len() != 2 || xb.len() != 2 {
        return Err(format!(
            "A {} and B {} must be matrices",
            fmt_shape(xa),
            fmt_shape(xb)
        ));
    }
    let ta = cx.attr_int("transA", 0)? != 0;
    let tb = cx.attr_int("transB", 0)? != 0;
    let (m, ka) = if ta {
        (&xa[1], &xa[0])
    } else {
        (&xa[0], &xa[1])
    };
    let (kb, n) = if tb {
        (&xb[1], &xb[0])
    } else {
        (&xb[0], &xb[1])
    };
    unify(ka, kb).map_err(|_| {
        format!(
            "inner dimensions differ: A {} (transA={ta}) x B {} (transB={tb})",
            fmt_shape(xa),
            fmt_shape(xb)
        )
    })?;
    let out = vec![m.clone(), n.clone()];
    if let Some(c) = cx.shape(2) {
        let b = broadcast(&[&out, c]).map_err(|e| format!("C does not broadcast: {e}"))?;
        if b.len() > 2
            || b.iter()
                .zip(&out)
                .any(|(x, y)| fixed(y).is_some() && x != y)
        {
            return Err(format!(
                "C {} does not broadcast to {}",
                fmt_shape(c),
                fmt_shape(&out)
            ));
        }
    }
    cx.one(Fact::shaped(a.dtype, out))
}

/// LSTM, GRU and RNN: Y, Y_h (and LSTM's Y_c).
fn rnn(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let nd = match cx.attr_string("direction", "forward")?.as_str() {
        "bidirectional" => 2,
        _ => 1,
    };
    let hidden = match cx.attr_int("hidden_size", -1)? {
        h if h > 0 => Dim::Fixed(h as u64),
        _ => cx
            .shape(2)
            .and_then(|r| r.get(2).cloned())
            .unwrap_or(Dim::Unknown),
    };
    let layout = if cx.opset >= 14 {
        cx.attr_int("layout", 0)?
    } else {
        0
    };
    let (seq, batch) = match cx.shape(0) {
        Some(xs) if xs.len() == 3 => {
            if layout == 0 {
                (xs[0].clone(), xs[1].clone())
            } else {
                (xs[1].clone(), xs[0].clone())
            }
        }
        Some(xs) => return Err(format!("X {} must have rank 3", fmt_shape(xs))),
        None => (Dim::Unknown, Dim::Unknown),
    };
    if let (Some(xs), Some(ws)) = (cx.shape(0), cx.shape(1))
        && let (Some(i), Some(wi)) = (xs.get(2).and_then(fixed), ws.get(2).and_then(fixed))
        && i != wi
    {
        return Err(format!(
            "X {} has input size {i} but W {} expects {wi}",
            fmt_shape(xs),
            fmt_shape(ws)
        ));
    }
    let nd = Dim::Fixed(nd);
    let (y, yh) = if layout == 0 {
        (
            vec![seq, nd.clone(), batch.clone(), hidden.clone()],
            vec![nd, batch, hidden],
        )
    } else {
        (
            vec![batch.clone(), seq, nd.clone(), hidden.clone()],
            vec![batch, nd, hidden],
        )
    };
    Ok(vec![
        Some(Fact::shaped(x.dtype, y)),
        Some(Fact::shaped(x.dtype, yh.clone())),
        Some(Fact::shaped(x.dtype, yh)),
    ])
}

/// Reductions: axes are an attribute until opset 13 (ReduceSum) or 18 (the rest).
fn reduce(cx: &OpCx) -> Outs {
    let x = need!(cx.fact(0));
    let keep = cx.attr_int("keepdims", 1)? != 0;
    let since = if cx.node.op_type == "ReduceSum" {
        13
    } else {
        18
    };
    let Some(xs) = cx.shape(0) else {
        return cx.one(Fact::new(x.dtype, None));
    };
    let list = if cx.opset < since {
        cx.attr_ints("axes")?
    } else if cx.has(1) {
        match cx.ints(1) {
            Some(v) => Some(v),
            None => {
                let s = if keep {
                    Some(vec![Dim::Unknown; xs.len()])
                } else {
                    None
                };
                return cx.one(Fact::new(x.dtype, s));
            }
        }
    } else {
        None
    };
    let list = list.unwrap_or_default();
    if list.is_empty() && cx.opset >= since && cx.attr_int("noop_with_empty_axes", 0)? != 0 {
        return cx.one(Fact::new(x.dtype, x.shape.clone()));
    }
    let ax = if list.is_empty() {
        (0..xs.len()).collect()
    } else {
        axes(&list, xs.len()).map_err(|e| format!("{e} (input {})", fmt_opt(Some(xs))))?
    };
    cx.one(Fact::shaped(x.dtype, reduced(xs, &ax, keep)))
}

fn reduced(xs: &[Dim], ax: &[usize], keep: bool) -> Vec<Dim> {
    let mut s = Vec::new();
    for (i, d) in xs.iter().enumerate() {
        if !ax.contains(&i) {
            s.push(d.clone());
        } else if keep {
            s.push(Dim::Fixed(1));
        }
    }
    s
}

fn arg_reduce(cx: &OpCx) -> Outs {
    let Some(xs) = cx.shape(0) else {
        return cx.one(Fact::new(DType::I64, None));
    };
    let a = dims::axis(cx.attr_int("axis", 0)?, xs.len())?;
    let keep = cx.attr_int("keepdims", 1)? != 0;
    cx.one(Fact::shaped(DType::I64, reduced(xs, &[a], keep)))
}
