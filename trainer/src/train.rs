//! The training loop: masked batches, AdamW with the one-cycle schedule, accumulation,
//! clipping, validation, metrics files and checkpoints, resumable exactly.
//!
//! Every random draw is a pure function of the seed and the position in the run: the
//! weights of the seed; shuffling of (seed, epoch); masks and dropout of (seed, epoch,
//! global batch index), the device generator reseeded before every forward pass. A run
//! resumed from a checkpoint therefore repeats the uninterrupted run bit for bit on CPU,
//! and a batch is masked the same way whichever rank trains it.
//!
//! Data parallelism (a [`Collective`] with more than one rank): each rank trains its shard
//! of every epoch's batches; per step the ranks all-reduce one small vector (which
//! parameters were touched, which ranks saw non-finite gradients, loss and trial counts)
//! and then the flat gradient buffer in fixed-size buckets, in fp32, so every rank applies
//! the same update. Rank 0 alone logs and writes checkpoints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use mtm_cluster::{Collective, CollectiveError, ReduceOp, SingleProcess, all_reduce_bucketed};
use mtm_dataloader::dataset::{Batch, Dataset, OpenOptions};
use mtm_dataloader::loader::{Loader, PrefetchConfig};
use mtm_dataloader::sampler::{Sampler, SamplerState, stream};
use mtm_dataloader::session::Split;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, TrainState};
use crate::config::{DeviceKind, LossReduction, NonFinitePolicy, RunConfig};
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
    /// Loss of each unit's mean time course on the same validation entries (the reference
    /// a model that uses the other units gets below), where validation ran.
    #[serde(default)]
    pub val_time_course: Option<f64>,
    /// Ranks in the run.
    #[serde(default = "one")]
    pub world_size: usize,
    /// Steps skipped for non-finite gradients so far (`distributed.non_finite = "skip"`).
    #[serde(default)]
    pub skipped_steps: u64,
    /// Rank 0's mean seconds per step, since the last record, in each phase.
    #[serde(default)]
    pub time: StepTimes,
}

fn one() -> usize {
    1
}

/// Seconds spent in each phase of a step (sums over the steps of a window, or means).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimes {
    /// Waiting for the loader's next batch.
    pub data_s: f64,
    /// Masking, host-to-device copies and the forward pass with the loss.
    pub forward_s: f64,
    /// The backward pass and copying gradients into the flat buffer.
    pub backward_s: f64,
    /// Both all-reduces (step statistics and gradient buckets), waiting for peers included.
    pub allreduce_s: f64,
    /// Clipping, gradients back to tensors and the AdamW update.
    pub optimizer_s: f64,
}

impl StepTimes {
    fn add(&mut self, o: &StepTimes) {
        self.data_s += o.data_s;
        self.forward_s += o.forward_s;
        self.backward_s += o.backward_s;
        self.allreduce_s += o.allreduce_s;
        self.optimizer_s += o.optimizer_s;
    }

    fn scaled(&self, f: f64) -> StepTimes {
        StepTimes {
            data_s: self.data_s * f,
            forward_s: self.forward_s * f,
            backward_s: self.backward_s * f,
            allreduce_s: self.allreduce_s * f,
            optimizer_s: self.optimizer_s * f,
        }
    }

    /// Seconds in all phases.
    pub fn total(&self) -> f64 {
        self.data_s + self.forward_s + self.backward_s + self.allreduce_s + self.optimizer_s
    }

    /// One line: each phase in ms and percent of the step.
    pub fn describe(&self) -> String {
        let total = self.total().max(1e-12);
        let part =
            |name: &str, v: f64| format!("{name} {:.1} ms ({:.0}%)", v * 1e3, 100.0 * v / total);
        format!(
            "{:.1} ms per step: {}, {}, {}, {}, {}",
            total * 1e3,
            part("data wait", self.data_s),
            part("forward", self.forward_s),
            part("backward", self.backward_s),
            part("all-reduce", self.allreduce_s),
            part("optimizer", self.optimizer_s)
        )
    }
}

