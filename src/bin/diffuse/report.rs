//! `diffuse report RUN`: rebuilds a run directory's `report.html` from its files (training
//! writes it at every checkpoint; this is for runs evaluated since, or written by older code).

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory written by `diffuse train`.
    run: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = diffuse::report::write_report(&args.run)
        .with_context(|| format!("writing the report of {}", args.run.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
