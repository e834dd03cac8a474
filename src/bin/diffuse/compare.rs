//! `diffuse compare RUN... --out page.html`: one page with the runs' curves overlaid, the
//! config fields in which they differ and their evaluation figures side by side.

use anyhow::{bail, Context};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run directories written by `diffuse train`.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// The HTML page to write.
    #[arg(long, default_value = "compare.html")]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.runs.len() < 2 {
        bail!("give at least two run directories to compare");
    }
    let runs = args
        .runs
        .iter()
        .map(|dir| {
            diffuse::report::read_run(dir).with_context(|| format!("reading {}", dir.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let html = diffuse::report::compare_page(&runs, &args.out);
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // The error names the file.
    diffuse::train::checkpoint::atomic_write(&args.out, |f| f.write_all(html.as_bytes()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
