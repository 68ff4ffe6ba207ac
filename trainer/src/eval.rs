//! The paper's evaluation (spec §4) on one split of every session the model knows.
//!
//! Leave-one-out tasks are batched: a forward pass holds up to `rows_per_pass` copies of
//! test trials, each copy with its own held-out unit (or region), and each unit is scored
//! only from the copy that held it out. The official code instead runs about N/8 passes
//! over the test set per task; the report counts the passes taken both ways.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use mtm_cluster::{Collective, SingleProcess, all_gather_bytes};
use mtm_dataloader::dataset::{Batch, Dataset};
use mtm_dataloader::session::{Behaviour, Split};
use safetensors::tensor::{Dtype, TensorView};

use crate::baseline::{self, FitData};
use crate::baseline_cache::{BaselineCache, BaselineKey};
use crate::config::Task;
use crate::decode;
use crate::error::{Result, TrainError};
use crate::heldout;
use crate::masking::{Masking, region_indices};
use crate::model::Ndt;
use crate::report::{
    ActivityScore, Reference, Report, SessionReport, TaskResult, TaskScore, summarize,
};

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
    /// Folder for the pictures of each session (see [`crate::figures`]), if wanted.
    pub plots: Option<PathBuf>,
    /// The masking the model was trained with (decides whether prompts are used).
    pub masking: Masking,
    /// Seed of the decoders' fold assignment.
    pub seed: u64,
    /// Units held out together in co-smoothing and intra-region (within one region): 1 is
    /// exact leave-one-out; 8 is the official code's grouping, 8x cheaper.
    pub heldout_group: usize,
    /// Score the smoothing + Poisson GLM baseline on the same entries (see
    /// [`crate::baseline`]).
    pub baseline: bool,
    /// Folder where baseline scores are kept and reused (see [`crate::baseline_cache`]).
    pub baseline_cache: Option<PathBuf>,
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
            plots: None,
            masking: config.masking.scheme,
            seed: config.seed,
            heldout_group: config.eval.heldout_group,
            baseline: config.eval.baseline,
            baseline_cache: config.eval.baseline_cache.clone(),
        }
    }
}

/// Evaluates `model` on `options.split` of every session it and the dataset share (or of
/// `options.sessions`), in one process. `progress` is told each (session, task) as it
/// starts.
pub fn evaluate(
    model: &Ndt,
    dataset: &Dataset,
    options: &EvalOptions,
    progress: &mut dyn FnMut(&str, Task),
) -> Result<Report> {
    let shares = Shares::new(model, dataset, options, 1)?;
    evaluate_shared(
        model,
        dataset,
        options,
        &shares,
        &mut SingleProcess,
        progress,
    )
}

/// Which rank evaluates which session, decided once from the sessions' metadata: the same
/// answer on every rank.
pub struct Shares {
    /// The sessions to evaluate, as (dataset index, model index), in dataset order.
    eligible: Vec<(usize, usize)>,
    /// The rank that evaluates each of `eligible`.
    owners: Vec<usize>,
    /// Ranks the sessions are divided between.
    world: usize,
}

impl Shares {
    /// The sessions `evaluate_shared` scores, divided between `world` ranks: the largest
    /// (units x trials) first, each to the rank with the least work so far (the lowest rank
    /// on ties). An error when no session is both in the model and has trials in the split.
    pub fn new(
        model: &Ndt,
        dataset: &Dataset,
        options: &EvalOptions,
        world: usize,
    ) -> Result<Self> {
        let eligible = eligible(model, dataset, options)?;
        if eligible.is_empty() {
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
        let cost = |i: usize| {
            let s = &dataset.sessions[eligible[i].0];
            (s.n_units * s.trials(options.split)).max(1)
        };
        let mut order: Vec<usize> = (0..eligible.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(cost(i)), i));
        let world = world.max(1);
        let mut load = vec![0usize; world];
        let mut owners = vec![0; eligible.len()];
        for i in order {
            let rank = (0..world)
                .min_by_key(|&r| (load[r], r))
                .expect("at least one rank");
            owners[i] = rank;
            load[rank] += cost(i);
        }
        Ok(Self {
            eligible,
            owners,
            world,
        })
    }

