//! Plots of a metric against the number of pretraining sessions (log axis), one line per
//! masking scheme and model size, each cell a point and each fit a curve; SVG and PNG.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::fit::PowerLaw;
use crate::{Result, SweepError};

/// One line of a plot: its label, its points `(sessions, value)` and its fit.
pub struct Series {
    /// Legend label, e.g. `mtm (small)`.
    pub label: String,
    /// Every cell's value.
    pub points: Vec<(f64, f64)>,
    /// The fitted curve, when there is one.
    pub fit: Option<PowerLaw>,
}

/// DejaVu Sans (its licence is beside it in `assets/`): PNG text needs a font, and
/// embedding one keeps plots independent of the fonts a machine happens to have.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .collect();
    let x_max = xs.fold(1.0f64, f64::max) * 1.3;
    let (y_min, y_max) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| {
            (a.min(y), b.max(y))
        });
    let pad = ((y_max - y_min) * 0.1).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((0.8f64..x_max).log_scale(), (y_min - pad)..(y_max + pad))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("pretraining sessions (log scale)")
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 4, colour.filled())),
            )
            .map_err(|e| e.to_string())?
            .label(&s.label)
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, colour.filled()));
        if let Some(fit) = s.fit {
            let n_max = s.points.iter().map(|p| p.0).fold(1.0, f64::max);
            let curve = (0..=100).map(|k| {
                let n = (n_max.ln() * k as f64 / 100.0).exp();
                (n, fit.at(n))
            });
            chart
                .draw_series(LineSeries::new(curve, colour.stroke_width(2)))
                .map_err(|e| e.to_string())?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Draws `series` into `{stem}.svg` and `{stem}.png`; returns both paths.
pub fn plot(stem: &Path, title: &str, y_label: &str, series: &[Series]) -> Result<Vec<PathBuf>> {
    REGISTER.call_once(|| {
        // Registering the embedded font cannot fail for a valid TTF.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    let fail = |path: &Path, message: String| SweepError::Output {
        what: path.display().to_string(),
        message,
    };
    draw(
        SVGBackend::new(&svg, (800, 560)).into_drawing_area(),
        title,
        y_label,
        series,
    )
    .map_err(|m| fail(&svg, m))?;
    draw(
        BitMapBackend::new(&png, (800, 560)).into_drawing_area(),
        title,
        y_label,
        series,
    )
    .map_err(|m| fail(&png, m))?;
    Ok(vec![svg, png])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_written_as_svg_and_png() {
        let dir = tempfile::tempdir().unwrap();
        let fit = PowerLaw {
            y_inf: 0.3,
            b: 0.2,
            alpha: 0.5,
            rmse: 0.0,
        };
        let series = vec![Series {
            label: "mtm (small)".into(),
            points: [1.0, 2.0, 4.0].iter().map(|&n| (n, fit.at(n))).collect(),
            fit: Some(fit),
        }];
        let paths = plot(
            &dir.path().join("co_smooth"),
            "co-smoothing",
            "bits per spike",
            &series,
        )
        .unwrap();
        let svg = std::fs::read_to_string(&paths[0]).unwrap();
        assert!(svg.contains("<svg") && svg.contains("mtm (small)"));
        let png = std::fs::read(&paths[1]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(png.len() > 5_000, "a PNG with content: {} bytes", png.len());
    }
}
