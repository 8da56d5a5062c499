//! The row LSTM classifier: an image read as a sequence of its rows (MNIST:
//! 28 steps of 28 pixels), classified from the last hidden state.

use super::Builder;
use quench_ir::{Attr, Node};

/// Adds `[N, C, H, W]` → `[H, N, C·W]` → LSTM(`hidden`) → Y_h as `[N, hidden]`
/// and returns that feature. Weights and both biases are U(±1/√hidden), as
/// PyTorch's nn.LSTM initialises them. Layout 0 with an explicit Transpose,
/// the form PyTorch exports and ONNX Runtime accepts.
pub(super) fn row_lstm(b: &mut Builder, x: &str, chw: [usize; 3], hidden: usize) -> String {
    let [c, h, w] = chw;
    let feat = c * w;
    let rows = b.transpose(x, &[2, 0, 1, 3]);
    let seq = b.reshape(&rows, &[h as i64, -1, feat as i64]);
    let base = b.name("lstm");
    let bound = 1.0 / (hidden as f32).sqrt();
    let gh = 4 * hidden;
    let wv = b.uniform(gh * feat, bound);
    let wn = b.param(format!("{base}.W"), vec![1, gh, feat], wv);
    let rv = b.uniform(gh * hidden, bound);
    let rn = b.param(format!("{base}.R"), vec![1, gh, hidden], rv);
    let bv = b.uniform(2 * gh, bound);
    let bn = b.param(format!("{base}.B"), vec![1, 2 * gh], bv);
    let (y, yh) = (format!("{base}_Y"), format!("{base}_Y_h"));
    b.push(
        Node::new("LSTM", &base, &[&seq, &wn, &rn, &bn], &[&y, &yh])
            .with_attr("hidden_size", Attr::Int(hidden as i64)),
    );
    b.reshape(&yh, &[-1, hidden as i64])
}