/// What one optimizer step did.
#[derive(Clone, Debug)]
pub struct StepOutcome {
    /// Mean masked loss over every rank's batches of the step.
    pub loss: f64,
    /// Global gradient norm before clipping (0 for a skipped step).
    pub grad_norm: f64,
    /// Trials of the step over all ranks.
    pub trials: usize,
    /// Epoch of this rank's last batch.
    pub epoch: u64,
    /// Whether the update was skipped for non-finite gradients.
    pub skipped: bool,
    /// Where the time went on this rank.
    pub time: StepTimes,
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

/// Each dataset session's mean time course: the log of each unit's mean count in each bin,
/// `(T, N)`, over the first 256 training trials (floored at 1e-4 for silent units); `None`
/// for sessions the model does not train on. It is the reference the validation loss is
/// printed beside (a model that does not beat it has not used the other units) and, with
/// `train.init_rates`, where each head's bias starts.
pub fn time_courses(dataset: &Dataset, map: &SessionMap) -> Result<Vec<Option<Vec<f32>>>> {
    let mut out = Vec::with_capacity(dataset.sessions.len());
    for (ds, session) in dataset.sessions.iter().enumerate() {
        let n = session.trials(Split::Train).min(256);
        if map.model_index[ds].is_none() || n == 0 {
            out.push(None);
            continue;
        }
        let trials: Vec<u32> = (0..n as u32).collect();
        let batch = dataset.read_batch(ds, Split::Train, &trials)?;
        let per_trial = batch.n_bins * batch.n_units;
        let mut sums = vec![0.0f64; per_trial];
        for trial in batch.spikes.chunks(per_trial) {
            for (s, &c) in sums.iter_mut().zip(trial) {
                *s += f64::from(c);
            }
        }
        dataset.recycle(batch);
        out.push(Some(
            sums.iter()
                .map(|s| (s / n as f64).max(1e-4).ln() as f32)
                .collect(),
        ));
    }
    Ok(out)
}

/// Sets each head's bias to the log of its unit's mean count per bin (the time course
/// averaged over bins); the values depend on the data alone, so every rank sets the same.
fn init_rates(mut model: Ndt, map: &SessionMap, courses: &[Option<Vec<f32>>]) -> Ndt {
    for (ds, course) in courses.iter().enumerate() {
        let (Some(index), Some(course)) = (map.model_index[ds], course) else {
            continue;
        };
        let n = model.sessions()[index].n_units;
        let bins = course.len() / n;
        let mut mean = vec![0.0f64; n];
        for row in course.chunks(n) {
            for (m, &l) in mean.iter_mut().zip(row) {
                *m += f64::from(l).exp() / bins as f64;
            }
        }
        let bias: Vec<f32> = mean.iter().map(|m| m.max(1e-4).ln() as f32).collect();
        model = model.with_head_bias(index, &bias);
    }
    model
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
                regions: s.regions.clone(),
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
    /// Each dataset session's mean time course (see [`time_courses`]).
    time_courses: Vec<Option<Vec<f32>>>,
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
    comm: Box<dyn Collective>,
    rank: usize,
    world: usize,
    /// Steps skipped for non-finite gradients.
    pub skipped_steps: u64,
    stop_flag: Option<Arc<AtomicBool>>,
    stop_agreed: bool,
}

/// One validation: the model's masked loss and, on the same masked entries, the loss of
/// each unit's mean time course (a model below it uses what the other units show).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Validation {
    /// Mean masked loss of the model.
    pub loss: f64,
    /// Mean masked loss of predicting each unit's mean time course.
    pub time_course: f64,
}

/// How [`Trainer::run_until`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// The requested steps are done.
    Finished,
    /// A rank was asked to stop (a signal): every rank stopped after the same step, with a
    /// checkpoint of it.
    Stopped {
        /// The last step done.
        step: u64,
    },
}

/// Where this process sits: its collective (rank, world) and its rank on its node (which
/// GPU it uses).
pub struct Placement {
    /// The collective of the run.
    pub comm: Box<dyn Collective>,
    /// Rank among the processes of this node.
    pub local_rank: usize,
}

impl Placement {
    /// A run of one process.
    pub fn single() -> Self {
        Self {
            comm: Box::new(SingleProcess),
            local_rank: 0,
        }
    }
}

