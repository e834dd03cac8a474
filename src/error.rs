//! Library error type: every invalid input is a typed error that names what is wrong.

use thiserror::Error;

/// Errors from the diffuse library.
#[derive(Debug, Error)]
pub enum Error {
    /// A beta schedule failed validation (SPEC §1).
    #[error("invalid schedule: {0}")]
    Schedule(#[from] crate::schedule::ScheduleError),
    /// A configuration value is out of its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidConfig { name: &'static str, reason: String },
    /// A data file could not be read or parsed.
    #[error("{path}: {reason}")]
    Data {
        path: std::path::PathBuf,
        reason: String,
    },
    /// Tensor shapes do not agree.
    #[error("shape mismatch: {0}")]
    Shape(String),
}

/// Library result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidConfig`].
    pub fn config(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            name,
            reason: reason.into(),
        }
    }
}
