use super::*;
use crate::conv::{Geom3, reference};

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Case {
    c: usize,
    m: usize,
    ih: usize,
    iw: usize,
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    p: [usize; 2],
}

impl Case {
    fn geom(&self) -> Geom2 {
        let out = |i: usize, k: usize, s: usize, d: usize, p: usize| {
            (i + 2 * p - d * (k - 1) - 1) / s + 1
        };
        Geom2 {
            in_h: self.ih,
            in_w: self.iw,
            out_h: out(self.ih, self.k[0], self.s[0], self.d[0], self.p[0]),
            out_w: out(self.iw, self.k[1], self.s[1], self.d[1], self.p[1]),
            kh: self.k[0],
            kw: self.k[1],
            sh: self.s[0],
            sw: self.s[1],
            dh: self.d[0],
            dw: self.d[1],
            ph: self.p[0],
            pw: self.p[1],
        }
    }
}

/// `act(conv(x) + bias + residual)` in NCHW, from the direct reference.
#[allow(clippy::too_many_arguments)]
fn expected(
    cs: &Case,
    g: &Geom2,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    r: &[f32],
    act: Act,
    dw: bool,
) -> Vec<f32> {
    let g3 = Geom3::lift(
        &[g.in_h, g.in_w],
        &cs.k,
        &[g.out_h, g.out_w],
        &cs.s,
        &cs.d,
        &cs.p,
    )
    .unwrap();
    let os = g.out_h * g.out_w;
    let mut y = vec![0.0; cs.m * os];
    if dw {
        let (is, ks) = (g.in_h * g.in_w, g.kh * g.kw);
        for ch in 0..cs.m {
            reference::conv(
                &g3,
                1,
                1,
                &x[ch * is..],
                &w[ch * ks..],
                &mut y[ch * os..(ch + 1) * os],
            );
        }
    } else {
        reference::conv(&g3, cs.c, cs.m, x, w, &mut y);
    }
    for (i, v) in y.iter_mut().enumerate() {
        *v = act.apply(*v + b[i / os] + r[i]);
    }
    y
}

fn run_case(cs: Case, act: Act, threads: usize, portable: bool) {
    let dw = cs.c == 0;
    let c = if dw { cs.m } else { cs.c };
    let g = cs.geom();
    let (is, os) = (g.in_h * g.in_w, g.out_h * g.out_w);
    let x = values(c * is, 1);
    let ks = cs.k[0] * cs.k[1];
    let w = values(cs.m * if dw { 1 } else { c } * ks, 2);
    let b = values(cs.m, 3);
    let r = values(cs.m * os, 4);
    let want = expected(&Case { c, ..cs }, &g, &x, &w, &b, &r, act, dw);
    let mut rb = vec![0.0; blocks(cs.m) * LANES * os];
    nchw_to_nchwc(&r, cs.m, os, &mut rb);
    let mut yb = vec![f32::NAN; blocks(cs.m) * LANES * os];
    PORTABLE.with(|p| p.set(portable));
    if dw {
        let p = PackedDepthwise::new(&w, Some(&b), c, cs.k[0], cs.k[1]);
        let mut xb = vec![0.0; blocks(c) * LANES * is];
        nchw_to_nchwc(&x, c, is, &mut xb);
        depthwise(&p, &g, &xb, Some(&rb), act, &mut yb, threads);
    } else {
        let p = PackedConv::new(&w, Some(&b), cs.m, c, cs.k[0], cs.k[1]);
        let mut xb = vec![0.0; p.input_len(&g)];
        if p.small_input {
            nchw_to_nhwc(&x, c, is, &mut xb);
        } else {
            nchw_to_nchwc(&x, c, is, &mut xb);
        }
        conv(&p, &g, &xb, Some(&rb), act, &mut yb, threads);
    }
    PORTABLE.with(|p| p.set(false));
    assert!(
        yb.iter().all(|v| v.is_finite()),
        "{cs:?}: padding channels not finite"
    );
    let mut y = vec![0.0; cs.m * os];
    nchwc_to_nchw(&yb, cs.m, os, &mut y);
    for (i, (a, e)) in y.iter().zip(&want).enumerate() {
        let tol = 1e-4 * (1.0 + (c * ks) as f32).sqrt();
        assert!((a - e).abs() <= tol, "{cs:?} {act:?} at {i}: {a} vs {e}");
    }
}

