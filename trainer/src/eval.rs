//! The paper's evaluation (spec §4) on one split of every session the model knows.
//!
//! Leave-one-out tasks are batched: a forward pass holds up to `rows_per_pass` copies of
//! test trials, each copy with its own held-out unit (or region), and each unit is scored
//! only from the copy that held it out. The official code instead runs about N/8 passes
//! over the test set per task; the report counts the passes taken both ways.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use mtm_dataloader::dataset::{Batch, Dataset};
use mtm_dataloader::session::Split;
use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;

use crate::config::Task;
use crate::decode::{self, DecodeScore};
use crate::error::{Result, TrainError};
use crate::masking::{Masking, region_indices};
use crate::metrics::{bps_per_unit_mean, bps_pooled_nlb};
use crate::model::Ndt;

/// What to evaluate and how.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The split scored (spec: test).
    pub split: Split,
    /// Tasks, in the order they run.
    pub tasks: Vec<Task>,
    /// Trial copies per forward pass in the leave-one-out tasks.
    pub rows_per_pass: usize,
    /// Fraction of bins forward prediction predicts.
    pub forward_fraction: f64,
    /// Sessions to evaluate by eid (empty: every session both the model and data have).
    pub sessions: Vec<String>,
    /// Folder for per-task predictions (safetensors), if wanted.
    pub save_predictions: Option<PathBuf>,
    /// The masking the model was trained with (decides whether prompts are used).
    pub masking: Masking,
    /// Seed of the decoders' fold assignment.
    pub seed: u64,
    /// Units held out together in co-smoothing and intra-region (within one region): 1 is
    /// exact leave-one-out; 8 is the official code's grouping, 8x cheaper.
    pub heldout_group: usize,
}

impl EvalOptions {
    /// The run's evaluation settings on the test split of every session it trained on.
    pub fn from_config(config: &crate::config::RunConfig) -> Self {
        Self {
            split: Split::Test,
            tasks: config.eval.tasks.clone(),
            rows_per_pass: config.eval.rows_per_pass,
            forward_fraction: config.eval.forward_fraction,
            sessions: Vec::new(),
            save_predictions: None,
            masking: config.masking.scheme,
            seed: config.seed,
            heldout_group: config.eval.heldout_group,
        }
    }
}

/// An activity task's scores.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActivityScore {
    /// The MtM paper's bits per spike: mean over units with scored spikes.
    pub bps_per_unit_mean: Option<f64>,
    /// Units that mean averages.
    pub units_scored: usize,
    /// The Neural Latents Benchmark's pooled bits per spike.
    pub bps_pooled_nlb: Option<f64>,
    /// Forward passes taken.
    pub forward_passes: usize,
    /// Passes the official scheme (about N/8 full passes over the split) would take.
    pub official_passes: usize,
    /// Wall time of the task, seconds.
    pub wall_s: f64,
}

/// One task's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TaskScore {
    /// Bits per spike.
    Activity(ActivityScore),
    /// Behaviour decoding.
    Decoding(DecodeScore),
    /// The task could not run on this session (e.g. no whisker column).
    Skipped {
        /// Why.
        skipped: String,
    },
}

impl TaskScore {
    /// The number in the table: bps per-unit mean, accuracy or R².
    pub fn headline(&self) -> Option<f64> {
        match self {
            TaskScore::Activity(a) => a.bps_per_unit_mean,
            TaskScore::Decoding(d) => Some(d.value),
            TaskScore::Skipped { .. } => None,
        }
    }
}

/// A task's name and result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskResult {
    /// The task.
    pub task: Task,
    /// Its scores.
    #[serde(flatten)]
    pub score: TaskScore,
}

/// One session's results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionReport {
    /// Session id.
    pub eid: String,
    /// Units.
    pub n_units: usize,
    /// Trials of the evaluated split.
    pub trials: usize,
    /// Results, in task order.
    pub tasks: Vec<TaskResult>,
}

