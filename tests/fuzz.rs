//! Bounded fuzzing of every reader of user bytes (issue 12), on stable Rust in the normal test
//! run: seeded mutations (bit flips, interesting bytes, truncations, splices, insertions and
//! deletions, huge lengths written into headers, numbers in text replaced by extreme ones) of
//! small valid files, fed to the same functions the path loaders call. For every input:
//! - no panic (`catch_unwind`);
//! - no allocation larger than the input can justify: a counting global allocator records the
//!   largest single request while the input is parsed, bounded by [`alloc_bound`]; a request
//!   above [`HARD_CAP`] aborts the run (the allocator refuses it) instead of exhausting memory;
//! - an error names the file it is about.
//!
//! Counts: [`INPUTS`] inputs per parser (the checkpoint and UNet readers, which build a
//! model per input that parses, run fewer: see each test). Seeds are fixed, so a failure
//! reproduces; the report prints the first offending inputs.

#[path = "fuzz/mutate.rs"]
mod mutate;

use diffuse::data::file::{npy_bytes, points_from_bytes, PointSet};
use diffuse::data::{decode_png, idx_from_bytes, DataSpec, ToyDataset};
use diffuse::loss::TimestepSampler;
use diffuse::nn::unet::config::{DownBlockType, SampleSize, UpBlockType};
use diffuse::nn::{MlpConfig, ModelConfig, UNet2DConfig, UNet2DModel};
use diffuse::prediction::PredictionType;
use diffuse::schedule::ScheduleConfig;
use diffuse::train::adamw::AdamWState;
use diffuse::train::checkpoint::{
    config_from_bytes, model_from_bytes, state_from_bytes, RngState, TrainState, CONFIG_FILE,
    MODEL_FILE, STATE_FILE,
};
use diffuse::train::{save_checkpoint, Checkpoint, RunConfig, TrainConfig};
use mutate::mutate;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Instant;

/// Inputs per in-memory parser.
const INPUTS: usize = 100_000;

// ---------------------------------------------------------------------------------------------
// Allocation accounting.

/// Larger single allocations abort the test binary: no parser may ask for this much from a
/// file of a few kilobytes.
const HARD_CAP: usize = 1 << 30;

thread_local! {
    /// The largest single allocation request on this thread since the last reset.
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

fn note(size: usize) -> bool {
    if size > HARD_CAP {
        // No formatting here (it would allocate): a fixed message, then the refusal aborts.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"fuzz: a parser asked for more than 1 GiB in one allocation\n",
        );
        return false;
    }
    let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
    true
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The largest single allocation a parser may make for an input of `len` bytes: 1100 x the
/// input (deflate, inside gzip and PNG, expands at most ~1032-fold) plus 1 MiB of fixed
/// overhead (serde, the image decoder's buffers).
fn alloc_bound(len: usize) -> usize {
    1100 * len + (1 << 20)
}

// ---------------------------------------------------------------------------------------------
// The harness.

thread_local! {
    /// Set while a fuzz input is parsed: its panics are recorded, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// Where the last quiet panic happened.
    static PANIC_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let at = info.location().map(|l| l.to_string()).unwrap_or_default();
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                default(info)
            }
        }));
    });
}

/// What went wrong with one input.
struct Finding {
    input: Vec<u8>,
    what: String,
}

