use super::conv::{Conv2d, depthwise_nhwc, im2col_nhwc, to_nhwc_u8};
use super::*;

/// Small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Random bytes, with the extremes 0/255 (-128/127) over-represented.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| match self.next() % 8 {
                0 => 0,
                1 => 255,
                2 => 127,
                3 => 128,
                _ => self.next() as u8,
            })
            .collect()
    }
}

/// Plain `Σ (a - za[i]) * (b - zb[j])` in wrapping i32.
fn reference(
    a: &[i32],
    za: &[i32],
    b: &[i32],
    zb: &[i32],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<i32> {
    let pick = |v: &[i32], i: usize| v[if v.len() == 1 { 0 } else { i }];
    let mut y = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0i32;
            for kk in 0..k {
                let p = (a[i * k + kk] - pick(za, i)).wrapping_mul(b[kk * n + j] - pick(zb, j));
                s = s.wrapping_add(p);
            }
            y[i * n + j] = s;
        }
    }
    y
}

fn raw(isa: Isa, a: &AMat, b: &PackedB, threads: usize) -> Vec<i32> {
    let mut y = vec![0i32; a.m * b.n];
    gemm_with(
        isa,
        a,
        b,
        &Post::Raw { bias: None },
        Out::I32(&mut y),
        b.n,
        false,
        threads,
    );
    y
}

#[test]
fn every_isa_matches_reference_on_odd_shapes_and_extremes() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let shapes = [
        (1, 1, 1),
        (1, 7, 3),
        (5, 13, 17),
        (6, 64, 64),
        (7, 65, 33),
        (13, 130, 100),
        (2, 255, 1),
        (31, 9, 79),
    ];
    for &(m, k, n) in &shapes {
        let au = rng.bytes(m * k);
        let bb = rng.bytes(k * n);
        let bi: Vec<i8> = bb.iter().map(|&x| x as i8).collect();
        for (za, zb) in [
            (vec![0], vec![0]),
            (vec![255], vec![-128]),
            (
                (0..m as i32).map(|i| (i * 37) % 256).collect(),
                (0..n as i32).map(|j| (j * 11) % 256 - 128).collect(),
            ),
        ] {
            let a_i32: Vec<i32> = au.iter().map(|&x| x as i32).collect();
            let b_i32: Vec<i32> = bi.iter().map(|&x| x as i32).collect();
            let want = reference(&a_i32, &za, &b_i32, &zb, m, k, n);
            let packed = PackedB::from_i8(&bi, k, n, &zb);
            let a = AMat {
                data: AData::U8(&au),
                m,
                k,
                lda: k,
                zero_points: &za,
            };
            for isa in Isa::available() {
                for threads in [1, 3] {
                    assert_eq!(
                        raw(isa, &a, &packed, threads),
                        want,
                        "{isa:?} u8 {m}x{k}x{n} t{threads}"
                    );
                }
            }
            // The same values as s8 activations: a - 128 with za - 128.
            let as8: Vec<i8> = au.iter().map(|&x| (x as i32 - 128) as i8).collect();
            let za8: Vec<i32> = za.iter().map(|z| z - 128).collect();
            let a = AMat {
                data: AData::I8(&as8),
                m,
                k,
                lda: k,
                zero_points: &za8,
            };
            // u8 weights: b + 128 with zb + 128.
            let bu: Vec<u8> = bi.iter().map(|&x| (x as i32 + 128) as u8).collect();
            let zbu: Vec<i32> = zb.iter().map(|z| z + 128).collect();
            let packed_u = PackedB::from_u8(&bu, k, n, &zbu);
            for isa in Isa::available() {
                assert_eq!(raw(isa, &a, &packed_u, 2), want, "{isa:?} s8 {m}x{k}x{n}");
            }
        }
    }
}

