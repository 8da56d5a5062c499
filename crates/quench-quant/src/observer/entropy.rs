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
    ///
    /// Windows are nested around the zero bin, so the sums over each window's
    /// interior (`Σ c·ln c`, `Σ ln c`, `Σ c⁻ᵐ`) are grown from the centre once
    /// and every window then costs `O(num_quantized_bins)` instead of one
    /// logarithm per bin ([`fast_window`]); the rare windows whose smoothing
    /// is too strong for that fall back to [`window_divergence`].
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
        let mut zero_prefix = Vec::with_capacity(n + 1);
        prefix.push(0u64);
        zero_prefix.push(0usize);
        for &c in counts {
            prefix.push(prefix[prefix.len() - 1] + c);
            zero_prefix.push(zero_prefix[zero_prefix.len() - 1] + usize::from(c == 0));
        }
        let window = |i: usize| (zero_bin - i, (zero_bin + i + 1).min(n));
        // Interior sums of every window, grown from the centre outwards.
        let mut interiors = Vec::with_capacity(zero_bin + 1 - half_q);
        let mut m = Moments::default();
        let (mut lo, mut hi) = (zero_bin, zero_bin);
        for i in half_q..=zero_bin {
            let (start, end) = window(i);
            while lo > start + 1 {
                lo -= 1;
                m.add(counts[lo]);
            }
            while hi + 1 < end {
                m.add(counts[hi]);
                hi += 1;
            }
            interiors.push(m.clone());
        }
        let sums = RangeSums {
            counts,
            prefix: &prefix,
            zero_prefix: &zero_prefix,
        };
        Ok(interiors
            .into_par_iter()
            .enumerate()
            .map(|(k, m)| {
                let i = half_q + k;
                let (start, end) = window(i);
                let head = prefix[start];
                let tail = prefix[n] - prefix[end];
                fast_window(&sums, start, end, head, tail, nq, &m)
                    .unwrap_or_else(|| window_divergence(&counts[start..end], head, tail, nq))
            })
            .collect())
    }
}

/// Taylor terms of `(c − e)·ln(c − e)` at most kept by [`fast_window`].
const MAX_TERMS: usize = 12;

/// Sums over the non-empty bins of a window's interior: `Σ c·ln c`, `Σ ln c`,
/// their number, and `Σ c⁻ᵐ` for `m = 1..MAX_TERMS`.
#[derive(Clone, Debug, Default)]
struct Moments {
    c_ln_c: f64,
    ln_c: f64,
    nonzero: usize,
    inv_pow: [f64; MAX_TERMS - 1],
}

impl Moments {
    fn add(&mut self, c: u64) {
        if c == 0 {
            return;
        }
        let c = c as f64;
        let ln = c.ln();
        self.c_ln_c += c * ln;
        self.ln_c += ln;
        self.nonzero += 1;
        let inv = 1.0 / c;
        let mut p = inv;
        for v in &mut self.inv_pow {
            *v += p;
            p *= inv;
        }
    }

    /// `Σ (c − e)·ln(c − e)` over the non-empty bins, from
    /// `(c−e)·ln(c−e) = c·ln c − e·ln c − e + Σₖ≥₂ eᵏ·c¹⁻ᵏ / (k(k−1))`;
    /// `None` when `e` needs more than [`MAX_TERMS`] terms for f64 precision.
    fn smoothed_p_ln_p(&self, e: f64) -> Option<f64> {
        let mut sum = self.c_ln_c - e * self.ln_c - e * self.nonzero as f64;
        if e == 0.0 {
            return Some(sum);
        }
        // Terms shrink by at least `e` each: stop once the rest is below 1e-17·c.
        let mut ek = e;
        for k in 2..=MAX_TERMS {
            ek *= e;
            sum += ek / (k * (k - 1)) as f64 * self.inv_pow[k - 2];
            if ek * e / ((k + 1) * k) as f64 <= 1e-17 * (1.0 - e) {
                return Some(sum);
            }
        }
        None
    }
}

/// Exact range sums of a histogram's counts and of its empty bins.
struct RangeSums<'a> {
    counts: &'a [u64],
    prefix: &'a [u64],
    zero_prefix: &'a [usize],
}

impl RangeSums<'_> {
    fn sum(&self, a: usize, b: usize) -> u64 {
        self.prefix[b] - self.prefix[a]
    }

    fn zeros(&self, a: usize, b: usize) -> usize {
        self.zero_prefix[b] - self.zero_prefix[a]
    }
}