fn dense(c: usize, m: usize, ih: usize, iw: usize, k: usize, s: usize, p: usize) -> Case {
    Case {
        c,
        m,
        ih,
        iw,
        k: [k, k],
        s: [s, s],
        d: [1, 1],
        p: [p, p],
    }
}

#[test]
fn dense_matches_reference() {
    let cases = [
        dense(16, 64, 7, 7, 1, 1, 0),
        dense(32, 48, 9, 5, 1, 1, 0),
        dense(20, 70, 6, 13, 1, 1, 0),
        dense(64, 64, 10, 11, 3, 1, 1),
        dense(17, 33, 9, 8, 3, 2, 1),
        dense(24, 16, 8, 8, 1, 2, 0),
        dense(3, 64, 23, 21, 7, 2, 3),
        dense(3, 32, 15, 16, 3, 2, 1),
        dense(5, 20, 4, 3, 3, 1, 2),
        dense(40, 200, 3, 3, 3, 1, 1),
        Case {
            c: 18,
            m: 30,
            ih: 9,
            iw: 12,
            k: [3, 2],
            s: [2, 3],
            d: [2, 1],
            p: [2, 1],
        },
        Case {
            c: 4,
            m: 5,
            ih: 1,
            iw: 1,
            k: [1, 1],
            s: [1, 1],
            d: [1, 1],
            p: [0, 0],
        },
    ];
    for cs in cases {
        run_case(cs, Act::Relu, 1, false);
    }
    run_case(cases[3], Act::Clip(-0.5, 0.25), 2, false);
    run_case(cases[4], Act::LeakyRelu(0.1), 2, false);
    run_case(cases[6], Act::None, 2, false);
}

#[test]
fn depthwise_matches_reference() {
    let dwc = |m, ih, iw, k, s, p| Case {
        c: 0,
        ..dense(0, m, ih, iw, k, s, p)
    };
    let cases = [
        dwc(32, 12, 13, 3, 1, 1),
        dwc(24, 11, 10, 3, 2, 1),
        dwc(144, 7, 7, 3, 1, 1),
        dwc(20, 5, 21, 5, 2, 2),
        dwc(16, 3, 2, 3, 1, 2),
        Case {
            c: 0,
            m: 17,
            ih: 9,
            iw: 12,
            k: [3, 2],
            s: [2, 3],
            d: [2, 1],
            p: [2, 1],
        },
    ];
    for cs in cases {
        run_case(cs, Act::Clip(0.0, 0.5), 1, false);
    }
    run_case(cases[0], Act::None, 2, false);
}

#[test]
fn portable_kernels_match_reference() {
    run_case(dense(20, 70, 6, 13, 1, 1, 0), Act::Relu, 1, true);
    run_case(dense(17, 33, 9, 8, 3, 2, 1), Act::LeakyRelu(0.2), 1, true);
    run_case(dense(3, 16, 11, 9, 7, 2, 3), Act::None, 1, true);
    run_case(
        Case {
            c: 0,
            ..dense(0, 24, 11, 10, 3, 2, 1)
        },
        Act::Relu,
        1,
        true,
    );
}

#[test]
fn reorders_round_trip() {
    let (c, hw) = (21, 10);
    let x = values(c * hw, 9);
    let mut b = vec![f32::NAN; blocks(c) * LANES * hw];
    nchw_to_nchwc(&x, c, hw, &mut b);
    assert_eq!(b[LANES * 3 + 2], x[2 * hw + 3]);
    assert_eq!(b[(hw + 4) * LANES + 5], 0.0, "padding channel");
    let mut back = vec![0.0; c * hw];
    nchwc_to_nchw(&b, c, hw, &mut back);
    assert_eq!(back, x);
    let mut n = vec![0.0; c * hw];
    nchw_to_nhwc(&x, c, hw, &mut n);
    assert_eq!(n[4 * c + 7], x[7 * hw + 4]);
}

