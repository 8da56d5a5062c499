//! BatchNormalization. Inference is a per-channel `x·scale + shift`, folded
//! once at build time when the statistics are constants; opset 14+
//! `training_mode = 1` normalises with batch statistics and also returns
//! the updated running mean and variance.

use crate::op::required;
use crate::{BuildCtx, Op, OpError, Registry, RunCtx, bail_invalid, bail_unsupported};
use quench_ir::{DType, Tensor};

pub fn register(r: &mut Registry) {
    r.register("", "BatchNormalization", build);
}

#[derive(Debug)]
struct BatchNorm {
    epsilon: f32,
    momentum: f32,
    training: bool,
    /// (scale, shift) per channel when scale, B, mean and var are constants.
    folded: Option<(Vec<f32>, Vec<f32>)>,
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    let node = ctx.node;
    let epsilon = node.attr_float_or("epsilon", 1e-5)?;
    let momentum = node.attr_float_or("momentum", 0.9)?;
    let extra_outputs = node.outputs.iter().skip(1).any(|o| !o.is_empty());
    let training = if ctx.opset >= 14 {
        node.attr_int_or("training_mode", 0)? != 0
    } else if extra_outputs {
        bail_unsupported!(
            "BatchNormalization opset {} in training form (mean/var outputs)",
            ctx.opset
        );
    } else {
        false
    };
    let consts: Option<Vec<&Tensor>> = (1..5).map(|i| ctx.constant_input(i)).collect();
    let folded = match consts {
        Some(c) if !training => {
            let p = params(&c)?;
            let n = p[0].len();
            if p.iter().any(|v| v.len() != n) {
                bail_invalid!("scale, B, mean and var must have one value per channel ({n})");
            }
            Some(fold(&p, epsilon))
        }
        _ => None,
    };
    Ok(Box::new(BatchNorm {
        epsilon,
        momentum,
        training,
        folded,
    }))
}

/// scale, B, mean, var as f32 vectors.
fn params(ts: &[&Tensor]) -> Result<Vec<Vec<f32>>, OpError> {
    const NAMES: [&str; 4] = ["1 (scale)", "2 (B)", "3 (input_mean)", "4 (input_var)"];
    ts.iter()
        .zip(NAMES)
        .map(|(t, name)| match t.dtype() {
            DType::F32 | DType::F64 => Ok(t.to_f32_vec()?),
            d => bail_unsupported!("input {name} of dtype {d}"),
        })
        .collect()
}

fn fold(p: &[Vec<f32>], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let [s, b, m, v] = [&p[0], &p[1], &p[2], &p[3]];
    s.iter()
        .zip(b)
        .zip(m.iter().zip(v))
        .map(|((&s, &b), (&m, &v))| {
            let k = s as f64 / (v as f64 + eps as f64).sqrt();
            (k as f32, (b as f64 - m as f64 * k) as f32)
        })
        .unzip()
}

/// `y = x·scale[c] + shift[c]` over `[N, C, inner]`.
fn apply(x: &[f32], c: usize, inner: usize, scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    if inner == 0 || c == 0 {
        return y;
    }
    for (i, (yp, xp)) in y
        .chunks_exact_mut(inner)
        .zip(x.chunks_exact(inner))
        .enumerate()
    {
        let (s, b) = (scale[i % c], shift[i % c]);
        for (o, &v) in yp.iter_mut().zip(xp) {
            *o = v * s + b;
        }
    }
    y
}