/// The device a rank computes on: the CPU, or GPU `local_rank`.
pub fn compute_device(kind: DeviceKind, local_rank: usize) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => Ok(Device::cuda(local_rank)),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => {
            let _ = local_rank;
            Err(TrainError::Config {
                origin: "distributed.device".into(),
                message: "`cuda` needs mtm built with `--features cuda` (see the README)".into(),
            })
        }
    }
}

/// A fingerprint of every parameter value, in the model's fixed parameter order.
fn parameter_fingerprint(model: &Ndt) -> u64 {
    struct Fnv(u64);
    impl ModuleVisitor for Fnv {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param
                .val()
                .into_data()
                .try_into_vec::<f32>()
                .expect("parameters are f32");
            for v in values {
                for b in v.to_bits().to_le_bytes() {
                    self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
                }
            }
        }
    }
    let mut fnv = Fnv(0xcbf2_9ce4_8422_2325);
    model.visit(&mut fnv);
    fnv.0
}

impl Trainer {
    /// Opens the data, builds the model and optimizer; from the checkpoint `resume` (a
    /// checkpoint folder) when given. One process; see [`Trainer::with_placement`].
    pub fn new(config: RunConfig, resume: Option<&Path>) -> Result<Self> {
        Self::with_placement(config, resume, Placement::single())
    }

    /// Like [`Trainer::new`], as one rank of a data-parallel run. Every rank builds the
    /// same model from the seed (or the checkpoint); the ranks then check that their
    /// parameters are identical.
    pub fn with_placement(
        config: RunConfig,
        resume: Option<&Path>,
        placement: Placement,
    ) -> Result<Self> {
        Self::with_init(config, resume, placement, Ok)
    }

