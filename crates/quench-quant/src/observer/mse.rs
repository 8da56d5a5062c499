//! Range minimising the expected squared quantization error.

use super::{Histogram, HistogramMode, RangeChooser};
use crate::QuantError;

/// Searches the histogram edges for the `[lo, hi]` minimising
/// `Σ count · err(bin)`, where a bin's values are taken at its centre: values
/// inside the range cost the uniform rounding noise `Δ²/12` with
/// `Δ = (hi − lo) / levels`, values outside cost their squared clipping
/// distance. With prefix sums each candidate is O(1), so the search is
/// exhaustive over (edge ≤ 0, edge ≥ 0) pairs (or over `t` when symmetric),
/// thinned to at most [`Mse::MAX_CANDIDATES`] per side. The result is
/// clipped to the observed min/max like the other choosers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mse {
    levels: u32,
    symmetric: bool,
}

impl Mse {
    pub const MAX_CANDIDATES: usize = 2048;

    /// `levels` is `qmax − qmin` of the target type (255 for uint8, 254 for
    /// symmetric int8).
    pub fn new(levels: u32, symmetric: bool) -> Result<Mse, QuantError> {
        if levels == 0 {
            return Err(QuantError::Config(
                "MSE needs at least one quantization step".into(),
            ));
        }
        Ok(Mse { levels, symmetric })
    }
}

/// Prefix sums of count, count·c and count·c² over bin centres `c`.
struct Moments {
    n: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
}

impl Moments {
    fn new(counts: &[u64], edges: &[f32]) -> Moments {
        let mut m = Moments {
            n: vec![0.0],
            s1: vec![0.0],
            s2: vec![0.0],
        };
        for (i, &c) in counts.iter().enumerate() {
            let (c, x) = (c as f64, (edges[i] as f64 + edges[i + 1] as f64) / 2.0);
            m.n.push(m.n[i] + c);
            m.s1.push(m.s1[i] + c * x);
            m.s2.push(m.s2[i] + c * x * x);
        }
        m
    }

    /// `Σ count·(c − a)²` over bins `[i, j)`.
    fn sq_dist(&self, i: usize, j: usize, a: f64) -> f64 {
        let n = self.n[j] - self.n[i];
        let s1 = self.s1[j] - self.s1[i];
        let s2 = self.s2[j] - self.s2[i];
        (s2 - 2.0 * a * s1 + a * a * n).max(0.0)
    }
}

impl Mse {
    /// Expected error of range `[edges[a], edges[b]]` (bins `a..b` inside).
    fn error(&self, m: &Moments, edges: &[f32], a: usize, b: usize) -> f64 {
        let nb = m.n.len() - 1;
        let (lo, hi) = (edges[a] as f64, edges[b] as f64);
        let step = (hi - lo) / self.levels as f64;
        let inside = m.n[b] - m.n[a];
        m.sq_dist(0, a, lo) + m.sq_dist(b, nb, hi) + inside * step * step / 12.0
    }
}

/// Up to `max` indices spread evenly over `range`, ends included.
fn candidates(range: std::ops::RangeInclusive<usize>, max: usize) -> Vec<usize> {
    let (s, e) = (*range.start(), *range.end());
    let len = e - s + 1;
    if len <= max {
        return range.collect();
    }
    (0..max).map(|k| s + k * (len - 1) / (max - 1)).collect()
}

