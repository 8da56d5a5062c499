//! Weights packed once into the VNNI layout the micro-kernels stream.
//!
//! Columns are cut into panels of [`PANEL`] (the last one rounded up to 16);
//! inside a panel, each group of 4 K-rows is stored column by column, 4
//! bytes per column, which is the operand layout of `vpdpbusd`. K is padded
//! with zeros to a multiple of 4 so the kernels never need a K tail.

use super::PANEL;

/// s8 weights `B[k×n]` in VNNI layout, with what the zero-point
/// compensation needs per column.
#[derive(Clone)]
pub struct PackedB {
    pub(crate) k: usize,
    pub(crate) n: usize,
    /// K rounded up to a multiple of 4.
    pub(crate) k4: usize,
    /// Per panel: (byte offset into `data`, padded width, real width).
    pub(crate) panels: Vec<(usize, usize, usize)>,
    pub(crate) data: Vec<i8>,
    /// Zero point of each column.
    pub(crate) zb: Vec<i32>,
    /// `K * zb[n] - Σ_k B[k][n]`: what a row's zero point multiplies.
    pub(crate) cz: Vec<i32>,
    /// Whether any column has a non-zero zero point (then row sums of A are needed).
    pub(crate) has_zp: bool,
}

impl PackedB {
    /// Packs `k×n` weights read through `get(k, n)`, with one zero point per
    /// column or one for all (`zero_points.len()` is 1 or `n`). u8 weights
    /// go in shifted by -128, with their zero point shifted the same way.
    pub fn from_fn(
        k: usize,
        n: usize,
        get: impl Fn(usize, usize) -> i8,
        zero_points: &[i32],
    ) -> PackedB {
        assert!(
            zero_points.len() == 1 || zero_points.len() == n,
            "PackedB: {} zero points for {n} columns",
            zero_points.len()
        );
        let k4 = k.div_ceil(4) * 4;
        let mut panels = Vec::new();
        let mut off = 0;
        let mut n0 = 0;
        while n0 < n {
            let real = (n - n0).min(PANEL);
            let width = real.div_ceil(16) * 16;
            panels.push((off, width, real));
            off += width * k4;
            n0 += real;
        }
        let mut data = vec![0i8; off];
        let mut colsum = vec![0i32; n];
        for (p, &(poff, width, real)) in panels.iter().enumerate() {
            for j in 0..real {
                let col = p * PANEL + j;
                for kk in 0..k {
                    let v = get(kk, col);
                    data[poff + (kk / 4) * width * 4 + j * 4 + kk % 4] = v;
                    colsum[col] = colsum[col].wrapping_add(v as i32);
                }
            }
        }
        let zb: Vec<i32> = (0..n)
            .map(|j| zero_points[if zero_points.len() == 1 { 0 } else { j }])
            .collect();
        let cz = (0..n)
            .map(|j| (k as i32).wrapping_mul(zb[j]).wrapping_sub(colsum[j]))
            .collect();
        let has_zp = zb.iter().any(|&z| z != 0);
        PackedB {
            k,
            n,
            k4,
            panels,
            data,
            zb,
            cz,
            has_zp,
        }
    }

    /// Row-major `k×n` s8 weights.
    pub fn from_i8(b: &[i8], k: usize, n: usize, zero_points: &[i32]) -> PackedB {
        assert!(b.len() >= k * n, "PackedB: b too small");
        PackedB::from_fn(k, n, |r, c| b[r * n + c], zero_points)
    }

    /// Row-major `k×n` u8 weights (shifted into s8 by -128).
    pub fn from_u8(b: &[u8], k: usize, n: usize, zero_points: &[i32]) -> PackedB {
        assert!(b.len() >= k * n, "PackedB: b too small");
        let zp: Vec<i32> = zero_points.iter().map(|z| z - 128).collect();
        PackedB::from_fn(k, n, |r, c| (b[r * n + c] as i32 - 128) as i8, &zp)
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Bytes of packed weights.
    pub fn packed_len(&self) -> usize {
        self.data.len()
    }
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedB {{ k: {}, n: {}, zero points: {} }}",
            self.k, self.n, self.has_zp
        )
    }
}