    /// Like [`Trainer::with_placement`], with `init` applied to the freshly built model
    /// (before a checkpoint is loaded): fine-tuning copies pretrained weights in here.
    pub fn with_init(
        config: RunConfig,
        resume: Option<&Path>,
        placement: Placement,
        init: impl FnOnce(Ndt) -> Result<Ndt>,
    ) -> Result<Self> {
        let Placement {
            mut comm,
            local_rank,
        } = placement;
        let (rank, world) = (comm.rank(), comm.world_size());
        let dataset = Arc::new(Dataset::open_with(
            &config.data.root,
            &OpenOptions::default(),
        )?);
        let sessions = select_sessions(&config, &dataset)?;
        let device = compute_device(config.distributed.device, local_rank)?.autodiff();
        device.seed(config.seed);
        let mut model = init(config.model.init(&sessions, &device))?;
        let map = SessionMap::new(&dataset, &sessions);
        let time_courses = time_courses(&dataset, &map)?;
        if config.train.init_rates && resume.is_none() {
            model = init_rates(model, &map, &time_courses);
        }
        let mut optim = AdamWConfig::new()
            .with_weight_decay(config.train.weight_decay as f32)
            .with_beta_2(config.train.beta2 as f32)
            .init();
        let counts: Vec<usize> = dataset
            .trial_counts(Split::Train)
            .into_iter()
            .zip(&map.model_index)
            .map(|(n, m)| if m.is_some() { n } else { 0 })
            .collect();
        let sampler = Sampler::new(counts, config.data.batch_size, config.seed, rank, world)?;
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
                // Batches of the epoch every rank together consumed, shared out anew.
                let consumed = state.sampler.position * state.world_size;
                if consumed % world != 0 {
                    tracing::warn!(
                        "the checkpoint's {consumed} batches into epoch {} do not divide among {world} ranks; {} batches are trained again",
                        state.sampler.epoch,
                        consumed % world
                    );
                }
                let position = SamplerState {
                    epoch: state.sampler.epoch,
                    position: consumed / world,
                };
                (state.step, position)
            }
            None => (0, SamplerState::default()),
        };
        let fingerprint = parameter_fingerprint(&model);
        let mut root = fingerprint.to_le_bytes();
        comm.broadcast(&mut root, 0)?;
        let same = comm.all_gather(&[f64::from(u8::from(root == fingerprint.to_le_bytes()))])?;
        let differ: Vec<usize> = (0..world).filter(|&r| same[r] == 0.0).collect();
        if !differ.is_empty() {
            return Err(CollectiveError::Mismatch {
                rank,
                step,
                message: format!(
                    "the initial parameters of rank(s) {differ:?} differ from rank 0's (different seeds, checkpoints or builds?)"
                ),
            }
            .into());
        }
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
            time_courses,
            loader,
            grads,
            step,
            total_steps,
            schedule,
            comm,
            rank,
            world,
            skipped_steps: 0,
            stop_flag: None,
            stop_agreed: false,
        })
    }

    /// A flag that, once set (by a signal handler), makes the run stop after the current
    /// step with a checkpoint; ranks agree on the step through the per-step reduction.
    pub fn set_stop_flag(&mut self, flag: Arc<AtomicBool>) {
        self.stop_flag = Some(flag);
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Ranks in the run.
    pub fn world_size(&self) -> usize {
        self.world
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

    /// One optimizer step over `train.accumulate` batches on every rank.
    pub fn train_step(&mut self) -> Result<StepOutcome> {
        let config = &self.config;
        let accumulate = config.train.accumulate;
        let mean = config.train.loss == LossReduction::Mean;
        self.comm.set_step(self.step);
        let mut time = StepTimes::default();
        self.grads.clear();
        let (mut loss_sum, mut trials, mut epoch) = (0.0f64, 0usize, 0u64);
        let mut finite = true;
        for micro in 0..accumulate {
            let clock = Instant::now();
            let state = self.loader.state();
            epoch = state.epoch;
            let batch = self.loader.next_batch()?;
            time.data_s += clock.elapsed().as_secs_f64();
            let clock = Instant::now();
            // The batch's place in the epoch's plan before sharding (the sampler deals
            // batch p * world + rank to this rank as its p-th).
            let global_batch = (state.position * self.world + self.rank) as u64;
            let mut rng = masking::mask_stream(config.seed, state.epoch, global_batch);
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
            tracing::debug!(
                rank = self.rank,
                step = self.step,
                micro,
                global_batch,
                session = batch.session,
                mask = masked_fingerprint(&masked.scored),
                "batch"
            );
            let shape = [batch.len(), batch.n_bins, batch.n_units];
            // Dropout draws from the device's generator: reseeding it from the batch makes
            // the draws a function of the batch, so a resumed run repeats them.
            self.device
                .seed(stream(config.seed, &[state.epoch, global_batch, 0x6472_6f70]).random());
            let input = tensor3(masked.input, shape, &self.device);
            let target = tensor3(batch.spikes.clone(), shape, &self.device);
            let scored = tensor3(masked.scored, shape, &self.device);
            let log_rates = self
                .model()
                .forward(input, session, prompt, scheme.causal());
            let loss = masked_poisson_nll(log_rates, target, scored, mean);
            let value = f64::from(loss.clone().into_scalar::<f32>());
            time.forward_s += clock.elapsed().as_secs_f64();
            trials += batch.len();
            self.loader.recycle(batch);
            if !value.is_finite() {
                finite = false;
                continue;
            }
            loss_sum += value;
            let clock = Instant::now();
            let model = self.model.as_ref().expect("present between steps");
            let step_grads = GradientsParams::from_grads(loss.backward(), model);
            self.grads.add(model, &step_grads);
            time.backward_s += clock.elapsed().as_secs_f64();
        }
        if mean && accumulate > 1 {
            self.grads.scale(1.0 / accumulate as f32);
        }
        // Checked before the all-reduce, so that one rank's NaN never reaches the others.
        finite = finite && self.grads.values.iter().all(|v| v.is_finite());
        if !finite {
            self.grads.clear();
        }
        let clock = Instant::now();
        // One small reduction first: which parameters any rank touched (PyTorch steps a
        // parameter whose gradient exists on some rank), which ranks failed, loss, trials.
        let agreement = crate::sync::StepReport {
            touched: self.grads.touched.clone(),
            failed: !finite,
            loss_sum,
            trials,
            stop: self
                .stop_flag
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed)),
        }
        .exchange(self.comm.as_mut())?;
        self.stop_agreed = agreement.stop;
        let failed = agreement.failed;
        let all_micro = (self.world * accumulate) as f64;
        let mut outcome = StepOutcome {
            loss: agreement.loss_sum / all_micro,
            grad_norm: 0.0,
            trials: agreement.trials,
            epoch,
            skipped: false,
            time,
        };
        if !failed.is_empty() {
            let what = if self.world == 1 {
                "the loss or the gradient".to_string()
            } else {
                format!("the loss or the gradient of rank(s) {failed:?}")
            };
            match config.distributed.non_finite {
                NonFinitePolicy::Stop => {
                    return Err(TrainError::NonFinite {
                        step: self.step,
                        what,
                    });
                }
                NonFinitePolicy::Skip => {
                    tracing::warn!("step {}: {what} is not finite; step skipped", self.step);
                    self.skipped_steps += 1;
                    self.step += 1;
                    outcome.skipped = true;
                    outcome.loss = f64::NAN;
                    outcome.time.allreduce_s = clock.elapsed().as_secs_f64();
                    return Ok(outcome);
                }
            }
        }
        self.grads.touched = agreement.touched;
        let op = if mean { ReduceOp::Mean } else { ReduceOp::Sum };
        all_reduce_bucketed(
            self.comm.as_mut(),
            &mut self.grads.values,
            config.distributed.bucket_elems(),
            op,
        )?;
        outcome.time.allreduce_s = clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let norm = if config.train.clip_grad_norm > 0.0 {
            self.grads.clip(config.train.clip_grad_norm)
        } else {
            self.grads.norm()
        };
        let lr = self.schedule.lr(self.step);
        let grads = self.grads.to_params(&self.device);
        let model = self.model.take().expect("present between steps");
        self.model = Some(self.optim.step(lr, model, grads));
        outcome.time.optimizer_s = clock.elapsed().as_secs_f64();
        outcome.grad_norm = norm;
        self.step += 1;
        Ok(outcome)
    }

    /// Mean masked loss over the validation split, with masks drawn from a fixed stream so
    /// that every validation of a run sees the same masks; `None` when the trained sessions
    /// have no validation trials. Ranks share the batches out and combine their sums, so
    /// every rank gets the value one process would.
    pub fn validate(&mut self) -> Result<Option<Validation>> {
        let sums = validation_sums(
            &self.model().valid(),
            &self.dataset,
            &self.map,
            &self.config,
            self.config.train.validate_batches,
            (self.rank, self.world),
            Some(&self.time_courses),
        )?;
        let all = self
            .comm
            .all_gather(&[sums.model, sums.time_course, sums.batches as f64])?;
        let (model, course, count) = all.chunks(3).fold((0.0, 0.0, 0.0), |(m, t, c), x| {
            (m + x[0], t + x[1], c + x[2])
        });
        Ok((count > 0.0).then(|| Validation {
            loss: model / count,
            time_course: course / count,
        }))
    }

    /// Writes a checkpoint of the current state under the run's `checkpoints/` folder
    /// (rank 0 writes; every rank waits for it). Returns the folder.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let dir = self.config.out_dir.join("checkpoints");
        let written = if self.rank == 0 {
            let state = TrainState {
                step: self.step,
                total_steps: self.total_steps,
                sampler: self.loader.state(),
                world_size: self.world,
                seed: self.config.seed,
                rank_streams:
                    "shuffle: (seed, epoch); masks and dropout: (seed, epoch, global batch index)"
                        .into(),
            };
            Some(checkpoint::save(
                &dir,
                &self.config,
                &state,
                self.model(),
                &self.optim,
                self.config.train.keep_checkpoints,
            ))
        } else {
            None
        };
        // Every rank learns whether the save worked before going on.
        let ok = written.as_ref().is_none_or(|r| r.is_ok());
        let all = self.comm.all_gather(&[f64::from(u8::from(ok))])?;
        match written {
            Some(result) => result,
            None if all[0] > 0.0 => Ok(checkpoint::step_dir(&dir, self.step)),
            None => Err(TrainError::Checkpoint {
                path: dir,
                message: format!(
                    "rank 0 failed to write the checkpoint of step {}",
                    self.step
                ),
            }),
        }
    }

    /// Runs to the end: logging, validation and checkpoints as configured.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<RunEnd> {
        self.run_until(self.total_steps, observer)
    }

    /// Runs until `stop` steps are done (at most the run's total), as [`Trainer::run`].
    /// Only rank 0 writes files and talks to the observer.
    pub fn run_until(&mut self, stop: u64, observer: &mut dyn Observer) -> Result<RunEnd> {
        let stop = stop.min(self.total_steps);
        let lead = self.rank == 0;
        let mut silent = Silent;
        let observer: &mut dyn Observer = if lead { observer } else { &mut silent };
        let out = self.config.out_dir.clone();
        let mut metrics = if lead {
            std::fs::create_dir_all(&out).map_err(TrainError::io(&out))?;
            let config_path = out.join("config.toml");
            std::fs::write(&config_path, self.config.to_toml())
                .map_err(TrainError::io(&config_path))?;
            Some(MetricsFiles::open(&out, self.step)?)
        } else {
            None
        };
        observer.start(self.step, self.total_steps);
        let started = Instant::now();
        let (mut window_trials, mut window_start, mut window_steps) =
            (0usize, Instant::now(), 0u64);
        let mut window_time = StepTimes::default();
        let (mut breakdown, mut breakdown_steps) = (StepTimes::default(), 0u64);
        let train = self.config.train.clone();
        let breakdown_every = self.config.distributed.breakdown_every;
        while self.step < stop {
            let outcome = self.train_step()?;
            window_trials += outcome.trials;
            window_steps += 1;
            window_time.add(&outcome.time);
            breakdown.add(&outcome.time);
            breakdown_steps += 1;
            if outcome.skipped {
                observer.note(&format!(
                    "step {}: non-finite gradients, step skipped ({} so far)",
                    self.step, self.skipped_steps
                ));
            }
            if breakdown_every > 0 && self.step % breakdown_every == 0 {
                let mean = breakdown.scaled(1.0 / breakdown_steps as f64);
                observer.note(&format!(
                    "step {}: rank 0 time {}",
                    self.step,
                    mean.describe()
                ));
                (breakdown, breakdown_steps) = (StepTimes::default(), 0);
            }
            let last = self.step == self.total_steps;
            let validation =
                if last || (train.validate_every > 0 && self.step % train.validate_every == 0) {
                    let v = self.validate()?;
                    match v {
                        Some(v) => observer.note(&format!(
                            "step {}: validation loss {:.5} (each unit's mean time course: {:.5})",
                            self.step, v.loss, v.time_course
                        )),
                        None => observer.note("no validation trials: validation skipped"),
                    }
                    v
                } else {
                    None
                };
            let val_loss = validation.as_ref().map(|v| v.loss);
            let record = StepRecord {
                step: self.step,
                epoch: outcome.epoch,
                loss: outcome.loss,
                lr: self.schedule.lr(self.step - 1),
                grad_norm: outcome.grad_norm,
                trials_per_s: window_trials as f64 / window_start.elapsed().as_secs_f64().max(1e-9),
                elapsed_s: started.elapsed().as_secs_f64(),
                val_loss,
                val_time_course: validation.as_ref().map(|v| v.time_course),
                world_size: self.world,
                skipped_steps: self.skipped_steps,
                time: window_time.scaled(1.0 / window_steps.max(1) as f64),
            };
            if self.step % train.log_every == 0 || last || val_loss.is_some() {
                if let Some(m) = metrics.as_mut() {
                    m.write(&record)?;
                }
                window_trials = 0;
                window_steps = 0;
                window_time = StepTimes::default();
                window_start = Instant::now();
            }
            observer.step(&record);
            let stopping = self.stop_agreed && !last;
            // Redrawn whenever there is a new validation point, and at the end, so that a
            // run can be watched; a picture that fails to draw does not stop training.
            if metrics.is_some()
                && (val_loss.is_some() || last || stopping)
                && let Err(e) = crate::plots::training_curves(&out)
            {
                observer.note(&format!("step {}: plots not drawn: {e}", self.step));
            }
            if last
                || stopping
                || (train.checkpoint_every > 0 && self.step % train.checkpoint_every == 0)
            {
                let path = self.save_checkpoint()?;
                observer.note(&format!(
                    "step {}: checkpoint {}",
                    self.step,
                    path.display()
                ));
            }
            if stopping {
                observer.note(&format!(
                    "step {}: stopping on request (signal); the checkpoint holds the run",
                    self.step
                ));
                return Ok(RunEnd::Stopped { step: self.step });
            }
        }
        Ok(RunEnd::Finished)
    }
}