/// Runs `parse` on `count` mutations of `seeds` (stream `seed`); `parse` returns the error
/// message of a rejected input (None if it was accepted). Fails listing the first findings:
/// panics, over-large allocations, and errors that name none of `names` (the files read).
fn fuzz(
    parser: &str,
    names: &[&str],
    seeds: &[Vec<u8>],
    count: usize,
    seed: u64,
    parse: impl Fn(&[u8]) -> Option<String>,
) {
    install_quiet_panic_hook();
    for s in seeds {
        PEAK.with(|p| p.set(0));
        if let Some(e) = parse(s) {
            panic!("{parser}: a seed file is rejected: {e}");
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut findings, mut rejected) = (Vec::new(), 0usize);
    let start = Instant::now();
    for _ in 0..count {
        let input = mutate(&mut rng, seeds);
        PEAK.with(|p| p.set(0));
        QUIET.with(|q| q.set(true));
        let outcome = catch_unwind(AssertUnwindSafe(|| parse(&input)));
        QUIET.with(|q| q.set(false));
        let peak = PEAK.with(Cell::get);
        let what = match outcome {
            Err(panic) => Some(format!(
                "panic at {}: {}",
                PANIC_AT.with(|p| p.borrow().clone()),
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
            Ok(_) if peak > alloc_bound(input.len()) => Some(format!(
                "allocated {peak} bytes at once for a {}-byte input",
                input.len()
            )),
            Ok(Some(e)) if !names.iter().any(|n| e.contains(n)) => {
                Some(format!("error names none of {names:?}: {e}"))
            }
            Ok(Some(_)) => {
                rejected += 1;
                None
            }
            Ok(None) => None,
        };
        if let Some(what) = what {
            findings.push(Finding { input, what });
        }
    }
    eprintln!(
        "fuzz {parser}: {count} inputs, {rejected} rejected, {} accepted, {} findings, {:.2} s",
        count - rejected - findings.len(),
        findings.len(),
        start.elapsed().as_secs_f64()
    );
    if !findings.is_empty() {
        let report: Vec<String> = findings
            .iter()
            .take(5)
            .map(|f| {
                let head = String::from_utf8_lossy(&f.input[..f.input.len().min(200)]);
                format!("{}\n    input ({} bytes): {head:?}", f.what, f.input.len())
            })
            .collect();
        panic!(
            "{parser}: {} of {count} inputs failed; first ones:\n  {}",
            findings.len(),
            report.join("\n  ")
        );
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Point files.

fn npy_seeds() -> Vec<Vec<u8>> {
    let points = PointSet {
        dim: 2,
        values: vec![1.0, -2.0, 3.5, 0.25, 1e10, -7.0, 0.0, 4.0],
    };
    let mut f32_file = Vec::new();
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }          \n";
    f32_file.extend_from_slice(b"\x93NUMPY\x02\x00");
    f32_file.extend_from_slice(&(header.len() as u32).to_le_bytes());
    f32_file.extend_from_slice(header.as_bytes());
    for v in [1.5f32, -2.0, 0.125] {
        f32_file.extend_from_slice(&v.to_le_bytes());
    }
    vec![npy_bytes(&points), f32_file]
}

#[test]
fn fuzz_npy_points() {
    let path = Path::new("fuzz-input.npy");
    fuzz("npy", &["fuzz-input.npy"], &npy_seeds(), INPUTS, 1, |b| {
        points_from_bytes(path, b).err().map(|e| e.to_string())
    });
}

#[test]
fn fuzz_csv_points() {
    let seeds = [
        "x,y\n1,2\n3.5,-4\n-0.25,1e3\n",
        "# comment\n1 2 3\n4 5 6\n\n7 8 9\n",
        "a\n1\n2\n3\n",
    ];
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| s.as_bytes().to_vec()).collect();
    let path = Path::new("fuzz-input.csv");
    fuzz("csv", &["fuzz-input.csv"], &seeds, INPUTS, 2, |b| {
        points_from_bytes(path, b).err().map(|e| e.to_string())
    });
}

// ---------------------------------------------------------------------------------------------
// IDX and PNG images.

fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(payload);
    bytes
}

fn idx_seeds() -> Vec<Vec<u8>> {
    let pixels: Vec<u8> = (0..18).map(|i| (i * 14) as u8).collect();
    vec![
        idx_bytes(&[2, 3, 3], &pixels),
        idx_bytes(&[5], &[0, 1, 2, 1, 0]),
    ]
}

/// Both ranks an IDX file may be read with (images, labels); the first error, if any.
fn parse_idx(path: &Path, bytes: &[u8]) -> Option<String> {
    let images = idx_from_bytes(path, bytes, &[None; 3]).err();
    let labels = idx_from_bytes(path, bytes, &[None]).err();
    match (images, labels) {
        (Some(e), Some(_)) => Some(e.to_string()),
        _ => None,
    }
}

#[test]
fn fuzz_idx() {
    let path = Path::new("fuzz-input-idx3-ubyte");
    fuzz(
        "idx",
        &["fuzz-input-idx3-ubyte"],
        &idx_seeds(),
        INPUTS,
        3,
        |b| parse_idx(path, b),
    );
}

#[test]
fn fuzz_idx_gzip() {
    let seeds: Vec<Vec<u8>> = idx_seeds().iter().map(|s| gzip(s)).collect();
    let path = Path::new("fuzz-input-idx3-ubyte.gz");
    fuzz(
        "idx.gz",
        &["fuzz-input-idx3-ubyte.gz"],
        &seeds,
        INPUTS,
        4,
        |b| parse_idx(path, b),
    );
}

fn png_seeds() -> Vec<Vec<u8>> {
    let encode = |image: image::DynamicImage| {
        let mut out = std::io::Cursor::new(Vec::new());
        image.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let gray = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(x * 60 + y * 20) as u8]));
    let rgb = image::RgbImage::from_fn(2, 2, |x, y| image::Rgb([x as u8 * 90, y as u8 * 90, 7]));
    vec![encode(gray.into()), encode(rgb.into())]
}

