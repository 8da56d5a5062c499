//! The training loop: batches from the loader, forward, loss, backward,
//! clipping, optimizer step, evaluation, per-epoch log and checkpoints.

use crate::data::{Augment, Dataset, batches};
use crate::engine::{Engine, Weights};
use crate::loss::cross_entropy;
use crate::optim::{OptKind, Optimizer, Schedule, clip_grad_norm};
use crate::rng::mix;
use crate::{Result, TrainError, invalid};
use quench_ir::{Model, Tensor};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Hyper-parameters and run settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub optimizer: OptKind,
    pub weight_decay: f32,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    pub clip: Option<f32>,
    pub label_smoothing: f32,
    pub seed: u64,
    pub threads: usize,
    pub augment: Augment,
    pub checkpoint_dir: Option<PathBuf>,
    /// Also checkpoint every this many steps (0: only at epoch ends).
    pub checkpoint_every: usize,
    /// Stop after this many steps in total (for tests and time-boxed runs).
    pub max_steps: Option<usize>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            epochs: 1,
            batch: 64,
            lr: 1e-3,
            optimizer: OptKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            weight_decay: 1e-4,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            clip: None,
            label_smoothing: 0.0,
            seed: 0,
            threads: 1,
            augment: Augment::default(),
            checkpoint_dir: None,
            checkpoint_every: 0,
            max_steps: None,
        }
    }
}

/// Metrics of one epoch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_acc: f32,
    pub val_loss: f32,
    pub val_acc: f32,
    pub lr: f32,
    /// Wall time of the training part of the epoch (not evaluation).
    pub seconds: f64,
    pub images_per_s: f64,
}

/// Running sums over the current epoch (checkpointed, so a resumed epoch
/// reports the same totals).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EpochSums {
    pub loss: f64,
    pub correct: usize,
    pub seen: usize,
    pub seconds: f64,
}

