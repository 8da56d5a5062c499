//! Percentile range (ORT `PercentileCalibrater`): drop the rarest
//! `100 - percentile` % of values.

use super::{Histogram, HistogramMode, RangeChooser};
use crate::QuantError;

/// ORT's `compute_percentile`. Symmetric: the threshold is read from the
/// |x| histogram; asymmetric: `(100 - p)/2` % is cut on each side of the
/// signed histogram. Like ORT, the left edge of the bin where the CDF
/// crosses is returned, and the result is clipped to the observed min/max.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percentile {
    percentile: f64,
    symmetric: bool,
}

impl Percentile {
    /// ORT's default.
    pub const DEFAULT: f64 = 99.999;

    pub fn new(percentile: f64, symmetric: bool) -> Result<Percentile, QuantError> {
        if !(0.0..=100.0).contains(&percentile) {
            return Err(QuantError::Config(format!(
                "percentile {percentile} is not in [0, 100]"
            )));
        }
        Ok(Percentile {
            percentile,
            symmetric,
        })
    }
}

/// First index whose CDF value is `>= v` (`np.searchsorted(cdf, v)`).
fn search(cdf: &[f64], v: f64) -> usize {
    cdf.partition_point(|&c| c < v)
}

impl RangeChooser for Percentile {
    fn histogram_mode(&self) -> HistogramMode {
        if self.symmetric {
            HistogramMode::Absolute
        } else {
            HistogramMode::Signed
        }
    }

    fn choose(&self, hist: &Histogram) -> Result<(f32, f32), QuantError> {
        if hist.mode() != self.histogram_mode() {
            return Err(QuantError::Config(format!(
                "percentile (symmetric: {}) needs a {:?} histogram",
                self.symmetric,
                self.histogram_mode()
            )));
        }
        let total = hist.total();
        if total == 0 {
            return Err(QuantError::Config(
                "percentile of an empty histogram".into(),
            ));
        }
        let mut acc = 0.0f64;
        let cdf: Vec<f64> = hist
            .counts()
            .iter()
            .map(|&c| {
                acc += c as f64 / total as f64;
                acc
            })
            .collect();
        let edges = hist.edges();
        let (mut lo, mut hi) = if self.symmetric {
            let t = edges[search(&cdf, self.percentile / 100.0)];
            (-t, t)
        } else {
            let cut = (100.0 - self.percentile) / 200.0;
            (edges[search(&cdf, cut)], edges[search(&cdf, 1.0 - cut)])
        };
        if lo < hist.min() {
            lo = hist.min();
        }
        if hi > hist.max() {
            hi = hist.max();
        }
        Ok((lo, hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::HistogramConfig;

    fn hist(mode: HistogramMode, xs: &[f32], bins: usize) -> Histogram {
        let mut h = Histogram::new(HistogramConfig::new(bins, mode)).unwrap();
        h.add("x", xs).unwrap();
        h
    }

    #[test]
    fn symmetric_matches_sorted_reference() {
        // 10000 values -1000..1000 in steps of 0.2; the 99% |x| quantile is 990.
        let xs: Vec<f32> = (0..10000).map(|i| (i as f32 - 5000.0) * 0.2).collect();
        let h = hist(HistogramMode::Absolute, &xs, 1000);
        let (lo, hi) = Percentile::new(99.0, true).unwrap().choose(&h).unwrap();
        let mut abs: Vec<f32> = xs.iter().map(|v| v.abs()).collect();
        abs.sort_by(f32::total_cmp);
        let q = abs[(0.99 * abs.len() as f64) as usize];
        let w = h.edges()[1] - h.edges()[0];
        assert!((hi - q).abs() <= w, "{hi} vs {q}");
        assert_eq!(lo, -hi);
    }

    #[test]
    fn asymmetric_cuts_both_tails_and_clips() {
        // Skewed: 0..100 plus a tail to 1000.
        let mut xs: Vec<f32> = (0..9990).map(|i| i as f32 / 99.9).collect();
        xs.extend((0..10).map(|i| 100.0 + i as f32 * 90.0));
        let h = hist(HistogramMode::Signed, &xs, 2000);
        let (lo, hi) = Percentile::new(99.8, false).unwrap().choose(&h).unwrap();
        assert_eq!(lo, 0.0); // clipped to the observed min
        assert!((99.0..=101.0).contains(&hi), "{hi}");
        let (lo, hi) = Percentile::new(100.0, false).unwrap().choose(&h).unwrap();
        assert_eq!((lo, hi), (0.0, 910.0));
    }

    #[test]
    fn errors() {
        assert!(Percentile::new(100.5, true).is_err());
        let h = hist(HistogramMode::Signed, &[1.0, 2.0], 8);
        assert!(Percentile::new(99.0, true).unwrap().choose(&h).is_err());
    }
}
