//! Plots of a metric against the number of pretraining sessions (log axis), one colour per
//! masking scheme and model size, each cell a point and each fit a curve; SVG and PNG
//! through `mtm_plot`.

use std::path::{Path, PathBuf};

use mtm_plot::{Chart, Mark, Scale};

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

/// Draws `series` into `{stem}.svg` and `{stem}.png`; returns both paths.
pub fn plot(stem: &Path, title: &str, y_label: &str, series: &[Series]) -> Result<Vec<PathBuf>> {
    let mut drawn = Vec::new();
    for (colour, s) in series.iter().enumerate() {
        drawn.push(mtm_plot::Series {
            label: s.label.clone(),
            points: s.points.clone(),
            mark: Mark::Points,
            colour,
        });
        if let Some(fit) = s.fit {
            let n_max = s.points.iter().map(|p| p.0).fold(1.0, f64::max);
            let curve = (0..=100)
                .map(|k| {
                    let n = (n_max.ln() * k as f64 / 100.0).exp();
                    (n, fit.at(n))
                })
                .collect();
            drawn.push(mtm_plot::Series {
                label: String::new(),
                points: curve,
                mark: Mark::Line,
                colour,
            });
        }
    }
    let chart = Chart {
        title: title.into(),
        x_label: "pretraining sessions (log scale)".into(),
        y_label: y_label.into(),
        x_scale: Scale::Log,
        series: drawn,
    };
    mtm_plot::write(stem, &chart).map_err(|e| SweepError::Output {
        what: e.path.display().to_string(),
        message: e.message,
    })
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
