//! GRU sizes and the index maths of the ONNX layouts.

use crate::{Result, invalid};
use quench_ir::Tensor;

/// Sizes and the index maths of the ONNX layouts.
#[derive(Clone, Debug)]
pub struct Dims {
    pub seq: usize,
    pub batch: usize,
    pub input: usize,
    pub hidden: usize,
    pub dirs: usize,
    pub batch_first: bool,
    pub lens: Vec<usize>,
}

impl Dims {
    pub fn rows(&self) -> usize {
        self.seq * self.batch
    }
    /// Row of X (and of the per-row saved state) for time `t`, batch `b`.
    pub fn x_row(&self, t: usize, b: usize) -> usize {
        if self.batch_first {
            b * self.seq + t
        } else {
            t * self.batch + b
        }
    }
    /// Offset of direction `d`, batch `b` in Y_h / initial_h.
    pub fn state_at(&self, d: usize, b: usize) -> usize {
        let i = if self.batch_first {
            b * self.dirs + d
        } else {
            d * self.batch + b
        };
        i * self.hidden
    }
    /// Offset of time `t`, direction `d`, batch `b` in Y.
    pub fn y_at(&self, t: usize, d: usize, b: usize) -> usize {
        let i = if self.batch_first {
            (b * self.seq + t) * self.dirs + d
        } else {
            (t * self.dirs + d) * self.batch + b
        };
        i * self.hidden
    }
    pub fn y_shape(&self) -> Vec<usize> {
        let (s, d, b, h) = (self.seq, self.dirs, self.batch, self.hidden);
        if self.batch_first {
            vec![b, s, d, h]
        } else {
            vec![s, d, b, h]
        }
    }
    pub fn state_shape(&self) -> Vec<usize> {
        let (d, b, h) = (self.dirs, self.batch, self.hidden);
        if self.batch_first {
            vec![b, d, h]
        } else {
            vec![d, b, h]
        }
    }
    pub fn max_len(&self) -> usize {
        self.lens.iter().copied().max().unwrap_or(0)
    }
    /// The time step batch entry `b` processes at step `s`, if any.
    pub fn step_time(&self, s: usize, b: usize, reverse: bool) -> Option<usize> {
        let len = self.lens[b];
        (s < len).then(|| if reverse { len - 1 - s } else { s })
    }
}

pub fn expect_shape(t: &Tensor, want: &[usize], what: &str) -> Result<()> {
    if t.shape() != want {
        invalid!("{what} has shape {:?}, expected {want:?}", t.shape());
    }
    Ok(())
}
