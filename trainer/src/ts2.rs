//! BrainWideBench's suite TS2 (co-smoothing and forecasting on its evaluation sessions), as
//! `ibl_bwb_eval` 0.1.0 and BWB's test loop define it; `docs/bwb.md` gives the contract.
//!
//! The model is scored on 1 s windows stepped by one 20 ms bin over the task-aligned
//! intervals that lie in the test domain, not on mtm's trial-aligned 2 s trials: the
//! windows come from the session's spike times ([`Recording`]), binned here. Co-smoothing
//! hides the held-out units (10 % of the session's units, chosen by a hash of their ids)
//! and scores them over the whole window; forecasting hides the last 5 bins of every unit
//! and scores those. Predictions are rounded to f16 before scoring, since that is what a
//! submission holds and what BWB's scorer reads; the metrics are then accumulated in f64
//! by BWB's formulas (Poisson D², its primary metric, and bits per spike pooled over units).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use half::f16;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Task;
use crate::error::{Result, TrainError};
use crate::masking::Masking;
use crate::model::Ndt;

/// Bin width, seconds.
pub const BIN: f64 = 0.02;
/// Window length, seconds (BWB's `COSMOOTH_TARGET_WINDOW` and `FORECAST_BASE_WINDOW`).
pub const WINDOW: f64 = 1.0;
/// Bins in a window.
pub const WINDOW_BINS: usize = 50;
/// Bins forecasting predicts: `FORECAST_RATIO` (0.1) of the window.
pub const FORECAST_BINS: usize = 5;
/// The training seeds BWB asks a submission to cover (at least three contiguous ones).
pub const SEEDS: std::ops::RangeInclusive<u64> = 43..=47;
/// The `ibl_bwb_eval` release whose contract this module follows, stamped in submissions.
pub const CONTRACT_VERSION: &str = "0.1.0";
/// The salt of the test hold-out hash (BWB's pipeline; the spelling decides the units).
pub const TEST_SALT: &str = "ts2_co_smoothing_test";
/// Fraction of a session's units co-smoothing holds out.
const HELD_OUT_RATIO: f64 = 0.1;
/// Below this a unit's mean count, or a D² denominator, is degenerate (BWB's `eps`).
const EPS: f64 = 1e-9;

/// The two scored TS2 tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ts2Task {
    /// Held-out units predicted from the others, over the whole window.
    CoSmoothing,
    /// The last 5 bins of every unit predicted from the bins before them.
    Forecasting,
}

impl Ts2Task {
    /// Both tasks, in the order they are run and reported.
    pub const ALL: [Ts2Task; 2] = [Ts2Task::CoSmoothing, Ts2Task::Forecasting];

    /// The flat task id a submission is filed under.
    pub fn id(self) -> &'static str {
        match self {
            Ts2Task::CoSmoothing => "ts2-co_smoothing",
            Ts2Task::Forecasting => "ts2-forecasting",
        }
    }

    /// mtm's evaluation task that hides the same kind of entries (its prompt token and
    /// whether attention is causal follow from it).
    fn mtm_task(self) -> Task {
        match self {
            Ts2Task::CoSmoothing => Task::CoSmooth,
            Ts2Task::Forecasting => Task::Forward,
        }
    }
}

/// One evaluation session as TS2 reads it from its BWB file.
#[derive(Clone, Debug)]
pub struct Recording {
    /// The session's eid (BWB's recording id).
    pub eid: String,
    /// Unit ids (cluster UUIDs), in the file's unit order, which is the model's.
    pub unit_ids: Vec<String>,
    /// The file's `ts2_co_smoothing_is_held_out_test` column, when it has one; otherwise
    /// the hold-out is computed by BWB's rule ([`held_out_units`]).
    pub held_out: Option<Vec<bool>>,
    /// Spike times, seconds, sorted.
    pub times: Vec<f64>,
    /// Row of `unit_ids` of each spike.
    pub units: Vec<u32>,
    /// `task_aligned_intervals/domain`: where windows may lie.
    pub task_domain: Vec<(f64, f64)>,
    /// `ts2_test_domain`: the test split.
    pub test_domain: Vec<(f64, f64)>,
    /// The build's unit filtering (`/brainset@unit_filtering`).
    pub unit_filtering: String,
    /// The build's version (`/brainset@derived_version`).
    pub dataset_version: String,
}

