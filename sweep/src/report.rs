//! The sweep report: from the finished rows, the seed summary (`summary.csv`,
//! `summary.md`), a power-law fit per metric and series over every seed (`fits.json`,
//! with each curve's direction in words) and a plot per metric (`plots/`).

use std::path::Path;

use crate::checks::{HeldOutScore, checks};
use crate::fit::{FitsFile, SeriesFit, fit_with_intervals};
use crate::plot::{References, Series, plot};
use crate::results::{METRICS, Row};
use crate::summary::{self, SeedSummary};
use crate::{Result, io};

/// What the report found, for the terminal: the summary table and one line per fit.
pub struct ReportText {
    /// The Markdown table of `summary.md`.
    pub table: String,
    /// One line per fitted series.
    pub fits: Vec<String>,
    /// One line per check of the sweep's claims (`crate::checks`).
    pub checks: Vec<String>,
}

/// Bootstrap resamples behind every interval.
const RESAMPLES: usize = 1000;

/// Writes the report of `rows` into `out_dir`; `held_out` holds each cell's score per
/// held-out session, `budget` is the budget rule in words.
pub fn write(
    out_dir: &Path,
    rows: &[Row],
    held_out: &[HeldOutScore],
    budget: &str,
) -> Result<ReportText> {
    let summaries = summary::summarize(rows);
    summary::write_csv(out_dir, &summaries)?;
    let table = summary::markdown(&summaries);
    let checks = checks(rows, held_out);
    let check_list: String = checks.iter().map(|l| format!("- {l}\n")).collect();
    let md_path = out_dir.join("summary.md");
    std::fs::write(
        &md_path,
        format!(
            "Pretraining budget: {budget}.\n\nMean ± sample standard deviation over seeds (smallest to largest seed), bits per spike (choice: accuracy, whisker: R²). Held-out metrics are on the held-out sessions after fine-tuning; co-smoothing and forward prediction on the pretraining sessions are on their test trials, beside the baseline on the same entries.\n\n{table}\n## Checks\n\nOn the pretraining sessions every cell (each seed) is counted; the other checks compare means over seeds. A tie counts as not above.\n\n{check_list}"
        ),
    )
    .map_err(io(&md_path))?;
    let plots_dir = out_dir.join("plots");
    std::fs::create_dir_all(&plots_dir).map_err(io(&plots_dir))?;
    let mut groups: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.masking.clone(), r.model.clone()))
        .collect();
    groups.sort();
    groups.dedup();
    let several_models = groups.iter().any(|g| g.1 != groups[0].1);
    let mut fits = Vec::new();
    let mut lines = Vec::new();
    for (metric, get) in METRICS {
        let mut series = Vec::new();
        for (masking, model) in &groups {
            let of_group = |r: &&Row| &r.masking == masking && &r.model == model;
            // Every seed of every pretrained cell: the fit sees the spread between seeds.
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(of_group)
                .filter(|r| r.sessions > 0)
                .filter_map(|r| get(r).map(|v| (r.sessions as f64, v)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let mine: Vec<&SeedSummary> = summaries
                .iter()
                .filter(|s| s.metric == metric && &s.masking == masking && &s.model == model)
                .collect();
            let fit = fit_with_intervals(&points, RESAMPLES, 0);
            let label = if several_models {
                format!("{masking} ({model})")
            } else {
                masking.clone()
            };
            lines.push(match &fit {
                Some(f) => format!(
                    "{metric:<10} {label:<24} {:>3} points  y_inf {:.4} [{:.4}, {:.4}]  alpha {:.3} [{:.3}, {:.3}]  {}{}",
                    points.len(),
                    f.fit.y_inf,
                    f.y_inf_ci[0],
                    f.y_inf_ci[1],
                    f.fit.alpha,
                    f.alpha_ci[0],
                    f.alpha_ci[1],
                    f.trend().describe(),
                    if f.determined() {
                        ""
                    } else {
                        "; exponent not determined by these points"
                    }
                ),
                None => format!(
                    "{metric:<10} {label:<24} {:>3} points  (fewer than 3 session counts: no fit)",
                    points.len()
                ),
            });
            fits.push(SeriesFit {
                metric: metric.to_string(),
                masking: masking.clone(),
                model: model.clone(),
                points: points.clone(),
                determined: fit.as_ref().is_some_and(|f| f.determined()),
                trend: fit.as_ref().map(|f| f.trend()),
                fit: fit.clone(),
            });
            series.push(Series {
                label,
                seeds: points,
                means: mine
                    .iter()
                    .filter(|s| s.sessions > 0)
                    .map(|s| (s.sessions as f64, s.mean))
                    .collect(),
                fit,
                scratch: mine.iter().find(|s| s.sessions == 0).map(|s| s.mean),
            });
        }
        if series.is_empty() {
            continue;
        }
        let of_metric: Vec<&SeedSummary> =
            summaries.iter().filter(|s| s.metric == metric).collect();
        let average = |get: fn(&SeedSummary) -> Option<f64>| {
            let v: Vec<f64> = of_metric.iter().filter_map(|s| get(s)).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let references = References {
            baseline: average(|s| s.baseline),
            ceiling: average(|s| s.ceiling),
        };
        let names = crate::results::describe(metric);
        plot(
            &plots_dir.join(metric),
            names.title,
            names.unit,
            &series,
            references,
        )?;
    }
    let fits_path = out_dir.join("fits.json");
    let json = serde_json::to_string_pretty(&FitsFile {
        model: format!(
            "y(n) = y_inf - b * n^(-alpha), n = pretraining sessions, fitted to every seed's point; 95% intervals from {RESAMPLES} bootstrap resamples of those points"
        ),
        fits,
    })
    .expect("fits serialise");
    std::fs::write(&fits_path, json).map_err(io(&fits_path))?;
    Ok(ReportText {
        table,
        fits: lines,
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::row;

    #[test]
    fn the_report_fits_every_seed_and_writes_its_files() {
        // 4 session counts x 2 seeds, rising as 0.3 - 0.2 n^-0.5, and 2 seeds from scratch.
        let mut rows = Vec::new();
        for n in [0u64, 1, 2, 4, 8] {
            for seed in [1u64, 2] {
                let y = if n == 0 {
                    0.02
                } else {
                    0.3 - 0.2 * (n as f64).powf(-0.5) + if seed == 1 { 0.002 } else { -0.002 }
                };
                let mut r = row(&format!("c{n}-{seed}"), n, Some(y));
                r.seed = seed;
                rows.push(r);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let text = write(dir.path(), &rows, &[], "10 epochs").unwrap();
        let co = text
            .fits
            .iter()
            .find(|l| l.starts_with("co_smooth"))
            .unwrap();
        assert!(co.contains(" 8 points") && co.contains("rises"), "{co}");
        let fits = std::fs::read_to_string(dir.path().join("fits.json")).unwrap();
        let fits: serde_json::Value = serde_json::from_str(&fits).unwrap();
        let first = &fits["fits"][0];
        assert_eq!(first["metric"], "co_smooth");
        assert_eq!(
            first["points"].as_array().unwrap().len(),
            8,
            "every seed, not scratch"
        );
        for file in [
            "summary.csv",
            "summary.md",
            "plots/co_smooth.svg",
            "plots/co_smooth.png",
        ] {
            assert!(dir.path().join(file).exists(), "{file}");
        }
        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(
            md.contains("10 epochs") && md.contains("0 (from scratch)"),
            "{md}"
        );
        // The checks are listed under their heading, as on the terminal.
        assert!(!text.checks.is_empty());
        assert!(md.contains("## Checks"), "{md}");
        assert!(md.contains(&format!("- {}\n", text.checks[0])), "{md}");
    }
}
