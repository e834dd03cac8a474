//! Checkpoints under crashes and failing disks (SPEC §4): identical training writes identical
//! bytes; `diffuse train` killed with SIGKILL at random moments (mostly inside checkpoint
//! writes) always leaves a loadable run that `--resume` completes to the uninterrupted weights;
//! a checkpoint write that fails keeps the previous checkpoint and names the path.

use diffuse::data::ToyDataset;
use diffuse::train::checkpoint::{CONFIG_FILE, MODEL_FILE, STATE_FILE};
use diffuse::train::{
    fit, load_checkpoint, save_checkpoint, FitOptions, RunConfig, TrainConfig, Trainer,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/cli.rs"]
mod cli;
use cli::{diffuse, ok};

/// Every file under `dir` (relative path, bytes), sorted, except the metrics log, its plot and
/// the report's records (report.html, sessions.jsonl, previews/index.jsonl), which carry
/// wall-clock times and are not part of the checkpoint. The preview images themselves are
/// compared: they are drawn from fixed seeds.
fn checkpoint_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if ![
                "metrics.jsonl",
                "loss.png",
                "report.html",
                "sessions.jsonl",
                "previews/index.jsonl",
            ]
            .iter()
            .any(|f| path.ends_with(f))
            {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// FNV-1a, to name differing files by a short hash in messages.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn assert_same_files(a: &Path, b: &Path) {
    let (fa, fb) = (checkpoint_files(a), checkpoint_files(b));
    let names = |f: &[(PathBuf, Vec<u8>)]| f.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&fa), names(&fb));
    for ((name, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(
            x == y,
            "{} differs: {:016x} vs {:016x}",
            name.display(),
            fnv1a(x),
            fnv1a(y)
        );
    }
}

fn tiny() -> RunConfig {
    RunConfig {
        model: diffuse::nn::ModelConfig::Mlp(diffuse::nn::MlpConfig {
            data_dim: 2,
            hidden: 32,
            depth: 2,
            time_embed_dim: 16,
        }),
        schedule: diffuse::schedule::ScheduleConfig::default(),
        prediction: diffuse::prediction::PredictionType::Eps,
        data: diffuse::data::DataSpec::Toy {
            name: ToyDataset::Moons,
        },
        train: TrainConfig {
            steps: 40,
            batch_size: 32,
            warmup_steps: 5,
            checkpoint_every: 0,
            ..TrainConfig::default()
        },
        seed: 3,
        sde: None,
    }
}

#[test]
fn identical_training_writes_byte_identical_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Two processes (each with its own hash-map seeds) train the same 2-D run, and the same
    // small UNet run on the committed Fashion-MNIST slice (which adds the diffusers folder).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fashion-mnist");
    for run in ["a", "b"] {
        ok(
            &[
                "train",
                "--out",
                &format!("mlp-{run}"),
                "--steps",
                "20",
                "--hidden",
                "32",
                "--depth",
                "2",
                "--batch-size",
                "32",
                "--quiet",
            ],
            d,
        );
        ok(
            &[
                "train",
                "--out",
                &format!("unet-{run}"),
                "--data",
                fixture.to_str().unwrap(),
                "--block-out-channels",
                "8,16",
                "--norm-groups",
                "4",
                "--batch-size",
                "2",
                "--steps",
                "2",
                "--quiet",
            ],
            d,
        );
    }
    assert_same_files(&d.join("mlp-a"), &d.join("mlp-b"));
    assert_same_files(&d.join("unet-a"), &d.join("unet-b"));
    // Within one process every hash map gets fresh keys: eight saves of one checkpoint must
    // agree too (with two metadata keys in each of two files, hash order would agree by chance
    // with probability 2^-14).
    let mut t = Trainer::new(tiny()).unwrap();
    for _ in 0..3 {
        t.train_step().unwrap();
    }
    let ckpt = t.checkpoint();
    for i in 0..8 {
        save_checkpoint(&d.join(format!("same-{i}")), &ckpt).unwrap();
    }
    for i in 1..8 {
        assert_same_files(&d.join("same-0"), &d.join(format!("same-{i}")));
    }
}

/// The 2-D run of the kill test: ~0.5 ms per step plus a checkpoint (~5 ms: four fsyncs)
/// after every step, so most of the child's time is spent writing checkpoints.
fn kill_run_args(out: &str, resume: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--out",
        out,
        "--steps",
        "100",
        "--data",
        "moons",
        "--hidden",
        "32",
        "--depth",
        "2",
        "--batch-size",
        "32",
        "--timesteps",
        "50",
        "--importance-sampling",
        "--checkpoint-every",
        "1",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if resume {
        args.push("--resume".into());
    }
    args
}

