//! Observers: streaming summaries of the values a tensor takes during
//! calibration, turned into a float range at the end.
//!
//! Every observer sees one batch at a time and keeps memory bounded by its
//! configuration (a min/max pair, one per channel, or a histogram), never the
//! activations themselves. Histogram-based methods split into the collection
//! ([`HistogramObserver`]) and a [`RangeChooser`] ([`Entropy`], [`Percentile`],
//! [`Mse`]) that picks the range from the finished histogram.

mod entropy;
mod histogram;
mod minmax;
mod moving_average;
mod mse;
mod per_channel;
mod percentile;

pub use entropy::Entropy;
pub use histogram::{Histogram, HistogramConfig, HistogramMode, HistogramObserver};
pub use minmax::MinMax;
pub use moving_average::MovingAverageMinMax;
pub use mse::Mse;
pub use per_channel::{PerChannelMinMax, default_weight_axis};
pub use percentile::Percentile;

use crate::QuantError;
use crate::qparams::{QParams, QParamsConfig};
use quench_ir::{DType, Tensor};
use std::collections::HashMap;

/// The range an observer settled on: one `(min, max)` per tensor, or one per
/// channel of `axis`.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedRange {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    pub axis: Option<usize>,
}

impl ObservedRange {
    pub fn per_tensor(min: f32, max: f32) -> ObservedRange {
        ObservedRange {
            min: vec![min],
            max: vec![max],
            axis: None,
        }
    }

    pub fn qparams(&self, cfg: &QParamsConfig) -> Result<QParams, QuantError> {
        QParams::from_ranges(&self.min, &self.max, self.axis, cfg)
    }
}

/// A streaming collector of a tensor's values.
pub trait Observer: Send + Sync {
    /// The tensor being observed, for error messages.
    fn name(&self) -> &str;

    /// Adds one batch; `data` is row-major with `shape`.
    fn observe(&mut self, data: &[f32], shape: &[usize]) -> Result<(), QuantError>;

    /// The range chosen from everything observed so far.
    fn range(&self) -> Result<ObservedRange, QuantError>;

    fn observe_tensor(&mut self, t: &Tensor) -> Result<(), QuantError> {
        let data = t.as_slice::<f32>().map_err(|_| QuantError::DType {
            tensor: self.name().to_string(),
            dtype: t.dtype(),
        })?;
        self.observe(data, t.shape())
    }

    fn qparams(&self, cfg: &QParamsConfig) -> Result<QParams, QuantError> {
        self.range()?.qparams(cfg)
    }
}

/// Picks a range from a finished histogram.
pub trait RangeChooser: Send + Sync + std::fmt::Debug {
    /// The kind of histogram this chooser reads.
    fn histogram_mode(&self) -> HistogramMode {
        HistogramMode::Signed
    }

    fn choose(&self, hist: &Histogram) -> Result<(f32, f32), QuantError>;
}

/// Checks that `data` matches `shape` and holds only finite values.
pub(crate) fn check_batch(name: &str, data: &[f32], shape: &[usize]) -> Result<(), QuantError> {
    scan_batch(name, data, shape).map(|_| ())
}

/// [`check_batch`] and [`min_max`] in one pass over the data: calibration
/// reads every activation once, so a second pass is a large share of its cost.
/// Empty data gives `(inf, -inf)`.
pub(crate) fn scan_batch(
    name: &str,
    data: &[f32],
    shape: &[usize],
) -> Result<(f32, f32), QuantError> {
    check_shape(name, data, shape)?;
    if data.is_empty() {
        return Ok((f32::INFINITY, f32::NEG_INFINITY));
    }
    // The vectorised scan answers `None` on NaN; ±inf shows in the range.
    if let Some((lo, hi)) = quench_kernels::int8::min_max(data)
        && lo.is_finite()
        && hi.is_finite()
    {
        return Ok((lo, hi));
    }
    match data.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(QuantError::NonFinite {
            tensor: name.to_string(),
            value: data[index],
            index,
        }),
        None => Err(QuantError::Config(format!("cannot scan tensor '{name}'"))),
    }
}

