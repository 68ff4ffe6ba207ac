//! The training loop: masked batches, AdamW with the one-cycle schedule, accumulation,
//! clipping, validation, metrics files and checkpoints, resumable exactly.
//!
//! Every random draw is a pure function of the seed and the position in the run: the
//! weights of the seed; shuffling of (seed, epoch); masks of (seed, rank, epoch, step);
//! dropout of (seed, rank, step, micro-batch), reseeded before every forward pass. A run
//! resumed from a checkpoint therefore repeats the uninterrupted run bit for bit on CPU.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use mtm_dataloader::dataset::{Batch, Dataset, OpenOptions};
use mtm_dataloader::loader::{Loader, PrefetchConfig};
use mtm_dataloader::sampler::{Sampler, SamplerState, stream};
use mtm_dataloader::session::Split;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, TrainState};
use crate::config::{LossReduction, RunConfig};
use crate::error::{Result, TrainError};
use crate::grads::FlatGrads;
use crate::masking::{self, Ratios, Scheme};
use crate::model::{Ndt, SessionSpec, masked_poisson_nll};
use crate::schedule::OneCycle;

/// The optimizer of every run.
pub type Optim = ModuleOptimizer;

/// What the loop tells its observer (the command line's progress bar).
pub trait Observer {
    /// Training starts at `start_step` of `total_steps`.
    fn start(&mut self, _start_step: u64, _total_steps: u64) {}
    /// One optimizer step finished.
    fn step(&mut self, _record: &StepRecord) {}
    /// A message worth a line of its own (validation, checkpoint).
    fn note(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {}

/// One line of `metrics.jsonl` / `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Optimizer steps done.
    pub step: u64,
    /// Epoch of the step's last batch.
    pub epoch: u64,
    /// Mean masked loss of the step's batches.
    pub loss: f64,
    /// Learning rate the step used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Trials per second over the steps since the last record.
    pub trials_per_s: f64,
    /// Seconds since this process started training.
    pub elapsed_s: f64,
    /// Validation loss, on the steps where it was computed.
    pub val_loss: Option<f64>,
}

/// Per-session facts the loop needs: model index and unit regions as small integers.
#[derive(Clone, Debug)]
pub struct SessionMap {
    /// Model session index for each dataset session (None: not trained on).
    pub model_index: Vec<Option<usize>>,
    /// Region index of each unit, per dataset session.
    pub regions: Vec<Vec<usize>>,
}

impl SessionMap {
    /// Maps the dataset's sessions onto the model's.
    pub fn new(dataset: &Dataset, model_sessions: &[SessionSpec]) -> Self {
        let model_index = dataset
            .sessions
            .iter()
            .map(|s| model_sessions.iter().position(|m| m.eid == s.eid))
            .collect();
        let regions = dataset
            .sessions
            .iter()
            .map(|s| masking::region_indices(&s.regions))
            .collect();
        Self {
            model_index,
            regions,
        }
    }
}

/// A batch's model input, targets and scored mask as host vectors `(B, T, N)`.
pub struct MaskedBatch {
    /// Counts with masked entries zeroed.
    pub input: Vec<f32>,
    /// The scored entries (1.0) and the others (0.0).
    pub scored: Vec<f32>,
}

/// Draws one mask per trial of `batch` under `scheme` and applies it.
pub fn mask_batch(
    batch: &Batch,
    scheme: Scheme,
    regions: &[usize],
    ratios: Ratios,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> MaskedBatch {
    let per_trial = batch.n_bins * batch.n_units;
    let mut input = batch.spikes.clone();
    let mut scored = vec![0.0f32; input.len()];
    for k in 0..batch.len() {
        let mask = masking::draw(scheme, batch.n_bins, regions, ratios, rng);
        let range = k * per_trial..(k + 1) * per_trial;
        for ((x, s), (&zero, &score)) in input[range.clone()]
            .iter_mut()
            .zip(&mut scored[range])
            .zip(mask.input_zeroed.iter().zip(&mask.scored))
        {
            if zero {
                *x = 0.0;
            }
            if score {
                *s = 1.0;
            }
        }
    }
    MaskedBatch { input, scored }
}

fn tensor3(values: Vec<f32>, shape: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Sessions a run trains on: the configured eids, or every session of the dataset.
pub fn select_sessions(config: &RunConfig, dataset: &Dataset) -> Result<Vec<SessionSpec>> {
    let wanted: Vec<&str> = if config.data.sessions.is_empty() {
        dataset.sessions.iter().map(|s| s.eid.as_str()).collect()
    } else {
        config.data.sessions.iter().map(String::as_str).collect()
    };
    wanted
        .into_iter()
        .map(|eid| {
            let s = dataset
                .sessions
                .iter()
                .find(|s| s.eid == eid)
                .ok_or_else(|| {
                    TrainError::Mismatch(format!(
                        "data.sessions names {eid}, which is not in {}",
                        dataset.root
                    ))
                })?;
            if s.n_bins != config.model.n_bins {
                return Err(TrainError::Mismatch(format!(
                    "session {eid} has {} bins per trial, the model {} (model.n_bins)",
                    s.n_bins, config.model.n_bins
                )));
            }
            Ok(SessionSpec {
                eid: s.eid.clone(),
                n_units: s.n_units,
            })
        })
        .collect()
}

/// A training run in progress.
pub struct Trainer {
    /// The resolved configuration.
    pub config: RunConfig,
    model: Option<Ndt>,
    optim: Optim,
    device: Device,
    dataset: Arc<Dataset>,
    map: SessionMap,
    loader: Loader,
    grads: FlatGrads,
    /// Optimizer steps done.
    pub step: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    schedule: OneCycle,
    rank: usize,
}

impl Trainer {
    /// Opens the data, builds the model and optimizer; from the checkpoint `resume` (a
    /// checkpoint folder) when given.
    pub fn new(config: RunConfig, resume: Option<&Path>) -> Result<Self> {
        let dataset = Arc::new(Dataset::open_with(
            &config.data.root,
            &OpenOptions::default(),
        )?);
        let sessions = select_sessions(&config, &dataset)?;
        let device = Device::flex().autodiff();
        device.seed(config.seed);
        let mut model = config.model.init(&sessions, &device);
        let mut optim = AdamWConfig::new()
            .with_weight_decay(config.train.weight_decay as f32)
            .init();
        let map = SessionMap::new(&dataset, &sessions);
        let counts: Vec<usize> = dataset
            .trial_counts(Split::Train)
            .into_iter()
            .zip(&map.model_index)
            .map(|(n, m)| if m.is_some() { n } else { 0 })
            .collect();
        let sampler = Sampler::new(counts, config.data.batch_size, config.seed, 0, 1)?;
        let steps_per_epoch = sampler.steps_per_epoch() as u64;
        let total_steps = if config.train.steps > 0 {
            config.train.steps
        } else {
            (config.train.epochs * steps_per_epoch).div_ceil(config.train.accumulate as u64)
        };
        let (step, sampler_state) = match resume {
            Some(dir) => {
                let state = checkpoint::read_state(dir)?;
                model = checkpoint::load_model(dir, model)?;
                optim = checkpoint::load_optimizer(dir, optim)?;
                (state.step, state.sampler)
            }
            None => (0, SamplerState::default()),
        };
        let loader = Loader::new(
            Arc::clone(&dataset),
            Split::Train,
            sampler,
            sampler_state,
            PrefetchConfig {
                depth: config.data.prefetch,
                threads: config.data.loader_threads,
            },
        )?;
        let grads = FlatGrads::new(&model);
        let schedule = OneCycle {
            peak: config.train.lr,
            total_steps,
            warmup_fraction: config.train.warmup_fraction,
        };
        Ok(Self {
            config,
            model: Some(model),
            optim,
            device,
            dataset,
            map,
            loader,
            grads,
            step,
            total_steps,
            schedule,
            rank: 0,
        })
    }

    /// The model (gradients on).
    pub fn model(&self) -> &Ndt {
        self.model
            .as_ref()
            .expect("the model is only taken inside a step")
    }

    /// The dataset the run reads.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// Parameters of the model.
    pub fn n_parameters(&self) -> usize {
        self.grads.values.len()
    }

    /// The sessions the model has stitchers for.
    pub fn sessions(&self) -> &[SessionSpec] {
        self.model().sessions()
    }

    /// One optimizer step over `train.accumulate` batches; returns (mean loss, grad norm,
    /// trials seen, epoch of the last batch).
    pub fn train_step(&mut self) -> Result<(f64, f64, usize, u64)> {
        let config = &self.config;
        let accumulate = config.train.accumulate;
        let mean = config.train.loss == LossReduction::Mean;
        self.grads.clear();
        let (mut loss_sum, mut trials, mut epoch) = (0.0f64, 0usize, 0u64);
        for micro in 0..accumulate {
            let state = self.loader.state();
            epoch = state.epoch;
            let batch = self.loader.next_batch()?;
            let micro_step = self.step * accumulate as u64 + micro as u64;
            let mut rng = masking::mask_stream(config.seed, self.rank, state.epoch, micro_step);
            let (scheme, prompt) = config.masking.scheme.choose(&mut rng);
            let session = self.map.model_index[batch.session]
                .expect("the sampler only yields trained sessions");
            let masked = mask_batch(
                &batch,
                scheme,
                &self.map.regions[batch.session],
                config.masking.ratios(),
                &mut rng,
            );
            let shape = [batch.len(), batch.n_bins, batch.n_units];
            // Dropout draws from the device's generator: reseeding it from the step makes
            // the draws a function of the step, so a resumed run repeats them.
            self.device.seed(
                stream(
                    config.seed,
                    &[self.rank as u64, self.step, micro as u64, 0x6472_6f70],
                )
                .random(),
            );
            let input = tensor3(masked.input, shape, &self.device);
            let target = tensor3(batch.spikes.clone(), shape, &self.device);
            let scored = tensor3(masked.scored, shape, &self.device);
            let log_rates = self
                .model()
                .forward(input, session, prompt, scheme.causal());
            let loss = masked_poisson_nll(log_rates, target, scored, mean);
            let value = f64::from(loss.clone().into_scalar::<f32>());
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    step: self.step,
                    what: "the loss".into(),
                });
            }
            loss_sum += value;
            trials += batch.len();
            let model = self.model.as_ref().expect("present between steps");
            let step_grads = GradientsParams::from_grads(loss.backward(), model);
            self.grads.add(model, &step_grads);
            self.loader.recycle(batch);
        }
        if mean && accumulate > 1 {
            self.grads.scale(1.0 / accumulate as f32);
        }
        let norm = if config.train.clip_grad_norm > 0.0 {
            self.grads.clip(config.train.clip_grad_norm)
        } else {
            self.grads.norm()
        };
        if !norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: self.step,
                what: "the gradient norm".into(),
            });
        }
        let lr = self.schedule.lr(self.step);
        let grads = self.grads.to_params(&self.device);
        let model = self.model.take().expect("present between steps");
        self.model = Some(self.optim.step(lr, model, grads));
        self.step += 1;
        Ok((loss_sum / accumulate as f64, norm, trials, epoch))
    }

    /// Mean masked loss over the validation split, with masks drawn from a fixed stream so
    /// that every validation of a run sees the same masks; `None` when the trained sessions
    /// have no validation trials.
    pub fn validate(&self) -> Result<Option<f64>> {
        validation_loss(
            &self.model().valid(),
            &self.dataset,
            &self.map,
            &self.config,
            self.config.train.validate_batches,
        )
    }

    /// Writes a checkpoint of the current state under the run's `checkpoints/` folder.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let state = TrainState {
            step: self.step,
            total_steps: self.total_steps,
            sampler: self.loader.state(),
            seed: self.config.seed,
            rank_streams:
                "masks: (seed, rank, epoch, micro-step); dropout: (seed, rank, step, micro-batch)"
                    .into(),
        };
        checkpoint::save(
            &self.config.out_dir.join("checkpoints"),
            &self.config,
            &state,
            self.model(),
            &self.optim,
            self.config.train.keep_checkpoints,
        )
    }

    /// Runs to the end: logging, validation and checkpoints as configured.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<()> {
        self.run_until(self.total_steps, observer)
    }

    /// Runs until `stop` steps are done (at most the run's total), as [`Trainer::run`].
    pub fn run_until(&mut self, stop: u64, observer: &mut dyn Observer) -> Result<()> {
        let stop = stop.min(self.total_steps);
        let out = self.config.out_dir.clone();
        std::fs::create_dir_all(&out).map_err(TrainError::io(&out))?;
        let config_path = out.join("config.toml");
        std::fs::write(&config_path, self.config.to_toml())
            .map_err(TrainError::io(&config_path))?;
        let mut metrics = MetricsFiles::open(&out, self.step)?;
        observer.start(self.step, self.total_steps);
        let started = Instant::now();
        let (mut window_trials, mut window_start) = (0usize, Instant::now());
        let train = self.config.train.clone();
        while self.step < stop {
            let (loss, grad_norm, trials, epoch) = self.train_step()?;
            window_trials += trials;
            let last = self.step == self.total_steps;
            let val_loss =
                if last || (train.validate_every > 0 && self.step % train.validate_every == 0) {
                    let v = self.validate()?;
                    match v {
                        Some(v) => {
                            observer.note(&format!("step {}: validation loss {v:.5}", self.step))
                        }
                        None => observer.note("no validation trials: validation skipped"),
                    }
                    v
                } else {
                    None
                };
            let record = StepRecord {
                step: self.step,
                epoch,
                loss,
                lr: self.schedule.lr(self.step - 1),
                grad_norm,
                trials_per_s: window_trials as f64 / window_start.elapsed().as_secs_f64().max(1e-9),
                elapsed_s: started.elapsed().as_secs_f64(),
                val_loss,
            };
            if self.step % train.log_every == 0 || last || val_loss.is_some() {
                metrics.write(&record)?;
                window_trials = 0;
                window_start = Instant::now();
            }
            observer.step(&record);
            if last || (train.checkpoint_every > 0 && self.step % train.checkpoint_every == 0) {
                let path = self.save_checkpoint()?;
                observer.note(&format!(
                    "step {}: checkpoint {}",
                    self.step,
                    path.display()
                ));
            }
        }
        Ok(())
    }
}

