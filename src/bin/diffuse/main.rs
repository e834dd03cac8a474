//! The `diffuse` command: one file per subcommand.

mod bench;
mod bench_runs;
mod bench_sample_mlp;
mod bench_unet;
mod compare;
mod device_arg;
mod eval;
mod eval_images;
mod report;
mod run_dir;
mod sample;
mod schedule;
mod train;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

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
#[allow(clippy::large_enum_variant)] // Parsed once per process.
enum Command {
    /// Print or write a beta schedule's tables and plot alpha_bar and log-SNR against t.
    Schedule(schedule::Args),
    /// Train the MLP denoiser (or, with --sde, a score-SDE model) on a toy set or a point file.
    Train(train::Args),
    /// Draw samples from a trained run (scatter plot beside the data, points as CSV/NPY).
    Sample(sample::Args),
    /// Sliced Wasserstein and MMD against fresh data, next to the data-vs-data floor; --nll adds
    /// the PF-ODE negative log-likelihood.
    Eval(eval::Args),
    /// Time the training step (`diffuse bench train-mlp`, `diffuse bench train-unet`) or trained
    /// runs' sampling and training costs side by side (`diffuse bench runs --run A --run B`).
    Bench(bench::Args),
    /// Rebuild a run directory's report.html (config, curves, previews, eval results).
    Report(report::Args),
    /// One HTML page comparing runs: curves overlaid, config differences, metrics side by side.
    Compare(compare::Args),
}

/// `matches`: the parsed command line, for subcommands that tell given flags from defaults.
fn run(command: Command, matches: &ArgMatches) -> anyhow::Result<()> {
    match command {
        Command::Schedule(args) => schedule::run(args),
        Command::Train(args) => train::run(
            args,
            matches
                .subcommand_matches("train")
                .expect("parsed as train"),
        ),
        Command::Sample(args) => sample::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Report(args) => report::run(args),
        Command::Compare(args) => compare::run(args),
    }
}

/// Errors print as one line with their causes ("error: training into runs/x: step 12: ..."),
/// not as a debug dump with a backtrace, and exit with status 1.
fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli.command, &matches) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
