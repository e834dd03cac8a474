//! Reference vectors (diffusers 0.42.1, `shared/refs/README.md`): every JSON file directly in
//! `../shared/refs/` (or `$DIFFUSE_REFS_DIR`), and in `tests/refs_extra/`, is read, dispatched
//! on its `kind` and checked with the README's tolerance rule,
//! tol = max(1e-9, 2 * f64_replay_max_mixed_dev). Everything is derived from each file's
//! config; an option the crate does not reproduce fails the file with the option's name.
//! Network files are in the `nets/` subfolder (paths inside them are relative to it); of
//! those, the kinds in [`NOT_HERE`] are checked elsewhere and only noted.

mod common;
mod ddim;
mod ddpm;
mod karras;
mod nets;
mod schedule;

use common::Checker;
use std::path::{Path, PathBuf};

fn refs_dir() -> PathBuf {
    match std::env::var_os("DIFFUSE_REFS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/refs"),
    }
}

/// Kinds of `nets/` files this harness does not check (another suite owns them).
const NOT_HERE: [&str; 0] = [];

/// Checks one file of `dir`; `None` for an unknown kind (which fails the test).
fn check(kind: &str, file: &serde_json::Value, dir: &Path, c: &mut Checker) -> Option<()> {
    match kind {
        "schedule" => schedule::check(file, c),
        "ddpm_step" => ddpm::check_step(file, c),
        "ddpm_run" => ddpm::check_run(file, c),
        "ddim_timesteps" => ddim::check_timesteps(file, c),
        "ddim_step" => ddim::check_step(file, c),
        "ddim_run" => ddim::check_run(file, c),
        "ddim_inverse" => ddim::check_inverse(file, c),
        "euler" => karras::check_euler(file, c),
        "heun" => karras::check_heun(file, c),
        "dpmsolver" => karras::check_dpm(file, c),
        "unet2d" => nets::check_unet(file, dir, c),
        "autoencoder_kl" => nets::check_vae(file, dir, c),
        _ => return None,
    }
    Some(())
}

/// Checks every `*.json` file directly in `dir` and returns the failures. A file whose check
/// panics (an unsupported config option, a missing key) fails with the panic's message.
fn check_dir(dir: &Path) -> Vec<String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reference directory {} is unreadable: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no reference files in {}", dir.display());
    let mut failures = Vec::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let file: serde_json::Value = match serde_json::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                println!("FAIL {name}: not JSON: {e}");
                failures.push(format!("{name}: not JSON: {e}"));
                continue;
            }
        };
        let kind = file["kind"].as_str().unwrap_or("<no kind>").to_string();
        if NOT_HERE.contains(&kind.as_str()) {
            println!("SKIP {name} ({kind}): not checked by this harness");
            continue;
        }
        let checked = std::panic::catch_unwind(|| {
            let mut c = Checker::default();
            check(&kind, &file, dir, &mut c).map(|()| c)
        });
        match checked {
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                println!("FAIL {name} ({kind}): {msg}");
                failures.push(format!("{name}: {msg}"));
            }
            Ok(None) => {
                println!("FAIL {name}: unknown kind {kind:?}");
                failures.push(format!("{name}: unknown kind {kind:?}"));
            }
            Ok(Some(c)) => {
                println!(
                    "{} {name} ({kind}): {} comparisons, max mixed error {:.3e}, max error/tol {:.3}, \
                     {} float32 timestep ties (listed as TIE above)",
                    if c.failures.is_empty() { "PASS" } else { "FAIL" },
                    c.comparisons,
                    c.max_mixed_err,
                    c.max_ratio,
                    c.ties
                );
                failures.extend(c.failures.into_iter().map(|f| format!("{name}: {f}")));
            }
        }
    }
    failures
}

fn assert_no_failures(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn reference_vectors() {
    assert_no_failures(check_dir(&refs_dir()));
}

/// The network files (`nets/`), when the reference directory has them.
#[test]
fn network_reference_vectors() {
    let nets = refs_dir().join("nets");
    if nets.is_dir() {
        assert_no_failures(check_dir(&nets));
    } else {
        println!("no {} folder: no network reference files", nets.display());
    }
}

/// Config variants the shared files do not cover (`tests/refs_extra/README.md`): the same
/// harness, the same tolerance rule.
#[test]
fn extra_reference_vectors() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/refs_extra");
    assert_no_failures(check_dir(&dir));
}

/// A file whose config sets an option the crate does not reproduce fails, naming the option;
/// so does a file of an unknown kind. Neither is skipped.
#[test]
fn unsupported_options_and_kinds_fail_by_name() {
    let extra = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/refs_extra");
    let dir = std::env::temp_dir().join(format!("diffuse-refs-unsupported-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(extra.join("euler_variants.json")).unwrap();
    let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
    file["runs"][0]["config"]["use_flow_sigmas"] = true.into();
    std::fs::write(dir.join("euler.json"), file.to_string()).unwrap();
    let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
    file["kind"] = "euler_ancestral".into();
    std::fs::write(dir.join("other.json"), file.to_string()).unwrap();
    // A UNet config with an option value the UNet does not implement.
    let unet = serde_json::json!({
        "kind": "unet2d",
        "config": {"time_embedding_type": "fourier"},
        "weights": "unet/diffusion_pytorch_model.safetensors",
    });
    std::fs::write(dir.join("unet.json"), unet.to_string()).unwrap();
    let failures = check_dir(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(failures[0].contains("use_flow_sigmas"), "{failures:?}");
    assert!(failures[1].contains("unknown kind"), "{failures:?}");
    assert!(failures[2].contains("time_embedding_type"), "{failures:?}");
}