/// The mean masked loss of `model` on the validation split (the first `max_batches`
/// batches; 0 = all), `None` without validation trials. Masks come from a stream fixed by
/// the seed.
pub fn validation_loss(
    model: &Ndt,
    dataset: &Dataset,
    map: &SessionMap,
    config: &RunConfig,
    max_batches: usize,
) -> Result<Option<f64>> {
    let device = Device::flex();
    let mean = config.train.loss == LossReduction::Mean;
    let counts = dataset.trial_counts(Split::Val);
    let (mut total, mut batches) = (0.0f64, 0usize);
    'sessions: for (ds_index, &n) in counts.iter().enumerate() {
        let Some(session) = map.model_index[ds_index] else {
            continue;
        };
        let trials: Vec<u32> = (0..n as u32).collect();
        for chunk in trials.chunks(config.data.batch_size) {
            if max_batches > 0 && batches >= max_batches {
                break 'sessions;
            }
            let batch = dataset.read_batch(ds_index, Split::Val, chunk)?;
            let mut rng = stream(config.seed, &[ds_index as u64, batches as u64, 0x76616c]);
            let (scheme, prompt) = config.masking.scheme.choose(&mut rng);
            let masked = mask_batch(
                &batch,
                scheme,
                &map.regions[ds_index],
                config.masking.ratios(),
                &mut rng,
            );
            let shape = [batch.len(), batch.n_bins, batch.n_units];
            let out = model.forward(
                tensor3(masked.input, shape, &device),
                session,
                prompt,
                scheme.causal(),
            );
            let loss = masked_poisson_nll(
                out,
                tensor3(batch.spikes.clone(), shape, &device),
                tensor3(masked.scored, shape, &device),
                mean,
            );
            total += f64::from(loss.into_scalar::<f32>());
            batches += 1;
            dataset.recycle(batch);
        }
    }
    Ok((batches > 0).then(|| total / batches as f64))
}

