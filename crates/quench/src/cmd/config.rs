//! `quench config init`: print the commented quantization config template.

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print a commented template with every key and its default (`quench config init > quench.toml`).
    Init,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Init => print!("{}", quench_quant::config::TEMPLATE),
    }
    Ok(())
}
