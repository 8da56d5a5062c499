//! Data-movement ops: Reshape, Flatten, Squeeze, Unsqueeze, Identity (free:
//! the gradient is the output gradient), Transpose, Slice, Gather, Concat
//! (index maps: backward scatters the gradient back), Shape and Constant.

use crate::op::{Ctx, Fwd, Grad, Op, Saved, axis, check_len, opt_in, req, saved};
use crate::{Result, TrainError, invalid, unsupported};
use quench_ir::{Attr, Node, Tensor, TensorData};
use std::sync::Arc;

/// The value of a Constant node.
pub fn constant_value(node: &Node) -> Result<Tensor> {
    if let Some(t) = node.attr_tensor("value")? {
        return Ok(t.clone());
    }
    match node.attrs.iter().next() {
        Some((k, Attr::Float(v))) if k == "value_float" => Ok(Tensor::scalar(*v)),
        Some((k, Attr::Int(v))) if k == "value_int" => Ok(Tensor::scalar(*v)),
        Some((k, Attr::Floats(v))) if k == "value_floats" => {
            Ok(Tensor::from_vec(vec![v.len()], v.clone())?)
        }
        Some((k, Attr::Ints(v))) if k == "value_ints" => {
            Ok(Tensor::from_vec(vec![v.len()], v.clone())?)
        }
        Some((k, _)) => unsupported!("Constant with attribute {k}"),
        None => invalid!("Constant without a value"),
    }
}

