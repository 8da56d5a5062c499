//! Times one ONNX model on one thread: `bench_fp32 MODEL INPUT.f32 OUTPUT.f32 RUNS [--profile]`.
//!
//! The input is raw little-endian f32 for the model's single input; the
//! first output is written the same way. Prints every run's time
//! (`times_ms ...`), its CPU time (`cpu_times_ms ...`) and the wall-time median (`median_ms X`), and with
//! `--profile` the median CPU time per op type. Driven by scripts/bench_fp32.py.

use quench_ir::{Dim, Tensor};
use quench_runtime::{RunHooks, Session};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Op type, and for Conv (fused or not) its kernel, stride and whether it is depthwise.
fn profile_key(n: &quench_ir::Node) -> String {
    if n.op_type != "Conv" && n.op_type != "FusedConv" && n.op_type != "NchwcConv" {
        return n.op_type.clone();
    }
    let k = n
        .attr_ints("kernel_shape")
        .ok()
        .flatten()
        .map_or(0, |k| k[0]);
    let s = n.attr_ints("strides").ok().flatten().map_or(1, |s| s[0]);
    let g = n.attr_int_or("group", 1).unwrap_or(1);
    // NCHWc convolutions are listed under the same keys, marked with "c".
    let c = if n.op_type == "NchwcConv" { "c" } else { "" };
    format!("Conv{c} k{k} s{s}{}", if g > 1 { " dw" } else { "" })
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
    let session = Session::new(&model, 1)?;
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
        // Per node: process CPU time since the previous node ended (the
        // machine may be shared, and wall time then counts other work).
        let mut last = cpu_time();
        let mut on_time = |n: &quench_ir::Node, _wall: Duration| {
            let now = cpu_time();
            *this_run.entry(profile_key(n)).or_default() += now.saturating_sub(last);
            last = now;
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
