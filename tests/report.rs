//! The run report (`report.html`) end to end: written for a 2-D, an image and a score-SDE run;
//! it parses as HTML with balanced tags, refers to nothing outside itself, embeds every image
//! it shows, and its curves carry exactly the numbers of `metrics.jsonl`. Previews do not
//! change training: weights with previews on equal those with previews off, bit for bit.
//! `diffuse report` rebuilds the page and `diffuse compare` writes the comparison page.

use diffuse::data::{DataSpec, ToyDataset};
use diffuse::nn::{MlpConfig, ModelConfig};
use diffuse::prediction::PredictionType;
use diffuse::report::{ReportOptions, REPORT_FILE};
use diffuse::schedule::ScheduleConfig;
use diffuse::train::{fit_with_report, FitOptions, RunConfig, TrainConfig, Trainer};
use std::path::{Path, PathBuf};

#[path = "common/images.rs"]
mod unet_fixture;
use unet_fixture::{fixture_data, tiny_unet};

fn mlp_run(steps: u64, checkpoint_every: u64) -> RunConfig {
    RunConfig {
        model: ModelConfig::Mlp(MlpConfig {
            data_dim: 2,
            hidden: 32,
            depth: 2,
            time_embed_dim: 16,
        }),
        schedule: ScheduleConfig::default(),
        prediction: PredictionType::Eps,
        data: DataSpec::Toy {
            name: ToyDataset::Moons,
        },
        train: TrainConfig {
            steps,
            batch_size: 64,
            lr: 3e-3,
            warmup_steps: 5,
            ema_decay: 0.9,
            checkpoint_every,
            log_every: 2,
            ..TrainConfig::default()
        },
        seed: 3,
        sde: None,
    }
}

/// A two-level UNet (8, 16 channels) on the committed Fashion-MNIST slice, class-conditional,
/// checkpointing and logging every step.
fn image_run(steps: u64) -> RunConfig {
    let mut cfg = unet_fixture::image_run(fixture_data(false), tiny_unet(Some(10), 1), steps, 4);
    cfg.train.warmup_steps = 1;
    cfg.train.checkpoint_every = 1;
    cfg.train.log_every = 1;
    cfg.seed = 5;
    cfg
}

fn train(cfg: RunConfig, dir: &Path, report: &ReportOptions) -> Trainer {
    let mut t = Trainer::new(cfg).unwrap();
    let opts = FitOptions {
        until: None,
        progress: false,
    };
    fit_with_report(&mut t, dir, &opts, report).unwrap();
    t
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The HTML elements that have no end tag.
const VOID: [&str; 6] = ["meta", "img", "br", "hr", "input", "link"];

/// Checks that every start tag is closed in order (outside `<script>` / `<style>` text), so a
/// strict parser sees the same tree as a lenient one. Returns the tag names in order.
fn check_balanced(html: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start..];
        if rest.starts_with("<!DOCTYPE") || rest.starts_with("<!--") {
            rest = &rest[rest.find('>').expect("closed declaration") + 1..];
            continue;
        }
        let end = rest.find('>').expect("every tag ends");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(open, name, "</{name}> closes <{open}>");
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(!name.is_empty(), "malformed tag <{tag}>");
        names.push(name.clone());
        if tag.ends_with('/') || VOID.contains(&name.as_str()) {
            continue;
        }
        if name == "script" || name == "style" {
            let close = format!("</{name}>");
            let at = rest.find(&close).expect("raw text element closed");
            rest = &rest[at + close.len()..];
            continue;
        }
        stack.push(name);
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    names
}

fn attr(tag: &tl::HTMLTag, name: &str) -> Option<String> {
    tag.attributes()
        .get(name)
        .flatten()
        .map(|v| v.as_utf8_str().to_string())
}