/// Picks elements of `t` by flat index.
fn pick(t: &Tensor, shape: Vec<usize>, idx: &[usize]) -> Result<Tensor> {
    quench_ir::with_numeric_slice!(t.data(), v => {
        Ok(Tensor::from_vec(shape, idx.iter().map(|&i| v[i]).collect())?)
    }, _ => match t.data() {
        TensorData::Bool(v) => Ok(Tensor::from_vec(shape, idx.iter().map(|&i| v[i]).collect())?),
        _ => unsupported!("dtype {:?} in a data-movement op", t.dtype()),
    })
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

#[derive(Clone, Copy, Debug)]
enum ViewKind {
    Reshape { allowzero: bool },
    Flatten(i64),
    Squeeze,
    Unsqueeze,
    Identity,
}

/// Ops that only change the shape.
pub struct View {
    kind: ViewKind,
    axes_attr: Option<Vec<i64>>,
}

pub fn build_view(node: &Node, opset: i64) -> Result<Box<dyn Op>> {
    let kind = match node.op_type.as_str() {
        "Reshape" => ViewKind::Reshape {
            allowzero: node.attr_int_or("allowzero", 0)? != 0,
        },
        "Flatten" => ViewKind::Flatten(node.attr_int_or("axis", 1)?),
        "Squeeze" => ViewKind::Squeeze,
        "Unsqueeze" => ViewKind::Unsqueeze,
        _ => ViewKind::Identity,
    };
    let axes_attr = if opset < 13 {
        node.attr_ints("axes")?.map(|a| a.to_vec())
    } else {
        None
    };
    Ok(Box::new(View { kind, axes_attr }))
}

impl View {
    fn axes(&self, x: &[Option<Arc<Tensor>>]) -> Result<Option<Vec<i64>>> {
        if let Some(a) = &self.axes_attr {
            return Ok(Some(a.clone()));
        }
        Ok(match opt_in(x, 1) {
            Some(t) => Some(t.to_i64_vec()?),
            None => None,
        })
    }

    fn out_shape(&self, x: &[Option<Arc<Tensor>>], s: &[usize]) -> Result<Vec<usize>> {
        let n: usize = s.iter().product();
        Ok(match self.kind {
            ViewKind::Identity => s.to_vec(),
            ViewKind::Flatten(a) => {
                let a = if a < 0 { a + s.len() as i64 } else { a };
                if a < 0 || a > s.len() as i64 {
                    invalid!("axis {a} is out of range for rank {}", s.len());
                }
                let a = a as usize;
                vec![s[..a].iter().product(), s[a..].iter().product()]
            }
            ViewKind::Reshape { allowzero } => {
                let want = req(x, 1)?.to_i64_vec()?;
                let mut out = Vec::with_capacity(want.len());
                let mut infer = None;
                for (i, &d) in want.iter().enumerate() {
                    out.push(match d {
                        -1 if infer.is_none() => {
                            infer = Some(i);
                            1
                        }
                        0 if !allowzero => match s.get(i) {
                            Some(&v) => v,
                            None => invalid!(
                                "shape {want:?} copies dim {i} of input {s:?}, which has none"
                            ),
                        },
                        d if d >= 0 => d as usize,
                        _ => invalid!("shape {want:?} is not a valid reshape target"),
                    });
                }
                if let Some(i) = infer {
                    let known: usize = out.iter().product();
                    if known == 0 || !n.is_multiple_of(known) {
                        invalid!("cannot reshape {s:?} to {want:?}");
                    }
                    out[i] = n / known;
                }
                out
            }
            ViewKind::Squeeze => match self.axes(x)? {
                None => s.iter().copied().filter(|&d| d != 1).collect(),
                Some(ax) => {
                    let ax = ax
                        .iter()
                        .map(|&a| axis(a, s.len()))
                        .collect::<Result<Vec<_>>>()?;
                    if ax.iter().any(|&a| s[a] != 1) {
                        invalid!("cannot squeeze axes {ax:?} of shape {s:?}");
                    }
                    s.iter()
                        .enumerate()
                        .filter(|(i, _)| !ax.contains(i))
                        .map(|(_, &d)| d)
                        .collect()
                }
            },
            ViewKind::Unsqueeze => {
                let Some(ax) = self.axes(x)? else {
                    invalid!("Unsqueeze needs axes");
                };
                let r = s.len() + ax.len();
                let ax = ax.iter().map(|&a| axis(a, r)).collect::<Result<Vec<_>>>()?;
                let mut it = s.iter();
                (0..r)
                    .map(|i| {
                        if ax.contains(&i) {
                            1
                        } else {
                            it.next().copied().unwrap_or(1)
                        }
                    })
                    .collect()
            }
        })
    }
}

struct SavedLen(usize);

impl Op for View {
    fn forward(&self, _cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let t = req(x, 0)?;
        let shape = self.out_shape(x, t.shape())?;
        if shape.iter().product::<usize>() != t.numel() {
            invalid!("cannot view {:?} as {shape:?}", t.shape());
        }
        let y = Tensor::new(shape, t.data().clone())?;
        let sv = (need.first() == Some(&true)).then(|| Box::new(SavedLen(t.numel())) as Saved);
        Ok(Fwd::new(vec![y], sv))
    }

    fn backward(
        &self,
        _cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        _need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let n = saved::<SavedLen>(sv)?.0;
        match gy.first() {
            Some(Some(g)) => {
                check_len(g, n)?;
                Ok(vec![Some(g.clone())])
            }
            _ => Ok(vec![None]),
        }
    }
}

/// Ops whose output elements are input elements picked by an index map.
pub struct Gatherish {
    op: String,
    perm: Option<Vec<i64>>,
    axis: i64,
}

pub fn build_gatherish(node: &Node) -> Result<Box<dyn Op>> {
    Ok(Box::new(Gatherish {
        op: node.op_type.clone(),
        perm: node.attr_ints("perm")?.map(|p| p.to_vec()),
        axis: node.attr_int_or("axis", 0)?,
    }))
}

struct SavedIdx {
    idx: Vec<usize>,
    in_len: usize,
}

impl Gatherish {
    /// Output shape and, per output element, the flat input index.
    fn index_map(
        &self,
        x: &[Option<Arc<Tensor>>],
        s: &[usize],
    ) -> Result<(Vec<usize>, Vec<usize>)> {
        let r = s.len();
        let st = strides(s);
        match self.op.as_str() {
            "Transpose" => {
                let perm: Vec<usize> = match &self.perm {
                    Some(p) => p.iter().map(|&a| axis(a, r)).collect::<Result<_>>()?,
                    None => (0..r).rev().collect(),
                };
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if sorted != (0..r).collect::<Vec<_>>() {
                    invalid!("perm {perm:?} is not a permutation of 0..{r}");
                }
                let out: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
                let ost: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
                Ok((out.clone(), walk(&out, &ost, 0)))
            }
            "Slice" => {
                let starts = req(x, 1)?.to_i64_vec()?;
                let ends = req(x, 2)?.to_i64_vec()?;
                let axes = match opt_in(x, 3) {
                    Some(t) => t.to_i64_vec()?,
                    None => (0..starts.len() as i64).collect(),
                };
                let steps = match opt_in(x, 4) {
                    Some(t) => t.to_i64_vec()?,
                    None => vec![1; starts.len()],
                };
                if ends.len() != starts.len()
                    || axes.len() != starts.len()
                    || steps.len() != starts.len()
                {
                    invalid!("starts/ends/axes/steps have different lengths");
                }
                let mut out = s.to_vec();
                let mut first = vec![0i64; r];
                let mut step = vec![1i64; r];
                for i in 0..starts.len() {
                    let a = axis(axes[i], r)?;
                    let d = s[a] as i64;
                    let k = steps[i];
                    if k == 0 {
                        invalid!("Slice step 0");
                    }
                    let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
                    let norm = |v: i64| if v < 0 { v + d } else { v };
                    let (b, e) = if k > 0 {
                        (clamp(norm(starts[i]), 0, d), clamp(norm(ends[i]), 0, d))
                    } else {
                        (
                            clamp(norm(starts[i]), -1, d - 1),
                            clamp(norm(ends[i]), -1, d - 1),
                        )
                    };
                    let n = if k > 0 {
                        (e - b + k - 1) / k
                    } else {
                        (b - e - k - 1) / -k
                    };
                    out[a] = n.max(0) as usize;
                    first[a] = b;
                    step[a] = k;
                }
                let base: i64 = (0..r).map(|i| first[i] * st[i] as i64).sum();
                let ost: Vec<i64> = (0..r).map(|i| step[i] * st[i] as i64).collect();
                let n: usize = out.iter().product();
                let mut idx = Vec::with_capacity(n);
                let mut cur = vec![0usize; r];
                for _ in 0..n {
                    let off: i64 = base + (0..r).map(|i| cur[i] as i64 * ost[i]).sum::<i64>();
                    idx.push(off as usize);
                    for d in (0..r).rev() {
                        cur[d] += 1;
                        if cur[d] < out[d] {
                            break;
                        }
                        cur[d] = 0;
                    }
                }
                Ok((out, idx))
            }
            "Gather" => {
                let a = axis(self.axis, r)?;
                let ti = req(x, 1)?;
                let ind = ti.to_i64_vec()?;
                let d = s[a] as i64;
                let mut out = s[..a].to_vec();
                out.extend(ti.shape());
                out.extend(&s[a + 1..]);
                let outer: usize = s[..a].iter().product();
                let inner: usize = s[a + 1..].iter().product();
                let mut idx = Vec::with_capacity(outer * ind.len() * inner);
                for o in 0..outer {
                    for &k in &ind {
                        let k = if k < 0 { k + d } else { k };
                        if k < 0 || k >= d {
                            invalid!("index {k} is out of range for axis {a} of size {d}");
                        }
                        let base = (o * s[a] + k as usize) * inner;
                        idx.extend(base..base + inner);
                    }
                }
                Ok((out, idx))
            }
            o => Err(TrainError::Unsupported(o.to_string())),
        }
    }
}

/// Flat offsets of every element of a strided view.
fn walk(out: &[usize], ost: &[usize], base: usize) -> Vec<usize> {
    let n: usize = out.iter().product();
    let r = out.len();
    let mut idx = Vec::with_capacity(n);
    let mut cur = vec![0usize; r];
    let mut off = base;
    for _ in 0..n {
        idx.push(off);
        for d in (0..r).rev() {
            cur[d] += 1;
            off += ost[d];
            if cur[d] < out[d] {
                break;
            }
            off -= ost[d] * out[d];
            cur[d] = 0;
        }
    }
    idx
}

impl Op for Gatherish {
    fn forward(&self, _cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let t = req(x, 0)?;
        let (shape, idx) = self.index_map(x, t.shape())?;
        let y = pick(t, shape, &idx)?;
        let sv = (need.first() == Some(&true)).then(|| {
            Box::new(SavedIdx {
                idx,
                in_len: t.numel(),
            }) as Saved
        });
        Ok(Fwd::new(vec![y], sv))
    }

    fn backward(
        &self,
        _cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        _need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let sv: &SavedIdx = saved(sv)?;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None]);
        };
        check_len(g, sv.idx.len())?;
        let mut dx = vec![0.0; sv.in_len];
        for (&i, &v) in sv.idx.iter().zip(g) {
            dx[i] += v;
        }
        Ok(vec![Some(dx)])
    }
}