/// The whole evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The split scored.
    pub split: String,
    /// The masking the model was trained with.
    pub masking: String,
    /// Per-session results.
    pub sessions: Vec<SessionReport>,
    /// Each task's headline number averaged over sessions (None when no session has it).
    pub mean: Vec<(Task, Option<f64>)>,
}

/// Evaluates `model` on `dataset`; `progress` is told each (session, task) as it starts.
pub fn evaluate(
    model: &Ndt,
    dataset: &Dataset,
    options: &EvalOptions,
    progress: &mut dyn FnMut(&str, Task),
) -> Result<Report> {
    let device = model.device();
    let mut sessions = Vec::new();
    for (index, session) in dataset.sessions.iter().enumerate() {
        if !options.sessions.is_empty() && !options.sessions.contains(&session.eid) {
            continue;
        }
        let Some(model_index) = model.session_index(&session.eid) else {
            continue;
        };
        if model.sessions()[model_index].n_units != session.n_units {
            return Err(TrainError::Mismatch(format!(
                "session {} has {} units in {} but {} in the checkpoint",
                session.eid,
                session.n_units,
                dataset.root,
                model.sessions()[model_index].n_units
            )));
        }
        let n = session.trials(options.split);
        if n == 0 {
            continue;
        }
        let all: Vec<u32> = (0..n as u32).collect();
        let batch = dataset.read_batch(index, options.split, &all)?;
        let regions = region_indices(&session.regions);
        let ctx = Context {
            model,
            device: &device,
            session: model_index,
            options,
        };
        let mut tasks = Vec::new();
        for &task in &options.tasks {
            progress(&session.eid, task);
            let score = match task {
                Task::Choice | Task::Whisker => ctx.decode(dataset, index, task, &batch)?,
                _ => {
                    let (score, saved) = ctx.activity(task, &batch, &regions)?;
                    if let Some(dir) = &options.save_predictions {
                        save_predictions(dir, &session.eid, task, &batch, &saved)?;
                    }
                    TaskScore::Activity(score)
                }
            };
            tasks.push(TaskResult { task, score });
        }
        sessions.push(SessionReport {
            eid: session.eid.clone(),
            n_units: session.n_units,
            trials: n,
            tasks,
        });
    }
    if sessions.is_empty() {
        return Err(TrainError::Mismatch(format!(
            "no session of {} is both in the checkpoint and has {} trials{}",
            dataset.root,
            options.split.name(),
            if options.sessions.is_empty() {
                String::new()
            } else {
                format!(" among {}", options.sessions.join(", "))
            }
        )));
    }
    Ok(summarize(
        options.split.name(),
        options.masking.name(),
        &options.tasks,
        sessions,
    ))
}

/// A report over `sessions` (evaluated separately, e.g. one fine-tuned model each), with
/// each task's headline number averaged over the sessions that have it.
pub fn summarize(
    split: &str,
    masking: &str,
    tasks: &[Task],
    sessions: Vec<SessionReport>,
) -> Report {
    let mean = tasks
        .iter()
        .map(|&task| {
            let values: Vec<f64> = sessions
                .iter()
                .filter_map(|s| {
                    s.tasks
                        .iter()
                        .find(|t| t.task == task)
                        .and_then(|t| t.score.headline())
                })
                .collect();
            let mean =
                (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
            (task, mean)
        })
        .collect();
    Report {
        split: split.to_string(),
        masking: masking.to_string(),
        sessions,
        mean,
    }
}

/// Held-out units of one copy, and the units scored from it.
struct Probe {
    zero: Vec<usize>,
    score: Vec<usize>,
}

/// Predictions of one activity task: log-rates and the scored mask, `(K, T, N)`.
struct Predictions {
    log_rates: Vec<f64>,
    scored: Vec<bool>,
}

struct Context<'a> {
    model: &'a Ndt,
    device: &'a Device,
    session: usize,
    options: &'a EvalOptions,
}