    /// The sessions rank `rank` evaluates, as (dataset index, model index).
    fn of(&self, rank: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.eligible
            .iter()
            .zip(&self.owners)
            .filter(move |(_, owner)| **owner == rank)
            .map(|(&pair, _)| pair)
    }

    /// How many sessions rank `rank` evaluates (for a progress count).
    pub fn count(&self, rank: usize) -> usize {
        self.of(rank).count()
    }
}

/// Evaluates as [`evaluate`] does with the sessions divided between the ranks of
/// `collective` as `shares` says (every rank holds the same model): each rank scores its
/// share, the sessions' reports go round, and every rank returns the whole report. A
/// session's scores depend on nothing but the model, its data and the options, so the
/// report is the one a single process writes, number for number. A rank that fails still
/// takes part in the exchange, and every rank returns its error.
pub fn evaluate_shared(
    model: &Ndt,
    dataset: &Dataset,
    options: &EvalOptions,
    shares: &Shares,
    collective: &mut dyn Collective,
    progress: &mut dyn FnMut(&str, Task),
) -> Result<Report> {
    let (rank, world) = (collective.rank(), collective.world_size());
    if shares.world != world {
        return Err(TrainError::Mismatch(format!(
            "rank {rank}: the sessions were divided between {} ranks, but the run has {world}",
            shares.world
        )));
    }
    let mine: Result<Vec<(usize, SessionReport)>> = shares
        .of(rank)
        .map(|(index, model_index)| {
            evaluate_session(model, dataset, options, index, model_index, progress)
                .map(|report| (index, report))
        })
        .collect();
    let mut sessions = if world == 1 {
        mine?
    } else {
        let shard = Shard(mine.map_err(|e| e.to_string()));
        let mut bytes = Vec::new();
        ciborium::into_writer(&shard, &mut bytes)
            .map_err(|e| TrainError::Mismatch(format!("rank {rank}: encoding its reports: {e}")))?;
        let mut all = Vec::new();
        for (from, bytes) in all_gather_bytes(collective, &bytes)?
            .into_iter()
            .enumerate()
        {
            let Shard(reports) = ciborium::from_reader(bytes.as_slice()).map_err(|e| {
                TrainError::Mismatch(format!("rank {rank}: decoding rank {from}'s reports: {e}"))
            })?;
            all.extend(reports.map_err(|message| {
                TrainError::Mismatch(format!("evaluation on rank {from}: {message}"))
            })?);
        }
        all
    };
    // The dataset's order, whichever rank scored a session.
    sessions.sort_by_key(|(index, _)| *index);
    Ok(summarize(
        options.split.name(),
        options.masking.name(),
        &options.tasks,
        sessions.into_iter().map(|(_, report)| report).collect(),
    ))
}

/// One rank's evaluated sessions (dataset index and report), or its error in words.
#[derive(serde::Serialize, serde::Deserialize)]
struct Shard(std::result::Result<Vec<(usize, SessionReport)>, String>);

/// The sessions to evaluate, as (dataset index, model index), in dataset order: those both
/// the model and the dataset have (among `options.sessions` when given) with trials in the
/// split. A session whose unit count differs from the checkpoint's is an error.
fn eligible(model: &Ndt, dataset: &Dataset, options: &EvalOptions) -> Result<Vec<(usize, usize)>> {
    let mut out = Vec::new();
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
        if session.trials(options.split) > 0 {
            out.push((index, model_index));
        }
    }
    Ok(out)
}

