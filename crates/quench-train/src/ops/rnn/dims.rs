//! Sizes of one LSTM/GRU run and the index maps between the ONNX layouts
//! (layout 0/1) and the `[row, features]` buffers the directions work on.

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
    /// Valid steps of each batch entry.
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
        let len = self.lens.get(b).copied().unwrap_or(0);
        (s < len).then(|| if reverse { len - 1 - s } else { s })
    }

    /// Direction `d`'s `[batch, hidden]` rows of a state tensor (zeros if absent).
    pub fn gather_state(&self, s: Option<&[f32]>, d: usize) -> Vec<f32> {
        let h = self.hidden;
        let mut v = vec![0f32; self.batch * h];
        if let Some(s) = s {
            for (b, row) in v.chunks_mut(h).enumerate() {
                let o = self.state_at(d, b);
                row.copy_from_slice(&s[o..o + h]);
            }
        }
        v
    }

    /// Writes direction `d`'s `[batch, hidden]` rows into a state tensor.
    pub fn scatter_state(&self, src: &[f32], d: usize, dst: &mut [f32]) {
        let h = self.hidden;
        for (b, row) in src.chunks(h).enumerate() {
            let o = self.state_at(d, b);
            dst[o..o + h].copy_from_slice(row);
        }
    }
}

pub fn expect_shape(t: &Tensor, want: &[usize], what: &str) -> Result<()> {
    if t.shape() != want {
        invalid!("{what} has shape {:?}, expected {want:?}", t.shape());
    }
    Ok(())
}
