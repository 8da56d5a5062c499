//! Per-channel min and max, for weights quantized along their output axis.

use super::{ObservedRange, Observer, check_batch};
use crate::QuantError;

/// The output-channel axis of a weight, as ORT's per-channel defaults:
/// Conv `[M, C/g, kH, kW]` → 0, ConvTranspose `[C, M/g, kH, kW]` → 1, MatMul
/// `[.., K, N]` → last, Gemm B → 1, or 0 when `transB` is set.
pub fn default_weight_axis(op_type: &str, rank: usize, trans_b: bool) -> Option<usize> {
    match op_type {
        "Conv" | "QLinearConv" if rank >= 1 => Some(0),
        "ConvTranspose" if rank >= 2 => Some(1),
        "MatMul" | "MatMulInteger" if rank >= 1 => Some(rank - 1),
        "Gemm" if rank == 2 => Some(if trans_b { 0 } else { 1 }),
        _ => None,
    }
}

/// Min and max of each slice along `axis`; streaming equals one-shot.
#[derive(Clone, Debug)]
pub struct PerChannelMinMax {
    name: String,
    axis: usize,
    symmetric: bool,
    min: Vec<f32>,
    max: Vec<f32>,
}

impl PerChannelMinMax {
    pub fn new(name: impl Into<String>, axis: usize) -> PerChannelMinMax {
        PerChannelMinMax {
            name: name.into(),
            axis,
            symmetric: false,
            min: Vec::new(),
            max: Vec::new(),
        }
    }

    pub fn symmetric(mut self, symmetric: bool) -> Self {
        self.symmetric = symmetric;
        self
    }
}

impl Observer for PerChannelMinMax {
    fn name(&self) -> &str {
        &self.name
    }

    fn observe(&mut self, data: &[f32], shape: &[usize]) -> Result<(), QuantError> {
        check_batch(&self.name, data, shape)?;
        let Some(&channels) = shape.get(self.axis) else {
            return Err(QuantError::Shape {
                tensor: self.name.clone(),
                reason: format!("axis {} is out of range for shape {shape:?}", self.axis),
            });
        };
        if self.min.is_empty() {
            self.min = vec![f32::INFINITY; channels];
            self.max = vec![f32::NEG_INFINITY; channels];
        } else if self.min.len() != channels {
            return Err(QuantError::Shape {
                tensor: self.name.clone(),
                reason: format!(
                    "axis {} has {channels} channels, earlier batches had {}",
                    self.axis,
                    self.min.len()
                ),
            });
        }
        let inner: usize = shape[self.axis + 1..].iter().product();
        if inner == 0 {
            return Ok(());
        }
        for (block, chunk) in data.chunks(inner).enumerate() {
            let c = block % channels;
            let (lo, hi) = super::min_max(chunk);
            self.min[c] = self.min[c].min(lo);
            self.max[c] = self.max[c].max(hi);
        }
        Ok(())
    }

    fn range(&self) -> Result<ObservedRange, QuantError> {
        // A channel never seen (zero-sized batch) keeps +inf/-inf: report 0.
        if self.min.is_empty() {
            return Err(QuantError::NoData {
                tensor: self.name.clone(),
            });
        }
        let (mut min, mut max): (Vec<f32>, Vec<f32>) = self
            .min
            .iter()
            .zip(&self.max)
            .map(|(&lo, &hi)| if lo > hi { (0.0, 0.0) } else { (lo, hi) })
            .unzip();
        if self.symmetric {
            for (lo, hi) in min.iter_mut().zip(max.iter_mut()) {
                let a = lo.abs().max(hi.abs());
                (*lo, *hi) = (-a, a);
            }
        }
        Ok(ObservedRange {
            min,
            max,
            axis: Some(self.axis),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scalar reference: visit every index and compute its channel.
    fn reference(data: &[f32], shape: &[usize], axis: usize) -> (Vec<f32>, Vec<f32>) {
        let c = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        let mut lo = vec![f32::MAX; c];
        let mut hi = vec![f32::MIN; c];
        for (i, &v) in data.iter().enumerate() {
            let ch = (i / inner) % c;
            lo[ch] = lo[ch].min(v);
            hi[ch] = hi[ch].max(v);
        }
        (lo, hi)
    }

    #[test]
    fn matches_reference_on_every_axis() {
        let shape = [4, 3, 2, 5];
        let data: Vec<f32> = (0..120).map(|i| ((i * 53) % 97) as f32 - 40.0).collect();
        for axis in 0..4 {
            let mut o = PerChannelMinMax::new("w", axis);
            o.observe(&data, &shape).unwrap();
            let (lo, hi) = reference(&data, &shape, axis);
            let r = o.range().unwrap();
            assert_eq!((r.min, r.max, r.axis), (lo, hi, Some(axis)));
        }
    }

    #[test]
    fn streaming_over_batches_and_errors() {
        let shape = [2, 3, 4];
        let a: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..24).map(|i| -(i as f32) * 0.5).collect();
        let mut o = PerChannelMinMax::new("w", 1).symmetric(true);
        o.observe(&a, &shape).unwrap();
        o.observe(&b, &shape).unwrap();
        let both: Vec<f32> = a.iter().chain(&b).cloned().collect();
        let (lo, hi) = reference(&both, &[4, 3, 4], 1);
        let r = o.range().unwrap();
        for c in 0..3 {
            let m = lo[c].abs().max(hi[c].abs());
            assert_eq!((r.min[c], r.max[c]), (-m, m));
        }
        assert!(o.observe(&a, &[2, 4, 3]).is_err());
        assert!(o.observe(&a, &[24]).is_err());
        assert!(PerChannelMinMax::new("w", 0).range().is_err());
    }

    #[test]
    fn weight_axes() {
        assert_eq!(default_weight_axis("Conv", 4, false), Some(0));
        assert_eq!(default_weight_axis("ConvTranspose", 4, false), Some(1));
        assert_eq!(default_weight_axis("MatMul", 3, false), Some(2));
        assert_eq!(default_weight_axis("Gemm", 2, true), Some(0));
        assert_eq!(default_weight_axis("Gemm", 2, false), Some(1));
        assert_eq!(default_weight_axis("Relu", 2, false), None);
        assert_eq!(default_weight_axis("MatMul", 0, false), None);
    }
}
