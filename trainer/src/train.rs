//! The training loop: masked batches, AdamW with the one-cycle schedule, accumulation,
//! clipping, validation, metrics files and checkpoints, resumable exactly.
//!
//! Every random draw is a pure function of the seed and the position in the run (see
//! `mtm_dataloader::streams`): the weights of the seed; shuffling of (seed, epoch); masks
//! and dropout of (seed, epoch, global batch index), the device generator reseeded before
//! every forward pass. A run resumed from a checkpoint therefore repeats the uninterrupted
//! run bit for bit on CPU, and a batch is masked the same way whichever rank trains it.
//!
//! Data parallelism (a [`Collective`] with more than one rank): each rank trains its shard
//! of every epoch's batches; per step the ranks exchange one small typed report
//! ([`crate::sync`]) and then all-reduce the flat gradient buffer in fixed-size buckets, in
//! fp32, so every rank applies the same update. Rank 0 alone logs and writes checkpoints.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use mtm_cluster::{Collective, ReduceOp};
use mtm_dataloader::dataset::{Dataset, OpenOptions};
use mtm_dataloader::loader::{Loader, PrefetchConfig};
use mtm_dataloader::sampler::{Sampler, SamplerState};
use mtm_dataloader::session::Split;
use mtm_dataloader::streams;

use crate::checkpoint::{self, TrainState};
use crate::config::{LossReduction, NonFinitePolicy, RunConfig};
use crate::data::{SessionMap, init_rates, select_sessions, time_courses};
use crate::error::{Result, TrainError};
use crate::grads::{FlatGrads, Residence, Transfers};
use crate::masking::mask_batch;
use crate::metrics_log::{MetricsFiles, StepRecord, StepTimes};
use crate::model::{Ndt, SessionSpec, masked_poisson_nll, tensor3};
use crate::optim::{self, Optim};
use crate::placement::{Placement, compute_device};
use crate::plan::RunPlan;
use crate::schedule::OneCycle;
use crate::sync::StepReport;
use crate::validation::{Convergence, Validation, ValidationSums, validation_sums};

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
    /// What the run does and when.
    plan: RunPlan,
    schedule: OneCycle,
    comm: Box<dyn Collective>,
    rank: usize,
    world: usize,
    /// Steps skipped for non-finite gradients.
    pub skipped_steps: u64,
    stop_flag: Option<Arc<AtomicBool>>,
    stop_agreed: bool,
    /// The validation losses seen, for early stopping.
    convergence: Convergence,
}

