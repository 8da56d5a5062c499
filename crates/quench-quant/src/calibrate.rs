//! Calibration: run the float model on sample batches and feed the planned
//! activation tensors to observers as they are produced. Values are observed
//! in a run hook and dropped right after, so memory does not grow with the
//! number of samples (unlike collecting every activation first).

use crate::{CalibrationMethod, Calibrator, ObservedRange, QParams, QParamsConfig, QuantError};
use quench_ir::Tensor;
use quench_runtime::{RunHooks, Session};
use std::collections::{BTreeMap, HashMap};

/// One batch of named model inputs.
pub type Batch = Vec<(String, Tensor)>;

/// Ranges and quantization parameters found for each calibrated tensor.
#[derive(Debug, Default)]
pub struct Calibration {
    pub ranges: BTreeMap<String, ObservedRange>,
    pub qparams: BTreeMap<String, QParams>,
    pub batches: usize,
}

/// Observes `targets` (tensor name → how it will be quantized) over `batches`.
///
/// Graph inputs among the targets are observed from the fed batch; all other
/// tensors as the runtime produces them. `progress` is told after each batch.
pub fn calibrate(
    session: &Session,
    targets: &[(String, QParamsConfig)],
    method: &CalibrationMethod,
    batches: impl Iterator<Item = Result<Batch, QuantError>>,
    progress: &mut dyn FnMut(usize),
) -> Result<Calibration, QuantError> {
    let wanted: HashMap<&str, &QParamsConfig> =
        targets.iter().map(|(n, c)| (n.as_str(), c)).collect();
    let mut calibrator = Calibrator::new(method.clone());
    let mut count = 0;
    for batch in batches {
        let batch = batch?;
        for (name, t) in &batch {
            if wanted.contains_key(name.as_str()) {
                calibrator.observe(name, t)?;
            }
        }
        let mut failure: Option<QuantError> = None;
        let mut hook = |name: &str, t: &Tensor| {
            if failure.is_none() && wanted.contains_key(name) {
                failure = calibrator.observe(name, t).err();
            }
        };
        let mut hooks = RunHooks {
            on_value: Some(&mut hook),
            ..Default::default()
        };
        session
            .run_with(batch, &mut hooks)
            .map_err(|e| QuantError::Config(format!("calibration run {}: {e}", count + 1)))?;
        if let Some(e) = failure {
            return Err(e);
        }
        count += 1;
        progress(count);
    }
    if count == 0 {
        return Err(QuantError::Config("no calibration samples".into()));
    }
    let mut out = Calibration {
        batches: count,
        ..Default::default()
    };
    // Histogram range choosers (entropy above all) cost more than the runs on
    // small models; they parallelise inside, in the session's pool.
    let calibrator = &calibrator;
    session.install(|| {
        for (name, cfg) in targets {
            let range = calibrator.range(name).ok_or_else(|| QuantError::NoData {
                tensor: name.clone(),
            })??;
            out.qparams.insert(name.clone(), range.qparams(cfg)?);
            out.ranges.insert(name.clone(), range);
        }
        Ok::<(), QuantError>(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quench_ir::{DType, Graph, Model, Node, OpsetImport, ValueInfo};

    fn identity_model() -> Model {
        Model {
            ir_version: 8,
            opset_imports: vec![OpsetImport {
                domain: String::new(),
                version: 17,
            }],
            graph: Graph {
                inputs: vec![ValueInfo::tensor("x", DType::F32, None)],
                outputs: vec![ValueInfo::tensor("y", DType::F32, None)],
                nodes: vec![
                    Node::new("Constant", "c", &[], &["k"])
                        .with_attr("value_float", quench_ir::Attr::Float(2.0)),
                ],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn observes_inputs_across_batches_and_rejects_nan() {
        let mut m = identity_model();
        // y is the graph input itself: no op needed.
        m.graph.outputs = vec![ValueInfo::tensor("x", DType::F32, None)];
        let s = Session::new(&m, 1).unwrap();
        let batch = |v: Vec<f32>| {
            Ok(vec![(
                "x".to_string(),
                Tensor::from_vec(vec![v.len()], v).unwrap(),
            )])
        };
        let targets = vec![("x".to_string(), QParamsConfig::activation_u8())];
        let mut seen = 0;
        let c = calibrate(
            &s,
            &targets,
            &CalibrationMethod::min_max(),
            vec![batch(vec![-1.0, 2.0]), batch(vec![0.5, 3.0])].into_iter(),
            &mut |n| seen = n,
        )
        .unwrap();
        assert_eq!(seen, 2);
        let r = &c.ranges["x"];
        assert_eq!((r.min[0], r.max[0]), (-1.0, 3.0));
        assert!((c.qparams["x"].scale[0] - 4.0 / 255.0).abs() < 1e-7);
        let err = calibrate(
            &s,
            &targets,
            &CalibrationMethod::min_max(),
            vec![batch(vec![f32::NAN])].into_iter(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("'x'"), "{err}");
    }
}