/// `metrics.jsonl` and `metrics.csv`, appended as the run goes. On resume, lines past the
/// checkpoint's step (written after it, before a crash) are dropped, so each step appears
/// once.
struct MetricsFiles {
    jsonl: std::fs::File,
    csv: std::fs::File,
}

const CSV_HEADER: &str = "step,epoch,loss,lr,grad_norm,trials_per_s,elapsed_s,val_loss";

impl MetricsFiles {
    fn open(dir: &Path, resumed_step: u64) -> Result<Self> {
        let jsonl_path = dir.join("metrics.jsonl");
        let csv_path = dir.join("metrics.csv");
        let keep = |line: &str, step_of: &dyn Fn(&str) -> Option<u64>| {
            step_of(line).is_some_and(|s| s <= resumed_step)
        };
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        let json_step = |line: &str| {
            serde_json::from_str::<StepRecord>(line)
                .ok()
                .map(|r| r.step)
        };
        let csv_step = |line: &str| line.split(',').next()?.parse::<u64>().ok();
        let kept_json: Vec<String> = read(&jsonl_path)
            .lines()
            .filter(|l| keep(l, &json_step))
            .map(str::to_string)
            .collect();
        let kept_csv: Vec<String> = read(&csv_path)
            .lines()
            .filter(|l| keep(l, &csv_step))
            .map(str::to_string)
            .collect();
        let write_all =
            |path: &Path, header: Option<&str>, lines: &[String]| -> Result<std::fs::File> {
                let mut f = std::fs::File::create(path).map_err(TrainError::io(path))?;
                let mut text = String::new();
                if let Some(h) = header {
                    text.push_str(h);
                    text.push('\n');
                }
                for l in lines {
                    text.push_str(l);
                    text.push('\n');
                }
                f.write_all(text.as_bytes()).map_err(TrainError::io(path))?;
                Ok(f)
            };
        Ok(Self {
            jsonl: write_all(&jsonl_path, None, &kept_json)?,
            csv: write_all(&csv_path, Some(CSV_HEADER), &kept_csv)?,
        })
    }

