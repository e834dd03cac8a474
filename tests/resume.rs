//! `diffuse train --resume` end to end (SPEC §4): an interrupted run continues its stored plan
//! bit for bit; `--steps N` re-plans the learning-rate horizon to N and records it in
//! config.json; any other flag must agree with the stored config or is an error naming it; a
//! checkpoint whose timestep sampler disagrees with its config's T is refused.

use diffuse::loss::TimestepSampling;
use diffuse::train::checkpoint::{load_config, STATE_FILE};
use diffuse::train::config::Replan;
use diffuse::train::lr::learning_rate;
use diffuse::train::{fit, load_checkpoint, save_checkpoint, FitOptions, Trainer};
use std::path::Path;

#[path = "common/cli.rs"]
mod cli;
use cli::{fails, ok};

/// A 2-D run small enough for ~0.1 s per 40 steps; T = 50 with loss-aware t sampling so the
/// loss history is warm and has to survive the resume.
const TINY: &[&str] = &[
    "--data",
    "moons",
    "--hidden",
    "32",
    "--depth",
    "2",
    "--batch-size",
    "64",
    "--timesteps",
    "50",
    "--importance-sampling",
    "--warmup",
    "5",
    "--quiet",
];

fn train(out: &str, steps: &str, extra: &[&str], cwd: &Path) -> String {
    let mut args = vec!["train", "--out", out, "--steps", steps];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    ok(&args, cwd)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Asserts that two run directories hold the same step, weights, EMA, moments and loss history
/// (tolerance zero: CPU float32, the same kernels in the same order).
fn assert_same_run(a: &Path, b: &Path) {
    let (a, b) = (load_checkpoint(a).unwrap(), load_checkpoint(b).unwrap());
    assert_eq!(a.state, b.state);
    assert_eq!(bits(&a.raw.values), bits(&b.raw.values));
    assert_eq!(bits(&a.ema.values), bits(&b.ema.values));
    assert_eq!(bits(&a.optimizer.m), bits(&b.optimizer.m));
    assert_eq!(bits(&a.optimizer.v), bits(&b.optimizer.v));
}

/// Writes `dir` as a run of `reference`'s config interrupted after `at` steps (the checkpoint a
/// crash leaves: plan unchanged, step `at`).
fn interrupted_copy(reference: &Path, dir: &Path, at: u64) {
    let mut t = Trainer::new(load_config(reference).unwrap()).unwrap();
    fit(
        &mut t,
        dir,
        &FitOptions {
            until: Some(at),
            progress: false,
        },
    )
    .unwrap();
}

#[test]
fn resume_without_steps_continues_the_stored_plan_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    train("straight", "40", &[], d);
    interrupted_copy(&d.join("straight"), &d.join("run"), 15);
    // Without --steps the run continues to its planned 40 (not the fresh-run default).
    let text = ok(&["train", "--out", "run", "--resume", "--quiet"], d);
    assert!(text.contains("at step 15 of 40"), "{text}");
    assert_eq!(load_checkpoint(&d.join("run")).unwrap().state.step, 40);
    assert_same_run(&d.join("run"), &d.join("straight"));
    // With the same --steps, and with the original command line plus --resume, likewise.
    interrupted_copy(&d.join("straight"), &d.join("run2"), 25);
    train("run2", "40", &["--resume"], d);
    assert_same_run(&d.join("run2"), &d.join("straight"));
    let config = load_config(&d.join("run2")).unwrap();
    assert_eq!(config.train.steps, 40);
    assert!(
        config.train.replans.is_empty(),
        "{:?}",
        config.train.replans
    );
}

