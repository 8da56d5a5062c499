//! The `quench` command line: a thin shell over the Quench crates.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "quench",
    version,
    about = "Turn float ONNX models into fast, accurate int8 models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's opsets, inputs/outputs, op histogram and parameter sizes.
    Inspect(cmd::inspect::Args),
    /// Run a model on .npy/.npz inputs and write each output as OUTDIR/NAME.npy.
    Run(cmd::run::Args),
    /// Quantize: static PTQ (fuse, calibrate, QDQ or integer-only ONNX) or --mode dynamic.
    Quantize(cmd::quantize::Args),
    /// Top-1/top-5 accuracy on labelled data (and agreement with a float reference).
    Eval(cmd::eval::Args),
    /// Per-tensor float vs quantized error (SQNR, cosine, max abs), worst first.
    Compare(cmd::compare::Args),
    /// Latency and throughput on random inputs (median/p90, optionally per node).
    Bench(cmd::bench::Args),
    /// Train a zoo model or fine-tune an ONNX model on labelled images.
    Train(cmd::train::Args),
    /// Quantization config files.
    #[command(subcommand)]
    Config(cmd::config::Command),
}

fn main() {
    // Die quietly when the reader of stdout goes away (`quench compare ... | head`),
    // as command-line tools do, instead of panicking on the failed write.
    #[cfg(unix)]
    // Safety: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Compare(a) => cmd::compare::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Config(c) => cmd::config::run(c),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Inference frees and reallocates the same large tensors every run. glibc
/// serves blocks above 128 KiB with fresh mmaps and trims freed heap back to
/// the kernel, so each run paid for page faults and zeroing of new pages
/// (a third of MiniLM's dynamic-int8 time). Keep freed memory in the process
/// instead, as ONNX Runtime's arena does. Peak memory is unchanged.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // Safety: mallopt only changes glibc's allocation thresholds; called
    // before any allocation-heavy work and before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
