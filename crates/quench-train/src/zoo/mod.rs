//! Model zoo: small classifiers built directly as IR graphs (opset 17), with
//! PyTorch's default initialisation, ready to train or save as ONNX.

mod builder;
mod lstm;

pub use builder::Builder;

use crate::{Result, invalid};
use quench_ir::Model;

/// Zoo model names.
pub const NAMES: &[&str] = &["mlp", "lenet", "resnet8", "resnet18", "mobilenetv2", "lstm"];

/// Builds zoo model `name` for `chw` inputs and `classes` outputs; `width`
/// scales channel counts (MobileNetV2's width_mult; the LSTM's hidden size).
pub fn build(name: &str, chw: [usize; 3], classes: usize, width: f32, seed: u64) -> Result<Model> {
    if !(width > 0.0 && width <= 8.0) {
        invalid!("width {width} must be in (0, 8]");
    }
    if classes == 0 {
        invalid!("a classifier needs at least one class");
    }
    let mut b = Builder::new(chw, seed);
    let w = |c: usize| ((c as f32 * width).round() as usize).max(1);
    let x = b.input();
    let feat = match name {
        "mlp" => {
            let f = b.flatten(&x);
            let h = b.linear(&f, chw.iter().product(), w(256));
            let h = b.relu(&h);
            let h = b.linear(&h, w(256), w(128));
            let h = b.relu(&h);
            (h, w(128))
        }
        "lenet" => {
            let [_, hh, ww] = chw;
            let mut y = x;
            let mut c = chw[0];
            for out in [w(32), w(64)] {
                y = b.conv_bn(&y, c, out, 3, 1, 1, Act::Relu);
                y = b.max_pool(&y, 2);
                c = out;
            }
            let f = b.flatten(&y);
            let h = b.linear(&f, c * (hh / 4) * (ww / 4), w(128));
            let h = b.relu(&h);
            let h = b.dropout(&h, 0.25);
            (h, w(128))
        }
        "resnet8" | "resnet18" => {
            let (widths, blocks): (&[usize], usize) = if name == "resnet8" {
                (&[16, 32, 64], 1)
            } else {
                (&[64, 128, 256, 512], 2)
            };
            let mut c = w(widths[0]);
            let mut y = b.conv_bn(&x, chw[0], c, 3, 1, 1, Act::Relu);
            for (s, &cw) in widths.iter().enumerate() {
                for i in 0..blocks {
                    let stride = if s > 0 && i == 0 { 2 } else { 1 };
                    y = b.basic_block(&y, c, w(cw), stride);
                    c = w(cw);
                }
            }
            let g = b.gap(&y);
            (b.flatten(&g), c)
        }
        "mobilenetv2" => {
            // (expansion, channels, blocks, first stride): torchvision's table
            // with the 2nd and 4th stages at stride 1 for 28-32 px inputs.
            let settings = [
                (1, 16, 1, 1),
                (6, 24, 2, 1),
                (6, 32, 3, 2),
                (6, 64, 4, 1),
                (6, 96, 3, 1),
                (6, 160, 3, 2),
                (6, 320, 1, 1),
            ];
            let div = |v: f32| {
                let d = 8.0;
                let n = ((v + d / 2.0) / d).floor().max(1.0) * d;
                (if n < 0.9 * v { n + d } else { n }) as usize
            };
            let mut c = div(32.0 * width);
            let mut y = b.conv_bn(&x, chw[0], c, 3, 2, 1, Act::Relu6);
            for (t, ch, n, s) in settings {
                let out = div(ch as f32 * width);
                for i in 0..n {
                    y = b.inverted_residual(&y, c, out, if i == 0 { s } else { 1 }, t);
                    c = out;
                }
            }
            let last = 1280;
            y = b.conv_bn(&y, c, last, 1, 1, 1, Act::Relu6);
            let g = b.gap(&y);
            let f = b.flatten(&g);
            (b.dropout(&f, 0.2), last)
        }
        "lstm" => (lstm::row_lstm(&mut b, &x, chw, w(128)), w(128)),
        o => invalid!("unknown zoo model '{o}' (one of {})", NAMES.join(", ")),
    };
    let logits = b.linear(&feat.0, feat.1, classes);
    Ok(b.finish(&logits, name))
}

/// Activation after a conv/BN pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    None,
    Relu,
    Relu6,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use quench_ir::Tensor;
    use std::sync::Arc;

    #[test]
    fn every_zoo_model_runs_and_round_trips_through_onnx() {
        for name in NAMES {
            let m = build(name, [1, 28, 28], 10, 0.25, 1).unwrap();
            let bytes = quench_onnx::model_to_bytes(&m).unwrap();
            let back = quench_onnx::model_from_bytes(&bytes, None).unwrap();
            assert_eq!(back.graph.nodes.len(), m.graph.nodes.len(), "{name}");
            let e = Engine::new(&m.graph, 17, &[]).unwrap();
            let w = m
                .graph
                .initializers
                .iter()
                .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
                .collect();
            let x = Tensor::from_vec(vec![2, 1, 28, 28], vec![0.5f32; 2 * 784]).unwrap();
            let t = e.forward(&w, vec![x], false, false, 0, 1).unwrap();
            assert_eq!(t.outputs[0].shape(), &[2, 10], "{name}");
        }
    }

    #[test]
    fn unknown_model_is_an_error() {
        assert!(
            build("vgg", [1, 8, 8], 10, 1.0, 0)
                .unwrap_err()
                .to_string()
                .contains("unknown")
        );
    }
}