impl Recording {
    /// The units co-smoothing holds out: the file's column, or BWB's hash rule.
    pub fn held_out(&self) -> Vec<bool> {
        self.held_out
            .clone()
            .unwrap_or_else(|| held_out_units(&self.unit_ids, TEST_SALT))
    }

    /// The intervals windows are drawn from: task-aligned intervals within the test domain.
    pub fn intervals(&self) -> Vec<(f64, f64)> {
        intersect(&self.task_domain, &self.test_domain)
    }
}

/// BWB's hold-out: the `max(1, round(0.1 N))` units that come first when ordered by the
/// hex SHA-256 of `"{salt}:{unit_id}"` (a function of the ids alone, so a reordered unit
/// table holds out the same neurons).
pub fn held_out_units(ids: &[String], salt: &str) -> Vec<bool> {
    if ids.is_empty() {
        return Vec::new();
    }
    // Python's round() rounds halves to even.
    let k = ((HELD_OUT_RATIO * ids.len() as f64).round_ties_even() as usize).max(1);
    let digests: Vec<String> = ids
        .iter()
        .map(|id| {
            Sha256::digest(format!("{salt}:{id}").as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect();
    let mut order: Vec<usize> = (0..ids.len()).collect();
    // Stable, as Python's sorted: equal digests keep unit order.
    order.sort_by(|&a, &b| digests[a].cmp(&digests[b]));
    let mut mask = vec![false; ids.len()];
    for &u in &order[..k] {
        mask[u] = true;
    }
    mask
}

/// The intersection of two sets of sorted, disjoint intervals (temporaldata's `a & b`):
/// the non-empty overlaps, in time order.
pub fn intersect(a: &[(f64, f64)], b: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let start = a[i].0.max(b[j].0);
        let end = a[i].1.min(b[j].1);
        if start < end {
            out.push((start, end));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The windows of a set of intervals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Windows {
    /// Window start times, seconds, in order (the submission's `window_timestamps`).
    pub starts: Vec<f64>,
    /// Intervals shorter than a window, which hold none.
    pub short_intervals: usize,
}

/// torch_brain's `SequentialFixedWindowSampler` with BWB's settings: in each interval,
/// windows start at `start + i * BIN` while they fit, and one more window ends at the
/// interval's end when the last one did not. Starts are computed as `start + i * step`,
/// as `torch.arange` does, so they equal the ground truth's bit for bit.
pub fn windows(intervals: &[(f64, f64)]) -> Windows {
    let mut out = Windows::default();
    for &(start, end) in intervals {
        if end - start < WINDOW {
            out.short_intervals += 1;
            continue;
        }
        let count = ((end - start) / BIN).ceil() as usize;
        let mut last_end = f64::NEG_INFINITY;
        for i in 0..count {
            let t = start + i as f64 * BIN;
            if t + WINDOW <= end {
                out.starts.push(t);
                last_end = t + WINDOW;
            }
        }
        if last_end < end {
            out.starts.push(end - WINDOW);
        }
    }
    out
}

/// Counts `(WINDOW_BINS, n_units)` of the window starting at `start`: the spikes in
/// `[start, start + WINDOW)`, spike `t` in bin `floor((t - start) / BIN)` (torch_brain's
/// `bin_spikes` on the window's slice). `out` is overwritten.
pub fn bin_window(times: &[f64], units: &[u32], n_units: usize, start: f64, out: &mut [f32]) {
    out.fill(0.0);
    let end = start + WINDOW;
    let first = times.partition_point(|&t| t < start);
    let last = times.partition_point(|&t| t < end);
    let rate = 1.0 / BIN;
    for s in first..last {
        let bin = (((times[s] - start) * rate).floor() as usize).min(WINDOW_BINS - 1);
        out[bin * n_units + units[s] as usize] += 1.0;
    }
}

/// A task's two metrics.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Poisson D² (Cohen's pseudo-R²), the mean over units with spikes: the primary metric.
    pub poisson_d2: f64,
    /// Bits per spike over the units with spikes, pooled (NLB's convention).
    pub bps: f64,
}

/// Per-unit sums from which both metrics follow (BWB's metric states).
#[derive(Clone, Debug)]
struct PoissonSums {
    samples: f64,
    exp_rate: Vec<f64>,
    interaction: Vec<f64>,
    target_log_target: Vec<f64>,
    target: Vec<f64>,
}

impl PoissonSums {
    fn new(units: usize) -> Self {
        Self {
            samples: 0.0,
            exp_rate: vec![0.0; units],
            interaction: vec![0.0; units],
            target_log_target: vec![0.0; units],
            target: vec![0.0; units],
        }
    }

    /// Adds rows of log-rates and counts, `(rows, units)` each.
    fn add(&mut self, log_rates: &[f64], counts: &[f64]) {
        let units = self.target.len();
        for (p, y) in log_rates
            .chunks_exact(units)
            .zip(counts.chunks_exact(units))
        {
            for u in 0..units {
                self.exp_rate[u] += p[u].exp();
                self.interaction[u] += p[u] * y[u];
                if y[u] > 0.0 {
                    self.target_log_target[u] += y[u] * y[u].ln();
                }
                self.target[u] += y[u];
            }
            self.samples += 1.0;
        }
    }

    fn scores(&self) -> Scores {
        let units = self.target.len();
        // Bits per spike: units whose mean count is not degenerate, pooled.
        let (mut null_loss, mut pred_loss, mut spikes) = (0.0, 0.0, 0.0);
        for u in 0..units {
            let rate = self.target[u] / self.samples;
            if rate >= EPS {
                null_loss += self.target[u] * (1.0 - rate.ln());
                pred_loss += self.exp_rate[u] - self.interaction[u];
                spikes += self.target[u];
            }
        }
        let bps = if spikes > 0.0 {
            (null_loss - pred_loss) / (spikes * std::f64::consts::LN_2)
        } else {
            f64::NAN
        };
        // D²: each unit with spikes and a non-degenerate null deviance, then the mean.
        let mut d2 = Vec::new();
        for u in 0..units {
            if self.target[u] <= 0.0 {
                continue;
            }
            let pred = self.exp_rate[u] - self.interaction[u];
            let saturated = self.target[u] - self.target_log_target[u];
            let rate = (self.target[u] / self.samples).max(EPS);
            let null = self.target_log_target[u] - self.target[u] * rate.ln();
            if null.abs() >= EPS {
                d2.push(1.0 - (pred - saturated) / null);
            }
        }
        let poisson_d2 = if d2.is_empty() {
            f64::NAN
        } else {
            d2.iter().sum::<f64>() / d2.len() as f64
        };
        Scores { poisson_d2, bps }
    }
}

/// One task's predictions on one recording: what a submission file holds, and its scores.
#[derive(Clone, Debug)]
pub struct TaskPredictions {
    /// The task.
    pub task: Ts2Task,
    /// Window start times, seconds.
    pub window_starts: Vec<f64>,
    /// `(windows, bins, units)` of `predictions`: 50 bins of the held-out units
    /// (co-smoothing) or the last 5 bins of every unit (forecasting).
    pub shape: [usize; 3],
    /// Log expected counts per bin, rounded to f16.
    pub predictions: Vec<f16>,
    /// Ids of the scored units, in the order of the last axis.
    pub unit_ids: Vec<String>,
    /// The metrics on these predictions.
    pub scores: Scores,
}

/// How to run the model on TS2 windows.
#[derive(Clone, Copy, Debug)]
pub struct Ts2Options {
    /// The masking the model was trained with (decides the prompt tokens).
    pub masking: Masking,
    /// Windows per forward pass.
    pub windows_per_pass: usize,
}

/// Predicts and scores `task` on `recording` with `model`'s session `session`.
/// `progress` is told how many windows are done, after each pass.
pub fn predict(
    model: &Ndt,
    session: usize,
    recording: &Recording,
    task: Ts2Task,
    options: &Ts2Options,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<TaskPredictions> {
    let n = recording.unit_ids.len();
    let spec = &model.sessions()[session];
    if spec.n_units != n {
        return Err(TrainError::Mismatch(format!(
            "session {}: the model has {} units, the BWB file {}; TS2 needs the file's units \
             in the file's order (ingest the evaluation sessions without --good-only or \
             --min-rate)",
            recording.eid, spec.n_units, n
        )));
    }
    if recording.units.len() != recording.times.len()
        || recording.units.iter().any(|&u| u as usize >= n)
    {
        return Err(TrainError::Mismatch(format!(
            "session {}: spike unit indices do not fit its {n} units",
            recording.eid
        )));
    }
    let held_out = recording.held_out();
    if held_out.len() != n {
        return Err(TrainError::Mismatch(format!(
            "session {}: the hold-out column has {} entries for {n} units",
            recording.eid,
            held_out.len()
        )));
    }
    let held: Vec<usize> = (0..n).filter(|&u| held_out[u]).collect();
    let scored_units: Vec<usize> = match task {
        Ts2Task::CoSmoothing => held.clone(),
        Ts2Task::Forecasting => (0..n).collect(),
    };
    let scored_bins = match task {
        Ts2Task::CoSmoothing => 0..WINDOW_BINS,
        Ts2Task::Forecasting => WINDOW_BINS - FORECAST_BINS..WINDOW_BINS,
    };
    let starts = windows(&recording.intervals()).starts;
    let device = model.device();
    let mtm_task = task.mtm_task();
    let prompt = options
        .masking
        .prompted()
        .then(|| mtm_task.scheme().prompt());
    let causal = task == Ts2Task::Forecasting;
    let per_window = WINDOW_BINS * n;
    let (bins_out, units_out) = (scored_bins.len(), scored_units.len());
    let mut predictions = Vec::with_capacity(starts.len() * bins_out * units_out);
    let mut sums = PoissonSums::new(units_out);
    let chunk = options.windows_per_pass.max(1);
    let mut counts = vec![0.0f32; chunk * per_window];
    for (c, group) in starts.chunks(chunk).enumerate() {
        let rows = group.len();
        for (r, &start) in group.iter().enumerate() {
            bin_window(
                &recording.times,
                &recording.units,
                n,
                start,
                &mut counts[r * per_window..(r + 1) * per_window],
            );
        }
        // The model's input: the counts with the held-out entries removed.
        let mut input = counts[..rows * per_window].to_vec();
        for r in 0..rows {
            let window = &mut input[r * per_window..(r + 1) * per_window];
            match task {
                Ts2Task::CoSmoothing => {
                    for bin in 0..WINDOW_BINS {
                        for &u in &held {
                            window[bin * n + u] = 0.0;
                        }
                    }
                }
                Ts2Task::Forecasting => window[scored_bins.start * n..].fill(0.0),
            }
        }
        let x = Tensor::<3>::from_data(TensorData::new(input, [rows, WINDOW_BINS, n]), &device);
        let out = model
            .forward(x, session, prompt, causal)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| TrainError::Mismatch(format!("reading predictions: {e:?}")))?;
        let mut rates = Vec::with_capacity(rows * bins_out * units_out);
        let mut targets = Vec::with_capacity(rates.capacity());
        for r in 0..rows {
            for bin in scored_bins.clone() {
                for &u in &scored_units {
                    let i = r * per_window + bin * n + u;
                    let p = f16::from_f32(out[i]);
                    predictions.push(p);
                    rates.push(f64::from(p.to_f32()));
                    targets.push(f64::from(counts[i]));
                }
            }
        }
        sums.add(&rates, &targets);
        progress(c * chunk + rows, starts.len());
    }
    if let Some(bad) = predictions.iter().position(|p| !p.is_finite()) {
        return Err(TrainError::Mismatch(format!(
            "session {} {}: prediction {bad} is not finite in f16 (a log-rate beyond ±65504)",
            recording.eid,
            task.id()
        )));
    }
    Ok(TaskPredictions {
        task,
        shape: [starts.len(), bins_out, units_out],
        window_starts: starts,
        predictions,
        unit_ids: scored_units
            .iter()
            .map(|&u| format!("{}/{}", recording.eid, recording.unit_ids[u]))
            .collect(),
        scores: sums.scores(),
    })
}

/// Where a submission's file for (label, task, recording, seed) lies under `dir`:
/// `{label}/{task}/{recording}/seed_{seed}.safetensors`, the layout `ibl_bwb_eval`'s
/// `PredictionsWriter` writes and its scorer reads.
pub fn submission_path(dir: &Path, label: &str, task: Ts2Task, eid: &str, seed: u64) -> PathBuf {
    dir.join(label)
        .join(task.id())
        .join(eid)
        .join(format!("seed_{seed}.safetensors"))
}

/// Writes one submission file: `predictions` (f16), `window_timestamps` (f64) and
/// `unit_ids` (`"{eid}/{unit}"` as ASCII rows padded with NUL to the longest), with the
/// string metadata `PredictionsWriter` stamps. Written under a temporary name and renamed.
pub fn write_submission(
    dir: &Path,
    label: &str,
    seed: u64,
    recording: &Recording,
    p: &TaskPredictions,
) -> Result<PathBuf> {
    let path = submission_path(dir, label, p.task, &recording.eid, seed);
    let folder = path.parent().expect("a file under a folder");
    std::fs::create_dir_all(folder).map_err(TrainError::io(folder))?;
    let predictions: Vec<u8> = p.predictions.iter().flat_map(|v| v.to_le_bytes()).collect();
    let timestamps: Vec<u8> = p
        .window_starts
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let width = p.unit_ids.iter().map(String::len).max().unwrap_or(0);
    let mut ids = vec![0u8; p.unit_ids.len() * width];
    for (row, id) in p.unit_ids.iter().enumerate() {
        if !id.is_ascii() {
            return Err(TrainError::Mismatch(format!(
                "unit id {id:?} is not ASCII, which a submission's unit_ids require"
            )));
        }
        ids[row * width..row * width + id.len()].copy_from_slice(id.as_bytes());
    }
    let tensors = vec![
        (
            "predictions",
            TensorView::new(Dtype::F16, p.shape.to_vec(), &predictions)
                .expect("shape matches the buffer"),
        ),
        (
            "window_timestamps",
            TensorView::new(Dtype::F64, vec![p.window_starts.len()], &timestamps)
                .expect("shape matches the buffer"),
        ),
        (
            "unit_ids",
            TensorView::new(Dtype::U8, vec![p.unit_ids.len(), width], &ids)
                .expect("shape matches the buffer"),
        ),
    ];
    let metadata = HashMap::from(
        [
            ("label", label.to_string()),
            ("task", p.task.id().to_string()),
            ("seed", seed.to_string()),
            ("ibl_bwb_eval_version", CONTRACT_VERSION.to_string()),
            ("recording_id", recording.eid.clone()),
            ("unit_filtering", recording.unit_filtering.clone()),
            ("dataset_version", recording.dataset_version.clone()),
            // str() of BWB's floats, as PredictionsWriter writes them.
            ("context_window", format!("{WINDOW:?}")),
            ("bin_size", format!("{BIN:?}")),
            ("written_by", format!("mtm {}", env!("CARGO_PKG_VERSION"))),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let partial = path.with_extension("safetensors.partial");
    safetensors::serialize_to_file(tensors, Some(metadata), &partial).map_err(|e| {
        TrainError::Io {
            path: partial.clone(),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    std::fs::rename(&partial, &path).map_err(TrainError::io(&path))?;
    Ok(path)
}

/// One task's scores on one session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ts2TaskScore {
    /// The task.
    pub task: Ts2Task,
    /// Poisson D², BWB's primary metric.
    pub poisson_d2: f64,
    /// Bits per spike, pooled over units.
    pub bps: f64,
}

/// One session's TS2 results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ts2Session {
    /// The session (BWB's recording id).
    pub eid: String,
    /// Units in the file.
    pub units: usize,
    /// Units co-smoothing held out.
    pub held_out_units: usize,
    /// Windows scored.
    pub windows: usize,
    /// Test intervals shorter than a window (holding none).
    pub short_intervals: usize,
    /// Each task's scores.
    pub tasks: Vec<Ts2TaskScore>,
}

/// `mtm eval --protocol bwb`'s report for one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ts2Report {
    /// The checkpoint evaluated.
    pub checkpoint: String,
    /// Its training seed (a submission files it under `seed_{seed}`).
    pub seed: u64,
    /// The `ibl_bwb_eval` contract followed.
    pub contract: String,
    /// Each session, in the order evaluated.
    pub sessions: Vec<Ts2Session>,
    /// Each task's mean over sessions.
    pub mean: Vec<Ts2TaskScore>,
}

impl Ts2Session {
    /// A session's entry from its predictions.
    pub fn new(recording: &Recording, predictions: &[TaskPredictions]) -> Self {
        let windows = windows(&recording.intervals());
        Self {
            eid: recording.eid.clone(),
            units: recording.unit_ids.len(),
            held_out_units: recording.held_out().iter().filter(|&&h| h).count(),
            windows: windows.starts.len(),
            short_intervals: windows.short_intervals,
            tasks: predictions
                .iter()
                .map(|p| Ts2TaskScore {
                    task: p.task,
                    poisson_d2: p.scores.poisson_d2,
                    bps: p.scores.bps,
                })
                .collect(),
        }
    }
}

impl Ts2Report {
    /// The report of `sessions`, with each task's mean over them.
    pub fn new(checkpoint: String, seed: u64, sessions: Vec<Ts2Session>) -> Self {
        let mean = Ts2Task::ALL
            .iter()
            .filter_map(|&task| {
                let scores: Vec<&Ts2TaskScore> = sessions
                    .iter()
                    .flat_map(|s| &s.tasks)
                    .filter(|t| t.task == task)
                    .collect();
                let n = scores.len() as f64;
                (!scores.is_empty()).then(|| Ts2TaskScore {
                    task,
                    poisson_d2: scores.iter().map(|t| t.poisson_d2).sum::<f64>() / n,
                    bps: scores.iter().map(|t| t.bps).sum::<f64>() / n,
                })
            })
            .collect();
        Self {
            checkpoint,
            seed,
            contract: format!("ibl_bwb_eval {CONTRACT_VERSION} (TS2)"),
            sessions,
            mean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_step_by_a_bin_and_end_at_each_interval_end() {
        let w = windows(&[(10.0, 11.05), (20.0, 20.5), (30.0, 31.0)]);
        assert_eq!(w.short_intervals, 1);
        // 10.00, 10.02, 10.04 fit; 10.05 is the window ending at 11.05; 30.0 fits exactly.
        assert_eq!(w.starts.len(), 5, "{:?}", w.starts);
        assert_eq!(w.starts[1], 10.0 + BIN);
        assert!((w.starts[3] - 10.05).abs() < 1e-12);
        assert_eq!(w.starts[4], 30.0);
    }

    #[test]
    fn intersection_keeps_the_overlaps_only() {
        let a = [(0.0, 2.0), (3.0, 5.0), (6.0, 7.0)];
        let b = [(1.0, 3.5), (4.0, 10.0)];
        assert_eq!(
            intersect(&a, &b),
            vec![(1.0, 2.0), (3.0, 3.5), (4.0, 5.0), (6.0, 7.0)]
        );
        assert!(intersect(&a, &[]).is_empty());
    }

    #[test]
    fn the_hold_out_is_a_tenth_of_the_units_and_follows_the_ids() {
        let ids: Vec<String> = (0..25).map(|i| format!("unit-{i}")).collect();
        let mask = held_out_units(&ids, TEST_SALT);
        // round(2.5) = 2 in Python.
        assert_eq!(mask.iter().filter(|&&m| m).count(), 2);
        let mut reversed = ids.clone();
        reversed.reverse();
        let back = held_out_units(&reversed, TEST_SALT);
        for (i, id) in ids.iter().enumerate() {
            let j = reversed.iter().position(|r| r == id).unwrap();
            assert_eq!(mask[i], back[j], "{id}");
        }
        // Another salt scrambles differently; one unit still holds out one.
        assert_ne!(mask, held_out_units(&ids, "ts2_co_smoothing_val"));
        assert_eq!(held_out_units(&ids[..1], TEST_SALT), vec![true]);
    }

    #[test]
    fn a_window_bins_its_own_spikes_only() {
        let times = [0.99, 1.0, 1.019, 1.02, 1.5, 1.999, 2.0];
        let units = [0, 1, 1, 0, 1, 0, 1];
        let mut out = vec![0.0; WINDOW_BINS * 2];
        bin_window(&times, &units, 2, 1.0, &mut out);
        assert_eq!(out.iter().sum::<f32>(), 5.0);
        assert_eq!(out[1], 2.0); // bin 0, unit 1: 1.0 and 1.019
        assert_eq!(out[2], 1.0); // bin 1, unit 0: 1.02
        assert_eq!(out[25 * 2 + 1], 1.0);
        assert_eq!(out[49 * 2], 1.0);
    }

    #[test]
    fn perfect_rates_beat_the_mean_and_the_mean_scores_zero() {
        // Two units over 4 samples (means 1 and 1); predicting the mean gives D² = bps = 0.
        let counts = [0.0, 2.0, 1.0, 0.0, 3.0, 2.0, 0.0, 0.0];
        let mean = [1.0f64, 1.0];
        let null: Vec<f64> = (0..8).map(|i| mean[i % 2].ln()).collect();
        let mut sums = PoissonSums::new(2);
        sums.add(&null, &counts);
        let s = sums.scores();
        assert!(s.poisson_d2.abs() < 1e-12 && s.bps.abs() < 1e-12, "{s:?}");
        let close: Vec<f64> = counts.iter().map(|&c: &f64| (c + 0.01).ln()).collect();
        let mut sums = PoissonSums::new(2);
        sums.add(&close, &counts);
        let s = sums.scores();
        assert!(s.poisson_d2 > 0.9 && s.bps > 0.5, "{s:?}");
    }
}
