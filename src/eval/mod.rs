//! Sample quality against fresh data (SPEC §9): sliced Wasserstein and multi-bandwidth MMD,
//! each next to the data-vs-data floor of the same sample size, over several seeds.

pub mod classifier;
pub mod distances;
pub mod frechet;
pub mod report;

pub use distances::{median_distance, mmd_rbf, sliced_wasserstein};
pub use report::{check_sizes, evaluate, evaluate_with, EvalOptions, EvalReport, Stat};