pub struct Concat {
    axis: i64,
}

pub fn build_concat(node: &Node) -> Result<Box<dyn Op>> {
    Ok(Box::new(Concat {
        axis: node.attr_int_or("axis", 0)?,
    }))
}

struct SavedConcat {
    outer: usize,
    widths: Vec<usize>,
}

impl Op for Concat {
    fn differentiable(&self, _i: usize) -> bool {
        true
    }

    fn forward(&self, _cx: &Ctx, x: &[Option<Arc<Tensor>>], need: &[bool]) -> Result<Fwd> {
        let ts: Vec<&Tensor> = (0..x.len()).map(|i| req(x, i)).collect::<Result<_>>()?;
        let Some(first) = ts.first() else {
            invalid!("Concat needs at least one input");
        };
        let r = first.rank();
        let a = axis(self.axis, r)?;
        let mut out = first.shape().to_vec();
        out[a] = 0;
        for t in &ts {
            let s = t.shape();
            if s.len() != r
                || (0..r).any(|i| i != a && s[i] != first.shape()[i])
                || t.dtype() != first.dtype()
            {
                invalid!(
                    "input shapes {:?} and {:?} do not concatenate on axis {a}",
                    first.shape(),
                    s
                );
            }
            out[a] += s[a];
        }
        let outer: usize = out[..a].iter().product();
        let inner: usize = out[a + 1..].iter().product();
        let widths: Vec<usize> = ts.iter().map(|t| t.shape()[a] * inner).collect();
        // Index map over the inputs laid end to end.
        let mut offs = vec![0usize; ts.len()];
        for k in 1..ts.len() {
            offs[k] = offs[k - 1] + ts[k - 1].numel();
        }
        let mut idx = Vec::with_capacity(out.iter().product());
        for o in 0..outer {
            for (k, &w) in widths.iter().enumerate() {
                idx.extend(offs[k] + o * w..offs[k] + (o + 1) * w);
            }
        }
        let y = if first.dtype() == quench_ir::DType::F32 {
            let mut all: Vec<f32> = Vec::new();
            for t in &ts {
                all.extend_from_slice(t.as_slice::<f32>()?);
            }
            Tensor::from_vec(out, idx.iter().map(|&i| all[i]).collect())?
        } else {
            let mut all: Vec<i64> = Vec::new();
            for t in &ts {
                all.extend(t.to_i64_vec()?);
            }
            Tensor::from_vec(out, idx.iter().map(|&i| all[i]).collect())?
        };
        let sv = need
            .iter()
            .any(|&b| b)
            .then(|| Box::new(SavedConcat { outer, widths }) as Saved);
        Ok(Fwd::new(vec![y], sv))
    }

