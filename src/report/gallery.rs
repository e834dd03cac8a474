//! The previews section of the report: 2-D scatter plots beside the data, or image grids
//! with their class names over the columns, oldest first.

use super::html::{data_uri, escape};
use super::page::spread;
use super::run_data::RunData;
use super::svg::scatter;
use super::PREVIEW_DIR;
use std::fmt::Write;

/// At most this many previews are shown (evenly spread, first and last included); all are
/// linked from the file list.
pub const MAX_PREVIEWS_SHOWN: usize = 12;

pub fn previews(run: &RunData) -> String {
    let Some(first) = run.previews.first() else {
        return "<p class=\"muted\">No previews yet (they are drawn at checkpoints; \
                <code>--no-preview</code> turns them off).</p>"
            .into();
    };
    let shown = spread(run.previews.len(), MAX_PREVIEWS_SHOWN);
    let mut s = String::new();
    let _ = write!(
        s,
        "<p class=\"sub\">EMA weights, {} with {} steps, {} samples from the fixed seed {} \
         (the same noise at every checkpoint); {} of {} previews shown, oldest first.</p>",
        escape(&first.sampler),
        first.sampler_steps,
        first.n,
        first.seed,
        shown.len(),
        run.previews.len()
    );
    let points = !first.file.ends_with(".png");
    let range = scatter_range(run);
    let d = run.config.model.data_dim();
    s.push_str(if points {
        "<div class=\"scatter-row\">"
    } else {
        "<div class=\"previews\">"
    });
    if let (true, Some(data)) = (points, &run.preview_data) {
        s.push_str(&scatter("data", &first_two(data, d), range, 7));
    }
    for &i in &shown {
        let p = &run.previews[i];
        let path = run.dir.join(PREVIEW_DIR).join(&p.file);
        let cost = p
            .seconds
            .map_or(String::new(), |t| format!(" (drawn in {t:.2} s)"));
        if points {
            match crate::data::file::load_points(&path) {
                Ok(pts) => s.push_str(&scatter(
                    &format!("step {}", p.step),
                    &first_two(&pts.values, pts.dim),
                    range,
                    0,
                )),
                Err(e) => {
                    let _ = write!(s, "<p class=\"warn\">{}</p>", escape(&e.to_string()));
                }
            }
            continue;
        }
        let _ = write!(
            s,
            "<div class=\"preview\" data-step=\"{}\"><h3>step {}<span class=\"muted\">{}</span></h3>",
            p.step,
            p.step,
            escape(&cost)
        );
        match std::fs::read(&path) {
            Ok(bytes) => s.push_str(&image_preview(&bytes, p.columns.as_deref())),
            Err(e) => {
                let _ = write!(s, "<p class=\"warn\">{}: {e}</p>", escape(&p.file));
            }
        }
        s.push_str("</div>");
    }
    s.push_str("</div>");
    s
}

/// The first two coordinates of each row (what a 2-D scatter can show).
fn first_two(values: &[f64], d: usize) -> Vec<f64> {
    if d == 2 {
        return values.to_vec();
    }
    values
        .chunks(d.max(1))
        .filter(|r| r.len() >= 2)
        .flat_map(|r| [r[0], r[1]])
        .collect()
}

/// One square range for every 2-D panel: the data's extent, 1 to 6 (standardised units).
fn scatter_range(run: &RunData) -> f64 {
    let d = run.config.model.data_dim();
    run.preview_data
        .as_deref()
        .map_or(3.0, |v| {
            first_two(v, d)
                .iter()
                .filter(|x| x.is_finite())
                .fold(0f64, |m, x| m.max(x.abs()))
        })
        .clamp(1.0, 6.0)
        * 1.15
}

/// An image grid with its class names over the columns (grid geometry of
/// [`crate::viz::image_grid`]: a 2-pixel gap before every cell).
fn image_preview(png: &[u8], columns: Option<&[String]>) -> String {
    let width = png_width(png).unwrap_or(0);
    let mut s = String::new();
    if let Some(cols) = columns.filter(|c| !c.is_empty()) {
        let cell = width.saturating_sub(2) as f64 / cols.len() as f64;
        let _ = write!(
            s,
            "<div class=\"grid-labels\" style=\"width:{width}px;padding-left:2px\">"
        );
        for c in cols {
            let _ = write!(
                s,
                "<span style=\"width:{cell:.1}px\" title=\"{0}\">{0}</span>",
                escape(c)
            );
        }
        s.push_str("</div>");
    }
    let _ = write!(
        s,
        "<img class=\"pixelated\" width=\"{width}\" alt=\"preview samples\" src=\"{}\">",
        data_uri("image/png", png)
    );
    s
}

/// The width in the IHDR chunk of a PNG.
fn png_width(png: &[u8]) -> Option<u32> {
    let b = png.get(16..20)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
