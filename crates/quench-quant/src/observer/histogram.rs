//! A streaming histogram with bounded memory, and the observer built on it.
//!
//! The layout and the way it grows follow ONNX Runtime's `HistogramCollector`
//! so that entropy/percentile ranges agree with ORT's:
//! - [`HistogramMode::Signed`] (`collect_value`): bins over `[-t, t]` with `t`
//!   the largest |value|; when a batch exceeds `t`, bins of the same width are
//!   added on both sides and the old counts keep their place.
//! - [`HistogramMode::Absolute`] (`collect_absolute_value`): bins over
//!   `[0, max|x|]`, extended on the right with bins of the same width. (ORT
//!   starts at the first batch's smallest |x| and drops smaller values of later
//!   batches; Quench starts at 0 and drops nothing.)
//!
//! ORT's bin count grows without limit; here it may grow to `max_bins`, after
//! which adjacent bins are merged in pairs (an exact re-binning) so memory
//! stays bounded whatever the data.

use super::{ObservedRange, Observer, RangeChooser, check_batch, min_max};
use crate::QuantError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistogramMode {
    /// Signed values, bins symmetric around 0 (entropy, MSE, percentile).
    Signed,
    /// Absolute values from 0 (symmetric percentile).
    Absolute,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistogramConfig {
    /// Bins of the first batch's histogram (ORT's `num_bins`).
    pub num_bins: usize,
    /// Most bins ever held; beyond it bins are merged in pairs.
    pub max_bins: usize,
    pub mode: HistogramMode,
}

impl HistogramConfig {
    /// ORT's default for percentile calibration; use at least this for entropy
    /// (ORT's entropy default of 128 leaves a single candidate threshold).
    pub const DEFAULT_BINS: usize = 2048;
    /// Default `max_bins / num_bins`: a range may grow 8× past the first
    /// batch's before bins are merged (and results start to differ from ORT).
    pub const DEFAULT_GROWTH: usize = 8;

    pub fn new(num_bins: usize, mode: HistogramMode) -> HistogramConfig {
        HistogramConfig {
            num_bins,
            max_bins: num_bins.saturating_mul(Self::DEFAULT_GROWTH),
            mode,
        }
    }

    fn validate(&self) -> Result<(), QuantError> {
        if self.num_bins < 2
            || (self.mode == HistogramMode::Signed && !self.num_bins.is_multiple_of(2))
        {
            return Err(QuantError::Config(format!(
                "histogram needs an even number of bins >= 2, got {}",
                self.num_bins
            )));
        }
        if self.max_bins < self.num_bins || self.max_bins > 1 << 24 {
            return Err(QuantError::Config(format!(
                "max_bins {} must be in [num_bins ({}), 2^24]",
                self.max_bins, self.num_bins
            )));
        }
        Ok(())
    }
}

/// Counts over ascending bin `edges` (`counts.len() + 1` of them), plus the
/// observed signed min and max.
#[derive(Clone, Debug)]
pub struct Histogram {
    cfg: HistogramConfig,
    counts: Vec<u64>,
    edges: Vec<f32>,
    /// Signed mode: the `t` of `[-t, t]`, as ORT tracks it.
    threshold: f32,
    min: f32,
    max: f32,
}

impl Histogram {
    pub fn new(cfg: HistogramConfig) -> Result<Histogram, QuantError> {
        cfg.validate()?;
        Ok(Histogram {
            cfg,
            counts: Vec::new(),
            edges: Vec::new(),
            threshold: 0.0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        })
    }

    pub fn config(&self) -> &HistogramConfig {
        &self.cfg
    }

    pub fn mode(&self) -> HistogramMode {
        self.cfg.mode
    }

    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn edges(&self) -> &[f32] {
        &self.edges
    }

    /// Smallest signed value observed.
    pub fn min(&self) -> f32 {
        self.min
    }

    /// Largest signed value observed.
    pub fn max(&self) -> f32 {
        self.max
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Adds a batch of values of tensor `name` (named in errors).
    pub fn add(&mut self, name: &str, data: &[f32]) -> Result<(), QuantError> {
        check_batch(name, data, &[data.len()])?;
        if data.is_empty() {
            return Ok(());
        }
        let (lo, hi) = min_max(data);
        match self.cfg.mode {
            HistogramMode::Signed => self.add_signed(data, lo.abs().max(hi.abs())),
            HistogramMode::Absolute => self.add_absolute(data, lo.abs().max(hi.abs())),
        }
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        Ok(())
    }

    fn add_signed(&mut self, data: &[f32], t: f32) {
        let n = self.cfg.num_bins;
        if self.counts.is_empty() {
            self.threshold = t;
            self.edges = outer_linspace(-t, t, n);
            self.counts = vec![0; n];
        } else if t <= self.threshold {
            // Same range: the existing bins.
        } else if self.threshold == 0.0 {
            let n = self.counts.len();
            self.threshold = t;
            self.edges = outer_linspace(-t, t, n);
        } else {
            let half = loop {
                let n_old = self.counts.len();
                let stride = 2.0 * self.threshold / n_old as f32;
                let half = floor_div_f32(t - self.threshold, stride) as f64 + 1.0;
                if n_old as f64 + 2.0 * half <= self.cfg.max_bins as f64 {
                    break half as usize;
                }
                self.coarsen_signed();
            };
            let n_old = self.counts.len();
            let stride = 2.0 * self.threshold / n_old as f32;
            let new_t = half as f32 * stride + self.threshold;
            let mut counts = vec![0; n_old + 2 * half];
            counts[half..half + n_old].copy_from_slice(&self.counts);
            self.counts = counts;
            self.threshold = new_t;
            self.edges = outer_linspace(-new_t, new_t, self.counts.len());
        }
        bin_into(&mut self.counts, &self.edges, data.iter().copied());
    }

    /// Halves the bin count keeping bins symmetric around 0: pads one empty
    /// bin per side first when the half count is odd.
    fn coarsen_signed(&mut self) {
        let n = self.counts.len();
        if !(n / 2).is_multiple_of(2) {
            let stride = 2.0 * self.threshold / n as f32;
            self.counts.insert(0, 0);
            self.counts.push(0);
            self.threshold += stride;
        }
        self.counts = self.counts.chunks(2).map(|p| p.iter().sum()).collect();
        self.edges = outer_linspace(-self.threshold, self.threshold, self.counts.len());
    }

    fn add_absolute(&mut self, data: &[f32], amax: f32) {
        if self.counts.is_empty() {
            self.edges = outer_linspace(0.0, amax, self.cfg.num_bins);
            self.counts = vec![0; self.cfg.num_bins];
        } else {
            self.extend_absolute(amax);
        }
        bin_into(&mut self.counts, &self.edges, data.iter().map(|v| v.abs()));
    }

    /// ORT's extension: `arange(last + w, amax + w, w)` more edges.
    fn extend_absolute(&mut self, amax: f32) {
        loop {
            let last = self.edges[self.edges.len() - 1];
            if amax <= last {
                return;
            }
            let width = self.edges[1] - self.edges[0];
            let start = last + width;
            let extra = (((amax + width) - start) / width).ceil().max(0.0) as f64;
            if self.counts.len() as f64 + extra > self.cfg.max_bins as f64 {
                self.coarsen_absolute();
                continue;
            }
            let extra = extra as usize;
            self.edges
                .extend((0..extra).map(|i| start + i as f32 * width));
            self.counts.resize(self.counts.len() + extra, 0);
            return;
        }
    }

    fn coarsen_absolute(&mut self) {
        if !self.counts.len().is_multiple_of(2) {
            let last = self.edges[self.edges.len() - 1];
            let width = self.edges[1] - self.edges[0];
            self.counts.push(0);
            self.edges.push(last + width);
        }
        self.counts = self.counts.chunks(2).map(|p| p.iter().sum()).collect();
        self.edges = self.edges.iter().step_by(2).copied().collect();
    }
}

/// `np.linspace(lo, hi, n + 1)` in f32 as `np.histogram` builds its edges,
/// including its widening of an empty range to `[lo - 0.5, hi + 0.5]`.
fn outer_linspace(mut lo: f32, mut hi: f32, n: usize) -> Vec<f32> {
    if lo == hi {
        lo -= 0.5;
        hi += 0.5;
    }
    let step = (hi - lo) / n as f32;
    (0..=n)
        .map(|i| if i == n { hi } else { i as f32 * step + lo })
        .collect()
}

/// Python's float `//` on f32 (fmod-based, as numpy's `npy_floor_divide`).
fn floor_div_f32(a: f32, b: f32) -> f32 {
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div == 0.0 {
        return 0.0f32.copysign(a / b);
    }
    let f = div.floor();
    if div - f > 0.5 { f + 1.0 } else { f }
}

/// Adds values in `[edges[0], edges[n]]` to their bins, the last bin closed,
/// like `np.histogram`: an arithmetic guess corrected against the edges.
fn bin_into(counts: &mut [u64], edges: &[f32], data: impl Iterator<Item = f32>) {
    let n = counts.len();
    let (first, last) = (edges[0], edges[n]);
    let denom = last - first;
    for x in data {
        if !(x >= first && x <= last) {
            continue;
        }
        let guess = ((x - first) / denom) * n as f32;
        let mut i = (guess as usize).min(n - 1);
        while i > 0 && x < edges[i] {
            i -= 1;
        }
        while i + 1 < n && x >= edges[i + 1] {
            i += 1;
        }
        counts[i] += 1;
    }
}

/// A histogram observer: collects, then asks its [`RangeChooser`] for the range.
#[derive(Debug)]
pub struct HistogramObserver {
    name: String,
    hist: Histogram,
    chooser: Box<dyn RangeChooser>,
}

impl HistogramObserver {
    pub fn new(
        name: impl Into<String>,
        cfg: HistogramConfig,
        chooser: Box<dyn RangeChooser>,
    ) -> Result<HistogramObserver, QuantError> {
        if chooser.histogram_mode() != cfg.mode {
            return Err(QuantError::Config(format!(
                "{chooser:?} reads a {:?} histogram, not {:?}",
                chooser.histogram_mode(),
                cfg.mode
            )));
        }
        Ok(HistogramObserver {
            name: name.into(),
            hist: Histogram::new(cfg)?,
            chooser,
        })
    }

    pub fn histogram(&self) -> &Histogram {
        &self.hist
    }
}

impl Observer for HistogramObserver {
    fn name(&self) -> &str {
        &self.name
    }

    fn observe(&mut self, data: &[f32], shape: &[usize]) -> Result<(), QuantError> {
        check_batch(&self.name, data, shape)?;
        self.hist.add(&self.name, data)
    }

    fn range(&self) -> Result<ObservedRange, QuantError> {
        if self.hist.is_empty() {
            return Err(QuantError::NoData {
                tensor: self.name.clone(),
            });
        }
        let (lo, hi) = self.chooser.choose(&self.hist)?;
        Ok(ObservedRange::per_tensor(lo, hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, scale: f32, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    /// Scalar reference: the bin of `x` by linear search over the edges.
    fn reference_bins(edges: &[f32], xs: &[f32]) -> Vec<u64> {
        let n = edges.len() - 1;
        let mut c = vec![0; n];
        for &x in xs {
            if let Some(i) =
                (0..n).find(|&i| x >= edges[i] && (x < edges[i + 1] || i == n - 1 && x <= edges[n]))
            {
                c[i] += 1;
            }
        }
        c
    }

    #[test]
    fn single_batch_matches_linear_search() {
        for mode in [HistogramMode::Signed, HistogramMode::Absolute] {
            let xs = data(5000, 3.0, 1);
            let mut h = Histogram::new(HistogramConfig::new(64, mode)).unwrap();
            h.add("x", &xs).unwrap();
            let vals: Vec<f32> = match mode {
                HistogramMode::Signed => xs.clone(),
                HistogramMode::Absolute => xs.iter().map(|v| v.abs()).collect(),
            };
            assert_eq!(h.counts(), reference_bins(h.edges(), &vals).as_slice());
            assert_eq!(h.total(), 5000);
            assert_eq!(h.edges().len(), 65);
        }
    }

    #[test]
    fn streaming_equals_one_shot_without_growth() {
        // The first batch holds the largest |value|, so no batch grows the range.
        let mut batches = vec![data(1000, 4.0, 7)];
        batches[0][17] = -4.0;
        batches.extend((0..5).map(|k| data(700, 3.0, 8 + k)));
        let all: Vec<f32> = batches.concat();
        for mode in [HistogramMode::Signed, HistogramMode::Absolute] {
            let cfg = HistogramConfig::new(256, mode);
            let mut one = Histogram::new(cfg).unwrap();
            one.add("x", &all).unwrap();
            let mut stream = Histogram::new(cfg).unwrap();
            for b in &batches {
                stream.add("x", b).unwrap();
            }
            assert_eq!(stream.counts(), one.counts(), "{mode:?}");
            assert_eq!(stream.edges(), one.edges());
            assert_eq!((stream.min(), stream.max()), (one.min(), one.max()));
        }
    }

    #[test]
    fn growth_keeps_width_and_counts() {
        let mut h = Histogram::new(HistogramConfig::new(100, HistogramMode::Signed)).unwrap();
        h.add("x", &data(1000, 1.0, 2)).unwrap();
        let width = h.edges()[1] - h.edges()[0];
        h.add("x", &data(1000, 1.5, 3)).unwrap();
        assert!(h.counts().len() > 100 && h.counts().len().is_multiple_of(2));
        assert!(((h.edges()[1] - h.edges()[0]) - width).abs() < 1e-6);
        assert_eq!(h.total(), 2000);
        assert!(h.edges()[0] <= h.min() && *h.edges().last().unwrap() >= h.max());
        // The bin containing zero stays centred.
        let mid = h.counts().len() / 2;
        assert!(h.edges()[mid].abs() < width * 1e-3);
    }

    #[test]
    fn memory_is_bounded_by_max_bins() {
        for mode in [HistogramMode::Signed, HistogramMode::Absolute] {
            let cfg = HistogramConfig::new(128, mode);
            let mut h = Histogram::new(cfg).unwrap();
            let mut n = 0;
            for k in 0..12 {
                let xs = data(500, 10f32.powi(k - 3), k as u32);
                h.add("x", &xs).unwrap();
                n += xs.len() as u64;
                assert!(
                    h.counts().len() <= cfg.max_bins,
                    "{mode:?}: {}",
                    h.counts().len()
                );
                assert_eq!(h.total(), n);
                assert_eq!(h.edges().len(), h.counts().len() + 1);
                assert!(h.edges().windows(2).all(|w| w[0] < w[1]));
                assert!(*h.edges().last().unwrap() >= h.max().abs().max(h.min().abs()));
            }
        }
    }

    #[test]
    fn zero_batches_and_errors() {
        let mut h = Histogram::new(HistogramConfig::new(8, HistogramMode::Signed)).unwrap();
        h.add("x", &[0.0, 0.0]).unwrap();
        assert_eq!(h.edges()[0], -0.5);
        h.add("x", &[2.0]).unwrap();
        assert_eq!(h.total(), 3);
        assert_eq!(*h.edges().last().unwrap(), 2.0);
        let err = h.add("relu_3", &[1.0, f32::NAN]).unwrap_err().to_string();
        assert!(err.contains("relu_3"), "{err}");
        assert!(Histogram::new(HistogramConfig::new(7, HistogramMode::Signed)).is_err());
        assert!(
            Histogram::new(HistogramConfig {
                max_bins: 4,
                ..HistogramConfig::new(8, HistogramMode::Signed)
            })
            .is_err()
        );
    }

    #[test]
    fn floor_div_matches_python() {
        assert_eq!(floor_div_f32(7.0, 2.0), 3.0);
        assert_eq!(floor_div_f32(-7.0, 2.0), -4.0);
        assert_eq!(floor_div_f32(0.3, 0.1), 3.0); // numpy: float32(0.3) // float32(0.1) == 3.0
        assert_eq!(floor_div_f32(6.0, 2.0), 3.0);
    }
}