#[test]
fn sigkill_at_random_moments_never_leaves_an_unloadable_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let straight = Instant::now();
    let args = kill_run_args("straight", false);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), d);
    let straight = straight.elapsed();

    let run = d.join("run");
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let (mut kills, mut mid_write, mut steps_seen) = (0, 0, Vec::new());
    for round in 0..8 {
        let resume = run.join(MODEL_FILE).exists();
        let mut child = Command::new(env!("CARGO_BIN_EXE_diffuse"))
            .args(kill_run_args("run", resume))
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // 10-80 ms: some kills land before the first checkpoint, most inside one (a step
        // takes ~5 ms, mostly in fsync), and eight of them leave the 100 steps unfinished.
        let delay = Duration::from_millis(rng.random_range(10..80));
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            break; // Finished before the kill.
        }
        child.kill().unwrap(); // SIGKILL on Unix.
        child.wait().unwrap();
        kills += 1;
        if std::fs::read_dir(&run)
            .map(|r| {
                r.flatten()
                    .any(|e| e.path().to_string_lossy().ends_with(".tmp"))
            })
            .unwrap_or(false)
        {
            mid_write += 1;
        }
        if run.join(MODEL_FILE).exists() {
            let ck = load_checkpoint(&run).unwrap_or_else(|e| {
                panic!("round {round}: killed after {delay:?}, the run does not load: {e}")
            });
            steps_seen.push(ck.state.step);
        }
    }
    let resumed = Instant::now();
    assert!(
        kills >= 5,
        "only {kills} kills landed (checkpoint steps {steps_seen:?})"
    );
    let mut resume = kill_run_args("run", true);
    if !run.join(MODEL_FILE).exists() {
        resume.pop();
    }
    ok(&resume.iter().map(String::as_str).collect::<Vec<_>>(), d);
    eprintln!(
        "{kills} kills ({mid_write} left a temp file); checkpoint steps {steps_seen:?}; \
         straight run {straight:?}, final resume {:?}",
        resumed.elapsed()
    );
    let (a, b) = (
        load_checkpoint(&run).unwrap(),
        load_checkpoint(&d.join("straight")).unwrap(),
    );
    assert_eq!((a.state.step, &a.state), (100, &b.state));
    assert_same_checkpoint(&run, &d.join("straight"));
}

/// The weights and training state byte for byte (config.json too: the resumed command line
/// matches the stored run, so nothing is re-planned).
fn assert_same_checkpoint(a: &Path, b: &Path) {
    for f in [MODEL_FILE, STATE_FILE, CONFIG_FILE] {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(
            x == y,
            "{f} differs: {:016x} vs {:016x}",
            fnv1a(&x),
            fnv1a(&y)
        );
    }
}

/// What is put in the way of a checkpoint file's temp path.
#[derive(Debug, Clone, Copy)]
enum Obstacle {
    /// A directory: the temp file cannot be created (as on a read-only target).
    Directory,
    /// A link to /dev/full: every write fails with ENOSPC (a full disk).
    FullDisk,
}

fn obstruct(path: &Path, how: Obstacle) {
    match how {
        Obstacle::Directory => std::fs::create_dir(path).unwrap(),
        Obstacle::FullDisk => std::os::unix::fs::symlink("/dev/full", path).unwrap(),
    }
}

fn clear(path: &Path) {
    if path.is_dir() && !path.is_symlink() {
        std::fs::remove_dir(path).unwrap();
    } else if path.is_symlink() {
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn a_failed_checkpoint_write_keeps_the_previous_checkpoint_and_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut t = Trainer::new(tiny()).unwrap();
    for _ in 0..10 {
        t.train_step().unwrap();
    }
    save_checkpoint(&dir, &t.checkpoint()).unwrap();
    let good = load_checkpoint(&dir).unwrap();
    let mut obstacles = vec![Obstacle::Directory];
    if Path::new("/dev/full").exists() {
        obstacles.push(Obstacle::FullDisk);
    }
    for how in obstacles {
        for file in [STATE_FILE, MODEL_FILE, CONFIG_FILE] {
            let tmp_path = dir.join(format!("{file}.tmp"));
            obstruct(&tmp_path, how);
            t.train_step().unwrap();
            let err = save_checkpoint(&dir, &t.checkpoint()).unwrap_err();
            let msg = format!("{:#}", anyhow::Error::from(err));
            assert!(msg.contains(file), "{how:?} at {file}: {msg}");
            let ck = load_checkpoint(&dir)
                .unwrap_or_else(|e| panic!("{how:?} at {file}: previous checkpoint lost: {e}"));
            assert_eq!(ck.state, good.state, "{how:?} at {file}");
            assert_eq!(ck.raw.values, good.raw.values, "{how:?} at {file}");
            clear(&tmp_path);
        }
    }
    // Through the training loop and the CLI the error names the path as well.
    let mut cfg = tiny();
    cfg.train.checkpoint_every = 5;
    let mut t = Trainer::new(cfg).unwrap();
    fit(
        &mut t,
        &dir,
        &FitOptions {
            until: Some(5),
            progress: false,
        },
    )
    .unwrap();
    obstruct(&dir.join(format!("{MODEL_FILE}.tmp")), Obstacle::Directory);
    let err = fit(&mut t, &dir, &FitOptions::default()).unwrap_err();
    let msg = format!("{:#}", anyhow::Error::from(err));
    assert!(msg.contains(MODEL_FILE), "{msg}");
    assert_eq!(load_checkpoint(&dir).unwrap().state.step, 5);
    let (success, text) = diffuse(
        &["train", "--out", "run", "--resume", "--quiet"],
        tmp.path(),
    );
    assert!(!success && text.contains("model.safetensors.tmp"), "{text}");
    assert_eq!(load_checkpoint(&dir).unwrap().state.step, 5);
}