impl RangeChooser for Mse {
    fn choose(&self, hist: &Histogram) -> Result<(f32, f32), QuantError> {
        if hist.mode() != HistogramMode::Signed {
            return Err(QuantError::Config("MSE needs a signed histogram".into()));
        }
        let (counts, edges) = (hist.counts(), hist.edges());
        let n = counts.len();
        let m = Moments::new(counts, edges);
        let zero = n / 2;
        let mut best = (f64::INFINITY, 0, n);
        if self.symmetric {
            for i in candidates(0..=zero, Self::MAX_CANDIDATES) {
                let e = self.error(&m, edges, i, n - i);
                if e < best.0 {
                    best = (e, i, n - i);
                }
            }
        } else {
            let his = candidates(zero..=n, Self::MAX_CANDIDATES);
            for a in candidates(0..=zero, Self::MAX_CANDIDATES) {
                for &b in &his {
                    let e = self.error(&m, edges, a, b);
                    if e < best.0 {
                        best = (e, a, b);
                    }
                }
            }
        }
        let (_, a, b) = best;
        Ok((edges[a].max(hist.min()), edges[b].min(hist.max())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::HistogramConfig;

    fn quant_mse(xs: &[f32], lo: f32, hi: f32, levels: u32) -> f64 {
        let s = (hi - lo) as f64 / levels as f64;
        xs.iter()
            .map(|&x| {
                let q = ((x as f64 - lo as f64) / s)
                    .round()
                    .clamp(0.0, levels as f64);
                let d = lo as f64 + q * s - x as f64;
                d * d
            })
            .sum::<f64>()
            / xs.len() as f64
    }

    fn uniform(n: usize, seed: u32) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f64 + 0.5) / (u32::MAX as f64 + 1.0)
            })
            .collect()
    }

    fn gaussianish(n: usize) -> Vec<f32> {
        uniform(12 * n, 0x9e37_79b9)
            .chunks(12)
            .map(|c| (c.iter().sum::<f64>() - 6.0) as f32)
            .collect()
    }

    fn laplace(n: usize) -> Vec<f32> {
        uniform(n, 0x1234_5678)
            .iter()
            .map(|&u| {
                let u = u - 0.5;
                (-(1.0 - 2.0 * u.abs()).ln() * u.signum()) as f32
            })
            .collect()
    }

    #[test]
    fn clips_heavy_tails_and_finds_the_sample_optimum() {
        let xs = laplace(20000);
        let (mn, mx) = crate::observer::min_max(&xs);
        let mut h = Histogram::new(HistogramConfig::new(2048, HistogramMode::Signed)).unwrap();
        h.add("x", &xs).unwrap();
        for (levels, symmetric) in [(255, false), (254, true), (15, false), (14, true)] {
            let (lo, hi) = Mse::new(levels, symmetric).unwrap().choose(&h).unwrap();
            let chosen = quant_mse(&xs, lo, hi, levels);
            let minmax = quant_mse(&xs, mn, mx, levels);
            // Clipping pays off a little at 8 bits and a lot at 4.
            let gain = if levels > 15 { 1.0 } else { 0.5 };
            assert!(
                chosen < minmax * gain,
                "{levels}: {chosen} vs {minmax} at [{lo}, {hi}]"
            );
            assert!(hi < mx || lo > mn);
            // A scan of the true sample error finds nothing much better.
            let best_scan = (1..400)
                .map(|k| {
                    let t = k as f32 * 0.025;
                    quant_mse(&xs, -t, t, levels)
                })
                .fold(f64::INFINITY, f64::min);
            assert!(
                chosen <= best_scan * 1.1,
                "{levels}: {chosen} vs scan {best_scan}"
            );
        }
    }

    #[test]
    fn one_sided_data_and_errors() {
        let xs: Vec<f32> = gaussianish(5000).iter().map(|v| v.max(0.0)).collect();
        let mut h = Histogram::new(HistogramConfig::new(512, HistogramMode::Signed)).unwrap();
        h.add("x", &xs).unwrap();
        let (lo, hi) = Mse::new(255, false).unwrap().choose(&h).unwrap();
        assert_eq!(lo, 0.0);
        assert!(hi > 2.0, "{hi}");
        assert!(Mse::new(0, false).is_err());
        let mut a = Histogram::new(HistogramConfig::new(8, HistogramMode::Absolute)).unwrap();
        a.add("x", &[1.0]).unwrap();
        assert!(Mse::new(255, false).unwrap().choose(&a).is_err());
        assert_eq!(candidates(0..=10, 3), vec![0, 5, 10]);
    }
}
