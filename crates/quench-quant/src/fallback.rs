//! Accuracy-driven mixed precision: keep float the few nodes whose
//! quantization costs the most output accuracy.
//!
//! ORT's quantizer leaves this to the user (`qdq_loss_debug` shows where the
//! error is, the user edits `nodes_to_exclude`); AMCT and Neural Compressor
//! search for it. Quench measures it: with the calibrated parameters fixed,
//! each quantized unit (a node, or a whole fusion group) is kept float on its
//! quantized on its own (everything else float) and the model's output SQNR
//! against the float model is measured on a few calibration samples; then
//! units are kept float loudest first, each step measured, and the best
//! measured set is kept (it stops once the target is met).
//! Calibration is not repeated: keeping nodes float only removes Q/DQ points.

use crate::calibrate::Batch;
use crate::passes::{Prepared, convert_qdq, prepare};
use crate::{QParams, QuantConfig, QuantError};
use quench_ir::{Model, Tensor};
use quench_runtime::Session;
use std::collections::{BTreeMap, HashSet};

/// One unit kept float, with the output SQNR measured when it is the only
/// quantized unit (lower = costlier).
#[derive(Clone, Debug, PartialEq)]
pub struct FallbackStep {
    /// The unit's nodes (one node, or a fusion group head first).
    pub nodes: Vec<String>,
    pub alone_db: f64,
}

/// What the search measured and chose.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FallbackReport {
    pub samples: usize,
    pub target_db: f64,
    /// Output SQNR of the fully quantized model.
    pub before_db: f64,
    /// Output SQNR with `kept_float` float.
    pub after_db: f64,
    pub kept_float: Vec<FallbackStep>,
    /// Quantized models built and run during the search.
    pub evaluations: usize,
}

impl FallbackReport {
    /// The node names to add to the config's `skip` list.
    pub fn skip(&self) -> impl Iterator<Item = &String> {
        self.kept_float.iter().flat_map(|s| s.nodes.iter())
    }
}

/// Measures output SQNR of the QDQ model planned under `cfg` plus extra
/// skipped nodes, against float reference outputs.
struct Evaluator<'a> {
    model: &'a Model,
    cfg: &'a QuantConfig,
    qparams: &'a BTreeMap<String, QParams>,
    batches: &'a [Batch],
    reference: Vec<Vec<Tensor>>,
    threads: usize,
    evaluations: usize,
}

impl Evaluator<'_> {
    fn sqnr(&mut self, skip: &[String]) -> Result<f64, QuantError> {
        let mut cfg = self.cfg.clone();
        cfg.skip.extend(skip.iter().cloned());
        let prepared = prepare(self.model, &cfg)?;
        let (qdq, _) = convert_qdq(&prepared.model, &prepared.plan, self.qparams)?;
        let session = Session::new(&qdq, self.threads)
            .map_err(|e| QuantError::Config(format!("fallback: cannot run a candidate: {e}")))?;
        self.evaluations += 1;
        let (mut signal, mut noise) = (0.0f64, 0.0f64);
        for (batch, reference) in self.batches.iter().zip(&self.reference) {
            let out = session
                .run(batch.clone())
                .map_err(|e| QuantError::Config(format!("fallback: candidate run: {e}")))?;
            for ((_, q), r) in out.iter().zip(reference) {
                let (Ok(q), Ok(r)) = (q.as_slice::<f32>(), r.as_slice::<f32>()) else {
                    continue;
                };
                for (&a, &b) in r.iter().zip(q) {
                    signal += f64::from(a) * f64::from(a);
                    noise += f64::from(a - b) * f64::from(a - b);
                }
            }
        }
        Ok(sqnr_db(signal, noise))
    }
}

/// Noise power relative to signal for an SQNR in dB.
fn noise_ratio(db: f64) -> f64 {
    10f64.powf(-db / 10.0)
}

fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