#[test]
fn activation_keeps_nan_like_scalar() {
    let x = [
        f32::NAN,
        -1.0,
        -0.0,
        0.5,
        3.0,
        f32::INFINITY,
        -2.5,
        0.0,
        1.0,
        2.0,
        -3.0,
        4.0,
        5.0,
        6.0,
        7.0,
        8.0,
    ];
    for act in [
        Act::Relu,
        Act::Clip(0.0, 2.0),
        Act::LeakyRelu(0.5),
        Act::None,
    ] {
        let want: Vec<f32> = x.iter().map(|&v| act.apply(v)).collect();
        let mut got = [0.0f32; LANES];
        #[cfg(target_arch = "x86_64")]
        if fast() {
            #[target_feature(enable = "avx512f")]
            unsafe fn apply(x: &[f32; LANES], act: Act, out: &mut [f32; LANES]) {
                unsafe {
                    simd::Avx512::load(x.as_ptr())
                        .act(act)
                        .store(out.as_mut_ptr())
                }
            }
            // Safety: AVX-512F detected.
            unsafe { apply(&x, act, &mut got) };
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{act:?}: {g} vs {w}"
                );
            }
        }
    }
}

/// GFLOP/s of ResNet-50 / MobileNetV2 layer shapes, NCHWc vs im2col + GEMM:
/// `cargo test --release -p quench-kernels nchwc_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn nchwc_speed() {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    fn thread_cpu() -> f64 {
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // Safety: a valid out-pointer; 3 = CLOCK_THREAD_CPUTIME_ID.
        unsafe { clock_gettime(3, &mut ts) };
        ts.sec as f64 + ts.nsec as f64 * 1e-9
    }
    let shapes = [
        ("rn 7x7 stem", dense(3, 64, 224, 224, 7, 2, 3)),
        ("rn 1x1 64>64 56", dense(64, 64, 56, 56, 1, 1, 0)),
        ("rn 1x1 256>64 56", dense(256, 64, 56, 56, 1, 1, 0)),
        ("rn 1x1 64>256 56", dense(64, 256, 56, 56, 1, 1, 0)),
        ("rn 3x3 64 56", dense(64, 64, 56, 56, 3, 1, 1)),
        ("rn 3x3 128 28", dense(128, 128, 28, 28, 3, 1, 1)),
        ("rn 3x3 256 14", dense(256, 256, 14, 14, 3, 1, 1)),
        ("rn 3x3 512 7", dense(512, 512, 7, 7, 3, 1, 1)),
        ("rn 3x3 s2 256 28>14", dense(256, 256, 28, 28, 3, 2, 1)),
        ("rn 1x1 1024>256 14", dense(1024, 256, 14, 14, 1, 1, 0)),
        ("rn 1x1 256>1024 14", dense(256, 1024, 14, 14, 1, 1, 0)),
        ("rn 1x1 2048>512 7", dense(2048, 512, 7, 7, 1, 1, 0)),
        ("rn 1x1 512>2048 7", dense(512, 2048, 7, 7, 1, 1, 0)),
        ("rn 1x1 s2 512>1024", dense(512, 1024, 28, 28, 1, 2, 0)),
        ("mb 1x1 16>96 112", dense(16, 96, 112, 112, 1, 1, 0)),
        ("mb 1x1 144>24 56", dense(144, 24, 56, 56, 1, 1, 0)),
        ("mb 1x1 960>160 7", dense(960, 160, 7, 7, 1, 1, 0)),
        (
            "mb dw 96 112 s2",
            Case {
                c: 0,
                ..dense(0, 96, 112, 112, 3, 2, 1)
            },
        ),
        (
            "mb dw 144 56",
            Case {
                c: 0,
                ..dense(0, 144, 56, 56, 3, 1, 1)
            },
        ),
        (
            "mb dw 960 7",
            Case {
                c: 0,
                ..dense(0, 960, 7, 7, 3, 1, 1)
            },
        ),
    ];
    // SHAPE=c,m,hw,k,s times that one layer instead.
    let custom = std::env::var("SHAPE").ok().map(|v| {
        let d: Vec<usize> = v.split(',').map(|x| x.parse().unwrap()).collect();
        (
            "custom",
            dense(d[0], d[1], d[2], d[2], d[3], d[4], d[3] / 2),
        )
    });
    let shapes: Vec<(&str, Case)> = match custom {
        Some(c) => vec![c],
        None => shapes.to_vec(),
    };
    for (name, cs) in shapes {
        let dw = cs.c == 0;
        let c = if dw { cs.m } else { cs.c };
        let g = cs.geom();
        let (is, os, ks) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
        let w = values(cs.m * if dw { 1 } else { c } * ks, 2);
        let b = values(cs.m, 3);
        let xb = values(blocks(c) * LANES * is, 1);
        let mut yb = vec![0.0; blocks(cs.m) * LANES * os];
        let flops = 2.0 * (cs.m * os * ks * if dw { 1 } else { c }) as f64;
        let reps = (2e9 / flops).clamp(3.0, 200.0) as usize;
        // Best of 5 batches of thread CPU time: the machine is shared.
        // COLD=1 evicts the caches before each call, as in a network whose
        // layers each bring new weights.
        let cold = std::env::var_os("COLD").is_some();
        let mut junk = vec![0u8; if cold { 16 << 20 } else { 0 }];
        let mut time = |f: &mut dyn FnMut()| {
            f();
            let reps = if cold { 5 } else { reps };
            (0..5)
                .map(|_| {
                    let mut total = 0.0;
                    for _ in 0..reps.div_ceil(5) {
                        for (i, b) in junk.iter_mut().enumerate().step_by(64) {
                            *b = b.wrapping_add(i as u8);
                        }
                        let t = thread_cpu();
                        f();
                        total += thread_cpu() - t;
                    }
                    total / reps.div_ceil(5) as f64
                })
                .fold(f64::INFINITY, f64::min)
        };
        let t_nchwc = if dw {
            let p = PackedDepthwise::new(&w, Some(&b), c, g.kh, g.kw);
            time(&mut || depthwise(&p, &g, &xb, None, Act::Relu, &mut yb, 1))
        } else {
            let p = PackedConv::new(&w, Some(&b), cs.m, c, g.kh, g.kw);
            time(&mut || conv(&p, &g, &xb, None, Act::Relu, &mut yb, 1))
        };
        let t_gemm = if dw {
            0.0
        } else {
            let g3 = Geom3::lift(
                &[g.in_h, g.in_w],
                &cs.k,
                &[g.out_h, g.out_w],
                &cs.s,
                &cs.d,
                &cs.p,
            )
            .unwrap();
            let mut col = vec![0.0; c * ks * os];
            let mut y = vec![0.0; cs.m * os];
            time(&mut || {
                if g3.is_pointwise() {
                    crate::gemm::sgemm(cs.m, os, c, &w, &xb, &mut y, 0.0, 1);
                } else {
                    crate::conv::im2col(&g3, c, &xb, &mut col);
                    crate::gemm::sgemm(cs.m, os, c * ks, &w, &col, &mut y, 0.0, 1);
                }
            })
        };
        println!(
            "{name:<22} nchwc {:7.3} ms {:6.1} GF/s | gemm {:7.3} ms {:6.1} GF/s",
            t_nchwc * 1e3,
            flops / t_nchwc / 1e9,
            t_gemm * 1e3,
            flops / t_gemm.max(1e-12) / 1e9
        );
    }
}