/// A short hash of which entries a mask scores (for debug logs that compare ranks).
fn masked_fingerprint(scored: &[f32]) -> u64 {
    scored
        .iter()
        .enumerate()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, (i, &v)| {
            if v > 0.0 {
                (h ^ i as u64).wrapping_mul(0x100_0000_01b3)
            } else {
                h
            }
        })
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
    let sums = validation_sums(model, dataset, map, config, max_batches, (0, 1), None)?;
    Ok((sums.batches > 0).then(|| sums.model / sums.batches as f64))
}

/// Loss sums over the validation batches one rank computed.
struct ValidationSums {
    model: f64,
    time_course: f64,
    batches: usize,
}

/// Sum and count of the validation batch losses that fall to `rank` of `world` (batch
/// `i` of the plan goes to rank `i mod world`).
fn validation_sums(
    model: &Ndt,
    dataset: &Dataset,
    map: &SessionMap,
    config: &RunConfig,
    max_batches: usize,
    (rank, world): (usize, usize),
    courses: Option<&[Option<Vec<f32>>]>,
) -> Result<ValidationSums> {
    let device = model.device();
    let mean = config.train.loss == LossReduction::Mean;
    let counts = dataset.trial_counts(Split::Val);
    let (mut total, mut course_total, mut batches, mut mine) = (0.0f64, 0.0f64, 0usize, 0usize);
    'sessions: for (ds_index, &n) in counts.iter().enumerate() {
        let Some(session) = map.model_index[ds_index] else {
            continue;
        };
        let trials: Vec<u32> = (0..n as u32).collect();
        for chunk in trials.chunks(config.data.batch_size) {
            if max_batches > 0 && batches >= max_batches {
                break 'sessions;
            }
            let index = batches;
            batches += 1;
            if index % world != rank {
                continue;
            }
            let batch = dataset.read_batch(ds_index, Split::Val, chunk)?;
            let mut rng = stream(config.seed, &[ds_index as u64, index as u64, 0x76616c]);
            let (scheme, prompt) = config.masking.scheme.choose(&mut rng);
            let masked = mask_batch(
                &batch,
                scheme,
                &map.regions[ds_index],
                config.masking.ratios(),
                &mut rng,
            );
            let shape = [batch.len(), batch.n_bins, batch.n_units];
            if let Some(course) = courses.and_then(|c| c[ds_index].as_deref()) {
                let per_trial = course.len();
                let (mut sum, mut scored) = (0.0f64, 0usize);
                for (i, (&y, &s)) in batch.spikes.iter().zip(&masked.scored).enumerate() {
                    if s > 0.0 {
                        let l = f64::from(course[i % per_trial]);
                        sum += l.exp() - f64::from(y) * l;
                        scored += 1;
                    }
                }
                course_total += if mean {
                    sum / scored.max(1) as f64
                } else {
                    sum
                };
            }
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
            mine += 1;
            dataset.recycle(batch);
        }
    }
    Ok(ValidationSums {
        model: total,
        time_course: course_total,
        batches: mine,
    })
}

/// `metrics.jsonl` and `metrics.csv`, appended as the run goes. On resume, lines past the
/// checkpoint's step (written after it, before a crash) are dropped, so each step appears
/// once.
struct MetricsFiles {
    jsonl: std::fs::File,
    csv: std::fs::File,
}

const CSV_HEADER: &str =
    "step,epoch,loss,lr,grad_norm,trials_per_s,elapsed_s,val_loss,val_time_course";

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
        let optional = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let csv = format!(
            "{},{},{},{},{},{},{},{},{}",
            r.step,
            r.epoch,
            r.loss,
            r.lr,
            r.grad_norm,
            r.trials_per_s,
            r.elapsed_s,
            optional(r.val_loss),
            optional(r.val_time_course)
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
    let Some(path) = mtm_dataloader::store::local_path(root) else {
        return Ok(false);
    };
    if path.exists() {
        return Ok(false);
    }
    mtm_dataloader::synth::write_local_dataset(
        &path,
        synth,
        mtm_dataloader::WriteOptions::default(),
        |_, _| {},
    )?;
    Ok(true)
}
