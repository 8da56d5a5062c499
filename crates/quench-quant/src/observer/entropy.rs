//! KL-divergence calibration (TensorRT's method, as ORT's
//! `HistogramCollector.get_entropy_threshold`).

use super::{Histogram, HistogramMode, RangeChooser};
use crate::QuantError;

/// Picks the symmetric window `[edges[z - i], edges[z + i + 1]]` around the
/// zero bin `z` whose clipped distribution `p` is closest (KL divergence) to
/// its `num_quantized_bins`-level quantization `q`.
///
/// ORT's details are kept because they move the answer: `q` spreads a merged
/// bin's count over the non-empty source bins with integer (floor) division
/// but fills empty ones too; both distributions are smoothed with eps 1e-4;
/// the first minimum wins; the window is clipped to the observed min/max.
/// ORT computes the divergence in f32, Quench in f64, so near-ties may pick a
/// neighbouring window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entropy {
    num_quantized_bins: usize,
}

impl Entropy {
    /// ORT's and TensorRT's default.
    pub const DEFAULT_QUANTIZED_BINS: usize = 128;

    pub fn new(num_quantized_bins: usize) -> Result<Entropy, QuantError> {
        if num_quantized_bins < 2 {
            return Err(QuantError::Config(format!(
                "entropy needs at least 2 quantized bins, got {num_quantized_bins}"
            )));
        }
        Ok(Entropy { num_quantized_bins })
    }

    /// KL divergence of every candidate window, in ORT's order (`i` from
    /// `num_quantized_bins / 2` to the zero bin index).
    pub fn divergences(&self, hist: &Histogram) -> Result<Vec<f64>, QuantError> {
        let counts = hist.counts();
        let n = counts.len();
        let nq = self.num_quantized_bins;
        let zero_bin = n / 2;
        let half_q = nq / 2;
        if zero_bin < half_q {
            return Err(QuantError::Config(format!(
                "histogram has {n} bins, too few for {nq} quantized bins"
            )));
        }
        let mut prefix = Vec::with_capacity(n + 1);
        prefix.push(0u64);
        for &c in counts {
            prefix.push(prefix[prefix.len() - 1] + c);
        }
        let mut p = Vec::with_capacity(n);
        let mut q = Vec::with_capacity(n);
        let mut out = Vec::with_capacity(zero_bin - half_q + 1);
        for i in half_q..=zero_bin {
            let start = zero_bin - i;
            let end = (zero_bin + i + 1).min(n);
            let sliced = &counts[start..end];
            let len = sliced.len();
            p.clear();
            p.extend(sliced.iter().map(|&c| c as f64));
            p[0] += prefix[start] as f64;
            p[len - 1] += (prefix[n] - prefix[end]) as f64;

            let merged = len / nq;
            q.clear();
            q.resize(len, 0.0);
            for k in 0..nq {
                let (s, e) = (k * merged, (k + 1) * merged);
                let mut sum: u64 = sliced[s..e].iter().sum();
                if k == nq - 1 {
                    sum += sliced[nq * merged..].iter().sum::<u64>();
                }
                let nonzero = p[s..e].iter().filter(|&&v| v != 0.0).count() as u64;
                if let Some(v) = sum.checked_div(nonzero) {
                    q[s..e].fill(v as f64);
                }
            }
            out.push(match (smooth(&mut p), smooth(&mut q)) {
                (true, true) => kl_divergence(&p, &q),
                _ => f64::INFINITY,
            });
        }
        Ok(out)
    }
}

/// ORT's `smooth_distribution`: zeros become eps, taken from the non-zeros.
/// False where ORT would return None or fail its positivity assertion.
fn smooth(p: &mut [f64]) -> bool {
    const EPS: f64 = 1e-4;
    let zeros = p.iter().filter(|&&v| v == 0.0).count();
    let nonzeros = p.len() - zeros;
    if nonzeros == 0 {
        return false;
    }
    let eps1 = EPS * zeros as f64 / nonzeros as f64;
    if eps1 >= 1.0 {
        return false;
    }
    for v in p.iter_mut() {
        *v = if *v == 0.0 { EPS } else { *v - eps1 };
        if *v <= 0.0 {
            return false;
        }
    }
    true
}

/// `scipy.stats.entropy(p, q)` on unnormalised, strictly positive inputs.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let sp: f64 = p.iter().sum();
    let sq: f64 = q.iter().sum();
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let (a, b) = (a / sp, b / sq);
            a * (a / b).ln()
        })
        .sum()
}

impl RangeChooser for Entropy {
    fn choose(&self, hist: &Histogram) -> Result<(f32, f32), QuantError> {
        if hist.mode() != HistogramMode::Signed {
            return Err(QuantError::Config(
                "entropy needs a signed histogram".into(),
            ));
        }
        let div = self.divergences(hist)?;
        let mut best = 0;
        for (k, &d) in div.iter().enumerate() {
            if d < div[best] {
                best = k;
            }
        }
        let zero_bin = hist.counts().len() / 2;
        let i = best + self.num_quantized_bins / 2;
        let edges = hist.edges();
        let start = zero_bin - i;
        let end = (zero_bin + i + 1).min(hist.counts().len());
        Ok((edges[start].max(hist.min()), edges[end].min(hist.max())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::HistogramConfig;

    /// Laplace-like values from a deterministic sequence, with a few outliers.
    fn laplace_with_outliers() -> Vec<f32> {
        let mut s = 0x1234_5678u32;
        let mut xs: Vec<f32> = (0..20000)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let u = (s as f64 + 0.5) / (u32::MAX as f64 + 1.0) - 0.5;
                (-(1.0 - 2.0 * u.abs()).ln() * u.signum()) as f32
            })
            .collect();
        xs.extend([60.0, -55.0, 58.0]);
        xs
    }

    #[test]
    fn clips_outliers() {
        let xs = laplace_with_outliers();
        let mut h = Histogram::new(HistogramConfig::new(2048, HistogramMode::Signed)).unwrap();
        h.add("x", &xs).unwrap();
        let (lo, hi) = Entropy::new(128).unwrap().choose(&h).unwrap();
        assert!(lo < -3.0 && lo > -50.0, "{lo}");
        assert!(hi > 3.0 && hi < 50.0, "{hi}");
    }

    #[test]
    fn single_candidate_is_full_range() {
        // ORT's defaults (128 bins, 128 quantized bins): one window only.
        let mut h = Histogram::new(HistogramConfig::new(128, HistogramMode::Signed)).unwrap();
        h.add("x", &[-1.0, 0.5, 3.0]).unwrap();
        let e = Entropy::new(128).unwrap();
        assert_eq!(e.divergences(&h).unwrap().len(), 1);
        assert_eq!(e.choose(&h).unwrap(), (-1.0, 3.0));
    }

    #[test]
    fn smoothing_and_errors() {
        let mut p = vec![0.0, 2.0, 0.0, 2.0];
        assert!(smooth(&mut p));
        assert_eq!(p, vec![1e-4, 2.0 - 1e-4, 1e-4, 2.0 - 1e-4]);
        assert!(!smooth(&mut [0.0, 0.0]));
        assert!(kl_divergence(&[1.0, 1.0], &[2.0, 2.0]).abs() < 1e-12);
        assert!(Entropy::new(1).is_err());
        let mut h = Histogram::new(HistogramConfig::new(64, HistogramMode::Signed)).unwrap();
        h.add("x", &[1.0]).unwrap();
        assert!(Entropy::new(128).unwrap().choose(&h).is_err());
    }
}
