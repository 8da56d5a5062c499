//! com.microsoft DynamicQuantizeLSTM: an LSTM whose W and R are int8/uint8,
//! stored transposed (`[dirs, input, 4·hidden]`, `[dirs, hidden, 4·hidden]`)
//! with per-direction or per-gate-row scales and zero points (inputs 8..=11).
//!
//! The weights are dequantized (once, at build time, when constant) and the
//! float LSTM runs on them; ORT additionally rounds X and h to uint8 at
//! each step, so results differ from ORT's by that activation rounding.

use crate::op::{optional, required};
use crate::{BuildCtx, Op, OpError, RunCtx, bail_invalid};
use quench_ir::{Tensor, TensorData};

#[derive(Debug)]
struct DynamicQuantizeLstm {
    inner: Box<dyn Op>,
    /// Dequantized `[dirs, 4h, cols]` W and R, when their inputs are constant.
    w: Option<Tensor>,
    r: Option<Tensor>,
}

pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    if ctx.node.attr_int_or("layout", 0)? != 0 {
        bail_invalid!("attribute layout is not part of DynamicQuantizeLSTM");
    }
    let mut node = ctx.node.clone();
    node.op_type = "LSTM".into();
    node.domain = String::new();
    node.inputs.truncate(8);
    let constants = |n: &str| -> Option<&Tensor> { (ctx.constants)(n) };
    let compile = |g: &quench_ir::Graph| (ctx.compile)(g);
    let inner_ctx = BuildCtx {
        node: &node,
        opset: 14,
        constants: &constants,
        compile: &compile,
    };
    let inner = super::lstm::build(&inner_ctx)?;
    let constant = |i: usize, s: usize, z: usize, what: &str| -> Result<Option<Tensor>, OpError> {
        match (ctx.constant_input(i), ctx.constant_input(s)) {
            (Some(q), Some(sc))
                if ctx.node.input(z).is_none() || ctx.constant_input(z).is_some() =>
            {
                dequantize(q, sc, ctx.constant_input(z), what).map(Some)
            }
            _ => Ok(None),
        }
    };
    Ok(Box::new(DynamicQuantizeLstm {
        w: constant(1, 8, 9, "W")?,
        r: constant(2, 10, 11, "R")?,
        inner,
    }))
}

/// `(q − zp) · scale`, transposed from `[dirs, cols, 4h]` to `[dirs, 4h, cols]`.
fn dequantize(
    q: &Tensor,
    scale: &Tensor,
    zp: Option<&Tensor>,
    what: &str,
) -> Result<Tensor, OpError> {
    let &[dirs, cols, gh] = q.shape() else {
        bail_invalid!("{what} has shape {:?}, expected rank 3", q.shape());
    };
    let qv: Vec<i32> = match q.data() {
        TensorData::I8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::U8(v) => v.iter().map(|&x| x as i32).collect(),
        _ => bail_invalid!("{what} has type {}, expected int8 or uint8", q.dtype()),
    };
    let s = scale.to_f32_vec()?;
    if let Some(bad) = s.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        bail_invalid!("{what}_scale holds {bad}; scales must be positive and finite");
    }
    // One value per direction, per (direction, gate row), or one in all.
    let per_row = s.len() == dirs * gh && s.len() != dirs;
    if !(s.len() == 1 || s.len() == dirs || per_row) {
        bail_invalid!(
            "{what}_scale has shape {:?}, expected [{dirs}] or [{dirs}, {gh}]",
            scale.shape()
        );
    }
    let z: Vec<i32> = match zp {
        None => vec![0; s.len()],
        Some(z) => {
            if z.dtype() != q.dtype() {
                bail_invalid!(
                    "{what}_zero_point has type {}, {what} has type {}",
                    z.dtype(),
                    q.dtype()
                );
            }
            let v: Vec<i32> = z.to_i64_vec()?.into_iter().map(|x| x as i32).collect();
            if v.len() != s.len() {
                bail_invalid!(
                    "{what}_zero_point has {} values, {what}_scale has {}",
                    v.len(),
                    s.len()
                );
            }
            v
        }
    };
    let param = |d: usize, g: usize| {
        if s.len() == 1 {
            0
        } else if per_row {
            d * gh + g
        } else {
            d
        }
    };
    let mut out = vec![0f32; dirs * gh * cols];
    for d in 0..dirs {
        for c in 0..cols {
            let row = &qv[(d * cols + c) * gh..][..gh];
            for (g, &v) in row.iter().enumerate() {
                let p = param(d, g);
                out[(d * gh + g) * cols + c] = (v - z[p]) as f32 * s[p];
            }
        }
    }
    Ok(Tensor::from_vec(vec![dirs, gh, cols], out)?)
}

