//! ResNet-50's convolutions as a chain, the way the runtime runs them: a
//! fresh output buffer per layer, weights streamed from memory once per
//! image, residuals fused. Isolated layers repeated in a loop keep their
//! weights and buffers in cache and hide what this shows.
//!
//! `cargo test --release -p quench-kernels nchwc_resnet -- --ignored --nocapture`

use super::*;
use std::collections::BTreeMap;

/// Thread CPU time in seconds (the machine may be shared).
fn thread_cpu() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // Safety: a valid out-pointer; 3 = CLOCK_THREAD_CPUTIME_ID.
    unsafe { clock_gettime(3, &mut ts) };
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

struct Layer {
    key: String,
    p: PackedConv,
    g: Geom2,
    act: Act,
    /// Input: index of the value it reads (0 = network input).
    x: usize,
    /// Fused residual value, if any.
    r: Option<usize>,
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

fn layer(key_extra: &str, c: usize, m: usize, h: usize, k: usize, s: usize, x: usize) -> Layer {
    let p = k / 2;
    let out = (h + 2 * p - k) / s + 1;
    let w = values(m * c * k * k, (m * 31 + c * 7 + k + h) as u64);
    let b = values(m, 5);
    Layer {
        key: format!("k{k} s{s}{key_extra}"),
        p: PackedConv::new(&w, Some(&b), m, c, k, k),
        g: Geom2 {
            in_h: h,
            in_w: h,
            out_h: out,
            out_w: out,
            kh: k,
            kw: k,
            sh: s,
            sw: s,
            dh: 1,
            dw: 1,
            ph: p,
            pw: p,
        },
        act: Act::Relu,
        x,
        r: None,
    }
}

/// The 52 convolutions after the stem (value 0: the 64×56×56 pooled stem output).
fn resnet50() -> Vec<Layer> {
    let mut layers = Vec::new();
    let (mut cin, mut h, mut x) = (64, 56, 0);
    for (width, n, stride) in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)] {
        for i in 0..n {
            let s = if i == 0 { stride } else { 1 };
            let out = width * 4;
            let short = if i == 0 {
                let mut l = layer("", cin, out, h, 1, s, x);
                l.act = Act::None;
                layers.push(l);
                layers.len()
            } else {
                x
            };
            layers.push(layer("", cin, width, h, 1, 1, x));
            let a = layers.len();
            layers.push(layer("", width, width, h, 3, s, a));
            let b = layers.len();
            h = (h - 1) / s + 1;
            let mut l = layer(" +res", width, out, h, 1, 1, b);
            l.r = Some(short);
            layers.push(l);
            x = layers.len();
            cin = out;
        }
    }
    layers
}

#[test]
#[ignore]
fn nchwc_resnet() {
    let layers = resnet50();
    let input = values(64 * 56 * 56, 1);
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let warm = std::env::var_os("WARM").is_some();
    let align = std::env::var_os("ALIGN").is_some();
    // DETAIL=1: one line per layer shape instead of per kind.
    let detail = std::env::var_os("DETAIL").is_some();
    let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut totals = Vec::new();
    for _ in 0..runs + 2 {
        let mut vals: Vec<Option<(Vec<f32>, usize)>> = vec![Some((input.clone(), 0))];
        let mut this: BTreeMap<String, f64> = BTreeMap::new();
        let t_all = thread_cpu();
        for (li, l) in layers.iter().enumerate() {
            let n = blocks(l.p.m) * LANES * l.g.out_h * l.g.out_w;
            // ALIGN=1: outputs start on a cache line (malloc gives 16 bytes).
            let mut y: Vec<f32> = Vec::with_capacity(n + LANES);
            let pad = if align {
                (y.as_ptr() as usize).wrapping_neg() % 64 / 4
            } else {
                0
            };
            y.resize(pad, 0.0);
            let get = |v: usize| vals[v].as_ref().map(|(v, pad)| &v[*pad..]).unwrap();
            let (x, r) = (get(l.x), l.r.map(get));
            let out = &mut y.spare_capacity_mut()[..n];
            if warm {
                // WARM=1: each layer runs twice, the second timed (its
                // weights, input and output then in cache).
                conv_into(&l.p, &l.g, x, r, l.act, out, 1);
            }
            let t = thread_cpu();
            conv_into(&l.p, &l.g, x, r, l.act, out, 1);
            let key = if detail {
                format!("{} {}>{} {}", l.key, l.p.c, l.p.m, l.g.in_h)
            } else {
                l.key.clone()
            };
            *this.entry(key).or_default() += thread_cpu() - t;
            // Safety: conv_into wrote all n floats.
            unsafe { y.set_len(pad + n) };
            vals.push(Some((y, pad)));
            // Free values no later layer reads, as the runtime does.
            for (v, slot) in vals.iter_mut().enumerate() {
                if slot.is_some()
                    && v <= li
                    && !layers[li + 1..].iter().any(|k| k.x == v || k.r == Some(v))
                {
                    *slot = None;
                }
            }
        }
        totals.push(thread_cpu() - t_all);
        for (k, v) in this {
            per.entry(k).or_default().push(v);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e3
    };
    let mut sum = 0.0;
    for (k, v) in per.iter_mut() {
        let m = med(v);
        sum += m;
        println!("{k:<14} {m:8.3} ms");
    }
    println!(
        "sum of medians {sum:8.3} ms, median total {:8.3} ms",
        med(&mut totals)
    );
}