/// The quantized units of `cfg`'s plan: fusion groups whose members are all
/// quantized, then every other quantized node, in plan order.
fn units(prepared: &Prepared) -> Vec<Vec<String>> {
    let quantized: HashSet<&str> = prepared
        .plan
        .quantized_nodes
        .iter()
        .map(String::as_str)
        .collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for node in &prepared.plan.quantized_nodes {
        if seen.contains(node) {
            continue;
        }
        let group = prepared.groups.iter().find(|g| {
            g.nodes.contains(node) && g.nodes.iter().all(|n| quantized.contains(n.as_str()))
        });
        let unit = group.map_or_else(|| vec![node.clone()], |g| g.nodes.clone());
        seen.extend(unit.iter().cloned());
        out.push(unit);
    }
    out
}

/// Chooses nodes to keep float so the output SQNR (vs float, on `batches`)
/// reaches `target_db`, keeping at most `max_units` units float.
///
/// `model` is the float model given to [`crate::quantize::quantize_static`],
/// `prepared` what [`prepare`] made of it under `cfg`, `float` the session
/// that calibrated it and `qparams` the calibration result.
#[allow(clippy::too_many_arguments)]
pub fn choose_float_nodes(
    model: &Model,
    cfg: &QuantConfig,
    prepared: &Prepared,
    float: &Session,
    qparams: &BTreeMap<String, QParams>,
    batches: &[Batch],
    target_db: f64,
    max_units: usize,
) -> Result<FallbackReport, QuantError> {
    if batches.is_empty() {
        return Err(QuantError::Config(
            "fallback: no calibration samples to measure on".into(),
        ));
    }
    let reference = batches
        .iter()
        .map(|b| {
            float
                .run(b.clone())
                .map(|o| o.into_iter().map(|(_, t)| t).collect())
                .map_err(|e| QuantError::Config(format!("fallback: float run: {e}")))
        })
        .collect::<Result<Vec<Vec<Tensor>>, QuantError>>()?;
    let mut eval = Evaluator {
        model,
        cfg,
        qparams,
        batches,
        reference,
        threads: float.threads(),
        evaluations: 0,
    };
    let before = eval.sqnr(&[])?;
    let mut report = FallbackReport {
        samples: batches.iter().map(batch_len).sum(),
        target_db,
        before_db: before,
        after_db: before,
        ..Default::default()
    };
    if before >= target_db || max_units == 0 {
        report.evaluations = eval.evaluations;
        return Ok(report);
    }
    // Each unit's own cost: the output noise with only that unit quantized.
    // Noise powers of independent sources add, so the units to keep float
    // are the loudest ones, until the rest fit the target's noise budget.
    let all = units(prepared);
    let mut noise: Vec<(f64, usize)> = Vec::new();
    for (i, _) in all.iter().enumerate() {
        let others: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|&(k, _)| k != i)
            .flat_map(|(_, u)| u.iter().cloned())
            .collect();
        // A unit that cannot be planned alone with the calibrated parameters
        // is not a candidate.
        if let Ok(s) = eval.sqnr(&others) {
            noise.push((noise_ratio(s), i));
        }
    }
    noise.sort_by(|a, b| b.0.total_cmp(&a.0));
    // Take units loudest first, measuring each prefix (a combination can
    // need a tensor the calibration did not cover: that unit is passed over),
    // and keep the best prefix: errors far from small do not simply add.
    let mut skip: Vec<String> = Vec::new();
    let mut taken: Vec<FallbackStep> = Vec::new();
    let mut best = (before, 0);
    for &(n, i) in &noise {
        if taken.len() >= max_units || n <= 0.0 || best.0 >= target_db {
            break;
        }
        let mut trial = skip.clone();
        trial.extend(all[i].iter().cloned());
        let Ok(s) = eval.sqnr(&trial) else { continue };
        skip = trial;
        taken.push(FallbackStep {
            nodes: all[i].clone(),
            alone_db: -10.0 * n.log10(),
        });
        if s > best.0 {
            best = (s, taken.len());
        }
    }
    taken.truncate(best.1);
    report.kept_float = taken;
    let current = best.0;
    report.after_db = current;
    report.evaluations = eval.evaluations;
    Ok(report)
}