impl Op for BatchNorm {
    fn run(&self, _ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let xs = match x.dtype() {
            DType::F32 => x.as_slice::<f32>()?,
            d => bail_unsupported!("BatchNormalization on {d} tensors (only float32)"),
        };
        let (c, inner) = match x.shape() {
            [_, c, rest @ ..] => (*c, rest.iter().product::<usize>()),
            s => bail_invalid!("input 0 (X) has shape {s:?}, expected [N, C, ...]"),
        };
        if let Some((scale, shift)) = &self.folded {
            if scale.len() != c {
                bail_invalid!("X has {c} channels but the parameters have {}", scale.len());
            }
            let y = apply(xs, c, inner, scale, shift);
            return Ok(vec![Tensor::from_vec(x.shape().to_vec(), y)?]);
        }
        let ts: Vec<&Tensor> = (1..5)
            .map(|i| required(inputs, i))
            .collect::<Result<_, _>>()?;
        let p = params(&ts)?;
        if p.iter().any(|v| v.len() != c) {
            bail_invalid!("scale, B, mean and var must each have {c} values (channels of X)");
        }
        if !self.training {
            let (scale, shift) = fold(&p, self.epsilon);
            let y = apply(xs, c, inner, &scale, &shift);
            return Ok(vec![Tensor::from_vec(x.shape().to_vec(), y)?]);
        }
        // Batch statistics over N and the spatial dims (population variance).
        let count = (xs.len() / c.max(1)) as f64;
        if count == 0.0 {
            bail_invalid!("input 0 (X) is empty: no batch statistics");
        }
        let (mut sum, mut sq) = (vec![0.0f64; c], vec![0.0f64; c]);
        for (i, xp) in xs.chunks_exact(inner.max(1)).enumerate() {
            for &v in xp {
                sum[i % c] += v as f64;
                sq[i % c] += v as f64 * v as f64;
            }
        }
        let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
        let var: Vec<f32> = (0..c)
            .map(|i| (sq[i] / count - (sum[i] / count).powi(2)).max(0.0) as f32)
            .collect();
        let (scale, shift) = fold(
            &[p[0].clone(), p[1].clone(), mean.clone(), var.clone()],
            self.epsilon,
        );
        let y = apply(xs, c, inner, &scale, &shift);
        let m = self.momentum;
        let running = |old: &[f32], new: &[f32]| -> Vec<f32> {
            old.iter()
                .zip(new)
                .map(|(o, n)| o * m + n * (1.0 - m))
                .collect()
        };
        Ok(vec![
            Tensor::from_vec(x.shape().to_vec(), y)?,
            Tensor::from_vec(vec![c], running(&p[2], &mean))?,
            Tensor::from_vec(vec![c], running(&p[3], &var))?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::conv::tests::run_node;
    use quench_ir::{Attr, Node, Tensor};

    fn v(x: &[f32]) -> Tensor {
        Tensor::from_vec(vec![x.len()], x.to_vec()).unwrap()
    }

    #[test]
    fn inference_matches_formula_with_and_without_constants() {
        let x = Tensor::from_vec(vec![2, 2, 3], (0..12).map(|i| i as f32).collect()).unwrap();
        let (s, b, m, var) = (
            v(&[1.0, 2.0]),
            v(&[0.5, -1.0]),
            v(&[3.0, 4.0]),
            v(&[4.0, 0.25]),
        );
        let ins = [Some(&x), Some(&s), Some(&b), Some(&m), Some(&var)];
        for names in [
            ["s", "b", "m", "v"],
            ["const:s", "const:b", "const:m", "const:v"],
        ] {
            let node = Node::new(
                "BatchNormalization",
                "bn",
                &["x", names[0], names[1], names[2], names[3]],
                &["y"],
            )
            .with_attr("epsilon", Attr::Float(0.0));
            let y = run_node(&node, 15, &ins, 1).unwrap();
            let ys = y[0].as_slice::<f32>().unwrap();
            // channel 0: (x-3)/2*1+0.5 ; channel 1: (x-4)/0.5*2-1
            assert_eq!(ys[0], -1.0);
            assert_eq!(ys[3], (3.0 - 4.0) / 0.5 * 2.0 - 1.0);
            assert_eq!(ys[6], (6.0 - 3.0) / 2.0 + 0.5);
        }
    }

    #[test]
    fn training_mode_updates_running_stats() {
        let x = Tensor::from_vec(vec![2, 1, 2], vec![1.0f32, 3.0, 5.0, 7.0]).unwrap();
        let (s, b, m, var) = (v(&[1.0]), v(&[0.0]), v(&[0.0]), v(&[1.0]));
        let node = Node::new(
            "BatchNormalization",
            "bn",
            &["x", "s", "b", "m", "v"],
            &["y", "rm", "rv"],
        )
        .with_attr("training_mode", Attr::Int(1))
        .with_attr("epsilon", Attr::Float(0.0));
        let out = run_node(
            &node,
            15,
            &[Some(&x), Some(&s), Some(&b), Some(&m), Some(&var)],
            1,
        )
        .unwrap();
        // mean 4, var 5
        let y = out[0].as_slice::<f32>().unwrap();
        assert!((y[0] - (-3.0 / 5f32.sqrt())).abs() < 1e-6);
        assert!((out[1].as_slice::<f32>().unwrap()[0] - 0.4).abs() < 1e-6);
        assert!((out[2].as_slice::<f32>().unwrap()[0] - (0.9 + 0.5)).abs() < 1e-6);
    }

    #[test]
    fn wrong_parameter_length_is_invalid() {
        let x = Tensor::from_vec(vec![1, 3, 1], vec![0.0f32; 3]).unwrap();
        let p = v(&[1.0, 1.0]);
        let node = Node::new(
            "BatchNormalization",
            "bn",
            &["x", "s", "b", "m", "v"],
            &["y"],
        );
        assert!(
            run_node(
                &node,
                15,
                &[Some(&x), Some(&p), Some(&p), Some(&p), Some(&p)],
                1
            )
            .is_err()
        );
    }
}
