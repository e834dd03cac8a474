//! `diffuse schedule`: the tables of a named schedule as CSV or JSON, and a plot.

use anyhow::{bail, Context};
use diffuse::schedule::{BetaSchedule, Schedule, ScheduleConfig};
use diffuse::viz::{line_panels, Series};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// linear | scaled_linear | cosine | sigmoid (repeat to compare several in one plot).
    #[arg(long = "name", default_values_t = vec!["linear".to_string()])]
    names: Vec<String>,
    /// Number of training timesteps T.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Rescale to zero terminal SNR.
    #[arg(long)]
    zero_snr: bool,
    /// Write the tables of the first schedule here (.csv or .json); "-" prints CSV.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Plot alpha_bar and log-SNR against t to this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

const COLUMNS: [&str; 10] = [
    "beta",
    "alpha",
    "alpha_bar",
    "sqrt_alpha_bar",
    "sqrt_one_minus_alpha_bar",
    "sigma",
    "snr",
    "log_snr",
    "posterior_variance",
    "posterior_log_variance_clipped",
];

fn column<'a>(s: &'a Schedule, name: &str) -> &'a [f64] {
    match name {
        "beta" => &s.beta,
        "alpha" => &s.alpha,
        "alpha_bar" => &s.alpha_bar,
        "sqrt_alpha_bar" => &s.sqrt_alpha_bar,
        "sqrt_one_minus_alpha_bar" => &s.sqrt_one_minus_alpha_bar,
        "sigma" => &s.sigma,
        "snr" => &s.snr,
        "log_snr" => &s.log_snr,
        "posterior_variance" => &s.posterior_variance,
        _ => &s.posterior_log_variance_clipped,
    }
}

fn csv(s: &Schedule) -> String {
    let mut out = format!("t_index,t,{}\n", COLUMNS.join(","));
    for i in 0..s.len() {
        let row: Vec<String> = COLUMNS
            .iter()
            .map(|c| format!("{:e}", column(s, c)[i]))
            .collect();
        out += &format!("{i},{},{}\n", i + 1, row.join(","));
    }
    out
}

fn json(s: &Schedule) -> String {
    let map: serde_json::Map<String, serde_json::Value> = COLUMNS
        .iter()
        .map(|c| {
            // JSON has no infinity: non-finite values (zero-SNR sigma) are written as strings.
            let vals = column(s, c)
                .iter()
                .map(|v| match v.is_finite() {
                    true => serde_json::json!(v),
                    false => serde_json::json!(v.to_string()),
                })
                .collect();
            (c.to_string(), serde_json::Value::Array(vals))
        })
        .collect();
    serde_json::to_string_pretty(&map).expect("serialisable")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut built = Vec::new();
    for name in &args.names {
        let Some(beta_schedule) = BetaSchedule::from_name(name) else {
            bail!("unknown schedule {name:?}: expected linear, scaled_linear, cosine or sigmoid");
        };
        let cfg = ScheduleConfig {
            beta_schedule,
            num_train_timesteps: args.steps,
            rescale_zero_terminal_snr: args.zero_snr,
        };
        built.push((
            name.clone(),
            cfg.build().with_context(|| format!("schedule {name}"))?,
        ));
    }
    let first = &built[0].1;
    match &args.out {
        Some(p) if p.as_os_str() == "-" => std::io::stdout().write_all(csv(first).as_bytes())?,
        Some(p) => {
            let text = match p.extension().and_then(|e| e.to_str()) {
                Some("json") => json(first),
                Some("csv") => csv(first),
                _ => bail!(
                    "--out {}: use a .csv or .json file name, or - for stdout",
                    p.display()
                ),
            };
            diffuse::data::file::write_file(p, text.as_bytes())?;
            eprintln!("wrote {}", p.display());
        }
        None if args.plot.is_none() => std::io::stdout().write_all(csv(first).as_bytes())?,
        None => {}
    }
    if let Some(plot) = &args.plot {
        let series = |f: &dyn Fn(&Schedule) -> &[f64]| -> Vec<Series> {
            built
                .iter()
                .map(|(n, s)| Series {
                    name: n,
                    points: f(s)
                        .iter()
                        .enumerate()
                        .map(|(i, v)| ((i + 1) as f64, *v))
                        .collect(),
                })
                .collect()
        };
        line_panels(
            plot,
            &[
                ("alpha_bar", "t", "alpha_bar", series(&|s| &s.alpha_bar)),
                (
                    "log SNR",
                    "t",
                    "ln(alpha_bar / (1 - alpha_bar))",
                    series(&|s| &s.log_snr),
                ),
            ],
        )
        .with_context(|| format!("writing {}", plot.display()))?;
        eprintln!("wrote {}", plot.display());
    }
    Ok(())
}