    fn backward(
        &self,
        _cx: &Ctx,
        sv: &Saved,
        gy: &[Option<Grad>],
        need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        let sv: &SavedConcat = saved(sv)?;
        let Some(Some(g)) = gy.first() else {
            return Ok(vec![None; sv.widths.len()]);
        };
        let total: usize = sv.widths.iter().sum();
        check_len(g, sv.outer * total)?;
        let mut out = Vec::new();
        let mut start = 0;
        for (k, &w) in sv.widths.iter().enumerate() {
            if need.get(k) == Some(&true) {
                let mut d = Vec::with_capacity(sv.outer * w);
                for o in 0..sv.outer {
                    d.extend_from_slice(&g[o * total + start..o * total + start + w]);
                }
                out.push(Some(d));
            } else {
                out.push(None);
            }
            start += w;
        }
        Ok(out)
    }
}

/// Shape: the input's shape as int64 (no gradient).
pub struct ShapeOp {
    start: i64,
    end: Option<i64>,
}

pub fn build_shape(node: &Node) -> Result<Box<dyn Op>> {
    Ok(Box::new(ShapeOp {
        start: node.attr_int_or("start", 0)?,
        end: node.attr_int("end")?,
    }))
}

impl Op for ShapeOp {
    fn differentiable(&self, _i: usize) -> bool {
        false
    }