#[test]
fn fuzz_png() {
    let path = Path::new("fuzz-input.png");
    fuzz("png", &["fuzz-input.png"], &png_seeds(), INPUTS, 5, |b| {
        decode_png(path, b).err().map(|e| e.to_string())
    });
}

// ---------------------------------------------------------------------------------------------
// Run directories (config.json, model.safetensors, train_state.safetensors) and diffusers UNet
// folders, read through the loaders themselves: each input is written over one file of a valid
// folder (a few microseconds on a page-cached temp dir).

/// A small MLP run's checkpoint in a fresh temp dir.
fn run_dir(sde: Option<diffuse::sde::SdeConfig>) -> tempfile::TempDir {
    let config = RunConfig {
        model: ModelConfig::Mlp(MlpConfig {
            data_dim: 2,
            hidden: 8,
            depth: 1,
            time_embed_dim: 4,
        }),
        schedule: ScheduleConfig {
            num_train_timesteps: 50,
            ..ScheduleConfig::default()
        },
        prediction: PredictionType::Eps,
        data: DataSpec::Toy {
            name: ToyDataset::Moons,
        },
        train: TrainConfig::default(),
        seed: 7,
        sde,
    };
    config.validate().unwrap();
    let params = config.model.init_params(0).unwrap();
    let n = params.len();
    let timestep_sampler = TimestepSampler::new(
        config.train.timestep_sampling,
        config.schedule.num_train_timesteps,
    );
    let ckpt = Checkpoint {
        config,
        ema: params.clone(),
        raw: params,
        optimizer: AdamWState::new(n),
        state: TrainState {
            step: 3,
            adamw_updates: 3,
            rng: RngState {
                seed: 7,
                next_step: 3,
            },
            timestep_sampler,
        },
    };
    let dir = tempfile::tempdir().unwrap();
    save_checkpoint(dir.path(), &ckpt).unwrap();
    dir
}

/// The three files of a run directory, read once.
struct RunFiles {
    dir: std::path::PathBuf,
    files: Vec<(&'static str, Vec<u8>)>,
}

impl RunFiles {
    fn read(dir: &Path) -> Self {
        let files = [CONFIG_FILE, MODEL_FILE, STATE_FILE]
            .into_iter()
            .map(|name| (name, std::fs::read(dir.join(name)).unwrap()))
            .collect();
        RunFiles {
            dir: dir.to_path_buf(),
            files,
        }
    }

    fn seed(&self, file: &str) -> Vec<u8> {
        self.files
            .iter()
            .find(|(n, _)| *n == file)
            .unwrap()
            .1
            .clone()
    }