impl Context<'_> {
    fn prompt(&self, task: Task) -> Option<usize> {
        self.options
            .masking
            .prompted()
            .then(|| task.scheme().prompt())
    }

    fn forward(
        &self,
        input: Vec<f32>,
        rows: usize,
        batch: &Batch,
        task: Task,
        causal: bool,
    ) -> Result<Vec<f32>> {
        let x = Tensor::<3>::from_data(
            TensorData::new(input, [rows, batch.n_bins, batch.n_units]),
            self.device,
        );
        self.model
            .forward(x, self.session, self.prompt(task), causal)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| TrainError::Mismatch(format!("reading predictions: {e:?}")))
    }

    fn activity(
        &self,
        task: Task,
        batch: &Batch,
        regions: &[usize],
    ) -> Result<(ActivityScore, Predictions)> {
        let started = Instant::now();
        let (k, t, n) = (batch.len(), batch.n_bins, batch.n_units);
        let trial = t * n;
        let mut log_rates = vec![0.0f64; k * trial];
        let mut scored = vec![false; k * trial];
        let mut passes = 0;
        let official_passes = n.div_ceil(8);
        if task == Task::Forward {
            let cut =
                t - ((t as f64 * self.options.forward_fraction).round() as usize).clamp(1, t - 1);
            let chunk = self.options.rows_per_pass.max(1);
            for start in (0..k).step_by(chunk) {
                let rows = chunk.min(k - start);
                let mut input = batch.spikes[start * trial..(start + rows) * trial].to_vec();
                for r in 0..rows {
                    input[r * trial + cut * n..(r + 1) * trial].fill(0.0);
                }
                let out = self.forward(input, rows, batch, task, true)?;
                for r in 0..rows {
                    for i in cut * n..trial {
                        log_rates[(start + r) * trial + i] = f64::from(out[r * trial + i]);
                        scored[(start + r) * trial + i] = true;
                    }
                }
                passes += 1;
            }
            let score = self.score(&log_rates, batch, &scored, passes, 1, started);
            return Ok((score, Predictions { log_rates, scored }));
        }
        let probes: Vec<Probe> = match task {
            Task::CoSmooth => (0..n)
                .collect::<Vec<_>>()
                .chunks(self.options.heldout_group.max(1))
                .map(|units| Probe {
                    zero: units.to_vec(),
                    score: units.to_vec(),
                })
                .collect(),
            Task::Intra => {
                let n_regions = regions.iter().max().map_or(0, |m| m + 1);
                let mut probes = Vec::new();
                for r in 0..n_regions {
                    let inside: Vec<usize> = (0..n).filter(|&v| regions[v] == r).collect();
                    for held in inside.chunks(self.options.heldout_group.max(1)) {
                        probes.push(Probe {
                            zero: (0..n)
                                .filter(|&v| regions[v] != r || held.contains(&v))
                                .collect(),
                            score: held.to_vec(),
                        });
                    }
                }
                probes
            }
            Task::Inter => {
                let n_regions = regions.iter().max().map_or(0, |m| m + 1);
                (0..n_regions)
                    .map(|r| {
                        let units: Vec<usize> = (0..n).filter(|&v| regions[v] == r).collect();
                        Probe {
                            zero: units.clone(),
                            score: units,
                        }
                    })
                    .collect()
            }
            _ => unreachable!("decoding tasks are handled elsewhere"),
        };
        let rows: Vec<(usize, usize)> = (0..probes.len())
            .flat_map(|p| (0..k).map(move |trial_index| (p, trial_index)))
            .collect();
        for chunk in rows.chunks(self.options.rows_per_pass.max(1)) {
            let mut input = Vec::with_capacity(chunk.len() * trial);
            for &(p, kk) in chunk {
                let start = input.len();
                input.extend_from_slice(&batch.spikes[kk * trial..(kk + 1) * trial]);
                for bin in 0..t {
                    for &u in &probes[p].zero {
                        input[start + bin * n + u] = 0.0;
                    }
                }
            }
            let out = self.forward(input, chunk.len(), batch, task, false)?;
            for (r, &(p, kk)) in chunk.iter().enumerate() {
                for bin in 0..t {
                    for &u in &probes[p].score {
                        let i = bin * n + u;
                        log_rates[kk * trial + i] = f64::from(out[r * trial + i]);
                        scored[kk * trial + i] = true;
                    }
                }
            }
            passes += 1;
        }
        let official = if task == Task::Inter {
            probes.len()
        } else {
            official_passes
        };
        let score = self.score(&log_rates, batch, &scored, passes, official, started);
        Ok((score, Predictions { log_rates, scored }))
    }

    fn score(
        &self,
        log_rates: &[f64],
        batch: &Batch,
        scored: &[bool],
        passes: usize,
        official_passes: usize,
        started: Instant,
    ) -> ActivityScore {
        let counts: Vec<f64> = batch.spikes.iter().map(|&c| f64::from(c)).collect();
        let per_unit = bps_per_unit_mean(log_rates, &counts, scored, batch.n_units);
        ActivityScore {
            bps_per_unit_mean: per_unit.map(|(v, _)| v),
            units_scored: per_unit.map_or(0, |(_, u)| u),
            bps_pooled_nlb: bps_pooled_nlb(log_rates, &counts, scored, batch.n_units),
            forward_passes: passes,
            official_passes,
            wall_s: started.elapsed().as_secs_f64(),
        }
    }

    /// Predicted log-rates of unmasked trials, flattened per trial.
    fn features(&self, batch: &Batch, task: Task) -> Result<Vec<f32>> {
        let trial = batch.n_bins * batch.n_units;
        let chunk = self.options.rows_per_pass.max(1);
        let mut out = Vec::with_capacity(batch.spikes.len());
        for start in (0..batch.len()).step_by(chunk) {
            let rows = chunk.min(batch.len() - start);
            let input = batch.spikes[start * trial..(start + rows) * trial].to_vec();
            out.extend(self.forward(input, rows, batch, task, task.scheme().causal())?);
        }
        Ok(out)
    }

    fn decode(
        &self,
        dataset: &Dataset,
        index: usize,
        task: Task,
        test: &Batch,
    ) -> Result<TaskScore> {
        let session = &dataset.sessions[index];
        let has = match task {
            Task::Choice => session.behaviour.choice,
            _ => session.behaviour.whisker,
        };
        if !has {
            return Ok(TaskScore::Skipped {
                skipped: format!("session has no {} column", task.name()),
            });
        }
        // Fit on train + val, score on the evaluated split.
        let mut fit_x = Vec::new();
        let mut fit_b: Vec<Vec<f32>> = Vec::new();
        for split in [Split::Train, Split::Val] {
            let n = session.trials(split);
            if n == 0 || split == self.options.split {
                continue;
            }
            let all: Vec<u32> = (0..n as u32).collect();
            let batch = dataset.read_batch(index, split, &all)?;
            fit_x.extend(self.features(&batch, task)?);
            fit_b.push(behaviour(&batch, task));
            dataset.recycle(batch);
        }
        let fit_y: Vec<f32> = fit_b.concat();
        let test_x = self.features(test, task)?;
        let test_y = behaviour(test, task);
        let dim = test.n_bins * test.n_units;
        if fit_x.len() / dim < 2 * decode::FOLDS {
            return Ok(TaskScore::Skipped {
                skipped: format!("{} fit trials are too few for 4-fold CV", fit_x.len() / dim),
            });
        }
        Ok(TaskScore::Decoding(match task {
            Task::Choice => {
                let label = |v: &f32| *v > 0.0;
                decode::logistic_accuracy(
                    &fit_x,
                    &fit_y.iter().map(label).collect::<Vec<_>>(),
                    &test_x,
                    &test_y.iter().map(label).collect::<Vec<_>>(),
                    dim,
                    self.options.seed,
                )
            }
            _ => {
                let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
                decode::ridge_r2(
                    &fit_x,
                    &wide(&fit_y),
                    &test_x,
                    &wide(&test_y),
                    dim,
                    test.n_bins,
                    self.options.seed,
                )
            }
        }))
    }
}