/// Samples in a batch: the first input's leading dimension.
pub(crate) fn batch_len(b: &Batch) -> usize {
    b.first()
        .and_then(|(_, t)| t.shape().first().copied())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::test_util::{Builder, rand_tensor};
    use crate::quantize::quantize_static;

    /// A dense layer followed by a decomposed tanh-GELU-like cubic term,
    /// `y + 0.044715·y³`: the cube's wide range is what 8 bits handle badly.
    fn cubic_model() -> Model {
        let mut b = Builder::new(&[("x", &[1, 16])]);
        let w = b.weight("w", &[16, 16]);
        b.init("k", Tensor::from_vec(vec![1], vec![0.044715f32]).unwrap());
        b.node("MatMul", "dense", &["x", &w], &["y"]);
        b.node("Mul", "square", &["y", "y"], &["y2"]);
        b.node("Mul", "cube", &["y2", "y"], &["y3"]);
        b.node("Mul", "scale", &["y3", "k"], &["t"]);
        b.node("Add", "sum", &["y", "t"], &["out"]);
        b.build(&["out"])
    }

    fn batches(n: u64) -> Vec<Result<Batch, QuantError>> {
        (0..n)
            .map(|s| {
                let mut x = rand_tensor(&[1, 16], 100 + s);
                if let Ok(v) = x.as_slice_mut::<f32>() {
                    v.iter_mut().for_each(|a| *a *= 3.0);
                }
                Ok(vec![("x".to_string(), x)])
            })
            .collect()
    }

    #[test]
    fn keeps_the_costliest_nodes_float_until_the_target() {
        let model = cubic_model();
        let mut cfg = QuantConfig {
            fallback_sqnr_db: Some(200.0),
            fallback_max_nodes: 2,
            fallback_samples: 4,
            ..Default::default()
        };
        let q = quantize_static(&model, &cfg, batches(16).into_iter(), 1, &mut |_| {}).unwrap();
        let r = q.fallback.clone().unwrap();
        assert_eq!(r.samples, 4);
        assert!(!r.kept_float.is_empty() && r.kept_float.len() <= 2, "{r:?}");
        assert!(r.after_db > r.before_db + 1.0, "{r:?}");
        // The chosen nodes are float in the written model's plan.
        for n in r.skip() {
            assert!(!q.plan.quantized_nodes.contains(n), "{n} still quantized");
        }
        // Costs were measured one unit at a time, loudest first.
        assert!(
            r.kept_float
                .windows(2)
                .all(|w| w[0].alone_db <= w[1].alone_db)
        );
        // A reachable target stops at once.
        cfg.fallback_sqnr_db = Some(-100.0);
        let q = quantize_static(&model, &cfg, batches(16).into_iter(), 1, &mut |_| {}).unwrap();
        let r = q.fallback.unwrap();
        assert!(r.kept_float.is_empty() && r.evaluations == 1, "{r:?}");
    }

    #[test]
    fn sqnr_of_exact_outputs_is_infinite() {
        assert!(sqnr_db(1.0, 0.0).is_infinite());
        assert!((sqnr_db(100.0, 1.0) - 20.0).abs() < 1e-12);
    }

    #[test]
    fn no_batches_is_an_error() {
        let model = cubic_model();
        let cfg = QuantConfig::default();
        let prepared = prepare(&model, &cfg).unwrap();
        let float = Session::new(&prepared.model, 1).unwrap();
        let e = choose_float_nodes(
            &model,
            &cfg,
            &prepared,
            &float,
            &BTreeMap::new(),
            &[],
            30.0,
            4,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no calibration samples"), "{e}");
    }
}
