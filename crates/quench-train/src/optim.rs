//! Optimizers (SGD with momentum/Nesterov/weight decay, AdamW), learning-rate
//! schedules and gradient clipping. Update rules follow PyTorch's, so
//! hyper-parameters carry over.

use crate::engine::Weights;
use crate::{Result, invalid};
use indexmap::IndexMap;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub enum OptKind {
    Sgd { momentum: f32, nesterov: bool },
    AdamW { beta1: f32, beta2: f32, eps: f32 },
}

/// An optimizer and its per-parameter state (momentum buffers, moments).
#[derive(Clone, Debug)]
pub struct Optimizer {
    pub kind: OptKind,
    pub weight_decay: f32,
    /// Per parameter: SGD's momentum buffer, or AdamW's first and second moments.
    pub state: IndexMap<String, Vec<Vec<f32>>>,
    /// Updates done so far (AdamW's bias correction).
    pub steps: u64,
}

impl Optimizer {
    pub fn new(kind: OptKind, weight_decay: f32) -> Optimizer {
        Optimizer {
            kind,
            weight_decay,
            state: IndexMap::new(),
            steps: 0,
        }
    }

    /// Applies one update with learning rate `lr`.
    pub fn step(
        &mut self,
        params: &mut Weights,
        grads: &[(String, Vec<f32>)],
        lr: f32,
    ) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let wd = self.weight_decay;
        for (name, g) in grads {
            let Some(p) = params.get_mut(name) else {
                invalid!("no parameter named '{name}'");
            };
            let p = Arc::make_mut(p).as_slice_mut::<f32>()?;
            if p.len() != g.len() {
                invalid!(
                    "gradient of '{name}' has {} values, the parameter {}",
                    g.len(),
                    p.len()
                );
            }
            let slots = match self.kind {
                OptKind::Sgd { momentum: 0.0, .. } => 0,
                OptKind::Sgd { .. } => 1,
                OptKind::AdamW { .. } => 2,
            };
            let st = self
                .state
                .entry(name.clone())
                .or_insert_with(|| vec![Vec::new(); slots]);
            for s in st.iter_mut() {
                if s.len() != p.len() {
                    s.clear();
                    s.resize(p.len(), 0.0);
                }
            }
            match self.kind {
                OptKind::Sgd { momentum, nesterov } => {
                    let first = t == 1;
                    for i in 0..p.len() {
                        let mut d = g[i] + wd * p[i];
                        if momentum != 0.0 {
                            let b = &mut st[0][i];
                            *b = if first { d } else { momentum * *b + d };
                            d = if nesterov { d + momentum * *b } else { *b };
                        }
                        p[i] -= lr * d;
                    }
                }
                OptKind::AdamW { beta1, beta2, eps } => {
                    let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                    let (m, rest) = st.split_at_mut(1);
                    let (m, v) = (&mut m[0], &mut rest[0]);
                    for i in 0..p.len() {
                        p[i] *= 1.0 - lr * wd;
                        m[i] = beta1 * m[i] + (1.0 - beta1) * g[i];
                        v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
                        p[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Learning-rate schedule over the whole run.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        every: usize,
        gamma: f32,
    },
    /// Cosine from the base rate to 0.
    Cosine,
    /// PyTorch's OneCycleLR (cosine, div_factor 25, final_div_factor 1e4).
    OneCycle {
        pct_start: f32,
    },
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule> {
        let (name, arg) = s.split_once(':').unwrap_or((s, ""));
        let num = |d: f32| -> Result<f32> {
            if arg.is_empty() {
                Ok(d)
            } else {
                arg.parse().map_err(|_| {
                    crate::TrainError::Invalid(format!("bad schedule argument '{arg}'"))
                })
            }
        };
        Ok(match name {
            "constant" => Schedule::Constant,
            "cosine" => Schedule::Cosine,
            "onecycle" | "one-cycle" => Schedule::OneCycle {
                pct_start: num(0.3)?,
            },
            "step" => {
                let (e, g) = arg.split_once(',').unwrap_or((arg, "0.1"));
                let every: usize = if e.is_empty() {
                    10
                } else {
                    e.parse()
                        .map_err(|_| crate::TrainError::Invalid(format!("bad step size '{e}'")))?
                };
                let gamma: f32 = g
                    .parse()
                    .map_err(|_| crate::TrainError::Invalid(format!("bad gamma '{g}'")))?;
                Schedule::Step {
                    every: every.max(1),
                    gamma,
                }
            }
            o => invalid!(
                "unknown schedule '{o}' (constant, step[:EPOCHS,GAMMA], cosine, onecycle[:PCT])"
            ),
        })
    }

    /// The rate at `step` (0-based) of `total` steps, `per_epoch` steps an
    /// epoch, with a linear warm-up over the first `warmup` steps.
    pub fn lr(&self, base: f32, step: usize, total: usize, per_epoch: usize, warmup: usize) -> f32 {
        let total = total.max(1);
        let frac = step as f32 / total as f32;
        let cos = |a: f32, b: f32, p: f32| {
            b + (a - b) * 0.5 * (1.0 + (std::f32::consts::PI * p.clamp(0.0, 1.0)).cos())
        };
        let lr = match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => {
                base * gamma.powi((step / per_epoch.max(1) / every) as i32)
            }
            Schedule::Cosine => cos(base, 0.0, frac),
            Schedule::OneCycle { pct_start } => {
                let initial = base / 25.0;
                let min = initial / 1e4;
                let up = (pct_start * total as f32 - 1.0).max(1.0);
                let s = step as f32;
                if s <= up {
                    cos(initial, base, s / up)
                } else {
                    cos(base, min, (s - up) / ((total - 1) as f32 - up).max(1.0))
                }
            }
        };
        if step < warmup {
            lr * (step + 1) as f32 / warmup as f32
        } else {
            lr
        }
    }
}

/// Scales `grads` so their global L2 norm is at most `max`; returns the norm
/// before clipping.
pub fn clip_grad_norm(grads: &mut [(String, Vec<f32>)], max: f32) -> f32 {
    let norm = grads
        .iter()
        .flat_map(|(_, g)| g.iter())
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt() as f32;
    if norm > max && norm > 0.0 {
        let k = max / (norm + 1e-6);
        for (_, g) in grads.iter_mut() {
            g.iter_mut().for_each(|v| *v *= k);
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use quench_ir::Tensor;

    fn one(v: f32) -> Weights {
        let mut w = Weights::new();
        w.insert(
            "p".into(),
            Arc::new(Tensor::from_vec(vec![1], vec![v]).unwrap()),
        );
        w
    }

    fn get(w: &Weights) -> f32 {
        w["p"].as_slice::<f32>().unwrap()[0]
    }

    #[test]
    fn sgd_nesterov_matches_pytorch_by_hand() {
        // torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), grad 1 twice.
        let mut w = one(1.0);
        let mut o = Optimizer::new(
            OptKind::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            0.01,
        );
        o.step(&mut w, &[("p".into(), vec![1.0])], 0.1).unwrap();
        // d = 1.01, buf = 1.01, step = 1.01 + 0.9 * 1.01 = 1.919
        assert!((get(&w) - (1.0 - 0.1919)).abs() < 1e-6);
        o.step(&mut w, &[("p".into(), vec![1.0])], 0.1).unwrap();
        let p1 = 1.0 - 0.1919f32;
        let d = 1.0 + 0.01 * p1;
        let buf = 0.9 * 1.01 + d;
        assert!((get(&w) - (p1 - 0.1 * (d + 0.9 * buf))).abs() < 1e-6);
    }

    #[test]
    fn adamw_first_step_is_lr_sized() {
        let mut w = one(1.0);
        let mut o = Optimizer::new(
            OptKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            0.1,
        );
        o.step(&mut w, &[("p".into(), vec![0.3])], 0.01).unwrap();
        assert!((get(&w) - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6);
    }

    #[test]
    fn schedules_have_the_right_shape() {
        let c = Schedule::Cosine;
        assert_eq!(c.lr(1.0, 0, 100, 10, 0), 1.0);
        assert!(c.lr(1.0, 50, 100, 10, 0) - 0.5 < 1e-6);
        let s = Schedule::parse("step:2,0.5").unwrap();
        assert_eq!(s.lr(1.0, 45, 100, 10, 0), 0.25);
        let o = Schedule::parse("onecycle").unwrap();
        assert!((o.lr(1.0, 0, 100, 10, 0) - 0.04).abs() < 1e-6);
        assert!((o.lr(1.0, 29, 100, 10, 0) - 1.0).abs() < 1e-6);
        assert!(o.lr(1.0, 99, 100, 10, 0) < 1e-5);
        assert!((Schedule::Constant.lr(1.0, 1, 100, 10, 4) - 0.5).abs() < 1e-6);
        assert!(Schedule::parse("bogus").is_err());
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut g = vec![("a".to_string(), vec![3.0]), ("b".to_string(), vec![4.0])];
        assert_eq!(clip_grad_norm(&mut g, 1.0), 5.0);
        assert!((g[0].1[0] - 0.6).abs() < 1e-5 && (g[1].1[0] - 0.8).abs() < 1e-5);
    }
}
