//! Global minimum and maximum (ORT `MinMaxCalibrater`, PyTorch `MinMaxObserver`).

use super::{ObservedRange, Observer, scan_batch};
use crate::QuantError;

/// Running min and max over all batches; streaming equals one-shot exactly.
#[derive(Clone, Debug)]
pub struct MinMax {
    name: String,
    symmetric: bool,
    min: f32,
    max: f32,
}

impl MinMax {
    pub fn new(name: impl Into<String>) -> MinMax {
        MinMax {
            name: name.into(),
            symmetric: false,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }

    /// Report `[-absmax, absmax]` as ORT's `symmetric` calibration option.
    pub fn symmetric(mut self, symmetric: bool) -> MinMax {
        self.symmetric = symmetric;
        self
    }
}

impl Observer for MinMax {
    fn name(&self) -> &str {
        &self.name
    }

    fn observe(&mut self, data: &[f32], shape: &[usize]) -> Result<(), QuantError> {
        let (lo, hi) = scan_batch(&self.name, data, shape)?;
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        Ok(())
    }

    fn range(&self) -> Result<ObservedRange, QuantError> {
        if self.min > self.max {
            return Err(QuantError::NoData {
                tensor: self.name.clone(),
            });
        }
        Ok(if self.symmetric {
            let a = self.min.abs().max(self.max.abs());
            ObservedRange::per_tensor(-a, a)
        } else {
            ObservedRange::per_tensor(self.min, self.max)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 * 0.3 - 11.0)
            .collect();
        let mut one = MinMax::new("x");
        one.observe(&data, &[1000]).unwrap();
        let mut stream = MinMax::new("x");
        for chunk in data.chunks(64) {
            stream.observe(chunk, &[chunk.len()]).unwrap();
        }
        let expect_lo = data.iter().cloned().fold(f32::MAX, f32::min);
        let expect_hi = data.iter().cloned().fold(f32::MIN, f32::max);
        assert_eq!(
            one.range().unwrap(),
            ObservedRange::per_tensor(expect_lo, expect_hi)
        );
        assert_eq!(stream.range().unwrap(), one.range().unwrap());
    }

    #[test]
    fn symmetric_and_errors() {
        let mut o = MinMax::new("act").symmetric(true);
        assert!(matches!(o.range(), Err(QuantError::NoData { .. })));
        o.observe(&[-3.0, 1.0], &[2]).unwrap();
        o.observe(&[], &[0]).unwrap();
        assert_eq!(o.range().unwrap(), ObservedRange::per_tensor(-3.0, 3.0));
        let err = o.observe(&[1.0, f32::INFINITY], &[2]).unwrap_err();
        assert!(err.to_string().contains("'act'"));
        assert_eq!(o.range().unwrap(), ObservedRange::per_tensor(-3.0, 3.0));
    }
}