/// [`window_divergence`] of the window `[start, end)` computed from range
/// sums: the same quantities, summed in another order (equal to ~1e-12).
fn fast_window(
    h: &RangeSums,
    start: usize,
    end: usize,
    head: u64,
    tail: u64,
    nq: usize,
    interior: &Moments,
) -> Option<f64> {
    const EPS: f64 = 1e-4;
    let len = end - start;
    if len < 3 {
        return None;
    }
    let (c0, cl) = (h.counts[start], h.counts[end - 1]);
    let (p0, pl) = (c0 + head, cl + tail);
    let p_zeros = (len - 2 - interior.nonzero) + usize::from(p0 == 0) + usize::from(pl == 0);
    let p_nonzeros = len - p_zeros;
    if p_nonzeros == 0 {
        return Some(f64::INFINITY);
    }
    let eps_p = EPS * p_zeros as f64 / p_nonzeros as f64;
    if eps_p >= 1.0 {
        return Some(f64::INFINITY);
    }
    // Window-relative [a, b): bins whose p (edges folded in) is non-empty,
    // and the sum of p before smoothing.
    let nonzero_p = |a: usize, b: usize| {
        let mut nz = (b - a) - h.zeros(start + a, start + b);
        if a == 0 && c0 == 0 && p0 != 0 {
            nz += 1;
        }
        if b == len && cl == 0 && pl != 0 {
            nz += 1;
        }
        nz
    };
    let raw_p = |a: usize, b: usize| {
        let mut s = h.sum(start + a, start + b);
        if a == 0 {
            s += head;
        }
        if b == len {
            s += tail;
        }
        s
    };
    let smoothed_sum = |a: usize, b: usize, nz: usize| {
        raw_p(a, b) as f64 - eps_p * nz as f64 + EPS * (b - a - nz) as f64
    };
    let merged = len / nq;
    let rest = nq * merged;
    // q: one value per merged bin, (count sum / non-empty p bins).
    let mut merged_bins = Vec::with_capacity(nq);
    let mut q_zeros = len - rest;
    for k in 0..nq {
        let (s, e) = (k * merged, (k + 1) * merged);
        let mut sum = h.sum(start + s, start + e);
        if k == nq - 1 {
            sum += h.sum(start + rest, end);
        }
        let nz = nonzero_p(s, e);
        let v = sum.checked_div(nz as u64).unwrap_or(0);
        if v == 0 {
            q_zeros += merged;
        }
        merged_bins.push((v, nz));
    }
    let q_nonzeros = len - q_zeros;
    if q_nonzeros == 0 {
        return Some(f64::INFINITY);
    }
    let eps_q = EPS * q_zeros as f64 / q_nonzeros as f64;
    if eps_q >= 1.0 {
        return Some(f64::INFINITY);
    }
    // Σ p·ln p, Σ p·ln q, Σ p, Σ q.
    let edge = |p: u64| {
        if p == 0 {
            0.0
        } else {
            let x = p as f64 - eps_p;
            x * x.ln()
        }
    };
    let ln_eps = EPS.ln();
    let p_ln_p =
        interior.smoothed_p_ln_p(eps_p)? + edge(p0) + edge(pl) + EPS * ln_eps * p_zeros as f64;
    let (mut p_ln_q, mut sum_p, mut sum_q) = (0.0f64, 0.0f64, 0.0f64);
    for (k, &(v, nz)) in merged_bins.iter().enumerate() {
        let q = if v == 0 { EPS } else { v as f64 - eps_q };
        let p = smoothed_sum(k * merged, (k + 1) * merged, nz);
        p_ln_q += p * q.ln();
        sum_p += p;
        sum_q += q * merged as f64;
    }
    if rest < len {
        let p = smoothed_sum(rest, len, nonzero_p(rest, len));
        p_ln_q += p * ln_eps;
        sum_p += p;
        sum_q += EPS * (len - rest) as f64;
    }
    Some((p_ln_p - p_ln_q) / sum_p + sum_q.ln() - sum_p.ln())
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
    fn divergences_match_window_by_window() {
        let mut s = 0x2545_f491u32;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        for case in 0..40 {
            let nq = [4, 8, 16, 128][case % 4];
            let n = 2 * (nq / 2 + (next() as usize % 200));
            // Dense, sparse, and nearly empty histograms (the last need the fallback).
            let keep = [1, 4, 300][case % 3];
            let counts: Vec<u64> = (0..n)
                .map(|j| {
                    let r = next();
                    if r % keep != 0 {
                        0
                    } else {
                        (r % 5000) as u64 * (1 + (j == n / 2) as u64 * 1000)
                    }
                })
                .collect();
            let e = Entropy::new(nq).unwrap();
            let h = Histogram::from_counts(counts.clone());
            let fast = e.divergences(&h).unwrap();
            let prefix: Vec<u64> = std::iter::once(0)
                .chain(counts.iter().scan(0, |a, &c| {
                    *a += c;
                    Some(*a)
                }))
                .collect();
            for (k, i) in (nq / 2..=n / 2).enumerate() {
                let (start, end) = (n / 2 - i, (n / 2 + i + 1).min(n));
                let slow = window_divergence(
                    &counts[start..end],
                    prefix[start],
                    prefix[n] - prefix[end],
                    nq,
                );
                if slow.is_infinite() {
                    assert!(fast[k].is_infinite(), "case {case} window {i}");
                } else {
                    assert!(
                        (fast[k] - slow).abs() <= 1e-10 * slow.abs().max(1.0),
                        "case {case} window {i}: {} vs {slow}",
                        fast[k]
                    );
                }
            }
        }
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