#[test]
fn worst_case_magnitudes_are_exact() {
    // 255 · -128 in every product: the case vpmaddubsw would saturate.
    let (m, k, n) = (3, 1024, 20);
    let a = vec![255u8; m * k];
    let b = vec![-128i8; k * n];
    let packed = PackedB::from_i8(&b, k, n, &[0]);
    let am = AMat {
        data: AData::U8(&a),
        m,
        k,
        lda: k,
        zero_points: &[0],
    };
    for isa in Isa::available() {
        assert!(
            raw(isa, &am, &packed, 1)
                .iter()
                .all(|&v| v == 255 * -128 * k as i32),
            "{isa:?}"
        );
    }
}

#[test]
fn requant_and_dequant_epilogues_match_float_formulas() {
    let mut rng = Rng(7);
    let (m, k, n) = (9, 37, 70);
    let au = rng.bytes(m * k);
    let bi: Vec<i8> = rng.bytes(k * n).iter().map(|&x| x as i8).collect();
    let (za, zb) = (vec![3], vec![-1]);
    let want = reference(
        &au.iter().map(|&x| x as i32).collect::<Vec<_>>(),
        &za,
        &bi.iter().map(|&x| x as i32).collect::<Vec<_>>(),
        &zb,
        m,
        k,
        n,
    );
    let packed = PackedB::from_i8(&bi, k, n, &zb);
    let a = AMat {
        data: AData::U8(&au),
        m,
        k,
        lda: k,
        zero_points: &za,
    };
    let bias: Vec<i32> = (0..n as i32).map(|j| j * 100 - 3000).collect();
    let mult: Vec<f32> = (0..n).map(|j| 0.0007 + j as f32 * 1e-5).collect();
    for isa in Isa::available() {
        // Requantize into s8 with zp 5 and a fused ReLU (lo = zp), transposed.
        let mut y = vec![0i8; m * n];
        let post = Post::Requant {
            bias: Some(&bias),
            mult: &mult,
            zp: 5,
            lo: 5,
            hi: 127,
        };
        gemm_with(isa, &a, &packed, &post, Out::I8(&mut y), m, true, 2);
        for i in 0..m {
            for j in 0..n {
                let f = (want[i * n + j] + bias[j]) as f32 * mult[j];
                let q = (f.round_ties_even() + 5.0).clamp(5.0, 127.0) as i8;
                assert_eq!(y[j * m + i], q, "{isa:?} ({i},{j})");
            }
        }
        // Dequantize with a per-row A scale.
        let sa: Vec<f32> = (0..m).map(|i| 0.01 * (i + 1) as f32).collect();
        let sb = [0.5f32];
        let fb: Vec<f32> = (0..n).map(|j| j as f32).collect();
        let mut y = vec![0f32; m * n];
        let post = Post::Dequant {
            a_scale: &sa,
            b_scale: &sb,
            bias: Some(&fb),
        };
        gemm_with(isa, &a, &packed, &post, Out::F32(&mut y), n, false, 1);
        for i in 0..m {
            for j in 0..n {
                assert_eq!(y[i * n + j], want[i * n + j] as f32 * (sa[i] * 0.5) + fb[j]);
            }
        }
    }
}

#[test]
fn rounding_is_half_to_even() {
    // acc = 1..=7 times 0.5: ties 0.5, 1.5, 2.5, 3.5 go to 0, 2, 2, 4.
    let a: Vec<u8> = (1..=7).collect();
    let packed = PackedB::from_i8(&[1], 1, 1, &[0]);
    let am = AMat {
        data: AData::U8(&a),
        m: 7,
        k: 1,
        lda: 1,
        zero_points: &[0],
    };
    let mut y = vec![0u8; 7];
    let post = Post::Requant {
        bias: None,
        mult: &[0.5],
        zp: 0,
        lo: 0,
        hi: 255,
    };
    gemm(&am, &packed, &post, Out::U8(&mut y), 1, false, 1);
    assert_eq!(y, [0, 1, 2, 2, 2, 3, 4]);
}

#[test]
#[should_panic(expected = "cannot write")]
fn mismatched_epilogue_is_refused() {
    let packed = PackedB::from_i8(&[1], 1, 1, &[0]);
    let am = AMat {
        data: AData::U8(&[1]),
        m: 1,
        k: 1,
        lda: 1,
        zero_points: &[0],
    };
    let mut y = [0f32];
    gemm(
        &am,
        &packed,
        &Post::Raw { bias: None },
        Out::F32(&mut y),
        1,
        false,
        1,
    );
}

