//! The run report: one self-contained HTML page per run directory (`report.html`: no network,
//! images as data URIs, plots as inline SVG), and a page comparing several runs.
//!
//! While training, [`RunRecorder`] (called by [`crate::train::fit`]) writes, besides the
//! checkpoint files:
//! - `sessions.jsonl`: one line per training session (start step, code version, device);
//! - `previews/`: at every K-th checkpoint a fixed-seed preview of the EMA model (DDIM with 20
//!   steps, or Euler–Maruyama with 50 steps for score-SDE runs) from its own RNG stream, so
//!   training draws exactly what it would without previews: `step-SSSSSSSS.png` (an image grid,
//!   one column per class) or `.csv` (points, beside `data.csv`), listed in `index.jsonl`;
//! - `timestep_loss.jsonl`: for loss-aware t sampling, the mean recorded loss per t bucket;
//! - `report.html`, rewritten atomically at every checkpoint and at the end.
//!
//! The page is built from the directory's files alone ([`read_run`]), so `diffuse report RUN`
//! rebuilds exactly what training wrote, and also shows `diffuse eval` results (`eval.jsonl`,
//! `eval.json`).

pub mod compare;
pub mod gallery;
pub mod html;
pub mod page;
pub mod preview;
pub mod record;
pub mod run_data;
pub mod svg;

pub use compare::compare_page;
pub use page::report_page;
pub use record::{ReportOptions, RunRecorder};
pub use run_data::{read_run, RunData};

use crate::train::checkpoint::atomic_write;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The report's file name inside a run directory.
pub const REPORT_FILE: &str = "report.html";
/// One JSON line per training session.
pub const SESSIONS_FILE: &str = "sessions.jsonl";
/// Mean recorded loss per timestep bucket, one JSON line per checkpoint.
pub const TIMESTEP_LOSS_FILE: &str = "timestep_loss.jsonl";
/// The folder of preview samples.
pub const PREVIEW_DIR: &str = "previews";
/// The previews' list inside [`PREVIEW_DIR`].
pub const PREVIEW_INDEX: &str = "index.jsonl";

/// Why a report could not be written; names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: drawing the preview of step {step}: {source}")]
    Preview {
        path: PathBuf,
        step: u64,
        source: crate::Error,
    },
}

impl ReportError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
        move |source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn invalid(path: &Path, reason: impl Into<String>) -> ReportError {
        ReportError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

impl From<crate::train::CheckpointError> for ReportError {
    fn from(e: crate::train::CheckpointError) -> Self {
        match e {
            crate::train::CheckpointError::Io { path, source } => ReportError::Io { path, source },
            crate::train::CheckpointError::Safetensors { path, reason }
            | crate::train::CheckpointError::Invalid { path, reason } => {
                ReportError::Invalid { path, reason }
            }
            crate::train::CheckpointError::Write { path, reason, .. } => ReportError::Io {
                path,
                source: reason,
            },
        }
    }
}

impl From<ReportError> for crate::train::TrainError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Io { path, source } => crate::train::TrainError::Io { path, source },
            ReportError::Invalid { path, reason } => crate::train::TrainError::Io {
                path,
                source: std::io::Error::other(reason),
            },
            ReportError::Preview { path, step, source } => crate::train::TrainError::Io {
                path,
                source: std::io::Error::other(format!(
                    "drawing the preview of step {step}: {source}"
                )),
            },
        }
    }
}

/// The code version: the crate version and, when it was built from a git checkout, the commit
/// (`-dirty` if the tracked files differed from it).
pub fn code_version() -> String {
    match option_env!("DIFFUSE_GIT_HASH") {
        Some(hash) => format!("{} ({hash})", env!("CARGO_PKG_VERSION")),
        None => env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Rebuilds `dir/report.html` from the run directory's files (atomically); returns its path.
pub fn write_report(dir: &Path) -> Result<PathBuf, ReportError> {
    let run = read_run(dir)?;
    let path = dir.join(REPORT_FILE);
    let html = report_page(&run);
    atomic_write(&path, |f| f.write_all(html.as_bytes()))?;
    Ok(path)
}

/// Appends one JSON line to `path` (created if needed).
fn append_line(path: &Path, value: &serde_json::Value) -> Result<(), ReportError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(ReportError::io(path))?;
    writeln!(f, "{value}").map_err(ReportError::io(path))
}
