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

use super::{ObservedRange, Observer, RangeChooser, check_shape, scan_batch};
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

    /// A signed histogram over `[-1, 1]` holding `counts` (tests of choosers).
    #[cfg(test)]
    pub(crate) fn from_counts(counts: Vec<u64>) -> Histogram {
        let n = counts.len();
        Histogram {
            cfg: HistogramConfig::new(n, HistogramMode::Signed),
            edges: outer_linspace(-1.0, 1.0, n),
            counts,
            threshold: 1.0,
            min: -1.0,
            max: 1.0,
        }
    }

    /// Adds a batch of values of tensor `name` (named in errors).
    pub fn add(&mut self, name: &str, data: &[f32]) -> Result<(), QuantError> {
        let (lo, hi) = scan_batch(name, data, &[data.len()])?;
        if data.is_empty() {
            return Ok(());
        }
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
        bin_into::<false>(&mut self.counts, &self.edges, data);
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
        bin_into::<true>(&mut self.counts, &self.edges, data);
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

/// Adds the `x` of `data` (their `|x|` when `ABS`) that lie in
/// `[edges[0], edges[n]]` to their bins, the last bin closed, like
/// `np.histogram`: the edges alone decide the bin.
///
/// For speed (every calibrated activation passes through here) the bin is
/// first computed arithmetically, a block at a time in SIMD, and trusted only
/// when `x` is clearly inside it: the edges are measured once against the
/// ideal linspace, and a value closer to an ideal edge than that deviation
/// plus the f32 rounding of the guess (or exactly 0, which sits on the middle
/// edge) is placed by comparing with the edges. Counting goes to four
/// interleaved sub-histograms: back-to-back increments of one counter (the
/// zeros of a ReLU output) otherwise form a store-to-load chain that costs
/// more than the rest of the loop.
fn bin_into<const ABS: bool>(counts: &mut [u64], edges: &[f32], data: &[f32]) {
    const BLOCK: usize = 256;
    const WAYS: usize = 4;
    let n = counts.len();
    let (first, last) = (edges[0], edges[n]);
    let by_edges = |x: f32| {
        let x = if ABS { x.abs() } else { x };
        if !(x >= first && x <= last) {
            return n;
        }
        let guess = (((x - first) / (last - first)) * n as f32) as usize;
        bin_by_search(edges, x, guess.min(n - 1))
    };
    let (first64, width) = (f64::from(first), f64::from(last) - f64::from(first));
    let norm64 = n as f64 / width;
    let worst = edges
        .iter()
        .enumerate()
        .map(|(i, &e)| ((f64::from(e) - first64) * norm64 - i as f64).abs())
        .fold(0.0f64, f64::max);
    // f32 guess: `x − first`, the product and `norm` each round by at most
    // n·2⁻²⁴ bins.
    let margin = worst + 4.0 * n as f64 / (1u64 << 24) as f64 + 1e-6;
    if data.len() < 2 * n || n >= Guess::SLOW as usize || margin.is_nan() || margin >= 0.25 {
        // Too few values to pay for the set-up (or, never for the layouts
        // above, edges far from a linspace): the edges alone.
        for &v in data {
            let i = by_edges(v);
            if i < n {
                counts[i] += 1;
            }
        }
        return;
    }
    let guess = Guess {
        first,
        norm: (norm64) as f32,
        margin: margin as f32,
        n: n as u32,
        zero_bin: by_edges(0.0) as u32,
    };
    // Index n collects values outside the edges (none, as ranges grow first).
    let mut sub = vec![0u32; WAYS * (n + 1)];
    let mut idx = [0u32; BLOCK];
    // u32 sub-counts: flush before any can overflow.
    for part in data.chunks(1 << 30) {
        for block in part.chunks(BLOCK) {
            let idx = &mut idx[..block.len()];
            guess.block::<ABS>(block, idx);
            for (j, (&i, &v)) in idx.iter().zip(block).enumerate() {
                let i = if i == Guess::SLOW {
                    by_edges(v)
                } else {
                    i as usize
                };
                sub[i * WAYS + (j % WAYS)] += 1;
            }
        }
        for (c, s) in counts.iter_mut().zip(sub.chunks_exact(WAYS)) {
            *c += s.iter().map(|&v| u64::from(v)).sum::<u64>();
        }
        sub.fill(0);
    }
}

/// The arithmetic bin guess of [`bin_into`].
struct Guess {
    first: f32,
    norm: f32,
    margin: f32,
    n: u32,
    zero_bin: u32,
}

impl Guess {
    /// Marks a value to place by its edges.
    const SLOW: u32 = u32::MAX;

    /// The bin of each value of `xs` into `out`, or [`Guess::SLOW`].
    fn block<const ABS: bool>(&self, xs: &[f32], out: &mut [u32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { self.block_avx512::<ABS>(xs, out) };
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: as above.
                return unsafe { self.block_avx2::<ABS>(xs, out) };
            }
        }
        self.block_plain::<ABS>(xs, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw")]
    fn block_avx512<const ABS: bool>(&self, xs: &[f32], out: &mut [u32]) {
        self.block_plain::<ABS>(xs, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn block_avx2<const ABS: bool>(&self, xs: &[f32], out: &mut [u32]) {
        self.block_plain::<ABS>(xs, out)
    }

    /// Branch-free, so that it vectorises.
    #[inline(always)]
    fn block_plain<const ABS: bool>(&self, xs: &[f32], out: &mut [u32]) {
        let (lo, hi) = (self.margin, 1.0 - self.margin);
        for (o, &v) in out.iter_mut().zip(xs) {
            let x = if ABS { v.abs() } else { v };
            let t = (x - self.first) * self.norm;
            // Truncation; a negative `t` gives a fraction the test rejects.
            let whole = t as i32;
            let frac = t - whole as f32;
            let clear = (frac >= lo) & (frac <= hi) & (whole >= 0) & ((whole as u32) < self.n);
            let g = if clear { whole as u32 } else { Self::SLOW };
            *o = if x == 0.0 { self.zero_bin } else { g };
        }
    }
}

/// The bin of `x` found by walking from `i` (a guess off by more than one).
#[cold]
fn bin_by_search(edges: &[f32], x: f32, mut i: usize) -> usize {
    let n = edges.len() - 1;
    while i > 0 && x < edges[i] {
        i -= 1;
    }
    while i + 1 < n && x >= edges[i + 1] {
        i += 1;
    }
    i
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
        check_shape(&self.name, data, shape)?;
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
    fn values_on_edges_and_zeros_match_linear_search() {
        for mode in [HistogramMode::Signed, HistogramMode::Absolute] {
            let mut h = Histogram::new(HistogramConfig::new(2048, mode)).unwrap();
            h.add("x", &data(5000, 3.7, 3)).unwrap();
            // Every edge, its neighbours, zeros, and a grown range.
            let edges = h.edges().to_vec();
            let mut xs: Vec<f32> = edges
                .iter()
                .flat_map(|&e| [e, e.next_up(), e.next_down(), 0.0])
                .filter(|v| v.abs() <= edges[edges.len() - 1])
                .collect();
            xs.extend(data(3000, 3.0, 4));
            let before = h.counts().to_vec();
            h.add("x", &xs).unwrap();
            assert!(h.edges() == edges.as_slice(), "the range grew");
            let vals: Vec<f32> = match mode {
                HistogramMode::Signed => xs.clone(),
                HistogramMode::Absolute => xs.iter().map(|v| v.abs()).collect(),
            };
            let added = reference_bins(&edges, &vals);
            let expect: Vec<u64> = before.iter().zip(&added).map(|(a, b)| a + b).collect();
            assert!(h.counts() == expect.as_slice(), "{mode:?}");
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
