//! Reductions that calibration runs over every activation of every batch.
//!
//! They sit next to the kernels (not in the quantizer) because they need the
//! same run-time instruction-set dispatch: the portable build is SSE2-only.

use crate::vmath::Level;
use std::sync::OnceLock;

/// Per-channel sums: `x` is consecutive runs of `run` values, run `k`
/// belonging to channel `k % sums.len()` (an NCHW tensor with `run` = H·W);
/// each run's sum, accumulated in f64 (means over millions of values must
/// not drift), is added to its channel's entry of `sums`.
pub fn add_channel_sums(x: &[f32], run: usize, sums: &mut [f64]) {
    add_channel_sums_at(Level::detect(), x, run, sums)
}

/// [`add_channel_sums`] at a given level (tests compare every level with
/// `Scalar`); a level this CPU lacks runs as `Scalar`.
pub fn add_channel_sums_at(level: Level, x: &[f32], run: usize, sums: &mut [f64]) {
    if run == 0 || sums.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(x: &[f32], run: usize, sums: &mut [f64]) {
            channel_loop(x, run, sums)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(x: &[f32], run: usize, sums: &mut [f64]) {
            channel_loop(x, run, sums)
        }
        static AVAILABLE: OnceLock<Vec<Level>> = OnceLock::new();
        let have = AVAILABLE.get_or_init(Level::available);
        match level {
            // Safety: only levels this CPU supports are taken.
            Level::Avx512 if have.contains(&level) => return unsafe { avx512(x, run, sums) },
            Level::Avx2 if have.contains(&level) => return unsafe { avx2(x, run, sums) },
            _ => {}
        }
    }
    channel_loop(x, run, sums)
}

#[inline(always)]
fn channel_loop(x: &[f32], run: usize, sums: &mut [f64]) {
    let ch = sums.len();
    for (k, r) in x.chunks(run).enumerate() {
        sums[k % ch] += sum_run(r);
    }
}

/// Eight independent lanes so that the loop vectorises, summed in a fixed
/// order so that every level gives the same bits.
#[inline(always)]
fn sum_run(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += f64::from(c[i]);
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        acc[i] += f64::from(v);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_sums_match_at_every_level() {
        for (ch, run, n) in [(1, 1, 0), (3, 7, 2), (2, 8, 3), (5, 49, 2), (4, 1000, 1)] {
            let x: Vec<f32> = (0..ch * run * n)
                .map(|i| (i as f32 * 0.37).sin() * 1e3)
                .collect();
            let mut exact = vec![0.0f64; ch];
            for (i, &v) in x.iter().enumerate() {
                exact[(i / run) % ch] += f64::from(v);
            }
            let mut scalar = vec![1.0f64; ch];
            add_channel_sums_at(Level::Scalar, &x, run, &mut scalar);
            for (s, e) in scalar.iter().zip(&exact) {
                assert!(
                    (s - 1.0 - e).abs() <= 1e-9 * e.abs().max(1.0),
                    "ch={ch} run={run}"
                );
            }
            for level in Level::available() {
                let mut got = vec![1.0f64; ch];
                add_channel_sums_at(level, &x, run, &mut got);
                let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&scalar), "{level:?} ch={ch} run={run}");
            }
        }
        let mut s = [0.0];
        add_channel_sums(&[1.0, f32::NAN], 2, &mut s);
        assert!(s[0].is_nan());
    }
}
