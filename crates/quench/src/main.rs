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
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Run(a) => cmd::run::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