/// Direct NCHW convolution of one image, in i32, with zero points.
fn conv_ref(x: &[u8], zx: i32, w: &[i8], g: &Conv2d, m: usize, depthwise: bool) -> Vec<i32> {
    let cg = if depthwise { 1 } else { g.c };
    let mut y = vec![0i32; m * g.oh * g.ow];
    for oc in 0..m {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut s = 0i32;
                for ic in 0..cg {
                    let ch = if depthwise { oc } else { ic };
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.sh + ky * g.dh) as isize - g.pt as isize;
                            let ix = (ox * g.sw + kx * g.dw) as isize - g.pl as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let xv = x[(ch * g.h + iy as usize) * g.w + ix as usize] as i32 - zx;
                            s += xv * w[((oc * cg + ic) * g.kh + ky) * g.kw + kx] as i32;
                        }
                    }
                }
                y[(oc * g.oh + oy) * g.ow + ox] = s;
            }
        }
    }
    y
}

#[test]
fn im2col_gemm_and_depthwise_match_direct_convolution() {
    let mut rng = Rng(99);
    let dilated = Conv2d {
        c: 5,
        h: 7,
        w: 6,
        kh: 3,
        kw: 3,
        sh: 2,
        sw: 1,
        dh: 1,
        dw: 2,
        pt: 1,
        pl: 2,
        oh: 4,
        ow: 4,
    };
    // dw = 1: kernel rows wholly inside the image are copied in one piece.
    let strided = Conv2d {
        c: 3,
        h: 9,
        w: 11,
        kh: 3,
        kw: 3,
        sh: 2,
        sw: 2,
        dh: 1,
        dw: 1,
        pt: 1,
        pl: 1,
        oh: 5,
        ow: 6,
    };
    for g in [dilated, strided] {
        im2col_case(&mut rng, &g);
    }
}

fn im2col_case(rng: &mut Rng, g: &Conv2d) {
    let g = *g;
    let x = rng.bytes(g.c * g.h * g.w);
    let zx = 131;
    let mut nhwc = vec![0u8; x.len()];
    to_nhwc_u8(AData::U8(&x), g.c, g.h * g.w, &mut nhwc);
    // Full convolution, 11 output channels.
    let m = 11;
    let w: Vec<i8> = rng.bytes(m * g.c * 9).iter().map(|&v| v as i8).collect();
    let want = conv_ref(&x, zx, &w, &g, m, false);
    let k = 9 * g.c;
    let packed = PackedB::from_fn(
        k,
        m,
        |kk, oc| {
            let (tap, ic) = (kk / g.c, kk % g.c);
            w[(oc * g.c + ic) * 9 + tap]
        },
        &[0],
    );
    let plane = g.oh * g.ow;
    let mut cols = vec![0u8; plane * k];
    im2col_nhwc(&nhwc, &g, zx as u8, &mut cols, k);
    let a = AMat {
        data: AData::U8(&cols),
        m: plane,
        k,
        lda: k,
        zero_points: &[zx],
    };
    let mut y = vec![0i32; m * plane];
    gemm(
        &a,
        &packed,
        &Post::Raw { bias: None },
        Out::I32(&mut y),
        plane,
        true,
        1,
    );
    assert_eq!(y, want);
    // Depthwise with the same geometry.
    let wd: Vec<i8> = rng.bytes(g.c * 9).iter().map(|&v| v as i8).collect();
    let want = conv_ref(&x, zx, &wd, &g, g.c, true);
    let wt: Vec<i32> = (0..9 * g.c)
        .map(|i| wd[(i % g.c) * 9 + i / g.c] as i32)
        .collect();
    let mut y = vec![0i32; g.c * plane];
    depthwise_nhwc(
        &nhwc,
        zx,
        &wt,
        &g,
        &Post::Raw { bias: None },
        Out::I32(&mut y),
    );
    assert_eq!(y, want);
}

