//! KL-divergence calibration (TensorRT's method, as ORT's
//! `HistogramCollector.get_entropy_threshold`).

use super::{Histogram, HistogramMode, RangeChooser};
use crate::QuantError;
use rayon::prelude::*;

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
    /// `num_quantized_bins / 2` to the zero bin index). Windows are
    /// independent, so they are scored in parallel (in the caller's rayon pool).
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
        Ok((half_q..=zero_bin)
            .into_par_iter()
            .map(|i| {
                let start = zero_bin - i;
                let end = (zero_bin + i + 1).min(n);
                let head = prefix[start];
                let tail = prefix[n] - prefix[end];
                window_divergence(&counts[start..end], head, tail, nq)
            })
            .collect())
    }
}

/// The divergence of one window `sliced` (with the `head`/`tail` outlier
/// counts folded into its first/last bin) from its `nq`-level quantization.
///
/// Same value as smoothing `p` and `q` (ORT's `smooth_distribution`) and
/// taking [`kl_divergence`], without materialising them: `q` is constant over
/// each merged bin, so its logarithm is taken once per merged bin, and
/// `KL = Σ p·(ln p − ln q) / Σp + ln Σq − ln Σp`.
fn window_divergence(sliced: &[u64], head: u64, tail: u64, nq: usize) -> f64 {
    const EPS: f64 = 1e-4;
    let len = sliced.len();
    let p_at = |j: usize| {
        let mut v = sliced[j];
        if j == 0 {
            v += head;
        }
        if j == len - 1 {
            v += tail;
        }
        v
    };
    // Smoothing of p.
    let p_zeros = (0..len).filter(|&j| p_at(j) == 0).count();
    let p_nonzeros = len - p_zeros;
    if p_nonzeros == 0 {
        return f64::INFINITY;
    }
    let eps_p = EPS * p_zeros as f64 / p_nonzeros as f64;
    if eps_p >= 1.0 {
        return f64::INFINITY;
    }
    // q: one value per merged bin (integer mean over p's non-empty bins),
    // zero past the last merged bin.
    let merged = len / nq;
    let mut q_vals = Vec::with_capacity(nq);
    let mut q_zeros = len - nq * merged;
    for k in 0..nq {
        let (s, e) = (k * merged, (k + 1) * merged);
        let mut sum: u64 = sliced[s..e].iter().sum();
        if k == nq - 1 {
            sum += sliced[nq * merged..].iter().sum::<u64>();
        }
        let nonzero = (s..e).filter(|&j| p_at(j) != 0).count() as u64;
        let v = sum.checked_div(nonzero).unwrap_or(0);
        if v == 0 {
            q_zeros += merged;
        }
        q_vals.push(v);
    }
    let q_nonzeros = len - q_zeros;
    if q_nonzeros == 0 {
        return f64::INFINITY;
    }
    let eps_q = EPS * q_zeros as f64 / q_nonzeros as f64;
    if eps_q >= 1.0 {
        return f64::INFINITY;
    }
    let smooth_q = |v: u64| if v == 0 { EPS } else { v as f64 - eps_q };
    let ln_eps = EPS.ln();
    let (mut sum_p, mut sum_q, mut acc) = (0.0f64, 0.0f64, 0.0f64);
    let mut add = |j: usize, q: f64, ln_q: f64, sum_q: &mut f64| {
        let c = p_at(j);
        let (p, ln_p) = if c == 0 {
            (EPS, ln_eps)
        } else {
            let p = c as f64 - eps_p;
            (p, p.ln())
        };
        sum_p += p;
        *sum_q += q;
        acc += p * (ln_p - ln_q);
    };
    for (k, &v) in q_vals.iter().enumerate() {
        let q = smooth_q(v);
        let ln_q = q.ln();
        for j in k * merged..(k + 1) * merged {
            add(j, q, ln_q, &mut sum_q);
        }
    }
    for j in nq * merged..len {
        add(j, EPS, ln_eps, &mut sum_q);
    }
    acc / sum_p + sum_q.ln() - sum_p.ln()
}

#[cfg(test)]
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

#[cfg(test)]
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

    /// The divergence computed the direct way: materialise `p` and `q`,
    /// smooth both, take [`kl_divergence`] (what `window_divergence` shortcuts).
    fn reference_divergence(sliced: &[u64], head: u64, tail: u64, nq: usize) -> f64 {
        let len = sliced.len();
        let mut p: Vec<f64> = sliced.iter().map(|&c| c as f64).collect();
        p[0] += head as f64;
        p[len - 1] += tail as f64;
        let merged = len / nq;
        let mut q = vec![0.0; len];
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
        match (smooth(&mut p), smooth(&mut q)) {
            (true, true) => kl_divergence(&p, &q),
            _ => f64::INFINITY,
        }
    }

    #[test]
    fn window_divergence_matches_direct_computation() {
        let mut s = 0x9e37_79b9u32;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        for case in 0..200 {
            let nq = [2, 4, 8, 128][case % 4];
            let len = nq + (next() as usize % 300);
            let sparse = case % 3 == 0;
            let sliced: Vec<u64> = (0..len)
                .map(|_| {
                    let r = next();
                    if sparse && r % 4 != 0 {
                        0
                    } else {
                        (r % 50) as u64
                    }
                })
                .collect();
            let (head, tail) = ((next() % 7) as u64, (next() % 5) as u64);
            let fast = window_divergence(&sliced, head, tail, nq);
            let slow = reference_divergence(&sliced, head, tail, nq);
            if slow.is_infinite() {
                assert!(fast.is_infinite(), "case {case}: {fast} vs inf");
            } else {
                assert!(
                    (fast - slow).abs() <= 1e-9 * slow.abs().max(1.0),
                    "case {case}: {fast} vs {slow}"
                );
            }
        }
        assert!(window_divergence(&[0, 0, 0, 0], 0, 0, 2).is_infinite());
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