impl Op for DynamicQuantizeLstm {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let w = match &self.w {
            Some(w) => w.clone(),
            None => dequantize(
                required(inputs, 1)?,
                required(inputs, 8)?,
                optional(inputs, 9),
                "W",
            )?,
        };
        let r = match &self.r {
            Some(r) => r.clone(),
            None => dequantize(
                required(inputs, 2)?,
                required(inputs, 10)?,
                optional(inputs, 11),
                "R",
            )?,
        };
        let mut ins: Vec<Option<&Tensor>> = (0..8).map(|i| optional(inputs, i)).collect();
        ins[1] = Some(&w);
        ins[2] = Some(&r);
        self.inner.run(ctx, &ins)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::values;
    use crate::{BuildCtx, Registry, RunCtx};
    use quench_ir::{Attr, Node, Tensor};

    fn run(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, crate::OpError> {
        let r = Registry::standard();
        let build = r.get(&node.domain, &node.op_type).unwrap();
        let lookup = |_: &str| None;
        let compile = |_: &quench_ir::Graph| Err(crate::RuntimeError::Invalid("no".into()));
        let ctx = BuildCtx {
            node,
            opset: 1,
            constants: &lookup,
            compile: &compile,
        };
        build(&ctx)?.run(&RunCtx { threads: 1 }, inputs)
    }

    /// Scalar reference: dequantize by hand, then the float LSTM.
    #[test]
    fn matches_float_lstm_on_dequantized_weights() {
        let (s, i, h) = (3, 4, 2);
        let gh = 4 * h;
        let x = Tensor::from_vec(vec![s, 1, i], values(s * i, 1)).unwrap();
        let wq: Vec<i8> = (0..i * gh).map(|k| ((k * 37) % 255) as i8).collect();
        let rq: Vec<i8> = (0..h * gh).map(|k| ((k * 53) % 255) as i8).collect();
        let ws: Vec<f32> = (0..gh).map(|g| 0.01 + 0.001 * g as f32).collect();
        let wz: Vec<i8> = (0..gh).map(|g| g as i8 - 3).collect();
        let (rs, rz) = (vec![0.02f32], vec![0i8]);
        let t = |shape: Vec<usize>, v: Vec<i8>| Tensor::from_vec(shape, v).unwrap();
        let wq_t = t(vec![1, i, gh], wq.clone());
        let rq_t = t(vec![1, h, gh], rq.clone());
        let ws_t = Tensor::from_vec(vec![1, gh], ws.clone()).unwrap();
        let wz_t = t(vec![1, gh], wz.clone());
        let rs_t = Tensor::from_vec(vec![1], rs.clone()).unwrap();
        let rz_t = t(vec![1], rz.clone());
        let mut node = Node::new(
            "DynamicQuantizeLSTM",
            "q",
            &["x", "w", "r", "", "", "", "", "", "ws", "wz", "rs", "rz"],
            &["y", "yh"],
        )
        .with_attr("hidden_size", Attr::Int(h as i64));
        node.domain = "com.microsoft".into();
        let ins = [
            Some(&x),
            Some(&wq_t),
            Some(&rq_t),
            None,
            None,
            None,
            None,
            None,
            Some(&ws_t),
            Some(&wz_t),
            Some(&rs_t),
            Some(&rz_t),
        ];
        let got = run(&node, &ins).unwrap();
        let mut wf = vec![0f32; gh * i];
        for c in 0..i {
            for g in 0..gh {
                wf[g * i + c] = (wq[c * gh + g] as f32 - wz[g] as f32) * ws[g];
            }
        }
        let mut rf = vec![0f32; gh * h];
        for c in 0..h {
            for g in 0..gh {
                rf[g * h + c] = rq[c * gh + g] as f32 * rs[0];
            }
        }
        let wf = Tensor::from_vec(vec![1, gh, i], wf).unwrap();
        let rf = Tensor::from_vec(vec![1, gh, h], rf).unwrap();
        let float = Node::new("LSTM", "f", &["x", "w", "r"], &["y", "yh"])
            .with_attr("hidden_size", Attr::Int(h as i64));
        let want = run(&float, &[Some(&x), Some(&wf), Some(&rf)]).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn rejects_mismatched_scales() {
        let x = Tensor::from_vec(vec![1, 1, 2], vec![0f32; 2]).unwrap();
        let w = Tensor::from_vec(vec![1, 2, 4], vec![0i8; 8]).unwrap();
        let r = Tensor::from_vec(vec![1, 1, 4], vec![0i8; 4]).unwrap();
        let bad = Tensor::from_vec(vec![3], vec![1f32; 3]).unwrap();
        let one = Tensor::from_vec(vec![1], vec![1f32]).unwrap();
        let mut node = Node::new(
            "DynamicQuantizeLSTM",
            "q",
            &["x", "w", "r", "", "", "", "", "", "ws", "", "rs", ""],
            &["y"],
        );
        node.domain = "com.microsoft".into();
        let mut ins: Vec<Option<&Tensor>> = vec![Some(&x), Some(&w), Some(&r)];
        ins.extend([None; 5]);
        ins.extend([Some(&bad), None, Some(&one), None]);
        let e = run(&node, &ins).unwrap_err();
        assert!(e.to_string().contains("W_scale"), "{e}");
    }
}