#[test]
fn extending_a_finished_run_replans_the_cosine_to_the_new_total_and_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    train("run", "40", &[], d);
    // README: `diffuse train --out runs/moons --resume --steps 20000`, scaled down.
    let text = ok(
        &[
            "train", "--out", "run", "--resume", "--steps", "60", "--quiet",
        ],
        d,
    );
    assert!(text.contains("at step 40 of 60"), "{text}");
    let config = load_config(&d.join("run")).unwrap();
    assert_eq!(config.train.steps, 60);
    assert_eq!(
        config.train.replans,
        vec![Replan {
            at_step: 40,
            from_steps: 40,
            to_steps: 60
        }]
    );
    // From step 40 on, the learning rate is the warmup + cosine of a 60-step plan: it jumps
    // back up from the finished plan's min_lr. Tolerance 1e-15 relative: the logged f64 comes
    // back through serde_json's float parser, which is within an ulp or two (not round-trip).
    let metrics = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    let lr_at = |step: u64| -> f64 {
        metrics
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["step"] == step)
            .unwrap_or_else(|| panic!("no metrics line at step {step}"))["lr"]
            .as_f64()
            .unwrap()
    };
    let mut old_plan = config.train.clone();
    old_plan.steps = 40;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 * b.abs();
    assert!(
        close(lr_at(40), learning_rate(&old_plan, 39)),
        "{}",
        lr_at(40)
    );
    assert!(
        close(lr_at(50), learning_rate(&config.train, 49)),
        "{}",
        lr_at(50)
    );
    assert!(lr_at(50) > 10.0 * lr_at(40), "the horizon moved to 60");
    assert_eq!(load_checkpoint(&d.join("run")).unwrap().state.step, 60);
    // A second extension appends to the record.
    ok(
        &[
            "train", "--out", "run", "--resume", "--steps", "70", "--quiet",
        ],
        d,
    );
    let replans = load_config(&d.join("run")).unwrap().train.replans;
    assert_eq!(replans.len(), 2);
    assert_eq!(
        replans[1],
        Replan {
            at_step: 60,
            from_steps: 60,
            to_steps: 70
        }
    );
}

#[test]
fn resume_flags_that_disagree_with_the_stored_config_are_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    train("run", "20", &[], d);
    let before = std::fs::read(d.join("run/model.safetensors")).unwrap();
    for (flag, value, stored) in [
        ("--lr", "0.01", "0.001"),
        ("--hidden", "64", "32"),
        ("--seed", "3", "0"),
        ("--timesteps", "100", "50"),
        ("--prediction", "v", "eps"),
        ("--loss", "min-snr", "simple"),
        ("--batch-size", "32", "64"),
    ] {
        let text = fails(
            &[
                "train", "--out", "run", "--resume", "--steps", "30", flag, value,
            ],
            d,
        );
        assert!(
            text.contains(&format!("{flag} {value}")) && text.contains(stored),
            "{flag}: {text}"
        );
    }
    // Flags without a counterpart in an MLP run are refused too.
    let text = fails(
        &[
            "train",
            "--out",
            "run",
            "--resume",
            "--block-out-channels",
            "8,16",
        ],
        d,
    );
    assert!(text.contains("--block-out-channels"), "{text}");
    // --steps below the current step would silently end the run: an error naming it.
    let text = fails(&["train", "--out", "run", "--resume", "--steps", "10"], d);
    assert!(text.contains("--steps 10") && text.contains("20"), "{text}");
    assert_eq!(
        std::fs::read(d.join("run/model.safetensors")).unwrap(),
        before,
        "a refused resume leaves the run as it was"
    );
    assert_eq!(load_config(&d.join("run")).unwrap().train.steps, 20);
    // Values equal to the stored ones are accepted; --checkpoint-every is applied and recorded.
    train("run", "30", &["--resume", "--checkpoint-every", "7"], d);
    let config = load_config(&d.join("run")).unwrap();
    assert_eq!((config.train.steps, config.train.checkpoint_every), (30, 7));
}

#[test]
fn train_help_documents_the_resume_semantics() {
    let tmp = tempfile::tempdir().unwrap();
    let text = ok(&["train", "--help"], tmp.path());
    for needle in ["--resume", "new total", "stored", "replans"] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn a_sampler_whose_length_differs_from_the_config_t_is_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    train("run", "10", &[], d);
    let dir = d.join("run");
    let mut ckpt = load_checkpoint(&dir).unwrap();
    assert_eq!(
        ckpt.state.timestep_sampler.kind,
        TimestepSampling::LossAware
    );
    // A sampler over 60 timesteps for a T = 50 run (its loss history sized to match).
    ckpt.state.timestep_sampler.num_timesteps = 60;
    ckpt.state.timestep_sampler.history = vec![Vec::new(); 60];
    save_checkpoint(&dir, &ckpt).unwrap();
    let e = load_checkpoint(&dir).unwrap_err().to_string();
    assert!(
        e.contains(STATE_FILE) && e.contains("60") && e.contains("50"),
        "{e}"
    );
    // A history whose length differs from the sampler's own T is refused as well.
    ckpt.state.timestep_sampler.num_timesteps = 50;
    ckpt.state.timestep_sampler.history = vec![Vec::new(); 49];
    save_checkpoint(&dir, &ckpt).unwrap();
    let e = load_checkpoint(&dir).unwrap_err().to_string();
    assert!(
        e.contains(STATE_FILE) && e.contains("49") && e.contains("50"),
        "{e}"
    );
    // The CLI says the same, naming the run.
    let text = fails(&["train", "--out", "run", "--resume"], d);
    assert!(text.contains(STATE_FILE) && text.contains("49"), "{text}");
}
