//! Static post-training quantization end to end: prepare (fold, fuse, place),
//! calibrate on sample batches, convert to QDQ, optionally to integer-only ops.

use crate::bias_correction::{BiasCorrectionReport, correct_biases, mean_inputs};
use crate::calibrate::{Batch, Calibration, calibrate};
use crate::fallback::{FallbackReport, batch_len, choose_float_nodes};
use crate::passes::{ConvertReport, PrepareReport, QuantPlan, convert_qdq, prepare};
use crate::{Format, IntReport, QuantConfig, QuantError, to_int};
use quench_ir::Model;
use quench_runtime::{PlanOptions, Registry, Session};

/// The quantized model and what every stage did.
pub struct Quantized {
    pub model: Model,
    pub prepare: PrepareReport,
    pub plan: QuantPlan,
    pub calibration: Calibration,
    pub convert: ConvertReport,
    pub int: Option<IntReport>,
    /// What the accuracy-driven fallback measured, when it ran.
    pub fallback: Option<FallbackReport>,
    /// The biases bias correction shifted, when it ran.
    pub bias_correction: Option<BiasCorrectionReport>,
}

/// Quantizes `model` with `cfg`, calibrating on `batches` (at most `cfg.samples`
/// samples are drawn by the caller). `threads` is the calibration run's thread count.
pub fn quantize_static(
    model: &Model,
    cfg: &QuantConfig,
    batches: impl Iterator<Item = Result<Batch, QuantError>>,
    threads: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Quantized, QuantError> {
    let names: std::collections::HashSet<&str> =
        model.graph.nodes.iter().map(|n| n.name.as_str()).collect();
    cfg.check_node_names(|n| names.contains(n))?;
    let mut prepared = prepare(model, cfg)?;
    let targets: Vec<_> = prepared
        .plan
        .calibrated()
        .map(|a| (a.tensor.clone(), a.config))
        .collect();
    let means = if cfg.bias_correction {
        mean_inputs(&prepared.model.graph, &prepared.plan)
    } else {
        Vec::new()
    };
    // Calibration runs the fused plan (fast conv layouts) with the observed
    // tensors kept intact, rather than the unfused one a hook otherwise gets.
    let observed = targets
        .iter()
        .map(|(n, _)| n.clone())
        .chain(means.iter().map(|(n, _)| n.clone()));
    let session = Session::with_plan_options(
        &prepared.model,
        &Registry::standard(),
        threads,
        PlanOptions::observing(observed),
    )
    .map_err(|e| QuantError::Config(format!("cannot run the prepared float model: {e}")))?;
    // The fallback measures on the first calibration batches: keep copies.
    let wanted = if cfg.fallback_sqnr_db.is_some() {
        cfg.fallback_samples
    } else {
        0
    };
    let mut kept: Vec<Batch> = Vec::new();
    let mut kept_samples = 0;
    let batches = batches.inspect(|b| {
        if let Ok(b) = b
            && kept_samples < wanted
        {
            kept_samples += batch_len(b);
            kept.push(b.clone());
        }
    });
    let calibration = calibrate(
        &session,
        &targets,
        &means,
        &cfg.calibration_method(),
        batches,
        progress,
    )?;
    let fallback = match cfg.fallback_sqnr_db {
        Some(target) => {
            let report = choose_float_nodes(
                model,
                cfg,
                &prepared,
                &session,
                &calibration.qparams,
                &kept,
                target,
                cfg.fallback_max_nodes,
            )?;
            if !report.kept_float.is_empty() {
                let mut cfg = cfg.clone();
                cfg.skip.extend(report.skip().cloned());
                prepared = prepare(model, &cfg)?;
            }
            Some(report)
        }
        None => None,
    };
    let bias_correction = if cfg.bias_correction {
        Some(correct_biases(
            &mut prepared.model.graph,
            &prepared.plan,
            &calibration.means,
        )?)
    } else {
        None
    };
    let (qdq, convert) = convert_qdq(&prepared.model, &prepared.plan, &calibration.qparams)?;
    let (model, int) = match cfg.format {
        Format::Qdq => (qdq, None),
        Format::Int => {
            let (m, r) = to_int(&qdq)?;
            (m, Some(r))
        }
    };
    Ok(Quantized {
        model,
        prepare: prepared.report,
        plan: prepared.plan,
        calibration,
        convert,
        int,
        fallback,
        bias_correction,
    })
}