/// Every task on one session: its report, and its predictions and pictures when asked.
fn evaluate_session(
    model: &Ndt,
    dataset: &Dataset,
    options: &EvalOptions,
    index: usize,
    model_index: usize,
    progress: &mut dyn FnMut(&str, Task),
) -> Result<SessionReport> {
    let device = model.device();
    let generator = dataset.generator();
    let session = &dataset.sessions[index];
    let n = session.trials(options.split);
    let all: Vec<u32> = (0..n as u32).collect();
    let batch = dataset.read_batch(index, options.split, &all)?;
    let regions = region_indices(&session.regions);
    let activity_tasks = options.tasks.iter().any(|t| t.is_activity());
    let read_split = |split: Split| -> Result<Option<Batch>> {
        let n = session.trials(split);
        if n == 0 || split == options.split {
            return Ok(None);
        }
        let all: Vec<u32> = (0..n as u32).collect();
        Ok(Some(dataset.read_batch(index, split, &all)?))
    };
    let (train, val) = if options.baseline && activity_tasks {
        (read_split(Split::Train)?, read_split(Split::Val)?)
    } else {
        (None, None)
    };
    let truth = if activity_tasks {
        generator
            .as_ref()
            .and_then(|g| g.true_log_rates(&session.eid))
            .map(|r| r[options.split as usize].clone())
            .filter(|r| r.len() == batch.spikes.len())
    } else {
        None
    };
    let cache = options.baseline_cache.as_ref().map(|dir| {
        (
            BaselineCache::new(dir),
            BaselineKey::of(dataset, session, options, &batch),
        )
    });
    let ctx = Context {
        model,
        device: &device,
        session: model_index,
        options,
        cache: cache.as_ref(),
        fit: train.as_ref().map(|train| FitData {
            train,
            val: val.as_ref(),
        }),
        truth: truth.as_deref(),
    };
    let mut tasks = Vec::new();
    // The region tasks' predictions, kept for the pictures.
    let (mut inter, mut intra) = (None, None);
    for &task in &options.tasks {
        progress(&session.eid, task);
        let score = match task {
            Task::Choice | Task::Whisker => ctx.decode(dataset, index, task, &batch)?,
            _ => {
                let (score, saved) = ctx.activity(task, &batch, &regions)?;
                if let Some(dir) = &options.save_predictions {
                    save_predictions(dir, &session.eid, task, &batch, &saved)?;
                }
                if options.plots.is_some() {
                    match task {
                        Task::Inter => inter = Some(saved),
                        Task::Intra => intra = Some(saved),
                        _ => {}
                    }
                }
                TaskScore::Activity(score)
            }
        };
        tasks.push(TaskResult { task, score });
    }
    if let Some(dir) = &options.plots {
        fn view(p: &Option<Predictions>) -> Option<crate::figures::TaskPredictions<'_>> {
            p.as_ref().map(|p| crate::figures::TaskPredictions {
                log_rates: &p.log_rates,
                scored: &p.scored,
            })
        }
        crate::figures::write_session(dir, session, &batch, view(&inter), view(&intra), &tasks)?;
    }
    Ok(SessionReport {
        eid: session.eid.clone(),
        n_units: session.n_units,
        trials: n,
        tasks,
    })
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
    /// The trials the baseline learns from, when it is wanted.
    fit: Option<FitData<'a>>,
    /// True log-rates of the evaluated trials, `(K, T, N)` (synthetic data).
    truth: Option<&'a [f32]>,
    /// Where baseline scores are kept, with this session's key (its task set per task).
    cache: Option<&'a (BaselineCache, BaselineKey)>,
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
        let cut = heldout::forward_cut(t, self.options.forward_fraction);
        let probes = heldout::probes(task, regions, self.options.heldout_group);
        let official = match task {
            Task::Forward => 1,
            Task::Inter => probes.len(),
            _ => n.div_ceil(8),
        };
        if task == Task::Forward {
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
        } else {
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
        }
        let wall_s = started.elapsed().as_secs_f64();
        // Model, baseline and ceiling are scored on the same entries by the same functions.
        let counts: Vec<f64> = batch.spikes.iter().map(|&c| f64::from(c)).collect();
        let (model, units_scored) = Reference::score(&log_rates, &counts, &scored, n);
        let score = ActivityScore {
            bps_per_unit_mean: model.bps_per_unit_mean,
            units_scored,
            bps_pooled_nlb: model.bps_pooled_nlb,
            forward_passes: passes,
            official_passes: official,
            wall_s,
            baseline: match &self.fit {
                Some(fit) => Some(self.baseline(task, || {
                    let predicted = baseline::predict(task, &probes, regions, cut, fit, batch);
                    Reference::score(&predicted.log_rates, &counts, &scored, n).0
                })?),
                None => None,
            },
            ceiling: self.truth.map(|truth| {
                let rates: Vec<f64> = truth.iter().map(|&r| f64::from(r)).collect();
                Reference::score(&rates, &counts, &scored, n).0
            }),
        };
        Ok((score, Predictions { log_rates, scored }))
    }

    /// The baseline's score of `task`: kept from an earlier evaluation of the same entries
    /// when there is a cache and it holds one, else computed (and then kept).
    fn baseline(&self, task: Task, compute: impl FnOnce() -> Reference) -> Result<Reference> {
        let Some((cache, key)) = self.cache else {
            return Ok(compute());
        };
        let key = BaselineKey {
            task,
            ..key.clone()
        };
        if let Some(kept) = cache.get(&key)? {
            return Ok(kept);
        }
        let score = compute();
        cache.put(&key, score)?;
        Ok(score)
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
        let column = target(task);
        if !session.behaviour.has(column) {
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
        // Trials with a missing target value (NaN) are left out of fitting and scoring.
        let per_trial = if column.per_bin() { test.n_bins } else { 1 };
        let (fit_x, fit_y, fit_dropped) = complete_trials(fit_x, fit_y, dim, per_trial);
        let (test_x, test_y, test_dropped) = complete_trials(test_x, test_y, dim, per_trial);
        if fit_x.len() / dim < 2 * decode::FOLDS {
            return Ok(TaskScore::Skipped {
                skipped: format!("{} fit trials are too few for 4-fold CV", fit_x.len() / dim),
            });
        }
        let mut score = match task {
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
        };
        score.missing_trials = fit_dropped + test_dropped;
        Ok(TaskScore::Decoding(score))
    }
}

