//! Exponential moving average of per-batch min and max (PyTorch
//! `MovingAverageMinMaxObserver`): robust to a few unusual batches.

use super::{ObservedRange, Observer, scan_batch};
use crate::QuantError;

/// `min ← min + c·(batch_min − min)` (same for max), starting from the
/// first batch's values; computed in f32 as PyTorch.
#[derive(Clone, Debug)]
pub struct MovingAverageMinMax {
    name: String,
    averaging_constant: f32,
    symmetric: bool,
    state: Option<(f32, f32)>,
}

impl MovingAverageMinMax {
    /// PyTorch's default averaging constant.
    pub const DEFAULT_CONSTANT: f32 = 0.01;

    pub fn new(name: impl Into<String>, averaging_constant: f32) -> Result<Self, QuantError> {
        if !(0.0..=1.0).contains(&averaging_constant) {
            return Err(QuantError::Config(format!(
                "averaging constant {averaging_constant} is not in [0, 1]"
            )));
        }
        Ok(MovingAverageMinMax {
            name: name.into(),
            averaging_constant,
            symmetric: false,
            state: None,
        })
    }

    pub fn symmetric(mut self, symmetric: bool) -> Self {
        self.symmetric = symmetric;
        self
    }
}

impl Observer for MovingAverageMinMax {
    fn name(&self) -> &str {
        &self.name
    }

    fn observe(&mut self, data: &[f32], shape: &[usize]) -> Result<(), QuantError> {
        let (lo, hi) = scan_batch(&self.name, data, shape)?;
        if data.is_empty() {
            return Ok(());
        }
        let c = self.averaging_constant;
        self.state = Some(match self.state {
            None => (lo, hi),
            Some((m, x)) => (m + c * (lo - m), x + c * (hi - x)),
        });
        Ok(())
    }

    fn range(&self) -> Result<ObservedRange, QuantError> {
        let Some((lo, hi)) = self.state else {
            return Err(QuantError::NoData {
                tensor: self.name.clone(),
            });
        };
        Ok(if self.symmetric {
            let a = lo.abs().max(hi.abs());
            ObservedRange::per_tensor(-a, a)
        } else {
            ObservedRange::per_tensor(lo, hi)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scalar_recurrence() {
        let batches: Vec<Vec<f32>> = (0..20)
            .map(|b| {
                (0..50)
                    .map(|i| ((i * 13 + b * 7) % 29) as f32 * 0.1 * (1.0 + b as f32) - 1.0)
                    .collect()
            })
            .collect();
        let mut o = MovingAverageMinMax::new("x", 0.01).unwrap();
        let (mut rlo, mut rhi) = (f32::NAN, f32::NAN);
        for (k, b) in batches.iter().enumerate() {
            o.observe(b, &[b.len()]).unwrap();
            let lo = b.iter().cloned().fold(f32::MAX, f32::min);
            let hi = b.iter().cloned().fold(f32::MIN, f32::max);
            if k == 0 {
                (rlo, rhi) = (lo, hi);
            } else {
                rlo += 0.01 * (lo - rlo);
                rhi += 0.01 * (hi - rhi);
            }
        }
        assert_eq!(o.range().unwrap(), ObservedRange::per_tensor(rlo, rhi));
    }

    #[test]
    fn constant_one_is_last_batch_and_errors() {
        let mut o = MovingAverageMinMax::new("x", 1.0).unwrap().symmetric(true);
        assert!(o.range().is_err());
        o.observe(&[-5.0, 5.0], &[2]).unwrap();
        o.observe(&[-1.0, 2.0], &[2]).unwrap();
        assert_eq!(o.range().unwrap(), ObservedRange::per_tensor(-2.0, 2.0));
        assert!(MovingAverageMinMax::new("x", 1.5).is_err());
        assert!(o.observe(&[f32::NAN], &[1]).is_err());
    }
}