/// What the loop reports as it goes.
pub enum Event<'a> {
    Step {
        epoch: usize,
        batch: usize,
        batches: usize,
        loss: f32,
        acc: f32,
        images_per_s: f64,
    },
    Epoch(&'a EpochLog),
    Checkpoint(&'a std::path::Path),
}

pub struct Trainer {
    pub model: Model,
    engine: Engine,
    pub weights: Weights,
    pub trainable: Vec<String>,
    pub opt: Optimizer,
    pub cfg: Config,
    /// Current epoch and the next batch in it.
    pub epoch: usize,
    pub batch: usize,
    /// Steps done in total.
    pub step: usize,
    pub sums: EpochSums,
    pub history: Vec<EpochLog>,
    pool: rayon::ThreadPool,
}

impl Trainer {
    pub fn new(model: Model, cfg: Config) -> Result<Trainer> {
        let opset = model.opset("").unwrap_or(17);
        let probe = Engine::new(&model.graph, opset, &[])?;
        let trainable = probe.trainable(&model.graph);
        if trainable.is_empty() {
            invalid!("the model has no float initializers to train");
        }
        let engine = Engine::new(&model.graph, opset, &trainable)?;
        if engine.input_names().len() != 1 {
            invalid!(
                "the model must have one runtime input, has {:?}",
                engine.input_names()
            );
        }
        let weights = model
            .graph
            .initializers
            .iter()
            .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads.max(1))
            .build()
            .map_err(|e| TrainError::Invalid(format!("thread pool: {e}")))?;
        Ok(Trainer {
            opt: Optimizer::new(cfg.optimizer.clone(), cfg.weight_decay),
            model,
            engine,
            weights,
            trainable,
            cfg,
            epoch: 0,
            batch: 0,
            step: 0,
            sums: EpochSums::default(),
            history: Vec::new(),
            pool,
        })
    }

    /// Parameter count (trainable elements).
    pub fn parameters(&self) -> usize {
        self.trainable
            .iter()
            .map(|n| self.weights.get(n).map_or(0, |t| t.numel()))
            .sum()
    }

    fn logits<'a>(&self, t: &'a Tensor, n: usize) -> Result<(&'a [f32], usize)> {
        let v = t.as_slice::<f32>()?;
        if n == 0 || v.len() % n != 0 {
            invalid!(
                "model output has shape {:?}, expected [{n}, classes]",
                t.shape()
            );
        }
        Ok((v, v.len() / n))
    }

    /// How batches of `chw` samples reach the model: `None` as they are,
    /// `Some(note)` reshaped to the input's declared per-sample shape (same
    /// element count: a PyTorch export may take [N, 28, 28] where the data
    /// is NCHW), or an error naming the input and both shapes.
    pub fn input_adaptation(&self, chw: [usize; 3]) -> Result<Option<String>> {
        let Some(vi) = self.model.graph.runtime_inputs().next() else {
            return Ok(None);
        };
        let Some(dims) = vi.shape() else {
            return Ok(None);
        };
        let show = |d: &[quench_ir::Dim]| {
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let fixed: Option<Vec<usize>> = dims
            .get(1..)
            .unwrap_or_default()
            .iter()
            .map(|d| match d {
                quench_ir::Dim::Fixed(v) => usize::try_from(*v).ok(),
                _ => None,
            })
            .collect();
        let same_rank = dims.len() == 4;
        let matches = same_rank
            && dims[1..].iter().zip(chw).all(|(d, v)| match d {
                quench_ir::Dim::Fixed(w) => *w == v as u64,
                _ => true,
            });
        if matches {
            return Ok(None);
        }
        match fixed {
            Some(s)
                if !dims.is_empty()
                    && s.iter().product::<usize>() == chw.iter().product::<usize>() =>
            {
                Ok(Some(format!(
                    "input '{}' is declared [{}]: batches of {chw:?} samples are reshaped to [N, {}]",
                    vi.name,
                    show(dims),
                    show(&dims[1..])
                )))
            }
            _ => invalid!(
                "input '{}' is declared [{}], but the data's batches are [N, {}, {}, {}]",
                vi.name,
                show(dims),
                chw[0],
                chw[1],
                chw[2]
            ),
        }
    }

    /// `x` ([N, C, H, W]) in the model input's declared per-sample shape
    /// when that differs but holds as many elements (see
    /// [`Trainer::input_adaptation`]).
    fn feed(&self, x: Tensor) -> Result<Tensor> {
        let Some(dims) = self
            .model
            .graph
            .runtime_inputs()
            .next()
            .and_then(|vi| vi.shape())
        else {
            return Ok(x);
        };
        let (Some(&n), [c, h, w]) = (x.shape().first(), x.shape().get(1..).unwrap_or_default())
        else {
            return Ok(x);
        };
        if self.input_adaptation([*c, *h, *w])?.is_none() {
            return Ok(x);
        }
        let mut shape = vec![n];
        for d in dims.get(1..).unwrap_or_default() {
            if let quench_ir::Dim::Fixed(v) = d {
                shape.push(*v as usize);
            }
        }
        Ok(Tensor::new(shape, x.data().clone())?)
    }

    /// One optimisation step on a batch; returns (loss, correct).
    pub fn train_step(&mut self, x: Tensor, labels: &[i64], lr: f32) -> Result<(f32, usize)> {
        let x = self.feed(x)?;
        let threads = self.cfg.threads.max(1);
        let seed = mix(self.cfg.seed ^ mix(self.step as u64 + 1));
        let n = labels.len();
        let engine = &self.engine;
        let weights = &self.weights;
        let smoothing = self.cfg.label_smoothing;
        let step = self.step;
        let (loss, correct, grads, updates) = self.pool.install(|| -> Result<_> {
            let tape = engine.forward(weights, vec![x], true, true, seed, threads)?;
            let v = tape.outputs[0].as_slice::<f32>()?;
            if n == 0 || v.len() % n != 0 {
                invalid!("model output has shape {:?}, expected [{n}, classes]", tape.outputs[0].shape());
            }
            let (loss, g, correct) = cross_entropy(v, v.len() / n, labels, smoothing)?;
            if !loss.is_finite() {
                return Err(TrainError::Invalid(format!(
                    "loss is {loss} at step {} (epoch {}, batch {}); lower the learning rate or add --clip",
                    step + 1,
                    0,
                    0
                )));
            }
            let updates = tape.updates.clone();
            let grads = engine.backward(tape, vec![Some(g)], threads)?;
            Ok((loss, correct, grads, updates))
        })
        .map_err(|e| match e {
            TrainError::Invalid(m) if m.starts_with("loss is") => TrainError::Invalid(m.replace(
                "(epoch 0, batch 0)",
                &format!("(epoch {}, batch {})", self.epoch + 1, self.batch + 1),
            )),
            e => e,
        })?;
        for (name, t) in updates {
            self.weights.insert(name, Arc::new(t));
        }
        let mut named: Vec<(String, Vec<f32>)> = self
            .trainable
            .iter()
            .zip(grads)
            .filter_map(|(n, g)| g.map(|g| (n.clone(), g)))
            .collect();
        if let Some(c) = self.cfg.clip {
            clip_grad_norm(&mut named, c);
        }
        self.opt.step(&mut self.weights, &named, lr)?;
        self.step += 1;
        Ok((loss, correct))
    }

    /// Loss and top-1 accuracy in inference mode.
    pub fn evaluate(&self, ds: &Dataset) -> Result<(f32, f32)> {
        let s = ds.sample_len();
        let [c, h, w] = ds.chw;
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for start in (0..ds.len()).step_by(256) {
            let n = 256.min(ds.len() - start);
            let x = Tensor::from_vec(
                vec![n, c, h, w],
                ds.images[start * s..(start + n) * s].to_vec(),
            )?;
            let x = self.feed(x)?;
            let labels = &ds.labels[start..start + n];
            let t = self.pool.install(|| {
                self.engine
                    .forward(&self.weights, vec![x], false, false, 0, self.cfg.threads)
            })?;
            let (v, k) = self.logits(&t.outputs[0], n)?;
            let (l, _, ok) = cross_entropy(v, k, labels, 0.0)?;
            loss += l as f64 * n as f64;
            correct += ok;
        }
        let n = ds.len().max(1) as f64;
        Ok(((loss / n) as f32, (correct as f64 / n) as f32))
    }

    /// Trains until `cfg.epochs` (or `cfg.max_steps`), evaluating on `val`
    /// after each epoch.
    pub fn fit(
        &mut self,
        train: Arc<Dataset>,
        val: &Dataset,
        on: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let per_epoch = train.len().div_ceil(self.cfg.batch.max(1));
        let total = per_epoch * self.cfg.epochs;
        while self.epoch < self.cfg.epochs {
            let rx = batches(
                train.clone(),
                self.cfg.batch,
                self.cfg.seed,
                self.epoch,
                self.batch,
                true,
                self.cfg.augment.clone(),
            );
            let mut lr = 0.0;
            for b in rx {
                if self.cfg.max_steps.is_some_and(|m| self.step >= m) {
                    return Ok(());
                }
                let b = b?;
                let t0 = Instant::now();
                lr = self.cfg.schedule.lr(
                    self.cfg.lr,
                    self.step,
                    total,
                    per_epoch,
                    self.cfg.warmup_steps,
                );
                let n = b.labels.len();
                let (loss, correct) = self.train_step(b.x, &b.labels, lr)?;
                self.sums.seconds += t0.elapsed().as_secs_f64();
                self.sums.loss += loss as f64 * n as f64;
                self.sums.correct += correct;
                self.sums.seen += n;
                self.batch = b.index + 1;
                on(Event::Step {
                    epoch: self.epoch,
                    batch: self.batch,
                    batches: per_epoch,
                    loss: (self.sums.loss / self.sums.seen as f64) as f32,
                    acc: self.sums.correct as f32 / self.sums.seen as f32,
                    images_per_s: self.sums.seen as f64 / self.sums.seconds.max(1e-9),
                });
                if self.cfg.checkpoint_every > 0
                    && self.step.is_multiple_of(self.cfg.checkpoint_every)
                    && self.batch < per_epoch
                {
                    self.checkpoint(on)?;
                }
            }
            let (val_loss, val_acc) = self.evaluate(val)?;
            let seen = self.sums.seen.max(1) as f64;
            let log = EpochLog {
                epoch: self.epoch + 1,
                train_loss: (self.sums.loss / seen) as f32,
                train_acc: (self.sums.correct as f64 / seen) as f32,
                val_loss,
                val_acc,
                lr,
                seconds: self.sums.seconds,
                images_per_s: self.sums.seen as f64 / self.sums.seconds.max(1e-9),
            };
            self.history.push(log.clone());
            self.epoch += 1;
            self.batch = 0;
            self.sums = EpochSums::default();
            on(Event::Epoch(&log));
            self.checkpoint(on)?;
        }
        Ok(())
    }

    fn checkpoint(&self, on: &mut dyn FnMut(Event)) -> Result<()> {
        if let Some(dir) = &self.cfg.checkpoint_dir {
            let p = crate::checkpoint::save(self, dir)?;
            on(Event::Checkpoint(&p));
        }
        Ok(())
    }

    /// The model with the trained weights (BatchNormalization in inference
    /// form, as imported or built).
    pub fn export(&self) -> Model {
        let mut m = self.model.clone();
        for (k, v) in m.graph.initializers.iter_mut() {
            if let Some(t) = self.weights.get(k) {
                *v = (**t).clone();
            }
        }
        m
    }
}