/// The register epilogue (AVX-512, row-major output) against the portable
/// one (scalar ISA) on the same products: every output type, with and
/// without B zero points, bias, per-column or single multipliers and scales,
/// per-row A zero points, and widths that end mid-vector.
#[test]
fn every_epilogue_path_matches_the_portable_one_bit_for_bit() {
    let mut rng = Rng(11);
    for &(m, k, n) in &[(1, 16, 16), (7, 37, 70), (13, 96, 130), (6, 4, 3)] {
        let au = rng.bytes(m * k);
        let bi: Vec<i8> = rng.bytes(k * n).iter().map(|&x| x as i8).collect();
        let za_rows: Vec<i32> = (0..m as i32).map(|i| (i * 37) % 256).collect();
        for (zb, za) in [
            (vec![0], vec![128]),
            (vec![-3], vec![7]),
            (vec![2], za_rows),
        ] {
            let packed = PackedB::from_i8(&bi, k, n, &zb);
            let a = AMat {
                data: AData::U8(&au),
                m,
                k,
                lda: k,
                zero_points: &za,
            };
            let bias: Vec<i32> = (0..n as i32).map(|j| j * 37 - 900).collect();
            let mult: Vec<f32> = (0..n).map(|j| 0.0011 + j as f32 * 3e-5).collect();
            let fbias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 3.0).collect();
            let sa: Vec<f32> = (0..m).map(|i| 0.003 * (i + 1) as f32).collect();
            let sb: Vec<f32> = (0..n).map(|j| 0.02 + j as f32 * 1e-3).collect();
            for with_bias in [false, true] {
                for per_col in [false, true] {
                    let mult: &[f32] = if per_col { &mult } else { &mult[..1] };
                    let bias = with_bias.then_some(&bias[..]);
                    let rq = |lo, hi, zp| Post::Requant {
                        bias,
                        mult,
                        zp,
                        lo,
                        hi,
                    };
                    let dq = Post::Dequant {
                        a_scale: if per_col { &sa } else { &sa[..1] },
                        b_scale: if per_col { &sb } else { &sb[..1] },
                        bias: with_bias.then_some(&fbias[..]),
                    };
                    for trans in [false, true] {
                        let ld = if trans { m } else { n };
                        let run_u8 = |isa| {
                            let mut y = vec![0u8; m * n];
                            gemm_with(
                                isa,
                                &a,
                                &packed,
                                &rq(3, 250, 17),
                                Out::U8(&mut y),
                                ld,
                                trans,
                                1,
                            );
                            y
                        };
                        // s8 with a range below zero, the full range, and a fused
                        // ReLU (not below zero: the AVX2 epilogue packs unsigned).
                        let run_i8 = |isa| {
                            let mut all = Vec::new();
                            for (lo, hi, zp) in [(-5, 127, -5), (-128, 127, 0), (0, 127, 0)] {
                                let mut y = vec![0i8; m * n];
                                gemm_with(
                                    isa,
                                    &a,
                                    &packed,
                                    &rq(lo, hi, zp),
                                    Out::I8(&mut y),
                                    ld,
                                    trans,
                                    1,
                                );
                                all.extend(y);
                            }
                            all
                        };
                        let run_f32 = |isa| {
                            let mut y = vec![0f32; m * n];
                            gemm_with(isa, &a, &packed, &dq, Out::F32(&mut y), ld, trans, 1);
                            y
                        };
                        let (wu, wi, wf) = (
                            run_u8(Isa::Scalar),
                            run_i8(Isa::Scalar),
                            run_f32(Isa::Scalar),
                        );
                        for isa in Isa::available() {
                            let what = format!(
                                "{isa:?} {m}x{k}x{n} zb {zb:?} bias {with_bias} per_col {per_col} trans {trans}"
                            );
                            assert_eq!(run_u8(isa), wu, "u8 {what}");
                            assert_eq!(run_i8(isa), wi, "s8 {what}");
                            let got = run_f32(isa);
                            assert!(
                                got.iter().zip(&wf).all(|(x, y)| x.to_bits() == y.to_bits()),
                                "f32 {what}"
                            );
                        }
                    }
                }
            }
        }
    }
}
