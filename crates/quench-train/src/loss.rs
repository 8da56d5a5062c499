//! Losses on a model's output: mean cross-entropy (with label smoothing) on
//! logits, and mean squared error. Each returns the loss and its gradient.

use crate::{Result, invalid};

/// Mean cross-entropy of `logits` (`n × k`, row-major) against class
/// `labels`, with the target `(1 - smoothing)·onehot + smoothing / k`.
/// Returns the loss, d loss / d logits, and how many rows' argmax is right.
pub fn cross_entropy(
    logits: &[f32],
    k: usize,
    labels: &[i64],
    smoothing: f32,
) -> Result<(f32, Vec<f32>, usize)> {
    let n = labels.len();
    if k == 0 || logits.len() != n * k {
        invalid!(
            "logits have {} values, expected {n} rows of {k} classes",
            logits.len()
        );
    }
    if !(0.0..1.0).contains(&smoothing) {
        invalid!("label smoothing {smoothing} must be in [0, 1)");
    }
    let mut grad = vec![0.0; logits.len()];
    let mut loss = 0.0f64;
    let mut correct = 0;
    let off = smoothing / k as f32;
    for (i, &l) in labels.iter().enumerate() {
        if l < 0 || l as usize >= k {
            invalid!("label {l} of row {i} is not in 0..{k}");
        }
        let row = &logits[i * k..(i + 1) * k];
        let (mut arg, mut m) = (0, f32::NEG_INFINITY);
        for (j, &v) in row.iter().enumerate() {
            if v > m {
                m = v;
                arg = j;
            }
        }
        correct += (arg == l as usize) as usize;
        let s: f32 = row.iter().map(|&v| (v - m).exp()).sum();
        let lse = m + s.ln();
        let g = &mut grad[i * k..(i + 1) * k];
        for (j, &v) in row.iter().enumerate() {
            let t = off
                + if j == l as usize {
                    1.0 - smoothing
                } else {
                    0.0
                };
            loss -= (t * (v - lse)) as f64;
            g[j] = ((v - lse).exp() - t) / n as f32;
        }
    }
    Ok(((loss / n.max(1) as f64) as f32, grad, correct))
}

/// Mean squared error and its gradient.
pub fn mse(pred: &[f32], target: &[f32]) -> Result<(f32, Vec<f32>)> {
    if pred.len() != target.len() {
        invalid!(
            "prediction has {} values, target {}",
            pred.len(),
            target.len()
        );
    }
    let n = pred.len().max(1) as f32;
    let loss = pred
        .iter()
        .zip(target)
        .map(|(p, t)| ((p - t) as f64).powi(2))
        .sum::<f64>()
        / n as f64;
    let grad = pred
        .iter()
        .zip(target)
        .map(|(p, t)| 2.0 * (p - t) / n)
        .collect();
    Ok((loss as f32, grad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(f: impl Fn(&[f32]) -> f32, x: &[f32]) -> Vec<f32> {
        (0..x.len())
            .map(|i| {
                let (mut a, mut b) = (x.to_vec(), x.to_vec());
                a[i] += 1e-2;
                b[i] -= 1e-2;
                (f(&a) - f(&b)) / 2e-2
            })
            .collect()
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let x = [0.3, -1.2, 2.0, 0.5, 0.1, 0.0, -0.7, 1.1];
        let labels = [2, 0];
        for s in [0.0, 0.1] {
            let (_, g, correct) = cross_entropy(&x, 4, &labels, s).unwrap();
            assert_eq!(correct, 1);
            let num = numeric(|v| cross_entropy(v, 4, &labels, s).unwrap().0, &x);
            for (a, b) in g.iter().zip(num) {
                assert!((a - b).abs() < 1e-3, "{a} {b}");
            }
        }
        let (l, _, _) = cross_entropy(&[0.0, 0.0], 2, &[1], 0.0).unwrap();
        assert!((l - 2f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn mse_gradient_matches_finite_differences() {
        let p = [0.5, -1.0, 2.0];
        let t = [0.0, 1.0, 2.5];
        let (_, g) = mse(&p, &t).unwrap();
        let num = numeric(|v| mse(v, &t).unwrap().0, &p);
        for (a, b) in g.iter().zip(num) {
            assert!((a - b).abs() < 1e-3);
        }
    }

    #[test]
    fn out_of_range_label_is_an_error() {
        assert!(
            cross_entropy(&[0.0, 1.0], 2, &[2], 0.0)
                .unwrap_err()
                .to_string()
                .contains("label 2")
        );
    }
}