    fn forward(&self, _cx: &Ctx, x: &[Option<Arc<Tensor>>], _need: &[bool]) -> Result<Fwd> {
        let s: Vec<i64> = req(x, 0)?.shape().iter().map(|&d| d as i64).collect();
        let r = s.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let (a, b) = (clamp(self.start), clamp(self.end.unwrap_or(r)));
        let v = if a < b { s[a..b].to_vec() } else { Vec::new() };
        Ok(Fwd::new(vec![Tensor::from_vec(vec![v.len()], v)?], None))
    }

    fn backward(
        &self,
        _cx: &Ctx,
        _s: &Saved,
        _gy: &[Option<Grad>],
        _need: &[bool],
    ) -> Result<Vec<Option<Grad>>> {
        Ok(vec![None])
    }
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_node, rand_input, run_node};
    use quench_ir::{Attr, Node, Tensor};

    fn ints(v: &[i64]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn views_match_finite_differences() {
        let x = || rand_input(&[2, 3, 4], 1);
        check_node(
            &Node::new("Reshape", "r", &["x", "s"], &["y"]),
            &[("x", x())],
            &[("s", ints(&[0, -1]))],
            17,
        );
        check_node(
            &Node::new("Flatten", "f", &["x"], &["y"]).with_attr("axis", Attr::Int(2)),
            &[("x", x())],
            &[],
            17,
        );
        check_node(
            &Node::new("Unsqueeze", "u", &["x", "a"], &["y"]),
            &[("x", x())],
            &[("a", ints(&[0, -1]))],
            17,
        );
        check_node(
            &Node::new("Identity", "i", &["x"], &["y"]),
            &[("x", x())],
            &[],
            17,
        );
    }

    #[test]
    fn index_maps_match_finite_differences() {
        let x = || rand_input(&[2, 3, 4], 1);
        let t = Node::new("Transpose", "t", &["x"], &["y"])
            .with_attr("perm", Attr::Ints(vec![2, 0, 1]));
        check_node(&t, &[("x", x())], &[], 17);
        let s = Node::new("Slice", "s", &["x", "b", "e", "a", "k"], &["y"]);
        check_node(
            &s,
            &[("x", x())],
            &[
                ("b", ints(&[1, -1])),
                ("e", ints(&[3, 0])),
                ("a", ints(&[1, 2])),
                ("k", ints(&[1, -2])),
            ],
            17,
        );
        let g = Node::new("Gather", "g", &["x", "i"], &["y"]).with_attr("axis", Attr::Int(1));
        let idx = Tensor::from_vec(vec![2, 2], vec![0i64, 2, -1, 2]).unwrap();
        check_node(&g, &[("x", x())], &[("i", idx)], 17);
        let c = Node::new("Concat", "c", &["a", "b"], &["y"]).with_attr("axis", Attr::Int(1));
        check_node(&c, &[("a", x()), ("b", rand_input(&[2, 1, 4], 2))], &[], 17);
    }

    #[test]
    fn bad_reshape_and_gather_index_are_errors() {
        let r = run_node(
            &Node::new("Reshape", "r", &["x", "s"], &["y"]),
            &[("x", rand_input(&[2, 3], 1))],
            &[("s", ints(&[4, -1]))],
        );
        assert!(r.unwrap_err().to_string().contains("cannot reshape"));
        let g = Node::new("Gather", "g", &["x", "i"], &["y"]);
        let r = run_node(&g, &[("x", rand_input(&[2, 3], 1))], &[("i", ints(&[5]))]);
        assert!(r.unwrap_err().to_string().contains("out of range"));
    }
}
