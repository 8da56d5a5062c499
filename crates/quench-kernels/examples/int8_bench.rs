//! int8 kernel throughput: the bare u8·s8 micro-kernel on L1-resident data
//! against the VNNI peak, and the packed int8 GEMM against Quench's fp32
//! sgemm on the same shape, single-threaded.
//!
//! `cargo run --release -p quench-kernels --example int8_bench [-- --reps N]`

use quench_kernels::int8::{self, AData, AMat, Isa, MR, Out, PANEL, PackedB, Post};
use std::time::Instant;

/// The nominal clock from /proc/cpuinfo (the highest "cpu MHz"), in Hz.
fn clock_hz() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .filter(|l| l.starts_with("cpu MHz"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .reduce(f64::max)
        .map(|mhz| mhz * 1e6)
}

/// zmm vpdpbusd per second on 12 independent registers with no loads: what
/// the core really issues (on a shared or throttled core this is below
/// 2 per cycle), the ceiling the micro-kernel is compared with side by side.
#[cfg(target_arch = "x86_64")]
fn dpbusd_rate() -> f64 {
    let n: u64 = 24_000_000;
    let t = Instant::now();
    // Safety: register-only AVX-512 VNNI arithmetic; only called when detected.
    unsafe {
        std::arch::asm!(
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "2:",
            "vpdpbusd zmm4, zmm0, zmm1", "vpdpbusd zmm5, zmm0, zmm1",
            "vpdpbusd zmm6, zmm0, zmm1", "vpdpbusd zmm7, zmm0, zmm1",
            "vpdpbusd zmm8, zmm0, zmm1", "vpdpbusd zmm9, zmm0, zmm1",
            "vpdpbusd zmm10, zmm0, zmm1", "vpdpbusd zmm11, zmm0, zmm1",
            "vpdpbusd zmm12, zmm0, zmm1", "vpdpbusd zmm13, zmm0, zmm1",
            "vpdpbusd zmm14, zmm0, zmm1", "vpdpbusd zmm15, zmm0, zmm1",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) n / 12 => _,
            out("zmm0") _, out("zmm1") _, out("zmm4") _, out("zmm5") _, out("zmm6") _,
            out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
            out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
        );
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// vpmaddwd + vpaddd pairs per second on 8 independent ymm accumulators
/// with no loads: the ceiling of the exact AVX2 scheme (16 MACs per pair),
/// measured alongside the AVX2 micro-kernel.
#[cfg(target_arch = "x86_64")]
fn madd_rate() -> f64 {
    let n: u64 = 24_000_000;
    let t = Instant::now();
    // Safety: register-only AVX2 arithmetic; only called when detected.
    unsafe {
        std::arch::asm!(
            "vpxor ymm0, ymm0, ymm0",
            "vpxor ymm1, ymm1, ymm1",
            "2:",
            "vpmaddwd ymm2, ymm0, ymm1", "vpaddd ymm8, ymm8, ymm2",
            "vpmaddwd ymm3, ymm0, ymm1", "vpaddd ymm9, ymm9, ymm3",
            "vpmaddwd ymm4, ymm0, ymm1", "vpaddd ymm10, ymm10, ymm4",
            "vpmaddwd ymm5, ymm0, ymm1", "vpaddd ymm11, ymm11, ymm5",
            "vpmaddwd ymm2, ymm0, ymm1", "vpaddd ymm12, ymm12, ymm2",
            "vpmaddwd ymm3, ymm0, ymm1", "vpaddd ymm13, ymm13, ymm3",
            "vpmaddwd ymm4, ymm0, ymm1", "vpaddd ymm14, ymm14, ymm4",
            "vpmaddwd ymm5, ymm0, ymm1", "vpaddd ymm15, ymm15, ymm5",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) n / 8 => _,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _,
            out("ymm5") _, out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
        );
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let reps: usize = std::env::args()
        .skip_while(|a| a != "--reps")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let isa = Isa::detect();
    println!("isa: {isa:?}");

    // Micro-kernel: 6 rows × 64 columns × K = 256 (A 1.5 KB, B 16 KB: L1),
    // timed in turn with the bare instruction loop.
    let k = 256;
    let a: Vec<u8> = (0..MR * k).map(|i| (i * 7 % 251) as u8).collect();
    let bw: Vec<i8> = (0..k * PANEL).map(|i| (i * 13 % 255) as i8).collect();
    let b = PackedB::from_i8(&bw, k, PANEL, &[0]);
    let calls = 10_000;
    let (mut tk, mut rate) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        std::hint::black_box(int8::microkernel_reps(isa, &a, &b, calls));
        tk.push(t.elapsed().as_secs_f64());
        #[cfg(target_arch = "x86_64")]
        match isa {
            Isa::Avx512Vnni => rate.push(dpbusd_rate()),
            Isa::Avx2 => rate.push(madd_rate()),
            _ => {}
        }
    }
    let gops = 2.0 * (MR * PANEL * k * calls) as f64 / median(tk) / 1e9;
    println!("micro-kernel {MR}x{PANEL}x{k}: {gops:.0} GOP/s");
    if !rate.is_empty() {
        // One zmm vpdpbusd = 64 MACs = 128 ops; one ymm vpmaddwd = 16 MACs = 32 ops.
        let (ops, what) = if isa == Isa::Avx2 {
            (32.0, "vpmaddwd+vpaddd")
        } else {
            (128.0, "vpdpbusd")
        };
        let issued = median(rate) * ops / 1e9;
        println!(
            "  vs the bare {what} loop measured alongside: {issued:.0} GOP/s -> {:.1}%",
            100.0 * gops / issued
        );
    }
    if let (Some(hz), Isa::Avx512Vnni) = (clock_hz(), isa) {
        let peak = 2.0 * 128.0 * hz / 1e9;
        println!(
            "  vs nominal peak 2 x 64 MACs/cycle at {:.2} GHz = {peak:.0} GOP/s -> {:.1}%",
            hz / 1e9,
            100.0 * gops / peak
        );
    }

    // Packed GEMM M=128, K=N=768 against fp32 sgemm, interleaved runs.
    let (m, k, n) = (128, 768, 768);
    let au: Vec<u8> = (0..m * k).map(|i| (i * 31 % 256) as u8).collect();
    let bi: Vec<i8> = (0..k * n).map(|i| (i * 17 % 256) as i8).collect();
    let packed = PackedB::from_i8(&bi, k, n, &[0]);
    let am = AMat {
        data: AData::U8(&au),
        m,
        k,
        lda: k,
        zero_points: &[128],
    };
    let af: Vec<f32> = au.iter().map(|&x| x as f32).collect();
    let bf: Vec<f32> = bi.iter().map(|&x| x as f32).collect();
    let mut yq = vec![0u8; m * n];
    let mut yf = vec![0f32; m * n];
    let mult = [1e-4f32];
    let post = Post::Requant {
        bias: None,
        mult: &mult,
        zp: 128,
        lo: 0,
        hi: 255,
    };
    let (mut ti, mut tf) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..10 {
            int8::gemm(&am, &packed, &post, Out::U8(&mut yq), n, false, 1);
        }
        ti.push(t.elapsed().as_secs_f64() / 10.0);
        let t = Instant::now();
        for _ in 0..10 {
            quench_kernels::gemm::sgemm(m, n, k, &af, &bf, &mut yf, 0.0, 1);
        }
        tf.push(t.elapsed().as_secs_f64() / 10.0);
    }
    let (ti, tf) = (median(ti), median(tf));
    let ops = 2.0 * (m * n * k) as f64;
    println!(
        "gemm {m}x{k}x{n}, 1 thread: int8 {:.0} GOP/s ({:.3} ms), fp32 sgemm {:.0} GFLOP/s ({:.3} ms): int8 is {:.2}x faster",
        ops / ti / 1e9,
        ti * 1e3,
        ops / tf / 1e9,
        tf * 1e3,
        tf / ti
    );

    // Transformer shapes (MiniLM, seq 128): dynamic quantization of A, the
    // packed GEMM with the dequantizing epilogue, and fp32 sgemm alongside.
    for (m, k, n) in [(128, 384, 384), (128, 384, 1536), (128, 1536, 384)] {
        let af: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 211) as f32 - 105.0) * 0.01)
            .collect();
        let bi: Vec<i8> = (0..k * n).map(|i| (i * 17 % 256) as i8).collect();
        let bf: Vec<f32> = bi.iter().map(|&x| x as f32 * 0.01).collect();
        let packed = PackedB::from_i8(&bi, k, n, &[0]);
        let bs = vec![0.01f32; n];
        let mut q = vec![0u8; m * k];
        let mut y = vec![0f32; m * n];
        let (mut tq, mut tg, mut tf) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let t = Instant::now();
            for _ in 0..10 {
                int8::quantize_u8(&af, 0.02, 128, &mut q);
            }
            tq.push(t.elapsed().as_secs_f64() / 10.0);
            let am = AMat {
                data: AData::U8(&q),
                m,
                k,
                lda: k,
                zero_points: &[128],
            };
            let post = Post::Dequant {
                a_scale: &[0.02],
                b_scale: &bs,
                bias: None,
            };
            let t = Instant::now();
            for _ in 0..10 {
                int8::gemm(&am, &packed, &post, Out::F32(&mut y), n, false, 1);
            }
            tg.push(t.elapsed().as_secs_f64() / 10.0);
            let t = Instant::now();
            for _ in 0..10 {
                quench_kernels::gemm::sgemm(m, n, k, &af, &bf, &mut y, 0.0, 1);
            }
            tf.push(t.elapsed().as_secs_f64() / 10.0);
        }
        let (tq, tg, tf) = (median(tq), median(tg), median(tf));
        let ops = 2.0 * (m * n * k) as f64;
        println!(
            "dynamic {m}x{k}x{n}: quantize A {:.3} ms, int8 gemm {:.0} GOP/s ({:.3} ms), fp32 {:.0} GFLOP/s ({:.3} ms): {:.2}x",
            tq * 1e3,
            ops / tg / 1e9,
            tg * 1e3,
            ops / tf / 1e9,
            tf * 1e3,
            tf / (tq + tg)
        );
    }
}
