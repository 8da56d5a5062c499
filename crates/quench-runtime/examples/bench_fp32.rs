//! Times one ONNX model on one thread: `bench_fp32 MODEL INPUT.f32 OUTPUT.f32 RUNS [--profile]`.
//!
//! The input is raw little-endian f32 for the model's single input; the
//! first output is written the same way. Prints every run's time
//! (`times_ms ...`), its CPU time (`cpu_times_ms ...`) and the wall-time median (`median_ms X`), and with
//! `--profile` the median time per op type. Driven by scripts/bench_fp32.py.
//!
//! Ops the standard registry lacks (elementwise, Gemm, Flatten may land in
//! other branches) get simple stand-ins here so the CNN benchmarks run.

use quench_ir::{Dim, Tensor};
use quench_runtime::op::{optional, required};
use quench_runtime::{BuildCtx, Op, OpError, Registry, RunCtx, RunHooks, Session};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
enum Simple {
    Relu,
    Add,
    Clip,
    Flatten,
    Gemm,
}

impl Op for Simple {
    fn run(&self, _ctx: &RunCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = required(inputs, 0)?;
        let xs = x.as_slice::<f32>()?;
        let shape = x.shape().to_vec();
        let y: Tensor = match self {
            Simple::Relu => Tensor::from_vec(shape, xs.iter().map(|v| v.max(0.0)).collect())?,
            Simple::Add => {
                let b = required(inputs, 1)?.as_slice::<f32>()?;
                if b.len() != xs.len() {
                    return Err(OpError::Unsupported("broadcasting Add".into()));
                }
                Tensor::from_vec(shape, xs.iter().zip(b).map(|(a, b)| a + b).collect())?
            }
            Simple::Clip => {
                let lo = optional(inputs, 1)
                    .map_or(Ok(f32::MIN), |t| t.as_slice::<f32>().map(|v| v[0]))?;
                let hi = optional(inputs, 2)
                    .map_or(Ok(f32::MAX), |t| t.as_slice::<f32>().map(|v| v[0]))?;
                Tensor::from_vec(shape, xs.iter().map(|v| v.max(lo).min(hi)).collect())?
            }
            Simple::Flatten => {
                let n = shape[0];
                Tensor::from_vec(vec![n, xs.len() / n.max(1)], xs.to_vec())?
            }
            Simple::Gemm => {
                // x [M, K] · wᵀ (w [N, K]) + b, as exported Linear layers are.
                let w = required(inputs, 1)?;
                let (m, k, n) = (shape[0], shape[1], w.shape()[0]);
                let mut y = vec![0.0f32; m * n];
                if let Some(b) = optional(inputs, 2) {
                    let b = b.as_slice::<f32>()?;
                    y.chunks_exact_mut(n).for_each(|r| r.copy_from_slice(b));
                }
                quench_kernels::gemm::sgemm_strided(
                    m,
                    n,
                    k,
                    xs,
                    k as isize,
                    1,
                    w.as_slice::<f32>()?,
                    1,
                    k as isize,
                    &mut y,
                    1.0,
                    1,
                );
                Tensor::from_vec(vec![m, n], y)?
            }
        };
        Ok(vec![y])
    }
}

type BuildFn = fn(&BuildCtx) -> Result<Box<dyn Op>, OpError>;

fn registry() -> Registry {
    let mut r = Registry::standard();
    let stand_ins: [(&str, BuildFn); 5] = [
        ("Relu", |_| Ok(Box::new(Simple::Relu))),
        ("Add", |_| Ok(Box::new(Simple::Add))),
        ("Clip", |_| Ok(Box::new(Simple::Clip))),
        ("Flatten", |_| Ok(Box::new(Simple::Flatten))),
        ("Gemm", |_| Ok(Box::new(Simple::Gemm))),
    ];
    for (name, build) in stand_ins {
        if !r.supports("", name) {
            r.register("", name, build);
        }
    }
    r
}

/// Op type, and for Conv its kernel, stride and whether it is depthwise.
fn profile_key(n: &quench_ir::Node) -> String {
    if n.op_type != "Conv" {
        return n.op_type.clone();
    }
    let k = n
        .attr_ints("kernel_shape")
        .ok()
        .flatten()
        .map_or(0, |k| k[0]);
    let s = n.attr_ints("strides").ok().flatten().map_or(1, |s| s[0]);
    let g = n.attr_int_or("group", 1).unwrap_or(1);
    format!("Conv k{k} s{s}{}", if g > 1 { " dw" } else { "" })
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// CPU time of this process: unlike wall time, it does not grow when other
/// processes take the core (the benchmark machine may be shared).
fn cpu_time() -> Duration {
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // Safety: `ts` is a valid out-pointer of the C layout clock_gettime expects.
    unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.sec as u64, ts.nsec as u32)
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err("usage: bench_fp32 MODEL INPUT.f32 OUTPUT.f32 RUNS [--profile]".into());
    }
    let profile = args.iter().any(|a| a == "--profile");
    let model = quench_onnx::load_model(&args[1])?;
    let runs: usize = args[4].parse()?;
    let session = Session::with_registry(&model, &registry(), 1)?;
    let info = session
        .plan()
        .input_infos()
        .next()
        .ok_or("model has no input")?
        .clone();
    let shape: Vec<usize> = info
        .shape()
        .ok_or("input has no shape")?
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => Ok(*v as usize),
            _ => Err("symbolic input dim"),
        })
        .collect::<Result<_, _>>()?;
    let bytes = std::fs::read(&args[2])?;
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let x = Tensor::from_vec(shape, data)?;
    let feed = || vec![(info.name.clone(), x.clone())];

    let mut out = session.run(feed())?;
    for _ in 0..2 {
        out = session.run(feed())?;
    }
    let mut times = Vec::with_capacity(runs);
    let mut cpu_times = Vec::with_capacity(runs);
    let mut per_op: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for _ in 0..runs {
        let mut this_run: BTreeMap<String, Duration> = BTreeMap::new();
        let mut on_time = |n: &quench_ir::Node, d: Duration| {
            *this_run.entry(profile_key(n)).or_default() += d;
        };
        let mut hooks = RunHooks {
            on_node_time: profile.then_some(&mut on_time as _),
            ..Default::default()
        };
        let inputs = feed();
        let (t0, c0) = (Instant::now(), cpu_time());
        session.run_with(inputs, &mut hooks)?;
        times.push(t0.elapsed());
        cpu_times.push(cpu_time().saturating_sub(c0));
        for (k, v) in this_run {
            per_op.entry(k).or_default().push(v);
        }
    }
    let y = out
        .first()
        .ok_or("model has no output")?
        .1
        .as_slice::<f32>()?;
    let bytes: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&args[3], bytes)?;
    for (op, v) in per_op {
        println!("{op:<20} {:8.3} ms", median(v));
    }
    let all: Vec<String> = times
        .iter()
        .map(|t| format!("{:.3}", t.as_secs_f64() * 1e3))
        .collect();
    println!("times_ms {}", all.join(" "));
    let all: Vec<String> = cpu_times
        .iter()
        .map(|t| format!("{:.3}", t.as_secs_f64() * 1e3))
        .collect();
    println!("cpu_times_ms {}", all.join(" "));
    println!("median_ms {:.3}", median(times));
    Ok(())
}