    /// The in-memory readers behind `load_config`, `load_model` and `load_checkpoint`, with
    /// `file` replaced by `bytes`.
    fn open(&self, file: &str, bytes: &[u8]) -> Option<String> {
        let get = |name: &str| -> &[u8] {
            match name == file {
                true => bytes,
                false => &self.files.iter().find(|(n, _)| *n == name).unwrap().1,
            }
        };
        let path = |name: &str| self.dir.join(name);
        let opened = config_from_bytes(&path(CONFIG_FILE), get(CONFIG_FILE)).and_then(|config| {
            let (_, raw, step) = model_from_bytes(&path(MODEL_FILE), get(MODEL_FILE), &config)?;
            state_from_bytes(&path(STATE_FILE), get(STATE_FILE), raw.len(), step)
        });
        opened.err().map(|e| e.to_string())
    }
}

#[test]
fn fuzz_run_config_json() {
    let dirs = [
        run_dir(None),
        run_dir(diffuse::sde::SdeConfig::from_name("ve").ok()),
    ];
    let runs: Vec<RunFiles> = dirs.iter().map(|d| RunFiles::read(d.path())).collect();
    let seeds: Vec<Vec<u8>> = runs.iter().map(|r| r.seed(CONFIG_FILE)).collect();
    // The whole open: a config claiming a huge model must not make the loader allocate it.
    fuzz(
        "config.json",
        &[CONFIG_FILE, MODEL_FILE, STATE_FILE],
        &seeds,
        INPUTS,
        6,
        |b| runs[0].open(CONFIG_FILE, b),
    );
}

#[test]
fn fuzz_model_safetensors() {
    let dir = run_dir(None);
    let run = RunFiles::read(dir.path());
    fuzz(
        "model.safetensors",
        &[MODEL_FILE],
        &[run.seed(MODEL_FILE)],
        INPUTS,
        7,
        |b| run.open(MODEL_FILE, b),
    );
}

#[test]
fn fuzz_train_state_safetensors() {
    let dir = run_dir(None);
    let run = RunFiles::read(dir.path());
    // The model part of the open is fixed here: only the state reader sees mutations.
    let config = config_from_bytes(&dir.path().join(CONFIG_FILE), &run.seed(CONFIG_FILE)).unwrap();
    let (_, raw, step) =
        model_from_bytes(&dir.path().join(MODEL_FILE), &run.seed(MODEL_FILE), &config).unwrap();
    let path = dir.path().join(STATE_FILE);
    fuzz(
        "train_state.safetensors",
        &[STATE_FILE],
        &[run.seed(STATE_FILE)],
        INPUTS,
        8,
        |b| {
            state_from_bytes(&path, b, raw.len(), step)
                .err()
                .map(|e| e.to_string())
        },
    );
}

/// The closed-form parameter count the loader checks against the file agrees with the layout
/// the MLP is built from.
#[test]
fn mlp_parameter_count_matches_its_layout() {
    for (d, h, depth, e) in [(2, 8, 1, 4), (3, 64, 3, 16), (784, 256, 4, 128)] {
        let c = MlpConfig {
            data_dim: d,
            hidden: h,
            depth,
            time_embed_dim: e,
        };
        assert_eq!(
            c.num_params(),
            Some(diffuse::nn::mlp::layout(&c).1),
            "{c:?}"
        );
    }
    let huge = MlpConfig {
        data_dim: 2,
        hidden: usize::MAX / 2,
        depth: 2,
        time_embed_dim: 4,
    };
    assert_eq!(huge.num_params(), None);
}

/// A tiny diffusers UNet folder (one level of 4 channels, 4x4 images).
fn unet_dir() -> tempfile::TempDir {
    let config = UNet2DConfig {
        sample_size: Some(SampleSize::Square(4)),
        in_channels: 1,
        out_channels: 1,
        block_out_channels: vec![4],
        down_block_types: vec![DownBlockType::DownBlock2D],
        up_block_types: vec![UpBlockType::UpBlock2D],
        layers_per_block: 1,
        norm_num_groups: 2,
        mid_block_type: None,
        ..UNet2DConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let model =
        UNet2DModel::new(&config, 0, &Default::default(), burn::tensor::DType::F32).unwrap();
    model.save_diffusers_dir(dir.path()).unwrap();
    dir
}

/// A UNet folder's config.json: parsed and validated (the model is not built; see the report
/// in issue 12: a valid config claiming a huge UNet is built before its weights are read).
#[test]
fn fuzz_unet_config_json() {
    use diffuse::nn::unet::io::CONFIG_NAME;
    let dir = unet_dir();
    let path = dir.path().join(CONFIG_NAME);
    let seeds = vec![std::fs::read(&path).unwrap()];
    fuzz("unet config.json", &[CONFIG_NAME], &seeds, INPUTS, 9, |b| {
        UNet2DModel::config_from_bytes(&path, b)
            .err()
            .map(|e| e.to_string())
    });
}

#[test]
fn fuzz_unet_safetensors() {
    use diffuse::nn::unet::io::WEIGHTS_NAME;
    let dir = unet_dir();
    let config = UNet2DModel::diffusers_config(dir.path()).unwrap();
    let path = dir.path().join(WEIGHTS_NAME);
    let seeds = vec![std::fs::read(&path).unwrap()];
    let device = Default::default();
    fuzz(
        "unet safetensors",
        &[WEIGHTS_NAME],
        &seeds,
        INPUTS,
        10,
        |b| {
            UNet2DModel::from_safetensors_bytes(
                &config,
                &path,
                b,
                &device,
                burn::tensor::DType::F32,
            )
            .err()
            .map(|e| e.to_string())
        },
    );
}