/// How [`Trainer::run_until`] ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RunEnd {
    /// The requested steps are done.
    Finished,
    /// A rank was asked to stop (a signal): every rank stopped after the same step, with a
    /// checkpoint of it.
    Stopped {
        /// The last step done.
        step: u64,
    },
    /// `train.early_stop_patience` validations in a row did not improve on the best
    /// validation loss: every rank stopped after the same step, with a checkpoint of it.
    Converged {
        /// The last step done.
        step: u64,
        /// The step of the best validation loss.
        best_step: u64,
        /// The best validation loss.
        best_loss: f64,
    },
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
        if config.train.precision == crate::model::Precision::Bf16
            && !device.supports_dtype(burn::tensor::FloatDType::BF16)
        {
            return Err(TrainError::Config {
                origin: "train.precision".into(),
                message: format!(
                    "\"bf16\" needs a device that computes in bfloat16, and {device:?} does not: keep \"fp32\""
                ),
            });
        }
        let mut model =
            init(config.model.init(&sessions, &device))?.with_precision(config.train.precision);
        let map = SessionMap::new(&dataset, &sessions);
        let time_courses = time_courses(&dataset, &map)?;
        if config.train.init_rates && resume.is_none() {
            model = init_rates(model, &map, &time_courses);
        }
        let mut optim = optim::adamw(&config.train);
        let counts = map.trial_counts(&dataset, Split::Train);
        let sampler = Sampler::new(counts, config.data.batch_size, config.seed, rank, world)?;
        let plan = RunPlan::resolve(&config, sampler.steps_per_epoch(), world);
        let (step, sampler_state) = match resume {
            Some(dir) => {
                let state = checkpoint::read_state(dir)?;
                model = checkpoint::load_model(dir, model)?;
                optim = checkpoint::load_optimizer(dir, optim)?;
                let resharded = state.sampler.reshard(state.world_size, world);
                if resharded.repeated > 0 {
                    tracing::warn!(
                        "the checkpoint's {} batches into epoch {} do not divide among {world} ranks; {} batches are trained again",
                        state.sampler.position * state.world_size,
                        state.sampler.epoch,
                        resharded.repeated
                    );
                }
                (state.step, resharded.state)
            }
            None => (0, SamplerState::default()),
        };
        crate::sync::check_same_parameters(comm.as_mut(), &model, step)?;
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
        // On the CPU the tensors are host memory already; elsewhere the gradients stay on
        // the device.
        let residence = match config.distributed.device {
            crate::config::DeviceKind::Cpu => Residence::Host,
            _ => Residence::Device,
        };
        let grads = FlatGrads::with_residence(&model, residence);
        let schedule = OneCycle {
            peak: config.train.lr,
            total_steps: plan.total_steps,
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
            plan,
            schedule,
            comm,
            rank,
            world,
            skipped_steps: 0,
            stop_flag: None,
            stop_agreed: false,
            convergence: Convergence::default(),
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

    /// The run's collective, handed over when training is done (the evaluation after
    /// training divides its sessions between the same ranks).
    pub fn into_collective(self) -> Box<dyn Collective> {
        self.comm
    }

    /// The dataset the run reads.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// Parameters of the model.
    pub fn n_parameters(&self) -> usize {
        self.grads.len()
    }

    /// Gradient bytes moved between host and device since the run started (zero on the
    /// CPU; on a GPU, zero with NCCL and one read and one write per step with MPI).
    pub fn gradient_transfers(&self) -> Transfers {
        self.grads.transfers()
    }

    /// What the run does and when, resolved from the configuration.
    pub fn plan(&self) -> &RunPlan {
        &self.plan
    }

    /// The sessions the model has stitchers for.
    pub fn sessions(&self) -> &[SessionSpec] {
        self.model().sessions()
    }

    /// One optimizer step over `train.accumulate` batches on every rank.
    pub fn train_step(&mut self) -> Result<StepOutcome> {
        let config = &self.config;
        let accumulate = self.plan.accumulate.get();
        let mean = config.train.loss == LossReduction::Mean;
        self.comm.set_step(self.step);
        let mut time = StepTimes::default();
        self.grads.clear();
        let (mut loss_sum, mut trials, mut epoch) = (0.0f64, 0usize, 0u64);
        let mut finite = true;
        for micro in 0..accumulate {
            let clock = Instant::now();
            let (plan, batch) = self
                .loader
                .next_planned()
                .unwrap_or_else(|| unreachable!("a training loader plans epochs without end"))?;
            time.data_s += clock.elapsed().as_secs_f64();
            let clock = Instant::now();
            epoch = plan.epoch;
            let mut rng = streams::training_masks(config.seed, plan.epoch, plan.index);
            let (scheme, prompt) = config.masking.scheme.choose(&config.masking.mix, &mut rng);
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
                global_batch = plan.index,
                session = batch.session,
                mask = crate::masking::scored_fingerprint(&masked.scored),
                "batch"
            );
            let shape = [batch.len(), batch.n_bins, batch.n_units];
            // Dropout draws from the device's generator: reseeding it from the batch makes
            // the draws a function of the batch, so a resumed run repeats them.
            self.device.seed(streams::training_dropout(
                config.seed,
                plan.epoch,
                plan.index,
            ));
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
        // Counted as backward time: on a device this is where the step's gradients are
        // written into the flat buffer.
        let clock = Instant::now();
        if mean && accumulate > 1 {
            self.grads.scale(1.0 / accumulate as f32);
        }
        // Checked before the all-reduce, so that one rank's NaN never reaches the others.
        finite = finite && self.grads.is_finite();
        if !finite {
            self.grads.clear();
        }
        time.backward_s += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        // One small reduction first: which parameters any rank touched (PyTorch steps a
        // parameter whose gradient exists on some rank), which ranks failed, loss, trials.
        let agreement = StepReport {
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
        self.grads
            .all_reduce(self.comm.as_mut(), self.plan.bucket_elems.get(), op)?;
        outcome.time.allreduce_s = clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let norm = if config.train.clip_grad_norm > 0.0 {
            self.grads.clip(config.train.clip_grad_norm)
        } else {
            self.grads.norm()
        };
        let lr = self.schedule.lr(self.step);
        let model = self.model.take().expect("present between steps");
        let scale = config.train.session_lr_scale;
        // At scale 1 every gradient goes to the one step, as without the option.
        let own = if scale == 1.0 {
            Vec::new()
        } else {
            model.session_param_ids()
        };
        let grads = self.grads.to_params(&self.device, &own);
        self.model = Some(optim::step(&mut self.optim, lr, scale, model, grads));
        outcome.time.optimizer_s = clock.elapsed().as_secs_f64();
        outcome.grad_norm = norm;
        self.step += 1;
        Ok(outcome)
    }

    /// The validation loss and its time-course reference (see [`crate::validation`]);
    /// `None` when the trained sessions have no validation trials. Every rank gets the
    /// value one process would.
    pub fn validate(&mut self) -> Result<Option<Validation>> {
        let mine = validation_sums(
            &self.model().valid(),
            &self.dataset,
            &self.map,
            &self.config,
            &self.plan,
            (self.rank, self.world),
            &self.time_courses,
        )?;
        let all = self
            .comm
            .all_gather(&[mine.model, mine.time_course, mine.batches as f64])?;
        let all: Vec<ValidationSums> = all
            .chunks(3)
            .map(|x| ValidationSums {
                model: x[0],
                time_course: x[1],
                batches: x[2] as usize,
            })
            .collect();
        Ok(ValidationSums::combine(&all))
    }

    /// Writes a checkpoint of the current state under the run's `checkpoints/` folder
    /// (rank 0 writes; every rank waits for it). Returns the folder.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let dir = self.config.out_dir.join("checkpoints");
        let written = if self.rank == 0 {
            let state = TrainState {
                step: self.step,
                total_steps: self.plan.total_steps,
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
        self.run_until(self.plan.total_steps, observer)
    }

    /// Runs until `stop` steps are done (at most the run's total), as [`Trainer::run`].
    /// Only rank 0 writes files and talks to the observer.
    pub fn run_until(&mut self, stop: u64, observer: &mut dyn Observer) -> Result<RunEnd> {
        let stop = stop.min(self.plan.total_steps);
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
        observer.start(self.step, self.plan.total_steps);
        let started = Instant::now();
        let (mut window_trials, mut window_start, mut window_steps) =
            (0usize, Instant::now(), 0u64);
        let mut window_time = StepTimes::default();
        let (mut breakdown, mut breakdown_steps) = (StepTimes::default(), 0u64);
        let plan = self.plan.clone();
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
            if plan.breakdown_at(self.step) {
                let mean = breakdown.scaled(1.0 / breakdown_steps as f64);
                observer.note(&format!(
                    "step {}: rank 0 time {}",
                    self.step,
                    mean.describe()
                ));
                (breakdown, breakdown_steps) = (StepTimes::default(), 0);
            }
            let last = plan.is_last(self.step);
            let validation = if plan.validates_at(self.step) {
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
            // Every rank holds the same validation loss, so every rank decides the same.
            let converged = match (val_loss, plan.early_stop_patience) {
                (Some(loss), Some(patience)) if !last => {
                    self.convergence.record(loss, self.step, patience.get())
                }
                _ => false,
            };
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
            if plan.logs_at(self.step) {
                if let Some(m) = metrics.as_mut() {
                    m.write(&record)?;
                }
                window_trials = 0;
                window_steps = 0;
                window_time = StepTimes::default();
                window_start = Instant::now();
            }
            observer.step(&record);
            let stopping = (self.stop_agreed || converged) && !last;
            // Redrawn whenever there is a new validation point, and at the end, so that a
            // run can be watched; a picture that fails to draw does not stop training.
            if metrics.is_some()
                && (val_loss.is_some() || last || stopping)
                && let Err(e) = crate::plots::training_curves(&out)
            {
                observer.note(&format!("step {}: plots not drawn: {e}", self.step));
            }
            if stopping || plan.checkpoints_at(self.step) {
                let path = self.save_checkpoint()?;
                observer.note(&format!(
                    "step {}: checkpoint {}",
                    self.step,
                    path.display()
                ));
            }
            if converged {
                let (best_loss, best_step) =
                    self.convergence.best.expect("a validation was recorded");
                observer.note(&format!(
                    "step {}: converged: {} validations without a loss below {best_loss:.5} (step {best_step})",
                    self.step, self.convergence.since_best
                ));
                return Ok(RunEnd::Converged {
                    step: self.step,
                    best_step,
                    best_loss,
                });
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