/// Choice (one value per trial) or whisker motion energy (one per bin) of a batch.
fn behaviour(batch: &Batch, task: Task) -> Vec<f32> {
    match task {
        Task::Choice => batch.choice.clone().unwrap_or_default(),
        _ => batch.whisker.clone().unwrap_or_default(),
    }
}

/// Writes `{dir}/{eid}/{task}.safetensors`: `log_rates` (f32), `counts` (f32) and `scored`
/// (u8), each `(K, T, N)`, so that any outside scorer can recompute the metrics.
fn save_predictions(
    dir: &Path,
    eid: &str,
    task: Task,
    batch: &Batch,
    p: &Predictions,
) -> Result<()> {
    let folder = dir.join(eid);
    std::fs::create_dir_all(&folder).map_err(TrainError::io(&folder))?;
    let shape = vec![batch.len(), batch.n_bins, batch.n_units];
    let f32_bytes =
        |v: &mut dyn Iterator<Item = f32>| v.flat_map(f32::to_le_bytes).collect::<Vec<u8>>();
    let rates = f32_bytes(&mut p.log_rates.iter().map(|&x| x as f32));
    let counts = f32_bytes(&mut batch.spikes.iter().copied());
    let scored: Vec<u8> = p.scored.iter().map(|&b| u8::from(b)).collect();
    fn view<'a>(dtype: Dtype, shape: &[usize], bytes: &'a [u8]) -> TensorView<'a> {
        TensorView::new(dtype, shape.to_vec(), bytes).expect("shape matches the buffer")
    }
    let tensors = vec![
        ("log_rates", view(Dtype::F32, &shape, &rates)),
        ("counts", view(Dtype::F32, &shape, &counts)),
        ("scored", view(Dtype::U8, &shape, &scored)),
    ];
    let metadata = std::collections::HashMap::from([
        ("eid".to_string(), eid.to_string()),
        ("task".to_string(), task.name().to_string()),
        (
            "layout".to_string(),
            "(trials, bins, units); log_rates are log expected counts per bin".to_string(),
        ),
    ]);
    let path = folder.join(format!("{}.safetensors", task.name()));
    safetensors::serialize_to_file(tensors, Some(metadata), &path).map_err(|e| TrainError::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// The report as a table in the paper's column order: one row per session and a mean row;
/// decoding cells carry the chance level in parentheses.
pub fn table(report: &Report) -> String {
    let tasks: Vec<Task> = report.mean.iter().map(|(t, _)| *t).collect();
    let mut out = format!("{:<38}", "session");
    for t in &tasks {
        out.push_str(&format!("{:>15}", t.name()));
    }
    out.push('\n');
    let cell = |v: Option<f64>| v.map_or(format!("{:>15}", "-"), |v| format!("{v:>15.4}"));
    for s in &report.sessions {
        out.push_str(&format!("{:<38}", s.eid));
        for t in &tasks {
            let result = s.tasks.iter().find(|r| r.task == *t).map(|r| &r.score);
            out.push_str(&match result {
                Some(TaskScore::Decoding(d)) => {
                    format!("{:>15}", format!("{:.4} ({:.2})", d.value, d.chance))
                }
                other => cell(other.and_then(TaskScore::headline)),
            });
        }
        out.push('\n');
    }
    if report.sessions.len() > 1 {
        out.push_str(&format!("{:<38}", "mean"));
        for (_, v) in &report.mean {
            out.push_str(&cell(*v));
        }
        out.push('\n');
    }
    out
}
