//! The evaluation's pictures (`mtm eval --plots DIR`, and `plots/` of every `mtm train`
//! that evaluates): per session, the paper's Figure 2 view of one region, the trial-averaged
//! rates of its units as observed and as predicted under inter-region and under
//! intra-region masking, side by side on one colour scale (`{eid}/rasters`); and a bar
//! chart of the four activity metrics for the model, the smoothing + GLM baseline and the
//! true rates (`{eid}/metrics`). SVG and PNG through `mtm_plot`.

use std::path::{Path, PathBuf};

use mtm_dataloader::Session;
use mtm_dataloader::dataset::Batch;
use mtm_plot::{Bars, Heatmap, Heatmaps};

use crate::config::Task;
use crate::error::{Result, TrainError};
use crate::report::{ActivityScore, Reference, TaskResult, TaskScore};

/// Predictions of one task on a batch: log expected counts and which entries were scored,
/// both `(trials, bins, units)`.
pub struct TaskPredictions<'a> {
    /// Log expected counts per bin.
    pub log_rates: &'a [f64],
    /// Whether each entry was held out and scored.
    pub scored: &'a [bool],
}

/// The region shown: the one with the most units.
fn largest_region(regions: &[String]) -> Option<(String, Vec<usize>)> {
    let mut names: Vec<&String> = regions.iter().collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let units: Vec<usize> = (0..regions.len())
                .filter(|&u| &regions[u] == name)
                .collect();
            (name.clone(), units)
        })
        .max_by_key(|(name, units)| (units.len(), std::cmp::Reverse(name.clone())))
}

/// Trial-averaged rate (Hz) of each unit of `units` in each bin: `value(k, t, u)` averaged
/// over the trials where `keep(k, t, u)`; NaN where no trial counts.
fn trial_average(
    batch: &Batch,
    units: &[usize],
    binsize: f64,
    value: impl Fn(usize) -> f64,
    keep: impl Fn(usize) -> bool,
) -> Vec<Vec<f64>> {
    let (k_trials, t_bins, n) = (batch.len(), batch.n_bins, batch.n_units);
    units
        .iter()
        .map(|&u| {
            (0..t_bins)
                .map(|t| {
                    let (mut sum, mut count) = (0.0, 0usize);
                    for k in 0..k_trials {
                        let i = (k * t_bins + t) * n + u;
                        if keep(i) {
                            sum += value(i);
                            count += 1;
                        }
                    }
                    if count == 0 {
                        f64::NAN
                    } else {
                        sum / count as f64 / binsize
                    }
                })
                .collect()
        })
        .collect()
}

/// Which reference an activity score carries (baseline or ceiling).
type ReferenceOf = fn(&ActivityScore) -> Option<Reference>;

/// Writes `dir/{eid}/rasters` (when both region tasks were evaluated) and
/// `dir/{eid}/metrics`; returns the files written.
pub fn write_session(
    dir: &Path,
    session: &Session,
    batch: &Batch,
    inter: Option<TaskPredictions<'_>>,
    intra: Option<TaskPredictions<'_>>,
    results: &[TaskResult],
) -> Result<Vec<PathBuf>> {
    let (eid, regions, binsize) = (&session.eid, &session.regions, session.binsize);
    let folder = dir.join(eid);
    std::fs::create_dir_all(&folder).map_err(TrainError::io(&folder))?;
    let fail = |e: mtm_plot::PlotError| TrainError::Io {
        path: e.path,
        source: std::io::Error::other(e.message),
    };
    let mut written = Vec::new();
    if let (Some(inter), Some(intra), Some((region, units))) =
        (inter, intra, largest_region(regions))
    {
        let observed = trial_average(
            batch,
            &units,
            binsize,
            |i| f64::from(batch.spikes[i]),
            |_| true,
        );
        // Rows from the most to the least active unit, so the structure reads top down.
        let mut order: Vec<usize> = (0..units.len()).collect();
        let total = |row: &Vec<f64>| row.iter().filter(|v| v.is_finite()).sum::<f64>();
        order.sort_by(|&a, &b| total(&observed[b]).total_cmp(&total(&observed[a])));
        let predicted = |p: &TaskPredictions| {
            trial_average(
                batch,
                &units,
                binsize,
                |i| p.log_rates[i].exp(),
                |i| p.scored[i],
            )
        };
        let sorted = |m: Vec<Vec<f64>>| order.iter().map(|&r| m[r].clone()).collect();
        // The published window starts 0.5 s before stimulus onset.
        let window = batch.n_bins as f64 * binsize;
        let (x_origin, x_label) = if (window - 2.0).abs() < 1e-6 {
            (-0.5, "time from stimulus onset (s)")
        } else {
            (0.0, "time in trial (s)")
        };
        let figure = Heatmaps {
            title: format!(
                "{region}: {} units, mean of {} test trials",
                units.len(),
                batch.len()
            ),
            x_label: x_label.into(),
            y_label: "unit (most active first)".into(),
            value_label: "rate (Hz)".into(),
            x_origin,
            x_step: binsize,
            panels: vec![
                Heatmap {
                    title: "observed".into(),
                    values: sorted(observed),
                },
                Heatmap {
                    title: "predicted, inter-region masking".into(),
                    values: sorted(predicted(&inter)),
                },
                Heatmap {
                    title: "predicted, intra-region masking".into(),
                    values: sorted(predicted(&intra)),
                },
            ],
        };
        written.extend(mtm_plot::write_heatmaps(&folder.join("rasters"), &figure).map_err(fail)?);
    }
    let tasks = [Task::CoSmooth, Task::Forward, Task::Intra, Task::Inter];
    let activity = |task: Task| {
        results
            .iter()
            .find(|r| r.task == task)
            .and_then(|r| match &r.score {
                TaskScore::Activity(a) => Some(a),
                _ => None,
            })
    };
    let series = |label: &str, value: &dyn Fn(Task) -> Option<f64>| {
        (
            label.to_string(),
            tasks.iter().map(|&t| value(t)).collect::<Vec<_>>(),
        )
    };
    let mut bars = vec![series("model", &|t| {
        activity(t).and_then(|a| a.bps_per_unit_mean)
    })];
    let references: [(&str, ReferenceOf); 2] = [
        ("smoothing + GLM baseline", |a| a.baseline),
        ("true rates (ceiling)", |a| a.ceiling),
    ];
    for (label, reference) in references {
        let value = |t: Task| {
            activity(t)
                .and_then(reference)
                .and_then(|r| r.bps_per_unit_mean)
        };
        if tasks.iter().any(|&t| value(t).is_some()) {
            bars.push(series(label, &value));
        }
    }
    let chart = Bars {
        title: format!("{eid}: activity metrics (test split)"),
        y_label: "bits per spike (per-unit mean)".into(),
        categories: tasks.iter().map(|t| t.name().to_string()).collect(),
        series: bars,
    };
    written.extend(mtm_plot::write_bars(&folder.join("metrics"), &chart).map_err(fail)?);
    Ok(written)
}