/// Parses the report and checks what every report must satisfy; returns the parsed plot data
/// blocks (by plot id) and the number of images.
fn check_report(dir: &Path) -> (std::collections::HashMap<String, serde_json::Value>, usize) {
    let html = std::fs::read_to_string(dir.join(REPORT_FILE)).unwrap();
    let names = check_balanced(&html);
    for required in [
        "html", "head", "body", "title", "h1", "table", "figure", "svg",
    ] {
        assert!(names.iter().any(|n| n == required), "no <{required}>");
    }
    let dom = tl::parse(&html, tl::ParserOptions::default()).expect("parses as HTML");
    let parser = dom.parser();
    let mut images = 0;
    let mut plots = std::collections::HashMap::new();
    for node in dom.nodes() {
        let Some(tag) = node.as_tag() else { continue };
        let name = tag.name().as_utf8_str().to_string();
        for key in ["src", "href"] {
            if let Some(url) = attr(tag, key) {
                // Nothing outside the page: no network address, no absolute file path.
                let lower = url.to_ascii_lowercase();
                assert!(
                    !lower.starts_with("http:")
                        && !lower.starts_with("https:")
                        && !lower.starts_with("//")
                        && !lower.starts_with("file:")
                        && !url.starts_with('/'),
                    "<{name} {key}={url:?}>"
                );
            }
        }
        match name.as_str() {
            "img" => {
                let src = attr(tag, "src").expect("img has src");
                assert!(src.starts_with("data:image/png;base64,"), "{}", &src[..40]);
                images += 1;
            }
            "script" => {
                assert!(attr(tag, "src").is_none(), "external script");
                assert_eq!(attr(tag, "type").as_deref(), Some("application/json"));
                let data: serde_json::Value =
                    serde_json::from_str(&tag.inner_text(parser)).expect("JSON data block");
                if let Some(id) = data["id"].as_str() {
                    plots.insert(id.to_string(), data.clone());
                }
            }
            "link" | "iframe" | "object" | "embed" => panic!("<{name}> in a self-contained page"),
            _ => {}
        }
    }
    assert!(
        !html.contains("@import") && !html.contains("url("),
        "CSS loads nothing"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no URL anywhere in the page"
    );
    (plots, images)
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The line named `name` of a plot's data block: (x, y).
fn line(plot: &serde_json::Value, name: &str) -> (Vec<f64>, Vec<f64>) {
    let l = plot["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no line {name:?} in {}", plot["id"]));
    let v = |k: &str| -> Vec<f64> {
        l[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    (v("x"), v("y"))
}

#[test]
fn a_2d_report_holds_the_metrics_and_previews_leave_training_unchanged() {
    // 40 steps, a checkpoint every 10: previews at 0, 10, 20, 30, 40 (50 ms each).
    let (on, off) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with = train(mlp_run(40, 10), on.path(), &ReportOptions::default());
    let without = train(mlp_run(40, 10), off.path(), &ReportOptions::no_previews());
    assert_eq!(bits(&with.params.values), bits(&without.params.values));
    assert_eq!(bits(&with.ema.values), bits(&without.ema.values));
    assert_eq!(bits(&with.optimizer.m), bits(&without.optimizer.m));

    let (plots, images) = check_report(on.path());
    assert_eq!(images, 0, "2-D previews are inline SVG");
    let rows = metrics(on.path());
    assert_eq!(rows.len(), 20);
    let col = |k: &str| -> Vec<f64> { rows.iter().map(|r| r[k].as_f64().unwrap()).collect() };
    // Exact equality: the page's JSON holds the same f64s serde wrote to metrics.jsonl.
    assert_eq!(line(&plots["loss"], "raw"), (col("step"), col("loss")));
    assert_eq!(line(&plots["lr"], "lr"), (col("step"), col("lr")));
    assert_eq!(
        line(&plots["grad_norm"], "raw"),
        (col("step"), col("grad_norm"))
    );
    let html = std::fs::read_to_string(on.path().join(REPORT_FILE)).unwrap();
    // One scatter of data plus one per preview, each point drawn.
    assert_eq!(html.matches("class=\"points\"").count(), 1 + 5);
    for step in [0, 10, 20, 30, 40] {
        assert!(
            html.contains(&format!(">step {step}<")),
            "preview of step {step}"
        );
    }
    // The run without previews has a report too, saying so.
    let html_off = std::fs::read_to_string(off.path().join(REPORT_FILE)).unwrap();
    assert!(html_off.contains("No previews yet"));
    assert!(!off.path().join("previews").exists());
}

#[test]
fn an_image_report_embeds_its_class_grids_and_previews_leave_training_unchanged() {
    // 2 steps with a checkpoint after each and a preview at every 2nd: previews at 0 (before
    // any training step) and 2, 10 images of DDIM-20 each (~2 s each at opt-level 1).
    let report = ReportOptions {
        preview_every: 2,
        image_rows: 1,
    };
    let (on, off) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with = train(image_run(2), on.path(), &report);
    let without = train(
        image_run(2),
        off.path(),
        &ReportOptions {
            preview_every: 0,
            ..report
        },
    );
    assert_eq!(bits(&with.params.values), bits(&without.params.values));
    assert_eq!(bits(&with.ema.values), bits(&without.ema.values));

    let (plots, images) = check_report(on.path());
    assert_eq!(images, 2, "one embedded grid per preview");
    let rows = metrics(on.path());
    let steps: Vec<f64> = rows.iter().map(|r| r["step"].as_f64().unwrap()).collect();
    let loss: Vec<f64> = rows.iter().map(|r| r["loss"].as_f64().unwrap()).collect();
    // Two points are too few to smooth: the loss is one line.
    assert_eq!(line(&plots["loss"], ""), (steps, loss));
    let html = std::fs::read_to_string(on.path().join(REPORT_FILE)).unwrap();
    for class in ["T-shirt/top", "Trouser", "Ankle boot"] {
        assert!(
            html.contains(&format!(">{class}</span>")),
            "column label {class}"
        );
    }
    assert!(on.path().join("previews/step-00000002.png").is_file());
}

#[test]
fn an_sde_report_previews_with_euler_maruyama() {
    let mut cfg = mlp_run(20, 10);
    cfg.sde = Some(diffuse::sde::SdeConfig::from_name("vp").unwrap());
    let dir = tempfile::tempdir().unwrap();
    train(cfg, dir.path(), &ReportOptions::default());
    let (plots, _) = check_report(dir.path());
    assert!(plots.contains_key("loss") && plots.contains_key("grad_norm"));
    let html = std::fs::read_to_string(dir.path().join(REPORT_FILE)).unwrap();
    assert!(
        html.contains("score SDE: vp"),
        "the schedule row names the SDE"
    );
    assert!(html.contains("em with 50 steps"));
    assert_eq!(html.matches("class=\"points\"").count(), 1 + 3);
}

#[test]
fn the_report_shows_eval_results_and_the_loss_by_timestep() {
    let mut cfg = mlp_run(30, 10);
    cfg.schedule.num_train_timesteps = 20;
    cfg.train.timestep_sampling = diffuse::loss::TimestepSampling::LossAware;
    let dir = tempfile::tempdir().unwrap();
    train(cfg, dir.path(), &ReportOptions::no_previews());
    // An image-style eval line and a points-style eval.json, as `diffuse eval` writes them.
    std::fs::write(
        dir.path().join("eval.jsonl"),
        "{\"metric\":\"test_bits_per_dim\",\"step\":30,\"how\":\"discrete VLB\",\"images\":16,\
         \"seed\":0,\"model\":{\"mean\":4.25,\"ci95\":0.125,\"per_seed\":[4.25]}}\n{\"cut",
    )
    .unwrap();
    let path = diffuse::report::write_report(dir.path()).unwrap();
    let html = std::fs::read_to_string(path).unwrap();
    check_report(dir.path());
    assert!(html.contains("test_bits_per_dim") && html.contains("4.2500 ± 0.1250 (95% CI)"));
    assert!(
        html.contains("eval.jsonl line 2: skipped"),
        "the cut line is named"
    );
    let (plots, _) = check_report(dir.path());
    let t = &plots["timestep_loss"];
    let last = t["lines"].as_array().unwrap().last().unwrap();
    assert_eq!(last["name"], "step 30");
    // 10 buckets of 2 timesteps: centres 1, 3, ..., 19.
    assert_eq!(last["x"].as_array().unwrap().len(), 10);
    assert_eq!(last["x"][0].as_f64(), Some(1.0));
}

#[test]
fn a_resumed_run_reports_both_sessions_and_one_history() {
    let dir = tempfile::tempdir().unwrap();
    let opts = |until| FitOptions {
        until: Some(until),
        progress: false,
    };
    let report = ReportOptions::default();
    let mut first = Trainer::new(mlp_run(40, 10)).unwrap();
    fit_with_report(&mut first, dir.path(), &opts(20), &report).unwrap();
    let ckpt = diffuse::train::load_checkpoint(dir.path()).unwrap();
    let mut resumed = Trainer::from_checkpoint(ckpt).unwrap();
    fit_with_report(&mut resumed, dir.path(), &opts(40), &report).unwrap();
    let (plots, _) = check_report(dir.path());
    let steps: Vec<f64> = metrics(dir.path())
        .iter()
        .map(|r| r["step"].as_f64().unwrap())
        .collect();
    assert_eq!(line(&plots["loss"], "raw").0, steps);
    let html = std::fs::read_to_string(dir.path().join(REPORT_FILE)).unwrap();
    assert!(
        html.contains("in 2 session(s)"),
        "timing counts both sessions"
    );
    // Previews at 0, 10, 20 (first session's end) and 30, 40; none drawn twice.
    assert_eq!(html.matches("class=\"points\"").count(), 1 + 5);
    let index = std::fs::read_to_string(dir.path().join("previews/index.jsonl")).unwrap();
    assert_eq!(index.lines().count(), 5);
}

fn diffuse_cmd(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn report_and_compare_commands_write_pages() {
    let root = tempfile::tempdir().unwrap();
    let (a, b): (PathBuf, PathBuf) = (root.path().join("a"), root.path().join("b"));
    let opts = ReportOptions::no_previews();
    train(mlp_run(10, 0), &a, &opts);
    let mut cfg = mlp_run(10, 0);
    cfg.train.lr = 1e-3;
    train(cfg, &b, &opts);
    std::fs::remove_file(a.join(REPORT_FILE)).unwrap();
    let out = diffuse_cmd(&["report", a.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_report(&a);

    let page = root.path().join("pages/compare.html");
    std::fs::create_dir_all(page.parent().unwrap()).unwrap();
    let out = diffuse_cmd(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        page.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    check_balanced(&html);
    assert!(
        html.contains("href=\"../a/report.html\""),
        "relative link to each report"
    );
    assert!(
        html.contains("<code>train.lr</code>"),
        "the differing field is listed"
    );
    // Both runs' losses are overlaid, each with the numbers of its metrics.jsonl.
    // 5 rows are too few to smooth: one line per run in each of loss, lr and gradient norm.
    assert_eq!(html.matches("class=\"series\" data-name=\"a\"").count(), 3);
    assert_eq!(html.matches("class=\"series\" data-name=\"b\"").count(), 3);

    let out = diffuse_cmd(&["report", root.path().join("missing").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing") && err.contains("config.json"),
        "{err}"
    );
}
