//! Plots of a metric against the number of pretraining sessions (log axis): per series
//! (masking scheme and model size) each seed's point, the mean of the seeds, the fitted
//! curve with its 95 % band, and the from-scratch value; the baseline and the ceiling as
//! grey lines. SVG and PNG through `mtm_plot`, the legend beside the plot.

use std::path::{Path, PathBuf};

use mtm_plot::{Chart, GREY, Mark, Scale};

use crate::fit::FitWithIntervals;
use crate::{Result, SweepError};

/// One series of a plot.
pub struct Series {
    /// Legend label, e.g. `mtm` or `mtm (small)`.
    pub label: String,
    /// `(sessions, value)` of every seed of every pretrained cell.
    pub seeds: Vec<(f64, f64)>,
    /// `(sessions, mean over seeds)`.
    pub means: Vec<(f64, f64)>,
    /// The fit to all seeds, when there is one.
    pub fit: Option<FitWithIntervals>,
    /// The mean over seeds of fine-tuning from scratch, when the sweep has it.
    pub scratch: Option<f64>,
}

/// Horizontal references: the baseline and the ceiling on the same entries.
#[derive(Clone, Copy, Debug, Default)]
pub struct References {
    /// The smoothing + GLM baseline.
    pub baseline: Option<f64>,
    /// The true rates (synthetic data).
    pub ceiling: Option<f64>,
}

/// Draws `series` into `{stem}.svg` and `{stem}.png`; returns both paths.
pub fn plot(
    stem: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
    references: References,
) -> Result<Vec<PathBuf>> {
    let n_max = series
        .iter()
        .flat_map(|s| s.seeds.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let across = |y: f64| vec![(1.0, y), (n_max, y)];
    let curve = |at: &dyn Fn(f64) -> f64| -> Vec<(f64, f64)> {
        (0..=100)
            .map(|k| {
                let n = (n_max.ln() * k as f64 / 100.0).exp();
                (n, at(n))
            })
            .collect()
    };
    let mut drawn = Vec::new();
    // Bands first, under everything else.
    for (colour, s) in series.iter().enumerate() {
        if let Some(fit) = s.fit.as_ref().filter(|f| f.resamples > 0) {
            // Each n's band once (it sorts every resample's value there): the upper edge
            // left to right, then the lower edge back.
            let band: Vec<(f64, [f64; 2])> = curve(&|n| n)
                .into_iter()
                .map(|(n, _)| (n, fit.band_at(n).unwrap_or([f64::NAN; 2])))
                .collect();
            let upper = band.iter().map(|&(n, b)| (n, b[1]));
            let lower = band.iter().rev().map(|&(n, b)| (n, b[0]));
            drawn.push(mtm_plot::Series {
                label: String::new(),
                points: upper.chain(lower).collect(),
                mark: Mark::Band,
                colour,
            });
        }
    }
    if let Some(y) = references.ceiling {
        drawn.push(mtm_plot::Series {
            label: "ceiling (true rates)".into(),
            points: across(y),
            mark: Mark::Dashed,
            colour: GREY,
        });
    }
    if let Some(y) = references.baseline {
        drawn.push(mtm_plot::Series {
            label: "smoothing + GLM baseline".into(),
            points: across(y),
            mark: Mark::Reference,
            colour: GREY,
        });
    }
    for (colour, s) in series.iter().enumerate() {
        if let Some(y) = s.scratch {
            drawn.push(mtm_plot::Series {
                label: format!("{}: from scratch", s.label),
                points: across(y),
                mark: Mark::Dashed,
                colour,
            });
        }
        drawn.push(mtm_plot::Series {
            label: format!("{}: each seed", s.label),
            points: s.seeds.clone(),
            mark: Mark::Replicates,
            colour,
        });
        drawn.push(mtm_plot::Series {
            label: format!("{}: mean of seeds", s.label),
            points: s.means.clone(),
            mark: Mark::Points,
            colour,
        });
        if let Some(fit) = &s.fit {
            drawn.push(mtm_plot::Series {
                label: format!("{}: fit, 95% band", s.label),
                points: curve(&|n| fit.fit.at(n)),
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
    use crate::fit::{PowerLaw, fit_with_intervals};

    #[test]
    fn plots_are_written_as_svg_and_png_with_seeds_fit_band_and_references() {
        let dir = tempfile::tempdir().unwrap();
        let truth = PowerLaw {
            y_inf: 0.3,
            b: 0.2,
            alpha: 0.5,
            rmse: 0.0,
        };
        let seeds: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0]
            .iter()
            .flat_map(|&n| [(n, truth.at(n) - 0.01), (n, truth.at(n) + 0.01)])
            .collect();
        let series = vec![Series {
            label: "mtm".into(),
            means: [1.0, 2.0, 4.0, 8.0]
                .iter()
                .map(|&n| (n, truth.at(n)))
                .collect(),
            fit: fit_with_intervals(&seeds, 200, 0),
            seeds,
            scratch: Some(0.05),
        }];
        let references = References {
            baseline: Some(0.15),
            ceiling: Some(0.4),
        };
        let paths = plot(
            &dir.path().join("co_smooth"),
            "co-smoothing",
            "bits per spike",
            &series,
            references,
        )
        .unwrap();
        let svg = std::fs::read_to_string(&paths[0]).unwrap();
        for label in [
            "mtm: each seed",
            "mtm: mean of seeds",
            "mtm: fit, 95% band",
            "mtm: from scratch",
            "ceiling (true rates)",
            "smoothing + GLM baseline",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(svg.contains("<polygon"), "the band is drawn");
        let png = std::fs::read(&paths[1]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(png.len() > 5_000, "a PNG with content: {} bytes", png.len());
    }
}