/// Checks that `data` holds exactly the elements of `shape`.
pub(crate) fn check_shape(name: &str, data: &[f32], shape: &[usize]) -> Result<(), QuantError> {
    let n: usize = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| QuantError::Shape {
            tensor: name.to_string(),
            reason: format!("shape {shape:?} overflows"),
        })?;
    if n != data.len() {
        return Err(QuantError::Shape {
            tensor: name.to_string(),
            reason: format!(
                "shape {shape:?} holds {n} elements but {} were given",
                data.len()
            ),
        });
    }
    Ok(())
}

/// Min and max of finite, non-empty data.
pub(crate) fn min_max(data: &[f32]) -> (f32, f32) {
    data.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// How activation ranges are calibrated, with ORT's defaults.
#[derive(Clone, Debug, PartialEq)]
pub enum CalibrationMethod {
    /// Global min and max (ORT `MinMax`).
    MinMax { symmetric: bool },
    /// Exponential moving average of per-batch min and max (PyTorch).
    MovingAverage {
        averaging_constant: f32,
        symmetric: bool,
    },
    /// KL-divergence threshold (ORT `Entropy`, TensorRT).
    Entropy {
        num_bins: usize,
        num_quantized_bins: usize,
    },
    /// Percentile of the value distribution (ORT `Percentile`).
    Percentile {
        num_bins: usize,
        percentile: f64,
        symmetric: bool,
    },
    /// Range minimising the expected squared quantization error.
    Mse {
        num_bins: usize,
        levels: u32,
        symmetric: bool,
    },
}

impl CalibrationMethod {
    pub fn min_max() -> CalibrationMethod {
        CalibrationMethod::MinMax { symmetric: false }
    }

    pub fn entropy() -> CalibrationMethod {
        CalibrationMethod::Entropy {
            num_bins: HistogramConfig::DEFAULT_BINS,
            num_quantized_bins: Entropy::DEFAULT_QUANTIZED_BINS,
        }
    }

    pub fn percentile() -> CalibrationMethod {
        CalibrationMethod::Percentile {
            num_bins: HistogramConfig::DEFAULT_BINS,
            percentile: Percentile::DEFAULT,
            symmetric: true,
        }
    }

    pub fn mse() -> CalibrationMethod {
        CalibrationMethod::Mse {
            num_bins: HistogramConfig::DEFAULT_BINS,
            levels: 255,
            symmetric: false,
        }
    }

    /// A fresh observer for tensor `name`.
    pub fn observer(&self, name: &str) -> Result<Box<dyn Observer>, QuantError> {
        let hist = |chooser: Box<dyn RangeChooser>, num_bins: usize| {
            let cfg = HistogramConfig::new(num_bins, chooser.histogram_mode());
            HistogramObserver::new(name, cfg, chooser).map(|o| Box::new(o) as Box<dyn Observer>)
        };
        match *self {
            CalibrationMethod::MinMax { symmetric } => {
                Ok(Box::new(MinMax::new(name).symmetric(symmetric)))
            }
            CalibrationMethod::MovingAverage {
                averaging_constant,
                symmetric,
            } => Ok(Box::new(
                MovingAverageMinMax::new(name, averaging_constant)?.symmetric(symmetric),
            )),
            CalibrationMethod::Entropy {
                num_bins,
                num_quantized_bins,
            } => hist(Box::new(Entropy::new(num_quantized_bins)?), num_bins),
            CalibrationMethod::Percentile {
                num_bins,
                percentile,
                symmetric,
            } => hist(Box::new(Percentile::new(percentile, symmetric)?), num_bins),
            CalibrationMethod::Mse {
                num_bins,
                levels,
                symmetric,
            } => hist(Box::new(Mse::new(levels, symmetric)?), num_bins),
        }
    }
}

/// One observer per tensor name, created on first sight: the numeric half of
/// a calibration pass (the graph half feeds it the intermediate tensors).
pub struct Calibrator {
    method: CalibrationMethod,
    index: HashMap<String, usize>,
    observers: Vec<Box<dyn Observer>>,
}

impl Calibrator {
    pub fn new(method: CalibrationMethod) -> Calibrator {
        Calibrator {
            method,
            index: HashMap::new(),
            observers: Vec::new(),
        }
    }

    pub fn method(&self) -> &CalibrationMethod {
        &self.method
    }

    /// Feeds one batch of tensor `name`.
    pub fn observe(&mut self, name: &str, t: &Tensor) -> Result<(), QuantError> {
        if t.dtype() != DType::F32 {
            return Err(QuantError::DType {
                tensor: name.to_string(),
                dtype: t.dtype(),
            });
        }
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.observers.push(self.method.observer(name)?);
                self.index
                    .insert(name.to_string(), self.observers.len() - 1);
                self.observers.len() - 1
            }
        };
        self.observers[i].observe_tensor(t)
    }

    /// `(name, range)` of every observed tensor, in first-seen order.
    pub fn ranges(&self) -> Result<Vec<(String, ObservedRange)>, QuantError> {
        self.observers
            .iter()
            .map(|o| Ok((o.name().to_string(), o.range()?)))
            .collect()
    }

    pub fn range(&self, name: &str) -> Option<Result<ObservedRange, QuantError>> {
        self.index.get(name).map(|&i| self.observers[i].range())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibrator_keeps_one_observer_per_tensor() {
        let mut cal = Calibrator::new(CalibrationMethod::min_max());
        let a = Tensor::from_vec(vec![3], vec![-1.0f32, 0.5, 2.0]).unwrap();
        let b = Tensor::from_vec(vec![2], vec![4.0f32, -0.5]).unwrap();
        cal.observe("x", &a).unwrap();
        cal.observe("y", &b).unwrap();
        cal.observe("x", &b).unwrap();
        let r = cal.ranges().unwrap();
        assert_eq!(
            r[0],
            ("x".to_string(), ObservedRange::per_tensor(-1.0, 4.0))
        );
        assert_eq!(
            r[1],
            ("y".to_string(), ObservedRange::per_tensor(-0.5, 4.0))
        );
        let ints = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        let err = cal.observe("z", &ints).unwrap_err().to_string();
        assert!(err.contains("'z'"), "{err}");
        assert!(cal.range("w").is_none());
    }

    #[test]
    fn every_method_builds_and_reports_ranges() {
        let data: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 3.0)
            .collect();
        for m in [
            CalibrationMethod::min_max(),
            CalibrationMethod::MovingAverage {
                averaging_constant: 0.01,
                symmetric: true,
            },
            CalibrationMethod::entropy(),
            CalibrationMethod::percentile(),
            CalibrationMethod::mse(),
        ] {
            let mut o = m.observer("t").unwrap();
            assert!(o.range().is_err(), "{m:?} gave a range without data");
            o.observe(&data, &[50, 100]).unwrap();
            let r = o.range().unwrap();
            assert!(
                r.min[0] <= 0.0 && r.max[0] > 0.0 && r.max[0] <= 7.0,
                "{m:?}: {r:?}"
            );
            let qp = o.qparams(&QParamsConfig::activation_u8()).unwrap();
            assert!(qp.scale[0] > 0.0);
        }
    }

    #[test]
    fn check_batch_names_the_tensor() {
        let err = check_batch("conv1", &[1.0, f32::NAN], &[2])
            .unwrap_err()
            .to_string();
        assert!(err.contains("conv1") && err.contains("NaN"), "{err}");
        assert!(check_batch("x", &[1.0], &[2]).is_err());
        assert!(check_batch("x", &[], &[usize::MAX, 3]).is_err());
    }

    #[test]
    fn scan_finds_range_and_every_non_finite_value() {
        let mut v: Vec<f32> = (0..37).map(|i| i as f32 - 20.0).collect();
        v[5] = f32::MAX;
        v[6] = f32::MIN;
        assert_eq!(scan_batch("x", &v, &[37]).unwrap(), (f32::MIN, f32::MAX));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 15, 16, 36] {
                let mut w = v.clone();
                w[at] = bad;
                let err = scan_batch("t", &w, &[37]).unwrap_err().to_string();
                assert!(err.contains('t') && err.contains(&at.to_string()), "{err}");
            }
        }
    }
}
