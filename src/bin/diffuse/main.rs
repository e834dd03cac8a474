//! The `diffuse` command: one file per subcommand.

mod schedule;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "diffuse",
    version,
    about = "Diffusion models trained, sampled and evaluated in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print or write a beta schedule's tables and plot alpha_bar and log-SNR against t.
    Schedule(schedule::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Schedule(args) => schedule::run(args),
    }
}