/// The behaviour column a decoding task predicts.
fn target(task: Task) -> Behaviour {
    match task {
        Task::Choice => Behaviour::Choice,
        _ => Behaviour::Whisker,
    }
}

/// Keeps the trials whose `per_trial` target values are all finite: features (`dim` per
/// trial) and targets of those trials, and how many were left out.
fn complete_trials(
    x: Vec<f32>,
    y: Vec<f32>,
    dim: usize,
    per_trial: usize,
) -> (Vec<f32>, Vec<f32>, usize) {
    let keep: Vec<bool> = y
        .chunks(per_trial.max(1))
        .map(|v| v.iter().all(|x| x.is_finite()))
        .collect();
    if keep.iter().all(|&k| k) {
        return (x, y, 0);
    }
    let pick = |v: &[f32], width: usize| -> Vec<f32> {
        v.chunks(width)
            .zip(&keep)
            .filter(|(_, k)| **k)
            .flat_map(|(c, _)| c.iter().copied())
            .collect()
    };
    let dropped = keep.iter().filter(|&&k| !k).count();
    (pick(&x, dim), pick(&y, per_trial.max(1)), dropped)
}

/// Choice (one value per trial) or whisker motion energy (one per bin) of a batch.
fn behaviour(batch: &Batch, task: Task) -> Vec<f32> {
    batch
        .behaviour
        .get(target(task))
        .map(<[f32]>::to_vec)
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_with_a_missing_target_are_left_out_and_counted() {
        // Three trials, two features each, two target values per trial (per-bin task).
        let x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let y = vec![0.1, 0.2, f32::NAN, 0.4, 0.5, 0.6];
        let (kx, ky, dropped) = complete_trials(x.clone(), y, 2, 2);
        assert_eq!(
            (kx, ky, dropped),
            (vec![1.0, 2.0, 5.0, 6.0], vec![0.1, 0.2, 0.5, 0.6], 1)
        );
        // Nothing missing: everything kept as it was.
        let (kx, ky, dropped) = complete_trials(x.clone(), vec![1.0, -1.0, 1.0], 2, 1);
        assert_eq!((kx, ky, dropped), (x, vec![1.0, -1.0, 1.0], 0));
    }
}
