//! Pictures a person looks at: line plots (schedules, loss curves) and scatter plots (2-D
//! samples beside data), written as PNG (the file's folder is created if missing).

use crate::data::file::create_parent_dir;
use plotters::prelude::*;
use std::path::Path;

/// One named line of a line plot.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

fn bounds(series: &[Series]) -> (f64, f64, f64, f64) {
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    (x0, x1.max(x0 + 1e-9), y0 - pad, y1 + pad)
}

/// Several line plots side by side (one panel each), written to `path`.
pub fn line_panels(path: &Path, panels: &[(&str, &str, &str, Vec<Series>)]) -> anyhow::Result<()> {
    create_parent_dir(path)?;
    let root = BitMapBackend::new(path, (560 * panels.len() as u32, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, (title, x_label, y_label, series)) in areas.iter().zip(panels) {
        let (x0, x1, y0, y1) = bounds(series);
        let mut chart = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(*x_label)
            .y_desc(*y_label)
            .draw()?;
        for (k, s) in series.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

/// Scatter panels of 2-D point clouds (row-major x, y), sharing one square range.
pub fn scatter_panels(path: &Path, panels: &[(&str, &[f64])], range: f64) -> anyhow::Result<()> {
    create_parent_dir(path)?;
    let root = BitMapBackend::new(path, (460 * panels.len() as u32, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len()));
    for (k, (area, (title, pts))) in areas.iter().zip(panels).enumerate() {
        let mut chart = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(-range..range, -range..range)?;
        chart.configure_mesh().draw()?;
        let color = Palette99::pick(k).mix(0.5);
        chart.draw_series(
            pts.chunks(2)
                .filter(|p| p[0].is_finite() && p[1].is_finite())
                .map(|p| Circle::new((p[0], p[1]), 1, color.filled())),
        )?;
    }
    root.present()?;
    Ok(())
}

/// Images `[N, C, H, W]` (row-major, values in [-1, 1]; C = 1 grey or 3 RGB) tiled into a PNG
/// grid of `ncols` columns with a 2-pixel gap, each pixel enlarged `zoom` times. Values are
/// mapped back to 8-bit exactly as the data were mapped in (SPEC §9).
pub fn image_grid(
    path: &Path,
    images: &[f64],
    shape: [usize; 3],
    ncols: usize,
    zoom: u32,
) -> anyhow::Result<()> {
    let [c, h, w] = shape;
    anyhow::ensure!(
        c == 1 || c == 3,
        "{c} channels: a grid needs 1 (grey) or 3 (RGB)"
    );
    let per = c * h * w;
    anyhow::ensure!(
        per > 0 && images.len().is_multiple_of(per),
        "image data is not [N, {c}, {h}, {w}]"
    );
    let n = images.len() / per;
    let ncols = ncols.clamp(1, n.max(1));
    let nrows = n.div_ceil(ncols).max(1);
    let (gap, z) = (2u32, zoom.max(1));
    let cell = |k: usize, size: usize| k as u32 * (size as u32 * z + gap) + gap;
    let (width, height) = (cell(ncols, w), cell(nrows, h));
    let mut img = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for k in 0..n {
        let (x0, y0) = (cell(k % ncols, w), cell(k / ncols, h));
        let im = &images[k * per..(k + 1) * per];
        for y in 0..h {
            for x in 0..w {
                let px = |ch: usize| crate::data::unit_to_pixel(im[ch * h * w + y * w + x]);
                let rgb = if c == 1 {
                    [px(0); 3]
                } else {
                    [px(0), px(1), px(2)]
                };
                for dy in 0..z {
                    for dx in 0..z {
                        img.put_pixel(
                            x0 + x as u32 * z + dx,
                            y0 + y as u32 * z + dy,
                            image::Rgb(rgb),
                        );
                    }
                }
            }
        }
    }
    create_parent_dir(path)?;
    img.save(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sample --out dir/x.png` into a folder that does not exist yet: every plot writer
    /// creates it.
    #[test]
    fn plots_create_the_missing_parent_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let scatter = tmp.path().join("new/scatter.png");
        scatter_panels(&scatter, &[("a", &[0.0, 1.0, 1.0, 0.0])], 2.0).unwrap();
        let grid = tmp.path().join("other/deeper/grid.png");
        image_grid(&grid, &[0.0; 4], [1, 2, 2], 1, 1).unwrap();
        let lines = tmp.path().join("lines/plot.png");
        let series = vec![Series {
            name: "s",
            points: vec![(0.0, 0.0), (1.0, 1.0)],
        }];
        line_panels(&lines, &[("t", "x", "y", series)]).unwrap();
        for path in [scatter, grid, lines] {
            assert!(path.is_file(), "{} was not written", path.display());
        }
    }
}