    fn write(&mut self, r: &StepRecord) -> Result<()> {
        let json = serde_json::to_string(r).expect("records serialise");
        let val = r.val_loss.map(|v| v.to_string()).unwrap_or_default();
        let csv = format!(
            "{},{},{},{},{},{},{},{}",
            r.step, r.epoch, r.loss, r.lr, r.grad_norm, r.trials_per_s, r.elapsed_s, val
        );
        writeln!(self.jsonl, "{json}")
            .and_then(|_| writeln!(self.csv, "{csv}"))
            .and_then(|_| self.jsonl.flush())
            .and_then(|_| self.csv.flush())
            .map_err(|e| TrainError::Io {
                path: PathBuf::from("metrics.jsonl"),
                source: e,
            })
    }
}

/// Generates `data.synthesize` at `data.root` when that is a local folder that does not
/// exist yet. Returns whether it generated anything.
pub fn prepare_data(config: &RunConfig) -> Result<bool> {
    let Some(synth) = &config.data.synthesize else {
        return Ok(false);
    };
    let root = &config.data.root;
    let path = match root.split_once("://") {
        Some(("file", rest)) => Path::new(rest),
        Some(_) => return Ok(false),
        None => Path::new(root.as_str()),
    };
    if path.exists() {
        return Ok(false);
    }
    mtm_dataloader::synth::write_dataset(
        root,
        synth,
        mtm_dataloader::WriteOptions::default(),
        |_, _| {},
    )?;
    Ok(true)
}
