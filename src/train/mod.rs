//! Training (SPEC §4): the run configuration, the loop (AdamW with warmup + cosine decay,
//! gradient-norm clipping, EMA with warmup, NaN guard), and checkpoints.

pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod ema;
pub mod engine;
pub mod fit;
pub mod lr;
pub mod trainer;
pub mod vae_step;

pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint, CheckpointError};
pub use config::{RunConfig, TrainConfig};
pub use fit::{fit, fit_with_report, plot_loss_curve, FitOptions};
pub use trainer::{StepStats, TrainError, Trainer};
